//! The audit log: one JSON line per decision that gives or refuses access, and per failover
//! event (breaker transition, operator mode change, ambiguous upstream failure), in size-rotated
//! files, written by one thread off the request path.
//!
//! A request never waits for the audit log: `AuditSink::record` is a `try_send` into a bounded
//! queue, and a full queue drops the record and counts it (`dropped`), so a slow disk cannot
//! turn into a slow token endpoint. A worker's backup decisions are batched on its thread
//! (`AuditSink::record_batched`) and handed over whenever the worker's runtime is about to
//! park (`flush_thread`), or once a batch is full: one queue slot per batch rather than per
//! record, since each slot of the large queue is a cache miss on both sides. Records carry identifiers and reasons only, never a token,
//! cookie or secret: the types below have no field that could hold one.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use serde::Serialize;

use crate::append::{escape_at, push_u64};

/// Name of the file being written; rotated ones are `audit.1.jsonl` (newest) and up.
pub const CURRENT_FILE: &str = "audit.jsonl";

/// One audit record: what happened, when (unix milliseconds), and the event's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Unix time in milliseconds, from the caller's clock.
    pub time_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// The events backstop audits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// A worker's circuit breaker changed state.
    BreakerTransition {
        /// The worker.
        worker: usize,
        /// State before.
        from: &'static str,
        /// State after.
        to: &'static str,
        /// What caused it (a failure label, `probe_succeeded`, ...).
        cause: &'static str,
    },
    /// The operator forced a mode (or handed it back to the breakers).
    ModeSet {
        /// Mode before (`auto`, `normal`, `outage`).
        from: &'static str,
        /// Mode after.
        to: &'static str,
    },
    /// A forwarded request failed after the primary may have acted on it: a refresh token it
    /// rotated may be lost to the client (DESIGN §1, known hazard).
    AmbiguousUpstreamFailure {
        /// The worker.
        worker: usize,
        /// The failure (`timeout`, `reset`, `server_error_500`, ...).
        failure: &'static str,
        /// The request path (never its query string).
        path: String,
    },
    /// The backup answered a token request (served or refused). Identifiers only: never a
    /// token, cookie or secret.
    BackupDecision {
        /// `(worker, n)`, written `w{worker}-{n}`: unique within this process run.
        #[serde(serialize_with = "serialize_request_id")]
        request_id: (usize, u64),
        /// The worker.
        worker: usize,
        /// The grant type as sent.
        grant_type: std::borrow::Cow<'static, str>,
        /// `client_id`, when known.
        client: String,
        /// The session's user, once the refresh token's record was found.
        user: String,
        /// The session's routing key (keyed hash, hex), once known.
        #[serde(serialize_with = "hex128")]
        session_key: Option<u128>,
        /// `served` or `refused`.
        decision: &'static str,
        /// `served`, or the machine reason of the refusal.
        reason: &'static str,
        /// The eligibility rule (1–5) that refused, when one did.
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<u8>,
        /// The refusing policy or revocation event, when one did.
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Why the backup answered: `breaker_open`, `forced_outage`, or the upstream failure.
        cause: &'static str,
        /// The primary may have acted on the request before failing (DESIGN §1 hazard).
        ambiguous: bool,
        /// Time from request head to decision, microseconds.
        latency_us: u64,
    },
}

/// A session key as 32 lowercase hex digits (empty when unknown), formatted on the writer
/// thread rather than the request path.
fn hex128<S: serde::Serializer>(key: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
    match key {
        Some(k) => s.collect_str(&format_args!("{k:032x}")),
        None => s.serialize_str(""),
    }
}

/// A request id as `w{worker}-{n}`, formatted on the writer thread.
fn serialize_request_id<S: serde::Serializer>(id: &(usize, u64), s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("w{}-{}", id.0, id.1))
}

impl AuditRecord {
    /// Appends the record as one JSON object, byte for byte what `serde_json::to_vec` makes of
    /// it (pinned by a test), without serde's flatten machinery: the writer thread encodes
    /// every backup decision, so at full load this is most of its work.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut obj = JsonObject::start(out);
        obj.u64("time_ms", self.time_ms);
        match &self.event {
            AuditEvent::BreakerTransition {
                worker,
                from,
                to,
                cause,
            } => {
                obj.str("event", "breaker_transition");
                obj.u64("worker", *worker as u64);
                obj.str("from", from);
                obj.str("to", to);
                obj.str("cause", cause);
            }
            AuditEvent::ModeSet { from, to } => {
                obj.str("event", "mode_set");
                obj.str("from", from);
                obj.str("to", to);
            }
            AuditEvent::AmbiguousUpstreamFailure {
                worker,
                failure,
                path,
            } => {
                obj.str("event", "ambiguous_upstream_failure");
                obj.u64("worker", *worker as u64);
                obj.str("failure", failure);
                obj.str("path", path);
            }
            AuditEvent::BackupDecision {
                request_id,
                worker,
                grant_type,
                client,
                user,
                session_key,
                decision,
                reason,
                rule,
                detail,
                cause,
                ambiguous,
                latency_us,
            } => {
                obj.str("event", "backup_decision");
                let out = obj.key("request_id");
                out.extend_from_slice(b"\"w");
                push_u64(out, request_id.0 as u64);
                out.push(b'-');
                push_u64(out, request_id.1);
                out.push(b'"');
                obj.u64("worker", *worker as u64);
                obj.str("grant_type", grant_type);
                obj.str("client", client);
                obj.str("user", user);
                let out = obj.key("session_key");
                out.push(b'"');
                if let Some(k) = session_key {
                    push_hex128(out, *k);
                }
                out.push(b'"');
                obj.str("decision", decision);
                obj.str("reason", reason);
                if let Some(rule) = rule {
                    obj.u64("rule", u64::from(*rule));
                }
                if let Some(detail) = detail {
                    obj.str("detail", detail);
                }
                obj.str("cause", cause);
                let out = obj.key("ambiguous");
                out.extend_from_slice(if *ambiguous { b"true" } else { b"false" });
                obj.u64("latency_us", *latency_us);
            }
        }
        obj.end();
    }
}

/// A JSON object being appended to a buffer, member by member. Its methods are inlined so
/// that each member name, a literal at every call, is copied as a constant-length move.
struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonObject<'a> {
    fn start(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Writes `"name":` (after a comma unless first) and hands back the buffer for the value.
    /// Names are our own ASCII identifiers: nothing to escape.
    #[inline(always)]
    fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    #[inline(always)]
    fn str(&mut self, name: &str, value: &str) {
        let out = self.key(name);
        push_json_str(out, value);
    }

    #[inline(always)]
    fn u64(&mut self, name: &str, value: u64) {
        let out = self.key(name);
        push_u64(out, value);
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes (RFC 8259 §7: `"`, `\\` and
/// control characters; the short forms where JSON has them, else `\u00XX` in lowercase hex).
#[inline(always)]
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut rest = s.as_bytes();
    while let Some(i) = escape_at(rest) {
        let (run, tail) = rest.split_at(i);
        out.extend_from_slice(run);
        let Some((&b, tail)) = tail.split_first() else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                // b < 0x20: both nibbles index the table.
                out.extend(
                    [b >> 4, b & 0x0f]
                        .iter()
                        .filter_map(|n| HEX.get(usize::from(*n))),
                );
            }
        }
        rest = tail;
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Appends `k` as 32 lowercase hex digits.
fn push_hex128(out: &mut Vec<u8>, k: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    for (i, d) in digits.iter_mut().enumerate() {
        // The nibble is below 16: the lookup never falls back.
        *d = HEX
            .get(((k >> ((31 - i) * 4)) & 0xf) as usize)
            .copied()
            .unwrap_or(b'0');
    }
    out.extend_from_slice(&digits);
}

/// Limits of the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLimits {
    /// Rotate the current file once it reaches this many bytes.
    pub file_bytes_max: u64,
    /// Rotated files kept besides the current one; older ones are deleted.
    pub files_kept: u32,
    /// Records queued for the writer before new ones are dropped.
    pub queue_len: usize,
}

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The directory or file could not be created or opened.
    #[error("audit log in {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// How long the writer waits between batches while records keep coming.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// What the writer thread receives.
// A record moves once into a channel slot; boxing it would add an allocation per record on
// the request path to save bytes in a bounded buffer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Msg {
    Record(AuditRecord),
    /// Records of one thread, in the order they were made.
    Batch(Vec<AuditRecord>),
    /// Write what came before, flush, and end the thread.
    Stop,
}

/// The sending side, cloned into every thread that audits.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    /// Records sent and not yet written: the queue's bound counts records, not messages, so a
    /// queue of batches holds no more than `queue_len` records either.
    queued: Arc<AtomicUsize>,
    queue_len: usize,
}

impl AuditSink {
    /// Queues a record; never blocks. A full queue drops it and counts it. Records this thread
    /// batched before are queued first, so one thread's records keep their order.
    pub fn record(&self, record: AuditRecord) {
        flush_thread();
        self.send(Msg::Record(record), 1);
    }

    /// Adds a record to this thread's batch, handed to the writer by the next `flush_thread`
    /// (a worker's runtime calls it before it parks: the batch waits for no more than the
    /// requests the worker serves without pausing) or once `BATCH_RECORDS` are waiting. Never
    /// blocks; a batch that finds the queue full is dropped and counted, record by record.
    pub fn record_batched(&self, record: AuditRecord) {
        BATCH.with(|cell| {
            let Ok(mut slot) = cell.try_borrow_mut() else {
                // Only a record made while this thread flushes could land here: send it alone.
                self.send(Msg::Record(record), 1);
                return;
            };
            let batch = slot.get_or_insert_with(|| Batch {
                sink: self.clone(),
                records: Vec::with_capacity(BATCH_RECORDS),
            });
            if !Arc::ptr_eq(&batch.sink.dropped, &self.dropped) {
                // This thread audits to another log now (tests start many servers): what it
                // batched goes to the log it was meant for.
                batch.flush();
                batch.sink = self.clone();
            }
            batch.records.push(record);
            // Never more than the queue can take at once, or a full batch could never be sent.
            if batch.records.len() >= BATCH_RECORDS.min(self.queue_len) {
                batch.flush();
            }
        });
    }

    fn send(&self, msg: Msg, records: usize) {
        let before = self.queued.fetch_add(records, Ordering::Relaxed);
        let sent = before + records <= self.queue_len
            && match self.tx.try_send(msg) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            };
        if !sent {
            self.queued.fetch_sub(records, Ordering::Relaxed);
            self.dropped.fetch_add(records as u64, Ordering::Relaxed);
        }
    }

    /// Records dropped so far because the queue was full or the writer had stopped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Asks the writer to write everything queued before this call, flush and stop. Waits for
    /// room in the queue (shutdown only). Records sent after it are dropped and counted.
    pub fn close(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

/// Records a thread batches before it hands them over, at most.
const BATCH_RECORDS: usize = 32;

thread_local! {
    /// This thread's records not yet handed to the writer (`AuditSink::record_batched`).
    static BATCH: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// One thread's pending records and the sink they go to. Dropped (thread exit) it hands over
/// what it holds, so a worker that stops loses nothing it recorded.
struct Batch {
    sink: AuditSink,
    records: Vec<AuditRecord>,
}

impl Batch {
    fn flush(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let n = self.records.len();
        let records = std::mem::replace(&mut self.records, Vec::with_capacity(BATCH_RECORDS));
        self.sink.send(Msg::Batch(records), n);
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Hands this thread's batched records to the writer. Cheap when there are none; a worker's
/// runtime calls it each time before it parks, and the worker once more as it stops.
pub fn flush_thread() {
    // `try_with`: during thread exit the batch may already be gone (its drop flushed it).
    let _ = BATCH.try_with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut()
            && let Some(batch) = slot.as_mut()
        {
            batch.flush();
        }
    });
}

/// Starts the writer thread on `dir` (created, mode 0700). Returns the sink and the thread,
/// which ends after a final flush on `AuditSink::close` (or once every sink is dropped).
pub fn start(dir: &Path, limits: AuditLimits) -> Result<(AuditSink, JoinHandle<()>), AuditError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let current = dir.join(CURRENT_FILE);
    let file = open_append(&current).map_err(io(&current))?;
    let size = file.metadata().map_err(io(&current))?.len();
    let queue_len = limits.queue_len.max(1);
    let (tx, rx) = mpsc::sync_channel(queue_len);
    let queued = Arc::new(AtomicUsize::new(0));
    let writer = Writer {
        dir: dir.to_path_buf(),
        queued: Arc::clone(&queued),
        limits,
        out: BufWriter::new(file),
        size,
        line: Vec::with_capacity(512),
    };
    let handle = std::thread::Builder::new()
        .name("backstop-audit".into())
        .spawn(move || writer.run(rx))
        .map_err(io(dir))?;
    Ok((
        AuditSink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            queued,
            queue_len,
        },
        handle,
    ))
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

struct Writer {
    dir: PathBuf,
    /// The senders' count of records queued and not yet written (`AuditSink::queued`).
    queued: Arc<AtomicUsize>,
    limits: AuditLimits,
    out: BufWriter<File>,
    size: u64,
    /// The line being encoded, reused: the writer allocates nothing per record.
    line: Vec<u8>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        // Idle: block for one message. Busy: after each batch, pause for `BATCH_PAUSE` and then
        // take everything queued, so under steady load the writer costs one wake-up and one
        // write system call per pause, not per record, and a sending worker never has to wake
        // it (a sleeping thread is not a waiting receiver). Records reach the file at most a
        // pause after they were queued; the queue holds many pauses' worth at full load.
        'outer: while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            loop {
                while let Some(msg) = next {
                    match msg {
                        Msg::Record(record) => {
                            self.queued.fetch_sub(1, Ordering::Relaxed);
                            self.write(&record);
                        }
                        Msg::Batch(records) => {
                            self.queued.fetch_sub(records.len(), Ordering::Relaxed);
                            for record in &records {
                                self.write(record);
                            }
                        }
                        Msg::Stop => break 'outer,
                    }
                    next = rx.try_recv().ok();
                }
                if let Err(e) = self.out.flush() {
                    tracing::error!(error = %e, "audit log flush failed");
                }
                std::thread::sleep(BATCH_PAUSE);
                match rx.try_recv() {
                    Ok(msg) => next = Some(msg),
                    Err(_) => break,
                }
            }
        }
        if let Err(e) = self.out.flush() {
            tracing::error!(error = %e, "audit log flush failed");
        }
    }

    fn write(&mut self, record: &AuditRecord) {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        record.write_json(&mut line);
        line.push(b'\n');
        if self.size > 0
            && self.size + line.len() as u64 > self.limits.file_bytes_max
            && let Err(e) = self.rotate()
        {
            tracing::error!(error = %e, dir = %self.dir.display(), "audit log rotation failed; appending to the current file");
        }
        match self.out.write_all(&line) {
            Ok(()) => self.size += line.len() as u64,
            Err(e) => tracing::error!(error = %e, "audit log write failed"),
        }
        self.line = line;
    }

    /// `audit.jsonl` → `audit.1.jsonl` → ... → `audit.N.jsonl`; the oldest beyond N is deleted.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let kept = self.limits.files_kept;
        let rotated = |n: u32| self.dir.join(format!("audit.{n}.jsonl"));
        if kept == 0 {
            std::fs::remove_file(self.dir.join(CURRENT_FILE))?;
        } else {
            let _ = std::fs::remove_file(rotated(kept));
            for n in (1..kept).rev() {
                let from = rotated(n);
                if from.exists() {
                    std::fs::rename(&from, rotated(n + 1))?;
                }
            }
            std::fs::rename(self.dir.join(CURRENT_FILE), rotated(1))?;
        }
        self.out = BufWriter::new(open_append(&self.dir.join(CURRENT_FILE))?);
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transition(i: usize) -> AuditRecord {
        AuditRecord {
            time_ms: 1_700_000_000_000 + i as u64,
            event: AuditEvent::BreakerTransition {
                worker: i,
                from: "closed",
                to: "open",
                cause: "timeout",
            },
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn encodings_agree(record: &AuditRecord) {
        let mut ours = Vec::new();
        record.write_json(&mut ours);
        let serde = serde_json::to_vec(record).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(serde).unwrap()
        );
    }

    #[test]
    fn the_hand_written_encoding_is_serde_json_byte_for_byte() {
        encodings_agree(&transition(7));
        encodings_agree(&AuditRecord {
            time_ms: 0,
            event: AuditEvent::ModeSet {
                from: "auto",
                to: "outage",
            },
        });
        encodings_agree(&AuditRecord {
            time_ms: u64::MAX,
            event: AuditEvent::AmbiguousUpstreamFailure {
                worker: usize::MAX,
                failure: "timeout",
                path: "/a \"quoted\" \\ path\u{1}\u{1f}\n\r\t\u{8}\u{c}\u{7f}é/".into(),
            },
        });
        for (rule, detail, key, ambiguous) in [
            (None, None, None, false),
            (
                Some(5),
                Some("revocation event \"x\"\n".to_string()),
                Some(0),
                true,
            ),
            (
                Some(4),
                Some("policy p-1".to_string()),
                Some(u128::MAX),
                false,
            ),
            (
                None,
                None,
                Some(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
                true,
            ),
        ] {
            encodings_agree(&AuditRecord {
                time_ms: 1_700_000_000_123,
                event: AuditEvent::BackupDecision {
                    request_id: (3, 1_234_567_890_123),
                    worker: 3,
                    grant_type: "refresh_token".into(),
                    client: "app-\u{0}\\".into(),
                    user: "ünïcode user".into(),
                    session_key: key,
                    decision: "refused",
                    reason: "mfa",
                    rule,
                    detail,
                    cause: "forced_outage",
                    ambiguous,
                    latency_us: 10,
                },
            });
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(
            s in proptest::collection::vec(
                proptest::sample::select(vec!['a', '"', '\\', '\u{0}', '\n', '\u{1f}', ' ', '\u{7f}', 'é', '✓']),
                0..40,
            )
        ) {
            let s: String = s.into_iter().collect();
            let mut ours = Vec::new();
            push_json_str(&mut ours, &s);
            proptest::prop_assert_eq!(ours, serde_json::to_vec(&s).unwrap());
        }
    }

    fn small_limits() -> AuditLimits {
        AuditLimits {
            file_bytes_max: 1 << 20,
            files_kept: 2,
            queue_len: 16,
        }
    }

    #[test]
    fn batched_records_keep_their_order_with_direct_ones_and_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, writer) = start(dir.path(), small_limits()).unwrap();
        // On a thread of its own, as a worker's: batched, direct, batched, then the flush a
        // parking runtime makes.
        let s = sink.clone();
        std::thread::spawn(move || {
            s.record_batched(transition(1));
            s.record_batched(transition(2));
            s.record(transition(3));
            s.record_batched(transition(4));
            flush_thread();
        })
        .join()
        .unwrap();
        sink.close();
        writer.join().unwrap();
        let got = lines(&dir.path().join(CURRENT_FILE));
        let workers: Vec<_> = got.iter().map(|r| r["worker"].as_u64().unwrap()).collect();
        assert_eq!(workers, [1, 2, 3, 4]);
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn a_full_batch_is_handed_over_without_a_flush_and_thread_exit_hands_over_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let limits = AuditLimits {
            queue_len: 1024,
            ..small_limits()
        };
        let (sink, writer) = start(dir.path(), limits).unwrap();
        let s = sink.clone();
        let n = BATCH_RECORDS + 3;
        std::thread::spawn(move || {
            for i in 0..n {
                s.record_batched(transition(i));
            }
            // No flush: the thread's exit hands over the last three.
        })
        .join()
        .unwrap();
        sink.close();
        writer.join().unwrap();
        let got = lines(&dir.path().join(CURRENT_FILE));
        assert_eq!(got.len(), n);
        assert_eq!(got[n - 1]["worker"], (n - 1) as u64);
    }

    #[test]
    fn a_batch_that_finds_the_log_closed_is_counted_as_dropped_record_by_record() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, writer) = start(dir.path(), small_limits()).unwrap();
        sink.close();
        writer.join().unwrap();
        let s = sink.clone();
        std::thread::spawn(move || {
            s.record_batched(transition(1));
            s.record_batched(transition(2));
            flush_thread();
        })
        .join()
        .unwrap();
        assert_eq!(sink.dropped(), 2);
    }

    #[test]
    fn records_are_json_lines_with_the_event_name() {
        let dir = tempfile::tempdir().unwrap();
        let limits = AuditLimits {
            file_bytes_max: 1 << 20,
            files_kept: 2,
            queue_len: 16,
        };
        let (sink, writer) = start(dir.path(), limits).unwrap();
        sink.record(transition(1));
        sink.record(AuditRecord {
            time_ms: 5,
            event: AuditEvent::ModeSet {
                from: "auto",
                to: "outage",
            },
        });
        // A clone still alive elsewhere must not keep the writer from stopping.
        let straggler = sink.clone();
        sink.close();
        writer.join().unwrap();
        straggler.record(transition(2));
        assert_eq!(straggler.dropped(), 1);
        let got = lines(&dir.path().join(CURRENT_FILE));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["event"], "breaker_transition");
        assert_eq!(got[0]["to"], "open");
        assert_eq!(got[0]["time_ms"], 1_700_000_000_001u64);
        assert_eq!(got[1]["event"], "mode_set");
        assert_eq!(got[1]["to"], "outage");
    }

    #[test]
    fn files_rotate_by_size_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        // Workers 10..30: every line has the same length, so each file holds exactly three.
        let one_line = serde_json::to_vec(&transition(10)).unwrap().len() as u64 + 1;
        // Three records per file, two rotated files kept.
        let limits = AuditLimits {
            file_bytes_max: one_line * 3,
            files_kept: 2,
            queue_len: 1024,
        };
        let (sink, writer) = start(dir.path(), limits).unwrap();
        for i in 10..30 {
            sink.record(transition(i));
        }
        sink.close();
        writer.join().unwrap();
        let current = lines(&dir.path().join(CURRENT_FILE));
        let r1 = lines(&dir.path().join("audit.1.jsonl"));
        let r2 = lines(&dir.path().join("audit.2.jsonl"));
        assert!(!dir.path().join("audit.3.jsonl").exists());
        // Oldest to newest: audit.2, audit.1, current; the last record written is last.
        assert_eq!(current.last().unwrap()["worker"], 29);
        assert!(
            current.len() <= 3 && r1.len() == 3 && r2.len() == 3,
            "{current:?} {r1:?} {r2:?}"
        );
        assert_eq!(
            r2[0]["worker"].as_u64().unwrap() + 3,
            r1[0]["worker"].as_u64().unwrap()
        );
        for path in ["audit.jsonl", "audit.1.jsonl", "audit.2.jsonl"] {
            let len = std::fs::metadata(dir.path().join(path)).unwrap().len();
            assert!(len <= limits.file_bytes_max, "{path} is {len} bytes");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, rx) = mpsc::sync_channel(2);
        let sink = AuditSink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
            queue_len: 2,
        };
        for i in 0..5 {
            sink.record(transition(i));
        }
        assert_eq!(sink.dropped(), 3);
        assert_eq!(rx.try_iter().count(), 2);
    }

    #[test]
    fn the_queue_bound_counts_records_not_batches() {
        // Four message slots would hold four full batches (128 records); the bound is 40
        // records, so the second batch of 32 no longer fits and is dropped whole.
        let (tx, rx) = mpsc::sync_channel(4);
        let sink = AuditSink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
            queue_len: 40,
        };
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..(3 * BATCH_RECORDS) {
                    sink.record_batched(transition(i));
                }
                flush_thread();
            });
        });
        let kept: usize = rx
            .try_iter()
            .map(|m| match m {
                Msg::Batch(records) => records.len(),
                Msg::Record(_) => 1,
                Msg::Stop => 0,
            })
            .sum();
        assert_eq!(kept, BATCH_RECORDS);
        assert_eq!(sink.dropped(), 2 * BATCH_RECORDS as u64);
        assert_eq!(sink.queued.load(Ordering::Relaxed), BATCH_RECORDS);
    }

    #[test]
    fn reopening_appends_to_the_current_file() {
        let dir = tempfile::tempdir().unwrap();
        let limits = AuditLimits {
            file_bytes_max: 1 << 20,
            files_kept: 1,
            queue_len: 8,
        };
        for i in 0..2 {
            let (sink, writer) = start(dir.path(), limits).unwrap();
            sink.record(transition(i));
            sink.close();
            writer.join().unwrap();
        }
        assert_eq!(lines(&dir.path().join(CURRENT_FILE)).len(), 2);
    }
}
