//! The failover gate of one worker: its circuit breaker, its upstream client, the half-open
//! probe, and the decision "primary or backup" for each request.
//!
//! Each worker owns a `Gate` and nothing in it is shared, so the request path takes no lock:
//! the breaker is a `Cell` on the worker's thread. The operator's forced mode is one atomic
//! in `Shared`, and each gate publishes its breaker state into `Shared` (one writer per slot)
//! for the admin status.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use super::upstream::Upstream;
use crate::failover::{Breaker, Event, Millis, Mode, Route, UpstreamFailure};
use crate::metrics::WorkerMetrics;

/// How often an open breaker is checked for a due probe when no request arrives.
const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// Encoding of `Mode` in `Shared::mode`.
pub(crate) const fn mode_code(mode: Mode) -> u8 {
    match mode {
        Mode::Auto => 0,
        Mode::ForcedNormal => 1,
        Mode::ForcedOutage => 2,
    }
}

pub(crate) const fn mode_from_code(code: u8) -> Mode {
    match code {
        1 => Mode::ForcedNormal,
        2 => Mode::ForcedOutage,
        _ => Mode::Auto,
    }
}

/// Encoding of a breaker state in `Shared::breakers`.
pub(crate) fn breaker_code(b: &Breaker) -> u8 {
    match b {
        Breaker::Closed { .. } => 0,
        Breaker::Open { .. } => 1,
        Breaker::HalfOpen { .. } => 2,
    }
}

/// The label of a published breaker code.
pub(crate) const fn breaker_label(code: u8) -> &'static str {
    match code {
        1 => "open",
        2 => "half_open",
        _ => "closed",
    }
}

/// One worker's failover state.
pub(crate) struct Gate {
    pub(crate) upstream: Upstream,
    breaker: Cell<Breaker>,
    probe_in_flight: Cell<bool>,
    shared: Arc<Shared>,
    /// This gate's worker index.
    pub(crate) worker: usize,
}

impl Gate {
    pub(crate) fn new(upstream: Upstream, shared: Arc<Shared>, worker: usize) -> Self {
        Self {
            upstream,
            breaker: Cell::new(Breaker::new()),
            probe_in_flight: Cell::new(false),
            shared,
            worker,
        }
    }

    fn now(&self) -> Millis {
        Millis(u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn mode(&self) -> Mode {
        mode_from_code(self.shared.mode.load(Ordering::Relaxed))
    }

    /// Where the next request goes.
    pub(crate) fn route(&self, metrics: &WorkerMetrics) -> Route {
        self.apply(Event::Tick, metrics);
        self.mode().route(&self.breaker.get())
    }

    /// Seconds until the breaker next probes the primary (for `Retry-After`), at least 1.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        match self.breaker.get() {
            Breaker::Open { until, .. } => {
                until.0.saturating_sub(self.now().0).div_ceil(1000).max(1)
            }
            _ => 1,
        }
    }

    /// Feeds the outcome of a forwarded request to the breaker.
    pub(crate) fn record(&self, outcome: Result<(), UpstreamFailure>, metrics: &WorkerMetrics) {
        let event = match outcome {
            Ok(()) => Event::Answered,
            Err(failure) => Event::Failed(failure),
        };
        self.apply(event, metrics);
    }

    fn apply(&self, event: Event, metrics: &WorkerMetrics) {
        let before = self.breaker.get();
        let after = before.on(event, self.now(), &self.shared.config.failover);
        if before.label() == after.label() {
            self.breaker.set(after);
            return;
        }
        self.breaker.set(after);
        if let Some(slot) = self.shared.breakers.get(self.worker) {
            slot.store(breaker_code(&after), Ordering::Relaxed);
        }
        metrics.breaker_transition(breaker_code(&after));
        let cause = match event {
            Event::Failed(f) => f.label(),
            Event::ProbeSucceeded => "probe_succeeded",
            Event::ProbeFailed => "probe_failed",
            Event::Tick => "open_period_over",
            Event::Answered => "answered",
        };
        tracing::warn!(
            worker = self.worker,
            from = before.label(),
            to = after.label(),
            cause,
            "circuit breaker transition"
        );
        self.shared.audit.record(crate::audit::AuditRecord {
            time_ms: super::unix_now_ms(),
            event: crate::audit::AuditEvent::BreakerTransition {
                worker: self.worker,
                from: before.label(),
                to: after.label(),
                cause,
            },
        });
    }

    /// Runs forever on the worker's `LocalSet`: moves an open breaker to half-open when its
    /// time is up and sends the probe, even when no request arrives to do it.
    pub(crate) async fn run_ticker(self: Rc<Self>) {
        let mut interval = tokio::time::interval(TICK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.tick_and_probe();
        }
    }

    fn metrics(&self) -> Option<&WorkerMetrics> {
        self.shared.metrics.worker(self.worker)
    }

    /// One tick: advance the breaker and start a probe if one is wanted and none is running.
    pub(crate) fn tick_and_probe(self: &Rc<Self>) {
        let Some(metrics) = self.metrics() else {
            return;
        };
        self.apply(Event::Tick, metrics);
        if !self.breaker.get().wants_probe() || self.probe_in_flight.get() {
            return;
        }
        self.probe_in_flight.set(true);
        let gate = self.clone();
        tokio::task::spawn_local(async move {
            let result = gate.upstream.probe().await;
            if let Some(metrics) = gate.metrics() {
                match result {
                    Ok(()) => gate.apply(Event::ProbeSucceeded, metrics),
                    Err(failure) => {
                        tracing::info!(
                            worker = gate.worker,
                            failure = failure.label(),
                            "probe failed"
                        );
                        gate.apply(Event::ProbeFailed, metrics);
                    }
                }
            }
            gate.probe_in_flight.set(false);
        });
    }
}
