//! The Shared Signals receiver core with real signed Security Event Tokens: every mapped CAEP
//! and RISC event type, every RFC 8935 error code we answer, replay, and the hazards RFC 8725
//! names for SETs (wrong `typ`, `alg` none, HMAC with a public key, unknown `kid`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fixtures/token/support.rs"]
mod support;

use backstop::config::SsfConfig;
use backstop::revocation::{EventKind, Source, Subject};
use backstop::ssf::{JtiCache, Received, SET_CONTENT_TYPE, SsfError, SsfErrorCode, receive};
use backstop::token::alg::SigningAlg;
use backstop::token::b64;
use backstop::token::jwks::KeySet;
use backstop::token::sign::SigningKey;
use serde_json::{Value, json};
use support::*;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://transmitter.example.com";
const AUD: &str = "https://backstop.example.com";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

fn config() -> SsfConfig {
    SsfConfig {
        issuer: ISS.into(),
        jwks_uri: "https://transmitter.example.com/jwks".into(),
        audience: AUD.into(),
        iat_window_secs: 600,
        replay_cache_entries: 100,
    }
}

struct Transmitter {
    key: SigningKey,
    keys: KeySet,
}

fn transmitter(alg: SigningAlg) -> Transmitter {
    let key = match alg {
        SigningAlg::EdDsa => rfc8037_key(),
        other => key(other),
    };
    let keys = KeySet::from_ours(&[key.public_jwk().clone()]).unwrap();
    Transmitter { key, keys }
}

impl Transmitter {
    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        sign_raw(
            &*signer(&self.key),
            &header.to_string(),
            &claims.to_string(),
        )
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": self.key.alg().name(), "typ": "secevent+jwt", "kid": self.key.kid()}),
            claims,
        )
    }
}

fn user(sub: &str) -> Value {
    json!({"format": "iss_sub", "iss": "https://idp.example.com", "sub": sub})
}

fn set(events: Value) -> Value {
    json!({
        "iss": ISS,
        "aud": AUD,
        "iat": NOW - 5,
        "jti": "set-1",
        "sub_id": user("u1"),
        "events": events,
    })
}

fn deliver(t: &Transmitter, token: &str) -> Result<Received, SsfError> {
    receive(
        token.as_bytes(),
        Some(SET_CONTENT_TYPE),
        &t.keys,
        &config(),
        &JtiCache::new(100),
        NOW,
    )
}

#[test]
fn every_mapped_event_type_becomes_its_revocation_event() {
    let t = transmitter(SigningAlg::EdDsa);
    let cases: Vec<(String, Value, EventKind)> = vec![
        (
            format!("{CAEP}session-revoked"),
            json!({}),
            EventKind::SessionsRevoked,
        ),
        (
            format!("{CAEP}credential-change"),
            json!({"credential_type": "password", "change_type": "update"}),
            EventKind::CredentialChange,
        ),
        (
            format!("{CAEP}device-compliance-change"),
            json!({"previous_status": "compliant", "current_status": "not-compliant"}),
            EventKind::DeviceNotCompliant,
        ),
        (
            format!("{CAEP}assurance-level-change"),
            json!({"namespace": "NIST-AAL", "current_level": "nist-aal1",
                   "previous_level": "nist-aal2", "change_direction": "decrease"}),
            EventKind::AssuranceDowngraded,
        ),
        (
            format!("{CAEP}assurance-level-change"),
            json!({"namespace": "NIST-AAL", "current_level": "nist-aal1"}),
            EventKind::AssuranceDowngraded,
        ),
        (
            format!("{CAEP}token-claims-change"),
            json!({"claims": {"role": "ro"}}),
            EventKind::TokenClaimsChanged,
        ),
        (
            format!("{RISC}account-disabled"),
            json!({"reason": "hijacking"}),
            EventKind::AccountDisabled,
        ),
        (
            format!("{RISC}account-purged"),
            json!({}),
            EventKind::AccountDeleted,
        ),
        (
            format!("{RISC}account-credential-change-required"),
            json!({}),
            EventKind::CredentialChange,
        ),
        (
            format!("{RISC}sessions-revoked"),
            json!({}),
            EventKind::SessionsRevoked,
        ),
    ];
    for (event_type, payload, kind) in cases {
        let token = t.sign(&set(json!({ event_type.clone(): payload })));
        let received = deliver(&t, &token).unwrap_or_else(|e| panic!("{event_type}: {e}"));
        assert!(!received.duplicate);
        assert_eq!(received.jti, "set-1");
        assert_eq!(received.events.len(), 1, "{event_type}");
        let event = &received.events[0];
        assert_eq!(event.kind, kind, "{event_type}");
        assert_eq!(event.subject, Subject::User("u1".into()));
        assert_eq!(event.id, "set-1/0");
        assert_eq!(event.source, Source::SharedSignals);
        assert_eq!(event.time_secs, NOW - 5, "iat when no event_timestamp");
    }
}

#[test]
fn changes_that_revoke_nothing_and_unknown_types_are_accepted_and_ignored() {
    let t = transmitter(SigningAlg::Es256);
    for (event_type, payload) in [
        (
            format!("{CAEP}device-compliance-change"),
            json!({"current_status": "compliant"}),
        ),
        (
            format!("{CAEP}assurance-level-change"),
            json!({"change_direction": "increase"}),
        ),
        (format!("{RISC}account-enabled"), json!({})),
        (
            "https://example.com/event/custom".to_owned(),
            json!({"x": 1}),
        ),
    ] {
        let token = t.sign(&set(json!({ event_type.clone(): payload })));
        let received = deliver(&t, &token).unwrap_or_else(|e| panic!("{event_type}: {e}"));
        assert!(received.events.is_empty(), "{event_type}");
        assert_eq!(received.ignored, vec![event_type]);
    }
}

#[test]
fn event_subject_and_timestamp_take_precedence_within_bounds() {
    let t = transmitter(SigningAlg::Rs256);
    let claims = set(json!({
        format!("{CAEP}session-revoked"): {
            "subject": {"format": "complex",
                        "user": user("u1"),
                        "session": {"format": "opaque", "id": "sid-42"}},
            "event_timestamp": NOW - 60
        },
        format!("{CAEP}credential-change"): {
            "change_type": "update",
            "event_timestamp": NOW + 3600
        }
    }));
    let received = deliver(&t, &t.sign(&claims)).unwrap();
    assert_eq!(received.events.len(), 2);
    let by_kind = |kind| received.events.iter().find(|e| e.kind == kind).unwrap();
    let session = by_kind(EventKind::SessionsRevoked);
    assert_eq!(session.subject, Subject::Session("sid-42".into()));
    assert_eq!(session.time_secs, NOW - 60);
    let credential = by_kind(EventKind::CredentialChange);
    assert_eq!(credential.subject, Subject::User("u1".into()));
    assert_eq!(
        credential.time_secs,
        NOW - 5,
        "a future event_timestamp is capped at iat"
    );
    let mut ids: Vec<_> = received.events.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["set-1/0", "set-1/1"]);
}

#[test]
fn a_plain_sub_claim_names_the_user_when_there_is_no_sub_id() {
    let t = transmitter(SigningAlg::EdDsa);
    let mut claims = set(json!({ format!("{RISC}account-purged"): {} }));
    claims.as_object_mut().unwrap().remove("sub_id");
    claims["sub"] = json!("u7");
    let received = deliver(&t, &t.sign(&claims)).unwrap();
    assert_eq!(received.events[0].subject, Subject::User("u7".into()));
    claims["sub"] = json!(7);
    assert_eq!(
        code_of(deliver(&t, &t.sign(&claims))),
        SsfErrorCode::InvalidRequest
    );
}

#[test]
fn aud_may_be_an_array_and_content_type_may_carry_parameters() {
    let t = transmitter(SigningAlg::EdDsa);
    let mut claims = set(json!({ format!("{RISC}account-disabled"): {} }));
    claims["aud"] = json!(["https://other.example.com", AUD]);
    let token = t.sign(&claims);
    let received = receive(
        token.as_bytes(),
        Some("Application/SecEvent+JWT; charset=utf-8"),
        &t.keys,
        &config(),
        &JtiCache::new(10),
        NOW,
    )
    .unwrap();
    assert_eq!(received.events.len(), 1);
}

#[test]
fn replayed_jti_is_a_duplicate_with_no_events() {
    let t = transmitter(SigningAlg::EdDsa);
    let token = t.sign(&set(json!({ format!("{RISC}account-disabled"): {} })));
    let mut cache = JtiCache::new(10);
    let first = receive(
        token.as_bytes(),
        Some(SET_CONTENT_TYPE),
        &t.keys,
        &config(),
        &cache,
        NOW,
    )
    .unwrap();
    assert!(!first.duplicate);
    cache.remember(&first.jti, first.jti_expires_at_secs, NOW);
    let again = receive(
        token.as_bytes(),
        Some(SET_CONTENT_TYPE),
        &t.keys,
        &config(),
        &cache,
        NOW + 1,
    )
    .unwrap();
    assert!(again.duplicate);
    assert!(again.events.is_empty());
    // Past the window the SET itself is refused, so forgetting the jti then is safe.
    assert!(first.jti_expires_at_secs > NOW - 5 + 600);
    assert_eq!(
        receive(
            token.as_bytes(),
            Some(SET_CONTENT_TYPE),
            &t.keys,
            &config(),
            &cache,
            first.jti_expires_at_secs
        ),
        Err(SsfError::Iat)
    );
}

fn code_of(result: Result<Received, SsfError>) -> SsfErrorCode {
    match result {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(e) => {
            // The body is always well-formed JSON with the code.
            let body: Value = serde_json::from_str(&e.to_json()).unwrap();
            assert_eq!(body["err"], e.code().as_str());
            assert!(body["description"].is_string());
            assert_eq!(e.http_status(), 400);
            e.code()
        }
    }
}

#[test]
fn refusals_carry_their_rfc_8935_codes() {
    let t = transmitter(SigningAlg::EdDsa);
    let other = transmitter(SigningAlg::Es256);
    let good = || set(json!({ format!("{RISC}account-disabled"): {} }));
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = good();
        edit(&mut claims);
        t.sign(&claims)
    };
    let header = |h: Value| t.sign_with_header(&h, &good());
    let alg = t.key.alg().name();
    let kid = t.key.kid().to_owned();

    let cases: Vec<(&str, String, SsfErrorCode)> = vec![
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil")),
            SsfErrorCode::InvalidIssuer,
        ),
        (
            "no issuer",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            SsfErrorCode::InvalidIssuer,
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("https://other")),
            SsfErrorCode::InvalidAudience,
        ),
        (
            "audience array without us",
            with(&|c| c["aud"] = json!(["a", "b"])),
            SsfErrorCode::InvalidAudience,
        ),
        (
            "stale iat",
            with(&|c| c["iat"] = json!(NOW - 601)),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "future iat",
            with(&|c| c["iat"] = json!(NOW + 601)),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "no iat",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "no jti",
            with(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "empty jti",
            with(&|c| c["jti"] = json!("")),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "no events",
            with(&|c| {
                c.as_object_mut().unwrap().remove("events");
            }),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "empty events",
            with(&|c| c["events"] = json!({})),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "events not an object",
            with(&|c| c["events"] = json!(["x"])),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "no subject",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub_id");
            }),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "email subject",
            with(&|c| c["sub_id"] = json!({"format": "email", "email": "a@b"})),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "tenant subject",
            with(&|c| {
                c["sub_id"] =
                    json!({"format": "complex", "tenant": {"format": "opaque", "id": "t"}})
            }),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "compliance without status",
            with(&|c| c["events"] = json!({ format!("{CAEP}device-compliance-change"): {} })),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "bad change direction",
            with(
                &|c| c["events"] = json!({ format!("{CAEP}assurance-level-change"): {"change_direction": "sideways"} }),
            ),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "expired exp",
            with(&|c| c["exp"] = json!(NOW - 3600)),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "typ JWT",
            header(json!({"alg": alg, "typ": "JWT", "kid": kid})),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "no typ",
            header(json!({"alg": alg, "kid": kid})),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "typ at+jwt",
            header(json!({"alg": alg, "typ": "at+jwt", "kid": kid})),
            SsfErrorCode::InvalidRequest,
        ),
        (
            "unknown kid",
            header(json!({"alg": alg, "typ": "secevent+jwt", "kid": "nope"})),
            SsfErrorCode::InvalidKey,
        ),
        (
            "signed by another key",
            other.sign_with_header(
                &json!({"alg": "ES256", "typ": "secevent+jwt", "kid": kid}),
                &good(),
            ),
            SsfErrorCode::InvalidKey,
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64::encode(
                    json!({"alg": "none", "typ": "secevent+jwt"})
                        .to_string()
                        .as_bytes()
                ),
                b64::encode(good().to_string().as_bytes())
            ),
            SsfErrorCode::InvalidKey,
        ),
        (
            "HS256",
            header(json!({"alg": "HS256", "typ": "secevent+jwt", "kid": kid})),
            SsfErrorCode::InvalidKey,
        ),
        (
            "not a JWS",
            "not.a.jws".to_owned(),
            SsfErrorCode::InvalidRequest,
        ),
        ("empty body", String::new(), SsfErrorCode::InvalidRequest),
    ];
    for (what, token, want) in cases {
        assert_eq!(code_of(deliver(&t, &token)), want, "{what}");
    }

    let token = t.sign(&good());
    for content_type in [None, Some("application/jwt"), Some("application/json")] {
        let result = receive(
            token.as_bytes(),
            content_type,
            &t.keys,
            &config(),
            &JtiCache::new(1),
            NOW,
        );
        assert_eq!(result, Err(SsfError::ContentType), "{content_type:?}");
    }
    let big = "a".repeat(backstop::limits::SSF_SET_BYTES_MAX + 1);
    assert!(matches!(deliver(&t, &big), Err(SsfError::TooLarge { .. })));
}

#[test]
fn unknown_kid_asks_for_a_jwks_refresh_and_the_error_body_does_not_echo_it() {
    let t = transmitter(SigningAlg::EdDsa);
    let token = t.sign_with_header(
        &json!({"alg": "EdDSA", "typ": "secevent+jwt", "kid": "<script>kid-from-set"}),
        &set(json!({ format!("{RISC}account-disabled"): {} })),
    );
    let err = deliver(&t, &token).unwrap_err();
    assert!(err.is_unknown_kid());
    assert!(!err.to_json().contains("kid-from-set"), "{}", err.to_json());
    expect_test::expect![[
        r#"{"description":"SET signature or key rejected","err":"invalid_key"}"#
    ]]
    .assert_eq(&err.to_json());
}
