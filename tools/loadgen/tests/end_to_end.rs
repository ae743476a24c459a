//! End to end: the real `backstop-loadgen` binary against an in-process hyper server on
//! loopback that answers like a token endpoint (200, or 400 `invalid_grant` for one refresh
//! token) and counts what it received. Checks that counts add up on both sides and that the
//! JSON report is well-formed; no assertion on any time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    bad_token: AtomicU64,
    with_dpop: AtomicU64,
    well_formed_forms: AtomicU64,
}

/// A token-endpoint lookalike on its own thread; returns its address and counters.
fn start_server() -> (SocketAddr, Arc<Seen>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counters = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let seen = counters.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                seen.requests.fetch_add(1, Ordering::Relaxed);
                                if req.headers().contains_key("dpop") {
                                    seen.with_dpop.fetch_add(1, Ordering::Relaxed);
                                }
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let body = String::from_utf8(body.to_vec()).unwrap();
                                if body.starts_with("grant_type=refresh_token&client_id=")
                                    && body.contains("&resource=https%3A%2F%2Fapi.example")
                                {
                                    seen.well_formed_forms.fetch_add(1, Ordering::Relaxed);
                                }
                                let reply = if body.contains("refresh_token=bad") {
                                    seen.bad_token.fetch_add(1, Ordering::Relaxed);
                                    Response::builder()
                                        .status(400)
                                        .body(Full::new(Bytes::from_static(
                                            br#"{"error":"invalid_grant"}"#,
                                        )))
                                        .unwrap()
                                } else {
                                    Response::new(Full::new(Bytes::from_static(
                                        b"{\"access_token\":\"x\"}",
                                    )))
                                };
                                Ok::<_, Infallible>(reply)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    (addr, seen)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "backstop-loadgen-test-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn loadgen(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_backstop-loadgen"))
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn outcome_count(report: &serde_json::Value, class: &str, status: u64, error: &str) -> u64 {
    report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["class"] == class && o["status"] == status && o["error"] == error)
        .map(|o| o["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn open_loop_sends_every_scheduled_request_and_the_counts_add_up() {
    let (addr, seen) = start_server();
    let dir = scratch("open");
    let population = dir.join("population.txt");
    let dpop_seed = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    std::fs::write(
        &population,
        format!(
            "app-1 good1 https://api.example/a class:hit\n\
             app-1 good2 https://api.example/b dpop:{dpop_seed} class:hit\n\
             app-2 bad https://api.example/a class:refused\n\
             app-2 good3 https://api.example/a\n"
        ),
    )
    .unwrap();
    let json_file = dir.join("report.json");
    let url = format!("http://{addr}/token");
    let pid = std::process::id().to_string();
    let report = loadgen(&[
        "--url",
        &url,
        "--population",
        population.to_str().unwrap(),
        "--rate",
        "2000",
        "--seconds",
        "1",
        "--connections",
        "4",
        "--threads",
        "2",
        "--server-pid",
        &pid,
        "--json",
        json_file.to_str().unwrap(),
    ]);
    // 2 000 slots at 2 000/s over 1 s; every one answered (the request timeout is 10 s).
    assert_eq!(report["requests"], 2000, "{report:#}");
    assert_eq!(report["unsent"], 0);
    assert_eq!(report["transport_errors"], 0);
    assert_eq!(report["ok"], 1500);
    assert_eq!(outcome_count(&report, "hit", 200, ""), 1000);
    assert_eq!(outcome_count(&report, "refused", 400, "invalid_grant"), 500);
    assert_eq!(outcome_count(&report, "", 200, ""), 500);
    // The server saw the same requests: well-formed forms, a DPoP proof on one session in four.
    assert_eq!(seen.requests.load(Ordering::Relaxed), 2000);
    assert_eq!(seen.bad_token.load(Ordering::Relaxed), 500);
    assert_eq!(seen.with_dpop.load(Ordering::Relaxed), 500);
    assert_eq!(seen.well_formed_forms.load(Ordering::Relaxed), 2000);
    // The report's shape, as scripts read it; the file holds the same report.
    let setup = &report["setup"];
    assert_eq!(setup["mode"], "open");
    assert_eq!(setup["rate_per_sec"], 2000);
    assert_eq!(setup["connections"], 4);
    assert_eq!(setup["threads"], 2);
    assert_eq!(setup["population_sessions"], 4);
    assert_eq!(setup["dpop_sessions"], 1);
    for key in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(report["latency_us"][key].as_f64().unwrap() > 0.0, "{key}");
        assert!(report["service_us"][key].is_number(), "{key}");
    }
    assert!(report["server_cpu"]["seconds_per_1000_requests"].is_number());
    assert!(report["client_cpu"]["us_per_request"].is_number());
    let from_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    assert_eq!(from_file["requests"], report["requests"]);
    assert_eq!(from_file["outcomes"], report["outcomes"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn closed_loop_without_a_population_sends_generic_requests() {
    let (addr, seen) = start_server();
    let url = format!("http://{addr}/");
    let report = loadgen(&["--url", &url, "--seconds", "0.3", "--connections", "2"]);
    let requests = report["requests"].as_u64().unwrap();
    assert!(requests > 0);
    assert_eq!(report["ok"], requests);
    assert_eq!(seen.requests.load(Ordering::Relaxed), requests);
    assert_eq!(report["setup"]["mode"], "closed");
    assert!(report["setup"]["rate_per_sec"].is_null());
    assert!(report["server_cpu"].is_null());
    assert!(report["send_lag_us"].is_null());
}

#[test]
fn a_bad_population_line_fails_the_run_naming_the_line() {
    let dir = scratch("bad");
    let population = dir.join("population.txt");
    std::fs::write(&population, "app tok https://api.example/a\napp only-two\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backstop-loadgen"))
        .args([
            "--url",
            "http://127.0.0.1:9/token",
            "--population",
            population.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(!stderr.contains("only-two"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
