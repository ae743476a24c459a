//! Fuzz entry points for the token engine: the JWS compact parser with verification, the JWK/JWKS
//! parser, DPoP proof verification, and a template round trip. None may panic; the round trip
//! asserts its own invariant.

use crate::limits;
use crate::token::alg::{Alg, SigningAlg, Typ};
use crate::token::dpop::{DpopPolicy, DpopRequest, ReplayCache, verify_proof};
use crate::token::json;
use crate::token::jwk::{PublicJwk, PublicKey};
use crate::token::jwks::{KeySet, merge};
use crate::token::jws::{self, JwtPolicy, TypRule};
use crate::token::mint::{
    PrimaryTokenShape, TIME_CLAIMS, TemplateMeta, TemplateRef, build_template,
};

/// RFC 8037 Appendix A's Ed25519 public key.
pub(crate) fn rfc8037_public_key() -> PublicKey {
    let x = [
        0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07,
        0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07,
        0x51, 0x1a,
    ];
    PublicKey::Ed25519 { x }
}

/// RFC 8037's public test key, so fuzzed tokens can reach signature verification.
fn keys() -> KeySet {
    KeySet::from_ours(&[PublicJwk::ours(rfc8037_public_key(), Alg::EdDsa)]).unwrap_or_default()
}

/// JWS compact parsing, then full JWT verification against a one-key set.
pub fn jws_compact(data: &[u8]) {
    let _ = jws::parse_compact(data, limits::JWS_COMPACT_BYTES_MAX);
    let policy = JwtPolicy {
        typ: TypRule::JwtOrAbsent,
        algs: &[Alg::EdDsa, Alg::Es256, Alg::Rs256, Alg::Ps256],
        leeway_secs: 60,
        require_exp: false,
        issuer: None,
        audience: None,
    };
    let _ = jws::verify_jwt(data, &keys(), &policy, 1_800_000_000);
}

/// A JWKS document, and the input as a single JWK; a parsed set is merged and the merged
/// document must parse again.
pub fn jwks(data: &[u8]) {
    if let Ok(obj) = json::parse_object(data, "jwk", limits::JOSE_JSON_DEPTH_MAX) {
        let _ = PublicKey::from_jwk(&obj);
    }
    if let Ok((set, _)) = KeySet::parse(data) {
        let merged = merge(&[], &set);
        assert!(
            KeySet::parse(merged.document.as_bytes()).is_ok(),
            "merged JWKS must parse"
        );
    }
}

/// DPoP proof verification with a fresh replay cache.
pub fn dpop_proof(data: &[u8]) {
    let mut cache = ReplayCache::new(16);
    let request = DpopRequest {
        method: "POST",
        url: "https://as.example.com/token",
        access_token: None,
        nonce: None,
    };
    let _ = verify_proof(
        data,
        &request,
        &DpopPolicy::default(),
        &mut cache,
        1_800_000_000,
    );
}

/// Template round trip: whatever `build_template` accepts, the stored form validates, holds no
/// time claim, and its metadata survives encoding.
pub fn template(data: &[u8]) {
    let shape = PrimaryTokenShape {
        typ: Some(Typ::AtJwt),
        alg: SigningAlg::EdDsa,
    };
    if let Ok(t) = build_template(data, shape, 1_800_000_000) {
        assert!(
            TemplateRef::validated(&t.claims, t.meta).is_ok(),
            "built template must validate"
        );
        let obj = json::parse_object(&t.claims, "t", limits::JOSE_JSON_DEPTH_MAX);
        assert!(obj.is_ok_and(|o| TIME_CLAIMS.iter().all(|c| !o.contains_key(*c))));
        assert_eq!(TemplateMeta::from_bytes(&t.meta.to_bytes()), Ok(t.meta));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry points run on a few seeds in every `cargo test`, so a broken one is caught
    /// before anyone runs the fuzzer.
    #[test]
    fn entry_points_run_on_seeds() {
        let seeds: [&[u8]; 7] = [
            b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
            br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a"}]}"#,
            br#"{"iss":"x","iat":1,"exp":2,"a":{"b":[1,2,{"c":"\"}"}]},"jti":"q"}"#,
            br#"{"a" : 1 , "iat" : 5 }"#,
            b"...",
            b"",
            b"\xff\xfe",
        ];
        for s in seeds {
            jws_compact(s);
            jwks(s);
            dpop_proof(s);
            template(s);
        }
    }
}
