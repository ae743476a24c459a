//! The request-side half of normal-mode capture: what the token handler keeps from a request
//! before forwarding it (digests, never credentials), and the queueing of the capture job once
//! the primary answers. `gateway::capture` does the rest on its own thread.

use bytes::Bytes;
use hyper::StatusCode;

use super::router::HandlerCtx;
use crate::gateway::capture::CaptureRequest;
use crate::protocol::TokenRequest;

/// What a forwarded token request leaves for its capture; `None` inside for grants that are not
/// recorded (client credentials, device code, ...).
#[derive(Debug)]
pub(crate) struct Pending(Option<CaptureRequest>);

impl Pending {
    /// Keeps what capture needs from a parsed request.
    pub(crate) fn from_request(
        request: &TokenRequest<'_>,
        headers: &hyper::HeaderMap,
        ctx: &HandlerCtx,
    ) -> Self {
        let dpop = headers
            .get("dpop")
            .map(|v| Bytes::copy_from_slice(v.as_bytes()));
        let device_header = ctx
            .shared
            .config
            .capture
            .device_header
            .as_deref()
            .and_then(|name| headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Self(CaptureRequest::from_token_request(
            &ctx.shared.store,
            request,
            dpop,
            device_header,
        ))
    }

    /// Whether the primary's answer with `status` must be read whole to be recorded: a 200 to
    /// a recorded grant, or a 400 (an `invalid_grant` to a refresh revokes here too).
    pub(crate) fn wants_body(&self, status: StatusCode) -> bool {
        self.0.is_some() && (status == StatusCode::OK || status == StatusCode::BAD_REQUEST)
    }

    /// Queues the capture of the primary's answer; never blocks (a full queue drops the job
    /// and counts it in `backstop_capture_dropped_total`).
    pub(crate) fn submit(self, status: StatusCode, body: Bytes, ctx: &HandlerCtx) {
        let Some(request) = self.0 else {
            return;
        };
        let now = super::unix_now_secs_i64();
        let job = if status == StatusCode::OK {
            Some(request.granted(body, now))
        } else if is_invalid_grant(&body) {
            request.refused(now)
        } else {
            None
        };
        if let Some(job) = job {
            // The queue counts what it drops.
            let _ = ctx.shared.capture.try_send(job);
        }
    }
}

/// Whether an error body says `invalid_grant` (status and `error` only: descriptions vary and
/// must not be parsed, FIELD-NOTES).
fn is_invalid_grant(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct ErrorBody<'a> {
        #[serde(borrow)]
        error: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<ErrorBody<'_>>(body)
        .ok()
        .and_then(|b| b.error)
        .is_some_and(|e| e == "invalid_grant")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_invalid_grant_error_revokes() {
        assert!(is_invalid_grant(
            br#"{"error":"invalid_grant","error_description":"x"}"#
        ));
        assert!(!is_invalid_grant(br#"{"error":"invalid_client"}"#));
        assert!(!is_invalid_grant(b"<html>"));
        assert!(!is_invalid_grant(
            br#"{"error_description":"invalid_grant"}"#
        ));
    }
}
