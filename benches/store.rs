//! Store benchmarks (issue 3): `get_session` hit and miss against LMDB (`heed`) on the same
//! keys and records in the same run, plus one-shot figures printed before criterion runs:
//! durable ingest rate with group commit, compaction time, bytes per snapshot, open time,
//! background validation time, peak RSS.
//!
//! `BACKSTOP_BENCH_SESSIONS` (default 1,000,000) sets the store size;
//! `BACKSTOP_BENCH_DIR` (default `target/store-bench`) where the files go (a real disk, so
//! fsync means something).
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

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use backstop::store::format::DiskSession;
use backstop::store::testutil::{sample_identity, sample_snapshot};
use backstop::store::{SessionIdentity, Store, StoreOpts};
use criterion::Criterion;

const FAR: i64 = 4_000_000_000;
const PROBES: usize = 1 << 16;

fn rss_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn probes(n: u64, offset: u64) -> Vec<SessionIdentity> {
    // Spread over the whole key range so lookups touch cold pages as a server's would.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..PROBES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sample_identity(offset + x % n)
        })
        .collect()
}

/// Durable ingest time, excluding building the sample snapshots (capture hands the store a
/// finished snapshot). Flushes the in-memory table every `COMPACT_EVERY` records, as the
/// background compactor would (every 2 Mi), so RAM stays bounded at 10 M; the flush time is reported
/// separately.
fn ingest(store: &Store, n: u64) -> (Duration, Duration) {
    const CHUNK: u64 = 65_536;
    const COMPACT_EVERY: u64 = 1 << 21;
    let (mut put_time, mut compact_time) = (Duration::ZERO, Duration::ZERO);
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        let mut snaps: Vec<_> = (start..end).map(|i| sample_snapshot(i, FAR)).collect();
        let second = snaps.split_off(snaps.len() / 2);
        let t = Instant::now();
        // Two producers, as two server workers capturing in parallel would be.
        std::thread::scope(|scope| {
            for half in [snaps, second] {
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let mut tasks = tokio::task::JoinSet::new();
                        for s in half {
                            tasks.spawn(store.put_session_owned(s));
                            while tasks.len() >= 4096 {
                                tasks.join_next().await.unwrap().unwrap().unwrap();
                            }
                        }
                        while let Some(r) = tasks.join_next().await {
                            r.unwrap().unwrap();
                        }
                    });
                });
            }
        });
        put_time += t.elapsed();
        if end.is_multiple_of(COMPACT_EVERY) {
            let t = Instant::now();
            store.compact(0).unwrap();
            compact_time += t.elapsed();
        }
        start = end;
    }
    (put_time, compact_time)
}

fn build_lmdb(path: &Path, store: &Store, n: u64) -> heed::Env {
    std::fs::create_dir_all(path).unwrap();
    // SAFETY (heed's contract for `open`): the environment directory is fresh and private to
    // this process, and nothing else maps or modifies it while the bench runs.
    #[allow(unsafe_code)]
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .map_size(((n as usize) * 2048).max(1 << 30))
            .max_dbs(1)
            .open(path)
            .unwrap()
    };
    let mut wtxn = env.write_txn().unwrap();
    let db: heed::Database<heed::types::Bytes, heed::types::Bytes> =
        env.create_database(&mut wtxn, Some("sessions")).unwrap();
    wtxn.commit().unwrap();
    let mut i = 0;
    while i < n {
        let mut wtxn = env.write_txn().unwrap();
        for j in i..(i + 100_000).min(n) {
            let s = sample_snapshot(j, FAR);
            let key = store.session_key(&s.identity).0.to_le_bytes();
            let bytes =
                rkyv::to_bytes::<rkyv::rancor::Error>(&DiskSession::from_snapshot(&s)).unwrap();
            db.put(&mut wtxn, &key, &bytes).unwrap();
        }
        wtxn.commit().unwrap();
        i += 100_000;
    }
    env
}

// The same allocator as the `backstop` binary, so ingest is measured as it runs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: u64 = std::env::var("BACKSTOP_BENCH_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let root = std::env::var("BACKSTOP_BENCH_DIR").unwrap_or_else(|_| "target/store-bench".into());
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let dir = Path::new(&root).join("store");

    let store = Store::open(&dir, StoreOpts::manual()).unwrap();
    let (took, flushes) = ingest(&store, n);
    println!(
        "ingest: {n} sessions durable in {:.2} s = {:.0} sessions/s (group commit, 2 producers x 4096 in flight, {} WAL groups; snapshot building excluded)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        store.stats().wal_groups
    );
    let t = Instant::now();
    store.compact(0).unwrap();
    println!(
        "compaction: {:.2} s in flushes every 2 Mi records during ingest, {:.2} s final",
        flushes.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    let st = store.stats();
    println!(
        "segment bytes: {} = {:.0} bytes per snapshot (record {} bytes serialized)",
        st.segment_bytes,
        st.segment_bytes as f64 / n as f64,
        rkyv::to_bytes::<rkyv::rancor::Error>(&DiskSession::from_snapshot(&sample_snapshot(
            1, FAR
        )))
        .unwrap()
        .len()
    );
    println!(
        "peak RSS after ingest+compaction (includes mapped file pages): {} MiB",
        rss_kib("VmHWM:") / 1024
    );
    drop(store);

    let t = Instant::now();
    let mut store = Store::open(&dir, StoreOpts::manual()).unwrap();
    let open = t.elapsed();
    store.wait_validated();
    println!(
        "open: {:.1} ms (serving); background validation done after {:.2} s",
        open.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64()
    );

    // Each store is measured with its own pages hot, as the one store a node serves from
    // would be: ours first, then LMDB is built and measured. (At 10 M both together exceed
    // this machine's RAM, and whichever was built last would otherwise win on cache alone.)
    let hits = probes(n, 0);
    let misses = probes(n, n);
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30)
        .configure_from_args();
    let label = format!("{}k", n / 1000);
    let ours_hit = mean_ns(|id| store.get_session(id, 0).is_some(), &hits, true);
    let ours_miss = mean_ns(|id| store.get_session(id, 0).is_some(), &misses, false);
    {
        let mut g = c.benchmark_group(format!("get_session/{label}"));
        let mut i = 0usize;
        g.bench_function("backstop_hit", |b| {
            b.iter(|| {
                i = (i + 1) & (PROBES - 1);
                let v = store.get_session(black_box(&hits[i]), 0);
                assert!(v.is_some());
                v
            })
        });
        g.bench_function("backstop_miss", |b| {
            b.iter(|| {
                i = (i + 1) & (PROBES - 1);
                let v = store.get_session(black_box(&misses[i]), 0);
                assert!(v.is_none());
            })
        });
        g.finish();
    }

    let env = build_lmdb(&Path::new(&root).join("lmdb"), &store, n);
    let rtxn = env.read_txn().unwrap();
    let db: heed::Database<heed::types::Bytes, heed::types::Bytes> =
        env.open_database(&rtxn, Some("sessions")).unwrap().unwrap();
    drop(rtxn);
    let lmdb_bytes: u64 = std::fs::read_dir(Path::new(&root).join("lmdb"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "lmdb file bytes: {lmdb_bytes} = {:.0} bytes per snapshot",
        lmdb_bytes as f64 / n as f64
    );
    // LMDB baselines do less than ours: key hash and a bare get of the value bytes, no
    // archive access or identity compare (LMDB values are not aligned for rkyv, so a real
    // user would also copy). A lower bound on what LMDB costs for the same lookup.
    let lmdb_get = |rtxn: &heed::RoTxn<'_, heed::WithTls>, id: &SessionIdentity| -> bool {
        let key = store.session_key(id).0.to_le_bytes();
        db.get(rtxn, &key).unwrap().is_some_and(|v| v.len() > 100)
    };
    let rtxn = env.read_txn().unwrap();
    let lmdb_hit = mean_ns(|id| lmdb_get(&rtxn, id), &hits, true);
    let lmdb_miss = mean_ns(|id| lmdb_get(&rtxn, id), &misses, false);
    drop(rtxn);
    {
        let mut g = c.benchmark_group(format!("get_session/{label}"));
        let mut i = 0usize;
        g.bench_function("lmdb_hit_txn_per_lookup", |b| {
            b.iter(|| {
                i = (i + 1) & (PROBES - 1);
                let rtxn = env.read_txn().unwrap();
                assert!(lmdb_get(&rtxn, black_box(&hits[i])));
            })
        });
        let rtxn = env.read_txn().unwrap();
        g.bench_function("lmdb_hit_shared_txn", |b| {
            b.iter(|| {
                i = (i + 1) & (PROBES - 1);
                assert!(lmdb_get(&rtxn, black_box(&hits[i])));
            })
        });
        g.bench_function("lmdb_miss_shared_txn", |b| {
            b.iter(|| {
                i = (i + 1) & (PROBES - 1);
                assert!(!lmdb_get(&rtxn, black_box(&misses[i])));
            })
        });
        drop(rtxn);
        g.finish();
    }
    c.final_summary();
    println!(
        "same-run means over {PROBES} warmed probes x {PASSES}: hit backstop {ours_hit:.0} ns, lmdb (shared txn) {lmdb_hit:.0} ns, ratio {:.2}; miss backstop {ours_miss:.0} ns, lmdb {lmdb_miss:.0} ns, ratio {:.2}",
        ours_hit / lmdb_hit,
        ours_miss / lmdb_miss
    );
    println!(
        "peak RSS (includes mapped file pages): {} MiB",
        rss_kib("VmHWM:") / 1024
    );
}

const PASSES: usize = 4;

/// Mean nanoseconds per lookup over the probes, after one untimed pass that faults their
/// pages in. Checks every answer, so it cannot win by doing nothing.
fn mean_ns(
    mut lookup: impl FnMut(&SessionIdentity) -> bool,
    probes: &[SessionIdentity],
    want: bool,
) -> f64 {
    for id in probes {
        assert_eq!(lookup(id), want);
    }
    let t = Instant::now();
    for _ in 0..PASSES {
        for id in probes {
            assert_eq!(black_box(lookup(black_box(id))), want);
        }
    }
    t.elapsed().as_nanos() as f64 / (PASSES * probes.len()) as f64
}
