//! DPoP proof verification (RFC 9449 §4.3), `htu` normalization and the `jti` replay cache.
//!
//! A proof binds a request (method, URL, and at resource servers the access token) to a key the
//! client holds; its thumbprint `jkt` is the strongest device identity backstop has (DESIGN §3).

use std::collections::{HashMap, VecDeque};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use serde_json::Value;

use crate::limits;
use crate::token::alg::{Alg, Typ};
use crate::token::b64;
use crate::token::json;
use crate::token::jwk::PublicKey;
use crate::token::jwks;
use crate::token::jws::{self, JwsError};

/// Why a DPoP proof was refused. Each maps to `invalid_dpop_proof` on the wire (RFC 9449 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// Structure, encoding, header JSON or embedded key.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// `typ` is not `dpop+jwt`.
    #[error("DPoP proof typ {found:?}, expected dpop+jwt")]
    Typ {
        /// What the header said.
        found: Option<String>,
    },
    /// An algorithm other than ES256 or EdDSA.
    #[error("DPoP proof alg {alg} not allowed (ES256, EdDSA)")]
    Alg {
        /// The algorithm.
        alg: &'static str,
    },
    /// No embedded `jwk`, or one that does not fit the algorithm.
    #[error("DPoP proof jwk missing or not fitting alg")]
    Jwk,
    /// The signature does not verify with the embedded key.
    #[error("DPoP proof signature does not verify")]
    BadSignature,
    /// A claim missing, of the wrong type, or too long.
    #[error("DPoP proof claim {claim:?} missing or malformed")]
    Claim {
        /// The claim.
        claim: &'static str,
    },
    /// `htm` is not the request's method.
    #[error("DPoP proof htm does not match the request method")]
    Method,
    /// `htu` is not the request's URL (after normalization, without query and fragment).
    #[error("DPoP proof htu does not match the request URL")]
    Url,
    /// `iat` too far in the past.
    #[error("DPoP proof iat {iat_secs} too old at {now_secs}")]
    Stale {
        /// `iat`.
        iat_secs: u64,
        /// Now.
        now_secs: u64,
    },
    /// `iat` too far in the future.
    #[error("DPoP proof iat {iat_secs} in the future at {now_secs}")]
    Future {
        /// `iat`.
        iat_secs: u64,
        /// Now.
        now_secs: u64,
    },
    /// `ath` missing or not the hash of the presented access token.
    #[error("DPoP proof ath does not match the access token")]
    Ath,
    /// The server asked for a nonce (RFC 9449 §8) and the proof lacks it or carries another:
    /// answer `use_dpop_nonce` with a fresh `DPoP-Nonce` header.
    #[error("DPoP proof nonce missing or stale")]
    Nonce,
    /// This `jti` was seen before from this key.
    #[error("DPoP proof replayed")]
    Replayed,
    /// The replay cache is full of unexpired entries; refused rather than forgetting one.
    #[error("DPoP replay cache full ({capacity} entries)")]
    ReplayCacheFull {
        /// Its capacity.
        capacity: usize,
    },
}

/// The request a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct DpopRequest<'a> {
    /// HTTP method, as received (`POST`).
    pub method: &'a str,
    /// The request URL as the client addressed it: scheme, the client's `Host` (or
    /// `X-Forwarded-Host`), path. Query and fragment are ignored.
    pub url: &'a str,
    /// The access token, when the proof accompanies one (resource requests); `None` at the token
    /// endpoint.
    pub access_token: Option<&'a [u8]>,
    /// The nonce the server currently requires in proofs (RFC 9449 §8), if it issues them.
    pub nonce: Option<&'a str>,
}

/// Time bounds for proofs.
#[derive(Debug, Clone, Copy)]
pub struct DpopPolicy {
    /// How long after its `iat` a proof is accepted.
    pub proof_age_secs: u64,
    /// How far in our future `iat` may be.
    pub clock_skew_secs: u64,
}

impl Default for DpopPolicy {
    fn default() -> Self {
        Self {
            proof_age_secs: limits::DPOP_PROOF_AGE_SECS.default,
            clock_skew_secs: limits::DPOP_CLOCK_SKEW_SECS,
        }
    }
}

/// A proof that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint of the proof key, base64url: compare with a token's `cnf.jkt`.
    pub jkt: String,
    /// The proof key.
    pub key: PublicKey,
    /// The proof's `iat`.
    pub iat_secs: u64,
}

/// Verifies a DPoP proof for `request` at `now_secs` and records its `jti` in `replay`.
pub fn verify_proof(
    proof: &[u8],
    request: &DpopRequest<'_>,
    policy: &DpopPolicy,
    replay: &mut ReplayCache,
    now_secs: u64,
) -> Result<VerifiedProof, DpopError> {
    let jws = jws::parse_compact(proof, limits::DPOP_PROOF_BYTES_MAX)?;
    let h = &jws.header;
    if h.typ.as_deref().and_then(Typ::from_header) != Some(Typ::DpopJwt) {
        return Err(DpopError::Typ {
            found: h.typ.clone(),
        });
    }
    if !matches!(h.alg, Alg::Es256 | Alg::EdDsa) {
        return Err(DpopError::Alg { alg: h.alg.name() });
    }
    let key = h
        .jwk
        .as_ref()
        .filter(|k| k.fits(h.alg))
        .ok_or(DpopError::Jwk)?;
    if !jwks::verify_with(key, h.alg, jws.signing_input, &jws.signature) {
        return Err(DpopError::BadSignature);
    }
    let claims = json::parse_object(&jws.payload, "claims", limits::JOSE_JSON_DEPTH_MAX)
        .map_err(JwsError::from)?;
    let string = |claim: &'static str| {
        claims
            .get(claim)
            .and_then(Value::as_str)
            .ok_or(DpopError::Claim { claim })
    };
    let jti = string("jti")?;
    if jti.is_empty() || jti.len() > limits::DPOP_JTI_BYTES_MAX {
        return Err(DpopError::Claim { claim: "jti" });
    }
    if string("htm")? != request.method {
        return Err(DpopError::Method);
    }
    let htu = normalize_htu(string("htu")?).ok_or(DpopError::Claim { claim: "htu" })?;
    if Some(htu) != normalize_htu(request.url) {
        return Err(DpopError::Url);
    }
    let iat_secs = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(DpopError::Claim { claim: "iat" })?;
    if now_secs > iat_secs.saturating_add(policy.proof_age_secs) {
        return Err(DpopError::Stale { iat_secs, now_secs });
    }
    if iat_secs > now_secs.saturating_add(policy.clock_skew_secs) {
        return Err(DpopError::Future { iat_secs, now_secs });
    }
    if let Some(token) = request.access_token {
        let ath = string("ath").map_err(|_| DpopError::Ath)?;
        let expected = b64::encode(digest::digest(&digest::SHA256, token).as_ref());
        verify_slices_are_equal(ath.as_bytes(), expected.as_bytes()).map_err(|_| DpopError::Ath)?;
    }
    if let Some(expected) = request.nonce {
        let nonce = string("nonce").map_err(|_| DpopError::Nonce)?;
        verify_slices_are_equal(nonce.as_bytes(), expected.as_bytes())
            .map_err(|_| DpopError::Nonce)?;
    }
    let jkt_bytes = key.thumbprint_bytes();
    // Remember the proof until it could no longer be accepted anyway: its iat is at most
    // now + skew, and it is accepted until iat + age.
    let expires_at_secs = now_secs
        .saturating_add(policy.clock_skew_secs)
        .saturating_add(policy.proof_age_secs);
    replay.check_and_insert(replay_key(&jkt_bytes, jti), now_secs, expires_at_secs)?;
    Ok(VerifiedProof {
        jkt: b64::encode(&jkt_bytes),
        key: key.clone(),
        iat_secs,
    })
}

/// The `jkt` (RFC 9449 §6.1) of a public key.
pub fn jkt(key: &PublicKey) -> String {
    key.thumbprint()
}

fn replay_key(jkt: &[u8; 32], jti: &str) -> [u8; 16] {
    // Keyed by key and jti: one client's jti values cannot collide with another's.
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(jkt);
    ctx.update(jti.as_bytes());
    let d = ctx.finish();
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(d.as_ref()) {
        *o = *b;
    }
    out
}

/// Normalizes an HTTP(S) URL for `htu` comparison (RFC 9449 §4.3 via RFC 3986 §6.2.2 and
/// §6.2.3): scheme and host lowercased, default port dropped, empty path as `/`, percent-encoding
/// of unreserved characters decoded and other escapes uppercased, dot segments removed; query
/// and fragment dropped. `None` for anything that is not an absolute http(s) URL.
pub fn normalize_htu(url: &str) -> Option<String> {
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return None;
    }
    let url = url.split(['#', '?']).next()?;
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, ""),
    };
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    // The port is after the last ':' unless that ':' is inside an IPv6 literal.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority.get(i..)?.contains(']') => {
            (authority.get(..i)?, authority.get(i + 1..)?)
        }
        _ => (authority, ""),
    };
    if host.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut out = String::with_capacity(url.len() + 1);
    out.push_str(&scheme);
    out.push_str("://");
    out.push_str(&host.to_ascii_lowercase());
    if !port.is_empty() && port != default_port {
        out.push(':');
        out.push_str(port);
    }
    let path = normalize_percent(if path.is_empty() { "/" } else { path })?;
    out.push_str(&remove_dot_segments(&path));
    Some(out)
}

fn normalize_percent(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = |j: usize| b.get(j).and_then(|h| (*h as char).to_digit(16));
            let v = hex(i + 1)? * 16 + hex(i + 2)?;
            let ch = char::from_u32(v)?;
            if ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.' | '_' | '~') {
                out.push(ch);
            } else {
                out.push_str(&format!("%{v:02X}"));
            }
            i += 3;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    Some(out)
}

/// RFC 3986 §5.2.4, on a path that starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

/// Remembers recent proof `jti`s (per key) so a proof is accepted once. Bounded in time (entries
/// expire once their proof could no longer be accepted) and in memory (a fixed capacity; when full
/// of live entries new proofs are refused, never an old entry forgotten).
///
/// One cache answers for the proofs it sees: the server must send all proofs for one key to the
/// same cache (or share one) for replay across workers to be caught.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    seen: HashMap<[u8; 16], u64>,
    /// Insertion order with expiry; expiries are non-decreasing since `now` is.
    order: VecDeque<([u8; 16], u64)>,
}

impl ReplayCache {
    /// A cache holding at most `capacity` live entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn prune(&mut self, now_secs: u64) {
        while let Some(&(key, exp)) = self.order.front() {
            if exp > now_secs {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&key) == Some(&exp) {
                self.seen.remove(&key);
            }
        }
    }

    /// Records `key` until `expires_at_secs`; `Replayed` if it is already live.
    pub fn check_and_insert(
        &mut self,
        key: [u8; 16],
        now_secs: u64,
        expires_at_secs: u64,
    ) -> Result<(), DpopError> {
        self.prune(now_secs);
        if self.seen.contains_key(&key) {
            return Err(DpopError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(DpopError::ReplayCacheFull {
                capacity: self.capacity,
            });
        }
        self.seen.insert(key, expires_at_secs);
        self.order.push_back((key, expires_at_secs));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_normalization_follows_rfc3986_and_drops_query() {
        let cases = [
            (
                "HTTPS://Server.Example.COM:443/token?x=1#f",
                Some("https://server.example.com/token"),
            ),
            (
                "https://server.example.com",
                Some("https://server.example.com/"),
            ),
            (
                "http://a.example:80/a/./b/../c",
                Some("http://a.example/a/c"),
            ),
            (
                "https://a.example:8443/%7euser/%2f",
                Some("https://a.example:8443/~user/%2F"),
            ),
            ("https://[::1]:443/t", Some("https://[::1]/t")),
            ("https://[::1]/t", Some("https://[::1]/t")),
            ("ftp://a.example/t", None),
            ("https://user@a.example/t", None),
            ("https://a.example/t t", None),
            ("/token", None),
            ("https://a.example/%zz", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_htu(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn replay_cache_expires_entries_and_fails_closed_when_full() {
        let mut c = ReplayCache::new(2);
        c.check_and_insert([1; 16], 100, 160).unwrap();
        assert_eq!(
            c.check_and_insert([1; 16], 150, 210),
            Err(DpopError::Replayed)
        );
        c.check_and_insert([2; 16], 150, 210).unwrap();
        assert_eq!(
            c.check_and_insert([3; 16], 150, 210),
            Err(DpopError::ReplayCacheFull { capacity: 2 })
        );
        // At 160 the first entry has expired: room again, and [1] is accepted anew.
        c.check_and_insert([1; 16], 160, 220).unwrap();
        assert_eq!(c.len(), 2);
    }
}
