//! Fuzz entry point for normal-mode capture: the primary's token response is outside input.
//! The input is the response body of a refresh grant, derived against a fixed primary key set
//! (RFC 8037's Ed25519 test key): JSON parsing, token parsing, signature and claim refusals,
//! templates and identity extraction must refuse or derive, never panic.

use bytes::Bytes;

use crate::config::CaptureConfig;
use crate::gateway::capture::{CapturedGrantType, DeriveContext, GrantCapture, derive};
use crate::store::{ArtifactDigest, ClientAuthMethod};
use crate::token::jwks::KeySet;

/// RFC 8037 Appendix A.1's public key, as the "primary's" JWKS.
const JWKS: &[u8] = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"primary"}]}"#;

/// Derives a capture from `data` as a primary's 200 body to a refresh grant.
pub fn capture_derive(data: &[u8]) {
    let Ok((keys, _)) = KeySet::parse(JWKS) else {
        return;
    };
    let cfg = CaptureConfig::default();
    // A digest that depends on the token, without the store's secret.
    let digest = |raw: &[u8]| {
        let mut d = [0u8; 32];
        for (o, b) in d.iter_mut().zip(raw.iter().cycle()) {
            *o = *b;
        }
        ArtifactDigest(d)
    };
    let ctx = DeriveContext {
        keys: &keys,
        cfg: &cfg,
        issuer: "https://primary.example",
        refresh_digest: &digest,
    };
    let job = GrantCapture {
        grant: CapturedGrantType::RefreshToken,
        client_id: "app".into(),
        client_auth: ClientAuthMethod::None,
        client_secret_digest: None,
        requested_resources: Vec::new(),
        requested_scope: None,
        presented_refresh: Some(ArtifactDigest([7; 32])),
        dpop_proof: None,
        device_header: None,
        response_body: Bytes::copy_from_slice(data),
        received_at_secs: 1_800_000_000,
    };
    let _ = derive(&job, &ctx, None, || Some("fuzz-family".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry point runs on a few seeds in every `cargo test`, so a broken one is caught
    /// before anyone runs the fuzzer.
    #[test]
    fn entry_point_runs_on_seeds() {
        let seeds: [&[u8]; 6] = [
            br#"{"access_token":"a.b.c","token_type":"Bearer","expires_in":3600,"refresh_token":"r"}"#,
            br#"{"access_token":"eyJhbGciOiJFZERTQSJ9.e30.AA","refresh_token":"r","id_token":"x"}"#,
            br#"{"access_token":1}"#,
            b"[]",
            b"",
            b"\xff\xfe{",
        ];
        for s in seeds {
            capture_derive(s);
        }
    }
}
