//! The `[capture]` section: how normal-mode capture reads a primary's tokens (which claims name
//! the user, the tenant, a guest; where groups, roles, risk and device facts live), how long a
//! snapshot stays servable, and how many captures may wait for the store.
//!
//! Defaults are Entra-like (`tid`, `acct`, `idp`, `groups`, `roles`) and harmless for providers
//! that emit none of those claims: a claim that is absent reads as "not reported".

use serde::Deserialize;

use super::{ConfigError, bounded, bounded_usize};
use crate::limits;

/// `[capture]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCapture {
    queue_len: Option<u64>,
    session_window_secs: Option<u64>,
    user_claims: Option<Vec<String>>,
    tenant_claim: Option<String>,
    default_tenant: Option<String>,
    guest_claim: Option<String>,
    guest_value: Option<String>,
    home_tenant_claim: Option<String>,
    groups_claim: Option<String>,
    roles_claim: Option<String>,
    sign_in_risk_claim: Option<String>,
    user_risk_claim: Option<String>,
    device_platform_claim: Option<String>,
    device_compliance_claim: Option<String>,
    device_header: Option<String>,
}

/// How capture turns a primary's token response into a snapshot (validated `[capture]`).
///
/// A claim name of `None` means "not read": the fact it would carry is recorded as unknown
/// (risk, compliance), empty (groups, roles, platform) or not applied (guest rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Captures that may wait for the store before new ones are dropped and counted.
    pub queue_len: usize,
    /// Seconds a snapshot stays servable after the primary's last successful authentication.
    pub session_window_secs: u64,
    /// Claims naming the user, tried in order (ID token first, then access token, per claim).
    pub user_claims: Vec<String>,
    /// Claim naming the tenant; absent claim (or `None`) → `default_tenant`.
    pub tenant_claim: Option<String>,
    /// Tenant recorded when the tokens name none (single-tenant providers).
    pub default_tenant: String,
    /// A claim whose value `guest_value` marks a B2B guest (Entra's optional `acct`: 1 = guest).
    pub guest_claim: Option<String>,
    /// The value of `guest_claim` that means guest, compared with the claim's string or number.
    pub guest_value: String,
    /// A claim naming the user's home identity provider or tenant (Entra's `idp`): a user whose
    /// claim is present and equals neither the tenant nor the token's `iss` is a guest.
    pub home_tenant_claim: Option<String>,
    /// Claim listing group memberships.
    pub groups_claim: Option<String>,
    /// Claim listing role assignments.
    pub roles_claim: Option<String>,
    /// Claim carrying the sign-in risk level (`none`, `low`, `medium`, `high`).
    pub sign_in_risk_claim: Option<String>,
    /// Claim carrying the user risk level.
    pub user_risk_claim: Option<String>,
    /// Claim carrying the device platform (`iOS`, `Windows`, ...).
    pub device_platform_claim: Option<String>,
    /// Claim carrying device compliance (`true` / `false`, or `compliant` / `noncompliant`).
    pub device_compliance_claim: Option<String>,
    /// Request header (lowercase) whose value identifies the device when no DPoP key does.
    pub device_header: Option<String>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        // `default_capture_equals_resolved_empty_table` keeps this equal to the resolver's output.
        let some = |s: &str| Some(s.to_string());
        Self {
            queue_len: usize::try_from(limits::CAPTURE_QUEUE_LEN.default).unwrap_or(usize::MAX),
            session_window_secs: limits::CAPTURE_SESSION_WINDOW_SECS.default,
            user_claims: vec!["sub".to_string()],
            tenant_claim: some("tid"),
            default_tenant: String::new(),
            guest_claim: some("acct"),
            guest_value: "1".to_string(),
            home_tenant_claim: some("idp"),
            groups_claim: some("groups"),
            roles_claim: some("roles"),
            sign_in_risk_claim: None,
            user_risk_claim: None,
            device_platform_claim: None,
            device_compliance_claim: None,
            device_header: None,
        }
    }
}

/// Headers that carry credentials or proofs: recording one as a device identity would put a
/// secret (or a replayable proof) into the store.
const FORBIDDEN_DEVICE_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "dpop",
    "host",
];

fn claim_name_error(field: &'static str, value: &str) -> ConfigError {
    ConfigError::invalid(
        field,
        format!("{value:?}"),
        format!(
            "a claim name of 1 to {} visible characters, or \"\" to not read it",
            limits::CAPTURE_CLAIM_NAME_BYTES_MAX
        ),
    )
}

fn is_claim_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= limits::CAPTURE_CLAIM_NAME_BYTES_MAX
        && !s.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// An optional claim name: absent → `default`, `""` → not read.
fn optional_claim(
    field: &'static str,
    value: Option<&str>,
    default: Option<&str>,
) -> Result<Option<String>, ConfigError> {
    match value {
        None => Ok(default.map(str::to_string)),
        Some("") => Ok(None),
        Some(s) if is_claim_name(s) => Ok(Some(s.to_string())),
        Some(s) => Err(claim_name_error(field, s)),
    }
}

fn is_tchar(b: u8) -> bool {
    // RFC 9110 §5.6.2 token characters.
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn resolve_capture(raw: &RawCapture) -> Result<CaptureConfig, ConfigError> {
    let d = CaptureConfig::default();
    let queue_len = bounded_usize(
        "capture.queue_len",
        raw.queue_len,
        limits::CAPTURE_QUEUE_LEN,
    )?;
    let session_window_secs = bounded(
        "capture.session_window_secs",
        raw.session_window_secs,
        limits::CAPTURE_SESSION_WINDOW_SECS,
    )?;

    let user_claims = match &raw.user_claims {
        None => d.user_claims.clone(),
        Some(list) => {
            if list.is_empty() || list.len() > limits::CAPTURE_USER_CLAIMS_MAX {
                return Err(ConfigError::invalid(
                    "capture.user_claims",
                    format!("{list:?}"),
                    format!(
                        "a list of 1 to {} claim names, tried in order (e.g. [\"oid\", \"sub\"])",
                        limits::CAPTURE_USER_CLAIMS_MAX
                    ),
                ));
            }
            if let Some(bad) = list.iter().find(|c| !is_claim_name(c)) {
                return Err(ConfigError::invalid(
                    "capture.user_claims",
                    format!("{bad:?}"),
                    format!(
                        "claim names of 1 to {} visible characters",
                        limits::CAPTURE_CLAIM_NAME_BYTES_MAX
                    ),
                ));
            }
            list.clone()
        }
    };

    let default_tenant = raw.default_tenant.clone().unwrap_or(d.default_tenant);
    if default_tenant.len() > limits::CAPTURE_CLAIM_VALUE_BYTES_MAX
        || default_tenant.chars().any(char::is_control)
    {
        return Err(ConfigError::invalid(
            "capture.default_tenant",
            format!("{default_tenant:?}"),
            format!(
                "a tenant identifier of at most {} bytes without control characters",
                limits::CAPTURE_CLAIM_VALUE_BYTES_MAX
            ),
        ));
    }

    let guest_claim = optional_claim(
        "capture.guest_claim",
        raw.guest_claim.as_deref(),
        d.guest_claim.as_deref(),
    )?;
    let guest_value = raw.guest_value.clone().unwrap_or(d.guest_value);
    if guest_claim.is_some()
        && (guest_value.is_empty() || guest_value.len() > limits::CAPTURE_CLAIM_VALUE_BYTES_MAX)
    {
        return Err(ConfigError::invalid(
            "capture.guest_value",
            format!("{guest_value:?}"),
            format!(
                "a non-empty value of at most {} bytes (the value of capture.guest_claim that means guest)",
                limits::CAPTURE_CLAIM_VALUE_BYTES_MAX
            ),
        ));
    }

    let device_header = match raw.device_header.as_deref() {
        None | Some("") => None,
        Some(h) => {
            let lower = h.to_ascii_lowercase();
            let ok = lower.len() <= limits::CAPTURE_CLAIM_NAME_BYTES_MAX
                && lower.bytes().all(is_tchar)
                && !FORBIDDEN_DEVICE_HEADERS.contains(&lower.as_str());
            if !ok {
                return Err(ConfigError::invalid(
                    "capture.device_header",
                    format!("{h:?}"),
                    format!(
                        "an HTTP header name of at most {} characters that carries no credential \
                         (not {}), or \"\" for none",
                        limits::CAPTURE_CLAIM_NAME_BYTES_MAX,
                        FORBIDDEN_DEVICE_HEADERS.join(", ")
                    ),
                ));
            }
            Some(lower)
        }
    };

    Ok(CaptureConfig {
        queue_len,
        session_window_secs,
        user_claims,
        tenant_claim: optional_claim(
            "capture.tenant_claim",
            raw.tenant_claim.as_deref(),
            d.tenant_claim.as_deref(),
        )?,
        default_tenant,
        guest_claim,
        guest_value,
        home_tenant_claim: optional_claim(
            "capture.home_tenant_claim",
            raw.home_tenant_claim.as_deref(),
            d.home_tenant_claim.as_deref(),
        )?,
        groups_claim: optional_claim(
            "capture.groups_claim",
            raw.groups_claim.as_deref(),
            d.groups_claim.as_deref(),
        )?,
        roles_claim: optional_claim(
            "capture.roles_claim",
            raw.roles_claim.as_deref(),
            d.roles_claim.as_deref(),
        )?,
        sign_in_risk_claim: optional_claim(
            "capture.sign_in_risk_claim",
            raw.sign_in_risk_claim.as_deref(),
            d.sign_in_risk_claim.as_deref(),
        )?,
        user_risk_claim: optional_claim(
            "capture.user_risk_claim",
            raw.user_risk_claim.as_deref(),
            d.user_risk_claim.as_deref(),
        )?,
        device_platform_claim: optional_claim(
            "capture.device_platform_claim",
            raw.device_platform_claim.as_deref(),
            d.device_platform_claim.as_deref(),
        )?,
        device_compliance_claim: optional_claim(
            "capture.device_compliance_claim",
            raw.device_compliance_claim.as_deref(),
            d.device_compliance_claim.as_deref(),
        )?,
        device_header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<CaptureConfig, ConfigError> {
        let raw: RawCapture = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: "test".into(),
            message: e.to_string(),
        })?;
        resolve_capture(&raw)
    }

    #[test]
    fn default_capture_equals_resolved_empty_table() {
        assert_eq!(resolve("").unwrap(), CaptureConfig::default());
    }

    #[test]
    fn empty_claim_name_means_not_read() {
        let c = resolve("groups_claim = \"\"\nguest_claim = \"\"\ntenant_claim = \"\"").unwrap();
        assert_eq!(c.groups_claim, None);
        assert_eq!(c.guest_claim, None);
        assert_eq!(c.tenant_claim, None);
        let c = resolve("sign_in_risk_claim = \"signin_risk\"").unwrap();
        assert_eq!(c.sign_in_risk_claim.as_deref(), Some("signin_risk"));
    }

    #[test]
    fn device_header_is_lowercased_and_credential_headers_are_refused() {
        let c = resolve("device_header = \"X-Device-Id\"").unwrap();
        assert_eq!(c.device_header.as_deref(), Some("x-device-id"));
        assert_eq!(resolve("device_header = \"\"").unwrap().device_header, None);
        for h in ["Authorization", "cookie", "DPoP", "x device"] {
            let err = resolve(&format!("device_header = \"{h}\"")).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        field: "capture.device_header",
                        ..
                    }
                ),
                "{h}: {err}"
            );
        }
    }
}
