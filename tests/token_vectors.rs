//! Published test vectors: RFC 8037 A.4 (EdDSA JWS byte for byte), RFC 7638 §3.1 thumbprint,
//! RFC 7515 A.5 (`alg: none`, refused), A.2 (RS256) and A.3 (ES256) examples, Wycheproof Ed25519.

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
use backstop::token::alg::Alg;
use backstop::token::jwk::PublicKey;
use backstop::token::jwks::{KeySet, verify_with};
use backstop::token::jws::{self, JwsError, JwtPolicy, TypRule};
use backstop::token::sign::Ed25519Backend;
use support::*;

const RFC8037_A4: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

#[test]
fn rfc8037_a4_eddsa_jws_reproduced_byte_for_byte_by_both_backends() {
    let key = rfc8037_key();
    assert_eq!(
        key.public_jwk().key,
        PublicKey::Ed25519 {
            x: backstop::token::b64::decode_array(
                b"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "x"
            )
            .unwrap()
        }
    );
    for backend in [Ed25519Backend::AwsLc, Ed25519Backend::Dalek] {
        let s = key.signer(backend).unwrap();
        assert_eq!(
            sign_raw(&*s, r#"{"alg":"EdDSA"}"#, "Example of Ed25519 signing"),
            RFC8037_A4,
            "{backend:?}"
        );
    }
}

#[test]
fn rfc8037_a5_eddsa_jws_verifies_and_a_flipped_bit_does_not() {
    let keys = KeySet::from_ours(&[rfc8037_key().public_jwk().clone()]).unwrap();
    let jws = jws::parse_compact(RFC8037_A4.as_bytes(), limits::JWS_COMPACT_BYTES_MAX).unwrap();
    assert_eq!(jws.header.alg, Alg::EdDsa);
    let entry = jws::select_key(&keys, &jws.header).unwrap();
    assert!(entry.verify(Alg::EdDsa, jws.signing_input, &jws.signature));
    let mut bad = jws.signature.clone();
    bad[0] ^= 1;
    assert!(!entry.verify(Alg::EdDsa, jws.signing_input, &bad));
}

#[test]
fn rfc7638_thumbprint_example() {
    let jwk: serde_json::Value = serde_json::from_str(
        r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#,
    )
    .unwrap();
    let key = PublicKey::from_jwk(jwk.as_object().unwrap()).unwrap();
    assert_eq!(
        key.thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn rfc7515_a5_unsecured_jws_is_refused() {
    let token = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";
    assert!(matches!(
        jws::parse_compact(token.as_bytes(), limits::JWS_COMPACT_BYTES_MAX),
        Err(JwsError::AlgNone)
    ));
    let keys = KeySet::from_ours(&[rfc8037_key().public_jwk().clone()]).unwrap();
    let policy = JwtPolicy {
        typ: TypRule::JwtOrAbsent,
        algs: &[Alg::EdDsa, Alg::Es256, Alg::Rs256, Alg::Ps256],
        leeway_secs: 0,
        require_exp: true,
        issuer: None,
        audience: None,
    };
    assert!(matches!(
        jws::verify_jwt(token.as_bytes(), &keys, &policy, 1_300_000_000),
        Err(JwsError::AlgNone)
    ));
}

#[test]
fn rfc7515_a3_es256_example_verifies() {
    // RFC 7515 Appendix A.3: the P-256 key and JWS from the RFC.
    let jwk: serde_json::Value = serde_json::from_str(
        r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
    )
    .unwrap();
    let key = PublicKey::from_jwk(jwk.as_object().unwrap()).unwrap();
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    let jws = jws::parse_compact(token.as_bytes(), limits::JWS_COMPACT_BYTES_MAX).unwrap();
    assert!(verify_with(
        &key,
        Alg::Es256,
        jws.signing_input,
        &jws.signature
    ));
    assert!(!verify_with(
        &key,
        Alg::Es256,
        b"other input",
        &jws.signature
    ));
}

#[test]
fn wycheproof_ed25519_verification_cases() {
    use wycheproof::TestResult;
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let mut checked = 0;
    for group in &set.test_groups {
        let x: [u8; 32] = group.key.pk.as_ref().try_into().unwrap();
        let key = PublicKey::Ed25519 { x };
        for t in &group.tests {
            let ok = verify_with(&key, Alg::EdDsa, &t.msg, &t.sig);
            match t.result {
                TestResult::Valid => assert!(ok, "tc {} ({}) should verify", t.tc_id, t.comment),
                TestResult::Invalid => assert!(!ok, "tc {} ({}) should fail", t.tc_id, t.comment),
                TestResult::Acceptable => {}
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} cases");
}

#[test]
fn rfc7515_a2_rs256_example_verifies_and_its_exp_is_enforced() {
    // RFC 7515 Appendix A.2: the RSA public key and JWS from the RFC.
    let n = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    let doc = format!(r#"{{"keys":[{{"kty":"RSA","n":"{n}","e":"AQAB"}}]}}"#);
    let (keys, skipped) = KeySet::parse(doc.as_bytes()).unwrap();
    assert!(skipped.is_empty());
    let policy = JwtPolicy {
        typ: TypRule::JwtOrAbsent,
        algs: &[Alg::Rs256],
        leeway_secs: 0,
        require_exp: true,
        issuer: Some("joe"),
        audience: None,
    };
    let v = jws::verify_jwt(token.as_bytes(), &keys, &policy, 1_300_819_379).unwrap();
    assert_eq!(v.claims["http://example.com/is_root"], true);
    assert!(matches!(
        jws::verify_jwt(token.as_bytes(), &keys, &policy, 1_300_819_380),
        Err(JwsError::Expired {
            exp_secs: 1_300_819_380,
            ..
        })
    ));
    // As PS256 the same bytes do not verify (and the header says RS256 anyway).
    let p = JwtPolicy {
        algs: &[Alg::Ps256],
        ..policy
    };
    assert!(matches!(
        jws::verify_jwt(token.as_bytes(), &keys, &p, 1_300_819_379),
        Err(JwsError::AlgNotAllowed { alg: "RS256" })
    ));
}
