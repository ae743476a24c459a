//! The server: the only module that touches sockets, hyper and the clock.
//!
//! Thread per core: `workers` threads, each with its own tokio current-thread runtime and its
//! own `SO_REUSEPORT` listener on the same address, so the kernel spreads connections across
//! them and nothing is shared on the hot path but immutable state (`Shared`) and each worker's
//! own metric cells. The main thread runs the admin listener and waits for SIGTERM/SIGINT;
//! on a signal it flips `/readyz` to 503, tells every worker to stop accepting and to finish
//! the requests in flight (bounded by `limits.shutdown_grace_ms`), then returns.

// The clock is read only here, in `server/` (STYLE.md); everything below takes `now`.
#![allow(clippy::disallowed_methods)]

pub(crate) mod admin;
pub(crate) mod ca;
pub(crate) mod capture;
pub(crate) mod conn;
pub(crate) mod gate;
pub(crate) mod metadata;
pub(crate) mod router;
pub(crate) mod ssf;
pub(crate) mod token;
pub(crate) mod upstream;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::metrics::{ConnectionEnd, Registry};
use conn::PhaseCell;
use gate::Gate;
use router::{HandlerCtx, Listener};
pub use upstream::UpstreamError;

/// Connections waiting in the kernel's accept queue, per listener.
const ACCEPT_BACKLOG: i32 = 1024;

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} (config field `{field}`): {source}")]
    Bind {
        /// The config field naming the address.
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create data directory {path} (config field `data_dir`): {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A runtime or thread could not be started.
    #[error("cannot start {what}: {source}")]
    Start {
        /// What failed to start.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The audit log could not be started.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// A signing keyring could not be loaded or created.
    #[error("signing keys in `data_dir`: {0}")]
    Keys(#[from] crate::token::keyring::KeyringError),
    /// The client to the primary could not be configured.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The policy file named by `[policy] file` is invalid.
    #[error("policy file (config field `policy.file`): {0}")]
    Policy(#[from] crate::policy::PolicyFileError),
    /// The revocation filter could not be built.
    #[error("revocation filter: {0}")]
    Revocation(#[from] crate::revocation::RevocationError),
    /// The capture worker could not be started.
    #[error(transparent)]
    Capture(#[from] crate::gateway::capture::CaptureError),
    /// The session store could not be opened.
    #[error("session store in `data_dir`: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A worker thread ended abnormally.
    #[error("worker thread {index} failed: {reason}")]
    Worker {
        /// The worker's index.
        index: usize,
        /// What happened.
        reason: String,
    },
}

impl ServerError {
    /// Whether the error is in the configuration (exit code 2) rather than the environment.
    pub fn is_config(&self) -> bool {
        matches!(self, ServerError::Policy(_))
    }
}

/// State shared by all threads: immutable after start, except the draining flag.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) metrics: Registry,
    pub(crate) started: Instant,
    pub(crate) draining: AtomicBool,
    pub(crate) public_addr: SocketAddr,
    /// The issuer, resolved: the configured one, or `http://` + the bound public address.
    pub(crate) issuer: String,
    /// The issuer's scheme and authority (DPoP `htu` is this plus the request path).
    pub(crate) issuer_origin: String,
    /// The operator's forced mode (`gate::mode_code`), read by every worker per request.
    pub(crate) mode: AtomicU8,
    /// Each worker's breaker state (`gate::breaker_code`), written only by that worker.
    pub(crate) breakers: Box<[AtomicU8]>,
    /// TLS settings for the primary, shared by every worker's client.
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// Backstop's published signing keys (every algorithm's current, next and previous).
    pub(crate) published_keys: Vec<crate::token::jwk::PublicJwk>,
    /// The primary's discovery document and merged JWKS, as last fetched.
    pub(crate) metadata: Arc<arc_swap::ArcSwap<metadata::Metadata>>,
    /// The audit log's queue.
    pub(crate) audit: crate::audit::AuditSink,
    /// The session store (snapshots and artifacts).
    pub(crate) store: Arc<crate::store::Store>,
    /// Every algorithm's signing keyring (each worker builds its own minters from them).
    pub(crate) keyrings: Vec<crate::token::keyring::Keyring>,
    /// DPoP proof `jti`s seen by any worker (a replay on another worker is still a replay).
    pub(crate) dpop_replay: std::sync::Mutex<crate::token::dpop::ReplayCache>,
    /// Policy and revocation checks of the outage path.
    pub(crate) checks: Box<dyn crate::gateway::outage::OutageChecks>,
    /// The capture worker's queue (normal mode records what the primary grants).
    pub(crate) capture: crate::gateway::capture::CaptureQueue,
    /// The capture worker's counters.
    pub(crate) capture_stats: Arc<crate::gateway::capture::CaptureStats>,
    /// Conditional Access policies (file, hot reload, admin API).
    pub(crate) policies: Arc<crate::policy::PolicyManager>,
    /// Revocation events (durable) and their filter.
    pub(crate) revocations: Arc<ca::Revocations>,
    /// The Shared Signals receiver's state, when `[ssf]` is configured.
    pub(crate) ssf: Option<ssf::SsfState>,
}

/// Unix milliseconds from the wall clock, for audit records.
pub(crate) fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Unix seconds from the wall clock (`server/` is where the clock is read).
pub(crate) fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds, signed, as the store, policies and revocation events take them.
pub(crate) fn unix_now_secs_i64() -> i64 {
    i64::try_from(unix_now_secs()).unwrap_or(i64::MAX)
}

/// A server whose sockets are bound but which serves nothing yet.
pub struct BoundServer {
    shared: Arc<Shared>,
    public: Vec<StdListener>,
    admin: Option<StdListener>,
    audit_writer: std::thread::JoinHandle<()>,
    capture_worker: crate::gateway::capture::CaptureWorker,
    policy_watcher: Option<crate::policy::WatchHandle>,
    control: tokio::runtime::Runtime,
    signals: Signals,
}

/// Binds every listener (so address errors surface before anything starts) and prepares the
/// data directory.
pub fn bind(config: Config) -> Result<BoundServer, ServerError> {
    prepare_data_dir(&config.data_dir)?;

    // The first socket fixes the port (a configured port 0 becomes a free one); the other
    // workers bind the same address with SO_REUSEPORT.
    let first = reuseport_listener(config.listen).map_err(|source| ServerError::Bind {
        field: "listen",
        addr: config.listen,
        source,
    })?;
    let public_addr = first.local_addr().map_err(|source| ServerError::Bind {
        field: "listen",
        addr: config.listen,
        source,
    })?;
    let mut public = vec![first];
    for _ in 1..config.workers {
        let listener = reuseport_listener(public_addr).map_err(|source| ServerError::Bind {
            field: "listen",
            addr: public_addr,
            source,
        })?;
        public.push(listener);
    }

    let admin = match config.admin_token {
        Some(_) => {
            Some(
                plain_listener(config.admin_listen).map_err(|source| ServerError::Bind {
                    field: "admin_listen",
                    addr: config.admin_listen,
                    source,
                })?,
            )
        }
        None => None,
    };

    let tls = upstream::tls_config(&config.primary)?;
    let (audit, audit_writer) = crate::audit::start(
        &config.data_dir.join("audit"),
        crate::audit::AuditLimits {
            file_bytes_max: crate::limits::AUDIT_FILE_BYTES_MAX,
            files_kept: crate::limits::AUDIT_FILES_KEPT,
            queue_len: crate::limits::AUDIT_QUEUE_LEN,
        },
    )?;
    // Every algorithm's keyring exists from the first start: a backup token is signed with the
    // algorithm the primary used for it, so any of them may be needed (DESIGN §7).
    let mut published_keys = Vec::new();
    let mut keyrings = Vec::new();
    for alg in crate::token::alg::SigningAlg::ALL {
        let ring = crate::token::keyring::Keyring::load_or_generate(
            &config.data_dir,
            alg,
            unix_now_secs(),
        )?;
        published_keys.extend(ring.published());
        keyrings.push(ring);
    }
    let store = Arc::new(crate::store::Store::open(
        &config.data_dir,
        crate::store::StoreOpts::background(Arc::new(unix_now_secs_i64)),
    )?);
    let issuer = config
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://{public_addr}"));
    let metadata = Arc::new(arc_swap::ArcSwap::from_pointee(metadata::Metadata {
        discovery_path: metadata::discovery_path(&issuer),
        ..metadata::Metadata::default()
    }));
    let now = unix_now_secs_i64();
    let policies = Arc::new(crate::policy::PolicyManager::open(
        config.policy.file.as_deref(),
        &config.data_dir.join(POLICY_DIR),
        now,
    )?);
    let window_secs = i64::try_from(config.capture.session_window_secs).unwrap_or(i64::MAX);
    let revocations = Arc::new(ca::Revocations::replay(&store, window_secs, now)?);
    let checks = ca::CaChecks {
        policies: policies.clone(),
        revocations: revocations.clone(),
        config: crate::eligibility::EligibilityConfig {
            session_window_secs: window_secs,
        },
    };
    let ssf = config.ssf.clone().map(ssf::SsfState::new);
    let capture_stats = Arc::new(crate::gateway::capture::CaptureStats::new());
    let (capture, capture_worker) = {
        let metadata = metadata.clone();
        crate::gateway::capture::spawn_capture_worker(
            store.clone(),
            move || metadata.load().primary_keys.clone(),
            config.capture.clone(),
            issuer.clone(),
            capture_stats.clone(),
        )?
    };
    let shared = Arc::new(Shared {
        metrics: Registry::new(config.workers, env!("CARGO_PKG_VERSION")),
        started: Instant::now(),
        draining: AtomicBool::new(false),
        public_addr,
        issuer_origin: metadata::issuer_origin(&issuer),
        issuer,
        published_keys,
        metadata,
        audit,
        store,
        keyrings,
        dpop_replay: std::sync::Mutex::new(crate::token::dpop::ReplayCache::new(
            usize::try_from(crate::limits::DPOP_REPLAY_ENTRIES.default).unwrap_or(1 << 20),
        )),
        checks: Box::new(checks),
        capture,
        capture_stats,
        policies,
        revocations,
        ssf,
        mode: AtomicU8::new(gate::mode_code(crate::failover::Mode::Auto)),
        breakers: (0..config.workers).map(|_| AtomicU8::new(0)).collect(),
        tls,
        config,
    });
    // The control runtime and the signal handlers exist before `bind` returns, so a signal
    // sent as soon as the listening address is printed is already handled.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ServerError::Start {
            what: "control runtime".into(),
            source,
        })?;
    let signals = Signals::install(&control)?;
    let policy_watcher = if shared.config.policy.reload_poll.is_zero() {
        None
    } else {
        crate::policy::spawn_watcher(
            shared.policies.clone(),
            shared.config.policy.reload_poll,
            unix_now_secs_i64,
        )
        .map_err(|source| ServerError::Start {
            what: "policy file watcher".into(),
            source,
        })?
    };
    Ok(BoundServer {
        shared,
        public,
        admin,
        audit_writer,
        capture_worker,
        policy_watcher,
        control,
        signals,
    })
}

impl BoundServer {
    /// The address the public listener is bound to.
    pub fn public_addr(&self) -> SocketAddr {
        self.shared.public_addr
    }

    /// The address the admin listener is bound to; `None` when no admin token is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until SIGTERM or SIGINT, then drains and returns.
    pub fn run(self) -> Result<(), ServerError> {
        let BoundServer {
            shared,
            public,
            admin,
            audit_writer,
            capture_worker,
            policy_watcher,
            control,
            signals,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);

        let mut threads = Vec::with_capacity(public.len());
        for (index, listener) in public.into_iter().enumerate() {
            let shared = shared.clone();
            let stop = stop_rx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("backstop-worker-{index}"))
                .spawn(move || worker_main(index, listener, shared, stop))
                .map_err(|source| ServerError::Start {
                    what: format!("worker thread {index}"),
                    source,
                })?;
            threads.push(thread);
        }

        tracing::info!(
            listen = %shared.public_addr,
            workers = shared.config.workers,
            admin = admin.is_some(),
            "backstop serving"
        );
        if admin.is_none() {
            tracing::warn!(
                "admin API disabled: set BACKSTOP_ADMIN_TOKEN or `admin_token_file` to enable it"
            );
        }

        let local = tokio::task::LocalSet::new();
        let main_result = local.block_on(
            &control,
            control_main(signals, shared.clone(), admin, stop_tx, stop_rx),
        );

        let mut first_error = main_result.err();
        for (index, thread) in threads.into_iter().enumerate() {
            let outcome = match thread.join() {
                Ok(result) => result,
                Err(_) => Err(ServerError::Worker {
                    index,
                    reason: "panicked".into(),
                }),
            };
            if let Err(e) = outcome {
                tracing::error!(error = %e, "worker failed");
                first_error.get_or_insert(e);
            }
        }
        // Flush durable state: queued captures reach the store (which acknowledges only durable
        // writes), then the audit log writes what was queued and stops.
        capture_worker.shutdown();
        if let Some(w) = policy_watcher {
            w.stop();
        }
        shared.audit.close();
        if audit_writer.join().is_err() {
            tracing::error!("audit writer thread panicked");
        }
        tracing::info!("backstop stopped");
        first_error.map_or(Ok(()), Err)
    }
}

/// The main thread: admin listener, signal handling, and the shutdown broadcast.
async fn control_main(
    mut signals: Signals,
    shared: Arc<Shared>,
    admin: Option<StdListener>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let admin_task = match admin {
        Some(listener) => {
            let listener =
                TcpListener::from_std(listener).map_err(|source| ServerError::Start {
                    what: "admin listener".into(),
                    source,
                })?;
            let ctx = HandlerCtx {
                shared: shared.clone(),
                listener: Listener::Admin,
                worker: None,
                gate: None,
                backup: None,
            };
            Some(tokio::task::spawn_local(accept_loop(
                listener, ctx, stop_rx,
            )))
        }
        None => None,
    };

    // The primary's metadata, refreshed from here so workers never wait on a fetch.
    let upstream =
        upstream::Upstream::new(&shared.config.primary, &shared.issuer, shared.tls.clone())?;
    let ssf_keys = tokio::task::spawn_local(ssf::refresh_keys_forever(shared.clone()));
    let refresher = tokio::task::spawn_local(metadata::refresh_forever(
        upstream,
        shared.issuer.clone(),
        shared.published_keys.clone(),
        shared.metadata.clone(),
        shared.config.data_dir.join(metadata::CACHE_DIR),
        unix_now_secs,
    ));

    signals.wait(&shared).await;
    refresher.abort();
    ssf_keys.abort();
    tracing::info!(
        grace_ms =
            u64::try_from(shared.config.limits.shutdown_grace.as_millis()).unwrap_or(u64::MAX),
        "shutdown requested: draining"
    );
    shared.draining.store(true, Ordering::Relaxed);
    // Every receiver sees the change; a worker that already exited has dropped its receiver.
    let _ = stop_tx.send(true);
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    Ok(())
}

/// SIGTERM and SIGINT handlers, installed in `bind` before anything is announced: a signal
/// that arrives right after start must drain, not kill the process with the default action.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install(runtime: &tokio::runtime::Runtime) -> Result<Self, ServerError> {
        use tokio::signal::unix::{SignalKind, signal};
        let start_err = |source| ServerError::Start {
            what: "signal handler".into(),
            source,
        };
        let _in_runtime = runtime.enter();
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(start_err)?,
            int: signal(SignalKind::interrupt()).map_err(start_err)?,
            hup: signal(SignalKind::hangup()).map_err(start_err)?,
        })
    }

    /// Waits for SIGTERM or SIGINT; each SIGHUP meanwhile reloads the policy file.
    async fn wait(&mut self, shared: &Shared) {
        loop {
            tokio::select! {
                _ = self.term.recv() => {
                    tracing::info!("SIGTERM received");
                    return;
                }
                _ = self.int.recv() => {
                    tracing::info!("SIGINT received");
                    return;
                }
                _ = self.hup.recv() => {
                    let now = unix_now_secs_i64();
                    match shared.policies.reload_now(now) {
                        Ok(outcome) => tracing::info!(?outcome, "SIGHUP: policy file reloaded"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: policy file refused; keeping the current policies"),
                    }
                }
            }
        }
    }
}

fn worker_main(
    index: usize,
    listener: StdListener,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Backup decisions are audited in batches per worker thread (`AuditSink::
        // record_batched`): whatever this worker batched goes to the writer before it idles.
        .on_thread_park(crate::audit::flush_thread)
        .build()
        .map_err(|source| ServerError::Start {
            what: format!("worker {index} runtime"),
            source,
        })?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async move {
        let listener = TcpListener::from_std(listener).map_err(|source| ServerError::Start {
            what: format!("worker {index} listener"),
            source,
        })?;
        let upstream =
            upstream::Upstream::new(&shared.config.primary, &shared.issuer, shared.tls.clone())?;
        let gate = Rc::new(Gate::new(upstream, shared.clone(), index));
        let ticker = tokio::task::spawn_local(gate.clone().run_ticker());
        let minters = crate::gateway::outage::Minters::new(
            &shared.keyrings,
            crate::token::sign::Ed25519Backend::AwsLc,
        )
        .map_err(ServerError::Keys)?;
        let ctx = HandlerCtx {
            shared,
            listener: Listener::Public,
            worker: Some(index),
            gate: Some(gate),
            backup: Some(token::WorkerBackup::new(minters)),
        };
        accept_loop(listener, ctx, stop).await;
        ticker.abort();
        Ok(())
    });
    // Before the server closes the audit log (after every worker has stopped).
    crate::audit::flush_thread();
    result
}

/// Accepts connections until shutdown, then drains them within the grace period.
async fn accept_loop(listener: TcpListener, ctx: HandlerCtx, mut stop: watch::Receiver<bool>) {
    let ctx = Rc::new(ctx);
    let limits = ctx.shared.config.limits;
    let builder = Rc::new(conn::http1_builder(&limits));
    let mut connections = JoinSet::new();

    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            // Reap finished connection tasks so the set stays as small as the open count.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= limits.connections_per_worker_max {
                        ctx.metrics().connection_ended(ConnectionEnd::OverLimit);
                        conn::refuse_over_limit(&stream);
                        continue;
                    }
                    ctx.metrics().connection_opened();
                    let ctx = ctx.clone();
                    let builder = builder.clone();
                    let stop = stop.clone();
                    // The client's address as a header value, once per connection rather
                    // than once per forwarded request.
                    let peer = Rc::new(router::Peer::new(peer.ip()));
                    connections.spawn_local(async move {
                        let phase = Rc::new(PhaseCell::new(tokio::time::Instant::now()));
                        let service = {
                            let ctx = ctx.clone();
                            let phase = phase.clone();
                            hyper::service::service_fn(move |req| {
                                router::handle(req, ctx.clone(), phase.clone(), peer.clone())
                            })
                        };
                        conn::serve(stream, phase, &builder, service, &limits, ctx.metrics(), stop).await;
                        ctx.metrics().connection_closed();
                    });
                }
                Err(e) => {
                    // Typically EMFILE/ENFILE: back off briefly instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }

    // Stop accepting at once: new connections go to a peer node (or get refused) while we drain.
    drop(listener);
    let deadline = tokio::time::sleep(limits.shutdown_grace);
    let mut deadline = std::pin::pin!(deadline);
    loop {
        tokio::select! {
            next = connections.join_next() => {
                if next.is_none() {
                    break;
                }
            }
            () = deadline.as_mut() => {
                let left = connections.len();
                tracing::warn!(connections = left, "grace period over: closing connections still in flight");
                for _ in 0..left {
                    ctx.metrics().connection_ended(ConnectionEnd::ShutdownDeadline);
                    ctx.metrics().connection_closed();
                }
                connections.abort_all();
                break;
            }
        }
    }
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    Ok(socket.into())
}

fn plain_listener(addr: SocketAddr) -> std::io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    Ok(socket.into())
}

/// Where the document last put through `PUT /admin/policies` is kept, under `data_dir`.
pub(crate) const POLICY_DIR: &str = "policy";

fn prepare_data_dir(path: &std::path::Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| ServerError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Ok(());
    }
    // Keys and deployment secrets will live here: owner-only from the start.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(err)
}
