//! Capture counters: written by the server's workers (enqueue, drop) and the capture worker
//! (everything else) with relaxed atomics, rendered as Prometheus text on scrape.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::derive::Skip;

/// The capture counters. Shared as `Arc<CaptureStats>` between the queue's senders, the worker
/// and the metrics endpoint.
#[derive(Debug, Default)]
pub struct CaptureStats {
    offered: AtomicU64,
    enqueued: AtomicU64,
    dropped: AtomicU64,
    captured: AtomicU64,
    superseded: AtomicU64,
    revoked: AtomicU64,
    refusals_ignored: AtomicU64,
    skipped: [AtomicU64; Skip::ALL.len()],
    store_failed: AtomicU64,
    settled: AtomicU64,
    queue_depth: AtomicU64,
}

/// A plain copy of the counters (admin status, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureCounts {
    /// Jobs offered to the queue, counted *before* the send (so before the job can be taken):
    /// accepted or dropped.
    pub offered: u64,
    /// Jobs accepted by the queue.
    pub enqueued: u64,
    /// Jobs dropped because the queue was full or the worker had stopped.
    pub dropped: u64,
    /// Snapshots written (with their artifacts).
    pub captured: u64,
    /// Refresh tokens recorded as rotated out.
    pub superseded: u64,
    /// Refresh tokens revoked after the primary refused one of their family.
    pub revoked: u64,
    /// Primary refusals not acted on: another client or another DPoP key presented the token.
    pub refusals_ignored: u64,
    /// Responses not captured, by reason (indexed like [`Skip::ALL`]).
    pub skipped: [u64; Skip::ALL.len()],
    /// Store writes that failed.
    pub store_failed: u64,
    /// Jobs finished: taken from the queue in a batch whose every write is durable (or that
    /// had nothing to write for them: skipped, ignored). Counted after the batch's writes
    /// resolve, never for a batch with a failed write. Jobs are taken in queue order, so once
    /// `settled` reaches the `offered` count read after a client saw its response, that
    /// response's capture is durable, provided nothing was dropped and no write failed (either
    /// leaves a hole the count cannot place): the acknowledgement a test can wait for, since
    /// the response itself never waits for capture.
    pub settled: u64,
    /// Jobs waiting in the queue.
    pub queue_depth: u64,
}

impl CaptureCounts {
    /// Skips for one reason.
    pub fn skipped(&self, reason: Skip) -> u64 {
        self.skipped.get(reason.index()).copied().unwrap_or(0)
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl CaptureStats {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn on_offered(&self) {
        bump(&self.offered, 1);
    }
    pub(super) fn on_settled(&self, n: u64) {
        bump(&self.settled, n);
    }
    pub(super) fn on_enqueued(&self) {
        bump(&self.enqueued, 1);
    }
    pub(super) fn on_dropped(&self) {
        bump(&self.dropped, 1);
    }
    pub(super) fn on_captured(&self, n: u64) {
        bump(&self.captured, n);
    }
    pub(super) fn on_superseded(&self, n: u64) {
        bump(&self.superseded, n);
    }
    pub(super) fn on_revoked(&self, n: u64) {
        bump(&self.revoked, n);
    }
    pub(super) fn on_refusal_ignored(&self) {
        bump(&self.refusals_ignored, 1);
    }
    pub(super) fn on_skipped(&self, reason: Skip) {
        if let Some(c) = self.skipped.get(reason.index()) {
            bump(c, 1);
        }
    }
    pub(super) fn on_store_failed(&self, n: u64) {
        bump(&self.store_failed, n);
    }
    /// Counted before a send is attempted and taken back if it fails, and decremented by the
    /// worker on receipt, so the gauge never goes below zero.
    pub(super) fn depth_add(&self) {
        bump(&self.queue_depth, 1);
    }
    pub(super) fn depth_sub(&self, n: u64) {
        let _ = self
            .queue_depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(n))
            });
    }

    /// Jobs waiting in the queue now.
    pub fn queue_depth(&self) -> u64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    /// A copy of every counter.
    pub fn counts(&self) -> CaptureCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CaptureCounts {
            offered: get(&self.offered),
            enqueued: get(&self.enqueued),
            dropped: get(&self.dropped),
            captured: get(&self.captured),
            superseded: get(&self.superseded),
            revoked: get(&self.revoked),
            refusals_ignored: get(&self.refusals_ignored),
            skipped: std::array::from_fn(|i| self.skipped.get(i).map_or(0, get)),
            store_failed: get(&self.store_failed),
            settled: get(&self.settled),
            queue_depth: get(&self.queue_depth),
        }
    }

    /// Appends the counters as Prometheus text (exposition format 0.0.4), names
    /// `backstop_capture_*`.
    pub fn render_prometheus(&self, out: &mut String) {
        let c = self.counts();
        // Writing to a String cannot fail.
        let _ = render(&c, out);
    }
}

fn render(c: &CaptureCounts, out: &mut String) -> std::fmt::Result {
    let counters: [(&str, &str, u64); 9] = [
        (
            "backstop_capture_offered_total",
            "Primary token responses offered to the capture queue (counted before the send).",
            c.offered,
        ),
        (
            "backstop_capture_enqueued_total",
            "Primary token responses queued for capture.",
            c.enqueued,
        ),
        (
            "backstop_capture_dropped_total",
            "Captures dropped because the capture queue was full or closed.",
            c.dropped,
        ),
        (
            "backstop_capture_captured_total",
            "Session snapshots written to the store.",
            c.captured,
        ),
        (
            "backstop_capture_superseded_total",
            "Refresh tokens recorded as rotated out by the primary.",
            c.superseded,
        ),
        (
            "backstop_capture_revoked_total",
            "Refresh tokens revoked after the primary refused their family (invalid_grant).",
            c.revoked,
        ),
        (
            "backstop_capture_refusals_ignored_total",
            "Primary invalid_grant answers not acted on: the token came from another client or DPoP key.",
            c.refusals_ignored,
        ),
        (
            "backstop_capture_store_failed_total",
            "Capture writes the store failed to make durable.",
            c.store_failed,
        ),
        (
            "backstop_capture_settled_total",
            "Capture jobs finished with every write durable (jobs are taken in queue order).",
            c.settled,
        ),
    ];
    for (name, help, value) in counters {
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "# TYPE {name} counter")?;
        writeln!(out, "{name} {value}")?;
    }
    writeln!(
        out,
        "# HELP backstop_capture_skipped_total Primary token responses not captured, by reason."
    )?;
    writeln!(out, "# TYPE backstop_capture_skipped_total counter")?;
    for reason in Skip::ALL {
        writeln!(
            out,
            "backstop_capture_skipped_total{{reason=\"{}\"}} {}",
            reason.as_str(),
            c.skipped(reason)
        )?;
    }
    writeln!(
        out,
        "# HELP backstop_capture_queue_depth Captures waiting for the capture worker."
    )?;
    writeln!(out, "# TYPE backstop_capture_queue_depth gauge")?;
    writeln!(out, "backstop_capture_queue_depth {}", c.queue_depth)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_parses_and_carries_every_counter() {
        let s = CaptureStats::new();
        s.on_enqueued();
        s.on_dropped();
        s.on_dropped();
        s.on_skipped(Skip::OpaqueAccessToken);
        s.depth_add();
        let mut out = String::new();
        s.render_prometheus(&mut out);
        let lines = out.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let value = |name: &str, reason: Option<&str>| {
            scrape
                .samples
                .iter()
                .find(|x| {
                    x.metric == name && reason.is_none_or(|r| x.labels.get("reason") == Some(r))
                })
                .map(|x| match x.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                    ref other => panic!("unexpected {other:?}"),
                })
                .unwrap_or_else(|| panic!("{name} missing in\n{out}"))
        };
        assert_eq!(value("backstop_capture_dropped_total", None), 2.0);
        assert_eq!(value("backstop_capture_enqueued_total", None), 1.0);
        assert_eq!(value("backstop_capture_queue_depth", None), 1.0);
        assert_eq!(
            value(
                "backstop_capture_skipped_total",
                Some("opaque_access_token")
            ),
            1.0
        );
        assert_eq!(
            value("backstop_capture_skipped_total", Some("bad_signature")),
            0.0
        );
        assert!(out.contains("# TYPE backstop_capture_queue_depth gauge"));
    }

    #[test]
    fn skip_labels_are_unique_and_indexed_in_order() {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in Skip::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(r.to_string(), r.as_str());
            assert!(seen.insert(r.as_str()));
        }
    }

    #[test]
    fn depth_never_goes_below_zero() {
        let s = CaptureStats::new();
        s.depth_sub(3);
        assert_eq!(s.queue_depth(), 0);
    }
}
