//! Fuzz entry point for the Shared Signals receiver. The first byte picks the mode: even, the
//! rest is a pushed body verified against a fixed transmitter key (parsing and refusals); odd,
//! the rest is a claims set that is signed with that key first, so inputs reach the claim
//! checks and the event mapping behind the signature.

use std::cell::RefCell;

use crate::config::SsfConfig;
use crate::limits::SSF_EVENTS_PER_SET_MAX;
use crate::revocation::Source;
use crate::ssf::{JtiCache, SET_CONTENT_TYPE, receive};
use crate::token::alg::SigningAlg;
use crate::token::b64;
use crate::token::jwks::KeySet;
use crate::token::sign::{Ed25519Backend, PrivateKeyDer, SIGNATURE_BYTES_MAX, Signer, SigningKey};

/// RFC 8037 Appendix A.1's Ed25519 seed, as PKCS#8 (RFC 8410).
const PKCS8: [u8; 48] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];

/// The `iss` and `aud` a fuzzed SET must carry to pass those checks.
pub const ISSUER: &str = "https://transmitter.example";
/// See [`ISSUER`].
pub const AUDIENCE: &str = "https://backstop.example";
/// The `now` of every fuzzed delivery.
pub const NOW_SECS: i64 = 1_800_000_000;

struct Transmitter {
    signer: Box<dyn Signer>,
    keys: KeySet,
    kid: String,
}

thread_local! {
    static TRANSMITTER: RefCell<Option<Transmitter>> = const { RefCell::new(None) };
}

fn transmitter() -> Option<Transmitter> {
    let key = SigningKey::from_pkcs8(SigningAlg::EdDsa, PrivateKeyDer::new(PKCS8.to_vec())).ok()?;
    let keys = KeySet::from_ours(&[key.public_jwk().clone()]).ok()?;
    Some(Transmitter {
        signer: key.signer(Ed25519Backend::AwsLc).ok()?,
        kid: key.kid().to_owned(),
        keys,
    })
}

fn with_transmitter<R>(f: impl FnOnce(&Transmitter) -> Option<R>) -> Option<R> {
    TRANSMITTER.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = transmitter();
        }
        cell.as_ref().and_then(f)
    })
}

/// Signs `claims` as a SET from the fixed transmitter (also used to build seeds).
pub fn sign_set(claims: &[u8]) -> Option<Vec<u8>> {
    with_transmitter(|t| {
        let header = format!(
            r#"{{"alg":"EdDSA","typ":"secevent+jwt","kid":"{}"}}"#,
            t.kid
        );
        let mut token = Vec::new();
        b64::encode_into(header.as_bytes(), &mut token);
        token.push(b'.');
        b64::encode_into(claims, &mut token);
        let mut signature = [0u8; SIGNATURE_BYTES_MAX];
        let n = t.signer.sign(&token, &mut signature).ok()?;
        token.push(b'.');
        b64::encode_into(signature.get(..n)?, &mut token);
        Some(token)
    })
}

/// One pushed SET (see the module documentation for the mode byte).
pub fn ssf_set(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 1 {
        match sign_set(rest) {
            Some(token) => token,
            None => return,
        }
    } else {
        rest.to_vec()
    };
    let config = SsfConfig {
        issuer: ISSUER.to_owned(),
        jwks_uri: "https://transmitter.example/jwks".to_owned(),
        audience: AUDIENCE.to_owned(),
        iat_window_secs: 600,
        replay_cache_entries: 16,
    };
    let result = with_transmitter(|t| {
        Some(receive(
            &body,
            Some(SET_CONTENT_TYPE),
            &t.keys,
            &config,
            &JtiCache::new(16),
            NOW_SECS,
        ))
    });
    match result {
        None => {}
        Some(Ok(received)) => {
            assert!(!received.duplicate);
            assert!(received.events.len() <= SSF_EVENTS_PER_SET_MAX);
            for event in &received.events {
                assert!(event.id.starts_with(&received.jti));
                assert_eq!(event.source, Source::SharedSignals);
                assert!(event.time_secs <= NOW_SECS + 600);
            }
        }
        Some(Err(e)) => {
            let body = e.to_json();
            assert!(
                serde_json::from_str::<serde_json::Value>(&body).is_ok(),
                "error body must be JSON: {body}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's signing mode reaches the event mapping: a good claims set yields an
    /// event.
    #[test]
    fn signed_mode_reaches_event_mapping() {
        let claims = format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","iat":{NOW_SECS},"jti":"j1","sub_id":{{"format":"opaque","id":"u1"}},"events":{{"https://schemas.openid.net/secevent/risc/event-type/account-disabled":{{}}}}}}"#
        );
        let token = sign_set(claims.as_bytes()).unwrap();
        let received = with_transmitter(|t| {
            receive(
                &token,
                Some(SET_CONTENT_TYPE),
                &t.keys,
                &SsfConfig {
                    issuer: ISSUER.into(),
                    jwks_uri: String::new(),
                    audience: AUDIENCE.into(),
                    iat_window_secs: 600,
                    replay_cache_entries: 16,
                },
                &JtiCache::new(16),
                NOW_SECS,
            )
            .ok()
        })
        .unwrap();
        assert_eq!(received.events.len(), 1);
        let mut input = vec![1u8];
        input.extend_from_slice(claims.as_bytes());
        ssf_set(&input);
    }
}
