//! From a primary's 200 token response to what the store records: verify the tokens against the
//! primary's keys, cut the claim templates, read identity and policy facts from the claims, and
//! link the new refresh token to its family. Pure: no clock, no I/O, no randomness of its own.
//!
//! Copy, don't assume (FIELD-NOTES): `auth_time`, `acr`, `amr` may live in the ID token only, an
//! access token may have no `nbf`, and a refreshed response may carry no ID token at all.

use serde_json::{Map, Value};

use super::{
    CapturedGrantType, DEVICE_PREFIX_FAMILY, DEVICE_PREFIX_HEADER, DEVICE_PREFIX_JKT, GrantCapture,
};
use crate::config::CaptureConfig;
use crate::limits;
use crate::store::model::{TIME_CLAIM_EXP, TIME_CLAIM_IAT, TIME_CLAIM_JTI, TIME_CLAIM_NBF};
use crate::store::{
    ArtifactDigest, ArtifactKind, ArtifactRecord, ArtifactState, ClientAuthMethod,
    DeviceCompliance, RiskLevel, SessionIdentity, SessionSnapshot, TokenTemplate,
};
use crate::token::alg::{Alg, SigningAlg, Typ};
use crate::token::json;
use crate::token::jwks::{self, KeySet};
use crate::token::jws::{self, JwsError, JwtPolicy, TypRule, VerifiedJwt};
use crate::token::mint::{self, PrimaryTokenShape, Template, TemplateMeta, TimeClaims};

/// Why a response was not captured. Each is a label of `backstop_capture_skipped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Skip {
    /// The body is over `limits::CAPTURE_RESPONSE_BYTES_MAX`.
    #[error("response_too_large")]
    ResponseTooLarge,
    /// The body is not a strict JSON object with string tokens.
    #[error("malformed_response")]
    MalformedResponse,
    /// No `refresh_token`: nothing a client could present to the backup later.
    #[error("no_refresh_token")]
    NoRefreshToken,
    /// The access token is not a JWS: backstop cannot mint an equivalent.
    #[error("opaque_access_token")]
    OpaqueAccessToken,
    /// A token's signature does not verify with the primary's key.
    #[error("bad_signature")]
    BadSignature,
    /// A token's `iss` is not the configured issuer.
    #[error("issuer_mismatch")]
    IssuerMismatch,
    /// A token names a key the primary's key set does not hold (or no fitting key).
    #[error("unknown_key")]
    UnknownKey,
    /// A token is signed with an algorithm backstop cannot reproduce (PS256) or refuses.
    #[error("unsupported_alg")]
    UnsupportedAlg,
    /// A token's `typ` is not one of its kind (`at+jwt` / `JWT` / none).
    #[error("token_typ")]
    TokenTyp,
    /// A token is expired or not yet valid.
    #[error("token_time")]
    TokenTime,
    /// A token is structurally broken or its claims are malformed.
    #[error("malformed_token")]
    MalformedToken,
    /// The ID token's `aud` does not contain the client.
    #[error("id_token_audience")]
    IdTokenAudience,
    /// A claim template could not be cut (size, lifetime, time claim types).
    #[error("template")]
    Template,
    /// None of `capture.user_claims` is present.
    #[error("no_user")]
    NoUser,
    /// More than one RFC 8707 `resource`: one snapshot cannot stand for several audiences.
    #[error("multiple_resources")]
    MultipleResources,
    /// The groups claim overflowed into `_claim_names` (Entra overage): groups unknown.
    #[error("groups_overage")]
    GroupsOverage,
    /// A list claim (`amr`, groups, roles) is over `limits::CAPTURE_CLAIM_VALUES_MAX`.
    #[error("too_many_values")]
    TooManyValues,
    /// An identifier (user, tenant, resource, `acr`, ...) is over its byte limit.
    #[error("value_too_long")]
    ValueTooLong,
    /// `token_type` is DPoP but no key thumbprint is known (no `cnf.jkt`, no verified proof).
    #[error("dpop_unbound")]
    DpopUnbound,
    /// No random source for a new family id.
    #[error("no_randomness")]
    NoRandomness,
    /// The primary's key set has not been fetched yet.
    #[error("no_primary_keys")]
    NoPrimaryKeys,
}

impl Skip {
    /// Every reason, in label order (for rendering zero counters).
    pub const ALL: [Skip; 21] = [
        Skip::ResponseTooLarge,
        Skip::MalformedResponse,
        Skip::NoRefreshToken,
        Skip::OpaqueAccessToken,
        Skip::BadSignature,
        Skip::IssuerMismatch,
        Skip::UnknownKey,
        Skip::UnsupportedAlg,
        Skip::TokenTyp,
        Skip::TokenTime,
        Skip::MalformedToken,
        Skip::IdTokenAudience,
        Skip::Template,
        Skip::NoUser,
        Skip::MultipleResources,
        Skip::GroupsOverage,
        Skip::TooManyValues,
        Skip::ValueTooLong,
        Skip::DpopUnbound,
        Skip::NoRandomness,
        Skip::NoPrimaryKeys,
    ];

    /// Position in [`Skip::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::ResponseTooLarge => "response_too_large",
            Skip::MalformedResponse => "malformed_response",
            Skip::NoRefreshToken => "no_refresh_token",
            Skip::OpaqueAccessToken => "opaque_access_token",
            Skip::BadSignature => "bad_signature",
            Skip::IssuerMismatch => "issuer_mismatch",
            Skip::UnknownKey => "unknown_key",
            Skip::UnsupportedAlg => "unsupported_alg",
            Skip::TokenTyp => "token_typ",
            Skip::TokenTime => "token_time",
            Skip::MalformedToken => "malformed_token",
            Skip::IdTokenAudience => "id_token_audience",
            Skip::Template => "template",
            Skip::NoUser => "no_user",
            Skip::MultipleResources => "multiple_resources",
            Skip::GroupsOverage => "groups_overage",
            Skip::TooManyValues => "too_many_values",
            Skip::ValueTooLong => "value_too_long",
            Skip::DpopUnbound => "dpop_unbound",
            Skip::NoRandomness => "no_randomness",
            Skip::NoPrimaryKeys => "no_primary_keys",
        }
    }
}

/// What [`derive()`] needs besides the job: the primary's keys, the claim configuration, the
/// issuer, and the store's keyed digest for refresh tokens.
pub struct DeriveContext<'a> {
    /// The primary's signing keys.
    pub keys: &'a KeySet,
    /// `[capture]`.
    pub cfg: &'a CaptureConfig,
    /// The configured issuer: every captured token's `iss` must equal it.
    pub issuer: &'a str,
    /// Keyed digest of a raw refresh token (`Store::artifact_digest` with
    /// `ArtifactKind::RefreshToken`).
    pub refresh_digest: &'a dyn Fn(&[u8]) -> ArtifactDigest,
}

/// What one captured response writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The session snapshot (replaces the one of the same identity).
    pub snapshot: SessionSnapshot,
    /// The new refresh token's record (state `Current`, or `Revoked` when the primary echoed a
    /// token the backup had already revoked: revocation is sticky).
    pub artifact: ArtifactRecord,
    /// The presented token's record rewritten as `Superseded { successor }` after a rotation.
    pub superseded: Option<ArtifactRecord>,
    /// The client secret the primary accepted (`client_secret_basic` / `_post`).
    pub client_secret: Option<ArtifactRecord>,
}

/// The token endpoint response members capture reads (RFC 6749 §5.1, OIDC Core §3.1.3.3).
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'a str,
    refresh_token: &'a str,
    scope: Option<&'a str>,
    id_token: Option<&'a str>,
    refresh_token_expires_in: Option<i64>,
}

fn parse_response(obj: &Map<String, Value>) -> Result<TokenResponse<'_>, Skip> {
    let string = |member: &str| match obj.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(Skip::MalformedResponse),
    };
    let refresh_token = string("refresh_token")?.ok_or(Skip::NoRefreshToken)?;
    let access_token = string("access_token")?.ok_or(Skip::MalformedResponse)?;
    let token_type = string("token_type")?.ok_or(Skip::MalformedResponse)?;
    // Entra sends `refresh_token_expires_in` with some grants; a string form is tolerated.
    let refresh_token_expires_in = match obj.get("refresh_token_expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_i64().ok_or(Skip::MalformedResponse)?),
        Some(Value::String(s)) => Some(s.parse::<i64>().map_err(|_| Skip::MalformedResponse)?),
        Some(_) => return Err(Skip::MalformedResponse),
    };
    Ok(TokenResponse {
        access_token,
        token_type,
        refresh_token,
        scope: string("scope")?,
        id_token: string("id_token")?,
        refresh_token_expires_in,
    })
}

/// Every algorithm a primary may sign with that we verify; `none` and HS* are not in `Alg`.
const PRIMARY_ALGS: [Alg; 4] = [Alg::EdDsa, Alg::Es256, Alg::Rs256, Alg::Ps256];

fn skip_of(e: &JwsError) -> Skip {
    match e {
        JwsError::BadSignature => Skip::BadSignature,
        JwsError::Issuer => Skip::IssuerMismatch,
        JwsError::Audience => Skip::IdTokenAudience,
        JwsError::UnknownKid { .. } | JwsError::NoKid { .. } | JwsError::KeyMismatch { .. } => {
            Skip::UnknownKey
        }
        JwsError::AlgNone | JwsError::UnsupportedAlg { .. } | JwsError::AlgNotAllowed { .. } => {
            Skip::UnsupportedAlg
        }
        JwsError::Typ { .. } => Skip::TokenTyp,
        JwsError::Expired { .. } | JwsError::NotYetValid { .. } => Skip::TokenTime,
        _ => Skip::MalformedToken,
    }
}

fn verify(
    token: &str,
    ctx: &DeriveContext<'_>,
    typ: TypRule,
    audience: Option<&str>,
    now_secs: u64,
) -> Result<VerifiedJwt, Skip> {
    let policy = JwtPolicy {
        typ,
        algs: &PRIMARY_ALGS,
        leeway_secs: limits::JWT_LEEWAY_SECS.default,
        require_exp: true,
        issuer: Some(ctx.issuer),
        audience,
    };
    jws::verify_jwt(token.as_bytes(), ctx.keys, &policy, now_secs).map_err(|e| skip_of(&e))
}

fn template_of(v: &VerifiedJwt, now_secs: u64) -> Result<TokenTemplate, Skip> {
    let shape = PrimaryTokenShape::from_header(&v.header).ok_or(Skip::UnsupportedAlg)?;
    let t = mint::build_template(&v.payload, shape, now_secs).map_err(|_| Skip::Template)?;
    Ok(template_to_store(t))
}

/// A built template as the store keeps it.
pub fn template_to_store(t: Template) -> TokenTemplate {
    let tc = t.meta.time_claims;
    let bit = |on: bool, b: u8| if on { b } else { 0 };
    TokenTemplate {
        claims_json: t.claims,
        time_claims: bit(tc.iat, TIME_CLAIM_IAT)
            | bit(tc.nbf, TIME_CLAIM_NBF)
            | bit(tc.exp, TIME_CLAIM_EXP)
            | bit(tc.jti, TIME_CLAIM_JTI),
        lifetime_secs: t.meta.lifetime_secs,
        alg: t.meta.alg.name().to_string(),
        typ: t.meta.typ.map_or("", Typ::name).to_string(),
        nbf_offset_secs: t.meta.nbf_offset_secs,
    }
}

/// The [`TemplateMeta`] of a stored template's fields (the inverse of [`template_to_store`]);
/// `None` when a field names nothing we know (a record of a newer version, or corruption).
pub fn stored_template_meta(
    time_claims: u8,
    lifetime_secs: u32,
    alg: &str,
    typ: &str,
    nbf_offset_secs: i32,
) -> Option<TemplateMeta> {
    const KNOWN: u8 = TIME_CLAIM_IAT | TIME_CLAIM_NBF | TIME_CLAIM_EXP | TIME_CLAIM_JTI;
    if time_claims & !KNOWN != 0 {
        return None;
    }
    let typ = match typ {
        "" => None,
        t => Some(Typ::from_header(t)?),
    };
    Some(TemplateMeta {
        time_claims: TimeClaims {
            iat: time_claims & TIME_CLAIM_IAT != 0,
            nbf: time_claims & TIME_CLAIM_NBF != 0,
            exp: time_claims & TIME_CLAIM_EXP != 0,
            jti: time_claims & TIME_CLAIM_JTI != 0,
        },
        typ,
        alg: SigningAlg::from_name(alg)?,
        lifetime_secs,
        nbf_offset_secs,
    })
}

/// The verified claims of the ID token (when present) and the access token, looked up in that
/// order: OIDC puts `auth_time`, `acr` and `amr` in the ID token, some providers only there.
struct Claims<'a> {
    id: Option<&'a Map<String, Value>>,
    at: &'a Map<String, Value>,
}

impl<'a> Claims<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.id
            .and_then(|m| m.get(name))
            .or_else(|| self.at.get(name))
    }

    /// An identifier claim: a non-empty string, or a number (some providers' numeric ids).
    fn string(&self, name: &str) -> Result<Option<String>, Skip> {
        match self.get(name) {
            Some(Value::String(s)) if !s.is_empty() => bounded(s).map(Some),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            _ => Ok(None),
        }
    }

    fn list(&self, name: &str) -> Result<Vec<String>, Skip> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![bounded(s)?]),
            Some(Value::Array(items)) => {
                if items.len() > limits::CAPTURE_CLAIM_VALUES_MAX {
                    return Err(Skip::TooManyValues);
                }
                items
                    .iter()
                    .filter_map(scalar_string)
                    .map(|s| bounded(&s))
                    .collect()
            }
            // A list claim of another shape is not something we can evaluate policy on.
            Some(_) => Err(Skip::MalformedToken),
        }
    }
}

fn bounded(s: &str) -> Result<String, Skip> {
    if s.len() > limits::CAPTURE_CLAIM_VALUE_BYTES_MAX {
        return Err(Skip::ValueTooLong);
    }
    Ok(s.to_string())
}

/// A string, number or boolean claim value as a string (groups may be numeric ids elsewhere).
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn risk(v: Option<&Value>) -> RiskLevel {
    match v
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("none") => RiskLevel::None,
        Some("low") => RiskLevel::Low,
        Some("medium") => RiskLevel::Medium,
        Some("high") => RiskLevel::High,
        _ => RiskLevel::Unknown,
    }
}

fn compliance(v: Option<&Value>) -> DeviceCompliance {
    match v {
        Some(Value::Bool(true)) => DeviceCompliance::Compliant,
        Some(Value::Bool(false)) => DeviceCompliance::NotCompliant,
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "compliant" => DeviceCompliance::Compliant,
            "false" | "noncompliant" | "not_compliant" => DeviceCompliance::NotCompliant,
            _ => DeviceCompliance::Unknown,
        },
        _ => DeviceCompliance::Unknown,
    }
}

/// The thumbprint of a DPoP proof's key, when the proof's signature verifies with it.
///
/// Only proof of possession is checked here: the primary answered 200, so it has checked `htm`,
/// `htu`, `iat` and `jti` already, and replaying the proof through `token::dpop::verify_proof`
/// would need the request URL and would consume its `jti` a second time.
pub(super) fn proof_thumbprint(proof: &[u8]) -> Option<String> {
    let jws = jws::parse_compact(proof, limits::DPOP_PROOF_BYTES_MAX).ok()?;
    let h = &jws.header;
    if h.typ.as_deref().and_then(Typ::from_header) != Some(Typ::DpopJwt)
        || !matches!(h.alg, Alg::Es256 | Alg::EdDsa)
    {
        return None;
    }
    let key = h.jwk.as_ref().filter(|k| k.fits(h.alg))?;
    jwks::verify_with(key, h.alg, jws.signing_input, &jws.signature).then(|| key.thumbprint())
}

/// How strong a device identity is (its prefix), for carrying a stronger one forward.
fn device_rank(device: &str) -> u8 {
    if device.starts_with(DEVICE_PREFIX_JKT) {
        3
    } else if device.starts_with(DEVICE_PREFIX_HEADER) {
        2
    } else {
        1
    }
}

fn header_device(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= limits::CAPTURE_DEVICE_HEADER_BYTES_MAX
        && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    ok.then(|| format!("{DEVICE_PREFIX_HEADER}{value}"))
}

/// The access token's `aud` as one resource string: a string as is, an array sorted, deduped
/// and joined by spaces.
fn audience(at: &Map<String, Value>) -> Option<String> {
    match at.get("aud")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Array(items) => {
            let mut auds: Vec<&str> = items
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty())
                .collect();
            auds.sort_unstable();
            auds.dedup();
            (!auds.is_empty()).then(|| auds.join(" "))
        }
        _ => None,
    }
}

/// Derives what the store records from one successful grant.
///
/// `previous` is the record of the refresh token the client presented (refresh grant), as the
/// store has it; it is used only if it is a refresh token of the same client. `family_if_new`
/// is called only when no previous family applies and gives a fresh random family id (`None`
/// when no randomness is available). Time is `job.received_at_secs`.
pub fn derive(
    job: &GrantCapture,
    ctx: &DeriveContext<'_>,
    previous: Option<&ArtifactRecord>,
    family_if_new: impl FnOnce() -> Option<String>,
) -> Result<Derived, Skip> {
    let now = job.received_at_secs;
    let now_u = u64::try_from(now).unwrap_or(0);
    let cfg = ctx.cfg;

    if job.response_body.len() > limits::CAPTURE_RESPONSE_BYTES_MAX {
        return Err(Skip::ResponseTooLarge);
    }
    let body = json::parse_object(
        &job.response_body,
        "token response",
        limits::JOSE_JSON_DEPTH_MAX,
    )
    .map_err(|_| Skip::MalformedResponse)?;
    let resp = parse_response(&body)?;

    // The access token: a JWS, or nothing we could ever mint an equivalent of.
    if resp.access_token.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(Skip::OpaqueAccessToken);
    }
    let at_header = jws::parse_compact(resp.access_token.as_bytes(), limits::JWS_COMPACT_BYTES_MAX)
        .map_err(|e| skip_of(&e))?
        .header;
    let at_typ = match at_header.typ.as_deref().and_then(Typ::from_header) {
        Some(Typ::AtJwt) => TypRule::Exactly(Typ::AtJwt),
        _ => TypRule::JwtOrAbsent,
    };
    let at = verify(resp.access_token, ctx, at_typ, None, now_u)?;
    let id = resp
        .id_token
        .map(|t| verify(t, ctx, TypRule::JwtOrAbsent, Some(&job.client_id), now_u))
        .transpose()?;
    let access_template = template_of(&at, now_u)?;
    let id_template = id.as_ref().map(|v| template_of(v, now_u)).transpose()?;

    let claims = Claims {
        id: id.as_ref().map(|v| &v.claims),
        at: &at.claims,
    };

    // Identity.
    let user = cfg
        .user_claims
        .iter()
        .map(|c| claims.string(c))
        .find_map(Result::transpose)
        .transpose()?
        .ok_or(Skip::NoUser)?;
    let tenant = match &cfg.tenant_claim {
        Some(c) => claims.string(c)?,
        None => None,
    }
    .unwrap_or_else(|| cfg.default_tenant.clone());
    let guest_by_claim = cfg
        .guest_claim
        .as_deref()
        .and_then(|c| claims.get(c))
        .and_then(scalar_string)
        .is_some_and(|v| v == cfg.guest_value);
    // Present and naming neither this tenant nor this issuer: the user's home is elsewhere.
    // A value of another type is not understood, and read as guest (fail closed).
    let guest_by_home = cfg
        .home_tenant_claim
        .as_deref()
        .and_then(|c| claims.get(c))
        .is_some_and(|v| match v {
            Value::String(s) => s.as_str() != tenant && s.as_str() != ctx.issuer,
            Value::Null => false,
            _ => true,
        });
    let home_tenant = !(guest_by_claim || guest_by_home);

    // What was granted: the response's `scope` (RFC 6749 §5.1), which a provider may omit when
    // it equals the request's; then the access token's own `scope` / `scp` (RFC 9068 §2.2.3,
    // Entra, Okta), which a refresh without a `scope` parameter needs; then the request's.
    let split =
        |s: &str| -> Vec<String> { s.split_ascii_whitespace().map(str::to_string).collect() };
    let scopes: Vec<String> = match (resp.scope, at.claims.get("scope"), at.claims.get("scp")) {
        (Some(s), _, _) => split(s),
        (None, Some(Value::String(s)), _) | (None, None, Some(Value::String(s))) => split(s),
        (None, None, Some(Value::Array(items))) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => job
            .requested_scope
            .as_deref()
            .map(split)
            .unwrap_or_default(),
    };
    if scopes.len() > limits::CAPTURE_CLAIM_VALUES_MAX {
        return Err(Skip::TooManyValues);
    }
    let resource = match job.requested_resources.as_slice() {
        [one] => one.clone(),
        [] => audience(&at.claims).unwrap_or_else(|| {
            let mut sorted: Vec<&str> = scopes.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            sorted.dedup();
            sorted.join(" ")
        }),
        _ => return Err(Skip::MultipleResources),
    };
    if resource.len() > limits::STORE_IDENTIFIER_BYTES_MAX {
        return Err(Skip::ValueTooLong);
    }

    // Binding and device. `cnf.jkt` binds the tokens whatever `token_type` says (fail closed:
    // a bound token is never served without a proof); a DPoP response without it is bound to
    // the proof's key.
    let cnf_jkt = match at.claims.get("cnf").and_then(|c| c.get("jkt")) {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(bounded(s)?),
        Some(_) => return Err(Skip::MalformedToken),
    };
    let proof_jkt = job.dpop_proof.as_deref().and_then(proof_thumbprint);
    let dpop_jkt = match (&cnf_jkt, resp.token_type.eq_ignore_ascii_case("DPoP")) {
        (Some(j), _) => Some(j.clone()),
        (None, true) => Some(proof_jkt.clone().ok_or(Skip::DpopUnbound)?),
        (None, false) => None,
    };
    let candidate = cnf_jkt
        .or(proof_jkt)
        .map(|j| format!("{DEVICE_PREFIX_JKT}{j}"))
        .or_else(|| job.device_header.as_deref().and_then(header_device));

    let previous = previous.filter(|p| {
        job.grant == CapturedGrantType::RefreshToken
            && p.kind == ArtifactKind::RefreshToken
            && p.app == job.client_id
    });
    let family = match previous.filter(|p| !p.family.is_empty()) {
        Some(p) => p.family.clone(),
        None => family_if_new().ok_or(Skip::NoRandomness)?,
    };
    let device = match (candidate, previous) {
        (Some(c), Some(p)) if device_rank(&c) < device_rank(&p.device) => p.device.clone(),
        (Some(c), _) => c,
        (None, Some(p)) => p.device.clone(),
        (None, None) => format!("{DEVICE_PREFIX_FAMILY}{family}"),
    };

    // Policy inputs as of this sign-in.
    if let Some(g) = &cfg.groups_claim {
        let overage = |m: &Map<String, Value>| {
            m.get("_claim_names")
                .and_then(Value::as_object)
                .is_some_and(|n| n.contains_key(g))
        };
        if claims.id.is_some_and(overage) || overage(claims.at) {
            return Err(Skip::GroupsOverage);
        }
    }
    let opt_list = |c: &Option<String>| match c {
        Some(c) => claims.list(c),
        None => Ok(Vec::new()),
    };
    let groups = opt_list(&cfg.groups_claim)?;
    let roles = opt_list(&cfg.roles_claim)?;
    let amr = claims.list("amr")?;
    let acr = match claims.get("acr") {
        Some(v) => scalar_string(v).map(|s| bounded(&s)).transpose()?,
        None => None,
    }
    .unwrap_or_default();
    let auth_time_secs = claims
        .get("auth_time")
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .unwrap_or(0);
    let claim_of = |c: &Option<String>| c.as_deref().and_then(|c| claims.get(c));
    let device_platform = match claim_of(&cfg.device_platform_claim) {
        Some(Value::String(s)) => bounded(s)?,
        _ => String::new(),
    };

    let expires_at_secs =
        now.saturating_add(i64::try_from(cfg.session_window_secs).unwrap_or(i64::MAX));
    let artifact_expires_at_secs = match resp.refresh_token_expires_in {
        Some(secs) => expires_at_secs.min(now.saturating_add(secs)),
        None => expires_at_secs,
    };

    let snapshot = SessionSnapshot {
        identity: SessionIdentity {
            tenant: tenant.clone(),
            user: user.clone(),
            device: device.clone(),
            app: job.client_id.clone(),
            resource: resource.clone(),
        },
        home_tenant,
        auth_time_secs,
        recorded_at_secs: now,
        expires_at_secs,
        amr,
        acr,
        groups,
        roles,
        sign_in_risk: risk(claim_of(&cfg.sign_in_risk_claim)),
        user_risk: risk(claim_of(&cfg.user_risk_claim)),
        device_platform,
        device_compliance: compliance(claim_of(&cfg.device_compliance_claim)),
        dpop_jkt,
        access_token: access_template,
        id_token: id_template,
        scopes,
        token_type: resp.token_type.to_string(),
    };

    let digest = (ctx.refresh_digest)(resp.refresh_token.as_bytes());
    let rotated = job.presented_refresh != Some(digest);
    // Revocation is sticky: a token the backup revoked is not revived by an echo of it.
    let (state, state_changed_at_secs) = match previous {
        Some(p) if !rotated && p.state == ArtifactState::Revoked => {
            (ArtifactState::Revoked, p.state_changed_at_secs)
        }
        _ => (ArtifactState::Current, 0),
    };
    let artifact = ArtifactRecord {
        kind: ArtifactKind::RefreshToken,
        digest,
        tenant: tenant.clone(),
        user,
        device,
        app: job.client_id.clone(),
        resource,
        family,
        client_auth: job.client_auth,
        state,
        state_changed_at_secs,
        issued_at_secs: now,
        expires_at_secs: artifact_expires_at_secs,
    };
    let superseded = previous
        .filter(|p| rotated && p.state != ArtifactState::Revoked)
        .map(|p| ArtifactRecord {
            state: ArtifactState::Superseded { successor: digest },
            state_changed_at_secs: now,
            ..p.clone()
        });
    let client_secret = match (job.client_auth, job.client_secret_digest) {
        (ClientAuthMethod::SecretBasic | ClientAuthMethod::SecretPost, Some(d)) => {
            Some(ArtifactRecord {
                kind: ArtifactKind::ClientSecret,
                digest: d,
                tenant,
                user: String::new(),
                device: String::new(),
                app: job.client_id.clone(),
                resource: String::new(),
                family: String::new(),
                client_auth: job.client_auth,
                state: ArtifactState::Current,
                state_changed_at_secs: 0,
                issued_at_secs: now,
                expires_at_secs,
            })
        }
        _ => None,
    };
    Ok(Derived {
        snapshot,
        artifact,
        superseded,
        client_secret,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::super::testkit::*;
    use super::*;
    use crate::store::Keys;
    use crate::token::mint::{Minter, TemplateRef};
    use crate::token::sign::{Ed25519Backend, SigningKey};

    struct Fixture {
        primary: JwsSigner,
        keys: KeySet,
        cfg: CaptureConfig,
        digests: Keys,
    }

    impl Fixture {
        fn new() -> Self {
            let primary = JwsSigner::primary();
            let keys = primary.key_set();
            Self {
                primary,
                keys,
                cfg: CaptureConfig::default(),
                digests: digest_keys(),
            }
        }

        fn derive_with(
            &self,
            job: &GrantCapture,
            previous: Option<&ArtifactRecord>,
        ) -> Result<Derived, Skip> {
            let digest = |raw: &[u8]| {
                self.digests
                    .artifact_digest(ArtifactKind::RefreshToken, raw)
            };
            let ctx = DeriveContext {
                keys: &self.keys,
                cfg: &self.cfg,
                issuer: ISSUER,
                refresh_digest: &digest,
            };
            derive(job, &ctx, previous, || Some("fam-1".to_string()))
        }

        fn derive(&self, job: &GrantCapture) -> Result<Derived, Skip> {
            self.derive_with(job, None)
        }

        fn at(&self, claims: &Value) -> String {
            self.primary.jwt(Some("at+jwt"), claims)
        }

        fn id(&self, claims: &Value) -> String {
            self.primary.jwt(Some("JWT"), claims)
        }

        /// A code-grant job with the standard access and ID tokens and refresh token `rt`.
        fn code(&self, rt: &str) -> GrantCapture {
            let at = self.at(&at_claims("alice"));
            let id = self.id(&id_claims("alice"));
            code_job(response(&at, Some(&id), Some(rt), json!({})))
        }

        fn digest(&self, rt: &str) -> ArtifactDigest {
            refresh_digest(&self.digests, rt)
        }
    }

    fn with(mut claims: Value, extra: Value) -> Value {
        if let (Some(c), Value::Object(e)) = (claims.as_object_mut(), extra) {
            c.extend(e);
        }
        claims
    }

    fn without(mut claims: Value, name: &str) -> Value {
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    #[test]
    fn code_grant_yields_snapshot_identity_auth_context_and_policy_inputs() {
        let f = Fixture::new();
        let d = f.derive(&f.code("rt-1")).unwrap();
        let s = &d.snapshot;
        assert_eq!(
            s.identity,
            SessionIdentity {
                tenant: "tenant-a".into(),
                user: "alice".into(),
                device: "family:fam-1".into(),
                app: CLIENT.into(),
                resource: "https://api.example.com".into(),
            }
        );
        assert!(s.home_tenant);
        assert_eq!(s.auth_time_secs, NOW - 600);
        assert_eq!(s.recorded_at_secs, NOW);
        assert_eq!(s.expires_at_secs, NOW + 3 * 24 * 3600);
        assert_eq!(s.amr, ["pwd", "mfa"]);
        assert_eq!(s.acr, "urn:example:mfa");
        assert_eq!(s.groups, ["g-staff", "g-ops"]);
        assert_eq!(s.roles, ["reader"]);
        assert_eq!(s.sign_in_risk, RiskLevel::Unknown);
        assert_eq!(s.user_risk, RiskLevel::Unknown);
        assert_eq!(s.device_platform, "");
        assert_eq!(s.device_compliance, DeviceCompliance::Unknown);
        assert_eq!(s.dpop_jkt, None);
        assert_eq!(s.scopes, ["openid", "offline_access", "api.read"]);
        assert_eq!(s.token_type, "Bearer");
        assert_eq!(s.access_token.alg, "RS256");
        assert_eq!(s.access_token.typ, "at+jwt");
        assert_eq!(s.access_token.lifetime_secs, 3600);
        assert_eq!(
            s.access_token.time_claims,
            TIME_CLAIM_IAT | TIME_CLAIM_EXP | TIME_CLAIM_JTI
        );
        let id = s.id_token.as_ref().unwrap();
        assert_eq!(
            (id.typ.as_str(), id.time_claims),
            ("JWT", TIME_CLAIM_IAT | TIME_CLAIM_EXP)
        );

        let a = &d.artifact;
        assert_eq!(a.kind, ArtifactKind::RefreshToken);
        assert_eq!(a.digest, f.digest("rt-1"));
        assert_eq!(a.state, ArtifactState::Current);
        assert_eq!(a.family, "fam-1");
        assert_eq!(
            (
                a.tenant.as_str(),
                a.user.as_str(),
                a.device.as_str(),
                a.app.as_str()
            ),
            ("tenant-a", "alice", "family:fam-1", CLIENT)
        );
        assert_eq!(a.resource, "https://api.example.com");
        assert_eq!(a.client_auth, ClientAuthMethod::None);
        assert_eq!(
            (a.issued_at_secs, a.expires_at_secs),
            (NOW, s.expires_at_secs)
        );
        assert_eq!(d.superseded, None);
        assert_eq!(d.client_secret, None);
    }

    #[test]
    fn templates_mint_back_to_the_primary_claims_minus_time_claims() {
        let f = Fixture::new();
        let d = f.derive(&f.code("rt-1")).unwrap();
        let mut minter = Minter::new(f.primary.key.signer(Ed25519Backend::AwsLc).unwrap());
        for (stored, original) in [
            (&d.snapshot.access_token, at_claims("alice")),
            (d.snapshot.id_token.as_ref().unwrap(), id_claims("alice")),
        ] {
            let meta = stored_template_meta(
                stored.time_claims,
                stored.lifetime_secs,
                &stored.alg,
                &stored.typ,
                stored.nbf_offset_secs,
            )
            .unwrap();
            let t = TemplateRef::from_stored(&stored.claims_json, meta).unwrap();
            let mut out = Vec::new();
            minter.mint(t, 1_900_000_000, &mut out).unwrap();
            let token = String::from_utf8(out).unwrap();
            let payload = token.split('.').nth(1).unwrap();
            let minted: Value = serde_json::from_slice(
                &crate::token::b64::decode(payload.as_bytes(), "p").unwrap(),
            )
            .unwrap();
            assert_eq!(minted["iat"], json!(1_900_000_000));
            assert_eq!(minted["exp"], json!(1_900_003_600));
            let strip = |v: &Value| {
                let mut m = v.as_object().unwrap().clone();
                for c in mint::TIME_CLAIMS {
                    m.remove(c);
                }
                m
            };
            assert_eq!(strip(&minted), strip(&original));
            assert_eq!(minted.get("jti").is_some(), original.get("jti").is_some());
            assert!(
                minted.get("nbf").is_none(),
                "no nbf added where the primary had none"
            );
        }
    }

    #[test]
    fn rotation_supersedes_the_presented_token_with_its_successor() {
        let f = Fixture::new();
        let first = f.derive(&f.code("rt-1")).unwrap().artifact;
        let at = f.at(&at_claims("alice"));
        let job = refresh_job(
            response(&at, None, Some("rt-2"), json!({})),
            f.digest("rt-1"),
        );
        let d = f.derive_with(&job, Some(&first)).unwrap();
        assert_eq!(d.artifact.digest, f.digest("rt-2"));
        assert_eq!(d.artifact.state, ArtifactState::Current);
        assert_eq!(d.artifact.family, "fam-1");
        let old = d.superseded.unwrap();
        assert_eq!(old.digest, f.digest("rt-1"));
        assert_eq!(
            old.state,
            ArtifactState::Superseded {
                successor: f.digest("rt-2")
            }
        );
        assert_eq!(old.state_changed_at_secs, NOW);
        assert_eq!(old.expires_at_secs, first.expires_at_secs);
        // No ID token on refresh: the snapshot has none, and identity still comes from the AT.
        assert_eq!(d.snapshot.id_token, None);
        assert_eq!(d.snapshot.identity.user, "alice");
    }

    #[test]
    fn an_echoed_refresh_token_is_rewritten_without_supersession() {
        let f = Fixture::new();
        let first = f.derive(&f.code("rt-1")).unwrap().artifact;
        let at = f.at(&at_claims("alice"));
        let job = refresh_job(
            response(&at, None, Some("rt-1"), json!({})),
            f.digest("rt-1"),
        );
        let d = f.derive_with(&job, Some(&first)).unwrap();
        assert_eq!(d.artifact.digest, f.digest("rt-1"));
        assert_eq!(d.artifact.state, ArtifactState::Current);
        assert_eq!(d.superseded, None);

        // A token the backup revoked stays revoked if the primary echoes it.
        let revoked = ArtifactRecord {
            state: ArtifactState::Revoked,
            state_changed_at_secs: NOW - 5,
            ..first
        };
        let d = f.derive_with(&job, Some(&revoked)).unwrap();
        assert_eq!(d.artifact.state, ArtifactState::Revoked);
        assert_eq!(d.artifact.state_changed_at_secs, NOW - 5);
    }

    #[test]
    fn refusals_are_skips_with_reasons() {
        let f = Fixture::new();
        let at = f.at(&at_claims("alice"));
        let id = f.id(&id_claims("alice"));
        let other_issuer = f.at(&with(
            at_claims("alice"),
            json!({"iss": "https://evil.example"}),
        ));
        // Same header and signature, other payload: the signature no longer verifies.
        let tampered = {
            let parts: Vec<&str> = at.split('.').collect();
            let p = crate::token::b64::encode(
                serde_json::to_string(&at_claims("mallory"))
                    .unwrap()
                    .as_bytes(),
            );
            format!("{}.{p}.{}", parts[0], parts[2])
        };
        let expired = f.at(&with(
            at_claims("alice"),
            json!({"iat": NOW - 7200, "exp": NOW - 3600}),
        ));
        let ps = |claims: &Value| {
            let mut h = serde_json::Map::new();
            h.insert("typ".into(), json!("at+jwt"));
            h.insert("kid".into(), json!(f.primary.key.kid()));
            let t = f.primary.sign_with_header(h, claims);
            // Claim another algorithm in the header: refused before any key is used.
            let parts: Vec<&str> = t.split('.').collect();
            let hdr = crate::token::b64::encode(br#"{"alg":"HS256","typ":"at+jwt"}"#);
            format!("{hdr}.{}.{}", parts[1], parts[2])
        };
        let wrong_aud_id = f.id(&with(id_claims("alice"), json!({"aud": "another-app"})));
        let dpop_typ = f.primary.jwt(Some("dpop+jwt"), &at_claims("alice"));
        let cases: Vec<(&str, Bytes, Skip)> = vec![
            (
                "opaque",
                response("2YotnFZFEjr1zCsicMWpAA", None, Some("rt"), json!({})),
                Skip::OpaqueAccessToken,
            ),
            (
                "jwe",
                response("a.b.c.d.e", None, Some("rt"), json!({})),
                Skip::OpaqueAccessToken,
            ),
            (
                "bad signature",
                response(&tampered, None, Some("rt"), json!({})),
                Skip::BadSignature,
            ),
            (
                "wrong issuer",
                response(&other_issuer, None, Some("rt"), json!({})),
                Skip::IssuerMismatch,
            ),
            (
                "expired",
                response(&expired, None, Some("rt"), json!({})),
                Skip::TokenTime,
            ),
            (
                "hs256",
                response(&ps(&at_claims("alice")), None, Some("rt"), json!({})),
                Skip::UnsupportedAlg,
            ),
            (
                "typ",
                response(&dpop_typ, None, Some("rt"), json!({})),
                Skip::TokenTyp,
            ),
            (
                "id aud",
                response(&at, Some(&wrong_aud_id), Some("rt"), json!({})),
                Skip::IdTokenAudience,
            ),
            (
                "no refresh token",
                response(&at, Some(&id), None, json!({})),
                Skip::NoRefreshToken,
            ),
            (
                "not json",
                Bytes::from_static(b"<html>"),
                Skip::MalformedResponse,
            ),
            (
                "duplicate member",
                Bytes::from_static(br#"{"refresh_token":"a","refresh_token":"b"}"#),
                Skip::MalformedResponse,
            ),
            (
                "number token",
                Bytes::from_static(
                    br#"{"refresh_token":"a","access_token":5,"token_type":"Bearer"}"#,
                ),
                Skip::MalformedResponse,
            ),
            (
                "too large",
                Bytes::from(vec![b' '; limits::CAPTURE_RESPONSE_BYTES_MAX + 1]),
                Skip::ResponseTooLarge,
            ),
            (
                "no user",
                response(
                    &f.at(&without(at_claims("alice"), "sub")),
                    None,
                    Some("rt"),
                    json!({}),
                ),
                Skip::NoUser,
            ),
        ];
        for (name, body, want) in cases {
            assert_eq!(f.derive(&code_job(body)).err(), Some(want), "{name}");
        }
        let mut job = code_job(response(&at, None, Some("rt"), json!({})));
        job.requested_resources = vec!["https://a.example".into(), "https://b.example".into()];
        assert_eq!(f.derive(&job).err(), Some(Skip::MultipleResources));
    }

    #[test]
    fn no_randomness_and_oversized_identifiers_are_skips() {
        let f = Fixture::new();
        let digest = |raw: &[u8]| f.digests.artifact_digest(ArtifactKind::RefreshToken, raw);
        let ctx = DeriveContext {
            keys: &f.keys,
            cfg: &f.cfg,
            issuer: ISSUER,
            refresh_digest: &digest,
        };
        assert_eq!(
            derive(&f.code("rt"), &ctx, None, || None).err(),
            Some(Skip::NoRandomness)
        );
        let long = "u".repeat(limits::CAPTURE_CLAIM_VALUE_BYTES_MAX + 1);
        let at = f.at(&at_claims(&long));
        let job = code_job(response(&at, None, Some("rt"), json!({})));
        assert_eq!(f.derive(&job).err(), Some(Skip::ValueTooLong));
    }

    #[test]
    fn unknown_key_is_a_skip_not_a_capture() {
        let f = Fixture::new();
        let other =
            JwsSigner::new(crate::token::sign::SigningKey::generate(SigningAlg::Es256).unwrap());
        let at = other.jwt(Some("at+jwt"), &at_claims("alice"));
        let job = code_job(response(&at, None, Some("rt"), json!({})));
        assert_eq!(f.derive(&job).err(), Some(Skip::UnknownKey));
    }

    #[test]
    fn dpop_bound_token_gives_device_and_binding_from_cnf_jkt() {
        let f = Fixture::new();
        let at = f.at(&with(
            at_claims("alice"),
            json!({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}),
        ));
        let body = response(&at, None, Some("rt"), json!({"token_type": "DPoP"}));
        let d = f.derive(&code_job(body)).unwrap();
        assert_eq!(
            d.snapshot.identity.device,
            "jkt:0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
        assert_eq!(
            d.snapshot.dpop_jkt.as_deref(),
            Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
        );
        assert_eq!(d.snapshot.token_type, "DPoP");
        assert_eq!(d.artifact.device, d.snapshot.identity.device);
    }

    #[test]
    fn dpop_proof_key_is_the_device_when_the_token_carries_no_cnf() {
        let f = Fixture::new();
        let holder = JwsSigner::new(SigningKey::generate(SigningAlg::Es256).unwrap());
        let (proof, jkt) = holder.dpop_proof();
        let at = f.at(&at_claims("alice"));

        let mut job = code_job(response(
            &at,
            None,
            Some("rt"),
            json!({"token_type": "DPoP"}),
        ));
        job.dpop_proof = Some(Bytes::from(proof.clone()));
        let d = f.derive(&job).unwrap();
        assert_eq!(d.snapshot.identity.device, format!("jkt:{jkt}"));
        assert_eq!(d.snapshot.dpop_jkt.as_deref(), Some(jkt.as_str()));

        // A Bearer response to a request with a proof: the key names the device, nothing binds.
        let mut job = code_job(response(&at, None, Some("rt"), json!({})));
        job.dpop_proof = Some(Bytes::from(proof.clone()));
        let d = f.derive(&job).unwrap();
        assert_eq!(d.snapshot.identity.device, format!("jkt:{jkt}"));
        assert_eq!(d.snapshot.dpop_jkt, None);

        // A proof whose signature does not verify proves no key.
        let mut broken = proof.into_bytes();
        let last = broken.len() - 2;
        broken[last] = if broken[last] == b'A' { b'B' } else { b'A' };
        let mut job = code_job(response(&at, None, Some("rt"), json!({})));
        job.dpop_proof = Some(Bytes::from(broken));
        assert_eq!(
            f.derive(&job).unwrap().snapshot.identity.device,
            "family:fam-1"
        );

        // DPoP token type with neither cnf.jkt nor a proof: unbound, not captured.
        let job = code_job(response(
            &at,
            None,
            Some("rt"),
            json!({"token_type": "DPoP"}),
        ));
        assert_eq!(f.derive(&job).err(), Some(Skip::DpopUnbound));
    }

    #[test]
    fn device_header_names_the_device_when_no_key_does() {
        let f = Fixture::new();
        let mut job = f.code("rt");
        job.device_header = Some("device-42".into());
        assert_eq!(
            f.derive(&job).unwrap().snapshot.identity.device,
            "hdr:device-42"
        );
        job.device_header = Some("x".repeat(limits::CAPTURE_DEVICE_HEADER_BYTES_MAX + 1));
        assert_eq!(
            f.derive(&job).unwrap().snapshot.identity.device,
            "family:fam-1"
        );
    }

    #[test]
    fn refresh_carries_family_and_the_stronger_device_forward() {
        let f = Fixture::new();
        let mut code = f.code("rt-1");
        code.device_header = Some("device-42".into());
        let first = f.derive(&code).unwrap().artifact;
        let at = f.at(&at_claims("alice"));

        // No identity on the refresh: the previous device and family continue.
        let job = refresh_job(
            response(&at, None, Some("rt-2"), json!({})),
            f.digest("rt-1"),
        );
        let never = || -> Option<String> { panic!("no new family for a known predecessor") };
        let digest = |raw: &[u8]| f.digests.artifact_digest(ArtifactKind::RefreshToken, raw);
        let ctx = DeriveContext {
            keys: &f.keys,
            cfg: &f.cfg,
            issuer: ISSUER,
            refresh_digest: &digest,
        };
        let d = derive(&job, &ctx, Some(&first), never).unwrap();
        assert_eq!(d.snapshot.identity.device, "hdr:device-42");
        assert_eq!(d.artifact.family, "fam-1");

        // A DPoP key seen later is stronger and takes over.
        let at_bound = f.at(&with(at_claims("alice"), json!({"cnf": {"jkt": "k1"}})));
        let job = refresh_job(
            response(&at_bound, None, Some("rt-2"), json!({})),
            f.digest("rt-1"),
        );
        assert_eq!(
            f.derive_with(&job, Some(&first))
                .unwrap()
                .snapshot
                .identity
                .device,
            "jkt:k1"
        );

        // A weaker identity (a header) never replaces a key.
        let keyed = ArtifactRecord {
            device: "jkt:k1".into(),
            ..first.clone()
        };
        let mut job = refresh_job(
            response(&at, None, Some("rt-2"), json!({})),
            f.digest("rt-1"),
        );
        job.device_header = Some("device-43".into());
        assert_eq!(
            f.derive_with(&job, Some(&keyed))
                .unwrap()
                .snapshot
                .identity
                .device,
            "jkt:k1"
        );

        // A predecessor of another client is not this family: a new one starts.
        let foreign = ArtifactRecord {
            app: "other-app".into(),
            family: "fam-x".into(),
            ..first
        };
        let job = refresh_job(
            response(&at, None, Some("rt-2"), json!({})),
            f.digest("rt-1"),
        );
        let d = f.derive_with(&job, Some(&foreign)).unwrap();
        assert_eq!(d.artifact.family, "fam-1");
        assert_eq!(d.superseded, None);
    }

    #[test]
    fn guests_are_detected_by_claim_or_home_tenant() {
        let f = Fixture::new();
        let run = |extra: Value| {
            let at = f.at(&with(at_claims("alice"), extra));
            f.derive(&code_job(response(&at, None, Some("rt"), json!({}))))
                .unwrap()
                .snapshot
                .home_tenant
        };
        assert!(run(json!({})));
        assert!(run(json!({"acct": 0})));
        assert!(!run(json!({"acct": 1})));
        assert!(!run(json!({"acct": "1"})));
        assert!(!run(json!({"idp": "https://sts.windows.net/home-tenant/"})));
        assert!(run(json!({"idp": ISSUER})));
        assert!(run(json!({"idp": "tenant-a"})));
        assert!(
            !run(json!({"idp": 5})),
            "a home claim we cannot read is a guest"
        );
    }

    #[test]
    fn resource_comes_from_the_request_then_aud_then_scopes() {
        let f = Fixture::new();
        let run = |claims: Value, resources: Vec<&str>| {
            let at = f.at(&claims);
            let mut job = code_job(response(
                &at,
                None,
                Some("rt"),
                json!({"scope": "b.write a.read"}),
            ));
            job.requested_resources = resources.into_iter().map(String::from).collect();
            f.derive(&job).unwrap().snapshot.identity.resource
        };
        assert_eq!(
            run(at_claims("alice"), vec!["https://r.example"]),
            "https://r.example"
        );
        assert_eq!(run(at_claims("alice"), vec![]), "https://api.example.com");
        let multi = with(
            at_claims("alice"),
            json!({"aud": ["https://z.example", "https://a.example", "https://z.example"]}),
        );
        assert_eq!(run(multi, vec![]), "https://a.example https://z.example");
        assert_eq!(
            run(without(at_claims("alice"), "aud"), vec![]),
            "a.read b.write"
        );
        // Without a response scope, the access token's own scope claim says what was granted.
        let at = f.at(&with(at_claims("alice"), json!({"scope": "x.read y.read"})));
        let d = f
            .derive(&code_job(response(
                &at,
                None,
                Some("rt"),
                json!({"scope": null}),
            )))
            .unwrap();
        assert_eq!(d.snapshot.scopes, ["x.read", "y.read"]);
        let at = f.at(&with(
            without(at_claims("alice"), "scope"),
            json!({"scp": ["s1", "s2"]}),
        ));
        let d = f
            .derive(&code_job(response(
                &at,
                None,
                Some("rt"),
                json!({"scope": null}),
            )))
            .unwrap();
        assert_eq!(d.snapshot.scopes, ["s1", "s2"]);
        let at = f.at(&without(at_claims("alice"), "scope"));
        let d = f
            .derive(&code_job(response(
                &at,
                None,
                Some("rt"),
                json!({"scope": null}),
            )))
            .unwrap();
        assert_eq!(
            d.snapshot.scopes,
            ["openid", "offline_access", "api.read"],
            "the request's"
        );
        // The response's scope is kept as the primary wrote it.
        let at = f.at(&without(at_claims("alice"), "aud"));
        let d = f
            .derive(&code_job(response(
                &at,
                None,
                Some("rt"),
                json!({"scope": "b.write a.read"}),
            )))
            .unwrap();
        assert_eq!(d.snapshot.scopes, ["b.write", "a.read"]);
    }

    #[test]
    fn refresh_token_expires_in_bounds_the_artifact_not_the_snapshot() {
        let f = Fixture::new();
        let at = f.at(&at_claims("alice"));
        let d = f
            .derive(&code_job(response(
                &at,
                None,
                Some("rt"),
                json!({"refresh_token_expires_in": 7200}),
            )))
            .unwrap();
        assert_eq!(d.artifact.expires_at_secs, NOW + 7200);
        assert_eq!(d.snapshot.expires_at_secs, NOW + 3 * 24 * 3600);
        // Longer than the window: the window wins.
        let d = f
            .derive(&code_job(response(
                &at,
                None,
                Some("rt"),
                json!({"refresh_token_expires_in": 90 * 24 * 3600}),
            )))
            .unwrap();
        assert_eq!(d.artifact.expires_at_secs, NOW + 3 * 24 * 3600);
    }

    #[test]
    fn configured_claims_name_user_tenant_and_policy_facts() {
        let mut f = Fixture::new();
        f.cfg.user_claims = vec!["oid".into(), "sub".into()];
        f.cfg.tenant_claim = Some("org".into());
        f.cfg.default_tenant = "default-org".into();
        f.cfg.sign_in_risk_claim = Some("signin_risk".into());
        f.cfg.user_risk_claim = Some("user_risk".into());
        f.cfg.device_platform_claim = Some("platform".into());
        f.cfg.device_compliance_claim = Some("compliant".into());
        f.cfg.groups_claim = Some("grp".into());
        let claims = with(
            at_claims("pairwise-sub"),
            json!({"oid": "object-1", "signin_risk": "Medium", "user_risk": "high", "platform": "iOS", "compliant": true, "grp": "solo"}),
        );
        let d = f
            .derive(&code_job(response(
                &f.at(&claims),
                None,
                Some("rt"),
                json!({}),
            )))
            .unwrap();
        let s = &d.snapshot;
        assert_eq!(s.identity.user, "object-1");
        assert_eq!(s.identity.tenant, "default-org");
        assert_eq!(s.sign_in_risk, RiskLevel::Medium);
        assert_eq!(s.user_risk, RiskLevel::High);
        assert_eq!(s.device_platform, "iOS");
        assert_eq!(s.device_compliance, DeviceCompliance::Compliant);
        assert_eq!(s.groups, ["solo"]);
        // No ID token, no auth_time anywhere: recorded as 0.
        assert_eq!(s.auth_time_secs, 0);

        // Without oid, the next claim in order names the user.
        let d = f
            .derive(&code_job(response(
                &f.at(&at_claims("pairwise-sub")),
                None,
                Some("rt"),
                json!({}),
            )))
            .unwrap();
        assert_eq!(d.snapshot.identity.user, "pairwise-sub");
    }

    #[test]
    fn groups_overage_and_oversized_lists_are_skipped() {
        let f = Fixture::new();
        let over = with(
            at_claims("alice"),
            json!({"_claim_names": {"groups": "src1"}}),
        );
        let job = code_job(response(&f.at(&over), None, Some("rt"), json!({})));
        assert_eq!(f.derive(&job).err(), Some(Skip::GroupsOverage));
        let many: Vec<u16> = (0..=limits::CAPTURE_CLAIM_VALUES_MAX as u16).collect();
        let big = with(at_claims("alice"), json!({"groups": many}));
        let job = code_job(response(&f.at(&big), None, Some("rt"), json!({})));
        assert_eq!(f.derive(&job).err(), Some(Skip::TooManyValues));
    }

    #[test]
    fn accepted_client_secret_is_recorded_for_secret_methods_only() {
        let f = Fixture::new();
        let secret = ArtifactDigest([5u8; 32]);
        let mut job = f.code("rt");
        job.client_auth = ClientAuthMethod::SecretBasic;
        job.client_secret_digest = Some(secret);
        let d = f.derive(&job).unwrap();
        let c = d.client_secret.unwrap();
        assert_eq!(
            (c.kind, c.digest, c.app.as_str()),
            (ArtifactKind::ClientSecret, secret, CLIENT)
        );
        assert_eq!(c.client_auth, ClientAuthMethod::SecretBasic);
        assert_eq!(d.artifact.client_auth, ClientAuthMethod::SecretBasic);
        job.client_auth = ClientAuthMethod::JwtAssertion;
        assert_eq!(f.derive(&job).unwrap().client_secret, None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Whatever the primary's body (bytes from the network), derive answers, never panics.
        #[test]
        fn derive_never_panics_on_arbitrary_bodies(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let f = Fixture::new();
            let _ = f.derive(&code_job(Bytes::from(body)));
        }

        /// Nor on well-formed responses carrying arbitrary token strings.
        #[test]
        fn derive_never_panics_on_arbitrary_tokens(at in "[A-Za-z0-9_.-]{0,80}", id in "[A-Za-z0-9_.-]{0,80}", rt in ".{0,20}") {
            let f = Fixture::new();
            let mut job = code_job(response(&at, Some(&id), Some(&rt), json!({})));
            job.dpop_proof = Some(Bytes::from(id.clone()));
            proptest::prop_assert!(f.derive(&job).is_err());
        }
    }

    #[test]
    fn stored_template_meta_refuses_what_it_does_not_know() {
        assert!(stored_template_meta(16, 0, "RS256", "", 0).is_none());
        assert!(stored_template_meta(1, 0, "HS256", "", 0).is_none());
        assert!(stored_template_meta(1, 0, "RS256", "weird", 0).is_none());
        let m = stored_template_meta(5, 60, "EdDSA", "at+jwt", -5).unwrap();
        assert_eq!(
            (m.alg, m.typ, m.lifetime_secs, m.nbf_offset_secs),
            (SigningAlg::EdDsa, Some(Typ::AtJwt), 60, -5)
        );
    }
}
