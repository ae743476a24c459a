//! Metrics: per-worker counters written without locks on the hot path, summed on scrape and
//! rendered in the Prometheus text exposition format (version 0.0.4).
//!
//! Each worker thread owns one `WorkerMetrics` and is its only writer, so an increment is a
//! relaxed load and store (no locked read-modify-write, no cache-line ping-pong between cores).
//! A scrape on any thread reads every worker's cells with relaxed loads; a value may be a few
//! increments behind, never torn. The label space is fixed at compile time (routes, status
//! slots, buckets), so there is no map, no allocation and no lock on the request path. We write
//! the exposition text by hand: it is a few lines, and the common crates keep label families in
//! a locked map, which is exactly what the hot path must avoid.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a request was for: the `route` label. Fixed, so its counters can live in arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// The discovery document, served from backstop's cache.
    Discovery,
    /// The merged JWKS, served from backstop's cache.
    Jwks,
    /// The primary's token endpoint: forwarded and recorded, or answered by the backup.
    Token,
    /// The Shared Signals push endpoint.
    Ssf,
    /// Forwarded to the primary (everything backstop does not answer itself).
    Proxy,
    /// The admin API (served on its own listener).
    Admin,
}

impl Route {
    /// Every route, in label order.
    pub const ALL: [Route; 9] = [
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Discovery,
        Route::Jwks,
        Route::Token,
        Route::Ssf,
        Route::Proxy,
        Route::Admin,
    ];

    /// The `route` label value.
    pub const fn label(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Discovery => "discovery",
            Route::Jwks => "jwks",
            Route::Token => "token",
            Route::Ssf => "ssf",
            Route::Proxy => "proxy",
            Route::Admin => "admin",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

const ROUTE_COUNT: usize = Route::ALL.len();

/// Status codes with a counter of their own; anything else counts under `other`.
const STATUS_SLOTS: [u16; 21] = [
    200, 202, 204, 301, 302, 303, 304, 400, 401, 403, 404, 405, 408, 413, 414, 415, 429, 431, 500,
    502, 503,
];
const STATUS_SLOT_COUNT: usize = STATUS_SLOTS.len() + 1;

fn status_slot(status: u16) -> usize {
    STATUS_SLOTS
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUS_SLOTS.len())
}

fn status_label(slot: usize) -> String {
    STATUS_SLOTS
        .get(slot)
        .map_or_else(|| "other".to_string(), |s| s.to_string())
}

/// Upper bounds of the latency histogram buckets, in microseconds (+Inf is implicit).
const LATENCY_BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];
const BUCKET_COUNT: usize = LATENCY_BUCKETS_US.len() + 1;

/// A latency in microseconds and the histogram bucket it counts in (the last is `+Inf`).
fn latency_bucket(latency: Duration) -> (u64, usize) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    let bucket = LATENCY_BUCKETS_US
        .iter()
        .position(|&b| us <= b)
        .unwrap_or(BUCKET_COUNT - 1);
    (us, bucket)
}

/// Why a connection ended other than by the client closing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// Closed by us: no new request within the keep-alive idle limit.
    IdleTimeout,
    /// Closed by us: the request head did not arrive within the header-read limit.
    HeaderTimeout,
    /// Refused at accept: the worker's connection limit was reached (answered 503).
    OverLimit,
    /// The request head was too large or had too many headers (answered 431).
    HeadTooLarge,
    /// The request could not be parsed as HTTP/1.1 (answered 400 by hyper).
    Malformed,
    /// An I/O error on the socket.
    Io,
    /// Closed at the end of the graceful-shutdown grace period with a request still running.
    ShutdownDeadline,
}

impl ConnectionEnd {
    const ALL: [ConnectionEnd; 7] = [
        ConnectionEnd::IdleTimeout,
        ConnectionEnd::HeaderTimeout,
        ConnectionEnd::OverLimit,
        ConnectionEnd::HeadTooLarge,
        ConnectionEnd::Malformed,
        ConnectionEnd::Io,
        ConnectionEnd::ShutdownDeadline,
    ];

    const fn label(self) -> &'static str {
        match self {
            ConnectionEnd::IdleTimeout => "idle_timeout",
            ConnectionEnd::HeaderTimeout => "header_timeout",
            ConnectionEnd::OverLimit => "over_limit",
            ConnectionEnd::HeadTooLarge => "head_too_large",
            ConnectionEnd::Malformed => "malformed",
            ConnectionEnd::Io => "io",
            ConnectionEnd::ShutdownDeadline => "shutdown_deadline",
        }
    }
}

const END_COUNT: usize = ConnectionEnd::ALL.len();

/// How a request forwarded to the primary ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// A definitive answer (any status the primary means, 4xx included).
    Answered,
    /// No connection could be made.
    Connect,
    /// 503 from the primary.
    Unavailable,
    /// 500, 502 or 504 from the primary or a gateway in front of it.
    ServerError,
    /// No response head in time.
    Timeout,
    /// The connection broke after the request was sent.
    Reset,
    /// An answer that is not valid HTTP.
    Garbage,
}

impl UpstreamOutcome {
    const ALL: [UpstreamOutcome; 7] = [
        UpstreamOutcome::Answered,
        UpstreamOutcome::Connect,
        UpstreamOutcome::Unavailable,
        UpstreamOutcome::ServerError,
        UpstreamOutcome::Timeout,
        UpstreamOutcome::Reset,
        UpstreamOutcome::Garbage,
    ];

    const fn label(self) -> &'static str {
        match self {
            UpstreamOutcome::Answered => "answered",
            UpstreamOutcome::Connect => "connect",
            UpstreamOutcome::Unavailable => "unavailable",
            UpstreamOutcome::ServerError => "server_error",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Reset => "reset",
            UpstreamOutcome::Garbage => "garbage",
        }
    }
}

const OUTCOME_COUNT: usize = UpstreamOutcome::ALL.len();

/// Why a request was refused because the primary could not be used: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageRefusal {
    /// The worker's breaker was open or half-open.
    BreakerOpen,
    /// The operator forced outage mode.
    Forced,
    /// Forwarding this request failed.
    UpstreamFailed,
}

impl OutageRefusal {
    const ALL: [OutageRefusal; 3] = [
        OutageRefusal::BreakerOpen,
        OutageRefusal::Forced,
        OutageRefusal::UpstreamFailed,
    ];

    const fn label(self) -> &'static str {
        match self {
            OutageRefusal::BreakerOpen => "breaker_open",
            OutageRefusal::Forced => "forced_outage",
            OutageRefusal::UpstreamFailed => "upstream_failed",
        }
    }
}

const REFUSAL_COUNT: usize = OutageRefusal::ALL.len();

/// Token-endpoint counters since start, as `GET /admin/status` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TokenCounters {
    /// Answered by the primary.
    pub forwarded: u64,
    /// Refused by backstop's own parse (malformed), in either mode.
    pub rejected: u64,
    /// Served by the backup.
    pub backup_served: u64,
    /// Refused by the backup.
    pub backup_refused: u64,
    /// Backup answers after an ambiguous upstream failure.
    pub backup_ambiguous: u64,
    /// Forwarded requests that failed (connect, timeout, 5xx, garbage, reset).
    pub upstream_failures: u64,
}

/// Why a token request was answered by the backup: the `cause` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupCause {
    /// The worker's breaker was open or half-open.
    BreakerOpen,
    /// The operator forced outage mode.
    Forced,
    /// Forwarding this request failed.
    UpstreamFailed,
}

impl BackupCause {
    const ALL: [BackupCause; 3] = [
        BackupCause::BreakerOpen,
        BackupCause::Forced,
        BackupCause::UpstreamFailed,
    ];

    const fn label(self) -> &'static str {
        match self {
            BackupCause::BreakerOpen => "breaker_open",
            BackupCause::Forced => "forced_outage",
            BackupCause::UpstreamFailed => "upstream_failed",
        }
    }
}

const BACKUP_REFUSAL_COUNT: usize = crate::gateway::outage::Refusal::ALL.len();

/// Breaker states by published code (see `server::gate`): closed, open, half-open.
const BREAKER_STATE_LABELS: [&str; 3] = ["closed", "open", "half_open"];

/// A counter with exactly one writing thread. Readers on other threads may lag, never tear.
#[derive(Debug, Default)]
struct Cell(AtomicU64);

impl Cell {
    #[inline]
    fn add(&self, n: u64) {
        // Single writer: a plain load and store is enough and avoids a locked instruction.
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    fn sub(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.saturating_sub(n), Ordering::Relaxed);
    }

    #[inline]
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn cells<const N: usize>() -> [Cell; N] {
    std::array::from_fn(|_| Cell::default())
}

/// One worker's counters. Only that worker's thread may call the recording methods.
#[derive(Debug)]
pub struct WorkerMetrics {
    requests: [[Cell; STATUS_SLOT_COUNT]; ROUTE_COUNT],
    latency_buckets: [[Cell; BUCKET_COUNT]; ROUTE_COUNT],
    latency_sum_us: [Cell; ROUTE_COUNT],
    connections_accepted: Cell,
    connections_open: Cell,
    connection_ends: [Cell; END_COUNT],
    upstream: [Cell; OUTCOME_COUNT],
    upstream_ambiguous: Cell,
    outage_refusals: [Cell; REFUSAL_COUNT],
    breaker_transitions: [Cell; BREAKER_STATE_LABELS.len()],
    upstream_latency_buckets: [Cell; BUCKET_COUNT],
    upstream_latency_sum_us: Cell,
    token_forwarded: Cell,
    token_rejected: Cell,
    backup_requests: [Cell; 3],
    backup_ambiguous: Cell,
    backup_served: Cell,
    backup_refusals: [Cell; BACKUP_REFUSAL_COUNT],
    backup_rule_refusals: [Cell; 5],
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| cells()),
            latency_buckets: std::array::from_fn(|_| cells()),
            latency_sum_us: cells(),
            connections_accepted: Cell::default(),
            connections_open: Cell::default(),
            connection_ends: cells(),
            upstream: cells(),
            upstream_ambiguous: Cell::default(),
            outage_refusals: cells(),
            breaker_transitions: cells(),
            upstream_latency_buckets: cells(),
            upstream_latency_sum_us: Cell::default(),
            token_forwarded: Cell::default(),
            token_rejected: Cell::default(),
            backup_requests: cells(),
            backup_ambiguous: Cell::default(),
            backup_served: Cell::default(),
            backup_refusals: cells(),
            backup_rule_refusals: cells(),
        }
    }
}

impl WorkerMetrics {
    /// Records one answered request.
    #[inline]
    pub fn record_request(&self, route: Route, status: u16, latency: Duration) {
        let r = route.index();
        let (us, bucket) = latency_bucket(latency);
        if let Some(c) = self
            .requests
            .get(r)
            .and_then(|row| row.get(status_slot(status)))
        {
            c.add(1);
        }
        if let Some(c) = self.latency_buckets.get(r).and_then(|row| row.get(bucket)) {
            c.add(1);
        }
        if let Some(c) = self.latency_sum_us.get(r) {
            c.add(us);
        }
    }

    /// Records an accepted connection (now open).
    pub fn connection_opened(&self) {
        self.connections_accepted.add(1);
        self.connections_open.add(1);
    }

    /// Records that an open connection closed.
    pub fn connection_closed(&self) {
        self.connections_open.sub(1);
    }

    /// Records why a connection ended abnormally.
    pub fn connection_ended(&self, end: ConnectionEnd) {
        if let Some(c) = self.connection_ends.get(end as usize) {
            c.add(1);
        }
    }

    /// Records how a forwarded request ended; `ambiguous` when the primary may have acted on
    /// it before failing.
    pub fn upstream_outcome(&self, outcome: UpstreamOutcome, ambiguous: bool) {
        if let Some(c) = self.upstream.get(outcome as usize) {
            c.add(1);
        }
        if ambiguous {
            self.upstream_ambiguous.add(1);
        }
    }

    /// Records a request refused because the primary could not be used.
    pub fn outage_refusal(&self, reason: OutageRefusal) {
        if let Some(c) = self.outage_refusals.get(reason as usize) {
            c.add(1);
        }
    }

    /// Records a breaker transition into the state with this code (0 closed, 1 open,
    /// 2 half-open).
    pub fn breaker_transition(&self, to_code: u8) {
        if let Some(c) = self.breaker_transitions.get(usize::from(to_code)) {
            c.add(1);
        }
    }

    /// Records how long the primary took to answer (or fail) a forwarded token request.
    pub fn upstream_latency(&self, latency: Duration) {
        let (us, bucket) = latency_bucket(latency);
        if let Some(c) = self.upstream_latency_buckets.get(bucket) {
            c.add(1);
        }
        self.upstream_latency_sum_us.add(us);
    }

    /// A token request answered by the primary (normal mode).
    pub fn token_forwarded(&self) {
        self.token_forwarded.add(1);
    }

    /// A token request refused by backstop's own parse before any mode applied.
    pub fn token_rejected(&self) {
        self.token_rejected.add(1);
    }

    /// A token request handed to the backup, and why.
    pub fn backup_request(&self, cause: BackupCause, ambiguous: bool) {
        if let Some(c) = self.backup_requests.get(cause as usize) {
            c.add(1);
        }
        if ambiguous {
            self.backup_ambiguous.add(1);
        }
    }

    /// The backup served a token.
    pub fn backup_served(&self) {
        self.backup_served.add(1);
    }

    /// The backup refused, and why.
    pub fn backup_refused(&self, reason: crate::gateway::outage::Refusal) {
        if let Some(c) = self.backup_refusals.get(reason.index()) {
            c.add(1);
        }
    }

    /// The backup refused under eligibility rule `rule` (1–5).
    pub fn backup_rule_refusal(&self, rule: u8) {
        if let Some(c) = usize::from(rule)
            .checked_sub(1)
            .and_then(|i| self.backup_rule_refusals.get(i))
        {
            c.add(1);
        }
    }

    /// Requests answered by this worker, all routes and statuses.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().map(Cell::get).sum()
    }
}

/// Every worker's metrics; shared read-only, each worker writing only its own slot.
#[derive(Debug)]
pub struct Registry {
    workers: Box<[WorkerMetrics]>,
    admin: WorkerMetrics,
    version: &'static str,
}

impl Registry {
    /// A registry for `workers` worker threads, plus one slot for the admin listener.
    pub fn new(workers: usize, version: &'static str) -> Self {
        Self {
            workers: (0..workers).map(|_| WorkerMetrics::default()).collect(),
            admin: WorkerMetrics::default(),
            version,
        }
    }

    /// The metrics slot of worker `index`, if it exists.
    pub fn worker(&self, index: usize) -> Option<&WorkerMetrics> {
        self.workers.get(index)
    }

    /// The metrics slot of the admin listener's thread.
    pub fn admin(&self) -> &WorkerMetrics {
        &self.admin
    }

    fn all(&self) -> impl Iterator<Item = &WorkerMetrics> {
        self.workers.iter().chain(std::iter::once(&self.admin))
    }

    fn sum(&self, f: impl Fn(&WorkerMetrics) -> u64) -> u64 {
        self.all().map(f).sum()
    }

    /// Token-endpoint counters summed over workers (for `GET /admin/status`).
    pub fn token_counters(&self) -> TokenCounters {
        TokenCounters {
            forwarded: self.sum(|w| w.token_forwarded.get()),
            rejected: self.sum(|w| w.token_rejected.get()),
            backup_served: self.sum(|w| w.backup_served.get()),
            backup_refused: self.sum(|w| w.backup_refusals.iter().map(Cell::get).sum()),
            backup_ambiguous: self.sum(|w| w.backup_ambiguous.get()),
            upstream_failures: self.sum(|w| {
                UpstreamOutcome::ALL
                    .iter()
                    .filter(|o| **o != UpstreamOutcome::Answered)
                    .map(|o| w.upstream.get(*o as usize).map_or(0, Cell::get))
                    .sum()
            }),
        }
    }

    fn render_token(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP backstop_token_requests_total Token endpoint requests by mode and outcome."
        )?;
        writeln!(out, "# TYPE backstop_token_requests_total counter")?;
        let served = self.sum(|w| w.backup_served.get());
        let refused: u64 = self.sum(|w| w.backup_refusals.iter().map(Cell::get).sum());
        for (mode, outcome, n) in [
            ("normal", "forwarded", self.sum(|w| w.token_forwarded.get())),
            ("normal", "rejected", self.sum(|w| w.token_rejected.get())),
            ("outage", "served", served),
            ("outage", "refused", refused),
        ] {
            writeln!(
                out,
                "backstop_token_requests_total{{mode=\"{mode}\",outcome=\"{outcome}\"}} {n}"
            )?;
        }
        writeln!(
            out,
            "# HELP backstop_backup_requests_total Token requests answered by the backup, by why the primary was not used."
        )?;
        writeln!(out, "# TYPE backstop_backup_requests_total counter")?;
        for cause in BackupCause::ALL {
            let n = self.sum(|w| w.backup_requests.get(cause as usize).map_or(0, Cell::get));
            writeln!(
                out,
                "backstop_backup_requests_total{{cause=\"{}\"}} {n}",
                cause.label()
            )?;
        }
        writeln!(
            out,
            "# HELP backstop_backup_ambiguous_total Backup answers after a failure the primary may have acted on (DESIGN §1 hazard)."
        )?;
        writeln!(out, "# TYPE backstop_backup_ambiguous_total counter")?;
        writeln!(
            out,
            "backstop_backup_ambiguous_total {}",
            self.sum(|w| w.backup_ambiguous.get())
        )?;
        writeln!(
            out,
            "# HELP backstop_backup_refusals_total Backup refusals, by reason."
        )?;
        writeln!(out, "# TYPE backstop_backup_refusals_total counter")?;
        for reason in crate::gateway::outage::Refusal::ALL {
            let n = self.sum(|w| w.backup_refusals.get(reason.index()).map_or(0, Cell::get));
            writeln!(
                out,
                "backstop_backup_refusals_total{{reason=\"{}\"}} {n}",
                reason.label()
            )?;
        }
        writeln!(
            out,
            "# HELP backstop_backup_eligibility_refusals_total Backup refusals by the eligibility rule (DESIGN §2: 1 snapshot, 2 interaction, 3 home tenant, 4 policy, 5 revocation); the specific reason is in the audit record."
        )?;
        writeln!(
            out,
            "# TYPE backstop_backup_eligibility_refusals_total counter"
        )?;
        for rule in 1..=5usize {
            let n = self.sum(|w| w.backup_rule_refusals.get(rule - 1).map_or(0, Cell::get));
            writeln!(
                out,
                "backstop_backup_eligibility_refusals_total{{rule=\"{rule}\"}} {n}"
            )?;
        }
        writeln!(
            out,
            "# HELP backstop_upstream_latency_seconds Time for the primary to answer a forwarded token request."
        )?;
        writeln!(out, "# TYPE backstop_upstream_latency_seconds histogram")?;
        let mut cumulative = 0;
        for i in 0..BUCKET_COUNT {
            cumulative += self.sum(|w| w.upstream_latency_buckets.get(i).map_or(0, Cell::get));
            let le = LATENCY_BUCKETS_US
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |us| format_seconds(*us));
            writeln!(
                out,
                "backstop_upstream_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            )?;
        }
        writeln!(
            out,
            "backstop_upstream_latency_seconds_sum {}",
            format_seconds(self.sum(|w| w.upstream_latency_sum_us.get()))
        )?;
        writeln!(out, "backstop_upstream_latency_seconds_count {cumulative}")?;
        Ok(())
    }

    /// Renders the Prometheus text exposition of every counter, summed over workers.
    pub fn render(&self, uptime: Duration) -> String {
        let mut out = String::with_capacity(4096);
        // `fmt::Write` into a String cannot fail; the results are ignored for that reason.
        let _ = self.render_into(&mut out, uptime);
        out
    }

    fn render_into(&self, out: &mut String, uptime: Duration) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP backstop_build_info Build information; the value is always 1."
        )?;
        writeln!(out, "# TYPE backstop_build_info gauge")?;
        writeln!(out, "backstop_build_info{{version=\"{}\"}} 1", self.version)?;
        writeln!(
            out,
            "# HELP backstop_uptime_seconds Seconds since the server started."
        )?;
        writeln!(out, "# TYPE backstop_uptime_seconds gauge")?;
        writeln!(out, "backstop_uptime_seconds {:.3}", uptime.as_secs_f64())?;
        writeln!(
            out,
            "# HELP backstop_workers Worker threads serving the public listener."
        )?;
        writeln!(out, "# TYPE backstop_workers gauge")?;
        writeln!(out, "backstop_workers {}", self.workers.len())?;

        writeln!(
            out,
            "# HELP backstop_http_requests_total HTTP requests answered, by route and status."
        )?;
        writeln!(out, "# TYPE backstop_http_requests_total counter")?;
        for route in Route::ALL {
            for slot in 0..STATUS_SLOT_COUNT {
                let n = self.sum(|w| cell_at(&w.requests, route.index(), slot));
                if n > 0 {
                    writeln!(
                        out,
                        "backstop_http_requests_total{{route=\"{}\",status=\"{}\"}} {n}",
                        route.label(),
                        status_label(slot)
                    )?;
                }
            }
        }

        writeln!(
            out,
            "# HELP backstop_http_request_duration_seconds Time from request head to response head, by route."
        )?;
        writeln!(
            out,
            "# TYPE backstop_http_request_duration_seconds histogram"
        )?;
        for route in Route::ALL {
            let r = route.index();
            let counts: Vec<u64> = (0..BUCKET_COUNT)
                .map(|b| self.sum(|w| cell_at(&w.latency_buckets, r, b)))
                .collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (i, n) in counts.iter().enumerate() {
                cumulative += n;
                let le = LATENCY_BUCKETS_US
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |us| format_seconds(*us));
                writeln!(
                    out,
                    "backstop_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cumulative}",
                    route.label()
                )?;
            }
            let sum_us = self.sum(|w| w.latency_sum_us.get(r).map_or(0, Cell::get));
            writeln!(
                out,
                "backstop_http_request_duration_seconds_sum{{route=\"{}\"}} {}",
                route.label(),
                format_seconds(sum_us)
            )?;
            writeln!(
                out,
                "backstop_http_request_duration_seconds_count{{route=\"{}\"}} {total}",
                route.label()
            )?;
        }

        writeln!(
            out,
            "# HELP backstop_worker_requests_total HTTP requests answered, by worker thread."
        )?;
        writeln!(out, "# TYPE backstop_worker_requests_total counter")?;
        for (i, w) in self.workers.iter().enumerate() {
            writeln!(
                out,
                "backstop_worker_requests_total{{worker=\"{i}\"}} {}",
                w.requests_total()
            )?;
        }

        writeln!(
            out,
            "# HELP backstop_connections_accepted_total Client connections accepted."
        )?;
        writeln!(out, "# TYPE backstop_connections_accepted_total counter")?;
        writeln!(
            out,
            "backstop_connections_accepted_total {}",
            self.sum(|w| w.connections_accepted.get())
        )?;
        writeln!(
            out,
            "# HELP backstop_connections_open Client connections open now."
        )?;
        writeln!(out, "# TYPE backstop_connections_open gauge")?;
        writeln!(
            out,
            "backstop_connections_open {}",
            self.sum(|w| w.connections_open.get())
        )?;
        writeln!(
            out,
            "# HELP backstop_connections_ended_total Connections ended by a limit, a timeout or an error, by reason."
        )?;
        writeln!(out, "# TYPE backstop_connections_ended_total counter")?;
        for end in ConnectionEnd::ALL {
            let n = self.sum(|w| w.connection_ends.get(end as usize).map_or(0, Cell::get));
            writeln!(
                out,
                "backstop_connections_ended_total{{reason=\"{}\"}} {n}",
                end.label()
            )?;
        }
        writeln!(
            out,
            "# HELP backstop_upstream_requests_total Requests forwarded to the primary, by outcome."
        )?;
        writeln!(out, "# TYPE backstop_upstream_requests_total counter")?;
        for outcome in UpstreamOutcome::ALL {
            let n = self.sum(|w| w.upstream.get(outcome as usize).map_or(0, Cell::get));
            writeln!(
                out,
                "backstop_upstream_requests_total{{outcome=\"{}\"}} {n}",
                outcome.label()
            )?;
        }
        writeln!(
            out,
            "# HELP backstop_upstream_ambiguous_failures_total Failures after the primary may have acted on the request (a rotated refresh token may be lost)."
        )?;
        writeln!(
            out,
            "# TYPE backstop_upstream_ambiguous_failures_total counter"
        )?;
        writeln!(
            out,
            "backstop_upstream_ambiguous_failures_total {}",
            self.sum(|w| w.upstream_ambiguous.get())
        )?;
        self.render_token(out)?;
        writeln!(
            out,
            "# HELP backstop_outage_refusals_total Requests refused with 503 because the primary could not be used, by reason."
        )?;
        writeln!(out, "# TYPE backstop_outage_refusals_total counter")?;
        for reason in OutageRefusal::ALL {
            let n = self.sum(|w| w.outage_refusals.get(reason as usize).map_or(0, Cell::get));
            writeln!(
                out,
                "backstop_outage_refusals_total{{reason=\"{}\"}} {n}",
                reason.label()
            )?;
        }
        writeln!(
            out,
            "# HELP backstop_breaker_transitions_total Circuit-breaker transitions (all workers), by new state."
        )?;
        writeln!(out, "# TYPE backstop_breaker_transitions_total counter")?;
        for (code, label) in BREAKER_STATE_LABELS.iter().enumerate() {
            let n = self.sum(|w| w.breaker_transitions.get(code).map_or(0, Cell::get));
            writeln!(
                out,
                "backstop_breaker_transitions_total{{to=\"{label}\"}} {n}"
            )?;
        }
        Ok(())
    }
}

fn cell_at<const A: usize, const B: usize>(table: &[[Cell; B]; A], i: usize, j: usize) -> u64 {
    table.get(i).and_then(|row| row.get(j)).map_or(0, Cell::get)
}

fn format_seconds(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_every_worker_are_summed_on_render() {
        let registry = Registry::new(2, "0.0.0-test");
        registry
            .worker(0)
            .unwrap()
            .record_request(Route::Healthz, 200, Duration::from_micros(70));
        registry
            .worker(1)
            .unwrap()
            .record_request(Route::Healthz, 200, Duration::from_micros(30));
        registry
            .worker(1)
            .unwrap()
            .record_request(Route::Proxy, 404, Duration::from_millis(2));
        let text = registry.render(Duration::from_secs(1));
        assert!(
            text.contains("backstop_http_requests_total{route=\"healthz\",status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("backstop_http_requests_total{route=\"proxy\",status=\"404\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("backstop_worker_requests_total{worker=\"0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("backstop_worker_requests_total{worker=\"1\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_count() {
        let registry = Registry::new(1, "t");
        let w = registry.worker(0).unwrap();
        w.record_request(Route::Metrics, 200, Duration::from_micros(40)); // <= 50us
        w.record_request(Route::Metrics, 200, Duration::from_micros(400)); // <= 500us
        w.record_request(Route::Metrics, 200, Duration::from_secs(60)); // +Inf
        let text = registry.render(Duration::ZERO);
        let bucket = |le: &str| {
            format!(
                "backstop_http_request_duration_seconds_bucket{{route=\"metrics\",le=\"{le}\"}} "
            )
        };
        assert!(
            text.contains(&format!("{}1\n", bucket("0.000050"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{}1\n", bucket("0.000250"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{}2\n", bucket("0.000500"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{}2\n", bucket("10.000000"))),
            "{text}"
        );
        assert!(text.contains(&format!("{}3\n", bucket("+Inf"))), "{text}");
        assert!(
            text.contains("backstop_http_request_duration_seconds_count{route=\"metrics\"} 3\n")
        );
        assert!(
            text.contains(
                "backstop_http_request_duration_seconds_sum{route=\"metrics\"} 60.000440\n"
            )
        );
    }

    #[test]
    fn unlisted_status_counts_as_other() {
        let registry = Registry::new(1, "t");
        registry
            .worker(0)
            .unwrap()
            .record_request(Route::Healthz, 418, Duration::ZERO);
        let text = registry.render(Duration::ZERO);
        assert!(
            text.contains("backstop_http_requests_total{route=\"healthz\",status=\"other\"} 1\n")
        );
    }

    #[test]
    fn open_connections_gauge_follows_open_and_close() {
        let registry = Registry::new(1, "t");
        let w = registry.worker(0).unwrap();
        w.connection_opened();
        w.connection_opened();
        w.connection_closed();
        w.connection_ended(ConnectionEnd::IdleTimeout);
        let text = registry.render(Duration::ZERO);
        assert!(text.contains("backstop_connections_open 1\n"));
        assert!(text.contains("backstop_connections_accepted_total 2\n"));
        assert!(text.contains("backstop_connections_ended_total{reason=\"idle_timeout\"} 1\n"));
    }

    #[test]
    fn every_sample_line_belongs_to_a_declared_family() {
        let registry = Registry::new(2, "t");
        registry
            .worker(0)
            .unwrap()
            .record_request(Route::Readyz, 503, Duration::from_micros(5));
        let text = registry.render(Duration::from_millis(1500));
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| declared.iter().any(|d| d == f))
                    })
                    .unwrap_or(name);
                assert!(
                    declared.iter().any(|d| d == family),
                    "undeclared sample {line}"
                );
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
            }
        }
    }
}
