//! Conditional Access policy engine (DESIGN §5): Graph-shaped policies parsed into domain types,
//! and a pure evaluation of one request against them. No I/O, no clock, nothing of ours: callers
//! pass plain facts about the live request and the session snapshot.
//!
//! - [`load`] turns a policy document into a [`PolicySet`], reporting unknown fields and
//!   unsupported controls instead of rejecting them, and naming the JSON path of every error.
//! - [`PolicyManager`] holds the current set (versioned, swapped atomically) and reloads it
//!   from the `[policy] file`, the admin API or a watcher thread; a bad document keeps the
//!   previous version. (The one part of `policy` that reads files.)
//! - [`DevicePlatform::from_user_agent`] and [`client_ip`] derive the real-time facts.
//! - [`evaluate`] answers [`Decision::Allow`] (a proof value only it can build) or
//!   [`Decision::Refuse`] with a [`RefusalReason`] and the policy that refused.

mod cidr;
mod evaluate;
mod load;
mod manager;
mod request;
mod wire;

pub use cidr::Cidr;
pub use evaluate::{
    Allowed, ClientAppType, Decision, DevicePlatform, NO_STRINGS, Refusal, RefusalReason,
    ReportOnlyResult, RequestFacts, RiskLevel, SessionFacts, StrList, evaluate,
};
pub use load::{LoadWarning, Loaded, PolicyLoadError, WarningKind, load};
pub use manager::{
    PolicyFileError, PolicyManager, PolicyOrigin, ReloadOutcome, VersionMismatch, Versioned,
    WatchHandle, check_file, parse_if_match, spawn_watcher,
};
pub use request::{ClientIpConfig, ClientIpError, client_ip};

/// A validated set of policies and the named locations they reference. Immutable once loaded;
/// swap a whole new set to change it.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
    locations: Vec<NamedLocation>,
}

impl PolicySet {
    /// Policies in document order (disabled ones included).
    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// Named locations in document order.
    pub fn location_count(&self) -> usize {
        self.locations.len()
    }
}

/// `state` of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyState {
    Enabled,
    Disabled,
    /// `enabledForReportingButNotEnforced`: evaluated and reported, never enforced.
    ReportOnly,
}

/// One Conditional Access policy, in the terms the evaluator needs.
#[derive(Debug, Clone)]
struct Policy {
    id: String,
    state: PolicyState,
    users: UserCondition,
    applications: AppCondition,
    /// `None`: not configured, every platform matches.
    platforms: Option<PlatformCondition>,
    /// `None`: not configured, every location matches.
    locations: Option<LocationCondition>,
    /// Empty: not configured.
    sign_in_risk: Vec<RiskLevel>,
    /// Empty: not configured.
    user_risk: Vec<RiskLevel>,
    /// `None`: not configured or `all`.
    client_app_types: Option<Vec<ClientAppType>>,
    grant: Grant,
    /// `sessionControls.disableResilienceDefaults` is not `true`.
    resilience_defaults: bool,
}

/// One side (include or exclude) of `conditions.users`.
#[derive(Debug, Clone, Default)]
struct UserSelector {
    all: bool,
    guests_or_external: bool,
    users: Vec<String>,
    groups: Vec<String>,
    roles: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct UserCondition {
    include: UserSelector,
    exclude: UserSelector,
}

/// One side of `conditions.applications`.
#[derive(Debug, Clone, Default)]
struct AppSelector {
    all: bool,
    ids: Vec<String>,
    /// Application groups we cannot resolve (`Office365`, `MicrosoftAdminPortals`): whether the
    /// request's app is in them is unknown, so the policy may apply.
    unresolvable: bool,
}

#[derive(Debug, Clone, Default)]
struct AppCondition {
    include: AppSelector,
    exclude: AppSelector,
}

/// One side of `conditions.platforms`.
#[derive(Debug, Clone, Default)]
struct PlatformSelector {
    all: bool,
    platforms: Vec<DevicePlatform>,
}

#[derive(Debug, Clone, Default)]
struct PlatformCondition {
    include: PlatformSelector,
    exclude: PlatformSelector,
}

/// A named location a policy references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocationRef {
    /// Index into [`PolicySet::locations`].
    Named(usize),
    /// A location we cannot evaluate (the MFA trusted-IPs pseudo-location).
    Unevaluable,
}

/// One side of `conditions.locations`.
#[derive(Debug, Clone, Default)]
struct LocationSelector {
    all: bool,
    all_trusted: bool,
    locations: Vec<LocationRef>,
}

#[derive(Debug, Clone, Default)]
struct LocationCondition {
    include: LocationSelector,
    exclude: LocationSelector,
}

/// A named location.
#[derive(Debug, Clone)]
struct NamedLocation {
    trusted: bool,
    ranges: LocationRanges,
}

#[derive(Debug, Clone)]
enum LocationRanges {
    Ip(Vec<Cidr>),
    /// A `countryNamedLocation`: without a geolocation database, membership is unknown.
    Country,
}

/// `grantControls`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    /// No grant controls (a policy with session controls only).
    Nothing,
    Block,
    Require {
        operator: Operator,
        controls: Vec<Control>,
        /// Controls the backup cannot check (`approvedApplication`, terms of use, ...): the
        /// policy refuses in outage whenever it may apply.
        unsupported: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Mfa,
    CompliantDevice,
    DomainJoinedDevice,
}
