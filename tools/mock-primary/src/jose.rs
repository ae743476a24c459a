//! JOSE for the mock: RS256 signing of the tokens it issues, its JWKS, and verification of the
//! ES256 DPoP proofs clients send (RFC 9449), with RFC 7638 thumbprints.
//!
//! Tokens are built as compact JWS by hand over aws-lc-rs, so that tests can verify them with
//! an independent JOSE library (jsonwebtoken) and catch a mistake in either.

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair, RsaKeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use crate::MockError;

/// Longest DPoP proof we look at; real ones are well under 1 KiB.
pub(crate) const DPOP_PROOF_BYTES_MAX: usize = 4096;

/// Longest `jti` accepted in a DPoP proof.
const DPOP_JTI_BYTES_MAX: usize = 256;

/// How far in the future a proof's `iat` may lie (clock skew between client and us).
const DPOP_IAT_FUTURE_SECS_MAX: u64 = 60;

/// base64url without padding, as JOSE uses everywhere.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url decoding: no padding, and the input must be the canonical encoding of
/// what it decodes to (so a thumbprint computed from the string is unique to the key).
pub(crate) fn b64url_decode_canonical(text: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    (URL_SAFE_NO_PAD.encode(&bytes) == text).then_some(bytes)
}

/// SHA-256, base64url-encoded: RFC 7638 thumbprints, PKCE S256, opaque-token digests.
pub(crate) fn sha256_b64url(data: &[u8]) -> String {
    b64url(digest::digest(&digest::SHA256, data).as_ref())
}

/// Random bytes, base64url-encoded: codes, refresh tokens, `jti`s.
pub(crate) fn random_b64url(len: usize) -> Result<String, MockError> {
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| MockError::Crypto("random source failed"))?;
    Ok(b64url(&bytes))
}

/// The mock's RS256 signing key, its `kid` and its public JWK.
pub(crate) struct Signer {
    key: RsaKeyPair,
    kid: String,
    public_jwk: Value,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh RSA 2048 key (fast in release builds, up to seconds in debug ones).
    pub(crate) fn generate() -> Result<Self, MockError> {
        let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| MockError::Crypto("RSA key generation failed"))?;
        Self::from_key(key)
    }

    /// A key from a PEM file's text: PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub(crate) fn from_pem(pem: &str) -> Result<Self, MockError> {
        let (label, der) = pem_body(pem).ok_or(MockError::Key("not a PEM private key"))?;
        let key = match label.as_str() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            _ => {
                return Err(MockError::Key(
                    "PEM label is not PRIVATE KEY or RSA PRIVATE KEY",
                ));
            }
        }
        .map_err(|_| MockError::Key("not an RSA private key aws-lc-rs accepts"))?;
        Self::from_key(key)
    }

    /// A key from PKCS#8 DER bytes.
    pub(crate) fn from_pkcs8_der(der: &[u8]) -> Result<Self, MockError> {
        let key = RsaKeyPair::from_pkcs8(der)
            .map_err(|_| MockError::Key("not an RSA PKCS#8 key aws-lc-rs accepts"))?;
        Self::from_key(key)
    }

    fn from_key(key: RsaKeyPair) -> Result<Self, MockError> {
        if key.public_modulus_len() < 256 {
            return Err(MockError::Key("RSA key shorter than 2048 bits"));
        }
        let public = key.public_key();
        let n = b64url(public.modulus().big_endian_without_leading_zero());
        let e = b64url(public.exponent().big_endian_without_leading_zero());
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let kid = sha256_b64url(format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#).as_bytes());
        let public_jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e,
        });
        Ok(Self {
            key,
            kid,
            public_jwk,
        })
    }

    /// The key id carried in every token header and in the JWKS.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document (`{"keys":[...]}`).
    pub(crate) fn jwks(&self) -> Value {
        json!({ "keys": [self.public_jwk.clone()] })
    }

    /// Signs `claims` as a compact RS256 JWS with the given `typ` (`at+jwt`, `JWT`).
    pub(crate) fn sign(&self, typ: &str, claims: &Value) -> Result<String, MockError> {
        let header = json!({ "alg": "RS256", "typ": typ, "kid": self.kid });
        let header = serde_json::to_vec(&header).map_err(|_| MockError::Crypto("header"))?;
        let claims = serde_json::to_vec(claims).map_err(|_| MockError::Crypto("claims"))?;
        let mut jws = format!("{}.{}", b64url(&header), b64url(&claims));
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jws.as_bytes(),
                &mut sig,
            )
            .map_err(|_| MockError::Crypto("RS256 signing failed"))?;
        jws.push('.');
        jws.push_str(&b64url(&sig));
        Ok(jws)
    }
}

/// Label and DER body of the first PEM block in `text`.
fn pem_body(text: &str) -> Option<(String, Vec<u8>)> {
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))?
        .to_string();
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    for line in lines {
        if line == end {
            return STANDARD.decode(body).ok().map(|der| (label, der));
        }
        body.push_str(line);
    }
    None
}

/// Why a DPoP proof was refused (RFC 9449 §4.3); the wire gets `invalid_dpop_proof`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// Not three base64url segments of JSON, or too long.
    #[error("malformed DPoP proof")]
    Malformed,
    /// `typ` is not `dpop+jwt`.
    #[error("DPoP proof typ must be dpop+jwt")]
    Typ,
    /// `alg` is not `ES256` (the only algorithm the mock supports).
    #[error("DPoP proof alg must be ES256")]
    Alg,
    /// The `jwk` header is missing, not a P-256 public key, or carries private material.
    #[error("DPoP proof jwk must be a P-256 public key")]
    Jwk,
    /// The signature does not verify with the embedded key.
    #[error("DPoP proof signature does not verify")]
    Signature,
    /// `jti` missing, empty or too long.
    #[error("DPoP proof jti missing or too long")]
    Jti,
    /// `htm` is not the request's method.
    #[error("DPoP proof htm does not match the request method")]
    Htm,
    /// `htu` is not the URL the request was sent to.
    #[error("DPoP proof htu does not match the token endpoint URL")]
    Htu,
    /// `iat` missing, too old or in the future.
    #[error("DPoP proof iat outside the accepted window")]
    Iat,
    /// The `jti` was seen before within the window.
    #[error("DPoP proof jti replayed")]
    Replay,
}

/// What a proof is checked against.
pub(crate) struct DpopExpect<'a> {
    pub(crate) htm: &'a str,
    pub(crate) htu: &'a str,
    pub(crate) now_secs: u64,
    pub(crate) iat_window_secs: u64,
}

/// A proof whose signature, `typ`, `alg`, `htm`, `htu` and `iat` checked out. Replay of `jti`
/// is checked by the provider, which holds the memory of seen ones.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedProof {
    /// RFC 7638 thumbprint of the proof key: the `cnf.jkt` of bound tokens.
    pub(crate) jkt: String,
    pub(crate) jti: String,
    pub(crate) iat: u64,
}

/// Verifies a DPoP proof (RFC 9449 §4.3, steps 1–11 except `nonce` and `ath`, which the token
/// endpoint does not use here).
pub(crate) fn verify_dpop(
    proof: &str,
    expect: &DpopExpect<'_>,
) -> Result<VerifiedProof, DpopError> {
    if proof.len() > DPOP_PROOF_BYTES_MAX {
        return Err(DpopError::Malformed);
    }
    let mut parts = proof.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed);
    };
    let header = json_object(h64)?;
    let payload = json_object(p64)?;
    let sig = b64url_decode_canonical(s64).ok_or(DpopError::Malformed)?;

    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(DpopError::Typ);
    }
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(DpopError::Alg);
    }
    let jwk = header
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or(DpopError::Jwk)?;
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    if member("kty") != Some("EC") || member("crv") != Some("P-256") || jwk.contains_key("d") {
        return Err(DpopError::Jwk);
    }
    let (Some(x64), Some(y64)) = (member("x"), member("y")) else {
        return Err(DpopError::Jwk);
    };
    let x = b64url_decode_canonical(x64).ok_or(DpopError::Jwk)?;
    let y = b64url_decode_canonical(y64).ok_or(DpopError::Jwk)?;
    if x.len() != 32 || y.len() != 32 {
        return Err(DpopError::Jwk);
    }
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let signing_input_len = h64.len() + 1 + p64.len();
    let signing_input = proof.get(..signing_input_len).ok_or(DpopError::Malformed)?;
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(signing_input.as_bytes(), &sig)
        .map_err(|_| DpopError::Signature)?;

    let jti = payload
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= DPOP_JTI_BYTES_MAX)
        .ok_or(DpopError::Jti)?;
    if payload.get("htm").and_then(Value::as_str) != Some(expect.htm) {
        return Err(DpopError::Htm);
    }
    if payload.get("htu").and_then(Value::as_str) != Some(expect.htu) {
        return Err(DpopError::Htu);
    }
    let iat = payload
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(DpopError::Iat)?;
    let oldest = expect.now_secs.saturating_sub(expect.iat_window_secs);
    if iat < oldest || iat > expect.now_secs.saturating_add(DPOP_IAT_FUTURE_SECS_MAX) {
        return Err(DpopError::Iat);
    }
    let jkt = sha256_b64url(
        format!(r#"{{"crv":"P-256","kty":"EC","x":"{x64}","y":"{y64}"}}"#).as_bytes(),
    );
    Ok(VerifiedProof {
        jkt,
        jti: jti.to_string(),
        iat,
    })
}

fn json_object(segment: &str) -> Result<Map<String, Value>, DpopError> {
    let bytes = b64url_decode_canonical(segment).ok_or(DpopError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(DpopError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../fixtures/test-rsa-2048.pem");

    #[test]
    fn fixture_key_loads_and_kid_is_its_rfc7638_thumbprint() {
        let signer = Signer::from_pem(FIXTURE).unwrap();
        let jwk = &signer.jwks()["keys"][0];
        let canonical = format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().unwrap(),
            jwk["n"].as_str().unwrap()
        );
        assert_eq!(signer.kid(), sha256_b64url(canonical.as_bytes()));
        assert_eq!(jwk["e"], "AQAB");
    }

    #[test]
    fn pem_garbage_is_an_error_not_a_panic() {
        assert!(Signer::from_pem("").is_err());
        assert!(
            Signer::from_pem("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----")
                .is_err()
        );
        assert!(
            Signer::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")
                .is_err()
        );
    }

    #[test]
    fn non_canonical_base64url_is_refused() {
        assert_eq!(b64url_decode_canonical("AQAB"), Some(vec![1, 0, 1]));
        // Same bytes with non-zero trailing bits.
        assert_eq!(b64url_decode_canonical("AR"), None);
        assert_eq!(b64url_decode_canonical("AQAB="), None);
    }

    #[test]
    fn malformed_dpop_proofs_are_refused_without_panicking() {
        let expect = DpopExpect {
            htm: "POST",
            htu: "http://x/token",
            now_secs: 1000,
            iat_window_secs: 300,
        };
        for proof in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "..",
            "e30.e30.",
            &"A".repeat(5000),
        ] {
            assert!(verify_dpop(proof, &expect).is_err(), "{proof:?}");
        }
    }
}

#[cfg(test)]
mod keygen_tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_have_distinct_kids() {
        // About a quarter second each in debug builds here.
        let a = Signer::generate().unwrap();
        let b = Signer::generate().unwrap();
        assert_ne!(a.kid(), b.kid());
        let jws = a.sign("JWT", &json!({"sub": "x"})).unwrap();
        assert_eq!(jws.split('.').count(), 3);
    }
}
