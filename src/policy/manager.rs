//! The current policy set and how it changes: loaded from the `[policy] file` at start,
//! replaced whole through the admin API (`PUT /admin/policies`), reloaded on SIGHUP or by a
//! watcher thread when the file changes. Every change is validated first; a bad document keeps
//! the previous version and says why (the JSON path). Readers on the request path take the
//! current [`Versioned`] set with one lock-free `ArcSwap` load.
//!
//! A document accepted through the admin API is saved durably (temp file, fsync, rename,
//! directory fsync) *before* it is published and the operator gets their 200, so a block put
//! during an incident survives a crash or restart. At start the saved document is restored
//! unless the policy file changed since it was saved: whichever of the two the operator
//! changed last wins. A file reload (watcher, SIGHUP) that publishes the file forgets it.
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
    /// An admin-API document could not be saved durably, so it was not published.
    #[error("cannot save the policy document to {path}: {source}")]
    Save {
        /// The file it was being saved to.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The saved admin-API document is unreadable or invalid (the server refuses to start
    /// rather than silently drop a policy an operator put).
    #[error(
        "saved admin-API policy document {path}: {reason}; remove the file to start from `[policy] file` (a block put through PUT /admin/policies is then lost)"
    )]
    Saved {
        /// The saved document's file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
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
    /// Where an admin-API document is saved (`None`: kept in memory only, for tests and tools).
    saved: Option<PathBuf>,
    /// Serializes changes; holds the SHA-256 of the policy file as last read (what a saved
    /// admin-API document is compared against at the next start).
    writer: std::sync::Mutex<Option<String>>,
}

/// The on-disk form of a saved admin-API document (`{data_dir}/policy/admin-api.json`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedDocument {
    /// Format of this file; 1.
    format: u32,
    /// When the document was accepted, Unix seconds.
    saved_at: i64,
    /// SHA-256 of the policy file when the document was accepted (`None`: no file was read).
    file_sha256: Option<String>,
    /// The document, byte for byte as the operator put it (JSON text).
    document: String,
}

/// File name of the saved admin-API document inside its directory.
pub const SAVED_DOCUMENT_FILE: &str = "admin-api.json";

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
            saved: None,
            writer: std::sync::Mutex::new(None),
        }
    }

    /// A manager loaded from the configured policy file. At start a bad file is an error
    /// (the server refuses to start, exit 2); later reloads keep the previous version instead.
    /// Admin-API documents are kept in memory only: the server uses [`PolicyManager::open`].
    pub fn from_file(path: &Path, now_secs: i64) -> Result<Self, PolicyFileError> {
        let mut manager = Self::empty();
        manager.file = Some(path.to_path_buf());
        manager.load_file(path, now_secs)?;
        Ok(manager)
    }

    /// The server's manager: `file` is `[policy] file` (if any); admin-API documents are saved
    /// in `saved_dir` (created mode 0700 when first needed). A document saved there is
    /// restored when the policy file is unchanged since it was saved (or none is configured);
    /// otherwise the file, changed later, wins and the saved document is removed. A bad file
    /// or an unreadable saved document is an error: the server refuses to start.
    pub fn open(
        file: Option<&Path>,
        saved_dir: &Path,
        now_secs: i64,
    ) -> Result<Self, PolicyFileError> {
        let mut manager = Self::empty();
        manager.file = file.map(Path::to_path_buf);
        let saved_path = saved_dir.join(SAVED_DOCUMENT_FILE);
        manager.saved = Some(saved_path.clone());
        let file_document = file.map(read_document).transpose()?;
        let file_sha256 = file_document.as_deref().map(sha256_hex);
        let restored = match read_saved(&saved_path)? {
            Some(saved) if file_sha256.is_none() || saved.file_sha256 == file_sha256 => Some(saved),
            Some(_) => {
                tracing::warn!(
                    saved = %saved_path.display(),
                    "the policy file changed after the admin-API document was saved: the file wins"
                );
                None
            }
            None => None,
        };
        *lock_writer(&manager.writer) = file_sha256;
        match (restored, file, file_document) {
            (Some(saved), _, _) => {
                let saved_at = saved.saved_at;
                manager
                    .publish(
                        saved.document.into_bytes(),
                        PolicyOrigin::AdminApi,
                        None,
                        saved_at,
                        false,
                    )
                    .map_err(|e| PolicyFileError::Saved {
                        path: saved_path.clone(),
                        reason: e.to_string(),
                    })?;
                tracing::warn!(
                    saved = %saved_path.display(),
                    "policies restored from the document last put through the admin API"
                );
            }
            (None, Some(path), Some(document)) => {
                manager.publish(
                    document,
                    PolicyOrigin::File(path.to_path_buf()),
                    None,
                    now_secs,
                    false,
                )?;
                manager.forget_saved();
            }
            (None, _, _) => manager.forget_saved(),
        }
        Ok(manager)
    }

    /// SHA-256 of the policy file as last read (`None` when none was read).
    pub fn file_sha256(&self) -> Option<String> {
        lock_writer(&self.writer).clone()
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
                true,
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
        self.publish(
            document.to_vec(),
            PolicyOrigin::AdminApi,
            None,
            now_secs,
            true,
        )
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
            true,
        )
    }

    /// Validates and publishes `document`. `persist`: an admin-API document is saved before it
    /// is published (and a published file forgets the saved one); `false` at start, where
    /// the document comes from one of those two places already.
    fn publish(
        &self,
        document: Vec<u8>,
        origin: PolicyOrigin,
        expected_version: Option<u64>,
        now_secs: i64,
        persist: bool,
    ) -> Result<ReloadOutcome, PolicyFileError> {
        let mut file_sha256 = lock_writer(&self.writer);
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
        if let PolicyOrigin::File(_) = origin {
            *file_sha256 = Some(sha256.clone());
        }
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
        if persist {
            match origin {
                PolicyOrigin::AdminApi => self.save(&document, file_sha256.clone(), now_secs)?,
                PolicyOrigin::File(_) => self.forget_saved(),
                PolicyOrigin::Empty => {}
            }
        }
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

    /// Saves an admin-API document durably: temp file, fsync, rename, directory fsync.
    fn save(
        &self,
        document: &[u8],
        file_sha256: Option<String>,
        now_secs: i64,
    ) -> Result<(), PolicyFileError> {
        let Some(path) = &self.saved else {
            return Ok(());
        };
        let save_err = |source| PolicyFileError::Save {
            path: path.clone(),
            source,
        };
        let document = std::str::from_utf8(document)
            .map_err(|e| save_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let bytes = serde_json::to_vec(&SavedDocument {
            format: 1,
            saved_at: now_secs,
            file_sha256,
            document: document.to_owned(),
        })
        .map_err(|e| save_err(std::io::Error::other(e)))?;
        write_durably(path, &bytes).map_err(save_err)
    }

    /// Removes the saved admin-API document (the file is current again). A failure is only
    /// logged: the saved document names the file's old hash, so it is not restored anyway.
    fn forget_saved(&self) {
        let Some(path) = &self.saved else {
            return;
        };
        match std::fs::remove_file(path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot remove the saved admin-API policy document"
            ),
        }
    }
}

/// A poisoned lock only means another writer panicked between swaps; the published value is
/// always whole, so carrying on is sound.
fn lock_writer(m: &std::sync::Mutex<Option<String>>) -> std::sync::MutexGuard<'_, Option<String>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `bytes` to `path` so that after a crash the file holds either its old or its new
/// content, never a mix: `path.tmp`, fsync, rename, fsync of the directory (created 0700).
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the saved admin-API document, `None` when there is none.
fn read_saved(path: &Path) -> Result<Option<SavedDocument>, PolicyFileError> {
    let saved_err = |reason: String| PolicyFileError::Saved {
        path: path.to_path_buf(),
        reason,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(saved_err(e.to_string())),
    };
    // JSON string escaping at most sextuples a byte (`\u00XX`); bound the read accordingly.
    let limit = u64::try_from(POLICY_DOCUMENT_BYTES_MAX)
        .unwrap_or(u64::MAX)
        .saturating_mul(6)
        .saturating_add(4096);
    let mut bytes = Vec::new();
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| saved_err(e.to_string()))?;
    let saved: SavedDocument = serde_json::from_slice(&bytes)
        .map_err(|e| saved_err(format!("not a saved document: {e}")))?;
    if saved.format != 1 {
        return Err(saved_err(format!("format {} is not 1", saved.format)));
    }
    if saved.document.len() > POLICY_DOCUMENT_BYTES_MAX {
        return Err(saved_err(format!(
            "document is over the {POLICY_DOCUMENT_BYTES_MAX}-byte limit"
        )));
    }
    Ok(Some(saved))
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
            // The file as the manager last read it: a restored admin-API document is current
            // while the file is unchanged, and must not be replaced by the unchanged file.
            let mut last_tried = manager.file_sha256().unwrap_or_default();
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

    fn ids(m: &PolicyManager) -> Vec<String> {
        let doc: serde_json::Value = serde_json::from_slice(&m.current().document).unwrap();
        doc["conditionalAccessPolicies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn admin_document_survives_a_restart_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policies.json");
        let saved = dir.path().join("data").join("policy");
        std::fs::write(&file, document(&["from-file"])).unwrap();
        let m = PolicyManager::open(Some(&file), &saved, 10).unwrap();
        assert_eq!(ids(&m), ["from-file"]);
        m.replace_from_json(&document(&["block-now"]), 20).unwrap();
        drop(m);
        // Restart: the file did not change, so the operator's later PUT is what is in force.
        let m = PolicyManager::open(Some(&file), &saved, 30).unwrap();
        assert_eq!(ids(&m), ["block-now"]);
        assert_eq!(m.current().origin, PolicyOrigin::AdminApi);
        assert_eq!(m.current().loaded_at_secs, 20);
        // And without any file configured.
        let m = PolicyManager::open(None, &saved, 30).unwrap();
        assert_eq!(ids(&m), ["block-now"]);
    }

    #[test]
    fn a_file_changed_after_the_admin_document_wins_at_restart_and_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policies.json");
        let saved = dir.path().join("policy");
        std::fs::write(&file, document(&["v1"])).unwrap();
        let m = PolicyManager::open(Some(&file), &saved, 10).unwrap();
        m.replace_from_json(&document(&["admin"]), 20).unwrap();
        drop(m);
        std::fs::write(&file, document(&["v2"])).unwrap();
        let m = PolicyManager::open(Some(&file), &saved, 30).unwrap();
        assert_eq!(ids(&m), ["v2"]);
        assert!(!saved.join(SAVED_DOCUMENT_FILE).exists());
    }

    #[test]
    fn a_file_reload_after_the_admin_document_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policies.json");
        let saved = dir.path().join("policy");
        std::fs::write(&file, document(&["v1"])).unwrap();
        let m = PolicyManager::open(Some(&file), &saved, 10).unwrap();
        m.replace_from_json(&document(&["admin"]), 20).unwrap();
        assert!(saved.join(SAVED_DOCUMENT_FILE).exists());
        std::fs::write(&file, document(&["v2"])).unwrap();
        m.reload_now(30).unwrap();
        assert_eq!(ids(&m), ["v2"]);
        assert!(!saved.join(SAVED_DOCUMENT_FILE).exists());
        drop(m);
        let m = PolicyManager::open(Some(&file), &saved, 40).unwrap();
        assert_eq!(ids(&m), ["v2"]);
    }

    #[test]
    fn a_corrupt_saved_document_refuses_to_start_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("policy");
        std::fs::create_dir_all(&saved).unwrap();
        let path = saved.join(SAVED_DOCUMENT_FILE);
        std::fs::write(&path, b"{\"format\":1,\"saved_at\":1,").unwrap();
        let err = PolicyManager::open(None, &saved, 0).unwrap_err();
        assert!(matches!(err, PolicyFileError::Saved { .. }), "{err}");
        assert!(err.to_string().contains("admin-api.json"), "{err}");
        // A saved document that is not a valid policy document is refused the same way.
        let bad = serde_json::json!({
            "format": 1, "saved_at": 1, "file_sha256": null,
            "document": std::str::from_utf8(BAD_USERS).unwrap(),
        });
        std::fs::write(&path, bad.to_string()).unwrap();
        let err = PolicyManager::open(None, &saved, 0).unwrap_err();
        assert!(err.to_string().contains("includeUsers"), "{err}");
    }

    #[test]
    fn an_admin_document_that_cannot_be_saved_is_not_published() {
        let dir = tempfile::tempdir().unwrap();
        // The temporary file's place is taken by a directory: writing it fails (as root too).
        let saved = dir.path().join("policy");
        std::fs::create_dir_all(saved.join("admin-api.json.tmp")).unwrap();
        let m = PolicyManager::open(None, &saved, 0).unwrap();
        let before = m.current().version;
        let err = m.replace_from_json(&document(&["x"]), 1).unwrap_err();
        assert!(matches!(err, PolicyFileError::Save { .. }), "{err}");
        assert_eq!(m.current().version, before);
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
