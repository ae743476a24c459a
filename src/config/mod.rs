//! Configuration: the TOML file format, its embedded defaults, and validation that names the
//! field, the bad value and what is allowed.
//!
//! Parsing happens in two steps. `RawConfig` mirrors the file (serde, unknown fields refused);
//! `Config::from_raw` checks every value and produces the validated `Config` the rest of the
//! program uses, so nothing downstream re-checks a setting. Secrets are read here (from the
//! environment or a file) and kept in `Secret`, which never prints its value.

mod capture;
mod secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::failover::{BreakerConfig, BreakerConfigError};
use crate::limits::{self, Bound};

pub use capture::CaptureConfig;
pub use secret::Secret;

/// Environment variable holding the admin API bearer token.
pub const ADMIN_TOKEN_ENV: &str = "BACKSTOP_ADMIN_TOKEN";

/// A configuration error. Every variant names the field it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than we are willing to read.
    #[error("config file {path} is {size_bytes} bytes; at most {max_bytes} bytes are allowed")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// The file is not valid TOML, has an unknown field, or a value of the wrong type.
    #[error("{path}: {message}")]
    Syntax {
        /// The file (or `<embedded defaults>`).
        path: String,
        /// The TOML parser's message, which names the field and points at the line.
        message: String,
    },
    /// A field has a value outside what is allowed.
    #[error("config field `{field}` = {value}: {allowed}")]
    Invalid {
        /// Dotted path of the field, e.g. `limits.body_bytes_max`.
        field: &'static str,
        /// The offending value, as written.
        value: String,
        /// What is allowed instead.
        allowed: String,
    },
}

impl ConfigError {
    fn invalid(
        field: &'static str,
        value: impl std::fmt::Display,
        allowed: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field,
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
}

/// The file as written. Every field is optional; defaults fill the gaps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    admin_listen: Option<String>,
    data_dir: Option<PathBuf>,
    workers: Option<u64>,
    issuer: Option<String>,
    admin_token_file: Option<PathBuf>,
    #[serde(default)]
    primary: RawPrimary,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    failover: RawFailover,
    #[serde(default)]
    capture: capture::RawCapture,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    ssf: RawSsf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    file: Option<PathBuf>,
    reload_poll_ms: Option<u64>,
    trusted_proxies: Option<Vec<String>>,
    client_ip_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsf {
    issuer: Option<String>,
    jwks_uri: Option<String>,
    audience: Option<String>,
    iat_window_secs: Option<u64>,
    replay_cache_entries: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrimary {
    origin: Option<String>,
    connect_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    ca_file: Option<PathBuf>,
    probe_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailover {
    consecutive_failures_max: Option<u64>,
    window_len: Option<u64>,
    window_failures_max: Option<u64>,
    open_initial_ms: Option<u64>,
    open_max_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    header_bytes_max: Option<u64>,
    header_count_max: Option<u64>,
    body_bytes_max: Option<u64>,
    request_line_bytes_max: Option<u64>,
    keep_alive_idle_ms: Option<u64>,
    header_read_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    connections_per_worker_max: Option<u64>,
    shutdown_grace_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the public listener binds (every worker binds it with `SO_REUSEPORT`).
    pub listen: SocketAddr,
    /// Address the admin API binds.
    pub admin_listen: SocketAddr,
    /// Directory holding the store, keys and deployment secrets.
    pub data_dir: PathBuf,
    /// Worker threads, resolved: never 0.
    pub workers: usize,
    /// Public URL of the issuer: the `iss` of every token backstop mints. `None` means the
    /// default, `http://` followed by the bound public address (known only after binding).
    pub issuer: Option<String>,
    /// The primary identity provider.
    pub primary: PrimaryConfig,
    /// Bounds on outside input.
    pub limits: HttpLimits,
    /// Logging.
    pub log: LogConfig,
    /// Circuit-breaker thresholds (each worker runs its own breaker with these).
    pub failover: BreakerConfig,
    /// Bearer token for the admin API; `None` disables the admin API.
    pub admin_token: Option<Secret>,
    /// Normal-mode capture: claim names, snapshot window, queue length.
    pub capture: CaptureConfig,
    /// Conditional Access: the policy file and the request facts it needs.
    pub policy: PolicyConfig,
    /// The Shared Signals receiver; `None` (the default) disables it.
    pub ssf: Option<SsfConfig>,
}

/// `[policy]`: where Conditional Access policies come from, how the client IP is found, and
/// the session window of the eligibility rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// The policy document (`{"conditionalAccessPolicies": [...], "namedLocations": [...]}`);
    /// `None`: no policies until the admin API puts some.
    pub file: Option<PathBuf>,
    /// How often the file is looked at for changes; zero disables the watcher (SIGHUP and
    /// `PUT /admin/policies` still reload).
    pub reload_poll: Duration,
    /// Trusted proxies and the header they put the client's address in.
    pub client_ip: crate::policy::ClientIpConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            file: None,
            reload_poll: Duration::from_millis(limits::POLICY_RELOAD_POLL_MS.default),
            client_ip: crate::policy::ClientIpConfig::default(),
        }
    }
}

/// `[ssf]`: the OpenID Shared Signals receiver (RFC 8935 push of RFC 8417 Security Event
/// Tokens). Present only when `issuer`, `jwks_uri` and `audience` are all configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsfConfig {
    /// The transmitter's issuer: every SET's `iss` must equal it exactly.
    pub issuer: String,
    /// Where the transmitter publishes its signing keys (JWKS).
    pub jwks_uri: String,
    /// Our audience: every SET's `aud` (a string or an array) must contain it.
    pub audience: String,
    /// Seconds a SET's `iat` may lie from now, either way.
    pub iat_window_secs: u64,
    /// `jti`s remembered for replay detection.
    pub replay_cache_entries: usize,
}

/// Where backstop reaches the primary identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryConfig {
    /// Origin URL (scheme, host, port), e.g. `https://idp.internal:8443`.
    pub origin: String,
    /// Time allowed to connect (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time allowed from sending a request to receiving the response head.
    pub request_timeout: Duration,
    /// Extra PEM CA certificates trusted for an https origin, besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Path the half-open breaker probes with a GET (the discovery document by default).
    pub probe_path: String,
}

/// Limits on what clients may send, resolved from `[limits]` and `limits.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Bytes of a request head. Over it: 431.
    pub header_bytes_max: usize,
    /// Header lines in a request. Over it: 431.
    pub header_count_max: usize,
    /// Bytes of a request body. Over it: 413.
    pub body_bytes_max: u64,
    /// Bytes of the request target. Over it: 414.
    pub request_line_bytes_max: usize,
    /// Idle time allowed between requests on a keep-alive connection.
    pub keep_alive_idle: Duration,
    /// Time allowed from the first byte of a request head to its end.
    pub header_read_timeout: Duration,
    /// Time allowed to receive a request body. Over it: 408.
    pub body_read_timeout: Duration,
    /// Open connections per worker. Over it: 503.
    pub connections_per_worker_max: usize,
    /// Time a graceful shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        // Built straight from the constants; `default_limits_equal_resolved_empty_table` checks
        // this stays equal to what the resolver produces for an empty `[limits]` table.
        let ms = |bound: Bound| Duration::from_millis(bound.default);
        let size = |bound: Bound| usize::try_from(bound.default).unwrap_or(usize::MAX);
        Self {
            header_bytes_max: size(limits::HEADER_BYTES),
            header_count_max: size(limits::HEADER_COUNT),
            body_bytes_max: limits::BODY_BYTES.default,
            request_line_bytes_max: size(limits::REQUEST_LINE_BYTES),
            keep_alive_idle: ms(limits::KEEP_ALIVE_IDLE_MS),
            header_read_timeout: ms(limits::HEADER_READ_TIMEOUT_MS),
            body_read_timeout: ms(limits::BODY_READ_TIMEOUT_MS),
            connections_per_worker_max: size(limits::CONNECTIONS_PER_WORKER),
            shutdown_grace: ms(limits::SHUTDOWN_GRACE_MS),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `backstop=debug,hyper=warn`.
    pub level: String,
}

/// Where secrets come from, so tests can supply them without touching the process environment.
pub trait SecretSource {
    /// The value of environment variable `name`, if set.
    fn env(&self, name: &str) -> Option<String>;
}

/// Secrets from the real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl SecretSource for ProcessEnv {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Config {
    /// Loads and validates a config file; `None` means embedded defaults only.
    pub fn load(path: Option<&Path>, secrets: &dyn SecretSource) -> Result<Self, ConfigError> {
        match path {
            None => Self::parse("", "<embedded defaults>", secrets),
            Some(path) => {
                let text = read_bounded(path, limits::CONFIG_FILE_BYTES_MAX)?;
                Self::parse(&text, &path.display().to_string(), secrets)
            }
        }
    }

    /// Parses and validates config text. `origin` names it in error messages.
    pub fn parse(
        text: &str,
        origin: &str,
        secrets: &dyn SecretSource,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        Self::from_raw(raw, secrets)
    }

    fn from_raw(raw: RawConfig, secrets: &dyn SecretSource) -> Result<Self, ConfigError> {
        let listen = parse_addr("listen", raw.listen.as_deref().unwrap_or("127.0.0.1:8080"))?;
        let admin_listen = parse_addr(
            "admin_listen",
            raw.admin_listen.as_deref().unwrap_or("127.0.0.1:8081"),
        )?;
        if listen.port() != 0 && listen == admin_listen {
            return Err(ConfigError::invalid(
                "admin_listen",
                admin_listen,
                "must differ from `listen`: the admin API has its own listener",
            ));
        }

        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./backstop-data"));
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("data_dir", "\"\"", "a directory path"));
        }

        let workers_configured = bounded("workers", raw.workers, limits::WORKERS)?;
        let workers = match workers_configured {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => usize::try_from(n).unwrap_or(1),
        };

        let issuer = raw.issuer.as_deref().map(validate_issuer).transpose()?;

        let origin = match raw.primary.origin {
            Some(ref origin) => validate_origin(origin)?,
            None => "http://127.0.0.1:9000".to_string(),
        };
        let primary = resolve_primary(origin, &raw.primary)?;
        let failover = resolve_failover(&raw.failover)?;

        let limits = resolve_limits(&raw.limits)?;
        let log = resolve_log(&raw.log)?;
        let admin_token = resolve_admin_token(raw.admin_token_file.as_deref(), secrets)?;
        let capture = capture::resolve_capture(&raw.capture)?;
        let policy = resolve_policy(&raw.policy)?;
        let ssf = resolve_ssf(&raw.ssf)?;

        Ok(Self {
            listen,
            admin_listen,
            data_dir,
            workers,
            issuer,
            primary,
            limits,
            log,
            failover,
            admin_token,
            capture,
            policy,
            ssf,
        })
    }
}

fn resolve_policy(raw: &RawPolicy) -> Result<PolicyConfig, ConfigError> {
    if let Some(file) = &raw.file
        && file.as_os_str().is_empty()
    {
        return Err(ConfigError::invalid(
            "policy.file",
            "\"\"",
            "a path to a policy JSON document",
        ));
    }
    let reload_poll = Duration::from_millis(bounded(
        "policy.reload_poll_ms",
        raw.reload_poll_ms,
        limits::POLICY_RELOAD_POLL_MS,
    )?);
    let proxies = raw.trusted_proxies.as_deref().unwrap_or_default();
    if proxies.len() > limits::TRUSTED_PROXIES_MAX {
        return Err(ConfigError::invalid(
            "policy.trusted_proxies",
            format!("{} entries", proxies.len()),
            format!("at most {} CIDRs", limits::TRUSTED_PROXIES_MAX),
        ));
    }
    let trusted_proxies = proxies
        .iter()
        .map(|text| {
            crate::policy::Cidr::parse(text).ok_or_else(|| {
                ConfigError::invalid(
                    "policy.trusted_proxies",
                    format!("{text:?}"),
                    "CIDRs such as \"10.0.0.0/8\" or \"2001:db8::/32\"",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let header = match raw.client_ip_header.as_deref() {
        None => None,
        Some(name) => {
            if name.parse::<hyper::header::HeaderName>().is_err() {
                return Err(ConfigError::invalid(
                    "policy.client_ip_header",
                    format!("{name:?}"),
                    "an HTTP header name such as \"X-Forwarded-For\"",
                ));
            }
            Some(name.to_ascii_lowercase())
        }
    };
    if header.is_some() && trusted_proxies.is_empty() {
        return Err(ConfigError::invalid(
            "policy.client_ip_header",
            format!("{:?}", raw.client_ip_header.as_deref().unwrap_or_default()),
            "needs policy.trusted_proxies: the header is believed only from those peers",
        ));
    }
    Ok(PolicyConfig {
        file: raw.file.clone(),
        reload_poll,
        client_ip: crate::policy::ClientIpConfig {
            trusted_proxies,
            header,
        },
    })
}

fn resolve_ssf(raw: &RawSsf) -> Result<Option<SsfConfig>, ConfigError> {
    let iat_window_secs = bounded(
        "ssf.iat_window_secs",
        raw.iat_window_secs,
        limits::SSF_IAT_WINDOW_SECS,
    )?;
    let replay_cache_entries = bounded_usize(
        "ssf.replay_cache_entries",
        raw.replay_cache_entries,
        limits::SSF_REPLAY_ENTRIES,
    )?;
    let (issuer, jwks_uri, audience) = match (&raw.issuer, &raw.jwks_uri, &raw.audience) {
        (None, None, None) => return Ok(None),
        (Some(issuer), Some(jwks_uri), Some(audience)) => (issuer, jwks_uri, audience),
        (issuer, jwks_uri, _) => {
            let missing = if issuer.is_none() {
                "ssf.issuer"
            } else if jwks_uri.is_none() {
                "ssf.jwks_uri"
            } else {
                "ssf.audience"
            };
            return Err(ConfigError::invalid(
                missing,
                "(unset)",
                "the receiver needs ssf.issuer, ssf.jwks_uri and ssf.audience together",
            ));
        }
    };
    if issuer.is_empty() || issuer.len() > limits::SSF_STRING_BYTES_MAX {
        return Err(ConfigError::invalid(
            "ssf.issuer",
            format!("{issuer:?}"),
            format!(
                "the transmitter's issuer, 1 to {} bytes",
                limits::SSF_STRING_BYTES_MAX
            ),
        ));
    }
    let uri = validate_url("ssf.jwks_uri", jwks_uri)?;
    if uri.scheme_str() == Some("http") && !is_loopback_host(uri.host().unwrap_or_default()) {
        return Err(ConfigError::invalid(
            "ssf.jwks_uri",
            format!("{jwks_uri:?}"),
            "an https:// URL (http:// is allowed only for localhost / loopback addresses)",
        ));
    }
    if audience.is_empty() || audience.len() > limits::SSF_STRING_BYTES_MAX {
        return Err(ConfigError::invalid(
            "ssf.audience",
            format!("{audience:?}"),
            format!(
                "our audience as the transmitter writes it, 1 to {} bytes",
                limits::SSF_STRING_BYTES_MAX
            ),
        ));
    }
    Ok(Some(SsfConfig {
        issuer: issuer.clone(),
        jwks_uri: jwks_uri.clone(),
        audience: audience.clone(),
        iat_window_secs,
        replay_cache_entries,
    }))
}

fn read_bounded(path: &Path, max_bytes: u64) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > max_bytes {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            size_bytes: meta.len(),
            max_bytes,
        });
    }
    std::fs::read_to_string(path).map_err(read_err)
}

fn parse_addr(field: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::invalid(
            field,
            format!("{value:?}"),
            "an IP socket address such as \"127.0.0.1:8080\" or \"[::1]:8080\" (port 0 picks a free port)",
        )
    })
}

fn bounded(field: &'static str, value: Option<u64>, bound: Bound) -> Result<u64, ConfigError> {
    let value = value.unwrap_or(bound.default);
    if bound.allows(value) {
        Ok(value)
    } else {
        Err(ConfigError::invalid(
            field,
            value,
            format!(
                "must be between {} and {} (default {})",
                bound.min, bound.max, bound.default
            ),
        ))
    }
}

fn bounded_usize(
    field: &'static str,
    value: Option<u64>,
    bound: Bound,
) -> Result<usize, ConfigError> {
    let v = bounded(field, value, bound)?;
    usize::try_from(v).map_err(|_| ConfigError::invalid(field, v, "must fit this platform's usize"))
}

fn resolve_limits(raw: &RawLimits) -> Result<HttpLimits, ConfigError> {
    let ms = |field, value, bound| bounded(field, value, bound).map(Duration::from_millis);
    let limits = HttpLimits {
        header_bytes_max: bounded_usize(
            "limits.header_bytes_max",
            raw.header_bytes_max,
            limits::HEADER_BYTES,
        )?,
        header_count_max: bounded_usize(
            "limits.header_count_max",
            raw.header_count_max,
            limits::HEADER_COUNT,
        )?,
        body_bytes_max: bounded(
            "limits.body_bytes_max",
            raw.body_bytes_max,
            limits::BODY_BYTES,
        )?,
        request_line_bytes_max: bounded_usize(
            "limits.request_line_bytes_max",
            raw.request_line_bytes_max,
            limits::REQUEST_LINE_BYTES,
        )?,
        keep_alive_idle: ms(
            "limits.keep_alive_idle_ms",
            raw.keep_alive_idle_ms,
            limits::KEEP_ALIVE_IDLE_MS,
        )?,
        header_read_timeout: ms(
            "limits.header_read_timeout_ms",
            raw.header_read_timeout_ms,
            limits::HEADER_READ_TIMEOUT_MS,
        )?,
        body_read_timeout: ms(
            "limits.body_read_timeout_ms",
            raw.body_read_timeout_ms,
            limits::BODY_READ_TIMEOUT_MS,
        )?,
        connections_per_worker_max: bounded_usize(
            "limits.connections_per_worker_max",
            raw.connections_per_worker_max,
            limits::CONNECTIONS_PER_WORKER,
        )?,
        shutdown_grace: ms(
            "limits.shutdown_grace_ms",
            raw.shutdown_grace_ms,
            limits::SHUTDOWN_GRACE_MS,
        )?,
    };
    if limits.request_line_bytes_max >= limits.header_bytes_max {
        return Err(ConfigError::invalid(
            "limits.request_line_bytes_max",
            limits.request_line_bytes_max,
            format!(
                "must be smaller than limits.header_bytes_max ({}): the request line is part of the head",
                limits.header_bytes_max
            ),
        ));
    }
    Ok(limits)
}

fn resolve_primary(origin: String, raw: &RawPrimary) -> Result<PrimaryConfig, ConfigError> {
    let connect_timeout = Duration::from_millis(bounded(
        "primary.connect_timeout_ms",
        raw.connect_timeout_ms,
        limits::UPSTREAM_CONNECT_TIMEOUT_MS,
    )?);
    let request_timeout = Duration::from_millis(bounded(
        "primary.request_timeout_ms",
        raw.request_timeout_ms,
        limits::UPSTREAM_REQUEST_TIMEOUT_MS,
    )?);
    if connect_timeout >= request_timeout {
        return Err(ConfigError::invalid(
            "primary.connect_timeout_ms",
            connect_timeout.as_millis(),
            format!(
                "must be smaller than primary.request_timeout_ms ({}), so that an unreachable \
                 primary counts as a clean connect failure rather than an ambiguous timeout",
                request_timeout.as_millis()
            ),
        ));
    }
    if let Some(path) = &raw.ca_file
        && !path.is_file()
    {
        return Err(ConfigError::invalid(
            "primary.ca_file",
            path.display(),
            "a readable PEM file of CA certificates",
        ));
    }
    let probe_path = raw
        .probe_path
        .clone()
        .unwrap_or_else(|| "/.well-known/openid-configuration".into());
    if !probe_path.starts_with('/')
        || probe_path
            .parse::<hyper::http::uri::PathAndQuery>()
            .is_err()
    {
        return Err(ConfigError::invalid(
            "primary.probe_path",
            format!("{probe_path:?}"),
            "an absolute path such as \"/.well-known/openid-configuration\"",
        ));
    }
    Ok(PrimaryConfig {
        origin,
        connect_timeout,
        request_timeout,
        ca_file: raw.ca_file.clone(),
        probe_path,
    })
}

fn resolve_failover(raw: &RawFailover) -> Result<BreakerConfig, ConfigError> {
    let u32_of = |field, value, bound| {
        bounded(field, value, bound).map(|v| u32::try_from(v).unwrap_or(u32::MAX))
    };
    let config = BreakerConfig {
        consecutive_failures_max: u32_of(
            "failover.consecutive_failures_max",
            raw.consecutive_failures_max,
            limits::BREAKER_CONSECUTIVE_FAILURES,
        )?,
        window_len: u32_of(
            "failover.window_len",
            raw.window_len,
            limits::BREAKER_WINDOW_LEN,
        )?,
        window_failures_max: u32_of(
            "failover.window_failures_max",
            raw.window_failures_max,
            limits::BREAKER_WINDOW_FAILURES,
        )?,
        open_initial: Duration::from_millis(bounded(
            "failover.open_initial_ms",
            raw.open_initial_ms,
            limits::BREAKER_OPEN_INITIAL_MS,
        )?),
        open_max: Duration::from_millis(bounded(
            "failover.open_max_ms",
            raw.open_max_ms,
            limits::BREAKER_OPEN_MAX_MS,
        )?),
    };
    config.validate().map_err(|e| {
        let (field, value) = match e {
            BreakerConfigError::WindowFailures { max, .. } => {
                ("failover.window_failures_max", max.to_string())
            }
            BreakerConfigError::OpenMax => (
                "failover.open_max_ms",
                config.open_max.as_millis().to_string(),
            ),
            BreakerConfigError::WindowLen(len) => ("failover.window_len", len.to_string()),
            BreakerConfigError::ZeroThreshold("window_failures_max") => {
                ("failover.window_failures_max", "0".to_string())
            }
            BreakerConfigError::ZeroThreshold(_) => {
                ("failover.consecutive_failures_max", "0".to_string())
            }
        };
        ConfigError::invalid(field, value, e.to_string())
    })?;
    Ok(config)
}

fn resolve_log(raw: &RawLog) -> Result<LogConfig, ConfigError> {
    let format = match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::invalid(
                "log.format",
                format!("{other:?}"),
                "\"text\" or \"json\"",
            ));
        }
    };
    let level = raw.level.clone().unwrap_or_else(|| "info".to_string());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        return Err(ConfigError::invalid(
            "log.level",
            format!("{level:?}"),
            format!("a tracing filter such as \"info\" or \"backstop=debug,warn\" ({e})"),
        ));
    }
    Ok(LogConfig { format, level })
}

fn resolve_admin_token(
    file: Option<&Path>,
    secrets: &dyn SecretSource,
) -> Result<Option<Secret>, ConfigError> {
    // The environment wins over the file, so an operator can override a deployed file.
    let (token, field) = match (secrets.env(ADMIN_TOKEN_ENV), file) {
        (Some(value), _) => (value, ADMIN_TOKEN_ENV),
        (None, Some(path)) => {
            let text = secret::read_secret_file(path).map_err(|allowed| {
                ConfigError::invalid("admin_token_file", path.display(), allowed)
            })?;
            (text, "admin_token_file")
        }
        (None, None) => return Ok(None),
    };
    let token = token.trim().to_string();
    let well_formed =
        token.len() >= limits::ADMIN_TOKEN_CHARS_MIN && token.bytes().all(|b| b.is_ascii_graphic());
    if !well_formed {
        // Never echo the token itself, only its shape.
        return Err(ConfigError::invalid(
            if field == ADMIN_TOKEN_ENV {
                "BACKSTOP_ADMIN_TOKEN (environment)"
            } else {
                "admin_token_file"
            },
            format!("<{} characters, redacted>", token.len()),
            format!(
                "an admin token of at least {} visible ASCII characters (e.g. `openssl rand -base64 32`)",
                limits::ADMIN_TOKEN_CHARS_MIN
            ),
        ));
    }
    Ok(Some(Secret::new(token)))
}

fn validate_url(field: &'static str, value: &str) -> Result<hyper::Uri, ConfigError> {
    let allowed = "an absolute http:// or https:// URL with a host, no query or fragment";
    let uri: hyper::Uri = value
        .parse()
        .map_err(|_| ConfigError::invalid(field, format!("{value:?}"), allowed))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let has_host = uri.host().is_some_and(|h| !h.is_empty());
    if !scheme_ok || !has_host || uri.query().is_some() || value.contains('#') {
        return Err(ConfigError::invalid(field, format!("{value:?}"), allowed));
    }
    Ok(uri)
}

fn validate_issuer(value: &str) -> Result<String, ConfigError> {
    let uri = validate_url("issuer", value)?;
    // OIDC Discovery §3 requires https issuers; plain http is allowed only on loopback, for
    // development and tests.
    if uri.scheme_str() == Some("http") && !is_loopback_host(uri.host().unwrap_or_default()) {
        return Err(ConfigError::invalid(
            "issuer",
            format!("{value:?}"),
            "an https:// URL (http:// is allowed only for localhost / loopback addresses)",
        ));
    }
    // Issuers are compared as exact strings by clients; a trailing slash is a different issuer.
    Ok(value.to_string())
}

fn validate_origin(value: &str) -> Result<String, ConfigError> {
    let uri = validate_url("primary.origin", value)?;
    if !matches!(uri.path(), "" | "/") {
        return Err(ConfigError::invalid(
            "primary.origin",
            format!("{value:?}"),
            "an origin only (scheme, host and port), without a path",
        ));
    }
    Ok(value.trim_end_matches('/').to_string())
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, String>);

    impl SecretSource for FakeEnv {
        fn env(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn no_env() -> FakeEnv {
        FakeEnv(HashMap::new())
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", &no_env())
    }

    fn invalid_field(text: &str) -> &'static str {
        match parse(text) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an Invalid error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn default_config_is_valid_and_has_documented_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(config.data_dir, PathBuf::from("./backstop-data"));
        assert!(config.workers >= 1);
        assert_eq!(config.issuer, None);
        assert_eq!(config.limits, HttpLimits::default());
        assert_eq!(config.limits.body_bytes_max, limits::BODY_BYTES.default);
        assert!(config.admin_token.is_none());
    }

    #[test]
    fn default_limits_equal_resolved_empty_table() {
        assert_eq!(
            resolve_limits(&RawLimits::default()).unwrap(),
            HttpLimits::default()
        );
    }

    #[test]
    fn example_config_file_parses_to_the_defaults() {
        let text = include_str!("../../backstop.example.toml");
        let config = Config::parse(text, "backstop.example.toml", &no_env()).unwrap();
        let defaults = parse("").unwrap();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.limits, defaults.limits);
        assert_eq!(config.log, defaults.log);
        assert_eq!(config.primary, defaults.primary);
        assert_eq!(config.failover, defaults.failover);
        assert_eq!(config.failover, BreakerConfig::default());
        assert_eq!(config.capture, defaults.capture);
        assert_eq!(config.capture, CaptureConfig::default());
        assert_eq!(config.policy, defaults.policy);
        assert_eq!(config.policy, PolicyConfig::default());
        assert_eq!(config.ssf, defaults.ssf);
        assert_eq!(config.ssf, None);
    }

    #[test]
    fn policy_and_ssf_sections_resolve() {
        let config = parse(
            r#"
            [policy]
            file = "/etc/backstop/policies.json"
            reload_poll_ms = 0
            trusted_proxies = ["10.0.0.0/8", "2001:db8::/32"]
            client_ip_header = "X-Forwarded-For"
            [ssf]
            issuer = "https://idp.example.com"
            jwks_uri = "https://idp.example.com/ssf/jwks"
            audience = "https://backstop.example.com"
            iat_window_secs = 300
            replay_cache_entries = 1000
            "#,
        )
        .unwrap();
        assert_eq!(
            config.policy.file.as_deref(),
            Some(Path::new("/etc/backstop/policies.json"))
        );
        assert_eq!(config.policy.reload_poll, Duration::ZERO);
        assert_eq!(config.policy.client_ip.trusted_proxies.len(), 2);
        assert_eq!(
            config.policy.client_ip.header.as_deref(),
            Some("x-forwarded-for")
        );
        let ssf = config.ssf.unwrap();
        assert_eq!(ssf.issuer, "https://idp.example.com");
        assert_eq!(ssf.audience, "https://backstop.example.com");
        assert_eq!((ssf.iat_window_secs, ssf.replay_cache_entries), (300, 1000));
    }

    #[test]
    fn invalid_policy_and_ssf_values_name_their_field() {
        let cases = [
            ("[policy]\nfile = \"\"", "policy.file"),
            (
                "[policy]\nreload_poll_ms = 3600001",
                "policy.reload_poll_ms",
            ),
            (
                "[policy]\ntrusted_proxies = [\"10.0.0.1\"]",
                "policy.trusted_proxies",
            ),
            (
                "[policy]\nclient_ip_header = \"X-Forwarded-For\"",
                "policy.client_ip_header",
            ),
            (
                "[policy]\ntrusted_proxies = [\"10.0.0.0/8\"]\nclient_ip_header = \"bad header\"",
                "policy.client_ip_header",
            ),
            ("[ssf]\nissuer = \"https://idp\"", "ssf.jwks_uri"),
            ("[ssf]\njwks_uri = \"https://idp/jwks\"", "ssf.issuer"),
            (
                "[ssf]\nissuer = \"https://idp\"\njwks_uri = \"https://idp/jwks\"",
                "ssf.audience",
            ),
            (
                "[ssf]\nissuer = \"https://idp\"\njwks_uri = \"http://idp.example.com/jwks\"\naudience = \"a\"",
                "ssf.jwks_uri",
            ),
            ("[ssf]\niat_window_secs = 5", "ssf.iat_window_secs"),
            (
                "[ssf]\nreplay_cache_entries = 1",
                "ssf.replay_cache_entries",
            ),
        ];
        for (text, field) in cases {
            assert_eq!(invalid_field(text), field, "{text}");
        }
    }

    #[test]
    fn invalid_values_name_their_field() {
        let cases = [
            ("listen = \"nowhere\"", "listen"),
            ("admin_listen = \"1.2.3.4\"", "admin_listen"),
            (
                "listen = \"127.0.0.1:9\"\nadmin_listen = \"127.0.0.1:9\"",
                "admin_listen",
            ),
            ("workers = 5000", "workers"),
            ("data_dir = \"\"", "data_dir"),
            ("issuer = \"ftp://x\"", "issuer"),
            ("issuer = \"http://idp.example.com\"", "issuer"),
            ("issuer = \"https://idp.example.com?x=1\"", "issuer"),
            ("[primary]\norigin = \"idp.internal\"", "primary.origin"),
            (
                "[primary]\norigin = \"https://idp.internal/oauth\"",
                "primary.origin",
            ),
            ("[limits]\nbody_bytes_max = 0", "limits.body_bytes_max"),
            (
                "[limits]\nheader_bytes_max = 100",
                "limits.header_bytes_max",
            ),
            (
                "[limits]\nheader_count_max = 100000",
                "limits.header_count_max",
            ),
            (
                "[limits]\nkeep_alive_idle_ms = 1",
                "limits.keep_alive_idle_ms",
            ),
            (
                "[limits]\nheader_read_timeout_ms = 1",
                "limits.header_read_timeout_ms",
            ),
            (
                "[limits]\nbody_read_timeout_ms = 99999999",
                "limits.body_read_timeout_ms",
            ),
            (
                "[limits]\nconnections_per_worker_max = 0",
                "limits.connections_per_worker_max",
            ),
            (
                "[limits]\nshutdown_grace_ms = 9999999",
                "limits.shutdown_grace_ms",
            ),
            (
                "[limits]\nheader_bytes_max = 4096\nrequest_line_bytes_max = 8192",
                "limits.request_line_bytes_max",
            ),
            ("[log]\nformat = \"xml\"", "log.format"),
            (
                "[primary]\nconnect_timeout_ms = 5000\nrequest_timeout_ms = 1000",
                "primary.connect_timeout_ms",
            ),
            (
                "[primary]\nrequest_timeout_ms = 1",
                "primary.request_timeout_ms",
            ),
            (
                "[primary]\nca_file = \"/nonexistent/ca.pem\"",
                "primary.ca_file",
            ),
            ("[primary]\nprobe_path = \"health\"", "primary.probe_path"),
            ("[failover]\nwindow_len = 65", "failover.window_len"),
            (
                "[failover]\nwindow_len = 10\nwindow_failures_max = 11",
                "failover.window_failures_max",
            ),
            (
                "[failover]\nopen_initial_ms = 5000\nopen_max_ms = 1000",
                "failover.open_max_ms",
            ),
            (
                "[failover]\nconsecutive_failures_max = 0",
                "failover.consecutive_failures_max",
            ),
            ("[log]\nlevel = \"[[[\"", "log.level"),
            ("[capture]\nqueue_len = 0", "capture.queue_len"),
            (
                "[capture]\nsession_window_secs = 60",
                "capture.session_window_secs",
            ),
            ("[capture]\nuser_claims = []", "capture.user_claims"),
            ("[capture]\nuser_claims = [\"\"]", "capture.user_claims"),
            ("[capture]\ntenant_claim = \"a b\"", "capture.tenant_claim"),
            (
                "[capture]\ndefault_tenant = \"\\u0001\"",
                "capture.default_tenant",
            ),
            ("[capture]\nguest_claim = \"\\t\"", "capture.guest_claim"),
            ("[capture]\nguest_value = \"\"", "capture.guest_value"),
            (
                "[capture]\nhome_tenant_claim = \"x y\"",
                "capture.home_tenant_claim",
            ),
            ("[capture]\ngroups_claim = \" \"", "capture.groups_claim"),
            ("[capture]\nroles_claim = \" \"", "capture.roles_claim"),
            (
                "[capture]\nsign_in_risk_claim = \" \"",
                "capture.sign_in_risk_claim",
            ),
            (
                "[capture]\nuser_risk_claim = \" \"",
                "capture.user_risk_claim",
            ),
            (
                "[capture]\ndevice_platform_claim = \" \"",
                "capture.device_platform_claim",
            ),
            (
                "[capture]\ndevice_compliance_claim = \" \"",
                "capture.device_compliance_claim",
            ),
            (
                "[capture]\ndevice_header = \"Authorization\"",
                "capture.device_header",
            ),
        ];
        for (text, field) in cases {
            assert_eq!(invalid_field(text), field, "for config {text:?}");
        }
    }

    #[test]
    fn invalid_error_message_names_field_value_and_allowed_range() {
        let err = parse("[limits]\nbody_bytes_max = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.body_bytes_max"), "{err}");
        assert!(err.contains("= 0"), "{err}");
        assert!(err.contains("between 1024 and"), "{err}");
    }

    #[test]
    fn unknown_field_is_refused_with_its_name() {
        let err = parse("lisen = \"127.0.0.1:1\"").unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = parse("[limits]\nbody_max = 1").unwrap_err().to_string();
        assert!(err.contains("body_max"), "{err}");
        let err = parse("[capture]\nuser_claim = [\"sub\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("user_claim"), "{err}");
    }

    #[test]
    fn wrong_type_is_refused_with_its_location() {
        let err = parse("workers = \"four\"").unwrap_err().to_string();
        assert!(err.contains("workers"), "{err}");
        let err = parse("workers = -1").unwrap_err().to_string();
        assert!(err.contains("workers"), "{err}");
    }

    #[test]
    fn workers_zero_means_one_per_core() {
        let config = parse("workers = 0").unwrap();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.workers, cores);
        assert_eq!(parse("workers = 3").unwrap().workers, 3);
    }

    #[test]
    fn loopback_http_issuer_is_allowed_and_kept_verbatim() {
        for issuer in [
            "http://localhost:8080",
            "http://127.0.0.1:1/tenant/",
            "http://[::1]:8080",
        ] {
            let config = parse(&format!("issuer = \"{issuer}\"")).unwrap();
            assert_eq!(config.issuer.as_deref(), Some(issuer));
        }
        let config = parse("issuer = \"https://login.example.com/tenant/v2.0\"").unwrap();
        assert_eq!(
            config.issuer.as_deref(),
            Some("https://login.example.com/tenant/v2.0")
        );
    }

    #[test]
    fn admin_token_comes_from_environment_and_is_redacted() {
        let token = "s3cr3t-s3cr3t-s3cr3t-s3cr3t";
        let env = FakeEnv(HashMap::from([(ADMIN_TOKEN_ENV, token.to_string())]));
        let config = Config::parse("", "t", &env).unwrap();
        let secret = config.admin_token.unwrap();
        assert!(secret.matches(token.as_bytes()));
        assert!(!secret.matches(b"s3cr3t"));
        assert!(!format!("{secret:?}").contains("s3cr3t"));
    }

    #[test]
    fn short_admin_token_is_refused_without_echoing_it() {
        let env = FakeEnv(HashMap::from([(ADMIN_TOKEN_ENV, "hunter2".to_string())]));
        let err = Config::parse("", "t", &env).unwrap_err().to_string();
        assert!(err.contains("BACKSTOP_ADMIN_TOKEN"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
