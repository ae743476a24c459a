//! `backstop demo`: the whole story in one command. Starts the mock primary and a backstop in
//! front of it (in this process, on free loopback ports, with a temporary data directory),
//! signs in a population of simulated clients through backstop, drives refresh traffic, takes
//! the primary down mid-run and brings it back, and reports who answered: the primary, the
//! backup, or nobody (and why).
//!
//! This module belongs to the binary, not the library: the mock primary it links is never on
//! backstop's serving path. It is an edge like `server/` (it reads the clock to measure
//! latency and paces requests), so the clock lint is lifted here.

#![allow(clippy::disallowed_methods)]

mod client;
mod stats;
mod traffic;

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use backstop::config::{ADMIN_TOKEN_ENV, Config, SecretSource};
use backstop_mock_primary::{Fault, KeySource, MockOptions, MockPrimary};
use clap::{Args, ValueEnum};

use client::{Http, Signers};
use stats::PrimaryState;

/// backstop's timeout for the primary's answer in the demo: short, so a hanging primary costs
/// clients half a second until the breaker opens.
const DEMO_UPSTREAM_REQUEST_TIMEOUT_MS: u64 = 500;

/// Sessions at most (users × devices × apps × resources): each is a grant in the mock primary
/// and a refresh token in this process's memory.
const SESSIONS_MAX: u64 = 1_000_000;

/// How long the demo waits for backstop to fetch the primary's metadata before giving up.
const METADATA_WAIT: Duration = Duration::from_secs(20);

/// How long the demo waits for backstop to drain and stop at the end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);

/// What the primary does during an outage phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutageKind {
    /// The primary's listener is closed: connections are refused (a clean failure).
    Down,
    /// The primary answers every request with 500 and does nothing.
    Error500,
    /// The primary accepts requests and never answers: backstop pays its upstream timeout
    /// until the breaker opens.
    Hang,
    /// The primary processes each request (rotating refresh tokens) but answers after
    /// backstop gave up: ambiguous failures, where the client keeps a token the primary has
    /// already rotated out. Most telling as the first outage phase, while the breaker is
    /// still closed.
    Slow,
}

impl OutageKind {
    fn state(self) -> PrimaryState {
        match self {
            Self::Down => PrimaryState::Down,
            Self::Error500 => PrimaryState::Error500,
            Self::Hang => PrimaryState::Hang,
            Self::Slow => PrimaryState::Slow,
        }
    }

    fn fault(self) -> Fault {
        match self {
            Self::Down => Fault::Down,
            Self::Error500 => Fault::Error500,
            Self::Hang => Fault::Hang,
            Self::Slow => Fault::Slow {
                delay_ms: 2 * DEMO_UPSTREAM_REQUEST_TIMEOUT_MS,
            },
        }
    }
}

/// The knobs of `backstop demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Simulated users. Sessions = users × devices-per-user × apps × resources; each session
    /// signs in once (authorization code through backstop), then refreshes over and over.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub users: u64,
    /// Devices each user signs in from.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub devices_per_user: u64,
    /// Client applications (public native apps, `app-N`) each user uses on each device.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub apps: u64,
    /// Resources (APIs, RFC 8707 `resource`) each app gets a token for.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub resources: u64,
    /// Seconds of refresh traffic (the sign-in comes before): a quarter with the primary
    /// healthy, half split over the outage phases, a quarter after it recovered.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u64).range(4..=86_400))]
    pub duration: u64,
    /// Closed loop: refresh requests in flight at once, over keep-alive connections. Each
    /// session has at most one request in flight (refresh tokens rotate); after a refusal it
    /// waits as `Retry-After` says (at most 2 s, 1 s without one), and after `invalid_grant`
    /// it retires (a real app would send its user to sign in again).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: u64,
    /// Pace requests at this many per second in total (still at most --concurrency in
    /// flight); without it, clients send as fast as answers come back.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: Option<u64>,
    /// The outage phases, in order, comma-separated: down (connect refused), error500 (every
    /// answer 500), hang (no answer), slow (answers after backstop gave up, having rotated
    /// the refresh token: the ambiguous case).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "down,error500,hang"
    )]
    pub outage: Vec<OutageKind>,
    /// backstop's worker threads (0 = one per core).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub workers: u64,
    /// Keep the temporary data directory (store, keys, audit log) instead of removing it.
    #[arg(long)]
    pub keep_data: bool,
    /// Print the summary as one JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No live status line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// How the demo ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It ran to the end.
    Completed,
    /// SIGINT or SIGTERM cut it short (the summary covers what ran).
    Interrupted,
}

/// One phase of refresh traffic, planned.
#[derive(Debug, Clone)]
struct PhasePlan {
    name: String,
    state: PrimaryState,
    fault: Fault,
    outage: bool,
    duration: Duration,
}

fn plan_phases(args: &DemoArgs) -> Vec<PhasePlan> {
    let total = Duration::from_secs(args.duration);
    let quarter = total / 4;
    let outage_total = total.saturating_sub(quarter * 2);
    let kinds = u32::try_from(args.outage.len().max(1)).unwrap_or(u32::MAX);
    let each = outage_total / kinds;
    let mut phases = vec![PhasePlan {
        name: "normal".into(),
        state: PrimaryState::Healthy,
        fault: Fault::Healthy,
        outage: false,
        duration: quarter,
    }];
    for kind in &args.outage {
        phases.push(PhasePlan {
            name: format!("outage: {}", kind.state().name()),
            state: kind.state(),
            fault: kind.fault(),
            outage: true,
            duration: each,
        });
    }
    phases.push(PhasePlan {
        name: "recovered".into(),
        state: PrimaryState::Healthy,
        fault: Fault::Healthy,
        outage: false,
        duration: quarter,
    });
    phases
}

/// The admin token the demo gives its backstop, as if from the environment.
struct DemoSecrets {
    admin_token: String,
}

impl SecretSource for DemoSecrets {
    fn env(&self, name: &str) -> Option<String> {
        (name == ADMIN_TOKEN_ENV).then(|| self.admin_token.clone())
    }
}

/// The temporary data directory; removed on drop unless kept.
struct DataDir {
    path: PathBuf,
    keep: bool,
}

impl DataDir {
    fn create(keep: bool) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| anyhow!("random source: {e}"))?;
        let path = std::env::temp_dir().join(format!(
            "backstop-demo-{}-{:016x}",
            std::process::id(),
            u64::from_le_bytes(nonce)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating the data directory {}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn random_token() -> anyhow::Result<String> {
    use base64::Engine as _;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow!("random source: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

fn demo_config(
    args: &DemoArgs,
    data_dir: &Path,
    primary: SocketAddr,
    secrets: &DemoSecrets,
) -> anyhow::Result<Config> {
    let data_dir = data_dir
        .to_str()
        .ok_or_else(|| anyhow!("the temporary directory's path is not UTF-8"))?;
    // `issuer` is left unset: it then is `http://` + the bound public address, which is
    // backstop's public URL here. backstop forwards with the client's Host and sets
    // X-Forwarded-Host/-Proto, and the mock builds `iss` from them, so the primary's tokens,
    // its discovery document and backstop's issuer all agree.
    let text = format!(
        r#"
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
data_dir = {data_dir}
workers = {workers}

[primary]
origin = "http://{primary}"
connect_timeout_ms = 100
request_timeout_ms = {DEMO_UPSTREAM_REQUEST_TIMEOUT_MS}

[failover]
consecutive_failures_max = 3
window_len = 20
window_failures_max = 6
open_initial_ms = 200
open_max_ms = 1000

[limits]
shutdown_grace_ms = 2000
"#,
        data_dir = toml::Value::String(data_dir.to_string()),
        workers = args.workers,
    );
    Config::parse(&text, "<backstop demo>", secrets)
        .map_err(|e| anyhow!("the demo's backstop configuration: {e}"))
}

/// Writes to stderr, ignoring a closed stream (the demo must not die of a closed pipe).
fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "backstop demo: {line}");
}

/// Runs the demo; prints the live status on stderr and the summary on stdout.
pub fn run(args: &DemoArgs) -> anyhow::Result<Ending> {
    let sessions = args
        .users
        .checked_mul(args.devices_per_user)
        .and_then(|n| n.checked_mul(args.apps))
        .and_then(|n| n.checked_mul(args.resources))
        .filter(|n| *n <= SESSIONS_MAX)
        .ok_or_else(|| {
            anyhow!(
                "users × devices-per-user × apps × resources must be at most {SESSIONS_MAX} sessions"
            )
        })?;
    let phases = plan_phases(args);
    let latency_template =
        stats::latency_histogram().map_err(|e| anyhow!("latency histogram: {e:?}"))?;

    note("starting the mock primary (generating its RSA key)...");
    let mock = MockPrimary::start(MockOptions {
        key: KeySource::Generate,
        worker_threads: 2,
        ..MockOptions::default()
    })
    .context("starting the mock primary")?;
    let mock = Arc::new(mock);

    let data_dir = DataDir::create(args.keep_data)?;
    let secrets = DemoSecrets {
        admin_token: random_token()?,
    };
    let config = demo_config(args, &data_dir.path, mock.addr(), &secrets)?;

    note("starting backstop (generating its signing keys)...");
    let server = ServerThread::start(config)?;
    note(&format!(
        "mock primary on http://{} (kid {}), backstop on http://{}, data in {}",
        mock.addr(),
        mock.kid(),
        server.public,
        data_dir.path.display()
    ));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the demo's runtime")?;
    let plan = traffic::Plan {
        args: args.clone(),
        sessions,
        phases: phases
            .iter()
            .map(|p| traffic::PhaseSpec {
                name: p.name.clone(),
                state: p.state,
                fault: p.fault,
                outage: p.outage,
                duration: p.duration,
            })
            .collect(),
        status_tty: std::io::stderr().is_terminal(),
    };
    let backstop_url = format!("http://{}", server.public);
    let admin_url = server.admin.map(|a| format!("http://{a}"));
    let outcome = runtime.block_on(async {
        let http = Http::new(
            &backstop_url,
            usize::try_from(args.concurrency).unwrap_or(64),
        );
        let setup = prepare(&http, &backstop_url, &mock, &server.stopped).await?;
        let admin = admin_url.map(|url| traffic::Admin {
            http: Http::new(&url, 1),
            token: secrets.admin_token.clone(),
        });
        traffic::run(
            plan,
            traffic::Env {
                http,
                admin,
                mock: mock.clone(),
                signers: setup.signers,
                token_path: setup.token_path,
                server_stopped: server.stopped.clone(),
                latency_template,
            },
        )
        .await
    });
    // Everything the runtime holds (pooled connections to backstop) goes before backstop stops.
    drop(runtime);
    let stop_result = server.stop();
    drop(mock);
    if args.keep_data {
        note(&format!("data kept in {}", data_dir.path.display()));
    }
    drop(data_dir);

    let report = outcome?;
    stop_result?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let _ = writeln!(out, "{}", report.to_json());
    } else {
        let _ = write!(out, "{}", report.to_table());
    }
    Ok(if report.interrupted {
        Ending::Interrupted
    } else {
        Ending::Completed
    })
}

/// What the clients need to know before they start: where the token endpoint is and who
/// signs what.
struct Setup {
    token_path: String,
    signers: Signers,
}

/// Waits until backstop serves the primary's metadata (discovery with backstop's issuer, and
/// the merged JWKS), which also proves forwarding works.
async fn prepare(
    http: &Http,
    issuer: &str,
    mock: &backstop_mock_primary::MockHandle,
    stopped: &AtomicBool,
) -> anyhow::Result<Setup> {
    let deadline = Instant::now() + METADATA_WAIT;
    loop {
        if stopped.load(Ordering::Relaxed) {
            bail!("backstop stopped during setup");
        }
        let last_problem = match fetch_metadata(http, issuer, mock.kid()).await {
            Ok(setup) => return Ok(setup),
            Err(problem) => problem,
        };
        if Instant::now() >= deadline {
            bail!(
                "backstop did not serve the primary's discovery document and merged JWKS \
                 within {}s: {last_problem}",
                METADATA_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fetch_metadata(http: &Http, issuer: &str, primary_kid: &str) -> Result<Setup, String> {
    let discovery = http
        .get("/.well-known/openid-configuration", None)
        .await
        .map_err(|e| format!("discovery: {}", e.name()))?;
    if !discovery.status.is_success() {
        return Err(format!("discovery: HTTP {}", discovery.status));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&discovery.body).map_err(|_| "discovery: not JSON".to_string())?;
    // The mock builds its issuer from the Host / X-Forwarded-* backstop forwards: it must be
    // backstop's own, or the primary's tokens would name another issuer than the backup's.
    if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
        return Err(format!("discovery: issuer is not {issuer}"));
    }
    let path_of = |field: &str| -> Result<String, String> {
        let url = doc
            .get(field)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("discovery: no {field}"))?;
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| format!("discovery: {field} is not a URL"))?;
        Ok(uri.path().to_string())
    };
    let token_path = path_of("token_endpoint")?;
    let jwks_path = path_of("jwks_uri")?;
    let jwks = http
        .get(&jwks_path, None)
        .await
        .map_err(|e| format!("JWKS: {}", e.name()))?;
    if !jwks.status.is_success() {
        return Err(format!("JWKS: HTTP {}", jwks.status));
    }
    let kids = client::jwks_kids(&jwks.body).ok_or_else(|| "JWKS: not a key set".to_string())?;
    if !kids.contains(primary_kid) {
        return Err("JWKS: the primary's key is missing".into());
    }
    let backstop: std::collections::BTreeSet<String> =
        kids.into_iter().filter(|k| k != primary_kid).collect();
    if backstop.is_empty() {
        // The primary's own JWKS, forwarded: backstop has not merged its keys in yet.
        return Err("JWKS: backstop's keys are not merged in yet".into());
    }
    Ok(Setup {
        token_path,
        signers: Signers {
            primary: primary_kid.to_string(),
            backstop,
        },
    })
}

/// backstop, serving on its own thread in this process.
struct ServerThread {
    public: SocketAddr,
    admin: Option<SocketAddr>,
    /// Set when `run` returned: a SIGINT/SIGTERM drained it, or it failed.
    stopped: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl ServerThread {
    fn start(config: Config) -> anyhow::Result<Self> {
        let stopped = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let flag = stopped.clone();
        let thread = std::thread::Builder::new()
            .name("backstop-demo-server".into())
            .spawn(move || {
                let result = match backstop::server::bind(config) {
                    Ok(server) => {
                        let _ = tx.send(Ok((server.public_addr(), server.admin_addr())));
                        server.run().map_err(|e| e.to_string())
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        Ok(())
                    }
                };
                flag.store(true, Ordering::Relaxed);
                result
            })
            .context("starting backstop's thread")?;
        match rx.recv() {
            Ok(Ok((public, admin))) => Ok(Self {
                public,
                admin,
                stopped,
                thread,
            }),
            Ok(Err(e)) => bail!("starting backstop: {e}"),
            Err(_) => bail!("starting backstop: its thread ended before binding"),
        }
    }

    /// Asks backstop to drain and stop the way an operator would, with SIGTERM (its handlers
    /// are this process's), and waits for it.
    fn stop(self) -> anyhow::Result<()> {
        if !self.stopped.load(Ordering::Relaxed) {
            use rustix::process::{Signal, getpid, kill_process};
            kill_process(getpid(), Signal::TERM).context("sending SIGTERM to backstop")?;
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                bail!(
                    "backstop did not stop within {}s of SIGTERM",
                    SHUTDOWN_WAIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match self.thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => bail!("backstop failed: {e}"),
            Err(_) => bail!("backstop's thread panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DemoArgs,
    }

    fn args(argv: &[&str]) -> DemoArgs {
        Cli::try_parse_from(std::iter::once("demo").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn default_phases_fill_the_duration_with_the_outage_in_the_middle() {
        let phases = plan_phases(&args(&[]));
        let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "normal",
                "outage: down",
                "outage: error500",
                "outage: hang",
                "recovered"
            ]
        );
        let total: Duration = phases.iter().map(|p| p.duration).sum();
        assert!(total <= Duration::from_secs(48) && total >= Duration::from_secs(47));
        assert!(
            phases
                .iter()
                .all(|p| p.outage == (p.fault != Fault::Healthy))
        );
    }

    #[test]
    fn outage_phases_are_chosen_on_the_command_line() {
        let phases = plan_phases(&args(&["--outage", "slow,down", "--duration", "8"]));
        assert_eq!(phases.len(), 4);
        assert_eq!(
            phases[1].fault,
            Fault::Slow {
                delay_ms: 2 * DEMO_UPSTREAM_REQUEST_TIMEOUT_MS
            }
        );
        assert_eq!(phases[2].fault, Fault::Down);
        assert_eq!(phases[0].duration, Duration::from_secs(2));
    }

    #[test]
    fn knobs_out_of_range_are_refused() {
        let parse = |argv: &[&str]| {
            Cli::try_parse_from(std::iter::once("demo").chain(argv.iter().copied())).is_err()
        };
        assert!(parse(&["--users", "0"]));
        assert!(parse(&["--duration", "1"]));
        assert!(parse(&["--outage", "sideways"]));
        assert!(!parse(&["--rate", "500", "--concurrency", "8"]));
    }

    #[test]
    fn the_demo_config_is_valid_and_points_at_the_mock() {
        let secrets = DemoSecrets {
            admin_token: random_token().unwrap(),
        };
        let primary: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        let config = demo_config(
            &args(&["--workers", "1"]),
            Path::new("/tmp/with \"quote\""),
            primary,
            &secrets,
        )
        .unwrap();
        assert_eq!(config.primary.origin, "http://127.0.0.1:4567");
        assert_eq!(config.workers, 1);
        assert!(config.admin_token.is_some());
        assert!(config.issuer.is_none(), "issuer follows the bound address");
        assert_eq!(config.data_dir, Path::new("/tmp/with \"quote\""));
    }
}
