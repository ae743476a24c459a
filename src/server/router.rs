//! Request handling: the front door every request passes (request-line and body limits), then
//! routing to the public endpoints or, on the admin listener, the authenticated admin API.
//!
//! The front door reads the whole body, bounded in size and time, before routing: every
//! endpoint backstop intercepts needs the complete form anyway, and a body that never ends must
//! not hold a worker's memory or a connection slot forever.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;

use super::Shared;
use super::conn::PhaseCell;
use super::gate::{self, Gate};
use super::metadata::Metadata;
use crate::config::HttpLimits;
use crate::failover::{Mode, Route as Destination, UpstreamFailure};
use crate::metrics::{OutageRefusal, Route, UpstreamOutcome, WorkerMetrics};
use crate::protocol::OAuthError;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The public listener: token endpoint, health, metrics.
    Public,
    /// The admin listener: bearer-authenticated operator API.
    Admin,
}

/// What a worker's request handler needs, shared by its connections on one thread.
pub(crate) struct HandlerCtx {
    pub(crate) shared: std::sync::Arc<Shared>,
    pub(crate) listener: Listener,
    /// This thread's worker index; `None` on the admin listener's thread.
    pub(crate) worker: Option<usize>,
    /// This worker's failover gate; `None` on the admin listener.
    pub(crate) gate: Option<Rc<Gate>>,
    /// This worker's backup signers; `None` on the admin listener.
    pub(crate) backup: Option<super::token::WorkerBackup>,
}

impl HandlerCtx {
    /// This thread's metrics slot (each thread writes only its own).
    pub(crate) fn metrics(&self) -> &WorkerMetrics {
        let registry = &self.shared.metrics;
        self.worker
            .and_then(|i| registry.worker(i))
            .unwrap_or_else(|| registry.admin())
    }
}

/// The client end of a connection, worked out once per connection rather than per request.
pub(crate) struct Peer {
    /// The socket peer's address (policy conditions start from it).
    pub(crate) ip: std::net::IpAddr,
    /// The same as a header value, for `X-Forwarded-For`.
    pub(crate) header: HeaderValue,
}

impl Peer {
    pub(crate) fn new(ip: std::net::IpAddr) -> Self {
        let header = HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { ip, header }
    }
}

/// A response body: one we built, or the primary's, streamed through.
pub(crate) type ResBody = Either<Full<Bytes>, Incoming>;

type Reply = Response<ResBody>;

/// Serves one request. Never fails: every problem becomes a response.
pub(crate) async fn handle(
    req: Request<Incoming>,
    ctx: Rc<HandlerCtx>,
    phase: Rc<PhaseCell>,
    peer: Rc<Peer>,
) -> Result<Reply, Infallible> {
    phase.request_started();
    let started = Instant::now();
    let (route, mut reply, framing_refused) = front_door(req, &ctx, &peer, started).await;
    // After a refusal of the front door (bad body, timeout, too large) the rest of this
    // connection's input cannot be trusted to start a new request. Any other answer (a token
    // endpoint error, a primary's 400 passed through) leaves the connection open.
    if framing_refused {
        reply
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // One clock reading for the latency and the start of the idle clock.
    let finished = Instant::now();
    let elapsed = finished.saturating_duration_since(started);
    ctx.metrics()
        .record_request(route, reply.status().as_u16(), elapsed);
    tracing::debug!(
        route = route.label(),
        status = reply.status().as_u16(),
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    phase.request_finished(finished);
    Ok(reply)
}

async fn front_door(
    req: Request<Incoming>,
    ctx: &HandlerCtx,
    peer: &Peer,
    started: Instant,
) -> (Route, Reply, bool) {
    let limits = &ctx.shared.config.limits;
    let (parts, body) = req.into_parts();
    let target_bytes = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let route = match ctx.listener {
        Listener::Public => public_route(parts.uri.path(), &ctx.shared.metadata),
        Listener::Admin => Route::Admin,
    };
    if target_bytes > limits.request_line_bytes_max {
        return (
            route,
            front_door_refusal(route, StatusCode::URI_TOO_LONG, "request target too long"),
            true,
        );
    }
    let body = match read_body(&parts.headers, body, limits, body_limit(ctx), started).await {
        Ok(body) => body,
        Err((status, message)) => {
            return (route, front_door_refusal(route, status, &message), true);
        }
    };
    let reply = match (ctx.listener, route) {
        (Listener::Admin, _) => super::admin::handle(&parts, &body, &ctx.shared).await,
        (Listener::Public, Route::Ssf) => super::ssf::handle(&parts, &body, &ctx.shared).await,
        (Listener::Public, Route::Token) => {
            super::token::handle(parts, body, peer, ctx, started).await
        }
        (Listener::Public, Route::Proxy) => proxy(parts, body, &peer.header, ctx).await,
        (Listener::Public, _) => public(route, &parts.method, ctx),
    };
    (route, reply, false)
}

fn body_limit(ctx: &HandlerCtx) -> u64 {
    match ctx.listener {
        Listener::Public => ctx.shared.config.limits.body_bytes_max,
        Listener::Admin => crate::limits::ADMIN_BODY_BYTES_MAX,
    }
}

/// A refusal of the front door: plain text, except at the token endpoint, whose clients parse
/// RFC 6749 JSON errors (`invalid_request`, with the HTTP status that names the limit).
fn front_door_refusal(route: Route, status: StatusCode, message: &str) -> Reply {
    if route == Route::Token {
        let mut reply = json(
            status,
            OAuthError::InvalidRequest.to_json(message).into_bytes(),
        );
        reply
            .headers_mut()
            .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        reply
    } else {
        text(status, &format!("{message}\n"))
    }
}

/// Reads a whole request body, at most `max_bytes` and within the body-read timeout counted
/// from `started` (when the head arrived: the router's clock reading, not a new one); on
/// failure, the status and message to refuse with.
async fn read_body(
    headers: &hyper::HeaderMap,
    body: Incoming,
    limits: &HttpLimits,
    max_bytes: u64,
    started: Instant,
) -> Result<Bytes, (StatusCode, String)> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok());
    if let Some(len) = declared.and_then(|v| v.parse::<u64>().ok()) {
        // Refuse before reading a byte: the client said how much it will send.
        if len > max_bytes {
            return Err(too_large(max_bytes));
        }
        if len == 0 {
            return Ok(Bytes::new());
        }
    }
    // No body at all (a GET, `content-length: 0`): no collector and no timer to arm.
    if hyper::body::Body::is_end_stream(&body) {
        return Ok(Bytes::new());
    }
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout_at(started + limits.body_read_timeout, collect).await {
        Err(_elapsed) => Err((
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time".into(),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(max_bytes)),
        Ok(Err(_)) => Err((StatusCode::BAD_REQUEST, "malformed request body".into())),
    }
}

fn too_large(max_bytes: u64) -> (StatusCode, String) {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {max_bytes} bytes"),
    )
}

fn public_route(path: &str, metadata: &arc_swap::ArcSwap<Metadata>) -> Route {
    match path {
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        super::ssf::PATH => Route::Ssf,
        _ => {
            // Only paths that may be metadata pay for loading the snapshot.
            let metadata = metadata.load();
            if path == metadata.discovery_path && metadata.discovery.is_some() {
                Route::Discovery
            } else if metadata.jwks_path.as_deref() == Some(path) && metadata.jwks.is_some() {
                // Served from the cache once it holds it; until then the primary answers.
                Route::Jwks
            } else if metadata.token_path.as_deref() == Some(path) {
                Route::Token
            } else {
                Route::Proxy
            }
        }
    }
}

/// Forwards a request the backstop does not answer itself, or refuses it with 503 when the
/// primary cannot be used (breaker open, forced outage, or this forwarding failed).
async fn proxy(
    parts: hyper::http::request::Parts,
    body: Bytes,
    peer_ip: &HeaderValue,
    ctx: &HandlerCtx,
) -> Reply {
    let metrics = ctx.metrics();
    let Some(gate) = ctx.gate.as_deref() else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if gate.route(metrics) == Destination::Backup {
        let forced =
            gate::mode_from_code(ctx.shared.mode.load(Ordering::Relaxed)) == Mode::ForcedOutage;
        metrics.outage_refusal(if forced {
            OutageRefusal::Forced
        } else {
            OutageRefusal::BreakerOpen
        });
        return unavailable(gate.retry_after_secs());
    }
    // Kept for the audit record of an ambiguous failure (a refcount, not a copy).
    let uri = parts.uri.clone();
    match gate.upstream.forward(parts, body, peer_ip).await {
        Ok(response) => {
            metrics.upstream_outcome(UpstreamOutcome::Answered, false);
            gate.record(Ok(()), metrics);
            let (mut head, incoming) = response.into_parts();
            super::upstream::strip_hop_by_hop(&mut head.headers);
            Response::from_parts(head, Either::Right(incoming))
        }
        Err(failure) => {
            metrics.upstream_outcome(outcome_of(failure), failure.is_ambiguous());
            gate.record(Err(failure), metrics);
            metrics.outage_refusal(OutageRefusal::UpstreamFailed);
            // Per request at debug: in an outage this would be every request; the metrics count
            // them and breaker transitions are logged at warn.
            tracing::debug!(
                failure = failure.label(),
                ambiguous = failure.is_ambiguous(),
                "forwarding failed"
            );
            if failure.is_ambiguous() {
                ctx.shared.audit.record(crate::audit::AuditRecord {
                    time_ms: super::unix_now_ms(),
                    event: crate::audit::AuditEvent::AmbiguousUpstreamFailure {
                        worker: gate.worker,
                        failure: failure.label(),
                        path: uri.path().to_string(),
                    },
                });
            }
            unavailable(gate.retry_after_secs())
        }
    }
}

pub(crate) fn outcome_of(failure: UpstreamFailure) -> UpstreamOutcome {
    match failure {
        UpstreamFailure::Connect => UpstreamOutcome::Connect,
        UpstreamFailure::Unavailable => UpstreamOutcome::Unavailable,
        UpstreamFailure::ServerError(_) => UpstreamOutcome::ServerError,
        UpstreamFailure::Timeout => UpstreamOutcome::Timeout,
        UpstreamFailure::Reset => UpstreamOutcome::Reset,
        UpstreamFailure::Garbage => UpstreamOutcome::Garbage,
    }
}

/// 503 `temporarily_unavailable` with `Retry-After` (DESIGN §2): the primary cannot be used
/// and backstop cannot answer this request itself. The client must keep its credentials.
fn unavailable(retry_after_secs: u64) -> Reply {
    super::token::error_reply(
        OAuthError::TemporarilyUnavailable,
        "the identity provider is unavailable; retry later",
        retry_after_secs,
    )
}

fn public(route: Route, method: &Method, ctx: &HandlerCtx) -> Reply {
    let shared = &ctx.shared;
    if !matches!(*method, Method::GET | Method::HEAD) {
        let mut reply = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return reply;
    }
    match route {
        // Liveness: this worker's event loop answers.
        Route::Healthz => text(StatusCode::OK, "ok\n"),
        // Readiness: started, and not draining for shutdown.
        Route::Readyz => {
            if shared.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        Route::Metrics => {
            let mut body = shared.metrics.render(shared.started.elapsed());
            shared.capture_stats.render_prometheus(&mut body);
            body.push_str(&format!(
                "# HELP backstop_audit_dropped_total Audit records dropped because the writer fell behind.\n\
                 # TYPE backstop_audit_dropped_total counter\n\
                 backstop_audit_dropped_total {}\n",
                shared.audit.dropped()
            ));
            let mut reply = Response::new(Either::Left(Full::new(Bytes::from(body))));
            reply.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            no_store(reply)
        }
        Route::Discovery | Route::Jwks => {
            let metadata = shared.metadata.load();
            let body = if route == Route::Discovery {
                &metadata.discovery
            } else {
                &metadata.jwks
            };
            match body {
                Some(bytes) => cacheable_json(bytes.clone()),
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            }
        }
        Route::Token | Route::Ssf | Route::Proxy | Route::Admin => {
            text(StatusCode::NOT_FOUND, "not found\n")
        }
    }
}

/// Public metadata (discovery, JWKS): cacheable for a few minutes, like providers serve it.
fn cacheable_json(body: Bytes) -> Reply {
    let mut reply = Response::new(Either::Left(Full::new(body)));
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    reply
}

/// A plain-text response that caches must not keep.
pub(crate) fn text(status: StatusCode, body: &str) -> Reply {
    let mut reply = Response::new(Either::Left(Full::new(Bytes::copy_from_slice(
        body.as_bytes(),
    ))));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    no_store(reply)
}

/// A JSON response that caches must not keep.
pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Reply {
    let mut reply = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_store(reply)
}

fn no_store(mut reply: Reply) -> Reply {
    reply
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}
