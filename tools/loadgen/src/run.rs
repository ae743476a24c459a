//! Driving the load: client threads, each with a current-thread tokio runtime, each running
//! its share of the keep-alive connections as tasks (hyper's `client::conn::http1` over a
//! `TcpStream`). Connections take request slots from one global counter: in the open loop a
//! slot is a due time on the schedule ([`crate::schedule`]), in the closed loop just the next
//! request. Slot `k` sends session `k mod N` of the population.

// A load generator reads the clock by nature: every figure it reports is a time.
#![allow(clippy::disallowed_methods)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use crate::population::Population;
use crate::report::{Outcome, Stats};
use crate::schedule::{Pace, pace, slot_count, slot_offset};

/// How to load.
pub struct Plan {
    /// Where to connect.
    pub addr: SocketAddr,
    /// `Host` header value (parsed once: every request clones it).
    pub host: hyper::header::HeaderValue,
    /// Request target (path and query), parsed once.
    pub path: hyper::Uri,
    /// `htu` of DPoP proofs.
    pub htu: String,
    /// Request method (POST with a population, else as given).
    pub method: Method,
    /// Sessions to send (without: bodiless requests, for a bare server such as the floor).
    pub population: Option<Arc<Population>>,
    /// Open loop at this many requests per second, or closed loop.
    pub rate_per_sec: Option<u64>,
    /// How long to send for.
    pub duration: Duration,
    /// Keep-alive connections in all.
    pub connections: usize,
    /// Client threads.
    pub threads: usize,
    /// CPUs to pin client threads to (thread `t` on `pin[t mod len]`).
    pub pin: Vec<usize>,
    /// Give up on one request after this long.
    pub request_timeout: Duration,
}

/// What every connection shares.
struct Shared {
    plan: Plan,
    next_slot: AtomicU64,
    /// Open loop: slots in the run.
    slots: Option<u64>,
    start: Instant,
    /// A random prefix making DPoP `jti`s unique across runs.
    jti_prefix: String,
}

/// Runs the plan; returns the merged statistics, the slots scheduled (open loop) and the time
/// from the first slot to the last answer.
pub fn run(plan: Plan) -> anyhow::Result<(Stats, Option<u64>, Duration)> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    let jti_prefix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let slots = plan.rate_per_sec.map(|r| slot_count(plan.duration, r));
    let threads = plan.threads.max(1);
    let connections = plan.connections.max(1);
    // A short lead so every thread is up and connected before the first slot is due.
    let shared = Arc::new(Shared {
        start: Instant::now() + Duration::from_millis(200),
        plan,
        next_slot: AtomicU64::new(0),
        slots,
        jti_prefix,
    });
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let shared = shared.clone();
            let mine = (0..connections).filter(|c| c % threads == t).count();
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || client_thread(&shared, t, mine))
                .context("spawning a client thread")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut total = Stats::new()?;
    for h in handles {
        let stats = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        total.merge(&stats)?;
    }
    let elapsed = Instant::now().saturating_duration_since(shared.start);
    Ok((total, slots, elapsed))
}

fn client_thread(shared: &Arc<Shared>, index: usize, connections: usize) -> anyhow::Result<Stats> {
    if let Some(cpu) = shared
        .plan
        .pin
        .get(index % shared.plan.pin.len().max(1))
        .copied()
    {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set)
            .with_context(|| format!("pinning client thread {index} to CPU {cpu}"))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    let stats = Rc::new(RefCell::new(Stats::new()?));
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::task::spawn_local(connection(shared.clone(), stats.clone())))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
    drop(local);
    Rc::try_unwrap(stats)
        .map(RefCell::into_inner)
        .map_err(|_| anyhow::anyhow!("statistics still shared after the run"))
}

/// Why a request got no response.
enum Failure {
    Connect,
    Io,
    Timeout,
    /// The request could not be built (a header value the HTTP crate refuses).
    Request,
}

impl Failure {
    fn name(&self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Io => "io",
            Failure::Timeout => "timeout",
            Failure::Request => "invalid request",
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|_| Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Connect)?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One keep-alive connection taking slots until the run is over.
async fn connection(shared: Arc<Shared>, stats: Rc<RefCell<Stats>>) {
    let plan = &shared.plan;
    let mut sender = connect(plan.addr).await.ok();
    let closed_loop_end = shared.start + plan.duration;
    tokio::time::sleep_until(shared.start.into()).await;
    loop {
        let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
        // When the latency clock starts for this request.
        let origin = match (shared.slots, plan.rate_per_sec) {
            (Some(slots), Some(rate)) => {
                if slot >= slots {
                    break;
                }
                let due = shared.start + slot_offset(slot, rate);
                let now = Instant::now();
                match pace(
                    due.saturating_duration_since(shared.start),
                    now.saturating_duration_since(shared.start),
                ) {
                    Pace::Wait(_) => {
                        tokio::time::sleep_until(due.into()).await;
                        let sent = Instant::now();
                        record_lag(&stats, sent.saturating_duration_since(due));
                        sent
                    }
                    Pace::Late(lag) => {
                        record_lag(&stats, lag);
                        due
                    }
                }
            }
            _ => {
                let now = Instant::now();
                if now >= closed_loop_end {
                    break;
                }
                now
            }
        };
        let (class, request) = build_request(&shared, slot);
        let sent = Instant::now();
        let result = match request {
            Ok(request) => tokio::time::timeout(
                plan.request_timeout,
                exchange(&mut sender, plan.addr, request),
            )
            .await
            .unwrap_or(Err(Failure::Timeout)),
            Err(_) => Err(Failure::Request),
        };
        let done = Instant::now();
        let outcome = match result {
            Ok((status, error)) => Outcome {
                class,
                status,
                error,
            },
            Err(failure) => {
                // A fresh connection for the next request.
                sender = None;
                Outcome {
                    class,
                    status: 0,
                    error: failure.name().to_string(),
                }
            }
        };
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        stats.borrow_mut().record(
            outcome,
            nanos(done.saturating_duration_since(origin)),
            nanos(done.saturating_duration_since(sent)),
        );
    }
}

fn record_lag(stats: &Rc<RefCell<Stats>>, lag: Duration) {
    let ns = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX).max(1);
    stats.borrow_mut().send_lag_ns.saturating_record(ns);
}

/// Sends one request on the connection (opening it first if needed) and reads the whole
/// answer: its status and, for a non-200, the JSON body's `error`.
async fn exchange(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> Result<(u16, String), Failure> {
    let mut s = match sender.take() {
        Some(s) if !s.is_closed() => s,
        _ => connect(addr).await?,
    };
    s.ready().await.map_err(|_| Failure::Io)?;
    let response = s.send_request(request).await.map_err(|_| Failure::Io)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| Failure::Io)?
        .to_bytes();
    *sender = Some(s);
    let error = if status == 200 {
        String::new()
    } else {
        error_code(&body)
    };
    Ok((status, error))
}

/// The RFC 6749 §5.2 `error` of an error body, `-` if it has none. Bounded so a server
/// echoing garbage cannot grow the outcome table without limit.
pub fn error_code(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) if !e.error.is_empty() && e.error.len() <= 64 => e.error,
        Ok(_) => "(invalid error code)".to_string(),
        Err(_) => "-".to_string(),
    }
}

type Built = Result<Request<Full<Bytes>>, hyper::http::Error>;

fn build_request(shared: &Shared, slot: u64) -> (usize, Built) {
    let plan = &shared.plan;
    let mut builder = Request::builder()
        .method(plan.method.clone())
        .uri(plan.path.clone())
        .header(hyper::header::HOST, plan.host.clone());
    let Some(population) = plan.population.as_deref() else {
        return (0, builder.body(Full::new(Bytes::new())));
    };
    let len = u64::try_from(population.sessions.len())
        .unwrap_or(u64::MAX)
        .max(1);
    let index = usize::try_from(slot % len).unwrap_or(0);
    let Some(session) = population.sessions.get(index) else {
        return (0, builder.body(Full::new(Bytes::new())));
    };
    builder = builder.header(
        hyper::header::CONTENT_TYPE,
        "application/x-www-form-urlencoded",
    );
    if let Some(prover) = &session.dpop {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let jti = format!("{}-{slot}", shared.jti_prefix);
        builder = builder.header(
            "dpop",
            prover.proof(plan.method.as_str(), &plan.htu, &jti, iat),
        );
    }
    (session.class, builder.body(Full::new(session.body.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_come_from_the_json_error_field_only() {
        assert_eq!(
            error_code(br#"{"error":"invalid_grant","error_description":"x"}"#),
            "invalid_grant"
        );
        assert_eq!(error_code(b"<html>502</html>"), "-");
        assert_eq!(error_code(br#"{"error":""}"#), "(invalid error code)");
        assert_eq!(
            error_code(format!(r#"{{"error":"{}"}}"#, "a".repeat(65)).as_bytes()),
            "(invalid error code)"
        );
        assert_eq!(error_code(b""), "-");
    }
}
