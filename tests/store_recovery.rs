//! Recovery: torn and corrupt WAL tails are cut at the last good record and reported, a
//! corrupt segment is quarantined while other shards serve, a record corrupted after open
//! reads as missing, and injected write/fsync failures latch the group without losing
//! acknowledged writes.
// Integration-test crate: helpers outside `#[test]` fns may unwrap like the tests do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod store_common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backstop::store::testutil::{sample_identity, sample_snapshot};
use backstop::store::{RecoveryEvent, Store, StoreError, StoreOpts};
use store_common::{FaultyBackend, block, open, small_opts};

const FAR: i64 = 4_000_000_000;

fn one_group() -> StoreOpts {
    StoreOpts {
        wal_groups: 1,
        ..small_opts()
    }
}

fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Writes sessions 0..3 in three batches and closes; returns the WAL file holding them.
fn three_records(dir: &Path) -> PathBuf {
    let store = Store::open(dir, one_group()).unwrap();
    for i in 0..3 {
        block(store.put_session(&sample_snapshot(i, FAR))).unwrap();
    }
    drop(store);
    let files = wal_files(dir);
    assert_eq!(files.len(), 1);
    files[0].clone()
}

fn check_cut_then_accepts_writes(dir: &Path, wal: &Path) {
    let store = Store::open(dir, one_group()).unwrap();
    let report = store.recovery_report();
    assert!(
        report
            .iter()
            .any(|e| matches!(e, RecoveryEvent::WalTruncated { path, .. } if path == wal)),
        "{report:?}"
    );
    assert_eq!(store.stats().wal_truncations, 1);
    assert!(store.get_session(&sample_identity(0), 0).is_some());
    assert!(store.get_session(&sample_identity(1), 0).is_some());
    assert!(store.get_session(&sample_identity(2), 0).is_none());
    block(store.put_session(&sample_snapshot(3, FAR))).unwrap();
    drop(store);
    // The cut is durable: a second open finds nothing more to cut, and the new write is there.
    let store = Store::open(dir, one_group()).unwrap();
    assert_eq!(
        store.stats().wal_truncations,
        0,
        "{:?}",
        store.recovery_report()
    );
    for i in [0, 1, 3] {
        assert!(
            store.get_session(&sample_identity(i), 0).is_some(),
            "session {i}"
        );
    }
}

#[test]
fn wal_truncated_mid_record_is_cut_reported_and_writable() {
    let dir = tempfile::tempdir().unwrap();
    let wal = three_records(dir.path());
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    check_cut_then_accepts_writes(dir.path(), &wal);
}

#[test]
fn wal_with_flipped_byte_in_last_record_is_cut_reported_and_writable() {
    let dir = tempfile::tempdir().unwrap();
    let wal = three_records(dir.path());
    let mut bytes = std::fs::read(&wal).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x08;
    std::fs::write(&wal, bytes).unwrap();
    check_cut_then_accepts_writes(dir.path(), &wal);
}

#[test]
fn wal_with_garbage_appended_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let wal = three_records(dir.path());
    let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
    f.write_all(&[0xAB; 100]).unwrap();
    drop(f);
    let store = Store::open(dir.path(), one_group()).unwrap();
    assert_eq!(store.stats().wal_truncations, 1);
    for i in 0..3 {
        assert!(store.get_session(&sample_identity(i), 0).is_some());
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn segment_with_flipped_byte_is_quarantined_and_other_shards_serve() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..200 {
        block(store.put_session(&sample_snapshot(i, FAR))).unwrap();
    }
    store.compact(0).unwrap();
    let shard_of: Vec<u32> = (0..200)
        .map(|i| store.session_key(&sample_identity(i)).shard(8))
        .collect();
    drop(store);
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 8);
    let victim = segs[3].clone();
    let victim_shard: u32 = victim.file_name().unwrap().to_str().unwrap()[1..6]
        .parse()
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();

    let store = open(dir.path());
    let st = store.stats();
    assert_eq!(st.quarantined_segments, 1, "{st:?}");
    assert_eq!(st.segments, 7);
    let report = store.recovery_report();
    assert!(
        report.iter().any(|e| matches!(e, RecoveryEvent::SegmentQuarantined { reason, .. } if reason.contains("checksum"))),
        "{report:?}"
    );
    assert!(
        dir.path()
            .join("quarantine")
            .join(victim.file_name().unwrap())
            .exists()
    );
    assert!(!victim.exists());
    for i in 0..200u64 {
        let found = store.get_session(&sample_identity(i), 0).is_some();
        assert_eq!(found, shard_of[i as usize] != victim_shard, "session {i}");
    }
    // The store keeps taking writes, including into the quarantined shard.
    let lost = (0..200u64)
        .find(|&i| shard_of[i as usize] == victim_shard)
        .unwrap();
    block(store.put_session(&sample_snapshot(lost, FAR))).unwrap();
    assert!(store.get_session(&sample_identity(lost), 0).is_some());
}

#[test]
fn record_corrupted_after_open_reads_as_missing_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..50 {
        block(store.put_session(&sample_snapshot(i, FAR))).unwrap();
    }
    store.compact(0).unwrap();
    // Simulate a page re-read from a failing disk: rewrite one byte in place (no truncation)
    // inside session 7's access-token template while the segment is mapped.
    let needle = br#""sub":"user-7""#;
    let mut hit = None;
    for seg in segment_files(dir.path()) {
        let bytes = std::fs::read(&seg).unwrap();
        if let Some(pos) = bytes.windows(needle.len()).position(|w| w == needle) {
            hit = Some((seg, pos));
        }
    }
    let (seg, pos) = hit.unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(pos as u64 + 3)).unwrap();
    f.write_all(b"X").unwrap();
    f.sync_all().unwrap();
    assert!(store.get_session(&sample_identity(7), 0).is_none());
    assert_eq!(store.stats().corrupt_reads, 1);
    for i in (0..50).filter(|&i| i != 7) {
        assert!(
            store.get_session(&sample_identity(i), 0).is_some(),
            "session {i}"
        );
    }
}

#[test]
fn fsync_failure_latches_the_group_and_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    // Sync 1 is the WAL header at open; syncs 2 and 3 commit sessions 0 and 1; sync 4 fails.
    let faulty = FaultyBackend::new(0, 4);
    let opts = StoreOpts {
        wal_backend: Arc::new(faulty),
        ..one_group()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    block(store.put_session(&sample_snapshot(0, FAR))).unwrap();
    block(store.put_session(&sample_snapshot(1, FAR))).unwrap();
    let err = block(store.put_session(&sample_snapshot(2, FAR)))
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::GroupFailed { op: "fsync", .. }),
        "{err}"
    );
    // The write whose fsync failed was never published.
    assert!(store.get_session(&sample_identity(2), 0).is_none());
    // No blind retry: later writes are refused, reads still served.
    let err = block(store.put_session(&sample_snapshot(3, FAR)))
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::GroupFailed { .. }), "{err}");
    assert!(store.get_session(&sample_identity(0), 0).is_some());
    assert_eq!(store.stats().failed_groups.len(), 1);
    assert!(
        store.compact(0).is_err(),
        "compaction must not rotate a failed group"
    );
    drop(store);
    let store = Store::open(dir.path(), one_group()).unwrap();
    assert!(store.get_session(&sample_identity(0), 0).is_some());
    assert!(store.get_session(&sample_identity(1), 0).is_some());
    assert!(store.get_session(&sample_identity(3), 0).is_none());
    block(store.put_session(&sample_snapshot(3, FAR))).unwrap();
}

#[test]
fn short_write_latches_and_leaves_a_tail_that_recovery_cuts() {
    let dir = tempfile::tempdir().unwrap();
    // Write 1 is the WAL header; write 2 commits session 0; write 3 is cut in half and fails.
    let opts = StoreOpts {
        wal_backend: Arc::new(FaultyBackend::new(3, 0)),
        ..one_group()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    block(store.put_session(&sample_snapshot(0, FAR))).unwrap();
    let err = block(store.put_session(&sample_snapshot(1, FAR)))
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::GroupFailed { op: "write", .. }),
        "{err}"
    );
    drop(store);
    let store = Store::open(dir.path(), one_group()).unwrap();
    assert_eq!(
        store.stats().wal_truncations,
        1,
        "{:?}",
        store.recovery_report()
    );
    assert!(store.get_session(&sample_identity(0), 0).is_some());
    assert!(store.get_session(&sample_identity(1), 0).is_none());
}

#[test]
fn leftover_temp_and_older_segments_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    block(store.put_session(&sample_snapshot(1, FAR))).unwrap();
    store.compact(0).unwrap();
    drop(store);
    let seg = segment_files(dir.path())[0].clone();
    let name = seg.file_name().unwrap().to_str().unwrap().to_owned();
    // An older generation of the same shard, as a crash between rename and unlink leaves it.
    let older = dir
        .path()
        .join("segments")
        .join(format!("{}-0000000000000000.seg", &name[..6]));
    std::fs::copy(&seg, &older).unwrap();
    std::fs::write(
        dir.path().join("segments").join("tmp-00000000000000ff.seg"),
        b"partial",
    )
    .unwrap();
    let store = open(dir.path());
    let removed = store
        .recovery_report()
        .iter()
        .filter(|e| matches!(e, RecoveryEvent::StaleFileRemoved { .. }))
        .count();
    assert_eq!(removed, 2);
    assert!(store.get_session(&sample_identity(1), 0).is_some());
    assert_eq!(segment_files(dir.path()), vec![seg]);
}

#[test]
fn large_store_serves_at_once_and_quarantines_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..100 {
        block(store.put_session(&sample_snapshot(i, FAR))).unwrap();
    }
    store.compact(0).unwrap();
    let shard_of: Vec<u32> = (0..100)
        .map(|i| store.session_key(&sample_identity(i)).shard(8))
        .collect();
    drop(store);
    let victim = segment_files(dir.path())[5].clone();
    let victim_shard: u32 = victim.file_name().unwrap().to_str().unwrap()[1..6]
        .parse()
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x20;
    std::fs::write(&victim, bytes).unwrap();

    // Every store counts as "large": nothing is validated before serving.
    let opts = StoreOpts {
        validate_foreground_bytes_max: 0,
        ..small_opts()
    };
    let mut store = Store::open(dir.path(), opts).unwrap();
    store.wait_validated();
    let stats = store.stats();
    assert_eq!(stats.quarantined_segments, 1);
    assert_eq!(
        (
            stats.validation_pending_segments,
            stats.validation_pending_bytes
        ),
        (0, 0),
        "nothing is left pending once the validator is done, the quarantined segment included"
    );
    assert!(
        dir.path()
            .join("quarantine")
            .join(victim.file_name().unwrap())
            .exists()
    );
    for i in 0..100u64 {
        let found = store.get_session(&sample_identity(i), 0).is_some();
        assert_eq!(found, shard_of[i as usize] != victim_shard, "session {i}");
    }
}
