//! Helpers for end-to-end tests of backstop in front of the mock OpenID provider: the quick
//! failover config, starting both on fixed ports, the admin API, token requests, metrics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use backstop_mock_primary::{KeySource, MockHandle, MockOptions, MockPrimary};
use serde_json::Value;

use super::{Backstop, Conn, Reply};

/// The admin bearer token every end-to-end test configures.
pub const ADMIN_TOKEN: &str = "e2e-test-admin-token-0123456789abcdef";

/// Short timeouts and a quick breaker in front of `mock`, so a test sees a whole failover
/// cycle in seconds.
pub fn quick_failover_tables(mock: &MockHandle) -> String {
    format!(
        "[primary]\norigin = \"http://{}\"\nconnect_timeout_ms = 200\nrequest_timeout_ms = 600\n\
         [failover]\nconsecutive_failures_max = 2\nwindow_len = 4\nwindow_failures_max = 4\n\
         open_initial_ms = 300\nopen_max_ms = 1000\n",
        mock.addr()
    )
}

/// The mock primary with its checked-in RSA key (no key generation wait).
pub fn start_mock() -> MockHandle {
    MockPrimary::start(MockOptions {
        key: KeySource::test_fixture(),
        ..MockOptions::default()
    })
    .unwrap()
}

/// A free loopback port, so a restarted backstop keeps its issuer URL.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts backstop as `http://127.0.0.1:{port}` with `tables`, on `dir` if given (a restart),
/// and waits until it knows the primary's token endpoint.
pub fn start_backstop(tables: &str, port: u16, dir: Option<tempfile::TempDir>) -> Backstop {
    let top = format!("issuer = \"http://127.0.0.1:{port}\"\n");
    let server = Backstop::start_in(
        dir,
        &top,
        tables,
        &[("BACKSTOP_ADMIN_TOKEN", ADMIN_TOKEN)],
        Some(port),
    );
    wait_until("metadata cached", Duration::from_secs(15), || {
        admin_status(&server)["primary_metadata"]["token_path"].is_string()
    });
    server
}

/// One admin API call; the answer's JSON body.
pub fn admin(server: &Backstop, method: &str, path: &str, body: &str) -> Value {
    let mut conn = Conn::open(server.admin_addr.unwrap());
    conn.send(
        format!(
            "{method} {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    serde_json::from_slice(&conn.read_reply().unwrap().body).unwrap()
}

/// `GET /admin/status`.
pub fn admin_status(server: &Backstop) -> Value {
    admin(server, "GET", "/admin/status", "")
}

/// Polls `ok` until it holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `POST /token` with a form body.
pub fn post_token(addr: SocketAddr, body: &str) -> Reply {
    post_token_with(addr, body, "")
}

/// `POST /token` with a form body and extra header lines (each ending in `\r\n`).
pub fn post_token_with(addr: SocketAddr, body: &str, extra_headers: &str) -> Reply {
    let mut conn = Conn::open(addr);
    conn.send(
        format!(
            "POST /token HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             {extra_headers}content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    conn.read_reply().expect("a reply")
}

/// The sum of a metric's samples with exactly this name and labels.
pub fn metric(server: &Backstop, name: &str) -> f64 {
    super::get(server.addr, "/metrics")
        .text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

/// Waits until capture has stored `n` sign-ins or refreshes.
pub fn wait_captured(server: &Backstop, n: f64) {
    wait_until("captures stored", Duration::from_secs(10), || {
        metric(server, "backstop_capture_captured_total") >= n
    });
}
