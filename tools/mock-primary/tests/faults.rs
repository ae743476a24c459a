//! Fault injection as a client sees it: connect refused (`down`), 500 (`error500`), delayed
//! answers (`slow`), no answer at all (`hang`); the admin API stays reachable throughout, and
//! the counters record what the main listener saw.

// Helpers outside #[test] functions may fail like the tests themselves; timing is measured.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use backstop_mock_primary::{Endpoint, Fault, GrantRequest};
use common::*;
use serde_json::json;

const DISCOVERY: &str = "/.well-known/openid-configuration";

#[test]
fn down_refuses_connections_drops_open_ones_and_comes_back_on_the_same_port() {
    let mock = start();
    // A keep-alive connection that has been served once.
    let mut open = TcpStream::connect(mock.addr()).unwrap();
    open.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        open,
        "GET {DISCOVERY} HTTP/1.1\r\nHost: {}\r\n\r\n",
        mock.addr()
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = open.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    mock.set_fault(Fault::Down).unwrap();
    let refused = TcpStream::connect(mock.addr()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    // The open connection is closed (EOF or reset), not left serving.
    match open.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("open connection still answered {n} bytes"),
        Err(e) => assert_ne!(e.kind(), ErrorKind::WouldBlock, "connection left open"),
    }
    // The admin listener still answers.
    assert_eq!(get(mock.admin_addr(), "/mock/fault").json()["mode"], "down");
    mock.reset_counters();

    // Back up through the admin endpoint, on the same address.
    let up = post_json(
        mock.admin_addr(),
        "/mock/fault",
        &json!({"mode": "healthy"}),
    );
    assert_eq!(up.status, 200);
    assert_eq!(get(mock.addr(), DISCOVERY).status, 200);
    assert_eq!(mock.counters().get(Endpoint::Discovery, "ok"), 1);
    assert_eq!(mock.fault(), Fault::Healthy);
}

#[test]
fn error500_answers_every_endpoint_with_500_but_not_the_admin_api() {
    let mock = start();
    let code = mock
        .create_grant(GrantRequest::new("u", "t", "app", "openid"))
        .unwrap();
    mock.set_fault(Fault::Error500).unwrap();
    for path in [DISCOVERY, "/jwks"] {
        let reply = get(mock.addr(), path);
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (500, "server_error"),
            "{path}"
        );
    }
    let token = post_token(
        mock.addr(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "app"),
        ],
        &[],
    );
    assert_eq!(token.status, 500);
    // /mock/* on the main listener is not subject to the fault.
    let counters = get(mock.addr(), "/mock/counters");
    assert_eq!(counters.status, 200);
    assert_eq!(counters.json()["counts"]["token fault_error500"], 1);
    assert_eq!(
        mock.counters().get(Endpoint::Discovery, "fault_error500"),
        1
    );

    // Nothing was processed: the code still works once healthy.
    mock.set_fault(Fault::Healthy).unwrap();
    let token = post_token(
        mock.addr(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "app"),
        ],
        &[],
    );
    assert_eq!(token.status, 200);
}

#[test]
fn slow_processes_then_delays_so_a_client_timeout_is_ambiguous() {
    let mock = start();
    let code = mock
        .create_grant(GrantRequest::new("u", "t", "app", "openid"))
        .unwrap();
    let rt = post_token(
        mock.addr(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "app"),
        ],
        &[],
    )
    .json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    let set = post_json(
        mock.addr(),
        "/mock/fault",
        &json!({"mode": "slow", "delay_ms": 300}),
    );
    assert_eq!(set.json(), json!({"mode": "slow", "delay_ms": 300}));
    let started = Instant::now();
    assert_eq!(get(mock.addr(), DISCOVERY).status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A client that gives up after 100 ms sees a timeout, but the refresh was processed.
    let body = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &rt),
        ("client_id", "app"),
    ]);
    let timed_out = send(
        mock.addr(),
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
        Duration::from_millis(100),
    )
    .unwrap_err();
    assert!(matches!(
        timed_out.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    std::thread::sleep(Duration::from_millis(300));
    mock.set_fault(Fault::Healthy).unwrap();
    let reuse = post_token(
        mock.addr(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "app"),
        ],
        &[],
    );
    assert_eq!(
        reuse.error(),
        "invalid_grant",
        "the lost answer had rotated the token"
    );
}

#[test]
fn hang_never_answers_and_releases_the_connection_when_the_mode_changes() {
    let mock = start();
    mock.set_fault(Fault::Hang).unwrap();
    let timed_out = send(
        mock.addr(),
        "GET",
        DISCOVERY,
        &[],
        b"",
        Duration::from_millis(200),
    )
    .unwrap_err();
    assert!(matches!(
        timed_out.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));

    let mut hung = TcpStream::connect(mock.addr()).unwrap();
    write!(hung, "GET /jwks HTTP/1.1\r\nHost: {}\r\n\r\n", mock.addr()).unwrap();
    // Give the request time to reach the service before the mode changes.
    let deadline = Instant::now() + TIMEOUT;
    while mock.counters().get(Endpoint::Jwks, "fault_hang") == 0 {
        assert!(Instant::now() < deadline, "hung request never counted");
        std::thread::sleep(Duration::from_millis(5));
    }
    mock.set_fault(Fault::Healthy).unwrap();
    hung.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = Vec::new();
    let read = hung.read_to_end(&mut buf);
    assert!(buf.is_empty(), "a hung request must never get an answer");
    assert!(read.is_ok() || read.unwrap_err().kind() == ErrorKind::ConnectionReset);
    assert_eq!(get(mock.addr(), DISCOVERY).status, 200);
    assert_eq!(mock.counters().get(Endpoint::Discovery, "fault_hang"), 1);
}

#[test]
fn counters_show_the_primary_saw_nothing_while_untouched() {
    let mock = start();
    assert_eq!(get(mock.addr(), "/jwks").status, 200);
    assert_eq!(get(mock.addr(), "/nope").status, 404);
    assert_eq!(mock.counters().total(), 2);
    // Admin traffic is never counted.
    post_json(mock.admin_addr(), "/mock/counters/reset", &json!({}));
    get(mock.addr(), "/mock/counters");
    assert_eq!(mock.counters().total(), 0);
    assert_eq!(mock.counters().endpoint_total(Endpoint::Token), 0);
}

#[test]
fn admin_fault_endpoint_rejects_bad_modes() {
    let mock = start();
    for body in [
        json!({"mode": "sideways"}),
        json!({"mode": "slow"}),
        json!({"mode": "down", "delay_ms": 5}),
        json!({"mode": "down", "extra": 1}),
    ] {
        let reply = post_json(mock.admin_addr(), "/mock/fault", &body);
        assert_eq!(reply.status, 400, "{body}");
    }
    assert_eq!(mock.fault(), Fault::Healthy);
}

#[test]
fn revoke_user_kills_their_refresh_tokens() {
    let mock = start();
    let code = mock
        .create_grant(GrantRequest::new("bob", "t", "app", "openid"))
        .unwrap();
    let rt = post_token(
        mock.addr(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "app"),
        ],
        &[],
    )
    .json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = post_json(mock.admin_addr(), "/mock/revoke", &json!({"user": "bob"}));
    assert_eq!(revoked.json()["revoked"], 1);
    let refresh = post_token(
        mock.addr(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "app"),
        ],
        &[],
    );
    assert_eq!(refresh.error(), "invalid_grant");
}

#[test]
fn the_binary_prints_its_address_and_serves() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/test-rsa-2048.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_backstop-mock-primary"))
        .args(["--key", fixture])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("mock-primary: listening on http://")
        .map(|a| a.parse().unwrap());
    let status = addr.map(|a| get(a, DISCOVERY).status);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, Some(200), "first line: {line:?}");
}

/// The demo drives the mock from async code: the async fault setter works there, and dropping
/// the handle inside a runtime neither panics nor hangs.
#[tokio::test]
async fn async_fault_changes_and_drop_inside_a_runtime() {
    let mock = start();
    mock.set_fault_async(Fault::Down).await.unwrap();
    let refused = tokio::net::TcpStream::connect(mock.addr())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    mock.set_fault_async(Fault::Healthy).await.unwrap();
    assert!(tokio::net::TcpStream::connect(mock.addr()).await.is_ok());
    drop(mock);
}
