//! The primary's metadata as backstop serves it: the discovery document and the JWKS merged
//! with backstop's own public keys, refreshed from the primary in the background and kept
//! through an outage, so clients and resource servers can still find the keys that verify
//! backup tokens (DESIGN §7).
//!
//! One task on the control thread fetches; workers read an immutable `Metadata` snapshot
//! through `ArcSwap` (a lock-free load per request), never waiting on a fetch.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::Uri;

use super::upstream::Upstream;
use crate::token::jwk::PublicJwk;
use crate::token::jwks::{self, CacheAction, CachePolicy, KeySet, RemoteJwks};

/// The path under the issuer where OpenID Connect Discovery puts the configuration.
const DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";

/// How often the refresher wakes to see whether a fetch is due.
const REFRESH_TICK: Duration = Duration::from_secs(1);

/// What the workers serve, as of the last successful fetches. Immutable once published.
#[derive(Debug, Default)]
pub(crate) struct Metadata {
    /// The path at which the discovery document is served (issuer path + suffix).
    pub(crate) discovery_path: String,
    /// The primary's discovery document, `jwks_uri` pointing at backstop; `None` until fetched.
    pub(crate) discovery: Option<Bytes>,
    /// The path of the primary's `jwks_uri`, which backstop answers with the merged set.
    pub(crate) jwks_path: Option<String>,
    /// The merged JWKS (backstop's keys first, then the primary's); `None` until the primary's
    /// set has been fetched once (until then the primary answers JWKS requests itself).
    pub(crate) jwks: Option<Bytes>,
    /// The primary's signing keys, for verifying its tokens.
    pub(crate) primary_keys: Option<Arc<KeySet>>,
    /// The path of the primary's token endpoint, from discovery.
    pub(crate) token_path: Option<String>,
}

/// Why a discovery document was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DiscoveryError {
    /// Not a JSON object.
    #[error("the discovery document is not a JSON object")]
    NotAnObject,
    /// `issuer` differs from ours: clients would reject every token (OIDC Discovery §4.3).
    #[error("the discovery document's issuer {found:?} is not the configured issuer {expected:?}")]
    IssuerMismatch {
        /// What the primary says.
        found: String,
        /// What backstop is configured with.
        expected: String,
    },
    /// A required member is missing or not a URL.
    #[error("the discovery document's {0} is missing or not an absolute URL")]
    BadMember(&'static str),
}

/// The parts of a discovery document backstop needs, and the document to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Discovery {
    pub(crate) document: Bytes,
    pub(crate) jwks_path: String,
    pub(crate) token_path: Option<String>,
}

/// Checks a primary's discovery document against our issuer and rewrites its `jwks_uri` to the
/// issuer's origin, so the merged key set is what clients fetch.
pub(crate) fn accept_discovery(raw: &[u8], issuer: &str) -> Result<Discovery, DiscoveryError> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(raw).map_err(|_| DiscoveryError::NotAnObject)?;
    let obj = doc.as_object_mut().ok_or(DiscoveryError::NotAnObject)?;
    let found = obj
        .get("issuer")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if found != issuer {
        return Err(DiscoveryError::IssuerMismatch {
            found: found.to_string(),
            expected: issuer.to_string(),
        });
    }
    let path_of = |member: &'static str| -> Result<Option<String>, DiscoveryError> {
        match obj.get(member).and_then(|v| v.as_str()) {
            None => Ok(None),
            Some(url) => {
                let uri: Uri = url.parse().map_err(|_| DiscoveryError::BadMember(member))?;
                if uri.scheme().is_none() || uri.authority().is_none() {
                    return Err(DiscoveryError::BadMember(member));
                }
                Ok(Some(uri.path().to_string()))
            }
        }
    };
    let jwks_path = path_of("jwks_uri")?.ok_or(DiscoveryError::BadMember("jwks_uri"))?;
    let token_path = path_of("token_endpoint")?;
    let origin = issuer_origin(issuer);
    obj.insert(
        "jwks_uri".into(),
        serde_json::Value::String(format!("{origin}{jwks_path}")),
    );
    let document = serde_json::to_vec(&doc).map_err(|_| DiscoveryError::NotAnObject)?;
    Ok(Discovery {
        document: Bytes::from(document),
        jwks_path,
        token_path,
    })
}

/// `scheme://authority` of the issuer URL.
pub(crate) fn issuer_origin(issuer: &str) -> String {
    match issuer.parse::<Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => issuer.trim_end_matches('/').to_string(),
        },
        Err(_) => issuer.trim_end_matches('/').to_string(),
    }
}

/// The path at which the issuer's discovery document lives (OIDC Discovery §4).
pub(crate) fn discovery_path(issuer: &str) -> String {
    let path = issuer
        .parse::<Uri>()
        .map(|u| u.path().to_string())
        .unwrap_or_default();
    format!("{}{DISCOVERY_SUFFIX}", path.trim_end_matches('/'))
}

/// When to fetch the discovery document next: on schedule after a success, with doubling
/// back-off after failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Schedule {
    next_at_secs: u64,
    failures: u32,
}

impl Schedule {
    const REFRESH_SECS: u64 = 300;
    const BACKOFF_MAX_SECS: u64 = 60;

    fn due(&self, now_secs: u64) -> bool {
        now_secs >= self.next_at_secs
    }

    fn succeeded(&mut self, now_secs: u64) {
        self.failures = 0;
        self.next_at_secs = now_secs.saturating_add(Self::REFRESH_SECS);
    }

    fn failed(&mut self, now_secs: u64) {
        self.failures = self.failures.saturating_add(1);
        let backoff = 1u64.checked_shl(self.failures.min(16)).unwrap_or(u64::MAX);
        self.next_at_secs = now_secs.saturating_add(backoff.min(Self::BACKOFF_MAX_SECS));
    }
}

/// Keeps `published` fresh from the primary until the task is dropped.
pub(crate) async fn refresh_forever(
    upstream: Upstream,
    issuer: String,
    ours: Vec<PublicJwk>,
    published: Arc<ArcSwap<Metadata>>,
    cache_dir: std::path::PathBuf,
    now_secs: impl Fn() -> u64,
) {
    let issuer_uri: Uri = match issuer.parse() {
        Ok(uri) => uri,
        Err(_) => return,
    };
    let discovery_path = discovery_path(&issuer);
    let mut discovery: Option<Discovery> = None;
    let mut schedule = Schedule {
        next_at_secs: 0,
        failures: 0,
    };
    let mut keys = RemoteJwks::new(CachePolicy::default());
    // What the last run fetched: served at once, so a restart during an outage still knows
    // the token endpoint and still publishes the primary's keys. Both are re-checked exactly
    // as a fetch would be, and both are refetched as soon as the primary answers.
    let mut changed = false;
    if let Some(raw) = read_cached(&cache_dir, DISCOVERY_CACHE_FILE) {
        match accept_discovery(&raw, &issuer) {
            Ok(d) => {
                discovery = Some(d);
                changed = true;
            }
            Err(e) => tracing::warn!(error = %e, "cached discovery document ignored"),
        }
    }
    if discovery.is_some()
        && let Some(raw) = read_cached(&cache_dir, JWKS_CACHE_FILE)
    {
        // Fetched "at time 0": stale at once, so the first poll refetches it.
        if let Err(e) = keys.on_fetched(&raw, 0) {
            tracing::warn!(error = %e, "cached primary JWKS ignored");
        }
    }
    let mut interval = tokio::time::interval(REFRESH_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if changed && let Some(d) = discovery.as_ref() {
            publish(&published, &discovery_path, d, &keys, &ours);
        }
        interval.tick().await;
        let now = now_secs();
        changed = false;

        if schedule.due(now) {
            match upstream.fetch_as_issuer(&discovery_path, &issuer_uri).await {
                Ok(raw) => match accept_discovery(&raw, &issuer) {
                    Ok(d) => {
                        schedule.succeeded(now);
                        if discovery.as_ref() != Some(&d) {
                            changed = true;
                            write_cached(&cache_dir, DISCOVERY_CACHE_FILE, &raw);
                        }
                        discovery = Some(d);
                    }
                    Err(e) => {
                        schedule.failed(now);
                        tracing::error!(error = %e, "primary discovery document refused; keeping the previous one");
                    }
                },
                Err(failure) => {
                    schedule.failed(now);
                    tracing::info!(
                        failure = failure.label(),
                        "discovery fetch failed; serving the cached document"
                    );
                }
            }
        }

        let Some(d) = discovery.as_ref() else {
            continue;
        };
        if keys.poll(now) == CacheAction::Fetch {
            match upstream.fetch_as_issuer(&d.jwks_path, &issuer_uri).await {
                Ok(raw) => match keys.on_fetched(&raw, now) {
                    Ok(skipped) => {
                        changed = true;
                        write_cached(&cache_dir, JWKS_CACHE_FILE, &raw);
                        for s in skipped {
                            tracing::warn!(?s, "primary JWKS key skipped");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "primary JWKS refused; keeping the previous set")
                    }
                },
                Err(failure) => {
                    keys.on_fetch_failed(now);
                    tracing::info!(
                        failure = failure.label(),
                        "JWKS fetch failed; serving the cached set"
                    );
                }
            }
        }

        if changed {
            tracing::info!("primary metadata refreshed");
        }
    }
}

/// Where the last fetched documents are kept, under the data directory.
pub(crate) const CACHE_DIR: &str = "primary-metadata";
const DISCOVERY_CACHE_FILE: &str = "openid-configuration.json";
const JWKS_CACHE_FILE: &str = "jwks.json";

fn publish(
    published: &ArcSwap<Metadata>,
    discovery_path: &str,
    d: &Discovery,
    keys: &RemoteJwks,
    ours: &[PublicJwk],
) {
    let primary_keys = keys.keys();
    let jwks = primary_keys.as_ref().map(|set| {
        let merged = jwks::merge(ours, set);
        for kid in &merged.refused_kids {
            tracing::error!(
                kid,
                "primary key uses one of backstop's kids; not published"
            );
        }
        Bytes::from(merged.document)
    });
    published.store(Arc::new(Metadata {
        discovery_path: discovery_path.to_string(),
        discovery: Some(d.document.clone()),
        jwks_path: Some(d.jwks_path.clone()),
        jwks,
        primary_keys,
        token_path: d.token_path.clone(),
    }));
}

/// A cached document, if present and within the size bound. Errors are logged, never fatal:
/// the cache only saves waiting for the primary.
fn read_cached(dir: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > crate::limits::UPSTREAM_BUFFERED_BODY_BYTES_MAX as u64 => {
            tracing::warn!(path = %path.display(), "cached primary metadata too large; ignored");
            None
        }
        Ok(_) => match std::fs::read(&path) {
            Ok(raw) => Some(raw),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read cached primary metadata");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read cached primary metadata");
            None
        }
    }
}

/// Replaces a cached document atomically (temp file, fsync, rename, directory fsync), so a
/// crash leaves the old or the new document, never a torn one.
fn write_cached(dir: &std::path::Path, name: &str, raw: &[u8]) {
    use std::io::Write as _;
    let result = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(raw)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot cache primary metadata");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://login.example.com/tenant/v2.0";

    #[test]
    fn schedule_backs_off_after_failures_and_refreshes_after_success() {
        let mut s = Schedule {
            next_at_secs: 0,
            failures: 0,
        };
        assert!(s.due(0));
        s.failed(100);
        assert_eq!(s.next_at_secs, 102);
        s.failed(102);
        assert_eq!(s.next_at_secs, 106);
        for _ in 0..20 {
            s.failed(1000);
        }
        assert_eq!(s.next_at_secs, 1000 + Schedule::BACKOFF_MAX_SECS);
        s.succeeded(2000);
        assert_eq!(s.failures, 0);
        assert!(!s.due(2000 + Schedule::REFRESH_SECS - 1));
        assert!(s.due(2000 + Schedule::REFRESH_SECS));
    }

    #[test]
    fn discovery_path_follows_the_issuer_path() {
        assert_eq!(
            discovery_path(ISSUER),
            "/tenant/v2.0/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_path("http://127.0.0.1:8080"),
            "/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_path("https://a.example/"),
            "/.well-known/openid-configuration"
        );
    }

    #[test]
    fn accepted_discovery_points_jwks_uri_at_the_issuer_origin() {
        let raw = br#"{"issuer":"https://login.example.com/tenant/v2.0","jwks_uri":"https://internal-idp:8443/tenant/keys","token_endpoint":"https://login.example.com/tenant/oauth2/token","x":1}"#;
        let d = accept_discovery(raw, ISSUER).unwrap();
        assert_eq!(d.jwks_path, "/tenant/keys");
        assert_eq!(d.token_path.as_deref(), Some("/tenant/oauth2/token"));
        let doc: serde_json::Value = serde_json::from_slice(&d.document).unwrap();
        assert_eq!(doc["jwks_uri"], "https://login.example.com/tenant/keys");
        assert_eq!(doc["issuer"], ISSUER);
        assert_eq!(doc["x"], 1);
    }

    #[test]
    fn discovery_for_another_issuer_is_refused() {
        let raw = br#"{"issuer":"https://login.example.com/other","jwks_uri":"https://x/keys"}"#;
        assert!(matches!(
            accept_discovery(raw, ISSUER),
            Err(DiscoveryError::IssuerMismatch { .. })
        ));
    }

    #[test]
    fn discovery_without_a_usable_jwks_uri_is_refused() {
        for raw in [
            &br#"{"issuer":"https://login.example.com/tenant/v2.0"}"#[..],
            br#"{"issuer":"https://login.example.com/tenant/v2.0","jwks_uri":"/relative"}"#,
            br#"[1,2]"#,
            b"not json",
        ] {
            assert!(
                accept_discovery(raw, ISSUER).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
