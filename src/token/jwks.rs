//! Key sets: parsing a remote JWKS, our published JWKS merged with the primary's, and the
//! remote-JWKS cache as a pure state machine (the `server` does the HTTP fetch).
//!
//! Every entry keeps its aws-lc-rs public key parsed once, so verifying a token does not
//! re-parse an RSA modulus per request.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256,
    RSA_PSS_2048_8192_SHA256, RsaPublicKeyComponents,
};
use serde_json::{Map, Value};

use crate::limits;
use crate::token::alg::Alg;
use crate::token::json::{self, JsonError};
use crate::token::jwk::{JwkError, PublicJwk, PublicKey};

/// Why a JWKS document was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Over `limits::JWKS_DOCUMENT_BYTES_MAX`.
    #[error("JWKS document of {bytes} bytes exceeds {max}")]
    TooLarge {
        /// Size.
        bytes: usize,
        /// Limit.
        max: usize,
    },
    /// Not strict JSON.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// No `keys` array.
    #[error("JWKS has no \"keys\" array")]
    NoKeys,
    /// Over `limits::JWKS_KEYS_MAX`.
    #[error("JWKS lists {count} keys, more than {max}")]
    TooManyKeys {
        /// Count.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// Two different keys under one `kid`: which one a verifier picks would be arbitrary.
    #[error("JWKS lists two different keys under kid {kid:?}")]
    DuplicateKid {
        /// The kid.
        kid: String,
    },
}

/// A key of a JWKS that was left out, and why (RFC 7517 §5: ignore keys you cannot use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Its `kid`, if it had one.
    pub kid: Option<String>,
    /// Why.
    pub reason: JwkError,
}

/// One usable verification key.
pub struct KeySetEntry {
    /// `kid`, if given.
    pub kid: Option<String>,
    /// `alg`, if the JWK pins one.
    pub alg: Option<Alg>,
    /// The key.
    pub key: PublicKey,
    /// The JWK object as received (published unchanged when merging), `None` for ours.
    raw: Option<Map<String, Value>>,
    parsed: Parsed,
}

impl std::fmt::Debug for KeySetEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySetEntry")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("key", &self.key)
            .finish()
    }
}

/// aws-lc-rs keys parsed once per entry; RSA keys serve both RS256 and PS256.
enum Parsed {
    Ed25519(ParsedPublicKey),
    P256(ParsedPublicKey),
    Rsa {
        pkcs1: ParsedPublicKey,
        pss: ParsedPublicKey,
    },
}

fn parse_key(key: &PublicKey) -> Result<Parsed, JwkError> {
    let bad = |member| move |_| JwkError::Malformed { member };
    Ok(match key {
        PublicKey::Ed25519 { x } => {
            Parsed::Ed25519(ParsedPublicKey::new(&ED25519, x).map_err(bad("x"))?)
        }
        PublicKey::P256 { x, y } => {
            let mut point = [0u8; 65];
            point[0] = 4;
            for (d, s) in point.iter_mut().skip(1).zip(x.iter().chain(y.iter())) {
                *d = *s;
            }
            // Rejects points not on the curve (invalid-curve attacks).
            Parsed::P256(ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).map_err(bad("x"))?)
        }
        PublicKey::Rsa { n, e } => {
            let c = RsaPublicKeyComponents {
                n: &n[..],
                e: &e[..],
            };
            Parsed::Rsa {
                pkcs1: c
                    .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
                    .map_err(bad("n"))?,
                pss: c
                    .to_parsed_public_key(&RSA_PSS_2048_8192_SHA256)
                    .map_err(bad("n"))?,
            }
        }
    })
}

impl KeySetEntry {
    fn new(
        kid: Option<String>,
        alg: Option<Alg>,
        key: PublicKey,
        raw: Option<Map<String, Value>>,
    ) -> Result<Self, JwkError> {
        let parsed = parse_key(&key)?;
        Ok(Self {
            kid,
            alg,
            key,
            raw,
            parsed,
        })
    }

    /// Whether this key may check a JWS with `alg`: key type fits (RFC 8725 §3.1) and the JWK's own
    /// `alg`, when it has one, agrees (`EdDSA` and `Ed25519` are the same).
    pub fn accepts(&self, alg: Alg) -> bool {
        self.key.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// Checks `signature` over `message` as `alg`. False on any mismatch.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        let k = match (&self.parsed, alg) {
            (Parsed::Ed25519(k), Alg::EdDsa) | (Parsed::P256(k), Alg::Es256) => k,
            (Parsed::Rsa { pkcs1, .. }, Alg::Rs256) => pkcs1,
            (Parsed::Rsa { pss, .. }, Alg::Ps256) => pss,
            _ => return false,
        };
        k.verify_sig(message, signature).is_ok()
    }
}

/// An immutable set of verification keys (ours, a primary's, a transmitter's).
#[derive(Debug, Default)]
pub struct KeySet {
    entries: Vec<KeySetEntry>,
}

impl KeySet {
    /// Our own published keys.
    pub fn from_ours(keys: &[PublicJwk]) -> Result<Self, JwkError> {
        let entries = keys
            .iter()
            .map(|k| KeySetEntry::new(Some(k.kid.clone()), Some(k.alg), k.key.clone(), None))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Parses a JWKS document from outside. Keys we cannot use (unsupported type, `use: enc`,
    /// private members, malformed) are skipped and reported; two different keys under one `kid`
    /// refuse the document; the same key twice under one `kid` is kept once.
    pub fn parse(document: &[u8]) -> Result<(Self, Vec<SkippedKey>), JwksError> {
        if document.len() > limits::JWKS_DOCUMENT_BYTES_MAX {
            return Err(JwksError::TooLarge {
                bytes: document.len(),
                max: limits::JWKS_DOCUMENT_BYTES_MAX,
            });
        }
        let obj = json::parse_object(document, "jwks", limits::JOSE_JSON_DEPTH_MAX)?;
        let keys = obj
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NoKeys)?;
        if keys.len() > limits::JWKS_KEYS_MAX {
            return Err(JwksError::TooManyKeys {
                count: keys.len(),
                max: limits::JWKS_KEYS_MAX,
            });
        }
        let mut set = Self::default();
        let mut skipped = Vec::new();
        for k in keys {
            let Some(o) = k.as_object() else {
                skipped.push(SkippedKey {
                    kid: None,
                    reason: JwkError::Missing { member: "kty" },
                });
                continue;
            };
            let kid = o.get("kid").and_then(Value::as_str).map(str::to_owned);
            match entry_from_jwk(o) {
                Ok(entry) => {
                    if let Some(prev) = set
                        .entries
                        .iter()
                        .find(|e| e.kid.is_some() && e.kid == entry.kid)
                    {
                        if prev.key != entry.key {
                            return Err(JwksError::DuplicateKid {
                                kid: kid.unwrap_or_default(),
                            });
                        }
                        continue;
                    }
                    set.entries.push(entry);
                }
                Err(reason) => skipped.push(SkippedKey { kid, reason }),
            }
        }
        Ok((set, skipped))
    }

    /// The entry with `kid`.
    pub fn find(&self, kid: &str) -> Option<&KeySetEntry> {
        self.entries.iter().find(|e| e.kid.as_deref() == Some(kid))
    }

    /// All entries.
    pub fn entries(&self) -> &[KeySetEntry] {
        &self.entries
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn entry_from_jwk(o: &Map<String, Value>) -> Result<KeySetEntry, JwkError> {
    match o.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(other) => {
            return Err(JwkError::Unsupported {
                member: "use",
                value: other.to_string(),
            });
        }
    }
    let alg = match o.get("alg") {
        None => None,
        Some(Value::String(a)) => Some(Alg::from_name(a).ok_or_else(|| JwkError::Unsupported {
            member: "alg",
            value: a.clone(),
        })?),
        Some(_) => return Err(JwkError::Missing { member: "alg" }),
    };
    let kid = match o.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwkError::Missing { member: "kid" }),
    };
    let key = PublicKey::from_jwk(o)?;
    if alg.is_some_and(|a| !key.fits(a)) {
        return Err(JwkError::Unsupported {
            member: "alg",
            value: alg.map(Alg::name).unwrap_or_default().into(),
        });
    }
    KeySetEntry::new(kid, alg, key, Some(o.clone()))
}

/// Our JWKS merged with the primary's, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedJwks {
    /// The JWKS JSON document.
    pub document: String,
    /// Primary kids left out because they collide with one of ours (report these: a primary key
    /// under our kid means a misconfiguration or an attack).
    pub refused_kids: Vec<String>,
}

/// Merges our published keys with the primary's JWKS: ours first, then every primary key whose
/// `kid` is not already present (deduplicated by `kid`); a primary key under one of our kids is
/// refused and reported, never published.
pub fn merge(ours: &[PublicJwk], primary: &KeySet) -> MergedJwks {
    let mut document = String::from(r#"{"keys":["#);
    let mut seen: Vec<&str> = Vec::with_capacity(ours.len() + primary.len());
    let mut refused_kids = Vec::new();
    for k in ours {
        if seen.contains(&k.kid.as_str()) {
            continue;
        }
        if !seen.is_empty() {
            document.push(',');
        }
        document.push_str(&k.to_json());
        seen.push(&k.kid);
    }
    let ours_count = seen.len();
    for e in primary.entries() {
        if let Some(kid) = e.kid.as_deref() {
            if seen.get(..ours_count).is_some_and(|o| o.contains(&kid)) {
                refused_kids.push(kid.to_owned());
                continue;
            }
            if seen.contains(&kid) {
                continue;
            }
            seen.push(kid);
        }
        // serde_json writes a Map deterministically (sorted members); a set built from our own
        // keys has no raw JWK and is written like ours.
        let json = match (&e.raw, &e.kid, e.alg) {
            (Some(raw), _, _) => Value::Object(raw.clone()).to_string(),
            (None, Some(kid), Some(alg)) => PublicJwk {
                key: e.key.clone(),
                kid: kid.clone(),
                alg,
            }
            .to_json(),
            (None, _, _) => continue,
        };
        if document.len() > r#"{"keys":["#.len() {
            document.push(',');
        }
        document.push_str(&json);
    }
    document.push_str("]}");
    MergedJwks {
        document,
        refused_kids,
    }
}

/// What the remote-JWKS cache wants the server to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheAction {
    /// Nothing now.
    Wait,
    /// Fetch the JWKS (then call [`RemoteJwks::on_fetched`] or [`RemoteJwks::on_fetch_failed`]).
    Fetch,
}

/// Timing of a remote JWKS cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// Scheduled refresh interval.
    pub refresh_secs: u64,
    /// Least time between refreshes triggered by unknown `kid`s.
    pub unknown_kid_refresh_secs: u64,
    /// Largest backoff after failures.
    pub failure_backoff_secs_max: u64,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            refresh_secs: limits::JWKS_REFRESH_SECS.default,
            unknown_kid_refresh_secs: limits::JWKS_UNKNOWN_KID_REFRESH_SECS,
            failure_backoff_secs_max: limits::JWKS_FAILURE_BACKOFF_SECS_MAX,
        }
    }
}

/// A cached remote JWKS: serves the last good set for as long as fetching fails (an outage of the
/// primary must not make its already-issued tokens unverifiable), refreshes on schedule and, at a
/// bounded rate, when a token names a `kid` it does not know. Pure: time comes in as `now_secs`,
/// fetching is the caller's job.
#[derive(Debug)]
pub struct RemoteJwks {
    policy: CachePolicy,
    set: Option<std::sync::Arc<KeySet>>,
    fetched_at_secs: Option<u64>,
    last_attempt_secs: Option<u64>,
    last_unknown_kid_fetch_secs: Option<u64>,
    consecutive_failures: u32,
    in_flight: bool,
}

impl RemoteJwks {
    /// An empty cache.
    pub fn new(policy: CachePolicy) -> Self {
        Self {
            policy,
            set: None,
            fetched_at_secs: None,
            last_attempt_secs: None,
            last_unknown_kid_fetch_secs: None,
            consecutive_failures: 0,
            in_flight: false,
        }
    }

    /// The current set, possibly stale, `None` before the first successful fetch.
    pub fn keys(&self) -> Option<std::sync::Arc<KeySet>> {
        self.set.clone()
    }

    /// Seconds since the set was last fetched successfully.
    pub fn age_secs(&self, now_secs: u64) -> Option<u64> {
        self.fetched_at_secs.map(|t| now_secs.saturating_sub(t))
    }

    fn backoff_secs(&self) -> u64 {
        if self.consecutive_failures == 0 {
            return 0;
        }
        let doubling = 1u64
            .checked_shl(self.consecutive_failures.saturating_sub(1))
            .unwrap_or(u64::MAX);
        doubling.min(self.policy.failure_backoff_secs_max)
    }

    fn may_attempt(&self, now_secs: u64) -> bool {
        !self.in_flight
            && self
                .last_attempt_secs
                .is_none_or(|t| now_secs >= t.saturating_add(self.backoff_secs()))
    }

    /// Scheduled check: fetch when empty or due, respecting failure backoff.
    pub fn poll(&mut self, now_secs: u64) -> CacheAction {
        let due = self
            .fetched_at_secs
            .is_none_or(|t| now_secs >= t.saturating_add(self.policy.refresh_secs));
        if due && self.may_attempt(now_secs) {
            self.in_flight = true;
            self.last_attempt_secs = Some(now_secs);
            CacheAction::Fetch
        } else {
            CacheAction::Wait
        }
    }

    /// A token named a `kid` the set lacks: fetch, unless one such fetch happened recently.
    pub fn on_unknown_kid(&mut self, now_secs: u64) -> CacheAction {
        let recent = self
            .last_unknown_kid_fetch_secs
            .is_some_and(|t| now_secs < t.saturating_add(self.policy.unknown_kid_refresh_secs));
        if recent || !self.may_attempt(now_secs) {
            return CacheAction::Wait;
        }
        self.in_flight = true;
        self.last_attempt_secs = Some(now_secs);
        self.last_unknown_kid_fetch_secs = Some(now_secs);
        CacheAction::Fetch
    }

    /// A fetch returned a body. A body that does not parse counts as a failure and keeps the old
    /// set. Returns the skipped keys on success.
    pub fn on_fetched(
        &mut self,
        document: &[u8],
        now_secs: u64,
    ) -> Result<Vec<SkippedKey>, JwksError> {
        self.in_flight = false;
        match KeySet::parse(document) {
            Ok((set, skipped)) => {
                self.set = Some(std::sync::Arc::new(set));
                self.fetched_at_secs = Some(now_secs);
                self.consecutive_failures = 0;
                Ok(skipped)
            }
            Err(e) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                Err(e)
            }
        }
    }

    /// A fetch failed (connect error, timeout, non-200): keep serving the cached set, back off.
    pub fn on_fetch_failed(&mut self, _now_secs: u64) {
        self.in_flight = false;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
    }
}

/// Verifies one signature with a key that is not in any set (a DPoP proof's embedded `jwk`).
pub fn verify_with(key: &PublicKey, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
    KeySetEntry::new(None, None, key.clone(), None).is_ok_and(|e| e.verify(alg, message, signature))
}
