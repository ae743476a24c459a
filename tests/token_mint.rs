//! Minting: every minted token verifies with an independent JOSE implementation (jsonwebtoken)
//! and with ours, and its claims are exactly the template's plus the fresh time claims.

// A test crate: a failed unwrap is a failed test with a line number.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fixtures/token/support.rs"]
mod support;

use backstop::token::alg::{Alg, SigningAlg, Typ};
use backstop::token::b64;
use backstop::token::jwks::KeySet;
use backstop::token::jws::{self, JwtPolicy, TypRule};
use backstop::token::mint::{Minter, PrimaryTokenShape, build_template};
use backstop::token::sign::Ed25519Backend;
use serde_json::{Value, json};
use support::*;

/// A realistic access token from a primary (15 claims, DPoP-bound), as raw JSON bytes.
pub const PRIMARY_ACCESS_TOKEN_CLAIMS: &str = r#"{"iss":"https://login.example.com/tenant-1/v2.0","sub":"AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ","aud":"api://orders","azp":"7f0c3e0a-6b1d-4b7c-9a2e-1b2c3d4e5f60","iat":1763770000,"nbf":1763770000,"exp":1763773600,"jti":"Hk2aW1dXQ0CcI9dYbCwxAA","scp":"orders.read orders.write","tid":"0e1f2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7","oid":"5b6c7d8e-9f00-4112-8233-445566778899","amr":["pwd","mfa"],"acr":"1","auth_time":1763769000,"cnf":{"jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},"nonce":"n-0S6_WzA2Mj","roles":["Orders.Admin"]}"#;

fn decoded_payload(token: &str) -> Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&b64::decode(p.as_bytes(), "payload").unwrap()).unwrap()
}

#[test]
fn minted_tokens_verify_independently_and_carry_exactly_template_plus_fresh_times() {
    let primary: Value = serde_json::from_str(PRIMARY_ACCESS_TOKEN_CLAIMS).unwrap();
    for alg in SigningAlg::ALL {
        let key = key(alg);
        let shape = PrimaryTokenShape {
            typ: Some(Typ::AtJwt),
            alg,
        };
        let template =
            build_template(PRIMARY_ACCESS_TOKEN_CLAIMS.as_bytes(), shape, 1_763_770_001).unwrap();
        let mut minter = Minter::new(signer(&key));
        let now = 1_800_000_000;
        let mut out = Vec::new();
        let times = minter.mint(template.as_ref(), now, &mut out).unwrap();
        let token = String::from_utf8(out).unwrap();

        let (header, claims) = verify_independently(&token, key.public_jwk());
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(key.kid()));

        let mut expected = primary.clone();
        let o = expected.as_object_mut().unwrap();
        o.insert("iat".into(), json!(now));
        o.insert("nbf".into(), json!(now));
        o.insert("exp".into(), json!(now + 3600));
        o.insert("jti".into(), json!(b64::encode(&times.jti.unwrap())));
        assert_eq!(claims, expected, "{alg:?}");
        assert_eq!(decoded_payload(&token), expected);

        // And our own verifier accepts it, with at+jwt pinned.
        let keys = KeySet::from_ours(&[key.public_jwk().clone()]).unwrap();
        let policy = JwtPolicy {
            typ: TypRule::Exactly(Typ::AtJwt),
            algs: &[alg.alg()],
            leeway_secs: 0,
            require_exp: true,
            issuer: Some("https://login.example.com/tenant-1/v2.0"),
            audience: Some("api://orders"),
        };
        let v = jws::verify_jwt(token.as_bytes(), &keys, &policy, now + 10).unwrap();
        assert_eq!(Value::Object(v.claims), expected);
    }
}

#[test]
fn only_time_claims_the_primary_carried_are_minted() {
    // An ID token without nbf or jti: none are added.
    let id_token = r#"{"iss":"https://idp","sub":"u1","aud":"client","iat":100,"exp":400,"nonce":"abc","auth_time":90}"#;
    let key = key(SigningAlg::EdDsa);
    let t = build_template(
        id_token.as_bytes(),
        PrimaryTokenShape {
            typ: Some(Typ::Jwt),
            alg: SigningAlg::EdDsa,
        },
        0,
    )
    .unwrap();
    let mut out = Vec::new();
    let times = Minter::new(signer(&key))
        .mint(t.as_ref(), 1000, &mut out)
        .unwrap();
    assert_eq!(times.jti, None);
    let token = String::from_utf8(out).unwrap();
    let (_, claims) = verify_independently(&token, key.public_jwk());
    assert_eq!(
        claims,
        json!({"iss":"https://idp","sub":"u1","aud":"client","iat":1000,"exp":1300,"nonce":"abc","auth_time":90})
    );
}

#[test]
fn a_primary_without_typ_gets_a_token_without_typ() {
    let key = key(SigningAlg::Es256);
    let t = build_template(
        br#"{"sub":"s","exp":70,"iat":10}"#,
        PrimaryTokenShape {
            typ: None,
            alg: SigningAlg::Es256,
        },
        0,
    )
    .unwrap();
    let mut out = Vec::new();
    Minter::new(signer(&key))
        .mint(t.as_ref(), 100, &mut out)
        .unwrap();
    let header = b64::decode(out.split(|b| *b == b'.').next().unwrap(), "h").unwrap();
    assert_eq!(
        String::from_utf8(header).unwrap(),
        format!(r#"{{"alg":"ES256","kid":"{}"}}"#, key.kid())
    );
}

#[test]
fn both_ed25519_backends_mint_byte_identical_tokens() {
    let key = rfc8037_key();
    let t = build_template(
        PRIMARY_ACCESS_TOKEN_CLAIMS.as_bytes(),
        PrimaryTokenShape {
            typ: Some(Typ::AtJwt),
            alg: SigningAlg::EdDsa,
        },
        0,
    )
    .unwrap();
    let mut a = Vec::new();
    let mut b = Vec::new();
    let jti = [42u8; 16];
    Minter::new(key.signer(Ed25519Backend::AwsLc).unwrap())
        .mint_with_jti(t.as_ref(), 1_900_000_000, jti, &mut a)
        .unwrap();
    Minter::new(key.signer(Ed25519Backend::Dalek).unwrap())
        .mint_with_jti(t.as_ref(), 1_900_000_000, jti, &mut b)
        .unwrap();
    assert_eq!(a, b);
    // Deterministic: the same inputs give the same token again.
    let mut c = Vec::new();
    Minter::new(key.signer(Ed25519Backend::Dalek).unwrap())
        .mint_with_jti(t.as_ref(), 1_900_000_000, jti, &mut c)
        .unwrap();
    assert_eq!(a, c);
}

#[test]
fn stored_template_round_trips_through_bytes_and_mints_the_same() {
    use backstop::token::mint::{TemplateMeta, TemplateRef};
    let t = build_template(
        PRIMARY_ACCESS_TOKEN_CLAIMS.as_bytes(),
        PrimaryTokenShape {
            typ: Some(Typ::AtJwt),
            alg: SigningAlg::EdDsa,
        },
        0,
    )
    .unwrap();
    let stored_meta = t.meta.to_bytes();
    let stored_claims = t.claims.clone();
    let meta = TemplateMeta::from_bytes(&stored_meta).unwrap();
    let r = TemplateRef::from_stored(&stored_claims, meta).unwrap();
    let key = rfc8037_key();
    let mut m = Minter::new(signer(&key));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    m.mint_with_jti(r, 5, [1; 16], &mut a).unwrap();
    m.mint_with_jti(t.as_ref(), 5, [1; 16], &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(Alg::from_name("EdDSA"), Some(key.public_jwk().alg));
}

#[test]
fn a_primary_token_gives_its_shape_and_template_and_the_backup_token_matches_it() {
    use backstop::limits;
    use backstop::token::jws::parse_compact;
    // The "primary" signs an at+jwt with ES256 and its own key.
    let primary_key = key(SigningAlg::Es256);
    let primary_token = sign_raw(
        &*signer(&primary_key),
        &format!(
            r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#,
            primary_key.kid()
        ),
        PRIMARY_ACCESS_TOKEN_CLAIMS,
    );
    let jws = parse_compact(primary_token.as_bytes(), limits::JWS_COMPACT_BYTES_MAX).unwrap();
    let shape = PrimaryTokenShape::from_header(&jws.header).unwrap();
    assert_eq!(
        shape,
        PrimaryTokenShape {
            typ: Some(Typ::AtJwt),
            alg: SigningAlg::Es256
        }
    );
    let t = build_template(&jws.payload, shape, 0).unwrap();
    let ours = key(SigningAlg::Es256);
    let mut out = Vec::new();
    Minter::new(signer(&ours))
        .mint(t.as_ref(), 1_763_780_000, &mut out)
        .unwrap();
    let (header, claims) =
        verify_independently(std::str::from_utf8(&out).unwrap(), ours.public_jwk());
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let primary: Value = serde_json::from_str(PRIMARY_ACCESS_TOKEN_CLAIMS).unwrap();
    for (k, v) in primary.as_object().unwrap() {
        if !["iat", "nbf", "exp", "jti"].contains(&k.as_str()) {
            assert_eq!(&claims[k], v, "{k}");
        }
    }
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    // PS256 has no signing key type here.
    let ps_token = format!("{}.e30.AA", b64::encode(br#"{"alg":"PS256"}"#));
    let ps = parse_compact(ps_token.as_bytes(), limits::JWS_COMPACT_BYTES_MAX).unwrap();
    assert_eq!(PrimaryTokenShape::from_header(&ps.header), None);
}

#[test]
fn the_dalek_backend_is_verified_independently_too() {
    let key = rfc8037_key();
    let t = build_template(
        PRIMARY_ACCESS_TOKEN_CLAIMS.as_bytes(),
        PrimaryTokenShape {
            typ: Some(Typ::AtJwt),
            alg: SigningAlg::EdDsa,
        },
        0,
    )
    .unwrap();
    let mut out = Vec::new();
    Minter::new(key.signer(Ed25519Backend::Dalek).unwrap())
        .mint(t.as_ref(), 1_900_000_000, &mut out)
        .unwrap();
    let (_, claims) = verify_independently(std::str::from_utf8(&out).unwrap(), key.public_jwk());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(
        claims["cnf"]["jkt"],
        "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    );
}
