//! The admin API, on its own listener: bearer-token authentication and the operator endpoints.
//!
//! The token is compared in constant time. Without a configured token the admin listener is
//! not started at all (see `server::bind`), so there is no unauthenticated mode.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

use super::Shared;
use super::router::{json, text};

type Reply = Response<Full<Bytes>>;

/// Serves one admin request: authentication first, then the route.
pub(crate) fn handle(parts: &Parts, _body: &Bytes, shared: &Shared) -> Reply {
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
        (_, "/admin/status") => {
            let mut reply = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            reply
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            reply
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
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
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
}

#[derive(serde::Serialize)]
struct Status<'a> {
    version: &'a str,
    uptime_secs: u64,
    workers: usize,
    ready: bool,
    draining: bool,
    listen: String,
}

fn status(shared: &Shared) -> Reply {
    let body = Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: shared.started.elapsed().as_secs(),
        workers: shared.config.workers,
        ready: !shared.draining.load(Ordering::Relaxed),
        draining: shared.draining.load(Ordering::Relaxed),
        listen: shared.public_addr.to_string(),
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
