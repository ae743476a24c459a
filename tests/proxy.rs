//! End-to-end tests of forwarding and failover: the real binary in front of a fake upstream,
//! checking what reaches the primary, what comes back, and when the breaker stops forwarding.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// End-to-end tests measure wall-clock time on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::primary::{Behaviour, FakePrimary, closed_port_origin};
use common::{Backstop, Conn, get};

const ADMIN_TOKEN: &str = "proxy-test-admin-token-0123456789";

fn primary_table(origin: &str, extra: &str) -> String {
    format!("[primary]\norigin = \"{origin}\"\n{extra}\n")
}

fn admin(server: &Backstop, method: &str, path: &str, body: &str) -> common::Reply {
    let mut conn = Conn::open(server.admin_addr.expect("admin listener"));
    conn.send(
        format!(
            "{method} {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    conn.read_reply().unwrap()
}

fn status_json(server: &Backstop) -> serde_json::Value {
    serde_json::from_slice(&admin(server, "GET", "/admin/status", "").body).unwrap()
}

#[test]
fn forwards_with_host_and_forwarded_headers_and_returns_the_answer_unchanged() {
    let primary = FakePrimary::start(Behaviour::Answer {
        status: 400,
        headers: vec![
            ("x-upstream".into(), "yes".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: r#"{"error":"invalid_grant","error_description":"whatever the provider says"}"#
            .into(),
    });
    let server = Backstop::start("", &primary_table(&primary.origin(), ""), &[]);
    let mut conn = server.connect();
    let form = "grant_type=refresh_token&refresh_token=rt-123&client_id=app";
    conn.send(
        format!(
            "POST /oauth2/token?x=1 HTTP/1.1\r\nhost: login.example.com\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             connection: keep-alive, x-hop\r\nx-hop: drop-me\r\nx-forwarded-host: evil.example\r\ndpop: eyJproof\r\n\
             content-length: {}\r\n\r\n{form}",
            form.len()
        )
        .as_bytes(),
    );
    let reply = conn.read_reply().unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.text(),
        r#"{"error":"invalid_grant","error_description":"whatever the provider says"}"#
    );
    assert_eq!(reply.header("x-upstream"), Some("yes"));

    let seen = primary.seen_excluding_probes();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/oauth2/token?x=1");
    assert_eq!(req.header("host"), Some("login.example.com"));
    assert_eq!(req.header("x-forwarded-host"), Some("login.example.com"));
    assert_eq!(req.header("x-forwarded-proto"), Some("http"));
    assert_eq!(req.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(req.header("dpop"), Some("eyJproof"));
    assert_eq!(req.header("x-hop"), None);
    assert_eq!(req.body, form.as_bytes());

    // A 4xx is an answer: the breaker stays closed and the next request is forwarded too.
    for _ in 0..10 {
        assert_eq!(conn.get("/oauth2/token").status, 400);
    }
    assert_eq!(primary.seen_excluding_probes().len(), 11);
}

#[test]
fn unreachable_primary_gets_503_temporarily_unavailable_with_retry_after() {
    let server = Backstop::start("", &primary_table(&closed_port_origin(), ""), &[]);
    let reply = get(server.addr, "/authorize?client_id=a");
    assert_eq!(reply.status, 503);
    assert!(reply.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    let metrics = get(server.addr, "/metrics").text();
    assert!(
        metrics.contains("backstop_upstream_requests_total{outcome=\"connect\"} 1\n"),
        "{metrics}"
    );
    // A refused connection never reached the primary: not ambiguous.
    assert!(
        metrics.contains("backstop_upstream_ambiguous_failures_total 0\n"),
        "{metrics}"
    );
}

#[test]
fn breaker_opens_at_the_threshold_and_stops_calling_the_primary() {
    let primary = FakePrimary::start(Behaviour::status(500));
    let tables = primary_table(
        &primary.origin(),
        "[failover]\nconsecutive_failures_max = 3\nopen_initial_ms = 60000\nopen_max_ms = 60000",
    );
    let server = Backstop::start(
        "workers = 1",
        &tables,
        &[("BACKSTOP_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let mut conn = server.connect();
    for _ in 0..10 {
        let reply = conn.get("/userinfo");
        assert_eq!(reply.status, 503);
    }
    assert_eq!(
        primary.seen_excluding_probes().len(),
        3,
        "the primary was called while the breaker was open"
    );
    let status = status_json(&server);
    assert_eq!(status["breaker"], "open");
    assert_eq!(status["mode"], "outage");
    assert_eq!(status["forced"], "auto");
    // A small store is validated in full before serving: nothing pending in the background.
    assert_eq!(status["store"]["validation"], "done");
    assert_eq!(status["store"]["validation_pending_segments"], 0);
    assert_eq!(status["store"]["validation_pending_bytes"], 0);
    let metrics = get(server.addr, "/metrics").text();
    assert!(
        metrics.contains("backstop_outage_refusals_total{reason=\"breaker_open\"} 7\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("backstop_upstream_requests_total{outcome=\"server_error\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("backstop_breaker_transitions_total{to=\"open\"} 1\n"),
        "{metrics}"
    );
    // The transition is explained in the audit log.
    server.wait_for_audit(|r| {
        r["event"] == "breaker_transition" && r["to"] == "open" && r["cause"] == "server_error_500"
    });
    // Open means no timeout paid: the refusal is immediate, with Retry-After near the open time.
    let start = Instant::now();
    let reply = conn.get("/userinfo");
    assert!(start.elapsed() < Duration::from_millis(500));
    assert!(reply.header("retry-after").unwrap().parse::<u64>().unwrap() > 30);
}

#[test]
fn breaker_closes_through_a_probe_when_the_primary_returns() {
    let primary = FakePrimary::start(Behaviour::status(503));
    let tables = primary_table(
        &primary.origin(),
        // A probe path of its own, so the probe is told apart from the metadata refresher's
        // discovery fetches.
        "probe_path = \"/breaker-probe\"\n[failover]\nconsecutive_failures_max = 2\nopen_initial_ms = 200\nopen_max_ms = 400",
    );
    let server = Backstop::start(
        "workers = 1",
        &tables,
        &[("BACKSTOP_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert_eq!(get(server.addr, "/x").status, 503);
    assert_eq!(get(server.addr, "/x").status, 503);
    assert_eq!(status_json(&server)["breaker"], "open");

    primary.set(Behaviour::ok("{\"issuer\":\"x\"}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_json(&server)["breaker"] != "closed" {
        assert!(Instant::now() < deadline, "breaker never closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        primary
            .seen()
            .iter()
            .any(|s| s.method == "GET" && s.target == "/breaker-probe"),
        "no probe reached the primary"
    );
    let reply = get(server.addr, "/x");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "{\"issuer\":\"x\"}");
    assert_eq!(status_json(&server)["mode"], "normal");
}

#[test]
fn a_hanging_primary_times_out_as_an_ambiguous_failure() {
    let primary = FakePrimary::start(Behaviour::Hang);
    let tables = primary_table(
        &primary.origin(),
        "connect_timeout_ms = 100\nrequest_timeout_ms = 300",
    );
    let server = Backstop::start("", &tables, &[]);
    let start = Instant::now();
    let reply = get(server.addr, "/token");
    let elapsed = start.elapsed();
    assert_eq!(reply.status, 503);
    assert!(
        elapsed >= Duration::from_millis(250),
        "answered before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "timeout not applied: {elapsed:?}"
    );
    let metrics = get(server.addr, "/metrics").text();
    assert!(
        metrics.contains("backstop_upstream_requests_total{outcome=\"timeout\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("backstop_upstream_ambiguous_failures_total 1\n"),
        "{metrics}"
    );
    let records = server.wait_for_audit(|r| r["event"] == "ambiguous_upstream_failure");
    let r = records
        .iter()
        .find(|r| r["event"] == "ambiguous_upstream_failure")
        .unwrap();
    assert_eq!(r["failure"], "timeout");
    assert_eq!(r["path"], "/token");
}

#[test]
fn operator_can_force_outage_and_hand_back_to_auto() {
    let primary = FakePrimary::start(Behaviour::ok("{}"));
    let server = Backstop::start(
        "",
        &primary_table(&primary.origin(), ""),
        &[("BACKSTOP_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert_eq!(get(server.addr, "/a").status, 200);

    let reply = admin(&server, "POST", "/admin/mode", r#"{"mode":"outage"}"#);
    assert_eq!(reply.status, 200);
    let status: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(status["mode"], "outage");
    assert_eq!(status["forced"], "outage");
    for _ in 0..5 {
        assert_eq!(get(server.addr, "/a").status, 503);
    }
    assert_eq!(
        primary.seen_excluding_probes().len(),
        1,
        "forwarded during a forced outage"
    );

    assert_eq!(
        admin(&server, "POST", "/admin/mode", r#"{"mode":"auto"}"#).status,
        200
    );
    assert_eq!(get(server.addr, "/a").status, 200);
    assert_eq!(status_json(&server)["mode"], "normal");

    assert_eq!(
        admin(&server, "POST", "/admin/mode", r#"{"mode":"sideways"}"#).status,
        400
    );
    assert_eq!(
        admin(&server, "POST", "/admin/mode", "not json").status,
        400
    );
    assert_eq!(admin(&server, "GET", "/admin/mode", "").status, 405);
    let metrics = get(server.addr, "/metrics").text();
    assert!(
        metrics.contains("backstop_outage_refusals_total{reason=\"forced_outage\"} 5\n"),
        "{metrics}"
    );
    server
        .wait_for_audit(|r| r["event"] == "mode_set" && r["from"] == "auto" && r["to"] == "outage");
    server
        .wait_for_audit(|r| r["event"] == "mode_set" && r["from"] == "outage" && r["to"] == "auto");
}
