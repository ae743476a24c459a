//! Store API behaviour: lookups compare full identities, supersession and expiry hold across
//! WAL, in-memory table and segments before and after compaction, and open refuses what it
//! must (a second process, a newer format, another shard count).
// Integration-test crate: helpers outside `#[test]` fns may unwrap like the tests do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod store_common;

use backstop::store::format::FORMAT_VERSION;
use backstop::store::testutil::{sample_artifact, sample_identity, sample_snapshot};
use backstop::store::{
    ArtifactKind, ArtifactRecord, ArtifactState, ClientAuthMethod, RecoveryEvent, RevocationRecord,
    Store, StoreError, StoreOpts,
};
use store_common::{block, open, small_opts};

const FAR: i64 = 4_000_000_000;

#[test]
fn put_then_get_returns_the_same_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = sample_snapshot(1, FAR);
    block(store.put_session(&s)).unwrap();
    let v = store.get_session(&s.identity, 0).unwrap();
    assert_eq!(v.to_snapshot(), s);
    assert!(
        v.access_token
            .claims_json
            .as_slice()
            .starts_with(b"{\"iss\"")
    );
}

#[test]
fn lookup_compares_every_identifier() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = sample_snapshot(1, FAR);
    block(store.put_session(&s)).unwrap();
    let mut other = s.identity.clone();
    other.resource.push('x');
    assert!(store.get_session(&other, 0).is_none());
    let mut other = s.identity.clone();
    other.device = "another".into();
    assert!(store.get_session(&other, 0).is_none());
}

#[test]
fn a_borrowed_identity_finds_exactly_what_the_owned_one_finds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = sample_snapshot(1, FAR);
    block(store.put_session(&s)).unwrap();
    let (key, found) = store.get_session_ref(&s.identity.as_ref(), 0);
    assert_eq!(key, store.session_key(&s.identity));
    assert_eq!(found.unwrap().to_snapshot(), s);
    let mut other = s.identity.clone();
    other.app.push('x');
    assert!(store.get_session_ref(&other.as_ref(), 0).1.is_none());
    // Expired is missing, as for the owned lookup.
    assert!(store.get_session_ref(&s.identity.as_ref(), FAR).1.is_none());
}

#[test]
fn artifacts_are_found_by_full_digest_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let d = store.artifact_digest(ArtifactKind::RefreshToken, b"refresh-token-1");
    let a = sample_artifact(1, d, FAR);
    block(store.put_artifact(&a)).unwrap();
    assert_eq!(store.get_artifact(&d, 0).unwrap().to_record(), Some(a));
    // Same routing prefix, different tail: must not match.
    let mut near = d;
    near.0[31] ^= 1;
    assert!(store.get_artifact(&near, 0).is_none());
    let other = store.artifact_digest(ArtifactKind::SessionCookie, b"refresh-token-1");
    assert!(store.get_artifact(&other, 0).is_none());
}

/// Where the record lives when the check runs.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Memtable,
    Segment,
    Reopened,
    ReopenedCompacted,
}

fn settle(store: Store, dir: &std::path::Path, stage: Stage, now: i64) -> Store {
    match stage {
        Stage::Memtable => store,
        Stage::Segment => {
            store.compact(now).unwrap();
            store
        }
        Stage::Reopened => {
            drop(store);
            open(dir)
        }
        Stage::ReopenedCompacted => {
            store.compact(now).unwrap();
            drop(store);
            open(dir)
        }
    }
}

#[test]
fn expiry_is_immediate_at_every_stage_and_compaction_drops_it() {
    for stage in [
        Stage::Memtable,
        Stage::Segment,
        Stage::Reopened,
        Stage::ReopenedCompacted,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let s = sample_snapshot(1, 1000);
        let keep = sample_snapshot(2, FAR);
        block(store.put_session(&s)).unwrap();
        block(store.put_session(&keep)).unwrap();
        let store = settle(store, dir.path(), stage, 10);
        assert!(store.get_session(&s.identity, 999).is_some(), "{stage:?}");
        assert!(store.get_session(&s.identity, 1000).is_none(), "{stage:?}");
        store.compact(1000).unwrap();
        assert!(
            store.get_session(&s.identity, 0).is_none(),
            "{stage:?}: compaction dropped it"
        );
        assert_eq!(store.stats().segment_records, 1, "{stage:?}");
        assert!(
            store.get_session(&keep.identity, 1000).is_some(),
            "{stage:?}"
        );
    }
}

#[test]
fn supersession_and_removal_hold_at_every_stage() {
    for stage in [
        Stage::Memtable,
        Stage::Segment,
        Stage::Reopened,
        Stage::ReopenedCompacted,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let v1 = sample_snapshot(1, FAR);
        let mut v2 = v1.clone();
        v2.recorded_at_secs += 50;
        v2.groups.push("new-group".into());
        block(store.put_session(&v1)).unwrap();
        let store = settle(store, dir.path(), stage, 0);
        block(store.put_session(&v2)).unwrap();
        let store = settle(store, dir.path(), stage, 0);
        assert_eq!(
            store.get_session(&v1.identity, 0).unwrap().to_snapshot(),
            v2,
            "{stage:?}"
        );

        // A rotated-out refresh token never works again, wherever its record was.
        let d = store.artifact_digest(ArtifactKind::RefreshToken, b"old");
        block(store.put_artifact(&sample_artifact(1, d, FAR))).unwrap();
        let store = settle(store, dir.path(), stage, 0);
        block(store.remove_artifact(&d)).unwrap();
        block(store.remove_session(&v1.identity)).unwrap();
        assert!(store.get_artifact(&d, 0).is_none(), "{stage:?}");
        let store = settle(store, dir.path(), stage, 0);
        assert!(store.get_artifact(&d, 0).is_none(), "{stage:?}");
        assert!(store.get_session(&v1.identity, 0).is_none(), "{stage:?}");
        drop(store);
        let store = open(dir.path());
        assert!(
            store.get_artifact(&d, 0).is_none(),
            "{stage:?} after reopen"
        );
        assert!(
            store.get_session(&v1.identity, 0).is_none(),
            "{stage:?} after reopen"
        );
    }
}

#[test]
fn compaction_merges_and_deletes_covered_wal_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..200 {
        block(store.put_session(&sample_snapshot(i, FAR))).unwrap();
    }
    store.compact(0).unwrap();
    let st = store.stats();
    assert_eq!(st.segment_records, 200);
    assert_eq!(st.memtable_records, 0);
    assert!(st.segments <= 8);
    // Only the fresh generation of each group remains.
    assert_eq!(
        std::fs::read_dir(dir.path().join("wal")).unwrap().count(),
        2
    );
    for i in 100..300 {
        block(store.put_session(&sample_snapshot(i, FAR + i as i64))).unwrap();
    }
    store.compact(0).unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.stats().segment_records, 300);
    for i in 0..300 {
        let v = store.get_session(&sample_identity(i), 0).unwrap();
        let want = if i >= 100 { FAR + i as i64 } else { FAR };
        assert_eq!(v.expires_at_secs(), want);
    }
}

#[test]
fn second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let err = Store::open(dir.path(), small_opts()).err().unwrap();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
}

#[test]
fn newer_format_dir_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let f = dir.path().join("FORMAT");
    let body = std::fs::read_to_string(&f)
        .unwrap()
        .replace("format_version=2", "format_version=7");
    std::fs::write(&f, body).unwrap();
    let err = Store::open(dir.path(), small_opts()).err().unwrap();
    assert!(
        matches!(
            err,
            StoreError::NewerFormat {
                found: 7,
                supported: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade backstop"), "{err}");
}

#[test]
fn another_shard_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let opts = StoreOpts {
        shard_count: 16,
        ..small_opts()
    };
    let err = Store::open(dir.path(), opts).err().unwrap();
    assert!(
        matches!(
            err,
            StoreError::ShardCountMismatch {
                configured: 16,
                on_disk: 8
            }
        ),
        "{err}"
    );
}

#[test]
fn out_of_range_option_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOpts {
        wal_groups: 0,
        ..small_opts()
    };
    let err = Store::open(dir.path(), opts).err().unwrap();
    assert!(err.to_string().contains("wal_groups"), "{err}");
}

#[test]
fn oversized_template_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut s = sample_snapshot(1, FAR);
    s.access_token.claims_json = vec![b' '; 70 * 1024];
    let err = block(store.put_session(&s)).err().unwrap();
    assert!(
        err.to_string().contains("STORE_TEMPLATE_BYTES_MAX"),
        "{err}"
    );
}

#[test]
fn background_compaction_flushes_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOpts {
        compact_age_secs: 1,
        ..StoreOpts {
            shard_count: 4,
            wal_groups: 1,
            ..StoreOpts::background(std::sync::Arc::new(|| 5))
        }
    };
    let store = Store::open(dir.path(), opts).unwrap();
    block(store.put_session(&sample_snapshot(1, FAR))).unwrap();
    block(store.put_session(&sample_snapshot(2, 3))).unwrap();
    let mut waited = 0;
    while store.stats().compactions == 0 && waited < 100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    let st = store.stats();
    assert!(st.compactions >= 1, "{st:?}");
    // The clock said 5: the record expiring at 3 was dropped, the other kept.
    assert_eq!(st.segment_records, 1, "{st:?}");
    assert!(store.get_session(&sample_identity(1), 5).is_some());
}

#[test]
fn inspect_reports_counts_health_and_finds_records_next_to_a_running_store() {
    use backstop::store::inspect::{ArtifactLookup, InspectQuery, run};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..20 {
        block(store.put_session(&sample_snapshot(i, 10_000 + i as i64))).unwrap();
    }
    store.compact(0).unwrap();
    block(store.put_session(&sample_snapshot(100, 500))).unwrap();
    let d = store.artifact_digest(ArtifactKind::RefreshToken, b"rt");
    block(store.put_artifact(&sample_artifact(1, d, FAR))).unwrap();

    // The store stays open: inspect takes no lock.
    let mut out = Vec::new();
    run(dir.path(), &InspectQuery::Summary, 1000, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("shards: 8"), "{text}");
    assert!(
        text.contains("totals: 20 sessions and 0 artifacts in segments (0 revocation events)"),
        "{text}"
    );
    assert!(text.contains("segments failing validation: 0"), "{text}");
    assert!(text.contains("expired: 1"), "{text}");
    assert!(text.contains("< 1 d: 20"), "{text}");

    let mut out = Vec::new();
    run(
        dir.path(),
        &InspectQuery::Session(sample_identity(3)),
        1000,
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("user=user-3") && text.contains("(live)"),
        "{text}"
    );
    assert!(text.contains(r#""sub":"user-3""#), "{text}");

    let mut out = Vec::new();
    let q = InspectQuery::Artifact(ArtifactLookup::Credential {
        kind: ArtifactKind::RefreshToken,
        raw: b"rt".to_vec(),
    });
    run(dir.path(), &q, 1000, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(&d.to_hex()) && text.contains("user=user-1"),
        "{text}"
    );
    assert!(
        text.contains(r#"resource="https://api.example.com""#)
            && text.contains("client_auth=None")
            && text.contains("state: current"),
        "{text}"
    );

    // A rotation: the old token's record now names its successor (by a hex prefix).
    let d2 = store.artifact_digest(ArtifactKind::RefreshToken, b"rt-2");
    let mut rotated = sample_artifact(1, d, FAR);
    rotated.state = ArtifactState::Superseded { successor: d2 };
    rotated.state_changed_at_secs = 77;
    block(store.put_artifact(&rotated)).unwrap();
    let mut out = Vec::new();
    run(
        dir.path(),
        &InspectQuery::Artifact(ArtifactLookup::Digest(d)),
        1000,
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(&format!("superseded by {}..", &d2.to_hex()[..16]))
            && text.contains("state_changed_at: 77"),
        "{text}"
    );

    let mut out = Vec::new();
    run(
        dir.path(),
        &InspectQuery::Session(sample_identity(999)),
        1000,
        &mut out,
    )
    .unwrap();
    assert!(String::from_utf8(out).unwrap().contains("no session"));
}

/// Copies a fixture store into a temp dir (git does not keep mode 0600 on the secrets).
fn copy_fixture(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dst).unwrap();
        if dst.extension().is_some_and(|e| e == "secret") {
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    for sub in ["wal", "segments", "quarantine"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// What a v1 artifact reads as after the upgrade: the fields v1 did not have take their
/// documented defaults (docs/store-format.md, format log).
fn as_upgraded_from_v1(mut a: ArtifactRecord) -> ArtifactRecord {
    a.resource = String::new();
    a.family = String::new();
    a.client_auth = ClientAuthMethod::Unknown;
    a.state = ArtifactState::Current;
    a.state_changed_at_secs = 0;
    a
}

/// Checks that a store holds exactly the v1 fixture's records.
fn assert_serves_v1_fixture(store: &Store) {
    for i in [0, 1, 2, 3, 5] {
        assert_eq!(
            store
                .get_session(&sample_identity(i), 0)
                .unwrap()
                .to_snapshot(),
            sample_snapshot(i, FAR),
            "session {i}"
        );
    }
    assert!(store.get_session(&sample_identity(4), 0).is_none());
    let d = store.artifact_digest(ArtifactKind::RefreshToken, b"fixture-rt");
    assert_eq!(
        store.get_artifact(&d, 0).unwrap().to_record(),
        Some(as_upgraded_from_v1(sample_artifact(5, d, FAR)))
    );
}

fn fixture_dir(version: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/store")
        .join(version)
}

fn format_version_of(dir: &std::path::Path) -> u32 {
    let body = std::fs::read_to_string(dir.join("FORMAT")).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("format_version="))
        .unwrap()
        .parse()
        .unwrap()
}

/// The header version of every WAL file and segment in `dir`.
fn file_versions(dir: &std::path::Path) -> Vec<u32> {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal" || e == "seg"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            u32::from_le_bytes(b[8..12].try_into().unwrap())
        })
        .collect()
}

/// Format version 1 as released: segments holding sessions 0..4, a WAL with session 5, a
/// tombstone for session 4 and one artifact. Every later build must open it and serve every
/// record ("nothing durable is lost"); the open converts it to the current format. Frozen: this
/// build writes only the current format, so the fixture can no longer be regenerated.
#[test]
fn format_v1_fixture_opens_with_every_record() {
    let fixture = fixture_dir("v1");
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(&fixture, dir.path());
    assert_eq!(format_version_of(dir.path()), 1);
    let store = open(dir.path());
    assert!(
        store.recovery_report().is_empty(),
        "{:?}",
        store.recovery_report()
    );
    assert_serves_v1_fixture(&store);
    assert!(store.stats().segment_records >= 5);
    // Upgraded: FORMAT and every file say 2, and the store still serves it all after reopening.
    assert_eq!(format_version_of(dir.path()), FORMAT_VERSION);
    drop(store);
    assert!(
        file_versions(dir.path())
            .iter()
            .all(|&v| v == FORMAT_VERSION),
        "{:?}",
        file_versions(dir.path())
    );
    let store = open(dir.path());
    assert!(store.recovery_report().is_empty());
    assert_serves_v1_fixture(&store);
}

/// A crash at any step of the v1 upgrade leaves a store that opens and serves every record.
/// The steps' intermediate states, built by hand: (a) a shard's converted segment written next
/// to its v1 segment (crash before the unlink); (b) every segment converted, the v1 WAL and
/// FORMAT=1 still there (crash before the upgrade's compaction); (c) everything converted but
/// FORMAT still 1 (crash before the FORMAT write). And (d) the upgrade's compaction failing on
/// an injected fsync or write error: open fails, the next open finishes the upgrade.
#[test]
fn interrupted_v1_upgrade_still_opens_with_every_record() {
    use backstop::store::segment;
    let fixture = fixture_dir("v1");
    let segs = |d: &std::path::Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = walk(&d.join("segments"));
        v.sort();
        v
    };
    let convert = |p: &std::path::Path, new_gen: u64| -> std::path::PathBuf {
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        let shard = &name[1..6];
        let out = p
            .parent()
            .unwrap()
            .join(format!("s{shard}-{new_gen:016x}.seg"));
        std::fs::write(&out, segment::upgrade(&std::fs::read(p).unwrap()).unwrap()).unwrap();
        out
    };

    // (a) one shard has both.
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(&fixture, dir.path());
    convert(&segs(dir.path())[0], 0x100);
    let store = open(dir.path());
    assert_serves_v1_fixture(&store);
    assert_eq!(format_version_of(dir.path()), FORMAT_VERSION);
    drop(store);

    // (b) every segment converted, v1 WAL and FORMAT left.
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(&fixture, dir.path());
    for (i, p) in segs(dir.path()).into_iter().enumerate() {
        convert(&p, 0x100 + i as u64);
        std::fs::remove_file(p).unwrap();
    }
    let store = open(dir.path());
    assert_serves_v1_fixture(&store);
    drop(store);

    // (c) all converted, FORMAT still 1.
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(&fixture, dir.path());
    drop(open(dir.path()));
    std::fs::copy(fixture.join("FORMAT"), dir.path().join("FORMAT")).unwrap();
    assert_eq!(format_version_of(dir.path()), 1);
    let store = open(dir.path());
    assert_serves_v1_fixture(&store);
    assert_eq!(format_version_of(dir.path()), FORMAT_VERSION);
    drop(store);

    // (d) each of the first WAL writes and fsyncs fails in turn: the new generations open
    // creates (one per group), then the upgrade's rotations (one per group).
    let faults = (1..=6).flat_map(|n| [(0, n), (n, 0)]);
    let mut failed_opens = 0;
    for (fail_write_at, fail_sync_at) in faults {
        let dir = tempfile::tempdir().unwrap();
        copy_fixture(&fixture, dir.path());
        let faulty = StoreOpts {
            wal_backend: std::sync::Arc::new(store_common::FaultyBackend::new(
                fail_write_at,
                fail_sync_at,
            )),
            ..small_opts()
        };
        // Either the fault hit the upgrade (open fails) or a later write (open succeeds).
        match Store::open(dir.path(), faulty) {
            Ok(s) => assert_serves_v1_fixture(&s),
            Err(_) => failed_opens += 1,
        }
        let store = open(dir.path());
        assert_serves_v1_fixture(&store);
        assert_eq!(format_version_of(dir.path()), FORMAT_VERSION);
    }
    assert!(
        failed_opens >= 4,
        "the faults missed the upgrade: {failed_opens}"
    );
}

/// Format version 2 as released: segments holding sessions 0..4 (with `nbf` offsets) and
/// artifacts in every state, a WAL with session 5, a tombstone for session 4, an artifact
/// superseded by a rotation, and revocation events in both. Every later build must open it
/// unchanged. Regenerate (only when adding a new version's fixture) with
/// BACKSTOP_REGEN_STORE_FIXTURE=1.
#[test]
fn format_v2_fixture_opens_with_every_record() {
    let fixture = fixture_dir("v2");
    if std::env::var("BACKSTOP_REGEN_STORE_FIXTURE").is_ok() {
        let _ = std::fs::remove_dir_all(&fixture);
        let store = open(&fixture);
        for s in v2_fixture_sessions() {
            block(store.put_session(&s)).unwrap();
        }
        for a in v2_fixture_artifacts(&store).into_iter().take(3) {
            block(store.put_artifact(&a)).unwrap();
        }
        block(store.put_revocation(v2_fixture_revocation(0))).unwrap();
        store.compact(0).unwrap();
        block(store.put_session(&sample_snapshot(5, FAR))).unwrap();
        block(store.remove_session(&sample_identity(4))).unwrap();
        for a in v2_fixture_artifacts(&store).into_iter().skip(3) {
            block(store.put_artifact(&a)).unwrap();
        }
        block(store.put_revocation(v2_fixture_revocation(1))).unwrap();
        drop(store);
        std::fs::remove_file(fixture.join("LOCK")).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(&fixture, dir.path());
    assert_eq!(format_version_of(dir.path()), 2);
    let store = open(dir.path());
    assert!(
        store.recovery_report().is_empty(),
        "{:?}",
        store.recovery_report()
    );
    let sessions = v2_fixture_sessions();
    for (i, s) in sessions.iter().enumerate() {
        let got = store.get_session(&s.identity, 0).map(|v| v.to_snapshot());
        if i == 4 {
            assert_eq!(got, None, "session 4 was removed");
        } else {
            assert_eq!(got.as_ref(), Some(s), "session {i}");
        }
    }
    assert_eq!(
        store
            .get_session(&sample_identity(5), 0)
            .unwrap()
            .to_snapshot(),
        sample_snapshot(5, FAR)
    );
    let arts = v2_fixture_artifacts(&store);
    // The rotated-out token (index 0) was rewritten superseded after the compaction.
    for (i, a) in arts.iter().enumerate().skip(1) {
        assert_eq!(
            store.get_artifact(&a.digest, 0).and_then(|v| v.to_record()),
            Some(a.clone()),
            "artifact {i}"
        );
    }
    assert_eq!(
        store.get_artifact(&arts[0].digest, 0).unwrap().state(),
        ArtifactState::Superseded {
            successor: arts[1].digest
        }
    );
    let mut revs = store.revocations();
    revs.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        revs,
        vec![v2_fixture_revocation(0), v2_fixture_revocation(1)]
    );
    assert!(store.stats().segment_records >= 5);
    assert_eq!(format_version_of(dir.path()), 2);
}

fn v2_fixture_sessions() -> Vec<backstop::store::SessionSnapshot> {
    (0..5)
        .map(|i| {
            let mut s = sample_snapshot(i, FAR);
            s.access_token.nbf_offset_secs = -(i as i32) * 30;
            s
        })
        .collect()
}

/// Artifacts 0..3 go to segments, 3.. to the WAL. 0 is first written current, then (in the
/// WAL, as the last one) superseded by 1; 2 is revoked.
fn v2_fixture_artifacts(store: &Store) -> Vec<ArtifactRecord> {
    let d = |raw: &[u8]| store.artifact_digest(ArtifactKind::RefreshToken, raw);
    let (d0, d1, d2) = (d(b"rt-0"), d(b"rt-1"), d(b"rt-2"));
    let d3 = store.artifact_digest(ArtifactKind::SessionCookie, b"cookie-3");
    let mut a0 = sample_artifact(0, d0, FAR);
    a0.client_auth = ClientAuthMethod::SecretBasic;
    let a1 = sample_artifact(0, d1, FAR);
    let mut a2 = sample_artifact(2, d2, FAR);
    a2.state = ArtifactState::Revoked;
    a2.state_changed_at_secs = 1_700_000_500;
    a2.client_auth = ClientAuthMethod::JwtAssertion;
    let mut a3 = sample_artifact(3, d3, FAR);
    a3.kind = ArtifactKind::SessionCookie;
    a3.family = String::new();
    a3.client_auth = ClientAuthMethod::Unknown;
    let mut a0_superseded = a0.clone();
    a0_superseded.state = ArtifactState::Superseded { successor: d1 };
    a0_superseded.state_changed_at_secs = 1_700_000_600;
    vec![a0, a1, a2, a3, a0_superseded]
}

fn v2_fixture_revocation(i: u64) -> RevocationRecord {
    RevocationRecord {
        id: format!("fixture-event-{i}"),
        kind: 4,
        subject_kind: 1,
        subject: format!("user-{i}"),
        time_secs: 1_700_000_000 + i as i64,
        source: 1,
        recorded_at_secs: 1_700_000_010 + i as i64,
        expires_at_secs: FAR,
    }
}

#[test]
fn dropping_the_store_with_an_unpolled_put_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let pending = store.put_session(&sample_snapshot(1, FAR));
    drop(store);
    // The writer is still there for it: the put completes and is durable.
    block(pending).unwrap();
    // The writer thread exits (releasing the lock) right after its last sender is gone.
    let mut reopened = None;
    for _ in 0..200 {
        match Store::open(dir.path(), small_opts()) {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err(StoreError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    }
    let store = reopened.expect("lock released after the last in-flight put");
    assert!(store.get_session(&sample_identity(1), 0).is_some());
}

/// Simulates a routing-key collision, which the keyed xxh3-128 makes infeasible to find: a WAL
/// record filed under identity B's key but holding identity A's snapshot. A lookup of B must
/// compare the identifiers and refuse it.
#[test]
fn session_key_collision_never_returns_the_other_session() {
    use backstop::store::format::{DiskSession, kind};
    use backstop::store::wal;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (a, b) = (sample_snapshot(1, FAR), sample_snapshot(2, FAR));
    let key_b = store.session_key(&b.identity);
    drop(store);
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(&DiskSession::from_snapshot(&a)).unwrap();
    let mut file = wal::file_header(0, 0xffff).to_vec();
    wal::encode_record(kind::SESSION, key_b, &body, &mut file);
    std::fs::write(
        dir.path()
            .join("wal")
            .join(format!("g000-{:016x}.wal", 0xffff)),
        file,
    )
    .unwrap();

    let store = open(dir.path());
    assert!(
        store.recovery_report().is_empty(),
        "{:?}",
        store.recovery_report()
    );
    assert!(
        store.get_session(&b.identity, 0).is_none(),
        "returned A's record for B"
    );
    store.compact(0).unwrap();
    assert!(
        store.get_session(&b.identity, 0).is_none(),
        "returned A's record for B from a segment"
    );
    assert_eq!(
        store.stats().segment_records,
        1,
        "the planted record was really there"
    );
}

#[test]
fn owned_put_stores_the_same_record_as_borrowed_put() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (a, b) = (sample_snapshot(1, FAR), sample_snapshot(2, FAR));
    block(store.put_session(&a)).unwrap();
    block(store.put_session_owned(b.clone())).unwrap();
    assert_eq!(store.get_session(&a.identity, 0).unwrap().to_snapshot(), a);
    assert_eq!(store.get_session(&b.identity, 0).unwrap().to_snapshot(), b);
}

#[test]
fn background_compaction_reclaims_expired_records_with_no_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOpts {
        compact_age_secs: 1,
        ..StoreOpts {
            shard_count: 4,
            wal_groups: 1,
            ..StoreOpts::background(std::sync::Arc::new(|| 5))
        }
    };
    let store = Store::open(dir.path(), opts).unwrap();
    block(store.put_session(&sample_snapshot(1, FAR))).unwrap();
    block(store.put_session(&sample_snapshot(2, 3))).unwrap();
    // A manual compaction at time 0 keeps both; from then on the in-memory table is empty.
    store.compact(0).unwrap();
    let mut waited = 0;
    while store.stats().segment_records != 1 && waited < 100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    assert_eq!(store.stats().segment_records, 1, "{:?}", store.stats());
    assert_eq!(store.stats().memtable_records, 0);
}

/// `artifact_chain_current` follows rotations to the credential that stands for a session now.
#[test]
fn artifact_chain_follows_rotations_to_the_current_or_revoked_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let d: Vec<_> = (0..5u8)
        .map(|i| store.artifact_digest(ArtifactKind::RefreshToken, &[b'r', i]))
        .collect();
    let superseded = |i: usize, by: usize| {
        let mut a = sample_artifact(1, d[i], FAR);
        a.state = ArtifactState::Superseded { successor: d[by] };
        a.state_changed_at_secs = 100 + i as i64;
        a
    };
    // d0 -> d1 -> d2 (current). d3 -> d4 (revoked).
    block(store.put_artifact(&superseded(0, 1))).unwrap();
    block(store.put_artifact(&superseded(1, 2))).unwrap();
    block(store.put_artifact(&sample_artifact(1, d[2], FAR))).unwrap();
    block(store.put_artifact(&superseded(3, 4))).unwrap();
    let mut revoked = sample_artifact(1, d[4], FAR);
    revoked.state = ArtifactState::Revoked;
    block(store.put_artifact(&revoked)).unwrap();

    let head = |from: usize, hops: u32| {
        store
            .artifact_chain_current(&d[from], 0, hops)
            .map(|v| v.to_record().unwrap().digest)
    };
    // A current record is its own head, with no hop needed.
    assert_eq!(head(2, 0), Some(d[2]));
    assert_eq!(head(0, 2), Some(d[2]));
    assert_eq!(head(1, 1), Some(d[2]));
    // Too long for the hop budget.
    assert_eq!(head(0, 1), None);
    assert_eq!(head(0, 0), None);
    // A revoked head is returned (the caller answers invalid_grant).
    assert_eq!(head(3, 1), Some(d[4]));
    assert_eq!(
        store.artifact_chain_current(&d[3], 0, 1).unwrap().state(),
        ArtifactState::Revoked
    );

    // Broken chain: the successor was never recorded, or has expired.
    let missing = store.artifact_digest(ArtifactKind::RefreshToken, b"never");
    let mut dangling = sample_artifact(1, d[0], FAR);
    dangling.state = ArtifactState::Superseded { successor: missing };
    block(store.put_artifact(&dangling)).unwrap();
    assert_eq!(head(0, 10), None);
    let mut short = sample_artifact(1, d[2], 50);
    short.state = ArtifactState::Current;
    block(store.put_artifact(&short)).unwrap();
    assert!(head(1, 10).is_some(), "not expired at 0");
    assert!(store.artifact_chain_current(&d[1], 50, 10).is_none());

    // A cycle ends at the hop budget instead of looping.
    block(store.put_artifact(&superseded(0, 1))).unwrap();
    block(store.put_artifact(&superseded(1, 0))).unwrap();
    assert_eq!(head(0, 1000), None);

    // Works the same once the records live in segments.
    block(store.put_artifact(&superseded(1, 2))).unwrap();
    store.compact(0).unwrap();
    assert_eq!(head(0, 2), Some(d[2]));
}

/// A WAL file or segment from a newer format is refused at open, naming the file, even when
/// the FORMAT file says the current version (a partly upgraded store of a newer build).
#[test]
fn newer_format_wal_or_segment_is_refused_with_a_clear_error() {
    use backstop::store::{segment, wal};
    let newer = FORMAT_VERSION + 1;
    // WAL: a valid header carrying a newer version.
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let mut h = wal::file_header(0, 0xfff0);
    h[8..12].copy_from_slice(&newer.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&h[..24]);
    h[24..32].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(dir.path().join("wal/g000-000000000000fff0.wal"), h).unwrap();
    let err = Store::open(dir.path(), small_opts()).err().unwrap();
    assert!(
        matches!(err, StoreError::NewerFormat { found, supported: FORMAT_VERSION, ref path }
            if found == newer && path.ends_with("g000-000000000000fff0.wal")),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade backstop"), "{err}");

    // Segment: a valid empty segment whose header says newer, resealed.
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let mut b = segment::build(0, 8, &[]);
    b[8..12].copy_from_slice(&newer.to_le_bytes());
    segment::reseal(&mut b);
    std::fs::write(dir.path().join("segments/s00000-000000000000fff0.seg"), b).unwrap();
    let err = Store::open(dir.path(), small_opts()).err().unwrap();
    assert!(
        matches!(err, StoreError::NewerFormat { found, .. } if found == newer),
        "{err}"
    );
    // Refused, not quarantined: a newer build's data is not damage.
    assert!(
        dir.path()
            .join("segments/s00000-000000000000fff0.seg")
            .exists()
    );
}

/// A v1 segment that fails its checks is quarantined during the upgrade, like any damaged
/// segment; the rest of the store is converted and serves.
#[test]
fn damaged_v1_segment_is_quarantined_and_the_rest_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(&fixture_dir("v1"), dir.path());
    let mut segs = walk(&dir.path().join("segments"));
    segs.sort();
    let victim = segs.last().unwrap().clone();
    let mut b = std::fs::read(&victim).unwrap();
    let n = b.len();
    b[n - 20] ^= 0x40;
    std::fs::write(&victim, b).unwrap();

    let store = open(dir.path());
    let report = store.recovery_report();
    assert_eq!(store.stats().quarantined_segments, 1, "{report:?}");
    assert!(
        report
            .iter()
            .any(|e| matches!(e, RecoveryEvent::SegmentQuarantined { .. })),
        "{report:?}"
    );
    // Every session not in the damaged shard, and the WAL's records, still serve.
    let served = [0, 1, 2, 3]
        .into_iter()
        .filter(|&i| store.get_session(&sample_identity(i), 0).is_some())
        .count();
    assert!(served >= 1, "nothing served");
    assert!(store.get_session(&sample_identity(5), 0).is_some());
    assert_eq!(format_version_of(dir.path()), FORMAT_VERSION);
}

/// `inspect` reads a v1 store as open would serve it (converting in memory) and writes nothing:
/// the conversion happens only when the store is opened.
#[test]
fn inspect_reads_a_v1_store_without_converting_it() {
    use backstop::store::inspect::{ArtifactLookup, InspectQuery, run};
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(&fixture_dir("v1"), dir.path());
    let before: Vec<_> = walk(dir.path())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let mut out = Vec::new();
    run(dir.path(), &InspectQuery::Summary, 0, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("format version: 1 (converted"), "{text}");
    assert!(text.contains("totals: 5 sessions"), "{text}");
    assert!(text.contains("segments failing validation: 0"), "{text}");

    let keys = backstop::store::Keys::load(dir.path()).unwrap();
    let d = keys.artifact_digest(ArtifactKind::RefreshToken, b"fixture-rt");
    let mut out = Vec::new();
    run(
        dir.path(),
        &InspectQuery::Artifact(ArtifactLookup::Digest(d)),
        0,
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r#"resource="" family="" client_auth=Unknown"#)
            && text.contains("state: current"),
        "{text}"
    );
    let after: Vec<_> = walk(dir.path())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let (mut before, mut after) = (before, after);
    before.sort();
    after.sort();
    assert!(before == after, "inspect modified the store");
}
