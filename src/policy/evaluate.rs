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

/// A list of strings read in place: a slice or `Vec` of `&str` or `String`, or (implemented by
/// the caller, since `policy` knows no store type) an archived vector of an mmapped snapshot,
/// so building [`SessionFacts`] copies nothing.
pub trait StrList {
    /// Calls `f` on each entry in order until it returns `true`; whether it did.
    fn any_str(&self, f: &mut dyn FnMut(&str) -> bool) -> bool;
}

impl<S: AsRef<str>> StrList for [S] {
    fn any_str(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.iter().any(|s| f(s.as_ref()))
    }
}

impl<S: AsRef<str>> StrList for Vec<S> {
    fn any_str(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.as_slice().any_str(f)
    }
}

impl<S: AsRef<str>, const N: usize> StrList for [S; N] {
    fn any_str(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.as_slice().any_str(f)
    }
}

impl<S: AsRef<str>> StrList for &[S] {
    fn any_str(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        (**self).any_str(f)
    }
}

/// An archived (rkyv) vector of strings read in place, as an mmapped snapshot holds its
/// `groups`, `roles` and `amr`: `groups: &view.groups` builds the facts without a copy. (rkyv
/// is the archive format, not a store type: `policy` still knows nothing of the store.)
impl<S: AsRef<str>> StrList for rkyv::vec::ArchivedVec<S> {
    fn any_str(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.as_slice().any_str(f)
    }
}

/// The empty [`StrList`], for a snapshot without groups, roles or `amr`.
pub const NO_STRINGS: &[&str; 0] = &[];

impl std::fmt::Debug for dyn StrList + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        self.any_str(&mut |s| {
            list.entry(&s);
            false
        });
        list.finish()
    }
}

/// Facts recorded in the session snapshot at the last sign-in the primary served.
#[derive(Debug, Clone, Copy)]
pub struct SessionFacts<'a> {
    /// Group object ids the user belonged to.
    pub groups: &'a dyn StrList,
    /// Directory role template ids the user held.
    pub roles: &'a dyn StrList,
    /// Sign-in risk at the time; `None` when the primary did not report one (a policy with a
    /// sign-in risk condition then may apply).
    pub sign_in_risk: Option<RiskLevel>,
    /// User risk at the time; `None` when not reported.
    pub user_risk: Option<RiskLevel>,
    /// Authentication methods (`amr`) of the session.
    pub amr: &'a dyn StrList,
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
    pub const fn as_str(self) -> &'static str {
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
    let whereabouts = Whereabouts::of(set, request.client_ip);
    for policy in &set.policies {
        if policy.state == PolicyState::Disabled {
            continue;
        }
        let outcome = assess(policy, &whereabouts, request, session);
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
    policy: &Policy,
    whereabouts: &Whereabouts,
    request: &RequestFacts<'_>,
    session: &SessionFacts<'_>,
) -> Outcome {
    // With resilience defaults off, non-real-time facts are treated as unknowable even though
    // the snapshot has them: that is what turning them off asks for.
    let snapshot = policy.resilience_defaults.then_some(session);
    let applies = users(policy, request, session, snapshot)
        .and(applications(policy, request))
        .and(platforms(policy, request))
        .and(locations(policy, whereabouts))
        .and(client_apps(policy, request))
        .and(risk(&policy.sign_in_risk, snapshot, |s| s.sign_in_risk))
        .and(risk(&policy.user_risk, snapshot, |s| s.user_risk));
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
        Control::Mfa => session.amr.any_str(&mut |method| method == "mfa"),
        Control::CompliantDevice => session.device_compliant,
        Control::DomainJoinedDevice => session.device_domain_joined,
    }
}

fn contains(list: &[String], id: &str) -> bool {
    list.iter().any(|entry| entry.eq_ignore_ascii_case(id))
}

fn intersects(list: &[String], ids: &dyn StrList) -> bool {
    !list.is_empty() && ids.any_str(&mut |id| contains(list, id))
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

/// Where the client IP is, computed once per request: a policy set has a few named locations of
/// many ranges, referenced by many policies, so each policy looks up instead of scanning.
struct Whereabouts {
    /// Per named location, in [`PolicySet`] order.
    in_location: Vec<Tri>,
    /// In any trusted named location (`AllTrusted`).
    in_trusted: Tri,
}

impl Whereabouts {
    fn of(set: &PolicySet, client_ip: IpAddr) -> Self {
        let client_ip = client_ip.to_canonical();
        let in_location: Vec<Tri> = set
            .locations
            .iter()
            .map(|location| match &location.ranges {
                LocationRanges::Ip(ranges) => {
                    Tri::from_bool(ranges.iter().any(|r| r.contains(client_ip)))
                }
                LocationRanges::Country => Tri::Unknown,
            })
            .collect();
        let in_trusted = set
            .locations
            .iter()
            .zip(&in_location)
            .filter(|(location, _)| location.trusted)
            .fold(Tri::No, |acc, (_, inside)| acc.or(*inside));
        Self {
            in_location,
            in_trusted,
        }
    }
}

fn locations(policy: &Policy, whereabouts: &Whereabouts) -> Tri {
    let Some(condition) = &policy.locations else {
        return Tri::Yes;
    };
    let side = |selector: &LocationSelector| {
        if selector.all {
            return Tri::Yes;
        }
        let mut result = if selector.all_trusted {
            whereabouts.in_trusted
        } else {
            Tri::No
        };
        for reference in &selector.locations {
            result = result.or(match reference {
                // INVARIANT: the loader resolves every reference; a dangling one would be a
                // loader bug, and "unknown" keeps it fail-closed.
                LocationRef::Named(index) => whereabouts
                    .in_location
                    .get(*index)
                    .copied()
                    .unwrap_or(Tri::Unknown),
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

/// A risk condition: unknown when the snapshot may not be used (resilience defaults off) or
/// did not record the level.
fn risk(
    levels: &[super::RiskLevel],
    snapshot: Option<&SessionFacts<'_>>,
    level_of: fn(&SessionFacts<'_>) -> Option<RiskLevel>,
) -> Tri {
    if levels.is_empty() {
        return Tri::Yes;
    }
    match snapshot.and_then(level_of) {
        Some(level) => Tri::from_bool(levels.contains(&level)),
        None => Tri::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::policy::load;

    /// Owned facts, so each case can tweak one of them.
    #[derive(Clone)]
    struct Facts {
        user: &'static str,
        app: &'static str,
        platform: Option<DevicePlatform>,
        ip: &'static str,
        client_app: ClientAppType,
        groups: Vec<&'static str>,
        roles: Vec<&'static str>,
        sign_in_risk: RiskLevel,
        user_risk: RiskLevel,
        amr: Vec<&'static str>,
        compliant: bool,
        domain_joined: bool,
        home_tenant: bool,
    }

    fn facts() -> Facts {
        Facts {
            user: "u1",
            app: "app1",
            platform: Some(DevicePlatform::Windows),
            ip: "192.0.2.10",
            client_app: ClientAppType::MobileAppsAndDesktopClients,
            groups: vec!["g1"],
            roles: vec!["r1"],
            sign_in_risk: RiskLevel::None,
            user_risk: RiskLevel::None,
            amr: vec!["pwd"],
            compliant: false,
            domain_joined: false,
            home_tenant: true,
        }
    }

    fn run(set: &PolicySet, f: &Facts) -> Decision {
        let request = RequestFacts {
            user_id: f.user,
            app_id: f.app,
            platform: f.platform,
            client_ip: f.ip.parse().unwrap(),
            client_app: f.client_app,
        };
        let session = SessionFacts {
            groups: &f.groups,
            roles: &f.roles,
            sign_in_risk: Some(f.sign_in_risk),
            user_risk: Some(f.user_risk),
            amr: &f.amr,
            device_compliant: f.compliant,
            device_domain_joined: f.domain_joined,
            home_tenant: f.home_tenant,
        };
        evaluate(set, &request, &session)
    }

    /// RFC 7396 merge patch, enough to write each case as a change to the base policy.
    fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(target), Value::Object(patch)) => {
                for (key, value) in patch {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        merge(target.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
            (target, patch) => *target = patch.clone(),
        }
    }

    fn base_policy(id: &str) -> Value {
        json!({
            "id": id,
            "displayName": "test",
            "state": "enabled",
            "conditions": {
                "users": {"includeUsers": ["All"]},
                "applications": {"includeApplications": ["All"]},
                "clientAppTypes": ["all"]
            },
            "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}
        })
    }

    fn document(policies: Vec<Value>) -> Value {
        json!({
            "conditionalAccessPolicies": policies,
            "namedLocations": [
                {"id": "corp", "isTrusted": true, "ipRanges": [{"cidrAddress": "10.0.0.0/8"}]},
                {"id": "v6", "isTrusted": false, "ipRanges": [{"cidrAddress": "2001:db8::/32"}]},
                {"@odata.type": "#microsoft.graph.countryNamedLocation", "id": "country",
                 "countriesAndRegions": ["KP"]}
            ]
        })
    }

    fn set_of(policies: Vec<Value>) -> PolicySet {
        load(&serde_json::to_vec(&document(policies)).unwrap())
            .unwrap()
            .set
    }

    fn one(patch: Value) -> PolicySet {
        let mut policy = base_policy("p1");
        merge(&mut policy, &patch);
        set_of(vec![policy])
    }

    fn reason(decision: &Decision) -> Option<RefusalReason> {
        match decision {
            Decision::Allow(_) => None,
            Decision::Refuse(refusal) => Some(refusal.reason),
        }
    }

    use RefusalReason::*;

    const MFA: Option<RefusalReason> = Some(MfaRequired);
    const ALLOW: Option<RefusalReason> = None;

    /// Each case: a patch to the base policy (all users, all apps, require MFA), a change to the
    /// default facts (no MFA in amr), and the expected reason (`None`: allowed).
    #[test]
    fn conditions_and_controls_table() {
        type Tweak = fn(&mut Facts);
        let same: Tweak = |_| {};
        let cases: &[(&str, Value, Tweak, Option<RefusalReason>)] = &[
            ("base policy, no mfa", json!({}), same, MFA),
            (
                "base policy, mfa in amr",
                json!({}),
                |f| f.amr = vec!["pwd", "mfa"],
                ALLOW,
            ),
            // Users.
            (
                "excluded user",
                json!({"conditions": {"users": {"excludeUsers": ["u1"]}}}),
                same,
                ALLOW,
            ),
            (
                "excluded user, case-insensitive id",
                json!({"conditions": {"users": {"excludeUsers": ["U1"]}}}),
                same,
                ALLOW,
            ),
            (
                "other user only",
                json!({"conditions": {"users": {"includeUsers": ["u2"]}}}),
                same,
                ALLOW,
            ),
            (
                "included user",
                json!({"conditions": {"users": {"includeUsers": ["u2", "u1"]}}}),
                same,
                MFA,
            ),
            (
                "includeUsers None",
                json!({"conditions": {"users": {"includeUsers": ["None"]}}}),
                same,
                ALLOW,
            ),
            (
                "included group from snapshot",
                json!({"conditions": {"users": {"includeUsers": [], "includeGroups": ["g1"]}}}),
                same,
                MFA,
            ),
            (
                "other group",
                json!({"conditions": {"users": {"includeUsers": [], "includeGroups": ["g2"]}}}),
                same,
                ALLOW,
            ),
            (
                "excluded group wins over included group",
                json!({"conditions": {"users": {"includeUsers": [], "includeGroups": ["g1"], "excludeGroups": ["g1"]}}}),
                same,
                ALLOW,
            ),
            (
                "excluded role wins over All",
                json!({"conditions": {"users": {"excludeRoles": ["r1"]}}}),
                same,
                ALLOW,
            ),
            (
                "included role",
                json!({"conditions": {"users": {"includeUsers": [], "includeRoles": ["r1"]}}}),
                same,
                MFA,
            ),
            (
                "excluded user wins over included group",
                json!({"conditions": {"users": {"includeUsers": [], "includeGroups": ["g1"], "excludeUsers": ["u1"]}}}),
                same,
                ALLOW,
            ),
            (
                "guests, home-tenant user",
                json!({"conditions": {"users": {"includeUsers": ["GuestsOrExternalUsers"]}}}),
                same,
                ALLOW,
            ),
            (
                "guests, guest user",
                json!({"conditions": {"users": {"includeUsers": ["GuestsOrExternalUsers"]}}}),
                |f| f.home_tenant = false,
                MFA,
            ),
            // Applications.
            (
                "other app only",
                json!({"conditions": {"applications": {"includeApplications": ["app2"]}}}),
                same,
                ALLOW,
            ),
            (
                "included app",
                json!({"conditions": {"applications": {"includeApplications": ["app1"]}}}),
                same,
                MFA,
            ),
            (
                "excluded app",
                json!({"conditions": {"applications": {"excludeApplications": ["APP1"]}}}),
                same,
                ALLOW,
            ),
            (
                "includeApplications None",
                json!({"conditions": {"applications": {"includeApplications": ["None"]}}}),
                same,
                ALLOW,
            ),
            (
                "unresolvable app group may apply",
                json!({"conditions": {"applications": {"includeApplications": ["Office365"]}}}),
                same,
                MFA,
            ),
            (
                "unresolvable excluded app group may not exclude",
                json!({"conditions": {"applications": {"excludeApplications": ["Office365"]}}}),
                same,
                MFA,
            ),
            // Platforms.
            (
                "other platform",
                json!({"conditions": {"platforms": {"includePlatforms": ["android", "iOS"]}}}),
                same,
                ALLOW,
            ),
            (
                "included platform",
                json!({"conditions": {"platforms": {"includePlatforms": ["windows"]}}}),
                same,
                MFA,
            ),
            (
                "all but excluded platform",
                json!({"conditions": {"platforms": {"includePlatforms": ["all"], "excludePlatforms": ["windows"]}}}),
                same,
                ALLOW,
            ),
            (
                "all platforms, another excluded",
                json!({"conditions": {"platforms": {"includePlatforms": ["all"], "excludePlatforms": ["macOS"]}}}),
                same,
                MFA,
            ),
            (
                "unknown platform may be a listed one",
                json!({"conditions": {"platforms": {"includePlatforms": ["android"]}}}),
                |f| f.platform = None,
                MFA,
            ),
            (
                "unknown platform may be an excluded one",
                json!({"conditions": {"platforms": {"includePlatforms": ["all"], "excludePlatforms": ["linux"]}}}),
                |f| f.platform = None,
                MFA,
            ),
            // Locations.
            (
                "trusted location excluded",
                json!({"conditions": {"locations": {"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]}}}),
                |f| f.ip = "10.2.3.4",
                ALLOW,
            ),
            (
                "outside trusted locations",
                json!({"conditions": {"locations": {"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]}}}),
                same,
                MFA,
            ),
            (
                "v4-mapped peer in trusted location",
                json!({"conditions": {"locations": {"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]}}}),
                |f| f.ip = "::ffff:10.2.3.4",
                ALLOW,
            ),
            (
                "included IPv6 location",
                json!({"conditions": {"locations": {"includeLocations": ["v6"]}}}),
                |f| f.ip = "2001:db8:5::1",
                MFA,
            ),
            (
                "outside IPv6 location",
                json!({"conditions": {"locations": {"includeLocations": ["v6"]}}}),
                |f| f.ip = "2001:db9::1",
                ALLOW,
            ),
            (
                "IPv4 client, IPv6 location",
                json!({"conditions": {"locations": {"includeLocations": ["v6"]}}}),
                same,
                ALLOW,
            ),
            (
                "untrusted location is not AllTrusted",
                json!({"conditions": {"locations": {"includeLocations": ["AllTrusted"]}}}),
                |f| f.ip = "2001:db8::1",
                ALLOW,
            ),
            (
                "country location may include",
                json!({"conditions": {"locations": {"includeLocations": ["country"]}}}),
                same,
                MFA,
            ),
            (
                "country location may not exclude",
                json!({"conditions": {"locations": {"includeLocations": ["All"], "excludeLocations": ["country"]}}}),
                same,
                MFA,
            ),
            (
                "MFA trusted IPs may not exclude",
                json!({"conditions": {"locations": {"includeLocations": ["All"], "excludeLocations": ["00000000-0000-0000-0000-000000000000"]}}}),
                same,
                MFA,
            ),
            // Client app types.
            (
                "other client app type",
                json!({"conditions": {"clientAppTypes": ["browser"]}}),
                same,
                ALLOW,
            ),
            (
                "included client app type",
                json!({"conditions": {"clientAppTypes": ["browser", "mobileAppsAndDesktopClients"]}}),
                same,
                MFA,
            ),
            (
                "easSupported is exchangeActiveSync",
                json!({"conditions": {"clientAppTypes": ["easSupported"]}}),
                |f| f.client_app = ClientAppType::ExchangeActiveSync,
                MFA,
            ),
            // Risks, from the snapshot.
            (
                "sign-in risk not met",
                json!({"conditions": {"signInRiskLevels": ["high"]}}),
                same,
                ALLOW,
            ),
            (
                "sign-in risk met",
                json!({"conditions": {"signInRiskLevels": ["medium", "high"]}}),
                |f| f.sign_in_risk = RiskLevel::High,
                MFA,
            ),
            (
                "user risk met",
                json!({"conditions": {"userRiskLevels": ["low"]}}),
                |f| f.user_risk = RiskLevel::Low,
                MFA,
            ),
            (
                "user risk not met",
                json!({"conditions": {"userRiskLevels": ["low"]}}),
                same,
                ALLOW,
            ),
            // Controls.
            (
                "block",
                json!({"grantControls": {"builtInControls": ["block"]}}),
                |f| f.amr = vec!["mfa"],
                Some(BlockedByPolicy),
            ),
            (
                "AND: mfa met, device not compliant",
                json!({"grantControls": {"operator": "AND", "builtInControls": ["mfa", "compliantDevice"]}}),
                |f| f.amr = vec!["mfa"],
                Some(CompliantDeviceRequired),
            ),
            (
                "AND: both met",
                json!({"grantControls": {"operator": "AND", "builtInControls": ["mfa", "compliantDevice"]}}),
                |f| {
                    f.amr = vec!["mfa"];
                    f.compliant = true;
                },
                ALLOW,
            ),
            (
                "OR: one met",
                json!({"grantControls": {"operator": "OR", "builtInControls": ["mfa", "compliantDevice"]}}),
                |f| f.compliant = true,
                ALLOW,
            ),
            (
                "OR: none met names the first",
                json!({"grantControls": {"operator": "OR", "builtInControls": ["compliantDevice", "mfa"]}}),
                same,
                Some(CompliantDeviceRequired),
            ),
            (
                "domain joined required",
                json!({"grantControls": {"builtInControls": ["domainJoinedDevice"]}}),
                same,
                Some(DomainJoinedDeviceRequired),
            ),
            (
                "domain joined met",
                json!({"grantControls": {"builtInControls": ["domainJoinedDevice"]}}),
                |f| f.domain_joined = true,
                ALLOW,
            ),
            (
                "no grant controls",
                json!({"grantControls": null}),
                same,
                ALLOW,
            ),
            (
                "unsupported control fails closed even when OR'd with a met one",
                json!({"grantControls": {"builtInControls": ["mfa", "approvedApplication"]}}),
                |f| f.amr = vec!["mfa"],
                Some(UnsupportedControl),
            ),
            (
                "unsupported control on a policy that does not apply",
                json!({"conditions": {"users": {"excludeUsers": ["u1"]}}, "grantControls": {"builtInControls": ["approvedApplication"]}}),
                same,
                ALLOW,
            ),
            // States.
            (
                "disabled policy",
                json!({"state": "disabled", "grantControls": {"builtInControls": ["block"]}}),
                same,
                ALLOW,
            ),
            (
                "report-only policy",
                json!({"state": "enabledForReportingButNotEnforced", "grantControls": {"builtInControls": ["block"]}}),
                same,
                ALLOW,
            ),
            // Resilience defaults off: groups, roles and risks are unknowable.
            (
                "RD off, targets a group the user is not in",
                json!({"conditions": {"users": {"includeUsers": [], "includeGroups": ["g2"]}}, "sessionControls": {"disableResilienceDefaults": true}}),
                |f| f.amr = vec!["mfa"],
                Some(ResilienceDefaultsDisabled),
            ),
            (
                "RD off, targets a group the user is in",
                json!({"conditions": {"users": {"includeUsers": [], "includeGroups": ["g1"]}}, "sessionControls": {"disableResilienceDefaults": true}}),
                |f| f.amr = vec!["mfa"],
                Some(ResilienceDefaultsDisabled),
            ),
            (
                "RD off, user excluded in real time",
                json!({"conditions": {"users": {"excludeUsers": ["u1"]}}, "sessionControls": {"disableResilienceDefaults": true}}),
                same,
                ALLOW,
            ),
            (
                "RD off, excluded group cannot be known",
                json!({"conditions": {"users": {"excludeGroups": ["g1"]}}, "sessionControls": {"disableResilienceDefaults": true}}),
                same,
                Some(ResilienceDefaultsDisabled),
            ),
            (
                "RD off, other app",
                json!({"conditions": {"applications": {"includeApplications": ["app2"]}}, "sessionControls": {"disableResilienceDefaults": true}}),
                same,
                ALLOW,
            ),
            (
                "RD off, other location",
                json!({"conditions": {"locations": {"includeLocations": ["corp"]}}, "sessionControls": {"disableResilienceDefaults": true}}),
                same,
                ALLOW,
            ),
            (
                "RD off, risk cannot be known",
                json!({"conditions": {"signInRiskLevels": ["high"]}, "sessionControls": {"disableResilienceDefaults": true}}),
                same,
                Some(ResilienceDefaultsDisabled),
            ),
            (
                "RD off, controls met",
                json!({"sessionControls": {"disableResilienceDefaults": true}}),
                |f| f.amr = vec!["mfa"],
                Some(ResilienceDefaultsDisabled),
            ),
            (
                "RD off, certain block is a block",
                json!({"grantControls": {"builtInControls": ["block"]}, "sessionControls": {"disableResilienceDefaults": true}}),
                same,
                Some(BlockedByPolicy),
            ),
            (
                "RD off, uncertain block",
                json!({"conditions": {"users": {"includeUsers": [], "includeGroups": ["g1"]}}, "grantControls": {"builtInControls": ["block"]}, "sessionControls": {"disableResilienceDefaults": true}}),
                same,
                Some(ResilienceDefaultsDisabled),
            ),
            (
                "RD explicitly on",
                json!({"sessionControls": {"disableResilienceDefaults": false}}),
                |f| f.amr = vec!["mfa"],
                ALLOW,
            ),
        ];
        for (name, patch, tweak, want) in cases {
            let set = one(patch.clone());
            let mut f = facts();
            tweak(&mut f);
            let decision = run(&set, &f);
            assert_eq!(reason(&decision), *want, "{name}: {decision:?}");
            if let Decision::Refuse(refusal) = &decision {
                assert_eq!(refusal.policy_id, "p1", "{name}");
            }
        }
    }

    #[test]
    fn report_only_is_reported_never_enforced() {
        let mut blocked = base_policy("ro-block");
        merge(
            &mut blocked,
            &json!({"state": "enabledForReportingButNotEnforced", "grantControls": {"builtInControls": ["block"]}}),
        );
        let mut satisfied = base_policy("ro-mfa");
        merge(
            &mut satisfied,
            &json!({"state": "enabledForReportingButNotEnforced", "grantControls": {"builtInControls": ["compliantDevice"]}}),
        );
        let mut not_applied = base_policy("ro-other-app");
        merge(
            &mut not_applied,
            &json!({"state": "enabledForReportingButNotEnforced", "conditions": {"applications": {"includeApplications": ["app2"]}}}),
        );
        let set = set_of(vec![blocked, satisfied, not_applied]);
        let mut f = facts();
        f.compliant = true;
        let Decision::Allow(allowed) = run(&set, &f) else {
            panic!("report-only policies must not refuse");
        };
        assert_eq!(
            allowed.report_only(),
            [
                ReportOnlyResult {
                    policy_id: "ro-block".into(),
                    would_refuse: Some(BlockedByPolicy)
                },
                ReportOnlyResult {
                    policy_id: "ro-mfa".into(),
                    would_refuse: None
                },
            ]
        );
    }

    #[test]
    fn refusal_names_the_strongest_reason_and_its_policy_and_keeps_report_only() {
        let mfa = base_policy("needs-mfa");
        let mut rd_off = base_policy("rd-off");
        merge(
            &mut rd_off,
            &json!({"sessionControls": {"disableResilienceDefaults": true}}),
        );
        let mut block = base_policy("blocks");
        merge(
            &mut block,
            &json!({"grantControls": {"builtInControls": ["block"]}}),
        );
        let mut report = base_policy("report");
        merge(
            &mut report,
            &json!({"state": "enabledForReportingButNotEnforced"}),
        );

        let set = set_of(vec![mfa.clone(), rd_off.clone(), block, report.clone()]);
        let Decision::Refuse(refusal) = run(&set, &facts()) else {
            panic!("must refuse")
        };
        assert_eq!(refusal.reason, BlockedByPolicy);
        assert_eq!(refusal.policy_id, "blocks");
        assert_eq!(
            refusal.report_only,
            [ReportOnlyResult {
                policy_id: "report".into(),
                would_refuse: Some(MfaRequired)
            }]
        );

        let set = set_of(vec![mfa.clone(), rd_off, report]);
        let Decision::Refuse(refusal) = run(&set, &facts()) else {
            panic!("must refuse")
        };
        assert_eq!(
            (refusal.reason, refusal.policy_id.as_str()),
            (ResilienceDefaultsDisabled, "rd-off")
        );

        // Equal reasons: the first policy in document order is named.
        let mut second = base_policy("second-mfa");
        merge(&mut second, &json!({}));
        let set = set_of(vec![mfa, second]);
        let Decision::Refuse(refusal) = run(&set, &facts()) else {
            panic!("must refuse")
        };
        assert_eq!(
            (refusal.reason, refusal.policy_id.as_str()),
            (MfaRequired, "needs-mfa")
        );
    }

    #[test]
    fn unknown_risk_may_match_a_risk_condition() {
        let set = one(json!({
            "conditions": {"signInRiskLevels": ["high"]},
            "grantControls": {"operator": "OR", "builtInControls": ["block"]}
        }));
        let request = RequestFacts {
            user_id: "u1",
            app_id: "app1",
            platform: None,
            client_ip: "192.0.2.1".parse().unwrap(),
            client_app: ClientAppType::Browser,
        };
        let groups: Vec<String> = vec!["g1".into()];
        let mut session = SessionFacts {
            groups: &groups,
            roles: NO_STRINGS,
            sign_in_risk: Some(RiskLevel::Low),
            user_risk: None,
            amr: &["pwd"],
            device_compliant: false,
            device_domain_joined: false,
            home_tenant: true,
        };
        assert!(matches!(
            evaluate(&set, &request, &session),
            Decision::Allow(_)
        ));
        // Unknown: the block *may* apply. A block that only may apply is not a certain block,
        // and with resilience defaults on the policy is evaluated with what the snapshot has:
        // nothing to satisfy a block, so it refuses.
        session.sign_in_risk = None;
        assert!(matches!(
            evaluate(&set, &request, &session),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn archived_string_vectors_are_read_in_place() {
        let groups = vec![String::from("g1"), String::from("G-MFA")];
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&groups).unwrap();
        let archived = rkyv::access::<
            rkyv::vec::ArchivedVec<rkyv::string::ArchivedString>,
            rkyv::rancor::Error,
        >(&bytes)
        .unwrap();
        let list: &dyn StrList = archived;
        assert!(list.any_str(&mut |g| g == "G-MFA"));
        assert!(!list.any_str(&mut |g| g == "g2"));
    }

    #[test]
    fn empty_set_allows() {
        let set = PolicySet::default();
        assert_eq!(
            run(&set, &facts()),
            Decision::Allow(Allowed {
                report_only: Vec::new()
            })
        );
    }

    #[test]
    fn refusal_reasons_have_stable_snake_case_names() {
        let names: Vec<&str> = [
            BlockedByPolicy,
            ResilienceDefaultsDisabled,
            UnsupportedControl,
            MfaRequired,
            CompliantDeviceRequired,
            DomainJoinedDeviceRequired,
        ]
        .into_iter()
        .map(RefusalReason::as_str)
        .collect();
        assert_eq!(
            names,
            [
                "blocked_by_policy",
                "resilience_defaults_disabled",
                "unsupported_control",
                "mfa_required",
                "compliant_device_required",
                "domain_joined_device_required",
            ]
        );
    }

    #[test]
    fn graph_export_fixture_evaluates() {
        let fixture = include_str!("../../tests/fixtures/policy/graph_export.json");
        let set = load(fixture.as_bytes()).unwrap().set;
        let mut f = facts();
        f.roles = vec!["62e90394-69f5-4237-9190-012177145e10"];
        f.app = "c44b4083-3bb0-49c1-b47d-974e53cbdf3c";
        // An admin without MFA is refused; the report-only block (outside trusted and branch
        // offices, not iOS/Android) is reported.
        let Decision::Refuse(refusal) = run(&set, &f) else {
            panic!("must refuse")
        };
        assert_eq!(refusal.reason, MfaRequired);
        assert_eq!(
            refusal.report_only,
            [ReportOnlyResult {
                policy_id: "7f3e1d2c-0b9a-4c8d-9e7f-6a5b4c3d2e1f".into(),
                would_refuse: Some(BlockedByPolicy)
            }]
        );
        // From headquarters (trusted) with MFA: allowed, and the report-only block does not apply.
        f.ip = "203.0.113.7";
        f.amr = vec!["pwd", "mfa"];
        let Decision::Allow(allowed) = run(&set, &f) else {
            panic!("must allow")
        };
        assert!(allowed.report_only().is_empty());
    }
}
