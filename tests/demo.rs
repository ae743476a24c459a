//! End-to-end tests of `backstop demo`: the real binary runs the mock primary and backstop
//! in-process with tiny knobs, and its summary is checked.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::run;

/// A small population and a short run: 20 sessions, `duration` seconds of refresh traffic.
fn tiny(duration: &'static str) -> Vec<&'static str> {
    let mut args = vec!["demo", "--duration", duration];
    args.extend_from_slice(TINY);
    args
}

const TINY: &[&str] = &[
    "--users",
    "20",
    "--devices-per-user",
    "1",
    "--apps",
    "1",
    "--resources",
    "1",
    "--concurrency",
    "4",
    "--workers",
    "1",
];

fn run_json(duration: &'static str) -> serde_json::Value {
    let mut args = tiny(duration);
    args.push("--json");
    let (code, stdout, stderr) = run(&args, &[]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn phase<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no phase {name}: {summary}"))
}

#[test]
fn demo_runs_prints_the_summary_table_and_removes_its_data() {
    let (code, stdout, stderr) = run(&tiny("5"), &[]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("backstop demo summary"), "{stdout}");
    assert!(stdout.contains("p99"), "{stdout}");
    for row in [
        "sign-in",
        "normal",
        "outage: down",
        "outage: error500",
        "outage: hang",
        "recovered",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(row)),
            "no {row} row: {stdout}"
        );
    }
    // The status line, once a second, as plain lines when stderr is not a terminal.
    assert!(
        stderr.lines().filter(|l| l.contains("req/s")).count() >= 3,
        "{stderr}"
    );
    assert!(!stderr.contains('\r'), "{stderr}");
    // The temporary data directory is gone.
    let data_dir = stderr
        .split("data in ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no data dir named: {stderr}"));
    assert!(
        !std::path::Path::new(data_dir).exists(),
        "{data_dir} was left behind"
    );
}

#[test]
fn demo_signs_in_through_backstop_and_the_primary_serves_the_normal_phase() {
    let summary = run_json("5");
    assert_eq!(summary["sessions"]["planned"], 20);
    // Every sign-in goes to the primary through backstop; a loaded CI machine may see one
    // exceed backstop's 500 ms upstream timeout, so allow a little slack.
    let signed_in = summary["sessions"]["signed_in"].as_u64().unwrap();
    assert!(signed_in >= 18, "{summary}");
    assert_eq!(summary["interrupted"], false);

    let sign_in = phase(&summary, "sign-in");
    assert_eq!(sign_in["primary"], signed_in, "{summary}");
    assert_eq!(sign_in["backup"], 0, "{summary}");

    let normal = phase(&summary, "normal");
    let requests = normal["requests"].as_u64().unwrap();
    let primary = normal["primary"].as_u64().unwrap();
    assert!(requests > 0, "{summary}");
    // Requests in flight when the primary goes down count in the phase they started in.
    assert!(
        primary * 2 > requests,
        "primary served {primary} of {requests}: {summary}"
    );
    // With the primary healthy, the backup answers only a request whose forwarding failed
    // (on a loaded machine the primary can exceed the demo's 500 ms timeout): never more than
    // backstop counted as upstream failures.
    let upstream_failed =
        summary["backstop_counters"]["backstop_backup_requests_total{cause=\"upstream_failed\"}"]
            .as_f64()
            .unwrap_or(0.0);
    let normal_backup = normal["backup"].as_u64().unwrap();
    assert!(
        normal_backup as f64 <= upstream_failed,
        "backup answered {normal_backup} normal-phase requests, upstream failures {upstream_failed}: {summary}"
    );
    assert_eq!(normal["unknown_signer"], 0, "{summary}");

    // Every outage phase saw traffic, and the summary says what the backup did with it.
    for name in ["outage: down", "outage: error500", "outage: hang"] {
        let p = phase(&summary, name);
        assert_eq!(p["outage"], true);
        assert!(p["requests"].as_u64().unwrap() > 0, "{summary}");
        assert_eq!(p["unknown_signer"], 0, "{summary}");
    }
    let verdict = summary["verdict"].as_array().unwrap();
    assert!(!verdict.is_empty());
    if summary["backup_served_during_outage"] == 0 {
        assert!(
            verdict.iter().any(|l| l
                .as_str()
                .unwrap()
                .contains("No request was served by the backup")),
            "{summary}"
        );
    }
}

#[test]
fn demo_backup_serves_refreshes_while_the_primary_is_down() {
    // Long enough that the breaker closes (up to 1 s of probe back-off) and clients come back
    // from their Retry-After (up to 2 s) within the recovered phase (3 s).
    let summary = run_json("12");
    let down = phase(&summary, "outage: down");
    assert!(down["backup"].as_u64().unwrap() > 0, "{summary}");
    assert!(
        summary["backup_served_during_outage"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        phase(&summary, "recovered")["primary"].as_u64().unwrap() > 0,
        "{summary}"
    );
}

#[test]
fn demo_interrupted_by_sigint_prints_what_ran_and_exits_130() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let mut args = tiny("60");
    args.push("--keep-data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(&args)
        .env_remove("BACKSTOP_ADMIN_TOKEN")
        .env_remove("BACKSTOP_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // backstop's signal handlers are installed once it is up; the sign-in comes after.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains("signing in") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    std::thread::sleep(Duration::from_secs(2));
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}\n{stdout}");
    assert!(stdout.contains("The run was interrupted"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("sign-in")), "{stdout}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("recovered")),
        "{stdout}"
    );
    // --keep-data kept the directory; clean it up.
    let data_dir = seen
        .split("data in ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no data dir named: {seen}"));
    assert!(std::path::Path::new(data_dir).is_dir(), "{data_dir}");
    std::fs::remove_dir_all(data_dir).unwrap();
}
