//! RFC 6749 error responses and the strict token-request form parser: the mock's wire edge,
//! kept apart so that every refusal has one shape and one HTTP status.

use std::collections::BTreeMap;

/// Largest token-request body accepted.
pub(crate) const FORM_BYTES_MAX: usize = 64 * 1024;

/// Most parameters accepted in one token request.
pub(crate) const FORM_FIELDS_MAX: usize = 64;

/// An RFC 6749 §5.2 (and RFC 9449 §5, RFC 8707 §2) error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorCode {
    /// RFC 6749 §5.2: missing, repeated or malformed parameter.
    InvalidRequest,
    /// RFC 6749 §5.2: client authentication failed (HTTP 401).
    InvalidClient,
    /// RFC 6749 §5.2: code or refresh token invalid, expired, revoked or issued to another client.
    InvalidGrant,
    /// RFC 6749 §5.2: the client may not use this grant type.
    UnauthorizedClient,
    /// RFC 6749 §5.2: grant type not supported.
    UnsupportedGrantType,
    /// RFC 6749 §5.2: requested scope exceeds the grant.
    InvalidScope,
    /// RFC 8707 §2: the requested resource is not the grant's.
    InvalidTarget,
    /// RFC 9449 §5: the DPoP proof is missing where required, or invalid.
    InvalidDpopProof,
    /// RFC 6749 §4.1.2.1: the mock failed (also what `error500` mode answers).
    ServerError,
    /// RFC 6749 §4.1.2.1: a capacity of the mock is exhausted.
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The code as it appears in the `error` member.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// The HTTP status this code is sent with.
    pub(crate) fn status(self) -> u16 {
        match self {
            Self::InvalidClient => 401,
            Self::ServerError => 500,
            Self::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

/// A refusal: a code and a human description (never parsed by anyone; FIELD-NOTES).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    /// The RFC code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub description: String,
}

impl OAuthError {
    pub(crate) fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    /// The JSON body of the error response.
    pub(crate) fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code.as_str(), "error_description": self.description })
    }
}

/// Parses an `application/x-www-form-urlencoded` body strictly: a repeated parameter is
/// `invalid_request` (RFC 6749 §3.2), an empty value counts as absent (RFC 6749 §3.1).
pub(crate) fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, OAuthError> {
    if body.len() > FORM_BYTES_MAX {
        return Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "request body too large",
        ));
    }
    let mut fields = BTreeMap::new();
    for (count, (name, value)) in form_urlencoded::parse(body).enumerate() {
        if count >= FORM_FIELDS_MAX {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                "too many parameters",
            ));
        }
        if value.is_empty() {
            continue;
        }
        if fields
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                format!("parameter `{name}` repeated"),
            ));
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameter_is_invalid_request() {
        let err =
            parse_form(b"grant_type=refresh_token&refresh_token=a&refresh_token=b").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(err.description.contains("refresh_token"));
    }

    #[test]
    fn empty_values_count_as_absent_and_percent_decoding_applies() {
        let form = parse_form(b"a=&b=x%20y+z&a=1").unwrap();
        assert_eq!(form.get("a").map(String::as_str), Some("1"));
        assert_eq!(form.get("b").map(String::as_str), Some("x y z"));
    }

    #[test]
    fn too_many_fields_and_too_large_bodies_are_refused() {
        let many: Vec<String> = (0..100).map(|i| format!("f{i}=v")).collect();
        assert!(parse_form(many.join("&").as_bytes()).is_err());
        assert!(parse_form(&vec![b'a'; FORM_BYTES_MAX + 1]).is_err());
    }
}
