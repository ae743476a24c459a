//! End-to-end tests of the failover gateway (issue 5): the real `backstop` binary in front of
//! the mock OpenID provider on loopback. Sign in through backstop, take the primary down, and
//! check what the backup serves and refuses, the breaker, the recovery, and a restart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// End-to-end tests wait on wall-clock time on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

#[path = "fixtures/token/support.rs"]
mod support;

use std::time::Duration;

use backstop::token::alg::SigningAlg;
use backstop::token::alg::Typ;
use backstop::token::jwks::KeySet;
use backstop::token::jws::{JwtPolicy, TypRule, verify_jwt};
use backstop::token::sign::SigningKey;
use backstop_mock_primary::{Fault, GrantRequest, MockHandle};
use common::oidc::{
    self, admin, admin_status, free_port, metric, post_token_with, quick_failover_tables,
    start_mock, wait_captured, wait_until,
};
use common::{Backstop, Conn, Reply};
use serde_json::Value;

const CLIENT: &str = "native-app";

fn start_backstop(mock: &MockHandle, port: u16, dir: Option<tempfile::TempDir>) -> Backstop {
    oidc::start_backstop(&quick_failover_tables(mock), port, dir)
}

/// Signs in `user` through backstop (code grant) and returns the token response.
fn sign_in(mock: &MockHandle, server: &Backstop, user: &str, resource: Option<&str>) -> Value {
    let mut grant = GrantRequest::new(user, "tenant-1", CLIENT, "openid offline_access api.read");
    grant.amr = vec!["pwd".into(), "mfa".into()];
    grant.acr = Some("urn:acr:mfa".into());
    grant.groups = vec!["g-staff".into()];
    grant.roles = vec!["reader".into()];
    grant.nonce = Some("n-123".into());
    grant.resource = resource.map(str::to_owned);
    let code = mock.create_grant(grant).unwrap();
    let reply = post_token_with(
        server.addr,
        &format!("grant_type=authorization_code&code={code}&client_id={CLIENT}"),
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    json_of(&reply)
}

fn refresh(server: &Backstop, refresh_token: &str, extra_headers: &str) -> Reply {
    post_token_with(
        server.addr,
        &format!("grant_type=refresh_token&refresh_token={refresh_token}&client_id={CLIENT}"),
        extra_headers,
    )
}

fn backstop_keys(server: &Backstop) -> KeySet {
    let doc = json_of(&common::get(
        server.addr,
        "/.well-known/openid-configuration",
    ));
    let issuer = doc["issuer"].as_str().unwrap();
    let path = &doc["jwks_uri"].as_str().unwrap()[issuer.len()..];
    let reply = common::get(server.addr, path);
    KeySet::parse(&reply.body).unwrap().0
}

/// The reply's JSON body.
fn json_of(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|_| panic!("not JSON ({}): {}", reply.status, reply.text()))
}

fn claims_of(token: &str) -> serde_json::Map<String, Value> {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = backstop::token::b64::decode(payload.as_bytes(), "payload").unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn header_of(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&backstop::token::b64::decode(h.as_bytes(), "header").unwrap()).unwrap()
}

fn without_time_claims(mut c: serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    for k in ["iat", "nbf", "exp", "jti"] {
        c.remove(k);
    }
    c
}

fn take_primary_down(mock: &MockHandle) {
    mock.set_fault(Fault::Down).unwrap();
}

#[test]
fn a_signed_in_session_is_served_by_the_backup_through_an_outage_and_returns_to_the_primary() {
    let mock = start_mock();
    let port = free_port();
    let server = start_backstop(&mock, port, None);

    // Sign in, then refresh once at the primary: the latest tokens are what the backup copies.
    let first = sign_in(&mock, &server, "alice", None);
    let r1 = first["refresh_token"].as_str().unwrap().to_string();
    let reply = refresh(&server, &r1, "");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let latest = json_of(&reply);
    let r2 = latest["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2, "the mock primary rotates refresh tokens");
    wait_captured(&server, 2.0);

    take_primary_down(&mock);
    let reply = refresh(&server, &r2, "");
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), server.stderr());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let backup = json_of(&reply);

    // The token verifies with the JWKS backstop serves, is signed by backstop, and carries
    // exactly the primary's last claims but the time claims and `jti`.
    let keys = backstop_keys(&server);
    let access = backup["access_token"].as_str().unwrap();
    let primary_access = latest["access_token"].as_str().unwrap();
    assert_ne!(header_of(access)["kid"], header_of(primary_access)["kid"]);
    assert_eq!(header_of(access)["alg"], header_of(primary_access)["alg"]);
    assert_eq!(header_of(access)["typ"], header_of(primary_access)["typ"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let issuer = format!("http://127.0.0.1:{port}");
    let algs = [
        SigningAlg::Rs256.alg(),
        SigningAlg::Es256.alg(),
        SigningAlg::EdDsa.alg(),
    ];
    let policy = |typ| JwtPolicy {
        typ,
        algs: &algs,
        leeway_secs: 5,
        require_exp: true,
        issuer: Some(issuer.as_str()),
        audience: None,
    };
    let at_typ = match header_of(primary_access)["typ"].as_str() {
        Some(t) => TypRule::Exactly(Typ::from_header(t).unwrap()),
        None => TypRule::JwtOrAbsent,
    };
    verify_jwt(access.as_bytes(), &keys, &policy(at_typ), now).expect("backup token verifies");
    let (got, want) = (claims_of(access), claims_of(primary_access));
    assert_eq!(
        without_time_claims(got.clone()),
        without_time_claims(want.clone())
    );
    assert_ne!(got.get("jti"), want.get("jti"));
    for k in ["iat", "exp", "jti", "nbf"] {
        assert_eq!(got.contains_key(k), want.contains_key(k), "claim {k}");
    }
    // The ID token too: same claims (nonce, auth_time, sub, aud...) but times.
    let id = backup["id_token"].as_str().unwrap();
    verify_jwt(id.as_bytes(), &keys, &policy(TypRule::JwtOrAbsent), now)
        .expect("backup ID token verifies");
    assert_eq!(
        without_time_claims(claims_of(id)),
        without_time_claims(claims_of(latest["id_token"].as_str().unwrap()))
    );
    // The response is shaped like the primary's; the refresh token is echoed.
    assert_eq!(backup["refresh_token"], r2.as_str());
    assert_eq!(backup["token_type"], latest["token_type"]);
    assert_eq!(backup["expires_in"], latest["expires_in"]);
    assert_eq!(backup["scope"], latest["scope"]);

    // A rotated-out token is dead here too; a never-seen one gets "retry later".
    let reply = refresh(&server, &r1, "");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(json_of(&reply)["error"], "invalid_grant");
    let reply = refresh(&server, "never-seen-anywhere", "");
    assert_eq!(reply.status, 503);
    assert_eq!(json_of(&reply)["error"], "temporarily_unavailable");
    assert!(reply.header("retry-after").is_some());

    // Every decision is audited, without the token.
    server.wait_for_audit(|r| {
        r["event"] == "backup_decision" && r["decision"] == "served" && r["user"] == "alice"
    });
    let records = server.wait_for_audit(|r| {
        r["event"] == "backup_decision" && r["reason"] == "unknown_refresh_token"
    });
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(&r2), "a refresh token reached the audit log");
    assert!(!text.contains(&r1), "a refresh token reached the audit log");
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "refresh_token_rotated_out" && r["user"] == "alice")
    );

    // The breaker opened: later requests go straight to the backup.
    // Every worker's breaker (a request may land on any worker): keep refreshing, each served
    // by the backup, until none is closed.
    wait_until("every breaker open", Duration::from_secs(10), || {
        let status = admin_status(&server);
        let all_open = status["worker_breakers"]
            .as_array()
            .is_some_and(|b| b.iter().all(|s| s != "closed"));
        if !all_open {
            assert_eq!(refresh(&server, &r2, "").status, 200);
        }
        all_open
    });
    let before = mock
        .counters()
        .endpoint_total(backstop_mock_primary::Endpoint::Token);
    let reply = refresh(&server, &r2, "");
    assert_eq!(reply.status, 200);
    server.wait_for_audit(|r| r["event"] == "backup_decision" && r["cause"] == "breaker_open");
    assert_eq!(
        mock.counters()
            .endpoint_total(backstop_mock_primary::Endpoint::Token),
        before,
        "an open breaker sends nothing to the primary"
    );

    // Recovery: the primary answers again and traffic returns to it with no operator action.
    mock.set_fault(Fault::Healthy).unwrap();
    wait_until("breaker closed", Duration::from_secs(10), || {
        admin_status(&server)["breaker"] == "closed"
    });
    let reply = refresh(&server, &r2, "");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let back = json_of(&reply);
    assert_eq!(
        header_of(back["access_token"].as_str().unwrap())["kid"],
        header_of(primary_access)["kid"],
        "served by the primary again"
    );
    assert_ne!(back["refresh_token"], r2.as_str(), "the primary rotated it");
}

#[test]
fn a_primary_400_passes_through_unchanged_and_an_invalid_grant_revokes_here_too() {
    let mock = start_mock();
    let server = start_backstop(&mock, free_port(), None);
    let first = sign_in(&mock, &server, "bob", None);
    let r1 = first["refresh_token"].as_str().unwrap().to_string();
    let r2 = json_of(&refresh(&server, &r1, ""))["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    wait_captured(&server, 2.0);

    // Presenting the rotated-out token: the primary refuses (and, strict, kills the grant).
    let direct = {
        let mut conn = Conn::open(mock.addr());
        let body =
            format!("grant_type=refresh_token&refresh_token=unknown-token&client_id={CLIENT}");
        conn.send(
            format!(
                "POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        conn.read_reply().unwrap()
    };
    let through = refresh(&server, "unknown-token", "");
    assert_eq!(through.status, direct.status);
    assert_eq!(
        through.body, direct.body,
        "the primary's 400 body is passed unchanged"
    );

    let reply = refresh(&server, &r1, "");
    assert_eq!(reply.status, 400);
    assert_eq!(json_of(&reply)["error"], "invalid_grant");
    wait_until("revocation recorded", Duration::from_secs(10), || {
        metric(&server, "backstop_capture_revoked_total") >= 1.0
    });
    // The primary revoked the whole grant (strict rotation); so does the backup.
    take_primary_down(&mock);
    let reply = refresh(&server, &r2, "");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(json_of(&reply)["error"], "invalid_grant");
}

#[test]
fn malformed_and_duplicated_parameter_requests_get_rfc6749_errors_in_both_modes() {
    let mock = start_mock();
    let server = start_backstop(&mock, free_port(), None);
    let cases = [
        (
            "grant_type=refresh_token&grant_type=refresh_token&refresh_token=a&client_id=c",
            400,
            "invalid_request",
        ),
        (
            "grant_type=refresh_token&client_id=c",
            400,
            "invalid_request",
        ),
        ("refresh_token=a&client_id=c", 400, "invalid_request"),
        (
            "grant_type=refresh_token&refresh_token=%ZZ&client_id=c",
            400,
            "invalid_request",
        ),
        (
            "grant_type=refresh_token&refresh_token=a",
            401,
            "invalid_client",
        ),
        (
            "grant_type=made%20up&refresh_token=a&client_id=c",
            400,
            "unsupported_grant_type",
        ),
    ];
    for mode in ["normal", "outage"] {
        admin(
            &server,
            "POST",
            "/admin/mode",
            &format!("{{\"mode\":\"{mode}\"}}"),
        );
        let before = mock
            .counters()
            .endpoint_total(backstop_mock_primary::Endpoint::Token);
        for (body, status, error) in cases {
            let reply = post_token_with(server.addr, body, "");
            assert_eq!(reply.status, status, "{mode}: {body}: {}", reply.text());
            assert_eq!(json_of(&reply)["error"], error, "{mode}: {body}");
        }
        assert_eq!(
            mock.counters()
                .endpoint_total(backstop_mock_primary::Endpoint::Token),
            before,
            "{mode}: malformed requests never reach the primary"
        );
        // Oversized: refused before reading, as JSON at the token endpoint.
        // The head declares a body over the limit; none is sent (refused before reading).
        let mut conn = Conn::open(server.addr);
        conn.send(
            b"POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
              content-length: 2097152\r\n\r\n",
        );
        let reply = conn.read_reply().unwrap();
        assert_eq!(reply.status, 413);
        assert_eq!(json_of(&reply)["error"], "invalid_request");
    }
}

fn dpop_proof(key: &SigningKey, htu: &str, jti: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = format!(
        r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{}}}"#,
        key.public_jwk().key.canonical_json()
    );
    let claims = format!(r#"{{"jti":"{jti}","htm":"POST","htu":"{htu}","iat":{now}}}"#);
    support::sign_raw(&*support::signer(key), &header, &claims)
}

#[test]
fn a_dpop_bound_session_refuses_a_request_without_a_valid_proof_of_its_key() {
    let mock = start_mock();
    let port = free_port();
    let server = start_backstop(&mock, port, None);
    let htu = format!("http://127.0.0.1:{port}/token");
    let key = SigningKey::generate(SigningAlg::Es256).unwrap();
    let other = SigningKey::generate(SigningAlg::Es256).unwrap();

    let code = mock
        .create_grant(GrantRequest::new(
            "carol",
            "tenant-1",
            CLIENT,
            "openid offline_access",
        ))
        .unwrap();
    let reply = post_token_with(
        server.addr,
        &format!("grant_type=authorization_code&code={code}&client_id={CLIENT}"),
        &format!("dpop: {}\r\n", dpop_proof(&key, &htu, "p1")),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let signed_in = json_of(&reply);
    assert_eq!(signed_in["token_type"], "DPoP");
    let rt = signed_in["refresh_token"].as_str().unwrap().to_string();
    wait_captured(&server, 1.0);

    take_primary_down(&mock);
    let reply = refresh(&server, &rt, "");
    assert_eq!(reply.status, 400, "no proof: {}", reply.text());
    assert_eq!(json_of(&reply)["error"], "invalid_dpop_proof");
    let reply = refresh(
        &server,
        &rt,
        &format!("dpop: {}\r\n", dpop_proof(&other, &htu, "p2")),
    );
    assert_eq!(reply.status, 400, "another key: {}", reply.text());
    assert_eq!(json_of(&reply)["error"], "invalid_dpop_proof");
    let proof = dpop_proof(&key, &htu, "p3");
    let reply = refresh(&server, &rt, &format!("dpop: {proof}\r\n"));
    assert_eq!(reply.status, 200, "the bound key: {}", reply.text());
    let served = json_of(&reply);
    assert_eq!(served["token_type"], "DPoP");
    let cnf = &claims_of(served["access_token"].as_str().unwrap())["cnf"];
    assert!(cnf["jkt"].is_string(), "the token stays bound: {cnf}");
    let reply = refresh(&server, &rt, &format!("dpop: {proof}\r\n"));
    assert_eq!(reply.status, 400, "a replayed proof: {}", reply.text());
}

#[test]
fn nothing_is_lost_across_a_restart_during_an_outage() {
    let mock = start_mock();
    let port = free_port();
    let mut server = start_backstop(&mock, port, None);
    let signed_in = sign_in(&mock, &server, "dave", Some("https://api.example.com"));
    let rt = signed_in["refresh_token"].as_str().unwrap().to_string();
    wait_captured(&server, 1.0);
    take_primary_down(&mock);
    let reply = refresh(&server, &rt, "");
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Kill (no drain) and start again on the same data directory and address, primary down.
    let dir = server.kill_and_take_dir();
    let server = start_backstop(&mock, port, Some(dir));
    let reply = refresh(&server, &rt, "");
    assert_eq!(
        reply.status,
        200,
        "after restart: {}\n{}",
        reply.text(),
        server.stderr()
    );
    let token = json_of(&reply);
    assert_eq!(
        claims_of(token["access_token"].as_str().unwrap())["aud"],
        "https://api.example.com"
    );
}
