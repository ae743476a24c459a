//! End-to-end token flows over loopback HTTP: codes, refresh rotation and reuse detection,
//! client authentication, DPoP binding and discovery, with every signed token verified
//! against the served JWKS by an independent JOSE library (jsonwebtoken).

// Helpers outside #[test] functions may fail like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::HashSet;

use backstop_mock_primary::{ClientConfig, Endpoint, GrantRequest, IssuerSource, MockOptions};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::{Value, json};

/// Verifies `token` against the JWKS the mock serves, with an independent library.
fn verify(handle: &backstop_mock_primary::MockHandle, token: &str, aud: &str) -> (String, Value) {
    let jwks: JwkSet = serde_json::from_slice(&get(handle.addr(), "/jwks").body).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.clone().unwrap();
    let jwk = jwks.find(&kid).expect("kid in JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[handle.issuer()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = decode::<Value>(token, &key, &validation).unwrap();
    (data.header.typ.unwrap_or_default(), data.claims)
}

fn full_grant() -> GrantRequest {
    GrantRequest {
        resource: Some("https://api.example".into()),
        amr: vec!["pwd".into(), "mfa".into()],
        acr: Some("urn:acr:2fa".into()),
        groups: vec!["g1".into(), "g2".into()],
        roles: vec!["reader".into()],
        device: Some("device-7".into()),
        nonce: Some("n-123".into()),
        auth_time: Some(now_secs() - 100),
        ..GrantRequest::new(
            "alice",
            "tenant-a",
            "native-app",
            "openid offline_access api.read",
        )
    }
}

fn redeem(handle: &backstop_mock_primary::MockHandle, code: &str, client: &str) -> Reply {
    post_token(
        handle.addr(),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", client),
        ],
        &[],
    )
}

fn refresh(handle: &backstop_mock_primary::MockHandle, token: &str, client: &str) -> Reply {
    post_token(
        handle.addr(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", client),
        ],
        &[],
    )
}

#[test]
fn code_redemption_returns_tokens_that_verify_against_the_served_jwks() {
    let mock = start();
    // The admin endpoint on the admin listener creates the grant.
    let created = post_json(
        mock.admin_addr(),
        "/mock/grants",
        &serde_json::to_value(full_grant()).unwrap(),
    );
    assert_eq!(created.status, 201, "{:?}", created);
    let code = created.json()["code"].as_str().unwrap().to_string();

    let reply = redeem(&mock, &code, "native-app");
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "openid offline_access api.read");
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);

    let (typ, at) = verify(
        &mock,
        body["access_token"].as_str().unwrap(),
        "https://api.example",
    );
    assert_eq!(typ, "at+jwt");
    assert_eq!(at["sub"], "alice");
    assert_eq!(at["client_id"], "native-app");
    assert_eq!(at["scope"], "openid offline_access api.read");
    assert_eq!(at["amr"], json!(["pwd", "mfa"]));
    assert_eq!(at["groups"], json!(["g1", "g2"]));
    assert_eq!(at["roles"], json!(["reader"]));
    assert_eq!(at["tid"], "tenant-a");
    assert_eq!(at["device_id"], "device-7");
    assert!(at.get("cnf").is_none());
    assert!(at["jti"].as_str().unwrap().len() >= 16);
    assert_eq!(
        at["exp"].as_u64().unwrap() - at["iat"].as_u64().unwrap(),
        3600
    );

    let (typ, id) = verify(&mock, body["id_token"].as_str().unwrap(), "native-app");
    assert_eq!(typ, "JWT");
    assert_eq!(id["azp"], "native-app");
    assert_eq!(id["nonce"], "n-123");
    assert_eq!(id["acr"], "urn:acr:2fa");
    assert_eq!(id["auth_time"], full_grant().auth_time.unwrap());

    // The code is one-time.
    let again = redeem(&mock, &code, "native-app");
    assert_eq!(
        (again.status, again.error().as_str()),
        (400, "invalid_grant")
    );
    assert_eq!(mock.counters().get(Endpoint::Token, "ok"), 1);
    assert_eq!(mock.counters().get(Endpoint::Token, "invalid_grant"), 1);
}

#[test]
fn a_tampered_token_fails_independent_verification() {
    let mock = start();
    let code = mock.create_grant(full_grant()).unwrap();
    let token = redeem(&mock, &code, "native-app").json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let jwks: JwkSet = serde_json::from_slice(&get(mock.addr(), "/jwks").body).unwrap();
    let key = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[1])
            .unwrap(),
    )
    .unwrap();
    claims["sub"] = json!("mallory");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).unwrap());
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["https://api.example"]);
    assert!(decode::<Value>(&parts.join("."), &key, &validation).is_err());
}

#[test]
fn refresh_rotates_and_reuse_of_a_rotated_out_token_kills_the_whole_grant() {
    let mock = start();
    let code = mock.create_grant(full_grant()).unwrap();
    let first = redeem(&mock, &code, "native-app").json();
    let rt1 = first["refresh_token"].as_str().unwrap().to_string();

    let second = refresh(&mock, &rt1, "native-app");
    assert_eq!(
        second.status,
        200,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    let second = second.json();
    let rt2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    // The refreshed ID token keeps the original auth_time and nonce (OIDC Core §12.2).
    let (_, id) = verify(&mock, second["id_token"].as_str().unwrap(), "native-app");
    assert_eq!(id["auth_time"], full_grant().auth_time.unwrap());
    assert_eq!(id["nonce"], "n-123");
    let (_, at1) = verify(
        &mock,
        first["access_token"].as_str().unwrap(),
        "https://api.example",
    );
    let (_, at2) = verify(
        &mock,
        second["access_token"].as_str().unwrap(),
        "https://api.example",
    );
    assert_ne!(at1["jti"], at2["jti"]);

    let rt3 = refresh(&mock, &rt2, "native-app").json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    // Another client cannot use the token, and that does not revoke anything.
    let stolen = refresh(&mock, &rt3, "other-app");
    assert_eq!(stolen.status, 401, "unknown client is invalid_client");
    mock.register_client(ClientConfig::public("other-app"))
        .unwrap();
    let stolen = refresh(&mock, &rt3, "other-app");
    assert_eq!(
        (stolen.status, stolen.error().as_str()),
        (400, "invalid_grant")
    );
    assert_eq!(mock.grant_count(), 1);

    // Reuse of rt1 (rotated out twice): invalid_grant, and the grant dies.
    let reuse = refresh(&mock, &rt1, "native-app");
    assert_eq!(
        (reuse.status, reuse.error().as_str()),
        (400, "invalid_grant")
    );
    assert_eq!(mock.grant_count(), 0);
    let newest = refresh(&mock, &rt3, "native-app");
    assert_eq!(
        (newest.status, newest.error().as_str()),
        (400, "invalid_grant")
    );
}

#[test]
fn refresh_scope_can_narrow_but_not_widen() {
    let mock = start();
    let code = mock.create_grant(full_grant()).unwrap();
    let rt = redeem(&mock, &code, "native-app").json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let narrowed = post_token(
        mock.addr(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "native-app"),
            ("scope", "api.read"),
        ],
        &[],
    );
    assert_eq!(narrowed.status, 200);
    let narrowed = narrowed.json();
    assert_eq!(narrowed["scope"], "api.read");
    assert!(narrowed.get("id_token").is_none(), "no openid, no ID token");
    let rt2 = narrowed["refresh_token"].as_str().unwrap();
    let widened = post_token(
        mock.addr(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt2),
            ("client_id", "native-app"),
            ("scope", "api.write"),
        ],
        &[],
    );
    assert_eq!(widened.error(), "invalid_scope");
}

#[test]
fn client_credentials_with_basic_and_post_and_wrong_secret_is_401() {
    let mock = start_with(MockOptions {
        clients: vec![ClientConfig {
            tenant: Some("tenant-w".into()),
            roles: vec!["Jobs.Run".into()],
            scope: Some("jobs".into()),
            ..ClientConfig::confidential("worker", "s3cret:+&=")
        }],
        ..MockOptions::default()
    });
    let basic = format!("Basic {}", STANDARD.encode("worker:s3cret%3A%2B%26%3D"));
    let reply = post_token(
        mock.addr(),
        &[("grant_type", "client_credentials")],
        &[("Authorization", &basic)],
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert!(body.get("refresh_token").is_none());
    assert!(body.get("id_token").is_none());
    let (typ, at) = verify(&mock, body["access_token"].as_str().unwrap(), "worker");
    assert_eq!(typ, "at+jwt");
    assert_eq!(at["sub"], "worker");
    assert_eq!(at["roles"], json!(["Jobs.Run"]));
    assert_eq!(at["tid"], "tenant-w");
    assert_eq!(at["scope"], "jobs");

    let post = post_token(
        mock.addr(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "worker"),
            ("client_secret", "s3cret:+&="),
            ("resource", "https://jobs.example"),
        ],
        &[],
    );
    assert_eq!(post.status, 200);
    verify(
        &mock,
        post.json()["access_token"].as_str().unwrap(),
        "https://jobs.example",
    );

    let wrong = post_token(
        mock.addr(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "worker"),
            ("client_secret", "nope"),
        ],
        &[],
    );
    assert_eq!(
        (wrong.status, wrong.error().as_str()),
        (401, "invalid_client")
    );
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    let wrong_basic = format!("Basic {}", STANDARD.encode("worker:nope"));
    let wrong = post_token(
        mock.addr(),
        &[("grant_type", "client_credentials")],
        &[("Authorization", &wrong_basic)],
    );
    assert_eq!(
        (wrong.status, wrong.error().as_str()),
        (401, "invalid_client")
    );
    let missing = post_token(
        mock.addr(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "worker"),
        ],
        &[],
    );
    assert_eq!(missing.status, 401);

    // Clients registered over the admin API; public clients may not use the grant.
    let reg = post_json(
        mock.admin_addr(),
        "/mock/clients",
        &json!({"client_id": "spa"}),
    );
    assert_eq!(reg.status, 201);
    let public = post_token(
        mock.addr(),
        &[("grant_type", "client_credentials"), ("client_id", "spa")],
        &[],
    );
    assert_eq!(public.error(), "unauthorized_client");
    assert_eq!(mock.counters().get(Endpoint::Token, "invalid_client"), 3);
}

#[test]
fn malformed_token_requests_get_rfc6749_errors() {
    let mock = start();
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            b"grant_type=refresh_token&refresh_token=a&refresh_token=b&client_id=x".to_vec(),
            "application/x-www-form-urlencoded",
            "invalid_request",
        ),
        (b"{}".to_vec(), "application/json", "invalid_request"),
        (
            b"grant_type=password&client_id=x".to_vec(),
            "application/x-www-form-urlencoded",
            "invalid_client",
        ),
        (
            vec![b'a'; 70_000],
            "application/x-www-form-urlencoded",
            "invalid_request",
        ),
    ];
    for (body, ctype, expected) in cases {
        let reply = send(
            mock.addr(),
            "POST",
            "/token",
            &[("Content-Type", ctype)],
            &body,
            TIMEOUT,
        )
        .unwrap();
        assert_eq!(
            reply.error(),
            expected,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        assert!(reply.status == 400 || reply.status == 401);
    }
    mock.create_grant(GrantRequest::new("u", "t", "app", "openid"))
        .unwrap();
    let unsupported = post_token(
        mock.addr(),
        &[("grant_type", "password"), ("client_id", "app")],
        &[],
    );
    assert_eq!(unsupported.error(), "unsupported_grant_type");
    let bad_grant = post_json(mock.admin_addr(), "/mock/grants", &json!({"user": "u"}));
    assert_eq!(bad_grant.status, 400);
}

#[test]
fn discovery_follows_forwarded_headers_and_tokens_carry_that_issuer() {
    let mock = start();
    let direct = get(mock.addr(), "/.well-known/openid-configuration").json();
    assert_eq!(direct["issuer"], mock.issuer());
    assert_eq!(direct["token_endpoint"], mock.token_endpoint());
    assert_eq!(
        direct["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    assert_eq!(
        direct["dpop_signing_alg_values_supported"],
        json!(["ES256"])
    );
    let methods: HashSet<String> =
        serde_json::from_value(direct["token_endpoint_auth_methods_supported"].clone()).unwrap();
    assert!(methods.contains("client_secret_basic") && methods.contains("none"));

    let forwarded = send(
        mock.addr(),
        "GET",
        "/.well-known/openid-configuration",
        &[
            ("X-Forwarded-Host", "login.example.com"),
            ("X-Forwarded-Proto", "https"),
        ],
        b"",
        TIMEOUT,
    )
    .unwrap()
    .json();
    assert_eq!(forwarded["issuer"], "https://login.example.com");
    assert_eq!(forwarded["jwks_uri"], "https://login.example.com/jwks");
    let by_host = send(
        mock.addr(),
        "GET",
        "/.well-known/openid-configuration",
        &[("Host", "idp.internal:8443")],
        b"",
        TIMEOUT,
    )
    .unwrap()
    .json();
    assert_eq!(by_host["issuer"], "http://idp.internal:8443");
    let junk = send(
        mock.addr(),
        "GET",
        "/.well-known/openid-configuration",
        &[("X-Forwarded-Host", "evil.example/<script>")],
        b"",
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(junk.status, 400);

    let code = mock.create_grant(full_grant()).unwrap();
    let reply = post_token(
        mock.addr(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "native-app"),
        ],
        &[
            ("X-Forwarded-Host", "login.example.com"),
            ("X-Forwarded-Proto", "https"),
        ],
    );
    let token = reply.json()["access_token"].as_str().unwrap().to_string();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], "https://login.example.com");

    let pinned = start_with(MockOptions {
        issuer: Some("https://pinned.example/realms/r1".into()),
        issuer_source: IssuerSource::Configured,
        ..MockOptions::default()
    });
    let doc = get(pinned.addr(), "/realms/r1/.well-known/openid-configuration").json();
    assert_eq!(
        doc["token_endpoint"],
        "https://pinned.example/realms/r1/token"
    );
    assert_eq!(
        get(pinned.addr(), "/.well-known/openid-configuration").status,
        404
    );
}

#[test]
fn dpop_binds_the_grant_and_refresh_requires_a_proof_with_the_same_key() {
    let mock = start();
    let key = DpopKey::generate();
    let htu = mock.token_endpoint();
    let code = mock.create_grant(full_grant()).unwrap();
    let proof = key.proof(&htu);
    let reply = post_token(
        mock.addr(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "native-app"),
        ],
        &[("DPoP", &proof)],
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["token_type"], "DPoP");
    let (_, at) = verify(
        &mock,
        body["access_token"].as_str().unwrap(),
        "https://api.example",
    );
    assert_eq!(at["cnf"]["jkt"], key.thumbprint());
    let rt = body["refresh_token"].as_str().unwrap().to_string();
    let refresh_form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt.as_str()),
        ("client_id", "native-app"),
    ];

    // No proof: invalid_dpop_proof, and the token is not consumed.
    let bare = post_token(mock.addr(), &refresh_form, &[]);
    assert_eq!(
        (bare.status, bare.error().as_str()),
        (400, "invalid_dpop_proof")
    );
    // A valid proof from another key: invalid_grant (the token is not this key's).
    let other = DpopKey::generate();
    let stolen = post_token(mock.addr(), &refresh_form, &[("DPoP", &other.proof(&htu))]);
    assert_eq!(
        (stolen.status, stolen.error().as_str()),
        (400, "invalid_grant")
    );
    // Replayed proof, wrong htu, stale iat, wrong htm: invalid_dpop_proof.
    let replay = post_token(mock.addr(), &refresh_form, &[("DPoP", &proof)]);
    assert_eq!(replay.error(), "invalid_dpop_proof");
    let wrong_htu = key.proof("http://elsewhere.example/token");
    assert_eq!(
        post_token(mock.addr(), &refresh_form, &[("DPoP", &wrong_htu)]).error(),
        "invalid_dpop_proof"
    );
    let stale = key
        .proof_with(json!({"jti": uuidish(), "htm": "POST", "htu": htu, "iat": now_secs() - 3600}));
    assert_eq!(
        post_token(mock.addr(), &refresh_form, &[("DPoP", &stale)]).error(),
        "invalid_dpop_proof"
    );
    let get_htm =
        key.proof_with(json!({"jti": uuidish(), "htm": "GET", "htu": htu, "iat": now_secs()}));
    assert_eq!(
        post_token(mock.addr(), &refresh_form, &[("DPoP", &get_htm)]).error(),
        "invalid_dpop_proof"
    );
    let mut forged = key.proof(&htu);
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert_eq!(
        post_token(mock.addr(), &refresh_form, &[("DPoP", &forged)]).error(),
        "invalid_dpop_proof"
    );

    // The right key still refreshes: none of the refusals above consumed the token.
    let ok = post_token(mock.addr(), &refresh_form, &[("DPoP", &key.proof(&htu))]);
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let ok = ok.json();
    assert_eq!(ok["token_type"], "DPoP");
    let (_, at) = verify(
        &mock,
        ok["access_token"].as_str().unwrap(),
        "https://api.example",
    );
    assert_eq!(at["cnf"]["jkt"], key.thumbprint());
}

#[test]
fn unbound_grant_refreshed_with_a_proof_gets_a_bound_access_token_only() {
    let mock = start();
    let key = DpopKey::generate();
    let code = mock.create_grant(full_grant()).unwrap();
    let rt = redeem(&mock, &code, "native-app").json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let bound = post_token(
        mock.addr(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "native-app"),
        ],
        &[("DPoP", &key.proof(&mock.token_endpoint()))],
    )
    .json();
    assert_eq!(bound["token_type"], "DPoP");
    let (_, at) = verify(
        &mock,
        bound["access_token"].as_str().unwrap(),
        "https://api.example",
    );
    assert_eq!(at["cnf"]["jkt"], key.thumbprint());
    // The grant itself stays unbound: the next refresh needs no proof.
    let next = refresh(
        &mock,
        bound["refresh_token"].as_str().unwrap(),
        "native-app",
    );
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["token_type"], "Bearer");
}

#[test]
fn concurrent_refreshes_of_one_token_let_exactly_one_win() {
    let mock = start_with(MockOptions {
        worker_threads: 2,
        ..MockOptions::default()
    });
    let code = mock.create_grant(full_grant()).unwrap();
    let rt = redeem(&mock, &code, "native-app").json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| s.spawn(|| refresh(&mock, &rt, "native-app").status))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        7,
        "{statuses:?}"
    );
    // The losers presented a rotated-out token: the grant is revoked.
    assert_eq!(mock.grant_count(), 0);
}
