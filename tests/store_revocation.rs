//! Revocation events in the store (DESIGN §6): durable before acknowledged, replayed on start,
//! idempotent by id, aged out by compaction, and independent of the order they arrive in.
//! (Durability under SIGKILL is in `store_crash.rs`, which writes events too.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod store_common;

use backstop::store::segment;
use backstop::store::testutil::sample_snapshot;
use backstop::store::{RecoveryEvent, RevocationRecord, Store, StoreError, StoreOpts};
use store_common::{block, open, small_opts};

const FAR: i64 = 4_000_000_000;

fn event(i: u64, expires_at_secs: i64) -> RevocationRecord {
    RevocationRecord {
        id: format!("event-{i}"),
        kind: (i % 8 + 1) as u8,
        subject_kind: (i % 4 + 1) as u8,
        subject: format!("subject-{}", i % 13),
        time_secs: 1_700_000_000 + i as i64,
        source: (i % 3 + 1) as u8,
        recorded_at_secs: 1_700_000_100 + i as i64,
        expires_at_secs,
    }
}

fn sorted(mut v: Vec<RevocationRecord>) -> Vec<RevocationRecord> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

fn wal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn events_are_served_from_memory_segments_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..10 {
        block(store.put_revocation(event(i, FAR))).unwrap();
    }
    let want: Vec<_> = (0..10).map(|i| event(i, FAR)).collect();
    assert_eq!(sorted(store.revocations()), sorted(want.clone()));
    assert_eq!(
        store.get_revocation("event-3", 0).unwrap().to_record(),
        event(3, FAR)
    );
    assert!(store.get_revocation("event-99", 0).is_none());

    // Replayed from the WAL.
    drop(store);
    let store = open(dir.path());
    assert_eq!(sorted(store.revocations()), sorted(want.clone()));

    // From segments, then segments plus newer events in memory.
    store.compact(0).unwrap();
    assert_eq!(store.stats().segment_revocations, 10);
    assert_eq!(store.stats().memtable_records, 0);
    assert_eq!(sorted(store.revocations()), sorted(want.clone()));
    block(store.put_revocation(event(10, FAR))).unwrap();
    drop(store);
    let store = open(dir.path());
    let mut all = want;
    all.push(event(10, FAR));
    assert_eq!(sorted(store.revocations()), sorted(all));
}

#[test]
fn a_second_put_of_the_same_event_is_a_no_op_success() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    block(store.put_revocation(event(1, FAR))).unwrap();
    let before = (wal_bytes(dir.path()), store.stats().memtable_records);
    block(store.put_revocation(event(1, FAR))).unwrap();
    assert_eq!(
        (wal_bytes(dir.path()), store.stats().memtable_records),
        before,
        "the repeated event was written again"
    );
    // Also once it lives in a segment.
    store.compact(0).unwrap();
    let before = wal_bytes(dir.path());
    block(store.put_revocation(event(1, FAR))).unwrap();
    assert_eq!(wal_bytes(dir.path()), before);
    assert_eq!(store.revocations(), vec![event(1, FAR)]);
}

#[test]
fn a_different_event_under_a_known_id_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    block(store.put_revocation(event(1, FAR))).unwrap();
    store.compact(0).unwrap();
    let mut later = event(1, FAR);
    later.time_secs += 60;
    block(store.put_revocation(later.clone())).unwrap();
    assert_eq!(store.revocations(), vec![later.clone()]);
    store.compact(0).unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.revocations(), vec![later]);
}

#[test]
fn compaction_drops_expired_events_and_keeps_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..6 {
        // Even events expire at 1000, odd ones far away.
        let exp = if i % 2 == 0 { 1000 } else { FAR };
        block(store.put_revocation(event(i, exp))).unwrap();
    }
    // Before any compaction the store has no clock: everything is still there, and the
    // time-aware listing filters.
    assert_eq!(store.revocations().len(), 6);
    assert_eq!(store.revocations_live(1000).len(), 3);
    assert!(store.get_revocation("event-0", 999).is_some());
    assert!(store.get_revocation("event-0", 1000).is_none());

    store.compact(999).unwrap();
    assert_eq!(store.revocations().len(), 6, "nothing had expired at 999");
    store.compact(1000).unwrap();
    let live: Vec<_> = (0..6)
        .filter(|i| i % 2 == 1)
        .map(|i| event(i, FAR))
        .collect();
    assert_eq!(sorted(store.revocations()), live);
    assert_eq!(store.stats().segment_records, 3);
    drop(store);
    let store = open(dir.path());
    assert_eq!(sorted(store.revocations()), live);
}

#[test]
fn arrival_order_does_not_change_what_is_replayed() {
    let events: Vec<_> = (0..40).map(|i| event(i, FAR)).collect();
    let mut orders = vec![events.clone()];
    let mut rev = events.clone();
    rev.reverse();
    orders.push(rev);
    // A fixed shuffle (xorshift) without a dependency.
    let mut shuffled = events.clone();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..shuffled.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        shuffled.swap(i, (x % (i as u64 + 1)) as usize);
    }
    orders.push(shuffled);
    let mut results = Vec::new();
    for order in orders {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for (n, e) in order.into_iter().enumerate() {
            block(store.put_revocation(e)).unwrap();
            if n == 20 {
                store.compact(0).unwrap();
            }
        }
        drop(store);
        let store = open(dir.path());
        results.push(sorted(store.revocations()));
    }
    assert_eq!(results[0], sorted(events));
    assert!(results.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn events_share_no_keys_with_sessions_and_oversized_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = open(dir.path());
    let e = event(1, FAR);
    assert_ne!(
        store.revocation_key(&e.id),
        store.session_key(&backstop::store::testutil::sample_identity(1))
    );
    let mut big = event(2, FAR);
    big.id = "x".repeat(backstop::limits::STORE_IDENTIFIER_BYTES_MAX + 1);
    let err = block(store.put_revocation(big)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLarge {
                field: "revocation.id",
                ..
            }
        ),
        "{err}"
    );
    assert!(store.revocations().is_empty());
}

// The per-segment revocation directory (`docs/store-format.md`, "Revocation directory"): what
// makes listing the events at start O(events) instead of O(index slots).

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn has_directory(path: &std::path::Path) -> bool {
    let b = std::fs::read(path).unwrap();
    segment::Header::decode(&b)
        .unwrap()
        .has_revocation_directory()
}

fn generation_of(path: &std::path::Path) -> u64 {
    let name = path.file_stem().unwrap().to_str().unwrap();
    u64::from_str_radix(&name[7..], 16).unwrap()
}

/// Events among sessions, compacted into segments.
fn store_with_events(dir: &std::path::Path, events: u64) -> Vec<RevocationRecord> {
    let store = open(dir);
    for i in 0..60 {
        block(store.put_session(&sample_snapshot(i, FAR))).unwrap();
    }
    let want: Vec<_> = (0..events).map(|i| event(i, FAR)).collect();
    for e in &want {
        block(store.put_revocation(e.clone())).unwrap();
    }
    store.compact(0).unwrap();
    assert_eq!(store.stats().segment_revocations, events);
    want
}

#[test]
fn compacted_and_bulk_loaded_segments_list_their_events_through_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let want = store_with_events(dir.path(), 40);
    assert!(segment_files(dir.path()).iter().all(|p| has_directory(p)));
    // Reopened with validation left to the background (the start of a large store): the
    // listing reads the directories with every record checked on the way.
    let lazy = StoreOpts {
        validate_foreground_bytes_max: 0,
        ..small_opts()
    };
    let store = Store::open(dir.path(), lazy).unwrap();
    assert_eq!(sorted(store.revocations()), sorted(want.clone()));
    assert_eq!(store.stats().corrupt_reads, 0);
    // A bulk load rewrites the shards it touches, directories included, under the events.
    let bulk: Vec<_> = (100..400)
        .map(|i| store.bulk_session(sample_snapshot(i, FAR)).unwrap())
        .collect();
    store.bulk_load(bulk, 0).unwrap();
    assert_eq!(sorted(store.revocations()), sorted(want.clone()));
    drop(store);
    assert!(segment_files(dir.path()).iter().all(|p| has_directory(p)));
    let store = open(dir.path());
    assert!(store.recovery_report().is_empty());
    assert_eq!(sorted(store.revocations_live(0)), sorted(want));
}

/// Segments written before the directory existed (flag clear, as in the v2 fixture) are read
/// by scanning their index; the next compaction of their shard writes them with one.
#[test]
fn segments_without_a_directory_are_scanned_then_rewritten_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut want = store_with_events(dir.path(), 40);
    for path in segment_files(dir.path()) {
        let seg =
            segment::Segment::open(&path, generation_of(&path), segment::Validate::Now).unwrap();
        let h = *seg.header();
        let recs: Vec<_> = seg.records().collect();
        let input: Vec<segment::BuildRecord<'_>> = recs
            .iter()
            .map(|(k, r)| segment::BuildRecord {
                key: *k,
                kind: r.kind(),
                bytes: r.bytes(),
                expires_at_secs: segment::record_expires_at(r).unwrap(),
            })
            .collect();
        let old = segment::build_without_revocation_directory(h.shard, h.shard_count, &input);
        drop(seg);
        std::fs::write(&path, old).unwrap();
        assert!(!has_directory(&path));
    }
    let store = open(dir.path());
    assert!(store.recovery_report().is_empty());
    assert_eq!(sorted(store.revocations()), sorted(want.clone()));
    assert_eq!(store.stats().corrupt_reads, 0);
    // New events in every shard (200 keys over 8 shards), compacted: every shard rewritten.
    for i in 1000..1200 {
        block(store.put_revocation(event(i, FAR))).unwrap();
        want.push(event(i, FAR));
    }
    store.compact(0).unwrap();
    drop(store);
    assert!(segment_files(dir.path()).iter().all(|p| has_directory(p)));
    let store = open(dir.path());
    assert_eq!(sorted(store.revocations()), sorted(want));
}

/// A directory that fails its checksum makes the segment fail validation: open quarantines it
/// like any corrupt segment (never serving it half-checked), and the other shards' events are
/// still listed.
#[test]
fn corrupt_revocation_directory_quarantines_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let want = store_with_events(dir.path(), 40);
    let (victim, lost) = segment_files(dir.path())
        .into_iter()
        .find_map(|p| {
            let seg =
                segment::Segment::open(&p, generation_of(&p), segment::Validate::Now).unwrap();
            let ids: Vec<String> = seg
                .revocation_records()
                .map(|(_, r)| r.into_revocation().unwrap().to_record().id)
                .collect();
            (!ids.is_empty()).then_some((p, ids))
        })
        .unwrap();
    let mut b = std::fs::read(&victim).unwrap();
    let h = segment::Header::decode(&b).unwrap();
    let at = segment::HEADER_BYTES + h.slot_count as usize * segment::SLOT_BYTES;
    b[at] ^= 0x01;
    std::fs::write(&victim, b).unwrap();

    let store = open(dir.path());
    assert!(
        store
            .recovery_report()
            .iter()
            .any(|e| matches!(e, RecoveryEvent::SegmentQuarantined { reason, .. } if reason.contains("revocation directory"))),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.stats().quarantined_segments, 1);
    let left: Vec<_> = want.into_iter().filter(|e| !lost.contains(&e.id)).collect();
    assert_eq!(sorted(store.revocations()), sorted(left));
}
