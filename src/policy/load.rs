//! Loading a policy document: JSON → wire types → domain types, with every error naming its JSON
//! path, every size bounded (`limits`), unknown fields reported rather than rejected, and
//! unsupported controls kept as fail-closed markers with a warning.

use std::collections::{HashMap, HashSet};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::cidr::Cidr;
use super::wire::{
    Unknown, WireApplications, WireGrantControls, WireLocations, WireNamedLocation, WirePlatforms,
    WirePolicy, WireUsers,
};
use super::{
    AppCondition, ClientAppType, Control, DevicePlatform, Grant, LocationCondition, LocationRanges,
    LocationRef, NamedLocation, Operator, PlatformCondition, Policy, PolicySet, PolicyState,
    RiskLevel, UserCondition,
};
use crate::limits::{
    NAMED_LOCATION_RANGES_MAX, NAMED_LOCATIONS_MAX, POLICIES_MAX, POLICY_DOCUMENT_BYTES_MAX,
    POLICY_LIST_ENTRIES_MAX, POLICY_STRING_BYTES_MAX, POLICY_UNKNOWN_FIELDS_MAX,
};

/// Graph metadata that carries no meaning for evaluation: accepted without a report (as is any
/// OData annotation, `@odata.*` or `name@odata.*`).
const IGNORED_FIELDS: &[&str] = &[
    "createdDateTime",
    "modifiedDateTime",
    "templateId",
    "description",
];

/// The Graph id of the "MFA trusted IPs" pseudo-location, which we cannot evaluate.
const MFA_TRUSTED_IPS_LOCATION: &str = "00000000-0000-0000-0000-000000000000";

/// Why a policy document was rejected. Every variant past the first two names a JSON path such
/// as `conditionalAccessPolicies[3].conditions.locations.includeLocations[0]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyLoadError {
    /// The document exceeds `POLICY_DOCUMENT_BYTES_MAX`.
    #[error("policy document is {bytes} bytes, over the {max}-byte limit")]
    DocumentTooLarge {
        /// Size of the document.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The document is not JSON.
    #[error("policy document is not valid JSON: {message}")]
    Syntax {
        /// serde_json's message, with line and column.
        message: String,
    },
    /// A value has the wrong JSON type or a required field is missing.
    #[error("{path}: {message}")]
    Shape {
        /// JSON path of the value.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A list is longer than its limit.
    #[error("{path}: {count} entries, over the limit of {max}")]
    TooMany {
        /// JSON path of the list.
        path: String,
        /// Its length.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A string is longer than `POLICY_STRING_BYTES_MAX`.
    #[error("{path}: {bytes} bytes, over the {max}-byte limit")]
    StringTooLong {
        /// JSON path of the string.
        path: String,
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A value outside the set Graph defines for the field (a state, platform, risk level, ...).
    #[error("{path}: unknown value {value:?}")]
    UnknownValue {
        /// JSON path of the value.
        path: String,
        /// The value.
        value: String,
    },
    /// A `cidrAddress` that is not `address/prefix`.
    #[error("{path}: invalid CIDR {value:?}")]
    InvalidCidr {
        /// JSON path of the CIDR.
        path: String,
        /// The text.
        value: String,
    },
    /// A policy references a named location the document does not define.
    #[error("{path}: named location {id:?} is not defined in namedLocations")]
    UnknownLocation {
        /// JSON path of the reference.
        path: String,
        /// The id.
        id: String,
    },
    /// Two policies or two named locations share an id.
    #[error("{path}: duplicate id {id:?}")]
    DuplicateId {
        /// JSON path of the second occurrence.
        path: String,
        /// The id.
        id: String,
    },
}

/// Something the loader accepted but an operator should know about (logged once at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadWarning {
    /// JSON path of the value concerned.
    pub path: String,
    /// What it is.
    pub kind: WarningKind,
}

/// The kinds of [`LoadWarning`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    /// A grant control the backup cannot check: the policy refuses in outage whenever it may
    /// apply (fail closed).
    UnsupportedControl(String),
    /// A location (country, MFA trusted IPs) or application group (`Office365`) whose membership
    /// cannot be evaluated here: the condition is treated as possibly matching.
    Unevaluable(String),
}

/// A loaded document: the set, and what the loader wants logged once.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The policies, ready for [`super::evaluate`].
    pub set: PolicySet,
    /// JSON paths of fields we do not model, up to `POLICY_UNKNOWN_FIELDS_MAX`.
    pub unknown_fields: Vec<String>,
    /// How many unknown fields there were in all (may exceed `unknown_fields.len()`).
    pub unknown_field_count: usize,
    /// Unsupported controls and unevaluable conditions.
    pub warnings: Vec<LoadWarning>,
}

/// Parses and validates a policy document
/// `{"conditionalAccessPolicies": [...], "namedLocations": [...]}`.
pub fn load(document: &[u8]) -> Result<Loaded, PolicyLoadError> {
    if document.len() > POLICY_DOCUMENT_BYTES_MAX {
        return Err(PolicyLoadError::DocumentTooLarge {
            bytes: document.len(),
            max: POLICY_DOCUMENT_BYTES_MAX,
        });
    }
    let root: Value = serde_json::from_slice(document).map_err(|e| PolicyLoadError::Syntax {
        message: e.to_string(),
    })?;
    let Value::Object(mut root) = root else {
        return Err(shape("$", "expected a JSON object"));
    };
    let mut loader = Loader::default();

    let policies = root
        .remove("conditionalAccessPolicies")
        .ok_or_else(|| shape("conditionalAccessPolicies", "missing field"))?;
    // A document without named locations is fine (policies need not use locations).
    let locations = match root.remove("namedLocations") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => elements(value, "namedLocations", NAMED_LOCATIONS_MAX)?,
    };
    loader.report_unknown("", root.into_iter().collect());

    let mut location_index: HashMap<String, usize> = HashMap::new();
    let mut set = PolicySet::default();
    for (i, value) in locations.into_iter().enumerate() {
        let path = format!("namedLocations[{i}]");
        let wire: WireNamedLocation = element(value, &path)?;
        let id = string(&wire.id, &format!("{path}.id"))?.to_ascii_lowercase();
        if location_index
            .insert(id.clone(), set.locations.len())
            .is_some()
        {
            return Err(PolicyLoadError::DuplicateId {
                path: format!("{path}.id"),
                id,
            });
        }
        set.locations.push(loader.location(wire, &path)?);
    }

    let mut policy_ids: HashSet<String> = HashSet::new();
    for (i, value) in elements(policies, "conditionalAccessPolicies", POLICIES_MAX)?
        .into_iter()
        .enumerate()
    {
        let path = format!("conditionalAccessPolicies[{i}]");
        let wire: WirePolicy = element(value, &path)?;
        let policy = loader.policy(wire, &path, &location_index, &set.locations)?;
        if !policy_ids.insert(policy.id.to_ascii_lowercase()) {
            return Err(PolicyLoadError::DuplicateId {
                path: format!("{path}.id"),
                id: policy.id,
            });
        }
        set.policies.push(policy);
    }

    Ok(Loaded {
        set,
        unknown_fields: loader.unknown_fields,
        unknown_field_count: loader.unknown_field_count,
        warnings: loader.warnings,
    })
}

#[derive(Default)]
struct Loader {
    unknown_fields: Vec<String>,
    unknown_field_count: usize,
    warnings: Vec<LoadWarning>,
}

impl Loader {
    fn report_unknown(&mut self, path: &str, unknown: Unknown) {
        for (key, value) in unknown {
            // Graph exports write every unset property as `null` or `[]`: those say nothing.
            let empty = match &value {
                Value::Null => true,
                Value::Array(items) => items.is_empty(),
                Value::Object(fields) => fields.is_empty(),
                _ => false,
            };
            if empty || key.contains("@odata.") || IGNORED_FIELDS.contains(&key.as_str()) {
                continue;
            }
            self.unknown_field_count += 1;
            if self.unknown_fields.len() < POLICY_UNKNOWN_FIELDS_MAX {
                self.unknown_fields.push(join(path, &key));
            }
        }
    }

    fn warn(&mut self, path: String, kind: WarningKind) {
        self.warnings.push(LoadWarning { path, kind });
    }

    fn location(
        &mut self,
        wire: WireNamedLocation,
        path: &str,
    ) -> Result<NamedLocation, PolicyLoadError> {
        self.report_unknown(path, wire.unknown);
        if let Some(name) = &wire.display_name {
            string(name, &format!("{path}.displayName"))?;
        }
        let is_country = match wire.odata_type.as_deref() {
            None => wire.ip_ranges.is_none() && wire.countries_and_regions.is_some(),
            Some("#microsoft.graph.ipNamedLocation") => false,
            Some("#microsoft.graph.countryNamedLocation") => true,
            Some(other) => {
                return Err(unknown_value(&format!("{path}.@odata.type"), other));
            }
        };
        let ranges = if is_country {
            if let Some(countries) = wire.countries_and_regions {
                strings(countries, &format!("{path}.countriesAndRegions"))?;
            }
            LocationRanges::Country
        } else {
            let ranges_path = format!("{path}.ipRanges");
            let wire_ranges = wire
                .ip_ranges
                .ok_or_else(|| shape(&ranges_path, "missing field"))?;
            bound(&ranges_path, wire_ranges.len(), NAMED_LOCATION_RANGES_MAX)?;
            let mut ranges = Vec::with_capacity(wire_ranges.len());
            for (j, range) in wire_ranges.into_iter().enumerate() {
                let range_path = format!("{ranges_path}[{j}]");
                self.report_unknown(&range_path, range.unknown);
                let cidr_path = format!("{range_path}.cidrAddress");
                let text = string(&range.cidr_address, &cidr_path)?;
                let cidr = Cidr::parse(text).ok_or_else(|| PolicyLoadError::InvalidCidr {
                    path: cidr_path,
                    value: text.to_owned(),
                })?;
                ranges.push(cidr);
            }
            LocationRanges::Ip(ranges)
        };
        Ok(NamedLocation {
            trusted: wire.is_trusted.unwrap_or(false),
            ranges,
        })
    }

    fn policy(
        &mut self,
        wire: WirePolicy,
        path: &str,
        location_index: &HashMap<String, usize>,
        locations: &[NamedLocation],
    ) -> Result<Policy, PolicyLoadError> {
        self.report_unknown(path, wire.unknown);
        let id = string(&wire.id, &format!("{path}.id"))?.to_owned();
        if let Some(name) = &wire.display_name {
            string(name, &format!("{path}.displayName"))?;
        }
        let state = match wire.state.as_str() {
            "enabled" => PolicyState::Enabled,
            "disabled" => PolicyState::Disabled,
            "enabledForReportingButNotEnforced" => PolicyState::ReportOnly,
            other => return Err(unknown_value(&format!("{path}.state"), other)),
        };
        let conditions = wire.conditions;
        let cpath = format!("{path}.conditions");
        self.report_unknown(&cpath, conditions.unknown);
        let users = self.users(conditions.users, &format!("{cpath}.users"))?;
        let applications =
            self.applications(conditions.applications, &format!("{cpath}.applications"))?;
        let platforms = conditions
            .platforms
            .map(|p| self.platforms(p, &format!("{cpath}.platforms")))
            .transpose()?;
        let locations = conditions
            .locations
            .map(|l| self.locations(l, &format!("{cpath}.locations"), location_index, locations))
            .transpose()?;
        let sign_in_risk = risks(
            conditions.sign_in_risk_levels,
            &format!("{cpath}.signInRiskLevels"),
        )?;
        let user_risk = risks(
            conditions.user_risk_levels,
            &format!("{cpath}.userRiskLevels"),
        )?;
        let client_app_types = client_apps(
            conditions.client_app_types,
            &format!("{cpath}.clientAppTypes"),
        )?;
        let grant = match wire.grant_controls {
            None => Grant::Nothing,
            Some(g) => self.grant(g, &format!("{path}.grantControls"))?,
        };
        let mut resilience_defaults = true;
        if let Some(session) = wire.session_controls {
            self.report_unknown(&format!("{path}.sessionControls"), session.unknown);
            resilience_defaults = session.disable_resilience_defaults != Some(true);
        }
        Ok(Policy {
            id,
            state,
            users,
            applications,
            platforms,
            locations,
            sign_in_risk,
            user_risk,
            client_app_types,
            grant,
            resilience_defaults,
        })
    }

    fn users(&mut self, wire: WireUsers, path: &str) -> Result<UserCondition, PolicyLoadError> {
        self.report_unknown(path, wire.unknown);
        let mut condition = UserCondition::default();
        for (side, users, groups, roles, prefix) in [
            (
                &mut condition.include,
                wire.include_users,
                wire.include_groups,
                wire.include_roles,
                "include",
            ),
            (
                &mut condition.exclude,
                wire.exclude_users,
                wire.exclude_groups,
                wire.exclude_roles,
                "exclude",
            ),
        ] {
            let users_path = format!("{path}.{prefix}Users");
            for user in opt_strings(users, &users_path)? {
                match user.as_str() {
                    "All" => side.all = true,
                    // `None` selects nobody: an empty selector.
                    "None" => {}
                    "GuestsOrExternalUsers" => side.guests_or_external = true,
                    _ => side.users.push(user),
                }
            }
            side.groups = opt_strings(groups, &format!("{path}.{prefix}Groups"))?;
            side.roles = opt_strings(roles, &format!("{path}.{prefix}Roles"))?;
        }
        Ok(condition)
    }

    fn applications(
        &mut self,
        wire: WireApplications,
        path: &str,
    ) -> Result<AppCondition, PolicyLoadError> {
        self.report_unknown(path, wire.unknown);
        let mut condition = AppCondition::default();
        for (side, apps, name) in [
            (
                &mut condition.include,
                wire.include_applications,
                "includeApplications",
            ),
            (
                &mut condition.exclude,
                wire.exclude_applications,
                "excludeApplications",
            ),
        ] {
            let list_path = format!("{path}.{name}");
            for (j, app) in opt_strings(apps, &list_path)?.into_iter().enumerate() {
                match app.as_str() {
                    "All" => side.all = true,
                    "None" => {}
                    "Office365" | "MicrosoftAdminPortals" => {
                        side.unresolvable = true;
                        self.warn(
                            format!("{list_path}[{j}]"),
                            WarningKind::Unevaluable(app.clone()),
                        );
                    }
                    _ => side.ids.push(app),
                }
            }
        }
        Ok(condition)
    }

    fn platforms(
        &mut self,
        wire: WirePlatforms,
        path: &str,
    ) -> Result<PlatformCondition, PolicyLoadError> {
        self.report_unknown(path, wire.unknown);
        let mut condition = PlatformCondition::default();
        for (side, list, name) in [
            (
                &mut condition.include,
                wire.include_platforms,
                "includePlatforms",
            ),
            (
                &mut condition.exclude,
                wire.exclude_platforms,
                "excludePlatforms",
            ),
        ] {
            let list_path = format!("{path}.{name}");
            for (j, platform) in opt_strings(list, &list_path)?.into_iter().enumerate() {
                match platform.as_str() {
                    "all" => side.all = true,
                    other => side.platforms.push(
                        DevicePlatform::from_graph(other)
                            .ok_or_else(|| unknown_value(&format!("{list_path}[{j}]"), other))?,
                    ),
                }
            }
        }
        Ok(condition)
    }

    fn locations(
        &mut self,
        wire: WireLocations,
        path: &str,
        location_index: &HashMap<String, usize>,
        locations: &[NamedLocation],
    ) -> Result<LocationCondition, PolicyLoadError> {
        self.report_unknown(path, wire.unknown);
        let mut condition = LocationCondition::default();
        for (side, list, name) in [
            (
                &mut condition.include,
                wire.include_locations,
                "includeLocations",
            ),
            (
                &mut condition.exclude,
                wire.exclude_locations,
                "excludeLocations",
            ),
        ] {
            let list_path = format!("{path}.{name}");
            for (j, id) in opt_strings(list, &list_path)?.into_iter().enumerate() {
                let entry_path = format!("{list_path}[{j}]");
                match id.as_str() {
                    "All" => side.all = true,
                    "AllTrusted" => side.all_trusted = true,
                    MFA_TRUSTED_IPS_LOCATION => {
                        side.locations.push(LocationRef::Unevaluable);
                        self.warn(entry_path, WarningKind::Unevaluable(id));
                    }
                    _ => {
                        let index =
                            *location_index
                                .get(&id.to_ascii_lowercase())
                                .ok_or_else(|| PolicyLoadError::UnknownLocation {
                                    path: entry_path.clone(),
                                    id: id.clone(),
                                })?;
                        if let Some(NamedLocation {
                            ranges: LocationRanges::Country,
                            ..
                        }) = locations.get(index)
                        {
                            self.warn(entry_path, WarningKind::Unevaluable(id));
                        }
                        side.locations.push(LocationRef::Named(index));
                    }
                }
            }
        }
        Ok(condition)
    }

    fn grant(&mut self, wire: WireGrantControls, path: &str) -> Result<Grant, PolicyLoadError> {
        self.report_unknown(path, wire.unknown);
        let operator = match wire.operator.as_deref() {
            None | Some("OR") => Operator::Or,
            Some("AND") => Operator::And,
            Some(other) => return Err(unknown_value(&format!("{path}.operator"), other)),
        };
        let mut block = false;
        let mut controls = Vec::new();
        let mut unsupported = Vec::new();
        let list_path = format!("{path}.builtInControls");
        for (j, control) in opt_strings(wire.built_in_controls, &list_path)?
            .into_iter()
            .enumerate()
        {
            match control.as_str() {
                "block" => block = true,
                "mfa" => controls.push(Control::Mfa),
                "compliantDevice" => controls.push(Control::CompliantDevice),
                "domainJoinedDevice" => controls.push(Control::DomainJoinedDevice),
                _ => {
                    self.warn(
                        format!("{list_path}[{j}]"),
                        WarningKind::UnsupportedControl(control.clone()),
                    );
                    unsupported.push(control);
                }
            }
        }
        for (name, list) in [
            (
                "customAuthenticationFactors",
                wire.custom_authentication_factors,
            ),
            ("termsOfUse", wire.terms_of_use),
        ] {
            let list_path = format!("{path}.{name}");
            let list = opt_strings(list, &list_path)?;
            if !list.is_empty() {
                self.warn(list_path, WarningKind::UnsupportedControl(name.to_owned()));
                unsupported.push(name.to_owned());
            }
        }
        if wire.authentication_strength.is_some_and(|v| !v.is_null()) {
            let name = "authenticationStrength";
            self.warn(
                format!("{path}.{name}"),
                WarningKind::UnsupportedControl(name.to_owned()),
            );
            unsupported.push(name.to_owned());
        }
        Ok(if block {
            // Graph allows `block` only alone; whatever else is listed, block wins.
            Grant::Block
        } else if controls.is_empty() && unsupported.is_empty() {
            Grant::Nothing
        } else {
            Grant::Require {
                operator,
                controls,
                unsupported,
            }
        })
    }
}

fn shape(path: &str, message: &str) -> PolicyLoadError {
    PolicyLoadError::Shape {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

fn unknown_value(path: &str, value: &str) -> PolicyLoadError {
    PolicyLoadError::UnknownValue {
        path: path.to_owned(),
        value: value.to_owned(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn bound(path: &str, count: usize, max: usize) -> Result<(), PolicyLoadError> {
    if count > max {
        return Err(PolicyLoadError::TooMany {
            path: path.to_owned(),
            count,
            max,
        });
    }
    Ok(())
}

/// The elements of a top-level array, bounded.
fn elements(value: Value, path: &str, max: usize) -> Result<Vec<Value>, PolicyLoadError> {
    let Value::Array(items) = value else {
        return Err(shape(path, "expected an array"));
    };
    bound(path, items.len(), max)?;
    Ok(items)
}

/// One array element into its wire type. The error names the path down to the offending
/// value (`conditionalAccessPolicies[3].conditions.users.includeUsers`), serde's message what
/// was wrong with it.
fn element<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, PolicyLoadError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let full = if inner == "." || inner.is_empty() {
            path.to_owned()
        } else if inner.starts_with('[') {
            format!("{path}{inner}")
        } else {
            format!("{path}.{inner}")
        };
        shape(&full, &e.into_inner().to_string())
    })
}

fn string<'s>(text: &'s str, path: &str) -> Result<&'s str, PolicyLoadError> {
    if text.len() > POLICY_STRING_BYTES_MAX {
        return Err(PolicyLoadError::StringTooLong {
            path: path.to_owned(),
            bytes: text.len(),
            max: POLICY_STRING_BYTES_MAX,
        });
    }
    Ok(text)
}

fn strings(list: Vec<String>, path: &str) -> Result<Vec<String>, PolicyLoadError> {
    bound(path, list.len(), POLICY_LIST_ENTRIES_MAX)?;
    for (j, entry) in list.iter().enumerate() {
        string(entry, &format!("{path}[{j}]"))?;
    }
    Ok(list)
}

fn opt_strings(list: Option<Vec<String>>, path: &str) -> Result<Vec<String>, PolicyLoadError> {
    strings(list.unwrap_or_default(), path)
}

fn risks(list: Option<Vec<String>>, path: &str) -> Result<Vec<RiskLevel>, PolicyLoadError> {
    opt_strings(list, path)?
        .iter()
        .enumerate()
        .map(|(j, level)| {
            RiskLevel::from_graph(level)
                .ok_or_else(|| unknown_value(&format!("{path}[{j}]"), level))
        })
        .collect()
}

fn client_apps(
    list: Option<Vec<String>>,
    path: &str,
) -> Result<Option<Vec<ClientAppType>>, PolicyLoadError> {
    let mut types = Vec::new();
    for (j, name) in opt_strings(list, path)?.iter().enumerate() {
        match name.as_str() {
            // `all` (or nothing) means the condition is not configured.
            "all" => return Ok(None),
            "browser" => types.push(ClientAppType::Browser),
            "mobileAppsAndDesktopClients" => types.push(ClientAppType::MobileAppsAndDesktopClients),
            "exchangeActiveSync" | "easSupported" => types.push(ClientAppType::ExchangeActiveSync),
            "other" => types.push(ClientAppType::Other),
            other => return Err(unknown_value(&format!("{path}[{j}]"), other)),
        }
    }
    Ok(if types.is_empty() { None } else { Some(types) })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const GRAPH_EXPORT: &str = include_str!("../../tests/fixtures/policy/graph_export.json");

    fn base() -> Value {
        json!({
            "conditionalAccessPolicies": [
                {
                    "id": "p0",
                    "state": "enabled",
                    "conditions": {
                        "users": {"includeUsers": ["All"]},
                        "applications": {"includeApplications": ["All"]}
                    },
                    "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}
                },
                {
                    "id": "p1",
                    "state": "enabled",
                    "conditions": {
                        "users": {"includeUsers": ["All"]},
                        "applications": {"includeApplications": ["All"]},
                        "locations": {"includeLocations": ["loc0"]}
                    },
                    "grantControls": {"operator": "OR", "builtInControls": ["block"]}
                }
            ],
            "namedLocations": [
                {"id": "loc0", "isTrusted": true,
                 "ipRanges": [{"cidrAddress": "10.0.0.0/8"}, {"cidrAddress": "2001:db8::/32"}]}
            ]
        })
    }

    fn load_value(value: &Value) -> Result<Loaded, PolicyLoadError> {
        load(&serde_json::to_vec(value).unwrap())
    }

    #[test]
    fn graph_export_fixture_loads_with_its_unknown_fields_reported() {
        let loaded = load(GRAPH_EXPORT.as_bytes()).unwrap();
        assert_eq!(loaded.set.policy_count(), 2);
        assert_eq!(loaded.set.location_count(), 3);
        // Null properties and OData annotations are not reported; real unknown values are.
        assert_eq!(
            loaded.unknown_fields,
            [
                "namedLocations[2].countryLookupMethod",
                "namedLocations[2].includeUnknownCountriesAndRegions",
            ]
        );
        assert_eq!(loaded.unknown_field_count, 2);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn base_document_loads() {
        let loaded = load_value(&base()).unwrap();
        assert_eq!(loaded.set.policy_count(), 2);
        assert!(loaded.unknown_fields.is_empty());
    }

    /// Each case mutates the base document and expects one error, naming its JSON path.
    #[test]
    fn errors_name_the_offending_json_path() {
        type Mutate = fn(&mut Value);
        let cases: &[(&str, Mutate, PolicyLoadError)] = &[
            (
                "undefined named location",
                |d| {
                    d["conditionalAccessPolicies"][1]["conditions"]["locations"]["includeLocations"] =
                        json!(["nowhere"])
                },
                PolicyLoadError::UnknownLocation {
                    path: "conditionalAccessPolicies[1].conditions.locations.includeLocations[0]"
                        .into(),
                    id: "nowhere".into(),
                },
            ),
            (
                "bad CIDR",
                |d| d["namedLocations"][0]["ipRanges"][1]["cidrAddress"] = json!("2001:db8::/200"),
                PolicyLoadError::InvalidCidr {
                    path: "namedLocations[0].ipRanges[1].cidrAddress".into(),
                    value: "2001:db8::/200".into(),
                },
            ),
            (
                "unknown state",
                |d| d["conditionalAccessPolicies"][0]["state"] = json!("on"),
                PolicyLoadError::UnknownValue {
                    path: "conditionalAccessPolicies[0].state".into(),
                    value: "on".into(),
                },
            ),
            (
                "unknown platform",
                |d| {
                    d["conditionalAccessPolicies"][0]["conditions"]["platforms"] =
                        json!({"includePlatforms": ["all"], "excludePlatforms": ["iOS", "beos"]})
                },
                PolicyLoadError::UnknownValue {
                    path: "conditionalAccessPolicies[0].conditions.platforms.excludePlatforms[1]"
                        .into(),
                    value: "beos".into(),
                },
            ),
            (
                "unknown risk level",
                |d| {
                    d["conditionalAccessPolicies"][0]["conditions"]["userRiskLevels"] =
                        json!(["extreme"])
                },
                PolicyLoadError::UnknownValue {
                    path: "conditionalAccessPolicies[0].conditions.userRiskLevels[0]".into(),
                    value: "extreme".into(),
                },
            ),
            (
                "unknown client app type",
                |d| {
                    d["conditionalAccessPolicies"][0]["conditions"]["clientAppTypes"] =
                        json!(["browser", "fax"])
                },
                PolicyLoadError::UnknownValue {
                    path: "conditionalAccessPolicies[0].conditions.clientAppTypes[1]".into(),
                    value: "fax".into(),
                },
            ),
            (
                "unknown operator",
                |d| d["conditionalAccessPolicies"][0]["grantControls"]["operator"] = json!("XOR"),
                PolicyLoadError::UnknownValue {
                    path: "conditionalAccessPolicies[0].grantControls.operator".into(),
                    value: "XOR".into(),
                },
            ),
            (
                "duplicate policy id",
                |d| d["conditionalAccessPolicies"][1]["id"] = json!("P0"),
                PolicyLoadError::DuplicateId {
                    path: "conditionalAccessPolicies[1].id".into(),
                    id: "P0".into(),
                },
            ),
            (
                "duplicate location id",
                |d| {
                    let copy = d["namedLocations"][0].clone();
                    d["namedLocations"].as_array_mut().unwrap().push(copy);
                },
                PolicyLoadError::DuplicateId {
                    path: "namedLocations[1].id".into(),
                    id: "loc0".into(),
                },
            ),
            (
                "overlong id",
                |d| {
                    d["conditionalAccessPolicies"][0]["id"] =
                        json!("x".repeat(POLICY_STRING_BYTES_MAX + 1))
                },
                PolicyLoadError::StringTooLong {
                    path: "conditionalAccessPolicies[0].id".into(),
                    bytes: POLICY_STRING_BYTES_MAX + 1,
                    max: POLICY_STRING_BYTES_MAX,
                },
            ),
            (
                "too many list entries",
                |d| {
                    d["conditionalAccessPolicies"][0]["conditions"]["users"]["excludeGroups"] =
                        json!(vec!["g"; POLICY_LIST_ENTRIES_MAX + 1])
                },
                PolicyLoadError::TooMany {
                    path: "conditionalAccessPolicies[0].conditions.users.excludeGroups".into(),
                    count: POLICY_LIST_ENTRIES_MAX + 1,
                    max: POLICY_LIST_ENTRIES_MAX,
                },
            ),
            (
                "too many ranges",
                |d| {
                    d["namedLocations"][0]["ipRanges"] = json!(vec![
                        json!({"cidrAddress": "10.0.0.0/8"});
                        NAMED_LOCATION_RANGES_MAX + 1
                    ])
                },
                PolicyLoadError::TooMany {
                    path: "namedLocations[0].ipRanges".into(),
                    count: NAMED_LOCATION_RANGES_MAX + 1,
                    max: NAMED_LOCATION_RANGES_MAX,
                },
            ),
            (
                "too many policies",
                |d| {
                    let one = d["conditionalAccessPolicies"][0].clone();
                    d["conditionalAccessPolicies"] = json!(vec![one; POLICIES_MAX + 1]);
                },
                PolicyLoadError::TooMany {
                    path: "conditionalAccessPolicies".into(),
                    count: POLICIES_MAX + 1,
                    max: POLICIES_MAX,
                },
            ),
            (
                "location without ranges",
                |d| {
                    d["namedLocations"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("ipRanges")
                        .map(drop)
                        .unwrap_or(())
                },
                PolicyLoadError::Shape {
                    path: "namedLocations[0].ipRanges".into(),
                    message: "missing field".into(),
                },
            ),
            (
                "unknown location type",
                |d| {
                    d["namedLocations"][0]["@odata.type"] =
                        json!("#microsoft.graph.gpsNamedLocation")
                },
                PolicyLoadError::UnknownValue {
                    path: "namedLocations[0].@odata.type".into(),
                    value: "#microsoft.graph.gpsNamedLocation".into(),
                },
            ),
            (
                "policies not an array",
                |d| d["conditionalAccessPolicies"] = json!({}),
                PolicyLoadError::Shape {
                    path: "conditionalAccessPolicies".into(),
                    message: "expected an array".into(),
                },
            ),
            (
                "policies missing",
                |d| {
                    d.as_object_mut()
                        .unwrap()
                        .remove("conditionalAccessPolicies")
                        .map(drop)
                        .unwrap_or(())
                },
                PolicyLoadError::Shape {
                    path: "conditionalAccessPolicies".into(),
                    message: "missing field".into(),
                },
            ),
        ];
        for (name, mutate, want) in cases {
            let mut document = base();
            mutate(&mut document);
            let got = load_value(&document).map(|_| ()).unwrap_err();
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn wrong_types_name_the_element_and_what_serde_expected() {
        let mut document = base();
        document["conditionalAccessPolicies"][1]["conditions"]
            .as_object_mut()
            .unwrap()
            .remove("users");
        let PolicyLoadError::Shape { path, message } = load_value(&document).unwrap_err() else {
            panic!("expected a shape error");
        };
        assert_eq!(path, "conditionalAccessPolicies[1].conditions");
        assert!(message.contains("users"), "{message}");

        let mut document = base();
        document["conditionalAccessPolicies"][0]["conditions"]["users"]["includeUsers"] = json!(5);
        let PolicyLoadError::Shape { path, message } = load_value(&document).unwrap_err() else {
            panic!("expected a shape error");
        };
        assert_eq!(
            path,
            "conditionalAccessPolicies[0].conditions.users.includeUsers"
        );
        assert!(message.contains("invalid type"), "{message}");

        let mut document = base();
        document["conditionalAccessPolicies"][0]["conditions"]["users"]["includeUsers"] =
            json!(["u1", 7]);
        let PolicyLoadError::Shape { path, .. } = load_value(&document).unwrap_err() else {
            panic!("expected a shape error");
        };
        assert_eq!(
            path,
            "conditionalAccessPolicies[0].conditions.users.includeUsers[1]"
        );
    }

    #[test]
    fn document_level_errors() {
        assert!(matches!(load(b"{"), Err(PolicyLoadError::Syntax { .. })));
        assert_eq!(
            load(b"[]").unwrap_err(),
            PolicyLoadError::Shape {
                path: "$".into(),
                message: "expected a JSON object".into()
            }
        );
        let huge = vec![b' '; POLICY_DOCUMENT_BYTES_MAX + 1];
        assert_eq!(
            load(&huge).unwrap_err(),
            PolicyLoadError::DocumentTooLarge {
                bytes: POLICY_DOCUMENT_BYTES_MAX + 1,
                max: POLICY_DOCUMENT_BYTES_MAX
            }
        );
        // Named locations are optional; an empty policy list is a valid (empty) set.
        let loaded = load(br#"{"conditionalAccessPolicies": []}"#).unwrap();
        assert_eq!(loaded.set.policy_count(), 0);
    }

    #[test]
    fn unknown_fields_are_reported_by_path_not_rejected() {
        let mut document = base();
        document["extra"] = json!(1);
        document["conditionalAccessPolicies"][0]["foo"] = json!("bar");
        document["conditionalAccessPolicies"][0]["conditions"]["devices"] =
            json!({"deviceFilter": {}});
        document["conditionalAccessPolicies"][0]["conditions"]["clientApplications"] = Value::Null;
        document["conditionalAccessPolicies"][0]["sessionControls"] =
            json!({"signInFrequency": {"value": 1}});
        document["namedLocations"][0]["ipRanges"][0]["@odata.type"] =
            json!("#microsoft.graph.iPv4CidrRange");
        document["namedLocations"][0]["ipRanges"][0]["note"] = json!("x");
        let loaded = load_value(&document).unwrap();
        assert_eq!(
            loaded.unknown_fields,
            [
                "extra",
                "namedLocations[0].ipRanges[0].note",
                "conditionalAccessPolicies[0].foo",
                "conditionalAccessPolicies[0].conditions.devices",
                "conditionalAccessPolicies[0].sessionControls.signInFrequency",
            ]
        );
    }

    #[test]
    fn unknown_field_list_is_bounded_but_counted() {
        let mut document = base();
        for i in 0..POLICY_UNKNOWN_FIELDS_MAX + 10 {
            document[format!("x{i}")] = json!(1);
        }
        let loaded = load_value(&document).unwrap();
        assert_eq!(loaded.unknown_fields.len(), POLICY_UNKNOWN_FIELDS_MAX);
        assert_eq!(loaded.unknown_field_count, POLICY_UNKNOWN_FIELDS_MAX + 10);
    }

    #[test]
    fn unsupported_controls_and_unevaluable_conditions_warn() {
        let mut document = base();
        document["conditionalAccessPolicies"][0]["grantControls"] = json!({
            "operator": "OR",
            "builtInControls": ["mfa", "approvedApplication"],
            "termsOfUse": ["tou1"],
            "authenticationStrength": {"id": "00000000-0000-0000-0000-000000000002"}
        });
        document["conditionalAccessPolicies"][1]["conditions"]["applications"]["includeApplications"] =
            json!(["Office365"]);
        document["conditionalAccessPolicies"][1]["conditions"]["locations"]["excludeLocations"] =
            json!(["00000000-0000-0000-0000-000000000000", "country"]);
        document["namedLocations"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "@odata.type": "#microsoft.graph.countryNamedLocation",
                "id": "country",
                "countriesAndRegions": ["KP"]
            }));
        let loaded = load_value(&document).unwrap();
        let warning = |path: &str, kind: WarningKind| LoadWarning {
            path: path.into(),
            kind,
        };
        assert_eq!(
            loaded.warnings,
            [
                warning(
                    "conditionalAccessPolicies[0].grantControls.builtInControls[1]",
                    WarningKind::UnsupportedControl("approvedApplication".into())
                ),
                warning(
                    "conditionalAccessPolicies[0].grantControls.termsOfUse",
                    WarningKind::UnsupportedControl("termsOfUse".into())
                ),
                warning(
                    "conditionalAccessPolicies[0].grantControls.authenticationStrength",
                    WarningKind::UnsupportedControl("authenticationStrength".into())
                ),
                warning(
                    "conditionalAccessPolicies[1].conditions.applications.includeApplications[0]",
                    WarningKind::Unevaluable("Office365".into())
                ),
                warning(
                    "conditionalAccessPolicies[1].conditions.locations.excludeLocations[0]",
                    WarningKind::Unevaluable("00000000-0000-0000-0000-000000000000".into())
                ),
                warning(
                    "conditionalAccessPolicies[1].conditions.locations.excludeLocations[1]",
                    WarningKind::Unevaluable("country".into())
                ),
            ]
        );
    }

    #[test]
    fn error_messages_read_as_path_then_problem() {
        let error = PolicyLoadError::UnknownLocation {
            path: "conditionalAccessPolicies[3].conditions.locations.includeLocations[0]".into(),
            id: "x".into(),
        };
        assert_eq!(
            error.to_string(),
            "conditionalAccessPolicies[3].conditions.locations.includeLocations[0]: named location \"x\" is not defined in namedLocations"
        );
    }
}
