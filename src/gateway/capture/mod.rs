//! Normal-mode capture (DESIGN §1, §3): a successful primary token response becomes a session
//! snapshot and a refresh-token artifact, written to the store off the request path.
//!
//! The server builds a [`CaptureJob`] for every forwarded `authorization_code` or
//! `refresh_token` grant the primary answers with 200 (and for every primary `invalid_grant` to
//! a refresh grant) and hands it to [`CaptureQueue::try_send`], which never blocks: a full queue
//! drops the job and counts it. One worker thread ([`spawn_capture_worker`]) takes jobs in
//! batches, calls the pure [`derive()`] for each, and writes the results to the store.
//!
//! - [`derive()`]: response → verified tokens → snapshot, artifact, superseded predecessor and
//!   client-secret record. Pure: time, keys and randomness come in as inputs.
//! - [`request`]: the request half of a job, taken (credentials digested) before forwarding.
//! - [`worker`]: the queue, the worker thread, batching, revocation on refusal.
//! - [`stats`]: the counters and their Prometheus text.
//!
//! Device identities written here have a prefix saying how strong they are, strongest first:
//! `jkt:<RFC 7638 thumbprint>` (the access token's `cnf.jkt`, else the verified DPoP proof's
//! key), `hdr:<value>` (the configured device header), `family:<id>` (the refresh-token family).
//!
//! What the outage path can rely on: a refresh token's [`crate::store::ArtifactRecord`] names
//! its session exactly (tenant, user, device, app, resource: the key of the snapshot written
//! with it); `state` says whether it may still be presented; a session with `dpop_jkt` was bound
//! by the primary and needs a proof of that key; a `jkt:` device on an unbound session was named
//! by the proof the client sent at capture. Templates convert back with
//! [`stored_template_meta`].
//!
//! Invariant: no raw token, cookie or secret is stored or logged; only keyed digests
//! ([`crate::store::Store::artifact_digest`]) leave this module. `GrantCapture`'s `Debug` hides
//! the response body and the DPoP proof.
//!
//! Invariant: capture reads no clock (a job's time is the server's `received_at_secs`) and
//! never blocks a sender; its only I/O is the store's.

pub mod derive;
pub mod request;
pub mod stats;
pub mod worker;

#[cfg(test)]
mod testkit;

use bytes::Bytes;
use zeroize::Zeroizing;

use crate::store::{ArtifactDigest, ArtifactKind, ClientAuthMethod, Store};

pub use derive::{DeriveContext, Derived, Skip, derive, stored_template_meta, template_to_store};
pub use request::{CaptureRequest, client_auth_method};
pub use stats::{CaptureCounts, CaptureStats};
pub use worker::{CaptureError, CaptureQueue, CaptureWorker, spawn_capture_worker};

/// Prefix of a device identity taken from a DPoP key thumbprint.
pub const DEVICE_PREFIX_JKT: &str = "jkt:";
/// Prefix of a device identity taken from the configured device header.
pub const DEVICE_PREFIX_HEADER: &str = "hdr:";
/// Prefix of a device identity that is the refresh-token family (the identity of last resort).
pub const DEVICE_PREFIX_FAMILY: &str = "family:";

/// The grant a captured response answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapturedGrantType {
    /// `grant_type=authorization_code` (RFC 6749 §4.1.3): a new sign-in, a new family.
    AuthorizationCode,
    /// `grant_type=refresh_token` (RFC 6749 §6): continues the family of the presented token.
    RefreshToken,
}

/// What the server hands to the capture queue.
#[derive(Debug)]
pub enum CaptureJob {
    /// The primary answered a token request with 200.
    Granted(Box<GrantCapture>),
    /// The primary answered a `refresh_token` grant with 400 `invalid_grant`: with strict
    /// rotation the provider has revoked the whole grant, so the backup revokes it too.
    ///
    /// Providers also answer `invalid_grant` without revoking anything when the token is
    /// presented by another client or with another DPoP key (the mock primary does, rightly:
    /// otherwise anyone who saw a token could kill the grant). So the worker revokes only when
    /// the request came from the token's own client and, for a token whose session is bound to
    /// a DPoP key, with a proof of that key.
    Refused {
        /// Digest (`ArtifactKind::RefreshToken`) of the refresh token the client presented.
        presented: ArtifactDigest,
        /// The `client_id` of the refused request.
        client_id: String,
        /// The request's `DPoP` header, if any.
        dpop_proof: Option<Bytes>,
        /// When the primary answered, unix seconds.
        at_secs: i64,
    },
}

/// One successful token request and the primary's answer, as the server saw them.
pub struct GrantCapture {
    /// Which grant.
    pub grant: CapturedGrantType,
    /// The client (`client_id`), as authenticated to the primary.
    pub client_id: String,
    /// How the client authenticated.
    pub client_auth: ClientAuthMethod,
    /// Digest of the client secret the primary accepted ([`client_secret_digest`]), for
    /// `client_secret_basic` / `client_secret_post`.
    pub client_secret_digest: Option<ArtifactDigest>,
    /// RFC 8707 `resource` parameters of the request, in order.
    pub requested_resources: Vec<String>,
    /// The request's `scope`, if any.
    pub requested_scope: Option<String>,
    /// Digest (`ArtifactKind::RefreshToken`) of the refresh token presented (refresh grant).
    pub presented_refresh: Option<ArtifactDigest>,
    /// The request's `DPoP` header, if any.
    pub dpop_proof: Option<Bytes>,
    /// The value of the configured device header (`capture.device_header`), if any.
    pub device_header: Option<String>,
    /// The primary's 200 JSON body. Holds raw tokens: never logged, never stored.
    pub response_body: Bytes,
    /// When the primary answered, unix seconds.
    pub received_at_secs: i64,
}

impl std::fmt::Debug for GrantCapture {
    // The body and the proof hold tokens; show their sizes only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantCapture")
            .field("grant", &self.grant)
            .field("client_id", &self.client_id)
            .field("client_auth", &self.client_auth)
            .field("client_secret_digest", &self.client_secret_digest)
            .field("requested_resources", &self.requested_resources)
            .field("requested_scope", &self.requested_scope)
            .field("presented_refresh", &self.presented_refresh)
            .field(
                "dpop_proof_bytes",
                &self.dpop_proof.as_ref().map(Bytes::len),
            )
            .field("device_header", &self.device_header)
            .field("response_body_bytes", &self.response_body.len())
            .field("received_at_secs", &self.received_at_secs)
            .finish()
    }
}

/// The digest under which a client secret is recorded: `ArtifactKind::ClientSecret` over
/// `client_id ‖ 0x00 ‖ secret`, so the same secret of two clients gives two digests. The
/// concatenation is wiped after use.
pub fn client_secret_digest(store: &Store, client_id: &str, secret: &[u8]) -> ArtifactDigest {
    let mut input = Zeroizing::new(Vec::with_capacity(client_id.len() + 1 + secret.len()));
    input.extend_from_slice(client_id.as_bytes());
    input.push(0);
    input.extend_from_slice(secret);
    store.artifact_digest(ArtifactKind::ClientSecret, &input)
}
