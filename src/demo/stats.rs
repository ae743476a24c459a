//! What the demo measured: per-phase counts by who answered (primary, backup) or why not,
//! latency histograms, and their rendering as the live status line, the summary table and
//! JSON. Pure: it takes durations and outcomes, never reads the clock or the network.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Distinct refusal or failure reasons kept per phase; more are folded into `other`, so a
/// misbehaving server cannot grow the demo's memory without bound.
const REASONS_MAX: usize = 16;

/// Longest `error` code taken from a response body into a reason.
const ERROR_CODE_CHARS_MAX: usize = 40;

/// Latencies above this (an hour, in µs) are clamped; the client gives up long before.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// How one request ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with an access token signed by the primary's key.
    Primary,
    /// 200 with an access token signed by one of backstop's own keys: the backup answered.
    Backup,
    /// 200 whose access token carries a `kid` of neither (or is not a JWS).
    UnknownSigner,
    /// An HTTP answer other than 200: status and the body's `error` code.
    Refused {
        /// HTTP status.
        status: u16,
        /// The RFC 6749 `error` code, or empty when the body had none.
        error: String,
    },
    /// No HTTP answer: connect error, reset, client-side timeout.
    Failed(&'static str),
}

impl Outcome {
    /// A refusal from an HTTP status and response body.
    pub fn refused(status: u16, body: &[u8]) -> Self {
        let error = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(sanitize_code))
            .unwrap_or_default();
        Self::Refused { status, error }
    }
}

/// Keeps an error code printable and short: it comes from the network.
fn sanitize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(ERROR_CODE_CHARS_MAX)
        .collect()
}

/// Counts and latencies of one phase (or of one status-line second).
#[derive(Debug, Clone)]
pub struct Tally {
    /// Requests that finished.
    pub requests: u64,
    /// Served by the primary.
    pub primary: u64,
    /// Served by backstop's backup path.
    pub backup: u64,
    /// 200s signed by an unknown key.
    pub unknown_signer: u64,
    /// HTTP refusals by `"STATUS error"`.
    pub refused: BTreeMap<String, u64>,
    /// Requests without an HTTP answer, by kind.
    pub failed: BTreeMap<String, u64>,
    /// Latency of every request, in microseconds.
    pub latency_us: Histogram<u64>,
}

/// The empty latency histogram every tally starts from: microseconds from 1 to an hour, three
/// significant figures. Made once, at start, because making one can fail.
pub fn latency_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
}

impl Tally {
    /// An empty tally whose histogram has the bounds of `template`.
    pub fn new(template: &Histogram<u64>) -> Self {
        Self {
            requests: 0,
            primary: 0,
            backup: 0,
            unknown_signer: 0,
            refused: BTreeMap::new(),
            failed: BTreeMap::new(),
            latency_us: Histogram::new_from(template),
        }
    }

    /// Counts one finished request.
    pub fn record(&mut self, outcome: &Outcome, latency: Duration) {
        self.requests += 1;
        match outcome {
            Outcome::Primary => self.primary += 1,
            Outcome::Backup => self.backup += 1,
            Outcome::UnknownSigner => self.unknown_signer += 1,
            Outcome::Refused { status, error } => {
                let key = if error.is_empty() {
                    status.to_string()
                } else {
                    format!("{status} {error}")
                };
                bump(&mut self.refused, key, *status);
            }
            Outcome::Failed(kind) => bump(&mut self.failed, (*kind).to_string(), 0),
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us
            .saturating_record(us.clamp(1, LATENCY_US_MAX));
    }

    /// Refusals, all reasons.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// Failures, all kinds.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// A latency quantile (0.0..=1.0); `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        (!self.latency_us.is_empty())
            .then(|| Duration::from_micros(self.latency_us.value_at_quantile(q)))
    }

    /// The slowest request.
    pub fn max(&self) -> Option<Duration> {
        (!self.latency_us.is_empty()).then(|| Duration::from_micros(self.latency_us.max()))
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: String, status: u16) {
    if map.len() >= REASONS_MAX && !map.contains_key(&key) {
        let other = if status == 0 {
            "other".to_string()
        } else {
            format!("{status} other")
        };
        *map.entry(other).or_default() += 1;
    } else {
        *map.entry(key).or_default() += 1;
    }
}

/// What the primary was doing during a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimaryState {
    /// Answering normally.
    Healthy,
    /// Listener closed: connect refused.
    Down,
    /// Answering 500 to everything.
    Error500,
    /// Accepting requests and never answering.
    Hang,
    /// Processing every request, then answering after a delay longer than backstop waits.
    Slow,
}

impl PrimaryState {
    /// The name in the summary and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Down => "down",
            Self::Error500 => "error500",
            Self::Hang => "hang",
            Self::Slow => "slow",
        }
    }
}

/// One phase of the run, with what happened in it.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// `sign-in`, `normal`, `outage: down`, ..., `recovered`.
    pub name: String,
    /// The primary's state.
    pub primary: PrimaryState,
    /// Whether the primary was failing (an outage phase).
    pub outage: bool,
    /// How long the phase lasted.
    pub elapsed: Duration,
    /// What the clients saw.
    pub tally: Tally,
}

impl PhaseReport {
    /// Finished requests per second over the phase.
    pub fn rate_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.tally.requests as f64 / secs
        } else {
            0.0
        }
    }
}

/// The whole run, as the summary shows it.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The population's shape, for the header line.
    pub population: String,
    /// Sessions the demo tried to sign in.
    pub sessions_planned: u64,
    /// Sessions signed in through backstop.
    pub sessions_signed_in: u64,
    /// Sessions whose refresh token was refused with `invalid_grant` (the client would have
    /// to sign in again); they take no further part.
    pub sessions_lost: u64,
    /// The phases, in order; the first is the sign-in.
    pub phases: Vec<PhaseReport>,
    /// The run was cut short (SIGINT/SIGTERM).
    pub interrupted: bool,
    /// backstop's own failover counters from `/metrics` at the end of the run (non-zero
    /// samples only): its reasons behind the refusals the clients saw.
    pub backstop_counters: Vec<(String, f64)>,
}

impl RunReport {
    fn outage_totals(&self) -> (u64, u64, u64, u64) {
        self.phases.iter().filter(|p| p.outage).fold(
            (0, 0, 0, 0),
            |(req, backup, refused, failed), p| {
                (
                    req + p.tally.requests,
                    backup + p.tally.backup,
                    refused + p.tally.refused_total(),
                    failed + p.tally.failed_total(),
                )
            },
        )
    }

    /// Plain sentences on what the run shows; never claims more than was measured.
    pub fn verdict(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.interrupted {
            lines.push("The run was interrupted; the figures cover what ran.".to_string());
        }
        let (requests, backup, refused, failed) = self.outage_totals();
        if requests == 0 {
            lines.push("No refresh request finished while the primary was failing.".to_string());
        } else if backup == 0 {
            let reasons = self.outage_reasons();
            lines.push(format!(
                "No request was served by the backup: of {requests} refresh requests while the \
                 primary was failing, {refused} were refused ({reasons}) and {failed} failed."
            ));
            lines.push(
                "The backup serves a refresh grant only for a session backstop recorded while \
                 the primary answered (the failover gateway's capture and outage path, issue \
                 5); without them it refuses while the primary is down, and the clients keep \
                 their refresh tokens."
                    .to_string(),
            );
        } else {
            lines.push(format!(
                "The backup served {backup} of {requests} refresh requests while the primary was \
                 failing ({:.1}%); {refused} were refused and {failed} failed.",
                percent(backup, requests)
            ));
        }
        if let Some(last) = self
            .phases
            .last()
            .filter(|p| !p.outage && p.name == "recovered" && p.tally.requests > 0)
        {
            if last.tally.primary == 0 {
                lines.push(format!(
                    "The primary served no request in the {:.1} s after it recovered: backstop's \
                     breaker closes only after a successful probe (its back-off grows to 1 s \
                     here) and clients first wait out their Retry-After; a longer --duration \
                     shows the return.",
                    last.elapsed.as_secs_f64()
                ));
            } else {
                lines.push(format!(
                    "After recovery the primary served {:.1}% of requests again.",
                    percent(last.tally.primary, last.tally.requests)
                ));
            }
        }
        if self.sessions_lost > 0 {
            lines.push(format!(
                "{} sessions got invalid_grant and would have to sign in again.",
                self.sessions_lost
            ));
        }
        lines
    }

    fn outage_reasons(&self) -> String {
        let mut all: BTreeMap<&str, u64> = BTreeMap::new();
        for p in self.phases.iter().filter(|p| p.outage) {
            for (k, v) in p.tally.refused.iter().chain(p.tally.failed.iter()) {
                *all.entry(k.as_str()).or_default() += v;
            }
        }
        if all.is_empty() {
            return "none".to_string();
        }
        all.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The summary table and verdict, for a terminal or a log.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "backstop demo summary: {}", self.population);
        let _ = writeln!(
            out,
            "sessions: {} planned, {} signed in through backstop, {} lost to invalid_grant",
            self.sessions_planned, self.sessions_signed_in, self.sessions_lost
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<18} {:>6} {:>9} {:>8} {:>9} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "phase",
            "secs",
            "requests",
            "req/s",
            "primary",
            "backup",
            "refused",
            "failed",
            "p50",
            "p90",
            "p99",
            "max"
        );
        for p in &self.phases {
            let t = &p.tally;
            let _ = writeln!(
                out,
                "{:<18} {:>6.1} {:>9} {:>8.0} {:>9} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
                p.name,
                p.elapsed.as_secs_f64(),
                t.requests,
                p.rate_per_sec(),
                t.primary,
                t.backup,
                t.refused_total(),
                t.failed_total(),
                fmt_latency(t.quantile(0.50)),
                fmt_latency(t.quantile(0.90)),
                fmt_latency(t.quantile(0.99)),
                fmt_latency(t.max()),
            );
        }
        let reasons: Vec<(&str, &str, u64)> = self
            .phases
            .iter()
            .flat_map(|p| {
                p.tally
                    .refused
                    .iter()
                    .chain(p.tally.failed.iter())
                    .map(move |(k, v)| (p.name.as_str(), k.as_str(), *v))
            })
            .collect();
        let unknown: u64 = self.phases.iter().map(|p| p.tally.unknown_signer).sum();
        if !reasons.is_empty() || unknown > 0 {
            let _ = writeln!(out);
            let _ = writeln!(out, "refused and failed, by reason:");
            for (phase, reason, n) in reasons {
                let _ = writeln!(out, "  {phase:<18} {reason:<40} {n:>9}");
            }
            if unknown > 0 {
                let _ = writeln!(
                    out,
                    "  200s signed by a key neither the primary's nor backstop's: {unknown}"
                );
            }
        }
        if !self.backstop_counters.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "backstop's failover counters (/metrics at the end):");
            for (sample, value) in &self.backstop_counters {
                let _ = writeln!(out, "  {sample:<70} {value:>9}");
            }
        }
        let _ = writeln!(out);
        for line in self.verdict() {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// The summary as one JSON document (latencies in milliseconds).
    pub fn to_json(&self) -> serde_json::Value {
        let (requests, backup, refused, failed) = self.outage_totals();
        let phases: Vec<serde_json::Value> = self
            .phases
            .iter()
            .map(|p| {
                let t = &p.tally;
                let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
                serde_json::json!({
                    "name": p.name,
                    "primary_state": p.primary.name(),
                    "outage": p.outage,
                    "secs": p.elapsed.as_secs_f64(),
                    "requests": t.requests,
                    "requests_per_sec": p.rate_per_sec(),
                    "primary": t.primary,
                    "backup": t.backup,
                    "unknown_signer": t.unknown_signer,
                    "refused": t.refused,
                    "failed": t.failed,
                    "latency_ms": {
                        "p50": ms(t.quantile(0.50)),
                        "p90": ms(t.quantile(0.90)),
                        "p99": ms(t.quantile(0.99)),
                        "max": ms(t.max()),
                    },
                })
            })
            .collect();
        serde_json::json!({
            "population": self.population,
            "sessions": {
                "planned": self.sessions_planned,
                "signed_in": self.sessions_signed_in,
                "lost_invalid_grant": self.sessions_lost,
            },
            "phases": phases,
            "outage": {
                "requests": requests,
                "backup": backup,
                "refused": refused,
                "failed": failed,
            },
            "backup_served_during_outage": backup,
            "interrupted": self.interrupted,
            "backstop_counters": self
                .backstop_counters
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>(),
            "verdict": self.verdict(),
        })
    }
}

/// Metric families whose samples the summary shows: backstop's own account of failover.
const FAILOVER_METRICS: &[&str] = &[
    "backstop_breaker_transitions_total",
    "backstop_upstream_ambiguous_failures_total",
    "backstop_outage_refusals_total",
    "backstop_backup_requests_total",
    "backstop_backup_refusals_total",
    "backstop_backup_ambiguous_total",
];

/// Samples shown at most, whatever the server exposes.
const COUNTER_SAMPLES_MAX: usize = 64;

/// The non-zero samples of [`FAILOVER_METRICS`] in a Prometheus text exposition.
pub fn failover_counters(exposition: &str) -> Vec<(String, f64)> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (sample, value) = l.trim().rsplit_once(' ')?;
            let name = sample.split('{').next()?;
            let value: f64 = value.parse().ok()?;
            (FAILOVER_METRICS.contains(&name) && value > 0.0).then(|| (sample.to_string(), value))
        })
        .take(COUNTER_SAMPLES_MAX)
        .collect()
}

/// One second of traffic, as the live status line shows it: the short fields first, so a
/// line cut to a narrow terminal keeps them; refusal reasons (the longest) last.
pub fn status_line(phase: &str, elapsed: Duration, second: &Tally, backstop: &str) -> String {
    let mut line = format!(
        "{phase:<16} {:>3.0}s {:>6} req/s  primary {:>5.1}%  backup {:>5.1}%  p50 {} p99 {}",
        elapsed.as_secs_f64(),
        second.requests,
        percent(second.primary, second.requests),
        percent(second.backup, second.requests),
        fmt_latency(second.quantile(0.50)),
        fmt_latency(second.quantile(0.99)),
    );
    if !backstop.is_empty() {
        let _ = write!(line, "  [{backstop}]");
    }
    if second.unknown_signer > 0 {
        let _ = write!(line, "  unknown-key {}", second.unknown_signer);
    }
    let _ = write!(
        line,
        "  refused {}",
        second.refused_total() + second.failed_total()
    );
    let reasons: Vec<String> = second
        .refused
        .iter()
        .chain(second.failed.iter())
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if !reasons.is_empty() {
        let _ = write!(line, " ({})", reasons.join(", "));
    }
    line
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `850µs`, `3.2ms`, `1.50s`, or `-` when there is nothing to show.
pub fn fmt_latency(d: Option<Duration>) -> String {
    match d {
        None => "-".to_string(),
        Some(d) if d < Duration::from_millis(1) => format!("{}µs", d.as_micros()),
        Some(d) if d < Duration::from_secs(1) => {
            format!("{:.1}ms", d.as_secs_f64() * 1000.0)
        }
        Some(d) => format!("{:.2}s", d.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, outage: bool, outcomes: &[Outcome]) -> PhaseReport {
        let mut tally = Tally::new(&latency_histogram().unwrap());
        for o in outcomes {
            tally.record(o, Duration::from_millis(2));
        }
        PhaseReport {
            name: name.into(),
            primary: if outage {
                PrimaryState::Down
            } else {
                PrimaryState::Healthy
            },
            outage,
            elapsed: Duration::from_secs(2),
            tally,
        }
    }

    fn report(phases: Vec<PhaseReport>) -> RunReport {
        RunReport {
            population: "test".into(),
            sessions_planned: 4,
            sessions_signed_in: 4,
            sessions_lost: 0,
            phases,
            interrupted: false,
            backstop_counters: vec![],
        }
    }

    fn unavailable() -> Outcome {
        Outcome::refused(503, br#"{"error":"temporarily_unavailable"}"#)
    }

    #[test]
    fn refusals_are_keyed_by_status_and_error_code() {
        let mut t = Tally::new(&latency_histogram().unwrap());
        t.record(&unavailable(), Duration::from_millis(1));
        t.record(
            &Outcome::refused(400, b"not json"),
            Duration::from_millis(1),
        );
        t.record(&Outcome::Failed("connect"), Duration::from_millis(1));
        assert_eq!(t.refused.get("503 temporarily_unavailable"), Some(&1));
        assert_eq!(t.refused.get("400"), Some(&1));
        assert_eq!(t.failed.get("connect"), Some(&1));
        assert_eq!(t.requests, 3);
    }

    #[test]
    fn error_codes_from_the_network_are_sanitized_and_bounded() {
        let body = format!(r#"{{"error":"a\u001b[2Jb{}"}}"#, "x".repeat(100));
        let Outcome::Refused { error, .. } = Outcome::refused(400, body.as_bytes()) else {
            panic!("not a refusal");
        };
        assert!(error.starts_with("a2Jb"));
        assert_eq!(error.len(), ERROR_CODE_CHARS_MAX);
    }

    #[test]
    fn reasons_beyond_the_cap_fold_into_other() {
        let mut t = Tally::new(&latency_histogram().unwrap());
        for i in 0..(REASONS_MAX + 5) {
            let body = format!(r#"{{"error":"code{i}"}}"#);
            t.record(
                &Outcome::refused(400, body.as_bytes()),
                Duration::from_millis(1),
            );
        }
        assert_eq!(t.refused.len(), REASONS_MAX + 1);
        assert_eq!(t.refused.get("400 other"), Some(&5));
    }

    #[test]
    fn verdict_says_plainly_when_the_backup_served_nothing() {
        let r = report(vec![
            phase("normal", false, &[Outcome::Primary, Outcome::Primary]),
            phase("outage: down", true, &[unavailable(), unavailable()]),
            phase("recovered", false, &[Outcome::Primary]),
        ]);
        let verdict = r.verdict().join("\n");
        assert!(
            verdict.contains("No request was served by the backup"),
            "{verdict}"
        );
        assert!(
            verdict.contains("503 temporarily_unavailable: 2"),
            "{verdict}"
        );
        assert_eq!(r.to_json()["backup_served_during_outage"], 0);
    }

    #[test]
    fn verdict_counts_backup_answers_during_the_outage() {
        let r = report(vec![
            phase("normal", false, &[Outcome::Primary]),
            phase("outage: down", true, &[Outcome::Backup, unavailable()]),
            phase("recovered", false, &[Outcome::Primary]),
        ]);
        let verdict = r.verdict().join("\n");
        assert!(verdict.contains("The backup served 1 of 2"), "{verdict}");
        assert!(verdict.contains("primary served 100.0%"), "{verdict}");
        assert_eq!(r.to_json()["phases"][1]["backup"], 1);
    }

    #[test]
    fn table_has_a_row_per_phase_and_the_reasons() {
        let r = report(vec![
            phase("sign-in", false, &[Outcome::Primary]),
            phase("outage: down", true, &[unavailable()]),
        ]);
        let table = r.to_table();
        assert!(table.contains("phase"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("sign-in")), "{table}");
        assert!(
            table.lines().any(|l| l.starts_with("outage: down")),
            "{table}"
        );
        assert!(table.contains("503 temporarily_unavailable"), "{table}");
    }

    #[test]
    fn failover_counters_keep_the_non_zero_samples_of_their_families() {
        let text = "# HELP backstop_outage_refusals_total x\n\
                    backstop_outage_refusals_total{reason=\"breaker_open\"} 12\n\
                    backstop_outage_refusals_total{reason=\"timeout\"} 0\n\
                    backstop_http_requests_total{route=\"token\"} 99\n\
                    backstop_backup_requests_total 3\n\
                    garbage\n";
        assert_eq!(
            failover_counters(text),
            [
                (
                    "backstop_outage_refusals_total{reason=\"breaker_open\"}".to_string(),
                    12.0
                ),
                ("backstop_backup_requests_total".to_string(), 3.0),
            ]
        );
    }

    #[test]
    fn latencies_format_with_their_unit() {
        assert_eq!(fmt_latency(None), "-");
        assert_eq!(fmt_latency(Some(Duration::from_micros(850))), "850µs");
        assert_eq!(fmt_latency(Some(Duration::from_micros(3_200))), "3.2ms");
        assert_eq!(fmt_latency(Some(Duration::from_millis(1_500))), "1.50s");
    }

    #[test]
    fn status_line_shows_shares_and_reasons() {
        let mut t = Tally::new(&latency_histogram().unwrap());
        t.record(&Outcome::Backup, Duration::from_millis(1));
        t.record(&unavailable(), Duration::from_millis(1));
        let line = status_line("outage: down", Duration::from_secs(3), &t, "breaker open");
        assert!(line.contains("backup  50.0%"), "{line}");
        assert!(line.contains("503 temporarily_unavailable: 1"), "{line}");
        assert!(line.contains("[breaker open]"), "{line}");
    }
}
