//! Test fixtures: a primary that signs real JWTs (the mock primary's RS256 fixture key), token
//! responses shaped like a provider's, DPoP proofs, and jobs.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{CapturedGrantType, GrantCapture};
use crate::store::{ArtifactDigest, ArtifactKind, ClientAuthMethod, Keys};
use crate::token::alg::SigningAlg;
use crate::token::b64;
use crate::token::jwks::KeySet;
use crate::token::keyring;
use crate::token::sign::{Ed25519Backend, SIGNATURE_BYTES_MAX, Signer, SigningKey};

pub const ISSUER: &str = "https://login.example.com/tenant-a/v2.0";
pub const CLIENT: &str = "native-app";
pub const NOW: i64 = 1_800_000_000;

/// Signs compact JWS with a key; `header` is written as given plus `alg` and `kid`.
pub struct JwsSigner {
    pub key: SigningKey,
    signer: Box<dyn Signer>,
}

impl JwsSigner {
    pub fn new(key: SigningKey) -> Self {
        let signer = key.signer(Ed25519Backend::AwsLc).unwrap();
        Self { key, signer }
    }

    /// The mock primary's RS256 fixture key.
    pub fn primary() -> Self {
        let backstop_mock_primary::KeySource::Pem(pem) =
            backstop_mock_primary::KeySource::test_fixture()
        else {
            panic!("fixture is PEM")
        };
        let der = keyring::pem_decode(pem.as_bytes()).unwrap();
        Self::new(SigningKey::from_pkcs8(SigningAlg::Rs256, der).unwrap())
    }

    pub fn key_set(&self) -> KeySet {
        KeySet::from_ours(&[self.key.public_jwk().clone()]).unwrap()
    }

    pub fn sign_with_header(
        &self,
        mut header: serde_json::Map<String, Value>,
        claims: &Value,
    ) -> String {
        header.insert("alg".into(), json!(self.key.alg().name()));
        let h = b64::encode(serde_json::to_string(&header).unwrap().as_bytes());
        let p = b64::encode(serde_json::to_string(claims).unwrap().as_bytes());
        let input = format!("{h}.{p}");
        let mut sig = [0u8; SIGNATURE_BYTES_MAX];
        let n = self.signer.sign(input.as_bytes(), &mut sig).unwrap();
        format!("{input}.{}", b64::encode(&sig[..n]))
    }

    /// A JWT with `typ` (if any) and our `kid`.
    pub fn jwt(&self, typ: Option<&str>, claims: &Value) -> String {
        let mut h = serde_json::Map::new();
        if let Some(t) = typ {
            h.insert("typ".into(), json!(t));
        }
        h.insert("kid".into(), json!(self.key.kid()));
        self.sign_with_header(h, claims)
    }

    /// A DPoP proof (this key must be ES256 or EdDSA) and its key's thumbprint.
    pub fn dpop_proof(&self) -> (String, String) {
        let jwk: Value = serde_json::from_str(&self.key.public_jwk().key.canonical_json()).unwrap();
        let mut h = serde_json::Map::new();
        h.insert("typ".into(), json!("dpop+jwt"));
        h.insert("jwk".into(), jwk);
        let claims = json!({"htm": "POST", "htu": "https://login.example.com/token", "iat": NOW, "jti": "proof-1"});
        (
            self.sign_with_header(h, &claims),
            self.key.public_jwk().key.thumbprint(),
        )
    }
}

/// Access-token claims like Entra's / the mock primary's.
pub fn at_claims(user: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": user, "aud": "https://api.example.com", "client_id": CLIENT,
        "scope": "api.read", "iat": NOW, "exp": NOW + 3600, "jti": "at-jti-1",
        "amr": ["pwd", "mfa"], "groups": ["g-staff", "g-ops"], "roles": ["reader"], "tid": "tenant-a"
    })
}

/// ID-token claims: `auth_time`, `acr`, `nonce` live only here.
pub fn id_claims(user: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": user, "aud": CLIENT, "azp": CLIENT, "iat": NOW, "exp": NOW + 3600,
        "auth_time": NOW - 600, "nonce": "n-0S6_WzA2Mj", "amr": ["pwd", "mfa"], "acr": "urn:example:mfa",
        "tid": "tenant-a"
    })
}

/// A token response body.
pub fn response(at: &str, id: Option<&str>, refresh: Option<&str>, extra: Value) -> Bytes {
    let mut body = json!({
        "access_token": at, "token_type": "Bearer", "expires_in": 3600,
        "scope": "openid offline_access api.read"
    });
    let obj = body.as_object_mut().unwrap();
    if let Some(id) = id {
        obj.insert("id_token".into(), json!(id));
    }
    if let Some(r) = refresh {
        obj.insert("refresh_token".into(), json!(r));
    }
    if let Value::Object(extra) = extra {
        obj.extend(extra);
    }
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

/// An authorization-code grant job for `body`.
pub fn code_job(body: Bytes) -> GrantCapture {
    GrantCapture {
        grant: CapturedGrantType::AuthorizationCode,
        client_id: CLIENT.into(),
        client_auth: ClientAuthMethod::None,
        client_secret_digest: None,
        requested_resources: Vec::new(),
        requested_scope: Some("openid offline_access api.read".into()),
        presented_refresh: None,
        dpop_proof: None,
        device_header: None,
        response_body: body,
        received_at_secs: NOW,
    }
}

/// A refresh grant job presenting `presented`.
pub fn refresh_job(body: Bytes, presented: ArtifactDigest) -> GrantCapture {
    GrantCapture {
        grant: CapturedGrantType::RefreshToken,
        presented_refresh: Some(presented),
        requested_scope: None,
        ..code_job(body)
    }
}

/// Deterministic digest keys for pure tests.
pub fn digest_keys() -> Keys {
    Keys::from_secrets([7u8; 192], [9u8; 32])
}

pub fn refresh_digest(keys: &Keys, raw: &str) -> ArtifactDigest {
    keys.artifact_digest(ArtifactKind::RefreshToken, raw.as_bytes())
}
