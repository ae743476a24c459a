//! One client connection: hyper's HTTP/1.1 state machine over a socket wrapper that tracks the
//! connection's phase, and a watchdog that closes the connection when a phase lasts too long.
//!
//! hyper's own `header_read_timeout` starts as soon as a keep-alive connection goes idle, so it
//! cannot tell "no new request for a minute" (fine) from "a request head trickling in for ten
//! seconds" (slowloris). We disable it and keep our own phase instead: `Idle` until the first
//! byte of a request arrives, `Head` until hyper hands the parsed head to the service, `Busy`
//! until the service has answered. The watchdog applies the idle limit to `Idle`, the
//! header-read limit to `Head`, and nothing to `Busy` (the body read has its own timeout in the
//! router).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::HttpLimits;
use crate::metrics::{ConnectionEnd, WorkerMetrics};

/// Where a connection is in its request cycle; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the next request since the instant given.
    Idle(Instant),
    /// Receiving a request head since the instant given.
    Head(Instant),
    /// A request is being served.
    Busy,
    /// The service answered at the instant given and the response is about to be written:
    /// idle since then, as far as the watchdog is concerned. The response's first write,
    /// which follows at once, moves it to `Idle` from the same instant instead of reading the
    /// clock again; later writes (a slow reader) restart the idle clock as any write does.
    Answered(Instant),
}

/// The phase of one connection, shared by the socket wrapper, the service and the watchdog,
/// all on the same worker thread. Transitions are plain `Cell` writes: nothing is woken per
/// request (see `watchdog` for how its deadlines are still met exactly).
///
/// It also carries the guard's verdicts to the connection (see `serve`): close now, or finish
/// the request in flight and close; the guard wakes the connection's task to act on them.
pub(crate) struct PhaseCell {
    phase: Cell<Phase>,
    /// The watchdog's reason to close the connection, once it has one.
    close: Cell<Option<ConnectionEnd>>,
    /// Shutdown began: finish the request in flight, then close.
    drain: Cell<bool>,
    /// The connection's task, to wake when `close` or `drain` is set.
    conn_task: Cell<Option<Waker>>,
}

impl std::fmt::Debug for PhaseCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhaseCell")
            .field("phase", &self.phase.get())
            .field("close", &self.close.get())
            .field("drain", &self.drain.get())
            .finish_non_exhaustive()
    }
}

impl PhaseCell {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            phase: Cell::new(Phase::Idle(now)),
            close: Cell::new(None),
            drain: Cell::new(false),
            conn_task: Cell::new(None),
        }
    }

    fn request_close(&self, end: ConnectionEnd) {
        self.close.set(Some(end));
        self.wake_conn();
    }

    fn request_drain(&self) {
        self.drain.set(true);
        self.wake_conn();
    }

    fn wake_conn(&self) {
        if let Some(w) = self.conn_task.take() {
            w.wake();
        }
    }

    /// Remembers the connection's task for `wake_conn` (a clone only when it changed).
    fn park_conn(&self, waker: &Waker) {
        let task = match self.conn_task.take() {
            Some(w) if w.will_wake(waker) => w,
            _ => waker.clone(),
        };
        self.conn_task.set(Some(task));
    }

    pub(crate) fn get(&self) -> Phase {
        self.phase.get()
    }

    /// The service has the request head: the header-read clock stops.
    pub(crate) fn request_started(&self) {
        self.phase.set(Phase::Busy);
    }

    /// The service produced its response at `at` (the caller's clock reading): the idle clock
    /// starts.
    pub(crate) fn request_finished(&self, at: Instant) {
        self.phase.set(Phase::Answered(at));
    }

    fn bytes_read(&self) {
        if let Phase::Idle(_) | Phase::Answered(_) = self.phase.get() {
            self.phase.set(Phase::Head(Instant::now()));
            // Stores a permit if the watchdog is not waiting yet, so it cannot be missed.
        }
    }

    fn bytes_written(&self) {
        // Writing a response to a slow reader is activity, not idleness.
        match self.phase.get() {
            Phase::Answered(at) => self.phase.set(Phase::Idle(at)),
            Phase::Idle(_) => self.phase.set(Phase::Idle(Instant::now())),
            Phase::Head(_) | Phase::Busy => {}
        }
    }
}

/// A socket that reports reads and writes to the connection's phase.
struct WatchedIo {
    inner: TcpStream,
    phase: Rc<PhaseCell>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.bytes_read();
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.phase.bytes_written();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.phase.bytes_written();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves when the current phase has outlasted its limit, with the reason.
///
/// Only one transition moves a deadline earlier: idle → head, when the first byte of a request
/// arrives (the header limit is usually shorter than the idle limit). Rather than wake the
/// watchdog on every request for it, an idle connection is looked at every half header limit:
/// a head that starts between two looks is seen at most half a header limit later, before its
/// own deadline, which is then applied exactly. The cost is one timer wake per idle connection
/// per half header limit, and none per request.
async fn watchdog(phase: &PhaseCell, limits: &HttpLimits) -> ConnectionEnd {
    let look_every = limits.header_read_timeout / 2;
    loop {
        let now = Instant::now();
        let deadline = match phase.get() {
            Phase::Idle(since) | Phase::Answered(since) => {
                let idle_end = since + limits.keep_alive_idle;
                if idle_end <= now {
                    return ConnectionEnd::IdleTimeout;
                }
                idle_end.min(now + look_every)
            }
            Phase::Head(since) => {
                let head_end = since + limits.header_read_timeout;
                if head_end <= now {
                    return ConnectionEnd::HeaderTimeout;
                }
                head_end
            }
            // A request in service is bounded by its own timeouts; look again later.
            Phase::Busy => now + limits.header_read_timeout,
        };
        tokio::time::sleep_until(deadline).await;
    }
}

/// The HTTP/1.1 settings derived from the limits. Built once per worker.
pub(crate) fn http1_builder(limits: &HttpLimits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        // Our watchdog owns the header-read timeout; see the module docs.
        .header_read_timeout(None)
        .max_header_size(limits.header_bytes_max);
    // hyper keeps up to 100 header slots on the stack and allocates per request for any other
    // count, so we only override it when the operator asked for a different number.
    if limits.header_count_max != HYPER_STACK_HEADERS {
        builder.max_headers(limits.header_count_max);
    }
    builder
}

/// hyper's default (stack-allocated) header count.
pub(crate) const HYPER_STACK_HEADERS: usize = 100;

/// Serves one accepted connection until the client closes it, a limit closes it, or shutdown
/// drains it. `service` is hyper's service for this connection, already bound to `phase`.
///
/// The watchdog and the shutdown signal run on a task of their own (`guard`) and reach the
/// connection through `phase`. Polled together with the connection in one `select!`, they were
/// polled on every wake-up of the connection (a timer entry and a `Notify` looked at two or
/// three times per request) though they fire once in a connection's life.
pub(crate) async fn serve<S>(
    stream: TcpStream,
    phase: Rc<PhaseCell>,
    builder: &http1::Builder,
    service: S,
    limits: &HttpLimits,
    metrics: &WorkerMetrics,
    shutdown: watch::Receiver<bool>,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<super::router::ResBody>,
            Error = std::convert::Infallible,
        >,
{
    // Token responses are small; waiting for Nagle would add a round trip of latency.
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        phase: phase.clone(),
    });
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    if *shutdown.borrow() {
        phase.drain.set(true);
    }
    let _guard = AbortOnDrop(tokio::task::spawn_local(guard(
        phase.clone(),
        *limits,
        shutdown,
    )));
    let mut drained = false;
    let outcome = std::future::poll_fn(|cx| {
        if let Some(end) = phase.close.get() {
            return Poll::Ready(Err(end));
        }
        if phase.drain.get() && !drained {
            // Finish the request in flight, then close.
            drained = true;
            conn.as_mut().graceful_shutdown();
        }
        match conn.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(Ok(result)),
            Poll::Pending => {
                phase.park_conn(cx.waker());
                Poll::Pending
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            metrics.connection_ended(classify(&e));
            tracing::debug!(error = %e, "connection ended with an error");
        }
        Err(end) => {
            metrics.connection_ended(end);
            tracing::debug!(reason = ?end, "connection closed by timeout");
        }
    }
}

/// A connection's watchdog and shutdown listener: tells the connection (through `phase`) to
/// close when a phase outlasts its limit, and to drain when shutdown begins (or the sender is
/// gone: the server is stopping). Ends with its connection (`AbortOnDrop`).
async fn guard(phase: Rc<PhaseCell>, limits: HttpLimits, mut shutdown: watch::Receiver<bool>) {
    let mut draining = phase.drain.get();
    let dog = watchdog(&phase, &limits);
    let mut dog = std::pin::pin!(dog);
    loop {
        tokio::select! {
            biased;
            end = dog.as_mut() => {
                phase.request_close(end);
                return;
            }
            changed = shutdown.changed(), if !draining => {
                let _ = changed;
                draining = true;
                phase.request_drain();
            }
        }
    }
}

/// Aborts the task when dropped: a connection's guard must not outlive it, also when the
/// connection's own task is aborted at the end of the shutdown grace period.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn classify(e: &hyper::Error) -> ConnectionEnd {
    if e.is_parse_too_large() {
        ConnectionEnd::HeadTooLarge
    } else if e.is_parse() || e.is_parse_status() {
        ConnectionEnd::Malformed
    } else {
        ConnectionEnd::Io
    }
}

/// Best-effort answer to a connection refused at accept time, written without hyper so a
/// flood of connections costs one small write each.
pub(crate) fn refuse_over_limit(stream: &TcpStream) {
    let _ = stream.try_write(OVER_LIMIT_RESPONSE);
}

const OVER_LIMIT_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 25\r\n\
\r\n\
connection limit reached\n";

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn over_limit_response_content_length_matches_its_body() {
        let text = std::str::from_utf8(OVER_LIMIT_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(declared, body.len());
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_closes_an_idle_connection_after_the_idle_limit() {
        let limits = HttpLimits::default();
        let phase = PhaseCell::new(Instant::now());
        let started = Instant::now();
        let end = watchdog(&phase, &limits).await;
        assert_eq!(end, ConnectionEnd::IdleTimeout);
        assert_eq!(started.elapsed(), limits.keep_alive_idle);
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_applies_the_header_limit_once_bytes_arrive() {
        let limits = HttpLimits::default();
        let phase = PhaseCell::new(Instant::now());
        phase.bytes_read();
        let started = Instant::now();
        let end = watchdog(&phase, &limits).await;
        assert_eq!(end, ConnectionEnd::HeaderTimeout);
        assert_eq!(started.elapsed(), limits.header_read_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn header_limit_applies_when_bytes_arrive_after_the_watchdog_started() {
        // Regression: the watchdog used to sleep on the idle deadline computed before the
        // first byte, so a slow head on a fresh connection was only closed at the idle limit.
        let limits = HttpLimits::default();
        let phase = Rc::new(PhaseCell::new(Instant::now()));
        let started = Instant::now();
        let p = phase.clone();
        let first_byte = async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            p.bytes_read();
        };
        let (end, ()) = tokio::join!(watchdog(&phase, &limits), first_byte);
        assert_eq!(end, ConnectionEnd::HeaderTimeout);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(100) + limits.header_read_timeout
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_never_fires_while_a_request_is_in_service() {
        let limits = HttpLimits::default();
        let phase = PhaseCell::new(Instant::now());
        phase.request_started();
        let long = limits.keep_alive_idle * 10;
        let fired = tokio::time::timeout(long, watchdog(&phase, &limits)).await;
        assert!(fired.is_err(), "watchdog fired during a request: {fired:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn activity_restarts_the_idle_clock() {
        let limits = HttpLimits::default();
        let phase = Rc::new(PhaseCell::new(Instant::now()));
        let half = limits.keep_alive_idle / 2;
        let p = phase.clone();
        let writer = async move {
            tokio::time::sleep(half).await;
            p.bytes_written();
        };
        let started = Instant::now();
        let (end, ()) = tokio::join!(watchdog(&phase, &limits), writer);
        assert_eq!(end, ConnectionEnd::IdleTimeout);
        assert_eq!(started.elapsed(), half + limits.keep_alive_idle);
    }

    #[tokio::test(start_paused = true)]
    async fn guard_tells_the_connection_to_close_at_the_idle_limit() {
        let limits = HttpLimits::default();
        let phase = Rc::new(PhaseCell::new(Instant::now()));
        let (_tx, rx) = watch::channel(false);
        let started = Instant::now();
        guard(phase.clone(), limits, rx).await;
        assert_eq!(phase.close.get(), Some(ConnectionEnd::IdleTimeout));
        assert_eq!(started.elapsed(), limits.keep_alive_idle);
        assert!(!phase.drain.get());
    }

    #[tokio::test(start_paused = true)]
    async fn guard_asks_the_connection_to_drain_on_shutdown_and_keeps_watching() {
        let limits = HttpLimits::default();
        let phase = Rc::new(PhaseCell::new(Instant::now()));
        let (tx, rx) = watch::channel(false);
        let started = Instant::now();
        let shutdown = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(true).unwrap();
        };
        tokio::join!(guard(phase.clone(), limits, rx), shutdown);
        assert!(phase.drain.get());
        // Draining does not end the watch: a connection that never finishes is still closed.
        assert_eq!(phase.close.get(), Some(ConnectionEnd::IdleTimeout));
        assert_eq!(started.elapsed(), limits.keep_alive_idle);
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_starts_when_the_service_answers_and_later_writes_restart_it() {
        let limits = HttpLimits::default();
        let phase = PhaseCell::new(Instant::now());
        phase.request_started();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let answered = Instant::now();
        phase.request_finished(answered);
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The response's first write: idle since the answer, not since the write.
        phase.bytes_written();
        assert_eq!(phase.get(), Phase::Idle(answered));
        // A later write to a slow reader restarts the idle clock.
        tokio::time::sleep(Duration::from_millis(1)).await;
        phase.bytes_written();
        let last_write = Instant::now();
        assert_eq!(phase.get(), Phase::Idle(last_write));
        let end = watchdog(&phase, &limits).await;
        assert_eq!(end, ConnectionEnd::IdleTimeout);
        assert_eq!(last_write.elapsed(), limits.keep_alive_idle);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_never_written_still_ends_at_the_idle_limit() {
        // A reader that never takes the response: no write, yet the idle clock runs.
        let limits = HttpLimits::default();
        let phase = PhaseCell::new(Instant::now());
        phase.request_started();
        let answered = Instant::now();
        phase.request_finished(answered);
        let end = watchdog(&phase, &limits).await;
        assert_eq!(end, ConnectionEnd::IdleTimeout);
        assert_eq!(answered.elapsed(), limits.keep_alive_idle);
    }
}
