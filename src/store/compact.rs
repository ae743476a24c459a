//! Opening (recovery) and compaction: the two places that create, swap and delete files.
//!
//! Compaction of a WAL group: rotate the group's WAL (everything before is durable and
//! published), snapshot each shard's state, merge its in-memory table over its segments into
//! one new segment (expired and superseded records dropped), write it to a temp file, fsync,
//! rename, fsync the directory, map and validate it, swap it in, and only when every shard of
//! the group is done delete the WAL files of earlier generations. A crash at any point leaves
//! either the old segment plus the WAL that covers the difference, or the new segment plus a
//! WAL whose replay changes nothing (replay is in generation order, last write wins).

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::dir::{self, io_err};
use super::error::SegmentError;
use super::error::StoreError;
use super::format::{FORMAT_VERSION, kind};
use super::keys::{Keys, RecordKey};
use super::mapped::RecordBytes;
use super::segment::{self, BuildRecord, OpenSegmentError, Segment, Validate};
use super::wal;
use super::writer::{self, MEM_ENTRY_OVERHEAD_BYTES};
use super::{
    Compaction, Core, Engine, GroupState, MemEntry, MemValue, RecoveryEvent, Replayed, Shard,
    ShardState, Store, StoreOpts, Validation, WriterMsg,
};
use crate::limits;

/// Writes a segment file the crash-safe way: `tmp-{gen}.seg`, fsync, rename to
/// `s{shard}-{gen}.seg`, fsync the directory. Returns the final path.
fn write_segment_file(
    dir_path: &Path,
    shard: u32,
    generation: u64,
    bytes: &[u8],
) -> Result<PathBuf, StoreError> {
    let tmp = dir::seg_tmp_path(dir_path, generation);
    let path = dir::seg_path(dir_path, shard, generation);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create segment", &tmp))?;
        f.write_all(bytes).map_err(io_err("write segment", &tmp))?;
        f.sync_all().map_err(io_err("fsync segment", &tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io_err("rename segment", &tmp))?;
    dir::sync_dir(&dir_path.join(dir::SEG_DIR))?;
    Ok(path)
}

/// Converts an older-format segment file into a current one under `generation`: the new file
/// is written and made durable first, then the old one is unlinked. A crash in between leaves
/// both; the next open keeps the newer generation (same records) and removes the older.
/// `Ok(Err(_))` when the old segment fails validation (the caller quarantines it).
fn convert_segment(
    dir_path: &Path,
    shard: u32,
    old: &Path,
    generation: u64,
) -> Result<Result<PathBuf, SegmentError>, StoreError> {
    let bytes = std::fs::read(old).map_err(io_err("read segment", old))?;
    let converted = match segment::upgrade(&bytes) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let path = write_segment_file(dir_path, shard, generation, &converted)?;
    std::fs::remove_file(old).map_err(io_err("remove", old))?;
    dir::sync_dir(&dir_path.join(dir::SEG_DIR))?;
    Ok(Ok(path))
}

fn open_segment(
    path: &Path,
    generation: u64,
    when: Validate,
    shard: u32,
    shard_count: u32,
) -> Result<Segment, OpenSegmentError> {
    Segment::open(path, generation, when).and_then(|s| {
        let h = s.header();
        if h.shard != shard || h.shard_count != shard_count {
            return Err(OpenSegmentError::Invalid(SegmentError::Header {
                field: "shard",
            }));
        }
        Ok(s)
    })
}

pub(super) fn open(dir_path: &Path, opts: StoreOpts) -> Result<Store, StoreError> {
    dir::create_layout(dir_path)?;
    let lock = dir::lock(dir_path)?;
    let format_file = dir::check_or_write_format(dir_path, opts.shard_count)?;
    let shard_count = format_file.shard_count;
    if shard_count != opts.shard_count {
        return Err(StoreError::ShardCountMismatch {
            configured: opts.shard_count,
            on_disk: shard_count,
        });
    }
    let keys = Keys::load_or_create(dir_path)?;
    let group_count = opts.wal_groups.min(shard_count).max(1);
    let mut events = Vec::new();
    let mut quarantined = 0u64;

    // Generations first, from every file name: converting an older-format segment below
    // needs a generation no file has used.
    let seg_dir = dir_path.join(dir::SEG_DIR);
    let wal_dir = dir_path.join(dir::WAL_DIR);
    let seg_names = dir::list(&seg_dir)?;
    let wal_names = dir::list(&wal_dir)?;
    let mut max_generation = seg_names
        .iter()
        .filter_map(|n| dir::parse_seg_name(n).map(|(_, g)| g))
        .chain(
            wal_names
                .iter()
                .filter_map(|n| dir::parse_wal_name(n).map(|(_, g)| g)),
        )
        .max()
        .unwrap_or(0);

    // Segments: keep the newest generation of each shard. Older ones are leftovers of a
    // compaction that crashed after its rename (the newest contains all they held), and a
    // newest one that fails validation is quarantined without falling back to an older one,
    // which could resurrect records that were superseded since.
    let mut newest: BTreeMap<u32, u64> = BTreeMap::new();
    let mut seg_files = Vec::new();
    for name in seg_names {
        let path = seg_dir.join(&name);
        if name.starts_with("tmp-") {
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
            events.push(RecoveryEvent::StaleFileRemoved { path });
            continue;
        }
        let Some((shard, generation)) = dir::parse_seg_name(&name) else {
            continue;
        };
        seg_files.push((shard, generation, path));
        let e = newest.entry(shard).or_insert(generation);
        *e = (*e).max(generation);
    }
    let live_bytes: u64 = seg_files
        .iter()
        .filter(|(shard, generation, _)| newest.get(shard) == Some(generation))
        .filter_map(|(_, _, p)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let when = if live_bytes <= opts.validate_foreground_bytes_max {
        Validate::Now
    } else {
        Validate::Later
    };
    let mut shard_segments: HashMap<u32, Arc<Segment>> = HashMap::new();
    let mut later = Vec::new();
    for (shard, generation, path) in seg_files {
        if newest.get(&shard) != Some(&generation) || shard >= shard_count {
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
            events.push(RecoveryEvent::StaleFileRemoved { path });
            continue;
        }
        let mut path = path;
        let mut opened = open_segment(&path, generation, when, shard, shard_count);
        if let Err(OpenSegmentError::Invalid(SegmentError::OlderFormat { found })) = &opened {
            // Upgrade in place, through the same write → fsync → rename → fsync-dir sequence
            // as compaction (docs/store-format.md, "Upgrades").
            let found = *found;
            max_generation += 1;
            match convert_segment(dir_path, shard, &path, max_generation)? {
                Ok(new_path) => {
                    tracing::info!(
                        from = %path.display(),
                        to = %new_path.display(),
                        from_version = found,
                        "store segment converted to the current format"
                    );
                    opened = open_segment(&new_path, max_generation, when, shard, shard_count);
                    path = new_path;
                }
                Err(e) => opened = Err(OpenSegmentError::Invalid(e)),
            }
        }
        match opened {
            Ok(seg) => {
                let seg = Arc::new(seg);
                if !seg.is_validated() {
                    later.push(Arc::clone(&seg));
                }
                shard_segments.insert(shard, seg);
            }
            Err(OpenSegmentError::Invalid(SegmentError::NewerFormat { found, supported })) => {
                return Err(StoreError::NewerFormat {
                    path,
                    found,
                    supported,
                });
            }
            Err(e) => {
                let to = dir::quarantine(dir_path, &path)?;
                quarantined += 1;
                events.push(RecoveryEvent::SegmentQuarantined {
                    path: to,
                    reason: e.to_string(),
                });
            }
        }
    }

    // WAL: replay every file in generation order (per group order does not matter: a key
    // lives in exactly one group, and groups are fixed by shard), truncating torn tails.
    let mut wal_files: Vec<(u64, u32, PathBuf)> = Vec::new();
    for name in wal_names {
        if let Some((g, generation)) = dir::parse_wal_name(&name) {
            wal_files.push((generation, g, wal_dir.join(name)));
        }
    }
    wal_files.sort();
    let mut replayed: Replayed = HashMap::new();
    let mut truncations = 0u64;
    let mut older_wal = false;
    for (_, _, path) in &wal_files {
        let bytes = wal::read_file(path).map_err(io_err("read wal", path))?;
        let version = match wal::decode_file_header(&bytes) {
            None => {
                // Only a header that never became durable can be torn: `create_wal` syncs
                // the header and the directory before any record is appended.
                std::fs::remove_file(path).map_err(io_err("remove", path))?;
                events.push(RecoveryEvent::WalHeaderTorn { path: path.clone() });
                continue;
            }
            Some(h) if h.format_version > FORMAT_VERSION => {
                return Err(StoreError::NewerFormat {
                    path: path.clone(),
                    found: h.format_version,
                    supported: FORMAT_VERSION,
                });
            }
            Some(h) => h.format_version,
        };
        // An older file's records are converted as they are replayed; the upgrade below
        // then compacts them into current segments and deletes the file.
        older_wal |= version < FORMAT_VERSION;
        let (_, torn) = wal::replay(&bytes, |rec| {
            let shard = rec.key.shard(shard_count);
            let value = if rec.kind == kind::TOMBSTONE {
                MemValue {
                    rec: None,
                    bytes: MEM_ENTRY_OVERHEAD_BYTES,
                }
            } else {
                let Some(r) = super::proven_wal_body(version, rec.kind, rec.body) else {
                    return false;
                };
                let bytes = r.bytes().len() as u64 + MEM_ENTRY_OVERHEAD_BYTES;
                MemValue {
                    rec: Some(r),
                    bytes,
                }
            };
            replayed
                .entry(shard)
                .or_default()
                .insert(rec.key.0, Arc::new(value));
            true
        });
        if let Some(t) = torn {
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err("open wal", path))?;
            f.set_len(t.good_bytes)
                .map_err(io_err("truncate wal", path))?;
            f.sync_all().map_err(io_err("fsync wal", path))?;
            truncations += 1;
            events.push(RecoveryEvent::WalTruncated {
                path: path.clone(),
                good_bytes: t.good_bytes,
                dropped_bytes: t.dropped_bytes,
                reason: t.reason,
            });
        }
    }

    let shards = (0..shard_count)
        .map(|i| {
            let mem = replayed.remove(&i).unwrap_or_default();
            let mem_bytes = mem.values().map(|v| v.bytes).sum();
            let segments = shard_segments.remove(&i).into_iter().collect();
            Shard {
                state: ArcSwap::from_pointee(ShardState {
                    mem,
                    mem_bytes,
                    segments,
                }),
                modify: Mutex::new(()),
            }
        })
        .collect();
    for e in &events {
        tracing::warn!(event = ?e, "store recovery");
    }
    let core = Arc::new(Core {
        dir: dir_path.to_path_buf(),
        keys,
        shard_count,
        group_count,
        shards,
        groups: (0..group_count).map(|_| GroupState::default()).collect(),
        next_generation: AtomicU64::new(max_generation + 1),
        compact_lock: Mutex::new(()),
        quarantined: AtomicU64::new(quarantined),
        corrupt_reads: AtomicU64::new(0),
        wal_truncations: AtomicU64::new(truncations),
        compactions: AtomicU64::new(0),
        backend: Arc::clone(&opts.wal_backend),
        report: Mutex::new(events),
        validation: Validation {
            pending_segments: AtomicU64::new(later.len() as u64),
            pending_bytes: AtomicU64::new(later.iter().map(|s| s.header().records_bytes).sum()),
            stop: AtomicBool::new(false),
        },
        _lock: lock,
    });

    // Each group writes to a fresh generation: a file that was truncated above is never
    // appended to, so no new record can follow a torn one.
    let mut senders = Vec::new();
    let mut writers = Vec::new();
    for g in 0..group_count {
        let spawned = writer::create_wal(&core, g, core.next_generation()).and_then(|wal| {
            let (tx, rx) = tokio::sync::mpsc::channel(limits::STORE_QUEUE_RECORDS_MAX);
            let c = Arc::clone(&core);
            std::thread::Builder::new()
                .name(format!("store-wal-{g}"))
                .spawn(move || writer::run(c, wal, rx))
                .map(|h| (tx, h))
                .map_err(io_err("spawn writer", dir_path))
        });
        match spawned {
            Ok((tx, h)) => {
                senders.push(tx);
                writers.push(h);
            }
            Err(e) => {
                // The writers started so far hold the core, and with it the data-dir lock:
                // stop them before returning, so a failed open leaves the directory free.
                drop(senders);
                for h in writers {
                    let _ = h.join();
                }
                return Err(e);
            }
        }
    }
    let engine = Engine {
        core: Arc::clone(&core),
        senders,
    };

    // From here on an error drops `store`, which stops and joins what it started (and so
    // releases the data-dir lock) before open returns.
    let mut store = Store {
        engine,
        writers,
        compactor: None,
        validators: Vec::new(),
    };

    if !later.is_empty() {
        let c = Arc::clone(&core);
        let h = std::thread::Builder::new()
            .name("store-validate".into())
            .spawn(move || validate_in_background(&c, later))
            .map_err(io_err("spawn validator", dir_path))?;
        store.validators.push(h);
    }

    if format_file.version < FORMAT_VERSION || older_wal {
        // Older segments were converted above; what remains of the old format is in the
        // in-memory tables (replayed from older WAL files). Compacting every group writes it
        // to current segments and deletes those WAL files; only then does FORMAT say so. A
        // crash before the FORMAT write leaves current files under an older FORMAT, which
        // the next open finishes the same way. Nothing expires here (`i64::MIN`): open has
        // no clock.
        for g in 0..group_count {
            store.engine.compact_group(g, i64::MIN)?;
        }
        dir::write_format(dir_path, shard_count)?;
        tracing::info!(
            from_version = format_file.version,
            to_version = FORMAT_VERSION,
            "store upgraded to the current format"
        );
    }

    store.compactor = match opts.compaction {
        Compaction::Manual => None,
        Compaction::Background { clock } => {
            let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
            let e = store.engine.clone();
            let (bytes_max, age_secs) = (opts.memtable_bytes_max, opts.compact_age_secs);
            let h = std::thread::Builder::new()
                .name("store-compact".into())
                .spawn(move || background(e, stop_rx, clock, bytes_max, age_secs))
                .map_err(io_err("spawn compactor", dir_path))?;
            Some((stop, h))
        }
    };
    Ok(store)
}

/// Bytes of records between two progress updates (and stop checks) of background validation.
const VALIDATION_CHUNK_BYTES: usize = 4 << 20;

fn validate_in_background(core: &Core, segs: Vec<Arc<Segment>>) {
    // Serving goes on beside this (reads re-prove each record they touch), so this thread
    // must not take CPU from the workers: at 10 M sessions it checksums ~15 GiB. At the
    // default priority the scale run saw the worker held up to 86–113 ms behind it, and still
    // 22 ms at nice 19 (a woken worker may wait for a nice-19 task's slice to end). Under
    // SCHED_IDLE a waking normal thread preempts it at once (Linux: on a thread id, this
    // thread only). Nice 19 is the fallback where SCHED_IDLE is refused.
    lower_own_priority();
    let progress = &core.validation;
    let (mut validated, mut bytes) = (0u64, 0u64);
    for seg in segs {
        if progress.stop.load(Ordering::Relaxed) {
            tracing::info!(
                pending_segments = progress.pending_segments.load(Ordering::Relaxed),
                "store background validation stopped (store closing)"
            );
            return;
        }
        let seg_bytes = seg.header().records_bytes;
        let (mut unreported, mut reported) = (0usize, 0u64);
        let live = is_live(core, &seg);
        let outcome = if live {
            seg.validate_paced(&mut |n| {
                unreported += n;
                if unreported >= VALIDATION_CHUNK_BYTES {
                    sub_saturating(&progress.pending_bytes, unreported as u64);
                    reported += unreported as u64;
                    unreported = 0;
                    return !progress.stop.load(Ordering::Relaxed);
                }
                true
            })
        } else {
            // Compacted away since open: its records live on in a validated segment.
            Ok(true)
        };
        // Whatever happened, what this segment had pending is no longer pending.
        sub_saturating(&progress.pending_bytes, seg_bytes.saturating_sub(reported));
        sub_saturating(&progress.pending_segments, 1);
        match outcome {
            Ok(true) => {
                if live {
                    validated += 1;
                    bytes += seg_bytes;
                }
            }
            Ok(false) => {} // stopped: the next loop turn logs and returns
            Err(e) => {
                // The segment already stopped serving (`Segment::is_failed`); move the file
                // aside.
                match dir::quarantine(&core.dir, seg.path()) {
                    Ok(to) => {
                        core.quarantined.fetch_add(1, Ordering::Relaxed);
                        core.record_event(RecoveryEvent::SegmentQuarantined {
                            path: to,
                            reason: e.to_string(),
                        });
                    }
                    Err(qe) => {
                        tracing::error!(error = %qe, "could not quarantine a failed segment");
                    }
                }
            }
        }
    }
    tracing::info!(
        segments = validated,
        bytes,
        "store background validation done"
    );
}

/// Progress counters never wrap, whatever a segment's header claimed.
fn sub_saturating(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// Whether `seg` still serves in its shard (compaction may have replaced it since open).
fn is_live(core: &Core, seg: &Arc<Segment>) -> bool {
    core.shards
        .get(seg.header().shard as usize)
        .is_some_and(|s| s.state.load().segments.iter().any(|x| Arc::ptr_eq(x, seg)))
}

/// Moves the calling thread to SCHED_IDLE, or failing that to nice 19.
fn lower_own_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    if let Err(e) = idle {
        tracing::debug!(error = ?e, "store validator: SCHED_IDLE refused, trying nice 19");
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
            tracing::debug!(error = %e, "store validator: cannot lower its priority");
        }
    }
}

/// One-second ticks: counting them stands in for reading the clock for the age policy.
fn background(
    engine: Engine,
    stop: std::sync::mpsc::Receiver<()>,
    clock: super::Clock,
    bytes_max: u64,
    age_secs: u64,
) {
    let core = Arc::clone(&engine.core);
    let mut last = vec![0u64; core.group_count as usize];
    let mut tick = 0u64;
    loop {
        match stop.recv_timeout(std::time::Duration::from_secs(1)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        tick += 1;
        let now_secs = clock();
        for g in 0..core.group_count {
            let (mut bytes, mut entries, mut expiring) = (0u64, 0usize, false);
            for (i, s) in core.shards.iter().enumerate() {
                if core.group_of(i as u32) == g {
                    let st = s.state.load();
                    bytes += st.mem_bytes;
                    entries += st.mem.len();
                    // Expired records are invisible already; compaction reclaims their bytes.
                    expiring |= st
                        .segments
                        .iter()
                        .any(|seg| seg.header().min_expires_at_secs <= now_secs);
                }
            }
            let Some(last_g) = last.get_mut(g as usize) else {
                continue;
            };
            let aged = (entries > 0 || expiring) && tick.saturating_sub(*last_g) >= age_secs;
            if bytes > bytes_max || aged {
                if let Err(e) = engine.compact_group(g, now_secs) {
                    tracing::error!(group = g, error = %e, "background compaction failed");
                }
                *last_g = tick;
            }
        }
    }
}

impl Engine {
    fn rotate(&self, group: u32) -> Result<u64, StoreError> {
        let tx = self.senders.get(group as usize).ok_or(StoreError::Closed)?;
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        // try_send rather than blocking_send: the latter panics when called from inside an
        // async runtime, and `compact` may be called from anywhere. A full queue means the
        // writer is busy; waiting a little is the right backpressure.
        let mut msg = WriterMsg::Rotate(reply);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(tokio::sync::mpsc::error::TrySendError::Full(m)) => {
                    msg = m;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    return Err(StoreError::Closed);
                }
            }
        }
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    pub(super) fn compact_group(&self, group: u32, now_secs: i64) -> Result<(), StoreError> {
        self.compact_group_with(group, now_secs, &mut BTreeMap::new())
    }

    /// Bulk load (`Store::bulk_load`): a compaction of every group that `records` touch, with
    /// each shard's bulk records merged in under its in-memory table.
    pub(super) fn bulk_load(
        &self,
        records: Vec<super::BulkRecord>,
        now_secs: i64,
    ) -> Result<(), StoreError> {
        let core = &self.core;
        let mut by_shard: BTreeMap<u32, Vec<super::BulkRecord>> = BTreeMap::new();
        for r in records {
            by_shard
                .entry(r.key.shard(core.shard_count))
                .or_default()
                .push(r);
        }
        let groups: std::collections::BTreeSet<u32> =
            by_shard.keys().map(|&s| core.group_of(s)).collect();
        for g in groups {
            self.compact_group_with(g, now_secs, &mut by_shard)?;
        }
        debug_assert!(by_shard.is_empty());
        Ok(())
    }

    /// Compacts `group`, merging `bulk`'s records of its shards (taken out of the map) into
    /// their new segments.
    fn compact_group_with(
        &self,
        group: u32,
        now_secs: i64,
        bulk: &mut BTreeMap<u32, Vec<super::BulkRecord>>,
    ) -> Result<(), StoreError> {
        let core = &self.core;
        let _serial = core.compact_lock.lock().map_err(|_| StoreError::Closed)?;
        let new_generation = self.rotate(group)?;
        for shard_id in (0..core.shard_count).filter(|&s| core.group_of(s) == group) {
            let extra = bulk.remove(&shard_id).unwrap_or_default();
            compact_shard(core, shard_id, now_secs, extra)?;
        }
        // Every shard of the group now has a durable segment covering the WAL generations
        // before `new_generation`: those files can go.
        let wal_dir = core.dir.join(dir::WAL_DIR);
        let mut removed = false;
        for name in dir::list(&wal_dir)? {
            if let Some((g, generation)) = dir::parse_wal_name(&name)
                && generation < new_generation
                && g % core.group_count == group
            {
                let p = wal_dir.join(&name);
                std::fs::remove_file(&p).map_err(io_err("remove wal", &p))?;
                removed = true;
            }
        }
        if removed {
            dir::sync_dir(&wal_dir)?;
        }
        core.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn compact_shard(
    core: &Core,
    shard_id: u32,
    now_secs: i64,
    bulk: Vec<super::BulkRecord>,
) -> Result<(), StoreError> {
    let Some(shard) = core.shards.get(shard_id as usize) else {
        return Ok(());
    };
    let snap = shard.state.load_full();
    let expiring = snap
        .segments
        .iter()
        .any(|s| s.header().min_expires_at_secs <= now_secs);
    if snap.mem.is_empty() && !expiring && snap.segments.len() <= 1 && bulk.is_empty() {
        return Ok(());
    }
    // Merge oldest to newest so newer records replace older ones.
    let segment_records: u64 = snap.segments.iter().map(|s| s.header().record_count).sum();
    let mut live: HashMap<u128, RecordBytes> = HashMap::with_capacity(
        usize::try_from(segment_records)
            .unwrap_or(0)
            .saturating_add(bulk.len())
            .saturating_add(snap.mem.len()),
    );
    for seg in snap.segments.iter().rev() {
        if seg.is_failed() {
            continue;
        }
        for (key, rec) in seg.records() {
            live.insert(key.0, rec);
        }
    }
    // Bulk records go over the segments and under the in-memory table: a put still in the WAL
    // keeps its value, in memory now and after a crash (its WAL replays over this segment).
    for r in bulk {
        debug_assert_eq!(r.key.shard(core.shard_count), shard_id);
        live.insert(r.key.0, r.rec);
    }
    for (key, v) in snap.mem.iter() {
        match &v.rec {
            Some(r) => live.insert(*key, r.clone()),
            None => live.remove(key),
        };
    }
    let mut input: Vec<(u128, RecordBytes, i64)> = live
        .into_iter()
        .filter_map(|(k, r)| {
            let exp = segment::record_expires_at(&r)?;
            (exp > now_secs).then_some((k, r, exp))
        })
        .collect();
    // A deterministic order keeps segment bytes reproducible for the same content.
    input.sort_by_key(|(k, _, _)| *k);

    let new_segment = if input.is_empty() {
        None
    } else {
        let build: Vec<BuildRecord<'_>> = input
            .iter()
            .map(|(k, r, exp)| BuildRecord {
                key: RecordKey(*k),
                kind: r.kind(),
                bytes: r.bytes(),
                expires_at_secs: *exp,
            })
            .collect();
        let bytes = segment::build(shard_id, core.shard_count, &build);
        let generation = core.next_generation();
        let path = write_segment_file(&core.dir, shard_id, generation, &bytes)?;
        // The pair of the checksum computed before the rename: map what is on disk now and
        // validate it in full before it serves.
        let seg = Segment::open(&path, generation, Validate::Now).map_err(|e| StoreError::Io {
            op: "validate new segment",
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        debug_assert_eq!(seg.header().record_count, input.len() as u64);
        let written = segment::Header::decode(&bytes)
            .ok()
            .map(|h| (h.index_xxh3, h.body_xxh3));
        debug_assert_eq!(
            written,
            Some((seg.header().index_xxh3, seg.header().body_xxh3))
        );
        Some(Arc::new(seg))
    };

    {
        let _guard = shard.modify.lock();
        let cur = shard.state.load_full();
        let mut mem: imbl::HashMap<u128, MemEntry> = cur.mem.clone();
        // Entries written after the snapshot stay; those the segment now holds go.
        mem.retain(|k, v| snap.mem.get(k).is_none_or(|s| !Arc::ptr_eq(s, v)));
        let mem_bytes = mem.values().map(|v| v.bytes).sum();
        shard.state.store(Arc::new(ShardState {
            mem,
            mem_bytes,
            segments: new_segment.into_iter().collect(),
        }));
    }
    // Readers that loaded the old state keep their mappings; unlinking leaves those valid.
    let mut removed = false;
    for old in snap.segments.iter() {
        if old.path().exists() {
            std::fs::remove_file(old.path()).map_err(io_err("remove segment", old.path()))?;
            removed = true;
        }
    }
    if removed {
        dir::sync_dir(&core.dir.join(dir::SEG_DIR))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field 41 of `/proc/thread-self/stat`: the scheduling policy (`SCHED_IDLE` is 5).
    fn own_policy() -> u32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name (field 2) may hold spaces; fields after it follow its ')'.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(41 - 3).unwrap().parse().unwrap()
    }

    #[test]
    fn the_validator_thread_moves_itself_to_sched_idle() {
        let policy = std::thread::spawn(|| {
            lower_own_priority();
            own_policy()
        })
        .join()
        .unwrap();
        assert_eq!(policy, 5, "SCHED_IDLE");
        assert_eq!(own_policy(), 0, "the caller's thread keeps SCHED_OTHER");
    }

    #[test]
    fn progress_counters_saturate_instead_of_wrapping() {
        let c = AtomicU64::new(3);
        sub_saturating(&c, 2);
        assert_eq!(c.load(Ordering::Relaxed), 1);
        sub_saturating(&c, 5);
        assert_eq!(c.load(Ordering::Relaxed), 0);
    }
}
