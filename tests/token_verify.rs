//! Verification of tokens from outside: what must be accepted, and every refusal the issue lists
//! (alg none, HS256 with an RSA key, wrong kid, expired, not yet valid, oversized, bad base64,
//! duplicate JSON keys) plus the RFC 8725 hazards around them.

// A test crate: a failed unwrap is a failed test with a line number.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

/// One refusal case: name, input, (rule,) and a predicate on the error it must produce.
type Case = (&'static str, String, TypRule, fn(&JwsError) -> bool);

#[path = "fixtures/token/support.rs"]
mod support;

use backstop::limits;
use backstop::token::alg::{Alg, SigningAlg, Typ};
use backstop::token::b64;
use backstop::token::json::JsonError;
use backstop::token::jwks::KeySet;
use backstop::token::jws::{JwsError, JwtPolicy, TypRule, verify_jwt};
use backstop::token::sign::SigningKey;
use support::*;

const NOW: u64 = 1_800_000_000;
const ALL: &[Alg] = &[Alg::EdDsa, Alg::Es256, Alg::Rs256, Alg::Ps256];

fn policy(typ: TypRule) -> JwtPolicy<'static> {
    JwtPolicy {
        typ,
        algs: ALL,
        leeway_secs: 60,
        require_exp: true,
        issuer: None,
        audience: None,
    }
}

struct Fixture {
    ed: SigningKey,
    rsa: SigningKey,
    es: SigningKey,
    keys: KeySet,
}

fn fixture() -> Fixture {
    let ed = rfc8037_key();
    let rsa = rsa_fixture_key();
    let es = SigningKey::generate(SigningAlg::Es256).unwrap();
    let keys = KeySet::from_ours(&[
        ed.public_jwk().clone(),
        rsa.public_jwk().clone(),
        es.public_jwk().clone(),
    ])
    .unwrap();
    Fixture { ed, rsa, es, keys }
}

fn header(alg: &str, kid: &str) -> String {
    format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{kid}"}}"#)
}

fn claims(exp: u64) -> String {
    format!(
        r#"{{"iss":"https://idp","sub":"u","exp":{exp},"iat":{}}}"#,
        exp - 3600
    )
}

#[test]
fn good_tokens_of_every_algorithm_verify() {
    let f = fixture();
    for k in [&f.ed, &f.rsa, &f.es] {
        let t = sign_raw(
            &*signer(k),
            &header(k.alg().name(), k.kid()),
            &claims(NOW + 100),
        );
        let v = verify_jwt(t.as_bytes(), &f.keys, &policy(TypRule::JwtOrAbsent), NOW).unwrap();
        assert_eq!(v.claims["sub"], "u");
    }
    // The RFC 9864 name for Ed25519 is accepted too.
    let t = sign_raw(
        &*signer(&f.ed),
        &header("Ed25519", f.ed.kid()),
        &claims(NOW + 100),
    );
    assert!(verify_jwt(t.as_bytes(), &f.keys, &policy(TypRule::JwtOrAbsent), NOW).is_ok());
}

#[test]
fn ps256_primary_tokens_verify() {
    use aws_lc_rs::signature::{RSA_PSS_SHA256, RsaKeyPair};
    let f = fixture();
    let kp = RsaKeyPair::from_pkcs8(f.rsa.pkcs8().expose()).unwrap();
    let mut input = Vec::new();
    b64::encode_into(header("PS256", f.rsa.kid()).as_bytes(), &mut input);
    input.push(b'.');
    b64::encode_into(claims(NOW + 100).as_bytes(), &mut input);
    let mut sig = vec![0; kp.public_modulus_len()];
    kp.sign(
        &RSA_PSS_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        &input,
        &mut sig,
    )
    .unwrap();
    let token = format!(
        "{}.{}",
        String::from_utf8(input).unwrap(),
        b64::encode(&sig)
    );
    // Our own JWK pins RS256, so the same key refuses PS256 (RFC 8725 §3.1: one key, one alg)...
    assert!(matches!(
        verify_jwt(
            token.as_bytes(),
            &f.keys,
            &policy(TypRule::JwtOrAbsent),
            NOW
        ),
        Err(JwsError::KeyMismatch { .. })
    ));
    // ...while a primary's JWK without `alg` serves both RSA algorithms.
    let jwk = f
        .rsa
        .public_jwk()
        .to_json()
        .replace(r#","alg":"RS256""#, "");
    let (primary, skipped) = KeySet::parse(format!(r#"{{"keys":[{jwk}]}}"#).as_bytes()).unwrap();
    assert!(skipped.is_empty());
    verify_jwt(
        token.as_bytes(),
        &primary,
        &policy(TypRule::JwtOrAbsent),
        NOW,
    )
    .unwrap();
}

#[test]
fn refusals() {
    let f = fixture();
    let ed = signer(&f.ed);
    let good = sign_raw(&*ed, &header("EdDSA", f.ed.kid()), &claims(NOW + 100));
    let hs256_with_rsa_key = {
        // The classic confusion: HMAC keyed with the RSA public key's bytes.
        use aws_lc_rs::hmac;
        let n = match &f.rsa.public_jwk().key {
            backstop::token::jwk::PublicKey::Rsa { n, .. } => n.clone(),
            _ => unreachable!(),
        };
        let mut input = Vec::new();
        b64::encode_into(header("HS256", f.rsa.kid()).as_bytes(), &mut input);
        input.push(b'.');
        b64::encode_into(claims(NOW + 100).as_bytes(), &mut input);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &n), &input);
        format!(
            "{}.{}",
            String::from_utf8(input).unwrap(),
            b64::encode(tag.as_ref())
        )
    };
    let mut tampered = good.clone().into_bytes();
    let dot = good.find('.').unwrap();
    tampered[dot + 2] = if tampered[dot + 2] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let oversized = sign_raw(
        &*ed,
        &header("EdDSA", f.ed.kid()),
        &format!(
            r#"{{"exp":{},"pad":"{}"}}"#,
            NOW + 100,
            "x".repeat(limits::JWS_COMPACT_BYTES_MAX)
        ),
    );
    let deep = format!(
        r#"{{"exp":{},"a":{}{}}}"#,
        NOW + 100,
        "[".repeat(40),
        "]".repeat(40)
    );
    let padded = format!("{}=", good);

    let cases: Vec<Case> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64::encode(br#"{"alg":"none"}"#),
                b64::encode(claims(NOW + 100).as_bytes())
            ),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::AlgNone),
        ),
        (
            "HS256 with an RSA key",
            hs256_with_rsa_key,
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::UnsupportedAlg { alg } if alg == "HS256"),
        ),
        (
            "unknown kid",
            sign_raw(
                &*ed,
                &header("EdDSA", "not-a-kid-we-know"),
                &claims(NOW + 100),
            ),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::UnknownKid { .. }),
        ),
        (
            "RSA alg naming an Ed25519 kid",
            sign_raw(&*ed, &header("RS256", f.ed.kid()), &claims(NOW + 100)),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::KeyMismatch { .. }),
        ),
        (
            "expired beyond leeway",
            sign_raw(&*ed, &header("EdDSA", f.ed.kid()), &claims(NOW - 61)),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Expired { .. }),
        ),
        (
            "not yet valid",
            sign_raw(
                &*ed,
                &header("EdDSA", f.ed.kid()),
                &format!(r#"{{"exp":{},"nbf":{}}}"#, NOW + 900, NOW + 300),
            ),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::NotYetValid { .. }),
        ),
        (
            "no exp",
            sign_raw(&*ed, &header("EdDSA", f.ed.kid()), r#"{"sub":"u"}"#),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Claim { claim: "exp" }),
        ),
        ("oversized", oversized, TypRule::JwtOrAbsent, |e| {
            matches!(e, JwsError::TooLarge { .. })
        }),
        ("padding", padded, TypRule::JwtOrAbsent, |e| {
            matches!(e, JwsError::Base64(_))
        }),
        (
            "standard alphabet",
            good.replacen('-', "+", 1).replacen('_', "/", 1),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Base64(_) | JwsError::BadSignature),
        ),
        (
            "bad base64 in payload",
            good.replacen('.', ".*", 1),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Base64(_)),
        ),
        (
            "tampered payload",
            String::from_utf8(tampered).unwrap(),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::BadSignature | JwsError::Base64(_)),
        ),
        (
            "duplicate alg in header",
            sign_raw(
                &*ed,
                &format!(r#"{{"alg":"EdDSA","alg":"none","kid":"{}"}}"#, f.ed.kid()),
                &claims(NOW + 100),
            ),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Json(JsonError::DuplicateKey { .. })),
        ),
        (
            "duplicate sub in claims",
            sign_raw(
                &*ed,
                &header("EdDSA", f.ed.kid()),
                &format!(r#"{{"sub":"a","sub":"b","exp":{}}}"#, NOW + 100),
            ),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Json(JsonError::DuplicateKey { .. })),
        ),
        (
            "deep nesting",
            sign_raw(&*ed, &header("EdDSA", f.ed.kid()), &deep),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Json(JsonError::TooDeep { .. })),
        ),
        (
            "four segments",
            format!("{good}.x"),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Segments { segments: 4 }),
        ),
        (
            "JWE shape",
            format!("{good}.x.y"),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Segments { segments: 5 }),
        ),
        (
            "crit extension",
            sign_raw(
                &*ed,
                &format!(
                    r#"{{"alg":"EdDSA","kid":"{}","crit":["exp"],"exp":1}}"#,
                    f.ed.kid()
                ),
                &claims(NOW + 100),
            ),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Crit),
        ),
        (
            "at+jwt where JWT expected",
            sign_raw(
                &*ed,
                &format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#, f.ed.kid()),
                &claims(NOW + 100),
            ),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Typ { .. }),
        ),
        (
            "dpop+jwt where at+jwt expected",
            sign_raw(
                &*ed,
                &format!(
                    r#"{{"alg":"EdDSA","typ":"dpop+jwt","kid":"{}"}}"#,
                    f.ed.kid()
                ),
                &claims(NOW + 100),
            ),
            TypRule::Exactly(Typ::AtJwt),
            |e| matches!(e, JwsError::Typ { .. }),
        ),
        (
            "JWT where secevent+jwt expected",
            good.clone(),
            TypRule::Exactly(Typ::SeceventJwt),
            |e| matches!(e, JwsError::Typ { .. }),
        ),
        (
            "unencoded payload (b64: false)",
            sign_raw(
                &*ed,
                &format!(r#"{{"alg":"EdDSA","kid":"{}","b64":false}}"#, f.ed.kid()),
                &claims(NOW + 100),
            ),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::Crit),
        ),
        (
            "oversized header",
            sign_raw(
                &*ed,
                &format!(
                    r#"{{"alg":"EdDSA","kid":"{}","x":"{}"}}"#,
                    f.ed.kid(),
                    "h".repeat(limits::JOSE_HEADER_BYTES_MAX)
                ),
                &claims(NOW + 100),
            ),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::HeaderTooLarge { .. }),
        ),
        (
            "kid of another type (non-string)",
            sign_raw(&*ed, r#"{"alg":"EdDSA","kid":7}"#, &claims(NOW + 100)),
            TypRule::JwtOrAbsent,
            |e| matches!(e, JwsError::HeaderMember { member: "kid" }),
        ),
    ];
    for (name, token, typ, expected) in cases {
        let got = verify_jwt(token.as_bytes(), &f.keys, &policy(typ), NOW);
        match got {
            Err(e) => assert!(expected(&e), "{name}: unexpected error {e:?}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }
    // Within the leeway an expired token is still accepted (skew), and the good one is.
    let just_expired = sign_raw(&*ed, &header("EdDSA", f.ed.kid()), &claims(NOW - 30));
    assert!(
        verify_jwt(
            just_expired.as_bytes(),
            &f.keys,
            &policy(TypRule::JwtOrAbsent),
            NOW
        )
        .is_ok()
    );
    assert!(verify_jwt(good.as_bytes(), &f.keys, &policy(TypRule::JwtOrAbsent), NOW).is_ok());
}

#[test]
fn an_algorithm_the_caller_does_not_allow_is_refused() {
    let f = fixture();
    let t = sign_raw(
        &*signer(&f.rsa),
        &header("RS256", f.rsa.kid()),
        &claims(NOW + 100),
    );
    let p = JwtPolicy {
        algs: &[Alg::EdDsa],
        ..policy(TypRule::JwtOrAbsent)
    };
    assert_eq!(
        verify_jwt(t.as_bytes(), &f.keys, &p, NOW).unwrap_err(),
        JwsError::AlgNotAllowed { alg: "RS256" }
    );
}

#[test]
fn without_kid_only_a_single_fitting_key_is_used() {
    let f = fixture();
    let t = sign_raw(&*signer(&f.ed), r#"{"alg":"EdDSA"}"#, &claims(NOW + 100));
    assert!(verify_jwt(t.as_bytes(), &f.keys, &policy(TypRule::JwtOrAbsent), NOW).is_ok());
    let two_ed = KeySet::from_ours(&[
        f.ed.public_jwk().clone(),
        SigningKey::generate(SigningAlg::EdDsa)
            .unwrap()
            .public_jwk()
            .clone(),
    ])
    .unwrap();
    assert_eq!(
        verify_jwt(t.as_bytes(), &two_ed, &policy(TypRule::JwtOrAbsent), NOW).unwrap_err(),
        JwsError::NoKid { alg: "EdDSA" }
    );
}

#[test]
fn issuer_and_audience_are_checked_when_asked() {
    let f = fixture();
    let t = sign_raw(
        &*signer(&f.ed),
        &header("EdDSA", f.ed.kid()),
        &format!(
            r#"{{"iss":"https://idp","aud":["a","b"],"exp":{}}}"#,
            NOW + 100
        ),
    );
    let p = |iss, aud| JwtPolicy {
        issuer: iss,
        audience: aud,
        ..policy(TypRule::JwtOrAbsent)
    };
    assert!(
        verify_jwt(
            t.as_bytes(),
            &f.keys,
            &p(Some("https://idp"), Some("b")),
            NOW
        )
        .is_ok()
    );
    assert_eq!(
        verify_jwt(t.as_bytes(), &f.keys, &p(Some("https://other"), None), NOW).unwrap_err(),
        JwsError::Issuer
    );
    assert_eq!(
        verify_jwt(t.as_bytes(), &f.keys, &p(None, Some("c")), NOW).unwrap_err(),
        JwsError::Audience
    );
}
