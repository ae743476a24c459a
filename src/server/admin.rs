//! The admin API, on its own listener: bearer-token authentication and the operator endpoints.
//!
//! The token is compared in constant time. Without a configured token the admin listener is
//! not started at all (see `server::bind`), so there is no unauthenticated mode.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

use super::Shared;
use super::gate::{self, breaker_label, mode_code};
use super::router::{ResBody, json, text};
use crate::failover::Mode;

type Reply = Response<ResBody>;

/// Serves one admin request: authentication first, then the route.
pub(crate) async fn handle(parts: &Parts, body: &Bytes, shared: &Shared) -> Reply {
    if !authorized(parts, shared) {
        let mut reply = json(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_token","error_description":"a valid admin bearer token is required"}"#.to_vec(),
        );
        reply.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="backstop-admin", error="invalid_token""#),
        );
        return reply;
    }
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/admin/status") => status(shared),
        (_, "/admin/status") => not_allowed("GET"),
        (&Method::POST, "/admin/mode") => set_mode(body, shared),
        (_, "/admin/mode") => not_allowed("POST"),
        (&Method::GET, "/admin/policies") => get_policies(shared),
        (&Method::PUT, "/admin/policies") => put_policies(parts, body, shared),
        (_, "/admin/policies") => not_allowed("GET, PUT"),
        (&Method::GET, "/admin/revocations") => list_revocations(parts, shared),
        (&Method::POST, "/admin/revocations") => post_revocation(body, shared).await,
        (_, "/admin/revocations") => not_allowed("GET, POST"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn admin_error(status: StatusCode, error: &str, description: &str) -> Reply {
    json(
        status,
        serde_json::json!({"error": error, "error_description": description})
            .to_string()
            .into_bytes(),
    )
}

/// `GET /admin/policies`: the live document with its version (`ETag`) and provenance.
fn get_policies(shared: &Shared) -> Reply {
    let current = shared.policies.current();
    let document: serde_json::Value = serde_json::from_slice(&current.document).unwrap_or_else(
        |_| serde_json::json!({"conditionalAccessPolicies": [], "namedLocations": []}),
    );
    let body = serde_json::json!({
        "version": current.version,
        "sha256": current.source_sha256,
        "loaded_at": current.loaded_at_secs,
        "origin": format!("{:?}", current.origin),
        "policies": current.value.policy_count(),
        "document": document,
    });
    let mut reply = json(StatusCode::OK, body.to_string().into_bytes());
    if let Ok(v) = HeaderValue::from_str(&current.etag()) {
        reply.headers_mut().insert(header::ETAG, v);
    }
    reply
}

/// `PUT /admin/policies`: validate and swap atomically; `If-Match` makes it conditional on
/// the version the operator last read (412 when another change came first).
fn put_policies(parts: &Parts, body: &Bytes, shared: &Shared) -> Reply {
    let if_match = parts.headers.get(header::IF_MATCH).map(|v| v.to_str());
    let result = match if_match {
        None => shared
            .policies
            .replace_from_json(body, super::unix_now_secs_i64()),
        Some(value) => match value.ok().and_then(crate::policy::parse_if_match) {
            Some(version) => {
                shared
                    .policies
                    .replace_if_version(body, version, super::unix_now_secs_i64())
            }
            None => {
                return admin_error(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition_failed",
                    "If-Match must name one version, as the ETag of GET /admin/policies",
                );
            }
        },
    };
    match result {
        Ok(outcome) => {
            tracing::warn!(?outcome, "policies replaced through the admin API");
            get_policies(shared)
        }
        Err(crate::policy::PolicyFileError::VersionMismatch(e)) => admin_error(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            &e.to_string(),
        ),
        Err(e @ crate::policy::PolicyFileError::Save { .. }) => {
            tracing::error!(error = %e, "policies not replaced: the document could not be saved");
            admin_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            )
        }
        Err(e) => admin_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    }
}

/// `GET /admin/revocations?subject_type=&subject_id=&kind=&since=`.
fn list_revocations(parts: &Parts, shared: &Shared) -> Reply {
    let filter = match parse_revocation_query(parts.uri.query().unwrap_or("").as_bytes()) {
        Ok(q) => q,
        Err(description) => {
            return admin_error(StatusCode::BAD_REQUEST, "invalid_request", &description);
        }
    };
    let events: Vec<serde_json::Value> = shared
        .revocations
        .events()
        .iter()
        .filter(|e| filter.matches(e))
        .map(crate::revocation::admin_event_json)
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({"revocations": events})
            .to_string()
            .into_bytes(),
    )
}

/// The query string of `GET /admin/revocations` (without the `?`) as its filter: form-decoded
/// strictly (no repeats), then each parameter checked. `Err` holds the 400's description,
/// which names the parameter, never its value.
pub(crate) fn parse_revocation_query(
    query: &[u8],
) -> Result<crate::revocation::AdminQuery, String> {
    let form = crate::protocol::Form::parse(query, &[]).map_err(|e| e.to_string())?;
    crate::revocation::AdminQuery::from_pairs(form.pairs()).map_err(|e| e.to_string())
}

/// `POST /admin/revocations` with `{"id", "kind", "subject": {"type", "id"}, "time"}`:
/// durable before the answer; idempotent by `id` (200 for a repeat, 201 for a new event,
/// 409 for a different event under a known id).
async fn post_revocation(body: &Bytes, shared: &Shared) -> Reply {
    let now = super::unix_now_secs_i64();
    let event = match crate::revocation::parse_admin_event(body, now) {
        Ok(e) => e,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    let shown = crate::revocation::admin_event_json(&event);
    match shared.revocations.record(&shared.store, event, now).await {
        Ok(crate::revocation::Inserted::New) => {
            tracing::warn!(event = %shown, "revocation event recorded through the admin API");
            json(StatusCode::CREATED, shown.to_string().into_bytes())
        }
        Ok(_) => json(StatusCode::OK, shown.to_string().into_bytes()),
        Err(super::ca::RecordError::Invalid(crate::revocation::RevocationError::IdConflict {
            ..
        })) => admin_error(
            StatusCode::CONFLICT,
            "conflict",
            "an event with this id is recorded with different content",
        ),
        Err(super::ca::RecordError::Invalid(e)) => {
            admin_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string())
        }
        Err(super::ca::RecordError::Store(e)) => {
            tracing::error!(error = %e, "revocation event could not be stored");
            admin_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the event could not be made durable; it is not recorded",
            )
        }
    }
}

fn not_allowed(allow: &'static str) -> Reply {
    let mut reply = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    reply
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    reply
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeRequest {
    mode: String,
}

/// `POST /admin/mode` with `{"mode": "outage" | "normal" | "auto"}`: force a mode for a drill,
/// or hand the decision back to the breakers.
fn set_mode(body: &Bytes, shared: &Shared) -> Reply {
    let Some(mode) = parse_mode_body(body) else {
        return json(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_request","error_description":"body must be {\"mode\": \"outage\" | \"normal\" | \"auto\"}"}"#.to_vec(),
        );
    };
    let before = gate::mode_from_code(shared.mode.swap(mode_code(mode), Ordering::Relaxed));
    tracing::warn!(from = ?before, to = ?mode, "operator set the failover mode");
    shared.audit.record(crate::audit::AuditRecord {
        time_ms: super::unix_now_ms(),
        event: crate::audit::AuditEvent::ModeSet {
            from: mode_label(before),
            to: mode_label(mode),
        },
    });
    status(shared)
}

/// The mode a `POST /admin/mode` body asks for: `{"mode": "outage" | "normal" | "auto"}`
/// (unknown and repeated members refused; serde also reads the struct from a one-element array,
/// `["outage"]`, which is harmless); `None` for anything else (the caller answers 400).
pub(crate) fn parse_mode_body(body: &[u8]) -> Option<Mode> {
    serde_json::from_slice::<ModeRequest>(body)
        .ok()
        .and_then(|r| Mode::parse(&r.mode))
}

fn authorized(parts: &Parts, shared: &Shared) -> bool {
    let Some(expected) = shared.config.admin_token.as_ref() else {
        return false;
    };
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|v| strip_bearer(v));
    presented.is_some_and(|token| expected.matches(token))
}

/// The credentials of an `Authorization: Bearer <token>` header (RFC 6750 §2.1; the scheme is
/// case-insensitive).
pub(crate) fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
}

#[derive(serde::Serialize)]
struct Status<'a> {
    /// Where requests go now: "normal" (to the primary) or "outage" (backup).
    mode: &'static str,
    /// The operator's setting: "auto", "normal" or "outage".
    forced: &'static str,
    /// The worst breaker state over the workers: "closed", "half_open" or "open".
    breaker: &'static str,
    /// Each worker's breaker.
    worker_breakers: Vec<&'static str>,
    /// The issuer backstop serves and mints for.
    issuer: &'a str,
    /// What backstop holds of the primary's metadata (kept through an outage).
    primary_metadata: PrimaryMetadata,
    version: &'a str,
    uptime_secs: u64,
    workers: usize,
    ready: bool,
    draining: bool,
    listen: String,
    /// Token-endpoint counters since start.
    counters: crate::metrics::TokenCounters,
    /// The session store.
    store: StoreStatus,
}

#[derive(serde::Serialize)]
struct StoreStatus {
    memtable_records: u64,
    segments: u64,
    segment_records: u64,
    quarantined_segments: u64,
    corrupt_reads: u64,
    compactions: u64,
    /// WAL groups that stopped taking writes after an I/O error (captures there are lost
    /// until a restart): "group N: what failed".
    failed_groups: Vec<String>,
    /// Background validation of the segments found at start: `"running"` (they serve
    /// meanwhile, each read checking its record in full) or `"done"`.
    validation: &'static str,
    validation_pending_segments: u64,
    validation_pending_bytes: u64,
}

/// The admin API's name of a mode (`POST /admin/mode`'s value, `/admin/status`'s `forced`).
pub(crate) fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Auto => "auto",
        Mode::ForcedNormal => "normal",
        Mode::ForcedOutage => "outage",
    }
}

#[derive(serde::Serialize)]
struct PrimaryMetadata {
    discovery_cached: bool,
    jwks_cached: bool,
    primary_keys: usize,
    token_path: Option<String>,
    jwks_path: Option<String>,
}

fn status(shared: &Shared) -> Reply {
    let metadata = shared.metadata.load();
    let codes: Vec<u8> = shared
        .breakers
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    // Worst first: any open worker means part of the traffic is being served by the backup.
    let worst = [1u8, 2, 0]
        .into_iter()
        .find(|c| codes.contains(c))
        .unwrap_or(0);
    let forced = gate::mode_from_code(shared.mode.load(Ordering::Relaxed));
    let mode = match forced {
        Mode::ForcedOutage => "outage",
        Mode::ForcedNormal => "normal",
        Mode::Auto if worst == 0 => "normal",
        Mode::Auto => "outage",
    };
    let body = Status {
        mode,
        forced: mode_label(forced),
        breaker: breaker_label(worst),
        worker_breakers: codes.iter().map(|c| breaker_label(*c)).collect(),
        issuer: &shared.issuer,
        primary_metadata: PrimaryMetadata {
            discovery_cached: metadata.discovery.is_some(),
            jwks_cached: metadata.jwks.is_some(),
            primary_keys: metadata.primary_keys.as_ref().map_or(0, |k| k.len()),
            token_path: metadata.token_path.clone(),
            jwks_path: metadata.jwks_path.clone(),
        },
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: shared.started.elapsed().as_secs(),
        workers: shared.config.workers,
        ready: !shared.draining.load(Ordering::Relaxed),
        draining: shared.draining.load(Ordering::Relaxed),
        listen: shared.public_addr.to_string(),
        counters: shared.metrics.token_counters(),
        store: {
            let st = shared.store.stats();
            StoreStatus {
                memtable_records: st.memtable_records,
                segments: st.segments,
                segment_records: st.segment_records,
                quarantined_segments: st.quarantined_segments,
                corrupt_reads: st.corrupt_reads,
                compactions: st.compactions,
                failed_groups: st
                    .failed_groups
                    .iter()
                    .map(|(g, what)| format!("group {g}: {what}"))
                    .collect(),
                validation: if st.validation_pending_segments == 0 {
                    "done"
                } else {
                    "running"
                },
                validation_pending_segments: st.validation_pending_segments,
                validation_pending_bytes: st.validation_pending_bytes,
            }
        },
    };
    match serde_json::to_vec(&body) {
        Ok(bytes) => json(StatusCode::OK, bytes),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "status could not be encoded\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(strip_bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(strip_bearer(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(strip_bearer(b"Basic abc"), None);
        assert_eq!(strip_bearer(b"Bearer"), None);
        assert_eq!(strip_bearer(b""), None);
    }
}
