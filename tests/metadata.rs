//! End-to-end tests of the metadata backstop serves in front of a real-behaving provider (the
//! mock primary): discovery and the merged JWKS, kept through an outage, and usable to verify
//! the primary's own tokens.

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

use backstop_mock_primary::{Fault, GrantRequest, KeySource, MockOptions, MockPrimary};
use common::{Backstop, Conn, get};

const ADMIN_TOKEN: &str = "metadata-test-admin-token-0123456789";

fn start_pair() -> (backstop_mock_primary::MockHandle, Backstop) {
    let mock = MockPrimary::start(MockOptions {
        key: KeySource::test_fixture(),
        ..MockOptions::default()
    })
    .unwrap();
    let tables = format!("[primary]\norigin = \"http://{}\"\n", mock.addr());
    let server = Backstop::start("", &tables, &[("BACKSTOP_ADMIN_TOKEN", ADMIN_TOKEN)]);
    wait_for_metadata(&server);
    (mock, server)
}

fn admin_status(server: &Backstop) -> serde_json::Value {
    let mut conn = Conn::open(server.admin_addr.unwrap());
    conn.send(
        format!(
            "GET /admin/status HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
        )
        .as_bytes(),
    );
    serde_json::from_slice(&conn.read_reply().unwrap().body).unwrap()
}

fn wait_for_metadata(server: &Backstop) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = admin_status(server);
        if status["primary_metadata"]["jwks_cached"] == true {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metadata never cached: {status}\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn discovery_names_backstop_and_the_jwks_merges_both_key_sets() {
    let (mock, server) = start_pair();
    let issuer = format!("http://{}", server.addr);
    let reply = get(server.addr, "/.well-known/openid-configuration");
    assert_eq!(reply.status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(doc["issuer"], issuer.as_str());
    let jwks_uri = doc["jwks_uri"].as_str().unwrap();
    assert!(
        jwks_uri.starts_with(&issuer),
        "jwks_uri {jwks_uri} does not point at backstop"
    );
    assert_eq!(doc["token_endpoint"], format!("{issuer}/token"));

    let jwks_path = &jwks_uri[issuer.len()..];
    let reply = get(server.addr, jwks_path);
    assert_eq!(reply.status, 200);
    let set: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let keys = set["keys"].as_array().unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(
        kids.contains(&mock.kid()),
        "primary key missing from {kids:?}"
    );
    for alg in ["EdDSA", "ES256", "RS256"] {
        assert!(
            keys.iter().any(|k| k["alg"] == alg),
            "no backstop {alg} key in {kids:?}"
        );
    }
    assert!(
        keys.iter().all(|k| k.get("d").is_none()),
        "a private key was published"
    );
    assert_eq!(
        admin_status(&server)["primary_metadata"]["token_path"],
        "/token"
    );
}

#[test]
fn discovery_and_jwks_are_still_served_while_the_primary_is_down() {
    let (mock, server) = start_pair();
    let before_doc = get(server.addr, "/.well-known/openid-configuration").body;
    let doc: serde_json::Value = serde_json::from_slice(&before_doc).unwrap();
    let jwks_path = doc["jwks_uri"]
        .as_str()
        .unwrap()
        .rsplit_once(&server.addr.to_string())
        .unwrap()
        .1
        .to_string();
    let before_jwks = get(server.addr, &jwks_path).body;

    mock.set_fault(Fault::Down).unwrap();
    // The primary is really down: anything forwarded fails.
    assert_eq!(get(server.addr, "/userinfo").status, 503);
    let doc = get(server.addr, "/.well-known/openid-configuration");
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body, before_doc);
    let jwks = get(server.addr, &jwks_path);
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.body, before_jwks);
}

#[test]
fn a_primary_token_obtained_through_backstop_verifies_with_backstops_jwks() {
    let (mock, server) = start_pair();
    let code = mock
        .create_grant(GrantRequest {
            user: "alice".into(),
            tenant: "t1".into(),
            client_id: "native-app".into(),
            scope: "openid offline_access".into(),
            amr: vec!["pwd".into(), "mfa".into()],
            ..GrantRequest::default()
        })
        .unwrap();
    let form = format!("grant_type=authorization_code&code={code}&client_id=native-app");
    let mut conn = server.connect();
    conn.send(
        format!(
            "POST /token HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}",
            server.addr,
            form.len()
        )
        .as_bytes(),
    );
    let reply = conn.read_reply().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let tokens: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let access_token = tokens["access_token"].as_str().unwrap();

    let doc: serde_json::Value =
        serde_json::from_slice(&get(server.addr, "/.well-known/openid-configuration").body)
            .unwrap();
    let issuer = doc["issuer"].as_str().unwrap();
    let jwks_path = &doc["jwks_uri"].as_str().unwrap()[issuer.len()..];
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&get(server.addr, jwks_path).body).unwrap();
    let header = jsonwebtoken::decode_header(access_token).unwrap();
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("the token's kid is in backstop's JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[issuer]);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(access_token, &key, &validation).unwrap();
    // The provider built its issuer from the Host backstop forwarded: the public name.
    assert_eq!(data.claims["iss"], issuer);
    assert_eq!(data.claims["sub"], "alice");
}
