//! The Shared Signals receiver endpoint (`POST /ssf/events`, RFC 8935 push delivery of RFC 8417
//! Security Event Tokens) and the refresher of the transmitter's JWKS.
//!
//! A SET's events are durable (store WAL) before the 202: a transmitter that gets 202 may
//! forget the event. A replayed `jti` gets 202 and inserts nothing, so a transmitter that lost
//! our first answer stops retrying.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode, Uri};

use super::router::{ResBody, json};
use super::{Shared, unix_now_secs};
use crate::config::SsfConfig;
use crate::ssf::JtiCache;
use crate::token::jwks::{CacheAction, CachePolicy, KeySet, RemoteJwks};

/// The path of the push endpoint.
pub(crate) const PATH: &str = "/ssf/events";

/// The receiver's state: its configuration, the transmitter's keys, and seen `jti`s.
pub(crate) struct SsfState {
    config: SsfConfig,
    keys: ArcSwapOption<KeySet>,
    replay: Mutex<JtiCache>,
    refetch: AtomicBool,
}

impl SsfState {
    pub(crate) fn new(config: SsfConfig) -> Self {
        Self {
            replay: Mutex::new(JtiCache::new(config.replay_cache_entries)),
            config,
            keys: ArcSwapOption::empty(),
            refetch: AtomicBool::new(false),
        }
    }
}

/// Answers one push.
pub(crate) async fn handle(
    parts: &hyper::http::request::Parts,
    body: &Bytes,
    shared: &Shared,
) -> Response<ResBody> {
    let Some(state) = shared.ssf.as_ref() else {
        return super::router::text(StatusCode::NOT_FOUND, "not found\n");
    };
    if parts.method != hyper::Method::POST {
        let mut reply = super::router::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return reply;
    }
    let Some(keys) = state.keys.load_full() else {
        // No key to verify with yet: the transmitter must retry (RFC 8935 §2.4).
        state.refetch.store(true, Ordering::Relaxed);
        return unavailable();
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let now = super::unix_now_secs_i64();
    let received = {
        let replay = state
            .replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        crate::ssf::receive(body, content_type, &keys, &state.config, &replay, now)
    };
    let received = match received {
        Ok(r) => r,
        Err(e) => {
            if e.is_unknown_kid() {
                state.refetch.store(true, Ordering::Relaxed);
            }
            tracing::info!(error = %e, "security event token refused");
            return json(StatusCode::BAD_REQUEST, e.to_json().into_bytes());
        }
    };
    if !received.duplicate {
        for event in received.events {
            let id = event.id.clone();
            match shared.revocations.record(&shared.store, event, now).await {
                Ok(outcome) => tracing::info!(id, ?outcome, "revocation event from Shared Signals"),
                Err(super::ca::RecordError::Store(e)) => {
                    // Not durable, not acknowledged: the transmitter retries.
                    tracing::error!(id, error = %e, "revocation event could not be stored");
                    return unavailable();
                }
                Err(e) => tracing::warn!(id, error = %e, "revocation event refused"),
            }
        }
        for ignored in &received.ignored {
            tracing::info!(event_type = %ignored, "security event type not acted on");
        }
        state
            .replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remember(&received.jti, received.jti_expires_at_secs, now);
    }
    let mut reply = Response::new(http_body_util::Either::Left(Full::new(Bytes::new())));
    *reply.status_mut() = StatusCode::ACCEPTED;
    reply
}

fn unavailable() -> Response<ResBody> {
    let mut reply = json(
        StatusCode::SERVICE_UNAVAILABLE,
        br#"{"err":"temporarily_unavailable","description":"retry later"}"#.to_vec(),
    );
    reply
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    reply
}

/// Keeps the transmitter's JWKS fresh (scheduled, and at once after an unknown `kid`) until
/// the task is dropped. Runs on the control thread.
pub(crate) async fn refresh_keys_forever(shared: Arc<Shared>) {
    let Some(state) = shared.ssf.as_ref() else {
        return;
    };
    let uri: Uri = match state.config.jwks_uri.parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "ssf.jwks_uri is not a URL; the receiver cannot verify events");
            return;
        }
    };
    let client = super::upstream::https_client(&shared.tls, shared.config.primary.connect_timeout);
    let mut jwks = RemoteJwks::new(CachePolicy::default());
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = unix_now_secs();
        let mut action = jwks.poll(now);
        if state.refetch.swap(false, Ordering::Relaxed) && action != CacheAction::Fetch {
            action = jwks.on_unknown_kid(now);
        }
        if action != CacheAction::Fetch {
            continue;
        }
        let mut req = hyper::Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri.clone();
        req.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let fetched = tokio::time::timeout(shared.config.primary.request_timeout, async {
            let response = client.request(req).await.map_err(|e| e.to_string())?;
            if response.status() != StatusCode::OK {
                return Err(format!("status {}", response.status()));
            }
            let limited = Limited::new(
                response.into_body(),
                crate::limits::UPSTREAM_BUFFERED_BODY_BYTES_MAX,
            );
            limited
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        match fetched {
            Ok(raw) => match jwks.on_fetched(&raw, now) {
                Ok(_) => {
                    state.keys.store(jwks.keys());
                    tracing::info!("Shared Signals transmitter keys refreshed");
                }
                Err(e) => tracing::error!(error = %e, "transmitter JWKS refused"),
            },
            Err(e) => {
                jwks.on_fetch_failed(now);
                tracing::warn!(error = %e, "transmitter JWKS fetch failed");
            }
        }
    }
}
