//! What a run measured, merged from every client thread, and its two renderings: JSON for
//! scripts and a table for people. CPU per request is the headline; latency comes with the
//! setup that produced it (on a 2-vCPU VM a loopback round trip that wakes the other vCPU costs
//! 80–90 µs, so latency there measures the VM as much as the server).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cpu::CpuTime;

/// Outcome of one request: a response's status and RFC 6749 `error` code, or a transport
/// failure (status 0, `error` naming it: `connect`, `io`, `timeout`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Outcome {
    /// Population class index (see `population::Population::classes`).
    pub class: usize,
    /// HTTP status, 0 when no response came.
    pub status: u16,
    /// The JSON body's `error` field on a non-200 (`-` when absent or not JSON), empty on 200.
    pub error: String,
}

/// Counts and histograms of one client thread; merged at the end.
pub struct Stats {
    /// Latency in ns from the request's due time (open loop, when it was late) or its send.
    pub latency_ns: Histogram<u64>,
    /// Latency in ns from the moment the request was written (the server's part alone).
    pub service_ns: Histogram<u64>,
    /// How far behind its slot each request was sent, ns (open loop only).
    pub send_lag_ns: Histogram<u64>,
    /// Requests per outcome.
    pub outcomes: BTreeMap<Outcome, u64>,
}

/// Histogram bounds: 1 ns to 100 s, 3 significant digits.
const HIGHEST_NS: u64 = 100_000_000_000;

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3)
        .map_err(|e| anyhow::anyhow!("cannot create a latency histogram: {e}"))
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Stats {
            latency_ns: histogram()?,
            service_ns: histogram()?,
            send_lag_ns: histogram()?,
            outcomes: BTreeMap::new(),
        })
    }

    /// Records one completed (or failed) request.
    pub fn record(&mut self, outcome: Outcome, latency_ns: u64, service_ns: u64) {
        self.latency_ns.saturating_record(latency_ns.max(1));
        self.service_ns.saturating_record(service_ns.max(1));
        *self.outcomes.entry(outcome).or_insert(0) += 1;
    }

    /// Adds `other`'s counts and histograms to these.
    pub fn merge(&mut self, other: &Stats) -> anyhow::Result<()> {
        for (mine, theirs) in [
            (&mut self.latency_ns, &other.latency_ns),
            (&mut self.service_ns, &other.service_ns),
            (&mut self.send_lag_ns, &other.send_lag_ns),
        ] {
            mine.add(theirs)
                .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
        }
        for (k, v) in &other.outcomes {
            *self.outcomes.entry(k.clone()).or_insert(0) += v;
        }
        Ok(())
    }

    /// Requests recorded (responses and transport failures).
    pub fn total(&self) -> u64 {
        self.outcomes.values().sum()
    }
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value recorded.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of a histogram of nanoseconds, in microseconds.
    pub fn of_ns(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Some(Percentiles {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1_000.0,
        })
    }
}

/// How the load was generated: printed next to every latency figure.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Target URL.
    pub url: String,
    /// `open` (fixed rate, latency from the schedule) or `closed` (each connection back to back).
    pub mode: &'static str,
    /// Target rate, requests per second (open loop).
    pub rate_per_sec: Option<u64>,
    /// Planned duration, seconds.
    pub seconds: f64,
    /// Keep-alive connections.
    pub connections: usize,
    /// Client threads (one current-thread runtime each).
    pub threads: usize,
    /// CPUs the client threads are pinned to, if any.
    pub pinned_cpus: Option<Vec<usize>>,
    /// Sessions in the population (0: generic requests without one).
    pub population_sessions: usize,
    /// Of which DPoP-bound (a fresh proof per request).
    pub dpop_sessions: usize,
    /// The server process measured, if any.
    pub server_pid: Option<u32>,
}

/// One line of the outcome table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OutcomeCount {
    /// Population class (`""` when the population has none).
    pub class: String,
    /// HTTP status (0: no response).
    pub status: u16,
    /// RFC 6749 `error` code (empty for 200).
    pub error: String,
    /// Requests.
    pub count: u64,
}

/// CPU seconds spent by a process over the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cpu {
    /// user + system seconds.
    pub seconds: f64,
    /// Of which user time.
    pub user_seconds: f64,
    /// Of which system time.
    pub system_seconds: f64,
    /// Seconds per 1 000 completed requests (= ms per request).
    pub seconds_per_1000_requests: f64,
    /// Microseconds per completed request.
    pub us_per_request: f64,
}

impl Cpu {
    fn new(time: CpuTime, requests: u64) -> Self {
        let seconds = time.total_secs();
        let per = if requests == 0 {
            0.0
        } else {
            seconds / requests as f64
        };
        Cpu {
            seconds,
            user_seconds: time.user_secs,
            system_seconds: time.system_secs,
            seconds_per_1000_requests: per * 1_000.0,
            us_per_request: per * 1e6,
        }
    }
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How the load was generated.
    pub setup: Setup,
    /// Requests that got an answer or failed (every one of them is in `outcomes`).
    pub requests: u64,
    /// Of which HTTP 200.
    pub ok: u64,
    /// Of which no HTTP response at all (connect, I/O, timeout).
    pub transport_errors: u64,
    /// Open loop: slots the schedule held but the run did not get to (drain timeout).
    pub unsent: u64,
    /// Wall-clock seconds from the first slot to the last answer.
    pub elapsed_secs: f64,
    /// `requests / elapsed_secs`.
    pub throughput_per_sec: f64,
    /// Server CPU over the run (with `--server-pid`).
    pub server_cpu: Option<Cpu>,
    /// The load generator's own CPU over the run.
    pub client_cpu: Cpu,
    /// Latency from the due time (late open-loop requests) or the send, µs.
    pub latency_us: Option<Percentiles>,
    /// Latency from the send, µs.
    pub service_us: Option<Percentiles>,
    /// How late behind the schedule requests were sent, µs (open loop).
    pub send_lag_us: Option<Percentiles>,
    /// Requests by class, status and `error`.
    pub outcomes: Vec<OutcomeCount>,
}

/// Everything measured around the statistics.
pub struct Measured {
    /// Slots the open-loop schedule held.
    pub scheduled: Option<u64>,
    /// Wall-clock seconds of the run.
    pub elapsed_secs: f64,
    /// Server CPU time over the run.
    pub server_cpu: Option<CpuTime>,
    /// Own CPU time over the run.
    pub client_cpu: CpuTime,
}

impl Report {
    /// Assembles the report.
    pub fn new(setup: Setup, classes: &[String], stats: &Stats, measured: &Measured) -> Self {
        let requests = stats.total();
        let count_where = |f: &dyn Fn(&Outcome) -> bool| -> u64 {
            stats
                .outcomes
                .iter()
                .filter(|(k, _)| f(k))
                .map(|(_, v)| *v)
                .sum()
        };
        let ok = count_where(&|o| o.status == 200);
        let transport_errors = count_where(&|o| o.status == 0);
        let outcomes = stats
            .outcomes
            .iter()
            .map(|(k, v)| OutcomeCount {
                class: classes.get(k.class).cloned().unwrap_or_default(),
                status: k.status,
                error: k.error.clone(),
                count: *v,
            })
            .collect();
        let responded = requests - transport_errors;
        Report {
            requests,
            ok,
            transport_errors,
            unsent: measured.scheduled.map_or(0, |s| s.saturating_sub(requests)),
            elapsed_secs: measured.elapsed_secs,
            throughput_per_sec: if measured.elapsed_secs > 0.0 {
                requests as f64 / measured.elapsed_secs
            } else {
                0.0
            },
            server_cpu: measured.server_cpu.map(|t| Cpu::new(t, responded)),
            client_cpu: Cpu::new(measured.client_cpu, requests),
            latency_us: Percentiles::of_ns(&stats.latency_ns),
            service_us: Percentiles::of_ns(&stats.service_ns),
            send_lag_us: Percentiles::of_ns(&stats.send_lag_ns),
            outcomes,
            setup,
        }
    }

    /// The human rendering.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let s = &self.setup;
        let _ = writeln!(out, "backstop-loadgen  {}", s.url);
        let pin = s.pinned_cpus.as_ref().map_or("none".to_string(), |c| {
            c.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
        });
        let _ = writeln!(
            out,
            "setup: {} loop{}, {:.1} s, {} connections, {} client threads, pinned to CPUs: {pin}, population {} sessions ({} DPoP)",
            s.mode,
            s.rate_per_sec
                .map_or(String::new(), |r| format!(" at {r} req/s")),
            s.seconds,
            s.connections,
            s.threads,
            s.population_sessions,
            s.dpop_sessions,
        );
        let _ = writeln!(out);
        match &self.server_cpu {
            Some(cpu) => {
                let _ = writeln!(
                    out,
                    "server CPU: {:.3} s per 1000 requests ({:.2} µs/request; {:.2} s over the run: {:.2} user + {:.2} system; pid {})",
                    cpu.seconds_per_1000_requests,
                    cpu.us_per_request,
                    cpu.seconds,
                    cpu.user_seconds,
                    cpu.system_seconds,
                    s.server_pid.unwrap_or(0),
                );
            }
            None => {
                let _ = writeln!(out, "server CPU: not measured (no --server-pid)");
            }
        }
        let _ = writeln!(
            out,
            "client CPU: {:.3} s per 1000 requests ({:.2} µs/request)",
            self.client_cpu.seconds_per_1000_requests, self.client_cpu.us_per_request
        );
        let _ = writeln!(
            out,
            "requests:   {} in {:.2} s = {:.0} req/s; {} HTTP 200, {} without response, {} not sent",
            self.requests,
            self.elapsed_secs,
            self.throughput_per_sec,
            self.ok,
            self.transport_errors,
            self.unsent
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (µs)", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        // In a closed loop every request is sent when its connection is free: no due time.
        let open = s.rate_per_sec.is_some();
        for (name, p) in [
            ("from due time", if open { &self.latency_us } else { &None }),
            ("from send", &self.service_us),
            ("send lag behind schedule", &self.send_lag_us),
        ] {
            if let Some(p) = p {
                let _ = writeln!(
                    out,
                    "{name:<28} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                    p.p50, p.p90, p.p99, p.p999, p.max, p.mean
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:<28} {:>10}",
            "class", "status", "error", "count"
        );
        for o in &self.outcomes {
            let class = if o.class.is_empty() { "-" } else { &o.class };
            let error = if o.error.is_empty() { "-" } else { &o.error };
            let _ = writeln!(
                out,
                "{class:<16} {:>6} {error:<28} {:>10}",
                o.status, o.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            url: "http://127.0.0.1:1/token".into(),
            mode: "open",
            rate_per_sec: Some(1000),
            seconds: 1.0,
            connections: 2,
            threads: 1,
            pinned_cpus: Some(vec![0]),
            population_sessions: 3,
            dpop_sessions: 1,
            server_pid: Some(42),
        }
    }

    fn outcome(class: usize, status: u16, error: &str) -> Outcome {
        Outcome {
            class,
            status,
            error: error.into(),
        }
    }

    #[test]
    fn merged_stats_add_counts_and_histograms() {
        let mut a = Stats::new().unwrap();
        let mut b = Stats::new().unwrap();
        for i in 1..=100u64 {
            a.record(outcome(0, 200, ""), i * 1_000, i * 500);
        }
        b.record(
            outcome(1, 503, "temporarily_unavailable"),
            1_000_000,
            900_000,
        );
        b.record(outcome(0, 200, ""), 1_000, 500);
        a.merge(&b).unwrap();
        assert_eq!(a.total(), 102);
        assert_eq!(a.outcomes[&outcome(0, 200, "")], 101);
        assert_eq!(a.latency_ns.len(), 102);
        assert_eq!(
            a.latency_ns.max(),
            a.latency_ns.highest_equivalent(1_000_000)
        );
    }

    #[test]
    fn the_report_counts_ok_errors_and_cpu_per_request() {
        let mut stats = Stats::new().unwrap();
        for i in 1..=1000u64 {
            stats.record(outcome(0, 200, ""), i * 1_000, i * 1_000);
        }
        for _ in 0..500 {
            stats.record(outcome(1, 400, "invalid_grant"), 2_000, 2_000);
        }
        for _ in 0..500 {
            stats.record(outcome(1, 0, "connect"), 2_000, 2_000);
        }
        let classes = vec!["hit".to_string(), "revoked".to_string()];
        let r = Report::new(
            setup(),
            &classes,
            &stats,
            &Measured {
                scheduled: Some(2_010),
                elapsed_secs: 2.0,
                server_cpu: Some(CpuTime {
                    user_secs: 0.02,
                    system_secs: 0.01,
                }),
                client_cpu: CpuTime {
                    user_secs: 0.04,
                    system_secs: 0.0,
                },
            },
        );
        assert_eq!(
            (r.requests, r.ok, r.transport_errors, r.unsent),
            (2000, 1000, 500, 10)
        );
        assert!((r.throughput_per_sec - 1000.0).abs() < 1e-9);
        // Server CPU is per request that reached it: 0.03 s over 1 500 responses.
        let server = r.server_cpu.as_ref().unwrap();
        assert!((server.us_per_request - 20.0).abs() < 1e-9);
        assert!((server.seconds_per_1000_requests - 0.02).abs() < 1e-12);
        assert!((server.user_seconds - 0.02).abs() < 1e-12);
        assert!((server.system_seconds - 0.01).abs() < 1e-12);
        assert!((r.client_cpu.us_per_request - 20.0).abs() < 1e-9);
        let lat = r.latency_us.as_ref().unwrap();
        // 1 000 values 1..1000 µs and 1 000 of 2 µs: the median is 2 µs, p90 800 µs.
        assert!((lat.p50 - 2.0).abs() < 0.01, "{lat:?}");
        assert!((lat.p90 - 800.0).abs() < 1.0, "{lat:?}");
        assert!((lat.max - 1000.0).abs() < 1.0, "{lat:?}");
        assert!(r.send_lag_us.is_none());
        assert_eq!(
            r.outcomes,
            vec![
                OutcomeCount {
                    class: "hit".into(),
                    status: 200,
                    error: String::new(),
                    count: 1000
                },
                OutcomeCount {
                    class: "revoked".into(),
                    status: 0,
                    error: "connect".into(),
                    count: 500
                },
                OutcomeCount {
                    class: "revoked".into(),
                    status: 400,
                    error: "invalid_grant".into(),
                    count: 500
                },
            ]
        );
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["setup"]["mode"], "open");
        assert_eq!(json["outcomes"][2]["error"], "invalid_grant");
        let table = r.table();
        assert!(table.contains("pinned to CPUs: 0"), "{table}");
        assert!(
            table.contains("server CPU: 0.020 s per 1000 requests"),
            "{table}"
        );
        assert!(table.contains("invalid_grant"), "{table}");
    }

    #[test]
    fn an_empty_run_reports_zeros_not_nans() {
        let stats = Stats::new().unwrap();
        let r = Report::new(
            setup(),
            &[],
            &stats,
            &Measured {
                scheduled: None,
                elapsed_secs: 0.0,
                server_cpu: None,
                client_cpu: CpuTime::default(),
            },
        );
        assert_eq!(r.requests, 0);
        assert_eq!(r.throughput_per_sec, 0.0);
        assert!(r.latency_us.is_none());
        assert!(
            serde_json::to_string(&r)
                .unwrap()
                .contains("\"latency_us\":null")
        );
    }
}
