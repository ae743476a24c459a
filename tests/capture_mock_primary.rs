//! Capture against a real provider's answers: the mock primary issues codes, refreshes with
//! strict rotation and DPoP binding, and refuses a replayed token; its real HTTP responses go
//! through the capture queue into a real store, as the server will send them.

// A test crate: a failed unwrap is a failed test with a line number; the clock is real here
// because the mock primary stamps its tokens with it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use backstop::config::CaptureConfig;
use backstop::gateway::capture::{
    CaptureJob, CaptureStats, CapturedGrantType, GrantCapture, spawn_capture_worker,
};
use backstop::store::{
    ArtifactKind, ArtifactRecord, ArtifactState, ClientAuthMethod, SessionIdentity, Store,
    StoreOpts,
};
use backstop::token::alg::SigningAlg;
use backstop::token::b64;
use backstop::token::jwks::KeySet;
use backstop::token::sign::{Ed25519Backend, SigningKey};
use backstop_mock_primary::{GrantRequest, KeySource, MockOptions, MockPrimary};
use bytes::Bytes;
use serde_json::Value;

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A minimal HTTP/1.1 POST of a form; returns status and body.
fn post_form(addr: SocketAddr, path: &str, extra: &[(&str, &str)], form: &str) -> (u16, Bytes) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        form.len()
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(form);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, Bytes::copy_from_slice(&raw[split + 4..]))
}

fn member(body: &[u8], name: &str) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v[name].as_str().unwrap_or_default().to_string()
}

fn job(
    grant: CapturedGrantType,
    body: Bytes,
    presented: Option<&str>,
    store: &Store,
) -> CaptureJob {
    CaptureJob::Granted(Box::new(GrantCapture {
        grant,
        client_id: "native-app".into(),
        client_auth: ClientAuthMethod::None,
        client_secret_digest: None,
        requested_resources: Vec::new(),
        requested_scope: None,
        presented_refresh: presented
            .map(|rt| store.artifact_digest(ArtifactKind::RefreshToken, rt.as_bytes())),
        dpop_proof: None,
        device_header: None,
        response_body: body,
        received_at_secs: now_secs(),
    }))
}

fn artifact(store: &Store, rt: &str) -> ArtifactRecord {
    let d = store.artifact_digest(ArtifactKind::RefreshToken, rt.as_bytes());
    store
        .get_artifact(&d, now_secs())
        .and_then(|v| v.to_record())
        .unwrap()
}

fn dpop_proof(key: &SigningKey, htu: &str) -> String {
    let header = format!(
        r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{}}}"#,
        key.public_jwk().key.canonical_json()
    );
    let claims = format!(
        r#"{{"jti":"p-{}","htm":"POST","htu":"{htu}","iat":{}}}"#,
        now_secs(),
        now_secs()
    );
    let input = format!(
        "{}.{}",
        b64::encode(header.as_bytes()),
        b64::encode(claims.as_bytes())
    );
    let signer = key.signer(Ed25519Backend::AwsLc).unwrap();
    let mut sig = [0u8; 512];
    let n = signer.sign(input.as_bytes(), &mut sig).unwrap();
    format!("{input}.{}", b64::encode(&sig[..n]))
}

#[test]
fn capture_follows_the_mock_primary_through_sign_in_rotation_and_refusal() {
    let mock = MockPrimary::start(MockOptions {
        key: KeySource::test_fixture(),
        ..MockOptions::default()
    })
    .unwrap();
    let issuer = mock.issuer().to_string();
    let (keys, _) = KeySet::parse(mock.jwks().to_string().as_bytes()).unwrap();
    let keys = Arc::new(keys);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), StoreOpts::manual()).unwrap());
    let stats = Arc::new(CaptureStats::new());
    let (queue, worker) = spawn_capture_worker(
        Arc::clone(&store),
        move || Some(Arc::clone(&keys)),
        CaptureConfig::default(),
        issuer.clone(),
        Arc::clone(&stats),
    )
    .unwrap();

    let code = mock
        .create_grant(GrantRequest {
            amr: vec!["pwd".into(), "mfa".into()],
            acr: Some("urn:mock:mfa".into()),
            groups: vec!["g-staff".into()],
            roles: vec!["reader".into()],
            nonce: Some("n-1".into()),
            resource: Some("https://api.example.com".into()),
            ..GrantRequest::new(
                "alice",
                "tenant-a",
                "native-app",
                "openid offline_access api.read",
            )
        })
        .unwrap();
    let (status, body) = post_form(
        mock.addr(),
        "/token",
        &[],
        &format!("grant_type=authorization_code&code={code}&client_id=native-app"),
    );
    assert_eq!(status, 200, "{body:?}");
    let rt1 = member(&body, "refresh_token");
    assert!(queue.try_send(job(
        CapturedGrantType::AuthorizationCode,
        body,
        None,
        &store
    )));

    let (status, body) = post_form(
        mock.addr(),
        "/token",
        &[],
        &format!("grant_type=refresh_token&refresh_token={rt1}&client_id=native-app"),
    );
    assert_eq!(status, 200, "{body:?}");
    let rt2 = member(&body, "refresh_token");
    assert_ne!(rt1, rt2, "the mock rotates");
    assert!(queue.try_send(job(
        CapturedGrantType::RefreshToken,
        body,
        Some(&rt1),
        &store
    )));

    // Replaying the rotated-out token: the primary refuses and revokes the grant.
    let (status, body) = post_form(
        mock.addr(),
        "/token",
        &[],
        &format!("grant_type=refresh_token&refresh_token={rt1}&client_id=native-app"),
    );
    assert_eq!(
        (status, member(&body, "error").as_str()),
        (400, "invalid_grant")
    );
    assert!(queue.try_send(CaptureJob::Refused {
        presented: store.artifact_digest(ArtifactKind::RefreshToken, rt1.as_bytes()),
        client_id: "native-app".into(),
        dpop_proof: None,
        at_secs: now_secs(),
    }));

    // DPoP: the code is redeemed with a proof, the tokens are bound to the key.
    let holder = SigningKey::generate(SigningAlg::Es256).unwrap();
    let code = mock
        .create_grant(GrantRequest::new(
            "bob",
            "tenant-a",
            "native-app",
            "openid offline_access",
        ))
        .unwrap();
    let proof = dpop_proof(&holder, &format!("{issuer}/token"));
    let (status, body) = post_form(
        mock.addr(),
        "/token",
        &[("DPoP", &proof)],
        &format!("grant_type=authorization_code&code={code}&client_id=native-app"),
    );
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(member(&body, "token_type"), "DPoP");
    let rt_bob = member(&body, "refresh_token");
    let mut bound = job(CapturedGrantType::AuthorizationCode, body, None, &store);
    if let CaptureJob::Granted(g) = &mut bound {
        g.dpop_proof = Some(Bytes::from(proof));
    }
    assert!(queue.try_send(bound));
    worker.shutdown();

    let c = stats.counts();
    assert_eq!(
        (c.captured, c.superseded, c.revoked, c.dropped),
        (3, 1, 1, 0),
        "{c:?}"
    );
    let first = artifact(&store, &rt1);
    assert!(matches!(first.state, ArtifactState::Superseded { .. }));
    let second = artifact(&store, &rt2);
    assert_eq!(second.state, ArtifactState::Revoked);
    assert_eq!(second.family, first.family);
    assert_eq!(second.device, format!("family:{}", first.family));

    let id = SessionIdentity {
        tenant: "tenant-a".into(),
        user: "alice".into(),
        device: second.device.clone(),
        app: "native-app".into(),
        resource: "https://api.example.com".into(),
    };
    let s = store.get_session(&id, now_secs()).unwrap().to_snapshot();
    assert_eq!(s.amr, ["pwd", "mfa"]);
    assert_eq!(s.groups, ["g-staff"]);
    assert_eq!(s.roles, ["reader"]);
    assert_eq!(s.access_token.alg, "RS256");
    assert_eq!(s.access_token.typ, "at+jwt");
    assert!(s.home_tenant);

    let bob = artifact(&store, &rt_bob);
    let jkt = holder.public_jwk().key.thumbprint();
    assert_eq!(bob.device, format!("jkt:{jkt}"));
    let id = SessionIdentity {
        tenant: "tenant-a".into(),
        user: "bob".into(),
        device: bob.device.clone(),
        app: "native-app".into(),
        resource: bob.resource.clone(),
    };
    let s = store.get_session(&id, now_secs()).unwrap().to_snapshot();
    assert_eq!(s.dpop_jkt.as_deref(), Some(jkt.as_str()));
    assert_eq!(s.token_type, "DPoP");
    // The mock's ID token carries acr; auth_time came from it, not from the clock of capture.
    assert!(s.auth_time_secs > 0);
}
