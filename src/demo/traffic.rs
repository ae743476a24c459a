//! The simulated population and its traffic: sign-in of every session (a grant at the mock
//! primary, then the code exchanged through backstop's token endpoint, so backstop records the
//! session), then refresh grants in a closed loop (optionally paced) while the phases switch
//! the primary's faults, with a status line once a second.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backstop_mock_primary::{Fault, GrantRequest, MockHandle};
use hdrhistogram::Histogram;

use super::DemoArgs;
use super::client::{Http, Signers, form_encode};
use super::stats::{self, Outcome, PhaseReport, PrimaryState, RunReport, Tally};

/// The tenant every simulated user lives in (their home tenant).
const TENANT: &str = "contoso-demo";

/// Sign-ins in flight at once.
const SIGN_IN_CONCURRENCY: usize = 32;

/// Longest a client honours a `Retry-After` (and how long it waits after a refusal or failure
/// without one, at most): real clients back off, and a refusal answered in microseconds would
/// otherwise swamp the counts in a closed loop.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const BACKOFF_DEFAULT: Duration = Duration::from_secs(1);

/// How long the status line waits for backstop's admin status.
const ADMIN_STATUS_TIMEOUT: Duration = Duration::from_millis(300);

/// A phase of refresh traffic.
#[derive(Debug, Clone)]
pub struct PhaseSpec {
    /// Its name in the status line and summary.
    pub name: String,
    /// The primary's state, for the report.
    pub state: PrimaryState,
    /// The fault the mock primary is put in.
    pub fault: Fault,
    /// Whether it is an outage phase.
    pub outage: bool,
    /// How long it lasts.
    pub duration: Duration,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The knobs.
    pub args: DemoArgs,
    /// users × devices × apps × resources.
    pub sessions: u64,
    /// The refresh phases, in order.
    pub phases: Vec<PhaseSpec>,
    /// Whether stderr is a terminal (rewrite the status line in place).
    pub status_tty: bool,
}

/// backstop's admin API, for the mode and breaker on the status line.
pub struct Admin {
    /// A client to the admin listener.
    pub http: Http,
    /// Its bearer token.
    pub token: String,
}

/// What the traffic runs against.
pub struct Env {
    /// The clients' connection pool to backstop.
    pub http: Http,
    /// backstop's admin API, when it is up.
    pub admin: Option<Admin>,
    /// The mock primary (grants, faults).
    pub mock: Arc<MockHandle>,
    /// Who signs what.
    pub signers: Signers,
    /// The token endpoint's path on backstop.
    pub token_path: String,
    /// Set when backstop stopped (SIGINT/SIGTERM): the run ends early.
    pub server_stopped: Arc<AtomicBool>,
    /// The empty latency histogram tallies are made from.
    pub latency_template: Histogram<u64>,
}

/// One signed-in client session: an app on a device, for a user and a resource.
struct Session {
    client_id: Arc<str>,
    refresh_token: String,
}

/// Sessions waiting for their next refresh: ready ones, and ones backing off after a refusal
/// (in the order they started to, which is nearly the order they end: back-offs are alike).
#[derive(Default)]
struct Pool {
    ready: VecDeque<Session>,
    backing_off: VecDeque<(Instant, Session)>,
}

impl Pool {
    fn take(&mut self, now: Instant) -> Option<Session> {
        while self
            .backing_off
            .front()
            .is_some_and(|(until, _)| *until <= now)
        {
            if let Some((_, session)) = self.backing_off.pop_front() {
                self.ready.push_back(session);
            }
        }
        self.ready.pop_front()
    }

    fn put(&mut self, session: Session) {
        self.ready.push_back(session);
    }

    fn put_backing_off(&mut self, session: Session, until: Instant) {
        self.backing_off.push_back((until, session));
    }
}

/// Tallies by phase, plus the current second for the status line.
struct Recorder {
    template: Histogram<u64>,
    /// Index into `tallies` of the phase requests are attributed to when they start.
    phase: usize,
    phase_started: Instant,
    tallies: Vec<Tally>,
    elapsed: Vec<Duration>,
    second: Tally,
}

impl Recorder {
    fn record(&mut self, phase: usize, outcome: &Outcome, latency: Duration) {
        if let Some(t) = self.tallies.get_mut(phase) {
            t.record(outcome, latency);
        }
        self.second.record(outcome, latency);
    }

    fn enter(&mut self, phase: usize, now: Instant) {
        if let Some(e) = self.elapsed.get_mut(self.phase) {
            *e = now.saturating_duration_since(self.phase_started);
        }
        self.phase = phase;
        self.phase_started = now;
    }

    fn take_second(&mut self) -> Tally {
        std::mem::replace(&mut self.second, Tally::new(&self.template))
    }
}

struct Shared {
    env: Env,
    recorder: Mutex<Recorder>,
    pool: Mutex<Pool>,
    client_ids: Vec<Arc<str>>,
    /// Ends the workers of the current stage.
    stop: AtomicBool,
    /// SIGINT/SIGTERM arrived (backstop drains on the same signals), or backstop stopped.
    interrupted: AtomicBool,
    /// Next session index to sign in.
    next_sign_in: AtomicU64,
    sessions: u64,
    signed_in: AtomicU64,
    lost: AtomicU64,
    pacer: Option<Pacer>,
    args: DemoArgs,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked mid-update leaves counts that are still counts.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Spaces request starts `interval` apart over all workers, without catching up bursts.
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let slot = {
            let mut next = lock(&self.next);
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(slot)).await;
    }
}

/// Runs the sign-in and every phase, and returns what happened.
pub async fn run(plan: Plan, env: Env) -> anyhow::Result<RunReport> {
    let now = Instant::now();
    let phase_count = plan.phases.len() + 1;
    let recorder = Recorder {
        phase: 0,
        phase_started: now,
        tallies: (0..phase_count)
            .map(|_| Tally::new(&env.latency_template))
            .collect(),
        elapsed: vec![Duration::ZERO; phase_count],
        second: Tally::new(&env.latency_template),
        template: env.latency_template.clone(),
    };
    let client_ids = (0..plan.args.apps)
        .map(|a| Arc::from(format!("app-{a}").as_str()))
        .collect();
    let pacer = plan.args.rate.map(|rate| Pacer {
        interval: Duration::from_secs(1) / u32::try_from(rate).unwrap_or(u32::MAX),
        next: Mutex::new(now),
    });
    let shared = Arc::new(Shared {
        env,
        recorder: Mutex::new(recorder),
        pool: Mutex::new(Pool::default()),
        client_ids,
        stop: AtomicBool::new(false),
        interrupted: AtomicBool::new(false),
        next_sign_in: AtomicU64::new(0),
        sessions: plan.sessions,
        signed_in: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        pacer,
        args: plan.args.clone(),
    });
    let watcher = tokio::spawn(watch_for_interruption(shared.clone()));
    let mut names = vec!["sign-in".to_string()];
    names.extend(plan.phases.iter().map(|p| p.name.clone()));
    let ticker = tokio::spawn(status_ticker(
        shared.clone(),
        names.clone(),
        plan.status_tty && !plan.args.quiet,
        plan.args.quiet,
    ));

    // Sign-in: every session once, through backstop.
    super::note(&format!(
        "signing in {} sessions through backstop...",
        plan.sessions
    ));
    let workers: Vec<_> = (0..SIGN_IN_CONCURRENCY)
        .map(|_| tokio::spawn(sign_in_worker(shared.clone())))
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let signed_in = shared.signed_in.load(Ordering::Relaxed);
    let interrupted = shared.interrupted.load(Ordering::Relaxed);
    if signed_in == 0 && !interrupted {
        ticker.abort();
        watcher.abort();
        let sign_in = lock(&shared.recorder).tallies.first().map(|t| {
            t.refused
                .iter()
                .chain(t.failed.iter())
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        });
        anyhow::bail!(
            "no session could sign in through backstop ({})",
            sign_in.unwrap_or_default()
        );
    }

    // Refresh traffic, phase by phase. A phase starts, then the primary's fault changes: a
    // request sent in the moments before the fault is in effect counts in the new phase.
    let concurrency = plan.args.concurrency.min(signed_in.max(1));
    let mut workers = Vec::new();
    let mut interrupted = interrupted;
    for (i, phase) in plan.phases.iter().enumerate() {
        if interrupted {
            break;
        }
        lock(&shared.recorder).enter(i + 1, Instant::now());
        if let Err(e) = shared.env.mock.set_fault_async(phase.fault).await {
            shared.stop.store(true, Ordering::Relaxed);
            anyhow::bail!("setting the mock primary to {}: {e}", phase.state.name());
        }
        if workers.is_empty() {
            workers = (0..concurrency)
                .map(|_| tokio::spawn(refresh_worker(shared.clone())))
                .collect();
        }
        let end = Instant::now() + phase.duration;
        while Instant::now() < end {
            if shared.interrupted.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            let step = end
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            tokio::time::sleep(step).await;
        }
    }
    // Close the last phase, then let requests in flight finish (bounded by the client timeout).
    lock(&shared.recorder).enter(phase_count, Instant::now());
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    ticker.abort();
    watcher.abort();
    if plan.status_tty && !plan.args.quiet {
        let _ = writeln!(std::io::stderr().lock());
    }
    if let Err(e) = shared.env.mock.set_fault_async(Fault::Healthy).await {
        super::note(&format!("could not bring the mock primary back: {e}"));
    }

    let backstop_counters = match shared.env.http.get("/metrics", None).await {
        Ok(reply) if reply.status.is_success() => {
            stats::failover_counters(&String::from_utf8_lossy(&reply.body))
        }
        _ => Vec::new(),
    };

    let recorder = lock(&shared.recorder);
    let mut states = vec![(PrimaryState::Healthy, false)];
    states.extend(plan.phases.iter().map(|p| (p.state, p.outage)));
    let phases = names
        .into_iter()
        .zip(states)
        .zip(recorder.tallies.iter().zip(recorder.elapsed.iter()))
        .map(|((name, (state, outage)), (tally, elapsed))| PhaseReport {
            name,
            primary: state,
            outage,
            elapsed: *elapsed,
            tally: tally.clone(),
        })
        // Phases an interruption never reached (or reached as it struck) are left out.
        .filter(|p| p.name == "sign-in" || p.tally.requests > 0 || !interrupted)
        .collect();
    let args = &plan.args;
    Ok(RunReport {
        population: format!(
            "{} sessions = {} users × {} devices × {} apps × {} resources; {} s of refresh \
             traffic, {}",
            plan.sessions,
            args.users,
            args.devices_per_user,
            args.apps,
            args.resources,
            args.duration,
            match args.rate {
                Some(rate) => format!("{rate} req/s paced, at most {concurrency} in flight"),
                None => format!("closed loop, {concurrency} in flight"),
            }
        ),
        sessions_planned: plan.sessions,
        sessions_signed_in: signed_in,
        sessions_lost: shared.lost.load(Ordering::Relaxed),
        phases,
        interrupted,
        backstop_counters,
    })
}

/// The grant of session `index`: its user, device, app and resource, and the sign-in's facts.
fn grant_for(index: u64, args: &DemoArgs, client_id: &str) -> GrantRequest {
    let resource = index % args.resources;
    let device = (index / (args.resources * args.apps)) % args.devices_per_user;
    let user = index / (args.resources * args.apps * args.devices_per_user);
    let mut grant = GrantRequest::new(
        &format!("user-{user:06}"),
        TENANT,
        client_id,
        "openid offline_access",
    );
    grant.resource = Some(format!("https://api{resource}.demo.test"));
    // Two users in three signed in with MFA; groups and roles vary so templates differ.
    grant.amr = if user.is_multiple_of(3) {
        vec!["pwd".into()]
    } else {
        vec!["pwd".into(), "mfa".into()]
    };
    grant.acr = Some(if user.is_multiple_of(3) { "1" } else { "2" }.into());
    grant.groups = vec![format!("group-{}", user % 7)];
    grant.roles = vec![
        if user.is_multiple_of(10) {
            "admin"
        } else {
            "reader"
        }
        .into(),
    ];
    grant.device = Some(format!("device-{user:06}-{device}"));
    grant.nonce = Some(format!("nonce-{index}"));
    grant
}

fn app_of(index: u64, args: &DemoArgs) -> usize {
    usize::try_from((index / args.resources) % args.apps).unwrap_or(0)
}

async fn sign_in_worker(shared: Arc<Shared>) {
    loop {
        if shared.interrupted.load(Ordering::Relaxed) {
            return;
        }
        let index = shared.next_sign_in.fetch_add(1, Ordering::Relaxed);
        if index >= shared.sessions {
            return;
        }
        let Some(client_id) = shared.client_ids.get(app_of(index, &shared.args)).cloned() else {
            return;
        };
        let started = Instant::now();
        let grant = grant_for(index, &shared.args, &client_id);
        let outcome = match shared.env.mock.create_grant(grant) {
            Err(e) => {
                super::note(&format!("the mock primary refused a grant: {e}"));
                Outcome::Failed("mock grant refused")
            }
            Ok(code) => {
                let form = format!(
                    "grant_type=authorization_code&code={}&client_id={}",
                    form_encode(&code),
                    form_encode(&client_id)
                );
                match shared
                    .env
                    .http
                    .post_form(&shared.env.token_path, form)
                    .await
                {
                    Err(e) => Outcome::Failed(e.name()),
                    Ok(reply) => {
                        let granted = shared.env.signers.classify(&reply);
                        if let (Outcome::Primary | Outcome::Backup, Some(refresh_token)) =
                            (&granted.outcome, granted.refresh_token)
                        {
                            shared.signed_in.fetch_add(1, Ordering::Relaxed);
                            lock(&shared.pool).put(Session {
                                client_id,
                                refresh_token,
                            });
                        }
                        granted.outcome
                    }
                }
            }
        };
        lock(&shared.recorder).record(0, &outcome, started.elapsed());
    }
}

async fn refresh_worker(shared: Arc<Shared>) {
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        if let Some(pacer) = &shared.pacer {
            pacer.wait().await;
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
        }
        let Some(mut session) = lock(&shared.pool).take(Instant::now()) else {
            // Every session is busy (or lost): wait for one to come back.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let phase = lock(&shared.recorder).phase;
        let form = format!(
            "grant_type=refresh_token&refresh_token={}&client_id={}",
            form_encode(&session.refresh_token),
            form_encode(&session.client_id)
        );
        let started = Instant::now();
        let result = shared
            .env
            .http
            .post_form(&shared.env.token_path, form)
            .await;
        let latency = started.elapsed();
        let mut retry_after = None;
        let outcome = match result {
            Err(e) => Outcome::Failed(e.name()),
            Ok(reply) => {
                retry_after = reply.retry_after_secs.map(Duration::from_secs);
                let granted = shared.env.signers.classify(&reply);
                // The primary rotates refresh tokens; the backup echoes the presented one.
                if let Some(next) = granted.refresh_token {
                    session.refresh_token = next;
                }
                granted.outcome
            }
        };
        lock(&shared.recorder).record(phase, &outcome, latency);
        match &outcome {
            Outcome::Refused { status: 400, error } if error == "invalid_grant" => {
                // A real client would send its user through sign-in again; this one retires.
                shared.lost.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Refused { .. } | Outcome::Failed(_) => {
                let wait = retry_after.unwrap_or(BACKOFF_DEFAULT).min(BACKOFF_MAX);
                lock(&shared.pool).put_backing_off(session, Instant::now() + wait);
            }
            Outcome::Primary | Outcome::Backup | Outcome::UnknownSigner => {
                lock(&shared.pool).put(session);
            }
        }
    }
}

/// Ends the run early on SIGINT or SIGTERM (which also make backstop drain: its handlers see
/// the same signals), or when backstop stopped for any other reason. Clients stop sending at
/// once, so backstop's drain does not show up as connection errors in the figures.
async fn watch_for_interruption(shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let halt = |shared: &Shared| {
        shared.interrupted.store(true, Ordering::Relaxed);
        shared.stop.store(true, Ordering::Relaxed);
    };
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without our own handlers, backstop stopping is the signal.
        while !shared.env.server_stopped.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        halt(&shared);
        return;
    };
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = poll.tick() => {
                if shared.env.server_stopped.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    }
    halt(&shared);
}

/// Once a second: the last second's traffic, and backstop's mode and breaker.
async fn status_ticker(shared: Arc<Shared>, names: Vec<String>, tty: bool, quiet: bool) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    let mut last_phase = 0;
    let mut printed = false;
    loop {
        interval.tick().await;
        let (phase, since, second) = {
            let mut r = lock(&shared.recorder);
            let since = r.phase_started.elapsed();
            (r.phase, since, r.take_second())
        };
        if quiet {
            continue;
        }
        let backstop = admin_status(shared.env.admin.as_ref()).await;
        let name = names.get(phase).map_or("finishing", String::as_str);
        let mut line = stats::status_line(name, since, &second, &backstop);
        if phase == 0 {
            line.push_str(&format!(
                "  signed in {}/{}",
                shared.signed_in.load(Ordering::Relaxed),
                shared.sessions
            ));
        }
        let mut err = std::io::stderr().lock();
        if tty {
            // Each phase keeps its last line; within a phase the line is rewritten in place,
            // cut to the terminal's width (a wrapped line cannot be rewritten with `\r`).
            if phase != last_phase && printed {
                let _ = writeln!(err);
            }
            let width = rustix::termios::tcgetwinsize(std::io::stderr())
                .map_or(0, |w| usize::from(w.ws_col));
            let shown: String = if width > 1 {
                line.chars().take(width - 1).collect()
            } else {
                line
            };
            let _ = write!(err, "\r{shown}\x1b[K");
            let _ = err.flush();
        } else {
            let _ = writeln!(err, "{line}");
        }
        printed = true;
        last_phase = phase;
    }
}

async fn admin_status(admin: Option<&Admin>) -> String {
    let Some(admin) = admin else {
        return String::new();
    };
    let fetch = admin.http.get("/admin/status", Some(&admin.token));
    match tokio::time::timeout(ADMIN_STATUS_TIMEOUT, fetch).await {
        Ok(Ok(reply)) if reply.status.is_success() => {
            let json: serde_json::Value =
                serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
            let field = |name: &str| {
                json.get(name)
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(16)
                    .collect::<String>()
            };
            format!("{}, breaker {}", field("mode"), field("breaker"))
        }
        _ => "admin status unavailable".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn args(users: u64, devices: u64, apps: u64, resources: u64) -> DemoArgs {
        DemoArgs {
            users,
            devices_per_user: devices,
            apps,
            resources,
            duration: 4,
            concurrency: 1,
            rate: None,
            outage: vec![],
            workers: 1,
            keep_data: false,
            json: false,
            quiet: true,
        }
    }

    #[test]
    fn every_session_is_a_distinct_user_device_app_resource() {
        let a = args(3, 2, 2, 3);
        let total = 3 * 2 * 2 * 3;
        let mut seen = BTreeSet::new();
        for i in 0..total {
            let app = app_of(i, &a);
            let client_id = format!("app-{app}");
            let g = grant_for(i, &a, &client_id);
            assert!(app < 2);
            assert!(seen.insert((g.user, g.device, g.client_id, g.resource)));
        }
        assert_eq!(seen.len(), usize::try_from(total).unwrap());
    }

    #[test]
    fn devices_belong_to_their_user() {
        let a = args(2, 2, 1, 1);
        for i in 0..4 {
            let g = grant_for(i, &a, "app-0");
            let user_number = g.user.trim_start_matches("user-");
            assert!(g.device.unwrap().contains(user_number));
        }
    }
}
