//! `OAuthError`: the error codes a token or authorization endpoint may put on the wire, one
//! variant per standard code, with the HTTP status each one travels with.
//!
//! Internal refusal reasons are finer and live with the code that refuses (logs, metrics and
//! audit get those); the wire only ever gets one of these codes and a short description that
//! never contains a token, cookie or secret.

use std::fmt::Write as _;

/// A standard OAuth 2.0 / OpenID Connect / DPoP error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OAuthError {
    /// RFC 6749 §5.2 `invalid_request`: missing, repeated or malformed parameter.
    InvalidRequest,
    /// RFC 6749 §5.2 `invalid_client`: client authentication failed (HTTP 401).
    InvalidClient,
    /// RFC 6749 §5.2 `invalid_grant`: the grant or refresh token is invalid, expired, revoked
    /// or was issued to another client.
    InvalidGrant,
    /// RFC 6749 §5.2 `unauthorized_client`: this client may not use this grant type.
    UnauthorizedClient,
    /// RFC 6749 §5.2 `unsupported_grant_type`.
    UnsupportedGrantType,
    /// RFC 6749 §5.2 `invalid_scope`: the scope exceeds what was granted.
    InvalidScope,
    /// RFC 6749 §4.1.2.1 `access_denied`: the resource owner or a policy denied the request.
    AccessDenied,
    /// RFC 6749 §4.1.2.1 `unsupported_response_type`.
    UnsupportedResponseType,
    /// RFC 6749 §4.1.2.1 `server_error`: an unexpected condition (HTTP 500).
    ServerError,
    /// RFC 6749 §4.1.2.1 `temporarily_unavailable`. The token endpoint has no such code in
    /// RFC 6749 §5.2, so it travels with HTTP 503 and `Retry-After`, which carry the meaning
    /// to clients that do not know the code (DESIGN §2): "cannot serve now, keep your token".
    TemporarilyUnavailable,
    /// OpenID Connect Core §3.1.2.6 `interaction_required`: the request needs the user.
    InteractionRequired,
    /// OpenID Connect Core §3.1.2.6 `login_required`.
    LoginRequired,
    /// RFC 8707 §2 `invalid_target`: the requested resource is invalid or unknown.
    InvalidTarget,
    /// RFC 9449 §5 `invalid_dpop_proof`: the DPoP proof is missing or invalid.
    InvalidDpopProof,
}

impl OAuthError {
    /// The `error` value on the wire.
    pub const fn code(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest => "invalid_request",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::InvalidGrant => "invalid_grant",
            OAuthError::UnauthorizedClient => "unauthorized_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidScope => "invalid_scope",
            OAuthError::AccessDenied => "access_denied",
            OAuthError::UnsupportedResponseType => "unsupported_response_type",
            OAuthError::ServerError => "server_error",
            OAuthError::TemporarilyUnavailable => "temporarily_unavailable",
            OAuthError::InteractionRequired => "interaction_required",
            OAuthError::LoginRequired => "login_required",
            OAuthError::InvalidTarget => "invalid_target",
            OAuthError::InvalidDpopProof => "invalid_dpop_proof",
        }
    }

    /// The HTTP status of a token-endpoint error response with this code.
    pub const fn http_status(self) -> u16 {
        match self {
            // RFC 6749 §5.2: 401 when the client tried to authenticate through the
            // Authorization header; we always answer 401 for client authentication failures,
            // which RFC 6749 allows and which clients handle the same way.
            OAuthError::InvalidClient => 401,
            OAuthError::ServerError => 500,
            OAuthError::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }

    /// The JSON body of an error response (RFC 6749 §5.2). `description` is for humans; it
    /// must never contain a credential. Characters outside printable ASCII are dropped, as
    /// RFC 6749 restricts `error_description` to %x20-21 / %x23-5B / %x5D-7E.
    pub fn to_json(self, description: &str) -> String {
        let mut out = String::with_capacity(48 + description.len());
        out.push_str("{\"error\":\"");
        out.push_str(self.code());
        out.push('"');
        let clean: String = description
            .chars()
            .filter(|c| matches!(*c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
            .collect();
        if !clean.is_empty() {
            // `fmt::Write` into a String cannot fail.
            let _ = write!(out, ",\"error_description\":\"{clean}\"");
        }
        out.push('}');
        out
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [OAuthError; 14] = [
        OAuthError::InvalidRequest,
        OAuthError::InvalidClient,
        OAuthError::InvalidGrant,
        OAuthError::UnauthorizedClient,
        OAuthError::UnsupportedGrantType,
        OAuthError::InvalidScope,
        OAuthError::AccessDenied,
        OAuthError::UnsupportedResponseType,
        OAuthError::ServerError,
        OAuthError::TemporarilyUnavailable,
        OAuthError::InteractionRequired,
        OAuthError::LoginRequired,
        OAuthError::InvalidTarget,
        OAuthError::InvalidDpopProof,
    ];

    #[test]
    fn codes_are_distinct_lowercase_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for e in ALL {
            assert!(seen.insert(e.code()), "duplicate code {}", e.code());
            assert!(
                e.code()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
    }

    #[test]
    fn statuses_follow_the_error_mapping() {
        assert_eq!(OAuthError::InvalidGrant.http_status(), 400);
        assert_eq!(OAuthError::InvalidClient.http_status(), 401);
        assert_eq!(OAuthError::TemporarilyUnavailable.http_status(), 503);
        assert_eq!(OAuthError::ServerError.http_status(), 500);
        assert_eq!(OAuthError::InteractionRequired.http_status(), 400);
    }

    #[test]
    fn error_body_is_json_with_a_sanitized_description() {
        let body = OAuthError::InvalidRequest.to_json("duplicate parameter \"scope\"\\\n");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "invalid_request");
        assert_eq!(v["error_description"], "duplicate parameter scope");
        assert_eq!(
            OAuthError::InvalidGrant.to_json(""),
            r#"{"error":"invalid_grant"}"#
        );
    }
}
