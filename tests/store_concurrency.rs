//! Readers running during continuous compaction and writes never see a missing or torn
//! record: every lookup of a key written before the readers started finds a complete record of
//! that key, at a version no older than the last one they saw.
// Integration-test crate: helpers outside `#[test]` fns may unwrap like the tests do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod store_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use backstop::store::testutil::{sample_identity, sample_snapshot};
use backstop::store::{SessionSnapshot, Store, StoreOpts};
use store_common::{block, scaled};

const KEYS: u64 = 300;

fn version(i: u64, v: u64) -> SessionSnapshot {
    let mut s = sample_snapshot(i, 4_000_000_000);
    s.recorded_at_secs = v as i64;
    // A second field tied to the version: a torn mix of two versions would disagree.
    s.groups = vec![format!("v{v}")];
    s
}

#[test]
fn readers_during_continuous_compaction_never_miss_or_tear() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOpts {
        shard_count: 4,
        wal_groups: 2,
        ..StoreOpts::manual()
    };
    let store = Arc::new(Store::open(dir.path(), opts).unwrap());
    for i in 0..KEYS {
        block(store.put_session(&version(i, 0))).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let compactions_wanted = scaled(15);

    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (store, stop, reads) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&reads));
            std::thread::spawn(move || {
                let mut seen = vec![0i64; KEYS as usize];
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    i = (i * 7 + 13) % KEYS;
                    let v = store
                        .get_session(&sample_identity(i), 0)
                        .unwrap_or_else(|| panic!("key {i} missing"));
                    let at = v.recorded_at_secs.to_native();
                    assert!(v.is_identity(&sample_identity(i)));
                    assert_eq!(v.groups.len(), 1);
                    assert_eq!(
                        v.groups[0].as_str(),
                        format!("v{at}"),
                        "torn record for key {i}"
                    );
                    assert!(
                        at >= seen[i as usize],
                        "key {i} went back from {} to {at}",
                        seen[i as usize]
                    );
                    seen[i as usize] = at;
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut v = 1;
            while !stop.load(Ordering::Relaxed) {
                let puts: Vec<_> = (0..KEYS)
                    .step_by(3)
                    .map(|i| store.put_session(&version(i, v)))
                    .collect();
                rt.block_on(async {
                    for p in puts {
                        p.await.unwrap();
                    }
                });
                v += 1;
            }
        })
    };

    for _ in 0..compactions_wanted {
        store.compact(0).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    let st = store.stats();
    assert!(st.compactions >= compactions_wanted * 2, "{st:?}");
    assert!(
        reads.load(Ordering::Relaxed) > 1000,
        "readers barely ran: {}",
        reads.load(Ordering::Relaxed)
    );
    assert_eq!(st.corrupt_reads, 0);
}
