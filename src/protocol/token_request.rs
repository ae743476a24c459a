//! `TokenRequest`: a token-endpoint request (RFC 6749 §3.2) parsed into a closed enum at the
//! edge, with its client authentication (RFC 6749 §2.3, RFC 7523), so nothing downstream looks
//! at raw form fields again.

use std::borrow::Cow;

use base64::Engine as _;

use super::OAuthError;
use super::form::{self, Form, FormError};
use crate::limits;

/// RFC 7523 §2.2: the one client assertion type we accept.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A credential from the request (refresh token, code, secret, assertion). Its `Debug` hides
/// the value, so it cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential<'a>(Cow<'a, str>);

impl<'a> Credential<'a> {
    /// The raw value, for hashing or verifying; never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential(<{} bytes redacted>)", self.0.len())
    }
}

/// How the client authenticated (RFC 6749 §2.3; RFC 7523 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth<'a> {
    /// A public client naming itself with `client_id` (token endpoint auth method `none`).
    None {
        /// The client.
        client_id: Cow<'a, str>,
    },
    /// `client_secret_basic`: HTTP Basic with the form-encoded id and secret.
    SecretBasic {
        /// The client.
        client_id: Cow<'a, str>,
        /// The secret.
        secret: Credential<'a>,
    },
    /// `client_secret_post`: `client_id` and `client_secret` in the body.
    SecretPost {
        /// The client.
        client_id: Cow<'a, str>,
        /// The secret.
        secret: Credential<'a>,
    },
    /// `private_key_jwt` / `client_secret_jwt`: a signed JWT assertion. The client is the
    /// assertion's `sub`; a `client_id` parameter, when present, must match it.
    JwtAssertion {
        /// The `client_id` parameter, if the client sent one.
        client_id: Option<Cow<'a, str>>,
        /// The compact JWS.
        assertion: Credential<'a>,
    },
}

impl ClientAuth<'_> {
    /// The client identifier the request claims, if known before verifying an assertion.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            ClientAuth::None { client_id }
            | ClientAuth::SecretBasic { client_id, .. }
            | ClientAuth::SecretPost { client_id, .. } => Some(client_id),
            ClientAuth::JwtAssertion { client_id, .. } => client_id.as_deref(),
        }
    }

    /// The `token_endpoint_auth_method` name (RFC 7591 §2).
    pub fn method(&self) -> &'static str {
        match self {
            ClientAuth::None { .. } => "none",
            ClientAuth::SecretBasic { .. } => "client_secret_basic",
            ClientAuth::SecretPost { .. } => "client_secret_post",
            ClientAuth::JwtAssertion { .. } => "private_key_jwt",
        }
    }
}

/// A token request, by grant type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRequest<'a> {
    /// RFC 6749 §6.
    RefreshToken {
        /// Who is asking.
        client: ClientAuth<'a>,
        /// The refresh token presented.
        refresh_token: Credential<'a>,
        /// A narrower scope, if requested.
        scope: Option<&'a str>,
        /// RFC 8707 resource indicators, in order.
        resources: Vec<&'a str>,
    },
    /// RFC 6749 §4.1.3.
    AuthorizationCode {
        /// Who is asking.
        client: ClientAuth<'a>,
        /// The authorization code.
        code: Credential<'a>,
        /// The redirect URI of the authorization request, if one was sent there.
        redirect_uri: Option<&'a str>,
        /// RFC 7636 PKCE verifier.
        code_verifier: Option<Credential<'a>>,
        /// RFC 8707 resource indicators.
        resources: Vec<&'a str>,
    },
    /// RFC 6749 §4.4.
    ClientCredentials {
        /// Who is asking (must be a confidential client).
        client: ClientAuth<'a>,
        /// The requested scope.
        scope: Option<&'a str>,
        /// RFC 8707 resource indicators.
        resources: Vec<&'a str>,
    },
    /// A well-formed request for a grant type backstop forwards but never serves itself
    /// (device code, token exchange, password, ...).
    Other {
        /// The `grant_type` value.
        grant_type: &'a str,
        /// Who is asking, when the request identified the client.
        client: Option<ClientAuth<'a>>,
    },
}

/// Why a token request was refused: the wire code and a description safe to send back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct RequestError {
    /// The standard code.
    pub code: OAuthError,
    /// A human-readable reason that names parameters, never their values.
    pub description: String,
}

impl RequestError {
    /// An error with this code and a description safe to send back.
    pub fn new(code: OAuthError, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }
}

impl From<FormError> for RequestError {
    fn from(e: FormError) -> Self {
        Self::new(OAuthError::InvalidRequest, e.to_string())
    }
}

/// Parameters that may repeat in a token request (RFC 8707 §2).
pub const REPEATABLE: &[&str] = &["resource"];

impl<'a> TokenRequest<'a> {
    /// Parses a token request from its form (parsed with `REPEATABLE`) and its
    /// `Authorization` header, if any.
    pub fn parse(
        form: &'a Form<'a>,
        authorization: Option<&'a [u8]>,
    ) -> Result<Self, RequestError> {
        let grant_type = form.get("grant_type").ok_or_else(|| {
            RequestError::new(OAuthError::InvalidRequest, "grant_type is required")
        })?;
        let resources = resources(form)?;
        let scope = form.get("scope").map(validate_scope).transpose()?;
        match grant_type {
            "refresh_token" => Ok(TokenRequest::RefreshToken {
                client: client_auth(form, authorization)?.ok_or_else(client_required)?,
                refresh_token: required_credential(form, "refresh_token")?,
                scope,
                resources,
            }),
            "authorization_code" => Ok(TokenRequest::AuthorizationCode {
                client: client_auth(form, authorization)?.ok_or_else(client_required)?,
                code: required_credential(form, "code")?,
                redirect_uri: form.get("redirect_uri"),
                code_verifier: form
                    .get("code_verifier")
                    .map(|v| Credential(Cow::Borrowed(v))),
                resources,
            }),
            "client_credentials" => {
                let client = client_auth(form, authorization)?.ok_or_else(client_required)?;
                if matches!(client, ClientAuth::None { .. }) {
                    // RFC 6749 §4.4: only confidential clients may use this grant.
                    return Err(RequestError::new(
                        OAuthError::InvalidClient,
                        "client_credentials requires client authentication",
                    ));
                }
                Ok(TokenRequest::ClientCredentials {
                    client,
                    scope,
                    resources,
                })
            }
            other if is_grant_type_syntax(other) => Ok(TokenRequest::Other {
                grant_type: other,
                client: client_auth(form, authorization)?,
            }),
            _ => Err(RequestError::new(
                OAuthError::UnsupportedGrantType,
                "grant_type is not recognized",
            )),
        }
    }

    /// The grant type as sent.
    pub fn grant_type(&self) -> &str {
        match self {
            TokenRequest::RefreshToken { .. } => "refresh_token",
            TokenRequest::AuthorizationCode { .. } => "authorization_code",
            TokenRequest::ClientCredentials { .. } => "client_credentials",
            TokenRequest::Other { grant_type, .. } => grant_type,
        }
    }
}

fn client_required() -> RequestError {
    RequestError::new(
        OAuthError::InvalidClient,
        "client authentication or client_id is required",
    )
}

fn required_credential<'a>(form: &'a Form<'a>, name: &str) -> Result<Credential<'a>, RequestError> {
    form.get(name)
        .map(|v| Credential(Cow::Borrowed(v)))
        .ok_or_else(|| RequestError::new(OAuthError::InvalidRequest, format!("{name} is required")))
}

/// RFC 6749 §2.3: exactly one authentication method; `Ok(None)` when the client did not
/// identify itself at all.
fn client_auth<'a>(
    form: &'a Form<'a>,
    authorization: Option<&'a [u8]>,
) -> Result<Option<ClientAuth<'a>>, RequestError> {
    let body_id = form
        .get("client_id")
        .map(|v| check_credential_len("client_id", v))
        .transpose()?;
    let body_secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let assertion_type = form.get("client_assertion_type");
    let basic = authorization.map(parse_basic_auth).transpose()?;

    let methods = usize::from(basic.is_some())
        + usize::from(body_secret.is_some())
        + usize::from(assertion.is_some() || assertion_type.is_some());
    if methods > 1 {
        return Err(RequestError::new(
            OAuthError::InvalidRequest,
            "more than one client authentication method was used",
        ));
    }

    if let Some(BasicCredentials { client_id, secret }) = basic {
        if body_id.is_some_and(|id| id != client_id) {
            return Err(RequestError::new(
                OAuthError::InvalidRequest,
                "client_id does not match the Authorization header",
            ));
        }
        return Ok(Some(ClientAuth::SecretBasic { client_id, secret }));
    }
    if let Some(secret) = body_secret {
        let client_id = body_id.ok_or_else(|| {
            RequestError::new(
                OAuthError::InvalidRequest,
                "client_secret requires client_id",
            )
        })?;
        check_credential_len("client_secret", secret)?;
        return Ok(Some(ClientAuth::SecretPost {
            client_id: Cow::Borrowed(client_id),
            secret: Credential(Cow::Borrowed(secret)),
        }));
    }
    if assertion.is_some() || assertion_type.is_some() {
        if assertion_type != Some(JWT_BEARER_ASSERTION) {
            return Err(RequestError::new(
                OAuthError::InvalidClient,
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        let assertion = assertion.ok_or_else(|| {
            RequestError::new(OAuthError::InvalidRequest, "client_assertion is required")
        })?;
        return Ok(Some(ClientAuth::JwtAssertion {
            client_id: body_id.map(Cow::Borrowed),
            assertion: Credential(Cow::Borrowed(assertion)),
        }));
    }
    Ok(body_id.map(|id| ClientAuth::None {
        client_id: Cow::Borrowed(id),
    }))
}

fn check_credential_len<'v>(name: &str, value: &'v str) -> Result<&'v str, RequestError> {
    if value.len() > limits::CLIENT_CREDENTIAL_BYTES_MAX {
        return Err(RequestError::new(
            OAuthError::InvalidRequest,
            format!(
                "{name} is longer than {} bytes",
                limits::CLIENT_CREDENTIAL_BYTES_MAX
            ),
        ));
    }
    Ok(value)
}

/// The client credentials of an HTTP Basic `Authorization` header, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    /// The client identifier: never empty, at most `limits::CLIENT_CREDENTIAL_BYTES_MAX` bytes.
    pub client_id: Cow<'static, str>,
    /// The client secret (may be empty), at most `limits::CLIENT_CREDENTIAL_BYTES_MAX` bytes.
    pub secret: Credential<'static>,
}

/// Parses an `Authorization` header value as client authentication (RFC 6749 §2.3.1, RFC
/// 7617): `Basic base64(urlencode(id) ":" urlencode(secret))`, the scheme case-insensitive.
/// The id and secret are each form-decoded (`%XX`, `+`) and must be UTF-8; the id stops at the
/// first `:`, so an id containing one must send it escaped. Every refusal is
/// `invalid_client`, naming what was wrong but never a value.
pub fn parse_basic_auth(header: &[u8]) -> Result<BasicCredentials, RequestError> {
    let bad = |why: &str| {
        RequestError::new(
            OAuthError::InvalidClient,
            format!("Authorization header: {why}"),
        )
    };
    let (scheme, rest) = header
        .split_at_checked(6)
        .ok_or_else(|| bad("unsupported scheme"))?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return Err(bad("unsupported scheme"));
    }
    let encoded = rest.trim_ascii();
    if encoded.len() > 4 * limits::CLIENT_CREDENTIAL_BYTES_MAX {
        return Err(bad("credentials too long"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad("not base64"))?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| bad("no ':' separator"))?;
    let (raw_id, raw_secret) = (
        decoded.get(..colon).unwrap_or_default(),
        decoded.get(colon + 1..).unwrap_or_default(),
    );
    let id = form::decode(raw_id).ok_or_else(|| bad("client_id is not form-encoded UTF-8"))?;
    let secret = form::decode(raw_secret).ok_or_else(|| bad("secret is not form-encoded UTF-8"))?;
    if id.is_empty() {
        return Err(bad("empty client_id"));
    }
    check_credential_len("client_id", &id)?;
    check_credential_len("client_secret", &secret)?;
    Ok(BasicCredentials {
        client_id: Cow::Owned(id.into_owned()),
        secret: Credential(Cow::Owned(secret.into_owned())),
    })
}

fn resources<'a>(form: &'a Form<'a>) -> Result<Vec<&'a str>, RequestError> {
    let mut out = Vec::new();
    for r in form.get_all("resource") {
        if out.len() >= limits::RESOURCES_PER_REQUEST_MAX {
            return Err(RequestError::new(
                OAuthError::InvalidTarget,
                format!(
                    "more than {} resource parameters",
                    limits::RESOURCES_PER_REQUEST_MAX
                ),
            ));
        }
        // RFC 8707 §2: an absolute URI without a fragment.
        let absolute = r.split_once(':').is_some_and(|(scheme, rest)| {
            !rest.is_empty()
                && scheme
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
        if !absolute || r.contains('#') {
            return Err(RequestError::new(
                OAuthError::InvalidTarget,
                "resource must be an absolute URI without a fragment",
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// RFC 6749 §3.3: space-separated scope tokens of NQCHAR.
fn validate_scope(scope: &str) -> Result<&str, RequestError> {
    let ok = scope.split(' ').all(|token| {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
    });
    if ok {
        Ok(scope)
    } else {
        Err(RequestError::new(
            OAuthError::InvalidScope,
            "scope is malformed",
        ))
    }
}

/// A grant type is a registered name or an absolute URI (RFC 6749 §4.5).
fn is_grant_type_syntax(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        body: &'static str,
        auth: Option<&'static str>,
    ) -> Result<TokenRequest<'static>, RequestError> {
        let form = Box::leak(Box::new(Form::parse(body.as_bytes(), REPEATABLE).unwrap()));
        TokenRequest::parse(form, auth.map(str::as_bytes))
    }

    fn code_of(body: &'static str, auth: Option<&'static str>) -> OAuthError {
        parse(body, auth).unwrap_err().code
    }

    fn basic(id: &str, secret: &str) -> &'static str {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        Box::leak(format!("Basic {enc}").into_boxed_str())
    }

    #[test]
    fn refresh_grant_for_a_public_client() {
        let req = parse(
            "grant_type=refresh_token&refresh_token=rt1&client_id=app&scope=openid+offline_access",
            None,
        )
        .unwrap();
        match req {
            TokenRequest::RefreshToken {
                client,
                refresh_token,
                scope,
                resources,
            } => {
                assert_eq!(
                    client,
                    ClientAuth::None {
                        client_id: "app".into()
                    }
                );
                assert_eq!(refresh_token.expose(), "rt1");
                assert_eq!(scope, Some("openid offline_access"));
                assert!(resources.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refresh_grant_with_basic_auth_decodes_form_encoded_credentials() {
        let req = parse(
            "grant_type=refresh_token&refresh_token=rt",
            Some(basic("my%3Aapp", "s%2Bcret")),
        )
        .unwrap();
        let TokenRequest::RefreshToken { client, .. } = req else {
            panic!()
        };
        match client {
            ClientAuth::SecretBasic { client_id, secret } => {
                assert_eq!(client_id, "my:app");
                assert_eq!(secret.expose(), "s+cret");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_carry_the_right_code() {
        let cases: &[(&'static str, Option<&'static str>, OAuthError)] = &[
            (
                "refresh_token=rt&client_id=a",
                None,
                OAuthError::InvalidRequest,
            ),
            (
                "grant_type=refresh_token&client_id=a",
                None,
                OAuthError::InvalidRequest,
            ),
            (
                "grant_type=refresh_token&refresh_token=rt",
                None,
                OAuthError::InvalidClient,
            ),
            (
                "grant_type=bad%20type&client_id=a",
                None,
                OAuthError::UnsupportedGrantType,
            ),
            (
                "grant_type=refresh_token&refresh_token=rt&client_id=a&scope=a%22b",
                None,
                OAuthError::InvalidScope,
            ),
            (
                "grant_type=refresh_token&refresh_token=rt&client_id=a&scope=a++b",
                None,
                OAuthError::InvalidScope,
            ),
            (
                "grant_type=refresh_token&refresh_token=rt&client_id=a&resource=not-absolute",
                None,
                OAuthError::InvalidTarget,
            ),
            (
                "grant_type=refresh_token&refresh_token=rt&client_id=a&resource=https://x/%23frag",
                None,
                OAuthError::InvalidTarget,
            ),
            (
                "grant_type=refresh_token&refresh_token=rt&client_id=a&client_secret=s",
                Some("Basic YTpi"),
                OAuthError::InvalidRequest,
            ),
            (
                "grant_type=refresh_token&refresh_token=rt&client_secret=s",
                None,
                OAuthError::InvalidRequest,
            ),
            (
                "grant_type=refresh_token&refresh_token=rt&client_id=b",
                Some("Basic YTpi"),
                OAuthError::InvalidRequest,
            ),
            (
                "grant_type=refresh_token&refresh_token=rt",
                Some("Bearer abc"),
                OAuthError::InvalidClient,
            ),
            (
                "grant_type=refresh_token&refresh_token=rt",
                Some("Basic !!!"),
                OAuthError::InvalidClient,
            ),
            (
                "grant_type=refresh_token&refresh_token=rt",
                Some("Basic bm9jb2xvbg=="),
                OAuthError::InvalidClient,
            ),
            (
                "grant_type=client_credentials&client_id=a",
                None,
                OAuthError::InvalidClient,
            ),
            (
                "grant_type=client_credentials&client_assertion_type=other&client_assertion=x",
                None,
                OAuthError::InvalidClient,
            ),
            (
                "grant_type=authorization_code&client_id=a",
                None,
                OAuthError::InvalidRequest,
            ),
        ];
        for (body, auth, code) in cases {
            assert_eq!(code_of(body, *auth), *code, "for {body:?} / {auth:?}");
        }
    }

    #[test]
    fn repeated_parameters_are_invalid_request_but_resource_may_repeat() {
        let form = Form::parse(
            b"grant_type=refresh_token&refresh_token=a&refresh_token=b",
            REPEATABLE,
        );
        let err: RequestError = form.unwrap_err().into();
        assert_eq!(err.code, OAuthError::InvalidRequest);
        let req = parse("grant_type=refresh_token&refresh_token=rt&client_id=a&resource=https://api.a&resource=urn:b", None)
            .unwrap();
        let TokenRequest::RefreshToken { resources, .. } = req else {
            panic!()
        };
        assert_eq!(resources, ["https://api.a", "urn:b"]);
    }

    #[test]
    fn client_credentials_with_assertion_and_post() {
        let req = parse(
            "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJ.x.y&scope=api",
            None,
        )
        .unwrap();
        let TokenRequest::ClientCredentials { client, scope, .. } = req else {
            panic!()
        };
        assert_eq!(client.method(), "private_key_jwt");
        assert_eq!(client.client_id(), None);
        assert_eq!(scope, Some("api"));
        let req = parse(
            "grant_type=client_credentials&client_id=svc&client_secret=pw",
            None,
        )
        .unwrap();
        let TokenRequest::ClientCredentials { client, .. } = req else {
            panic!()
        };
        assert_eq!(client.method(), "client_secret_post");
        assert_eq!(client.client_id(), Some("svc"));
    }

    #[test]
    fn other_grant_types_parse_for_forwarding() {
        let req = parse(
            "grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code=d&client_id=tv",
            None,
        )
        .unwrap();
        assert_eq!(
            req.grant_type(),
            "urn:ietf:params:oauth:grant-type:device_code"
        );
        assert!(matches!(
            req,
            TokenRequest::Other {
                client: Some(ClientAuth::None { .. }),
                ..
            }
        ));
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let req = parse(
            "grant_type=refresh_token&refresh_token=SECRET-RT&client_id=a&client_secret=SECRET-CS",
            None,
        )
        .unwrap();
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
    }
}
