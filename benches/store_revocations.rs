//! Time to list a store's revocation events at start (`Store::revocations_live`, what the
//! server's `Revocations::replay` calls), on a store of `BACKSTOP_BENCH_SESSIONS` sessions
//! (default 1,000,000, bulk-loaded) and `BACKSTOP_BENCH_EVENTS` revocation events (default
//! 1,000, put through the WAL and compacted into the segments). Reopens the store and times
//! the listing with the page cache warm: the minimum and median of 20 calls, each checked to
//! return every event. `BACKSTOP_BENCH_DIR` (default `target/store-revocations-bench`) holds
//! the files; it is deleted at the end.
// Benches measure wall-clock time; the clock rule is for library code.
#![allow(clippy::disallowed_methods)]
// A bench binary reports on stdout and may unwrap: a failure aborts the run with a line.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use backstop::store::testutil::sample_snapshot;
use backstop::store::{RevocationRecord, Store, StoreOpts};

const FAR: i64 = 4_000_000_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn event(i: u64) -> RevocationRecord {
    RevocationRecord {
        id: format!("event-{i}"),
        kind: 1,
        subject_kind: 1,
        subject: format!("user-{i}"),
        time_secs: 1_700_000_000,
        source: 1,
        recorded_at_secs: 1_700_000_001,
        expires_at_secs: FAR,
    }
}

fn main() {
    let sessions = env_u64("BACKSTOP_BENCH_SESSIONS", 1_000_000);
    let events = env_u64("BACKSTOP_BENCH_EVENTS", 1_000);
    let root = std::env::var("BACKSTOP_BENCH_DIR")
        .unwrap_or_else(|_| "target/store-revocations-bench".into());
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let dir = Path::new(&root).join("store");

    let t = Instant::now();
    {
        let store = Store::open(&dir, StoreOpts::manual()).unwrap();
        let records: Vec<_> = (0..sessions)
            .map(|i| store.bulk_session(sample_snapshot(i, FAR)).unwrap())
            .collect();
        store.bulk_load(records, 0).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..events {
            rt.block_on(store.put_revocation(event(i))).unwrap();
        }
        store.compact(0).unwrap();
        assert_eq!(store.stats().segment_revocations, events);
    }
    println!(
        "built: {sessions} sessions + {events} revocation events in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Foreground validation off, as at the start of a large store: the listing runs while
    // the background validation has not reached the segments yet, the worst case.
    let store = Store::open(
        &dir,
        StoreOpts {
            validate_foreground_bytes_max: 0,
            ..StoreOpts::manual()
        },
    )
    .unwrap();
    let mut took: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let live = store.revocations_live(0);
            let d = t.elapsed();
            assert_eq!(live.len() as u64, events);
            d
        })
        .collect();
    took.sort();
    println!(
        "revocations_live: {events} events among {sessions} sessions: min {:.2} ms, median {:.2} ms (20 calls, page cache warm)",
        took[0].as_secs_f64() * 1e3,
        took[took.len() / 2].as_secs_f64() * 1e3
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&root);
}
