//! Crash safety under SIGKILL: a child process writes (and removes) records as fast as group
//! commit allows, with background compaction running, and prints every acknowledged operation;
//! the parent kills it at a random moment, reopens the store, and checks that every
//! acknowledged record is there and intact, every acknowledged removal holds, and no record
//! fails its checksum. Every third write also records a revocation event, which must survive
//! the same way (DESIGN §6: durable before acknowledged, replayed on start). Repeats on the
//! same directory, so recovery runs over its own output.
//!
//! `harness = false`: this binary is both the test and, with `BACKSTOP_STORE_CRASH_CHILD` set,
//! the child. Rounds: 20, times `BACKSTOP_STORE_TEST_SCALE`.
// Test code outside `#[test]` functions: a failed unwrap here is a failed test with a line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// This binary reports its own result on stdout, as libtest would.
#![allow(clippy::print_stdout)]

mod store_common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use backstop::store::model::SessionIdentity;
use backstop::store::testutil::sample_snapshot;
use backstop::store::{RevocationRecord, SessionSnapshot, Store, StoreOpts};

const CHILD_ENV: &str = "BACKSTOP_STORE_CRASH_CHILD";
const FAR: i64 = 4_000_000_000;
/// Writes per child before it idles; keeps the debug-build store small enough to reopen fast.
const PUTS_PER_ROUND: u64 = 4000;
/// Rounds that share one directory before a fresh one (recovery runs over its own output).
const ROUNDS_PER_DIR: u64 = 5;

fn opts_for(background: bool) -> StoreOpts {
    let base = if background {
        // A tiny in-memory budget keeps the compactor busy, so kills land mid-compaction too.
        StoreOpts::background(Arc::new(|| 0))
    } else {
        StoreOpts::manual()
    };
    StoreOpts {
        shard_count: 8,
        wal_groups: 2,
        memtable_bytes_max: 64 * 1024,
        compact_age_secs: 1,
        ..base
    }
}

fn snapshot(round: u64, i: u64) -> SessionSnapshot {
    let mut s = sample_snapshot(round * 1_000_000 + i, FAR);
    s.recorded_at_secs = (round * 1_000_000 + i) as i64;
    s
}

fn revocation(round: u64, i: u64) -> RevocationRecord {
    RevocationRecord {
        id: format!("ev-{round}-{i}"),
        kind: 4,
        subject_kind: 1,
        subject: format!("user-{i}"),
        time_secs: (round * 1_000_000 + i) as i64,
        source: 1,
        recorded_at_secs: (round * 1_000_000 + i) as i64,
        expires_at_secs: FAR,
    }
}

fn child(dir: &Path, round: u64) {
    let store = Store::open(dir, opts_for(true)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    writeln!(out.lock().unwrap(), "ready").unwrap();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..PUTS_PER_ROUND {
            let s = snapshot(round, i);
            let put = store.put_session(&s);
            let remove = (i % 5 == 0).then(|| store.remove_session(&s.identity));
            let revoke = (i % 3 == 0).then(|| store.put_revocation(revocation(round, i)));
            let out = Arc::clone(&out);
            tasks.spawn(async move {
                if let Some(revoke) = revoke {
                    revoke.await.unwrap();
                    writeln!(out.lock().unwrap(), "rev {round} {i}").unwrap();
                }
                put.await.unwrap();
                writeln!(out.lock().unwrap(), "put {round} {i}").unwrap();
                if let Some(remove) = remove {
                    // Queued after the put on the same group, so it commits after it.
                    remove.await.unwrap();
                    writeln!(out.lock().unwrap(), "del {round} {i}").unwrap();
                }
            });
            while tasks.len() >= 256 {
                tasks.join_next().await;
            }
        }
        while tasks.join_next().await.is_some() {}
    });
    // Wait for the kill; exiting would be a clean shutdown, not a crash.
    std::thread::sleep(Duration::from_secs(3600));
}

/// What recovery must show for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Put acknowledged, no removal issued: present and intact.
    Present,
    /// Put acknowledged and a removal in flight at the kill: absent, or present and intact.
    Either,
    /// Removal acknowledged: absent.
    Absent,
}

struct Expect {
    acked: HashMap<(u64, u64), Want>,
    /// Revocation events acknowledged.
    revoked: HashSet<(u64, u64)>,
}

fn identity(round: u64, i: u64) -> SessionIdentity {
    snapshot(round, i).identity
}

fn verify(dir: &Path, expect: &Expect) -> Result<usize, String> {
    let store = Store::open(dir, opts_for(false)).map_err(|e| e.to_string())?;
    for (&(round, i), &want) in &expect.acked {
        let got = store.get_session(&identity(round, i), 0);
        match (want, got) {
            (Want::Absent, Some(_)) => return Err(format!("removed session {round}/{i} is back")),
            (Want::Present, None) => {
                return Err(format!("acknowledged session {round}/{i} is missing"));
            }
            (Want::Present | Want::Either, Some(v)) if v.to_snapshot() != snapshot(round, i) => {
                return Err(format!("session {round}/{i} differs"));
            }
            _ => {}
        }
    }
    let events: HashMap<String, RevocationRecord> = store
        .revocations()
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    for &(round, i) in &expect.revoked {
        let want = revocation(round, i);
        match events.get(&want.id) {
            None => return Err(format!("acknowledged event {round}/{i} is missing")),
            Some(got) if *got != want => return Err(format!("event {round}/{i} differs")),
            Some(_) => {}
        }
    }
    // Reading every record: compaction proves each one; none may fail its checksum.
    store.compact(0).map_err(|e| e.to_string())?;
    let st = store.stats();
    if st.corrupt_reads != 0 || st.quarantined_segments != 0 {
        return Err(format!(
            "corruption after crash: {st:?} {:?}",
            store.recovery_report()
        ));
    }
    Ok(expect.acked.len())
}

fn parent() -> Result<(), String> {
    let rounds = store_common::scaled(20);
    let mut dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut expect = Expect {
        acked: HashMap::new(),
        revoked: HashSet::new(),
    };
    // xorshift: reproducible kill delays without a dependency.
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut total_kills_with_acks = 0;
    for round in 0..rounds {
        if round > 0 && round % ROUNDS_PER_DIR == 0 {
            dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            expect.acked.clear();
            expect.revoked.clear();
        }
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, format!("{}:{round}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "child never opened the store")?;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // From the child's first write to about when it reaches PUTS_PER_ROUND in a debug build.
        let delay_ms = 5 + rng % 250;
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().map_err(|e| e.to_string())?; // SIGKILL on unix
        child.wait().map_err(|e| e.to_string())?;
        let lines = reader.join().map_err(|_| "reader thread panicked")?;
        let before = expect.acked.len();
        let mut new_acks = 0;
        for line in &lines {
            let mut parts = line.split(' ');
            let (Some(op), Some(r), Some(i)) = (parts.next(), parts.next(), parts.next()) else {
                continue; // a line cut by the kill was never a complete acknowledgement
            };
            let (Ok(r), Ok(i)) = (r.parse::<u64>(), i.parse::<u64>()) else {
                continue;
            };
            match op {
                "put" => {
                    new_acks += 1;
                    // Every fifth session also gets a removal queued right behind its put.
                    let want = if i % 5 == 0 {
                        Want::Either
                    } else {
                        Want::Present
                    };
                    expect.acked.entry((r, i)).or_insert(want);
                }
                "del" => {
                    expect.acked.insert((r, i), Want::Absent);
                }
                "rev" => {
                    expect.revoked.insert((r, i));
                }
                _ => {}
            }
        }
        if new_acks > 0 {
            total_kills_with_acks += 1;
        }
        // Settle what this round left undecided: verify() just compacted, so the state is
        // fixed from here on.
        let n = verify(dir.path(), &expect).map_err(|e| format!("round {round}: {e}"))?;
        let _ = before;
        println!(
            "round {round}: killed {delay_ms} ms after ready, {new_acks} new acks, {n} records and {} events verified",
            expect.revoked.len()
        );
    }
    if total_kills_with_acks < rounds / 2 {
        return Err(format!(
            "only {total_kills_with_acks} of {rounds} rounds acknowledged anything: the test proved little"
        ));
    }
    Ok(())
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, round) = spec.rsplit_once(':').unwrap();
        child(Path::new(dir), round.parse().unwrap());
        return;
    }
    // libtest-style arguments (filters, --list) are accepted and ignored, except --list.
    if std::env::args().any(|a| a == "--list") {
        println!("sigkill_rounds_lose_no_acknowledged_write: test");
        return;
    }
    match parent() {
        Ok(()) => {
            println!("test sigkill_rounds_lose_no_acknowledged_write ... ok");
            println!("1 passed, 0 failed");
        }
        Err(e) => {
            println!("test sigkill_rounds_lose_no_acknowledged_write ... FAILED: {e}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    }
}
