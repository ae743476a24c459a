//! DPoP proofs (RFC 9449 §4.2) for DPoP-bound sessions: a compact JWS signed with the
//! session's Ed25519 key, header `{"typ":"dpop+jwt","alg":"EdDSA","jwk":{..}}`, claims `jti`
//! (unique per proof), `htm`, `htu` and `iat`. The header depends on the key only and is
//! encoded once per session.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;

/// One session's DPoP key with its encoded protected header.
pub struct Prover {
    key: ed25519_dalek::SigningKey,
    header_b64: String,
}

impl Prover {
    /// A prover for `key`.
    pub fn new(key: ed25519_dalek::SigningKey) -> Self {
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        let header = format!(
            r#"{{"typ":"dpop+jwt","alg":"EdDSA","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}}}"#
        );
        Prover {
            header_b64: URL_SAFE_NO_PAD.encode(header),
            key,
        }
    }

    /// The key's public half.
    #[cfg(test)]
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// A proof for `htm`/`htu` at `iat_secs` with the unique `jti`.
    pub fn proof(&self, htm: &str, htu: &str, jti: &str, iat_secs: u64) -> String {
        let claims = serde_json::json!({"jti": jti, "htm": htm, "htu": htu, "iat": iat_secs});
        let mut jws = String::with_capacity(self.header_b64.len() + 256);
        jws.push_str(&self.header_b64);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut jws);
        let signature = self.key.sign(jws.as_bytes());
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut jws);
        jws
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_json(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn a_proof_carries_the_rfc_9449_header_and_claims_and_verifies_with_its_jwk() {
        let prover = Prover::new(ed25519_dalek::SigningKey::from_bytes(&[7; 32]));
        let jws = prover.proof(
            "POST",
            "http://127.0.0.1:8080/token",
            "run-1",
            1_700_000_000,
        );
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_json(parts[0]);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["jwk"]["kty"], "OKP");
        assert_eq!(header["jwk"]["crv"], "Ed25519");
        let x = URL_SAFE_NO_PAD
            .decode(header["jwk"]["x"].as_str().unwrap())
            .unwrap();
        assert_eq!(x.as_slice(), prover.verifying_key().as_bytes());
        assert!(header.get("d").is_none() && header["jwk"].get("d").is_none());
        let claims = decode_json(parts[1]);
        assert_eq!(
            claims,
            serde_json::json!({"jti": "run-1", "htm": "POST", "htu": "http://127.0.0.1:8080/token", "iat": 1_700_000_000u64})
        );
        let sig: [u8; 64] = URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap()
            .try_into()
            .unwrap();
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        prover
            .verifying_key()
            .verify_strict(
                signing_input.as_bytes(),
                &ed25519_dalek::Signature::from_bytes(&sig),
            )
            .unwrap();
    }
}
