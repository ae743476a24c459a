//! Property test: a random sequence of puts (sessions, artifacts in every state, revocation
//! events), removes, compactions, time steps and reopens leaves the store answering exactly
//! as a `HashMap` model does. Cases: 24, times
//! `BACKSTOP_STORE_TEST_SCALE`.
// Integration-test crate: helpers outside `#[test]` fns may unwrap like the tests do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod store_common;

use std::collections::HashMap;

use backstop::store::testutil::{sample_artifact, sample_identity, sample_snapshot};
use backstop::store::{
    ArtifactKind, ArtifactRecord, ArtifactState, RevocationRecord, SessionSnapshot, Store,
    StoreOpts,
};
use proptest::prelude::*;
use store_common::block;

#[derive(Debug, Clone)]
enum Op {
    PutSession { i: u64, ttl_secs: i64, version: i64 },
    RemoveSession { i: u64 },
    PutArtifact { i: u64, ttl_secs: i64, state: u8 },
    PutRevocation { i: u64, ttl_secs: i64, time: i64 },
    RemoveArtifact { i: u64 },
    Advance { secs: i64 },
    Compact,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..12u64, 1..40i64, 0..1000i64).prop_map(|(i, ttl_secs, version)| Op::PutSession { i, ttl_secs, version }),
        2 => (0..12u64).prop_map(|i| Op::RemoveSession { i }),
        3 => (0..6u64, 1..40i64, 0..3u8).prop_map(|(i, ttl_secs, state)| Op::PutArtifact { i, ttl_secs, state }),
        3 => (0..8u64, 1..40i64, 0..3i64).prop_map(|(i, ttl_secs, time)| Op::PutRevocation { i, ttl_secs, time }),
        1 => (0..6u64).prop_map(|i| Op::RemoveArtifact { i }),
        2 => (1..15i64).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

fn opts() -> StoreOpts {
    StoreOpts {
        shard_count: 4,
        wal_groups: 2,
        ..StoreOpts::manual()
    }
}

fn check(
    store: &Store,
    now: i64,
    sessions: &HashMap<u64, SessionSnapshot>,
    artifacts: &HashMap<u64, ArtifactRecord>,
    events: &HashMap<u64, RevocationRecord>,
) {
    let mut want: Vec<_> = events
        .values()
        .filter(|e| e.expires_at_secs > now)
        .cloned()
        .collect();
    want.sort_by(|a, b| a.id.cmp(&b.id));
    let mut got = store.revocations_live(now);
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, want, "revocation events at {now}");
    // Without a clock: everything live, plus possibly expired events not compacted yet.
    let all = store.revocations();
    assert!(
        want.iter().all(|e| all.contains(e)),
        "revocations() lost a live event"
    );
    assert!(
        all.iter().all(|e| events.values().any(|m| m == e)),
        "revocations() returned an event that was replaced"
    );
    for i in 0..12 {
        let want = sessions.get(&i).filter(|s| s.expires_at_secs > now);
        let got = store
            .get_session(&sample_identity(i), now)
            .map(|v| v.to_snapshot());
        assert_eq!(got.as_ref(), want, "session {i} at {now}");
    }
    for i in 0..6 {
        let d = store.artifact_digest(ArtifactKind::RefreshToken, format!("rt-{i}").as_bytes());
        let want = artifacts.get(&i).filter(|a| a.expires_at_secs > now);
        let got = store.get_artifact(&d, now).and_then(|v| v.to_record());
        assert_eq!(got.as_ref(), want, "artifact {i} at {now}");
    }
}

fn cases() -> u32 {
    24 * store_common::scaled(1) as u32
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_hashmap_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), opts()).unwrap();
        let mut now = 100i64;
        let mut sessions: HashMap<u64, SessionSnapshot> = HashMap::new();
        let mut artifacts: HashMap<u64, ArtifactRecord> = HashMap::new();
        let mut events: HashMap<u64, RevocationRecord> = HashMap::new();
        for op in ops {
            match op {
                Op::PutSession { i, ttl_secs, version } => {
                    let mut s = sample_snapshot(i, now + ttl_secs);
                    s.recorded_at_secs = version;
                    block(store.put_session(&s)).unwrap();
                    sessions.insert(i, s);
                }
                Op::RemoveSession { i } => {
                    block(store.remove_session(&sample_identity(i))).unwrap();
                    sessions.remove(&i);
                }
                Op::PutArtifact { i, ttl_secs, state } => {
                    let d = store.artifact_digest(ArtifactKind::RefreshToken, format!("rt-{i}").as_bytes());
                    let mut a = sample_artifact(i, d, now + ttl_secs);
                    let next = store.artifact_digest(ArtifactKind::RefreshToken, format!("rt-{}", (i + 1) % 6).as_bytes());
                    a.state = match state {
                        0 => ArtifactState::Current,
                        1 => ArtifactState::Superseded { successor: next },
                        _ => ArtifactState::Revoked,
                    };
                    a.state_changed_at_secs = if state == 0 { 0 } else { now };
                    block(store.put_artifact(&a)).unwrap();
                    artifacts.insert(i, a);
                }
                Op::PutRevocation { i, ttl_secs, time } => {
                    let e = RevocationRecord {
                        id: format!("event-{i}"),
                        kind: 1,
                        subject_kind: 1,
                        subject: format!("user-{i}"),
                        time_secs: time,
                        source: 1,
                        recorded_at_secs: now,
                        expires_at_secs: now + ttl_secs,
                    };
                    block(store.put_revocation(e.clone())).unwrap();
                    events.insert(i, e);
                }
                Op::RemoveArtifact { i } => {
                    let d = store.artifact_digest(ArtifactKind::RefreshToken, format!("rt-{i}").as_bytes());
                    block(store.remove_artifact(&d)).unwrap();
                    artifacts.remove(&i);
                }
                Op::Advance { secs } => now += secs,
                Op::Compact => store.compact(now).unwrap(),
                Op::Reopen => {
                    drop(store);
                    store = Store::open(dir.path(), opts()).unwrap();
                    prop_assert!(store.recovery_report().is_empty(), "{:?}", store.recovery_report());
                }
            }
            check(&store, now, &sessions, &artifacts, &events);
        }
    }
}
