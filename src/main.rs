//! The `backstop` binary: wires the command line to the library and nothing else.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage, 130 a demo cut
//! short by SIGINT/SIGTERM.

mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use backstop::config::{Config, LogFormat, ProcessEnv};
use backstop::token::alg::SigningAlg;
use clap::{Parser, Subcommand, ValueEnum};

/// backstop: a backup authentication engine. It sits in front of your identity provider as a
/// drop-in token endpoint, records each successful sign-in, and keeps applications signed in
/// when the provider goes down.
#[derive(Debug, Parser)]
#[command(name = "backstop", version, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    backstop serve                               # serve on embedded defaults (127.0.0.1:8080)\n  \
    backstop serve --config /etc/backstop.toml   # serve with a config file\n  \
    backstop check-config /etc/backstop.toml     # validate a config file and exit\n  \
    BACKSTOP_ADMIN_TOKEN=$(openssl rand -base64 32) backstop serve   # enable the admin API")]
struct Cli {
    /// Log line format; overrides `[log] format` in the config file.
    #[arg(long, global = true, value_enum)]
    log_format: Option<CliLogFormat>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the token endpoint, health checks and metrics until SIGTERM or SIGINT.
    ///
    /// Without --config, every setting takes its embedded default (see backstop.example.toml).
    /// The admin API starts only when BACKSTOP_ADMIN_TOKEN (or `admin_token_file`) is set.
    /// On SIGTERM: /readyz turns 503, new connections are refused, requests in flight finish
    /// (bounded by `limits.shutdown_grace_ms`), and the process exits 0.
    #[command(
        after_help = "Examples:\n  backstop serve\n  backstop serve --config backstop.toml\n  BACKSTOP_CONFIG=backstop.toml backstop serve --log-format json"
    )]
    Serve {
        /// TOML config file. Missing fields take their defaults.
        #[arg(long, short, env = "BACKSTOP_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a config file (and the secrets it names) and print the effective settings.
    ///
    /// Exits 0 when valid, 2 with a message naming the field, the bad value and what is
    /// allowed when not.
    #[command(after_help = "Example:\n  backstop check-config /etc/backstop/backstop.toml")]
    CheckConfig {
        /// The TOML config file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Run the self-contained outage demo: a mock identity provider, backstop in front of it,
    /// simulated clients refreshing tokens, and the provider failing mid-run.
    ///
    /// Everything runs in this process on free loopback ports, with a temporary data
    /// directory (removed at the end unless --keep-data). Sessions sign in through backstop
    /// (authorization code), then refresh in a loop: a quarter of --duration with the primary
    /// healthy, half in the outage phases (--outage), a quarter after it recovered. Every
    /// second a status line on stderr shows requests/s, the share served by the primary and by
    /// backstop's backup (told apart by the access token's signing key), refusals by reason,
    /// p50/p99 latency, and backstop's mode and breaker. At the end, a summary per phase on
    /// stdout (a table, or JSON with --json). Exit 0 when it ran, 1 when setup failed, 130
    /// when interrupted.
    #[command(
        after_help = "Examples:\n  backstop demo                                 # about a minute, ~3000 sessions\n  backstop demo --users 20 --duration 8         # a quick look\n  backstop demo --rate 500 --outage down,slow   # paced, with the ambiguous-failure case\n  backstop demo --json > demo.json"
    )]
    Demo(demo::DemoArgs),
    /// Create the signing keyring for an algorithm (a current and a next key) in the data
    /// directory and print the current public JWK; with --rotate, rotate an existing keyring
    /// (next becomes current, current stays published as previous) and print the published
    /// keys. Key files are PKCS#8 PEM, mode 0600; the `kid` is the RFC 7638 thumbprint.
    #[command(
        after_help = "Examples:\n  backstop keygen                          # EdDSA keyring in ./backstop-data\n  backstop keygen --alg RS256 --config /etc/backstop.toml\n  backstop keygen --rotate --alg EdDSA --data-dir /var/lib/backstop"
    )]
    Keygen {
        /// Signing algorithm of the keyring: EdDSA, ES256 or RS256.
        #[arg(long, default_value = "EdDSA")]
        alg: String,
        /// Rotate the existing keyring instead of creating one.
        #[arg(long)]
        rotate: bool,
        /// Take `data_dir` from this config file.
        #[arg(
            long,
            short,
            env = "BACKSTOP_CONFIG",
            value_name = "FILE",
            conflicts_with = "data_dir"
        )]
        config: Option<PathBuf>,
        /// The data directory (default: the config's `data_dir`, else ./backstop-data).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Inspect a data directory: shards, record counts, bytes, expiry histogram, segment and
    /// WAL health; or look one record up.
    ///
    /// Read-only: it takes no lock, so it can run next to a serving backstop, and it never
    /// truncates, quarantines or creates anything. A raw credential is read from stdin, never
    /// from the command line (shell history and `ps` would keep it).
    #[command(
        after_help = "Examples:\n  backstop inspect ./backstop-data\n  backstop inspect ./backstop-data --session tenant1 alice dev-42 native-app https://api.example.com\n  backstop inspect ./backstop-data --artifact 3fa1...e9 (64 hex digits, as logged)\n  printf %s \"$REFRESH_TOKEN\" | backstop inspect ./backstop-data --refresh-token-stdin"
    )]
    Inspect {
        /// The data directory to inspect.
        #[arg(value_name = "DATA_DIR")]
        data_dir: PathBuf,
        /// Look up one session by its identity.
        #[arg(long, num_args = 5, value_names = ["TENANT", "USER", "DEVICE", "APP", "RESOURCE"], conflicts_with_all = ["artifact", "refresh_token_stdin"])]
        session: Option<Vec<String>>,
        /// Look up one artifact by its digest (64 hex digits).
        #[arg(long, value_name = "HEX", conflicts_with = "refresh_token_stdin")]
        artifact: Option<String>,
        /// Look up the artifact of a refresh token read from stdin.
        #[arg(long)]
        refresh_token_stdin: bool,
    },
    /// Fill a data directory with a synthetic population of sessions for load tests (never a
    /// production one): snapshots and refresh tokens written through the store, durably.
    ///
    /// Refresh tokens are derived from --token-seed and each session's index, so a load
    /// generator regenerates them; --tokens-out writes the first --tokens-max of them as
    /// `client_id refresh_token resource [dpop:KEY]` lines for tools that cannot.
    #[command(after_help = "Example:
  backstop seed --data-dir /tmp/bs --sessions 10000000 --issuer http://127.0.0.1:8080")]
    Seed {
        /// The data directory to fill (created if missing; must not be in use).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// How many sessions.
        #[arg(long, default_value_t = 100_000)]
        sessions: u64,
        /// The issuer backstop will serve as (the templates' `iss`).
        #[arg(long)]
        issuer: String,
        /// The algorithm the simulated primary signed with: EdDSA, ES256 or RS256.
        #[arg(long, default_value = "EdDSA")]
        alg: String,
        /// Distinct client applications.
        #[arg(long, default_value_t = 4)]
        apps: u32,
        /// Distinct resources.
        #[arg(long, default_value_t = 2)]
        resources: u32,
        /// Seed of the refresh tokens.
        #[arg(long, default_value_t = 1)]
        token_seed: u64,
        /// Write `client_id refresh_token resource [dpop:KEY]` lines for the first --tokens-max
        /// sessions.
        #[arg(long, value_name = "FILE")]
        tokens_out: Option<PathBuf>,
        /// How many lines --tokens-out writes.
        #[arg(long, default_value_t = 100_000)]
        tokens_max: u64,
        /// Grants without `openid`: a refresh mints an access token only.
        #[arg(long)]
        without_id_token: bool,
        /// Bind every K-th session (indices 0, K, 2K, …) to a DPoP key derived from
        /// --token-seed and its index; its --tokens-out line gets a 4th field
        /// `dpop:<base64url of the 32-byte Ed25519 private seed>`. 0: none.
        #[arg(long, value_name = "K", default_value_t = 0)]
        dpop_every: u64,
    },
    /// Measure one bare signature of an algorithm with backstop's signer (the benchmark floor).
    #[command(hide = true)]
    BenchSign {
        /// EdDSA, ES256 or RS256.
        #[arg(long, default_value = "EdDSA")]
        alg: String,
        /// How long to sign for.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Bytes of the signed message (a token's signing input: header.payload).
        #[arg(long, default_value_t = 700)]
        message_bytes: usize,
    },
}

/// mimalloc instead of glibc malloc: store ingest is allocation-bound (≈ 35 % of cycles in
/// malloc/free under glibc) and ran 1.9–2.2 × faster with it in the same bench (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;
/// `backstop demo` cut short by SIGINT/SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config, cli.log_format),
        Command::CheckConfig { file } => check_config(&file),
        Command::Demo(args) => run_demo(&args, cli.log_format),
        Command::Keygen {
            alg,
            rotate,
            config,
            data_dir,
        } => keygen(&alg, rotate, config, data_dir),
        Command::Inspect {
            data_dir,
            session,
            artifact,
            refresh_token_stdin,
        } => inspect(&data_dir, session, artifact, refresh_token_stdin),
        Command::Seed {
            data_dir,
            sessions,
            issuer,
            alg,
            apps,
            resources,
            token_seed,
            tokens_out,
            tokens_max,
            without_id_token,
            dpop_every,
        } => {
            let Some(alg) = SigningAlg::from_name(&alg) else {
                eprintln!("backstop: --alg {alg:?} is not one of EdDSA, ES256, RS256");
                return ExitCode::from(EXIT_CONFIG);
            };
            let spec = backstop::seed::SeedSpec {
                sessions,
                alg,
                issuer,
                apps,
                resources,
                token_seed,
                window_secs: 3 * 86_400,
                id_token: !without_id_token,
                dpop_every,
            };
            seed(&data_dir, &spec, tokens_out.as_deref(), tokens_max)
        }
        Command::BenchSign {
            alg,
            seconds,
            message_bytes,
        } => bench_sign(&alg, seconds, message_bytes),
    }
}

/// The CLI is an edge: it times what it reports.
#[allow(clippy::disallowed_methods)]
fn seed(
    data_dir: &std::path::Path,
    spec: &backstop::seed::SeedSpec,
    tokens_out: Option<&std::path::Path>,
    tokens_max: u64,
) -> ExitCode {
    use backstop::store::{Store, StoreOpts};
    use std::io::Write as _;
    let store = match Store::open(data_dir, StoreOpts::manual()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "backstop: cannot open the store in {}: {e}",
                data_dir.display()
            );
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let bar = indicatif::ProgressBar::new(spec.sessions);
    let now = i64::try_from(unix_now_secs()).unwrap_or(i64::MAX);
    let started = std::time::Instant::now();
    let took = match backstop::seed::seed(&store, spec, now, |n| bar.set_position(n)) {
        Ok(()) => started.elapsed(),
        Err(e) => {
            bar.abandon();
            eprintln!("backstop: seeding failed: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    bar.finish();
    store.close();
    if let Some(path) = tokens_out {
        let write = || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
            for i in 0..tokens_max.min(spec.sessions) {
                writeln!(out, "{}", backstop::seed::client_of(spec, i).line())?;
            }
            out.flush()
        };
        if let Err(e) = write() {
            eprintln!("backstop: cannot write {}: {e}", path.display());
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    print_line(&format!(
        "seeded {} sessions in {:.1} s ({:.0}/s)",
        spec.sessions,
        took.as_secs_f64(),
        spec.sessions as f64 / took.as_secs_f64().max(1e-9)
    ));
    ExitCode::SUCCESS
}

/// A measurement: it reads the clock by nature.
#[allow(clippy::disallowed_methods)]
fn bench_sign(alg: &str, seconds: f64, message_bytes: usize) -> ExitCode {
    use backstop::token::sign::{Ed25519Backend, SignatureBuf, SigningKey};
    let Some(alg) = SigningAlg::from_name(alg) else {
        eprintln!("backstop: --alg {alg:?} is not one of EdDSA, ES256, RS256");
        return ExitCode::from(EXIT_CONFIG);
    };
    let signer = match SigningKey::generate(alg).and_then(|k| k.signer(Ed25519Backend::AwsLc)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("backstop: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    // A token-sized signing input, as minting signs.
    let msg = vec![b'a'; message_bytes.min(1 << 20)];
    let mut sig: SignatureBuf = [0; 512];
    let cpu_ns_before = thread_cpu_ns();
    let started = std::time::Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        for _ in 0..100 {
            if signer.sign(&msg, &mut sig).is_err() {
                eprintln!("backstop: signing failed");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
        n += 100;
    }
    let wall_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    // The servers it is compared with are measured in CPU time (/proc/PID/stat); on a busy
    // vCPU wall time also counts other processes' time slices, so report this thread's CPU
    // time when the kernel gives it (`/proc/thread-self/schedstat`, nanoseconds on the CPU).
    let us = match (cpu_ns_before, thread_cpu_ns()) {
        (Some(before), Some(after)) if after > before => (after - before) as f64 / 1e3 / n as f64,
        _ => wall_us,
    };
    print_line(&format!(
        "{{\"alg\":\"{}\",\"signatures\":{n},\"us_per_signature\":{us:.3},\"wall_us_per_signature\":{wall_us:.3}}}",
        alg.name()
    ));
    ExitCode::SUCCESS
}

/// This thread's time on a CPU so far, in nanoseconds (first field of
/// `/proc/thread-self/schedstat`); `None` where the kernel does not provide it.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn serve(config_path: Option<PathBuf>, log_format: Option<CliLogFormat>) -> ExitCode {
    let config = match Config::load(config_path.as_deref(), &ProcessEnv) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("backstop: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let format = match log_format {
        Some(CliLogFormat::Json) => LogFormat::Json,
        Some(CliLogFormat::Text) => LogFormat::Text,
        None => config.log.format,
    };
    init_logging(format, &config.log.level);

    let server = match backstop::server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("backstop: {e}");
            // A bad policy file is configuration, like a bad config value.
            return ExitCode::from(if e.is_config() {
                EXIT_CONFIG
            } else {
                EXIT_RUNTIME
            });
        }
    };
    // One line per listener on stdout, for operators and for tests that start on port 0.
    print_line(&format!(
        "backstop: listening on http://{}",
        server.public_addr()
    ));
    if let Some(addr) = server.admin_addr() {
        print_line(&format!("backstop: admin API on http://{addr}"));
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            eprintln!("backstop: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn run_demo(args: &demo::DemoArgs, log_format: Option<CliLogFormat>) -> ExitCode {
    // backstop's own logs would tear the status line: errors only, unless RUST_LOG says more.
    let format = match log_format {
        Some(CliLogFormat::Json) => LogFormat::Json,
        _ => LogFormat::Text,
    };
    init_logging(format, "error");
    match demo::run(args) {
        Ok(demo::Ending::Completed) => ExitCode::SUCCESS,
        Ok(demo::Ending::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            eprintln!("backstop demo: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(Some(file), &ProcessEnv) {
        Ok(c) => {
            print_line(&format!("backstop: config OK: {}", file.display()));
            print_line(&format!("  listen         = {}", c.listen));
            print_line(&format!(
                "  admin_listen   = {} (admin API {})",
                c.admin_listen,
                if c.admin_token.is_some() {
                    "enabled"
                } else {
                    "disabled: no admin token"
                }
            ));
            print_line(&format!("  data_dir       = {}", c.data_dir.display()));
            print_line(&format!("  workers        = {}", c.workers));
            let issuer = c
                .issuer
                .clone()
                .unwrap_or_else(|| format!("http://{} (default)", c.listen));
            print_line(&format!("  issuer         = {issuer}"));
            print_line(&format!("  primary.origin = {}", c.primary.origin));
            print_line(&format!(
                "  ssf            = {}",
                match &c.ssf {
                    Some(ssf) => format!("receiving from {}", ssf.issuer),
                    None => "disabled".to_owned(),
                }
            ));
            let Some(policy_file) = &c.policy.file else {
                print_line("  policy.file    = (none: no Conditional Access policies)");
                return ExitCode::SUCCESS;
            };
            match backstop::policy::check_file(policy_file) {
                Ok(loaded) => {
                    print_line(&format!(
                        "  policy.file    = {} ({} policies, {} named locations)",
                        policy_file.display(),
                        loaded.set.policy_count(),
                        loaded.set.location_count()
                    ));
                    if loaded.unknown_field_count > 0 {
                        print_line(&format!(
                            "    {} field(s) backstop does not model are ignored: {}",
                            loaded.unknown_field_count,
                            loaded.unknown_fields.join(", ")
                        ));
                    }
                    for warning in &loaded.warnings {
                        print_line(&format!(
                            "    warning: {}: {:?} (the policy fails closed in an outage)",
                            warning.path, warning.kind
                        ));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("backstop: invalid policy file: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Err(e) => {
            eprintln!("backstop: invalid configuration: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn keygen(alg: &str, rotate: bool, config: Option<PathBuf>, data_dir: Option<PathBuf>) -> ExitCode {
    use backstop::token::{alg::SigningAlg, keyring};
    let Some(alg) = SigningAlg::from_name(alg) else {
        eprintln!(
            "backstop keygen: --alg {alg:?} is not a signing algorithm; use EdDSA, ES256 or RS256"
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let dir = match (data_dir, config) {
        (Some(dir), _) => dir,
        (None, path) => match Config::load(path.as_deref(), &ProcessEnv) {
            Ok(c) => c.data_dir,
            Err(e) => {
                eprintln!("backstop: invalid configuration: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let now_secs = unix_now_secs();
    let result = if rotate {
        keyring::rotate(&dir, alg, now_secs).map(|ring| {
            let keys: Vec<String> = ring.published().iter().map(|k| k.to_json()).collect();
            format!("{{\"keys\":[{}]}}", keys.join(","))
        })
    } else {
        keyring::keygen(&dir, alg, now_secs).map(|jwk| jwk.to_json())
    };
    match result {
        Ok(json) => {
            print_line(&json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("backstop keygen: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Wall-clock seconds: the CLI is an edge, like `server/`, and may read the clock.
#[allow(clippy::disallowed_methods)]
fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn inspect(
    data_dir: &std::path::Path,
    session: Option<Vec<String>>,
    artifact: Option<String>,
    refresh_token_stdin: bool,
) -> ExitCode {
    use backstop::store::inspect::{self, ArtifactLookup, InspectError, InspectQuery};
    use backstop::store::model::{ArtifactDigest, ArtifactKind, SessionIdentity};
    let query = match (session, artifact, refresh_token_stdin) {
        (Some(ids), _, _) => match <[String; 5]>::try_from(ids) {
            Ok([tenant, user, device, app, resource]) => InspectQuery::Session(SessionIdentity {
                tenant,
                user,
                device,
                app,
                resource,
            }),
            Err(_) => {
                eprintln!("backstop inspect: --session takes TENANT USER DEVICE APP RESOURCE");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (None, Some(hex), _) => match ArtifactDigest::from_hex(&hex) {
            Some(digest) => InspectQuery::Artifact(ArtifactLookup::Digest(digest)),
            None => {
                eprintln!("backstop inspect: --artifact takes a digest of 64 hex digits");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (None, None, true) => {
            let mut raw = Vec::new();
            let limit = backstop::limits::FORM_VALUE_BYTES_MAX as u64;
            if let Err(e) = std::io::Read::read_to_end(
                &mut std::io::Read::take(std::io::stdin(), limit),
                &mut raw,
            ) {
                eprintln!("backstop inspect: reading the refresh token from stdin: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
            let raw = raw.trim_ascii().to_vec();
            InspectQuery::Artifact(ArtifactLookup::Credential {
                kind: ArtifactKind::RefreshToken,
                raw,
            })
        }
        (None, None, false) => InspectQuery::Summary,
    };
    let now = i64::try_from(unix_now_secs()).unwrap_or(i64::MAX);
    let mut out = std::io::stdout().lock();
    match inspect::run(data_dir, &query, now, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): not an error worth a message.
        Err(InspectError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e @ InspectError::NotAStore(_)) => {
            eprintln!("backstop inspect: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("backstop inspect: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// One line on stdout. A closed stdout (`backstop serve | head -1`) must not take the server
/// down, so write errors are ignored rather than panicking as `println!` would.
fn print_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    // `level` was validated with the config; RUST_LOG, when set, wins for debugging sessions.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
