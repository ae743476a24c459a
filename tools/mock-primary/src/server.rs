//! The mock's sockets, HTTP and clock: the main listener (whose life follows the fault mode),
//! the admin listener, routing, fault injection, counters and the in-process handle.
//!
//! Everything runs on one tokio runtime owned by one std thread started by
//! [`MockPrimary::start`], so the mock can live inside a test or inside `backstop demo` (even
//! one already running its own runtime) and stops when its [`MockHandle`] is dropped.

// The clock is read here only, and passed to the provider as `now`.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::jose::{self, DpopExpect, Signer};
use crate::oauth::{ErrorCode, FORM_BYTES_MAX, OAuthError, parse_form};
use crate::provider::{BasicCredentials, Provider, ProviderLimits, TokenInput};
use crate::{
    ClientConfig, Counters, Endpoint, Fault, GrantRequest, IssuerSource, KeySource, MockError,
    MockOptions,
};

/// Connections waiting in the kernel's accept queue.
const ACCEPT_BACKLOG: i32 = 1024;

/// How long a fault change may take to apply (close or re-bind the main listener).
const FAULT_APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long dropping the handle waits for in-flight work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Longest `Host` / `X-Forwarded-Host` accepted into an issuer URL.
const HOST_BYTES_MAX: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FaultCmd {
    fault: Fault,
    generation: u64,
}

#[derive(Debug, Default)]
struct Applied {
    generation: u64,
    error: Option<String>,
}

/// The configured issuer, split so a request-derived one can reuse its path.
#[derive(Debug, Clone)]
struct Issuer {
    url: String,
    path: String,
}

impl Issuer {
    fn parse(url: &str) -> Result<Self, MockError> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| {
                MockError::Invalid("issuer must start with http:// or https://".into())
            })?;
        if url.contains(['?', '#']) || url.ends_with('/') {
            return Err(MockError::Invalid(
                "issuer must have no query, fragment or trailing slash".into(),
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(MockError::Invalid("issuer has no host".into()));
        }
        Ok(Self {
            url: url.to_string(),
            path: path.to_string(),
        })
    }
}

struct Shared {
    signer: Signer,
    provider: Mutex<Provider>,
    counters: Mutex<Counters>,
    issuer: Issuer,
    issuer_source: IssuerSource,
    dpop_iat_window_secs: u64,
    fault_tx: watch::Sender<FaultCmd>,
    /// Serializes fault changes so generations are handed out in order.
    fault_generation: Mutex<u64>,
    applied: Mutex<Applied>,
    applied_cv: Condvar,
    applied_tx: watch::Sender<u64>,
}

/// A poisoned lock only means another request panicked mid-update; the mock keeps serving
/// what is there rather than failing every later request.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Shared {
    fn request_fault(&self, fault: Fault) -> u64 {
        let mut generation = lock(&self.fault_generation);
        *generation = generation.saturating_add(1);
        self.fault_tx.send_replace(FaultCmd {
            fault,
            generation: *generation,
        });
        *generation
    }

    fn mark_applied(&self, generation: u64, error: Option<String>) {
        {
            let mut applied = lock(&self.applied);
            applied.generation = generation;
            applied.error = error;
        }
        self.applied_cv.notify_all();
        self.applied_tx.send_replace(generation);
    }

    fn applied_result(&self, generation: u64) -> Option<Result<(), MockError>> {
        let applied = lock(&self.applied);
        (applied.generation >= generation).then(|| match &applied.error {
            None => Ok(()),
            Some(e) => Err(MockError::Invalid(format!(
                "fault change failed to apply: {e}"
            ))),
        })
    }

    fn wait_applied_blocking(&self, generation: u64) -> Result<(), MockError> {
        let mut applied = lock(&self.applied);
        let deadline = std::time::Instant::now() + FAULT_APPLY_TIMEOUT;
        while applied.generation < generation {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(MockError::Stopped("fault change not applied in time"));
            }
            applied = self
                .applied_cv
                .wait_timeout(applied, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        drop(applied);
        self.applied_result(generation)
            .unwrap_or(Err(MockError::Stopped("fault change lost")))
    }

    async fn wait_applied(&self, generation: u64) -> Result<(), MockError> {
        let mut rx = self.applied_tx.subscribe();
        let waited = tokio::time::timeout(FAULT_APPLY_TIMEOUT, async {
            rx.wait_for(|g| *g >= generation).await.is_ok()
        })
        .await;
        if waited != Ok(true) {
            return Err(MockError::Stopped("fault change not applied in time"));
        }
        self.applied_result(generation)
            .unwrap_or(Err(MockError::Stopped("fault change lost")))
    }

    fn count(&self, endpoint: Endpoint, outcome: &str) {
        lock(&self.counters).add(endpoint, outcome);
    }
}

/// Starts mock primaries.
#[derive(Debug)]
pub struct MockPrimary;

impl MockPrimary {
    /// Binds both listeners, loads or generates the key, and starts serving on a thread of
    /// its own. Returns once the listeners accept connections.
    pub fn start(opts: MockOptions) -> Result<MockHandle, MockError> {
        let signer = match &opts.key {
            KeySource::Generate => Signer::generate()?,
            KeySource::Pem(pem) => Signer::from_pem(pem)?,
            KeySource::PemFile(path) => {
                let pem = std::fs::read_to_string(path).map_err(|source| MockError::KeyFile {
                    path: path.clone(),
                    source,
                })?;
                Signer::from_pem(&pem)?
            }
            KeySource::Pkcs8Der(der) => Signer::from_pkcs8_der(der)?,
        };
        let main = bind_std(opts.listen).map_err(|source| MockError::Bind {
            addr: opts.listen,
            source,
        })?;
        let addr = main.local_addr().map_err(MockError::Start)?;
        let admin = bind_std(opts.admin_listen).map_err(|source| MockError::Bind {
            addr: opts.admin_listen,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(MockError::Start)?;
        let issuer = Issuer::parse(
            &opts
                .issuer
                .clone()
                .unwrap_or_else(|| format!("http://{addr}")),
        )?;

        let mut provider = Provider::new(ProviderLimits {
            access_token_ttl_secs: opts.access_token_ttl_secs,
            id_token_ttl_secs: opts.id_token_ttl_secs,
            code_ttl_secs: opts.code_ttl_secs,
            dpop_iat_window_secs: opts.dpop_iat_window_secs,
            grants_max: opts.grants_max,
            codes_max: opts.codes_max,
            dpop_jtis_max: opts.dpop_jtis_max,
        });
        for client in opts.clients {
            provider.register_client(client)?;
        }
        let (fault_tx, _) = watch::channel(FaultCmd {
            fault: Fault::Healthy,
            generation: 0,
        });
        let (applied_tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            signer,
            provider: Mutex::new(provider),
            counters: Mutex::new(Counters::default()),
            issuer: issuer.clone(),
            issuer_source: opts.issuer_source,
            dpop_iat_window_secs: opts.dpop_iat_window_secs,
            fault_tx,
            fault_generation: Mutex::new(0),
            applied: Mutex::new(Applied::default()),
            applied_cv: Condvar::new(),
            applied_tx,
        });

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.worker_threads.max(1))
            .thread_name("mock-primary")
            .enable_all()
            .build()
            .map_err(MockError::Start)?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("mock-primary".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(supervise_main(Arc::clone(&thread_shared), main, addr));
                    tokio::spawn(serve_admin(thread_shared, admin));
                    let _ = shutdown_rx.await;
                });
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            })
            .map_err(MockError::Start)?;

        Ok(MockHandle {
            shared,
            addr,
            admin_addr,
            issuer: issuer.url,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }
}

/// A running mock primary. Dropping it stops the server.
pub struct MockHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    issuer: String,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHandle")
            .field("addr", &self.addr)
            .field("admin_addr", &self.admin_addr)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl MockHandle {
    /// The main listener's address (stays the same across `down`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The configured issuer (`http://{addr}` unless set).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `{issuer}/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The `kid` of the signing key (in every token header and in the JWKS).
    pub fn kid(&self) -> &str {
        self.shared.signer.kid()
    }

    /// The JWKS document the mock serves.
    pub fn jwks(&self) -> Value {
        self.shared.signer.jwks()
    }

    /// Sets the fault; returns once it is in effect (for `down`: the listener is closed; from
    /// `down`: it is bound again). Blocks the calling thread briefly.
    pub fn set_fault(&self, fault: Fault) -> Result<(), MockError> {
        let generation = self.shared.request_fault(fault);
        self.shared.wait_applied_blocking(generation)
    }

    /// [`MockHandle::set_fault`] for async callers (the demo): awaits the change instead of
    /// blocking the thread. Runs on any tokio runtime.
    pub async fn set_fault_async(&self, fault: Fault) -> Result<(), MockError> {
        let generation = self.shared.request_fault(fault);
        self.shared.wait_applied(generation).await
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        self.shared.fault_tx.borrow().fault
    }

    /// Creates a signed-in grant and returns its one-time authorization code.
    pub fn create_grant(&self, grant: GrantRequest) -> Result<String, MockError> {
        lock(&self.shared.provider).create_code(grant, now_secs())
    }

    /// Registers or replaces a client.
    pub fn register_client(&self, client: ClientConfig) -> Result<(), MockError> {
        lock(&self.shared.provider).register_client(client)
    }

    /// Revokes every grant of `user` (their refresh tokens get `invalid_grant`); returns how many.
    pub fn revoke_user(&self, user: &str) -> usize {
        lock(&self.shared.provider).revoke_user(user)
    }

    /// Live grants.
    pub fn grant_count(&self) -> usize {
        lock(&self.shared.provider).grant_count()
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> Counters {
        lock(&self.shared.counters).clone()
    }

    /// Zeroes the request counters.
    pub fn reset_counters(&self) {
        *lock(&self.shared.counters) = Counters::default();
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) -> Result<(), MockError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), MockError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| MockError::Stopped("server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn bind_std(addr: SocketAddr) -> std::io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Re-binding after `down` must not trip over the closed connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    Ok(socket.into())
}

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Main,
    Admin,
}

/// Owns the main listener: closes it on `down`, re-binds it on the way back, and acknowledges
/// each fault change once it is in effect.
async fn supervise_main(shared: Arc<Shared>, first: StdListener, addr: SocketAddr) {
    let mut rx = shared.fault_tx.subscribe();
    let mut listener = TcpListener::from_std(first).ok();
    loop {
        let cmd = *rx.borrow_and_update();
        let mut error = None;
        if cmd.fault == Fault::Down {
            listener = None;
        } else if listener.is_none() {
            match bind_std(addr).and_then(TcpListener::from_std) {
                Ok(l) => listener = Some(l),
                Err(e) => error = Some(format!("cannot re-bind {addr}: {e}")),
            }
        }
        shared.mark_applied(cmd.generation, error);
        match &listener {
            Some(l) => loop {
                tokio::select! {
                    accepted = l.accept() => match accepted {
                        Ok((stream, _)) => spawn_connection(&shared, stream, Port::Main),
                        // Out of descriptors or similar: back off instead of spinning.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                }
            },
            None => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn serve_admin(shared: Arc<Shared>, listener: StdListener) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => spawn_connection(&shared, stream, Port::Admin),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The service closes the connection without an answer (a hung request released).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
struct Dropped;

fn spawn_connection(shared: &Arc<Shared>, stream: TcpStream, port: Port) {
    let _ = stream.set_nodelay(true);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut down_rx = shared.fault_tx.subscribe();
        let service_shared = Arc::clone(&shared);
        let service = hyper::service::service_fn(move |req| {
            let shared = Arc::clone(&service_shared);
            async move { handle(shared, port, req).await }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        match port {
            Port::Admin => {
                let _ = conn.await;
            }
            // `down` drops every open connection too, so keep-alive clients see it at once.
            Port::Main => {
                tokio::select! {
                    _ = conn => {}
                    _ = async { down_rx.wait_for(|c| c.fault == Fault::Down).await.is_ok() } => {}
                }
            }
        }
    });
}

async fn handle(
    shared: Arc<Shared>,
    port: Port,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let path = req.uri().path().to_string();
    if path.starts_with("/mock/") {
        return Ok(admin_api(&shared, req).await);
    }
    if port == Port::Admin {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "error_description": "the admin listener serves /mock/* only"}),
        ));
    }
    let endpoint = route(&shared.issuer.path, &path);
    let mut fault_rx = shared.fault_tx.subscribe();
    let fault = fault_rx.borrow_and_update().fault;
    match fault {
        Fault::Hang => {
            shared.count(endpoint, "fault_hang");
            let _ = fault_rx.wait_for(|c| c.fault != Fault::Hang).await.is_ok();
            return Err(Dropped);
        }
        Fault::Error500 => {
            shared.count(endpoint, "fault_error500");
            return Ok(oauth_error_response(&OAuthError::new(
                ErrorCode::ServerError,
                "injected fault: error500",
            )));
        }
        Fault::Down => return Err(Dropped),
        Fault::Healthy | Fault::Slow { .. } => {}
    }
    let (response, outcome) = serve(&shared, endpoint, req).await;
    shared.count(endpoint, &outcome);
    if let Fault::Slow { delay_ms } = fault {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    Ok(response)
}

fn route(prefix: &str, path: &str) -> Endpoint {
    match path.strip_prefix(prefix) {
        Some("/.well-known/openid-configuration") => Endpoint::Discovery,
        Some("/jwks") => Endpoint::Jwks,
        Some("/token") => Endpoint::Token,
        Some("/authorize") => Endpoint::Authorize,
        _ => Endpoint::Other,
    }
}

/// Answers one request to the main listener; returns the response and its counter outcome.
async fn serve(
    shared: &Shared,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> (Response<Full<Bytes>>, String) {
    let expected = match endpoint {
        Endpoint::Token => Method::POST,
        Endpoint::Other => {
            return (
                json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
                "not_found".into(),
            );
        }
        _ => Method::GET,
    };
    if req.method() != expected {
        let e = OAuthError::new(ErrorCode::InvalidRequest, format!("use {expected}"));
        let mut response = oauth_error_response(&e);
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return (response, "method_not_allowed".into());
    }
    let result = match endpoint {
        Endpoint::Discovery => discovery(shared, req.headers()),
        Endpoint::Jwks => Ok(json_response(StatusCode::OK, &shared.signer.jwks())),
        Endpoint::Authorize => Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "interactive sign-in is not supported by the mock; create grants with POST /mock/grants",
        )),
        _ => token(shared, req).await,
    };
    match result {
        Ok(response) => (response, "ok".into()),
        Err(e) => (oauth_error_response(&e), e.code.as_str().into()),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The issuer as this request sees it; see [`IssuerSource`].
fn issuer_for(shared: &Shared, headers: &HeaderMap) -> Result<String, OAuthError> {
    if shared.issuer_source == IssuerSource::Configured {
        return Ok(shared.issuer.url.clone());
    }
    let first = |name: &str| {
        header_str(headers, name)
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let Some(host) = first("x-forwarded-host").or_else(|| first(header::HOST.as_str())) else {
        return Ok(shared.issuer.url.clone());
    };
    let host_ok = host.len() <= HOST_BYTES_MAX
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if !host_ok {
        return Err(OAuthError::new(ErrorCode::InvalidRequest, "malformed Host"));
    }
    let scheme = match first("x-forwarded-proto").map(str::to_ascii_lowercase) {
        None => "http",
        Some(p) if p == "http" => "http",
        Some(p) if p == "https" => "https",
        Some(_) => {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                "malformed X-Forwarded-Proto",
            ));
        }
    };
    Ok(format!("{scheme}://{host}{}", shared.issuer.path))
}

fn discovery(shared: &Shared, headers: &HeaderMap) -> Result<Response<Full<Bytes>>, OAuthError> {
    let issuer = issuer_for(shared, headers)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "dpop_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "offline_access"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "tid", "groups", "roles", "device_id"],
        }),
    ))
}

/// RFC 6749 §2.3.1: Basic credentials, each half form-urlencoded.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<BasicCredentials>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::new(ErrorCode::InvalidClient, "malformed Authorization header");
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::new(
            ErrorCode::InvalidClient,
            "only Basic client authentication is supported",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(s.replace('=', "%3D").as_bytes())
            .next()
            .map(|(k, _)| k.into_owned())
            .unwrap_or_default()
    };
    let (client_id, secret) = (unescape(id), unescape(secret));
    if client_id.is_empty() {
        return Err(bad());
    }
    Ok(Some(BasicCredentials { client_id, secret }))
}

async fn token(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, OAuthError> {
    let (parts, body) = req.into_parts();
    let form_type = header_str(&parts.headers, header::CONTENT_TYPE.as_str())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    let body = Limited::new(body, FORM_BYTES_MAX)
        .collect()
        .await
        .map_err(|_| OAuthError::new(ErrorCode::InvalidRequest, "body too large or unreadable"))?
        .to_bytes();
    let form = parse_form(&body)?;
    let basic = basic_credentials(&parts.headers)?;
    let now = now_secs();
    let issuer = issuer_for(shared, &parts.headers)?;

    let mut proofs = parts.headers.get_all("dpop").iter();
    let proof = match (proofs.next(), proofs.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "more than one DPoP header",
            ));
        }
        (Some(value), None) => {
            let value = value.to_str().map_err(|_| {
                OAuthError::new(ErrorCode::InvalidDpopProof, "malformed DPoP header")
            })?;
            let htu = format!("{issuer}/token");
            let expect = DpopExpect {
                htm: "POST",
                htu: &htu,
                now_secs: now,
                iat_window_secs: shared.dpop_iat_window_secs,
            };
            let verified = jose::verify_dpop(value, &expect)
                .map_err(|e| OAuthError::new(ErrorCode::InvalidDpopProof, e.to_string()))?;
            Some(verified)
        }
    };

    let issue = lock(&shared.provider).token(TokenInput {
        form: &form,
        basic,
        proof,
        issuer: &issuer,
        now,
    })?;

    // Signing happens outside the provider lock: RS256 is the expensive part.
    let sign_err = |e: MockError| OAuthError::new(ErrorCode::ServerError, e.to_string());
    let access_token = shared
        .signer
        .sign("at+jwt", &issue.access_claims)
        .map_err(sign_err)?;
    let mut body = serde_json::Map::new();
    body.insert("access_token".into(), json!(access_token));
    body.insert("token_type".into(), json!(issue.token_type));
    body.insert("expires_in".into(), json!(issue.expires_in));
    body.insert("scope".into(), json!(issue.scope));
    if let Some(claims) = &issue.id_claims {
        let id_token = shared.signer.sign("JWT", claims).map_err(sign_err)?;
        body.insert("id_token".into(), json!(id_token));
    }
    if let Some(refresh) = &issue.refresh_token {
        body.insert("refresh_token".into(), json!(refresh));
    }
    let body = Value::Object(body);
    let mut response = json_response(StatusCode::OK, &body);
    no_store(&mut response);
    Ok(response)
}

fn no_store(response: &mut Response<Full<Bytes>>) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn oauth_error_response(e: &OAuthError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json_response(status, &e.body());
    no_store(&mut response);
    if e.code == ErrorCode::InvalidClient {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"mock-primary\""),
        );
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultWire {
    mode: String,
    #[serde(default)]
    delay_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeWire {
    user: String,
}

fn fault_json(fault: Fault) -> Value {
    match fault {
        Fault::Slow { delay_ms } => json!({"mode": fault.mode(), "delay_ms": delay_ms}),
        _ => json!({"mode": fault.mode()}),
    }
}

fn admin_error(status: StatusCode, description: impl Into<String>) -> Response<Full<Bytes>> {
    let code = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request"
    };
    json_response(
        status,
        &json!({"error": code, "error_description": description.into()}),
    )
}

async fn admin_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<Full<Bytes>>> {
    let body = Limited::new(req.into_body(), FORM_BYTES_MAX)
        .collect()
        .await
        .map_err(|_| admin_error(StatusCode::BAD_REQUEST, "body too large or unreadable"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| admin_error(StatusCode::BAD_REQUEST, e.to_string()))
}

fn mock_error_response(e: &MockError) -> Response<Full<Bytes>> {
    let status = match e {
        MockError::Invalid(_) => StatusCode::BAD_REQUEST,
        MockError::Capacity(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    admin_error(status, e.to_string())
}

/// The test-only admin API (`/mock/*`), never subject to faults.
async fn admin_api(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result: Result<Response<Full<Bytes>>, Response<Full<Bytes>>> = match (method, path.as_str())
    {
        (Method::POST, "/mock/grants") => {
            async {
                let grant: GrantRequest = admin_json(req).await?;
                let code = lock(&shared.provider)
                    .create_code(grant, now_secs())
                    .map_err(|e| mock_error_response(&e))?;
                Ok(json_response(StatusCode::CREATED, &json!({ "code": code })))
            }
            .await
        }
        (Method::POST, "/mock/clients") => {
            async {
                let client: ClientConfig = admin_json(req).await?;
                lock(&shared.provider)
                    .register_client(client)
                    .map_err(|e| mock_error_response(&e))?;
                Ok(json_response(StatusCode::CREATED, &json!({})))
            }
            .await
        }
        (Method::POST, "/mock/fault") => {
            async {
                let wire: FaultWire = admin_json(req).await?;
                let fault = Fault::from_mode(&wire.mode, wire.delay_ms)
                    .map_err(|e| mock_error_response(&e))?;
                let generation = shared.request_fault(fault);
                shared
                    .wait_applied(generation)
                    .await
                    .map_err(|e| mock_error_response(&e))?;
                Ok(json_response(StatusCode::OK, &fault_json(fault)))
            }
            .await
        }
        (Method::GET, "/mock/fault") => Ok(json_response(
            StatusCode::OK,
            &fault_json(shared.fault_tx.borrow().fault),
        )),
        (Method::GET, "/mock/counters") => {
            let counters = lock(&shared.counters).clone();
            Ok(json_response(
                StatusCode::OK,
                &json!({"counts": counters.to_map(), "total": counters.total()}),
            ))
        }
        (Method::POST, "/mock/counters/reset") => {
            *lock(&shared.counters) = Counters::default();
            Ok(json_response(StatusCode::OK, &json!({})))
        }
        (Method::POST, "/mock/revoke") => {
            async {
                let wire: RevokeWire = admin_json(req).await?;
                let revoked = lock(&shared.provider).revoke_user(&wire.user);
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "revoked": revoked }),
                ))
            }
            .await
        }
        _ => Err(admin_error(StatusCode::NOT_FOUND, "no such admin endpoint")),
    };
    result.unwrap_or_else(|e| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MockHandle>();
    }

    #[test]
    fn issuer_parsing_keeps_the_path_and_refuses_junk() {
        let i = Issuer::parse("https://login.example/realms/x").unwrap();
        assert_eq!(i.path, "/realms/x");
        assert_eq!(Issuer::parse("http://127.0.0.1:8080").unwrap().path, "");
        for bad in ["ftp://x", "http://", "http://x/", "http://x?a=1"] {
            assert!(Issuer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_strip_the_issuer_path() {
        assert_eq!(route("/realms/x", "/realms/x/token"), Endpoint::Token);
        assert_eq!(route("/realms/x", "/token"), Endpoint::Other);
        assert_eq!(
            route("", "/.well-known/openid-configuration"),
            Endpoint::Discovery
        );
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode("my%20app:s%3Acret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&value).unwrap(),
        );
        let creds = basic_credentials(&headers).unwrap().unwrap();
        assert_eq!(creds.client_id, "my app");
        assert_eq!(creds.secret, "s:cret");
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(
            basic_credentials(&headers).unwrap_err().code,
            ErrorCode::InvalidClient
        );
    }
}
