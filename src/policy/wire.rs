//! Wire types: Microsoft Graph's `conditionalAccessPolicy` and `ipNamedLocation` JSON shapes as
//! admins export them. Serde lives here only; `load` converts these into the domain types.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Fields we do not model, kept so the loader can report them by path.
pub(super) type Unknown = BTreeMap<String, Value>;

/// One element of `conditionalAccessPolicies`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WirePolicy {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub state: String,
    pub conditions: WireConditions,
    #[serde(default)]
    pub grant_controls: Option<WireGrantControls>,
    #[serde(default)]
    pub session_controls: Option<WireSessionControls>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `conditionalAccessConditionSet`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireConditions {
    pub users: WireUsers,
    pub applications: WireApplications,
    #[serde(default)]
    pub platforms: Option<WirePlatforms>,
    #[serde(default)]
    pub locations: Option<WireLocations>,
    #[serde(default)]
    pub sign_in_risk_levels: Option<Vec<String>>,
    #[serde(default)]
    pub user_risk_levels: Option<Vec<String>>,
    #[serde(default)]
    pub client_app_types: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `conditionalAccessUsers`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireUsers {
    #[serde(default)]
    pub include_users: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_users: Option<Vec<String>>,
    #[serde(default)]
    pub include_groups: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_groups: Option<Vec<String>>,
    #[serde(default)]
    pub include_roles: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_roles: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `conditionalAccessApplications`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireApplications {
    #[serde(default)]
    pub include_applications: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_applications: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `conditionalAccessPlatforms`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WirePlatforms {
    #[serde(default)]
    pub include_platforms: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_platforms: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `conditionalAccessLocations`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireLocations {
    #[serde(default)]
    pub include_locations: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_locations: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `conditionalAccessGrantControls`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireGrantControls {
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub built_in_controls: Option<Vec<String>>,
    #[serde(default)]
    pub custom_authentication_factors: Option<Vec<String>>,
    #[serde(default)]
    pub terms_of_use: Option<Vec<String>>,
    #[serde(default)]
    pub authentication_strength: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `conditionalAccessSessionControls`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireSessionControls {
    #[serde(default)]
    pub disable_resilience_defaults: Option<bool>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One element of `namedLocations`: an `ipNamedLocation` (or a `countryNamedLocation`, which we
/// cannot evaluate without a geolocation database).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireNamedLocation {
    #[serde(default, rename = "@odata.type")]
    pub odata_type: Option<String>,
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub is_trusted: Option<bool>,
    #[serde(default)]
    pub ip_ranges: Option<Vec<WireIpRange>>,
    #[serde(default)]
    pub countries_and_regions: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `ipRange` (`iPv4CidrRange` or `iPv6CidrRange`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireIpRange {
    pub cidr_address: String,
    #[serde(flatten)]
    pub unknown: Unknown,
}
