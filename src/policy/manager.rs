//! The current policy set and how it changes: loaded from the `[policy] file` at start,
//! replaced whole through the admin API (`PUT /admin/policies`), reloaded on SIGHUP or by a
//! watcher thread when the file changes. Every change is validated first; a bad document keeps
//! the previous version and says why (the JSON path). Readers on the request path take the
//! current [`Versioned`] set with one lock-free `ArcSwap` load.
//!
//! This is the one part of `policy` that touches files (and a thread); evaluation stays pure.
//! Time comes in as `now_secs` (the watcher is handed a clock function).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use super::PolicySet;
use super::load::{LoadWarning, PolicyLoadError, load};
use crate::limits::POLICY_DOCUMENT_BYTES_MAX;

/// A value with the version it was published as.
#[derive(Debug)]
pub struct Versioned<T> {
    /// Starts at 1 for the first loaded document and grows by one per accepted change; 0 is
    /// the empty set a manager starts with when no file is configured.
    pub version: u64,
    /// SHA-256 of the source document, lowercase hex (empty for the initial empty set): an
    /// unchanged file is not reloaded, and the admin API can show what is live.
    pub source_sha256: String,
    /// When this version was loaded, Unix seconds.
    pub loaded_at_secs: i64,
    /// Where it came from.
    pub origin: PolicyOrigin,
    /// The source document as loaded (for `GET /admin/policies`).
    pub document: Vec<u8>,
    /// The value.
    pub value: T,
}

impl<T> Versioned<T> {
    /// The `ETag` of this version for `GET /admin/policies`: the version, quoted (`"3"`).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// The version an `If-Match` header names, for [`PolicyManager::replace_if_version`]: `"3"`
/// (as [`Versioned::etag`] writes it), a weak `W/"3"` or a bare `3`. `None` for anything else,
/// including `*` and lists (the caller answers 412 or 400).
pub fn parse_if_match(value: &str) -> Option<u64> {
    let value = value.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    inner.parse().ok()
}

/// Where a policy version came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOrigin {
    /// Nothing loaded yet: no policies, so no policy refuses.
    Empty,
    /// The policy file.
    File(PathBuf),
    /// The admin API.
    AdminApi,
}

/// Why a document was not made current.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is over `limits::POLICY_DOCUMENT_BYTES_MAX`.
    #[error("policy file {path} is over the {max_bytes}-byte limit")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max_bytes: usize,
    },
    /// The document is invalid; the error names the JSON path.
    #[error("{origin}: {error}")]
    Invalid {
        /// The file's path, or `admin API`.
        origin: String,
        /// What was wrong, and where.
        error: PolicyLoadError,
    },
    /// `If-Match` named another version than the current one.
    #[error(transparent)]
    VersionMismatch(#[from] VersionMismatch),
    /// No `[policy] file` is configured, so there is nothing to reload.
    #[error("no policy file is configured")]
    NoFile,
}

/// A conditional replace named a version that is no longer current (HTTP 412).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("policy version {expected} is not current (current: {current})")]
pub struct VersionMismatch {
    /// The version the caller expected.
    pub expected: u64,
    /// The current version.
    pub current: u64,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The document changed and is now current, as this version.
    Loaded {
        /// The new version.
        version: u64,
    },
    /// The document is byte for byte the current one: nothing changed.
    Unchanged {
        /// The current version.
        version: u64,
    },
}

/// Holds the current policy set. Share it in an `Arc`; reads are lock-free, changes are
/// serialized by a mutex so versions are strictly increasing and a conditional replace is
/// atomic with its check.
#[derive(Debug)]
pub struct PolicyManager {
    current: ArcSwap<Versioned<PolicySet>>,
    file: Option<PathBuf>,
    writer: std::sync::Mutex<()>,
}

impl PolicyManager {
    /// A manager with no policies and no file (version 0).
    pub fn empty() -> Self {
        Self {
            current: ArcSwap::from_pointee(Versioned {
                version: 0,
                source_sha256: String::new(),
                loaded_at_secs: 0,
                origin: PolicyOrigin::Empty,
                document: Vec::new(),
                value: PolicySet::default(),
            }),
            file: None,
            writer: std::sync::Mutex::new(()),
        }
    }

    /// A manager loaded from the configured policy file. At start a bad file is an error
    /// (the server refuses to start, exit 2); later reloads keep the previous version instead.
    pub fn from_file(path: &Path, now_secs: i64) -> Result<Self, PolicyFileError> {
        let mut manager = Self::empty();
        manager.file = Some(path.to_path_buf());
        manager.load_file(path, now_secs)?;
        Ok(manager)
    }

    /// The current version: one lock-free load. Hold it for the duration of one request.
    pub fn current(&self) -> Arc<Versioned<PolicySet>> {
        self.current.load_full()
    }

    /// The current version as a borrowed guard: no reference count is touched in the common
    /// case (the outage path's per-request read). Hold it for one request, not across awaits.
    pub fn current_guard(&self) -> arc_swap::Guard<Arc<Versioned<PolicySet>>> {
        self.current.load()
    }

    /// The configured policy file, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Re-reads the configured file (SIGHUP). A bad document keeps the previous version.
    pub fn reload_now(&self, now_secs: i64) -> Result<ReloadOutcome, PolicyFileError> {
        let path = self.file.as_deref().ok_or(PolicyFileError::NoFile)?;
        self.load_file(path, now_secs)
    }

    /// Reads, validates and publishes `path`. A bad document keeps the previous version; the
    /// error (logged here too) names the JSON path.
    pub fn load_file(&self, path: &Path, now_secs: i64) -> Result<ReloadOutcome, PolicyFileError> {
        let result = read_document(path).and_then(|document| {
            self.publish(
                document,
                PolicyOrigin::File(path.to_path_buf()),
                None,
                now_secs,
            )
        });
        if let Err(e) = &result {
            tracing::warn!(error = %e, "policy file rejected; the previous policies stay in force");
        }
        result
    }

    /// Validates and publishes a document from the admin API (`PUT /admin/policies`).
    /// Returns the new version (or the current one when the document is unchanged).
    pub fn replace_from_json(
        &self,
        document: &[u8],
        now_secs: i64,
    ) -> Result<ReloadOutcome, PolicyFileError> {
        self.publish(document.to_vec(), PolicyOrigin::AdminApi, None, now_secs)
    }

    /// [`PolicyManager::replace_from_json`] only if `expected_version` is still current
    /// (`If-Match`), checked and swapped under one lock.
    pub fn replace_if_version(
        &self,
        document: &[u8],
        expected_version: u64,
        now_secs: i64,
    ) -> Result<ReloadOutcome, PolicyFileError> {
        self.publish(
            document.to_vec(),
            PolicyOrigin::AdminApi,
            Some(expected_version),
            now_secs,
        )
    }

    fn publish(
        &self,
        document: Vec<u8>,
        origin: PolicyOrigin,
        expected_version: Option<u64>,
        now_secs: i64,
    ) -> Result<ReloadOutcome, PolicyFileError> {
        // A poisoned lock only means another writer panicked between swaps; the published
        // value is always whole, so carrying on is sound.
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.current.load();
        if let Some(expected) = expected_version
            && expected != current.version
        {
            return Err(VersionMismatch {
                expected,
                current: current.version,
            }
            .into());
        }
        let sha256 = sha256_hex(&document);
        if current.version > 0 && sha256 == current.source_sha256 {
            return Ok(ReloadOutcome::Unchanged {
                version: current.version,
            });
        }
        let loaded = load(&document).map_err(|error| PolicyFileError::Invalid {
            origin: match &origin {
                PolicyOrigin::File(path) => path.display().to_string(),
                PolicyOrigin::AdminApi | PolicyOrigin::Empty => "admin API".to_owned(),
            },
            error,
        })?;
        let version = current.version.saturating_add(1);
        log_report(
            version,
            &loaded.unknown_fields,
            loaded.unknown_field_count,
            &loaded.warnings,
        );
        tracing::info!(
            version,
            policies = loaded.set.policy_count(),
            named_locations = loaded.set.location_count(),
            sha256 = %sha256,
            "policies loaded"
        );
        self.current.store(Arc::new(Versioned {
            version,
            source_sha256: sha256,
            loaded_at_secs: now_secs,
            origin,
            document,
            value: loaded.set,
        }));
        Ok(ReloadOutcome::Loaded { version })
    }
}

/// Unknown fields and warnings, once per accepted document.
fn log_report(version: u64, unknown: &[String], unknown_count: usize, warnings: &[LoadWarning]) {
    if unknown_count > 0 {
        tracing::info!(
            version,
            count = unknown_count,
            fields = ?unknown,
            "policy document has fields backstop does not model; they are ignored"
        );
    }
    for warning in warnings {
        tracing::warn!(
            version,
            path = %warning.path,
            kind = ?warning.kind,
            "policy loaded with a condition or control the backup cannot check: it fails closed"
        );
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Reads and validates a policy file without publishing it (`backstop check-config`): the
/// loaded set with its unknown fields and warnings, or the error naming the JSON path.
pub fn check_file(path: &Path) -> Result<super::Loaded, PolicyFileError> {
    let document = read_document(path)?;
    load(&document).map_err(|error| PolicyFileError::Invalid {
        origin: path.display().to_string(),
        error,
    })
}

/// Reads a policy file, refusing one over the document limit without reading it all.
fn read_document(path: &Path) -> Result<Vec<u8>, PolicyFileError> {
    let read_err = |source| PolicyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut document = Vec::new();
    let limit = u64::try_from(POLICY_DOCUMENT_BYTES_MAX)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    file.take(limit)
        .read_to_end(&mut document)
        .map_err(read_err)?;
    if document.len() > POLICY_DOCUMENT_BYTES_MAX {
        return Err(PolicyFileError::TooLarge {
            path: path.to_path_buf(),
            max_bytes: POLICY_DOCUMENT_BYTES_MAX,
        });
    }
    Ok(document)
}

/// The hot-reload watcher thread; dropping the handle stops it and waits for it.
#[derive(Debug)]
pub struct WatchHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WatchHandle {
    /// Stops the watcher and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the sender wakes the thread's `recv_timeout` with `Disconnected`.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Watches the manager's policy file on a thread: every `poll_interval` it looks at the
/// file's modification time and size, and when they changed it reads the file and reloads it
/// if its content hash differs from the last one tried (so a broken file is reported once,
/// not at every poll, and a rewrite with equal content is not a new version). `now_secs`
/// stamps each version. Returns `None` when the manager has no file.
pub fn spawn_watcher(
    manager: Arc<PolicyManager>,
    poll_interval: Duration,
    now_secs: fn() -> i64,
) -> std::io::Result<Option<WatchHandle>> {
    let Some(path) = manager.file().map(Path::to_path_buf) else {
        return Ok(None);
    };
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || {
            // `None`: the first poll reads and hashes the file, so a change made between the
            // manager's load and this thread's start is not missed.
            let mut last_seen = None;
            let mut last_tried = manager.current().source_sha256.clone();
            loop {
                match stopped.recv_timeout(poll_interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                let seen = stamp(&path);
                if seen == last_seen {
                    continue;
                }
                last_seen = seen;
                let Ok(document) = read_document(&path) else {
                    // Mid-rename or removed: look again at the next poll.
                    last_seen = None;
                    continue;
                };
                let sha256 = sha256_hex(&document);
                if sha256 == last_tried {
                    continue;
                }
                last_tried = sha256;
                // Errors are logged by `load_file`; the previous version stays.
                let _ = manager.load_file(&path, now_secs());
            }
        })?;
    Ok(Some(WatchHandle {
        stop: Some(stop),
        thread: Some(thread),
    }))
}

/// (modification time, size) of the file, `None` if it cannot be read.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(policy_ids: &[&str]) -> Vec<u8> {
        let policies: Vec<serde_json::Value> = policy_ids
            .iter()
            .map(|id| {
                serde_json::json!({
                    "id": id,
                    "state": "enabled",
                    "conditions": {
                        "users": {"includeUsers": ["All"]},
                        "applications": {"includeApplications": ["All"]}
                    },
                    "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "conditionalAccessPolicies": policies })).unwrap()
    }

    const BAD_USERS: &[u8] = br#"{"conditionalAccessPolicies":[{"id":"p","state":"enabled",
        "conditions":{"users":{"includeUsers":"All"},"applications":{}}}]}"#;

    #[test]
    fn empty_manager_is_version_zero_with_no_policies() {
        let m = PolicyManager::empty();
        let current = m.current();
        assert_eq!(current.version, 0);
        assert_eq!(current.value.policy_count(), 0);
        assert_eq!(current.origin, PolicyOrigin::Empty);
        assert!(matches!(m.reload_now(1), Err(PolicyFileError::NoFile)));
    }

    #[test]
    fn replace_bumps_version_and_unchanged_document_does_not() {
        let m = PolicyManager::empty();
        let a = document(&["a"]);
        assert_eq!(
            m.replace_from_json(&a, 10).unwrap(),
            ReloadOutcome::Loaded { version: 1 }
        );
        assert_eq!(
            m.replace_from_json(&a, 11).unwrap(),
            ReloadOutcome::Unchanged { version: 1 }
        );
        assert_eq!(
            m.replace_from_json(&document(&["a", "b"]), 12).unwrap(),
            ReloadOutcome::Loaded { version: 2 }
        );
        let current = m.current();
        assert_eq!(current.value.policy_count(), 2);
        assert_eq!(current.loaded_at_secs, 12);
        assert_eq!(current.origin, PolicyOrigin::AdminApi);
        assert_eq!(current.source_sha256.len(), 64);
        assert_eq!(current.document, document(&["a", "b"]));
    }

    #[test]
    fn bad_document_keeps_previous_version_and_names_the_json_path() {
        let m = PolicyManager::empty();
        m.replace_from_json(&document(&["a"]), 1).unwrap();
        let err = m.replace_from_json(BAD_USERS, 2).unwrap_err();
        let PolicyFileError::Invalid { origin, error } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(origin, "admin API");
        assert!(
            matches!(error, PolicyLoadError::Shape { path, .. }
                if path == "conditionalAccessPolicies[0].conditions.users.includeUsers"),
            "{error:?}"
        );
        assert!(
            err.to_string()
                .contains("conditionalAccessPolicies[0].conditions.users.includeUsers"),
            "{err}"
        );
        assert_eq!(m.current().version, 1);
        assert_eq!(m.current().value.policy_count(), 1);
    }

    #[test]
    fn conditional_replace_checks_the_version_atomically() {
        let m = PolicyManager::empty();
        m.replace_from_json(&document(&["a"]), 1).unwrap();
        assert!(matches!(
            m.replace_if_version(&document(&["b"]), 0, 2),
            Err(PolicyFileError::VersionMismatch(VersionMismatch {
                expected: 0,
                current: 1
            }))
        ));
        assert_eq!(
            m.replace_if_version(&document(&["b"]), 1, 2).unwrap(),
            ReloadOutcome::Loaded { version: 2 }
        );
    }

    #[test]
    fn etag_and_if_match_round_trip() {
        let m = PolicyManager::empty();
        m.replace_from_json(&document(&["a"]), 1).unwrap();
        let etag = m.current().etag();
        assert_eq!(etag, "\"1\"");
        assert_eq!(parse_if_match(&etag), Some(1));
        assert_eq!(parse_if_match("W/\"7\""), Some(7));
        assert_eq!(parse_if_match(" 12 "), Some(12));
        for bad in [
            "*",
            "",
            "\"\"",
            "\"1\", \"2\"",
            "\"-1\"",
            "\"x\"",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_if_match(bad), None, "{bad}");
        }
    }

    #[test]
    fn file_load_reload_and_bad_file_keeps_previous() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policies.json");
        std::fs::write(&path, document(&["a"])).unwrap();
        let m = PolicyManager::from_file(&path, 5).unwrap();
        assert_eq!(m.current().version, 1);
        assert_eq!(m.current().origin, PolicyOrigin::File(path.clone()));
        assert_eq!(
            m.reload_now(6).unwrap(),
            ReloadOutcome::Unchanged { version: 1 }
        );

        std::fs::write(&path, BAD_USERS).unwrap();
        let err = m.reload_now(7).unwrap_err();
        assert!(
            err.to_string().starts_with(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(m.current().version, 1);

        std::fs::write(&path, document(&["a", "b"])).unwrap();
        assert_eq!(
            m.reload_now(8).unwrap(),
            ReloadOutcome::Loaded { version: 2 }
        );
    }

    #[test]
    fn start_with_a_bad_or_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policies.json");
        assert!(matches!(
            PolicyManager::from_file(&path, 0),
            Err(PolicyFileError::Read { .. })
        ));
        std::fs::write(&path, BAD_USERS).unwrap();
        assert!(matches!(
            PolicyManager::from_file(&path, 0),
            Err(PolicyFileError::Invalid { .. })
        ));
        let huge = vec![b' '; POLICY_DOCUMENT_BYTES_MAX + 1];
        std::fs::write(&path, huge).unwrap();
        assert!(matches!(
            PolicyManager::from_file(&path, 0),
            Err(PolicyFileError::TooLarge { .. })
        ));
    }

    /// Polls for up to 10 s (counted in sleeps: tests outside `server/` read no clock).
    fn wait_for(m: &PolicyManager, version: u64) -> bool {
        for _ in 0..2_000 {
            if m.current().version == version {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn watcher_reloads_on_change_and_survives_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policies.json");
        std::fs::write(&path, document(&["a"])).unwrap();
        let m = Arc::new(PolicyManager::from_file(&path, 0).unwrap());
        let watcher = spawn_watcher(Arc::clone(&m), Duration::from_millis(10), || 42)
            .unwrap()
            .unwrap();

        std::fs::write(&path, document(&["a", "b"])).unwrap();
        assert!(wait_for(&m, 2), "watcher did not load the change");
        assert_eq!(m.current().loaded_at_secs, 42);

        std::fs::write(&path, BAD_USERS).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(m.current().version, 2);

        std::fs::write(&path, document(&["c"])).unwrap();
        assert!(wait_for(&m, 3), "watcher did not recover after a bad file");
        watcher.stop();
    }

    #[test]
    fn no_watcher_without_a_file() {
        let m = Arc::new(PolicyManager::empty());
        assert!(
            spawn_watcher(m, Duration::from_millis(10), || 0)
                .unwrap()
                .is_none()
        );
    }
}
