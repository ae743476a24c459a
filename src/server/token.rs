//! The token endpoint: forward in normal mode (recording what the primary grants), answer from
//! the backup in outage mode (DESIGN §1).
//!
//! Every request is parsed strictly first, in both modes: a malformed request gets its RFC 6749
//! error from backstop and never reaches the primary. Then:
//!
//! - breaker open or outage forced → the backup answers ([`gateway::outage::serve_refresh`]);
//! - otherwise forward; an unexpected failure (connect, timeout, 5xx, garbage) → the backup
//!   answers this request, marked ambiguous when the primary may have acted on it;
//! - a 200 with tokens → passed through unchanged, and a capture job queued (never blocking);
//! - a 400 `invalid_grant` to a refresh grant → passed through, and the artifact revoked here.

use std::cell::{Cell, RefCell};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::time::Instant;

use super::router::{HandlerCtx, ResBody, json};
use crate::audit::{AuditEvent, AuditRecord};
use crate::failover::{Mode, Route as Destination, UpstreamFailure};
use crate::gateway::outage::{self, Decision, Minters, OutageEnv, OutageRequest};
use crate::metrics::{BackupCause, UpstreamOutcome};
use crate::protocol::{OAuthError, RequestError, TokenRequest};

type Reply = Response<ResBody>;

/// A worker's backup state: its signers and its request counter. Used only on its thread.
pub(crate) struct WorkerBackup {
    minters: RefCell<Minters>,
    seq: Cell<u64>,
}

impl WorkerBackup {
    pub(crate) fn new(minters: Minters) -> Self {
        Self {
            minters: RefCell::new(minters),
            seq: Cell::new(0),
        }
    }

    fn next_request_id(&self, worker: usize) -> (usize, u64) {
        let n = self.seq.get().wrapping_add(1);
        self.seq.set(n);
        (worker, n)
    }
}

/// Why a request is answered by the backup.
#[derive(Debug, Clone, Copy)]
enum Cause {
    /// The breaker is open (or half-open with its probe in flight).
    BreakerOpen,
    /// The operator forced outage mode.
    Forced,
    /// Forwarding this request failed.
    Upstream(UpstreamFailure),
}

impl Cause {
    fn label(self) -> &'static str {
        match self {
            Cause::BreakerOpen => "breaker_open",
            Cause::Forced => "forced_outage",
            Cause::Upstream(f) => f.label(),
        }
    }

    fn ambiguous(self) -> bool {
        matches!(self, Cause::Upstream(f) if f.is_ambiguous())
    }

    fn metric(self) -> BackupCause {
        match self {
            Cause::BreakerOpen => BackupCause::BreakerOpen,
            Cause::Forced => BackupCause::Forced,
            Cause::Upstream(_) => BackupCause::UpstreamFailed,
        }
    }
}

/// Handles a request to the primary's token endpoint. `started` is when the request head
/// arrived (the router's clock reading, reused rather than read again).
pub(crate) async fn handle(
    parts: hyper::http::request::Parts,
    body: Bytes,
    peer: &super::router::Peer,
    ctx: &HandlerCtx,
    started: Instant,
) -> Reply {
    let (Some(gate), Some(backup)) = (ctx.gate.as_deref(), ctx.backup.as_ref()) else {
        return super::router::text(StatusCode::NOT_FOUND, "not found\n");
    };
    let metrics = ctx.metrics();
    if parts.method != hyper::Method::POST {
        let mut reply = error_reply(
            OAuthError::InvalidRequest,
            "the token endpoint accepts POST only",
            1,
        );
        *reply.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return reply;
    }
    // Strict parse in both modes: what the primary would refuse anyway never costs it a
    // request, and a malformed request is never "served" by the backup.
    let authorization = single_header(&parts.headers, header::AUTHORIZATION);
    let form = match outage::parse_form(&body) {
        Ok(f) => f,
        Err(e) => return request_error(e, metrics),
    };
    let request = match TokenRequest::parse(&form, authorization.ok().flatten()) {
        Ok(r) => r,
        Err(e) => return request_error(e, metrics),
    };
    if authorization.is_err() {
        return request_error(
            RequestError::new(
                OAuthError::InvalidRequest,
                "more than one Authorization header",
            ),
            metrics,
        );
    }

    if gate.route(metrics) == Destination::Backup {
        let cause = if super::gate::mode_from_code(
            ctx.shared.mode.load(std::sync::atomic::Ordering::Relaxed),
        ) == Mode::ForcedOutage
        {
            Cause::Forced
        } else {
            Cause::BreakerOpen
        };
        return backup_answer(
            &parts,
            &body,
            Some(request),
            peer.ip,
            ctx,
            backup,
            cause,
            started,
        );
    }
    // Forwarding: keep what capture needs (digests, not credentials) before the body goes.
    let captured = super::capture::Pending::from_request(&request, &parts.headers, ctx);
    drop(request);
    drop(form);

    let upstream_started = Instant::now();
    let outcome = forward(gate, &parts, body.clone(), &peer.header, captured, ctx).await;
    metrics.upstream_latency(upstream_started.elapsed());
    match outcome {
        Ok(reply) => {
            metrics.upstream_outcome(UpstreamOutcome::Answered, false);
            metrics.token_forwarded();
            gate.record(Ok(()), metrics);
            reply
        }
        Err(failure) => {
            metrics.upstream_outcome(super::router::outcome_of(failure), failure.is_ambiguous());
            gate.record(Err(failure), metrics);
            backup_answer(
                &parts,
                &body,
                None,
                peer.ip,
                ctx,
                backup,
                Cause::Upstream(failure),
                started,
            )
        }
    }
}

/// Forwards to the primary. A 200 with tokens (or a 400 to a recorded grant) is read whole,
/// bounded, and handed to capture; anything else streams through. An answer that cannot be
/// read, or a 200 that is not a token response, is an unexpected failure after the primary
/// acted: ambiguous, and answered by the backup.
async fn forward(
    gate: &super::gate::Gate,
    parts: &hyper::http::request::Parts,
    body: Bytes,
    peer_ip: &HeaderValue,
    captured: super::capture::Pending,
    ctx: &HandlerCtx,
) -> Result<Reply, UpstreamFailure> {
    let response = gate.upstream.forward_borrowed(parts, body, peer_ip).await?;
    let status = response.status();
    let (mut head, incoming) = response.into_parts();
    super::upstream::strip_hop_by_hop(&mut head.headers);
    if !captured.wants_body(status) {
        return Ok(Response::from_parts(head, Either::Right(incoming)));
    }
    let limited = Limited::new(incoming, crate::limits::UPSTREAM_BUFFERED_BODY_BYTES_MAX);
    let bytes = match tokio::time::timeout(
        ctx.shared.config.primary.request_timeout,
        BodyExt::collect(limited),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => return Err(UpstreamFailure::Reset),
        Err(_) => return Err(UpstreamFailure::Timeout),
    };
    if status == StatusCode::OK && !looks_like_token_response(&bytes) {
        return Err(UpstreamFailure::Garbage);
    }
    captured.submit(status, bytes.clone(), ctx);
    head.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(head, Either::Left(Full::new(bytes))))
}

/// A 200 token response is a JSON object with an `access_token`; anything else from a primary
/// that said 200 is garbage (a captive portal, a proxy's page, a truncated body).
fn looks_like_token_response(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body).is_ok_and(|m| {
        m.get("access_token")
            .is_some_and(serde_json::Value::is_string)
    })
}

/// `Ok(None)` when absent, `Ok(Some)` when exactly one, `Err` when repeated.
fn single_header(
    headers: &hyper::HeaderMap,
    name: header::HeaderName,
) -> Result<Option<&[u8]>, ()> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().map(HeaderValue::as_bytes);
    if values.next().is_some() {
        return Err(());
    }
    Ok(first)
}

fn request_error(e: RequestError, metrics: &crate::metrics::WorkerMetrics) -> Reply {
    metrics.token_rejected();
    error_reply(e.code, &e.description, 1)
}

/// An RFC 6749 §5.2 error response; 503 carries `Retry-After`, 401 a `WWW-Authenticate`.
pub(crate) fn error_reply(error: OAuthError, description: &str, retry_after_secs: u64) -> Reply {
    let mut reply = json(
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
        error.to_json(description).into_bytes(),
    );
    let headers = reply.headers_mut();
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    match error {
        OAuthError::TemporarilyUnavailable => {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        OAuthError::InvalidClient => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"token\""),
            );
        }
        _ => {}
    }
    reply
}

/// Answers from the backup, records the decision (metrics, audit) and shapes the response.
/// `parsed` is the request already parsed from `body`, when the caller still holds it.
#[allow(clippy::too_many_arguments)]
fn backup_answer(
    parts: &hyper::http::request::Parts,
    body: &Bytes,
    parsed: Option<TokenRequest<'_>>,
    peer: std::net::IpAddr,
    ctx: &HandlerCtx,
    backup: &WorkerBackup,
    cause: Cause,
    started: Instant,
) -> Reply {
    let shared = &ctx.shared;
    let metrics = ctx.metrics();
    let worker = ctx.worker.unwrap_or(usize::MAX);
    metrics.backup_request(cause.metric(), cause.ambiguous());
    let dpop = single_header(&parts.headers, header::HeaderName::from_static("dpop"));
    let client_ip = super::ca::client_ip(peer, &parts.headers, &shared.config.policy.client_ip);
    let request = OutageRequest {
        body,
        authorization: single_header(&parts.headers, header::AUTHORIZATION)
            .ok()
            .flatten(),
        dpop: dpop.ok().flatten(),
        dpop_repeated: dpop.is_err(),
        client_ip,
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    };
    // The DPoP `htu` to check against: only a request with a proof needs it (and only a
    // DPoP-bound session reads it), so the common request builds no string.
    // One wall-clock reading for the decision (minted `iat`) and its audit record.
    let now_ms = super::unix_now_ms();
    let mut token_url = String::new();
    if request.dpop.is_some() {
        token_url.reserve(shared.issuer_origin.len() + parts.uri.path().len());
        token_url.push_str(&shared.issuer_origin);
        token_url.push_str(parts.uri.path());
    }
    let env = OutageEnv {
        store: &shared.store,
        token_url: &token_url,
        dpop_replay: &shared.dpop_replay,
        dpop_policy: crate::token::dpop::DpopPolicy::default(),
        checks: shared.checks.as_ref(),
        now_secs: i64::try_from(now_ms / 1000).unwrap_or(i64::MAX),
    };
    let decision = match backup.minters.try_borrow_mut() {
        Ok(mut minters) => match parsed {
            Some(parsed) => outage::serve_parsed(&request, parsed, &env, &mut minters),
            None => outage::serve_refresh(&request, &env, &mut minters),
        },
        // Unreachable: the borrow never spans an await. Refuse rather than panic.
        Err(_) => {
            tracing::error!("worker minters already borrowed");
            return error_reply(
                OAuthError::TemporarilyUnavailable,
                "the identity provider is unavailable; retry later",
                1,
            );
        }
    };
    let latency = started.elapsed();
    let request_id = backup.next_request_id(worker);
    let label = decision.label();
    let (rule, detail) = match &decision {
        Decision::Refused { hook: Some(h), .. } => (Some(h.rule), h.detail.clone()),
        _ => (None, None),
    };
    if let Some(rule) = rule {
        metrics.backup_rule_refusal(rule);
    }
    let (reply, subject, served) = match decision {
        Decision::Served { body, subject } => {
            let mut reply = json(StatusCode::OK, body);
            reply
                .headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            (reply, subject, true)
        }
        Decision::Refused {
            reason,
            error,
            description,
            subject,
            ..
        } => {
            metrics.backup_refused(reason);
            let retry = ctx
                .gate
                .as_deref()
                .map_or(1, super::gate::Gate::retry_after_secs);
            (error_reply(error, &description, retry), subject, false)
        }
    };
    if served {
        metrics.backup_served();
    }
    tracing::debug!(
        worker = request_id.0,
        request = request_id.1,
        decision = label,
        cause = cause.label(),
        ambiguous = cause.ambiguous(),
        "backup decision"
    );
    // Batched on this worker's thread: handed to the writer before the worker next parks.
    shared.audit.record_batched(AuditRecord {
        time_ms: now_ms,
        event: AuditEvent::BackupDecision {
            request_id,
            worker,
            grant_type: subject.grant_type,
            client: subject.client,
            user: subject.user,
            session_key: subject.session_key,
            decision: if served { "served" } else { "refused" },
            reason: label,
            rule,
            detail,
            cause: cause.label(),
            ambiguous: cause.ambiguous(),
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        },
    });
    reply
}
