//! Evaluating one request against a [`PolicySet`]: real-time conditions from the live request,
//! non-real-time ones (groups, roles, risks) from the session snapshot when resilience defaults
//! are on, controls checked against the snapshot. Pure: facts in, a [`Decision`] out.

use std::net::IpAddr;

use super::{
    AppSelector, Control, Grant, LocationRanges, LocationRef, LocationSelector, Operator,
    PlatformSelector, Policy, PolicySet, PolicyState, UserSelector,
};

/// Device platform of the live request (from its device facts and User-Agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePlatform {
    /// `android`.
    Android,
    /// `iOS`.
    Ios,
    /// `windows`.
    Windows,
    /// `windowsPhone`.
    WindowsPhone,
    /// `macOS`.
    MacOs,
    /// `linux`.
    Linux,
}

impl DevicePlatform {
    pub(super) fn from_graph(name: &str) -> Option<Self> {
        Some(match name {
            "android" => Self::Android,
            "iOS" => Self::Ios,
            "windows" => Self::Windows,
            "windowsPhone" => Self::WindowsPhone,
            "macOS" => Self::MacOs,
            "linux" => Self::Linux,
            _ => return None,
        })
    }
}

/// Client app type of the live request (`clientAppTypes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAppType {
    /// `browser`.
    Browser,
    /// `mobileAppsAndDesktopClients` (modern authentication clients).
    MobileAppsAndDesktopClients,
    /// `exchangeActiveSync` / `easSupported`.
    ExchangeActiveSync,
    /// `other` (legacy authentication).
    Other,
}

/// A risk level recorded in the snapshot (`signInRiskLevels`, `userRiskLevels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RiskLevel {
    /// `none`.
    None,
    /// `low`.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
}

impl RiskLevel {
    pub(super) fn from_graph(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Self::None,
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            _ => return None,
        })
    }
}

/// Facts known in real time from the live request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The user's object id.
    pub user_id: &'a str,
    /// The client application's id.
    pub app_id: &'a str,
    /// `None` when the platform could not be determined.
    pub platform: Option<DevicePlatform>,
    /// The client's IP (the socket peer or a trusted proxy's header).
    pub client_ip: IpAddr,
    /// How the client authenticates.
    pub client_app: ClientAppType,
}

/// Facts recorded in the session snapshot at the last sign-in the primary served.
#[derive(Debug, Clone, Copy)]
pub struct SessionFacts<'a> {
    /// Group object ids the user belonged to.
    pub groups: &'a [&'a str],
    /// Directory role template ids the user held.
    pub roles: &'a [&'a str],
    /// Sign-in risk at the time.
    pub sign_in_risk: RiskLevel,
    /// User risk at the time.
    pub user_risk: RiskLevel,
    /// Authentication methods (`amr`) of the session.
    pub amr: &'a [&'a str],
    /// The device was compliant.
    pub device_compliant: bool,
    /// The device was hybrid/domain joined.
    pub device_domain_joined: bool,
    /// The user acted in their home tenant (not a B2B guest).
    pub home_tenant: bool,
}

/// Why a policy refuses the request. Declaration order is precedence: when several enforced
/// policies refuse, the decision names the first reason in this order (then the first policy in
/// document order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalReason {
    /// A `block` policy applies.
    BlockedByPolicy,
    /// A policy that may apply has `disableResilienceDefaults`: it cannot be evaluated in outage.
    ResilienceDefaultsDisabled,
    /// A policy that may apply requires a control the backup cannot check.
    UnsupportedControl,
    /// MFA is required and the snapshot's `amr` lacks `mfa`.
    MfaRequired,
    /// A compliant device is required and the snapshot's device was not.
    CompliantDeviceRequired,
    /// A domain-joined device is required and the snapshot's device was not.
    DomainJoinedDeviceRequired,
}

impl RefusalReason {
    /// The machine reason for logs, metrics and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlockedByPolicy => "blocked_by_policy",
            Self::ResilienceDefaultsDisabled => "resilience_defaults_disabled",
            Self::UnsupportedControl => "unsupported_control",
            Self::MfaRequired => "mfa_required",
            Self::CompliantDeviceRequired => "compliant_device_required",
            Self::DomainJoinedDeviceRequired => "domain_joined_device_required",
        }
    }
}

/// A report-only policy that applied, and what it would have done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOnlyResult {
    /// The policy's id.
    pub policy_id: String,
    /// `None`: its controls were satisfied.
    pub would_refuse: Option<RefusalReason>,
}

/// Proof that the policies allow the request. Only [`evaluate`] builds one.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct Allowed {
    report_only: Vec<ReportOnlyResult>,
}

impl Allowed {
    /// Report-only policies that applied (for the log and audit record).
    pub fn report_only(&self) -> &[ReportOnlyResult] {
        &self.report_only
    }
}

/// A refusal, naming the reason and the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: RefusalReason,
    /// The enforced policy that refused.
    pub policy_id: String,
    /// Report-only policies that applied.
    pub report_only: Vec<ReportOnlyResult>,
}

/// The outcome of [`evaluate`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Every enforced policy that applies is satisfied.
    Allow(Allowed),
    /// An enforced policy refuses.
    Refuse(Refusal),
}

/// Three-valued match: an outage hides some facts, and a policy that *may* apply is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    No,
    Unknown,
    Yes,
}

impl Tri {
    fn from_bool(value: bool) -> Self {
        if value { Self::Yes } else { Self::No }
    }

    fn or(self, other: Self) -> Self {
        if self == Self::Yes || other == Self::Yes {
            Self::Yes
        } else if self == Self::Unknown || other == Self::Unknown {
            Self::Unknown
        } else {
            Self::No
        }
    }

    fn and(self, other: Self) -> Self {
        if self == Self::No || other == Self::No {
            Self::No
        } else if self == Self::Unknown || other == Self::Unknown {
            Self::Unknown
        } else {
            Self::Yes
        }
    }

    fn not(self) -> Self {
        match self {
            Self::No => Self::Yes,
            Self::Unknown => Self::Unknown,
            Self::Yes => Self::No,
        }
    }

    /// `include ∧ ¬exclude`: exclusion wins.
    fn included(include: Self, exclude: Self) -> Self {
        include.and(exclude.not())
    }
}

/// What one policy does to the request.
enum Outcome {
    NotApplied,
    Satisfied,
    Refused(RefusalReason),
}

/// Evaluates the request against every enabled and report-only policy. Disabled policies are
/// skipped; report-only ones are evaluated and reported, never enforced.
pub fn evaluate(
    set: &PolicySet,
    request: &RequestFacts<'_>,
    session: &SessionFacts<'_>,
) -> Decision {
    let mut report_only = Vec::new();
    let mut refusal: Option<(RefusalReason, &str)> = None;
    for policy in &set.policies {
        if policy.state == PolicyState::Disabled {
            continue;
        }
        let outcome = assess(set, policy, request, session);
        if policy.state == PolicyState::ReportOnly {
            match outcome {
                Outcome::NotApplied => {}
                Outcome::Satisfied => report_only.push(ReportOnlyResult {
                    policy_id: policy.id.clone(),
                    would_refuse: None,
                }),
                Outcome::Refused(reason) => report_only.push(ReportOnlyResult {
                    policy_id: policy.id.clone(),
                    would_refuse: Some(reason),
                }),
            }
            continue;
        }
        if let Outcome::Refused(reason) = outcome
            && refusal.is_none_or(|(current, _)| reason < current)
        {
            refusal = Some((reason, &policy.id));
        }
    }
    match refusal {
        None => Decision::Allow(Allowed { report_only }),
        Some((reason, policy_id)) => Decision::Refuse(Refusal {
            reason,
            policy_id: policy_id.to_owned(),
            report_only,
        }),
    }
}

fn assess(
    set: &PolicySet,
    policy: &Policy,
    request: &RequestFacts<'_>,
    session: &SessionFacts<'_>,
) -> Outcome {
    // With resilience defaults off, non-real-time facts are treated as unknowable even though
    // the snapshot has them: that is what turning them off asks for.
    let snapshot = policy.resilience_defaults.then_some(session);
    let applies = users(policy, request, session, snapshot)
        .and(applications(policy, request))
        .and(platforms(policy, request))
        .and(locations(set, policy, request))
        .and(client_apps(policy, request))
        .and(risk(&policy.sign_in_risk, snapshot.map(|s| s.sign_in_risk)))
        .and(risk(&policy.user_risk, snapshot.map(|s| s.user_risk)));
    if applies == Tri::No {
        return Outcome::NotApplied;
    }
    // A block that certainly applies is a block in any mode, whatever the resilience setting.
    if policy.grant == Grant::Block && applies == Tri::Yes {
        return Outcome::Refused(RefusalReason::BlockedByPolicy);
    }
    if !policy.resilience_defaults {
        return Outcome::Refused(RefusalReason::ResilienceDefaultsDisabled);
    }
    match &policy.grant {
        Grant::Nothing => Outcome::Satisfied,
        Grant::Block => Outcome::Refused(RefusalReason::BlockedByPolicy),
        Grant::Require { unsupported, .. } if !unsupported.is_empty() => {
            Outcome::Refused(RefusalReason::UnsupportedControl)
        }
        Grant::Require {
            operator, controls, ..
        } => {
            let mut unmet = controls.iter().filter(|c| !satisfied(**c, session));
            let first_unmet = match operator {
                Operator::And => unmet.next(),
                Operator::Or if controls.iter().any(|c| satisfied(*c, session)) => None,
                Operator::Or => unmet.next(),
            };
            match first_unmet {
                None => Outcome::Satisfied,
                Some(Control::Mfa) => Outcome::Refused(RefusalReason::MfaRequired),
                Some(Control::CompliantDevice) => {
                    Outcome::Refused(RefusalReason::CompliantDeviceRequired)
                }
                Some(Control::DomainJoinedDevice) => {
                    Outcome::Refused(RefusalReason::DomainJoinedDeviceRequired)
                }
            }
        }
    }
}

fn satisfied(control: Control, session: &SessionFacts<'_>) -> bool {
    match control {
        Control::Mfa => session.amr.contains(&"mfa"),
        Control::CompliantDevice => session.device_compliant,
        Control::DomainJoinedDevice => session.device_domain_joined,
    }
}

fn contains(list: &[String], id: &str) -> bool {
    list.iter().any(|entry| entry.eq_ignore_ascii_case(id))
}

fn intersects(list: &[String], ids: &[&str]) -> bool {
    ids.iter().any(|id| contains(list, id))
}

fn users(
    policy: &Policy,
    request: &RequestFacts<'_>,
    session: &SessionFacts<'_>,
    snapshot: Option<&SessionFacts<'_>>,
) -> Tri {
    let side = |selector: &UserSelector| {
        let direct = selector.all
            || contains(&selector.users, request.user_id)
            || (selector.guests_or_external && !session.home_tenant);
        let membership = match snapshot {
            Some(s) => Tri::from_bool(
                intersects(&selector.groups, s.groups) || intersects(&selector.roles, s.roles),
            ),
            None if selector.groups.is_empty() && selector.roles.is_empty() => Tri::No,
            None => Tri::Unknown,
        };
        Tri::from_bool(direct).or(membership)
    };
    Tri::included(side(&policy.users.include), side(&policy.users.exclude))
}

fn applications(policy: &Policy, request: &RequestFacts<'_>) -> Tri {
    let side = |selector: &AppSelector| {
        if selector.all || contains(&selector.ids, request.app_id) {
            Tri::Yes
        } else if selector.unresolvable {
            Tri::Unknown
        } else {
            Tri::No
        }
    };
    Tri::included(
        side(&policy.applications.include),
        side(&policy.applications.exclude),
    )
}

fn platforms(policy: &Policy, request: &RequestFacts<'_>) -> Tri {
    let Some(condition) = &policy.platforms else {
        return Tri::Yes;
    };
    let side = |selector: &PlatformSelector| match request.platform {
        _ if selector.all => Tri::Yes,
        Some(platform) => Tri::from_bool(selector.platforms.contains(&platform)),
        // An unknown platform may be any of the listed ones.
        None if selector.platforms.is_empty() => Tri::No,
        None => Tri::Unknown,
    };
    Tri::included(side(&condition.include), side(&condition.exclude))
}

fn locations(set: &PolicySet, policy: &Policy, request: &RequestFacts<'_>) -> Tri {
    let Some(condition) = &policy.locations else {
        return Tri::Yes;
    };
    let in_location = |location: &super::NamedLocation| match &location.ranges {
        LocationRanges::Ip(ranges) => {
            Tri::from_bool(ranges.iter().any(|r| r.contains(request.client_ip)))
        }
        LocationRanges::Country => Tri::Unknown,
    };
    let side = |selector: &LocationSelector| {
        if selector.all {
            return Tri::Yes;
        }
        let mut result = Tri::No;
        if selector.all_trusted {
            for location in set.locations.iter().filter(|l| l.trusted) {
                result = result.or(in_location(location));
            }
        }
        for reference in &selector.locations {
            result = result.or(match reference {
                LocationRef::Named(index) => set.locations.get(*index).map_or(
                    // INVARIANT: the loader resolves every reference; a dangling one would be
                    // a loader bug, and "unknown" keeps it fail-closed.
                    Tri::Unknown,
                    in_location,
                ),
                LocationRef::Unevaluable => Tri::Unknown,
            });
        }
        result
    };
    Tri::included(side(&condition.include), side(&condition.exclude))
}

fn client_apps(policy: &Policy, request: &RequestFacts<'_>) -> Tri {
    match &policy.client_app_types {
        None => Tri::Yes,
        Some(types) => Tri::from_bool(types.contains(&request.client_app)),
    }
}

fn risk(levels: &[super::RiskLevel], snapshot: Option<RiskLevel>) -> Tri {
    if levels.is_empty() {
        return Tri::Yes;
    }
    match snapshot {
        Some(level) => Tri::from_bool(levels.contains(&level)),
        None => Tri::Unknown,
    }
}
