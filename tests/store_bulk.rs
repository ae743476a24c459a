//! `Store::bulk_load`: records load into segments without the WAL, read back before and after
//! reopen, sit under puts not yet compacted (and under nothing else), and a crash at any step of
//! its segment write leaves a store that opens either as before the load or as after it.
// Integration-test crate: helpers outside `#[test]` fns may unwrap like the tests do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod store_common;

use std::path::Path;

use backstop::store::testutil::{sample_artifact, sample_snapshot};
use backstop::store::{ArtifactKind, BulkRecord, RecoveryEvent, Store};
use store_common::{block, open};

const FAR: i64 = 4_000_000_000;

fn bulk_sessions(store: &Store, range: std::ops::Range<u64>, exp: i64) -> Vec<BulkRecord> {
    range
        .map(|i| store.bulk_session(sample_snapshot(i, exp)).unwrap())
        .collect()
}

fn digest(store: &Store, i: u64) -> backstop::store::ArtifactDigest {
    store.artifact_digest(ArtifactKind::RefreshToken, format!("rt-{i}").as_bytes())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn bulk_loaded_records_are_found_before_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut records = bulk_sessions(&store, 0..500, FAR);
    for i in 0..500 {
        let d = digest(&store, i);
        records.push(store.bulk_artifact(&sample_artifact(i, d, FAR)).unwrap());
    }
    store.bulk_load(records, 0).unwrap();
    let check = |store: &Store| {
        for i in [0, 1, 250, 499] {
            let s = sample_snapshot(i, FAR);
            assert_eq!(store.get_session(&s.identity, 0).unwrap().to_snapshot(), s);
            let d = digest(store, i);
            assert_eq!(
                store.get_artifact(&d, 0).unwrap().to_record(),
                Some(sample_artifact(i, d, FAR))
            );
        }
        let st = store.stats();
        assert_eq!(st.segment_records, 1000);
        assert_eq!(st.memtable_records, 0);
    };
    check(&store);
    store.close();
    let store = open(dir.path());
    assert_eq!(store.recovery_report(), vec![]);
    check(&store);
}

#[test]
fn a_bulk_load_sits_under_puts_not_yet_compacted_and_over_older_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Key 1 in a segment, key 2 only in the WAL, key 3 removed in the WAL.
    block(store.put_session(&sample_snapshot(1, 1_000))).unwrap();
    store.compact(0).unwrap();
    let put2 = sample_snapshot(2, 2_000);
    block(store.put_session(&put2)).unwrap();
    block(store.put_session(&sample_snapshot(3, 3_000))).unwrap();
    block(store.remove_session(&sample_snapshot(3, 0).identity)).unwrap();
    // The load carries newer versions of 1, 2, 3, an already expired 4 and a fresh 5.
    let mut records = bulk_sessions(&store, 1..4, FAR);
    records.push(store.bulk_session(sample_snapshot(4, 10)).unwrap());
    records.push(store.bulk_session(sample_snapshot(5, FAR)).unwrap());
    store.bulk_load(records, 100).unwrap();
    // A put after the load wins over it.
    let put5 = sample_snapshot(5, 5_000);
    block(store.put_session(&put5)).unwrap();

    let check = |store: &Store| {
        let exp = |i: u64| {
            store
                .get_session(&sample_snapshot(i, 0).identity, 0)
                .map(|v| v.expires_at_secs())
        };
        assert_eq!(exp(1), Some(FAR), "the load replaces a segment record");
        assert_eq!(
            exp(2),
            Some(2_000),
            "a put not yet compacted keeps its value"
        );
        assert_eq!(
            exp(3),
            None,
            "a removal not yet compacted keeps its tombstone"
        );
        assert_eq!(exp(4), None, "expired at the load's now: dropped");
        assert_eq!(exp(5), Some(5_000), "a put after the load wins");
    };
    check(&store);
    assert_eq!(
        store.get_session(&put2.identity, 0).unwrap().to_snapshot(),
        put2
    );
    store.close();
    // After reopen (WAL replayed over the new segments) and after compaction: the same.
    let store = open(dir.path());
    check(&store);
    store.compact(100).unwrap();
    check(&store);
    store.close();
    let store = open(dir.path());
    check(&store);
}

#[test]
fn a_crash_during_a_bulk_load_opens_as_before_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    block(store.put_session(&sample_snapshot(1, 1_000))).unwrap();
    store.compact(0).unwrap();
    block(store.put_session(&sample_snapshot(2, 2_000))).unwrap();
    store.close();
    let before = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), before.path());
    let old_segments = segment_files(dir.path());

    let store = open(dir.path());
    store
        .bulk_load(bulk_sessions(&store, 0..64, FAR), 0)
        .unwrap();
    store.close();
    let after_segments = segment_files(dir.path());

    let exp = |store: &Store, i: u64| {
        store
            .get_session(&sample_snapshot(i, 0).identity, 0)
            .map(|v| v.expires_at_secs())
    };

    // Crash before a rename was durable: the temp file is removed, the store is as before.
    let crash = tempfile::tempdir().unwrap();
    copy_dir(before.path(), crash.path());
    let new_seg = after_segments
        .iter()
        .find(|n| !old_segments.contains(n))
        .unwrap();
    std::fs::copy(
        dir.path().join("segments").join(new_seg),
        crash.path().join("segments/tmp-00000000000000ff.seg"),
    )
    .unwrap();
    let s = open(crash.path());
    assert!(matches!(
        s.recovery_report().as_slice(),
        [RecoveryEvent::StaleFileRemoved { .. }]
    ));
    assert_eq!(exp(&s, 1), Some(1_000));
    assert_eq!(exp(&s, 2), Some(2_000));
    assert_eq!(exp(&s, 40), None);
    s.close();

    // Crash after every rename, before the old segments and WAL files were removed: open keeps
    // the newest segment of each shard, and the old WAL replays over it as a no-op.
    let crash = tempfile::tempdir().unwrap();
    copy_dir(before.path(), crash.path());
    for n in &after_segments {
        std::fs::copy(
            dir.path().join("segments").join(n),
            crash.path().join("segments").join(n),
        )
        .unwrap();
    }
    let s = open(crash.path());
    for i in 0..64 {
        let want = if i == 2 { Some(2_000) } else { Some(FAR) };
        assert_eq!(exp(&s, i), want, "session {i}");
    }
    s.close();

    // And the real thing: everything loaded, the put (compacted with the load) still on top.
    let s = open(dir.path());
    assert_eq!(exp(&s, 2), Some(2_000));
    assert_eq!(exp(&s, 1), Some(FAR));
    assert_eq!(s.stats().memtable_records, 0);
}
