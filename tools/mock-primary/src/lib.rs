//! A small, honest, in-memory OpenID provider with fault injection: the primary that backstop's
//! tests and `backstop demo` put backstop in front of. A library so the demo can start it
//! in-process; never on backstop's serving path.
//!
//! It serves discovery, an RS256 JWKS and a token endpoint (`authorization_code` with codes
//! created through a test-only admin API, `refresh_token` with strict rotation and reuse
//! detection, `client_credentials`), binds grants to DPoP keys, and can be told to go down,
//! answer 500, answer slowly or hang. See [`MockPrimary::start`] and [`MockHandle`]; the
//! exact behaviour (claims, rotation, DPoP checks and what is not checked, fault semantics)
//! is written down in this crate's `README.md`.
//!
//! Admin endpoints (JSON), served on the admin listener always and on the main listener
//! whatever the fault except `down` (when the main listener is closed):
//! - `POST /mock/grants` with a [`GrantRequest`] → `201 {"code": "..."}`
//! - `POST /mock/clients` with a [`ClientConfig`] → `201 {}`
//! - `POST /mock/fault` with `{"mode": "healthy"|"down"|"error500"|"slow"|"hang", "delay_ms": n}`
//!   → `200 {"mode": ..}` once the fault is in effect; `GET /mock/fault` → the current one
//! - `GET /mock/counters` → `{"counts": {"token ok": 3, ...}, "total": n}`;
//!   `POST /mock/counters/reset`
//! - `POST /mock/revoke` with `{"user": "sub"}` → `{"revoked": n}` (grants of that user)

mod jose;
mod oauth;
mod provider;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use jose::DpopError;
pub use oauth::{ErrorCode, OAuthError};
pub use server::{MockHandle, MockPrimary};

/// Errors of the mock's own API (start, admin calls); token-endpoint refusals are
/// [`OAuthError`]s on the wire.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// A listener could not be bound (or re-bound after `down`).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The runtime or its thread could not be started.
    #[error("cannot start the mock primary: {0}")]
    Start(std::io::Error),
    /// The signing key could not be read or used.
    #[error("signing key: {0}")]
    Key(&'static str),
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A cryptographic primitive failed.
    #[error("crypto: {0}")]
    Crypto(&'static str),
    /// An option or an admin request is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A capacity (grants, codes) is exhausted.
    #[error("capacity of {0} exhausted")]
    Capacity(&'static str),
    /// The server thread is gone or did not apply a change in time.
    #[error("mock primary is not running: {0}")]
    Stopped(&'static str),
}

/// Where the RS256 signing key comes from.
#[derive(Debug, Clone, Default)]
pub enum KeySource {
    /// Generate an RSA 2048 key at start (can take seconds in debug builds).
    #[default]
    Generate,
    /// PEM text: PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`.
    Pem(String),
    /// A PEM file.
    PemFile(PathBuf),
    /// PKCS#8 DER bytes.
    Pkcs8Der(Vec<u8>),
}

impl KeySource {
    /// The 2048-bit test key checked in under `fixtures/` (never use it for anything real).
    pub fn test_fixture() -> Self {
        Self::Pem(include_str!("../fixtures/test-rsa-2048.pem").to_string())
    }
}

/// Where `iss` and the discovery document's URLs come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IssuerSource {
    /// From the request: `X-Forwarded-Proto` + `X-Forwarded-Host`, else `Host` (scheme
    /// `http`, the mock's own), else the configured issuer. This is what real providers behind
    /// a proxy do, and what backstop's forwarding relies on (FIELD-NOTES).
    #[default]
    Request,
    /// Always the configured issuer.
    Configured,
}

/// Options of [`MockPrimary::start`].
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Main listener (discovery, JWKS, token). Port 0 picks a free one.
    pub listen: SocketAddr,
    /// Admin listener (`/mock/*` only), reachable even while the main one is `down`.
    pub admin_listen: SocketAddr,
    /// The issuer URL (`http(s)://host[:port][/path]`); default `http://{bound main address}`.
    /// A path is a prefix of every endpoint (`{issuer}/token`).
    pub issuer: Option<String>,
    /// See [`IssuerSource`].
    pub issuer_source: IssuerSource,
    /// The RS256 signing key.
    pub key: KeySource,
    /// Clients registered at start (more through `POST /mock/clients`).
    pub clients: Vec<ClientConfig>,
    /// Access-token lifetime (`expires_in`).
    pub access_token_ttl_secs: u64,
    /// ID-token lifetime.
    pub id_token_ttl_secs: u64,
    /// How long an authorization code stays redeemable.
    pub code_ttl_secs: u64,
    /// How old a DPoP proof's `iat` may be (and how long its `jti` is remembered).
    pub dpop_iat_window_secs: u64,
    /// Live grants at most.
    pub grants_max: usize,
    /// Outstanding codes at most.
    pub codes_max: usize,
    /// DPoP `jti`s remembered at most.
    pub dpop_jtis_max: usize,
    /// Tokio worker threads.
    pub worker_threads: usize,
}

impl Default for MockOptions {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            listen: loopback,
            admin_listen: loopback,
            issuer: None,
            issuer_source: IssuerSource::Request,
            key: KeySource::Generate,
            clients: Vec::new(),
            access_token_ttl_secs: 3600,
            id_token_ttl_secs: 3600,
            code_ttl_secs: 600,
            dpop_iat_window_secs: 300,
            grants_max: 1_000_000,
            codes_max: 1_000_000,
            dpop_jtis_max: 1_000_000,
            worker_threads: 1,
        }
    }
}

/// A client. With a secret it is confidential (`client_secret_basic` or `client_secret_post`,
/// either accepted); without one it is public (`none`: `client_id` only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client id.
    pub client_id: String,
    /// The secret of a confidential client.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// `tid` of its `client_credentials` tokens.
    #[serde(default)]
    pub tenant: Option<String>,
    /// `roles` of its `client_credentials` tokens.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes it may ask for with `client_credentials` (space-separated); any when absent.
    #[serde(default)]
    pub scope: Option<String>,
}

impl ClientConfig {
    /// A public client.
    pub fn public(client_id: &str) -> Self {
        Self {
            client_id: client_id.to_string(),
            ..Self::default()
        }
    }

    /// A confidential client with a secret.
    pub fn confidential(client_id: &str, secret: &str) -> Self {
        Self {
            client_id: client_id.to_string(),
            client_secret: Some(secret.to_string()),
            ..Self::default()
        }
    }
}

/// A signed-in grant, as if the user had just completed the authorize step: what
/// `POST /mock/grants` takes and [`MockHandle::create_grant`] turns into a one-time code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// `sub`.
    pub user: String,
    /// `tid`.
    pub tenant: String,
    /// The client the code is issued to (registered as public if unknown).
    pub client_id: String,
    /// Granted scopes, space-separated; an ID token is issued only when it contains `openid`.
    pub scope: String,
    /// RFC 8707 resource: the access token's `aud` (else the client id).
    #[serde(default)]
    pub resource: Option<String>,
    /// `amr` (access and ID token).
    #[serde(default)]
    pub amr: Vec<String>,
    /// `acr` (ID token only).
    #[serde(default)]
    pub acr: Option<String>,
    /// `groups` (access token).
    #[serde(default)]
    pub groups: Vec<String>,
    /// `roles` (access token).
    #[serde(default)]
    pub roles: Vec<String>,
    /// `device_id` (both tokens) when given.
    #[serde(default)]
    pub device: Option<String>,
    /// `nonce` of the ID token (kept on refresh).
    #[serde(default)]
    pub nonce: Option<String>,
    /// `auth_time` (seconds since the epoch); default the time the grant is created.
    #[serde(default)]
    pub auth_time: Option<u64>,
    /// When set, the code redemption must send the same `redirect_uri`.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// PKCE S256 challenge; when set, the redemption must send the `code_verifier`.
    #[serde(default)]
    pub code_challenge: Option<String>,
    /// Further claims for both tokens (e.g. Entra's `acct` guest marker), written after the
    /// standard ones: a name used by both replaces the standard claim.
    #[serde(default)]
    pub extra_claims: serde_json::Map<String, serde_json::Value>,
}

impl GrantRequest {
    /// A grant with the required fields and nothing else.
    pub fn new(user: &str, tenant: &str, client_id: &str, scope: &str) -> Self {
        Self {
            user: user.to_string(),
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            ..Self::default()
        }
    }
}

/// Longest delay `slow` accepts.
pub const SLOW_DELAY_MS_MAX: u64 = 600_000;

/// What the main listener does. `/mock/*` is never affected (and the admin listener never is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Serve normally.
    #[default]
    Healthy,
    /// The main listener is closed (connect refused) and open connections are dropped.
    /// Back to any other mode re-binds the same address.
    Down,
    /// Every endpoint answers 500 `{"error":"server_error"}` without doing anything.
    Error500,
    /// Every request is processed, then answered after the delay: a client that times out
    /// sees an ambiguous failure (a refresh was already rotated).
    Slow {
        /// The delay.
        delay_ms: u64,
    },
    /// Requests are accepted and never answered nor processed; the connection is closed
    /// when the mode changes.
    Hang,
}

impl Fault {
    /// The mode's name on the admin API.
    pub fn mode(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Down => "down",
            Self::Error500 => "error500",
            Self::Slow { .. } => "slow",
            Self::Hang => "hang",
        }
    }

    /// Parses the admin API's `{"mode":..,"delay_ms":..}`.
    pub fn from_mode(mode: &str, delay_ms: Option<u64>) -> Result<Self, MockError> {
        let fault = match (mode, delay_ms) {
            ("healthy", None) => Self::Healthy,
            ("down", None) => Self::Down,
            ("error500", None) => Self::Error500,
            ("hang", None) => Self::Hang,
            ("slow", Some(delay_ms)) if delay_ms <= SLOW_DELAY_MS_MAX => Self::Slow { delay_ms },
            ("slow", _) => {
                return Err(MockError::Invalid(format!(
                    "slow needs delay_ms in 0..={SLOW_DELAY_MS_MAX}"
                )));
            }
            (_, Some(_)) => return Err(MockError::Invalid("delay_ms is only for slow".into())),
            (other, None) => return Err(MockError::Invalid(format!("unknown mode `{other}`"))),
        };
        Ok(fault)
    }
}

/// The endpoints counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// `/.well-known/openid-configuration`
    Discovery,
    /// `/jwks`
    Jwks,
    /// `/token`
    Token,
    /// `/authorize` (always refused: sign-in goes through `/mock/grants`)
    Authorize,
    /// Anything else on the main listener.
    Other,
}

impl Endpoint {
    /// The endpoint's name in counter keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Discovery => "discovery",
            Self::Jwks => "jwks",
            Self::Token => "token",
            Self::Authorize => "authorize",
            Self::Other => "other",
        }
    }
}

/// Requests the main listener saw (never `/mock/*`), by endpoint and outcome. Outcomes:
/// `ok`, an RFC error code (`invalid_grant`, ...), `not_found`, `fault_error500`,
/// `fault_hang`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    counts: BTreeMap<(Endpoint, String), u64>,
}

impl Counters {
    pub(crate) fn add(&mut self, endpoint: Endpoint, outcome: &str) {
        *self
            .counts
            .entry((endpoint, outcome.to_string()))
            .or_default() += 1;
    }

    /// Requests to `endpoint` with `outcome`.
    pub fn get(&self, endpoint: Endpoint, outcome: &str) -> u64 {
        self.counts
            .get(&(endpoint, outcome.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests to `endpoint`, any outcome.
    pub fn endpoint_total(&self, endpoint: Endpoint) -> u64 {
        self.counts
            .iter()
            .filter(|((e, _), _)| *e == endpoint)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests to the main listener, any endpoint and outcome.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// `"endpoint outcome" → count`, as `GET /mock/counters` shows it.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        self.counts
            .iter()
            .map(|((e, o), n)| (format!("{} {o}", e.name()), *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_modes_parse_and_bad_ones_are_errors() {
        assert_eq!(Fault::from_mode("down", None).unwrap(), Fault::Down);
        assert_eq!(
            Fault::from_mode("slow", Some(5)).unwrap(),
            Fault::Slow { delay_ms: 5 }
        );
        assert!(Fault::from_mode("slow", None).is_err());
        assert!(Fault::from_mode("slow", Some(SLOW_DELAY_MS_MAX + 1)).is_err());
        assert!(Fault::from_mode("hang", Some(1)).is_err());
        assert!(Fault::from_mode("sideways", None).is_err());
    }

    #[test]
    fn counters_sum_by_endpoint() {
        let mut c = Counters::default();
        c.add(Endpoint::Token, "ok");
        c.add(Endpoint::Token, "invalid_grant");
        c.add(Endpoint::Jwks, "ok");
        assert_eq!(c.get(Endpoint::Token, "ok"), 1);
        assert_eq!(c.endpoint_total(Endpoint::Token), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(c.to_map().get("token invalid_grant"), Some(&1));
    }
}
