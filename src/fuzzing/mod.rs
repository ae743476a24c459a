//! Entry points for the cargo-fuzz targets in `fuzz/`: each takes arbitrary bytes and drives
//! one parser of outside input. Hidden from the docs; not part of the public API.
//!
//! Outside input and its target: token request form and `Authorization` (`token_request`),
//! HTTP Basic client credentials (`basic_auth`), the admin API's bodies, query and headers
//! (`admin_api`; its policy document: `policy_json`), the primary's discovery document and
//! JWKS (`primary_metadata`, `token_jwks`) and token responses (`capture_derive`), JWS/JWT
//! (`token_jws`), DPoP proofs (`token_dpop`), Security Event Tokens (`ssf_set`), trusted-proxy
//! `X-Forwarded-For` and `User-Agent` (`request_facts`), the configuration file
//! (`config_toml`), and the store's files (`store_wal`, `store_segment`,
//! `store_segment_upgrade`). No cookie is parsed anywhere yet: a cookie parser comes with its
//! target.

/// Token-endpoint request: the form body and an `Authorization` header, split at the first
/// newline of the input.
pub fn token_request(data: &[u8]) {
    use crate::protocol::{Form, REPEATABLE, TokenRequest};
    let (auth, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (data.get(..i), data.get(i + 1..).unwrap_or_default()),
        None => (None, data),
    };
    if let Ok(form) = Form::parse(body, REPEATABLE)
        && let Err(e) = TokenRequest::parse(&form, auth)
    {
        // The error body must always be valid JSON, whatever the description.
        let json = e.code.to_json(&e.description);
        assert!(json.starts_with("{\"error\":\"") && json.ends_with('}'));
    }
}

/// Configuration file text.
pub fn config_toml(data: &[u8]) {
    use crate::config::{Config, SecretSource};
    struct NoEnv;
    impl SecretSource for NoEnv {
        fn env(&self, _: &str) -> Option<String> {
            None
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz", &NoEnv);
    }
}

pub mod admin;
pub mod capture;
pub mod metadata;
pub mod policy;
pub mod protocol;
pub mod request;
pub mod ssf;
pub mod store;
pub mod token;
