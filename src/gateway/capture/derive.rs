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

/// What [`derive`] needs besides the job: the primary's keys, the claim configuration, the
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

    fn string(&self, name: &str) -> Result<Option<String>, Skip> {
        match self.get(name) {
            Some(Value::String(s)) if !s.is_empty() => bounded(s).map(Some),
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
fn proof_thumbprint(proof: &[u8]) -> Option<String> {
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

    let scopes: Vec<String> = resp
        .scope
        .or(job.requested_scope.as_deref())
        .map(|s| s.split_ascii_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
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
