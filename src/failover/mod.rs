//! Failover: when to send a request to the primary and when to the backup. A pure state
//! machine: no clock, no I/O, no timers. The server feeds it events with `now` and asks it
//! where the next request goes.
//!
//! - `Breaker` is the circuit breaker: `Closed` (forward everything), `Open` (backup only, no
//!   timeout paid) and `HalfOpen` (backup only while one probe, a discovery fetch, tests the
//!   primary). Consecutive failures or a failure rate over a sliding window open it; each
//!   failed probe doubles how long it stays open, up to a cap; a successful probe closes it.
//! - `Mode` is the operator's override for drills: forced normal, forced outage, or automatic.
//! - `UpstreamFailure` classifies why a forwarded request failed, and whether the primary may
//!   have acted on it before failing (*ambiguous*: a refresh token may have been rotated).

use std::time::Duration;

/// Milliseconds on a monotonic clock owned by the caller. Only differences matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub u64);

impl Millis {
    fn plus(self, d: Duration) -> Millis {
        Millis(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

/// Breaker thresholds. Defaults suit a token endpoint at hundreds of requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive unexpected failures that open the breaker.
    pub consecutive_failures_max: u32,
    /// Outcomes in the sliding window (1 to 64).
    pub window_len: u32,
    /// Failures within a full window that open the breaker.
    pub window_failures_max: u32,
    /// How long the breaker stays open before the first probe.
    pub open_initial: Duration,
    /// Cap on the open time as failed probes double it.
    pub open_max: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures_max: 5,
            window_len: 20,
            window_failures_max: 10,
            open_initial: Duration::from_secs(1),
            open_max: Duration::from_secs(60),
        }
    }
}

/// A breaker configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakerConfigError {
    /// `window_len` outside 1..=64.
    #[error("window_len must be between 1 and 64, got {0}")]
    WindowLen(u32),
    /// A threshold of zero would open the breaker with no failure at all.
    #[error("{0} must be at least 1")]
    ZeroThreshold(&'static str),
    /// `window_failures_max` larger than the window can ever hold.
    #[error("window_failures_max ({max}) must not exceed window_len ({len})")]
    WindowFailures {
        /// The configured threshold.
        max: u32,
        /// The window length.
        len: u32,
    },
    /// `open_max` shorter than `open_initial`.
    #[error("open_max must be at least open_initial")]
    OpenMax,
}

impl BreakerConfig {
    /// Checks the thresholds against each other.
    pub fn validate(&self) -> Result<(), BreakerConfigError> {
        if !(1..=64).contains(&self.window_len) {
            return Err(BreakerConfigError::WindowLen(self.window_len));
        }
        if self.consecutive_failures_max == 0 {
            return Err(BreakerConfigError::ZeroThreshold(
                "consecutive_failures_max",
            ));
        }
        if self.window_failures_max == 0 {
            return Err(BreakerConfigError::ZeroThreshold("window_failures_max"));
        }
        if self.window_failures_max > self.window_len {
            return Err(BreakerConfigError::WindowFailures {
                max: self.window_failures_max,
                len: self.window_len,
            });
        }
        if self.open_max < self.open_initial {
            return Err(BreakerConfigError::OpenMax);
        }
        Ok(())
    }
}

/// The last `len` outcomes of forwarded requests as a bit ring (1 = failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    bits: u64,
    seen: u32,
}

impl Window {
    fn push(self, failed: bool, len: u32) -> Window {
        let mask = if len >= 64 {
            u64::MAX
        } else {
            (1u64 << len) - 1
        };
        Window {
            bits: ((self.bits << 1) | u64::from(failed)) & mask,
            seen: (self.seen + 1).min(len),
        }
    }

    fn failures(self) -> u32 {
        self.bits.count_ones()
    }
}

/// The circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// The primary is trusted: requests are forwarded.
    Closed {
        /// Unexpected failures since the last success.
        consecutive_failures: u32,
        /// Recent outcomes.
        window: Window,
    },
    /// The primary is considered down until `until`; requests go to the backup.
    Open {
        /// When a probe is due.
        until: Millis,
        /// How long this open period lasts (doubles per failed probe).
        open_for: Duration,
    },
    /// A probe is due or in flight; requests still go to the backup.
    HalfOpen {
        /// The open period that led here (the next one doubles it if the probe fails).
        open_for: Duration,
    },
}

/// What happened, as seen by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A forwarded request got a definitive answer (any status the primary means: 2xx–4xx).
    Answered,
    /// A forwarded request failed unexpectedly.
    Failed(UpstreamFailure),
    /// The half-open probe got a good answer.
    ProbeSucceeded,
    /// The half-open probe failed.
    ProbeFailed,
    /// Time passed; lets an open breaker become half-open.
    Tick,
}

/// Where a request should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Forward to the primary (falling back to the backup per request on failure).
    Primary,
    /// Serve from the backup without trying the primary.
    Backup,
}

impl Breaker {
    /// A closed breaker with no history.
    pub const fn new() -> Self {
        Breaker::Closed {
            consecutive_failures: 0,
            window: Window { bits: 0, seen: 0 },
        }
    }

    /// The state after `event` at `now`.
    #[must_use]
    pub fn on(self, event: Event, now: Millis, config: &BreakerConfig) -> Breaker {
        match (self, event) {
            (Breaker::Closed { window, .. }, Event::Answered) => Breaker::Closed {
                consecutive_failures: 0,
                window: window.push(false, config.window_len),
            },
            (
                Breaker::Closed {
                    consecutive_failures,
                    window,
                },
                Event::Failed(_),
            ) => {
                let consecutive_failures = consecutive_failures.saturating_add(1);
                let window = window.push(true, config.window_len);
                if consecutive_failures >= config.consecutive_failures_max
                    || window.failures() >= config.window_failures_max
                {
                    Breaker::open(now, config.open_initial)
                } else {
                    Breaker::Closed {
                        consecutive_failures,
                        window,
                    }
                }
            }
            (Breaker::Open { until, open_for }, Event::Tick) if now >= until => {
                Breaker::HalfOpen { open_for }
            }
            (Breaker::HalfOpen { .. }, Event::ProbeSucceeded) => Breaker::new(),
            (Breaker::HalfOpen { open_for }, Event::ProbeFailed) => {
                Breaker::open(now, open_for.saturating_mul(2).min(config.open_max))
            }
            // Stragglers: answers to requests forwarded before the breaker opened, probes that
            // race a state change, ticks with nothing to do. None changes an open breaker:
            // only a probe may close it, so one lucky request cannot flap traffic back.
            (state, _) => state,
        }
    }

    fn open(now: Millis, open_for: Duration) -> Breaker {
        Breaker::Open {
            until: now.plus(open_for),
            open_for,
        }
    }

    /// Where requests go in this state.
    pub fn route(&self) -> Route {
        match self {
            Breaker::Closed { .. } => Route::Primary,
            Breaker::Open { .. } | Breaker::HalfOpen { .. } => Route::Backup,
        }
    }

    /// Whether the server should send a probe now (half-open and none sent yet is tracked by
    /// the server; this only says the state wants one).
    pub fn wants_probe(&self) -> bool {
        matches!(self, Breaker::HalfOpen { .. })
    }

    /// The state's name for status output and metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Breaker::Closed { .. } => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen { .. } => "half_open",
        }
    }
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new()
    }
}

/// The operator's override (admin API `POST /admin/mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The breaker decides.
    #[default]
    Auto,
    /// Always forward, whatever the breaker says (failures still fall back per request).
    ForcedNormal,
    /// Never forward: every request is served by the backup (drills).
    ForcedOutage,
}

impl Mode {
    /// Where a request goes under this mode and breaker.
    pub fn route(self, breaker: &Breaker) -> Route {
        match self {
            Mode::Auto => breaker.route(),
            Mode::ForcedNormal => Route::Primary,
            Mode::ForcedOutage => Route::Backup,
        }
    }

    /// Parses the admin API's `mode` value.
    pub fn parse(value: &str) -> Option<Mode> {
        match value {
            "auto" => Some(Mode::Auto),
            "normal" => Some(Mode::ForcedNormal),
            "outage" => Some(Mode::ForcedOutage),
            _ => None,
        }
    }
}

/// Why forwarding a request failed unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The connection could not be made (refused, unreachable, DNS, TLS handshake): the
    /// primary never saw the request.
    Connect,
    /// The primary answered 503: overloaded or down for maintenance, before processing.
    Unavailable,
    /// The primary answered 500, 502 or 504: it, or a gateway in front of it, failed at some
    /// point that may be after it acted on the request.
    ServerError(u16),
    /// No answer in time after the request was sent.
    Timeout,
    /// The connection broke after the request was sent.
    Reset,
    /// An answer that is not a valid HTTP/JSON token response.
    Garbage,
}

impl UpstreamFailure {
    /// Whether the primary may have acted on the request (rotated a refresh token) before
    /// failing. Such failures are still served by the backup but marked in audit and metrics
    /// (DESIGN §1, known hazard).
    pub fn is_ambiguous(self) -> bool {
        !matches!(
            self,
            UpstreamFailure::Connect | UpstreamFailure::Unavailable
        )
    }

    /// The label for metrics and audit.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Unavailable => "unavailable_503",
            UpstreamFailure::ServerError(500) => "server_error_500",
            UpstreamFailure::ServerError(502) => "bad_gateway_502",
            UpstreamFailure::ServerError(504) => "gateway_timeout_504",
            UpstreamFailure::ServerError(_) => "server_error",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Reset => "reset",
            UpstreamFailure::Garbage => "garbage",
        }
    }

    /// Classifies an HTTP status from the primary: `None` when it is a definitive answer that
    /// must pass through unchanged (DESIGN §1: any 4xx, e.g. `invalid_grant`, is not a failure).
    pub fn from_status(status: u16) -> Option<UpstreamFailure> {
        match status {
            503 => Some(UpstreamFailure::Unavailable),
            500 | 502 | 504 => Some(UpstreamFailure::ServerError(status)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig::default()
    }

    fn run(events: &[Event], start: Breaker) -> Breaker {
        events
            .iter()
            .fold(start, |b, e| b.on(*e, Millis(0), &cfg()))
    }

    const FAIL: Event = Event::Failed(UpstreamFailure::Connect);

    #[test]
    fn default_config_is_valid() {
        assert_eq!(cfg().validate(), Ok(()));
    }

    #[test]
    fn invalid_configs_are_refused_by_name() {
        let bad = [
            BreakerConfig {
                window_len: 0,
                ..cfg()
            },
            BreakerConfig {
                window_len: 65,
                ..cfg()
            },
            BreakerConfig {
                consecutive_failures_max: 0,
                ..cfg()
            },
            BreakerConfig {
                window_failures_max: 0,
                ..cfg()
            },
            BreakerConfig {
                window_failures_max: 21,
                ..cfg()
            },
            BreakerConfig {
                open_max: Duration::from_millis(10),
                ..cfg()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn consecutive_failures_open_the_breaker_at_the_threshold() {
        let four = run(&[FAIL; 4], Breaker::new());
        assert_eq!(four.route(), Route::Primary);
        let five = four.on(FAIL, Millis(100), &cfg());
        assert_eq!(
            five,
            Breaker::Open {
                until: Millis(1100),
                open_for: Duration::from_secs(1)
            }
        );
        assert_eq!(five.route(), Route::Backup);
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let b = run(
            &[
                FAIL,
                FAIL,
                FAIL,
                FAIL,
                Event::Answered,
                FAIL,
                FAIL,
                FAIL,
                FAIL,
            ],
            Breaker::new(),
        );
        assert_eq!(b.label(), "closed");
    }

    #[test]
    fn failure_rate_over_the_window_opens_without_consecutive_runs() {
        // Alternate fail/success: never 2 consecutive failures, but the 10th failure in the
        // 20-outcome window (step 18) reaches window_failures_max.
        let mut b = Breaker::new();
        for i in 0..=18 {
            b = b.on(
                if i % 2 == 0 { FAIL } else { Event::Answered },
                Millis(0),
                &cfg(),
            );
            if i < 18 {
                assert_eq!(b.label(), "closed", "opened early at step {i}");
            }
        }
        assert_eq!(b.label(), "open");
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let mut b = Breaker::new();
        for _ in 0..4 {
            b = b.on(FAIL, Millis(0), &cfg());
            b = b.on(Event::Answered, Millis(0), &cfg());
        }
        for _ in 0..40 {
            b = b.on(Event::Answered, Millis(0), &cfg());
        }
        let Breaker::Closed { window, .. } = b else {
            panic!("{b:?}")
        };
        assert_eq!(window.failures(), 0);
    }

    #[test]
    fn open_becomes_half_open_only_when_its_time_is_up() {
        let open = Breaker::new().on(
            FAIL,
            Millis(0),
            &BreakerConfig {
                consecutive_failures_max: 1,
                ..cfg()
            },
        );
        assert_eq!(open.on(Event::Tick, Millis(999), &cfg()).label(), "open");
        let half = open.on(Event::Tick, Millis(1000), &cfg());
        assert_eq!(half.label(), "half_open");
        assert!(half.wants_probe());
        assert_eq!(half.route(), Route::Backup);
    }

    #[test]
    fn failed_probes_double_the_open_time_up_to_the_cap() {
        let config = BreakerConfig {
            consecutive_failures_max: 1,
            ..cfg()
        };
        let mut b = Breaker::new().on(FAIL, Millis(0), &config);
        let mut now = 0;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let Breaker::Open { until, open_for } = b else {
                panic!("{b:?}")
            };
            seen.push(open_for.as_secs());
            now = until.0;
            b = b.on(Event::Tick, Millis(now), &config).on(
                Event::ProbeFailed,
                Millis(now),
                &config,
            );
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        let closed = b.on(Event::Tick, Millis(now + 60_000), &config).on(
            Event::ProbeSucceeded,
            Millis(now),
            &config,
        );
        assert_eq!(closed, Breaker::new());
    }

    #[test]
    fn a_straggling_success_does_not_close_an_open_breaker() {
        let config = BreakerConfig {
            consecutive_failures_max: 1,
            ..cfg()
        };
        let open = Breaker::new().on(FAIL, Millis(0), &config);
        assert_eq!(open.on(Event::Answered, Millis(1), &config), open);
        let half = open.on(Event::Tick, Millis(5000), &config);
        assert_eq!(half.on(Event::Answered, Millis(5001), &config), half);
        assert_eq!(half.on(FAIL, Millis(5001), &config), half);
    }

    #[test]
    fn forced_modes_override_the_breaker() {
        let open = Breaker::Open {
            until: Millis(10),
            open_for: Duration::from_secs(1),
        };
        assert_eq!(Mode::Auto.route(&open), Route::Backup);
        assert_eq!(Mode::ForcedNormal.route(&open), Route::Primary);
        assert_eq!(Mode::ForcedOutage.route(&Breaker::new()), Route::Backup);
        assert_eq!(Mode::parse("outage"), Some(Mode::ForcedOutage));
        assert_eq!(Mode::parse("normal"), Some(Mode::ForcedNormal));
        assert_eq!(Mode::parse("auto"), Some(Mode::Auto));
        assert_eq!(Mode::parse("Outage"), None);
    }

    #[test]
    fn only_failures_before_processing_are_unambiguous() {
        assert!(!UpstreamFailure::Connect.is_ambiguous());
        assert!(!UpstreamFailure::Unavailable.is_ambiguous());
        for f in [
            UpstreamFailure::Timeout,
            UpstreamFailure::Reset,
            UpstreamFailure::Garbage,
            UpstreamFailure::ServerError(500),
            UpstreamFailure::ServerError(502),
            UpstreamFailure::ServerError(504),
        ] {
            assert!(f.is_ambiguous(), "{f:?}");
        }
    }

    #[test]
    fn definitive_statuses_pass_through() {
        for status in [200, 204, 302, 400, 401, 403, 404, 429, 501] {
            assert_eq!(UpstreamFailure::from_status(status), None, "{status}");
        }
        assert_eq!(
            UpstreamFailure::from_status(503),
            Some(UpstreamFailure::Unavailable)
        );
        assert_eq!(
            UpstreamFailure::from_status(502),
            Some(UpstreamFailure::ServerError(502))
        );
    }
}
