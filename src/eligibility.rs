//! Eligibility (DESIGN §2): may the backup serve this request from this session snapshot?
//! One pure decision over plain facts, the current policies, the revocation filter and `now`:
//! the five rules in a fixed order, the first that fails names the refusal.
//!
//! 1. **Snapshot.** A snapshot exists for the exact device-user-app-resource, has not expired
//!    (`expires_at`), lies inside the session window (`recorded_at + window`) and is not
//!    from the future (its `recorded_at` is where the revocation check starts: a time ahead
//!    of now would hide events happening now).
//! 2. **No interaction.** No `prompt=login|consent|select_account`, no `max_age` that the
//!    snapshot's `auth_time` no longer satisfies (or an unknown `auth_time`), no claims
//!    challenge.
//! 3. **Home tenant.** Not a B2B guest or B2C user.
//! 4. **Conditional Access.** [`policy::evaluate`]: no applicable policy with resilience
//!    defaults disabled, no block, every required control met by the snapshot.
//! 5. **Revocation.** No event for the snapshot's user, device, session (refresh-token
//!    family) or app at or after its `recorded_at`; a question the filter cannot answer (before
//!    its horizon) refuses.
//!
//! Sits on the outage path's floor (with `backup/`): it reads `policy`, `revocation` and
//! `protocol`, and nothing reads it but the server. No I/O, no clock, no allocation on the
//! serve path beyond what policy evaluation reports.

use std::net::IpAddr;

use crate::limits::SESSION_WINDOW_SECS;
use crate::policy::{
    self, Allowed, ClientAppType, Decision, DevicePlatform, PolicySet, RefusalReason,
    ReportOnlyResult, RiskLevel, StrList,
};
use crate::protocol::OAuthError;
use crate::revocation::{EventKind, FilterSnapshot, NotRevoked, SubjectKind, Verdict};

/// Settings of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EligibilityConfig {
    /// Seconds after `recorded_at` a snapshot may be served (`limits::SESSION_WINDOW_SECS`).
    pub session_window_secs: i64,
}

impl Default for EligibilityConfig {
    fn default() -> Self {
        Self {
            session_window_secs: i64::try_from(SESSION_WINDOW_SECS.default).unwrap_or(i64::MAX),
        }
    }
}

/// What the request asks that may need the user (OIDC Core §3.1.2.1). A refresh-token grant
/// carries none of it; `/authorize` may.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interaction<'a> {
    /// The `prompt` parameter as sent (space-delimited values), if any.
    pub prompt: Option<&'a str>,
    /// The `max_age` parameter, seconds.
    pub max_age_secs: Option<u64>,
    /// The request carries a claims challenge (a `claims` parameter, e.g. a CAE challenge
    /// from a resource server): only the primary can answer one.
    pub claims_challenge: bool,
}

/// Facts of the live request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Platform (`DevicePlatform::from_user_agent`, or device facts); `None` if unknown.
    pub platform: Option<DevicePlatform>,
    /// The client's IP (`policy::client_ip`).
    pub client_ip: IpAddr,
    /// How the client authenticates (a refresh-token grant from a native or SPA client is
    /// `MobileAppsAndDesktopClients`; `/authorize` is `Browser`).
    pub client_app: ClientAppType,
    /// Interaction parameters.
    pub interaction: Interaction<'a>,
}

impl<'a> RequestFacts<'a> {
    /// The facts from what the server has in hand: the socket `peer`, the `User-Agent`, the
    /// values of the configured client-IP header (empty if none), and the client's type and
    /// interaction parameters. Fails when a trusted proxy's header is malformed (refuse the
    /// request: the location conditions cannot be placed).
    pub fn from_http<'v>(
        peer: IpAddr,
        user_agent: Option<&str>,
        client_ip_header_values: impl IntoIterator<Item = &'v str>,
        client_ip_config: &policy::ClientIpConfig,
        client_app: ClientAppType,
        interaction: Interaction<'a>,
    ) -> Result<Self, policy::ClientIpError> {
        Ok(Self {
            platform: user_agent.and_then(DevicePlatform::from_user_agent),
            client_ip: policy::client_ip(peer, client_ip_header_values, client_ip_config)?,
            client_app,
            interaction,
        })
    }
}

/// Facts of the session snapshot, borrowed from wherever it lives (an archived, mmapped
/// record: the lists are [`StrList`]s, read in place).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotFacts<'a> {
    /// The user (`sub` / object id): Conditional Access `includeUsers` and the revocation
    /// subject.
    pub user: &'a str,
    /// The device identity, if the session has one.
    pub device: Option<&'a str>,
    /// The primary's session (`sid`) or the refresh-token family, if known.
    pub session: Option<&'a str>,
    /// The client application (`client_id`).
    pub app: &'a str,
    /// The user acted in their home tenant.
    pub home_tenant: bool,
    /// `auth_time` of the primary's authentication, Unix seconds; `None` if unknown.
    pub auth_time_secs: Option<i64>,
    /// When the snapshot was recorded, Unix seconds.
    pub recorded_at_secs: i64,
    /// When it stops being servable, Unix seconds.
    pub expires_at_secs: i64,
    /// Group ids as of the sign-in.
    pub groups: &'a dyn StrList,
    /// Role ids as of the sign-in.
    pub roles: &'a dyn StrList,
    /// `amr` of the session.
    pub amr: &'a dyn StrList,
    /// Sign-in risk, if reported.
    pub sign_in_risk: Option<RiskLevel>,
    /// User risk, if reported.
    pub user_risk: Option<RiskLevel>,
    /// The device was reported compliant.
    pub device_compliant: bool,
    /// The device was reported domain joined.
    pub device_domain_joined: bool,
}

/// Why a request needs the user (rule 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InteractionReason {
    /// `prompt=login`.
    PromptLogin,
    /// `prompt=consent`.
    PromptConsent,
    /// `prompt=select_account`.
    PromptSelectAccount,
    /// `max_age` is exceeded by the snapshot's `auth_time` (or `auth_time` is unknown).
    MaxAgeExceeded,
    /// A claims challenge.
    ClaimsChallenge,
}

/// Why the backup refuses. One variant per machine reason; [`EligibilityRefusal::label`] is
/// the snake_case name for logs, metrics and audit, [`EligibilityRefusal::oauth_error`] the
/// code on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EligibilityRefusal {
    /// Rule 1: no snapshot for the exact device-user-app-resource.
    NoSnapshot,
    /// Rule 1: the snapshot's `expires_at` has passed.
    SnapshotExpired,
    /// Rule 1: the snapshot was recorded longer ago than the session window.
    OutsideWindow,
    /// Rule 1: the snapshot was recorded after `now` (clock skew between nodes, or a
    /// corrupt record): the revocation check would start in the future.
    SnapshotFromTheFuture,
    /// Rule 2: the request needs the user.
    InteractionRequired(InteractionReason),
    /// Rule 3: a B2B guest or B2C user.
    NotHomeTenant,
    /// Rule 4: a Conditional Access policy refuses.
    Policy {
        /// Why.
        reason: RefusalReason,
        /// The enforced policy that refused.
        policy_id: String,
        /// Report-only policies that applied.
        report_only: Vec<ReportOnlyResult>,
    },
    /// Rule 5: a revocation event for one of the snapshot's subjects at or after its
    /// recording.
    Revoked {
        /// What happened.
        kind: EventKind,
        /// Whom it was about.
        subject: SubjectKind,
        /// The event's id (for the audit record; never a token).
        event_id: String,
    },
    /// Rule 5: the snapshot predates the filter's horizon, so the filter cannot vouch for it.
    RevocationHorizon {
        /// The horizon, Unix seconds.
        horizon_secs: i64,
    },
}

impl EligibilityRefusal {
    /// The standard error for the wire (DESIGN §2):
    /// - cannot serve in outage (no or stale snapshot, guest, resilience defaults off, a
    ///   control the backup cannot check, revocation horizon) → `temporarily_unavailable`
    ///   (503 with `Retry-After`): the token may be fine at the primary, the client keeps it;
    /// - the request needs the user, or a required control (MFA, compliant or domain-joined
    ///   device) is unmet → `interaction_required` (400), as Entra answers an unmet control;
    /// - a policy blocks → `access_denied` (400);
    /// - revoked → `invalid_grant` (400), as the primary would answer.
    pub const fn oauth_error(&self) -> OAuthError {
        match self {
            Self::NoSnapshot
            | Self::SnapshotExpired
            | Self::OutsideWindow
            | Self::SnapshotFromTheFuture
            | Self::NotHomeTenant
            | Self::RevocationHorizon { .. } => OAuthError::TemporarilyUnavailable,
            Self::InteractionRequired(_) => OAuthError::InteractionRequired,
            Self::Policy { reason, .. } => match reason {
                RefusalReason::BlockedByPolicy => OAuthError::AccessDenied,
                RefusalReason::ResilienceDefaultsDisabled | RefusalReason::UnsupportedControl => {
                    OAuthError::TemporarilyUnavailable
                }
                RefusalReason::MfaRequired
                | RefusalReason::CompliantDeviceRequired
                | RefusalReason::DomainJoinedDeviceRequired => OAuthError::InteractionRequired,
            },
            Self::Revoked { .. } => OAuthError::InvalidGrant,
        }
    }

    /// `(HTTP status, error code)` on the wire; see [`EligibilityRefusal::oauth_error`].
    pub const fn wire(&self) -> (u16, &'static str) {
        let error = self.oauth_error();
        (error.http_status(), error.code())
    }

    /// The machine reason: a fixed snake_case label (a closed set, fit for a metric label).
    pub const fn label(&self) -> &'static str {
        match self {
            Self::NoSnapshot => "no_snapshot",
            Self::SnapshotExpired => "snapshot_expired",
            Self::OutsideWindow => "snapshot_outside_window",
            Self::SnapshotFromTheFuture => "snapshot_from_the_future",
            Self::InteractionRequired(reason) => match reason {
                InteractionReason::PromptLogin => "prompt_login",
                InteractionReason::PromptConsent => "prompt_consent",
                InteractionReason::PromptSelectAccount => "prompt_select_account",
                InteractionReason::MaxAgeExceeded => "max_age_exceeded",
                InteractionReason::ClaimsChallenge => "claims_challenge",
            },
            Self::NotHomeTenant => "not_home_tenant",
            Self::Policy { reason, .. } => reason.as_str(),
            Self::Revoked { kind, .. } => match kind {
                EventKind::CredentialChange => "revoked_credential_change",
                EventKind::AccountDisabled => "revoked_account_disabled",
                EventKind::AccountDeleted => "revoked_account_deleted",
                EventKind::SessionsRevoked => "revoked_sessions_revoked",
                EventKind::DeviceNotCompliant => "revoked_device_not_compliant",
                EventKind::HighUserRisk => "revoked_high_user_risk",
                EventKind::AppConsentRevoked => "revoked_app_consent_revoked",
                EventKind::RefreshTokenRefusedByPrimary => "revoked_refresh_token_refused",
                EventKind::AssuranceDowngraded => "revoked_assurance_downgraded",
                EventKind::TokenClaimsChanged => "revoked_token_claims_changed",
            },
            Self::RevocationHorizon { .. } => "revocation_horizon",
        }
    }

    /// Which of the five rules refused (1–5), for the audit record.
    pub const fn rule(&self) -> u8 {
        match self {
            Self::NoSnapshot
            | Self::SnapshotExpired
            | Self::OutsideWindow
            | Self::SnapshotFromTheFuture => 1,
            Self::InteractionRequired(_) => 2,
            Self::NotHomeTenant => 3,
            Self::Policy { .. } => 4,
            Self::Revoked { .. } | Self::RevocationHorizon { .. } => 5,
        }
    }
}

/// Proof that all five rules hold. Only [`decide`] builds one; minting a backup token takes it.
#[derive(Debug)]
#[must_use]
pub struct Eligible {
    allowed: Allowed,
    not_revoked: NotRevoked,
}

impl Eligible {
    /// Report-only policies that applied (log and audit them; they never refuse).
    pub fn report_only(&self) -> &[ReportOnlyResult] {
        self.allowed.report_only()
    }

    /// The revocation check's proof (its `since` and filter generation, for the audit record).
    pub fn not_revoked(&self) -> &NotRevoked {
        &self.not_revoked
    }
}

/// The decision.
#[derive(Debug)]
#[must_use]
pub enum Eligibility {
    /// Serve from the snapshot.
    Serve(Eligible),
    /// Refuse, with the reason.
    Refuse(EligibilityRefusal),
}

impl Eligibility {
    /// Whether the decision is [`Eligibility::Serve`].
    pub fn is_serve(&self) -> bool {
        matches!(self, Self::Serve(_))
    }
}

/// Decides whether the backup may serve `request` from `snapshot` (`None`: the store has no
/// snapshot for it) at `now_secs`, under `policies` and `revocations`. The rules are checked
/// in the order of the module documentation; the first that fails is the refusal.
pub fn decide(
    request: &RequestFacts<'_>,
    snapshot: Option<&SnapshotFacts<'_>>,
    policies: &PolicySet,
    revocations: &FilterSnapshot,
    config: &EligibilityConfig,
    now_secs: i64,
) -> Eligibility {
    match check(request, snapshot, policies, revocations, config, now_secs) {
        Ok(eligible) => Eligibility::Serve(eligible),
        Err(refusal) => Eligibility::Refuse(refusal),
    }
}

fn check(
    request: &RequestFacts<'_>,
    snapshot: Option<&SnapshotFacts<'_>>,
    policies: &PolicySet,
    revocations: &FilterSnapshot,
    config: &EligibilityConfig,
    now_secs: i64,
) -> Result<Eligible, EligibilityRefusal> {
    // Rule 1.
    let snapshot = snapshot.ok_or(EligibilityRefusal::NoSnapshot)?;
    if snapshot.recorded_at_secs > now_secs {
        return Err(EligibilityRefusal::SnapshotFromTheFuture);
    }
    if now_secs >= snapshot.expires_at_secs {
        return Err(EligibilityRefusal::SnapshotExpired);
    }
    if now_secs.saturating_sub(snapshot.recorded_at_secs) > config.session_window_secs {
        return Err(EligibilityRefusal::OutsideWindow);
    }

    // Rule 2.
    if let Some(reason) = interaction_needed(&request.interaction, snapshot, now_secs) {
        return Err(EligibilityRefusal::InteractionRequired(reason));
    }

    // Rule 3.
    if !snapshot.home_tenant {
        return Err(EligibilityRefusal::NotHomeTenant);
    }

    // Rule 4.
    let policy_request = policy::RequestFacts {
        user_id: snapshot.user,
        app_id: snapshot.app,
        platform: request.platform,
        client_ip: request.client_ip,
        client_app: request.client_app,
    };
    let session = policy::SessionFacts {
        groups: snapshot.groups,
        roles: snapshot.roles,
        sign_in_risk: snapshot.sign_in_risk,
        user_risk: snapshot.user_risk,
        amr: snapshot.amr,
        device_compliant: snapshot.device_compliant,
        device_domain_joined: snapshot.device_domain_joined,
        home_tenant: snapshot.home_tenant,
    };
    let allowed = match policy::evaluate(policies, &policy_request, &session) {
        Decision::Allow(allowed) => allowed,
        Decision::Refuse(refusal) => {
            return Err(EligibilityRefusal::Policy {
                reason: refusal.reason,
                policy_id: refusal.policy_id,
                report_only: refusal.report_only,
            });
        }
    };

    // Rule 5.
    let since = snapshot.recorded_at_secs;
    let subjects = [
        Some((SubjectKind::User, snapshot.user)),
        snapshot.device.map(|d| (SubjectKind::Device, d)),
        snapshot.session.map(|s| (SubjectKind::Session, s)),
        Some((SubjectKind::App, snapshot.app)),
    ];
    let mut proof = None;
    for (kind, id) in subjects.into_iter().flatten() {
        match revocations.revoked_since_ref(kind, id, since) {
            Verdict::Clear(not_revoked) => proof = Some(not_revoked),
            Verdict::Revoked(event) => {
                return Err(EligibilityRefusal::Revoked {
                    kind: event.kind,
                    subject: kind,
                    event_id: event.id.clone(),
                });
            }
            Verdict::BeforeHorizon { horizon_secs } => {
                return Err(EligibilityRefusal::RevocationHorizon { horizon_secs });
            }
        }
    }
    // INVARIANT: the user subject is always checked, so a clear run leaves a proof; `None`
    // would be a bug here, and it refuses.
    let not_revoked = proof.ok_or(EligibilityRefusal::RevocationHorizon {
        horizon_secs: revocations.horizon_secs(),
    })?;
    Ok(Eligible {
        allowed,
        not_revoked,
    })
}

fn interaction_needed(
    interaction: &Interaction<'_>,
    snapshot: &SnapshotFacts<'_>,
    now_secs: i64,
) -> Option<InteractionReason> {
    if let Some(prompt) = interaction.prompt {
        // OIDC Core §3.1.2.1: space-delimited, case-sensitive values. `none` asks for no
        // interaction at all, which is what the backup offers.
        for value in prompt.split(' ') {
            match value {
                "login" => return Some(InteractionReason::PromptLogin),
                "consent" => return Some(InteractionReason::PromptConsent),
                "select_account" => return Some(InteractionReason::PromptSelectAccount),
                _ => {}
            }
        }
    }
    if let Some(max_age) = interaction.max_age_secs {
        let max_age = i64::try_from(max_age).unwrap_or(i64::MAX);
        let satisfied = snapshot
            .auth_time_secs
            .is_some_and(|auth_time| now_secs.saturating_sub(auth_time) <= max_age);
        if !satisfied {
            return Some(InteractionReason::MaxAgeExceeded);
        }
    }
    if interaction.claims_challenge {
        return Some(InteractionReason::ClaimsChallenge);
    }
    None
}

#[cfg(test)]
mod tests;
