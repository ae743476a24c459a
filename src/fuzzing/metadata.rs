//! Fuzz entry point for the primary's metadata documents, as the metadata refresher
//! (`server::metadata`) takes them: the discovery document, and the primary's JWKS through
//! the remote-key cache and the merge with backstop's own keys (the SSF transmitter's JWKS takes
//! the same cache path). The first byte picks the document: even, discovery; odd, JWKS.

use super::token::rfc8037_public_key;
use crate::limits::{JWKS_DOCUMENT_BYTES_MAX, JWKS_KEYS_MAX};
use crate::server::metadata::{accept_discovery, issuer_origin};
use crate::token::alg::Alg;
use crate::token::jwk::PublicJwk;
use crate::token::jwks::{CachePolicy, KeySet, RemoteJwks, merge};

/// The configured issuer of every fuzzed discovery document (with a path, as Entra's).
pub const ISSUER: &str = "https://login.example.com/tenant-1/v2.0";

/// Backstop's own published key in the merge (its `kid` is the RFC 7638 thumbprint).
fn ours() -> PublicJwk {
    PublicJwk::ours(rfc8037_public_key(), Alg::EdDsa)
}

/// One fetched document (see the module documentation for the mode byte).
pub fn primary_metadata(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        jwks(rest);
    } else {
        discovery(rest);
    }
}

/// An accepted discovery document is served with our issuer and its `jwks_uri` on the issuer's
/// origin; what we serve is itself accepted, with the same paths (a restart reads the cached
/// copy through the same check).
fn discovery(raw: &[u8]) {
    let Ok(d) = accept_discovery(raw, ISSUER) else {
        return;
    };
    let served: Option<serde_json::Value> = serde_json::from_slice(&d.document).ok();
    let served = served.as_ref().and_then(serde_json::Value::as_object);
    assert!(
        served.is_some(),
        "served discovery document is not an object"
    );
    let Some(served) = served else {
        return;
    };
    assert_eq!(served.get("issuer").and_then(|v| v.as_str()), Some(ISSUER));
    let jwks_uri = format!("{}{}", issuer_origin(ISSUER), d.jwks_path);
    assert_eq!(
        served.get("jwks_uri").and_then(|v| v.as_str()),
        Some(jwks_uri.as_str())
    );
    let again = accept_discovery(&d.document, ISSUER);
    assert!(
        again
            .as_ref()
            .is_ok_and(|a| a.jwks_path == d.jwks_path && a.token_path == d.token_path),
        "served discovery document refused or changed: {again:?} after {d:?}"
    );
}

/// A fetched JWKS: a refused body keeps the cached set; an accepted one is merged with ours,
/// ours first, no primary key under our `kid`, and the merged document parses again.
fn jwks(raw: &[u8]) {
    let mut cache = RemoteJwks::new(CachePolicy::default());
    let good = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k0"}]}"#;
    assert!(cache.on_fetched(good, 1).is_ok());
    let before = cache.keys();
    let fetched = cache.on_fetched(raw, 2);
    let after = cache.keys();
    assert!(after.is_some(), "a fetch lost the cached set");
    let Some(set) = after else {
        return;
    };
    match fetched {
        Err(_) => {
            assert!(before.is_some_and(|b| std::sync::Arc::ptr_eq(&b, &set)));
            assert_eq!(
                cache.age_secs(2),
                Some(1),
                "a refused body keeps the cached set's age"
            );
        }
        Ok(_) => {
            assert_eq!(cache.age_secs(2), Some(0));
            let ours = ours();
            let merged = merge(std::slice::from_ref(&ours), &set);
            // Our key can push a primary set at the fetch bounds past them; backstop never
            // reads what it serves, so only a merged set within them must parse again.
            if set.len() >= JWKS_KEYS_MAX || merged.document.len() > JWKS_DOCUMENT_BYTES_MAX {
                return;
            }
            let parsed = KeySet::parse(merged.document.as_bytes());
            assert!(
                parsed.is_ok(),
                "merged JWKS must parse: {}",
                merged.document
            );
            if let Ok((parsed, _)) = parsed {
                let kids: Vec<Option<&str>> =
                    parsed.entries().iter().map(|e| e.kid.as_deref()).collect();
                assert_eq!(kids.first(), Some(&Some(ours.kid.as_str())), "ours first");
                assert_eq!(
                    kids.iter()
                        .filter(|k| **k == Some(ours.kid.as_str()))
                        .count(),
                    1,
                    "a primary key under our kid was published"
                );
            }
            let refused_expected = set
                .entries()
                .iter()
                .filter(|e| e.kid.as_deref() == Some(ours.kid.as_str()))
                .count();
            assert_eq!(merged.refused_kids.len(), refused_expected);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry point runs on a few seeds in every `cargo test`, so a broken one is caught
    /// before anyone runs the fuzzer.
    #[test]
    fn entry_point_runs_on_seeds() {
        let discovery = format!(
            r#"{{"issuer":"{ISSUER}","jwks_uri":"https://idp.internal/tenant-1/discovery/v2.0/keys","token_endpoint":"https://idp.internal/tenant-1/oauth2/v2.0/token","x":[1.5,null]}}"#
        );
        let mut seeds: Vec<Vec<u8>> = vec![
            [b"\x00", discovery.as_bytes()].concat(),
            b"\x00{\"issuer\":\"https://login.example.com/tenant-1/v2.0\",\"jwks_uri\":\"https://a\"}"
                .to_vec(),
            b"\x00{\"issuer\":\"https://login.example.com/tenant-1/v2.0\",\"jwks_uri\":\"/rel\"}"
                .to_vec(),
            b"\x00[]".to_vec(),
            b"\x01{\"keys\":[]}".to_vec(),
            b"\x01{}".to_vec(),
            b"".to_vec(),
        ];
        let ours = ours();
        seeds.push(
            format!(
                "\x01{{\"keys\":[{{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\",\"kid\":\"{}\"}},{{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}}]}}",
                ours.kid
            )
            .into_bytes(),
        );
        for s in seeds {
            primary_metadata(&s);
        }
    }
}
