//! The OpenID Shared Signals receiver core (DESIGN §6): a Security Event Token (RFC 8417)
//! pushed by a transmitter (RFC 8935) becomes revocation events, or a typed error with its
//! RFC 8935 §2.3 code. Pure: the server hands in the body, the transmitter's keys (fetched
//! from `[ssf] jwks_uri`, e.g. with `token::jwks::RemoteJwks`), the replay cache and `now`.
//!
//! Checks, in order: content type `application/secevent+jwt`; size; JWS (`typ` pinned to
//! `secevent+jwt`, asymmetric algorithms only — `token::alg::Alg` has no `none` and no HMAC —,
//! key by `kid` from the transmitter's set, signature); `iss` equal to `[ssf] issuer`; `aud`
//! (a string or an array) containing `[ssf] audience`; `iat` within `[ssf] iat_window_secs`
//! of now; `jti` present and not already acted on; then the `events` claim.
//!
//! Event types mapped (subject from the event's `subject`, else the SET's `sub_id`, else a
//! plain `sub` as the user; see [`subject`] for RFC 9493 formats):
//!
//! | event type | revocation kind |
//! |---|---|
//! | CAEP `session-revoked` | `sessions_revoked` |
//! | CAEP `credential-change` (any `change_type`: fail closed) | `credential_change` |
//! | CAEP `device-compliance-change`, `current_status: not-compliant` | `device_not_compliant` |
//! | CAEP `device-compliance-change`, `compliant` | nothing (ignored) |
//! | CAEP `assurance-level-change`, `change_direction: decrease` or absent | `assurance_downgraded` |
//! | CAEP `assurance-level-change`, `increase` | nothing (ignored) |
//! | CAEP `token-claims-change` | `token_claims_changed` |
//! | RISC `account-disabled` | `account_disabled` |
//! | RISC `account-purged` | `account_deleted` |
//! | RISC `account-credential-change-required` | `credential_change` |
//! | RISC `sessions-revoked` | `sessions_revoked` |
//!
//! Any other event type is accepted and ignored (RFC 8935 §2: the recipient acknowledges a SET
//! it validated; RFC 8417 §2.2: a recipient ignores event types it does not understand).
//!
//! An event's time is its `event_timestamp` when present, capped at `iat` (a transmitter
//! clock ahead of its own `iat` must not deny snapshots recorded after the SET); else `iat`.
//! Event ids are `<jti>/<n>`, so a redelivered SET yields the same, idempotent events.
//!
//! A `jti` already acted on answers [`Received::duplicate`] with no events, and the server
//! acknowledges it (202): a transmitter that lost our first 202 stops retrying, and nothing is
//! done twice. The server calls [`JtiCache::remember`] once the events are durable.

mod replay;
pub mod subject;

use serde_json::{Map, Value};

pub use replay::JtiCache;

use crate::config::SsfConfig;
use crate::limits::{
    JOSE_JSON_DEPTH_MAX, SSF_EVENTS_PER_SET_MAX, SSF_JTI_BYTES_MAX, SSF_SET_BYTES_MAX,
};
use crate::revocation::{EventKind, RevocationEvent, Source, Subject};
use crate::token::alg::{Alg, Typ};
use crate::token::jwks::KeySet;
use crate::token::jws::{self, JwsError, JwtPolicy, TypRule};

/// The media type of a pushed SET (RFC 8417 §7.2, RFC 8935 §2).
pub const SET_CONTENT_TYPE: &str = "application/secevent+jwt";

/// Algorithms a transmitter may sign with: asymmetric only.
const SET_ALGS: &[Alg] = &[Alg::Rs256, Alg::Ps256, Alg::Es256, Alg::EdDsa];

const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

/// An RFC 8935 §2.3 error code (IANA "Security Event Token Error Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SsfErrorCode {
    /// The body is not a SET we can parse, or an event payload does not conform.
    InvalidRequest,
    /// The key that signed the SET is unknown or unacceptable, or the signature is wrong.
    InvalidKey,
    /// The SET's issuer is not our transmitter.
    InvalidIssuer,
    /// The SET's audience is not us.
    InvalidAudience,
    /// The transmitter could not be authenticated.
    AuthenticationFailed,
    /// The transmitter may not send us this SET.
    AccessDenied,
}

impl SsfErrorCode {
    /// The `err` value on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidKey => "invalid_key",
            Self::InvalidIssuer => "invalid_issuer",
            Self::InvalidAudience => "invalid_audience",
            Self::AuthenticationFailed => "authentication_failed",
            Self::AccessDenied => "access_denied",
        }
    }
}

/// Why a pushed SET was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsfError {
    /// The `Content-Type` is not `application/secevent+jwt`.
    #[error("content type must be application/secevent+jwt")]
    ContentType,
    /// The body is over `limits::SSF_SET_BYTES_MAX`.
    #[error("SET of {bytes} bytes exceeds {max}")]
    TooLarge {
        /// The body size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The JWS or its signature failed (the token engine's reason).
    #[error("SET rejected: {0}")]
    Jws(JwsError),
    /// `iat` is missing or outside the window.
    #[error("SET iat is missing or outside the accepted window")]
    Iat,
    /// `jti` is missing, empty or too long.
    #[error("SET jti is missing or malformed")]
    Jti,
    /// The `events` claim is missing, not an object, empty or has too many members.
    #[error("SET events claim is missing or malformed")]
    Events,
    /// An event we map has a payload that does not conform (named by its type's last segment).
    #[error("{event_type} event payload is malformed: {problem}")]
    Payload {
        /// The event type's last path segment (e.g. `device-compliance-change`).
        event_type: &'static str,
        /// What was wrong.
        problem: String,
    },
}

impl SsfError {
    /// The RFC 8935 §2.3 code: signature and key problems are `invalid_key`, a wrong `iss`
    /// `invalid_issuer`, a wrong `aud` `invalid_audience`, everything else `invalid_request`.
    pub fn code(&self) -> SsfErrorCode {
        match self {
            Self::Jws(e) => match e {
                JwsError::Issuer => SsfErrorCode::InvalidIssuer,
                JwsError::Audience => SsfErrorCode::InvalidAudience,
                JwsError::AlgNone
                | JwsError::UnsupportedAlg { .. }
                | JwsError::AlgNotAllowed { .. }
                | JwsError::UnknownKid { .. }
                | JwsError::NoKid { .. }
                | JwsError::KeyMismatch { .. }
                | JwsError::Jwk(_)
                | JwsError::BadSignature => SsfErrorCode::InvalidKey,
                _ => SsfErrorCode::InvalidRequest,
            },
            _ => SsfErrorCode::InvalidRequest,
        }
    }

    /// Whether the SET named a `kid` the transmitter's key set lacks: the server should
    /// refresh the JWKS (`RemoteJwks::on_unknown_kid`) and let the transmitter retry.
    pub fn is_unknown_kid(&self) -> bool {
        matches!(self, Self::Jws(JwsError::UnknownKid { .. }))
    }

    /// The HTTP status: always 400 (RFC 8935 §2.3).
    pub const fn http_status(&self) -> u16 {
        400
    }

    /// The response body `{"err": code, "description": ...}` (RFC 8935 §2.3). The description
    /// is ours; the most it quotes from the SET is an unsupported subject format's name, cut
    /// to 64 characters and JSON-escaped.
    pub fn to_json(&self) -> String {
        let description = match self {
            // The token engine's messages can quote a `kid` or `typ` from the SET; keep the
            // category only.
            Self::Jws(_) => match self.code() {
                SsfErrorCode::InvalidKey => "SET signature or key rejected",
                SsfErrorCode::InvalidIssuer => "SET issuer is not the configured transmitter",
                SsfErrorCode::InvalidAudience => "SET audience does not include this receiver",
                _ => "SET is not a valid secevent+jwt",
            }
            .to_owned(),
            other => other.to_string(),
        };
        serde_json::json!({ "err": self.code().as_str(), "description": description }).to_string()
    }
}

/// A verified SET's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The SET's `jti`.
    pub jti: String,
    /// When the `jti` may be forgotten (`iat` + window): pass to [`JtiCache::remember`].
    pub jti_expires_at_secs: i64,
    /// The revocation events to make durable and insert.
    pub events: Vec<RevocationEvent>,
    /// Event types accepted and ignored (unknown, or a change that revokes nothing).
    pub ignored: Vec<String>,
    /// The `jti` was already acted on: acknowledge, do nothing.
    pub duplicate: bool,
}

/// Verifies one pushed SET and maps its events. `content_type` is the request's
/// `Content-Type` header, if any.
pub fn receive(
    body: &[u8],
    content_type: Option<&str>,
    keys: &KeySet,
    config: &SsfConfig,
    replay: &JtiCache,
    now_secs: i64,
) -> Result<Received, SsfError> {
    if !is_set_content_type(content_type) {
        return Err(SsfError::ContentType);
    }
    if body.len() > SSF_SET_BYTES_MAX {
        return Err(SsfError::TooLarge {
            bytes: body.len(),
            max: SSF_SET_BYTES_MAX,
        });
    }
    let policy = JwtPolicy {
        typ: TypRule::Exactly(Typ::SeceventJwt),
        algs: SET_ALGS,
        leeway_secs: config.iat_window_secs,
        // RFC 8417 SETs need not expire; `iat` bounds their age instead.
        require_exp: false,
        issuer: Some(&config.issuer),
        audience: Some(&config.audience),
    };
    let now_u64 = u64::try_from(now_secs).unwrap_or(0);
    let verified = jws::verify_jwt(body, keys, &policy, now_u64).map_err(SsfError::Jws)?;
    let claims = &verified.claims;

    let window = i64::try_from(config.iat_window_secs).unwrap_or(i64::MAX);
    // NumericDate may be fractional (RFC 7519 §2): whole seconds are enough here.
    let iat = claims
        .get("iat")
        .and_then(|v| {
            v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f as i64)
            })
        })
        .ok_or(SsfError::Iat)?;
    if now_secs.saturating_sub(iat).abs() > window {
        return Err(SsfError::Iat);
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= SSF_JTI_BYTES_MAX)
        .ok_or(SsfError::Jti)?;
    let jti_expires_at_secs = iat.saturating_add(window).saturating_add(1);
    if replay.contains(jti, now_secs) {
        return Ok(Received {
            jti: jti.to_owned(),
            jti_expires_at_secs,
            events: Vec::new(),
            ignored: Vec::new(),
            duplicate: true,
        });
    }

    let events = claims
        .get("events")
        .and_then(Value::as_object)
        .filter(|e| !e.is_empty() && e.len() <= SSF_EVENTS_PER_SET_MAX)
        .ok_or(SsfError::Events)?;
    let mut received = Received {
        jti: jti.to_owned(),
        jti_expires_at_secs,
        events: Vec::new(),
        ignored: Vec::new(),
        duplicate: false,
    };
    for (event_type, payload) in events {
        let Some((short, kind)) = mapped(event_type, payload)? else {
            received
                .ignored
                .push(event_type.chars().take(256).collect());
            continue;
        };
        let payload = payload
            .as_object()
            .ok_or_else(|| payload_error(short, "not an object"))?;
        let subject = event_subject(claims, payload, short)?;
        let time_secs = match payload.get("event_timestamp") {
            None => iat,
            Some(value) => value
                .as_i64()
                .ok_or_else(|| payload_error(short, "event_timestamp is not an integer"))?
                .min(iat),
        };
        let n = received.events.len();
        received.events.push(RevocationEvent {
            id: format!("{jti}/{n}"),
            kind,
            subject,
            time_secs,
            source: Source::SharedSignals,
        });
    }
    Ok(received)
}

/// Parses `application/secevent+jwt`, case-insensitively, parameters allowed.
fn is_set_content_type(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(SET_CONTENT_TYPE))
}

fn payload_error(event_type: &'static str, problem: &str) -> SsfError {
    SsfError::Payload {
        event_type,
        problem: problem.to_owned(),
    }
}

/// The revocation kind an event maps to: `None` to ignore it. The `&'static str` names the
/// type for errors.
fn mapped(
    event_type: &str,
    payload: &Value,
) -> Result<Option<(&'static str, EventKind)>, SsfError> {
    if let Some(name) = event_type.strip_prefix(CAEP) {
        return Ok(match name {
            "session-revoked" => Some(("session-revoked", EventKind::SessionsRevoked)),
            "credential-change" => Some(("credential-change", EventKind::CredentialChange)),
            "token-claims-change" => Some(("token-claims-change", EventKind::TokenClaimsChanged)),
            "device-compliance-change" => {
                let short = "device-compliance-change";
                match payload.get("current_status").and_then(Value::as_str) {
                    Some("not-compliant") => Some((short, EventKind::DeviceNotCompliant)),
                    Some("compliant") => None,
                    _ => {
                        return Err(payload_error(
                            short,
                            "current_status must be \"compliant\" or \"not-compliant\"",
                        ));
                    }
                }
            }
            "assurance-level-change" => {
                let short = "assurance-level-change";
                match payload.get("change_direction").map(Value::as_str) {
                    Some(Some("increase")) => None,
                    // Without a direction, levels of an arbitrary namespace cannot be
                    // compared: treat it as a downgrade (fail closed).
                    None | Some(Some("decrease")) => Some((short, EventKind::AssuranceDowngraded)),
                    Some(_) => {
                        return Err(payload_error(
                            short,
                            "change_direction must be \"increase\" or \"decrease\"",
                        ));
                    }
                }
            }
            _ => None,
        });
    }
    if let Some(name) = event_type.strip_prefix(RISC) {
        return Ok(match name {
            "account-disabled" => Some(("account-disabled", EventKind::AccountDisabled)),
            "account-purged" => Some(("account-purged", EventKind::AccountDeleted)),
            "account-credential-change-required" => Some((
                "account-credential-change-required",
                EventKind::CredentialChange,
            )),
            "sessions-revoked" => Some(("sessions-revoked", EventKind::SessionsRevoked)),
            _ => None,
        });
    }
    Ok(None)
}

/// The subject of one event: its own `subject` member (CAEP and RISC drafts), else the SET's
/// `sub_id` (SSF 1.0), else a plain `sub` claim (RFC 8417 §2.2 allows one): the user.
fn event_subject(
    claims: &Map<String, Value>,
    payload: &Map<String, Value>,
    event_type: &'static str,
) -> Result<Subject, SsfError> {
    let identifier = payload.get("subject").or_else(|| claims.get("sub_id"));
    match (identifier, claims.get("sub")) {
        (Some(identifier), _) => {
            subject::subject_of(identifier).map_err(|e| payload_error(event_type, &e.to_string()))
        }
        (None, Some(Value::String(sub)))
            if !sub.is_empty() && sub.len() <= crate::limits::SSF_STRING_BYTES_MAX =>
        {
            Ok(Subject::User(sub.clone()))
        }
        _ => Err(payload_error(event_type, "no subject, sub_id or sub")),
    }
}

// Keep the JSON depth bound the token engine applies in mind: a SET's claims are parsed by
// `token::json` with `JOSE_JSON_DEPTH_MAX`, deep enough for complex subjects (depth 4).
const _: () = assert!(JOSE_JSON_DEPTH_MAX >= 6);
