//! JWS compact parsing and JWT verification for tokens from outside: the primary's tokens,
//! `private_key_jwt` client assertions and Security Event Tokens.
//!
//! Order matters (RFC 8725): bound the size, split, decode, parse the header strictly, refuse
//! unknown or disallowed algorithms, pin `typ`, pick the key by `kid` and check it fits the
//! algorithm, verify the signature, and only then look at the claims.

use serde_json::{Map, Value};

use crate::limits;
use crate::token::alg::{Alg, Typ};
use crate::token::b64::{self, B64Error};
use crate::token::json::{self, JsonError};
use crate::token::jwk::{JwkError, PublicKey};
use crate::token::jwks::{KeySet, KeySetEntry};

/// Why a JWS or JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Longer than the limit for this kind of token.
    #[error("token of {bytes} bytes exceeds {max}")]
    TooLarge {
        /// Size.
        bytes: usize,
        /// Limit.
        max: usize,
    },
    /// Not three dot-separated segments.
    #[error("JWS compact form needs 3 segments, found {segments}")]
    Segments {
        /// Segments found (5 means a JWE).
        segments: usize,
    },
    /// A segment is not strict base64url.
    #[error(transparent)]
    Base64(#[from] B64Error),
    /// Decoded header over `limits::JOSE_HEADER_BYTES_MAX`.
    #[error("JOSE header of {bytes} bytes exceeds {max}")]
    HeaderTooLarge {
        /// Size.
        bytes: usize,
        /// Limit.
        max: usize,
    },
    /// Header or claims not strict JSON.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// A header member of the wrong type or missing.
    #[error("JOSE header member {member:?} missing or malformed")]
    HeaderMember {
        /// The member.
        member: &'static str,
    },
    /// `alg: none` (RFC 8725 §3.2; RFC 7515 A.5).
    #[error("alg \"none\" is never accepted")]
    AlgNone,
    /// An algorithm we do not implement (HS256 and friends land here).
    #[error("unsupported alg {alg:?}")]
    UnsupportedAlg {
        /// The name.
        alg: String,
    },
    /// An algorithm we implement but the caller does not allow here.
    #[error("alg {alg} not allowed here")]
    AlgNotAllowed {
        /// The algorithm.
        alg: &'static str,
    },
    /// `crit` names extensions we do not understand (RFC 7515 §4.1.11), or `b64: false`.
    #[error("critical header extension not understood")]
    Crit,
    /// `typ` is not the expected one.
    #[error("typ {found:?} where {expected} expected")]
    Typ {
        /// What the header said.
        found: Option<String>,
        /// What was expected.
        expected: &'static str,
    },
    /// `kid` not in the key set (a cache may refresh and retry).
    #[error("kid {kid:?} not in key set")]
    UnknownKid {
        /// The kid.
        kid: String,
    },
    /// No `kid` and more than one key could apply, or none.
    #[error("no kid and no single key for alg {alg}")]
    NoKid {
        /// The algorithm.
        alg: &'static str,
    },
    /// The key named by `kid` is of another type than `alg` needs, or pins another `alg`.
    #[error("key {kid:?} does not fit alg {alg}")]
    KeyMismatch {
        /// The kid.
        kid: String,
        /// The algorithm.
        alg: &'static str,
    },
    /// The embedded `jwk` was refused.
    #[error("embedded jwk: {0}")]
    Jwk(#[from] JwkError),
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("expired at {exp_secs} (now {now_secs})")]
    Expired {
        /// `exp`.
        exp_secs: u64,
        /// Now.
        now_secs: u64,
    },
    /// `nbf` is in the future (beyond the leeway).
    #[error("not valid before {nbf_secs} (now {now_secs})")]
    NotYetValid {
        /// `nbf`.
        nbf_secs: u64,
        /// Now.
        now_secs: u64,
    },
    /// A required claim is missing or has the wrong type.
    #[error("claim {claim:?} missing or malformed")]
    Claim {
        /// The claim.
        claim: &'static str,
    },
    /// `iss` is not the expected issuer.
    #[error("issuer mismatch")]
    Issuer,
    /// `aud` does not contain the expected audience.
    #[error("audience mismatch")]
    Audience,
}

/// A parsed JOSE header (the members we act on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Algorithm.
    pub alg: Alg,
    /// `typ`, raw, if present.
    pub typ: Option<String>,
    /// `kid`, if present.
    pub kid: Option<String>,
    /// Embedded public key (DPoP), if present.
    pub jwk: Option<PublicKey>,
}

/// A JWS split and decoded, signature not yet checked.
#[derive(Debug, Clone)]
pub struct Jws<'a> {
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a [u8],
    /// The header.
    pub header: Header,
    /// Decoded payload.
    pub payload: Vec<u8>,
    /// Decoded signature.
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS, with every structural check and none of the cryptographic
/// ones. `bytes_max` is the size limit for this kind of token.
pub fn parse_compact(token: &[u8], bytes_max: usize) -> Result<Jws<'_>, JwsError> {
    if token.len() > bytes_max {
        return Err(JwsError::TooLarge {
            bytes: token.len(),
            max: bytes_max,
        });
    }
    let mut dots = token
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'.')
        .map(|(i, _)| i);
    let (Some(d1), Some(d2), None) = (dots.next(), dots.next(), dots.next()) else {
        let segments = token.iter().filter(|b| **b == b'.').count() + 1;
        return Err(JwsError::Segments { segments });
    };
    let seg = |r: std::ops::Range<usize>| token.get(r).unwrap_or(b"");
    let header_b64 = seg(0..d1);
    // base64 of the header limit, so a huge header is refused before decoding.
    if header_b64.len() > b64::encoded_len(limits::JOSE_HEADER_BYTES_MAX) {
        return Err(JwsError::HeaderTooLarge {
            bytes: header_b64.len() * 3 / 4,
            max: limits::JOSE_HEADER_BYTES_MAX,
        });
    }
    let header_bytes = b64::decode(header_b64, "header")?;
    let payload = b64::decode(seg(d1 + 1..d2), "payload")?;
    let signature = b64::decode(seg(d2 + 1..token.len()), "signature")?;
    let header = parse_header(&header_bytes)?;
    Ok(Jws {
        signing_input: seg(0..d2),
        header,
        payload,
        signature,
    })
}

fn parse_header(bytes: &[u8]) -> Result<Header, JwsError> {
    let h = json::parse_object(bytes, "header", limits::JOSE_JSON_DEPTH_MAX)?;
    let alg_name = h
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwsError::HeaderMember { member: "alg" })?;
    if alg_name.eq_ignore_ascii_case("none") {
        return Err(JwsError::AlgNone);
    }
    let alg = Alg::from_name(alg_name).ok_or_else(|| JwsError::UnsupportedAlg {
        alg: alg_name.to_owned(),
    })?;
    // We understand no extension, so any `crit` must be refused; `b64: false` (RFC 7797) changes
    // what the signature covers and is refused too.
    if h.contains_key("crit") || h.contains_key("b64") {
        return Err(JwsError::Crit);
    }
    let opt_str = |member: &'static str| -> Result<Option<String>, JwsError> {
        match h.get(member) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(JwsError::HeaderMember { member }),
        }
    };
    let typ = opt_str("typ")?;
    let kid = opt_str("kid")?;
    let jwk = match h.get("jwk") {
        None => None,
        Some(Value::Object(o)) => Some(PublicKey::from_jwk(o)?),
        Some(_) => return Err(JwsError::HeaderMember { member: "jwk" }),
    };
    Ok(Header { alg, typ, kid, jwk })
}

/// Which `typ` a verifier accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypRule {
    /// Exactly this type (`at+jwt`, `dpop+jwt`, `secevent+jwt`).
    Exactly(Typ),
    /// `JWT` or no `typ` at all (ID tokens, most providers' access tokens, client assertions);
    /// any explicit other type is refused, so a DPoP proof or SET never passes as one of these.
    JwtOrAbsent,
}

impl TypRule {
    fn check(self, typ: Option<&str>) -> Result<(), JwsError> {
        let parsed = typ.map(Typ::from_header);
        let ok = match (self, parsed) {
            (Self::Exactly(want), Some(Some(got))) => want == got,
            (Self::JwtOrAbsent, None | Some(Some(Typ::Jwt))) => true,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            let expected = match self {
                Self::Exactly(t) => t.name(),
                Self::JwtOrAbsent => "JWT or none",
            };
            Err(JwsError::Typ {
                found: typ.map(str::to_owned),
                expected,
            })
        }
    }
}

/// What a JWT must satisfy besides its signature.
#[derive(Debug, Clone, Copy)]
pub struct JwtPolicy<'a> {
    /// Accepted `typ`.
    pub typ: TypRule,
    /// Accepted algorithms (pin what the issuer uses).
    pub algs: &'a [Alg],
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Whether `exp` must be present (true for every token type we verify today).
    pub require_exp: bool,
    /// Expected `iss`, if checked here.
    pub issuer: Option<&'a str>,
    /// Audience that `aud` must contain, if checked here.
    pub audience: Option<&'a str>,
}

/// A JWT whose signature, `typ`, algorithm and time claims checked out.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    /// The header.
    pub header: Header,
    /// The claims.
    pub claims: Map<String, Value>,
    /// Raw payload bytes (a template can be built from them).
    pub payload: Vec<u8>,
}

/// Picks the key for `header` from `keys`: by `kid`, or the single fitting key when there is no
/// `kid`. The key must fit the algorithm (RFC 8725 §3.1).
pub fn select_key<'k>(keys: &'k KeySet, header: &Header) -> Result<&'k KeySetEntry, JwsError> {
    match &header.kid {
        Some(kid) => {
            let e = keys
                .find(kid)
                .ok_or_else(|| JwsError::UnknownKid { kid: kid.clone() })?;
            if !e.accepts(header.alg) {
                return Err(JwsError::KeyMismatch {
                    kid: kid.clone(),
                    alg: header.alg.name(),
                });
            }
            Ok(e)
        }
        None => {
            let mut fitting = keys.entries().iter().filter(|e| e.accepts(header.alg));
            match (fitting.next(), fitting.next()) {
                (Some(e), None) => Ok(e),
                _ => Err(JwsError::NoKid {
                    alg: header.alg.name(),
                }),
            }
        }
    }
}

/// Verifies a compact JWT against `keys` at `now_secs`.
pub fn verify_jwt(
    token: &[u8],
    keys: &KeySet,
    policy: &JwtPolicy<'_>,
    now_secs: u64,
) -> Result<VerifiedJwt, JwsError> {
    let jws = parse_compact(token, limits::JWS_COMPACT_BYTES_MAX)?;
    let h = &jws.header;
    if !policy.algs.contains(&h.alg) {
        return Err(JwsError::AlgNotAllowed { alg: h.alg.name() });
    }
    policy.typ.check(h.typ.as_deref())?;
    let key = select_key(keys, h)?;
    if !key.verify(h.alg, jws.signing_input, &jws.signature) {
        return Err(JwsError::BadSignature);
    }
    let claims = json::parse_object(&jws.payload, "claims", limits::JOSE_JSON_DEPTH_MAX)?;
    check_times(&claims, policy, now_secs)?;
    // Written without nested `if let` so the code reads the same under MSRV 1.85 and 1.88.
    if policy
        .issuer
        .is_some_and(|iss| claims.get("iss").and_then(Value::as_str) != Some(iss))
    {
        return Err(JwsError::Issuer);
    }
    if let Some(aud) = policy.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == aud,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err(JwsError::Audience);
        }
    }
    Ok(VerifiedJwt {
        header: jws.header,
        claims,
        payload: jws.payload,
    })
}

fn time_claim(claims: &Map<String, Value>, claim: &'static str) -> Result<Option<u64>, JwsError> {
    match claims.get(claim) {
        None => Ok(None),
        // NumericDate may be fractional (RFC 7519 §2); we compare whole seconds, rounding toward
        // the stricter side is not needed with a leeway of seconds.
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or(JwsError::Claim { claim }),
    }
}

fn check_times(
    claims: &Map<String, Value>,
    policy: &JwtPolicy<'_>,
    now_secs: u64,
) -> Result<(), JwsError> {
    match time_claim(claims, "exp")? {
        Some(exp_secs) if now_secs >= exp_secs.saturating_add(policy.leeway_secs) => {
            return Err(JwsError::Expired { exp_secs, now_secs });
        }
        None if policy.require_exp => return Err(JwsError::Claim { claim: "exp" }),
        _ => {}
    }
    match time_claim(claims, "nbf")? {
        Some(nbf_secs) if now_secs.saturating_add(policy.leeway_secs) < nbf_secs => {
            return Err(JwsError::NotYetValid { nbf_secs, now_secs });
        }
        _ => {}
    }
    time_claim(claims, "iat")?;
    Ok(())
}
