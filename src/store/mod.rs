//! The session store: sharded WAL + in-memory table + memory-mapped rkyv segments
//! (DESIGN §3–§4, format in `docs/store-format.md`). It also keeps revocation events durable
//! (DESIGN §6) as records of their own kind, and converts stores of older formats at open.
//!
//! Writes are serialized and validated on the caller's thread, then handed to the writer thread
//! of their WAL group, which encodes and checksums the batch's WAL records, appends them with
//! one write, fsyncs once, publishes the batch to the shards' in-memory tables and only then
//! acknowledges: a reader never sees a write that
//! is not durable. Reads load each shard's state through an `ArcSwap` and never take a lock.
//!
//! Invariant: `store` knows nothing of HTTP, JSON or the clock; time comes in as `now_secs`
//! (or, for the background compactor, through the injected [`Clock`]).

pub mod dir;
pub mod error;
pub mod format;
pub mod inspect;
pub mod keys;
pub mod mapped;
pub mod model;
pub mod segment;
#[doc(hidden)]
pub mod testutil;
pub mod wal;

mod compact;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;

pub use error::{SegmentError, StoreError, WalRecordError};
pub use keys::{Keys, RecordKey};
pub use mapped::{
    ArtifactRef as ArtifactView, RevocationRef as RevocationView, SessionRef as SessionView,
};
pub use model::{
    ArtifactDigest, ArtifactKind, ArtifactRecord, ArtifactState, ClientAuthMethod,
    DeviceCompliance, RevocationRecord, RiskLevel, SessionIdentity, SessionIdentityRef,
    SessionSnapshot, TokenTemplate,
};
pub use wal::{StdWalBackend, WalBackend, WalFile};

use crate::limits;
use format::{DiskArtifact, DiskRevocation, DiskSession, FORMAT_VERSION, kind};
use mapped::RecordBytes;
use segment::{Found, Segment};

/// Unix seconds now. Injected so the store never reads the clock itself.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Who runs compaction.
#[derive(Clone)]
pub enum Compaction {
    /// Only explicit [`Store::compact`] calls (tests, tools).
    Manual,
    /// A background thread checks every second and compacts a WAL group when its in-memory
    /// tables exceed `memtable_bytes_max`, or every `compact_age_secs` while they are non-empty
    /// or one of its segments holds records that have expired.
    Background {
        /// Source of `now` for expiry during background compaction.
        clock: Clock,
    },
}

/// Options of [`Store::open`]. Bounds and defaults live in `limits`.
#[derive(Clone)]
pub struct StoreOpts {
    /// Shards (fixed at creation; `limits::STORE_SHARDS`).
    pub shard_count: u32,
    /// WAL writer groups (`limits::STORE_WAL_GROUPS`).
    pub wal_groups: u32,
    /// In-memory bytes per WAL group that trigger background compaction.
    pub memtable_bytes_max: u64,
    /// Seconds a non-empty in-memory table may wait for background compaction.
    pub compact_age_secs: u64,
    /// Segment bytes up to which open validates everything before serving; above it,
    /// validation runs in the background (`limits::STORE_SEGMENT_FOREGROUND_VALIDATE_BYTES_MAX`).
    pub validate_foreground_bytes_max: u64,
    /// Manual or background compaction.
    pub compaction: Compaction,
    /// How WAL files are written (fault injection in tests).
    pub wal_backend: Arc<dyn WalBackend>,
}

impl StoreOpts {
    /// Defaults from `limits`, with compaction only on request.
    pub fn manual() -> Self {
        StoreOpts {
            shard_count: limits::STORE_SHARDS.default as u32,
            wal_groups: limits::STORE_WAL_GROUPS.default as u32,
            memtable_bytes_max: limits::STORE_MEMTABLE_BYTES.default,
            compact_age_secs: limits::STORE_COMPACT_AGE_SECS.default,
            validate_foreground_bytes_max: limits::STORE_SEGMENT_FOREGROUND_VALIDATE_BYTES_MAX,
            compaction: Compaction::Manual,
            wal_backend: Arc::new(StdWalBackend),
        }
    }

    /// Defaults from `limits`, with background compaction reading time from `clock`.
    pub fn background(clock: Clock) -> Self {
        StoreOpts {
            compaction: Compaction::Background { clock },
            ..StoreOpts::manual()
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        let checks = [
            (
                "shard_count",
                u64::from(self.shard_count),
                limits::STORE_SHARDS,
            ),
            (
                "wal_groups",
                u64::from(self.wal_groups),
                limits::STORE_WAL_GROUPS,
            ),
            (
                "memtable_bytes_max",
                self.memtable_bytes_max,
                limits::STORE_MEMTABLE_BYTES,
            ),
            (
                "compact_age_secs",
                self.compact_age_secs,
                limits::STORE_COMPACT_AGE_SECS,
            ),
        ];
        for (field, value, b) in checks {
            if !b.allows(value) {
                return Err(StoreError::OptionOutOfRange {
                    field,
                    value,
                    min: b.min,
                    max: b.max,
                });
            }
        }
        Ok(())
    }
}

/// Something recovery or validation found and acted on; also logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryEvent {
    /// A WAL file had a torn or corrupt tail, cut at the last good record.
    WalTruncated {
        /// The file.
        path: PathBuf,
        /// Bytes kept (the file's new length).
        good_bytes: u64,
        /// Bytes dropped.
        dropped_bytes: u64,
        /// Why the first dropped record was refused.
        reason: String,
    },
    /// A WAL file whose header never became durable (crash at creation) was removed.
    WalHeaderTorn {
        /// The file.
        path: PathBuf,
    },
    /// A segment failed validation and was moved to `quarantine/`.
    SegmentQuarantined {
        /// Where it is now.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A leftover file of an interrupted compaction was removed.
    StaleFileRemoved {
        /// The file.
        path: PathBuf,
    },
}

/// Counters and sizes for `/admin/store` and `inspect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Shards.
    pub shard_count: u32,
    /// WAL groups.
    pub wal_groups: u32,
    /// WAL backend in use.
    pub wal_backend: &'static str,
    /// Entries in the in-memory tables (including tombstones).
    pub memtable_records: u64,
    /// Approximate bytes in the in-memory tables.
    pub memtable_bytes: u64,
    /// Live segment files.
    pub segments: u64,
    /// Records in live segments.
    pub segment_records: u64,
    /// Revocation events among them.
    pub segment_revocations: u64,
    /// Bytes of live segments.
    pub segment_bytes: u64,
    /// Segments moved to quarantine since open (including at open).
    pub quarantined_segments: u64,
    /// Reads that found a record failing its checksum (served as missing).
    pub corrupt_reads: u64,
    /// WAL files whose tail was truncated at open.
    pub wal_truncations: u64,
    /// Compactions completed since open.
    pub compactions: u64,
    /// Groups that stopped taking writes after an I/O error: (group, description).
    pub failed_groups: Vec<(u32, String)>,
    /// Segments opened at start still waiting for (or in) background validation. They serve
    /// meanwhile, each read proving its record by rkyv's checked access and its checksum.
    pub validation_pending_segments: u64,
    /// Bytes of records those segments have left to validate.
    pub validation_pending_bytes: u64,
}

/// One in-memory table entry: a proven record, or a tombstone.
struct MemValue {
    rec: Option<RecordBytes>,
    bytes: u64,
}

type MemEntry = Arc<MemValue>;

/// What a shard serves: recent writes over the segments (newest first).
#[derive(Clone, Default)]
struct ShardState {
    mem: imbl::HashMap<u128, MemEntry>,
    mem_bytes: u64,
    segments: Vec<Arc<Segment>>,
}

struct Shard {
    state: ArcSwap<ShardState>,
    /// Serializes the writer's publish and compaction's install; readers never take it.
    modify: Mutex<()>,
}

#[derive(Default)]
struct GroupState {
    /// Set once on the first write or fsync error; never cleared while open.
    failed: OnceLock<(&'static str, String)>,
}

/// What the writers, the compactor and the readers share.
struct Core {
    dir: PathBuf,
    keys: Keys,
    shard_count: u32,
    group_count: u32,
    shards: Vec<Shard>,
    groups: Vec<GroupState>,
    next_generation: AtomicU64,
    compact_lock: Mutex<()>,
    quarantined: AtomicU64,
    corrupt_reads: AtomicU64,
    wal_truncations: AtomicU64,
    compactions: AtomicU64,
    backend: Arc<dyn WalBackend>,
    report: Mutex<Vec<RecoveryEvent>>,
    validation: Validation,
    _lock: dir::DirLock,
}

/// Progress of the background validation of the segments opened at start
/// (`compact::validate_in_background`), and its stop flag.
#[derive(Default)]
struct Validation {
    pending_segments: AtomicU64,
    pending_bytes: AtomicU64,
    /// Set by `Store`'s drop: the validator stops between records, so closing a store does
    /// not wait for gigabytes of checksums.
    stop: AtomicBool,
}

impl Core {
    fn shard(&self, key: RecordKey) -> Option<&Shard> {
        self.shards.get(key.shard(self.shard_count) as usize)
    }

    fn group_of(&self, shard: u32) -> u32 {
        shard % self.group_count
    }

    fn next_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    fn record_event(&self, e: RecoveryEvent) {
        tracing::warn!(event = ?e, "store recovery");
        if let Ok(mut r) = self.report.lock() {
            r.push(e);
        }
    }

    /// The newest visible record for `key`: the in-memory table first, then segments newest
    /// first. A tombstone or a corrupt record ends the search with nothing: falling through to
    /// an older segment could resurrect a superseded record.
    fn lookup(&self, key: RecordKey) -> Option<RecordBytes> {
        let shard = self.shard(key)?;
        let st = shard.state.load();
        // After a compaction the table is usually empty: skip hashing into it.
        if !st.mem.is_empty()
            && let Some(v) = st.mem.get(&key.0)
        {
            return v.rec.clone();
        }
        for seg in st.segments.iter() {
            match seg.find(key) {
                Found::Record(r) => return Some(r),
                Found::Absent => {}
                Found::Corrupt => {
                    self.corrupt_reads.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        None
    }
}

/// A queued write: the proven record (`None` for a tombstone). The writer encodes its WAL
/// bytes straight into the batch buffer, which spares the producer a copy and an allocation.
struct WriteOp {
    shard: u32,
    key: RecordKey,
    rec: Option<RecordBytes>,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

enum WriterMsg {
    Write(WriteOp),
    /// Start a new WAL generation; answers with it. Everything queued before is durable and
    /// published when the answer arrives.
    Rotate(std::sync::mpsc::SyncSender<Result<u64, StoreError>>),
}

/// The handle shared by the API and the background compactor.
#[derive(Clone)]
struct Engine {
    core: Arc<Core>,
    senders: Vec<tokio::sync::mpsc::Sender<WriterMsg>>,
}

/// An open session store. Dropping it stops the compactor, drains the writers and releases the
/// data-dir lock (if put futures are still alive, the writers and the lock outlive the handle
/// until those futures complete or are dropped).
pub struct Store {
    engine: Engine,
    writers: Vec<JoinHandle<()>>,
    compactor: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
    validators: Vec<JoinHandle<()>>,
}

fn check_len(field: &'static str, s: &str) -> Result<(), StoreError> {
    if s.len() > limits::STORE_IDENTIFIER_BYTES_MAX {
        return Err(StoreError::TooLarge {
            field,
            found: s.len(),
            limit: limits::STORE_IDENTIFIER_BYTES_MAX,
            limit_name: "STORE_IDENTIFIER_BYTES_MAX",
        });
    }
    Ok(())
}

fn check_template(field: &'static str, t: &TokenTemplate) -> Result<(), StoreError> {
    if t.claims_json.len() > limits::STORE_TEMPLATE_BYTES_MAX {
        return Err(StoreError::TooLarge {
            field,
            found: t.claims_json.len(),
            limit: limits::STORE_TEMPLATE_BYTES_MAX,
            limit_name: "STORE_TEMPLATE_BYTES_MAX",
        });
    }
    Ok(())
}

fn check_snapshot(s: &SessionSnapshot) -> Result<(), StoreError> {
    let id = &s.identity;
    check_len("tenant", &id.tenant)?;
    check_len("user", &id.user)?;
    check_len("device", &id.device)?;
    check_len("app", &id.app)?;
    check_len("resource", &id.resource)?;
    check_template("access_token.claims_json", &s.access_token)?;
    if let Some(t) = &s.id_token {
        check_template("id_token.claims_json", t)?;
    }
    Ok(())
}

/// Checks a fresh serialization against the record size limit and proves it (bytecheck).
fn prepared(kind_byte: u8, b: rkyv::util::AlignedVec) -> Result<Option<RecordBytes>, StoreError> {
    let max = limits::STORE_RECORD_BYTES_MAX as usize - wal::PAYLOAD_FIXED_BYTES;
    if b.len() > max {
        return Err(StoreError::TooLarge {
            field: "record",
            found: b.len(),
            limit: max,
            limit_name: "STORE_RECORD_BYTES_MAX",
        });
    }
    let what = match kind_byte {
        kind::SESSION => "session",
        kind::ARTIFACT => "artifact",
        _ => "revocation",
    };
    // Proving our own serialization costs a bytecheck pass per write, off the read path, and
    // makes every in-memory record reach readers through the same proof.
    RecordBytes::check_owned(kind_byte, b)
        .map(Some)
        .ok_or(StoreError::Encode {
            what,
            reason: "serialized bytes failed validation".into(),
        })
}

/// Proves the body of a WAL record written by format `version`: a current-format body by
/// rkyv's checked access, an older one by converting it first (`format::upgrade_record`, which
/// reads the old archive through checked access too). `None` if either fails.
fn proven_wal_body(version: u32, kind_byte: u8, body: &[u8]) -> Option<RecordBytes> {
    let aligned = segment::aligned_copy(body);
    if version == FORMAT_VERSION {
        RecordBytes::check_owned(kind_byte, aligned)
    } else {
        let converted = format::upgrade_record(version, kind_byte, &aligned).ok()?;
        RecordBytes::check_owned(kind_byte, converted)
    }
}

fn check_revocation(r: &RevocationRecord) -> Result<(), StoreError> {
    check_len("revocation.id", &r.id)?;
    check_len("revocation.subject", &r.subject)
}

fn encode_artifact(a: &ArtifactRecord) -> Result<Option<RecordBytes>, StoreError> {
    [
        ("tenant", &a.tenant),
        ("user", &a.user),
        ("device", &a.device),
        ("app", &a.app),
        ("resource", &a.resource),
        ("family", &a.family),
    ]
    .into_iter()
    .try_for_each(|(f, v)| check_len(f, v))?;
    let body =
        rkyv::to_bytes::<rkyv::rancor::Error>(&DiskArtifact::from_record(a)).map_err(|e| {
            StoreError::Encode {
                what: "artifact",
                reason: e.to_string(),
            }
        })?;
    prepared(kind::ARTIFACT, body)
}

/// A record serialized, size-checked and proven (bytecheck) for [`Store::bulk_load`]: built by
/// [`Store::bulk_session`] or [`Store::bulk_artifact`] on any thread, as a put would on its
/// caller's thread.
pub struct BulkRecord {
    key: RecordKey,
    rec: RecordBytes,
}

impl BulkRecord {
    /// The routing key.
    pub fn key(&self) -> RecordKey {
        self.key
    }

    /// Bytes of the archived record.
    pub fn len_bytes(&self) -> usize {
        self.rec.bytes().len()
    }
}

fn bulk(
    key: RecordKey,
    rec: Result<Option<RecordBytes>, StoreError>,
) -> Result<BulkRecord, StoreError> {
    // `prepared` returns `Some` for every record; `None` is a tombstone, which a bulk load
    // does not take.
    rec?.map(|rec| BulkRecord { key, rec })
        .ok_or(StoreError::Encode {
            what: "bulk record",
            reason: "no record".into(),
        })
}

fn encode_session(d: &DiskSession) -> Result<Option<RecordBytes>, StoreError> {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(d).map_err(|e| StoreError::Encode {
        what: "session",
        reason: e.to_string(),
    })?;
    prepared(kind::SESSION, body)
}

impl Store {
    /// Opens (or creates) the store in `dir`: takes the lock, checks the format version,
    /// loads or generates the secrets, opens segments (quarantining bad ones), replays WAL
    /// tails (truncating torn ones), and starts the writer threads.
    pub fn open(dir: &Path, opts: StoreOpts) -> Result<Store, StoreError> {
        opts.check()?;
        compact::open(dir, opts)
    }

    /// What recovery found at open and what validation found since.
    pub fn recovery_report(&self) -> Vec<RecoveryEvent> {
        self.engine
            .core
            .report
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// The keyed digest of a raw credential (the raw value is not kept).
    pub fn artifact_digest(&self, kind: ArtifactKind, raw: &[u8]) -> ArtifactDigest {
        self.engine.core.keys.artifact_digest(kind, raw)
    }

    /// The routing key of a session (for `inspect` and tests).
    pub fn session_key(&self, id: &SessionIdentity) -> RecordKey {
        self.engine.core.keys.session_key(id)
    }

    fn submit(
        &self,
        key: RecordKey,
        prepared: Result<Option<RecordBytes>, StoreError>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static + use<> {
        let shard = key.shard(self.engine.core.shard_count);
        let group = self.engine.core.group_of(shard) as usize;
        let tx = self.engine.senders.get(group).cloned();
        async move {
            let rec = prepared?;
            let tx = tx.ok_or(StoreError::Closed)?;
            let (done, rx) = tokio::sync::oneshot::channel();
            tx.send(WriterMsg::Write(WriteOp {
                shard,
                key,
                rec,
                done,
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Records a snapshot. The future resolves once the write is durable (its WAL batch was
    /// fsynced) and visible to readers; it replaces any earlier snapshot of the same identity.
    pub fn put_session(
        &self,
        s: &SessionSnapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static + use<> {
        let key = self.engine.core.keys.session_key(&s.identity);
        let prepared =
            check_snapshot(s).and_then(|()| encode_session(&DiskSession::from_snapshot(s)));
        self.submit(key, prepared)
    }

    /// [`Store::put_session`] for a snapshot the caller no longer needs: its strings move into
    /// the record instead of being copied (the cheaper path for capture).
    pub fn put_session_owned(
        &self,
        s: SessionSnapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static + use<> {
        let key = self.engine.core.keys.session_key(&s.identity);
        let prepared =
            check_snapshot(&s).and_then(|()| encode_session(&DiskSession::from_owned(s)));
        self.submit(key, prepared)
    }

    /// Records an artifact. Resolves once durable and visible.
    pub fn put_artifact(
        &self,
        a: &ArtifactRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static + use<> {
        let key = keys::artifact_key(&a.digest);
        self.submit(key, encode_artifact(a))
    }

    /// The shard a routing key lives in (what [`Store::bulk_load`] groups by).
    pub fn shard_of(&self, key: RecordKey) -> u32 {
        key.shard(self.engine.core.shard_count)
    }

    /// Shards of this store (fixed at creation).
    pub fn shard_count(&self) -> u32 {
        self.engine.core.shard_count
    }

    /// Serializes, checks and proves a snapshot for [`Store::bulk_load`] (the same checks as
    /// [`Store::put_session_owned`]). Pure CPU: call it from as many threads as there are cores.
    pub fn bulk_session(&self, s: SessionSnapshot) -> Result<BulkRecord, StoreError> {
        let key = self.engine.core.keys.session_key(&s.identity);
        check_snapshot(&s)?;
        bulk(key, encode_session(&DiskSession::from_owned(s)))
    }

    /// Serializes, checks and proves an artifact for [`Store::bulk_load`] (the same checks as
    /// [`Store::put_artifact`]).
    pub fn bulk_artifact(&self, a: &ArtifactRecord) -> Result<BulkRecord, StoreError> {
        bulk(keys::artifact_key(&a.digest), encode_artifact(a))
    }

    /// Loads many records at once, bypassing the WAL: a compaction of every WAL group the
    /// records route to, with each shard's records merged into its new segment (written
    /// `tmp` → fsync → rename → fsync dir, then mapped and validated in full before it serves).
    /// Returns once every touched shard's segment is durable and serving.
    ///
    /// Order: bulk records replace what the segments held, but sit *under* the in-memory
    /// table, so a put not yet compacted keeps its value (in memory now, and after a crash,
    /// when its WAL record replays over the new segment). Within `records` the last of a key
    /// wins. Records expired at `now_secs` are dropped, as compaction drops them.
    ///
    /// Not atomic across shards: a crash part-way leaves the shards whose segment was renamed
    /// loaded and the others as they were (each shard is all or nothing). Cost: every touched
    /// shard's segment is rewritten, so load a shard's records in one call (group them with
    /// [`Store::shard_of`]) rather than in many small ones. Blocks the calling thread (inside
    /// an async runtime, call it through `spawn_blocking`).
    pub fn bulk_load(&self, records: Vec<BulkRecord>, now_secs: i64) -> Result<(), StoreError> {
        self.engine.bulk_load(records, now_secs)
    }

    /// Supersedes the session of `id`: later reads find nothing until a new put.
    pub fn remove_session(
        &self,
        id: &SessionIdentity,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static + use<> {
        let key = self.engine.core.keys.session_key(id);
        self.submit(key, Ok(None))
    }

    /// Supersedes the artifact `digest` (e.g. a rotated-out refresh token).
    pub fn remove_artifact(
        &self,
        digest: &ArtifactDigest,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static + use<> {
        let key = keys::artifact_key(digest);
        self.submit(key, Ok(None))
    }

    /// The snapshot of exactly `id`, if one is recorded and not expired at `now_secs`.
    /// Zero-copy: the view borrows the mapped (or in-memory) record and keeps it alive.
    pub fn get_session(&self, id: &SessionIdentity, now_secs: i64) -> Option<SessionView> {
        let key = self.engine.core.keys.session_key(id);
        let s = self.engine.core.lookup(key)?.into_session()?;
        // Hash to find, compare to match: a key collision never returns another session.
        (s.is_identity(id) && s.expires_at_secs() > now_secs).then_some(s)
    }

    /// [`Store::get_session`] for a borrowed identity; also returns the session's routing key
    /// (for the audit record), computed once.
    pub fn get_session_ref(
        &self,
        id: &SessionIdentityRef<'_>,
        now_secs: i64,
    ) -> (RecordKey, Option<SessionView>) {
        let key = self.engine.core.keys.session_key_ref(id);
        let found = self
            .engine
            .core
            .lookup(key)
            .and_then(|r| r.into_session())
            .filter(|s| s.is_identity_ref(id) && s.expires_at_secs() > now_secs);
        (key, found)
    }

    /// The artifact record of exactly `digest` (compared in constant time), if not expired.
    pub fn get_artifact(&self, digest: &ArtifactDigest, now_secs: i64) -> Option<ArtifactView> {
        let key = keys::artifact_key(digest);
        let a = self.engine.core.lookup(key)?.into_artifact()?;
        (a.is_digest(digest) && a.expires_at_secs() > now_secs).then_some(a)
    }

    /// Follows `Superseded { successor }` links from `digest`, at most `max_hops` of them, and
    /// returns the first record that is not superseded (current or revoked): the credential
    /// that now stands for `digest`'s session, e.g. to revoke a whole refresh-token family when
    /// the primary refuses a rotated-out token. `None` if a link leads to a missing or expired
    /// record, or the chain is longer than `max_hops` (which also ends any cycle).
    pub fn artifact_chain_current(
        &self,
        digest: &ArtifactDigest,
        now_secs: i64,
        max_hops: u32,
    ) -> Option<ArtifactView> {
        let mut at = *digest;
        for _ in 0..=max_hops {
            let a = self.get_artifact(&at, now_secs)?;
            match a.state() {
                ArtifactState::Superseded { successor } => at = successor,
                ArtifactState::Current | ArtifactState::Revoked => return Some(a),
            }
        }
        None
    }

    /// The routing key of a revocation event id (for `inspect` and tests).
    pub fn revocation_key(&self, id: &str) -> RecordKey {
        self.engine.core.keys.revocation_key(id)
    }

    /// Records a revocation event (DESIGN §6). The future resolves once the event is durable
    /// (its WAL batch was fsynced) and visible to [`Store::revocations`]. Idempotent by `id`:
    /// when the same event is already stored this is a success that writes nothing; a
    /// different event under a known id replaces it (last write wins). Dropped by compaction
    /// once `expires_at_secs` has passed.
    pub fn put_revocation(
        &self,
        ev: RevocationRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static + use<> {
        let key = self.engine.core.keys.revocation_key(&ev.id);
        // Already stored as is: nothing to write. What the lookup sees is durable (readers
        // never see an unacknowledged write), so the caller may treat it as acknowledged.
        let stored = self
            .engine
            .core
            .lookup(key)
            .and_then(RecordBytes::into_revocation)
            .is_some_and(|r| r.is_id(&ev.id) && r.to_record() == ev);
        let write = (!stored).then(|| {
            let prepared = check_revocation(&ev).and_then(|()| {
                let body = rkyv::to_bytes::<rkyv::rancor::Error>(&DiskRevocation::from_record(&ev))
                    .map_err(|e| StoreError::Encode {
                        what: "revocation",
                        reason: e.to_string(),
                    })?;
                prepared(kind::REVOCATION, body)
            });
            self.submit(key, prepared)
        });
        async move {
            match write {
                Some(w) => w.await,
                None => Ok(()),
            }
        }
    }

    /// The revocation event `id`, if stored and not expired at `now_secs`.
    pub fn get_revocation(&self, id: &str, now_secs: i64) -> Option<RevocationView> {
        let key = self.engine.core.keys.revocation_key(id);
        let r = self.engine.core.lookup(key)?.into_revocation()?;
        (r.is_id(id) && r.expires_at_secs() > now_secs).then_some(r)
    }

    /// Every revocation event the store holds: what the server replays into its in-memory
    /// filter at start. Events whose `expires_at_secs` has passed are included until a
    /// compaction drops them (the store has no clock; [`Store::revocations_live`] filters by
    /// one). In no particular order: replaying them in any order builds the same filter.
    ///
    /// Cost: the in-memory tables, plus, per segment that holds revocations, the slots its
    /// revocation directory names (O(events), each record proven as on any read). A segment
    /// without a directory (written before it existed) or with one that fails its checks is
    /// read by scanning its whole index instead. Meant for start-up, not the request path.
    pub fn revocations(&self) -> Vec<RevocationRecord> {
        self.revocations_where(|_| true)
    }

    /// [`Store::revocations`] without the events that have expired at `now_secs`.
    pub fn revocations_live(&self, now_secs: i64) -> Vec<RevocationRecord> {
        self.revocations_where(|r| r.expires_at_secs() > now_secs)
    }

    fn revocations_where(
        &self,
        keep: impl Fn(&format::ArchivedDiskRevocation) -> bool,
    ) -> Vec<RevocationRecord> {
        let mut out = Vec::new();
        for shard in &self.engine.core.shards {
            let st = shard.state.load();
            // Newest first: the in-memory table, then segments newest to oldest. A key seen
            // once (record or tombstone) hides every older record of it.
            let mut seen: std::collections::HashSet<u128> = std::collections::HashSet::new();
            for (k, v) in st.mem.iter() {
                seen.insert(*k);
                if let Some(r) = v.rec.clone().and_then(RecordBytes::into_revocation)
                    && keep(&r)
                {
                    out.push(r.to_record());
                }
            }
            for seg in st.segments.iter() {
                if seg.header().revocation_count == 0 {
                    continue;
                }
                for (k, rec) in seg.revocation_records() {
                    if !seen.insert(k.0) {
                        continue;
                    }
                    if let Some(r) = rec.into_revocation()
                        && keep(&r)
                    {
                        out.push(r.to_record());
                    }
                }
            }
        }
        out
    }

    /// Compacts every WAL group now: in-memory tables and segments merge into one new segment
    /// per shard, expired (at `now_secs`) and superseded records dropped, and the WAL files
    /// the new segments cover deleted. Blocks the calling thread for the duration (inside an
    /// async runtime, call it through `spawn_blocking`).
    pub fn compact(&self, now_secs: i64) -> Result<(), StoreError> {
        for g in 0..self.engine.core.group_count {
            self.engine.compact_group(g, now_secs)?;
        }
        Ok(())
    }

    /// Waits for background validation of large segments opened at start (a drop of the
    /// store instead stops it).
    pub fn wait_validated(&mut self) {
        for h in self.validators.drain(..) {
            let _ = h.join();
        }
    }

    /// Counters and sizes.
    pub fn stats(&self) -> StoreStats {
        let core = &self.engine.core;
        let mut st = StoreStats {
            shard_count: core.shard_count,
            wal_groups: core.group_count,
            wal_backend: core.backend.name(),
            quarantined_segments: core.quarantined.load(Ordering::Relaxed),
            corrupt_reads: core.corrupt_reads.load(Ordering::Relaxed),
            wal_truncations: core.wal_truncations.load(Ordering::Relaxed),
            compactions: core.compactions.load(Ordering::Relaxed),
            validation_pending_segments: core.validation.pending_segments.load(Ordering::Relaxed),
            validation_pending_bytes: core.validation.pending_bytes.load(Ordering::Relaxed),
            ..StoreStats::default()
        };
        for shard in &core.shards {
            let s = shard.state.load();
            st.memtable_records += s.mem.len() as u64;
            st.memtable_bytes += s.mem_bytes;
            for seg in s.segments.iter().filter(|s| !s.is_failed()) {
                st.segments += 1;
                st.segment_records += seg.header().record_count;
                st.segment_revocations += seg.header().revocation_count;
                st.segment_bytes += seg.bytes_len();
            }
        }
        for (i, g) in core.groups.iter().enumerate() {
            if let Some((op, detail)) = g.failed.get() {
                st.failed_groups.push((i as u32, format!("{op}: {detail}")));
            }
        }
        st
    }

    /// Stops background work and writers, waiting for queued writes to finish.
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.engine
            .core
            .validation
            .stop
            .store(true, Ordering::Relaxed);
        if let Some((stop, h)) = self.compactor.take() {
            let _ = stop.send(());
            let _ = h.join();
        }
        // A put future that was created but not yet completed holds a sender clone; joining
        // the writers would then wait for it forever. In that case the writers are left to
        // finish on their own once those futures complete or drop (they hold the data-dir lock
        // until then).
        let outstanding = self.engine.senders.iter().any(|s| s.strong_count() > 1);
        self.engine.senders.clear();
        if outstanding {
            tracing::warn!(
                "store dropped with writes in flight; writer threads finish them in the background"
            );
            self.writers.clear();
        }
        for h in self.writers.drain(..) {
            let _ = h.join();
        }
        for h in self.validators.drain(..) {
            let _ = h.join();
        }
    }
}

/// Groups WAL replay output per shard before the shards exist.
type Replayed = HashMap<u32, imbl::HashMap<u128, MemEntry>>;
