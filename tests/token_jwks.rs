//! JWKS: our published document (snapshot), merging with a primary's (dedupe by kid, refuse a
//! collision with ours), parsing limits, and the remote cache state machine.

// A test crate: a failed unwrap is a failed test with a line number.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fixtures/token/support.rs"]
mod support;

use backstop::limits;
use backstop::token::jwks::{CacheAction, CachePolicy, JwksError, KeySet, RemoteJwks, merge};
use expect_test::expect;
use support::*;

const PRIMARY: &str = r#"{"keys":[
 {"kty":"RSA","kid":"primary-1","use":"sig","alg":"RS256","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","x5t":"kept"},
 {"kty":"RSA","kid":"primary-1","use":"sig","alg":"RS256","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"},
 {"kty":"OKP","crv":"Ed25519","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
 {"kty":"RSA","kid":"enc-1","use":"enc","n":"AQAB","e":"AQAB"},
 {"kty":"oct","kid":"hmac","k":"c2VjcmV0"}
]}"#;

#[test]
fn our_jwks_document_snapshot() {
    let ours = [
        rfc8037_key().public_jwk().clone(),
        rsa_fixture_key().public_jwk().clone(),
    ];
    let merged = merge(&ours, &KeySet::default());
    expect![[r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"sig","alg":"EdDSA","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"},{"kty":"RSA","n":"t3G4mJWX9dsJOo6-T-cg4rOUwQuNaQKCbrBuEzi1I-_vNLPb-kpkV9QXF4SrpCkJ7GTkSieHGR0K0XpvPr-mAlBzkfb3r61T8wQYzbcHSISsuOWW-XplJJag34P9u4oijEwysiUJVONjc0FjGrKZQIk0JIlsfe8HJYEAMkeHoJe1MxCu_PjfuQbgKH04AZi3RmQFrnzm3w93_OsKK0D7FKvc71wixFSMqWZwXxuo-py63ODCLDH95rEhec3WwbyImJNoOXyt-BlJcxwlp-LlbOObEvopGdoOqaqlL2LEccIFRtXvaCML9cFW-fNaw9LxSLTo45iNk7Nzr9enD9IRkQ","e":"AQAB","use":"sig","alg":"RS256","kid":"H21GXiSPF1EHAfNcAtLbsvkR12S9YOFpI_y_ig4JlLg"}]}"#]]
    .assert_eq(&merged.document);
}

#[test]
fn merge_dedupes_by_kid_skips_unusable_keys_and_refuses_a_primary_key_under_our_kid() {
    let (primary, skipped) = KeySet::parse(PRIMARY.as_bytes()).unwrap();
    // The duplicate primary-1 (same key) is kept once; the enc key and the HMAC key are skipped.
    assert_eq!(primary.len(), 2);
    let reasons: Vec<String> = skipped
        .iter()
        .map(|s| format!("{:?}: {}", s.kid, s.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            r#"Some("enc-1"): unsupported JWK use "\"enc\"""#,
            r#"Some("hmac"): JWK carries private member "k"; only public keys are accepted"#
        ]
    );
    // Our RFC 8037 key has the same kid as the primary's third key: the primary's is refused.
    let ours = [rfc8037_key().public_jwk().clone()];
    let merged = merge(&ours, &primary);
    assert_eq!(
        merged.refused_kids,
        ["kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"]
    );
    let (all, _) = KeySet::parse(merged.document.as_bytes()).unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.find("primary-1").is_some());
    // Unknown members of the primary's keys are published unchanged.
    assert!(
        merged.document.contains(r#""x5t":"kept""#),
        "{}",
        merged.document
    );
}

#[test]
fn two_different_keys_under_one_kid_refuse_the_document() {
    let doc = r#"{"keys":[
      {"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
      {"kty":"OKP","crv":"Ed25519","kid":"k","x":"PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw"}]}"#;
    assert_eq!(
        KeySet::parse(doc.as_bytes()).unwrap_err(),
        JwksError::DuplicateKid { kid: "k".into() }
    );
}

#[test]
fn oversized_and_overfull_documents_are_refused() {
    let big = vec![b' '; limits::JWKS_DOCUMENT_BYTES_MAX + 1];
    assert!(matches!(
        KeySet::parse(&big),
        Err(JwksError::TooLarge { .. })
    ));
    let key = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    let many = format!(
        r#"{{"keys":[{}]}}"#,
        vec![key; limits::JWKS_KEYS_MAX + 1].join(",")
    );
    assert!(matches!(
        KeySet::parse(many.as_bytes()),
        Err(JwksError::TooManyKeys { .. })
    ));
    assert_eq!(
        KeySet::parse(br#"{"kys":[]}"#).unwrap_err(),
        JwksError::NoKeys
    );
}

#[test]
fn remote_cache_refreshes_on_schedule_rate_limits_unknown_kids_and_serves_stale_in_an_outage() {
    let policy = CachePolicy {
        refresh_secs: 3600,
        unknown_kid_refresh_secs: 60,
        failure_backoff_secs_max: 300,
    };
    let mut c = RemoteJwks::new(policy);
    assert_eq!(c.poll(0), CacheAction::Fetch);
    // One fetch at a time.
    assert_eq!(c.poll(1), CacheAction::Wait);
    c.on_fetched(PRIMARY.as_bytes(), 1).unwrap();
    assert_eq!(c.keys().unwrap().len(), 2);
    assert_eq!(c.poll(100), CacheAction::Wait);
    // Unknown kid: one refresh, then none for 60 s however many tokens ask.
    assert_eq!(c.on_unknown_kid(200), CacheAction::Fetch);
    c.on_fetched(PRIMARY.as_bytes(), 200).unwrap();
    assert_eq!(c.on_unknown_kid(201), CacheAction::Wait);
    assert_eq!(c.on_unknown_kid(259), CacheAction::Wait);
    assert_eq!(c.on_unknown_kid(260), CacheAction::Fetch);
    // The primary is down: failures back off (1, 2, 4 s ...) and the cached set keeps serving.
    c.on_fetch_failed(260);
    assert_eq!(c.on_unknown_kid(400), CacheAction::Fetch);
    c.on_fetch_failed(400);
    assert_eq!(
        c.poll(401),
        CacheAction::Wait,
        "backoff 2 s after two failures"
    );
    assert_eq!(c.poll(3800), CacheAction::Fetch);
    assert!(c.on_fetched(b"<html>502</html>", 3800).is_err());
    assert_eq!(
        c.keys().unwrap().len(),
        2,
        "a garbage answer keeps the old set"
    );
    assert_eq!(c.age_secs(3800), Some(3600));
}

#[test]
fn an_ec_key_off_the_curve_is_skipped_not_trusted() {
    // x and y of RFC 7515 A.3's key with the last byte of y changed: not a point on P-256
    // (invalid-curve attacks rely on verifiers accepting such points).
    let doc = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"bad","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a4"}]}"#;
    let (set, skipped) = KeySet::parse(doc.as_bytes()).unwrap();
    assert!(set.is_empty());
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].kid.as_deref(), Some("bad"));
}

#[test]
fn a_primary_jwk_pinned_to_the_ed25519_name_verifies_eddsa_tokens() {
    use backstop::token::alg::Alg;
    let doc = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"Ed25519","kid":"p","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    let (set, _) = KeySet::parse(doc.as_bytes()).unwrap();
    let e = set.find("p").unwrap();
    assert!(e.accepts(Alg::EdDsa));
    assert!(!e.accepts(Alg::Es256));
}

#[test]
fn merging_with_a_set_built_from_public_jwks_keeps_its_keys() {
    let other = KeySet::from_ours(&[rsa_fixture_key().public_jwk().clone()]).unwrap();
    let merged = merge(&[rfc8037_key().public_jwk().clone()], &other);
    let (set, skipped) = KeySet::parse(merged.document.as_bytes()).unwrap();
    assert!(skipped.is_empty());
    assert_eq!(set.len(), 2);
}
