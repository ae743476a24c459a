//! The writer thread of one WAL group: group commit (one append and one fsync per batch),
//! publish to the in-memory tables, then acknowledge. An I/O error latches the group failed.

use std::sync::Arc;

use super::dir;
use super::error::StoreError;
use super::format::kind;
use super::wal::{self, WalFile};
use super::{Core, MemValue, ShardState, WriteOp, WriterMsg};
use crate::limits;

/// The open WAL file of a group.
pub(super) struct GroupWal {
    group: u32,
    file: Box<dyn WalFile>,
}

/// Creates WAL generation `generation` for `group`: header appended and fsynced, directory fsynced,
/// so records appended later are never in a file whose name could vanish in a crash.
pub(super) fn create_wal(core: &Core, group: u32, generation: u64) -> Result<GroupWal, StoreError> {
    let path = dir::wal_path(&core.dir, group, generation);
    let mut file = core
        .backend
        .create(&path)
        .map_err(dir::io_err("create wal", &path))?;
    file.append(&wal::file_header(group, generation))
        .map_err(dir::io_err("write wal header", &path))?;
    file.sync().map_err(dir::io_err("fsync wal", &path))?;
    dir::sync_dir(&core.dir.join(dir::WAL_DIR))?;
    Ok(GroupWal { group, file })
}

fn latch(core: &Core, group: u32, op: &'static str, e: &dyn std::fmt::Display) {
    if let Some(g) = core.groups.get(group as usize)
        && g.failed.set((op, e.to_string())).is_ok()
    {
        tracing::error!(group, op, error = %e, "WAL group failed; it takes no more writes until restart");
    }
}

fn failed_error(core: &Core, group: u32) -> Option<StoreError> {
    let (op, detail) = core.groups.get(group as usize)?.failed.get()?;
    Some(StoreError::GroupFailed {
        group,
        op,
        detail: detail.clone(),
    })
}

fn fail_all(batch: Vec<WriteOp>, err: impl Fn() -> StoreError) {
    for op in batch {
        let _ = op.done.send(Err(err()));
    }
}

/// Runs until every sender is dropped and the queue is drained.
pub(super) fn run(
    core: Arc<Core>,
    mut wal: GroupWal,
    mut rx: tokio::sync::mpsc::Receiver<WriterMsg>,
) {
    let mut batch: Vec<WriteOp> = Vec::with_capacity(limits::STORE_BATCH_RECORDS_MAX);
    let mut buf: Vec<u8> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut pending = Some(first);
        while let Some(msg) = pending.take() {
            match msg {
                WriterMsg::Write(op) => {
                    batch.push(op);
                    if batch.len() < limits::STORE_BATCH_RECORDS_MAX {
                        pending = rx.try_recv().ok();
                    }
                }
                WriterMsg::Rotate(reply) => {
                    // Everything queued before the rotation goes to the old file first.
                    commit(&core, &mut wal, &mut batch, &mut buf);
                    let _ = reply.send(rotate(&core, &mut wal));
                    pending = rx.try_recv().ok();
                }
            }
        }
        commit(&core, &mut wal, &mut batch, &mut buf);
    }
}

fn rotate(core: &Core, wal: &mut GroupWal) -> Result<u64, StoreError> {
    if let Some(e) = failed_error(core, wal.group) {
        return Err(e);
    }
    let generation = core.next_generation();
    match create_wal(core, wal.group, generation) {
        Ok(w) => {
            *wal = w;
            Ok(generation)
        }
        Err(e) => {
            // The old file is still good to append to only if nothing of the new one could
            // have been relied on; a failed directory fsync leaves that unknown, so latch.
            latch(core, wal.group, "rotate", &e);
            Err(e)
        }
    }
}

fn commit(core: &Core, wal: &mut GroupWal, batch: &mut Vec<WriteOp>, buf: &mut Vec<u8>) {
    if batch.is_empty() {
        return;
    }
    let ops = std::mem::take(batch);
    if failed_error(core, wal.group).is_some() {
        return fail_all(ops, || {
            failed_error(core, wal.group).unwrap_or(StoreError::Closed)
        });
    }
    buf.clear();
    for op in &ops {
        match &op.rec {
            Some(r) => wal::encode_record(r.kind(), op.key, r.bytes(), buf),
            None => wal::encode_record(kind::TOMBSTONE, op.key, &[], buf),
        }
    }
    if let Err(e) = wal.file.append(buf) {
        latch(core, wal.group, "write", &e);
        return fail_all(ops, || {
            failed_error(core, wal.group).unwrap_or(StoreError::Closed)
        });
    }
    // After an fsync error the kernel may have dropped the dirty pages: a retry that succeeds
    // proves nothing, so the group stops here (FIELD-NOTES, "Memory and storage").
    if let Err(e) = wal.file.sync() {
        latch(core, wal.group, "fsync", &e);
        return fail_all(ops, || {
            failed_error(core, wal.group).unwrap_or(StoreError::Closed)
        });
    }
    publish(core, &ops);
    for op in ops {
        let _ = op.done.send(Ok(()));
    }
}

/// Makes a durable batch visible: one new state per touched shard, in batch order.
fn publish(core: &Core, ops: &[WriteOp]) {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| ops.get(i).map_or(0, |o| o.shard));
    let mut i = 0;
    while i < order.len() {
        let Some(shard_id) = order.get(i).and_then(|&j| ops.get(j)).map(|o| o.shard) else {
            break;
        };
        let Some(shard) = core.shards.get(shard_id as usize) else {
            break;
        };
        let _guard = shard.modify.lock();
        let cur = shard.state.load_full();
        let mut next = ShardState::clone(&cur);
        while let Some(op) = order
            .get(i)
            .and_then(|&j| ops.get(j))
            .filter(|o| o.shard == shard_id)
        {
            let bytes =
                op.rec.as_ref().map_or(0, |r| r.bytes().len() as u64) + MEM_ENTRY_OVERHEAD_BYTES;
            let v = Arc::new(MemValue {
                rec: op.rec.clone(),
                bytes,
            });
            if let Some(old) = next.mem.insert(op.key.0, v) {
                next.mem_bytes = next.mem_bytes.saturating_sub(old.bytes);
            }
            next.mem_bytes += bytes;
            i += 1;
        }
        shard.state.store(Arc::new(next));
    }
}

/// Rough per-entry cost of the in-memory table beyond the record bytes (map node, Arcs).
pub(super) const MEM_ENTRY_OVERHEAD_BYTES: u64 = 96;
