//! DPoP proofs (RFC 9449): accepted when right; refused when replayed, stale, from the future,
//! for another URL or method, with a wrong `ath`, the wrong `typ` or algorithm, or a private key.

// A test crate: a failed unwrap is a failed test with a line number.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

/// One refusal case: name, input, (rule,) and a predicate on the error it must produce.
type Case = (&'static str, String, fn(&DpopError) -> bool);

#[path = "fixtures/token/support.rs"]
mod support;

use aws_lc_rs::digest;
use backstop::token::alg::SigningAlg;
use backstop::token::b64;
use backstop::token::dpop::{DpopError, DpopPolicy, DpopRequest, ReplayCache, verify_proof};
use backstop::token::jws::JwsError;
use backstop::token::sign::SigningKey;
use support::*;

const NOW: u64 = 1_800_000_000;
const URL: &str = "https://as.example.com/oauth2/token";

fn proof_with(key: &SigningKey, header_extra: &str, claims: &str) -> String {
    let h = format!(
        r#"{{"typ":"dpop+jwt","alg":"{}","jwk":{}{header_extra}}}"#,
        key.alg().name(),
        key.public_jwk().key.canonical_json()
    );
    sign_raw(&*signer(key), &h, claims)
}

fn claims(jti: &str, htm: &str, htu: &str, iat: u64) -> String {
    format!(r#"{{"jti":"{jti}","htm":"{htm}","htu":"{htu}","iat":{iat}}}"#)
}

fn req(access_token: Option<&'static [u8]>) -> DpopRequest<'static> {
    DpopRequest {
        method: "POST",
        url: URL,
        access_token,
        nonce: None,
    }
}

#[test]
fn valid_proofs_give_the_key_thumbprint_for_es256_and_eddsa() {
    for alg in [SigningAlg::Es256, SigningAlg::EdDsa] {
        let k = SigningKey::generate(alg).unwrap();
        let mut cache = ReplayCache::new(1024);
        // htu compared after normalization: case, default port, query.
        let p = proof_with(
            &k,
            "",
            &claims(
                "j1",
                "POST",
                "HTTPS://AS.example.com:443/oauth2/token?x",
                NOW - 5,
            ),
        );
        let v = verify_proof(
            p.as_bytes(),
            &req(None),
            &DpopPolicy::default(),
            &mut cache,
            NOW,
        )
        .unwrap();
        assert_eq!(v.jkt, k.public_jwk().key.thumbprint());
        assert_eq!(v.iat_secs, NOW - 5);
    }
}

#[test]
fn ath_binds_the_access_token() {
    let k = SigningKey::generate(SigningAlg::Es256).unwrap();
    let token: &'static [u8] = b"Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
    let ath = b64::encode(digest::digest(&digest::SHA256, token).as_ref());
    let mut cache = ReplayCache::new(1024);
    let with_ath = |jti: &str, ath: &str| {
        proof_with(
            &k,
            "",
            &format!(r#"{{"jti":"{jti}","htm":"POST","htu":"{URL}","iat":{NOW},"ath":"{ath}"}}"#),
        )
    };
    let pol = DpopPolicy::default();
    assert!(
        verify_proof(
            with_ath("a", &ath).as_bytes(),
            &req(Some(token)),
            &pol,
            &mut cache,
            NOW
        )
        .is_ok()
    );
    let wrong = b64::encode(&[0u8; 32]);
    assert_eq!(
        verify_proof(
            with_ath("b", &wrong).as_bytes(),
            &req(Some(token)),
            &pol,
            &mut cache,
            NOW
        ),
        Err(DpopError::Ath)
    );
    let no_ath = proof_with(&k, "", &claims("c", "POST", URL, NOW));
    assert_eq!(
        verify_proof(no_ath.as_bytes(), &req(Some(token)), &pol, &mut cache, NOW),
        Err(DpopError::Ath)
    );
}

#[test]
fn refusals() {
    let k = SigningKey::generate(SigningAlg::Es256).unwrap();
    let rsa = rsa_fixture_key();
    let pol = DpopPolicy::default();
    let age = pol.proof_age_secs;
    let cases: Vec<Case> = vec![
        (
            "stale",
            proof_with(&k, "", &claims("s", "POST", URL, NOW - age - 1)),
            |e| matches!(e, DpopError::Stale { .. }),
        ),
        (
            "future",
            proof_with(&k, "", &claims("f", "POST", URL, NOW + 60)),
            |e| matches!(e, DpopError::Future { .. }),
        ),
        (
            "other URL",
            proof_with(
                &k,
                "",
                &claims("u", "POST", "https://as.example.com/other", NOW),
            ),
            |e| *e == DpopError::Url,
        ),
        (
            "other host",
            proof_with(
                &k,
                "",
                &claims("h", "POST", "https://evil.example.com/oauth2/token", NOW),
            ),
            |e| *e == DpopError::Url,
        ),
        (
            "other method",
            proof_with(&k, "", &claims("m", "GET", URL, NOW)),
            |e| *e == DpopError::Method,
        ),
        (
            "lower-case method",
            proof_with(&k, "", &claims("l", "post", URL, NOW)),
            |e| *e == DpopError::Method,
        ),
        (
            "typ JWT",
            sign_raw(
                &*signer(&k),
                &format!(
                    r#"{{"typ":"JWT","alg":"ES256","jwk":{}}}"#,
                    k.public_jwk().key.canonical_json()
                ),
                &claims("t", "POST", URL, NOW),
            ),
            |e| matches!(e, DpopError::Typ { .. }),
        ),
        (
            "RS256",
            proof_with(&rsa, "", &claims("r", "POST", URL, NOW)),
            |e| *e == DpopError::Alg { alg: "RS256" },
        ),
        (
            "no jwk",
            sign_raw(
                &*signer(&k),
                r#"{"typ":"dpop+jwt","alg":"ES256"}"#,
                &claims("n", "POST", URL, NOW),
            ),
            |e| *e == DpopError::Jwk,
        ),
        (
            "private key in jwk",
            sign_raw(
                &*signer(&k),
                r#"{"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}}"#,
                &claims("d", "POST", URL, NOW),
            ),
            |e| matches!(e, DpopError::Jws(JwsError::Jwk(_))),
        ),
        (
            "signed by another key than the embedded one",
            sign_raw(
                &*signer(&SigningKey::generate(SigningAlg::Es256).unwrap()),
                &format!(
                    r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{}}}"#,
                    k.public_jwk().key.canonical_json()
                ),
                &claims("o", "POST", URL, NOW),
            ),
            |e| *e == DpopError::BadSignature,
        ),
        (
            "missing jti",
            proof_with(
                &k,
                "",
                &format!(r#"{{"htm":"POST","htu":"{URL}","iat":{NOW}}}"#),
            ),
            |e| *e == DpopError::Claim { claim: "jti" },
        ),
        (
            "oversized",
            proof_with(
                &k,
                "",
                &format!(
                    r#"{{"jti":"{}","htm":"POST","htu":"{URL}","iat":{NOW}}}"#,
                    "j".repeat(4096)
                ),
            ),
            |e| matches!(e, DpopError::Jws(JwsError::TooLarge { .. })),
        ),
    ];
    for (name, proof, expected) in cases {
        let mut cache = ReplayCache::new(1024);
        match verify_proof(proof.as_bytes(), &req(None), &pol, &mut cache, NOW) {
            Err(e) => assert!(expected(&e), "{name}: unexpected {e:?}"),
            Ok(_) => panic!("{name}: accepted"),
        }
        assert!(
            cache.is_empty(),
            "{name}: a refused proof must not be remembered"
        );
    }
}

#[test]
fn a_replayed_proof_is_refused_until_it_would_be_stale_anyway() {
    let k = SigningKey::generate(SigningAlg::EdDsa).unwrap();
    let pol = DpopPolicy::default();
    let mut cache = ReplayCache::new(1024);
    let p = proof_with(&k, "", &claims("once", "POST", URL, NOW));
    assert!(verify_proof(p.as_bytes(), &req(None), &pol, &mut cache, NOW).is_ok());
    assert_eq!(
        verify_proof(p.as_bytes(), &req(None), &pol, &mut cache, NOW + 1),
        Err(DpopError::Replayed)
    );
    // Past the window the same proof is refused as stale, and the cache has forgotten it.
    assert!(matches!(
        verify_proof(
            p.as_bytes(),
            &req(None),
            &pol,
            &mut cache,
            NOW + pol.proof_age_secs + 1
        ),
        Err(DpopError::Stale { .. })
    ));
    let fresh = proof_with(&k, "", &claims("twice", "POST", URL, NOW + 1000));
    assert!(verify_proof(fresh.as_bytes(), &req(None), &pol, &mut cache, NOW + 1000).is_ok());
    assert_eq!(cache.len(), 1);
}

#[test]
fn a_server_nonce_must_be_echoed() {
    let k = SigningKey::generate(SigningAlg::Es256).unwrap();
    let pol = DpopPolicy::default();
    let mut cache = ReplayCache::new(16);
    let with_nonce = |jti: &str, nonce: &str| {
        proof_with(
            &k,
            "",
            &format!(
                r#"{{"jti":"{jti}","htm":"POST","htu":"{URL}","iat":{NOW},"nonce":"{nonce}"}}"#
            ),
        )
    };
    let request = DpopRequest {
        nonce: Some("eyJ7S_zG.eyJH0-Z.HX4w-7v"),
        ..req(None)
    };
    assert!(
        verify_proof(
            with_nonce("a", "eyJ7S_zG.eyJH0-Z.HX4w-7v").as_bytes(),
            &request,
            &pol,
            &mut cache,
            NOW
        )
        .is_ok()
    );
    assert_eq!(
        verify_proof(
            with_nonce("b", "old-nonce").as_bytes(),
            &request,
            &pol,
            &mut cache,
            NOW
        ),
        Err(DpopError::Nonce)
    );
    let without = proof_with(&k, "", &claims("c", "POST", URL, NOW));
    assert_eq!(
        verify_proof(without.as_bytes(), &request, &pol, &mut cache, NOW),
        Err(DpopError::Nonce)
    );
}
