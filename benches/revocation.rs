//! Revocation filter benchmarks (issue 6): the clean check (no event for the subject: one hash
//! and one bit probe), the hit check (bitmap, then exact map), and the clean check through an
//! `arc-swap` load as the request path does it; plus one-shot figures printed before criterion
//! runs: insert rate, memory per million events, snapshot and expiry times, and the
//! clean/hit ratio from a plain timing loop.
//!
//! `BACKSTOP_BENCH_REVOCATIONS` (default 1,000,000) sets the number of events (one distinct
//! user subject each).
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use backstop::revocation::{
    EventKind, FilterSnapshot, RevocationEvent, RevocationSet, Source, Subject, Verdict,
};
use criterion::Criterion;

const PROBES: usize = 1 << 16;

fn rss_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A user id shaped like a primary's `sub` (a 36-character UUID-like string).
fn user(i: u64, salt: u64) -> Subject {
    let h = xxhash_rust::xxh3::xxh3_128_with_seed(&i.to_le_bytes(), salt);
    let hex = format!("{h:032x}");
    Subject::User(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn event(i: u64) -> RevocationEvent {
    RevocationEvent {
        id: format!("evt-{i:012}"),
        kind: EventKind::ALL[(i % 8) as usize],
        subject: user(i, 1),
        time_secs: 1_000 + (i % 3_600) as i64,
        source: Source::SharedSignals,
    }
}

fn clean_loop(snap: &FilterSnapshot, subjects: &[Subject]) -> Duration {
    let t = Instant::now();
    for _ in 0..16 {
        for s in subjects {
            black_box(snap.revoked_since(black_box(s), 0).is_clear());
        }
    }
    t.elapsed() / (16 * subjects.len() as u32)
}

fn main() {
    let n: u64 = std::env::var("BACKSTOP_BENCH_REVOCATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);

    let hits: Vec<Subject> = (0..PROBES as u64)
        .map(|i| user((i * 7_919) % n, 1))
        .collect();
    let clean: Vec<Subject> = (0..PROBES as u64).map(|i| user(i, 2)).collect();

    let rss_before = rss_kib("VmRSS:");
    let mut set = RevocationSet::new(n + 1).unwrap();
    let t = Instant::now();
    for i in 0..n {
        set.insert(event(i)).unwrap();
    }
    let took = t.elapsed();
    let rss_after = rss_kib("VmRSS:");
    println!(
        "insert: {n} events in {:.2} s = {:.0} events/s (building each event included)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );

    let t = Instant::now();
    let snap = set.snapshot();
    let snapshot_took = t.elapsed();
    let per_million = 1_000_000.0 / n as f64;
    println!(
        "memory: RSS +{:.0} MiB = {:.0} MiB per million events (events, strings, both maps); bitmap {} KiB = {:.2} MiB per million",
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0 * per_million,
        snap.bitmap_bytes() / 1024,
        snap.bitmap_bytes() as f64 / (1 << 20) as f64 * per_million
    );
    // The first insert after a snapshot copies the chunk table and one bitmap chunk: the cost of
    // publishing a change.
    let t = Instant::now();
    set.insert(event(n + 1)).unwrap();
    let cow = t.elapsed();
    println!(
        "snapshot: {:.1} µs; first insert after it (copies one bitmap chunk): {:.1} µs",
        snapshot_took.as_secs_f64() * 1e6,
        cow.as_secs_f64() * 1e6
    );

    let passed = clean
        .iter()
        .filter(|s| !snap.revoked_since(s, 0).is_clear())
        .count();
    assert_eq!(passed, 0, "clean subjects are clear");
    assert!(
        hits.iter()
            .all(|s| matches!(snap.revoked_since(s, 0), Verdict::Revoked(_)))
    );

    let clean_ns = clean_loop(&snap, &clean);
    let hit_ns = clean_loop(&snap, &hits);
    println!(
        "timing loop: clean {:.1} ns, hit {:.1} ns, clean/hit = {:.2}",
        clean_ns.as_nanos() as f64,
        hit_ns.as_nanos() as f64,
        clean_ns.as_secs_f64() / hit_ns.as_secs_f64()
    );

    let published = ArcSwap::new(Arc::clone(&snap));
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    let label = format!("{}k", n / 1000);
    let mut group = c.benchmark_group("revocation");
    let mut i = 0usize;
    group.bench_function(format!("clean_check/{label}"), |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            snap.revoked_since(black_box(&clean[i]), 0).is_clear()
        })
    });
    group.bench_function(format!("hit_check/{label}"), |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            snap.revoked_since(black_box(&hits[i]), 0).is_clear()
        })
    });
    group.bench_function(format!("clean_check_arcswap_load/{label}"), |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            published
                .load()
                .revoked_since(black_box(&clean[i]), 0)
                .is_clear()
        })
    });
    group.finish();

    let t = Instant::now();
    let dropped = set.expire_before(1_000 + 1_800);
    println!(
        "expire: dropped {dropped} of {} events and rebuilt the bitmap in {:.1} ms",
        n + 1,
        t.elapsed().as_secs_f64() * 1e3
    );
    c.final_summary();
}
