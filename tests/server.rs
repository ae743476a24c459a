//! End-to-end tests of the server foundation: the real binary on loopback ports, probed with
//! raw HTTP/1.1 for health, metrics, every input limit, timeouts and graceful shutdown.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// End-to-end tests measure wall-clock time on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Backstop, Conn, get};

const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

#[test]
fn healthz_and_readyz_answer_200() {
    let server = Backstop::start("", "", &[]);
    let health = get(server.addr, "/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.text(), "ok\n");
    assert_eq!(health.header("cache-control"), Some("no-store"));
    assert_eq!(get(server.addr, "/readyz").status, 200);
    // Anything else is forwarded to the primary, which is down here: 503, never a 404.
    let other = get(server.addr, "/no/such/route");
    assert_eq!(other.status, 503);
    assert!(other.header("retry-after").is_some());
}

#[test]
fn health_endpoints_refuse_other_methods_with_405_and_allow() {
    let server = Backstop::start("", "", &[]);
    let mut conn = server.connect();
    conn.send(b"DELETE /healthz HTTP/1.1\r\nhost: t\r\n\r\n");
    let reply = conn.read_reply().unwrap();
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = Backstop::start("", "", &[]);
    let mut conn = server.connect();
    for _ in 0..50 {
        assert_eq!(conn.get("/healthz").status, 200);
    }
}

#[test]
fn metrics_are_valid_prometheus_text_with_request_counts() {
    let server = Backstop::start("workers = 2", "", &[]);
    // Many connections, so SO_REUSEPORT spreads them over both workers.
    for _ in 0..40 {
        assert_eq!(get(server.addr, "/healthz").status, 200);
    }
    let _ = get(server.addr, "/missing");
    let reply = get(server.addr, "/metrics");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.text();

    // Parsed by an independent implementation of the exposition format.
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition text");
    let value_of = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("unexpected sample type for {name}"),
            })
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{text}"))
    };
    assert_eq!(
        value_of(
            "backstop_http_requests_total",
            &[("route", "healthz"), ("status", "200")]
        ),
        40.0
    );
    assert_eq!(
        value_of(
            "backstop_http_requests_total",
            &[("route", "proxy"), ("status", "503")]
        ),
        1.0
    );
    assert_eq!(value_of("backstop_workers", &[]), 2.0);
    let w0 = value_of("backstop_worker_requests_total", &[("worker", "0")]);
    let w1 = value_of("backstop_worker_requests_total", &[("worker", "1")]);
    assert_eq!(w0 + w1, 41.0);
    assert!(
        w0 > 0.0 && w1 > 0.0,
        "both workers should serve: {w0} / {w1}"
    );
    let histogram = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "backstop_http_request_duration_seconds"
                && s.labels.get("route") == Some("healthz")
        })
        .expect("latency histogram for healthz");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let last = buckets.last().unwrap();
            assert!(last.less_than.is_infinite());
            assert_eq!(last.count, 40.0);
        }
        other => panic!("expected a histogram, got {other:?}"),
    }
}

#[test]
fn oversized_header_gets_431() {
    let server = Backstop::start(
        "",
        "[limits]\nheader_bytes_max = 2048\nrequest_line_bytes_max = 1024",
        &[],
    );
    let mut conn = server.connect();
    let big = "a".repeat(4000);
    conn.send(format!("GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: {big}\r\n\r\n").as_bytes());
    assert_eq!(conn.read_reply().unwrap().status, 431);
    // Just under the limit is fine.
    let mut conn = server.connect();
    let ok = "a".repeat(1500);
    conn.send(format!("GET /healthz HTTP/1.1\r\nhost: t\r\nx-ok: {ok}\r\n\r\n").as_bytes());
    assert_eq!(conn.read_reply().unwrap().status, 200);
}

#[test]
fn too_many_headers_get_431() {
    let server = Backstop::start("", "[limits]\nheader_count_max = 10", &[]);
    let mut conn = server.connect();
    let mut req = String::from("GET /healthz HTTP/1.1\r\nhost: t\r\n");
    for i in 0..20 {
        req.push_str(&format!("x-h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    conn.send(req.as_bytes());
    assert_eq!(conn.read_reply().unwrap().status, 431);
}

#[test]
fn long_request_target_gets_414() {
    let server = Backstop::start("", "[limits]\nrequest_line_bytes_max = 512", &[]);
    let path = format!("/healthz?{}", "q".repeat(600));
    assert_eq!(get(server.addr, &path).status, 414);
    assert_eq!(get(server.addr, "/healthz?short").status, 200);
}

#[test]
fn oversized_declared_body_gets_413_without_reading_it() {
    let server = Backstop::start("", "[limits]\nbody_bytes_max = 1024", &[]);
    let mut conn = server.connect();
    // The body is never sent: the declared length alone must be refused.
    conn.send(b"POST /healthz HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\n\r\n");
    let reply = conn.read_reply().unwrap();
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("connection"), Some("close"));
}

#[test]
fn oversized_chunked_body_gets_413() {
    let server = Backstop::start("", "[limits]\nbody_bytes_max = 1024", &[]);
    let mut conn = server.connect();
    let chunk = "b".repeat(800);
    conn.send(
        format!(
            "POST /x HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(conn.read_reply().unwrap().status, 413);
}

#[test]
fn body_within_limit_is_accepted() {
    let server = Backstop::start("", "[limits]\nbody_bytes_max = 1024", &[]);
    let mut conn = server.connect();
    let body = "c".repeat(1000);
    conn.send(
        format!("POST /unknown HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\n{body}")
            .as_bytes(),
    );
    // Routed normally once the body is in: forwarded to the primary, which is down.
    assert_eq!(conn.read_reply().unwrap().status, 503);
    assert_eq!(conn.get("/healthz").status, 200);
}

#[test]
fn slow_header_is_closed_in_time() {
    let server = Backstop::start(
        "",
        "[limits]\nheader_read_timeout_ms = 500\nkeep_alive_idle_ms = 60000",
        &[],
    );
    let mut conn = server.connect();
    let start = Instant::now();
    conn.send(b"GET /healthz HTTP/1.1\r\n");
    // Trickle header bytes, each well inside any per-read timeout, never finishing the head.
    let mut writer = conn.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(100));
            if writer.write_all(b"x-slow: 1\r\n").is_err() {
                break;
            }
        }
    });
    let closed_after = conn.wait_closed(Duration::from_secs(5));
    let elapsed = start.elapsed();
    trickle.join().unwrap();
    assert!(closed_after.is_some(), "slow header connection stayed open");
    assert!(
        elapsed >= Duration::from_millis(450),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "closed too late: {elapsed:?}"
    );
}

#[test]
fn idle_keep_alive_survives_the_header_timeout_but_not_the_idle_limit() {
    let server = Backstop::start(
        "",
        "[limits]\nheader_read_timeout_ms = 200\nkeep_alive_idle_ms = 1500",
        &[],
    );
    let mut conn = server.connect();
    assert_eq!(conn.get("/healthz").status, 200);
    // Idle longer than the header timeout: idleness is not a slow header.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(conn.get("/healthz").status, 200);
    let start = Instant::now();
    let closed = conn
        .wait_closed(Duration::from_secs(6))
        .expect("idle connection closed");
    assert!(
        closed >= Duration::from_millis(1200),
        "closed before the idle limit: {:?}",
        start.elapsed()
    );
}

#[test]
fn slow_body_gets_408() {
    let server = Backstop::start("", "[limits]\nbody_read_timeout_ms = 300", &[]);
    let mut conn = server.connect();
    conn.send(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nonly-part");
    let start = Instant::now();
    let reply = conn.read_reply().unwrap();
    assert_eq!(reply.status, 408);
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn connections_over_the_worker_limit_get_503() {
    let server = Backstop::start(
        "workers = 1",
        "[limits]\nconnections_per_worker_max = 2",
        &[],
    );
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(a.get("/healthz").status, 200);
    assert_eq!(b.get("/healthz").status, 200);
    let mut c = server.connect();
    let reply = c
        .read_reply()
        .expect("a 503 for the connection over the limit");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    // Closing one frees a slot.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = server.connect();
        d.send(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n");
        if d.read_reply().unwrap().status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b.get("/healthz").status, 200);
}

#[test]
fn malformed_request_gets_400() {
    let server = Backstop::start("", "", &[]);
    let mut conn = server.connect();
    conn.send(b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(conn.read_reply().unwrap().status, 400);
}

#[test]
fn sigterm_completes_the_request_in_flight_and_exits_0() {
    let mut server = Backstop::start("", "[limits]\nshutdown_grace_ms = 10000", &[]);
    let mut conn = server.connect();
    // A request in flight: head sent, body half sent.
    conn.send(b"POST /in-flight HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\n12345");
    std::thread::sleep(Duration::from_millis(200));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused while the old one drains.
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "listener still accepting after SIGTERM"
    );
    assert!(
        server.wait_exit(Duration::from_millis(10)).is_none(),
        "exited with a request in flight"
    );
    conn.send(b"67890");
    let reply = conn
        .read_reply()
        .expect("the in-flight request is answered");
    // Answered in full (by the outage path: the primary is down in this test).
    assert_eq!(reply.status, 503);
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("exits after draining");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
}

#[test]
fn sigint_with_idle_connections_exits_0_promptly() {
    let mut server = Backstop::start("", "", &[]);
    let mut idle = server.connect();
    assert_eq!(idle.get("/healthz").status, 200);
    server.signal("INT");
    let status = server.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(idle.wait_closed(Duration::from_secs(1)).is_some());
}

#[test]
fn shutdown_grace_bounds_a_request_that_never_finishes() {
    let mut server = Backstop::start(
        "",
        "[limits]\nshutdown_grace_ms = 300\nbody_read_timeout_ms = 60000",
        &[],
    );
    let mut conn = server.connect();
    conn.send(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\n1");
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("exits after the grace period");
    assert_eq!(status.code(), Some(0));
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "did not wait for the grace period"
    );
    assert!(conn.wait_closed(Duration::from_secs(1)).is_some());
}

#[test]
fn admin_api_requires_the_bearer_token() {
    let server = Backstop::start("", "", &[("BACKSTOP_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let admin = server.admin_addr.expect("admin listener started");
    let reply = get(admin, "/admin/status");
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );

    let mut conn = Conn::open(admin);
    conn.send(b"GET /admin/status HTTP/1.1\r\nhost: t\r\nauthorization: Bearer wrong-token-wrong-token-1234\r\n\r\n");
    assert_eq!(conn.read_reply().unwrap().status, 401);
    conn.send(
        format!(
            "GET /admin/status HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
        )
        .as_bytes(),
    );
    let reply = conn.read_reply().unwrap();
    assert_eq!(reply.status, 200);
    let status: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["listen"], server.addr.to_string());
    // The public listener does not serve the admin API: the path goes to the primary.
    assert_eq!(get(server.addr, "/admin/status").status, 503);
}

#[test]
fn admin_api_is_off_without_a_token() {
    let server = Backstop::start("", "", &[]);
    assert!(server.admin_addr.is_none());
    // The warning is logged right after the listeners start; allow the pipe a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr().contains("admin API disabled") {
        assert!(
            Instant::now() < deadline,
            "no warning about the disabled admin API"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn json_logs_are_json_and_never_contain_the_admin_token() {
    let mut server = Backstop::start_with_args(
        "",
        "[log]\nlevel = \"debug\"",
        &[("BACKSTOP_ADMIN_TOKEN", ADMIN_TOKEN)],
        &["--log-format", "json"],
    );
    let admin = server.admin_addr.unwrap();
    let mut conn = Conn::open(admin);
    conn.send(
        format!(
            "GET /admin/status HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(conn.read_reply().unwrap().status, 200);
    assert_eq!(get(server.addr, "/healthz?secret_query=abc").status, 200);
    server.signal("TERM");
    assert_eq!(
        server.wait_exit(Duration::from_secs(5)).unwrap().code(),
        Some(0)
    );
    let logs = server.stderr();
    assert!(!logs.is_empty());
    for line in logs.lines() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON log line: {line}");
    }
    assert!(!logs.contains(ADMIN_TOKEN), "admin token leaked into logs");
    assert!(
        !logs.contains("secret_query"),
        "query string leaked into logs"
    );
}

#[test]
fn sigterm_the_moment_the_address_is_printed_still_drains_and_exits_0() {
    // Regression: the handlers used to be installed only once the server was running, so a
    // signal right after the "listening" line took the default action and killed the process.
    // The window was a few milliseconds (thread spawns, a runtime build), so this catches a
    // regression only some of the time; five rounds make that more likely.
    for _ in 0..5 {
        let mut server = Backstop::start("", "", &[]);
        server.signal("TERM");
        let status = server.wait_exit(Duration::from_secs(10)).expect("exits");
        assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
    }
}
