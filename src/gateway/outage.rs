//! Outage mode: answering a `refresh_token` grant from the recorded session (DESIGN §2, §7).
//!
//! The path is artifact → session → checks → mint:
//!
//! 1. parse the request strictly (RFC 6749 §6; a malformed request gets its RFC 6749 error);
//! 2. find the refresh token's artifact by keyed digest; unknown → 503 (it may be valid at the
//!    primary and simply never seen here), rotated out or revoked → `invalid_grant`;
//! 3. authenticate the client the way it authenticated at the primary;
//! 4. find the snapshot of exactly this device, user, app and resource;
//! 5. check scope, DPoP binding, home tenant, then the policy and revocation hook;
//! 6. mint the access token (and the ID token when the grant had one) from the templates, with
//!    backstop's key of the algorithm the primary used, and echo the presented refresh token.
//!
//! [`serve_refresh`] is the whole decision; it touches no socket and no clock, so tests drive
//! it directly and the server only adds transport, metrics and the audit record.

use std::net::IpAddr;
use std::sync::Mutex;

use crate::append;
use crate::protocol::{ClientAuth, Form, OAuthError, RequestError, TokenRequest};
use crate::store::{
    ArtifactKind, ArtifactState, ArtifactView, ClientAuthMethod, SessionIdentityRef, SessionView,
    Store,
};
use crate::token::alg::SigningAlg;
use crate::token::dpop::{self, DpopPolicy, DpopRequest, ReplayCache};
use crate::token::keyring::{Keyring, KeyringError};
use crate::token::mint::{Minter, TemplateMeta, TemplateRef};
use crate::token::sign::Ed25519Backend;

/// Why the backup refused a request: the machine reason in logs, metrics and the audit record,
/// and the wire answer (DESIGN §2 error mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The request is malformed (RFC 6749 error carried alongside).
    MalformedRequest,
    /// A grant the backup never serves (authorization code, client credentials, ...).
    UnsupportedGrant,
    /// The refresh token was never recorded here (it may be valid at the primary).
    UnknownArtifact,
    /// The refresh token was rotated out by the primary.
    RotatedOut,
    /// The refresh token was refused by the primary or revoked.
    ArtifactRevoked,
    /// The refresh token was issued to another client.
    ClientMismatch,
    /// A confidential client did not authenticate.
    ClientAuthRequired,
    /// The client's secret is not the one the primary last accepted (or was never seen).
    UnknownClientSecret,
    /// The client authenticates with a method the backup cannot check yet.
    ClientAuthUnsupported,
    /// More than one `resource` requested: the backup serves one session at a time.
    MultipleResources,
    /// No snapshot for this device, user, app and resource.
    NoSnapshot,
    /// A scope beyond what the session was granted.
    ScopeNotGranted,
    /// A narrower scope than the session's: the template cannot be narrowed faithfully.
    ScopeNarrowing,
    /// A DPoP-bound session without a valid proof of its key.
    DpopProofInvalid,
    /// A proof of a key other than the session's.
    DpopKeyMismatch,
    /// A DPoP proof for a session that was not DPoP-bound (the primary would bind anew).
    DpopNotBound,
    /// The user is a guest in this tenant (B2B / B2C).
    GuestUser,
    /// A trusted proxy's client-address header was malformed: location conditions cannot be
    /// placed.
    ClientIpUnknown,
    /// A policy or revocation check refused (its own label travels in [`HookRefusal`]).
    Hook,
    /// No signing key of the algorithm the primary used.
    NoSigningKey,
    /// The stored template could not be used (corrupt or from an unknown version).
    BadTemplate,
}

impl Refusal {
    /// Every reason, in metric label order.
    pub const ALL: [Refusal; 21] = [
        Refusal::MalformedRequest,
        Refusal::UnsupportedGrant,
        Refusal::UnknownArtifact,
        Refusal::RotatedOut,
        Refusal::ArtifactRevoked,
        Refusal::ClientMismatch,
        Refusal::ClientAuthRequired,
        Refusal::UnknownClientSecret,
        Refusal::ClientAuthUnsupported,
        Refusal::MultipleResources,
        Refusal::NoSnapshot,
        Refusal::ScopeNotGranted,
        Refusal::ScopeNarrowing,
        Refusal::DpopProofInvalid,
        Refusal::DpopKeyMismatch,
        Refusal::DpopNotBound,
        Refusal::GuestUser,
        Refusal::ClientIpUnknown,
        Refusal::Hook,
        Refusal::NoSigningKey,
        Refusal::BadTemplate,
    ];

    /// The machine reason (`reason` label, audit `reason`).
    pub const fn label(self) -> &'static str {
        match self {
            Refusal::MalformedRequest => "malformed_request",
            Refusal::UnsupportedGrant => "unsupported_grant",
            Refusal::UnknownArtifact => "unknown_refresh_token",
            Refusal::RotatedOut => "refresh_token_rotated_out",
            Refusal::ArtifactRevoked => "refresh_token_revoked",
            Refusal::ClientMismatch => "client_mismatch",
            Refusal::ClientAuthRequired => "client_auth_required",
            Refusal::UnknownClientSecret => "unknown_client_secret",
            Refusal::ClientAuthUnsupported => "client_auth_unsupported",
            Refusal::MultipleResources => "multiple_resources",
            Refusal::NoSnapshot => "no_snapshot",
            Refusal::ScopeNotGranted => "scope_not_granted",
            Refusal::ScopeNarrowing => "scope_narrowing",
            Refusal::DpopProofInvalid => "dpop_proof_invalid",
            Refusal::DpopKeyMismatch => "dpop_key_mismatch",
            Refusal::DpopNotBound => "dpop_not_bound",
            Refusal::GuestUser => "guest_user",
            Refusal::ClientIpUnknown => "client_ip_unknown",
            Refusal::Hook => "policy_or_revocation",
            Refusal::NoSigningKey => "no_signing_key",
            Refusal::BadTemplate => "bad_template",
        }
    }

    /// The RFC 6749 / RFC 9449 error this reason is answered with. `temporarily_unavailable`
    /// (503 + `Retry-After`) means "cannot serve now, keep your token" (DESIGN §2).
    pub const fn error(self) -> OAuthError {
        match self {
            Refusal::MalformedRequest => OAuthError::InvalidRequest,
            Refusal::RotatedOut | Refusal::ArtifactRevoked | Refusal::ClientMismatch => {
                OAuthError::InvalidGrant
            }
            Refusal::ClientAuthRequired => OAuthError::InvalidClient,
            Refusal::ScopeNotGranted => OAuthError::InvalidScope,
            Refusal::DpopProofInvalid | Refusal::DpopKeyMismatch => OAuthError::InvalidDpopProof,
            Refusal::UnsupportedGrant
            | Refusal::UnknownArtifact
            | Refusal::UnknownClientSecret
            | Refusal::ClientAuthUnsupported
            | Refusal::MultipleResources
            | Refusal::NoSnapshot
            | Refusal::ScopeNarrowing
            | Refusal::DpopNotBound
            | Refusal::GuestUser
            | Refusal::ClientIpUnknown
            | Refusal::Hook
            | Refusal::NoSigningKey
            | Refusal::BadTemplate => OAuthError::TemporarilyUnavailable,
        }
    }

    /// Index into [`Refusal::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The description sent to the client: says what to do, never names a credential.
    const fn description(self) -> &'static str {
        match self {
            Refusal::MalformedRequest => "malformed request",
            Refusal::RotatedOut | Refusal::ArtifactRevoked => {
                "the refresh token is invalid, expired or revoked"
            }
            Refusal::ClientMismatch => "the refresh token was issued to another client",
            Refusal::ClientAuthRequired => "client authentication required",
            Refusal::ScopeNotGranted => "the requested scope exceeds the granted scope",
            Refusal::DpopProofInvalid => "a valid DPoP proof is required",
            Refusal::DpopKeyMismatch => "the DPoP proof is not signed with the bound key",
            _ => "the identity provider is unavailable; retry later",
        }
    }
}

/// A refusal decided by the policy / revocation hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRefusal {
    /// Machine reason (`mfa`, `revoked_credential_change`, ...).
    pub label: &'static str,
    /// The wire error.
    pub error: OAuthError,
    /// Which eligibility rule (1–5, DESIGN §2) refused.
    pub rule: u8,
    /// The refusing policy's id or the revocation event's id, for the audit record.
    pub detail: Option<String>,
}

/// What the policy and revocation hook sees of a request the backup would serve.
pub struct CheckFacts<'a> {
    /// The recorded session.
    pub session: &'a SessionView,
    /// The presented refresh token's record (its `family` is the revocation subject "session").
    pub artifact: &'a ArtifactView,
    /// The client's IP as trusted (socket peer or trusted proxy header).
    pub client_ip: IpAddr,
    /// The request's `User-Agent`, if any.
    pub user_agent: Option<&'a str>,
    /// Now, unix seconds.
    pub now_secs: i64,
}

/// Eligibility rules 4 and 5 (DESIGN §2): Conditional Access policies and revocation events.
/// Rules 1–3 (snapshot exists, no interaction, home tenant) are checked before the hook runs.
pub trait OutageChecks: Send + Sync {
    /// `Ok` to serve, or why not.
    fn check(&self, facts: &CheckFacts<'_>) -> Result<(), HookRefusal>;
}

/// Signers for every algorithm backstop holds a key for: one set per worker thread, used with
/// `&mut` (no lock on the signing path).
#[derive(Debug)]
pub struct Minters {
    by_alg: Vec<(SigningAlg, Minter)>,
    /// The token being minted, reused from one response to the next (the response body itself
    /// leaves with the response and cannot be).
    token: Vec<u8>,
}

impl Minters {
    /// One minter per keyring, each signing with its current key.
    pub fn new(keyrings: &[Keyring], backend: Ed25519Backend) -> Result<Self, KeyringError> {
        let by_alg = keyrings
            .iter()
            .map(|ring| Ok((ring.alg(), ring.minter(backend)?)))
            .collect::<Result<_, KeyringError>>()?;
        Ok(Self {
            by_alg,
            token: Vec::with_capacity(1024),
        })
    }

    fn get(&mut self, alg: SigningAlg) -> Option<&mut Minter> {
        self.by_alg
            .iter_mut()
            .find_map(|(a, m)| (*a == alg).then_some(m))
    }
}

/// What [`serve_refresh`] needs besides the request.
pub struct OutageEnv<'a> {
    /// The session store.
    pub store: &'a Store,
    /// The token endpoint URL as clients address it (DPoP `htu`).
    pub token_url: &'a str,
    /// DPoP proof `jti`s already seen (one cache for all workers, so a replay is caught on any).
    pub dpop_replay: &'a Mutex<ReplayCache>,
    /// DPoP proof time bounds.
    pub dpop_policy: DpopPolicy,
    /// Policy and revocation checks.
    pub checks: &'a dyn OutageChecks,
    /// Now, unix seconds.
    pub now_secs: i64,
}

/// The parts of an HTTP request the outage path reads.
#[derive(Debug, Clone, Copy)]
pub struct OutageRequest<'a> {
    /// The form body.
    pub body: &'a [u8],
    /// The `Authorization` header, if exactly one.
    pub authorization: Option<&'a [u8]>,
    /// The `DPoP` header, if exactly one.
    pub dpop: Option<&'a [u8]>,
    /// More than one `DPoP` header was sent (RFC 9449 §4.3: invalid).
    pub dpop_repeated: bool,
    /// The client's IP as trusted (socket peer or a trusted proxy's header); `None` when a
    /// trusted proxy's header was malformed (location conditions cannot be placed: refused).
    pub client_ip: Option<IpAddr>,
    /// `User-Agent`, if any.
    pub user_agent: Option<&'a str>,
}

/// Who a decision concerned, for the audit record (identifiers only, never a credential).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Subject {
    /// `client_id`, when the request named one.
    pub client: String,
    /// The session's user, once the artifact was found.
    pub user: String,
    /// The session's routing key (keyed hash), hex, once the identity was known.
    pub session_key: Option<u128>,
    /// The grant type as sent.
    pub grant_type: std::borrow::Cow<'static, str>,
}

/// The outcome of one outage-mode request.
#[derive(Debug)]
pub enum Decision {
    /// Served: the JSON token response body.
    Served {
        /// The response body.
        body: Vec<u8>,
        /// Whom it was for.
        subject: Subject,
    },
    /// Refused.
    Refused {
        /// Why.
        reason: Refusal,
        /// The hook's own label, when `reason` is [`Refusal::Hook`].
        hook: Option<HookRefusal>,
        /// The wire error.
        error: OAuthError,
        /// Description for the client.
        description: String,
        /// Whom it concerned, as far as known.
        subject: Subject,
    },
}

impl Decision {
    fn refuse(reason: Refusal, subject: Subject) -> Self {
        Decision::Refused {
            reason,
            hook: None,
            error: reason.error(),
            description: reason.description().to_string(),
            subject,
        }
    }

    fn malformed(e: RequestError, subject: Subject) -> Self {
        Decision::Refused {
            reason: Refusal::MalformedRequest,
            hook: None,
            error: e.code,
            description: e.description,
            subject,
        }
    }

    /// The machine reason, `"served"` when served.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Served { .. } => "served",
            Decision::Refused { hook: Some(h), .. } => h.label,
            Decision::Refused { reason, .. } => reason.label(),
        }
    }
}

/// Parses the form of a token request: strict (RFC 6749 §3.2: no repeated parameter except
/// RFC 8707 `resource`), bounded by `limits` through [`Form::parse`].
pub fn parse_form(body: &[u8]) -> Result<Form<'_>, RequestError> {
    Form::parse(body, crate::protocol::REPEATABLE).map_err(Into::into)
}

/// Decides one outage-mode token request and, when serving, mints its tokens.
pub fn serve_refresh(
    req: &OutageRequest<'_>,
    env: &OutageEnv<'_>,
    minters: &mut Minters,
) -> Decision {
    let mut subject = Subject::default();
    let form = match parse_form(req.body) {
        Ok(f) => f,
        Err(e) => return Decision::malformed(e, subject),
    };
    let request = match TokenRequest::parse(&form, req.authorization) {
        Ok(r) => r,
        Err(e) => {
            subject.grant_type = form
                .get("grant_type")
                .unwrap_or_default()
                .to_string()
                .into();
            return Decision::malformed(e, subject);
        }
    };
    serve_parsed(req, request, env, minters)
}

/// [`serve_refresh`] for a request the caller has already parsed (from `req.body`, with
/// `req.authorization`): the server parses once, before choosing the mode.
pub fn serve_parsed(
    req: &OutageRequest<'_>,
    request: TokenRequest<'_>,
    env: &OutageEnv<'_>,
    minters: &mut Minters,
) -> Decision {
    let mut subject = Subject {
        grant_type: match request {
            // The standard names need no allocation.
            TokenRequest::RefreshToken { .. } => "refresh_token".into(),
            TokenRequest::AuthorizationCode { .. } => "authorization_code".into(),
            TokenRequest::ClientCredentials { .. } => "client_credentials".into(),
            TokenRequest::Other { grant_type, .. } => grant_type.to_string().into(),
        },
        ..Subject::default()
    };
    let TokenRequest::RefreshToken {
        client,
        refresh_token,
        scope,
        resources,
    } = request
    else {
        // Interactive and workload grants are not served from the backup (DESIGN §2).
        return Decision::refuse(Refusal::UnsupportedGrant, subject);
    };
    let client_id = client.client_id().unwrap_or_default();
    subject.client = client_id.to_string();
    if req.dpop_repeated {
        return Decision::refuse(Refusal::DpopProofInvalid, subject);
    }

    // 2. The artifact.
    let digest = env.store.artifact_digest(
        ArtifactKind::RefreshToken,
        refresh_token.expose().as_bytes(),
    );
    let Some(artifact) = env.store.get_artifact(&digest, env.now_secs) else {
        return Decision::refuse(Refusal::UnknownArtifact, subject);
    };
    subject.user = artifact.user.as_str().to_string();
    match artifact.state() {
        ArtifactState::Current => {}
        ArtifactState::Superseded { .. } => return Decision::refuse(Refusal::RotatedOut, subject),
        ArtifactState::Revoked => return Decision::refuse(Refusal::ArtifactRevoked, subject),
    }

    // 3. The client, as it authenticated at the primary.
    if client.client_id() != Some(artifact.app.as_str()) {
        // A public client's id, a secret's owner or an assertion's subject: the token was not
        // issued to whoever is asking. (An assertion without `client_id` lands here too, and
        // assertions are refused below in any case.)
        if !matches!(client, ClientAuth::JwtAssertion { .. }) {
            return Decision::refuse(Refusal::ClientMismatch, subject);
        }
    }
    if let Some(refusal) = check_client(&client, &artifact, env) {
        return Decision::refuse(refusal, subject);
    }

    // 4. The session of exactly this device, user, app and resource.
    let resource = match resources.as_slice() {
        [] => artifact.resource.as_str(),
        [one] => one,
        _ => return Decision::refuse(Refusal::MultipleResources, subject),
    };
    let identity = SessionIdentityRef {
        tenant: artifact.tenant.as_str(),
        user: artifact.user.as_str(),
        device: artifact.device.as_str(),
        app: artifact.app.as_str(),
        resource,
    };
    let (key, session) = env.store.get_session_ref(&identity, env.now_secs);
    subject.session_key = Some(key.0);
    let Some(session) = session else {
        return Decision::refuse(Refusal::NoSnapshot, subject);
    };

    // 5. Scope, binding, tenant, then policy and revocation.
    if let Some(requested) = scope
        && let Some(refusal) = check_scope(requested, &session)
    {
        return Decision::refuse(refusal, subject);
    }
    if let Some(refusal) = check_dpop(req, env, &session) {
        return Decision::refuse(refusal, subject);
    }
    if !session.home_tenant {
        return Decision::refuse(Refusal::GuestUser, subject);
    }
    let Some(client_ip) = req.client_ip else {
        return Decision::refuse(Refusal::ClientIpUnknown, subject);
    };
    let facts = CheckFacts {
        session: &session,
        artifact: &artifact,
        client_ip,
        user_agent: req.user_agent,
        now_secs: env.now_secs,
    };
    if let Err(hook) = env.checks.check(&facts) {
        return Decision::Refused {
            reason: Refusal::Hook,
            error: hook.error,
            hook: Some(hook),
            description: Refusal::Hook.description().to_string(),
            subject,
        };
    }

    // 6. Mint.
    match mint_response(&session, refresh_token.expose(), env.now_secs, minters) {
        Ok(body) => Decision::Served { body, subject },
        Err(refusal) => Decision::refuse(refusal, subject),
    }
}

/// Client authentication as the client did it at the primary when it got this token.
fn check_client(
    client: &ClientAuth<'_>,
    artifact: &ArtifactView,
    env: &OutageEnv<'_>,
) -> Option<Refusal> {
    match ClientAuthMethod::from_code(artifact.client_auth) {
        ClientAuthMethod::None => match client {
            ClientAuth::None { .. } => None,
            // A secret or assertion from a client that was public at the primary: its
            // registration changed since; only the primary can say whether that is fine.
            _ => Some(Refusal::ClientAuthUnsupported),
        },
        ClientAuthMethod::SecretBasic | ClientAuthMethod::SecretPost => match client {
            ClientAuth::SecretBasic { client_id, secret }
            | ClientAuth::SecretPost { client_id, secret } => {
                let digest = crate::gateway::capture::client_secret_digest(
                    env.store,
                    client_id,
                    secret.expose().as_bytes(),
                );
                match env.store.get_artifact(&digest, env.now_secs) {
                    Some(rec)
                        if rec.state() == ArtifactState::Current
                            && rec.app.as_str() == client_id.as_ref() =>
                    {
                        None
                    }
                    _ => Some(Refusal::UnknownClientSecret),
                }
            }
            ClientAuth::None { .. } => Some(Refusal::ClientAuthRequired),
            ClientAuth::JwtAssertion { .. } => Some(Refusal::ClientAuthUnsupported),
        },
        // Assertions need the client's registered keys (a later step: cached directory
        // metadata); an unknown method is never guessed.
        ClientAuthMethod::JwtAssertion | ClientAuthMethod::Unknown => {
            Some(Refusal::ClientAuthUnsupported)
        }
    }
}

/// A requested `scope` must be exactly the granted set (any order): a wider one is refused as
/// the primary would; a narrower one cannot be minted faithfully (the template's `scope` claim
/// and audience follow the grant), so the client is told to retry later.
fn check_scope(requested: &str, session: &SessionView) -> Option<Refusal> {
    let granted = |s: &str| session.scopes.iter().any(|g| g.as_str() == s);
    let mut count = 0usize;
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !granted(s) {
            return Some(Refusal::ScopeNotGranted);
        }
        count += 1;
    }
    // Duplicates in the request would inflate `count`; the form forbids nothing there, so
    // compare distinct coverage: every granted scope must be requested.
    let all_requested = session
        .scopes
        .iter()
        .all(|g| requested.split(' ').any(|s| s == g.as_str()));
    (count == 0 || !all_requested).then_some(Refusal::ScopeNarrowing)
}

/// DPoP: a bound session needs a valid proof of its key (RFC 9449 §5); a proof for an unbound
/// session asks for a binding the recorded template does not have.
fn check_dpop(
    req: &OutageRequest<'_>,
    env: &OutageEnv<'_>,
    session: &SessionView,
) -> Option<Refusal> {
    let bound = session.dpop_jkt.as_ref().map(|j| j.as_str());
    match (bound, req.dpop) {
        (None, None) => None,
        (None, Some(_)) => Some(Refusal::DpopNotBound),
        (Some(_), None) => Some(Refusal::DpopProofInvalid),
        (Some(jkt), Some(proof)) => {
            let request = DpopRequest {
                method: "POST",
                url: env.token_url,
                access_token: None,
                nonce: None,
            };
            let now = u64::try_from(env.now_secs).unwrap_or(0);
            let verified = match env.dpop_replay.lock() {
                Ok(mut replay) => {
                    dpop::verify_proof(proof, &request, &env.dpop_policy, &mut replay, now)
                }
                // A panic elsewhere while holding the cache: fail closed.
                Err(_) => return Some(Refusal::DpopProofInvalid),
            };
            match verified {
                Err(e) => {
                    tracing::debug!(error = %e, "DPoP proof refused");
                    Some(Refusal::DpopProofInvalid)
                }
                Ok(v) if v.jkt != jkt => Some(Refusal::DpopKeyMismatch),
                Ok(_) => None,
            }
        }
    }
}

fn template_of(t: &crate::store::format::ArchivedDiskTemplate) -> Result<TemplateRef<'_>, Refusal> {
    let meta = TemplateMeta::from_stored(
        t.time_claims,
        t.typ.as_str(),
        t.alg.as_str(),
        t.lifetime_secs.to_native(),
        t.nbf_offset_secs.to_native(),
    )
    .map_err(|_| Refusal::BadTemplate)?;
    TemplateRef::from_stored(t.claims_json.as_slice(), meta).map_err(|_| Refusal::BadTemplate)
}

/// Mints the response body: `access_token`, `token_type`, `expires_in`, `scope`, the echoed
/// `refresh_token` and an `id_token` when the grant had one.
fn mint_response(
    session: &SessionView,
    refresh_token: &str,
    now_secs: i64,
    minters: &mut Minters,
) -> Result<Vec<u8>, Refusal> {
    let now = u64::try_from(now_secs).map_err(|_| Refusal::BadTemplate)?;
    let access = template_of(&session.access_token)?;
    let mut body = Vec::with_capacity(2048);
    let mut token = std::mem::take(&mut minters.token);
    let minted = mint_into(
        session,
        access,
        refresh_token,
        now,
        minters,
        &mut token,
        &mut body,
    );
    minters.token = token;
    minted.map(|()| body)
}

/// [`mint_response`]'s body, with the token scratch buffer lent out of `minters`.
fn mint_into(
    session: &SessionView,
    access: TemplateRef<'_>,
    refresh_token: &str,
    now: u64,
    minters: &mut Minters,
    token: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> Result<(), Refusal> {
    let minter = minters
        .get(access.meta().alg)
        .ok_or(Refusal::NoSigningKey)?;
    minter
        .mint(access, now, token)
        .map_err(|_| Refusal::BadTemplate)?;
    body.extend_from_slice(b"{\"access_token\":");
    compact_jws_string(body, token);
    body.extend_from_slice(b",\"token_type\":");
    json_string(body, session.token_type.as_bytes());
    if access.meta().lifetime_secs > 0 {
        body.extend_from_slice(b",\"expires_in\":");
        append::push_u64(body, u64::from(access.meta().lifetime_secs));
    }
    if !session.scopes.is_empty() {
        // The granted scopes joined by spaces, as one JSON string, escaped piece by piece.
        body.extend_from_slice(b",\"scope\":\"");
        for (i, s) in session.scopes.iter().enumerate() {
            if i > 0 {
                body.push(b' ');
            }
            append::json_escape(body, s.as_bytes());
        }
        body.push(b'"');
    }
    body.extend_from_slice(b",\"refresh_token\":");
    json_string(body, refresh_token.as_bytes());
    if let Some(id) = session.id_token.as_ref() {
        let id = template_of(id)?;
        let minter = minters.get(id.meta().alg).ok_or(Refusal::NoSigningKey)?;
        minter
            .mint(id, now, token)
            .map_err(|_| Refusal::BadTemplate)?;
        body.extend_from_slice(b",\"id_token\":");
        compact_jws_string(body, token);
    }
    body.push(b'}');
    Ok(())
}

/// Appends a token we minted as a JSON string: base64url segments and dots by construction, so
/// nothing to escape (checked in debug builds).
fn compact_jws_string(out: &mut Vec<u8>, token: &[u8]) {
    debug_assert!(
        token
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    );
    out.push(b'"');
    out.extend_from_slice(token);
    out.push(b'"');
}

/// Appends `s` as a JSON string (RFC 8259 §7 escaping; invalid UTF-8 cannot occur: every input
/// is ASCII base64url, a stored string, or a form value, which are all `str`).
fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    append::json_escape(out, s);
    out.push(b'"');
}

/// The hook until Conditional Access and revocation are wired (issue 6): allows everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl OutageChecks for AllowAll {
    fn check(&self, _facts: &CheckFacts<'_>) -> Result<(), HookRefusal> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::store::{
        ArtifactRecord, DeviceCompliance, RiskLevel, SessionIdentity, SessionSnapshot, StoreOpts,
        TokenTemplate,
    };
    use crate::token::jws::{JwtPolicy, TypRule, verify_jwt};
    use crate::token::mint::{PrimaryTokenShape, build_template};

    const NOW: i64 = 1_800_000_000;
    const RT: &str = "rt-current";
    const RT_OLD: &str = "rt-old";
    const URL: &str = "https://login.example.com/token";
    const API: &str = "https://api.example.com";

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        keyring: Keyring,
        _key_dir: tempfile::TempDir,
        replay: Mutex<ReplayCache>,
    }

    fn template(claims: &str, typ: Option<crate::token::alg::Typ>) -> TokenTemplate {
        let t = build_template(
            claims.as_bytes(),
            PrimaryTokenShape {
                typ,
                alg: SigningAlg::EdDsa,
            },
            u64::try_from(NOW).unwrap(),
        )
        .unwrap();
        TokenTemplate {
            claims_json: t.claims,
            time_claims: t.meta.time_claim_bits(),
            lifetime_secs: t.meta.lifetime_secs,
            alg: t.meta.alg.name().into(),
            typ: t.meta.typ.map_or("", |t| t.name()).into(),
            nbf_offset_secs: t.meta.nbf_offset_secs,
        }
    }

    fn identity(resource: &str) -> SessionIdentity {
        SessionIdentity {
            tenant: "t1".into(),
            user: "alice".into(),
            device: "family:f1".into(),
            app: "app".into(),
            resource: resource.into(),
        }
    }

    fn snapshot(resource: &str, edit: impl FnOnce(&mut SessionSnapshot)) -> SessionSnapshot {
        let iat = NOW - 100;
        let mut s = SessionSnapshot {
            identity: identity(resource),
            home_tenant: true,
            auth_time_secs: NOW - 1000,
            recorded_at_secs: NOW - 100,
            expires_at_secs: NOW + 3 * 86_400,
            amr: vec!["pwd".into(), "mfa".into()],
            acr: "1".into(),
            groups: vec![],
            roles: vec![],
            sign_in_risk: RiskLevel::None,
            user_risk: RiskLevel::None,
            device_platform: String::new(),
            device_compliance: DeviceCompliance::Unknown,
            dpop_jkt: None,
            access_token: template(
                &format!(
                    r#"{{"iss":"https://login.example.com","sub":"alice","aud":"{resource}","iat":{iat},"exp":{},"jti":"j1","scp":"read"}}"#,
                    iat + 3600
                ),
                Some(crate::token::alg::Typ::AtJwt),
            ),
            id_token: Some(template(
                &format!(
                    r#"{{"iss":"https://login.example.com","sub":"alice","aud":"app","iat":{iat},"exp":{},"nonce":"n1","auth_time":{}}}"#,
                    iat + 600,
                    NOW - 1000
                ),
                None,
            )),
            scopes: vec!["openid".into(), "read".into()],
            token_type: "Bearer".into(),
        };
        edit(&mut s);
        s
    }

    fn artifact(store: &Store, raw: &str, state: ArtifactState) -> ArtifactRecord {
        let id = identity(API);
        ArtifactRecord {
            kind: ArtifactKind::RefreshToken,
            digest: store.artifact_digest(ArtifactKind::RefreshToken, raw.as_bytes()),
            tenant: id.tenant,
            user: id.user,
            device: id.device,
            app: id.app,
            resource: API.into(),
            family: "f1".into(),
            client_auth: ClientAuthMethod::None,
            state,
            state_changed_at_secs: 0,
            issued_at_secs: NOW - 100,
            expires_at_secs: NOW + 86_400,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn fixture(edit: impl FnOnce(&mut SessionSnapshot), secret: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOpts::manual()).unwrap();
        let current = artifact(&store, RT, ArtifactState::Current);
        let mut old = artifact(&store, RT_OLD, ArtifactState::Current);
        old.state = ArtifactState::Superseded {
            successor: current.digest,
        };
        let mut current = current;
        if secret {
            current.client_auth = ClientAuthMethod::SecretBasic;
            let mut sec = artifact(&store, "unused", ArtifactState::Current);
            sec.kind = ArtifactKind::ClientSecret;
            sec.digest = crate::gateway::capture::client_secret_digest(&store, "app", b"s3cret");
            block_on(store.put_artifact(&sec)).unwrap();
        }
        block_on(store.put_artifact(&current)).unwrap();
        block_on(store.put_artifact(&old)).unwrap();
        block_on(store.put_session(&snapshot(API, edit))).unwrap();
        let key_dir = tempfile::tempdir().unwrap();
        let keyring =
            Keyring::load_or_generate(key_dir.path(), SigningAlg::EdDsa, 1_700_000_000).unwrap();
        Fixture {
            _dir: dir,
            store,
            keyring,
            _key_dir: key_dir,
            replay: Mutex::new(ReplayCache::new(1024)),
        }
    }

    fn decide(f: &Fixture, body: &str, auth: Option<&str>, dpop: Option<&str>) -> Decision {
        let env = OutageEnv {
            store: &f.store,
            token_url: URL,
            dpop_replay: &f.replay,
            dpop_policy: DpopPolicy::default(),
            checks: &AllowAll,
            now_secs: NOW,
        };
        let req = OutageRequest {
            body: body.as_bytes(),
            authorization: auth.map(str::as_bytes),
            dpop: dpop.map(str::as_bytes),
            dpop_repeated: false,
            client_ip: Some(IpAddr::from([127, 0, 0, 1])),
            user_agent: None,
        };
        let mut minters =
            Minters::new(std::slice::from_ref(&f.keyring), Ed25519Backend::AwsLc).unwrap();
        serve_refresh(&req, &env, &mut minters)
    }

    fn refused(d: &Decision) -> Option<Refusal> {
        match d {
            Decision::Refused { reason, .. } => Some(*reason),
            Decision::Served { .. } => None,
        }
    }

    fn body(rt: &str, extra: &str) -> String {
        format!("grant_type=refresh_token&refresh_token={rt}&client_id=app{extra}")
    }

    #[test]
    fn the_current_token_is_served_with_the_templates_claims_and_fresh_times() {
        let f = fixture(|_| {}, false);
        let Decision::Served { body: out, subject } = decide(&f, &body(RT, ""), None, None) else {
            panic!("not served");
        };
        assert_eq!(subject.user, "alice");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["refresh_token"], RT);
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["expires_in"], 3600);
        assert_eq!(v["scope"], "openid read");
        let keys = crate::token::jwks::KeySet::from_ours(&f.keyring.published()).unwrap();
        let at = v["access_token"].as_str().unwrap();
        let policy = JwtPolicy {
            typ: TypRule::Exactly(crate::token::alg::Typ::AtJwt),
            algs: &[crate::token::alg::Alg::EdDsa],
            leeway_secs: 0,
            require_exp: true,
            issuer: Some("https://login.example.com"),
            audience: Some(API),
        };
        let now = u64::try_from(NOW).unwrap();
        let verified = verify_jwt(at.as_bytes(), &keys, &policy, now).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&verified.payload).unwrap();
        assert_eq!(claims["iat"], NOW);
        assert_eq!(claims["exp"], NOW + 3600);
        assert_eq!(claims["scp"], "read");
        assert_ne!(claims["jti"], "j1");
        let id = v["id_token"].as_str().unwrap();
        let policy = JwtPolicy {
            typ: TypRule::JwtOrAbsent,
            audience: Some("app"),
            ..policy
        };
        let verified = verify_jwt(id.as_bytes(), &keys, &policy, now).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&verified.payload).unwrap();
        assert_eq!(claims["nonce"], "n1");
        assert_eq!(claims["auth_time"], NOW - 1000);
        assert!(
            claims.get("jti").is_none(),
            "no claim the primary did not issue"
        );
    }

    #[test]
    fn refusals_name_their_reason_and_map_to_the_design_errors() {
        let f = fixture(|_| {}, false);
        let cases: [(&str, String, Refusal); 8] = [
            ("unknown", body("never-seen", ""), Refusal::UnknownArtifact),
            ("rotated out", body(RT_OLD, ""), Refusal::RotatedOut),
            (
                "other client",
                format!("grant_type=refresh_token&refresh_token={RT}&client_id=other"),
                Refusal::ClientMismatch,
            ),
            (
                "other resource",
                body(RT, "&resource=https%3A%2F%2Fother.example.com"),
                Refusal::NoSnapshot,
            ),
            (
                "two resources",
                body(
                    RT,
                    "&resource=https%3A%2F%2Fapi.example.com&resource=https%3A%2F%2Fother.example.com",
                ),
                Refusal::MultipleResources,
            ),
            (
                "wider scope",
                body(RT, "&scope=openid%20write"),
                Refusal::ScopeNotGranted,
            ),
            (
                "narrower scope",
                body(RT, "&scope=read"),
                Refusal::ScopeNarrowing,
            ),
            (
                "code grant",
                "grant_type=authorization_code&code=c&client_id=app".into(),
                Refusal::UnsupportedGrant,
            ),
        ];
        for (name, b, want) in cases {
            assert_eq!(refused(&decide(&f, &b, None, None)), Some(want), "{name}");
        }
        // The same scope in another order is the same grant.
        assert_eq!(
            refused(&decide(&f, &body(RT, "&scope=read%20openid"), None, None)),
            None
        );
        assert_eq!(
            refused(&decide(
                &f,
                &body(RT, "&resource=https%3A%2F%2Fapi.example.com"),
                None,
                None
            )),
            None
        );
        assert_eq!(
            refused(&decide(
                &f,
                "grant_type=refresh_token&grant_type=x",
                None,
                None
            )),
            Some(Refusal::MalformedRequest)
        );
    }

    #[test]
    fn guests_and_proofs_for_unbound_sessions_are_not_served() {
        let f = fixture(|s| s.home_tenant = false, false);
        assert_eq!(
            refused(&decide(&f, &body(RT, ""), None, None)),
            Some(Refusal::GuestUser)
        );
        let f = fixture(|_| {}, false);
        assert_eq!(
            refused(&decide(&f, &body(RT, ""), None, Some("x.y.z"))),
            Some(Refusal::DpopNotBound)
        );
    }

    #[test]
    fn a_dpop_bound_session_needs_a_fresh_proof_of_its_own_key() {
        use crate::token::sign::SigningKey;
        let key = SigningKey::generate(SigningAlg::Es256).unwrap();
        let jkt = dpop::jkt(&key.public_jwk().key);
        let f = fixture(|s| s.dpop_jkt = Some(jkt.clone()), false);
        let proof = |k: &SigningKey, jti: &str| {
            let header = format!(
                r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{}}}"#,
                k.public_jwk().key.canonical_json()
            );
            let claims = format!(r#"{{"jti":"{jti}","htm":"POST","htu":"{URL}","iat":{NOW}}}"#);
            let signer = k.signer(Ed25519Backend::AwsLc).unwrap();
            let mut input = crate::token::b64::encode(header.as_bytes());
            input.push('.');
            input.push_str(&crate::token::b64::encode(claims.as_bytes()));
            let mut sig: crate::token::sign::SignatureBuf = [0; 512];
            let n = signer.sign(input.as_bytes(), &mut sig).unwrap();
            format!("{input}.{}", crate::token::b64::encode(&sig[..n]))
        };
        assert_eq!(
            refused(&decide(&f, &body(RT, ""), None, None)),
            Some(Refusal::DpopProofInvalid)
        );
        let other = SigningKey::generate(SigningAlg::Es256).unwrap();
        assert_eq!(
            refused(&decide(&f, &body(RT, ""), None, Some(&proof(&other, "a")))),
            Some(Refusal::DpopKeyMismatch)
        );
        let good = proof(&key, "b");
        assert_eq!(refused(&decide(&f, &body(RT, ""), None, Some(&good))), None);
        assert_eq!(
            refused(&decide(&f, &body(RT, ""), None, Some(&good))),
            Some(Refusal::DpopProofInvalid),
            "a replayed proof"
        );
    }

    #[test]
    fn a_confidential_client_must_present_the_secret_the_primary_last_accepted() {
        use base64::Engine as _;
        let f = fixture(|_| {}, true);
        let basic = |secret: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("app:{secret}"))
            )
        };
        let b = format!("grant_type=refresh_token&refresh_token={RT}");
        assert_eq!(refused(&decide(&f, &b, Some(&basic("s3cret")), None)), None);
        assert_eq!(
            refused(&decide(&f, &b, Some(&basic("wrong")), None)),
            Some(Refusal::UnknownClientSecret)
        );
        assert_eq!(
            refused(&decide(&f, &body(RT, ""), None, None)),
            Some(Refusal::ClientAuthRequired)
        );
        let post = format!("{b}&client_id=app&client_secret=s3cret");
        assert_eq!(refused(&decide(&f, &post, None, None)), None);
    }

    #[test]
    fn json_string_escapes_quotes_backslashes_and_controls() {
        let mut out = Vec::new();
        json_string(&mut out, b"a\"b\\c\n\x01");
        assert_eq!(out, br#""a\"b\\c\u000a\u0001""#);
    }

    #[test]
    fn every_refusal_has_a_distinct_label_and_index() {
        let mut labels: Vec<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Refusal::ALL.len());
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn only_known_but_dead_tokens_get_invalid_grant() {
        for r in Refusal::ALL {
            let invalid_grant = r.error() == OAuthError::InvalidGrant;
            assert_eq!(
                invalid_grant,
                matches!(
                    r,
                    Refusal::RotatedOut | Refusal::ArtifactRevoked | Refusal::ClientMismatch
                ),
                "{r:?}"
            );
        }
        assert_eq!(
            Refusal::UnknownArtifact.error(),
            OAuthError::TemporarilyUnavailable
        );
    }
}
