//! Segment files: the immutable, memory-mapped table of one shard (layout in
//! `docs/store-format.md`). Parsing, building, and lookups are safe code over bytes; the only
//! unchecked access goes through `mapped`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rkyv::util::AlignedVec;

use super::error::SegmentError;
use super::format::{self, FORMAT_VERSION, FORMAT_VERSION_MIN, RECORD_ALIGN, kind};
use super::keys::RecordKey;
use super::mapped::{Backing, RecordBytes, SlotClaim, ValidatedSegment};
use crate::limits;

/// First 8 bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"BKSTSEG\0";
/// Bytes of the fixed header.
pub const HEADER_BYTES: usize = 128;
/// Bytes of one index slot.
pub const SLOT_BYTES: usize = 40;
/// Header flag (bytes 112..116): the segment carries a revocation directory right after its
/// index. Set by every segment this build writes; absent from segments written before it,
/// which are read by scanning their index instead (`docs/store-format.md`).
pub const FLAG_REVOCATION_DIRECTORY: u32 = 1;
/// Every flag this build knows; a header with another bit set is refused.
const FLAGS_KNOWN: u32 = FLAG_REVOCATION_DIRECTORY;
/// Bytes of one revocation directory entry (a slot number) and of its trailing checksum.
const DIRECTORY_ENTRY_BYTES: u64 = 8;

/// The decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version that wrote the file.
    pub format_version: u32,
    /// Shard the segment belongs to.
    pub shard: u32,
    /// Shard count of the store that wrote it.
    pub shard_count: u32,
    /// Records (sessions + artifacts + revocations).
    pub record_count: u64,
    /// Session records.
    pub session_count: u64,
    /// Artifact records.
    pub artifact_count: u64,
    /// Revocation-event records (format 2; the bytes were reserved, zero, in format 1).
    pub revocation_count: u64,
    /// Smallest `expires_at` of any record (i64::MAX when empty).
    pub min_expires_at_secs: i64,
    /// Largest `expires_at` of any record (i64::MIN when empty).
    pub max_expires_at_secs: i64,
    /// Index slots (a power of two, more than `record_count`).
    pub slot_count: u64,
    /// Offset of the records region.
    pub records_offset: u64,
    /// Bytes of the records region (to the end of the file).
    pub records_bytes: u64,
    /// xxh3-64 of the index region.
    pub index_xxh3: u64,
    /// xxh3-64 of the records region.
    pub body_xxh3: u64,
    /// Bit set of `FLAG_*` (bytes 112..116, zero in segments written before the flags).
    pub flags: u32,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

impl Header {
    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        let mut put = |at: usize, v: &[u8]| {
            if let Some(d) = h.get_mut(at..at + v.len()) {
                d.copy_from_slice(v);
            }
        };
        put(0, &MAGIC);
        put(8, &self.format_version.to_le_bytes());
        put(12, &self.shard.to_le_bytes());
        put(16, &self.shard_count.to_le_bytes());
        put(20, &(SLOT_BYTES as u32).to_le_bytes());
        put(24, &self.record_count.to_le_bytes());
        put(32, &self.session_count.to_le_bytes());
        put(40, &self.artifact_count.to_le_bytes());
        put(48, &self.min_expires_at_secs.to_le_bytes());
        put(56, &self.max_expires_at_secs.to_le_bytes());
        put(64, &self.slot_count.to_le_bytes());
        put(72, &self.records_offset.to_le_bytes());
        put(80, &self.records_bytes.to_le_bytes());
        put(88, &self.index_xxh3.to_le_bytes());
        put(96, &self.body_xxh3.to_le_bytes());
        put(104, &self.revocation_count.to_le_bytes());
        put(112, &self.flags.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(h.get(..120).unwrap_or(&[]));
        if let Some(d) = h.get_mut(120..128) {
            d.copy_from_slice(&sum.to_le_bytes());
        }
        h
    }

    /// Decodes and checks a header against the file length: magic, version, header checksum,
    /// and that the declared regions tile the file. Cheap: touches only the first 128 bytes.
    pub fn decode(b: &[u8]) -> Result<Header, SegmentError> {
        let h = b
            .get(..HEADER_BYTES)
            .ok_or(SegmentError::Truncated { what: "header" })?;
        if h.get(..8) != Some(&MAGIC[..]) {
            return Err(SegmentError::BadMagic);
        }
        let version = le_u32(h, 8);
        if version > FORMAT_VERSION {
            return Err(SegmentError::NewerFormat {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if xxhash_rust::xxh3::xxh3_64(h.get(..120).unwrap_or(&[])) != le_u64(h, 120) {
            return Err(SegmentError::Checksum { region: "header" });
        }
        if version < FORMAT_VERSION_MIN {
            return Err(SegmentError::Header {
                field: "format_version",
            });
        }
        if le_u32(h, 20) as usize != SLOT_BYTES {
            return Err(SegmentError::Header {
                field: "slot_bytes",
            });
        }
        let hd = Header {
            format_version: version,
            shard: le_u32(h, 12),
            shard_count: le_u32(h, 16),
            record_count: le_u64(h, 24),
            session_count: le_u64(h, 32),
            artifact_count: le_u64(h, 40),
            revocation_count: le_u64(h, 104),
            min_expires_at_secs: le_u64(h, 48) as i64,
            max_expires_at_secs: le_u64(h, 56) as i64,
            slot_count: le_u64(h, 64),
            records_offset: le_u64(h, 72),
            records_bytes: le_u64(h, 80),
            index_xxh3: le_u64(h, 88),
            body_xxh3: le_u64(h, 96),
            flags: le_u32(h, 112),
        };
        if hd.flags & !FLAGS_KNOWN != 0 || le_u32(h, 116) != 0 {
            return Err(SegmentError::Header { field: "flags" });
        }
        if hd.shard_count == 0 || hd.shard >= hd.shard_count {
            return Err(SegmentError::Header { field: "shard" });
        }
        if !hd.slot_count.is_power_of_two() || hd.slot_count > limits::STORE_SEGMENT_SLOTS_MAX {
            return Err(SegmentError::Header {
                field: "slot_count",
            });
        }
        // Probing stops at an empty slot: at least one must exist.
        if hd.record_count >= hd.slot_count {
            return Err(SegmentError::Header {
                field: "record_count",
            });
        }
        let counted = hd
            .session_count
            .checked_add(hd.artifact_count)
            .and_then(|n| n.checked_add(hd.revocation_count));
        if counted != Some(hd.record_count) {
            return Err(SegmentError::Header {
                field: "session_count",
            });
        }
        let index_end = (HEADER_BYTES as u64)
            .checked_add(hd.slot_count.saturating_mul(SLOT_BYTES as u64))
            .ok_or(SegmentError::Header {
                field: "slot_count",
            })?;
        let tables_end = if hd.has_revocation_directory() {
            hd.revocation_count
                .checked_add(1)
                .and_then(|n| n.checked_mul(DIRECTORY_ENTRY_BYTES))
                .and_then(|n| n.checked_add(index_end))
                .ok_or(SegmentError::Header {
                    field: "revocation_count",
                })?
        } else {
            index_end
        };
        if hd.records_offset < tables_end || !hd.records_offset.is_multiple_of(RECORD_ALIGN as u64)
        {
            return Err(SegmentError::Header {
                field: "records_offset",
            });
        }
        let end = hd.records_offset.checked_add(hd.records_bytes);
        if end != Some(b.len() as u64) {
            return Err(SegmentError::Truncated {
                what: "records region",
            });
        }
        Ok(hd)
    }

    fn index_range(&self) -> (usize, usize) {
        let len = (self.slot_count as usize).saturating_mul(SLOT_BYTES);
        (HEADER_BYTES, HEADER_BYTES.saturating_add(len))
    }

    /// Whether the segment carries a revocation directory after its index.
    pub fn has_revocation_directory(&self) -> bool {
        self.flags & FLAG_REVOCATION_DIRECTORY != 0
    }

    /// Byte range of the revocation directory's entries, and where its checksum sits. `None`
    /// without a directory (or if the range does not fit this platform; `decode` has checked
    /// that it fits the file).
    fn directory_range(&self) -> Option<(usize, usize)> {
        if !self.has_revocation_directory() {
            return None;
        }
        let (_, start) = self.index_range();
        let len = usize::try_from(self.revocation_count)
            .ok()?
            .checked_mul(DIRECTORY_ENTRY_BYTES as usize)?;
        Some((start, start.checked_add(len)?))
    }
}

/// The slot numbers a segment's revocation directory lists, checked as far as is possible
/// without reading the whole index: the directory's checksum, entries strictly ascending and
/// inside the index, and each named slot occupied by a revocation record. `None` when the
/// segment has no directory; `Err` when it has one that fails a check (the caller falls back
/// to scanning the index; full validation refuses the segment).
fn revocation_directory(b: &[u8], h: &Header) -> Option<Result<Vec<u64>, &'static str>> {
    let (start, end) = h.directory_range()?;
    let check = || {
        let entries = b.get(start..end).ok_or("outside the file")?;
        if xxhash_rust::xxh3::xxh3_64(entries) != le_u64(b, end) {
            return Err("checksum");
        }
        let mut slots = Vec::with_capacity(entries.len() / DIRECTORY_ENTRY_BYTES as usize);
        for e in entries.chunks_exact(DIRECTORY_ENTRY_BYTES as usize) {
            let i = le_u64(e, 0);
            if i >= h.slot_count || slots.last().is_some_and(|&prev| prev >= i) {
                return Err("entry out of order or outside the index");
            }
            match read_slot(b, h, i) {
                Some(s) if s.claim.len != 0 && s.claim.kind == kind::REVOCATION => slots.push(i),
                _ => return Err("entry names a slot that holds no revocation"),
            }
        }
        Ok(slots)
    };
    Some(check())
}

/// One decoded index slot. `len == 0` marks an empty slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    key: u128,
    claim: SlotClaim,
}

fn read_slot(b: &[u8], h: &Header, i: u64) -> Option<Slot> {
    let at = HEADER_BYTES.checked_add(usize::try_from(i).ok()?.checked_mul(SLOT_BYTES)?)?;
    let s = b.get(at..at.checked_add(SLOT_BYTES)?)?;
    let (lo, hi) = (le_u64(s, 0), le_u64(s, 8));
    let _ = h;
    Some(Slot {
        key: u128::from(lo) | (u128::from(hi) << 64),
        claim: SlotClaim {
            offset: le_u64(s, 16),
            len: le_u32(s, 24),
            kind: *s.get(28)?,
            xxh3: le_u64(s, 32),
        },
    })
}

fn encode_slot(out: &mut [u8], slot: &Slot) {
    let mut put = |at: usize, v: &[u8]| {
        if let Some(d) = out.get_mut(at..at + v.len()) {
            d.copy_from_slice(v);
        }
    };
    put(0, &(slot.key as u64).to_le_bytes());
    put(8, &((slot.key >> 64) as u64).to_le_bytes());
    put(16, &slot.claim.offset.to_le_bytes());
    put(24, &slot.claim.len.to_le_bytes());
    put(28, &[slot.claim.kind]);
    put(32, &slot.claim.xxh3.to_le_bytes());
}

/// What [`check_layout`] found.
struct Layout {
    header: Header,
    /// Where the records region starts.
    records_start: usize,
    /// Occupied slots: (slot number, slot).
    occupied: Vec<(u64, Slot)>,
}

/// The checks of a segment's bytes that do not depend on its record format: header, index
/// checksum, body checksum, slot sanity and counts.
fn check_layout(b: &[u8]) -> Result<Layout, SegmentError> {
    let h = Header::decode(b)?;
    let (ia, ib) = h.index_range();
    let index = b
        .get(ia..ib)
        .ok_or(SegmentError::Truncated { what: "index" })?;
    if xxhash_rust::xxh3::xxh3_64(index) != h.index_xxh3 {
        return Err(SegmentError::Checksum { region: "index" });
    }
    let records_start = usize::try_from(h.records_offset).map_err(|_| SegmentError::Header {
        field: "records_offset",
    })?;
    let body = b
        .get(records_start..)
        .ok_or(SegmentError::Truncated { what: "records" })?;
    if xxhash_rust::xxh3::xxh3_64(body) != h.body_xxh3 {
        return Err(SegmentError::Checksum { region: "body" });
    }
    let mut occupied = Vec::with_capacity(usize::try_from(h.record_count).unwrap_or(0));
    let (mut sessions, mut artifacts, mut revocations) = (0u64, 0u64, 0u64);
    for i in 0..h.slot_count {
        let slot = read_slot(b, &h, i).ok_or(SegmentError::Truncated { what: "index" })?;
        if slot.claim.len == 0 {
            continue;
        }
        match slot.claim.kind {
            kind::SESSION => sessions += 1,
            kind::ARTIFACT => artifacts += 1,
            kind::REVOCATION if h.format_version >= 2 => revocations += 1,
            _ => {
                return Err(SegmentError::Slot {
                    slot: i,
                    reason: "unknown kind",
                });
            }
        }
        // A key must sit in its home slot or after it in its probe run; otherwise a lookup
        // would not find it. Checked cheaply: the home slot is occupied.
        let home = slot.key as u64 & (h.slot_count - 1);
        if read_slot(b, &h, home).is_none_or(|s| s.claim.len == 0) {
            return Err(SegmentError::Slot {
                slot: i,
                reason: "home slot empty",
            });
        }
        occupied.push((i, slot));
    }
    if sessions != h.session_count
        || artifacts != h.artifact_count
        || revocations != h.revocation_count
    {
        return Err(SegmentError::Header {
            field: "record_count",
        });
    }
    // The directory must list exactly the revocation slots the scan found (its count is the
    // header's, which the scan just matched; ascending order makes the lists comparable).
    let tables_end = match revocation_directory(b, &h) {
        None => ib,
        Some(Err(reason)) => return Err(SegmentError::Directory { reason }),
        Some(Ok(listed)) => {
            let found = occupied
                .iter()
                .filter(|(_, s)| s.claim.kind == kind::REVOCATION)
                .map(|(i, _)| *i);
            if !listed.iter().copied().eq(found) {
                return Err(SegmentError::Directory {
                    reason: "does not list exactly the revocation slots",
                });
            }
            h.directory_range()
                .and_then(|(_, end)| end.checked_add(DIRECTORY_ENTRY_BYTES as usize))
                .ok_or(SegmentError::Truncated { what: "directory" })?
        }
    };
    // No byte of the file escapes a checksum or a check: the padding before the records is zero.
    let padding = b
        .get(tables_end..records_start)
        .ok_or(SegmentError::Truncated { what: "padding" })?;
    if padding.iter().any(|&x| x != 0) {
        return Err(SegmentError::Header {
            field: "records_offset",
        });
    }
    Ok(Layout {
        header: h,
        records_start,
        occupied,
    })
}

/// Full validation of a current-format segment's bytes: the layout checks, then every record
/// through its checksum and rkyv's checked access.
pub fn validate(backing: &Backing) -> Result<(Header, ValidatedSegment), SegmentError> {
    validate_paced(backing, &mut |_| true)?.ok_or(SegmentError::Record {
        slot: 0,
        reason: "validation stopped",
    })
}

/// [`validate`] for a background thread: `tick` is told each checked record's length and
/// answers whether to go on; `Ok(None)` when it said stop.
pub fn validate_paced(
    backing: &Backing,
    tick: &mut dyn FnMut(usize) -> bool,
) -> Result<Option<(Header, ValidatedSegment)>, SegmentError> {
    let b = backing.bytes();
    let Layout {
        header: h,
        records_start,
        occupied,
    } = check_layout(b)?;
    if h.format_version != FORMAT_VERSION {
        return Err(SegmentError::OlderFormat {
            found: h.format_version,
        });
    }
    let proof = ValidatedSegment::prove_paced(
        backing,
        records_start,
        b.len(),
        occupied.iter().map(|(_, s)| s.claim),
        tick,
    )
    .map_err(|n| SegmentError::Record {
        slot: occupied.get(n).map_or(0, |(i, _)| *i),
        reason: "checksum or archive validation failed",
    })?;
    Ok(proof.map(|p| (h, p)))
}

/// A record to write into a new segment.
pub struct BuildRecord<'a> {
    /// Routing key.
    pub key: RecordKey,
    /// `kind::SESSION`, `kind::ARTIFACT` or `kind::REVOCATION`.
    pub kind: u8,
    /// Archived bytes (copied verbatim: rkyv archives are position-independent).
    pub bytes: &'a [u8],
    /// Expiry, for the header's min/max.
    pub expires_at_secs: i64,
}

/// Builds the bytes of a segment file for `shard`, with its revocation directory. Keys must be
/// unique.
pub fn build(shard: u32, shard_count: u32, records: &[BuildRecord<'_>]) -> Vec<u8> {
    build_with(shard, shard_count, records, Directory::Write)
}

/// Builds a segment as builds before the revocation directory did: flag clear, records right
/// after the index. For tests of the fallback only; this build never writes one to a store.
#[doc(hidden)]
pub fn build_without_revocation_directory(
    shard: u32,
    shard_count: u32,
    records: &[BuildRecord<'_>],
) -> Vec<u8> {
    build_with(shard, shard_count, records, Directory::Omit)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Directory {
    Write,
    Omit,
}

fn build_with(
    shard: u32,
    shard_count: u32,
    records: &[BuildRecord<'_>],
    directory: Directory,
) -> Vec<u8> {
    let n = records.len() as u64;
    let slot_count = (n.saturating_mul(2)).max(2).next_power_of_two();
    let index_len = slot_count as usize * SLOT_BYTES;
    let revocations = records
        .iter()
        .filter(|r| r.kind == kind::REVOCATION)
        .count();
    // The directory: one slot number per revocation record, then the xxh3 of those entries.
    let directory_at = HEADER_BYTES + index_len;
    let directory_len = match directory {
        Directory::Write => (revocations + 1) * DIRECTORY_ENTRY_BYTES as usize,
        Directory::Omit => 0,
    };
    let records_offset = (directory_at + directory_len).next_multiple_of(RECORD_ALIGN);
    let body_len: usize = records
        .iter()
        .map(|r| r.bytes.len().next_multiple_of(RECORD_ALIGN))
        .sum();
    let mut out = vec![0u8; records_offset + body_len];
    let (mut min_exp, mut max_exp) = (i64::MAX, i64::MIN);
    let (mut sessions, mut artifacts) = (0u64, 0u64);
    let mut revocation_slots: Vec<u64> = Vec::with_capacity(revocations);
    let mut at = records_offset;
    let mask = slot_count - 1;
    for r in records {
        debug_assert!(matches!(
            r.kind,
            kind::SESSION | kind::ARTIFACT | kind::REVOCATION
        ));
        match r.kind {
            kind::SESSION => sessions += 1,
            kind::ARTIFACT => artifacts += 1,
            _ => {}
        }
        min_exp = min_exp.min(r.expires_at_secs);
        max_exp = max_exp.max(r.expires_at_secs);
        if let Some(d) = out.get_mut(at..at + r.bytes.len()) {
            d.copy_from_slice(r.bytes);
        }
        let slot = Slot {
            key: r.key.0,
            claim: SlotClaim {
                kind: r.kind,
                offset: at as u64,
                len: r.bytes.len() as u32,
                xxh3: xxhash_rust::xxh3::xxh3_64(r.bytes),
            },
        };
        let mut i = r.key.slot_hash() & mask;
        loop {
            let sa = HEADER_BYTES + i as usize * SLOT_BYTES;
            let Some(dst) = out.get_mut(sa..sa + SLOT_BYTES) else {
                break;
            };
            // Length bytes 24..28 are zero only in an empty slot.
            if dst.get(24..28) == Some(&[0, 0, 0, 0][..]) {
                encode_slot(dst, &slot);
                // A placed slot never moves (linear probing only fills empty slots), so its
                // number is final here.
                if r.kind == kind::REVOCATION {
                    revocation_slots.push(i);
                }
                break;
            }
            i = (i + 1) & mask;
        }
        at += r.bytes.len().next_multiple_of(RECORD_ALIGN);
    }
    debug_assert_eq!(revocation_slots.len(), revocations);
    let mut flags = 0;
    if directory == Directory::Write {
        revocation_slots.sort_unstable();
        let entries_end = directory_at + revocations * DIRECTORY_ENTRY_BYTES as usize;
        if let Some(d) = out.get_mut(directory_at..entries_end) {
            for (e, slot) in d
                .chunks_exact_mut(DIRECTORY_ENTRY_BYTES as usize)
                .zip(&revocation_slots)
            {
                e.copy_from_slice(&slot.to_le_bytes());
            }
        }
        let sum = xxhash_rust::xxh3::xxh3_64(out.get(directory_at..entries_end).unwrap_or(&[]));
        if let Some(d) = out.get_mut(entries_end..entries_end + DIRECTORY_ENTRY_BYTES as usize) {
            d.copy_from_slice(&sum.to_le_bytes());
        }
        flags |= FLAG_REVOCATION_DIRECTORY;
    }
    let index_xxh3 = xxhash_rust::xxh3::xxh3_64(
        out.get(HEADER_BYTES..HEADER_BYTES + index_len)
            .unwrap_or(&[]),
    );
    let body_xxh3 = xxhash_rust::xxh3::xxh3_64(out.get(records_offset..).unwrap_or(&[]));
    let header = Header {
        format_version: FORMAT_VERSION,
        shard,
        shard_count,
        record_count: n,
        session_count: sessions,
        artifact_count: artifacts,
        revocation_count: revocations as u64,
        min_expires_at_secs: min_exp,
        max_expires_at_secs: max_exp,
        slot_count,
        records_offset: records_offset as u64,
        records_bytes: body_len as u64,
        index_xxh3,
        body_xxh3,
        flags,
    };
    if let Some(d) = out.get_mut(..HEADER_BYTES) {
        d.copy_from_slice(&header.encode());
    }
    out
}

/// What a lookup in one segment found.
pub enum Found {
    /// A record with this key, proven.
    Record(RecordBytes),
    /// No slot holds this key.
    Absent,
    /// A slot holds this key but its record failed its checksum or validation: treated as
    /// missing by the caller, and counted.
    Corrupt,
}

/// An open segment: its mapping, decoded header, and (once done) its validation proof.
pub struct Segment {
    backing: Arc<Backing>,
    header: Header,
    proof: OnceLock<ValidatedSegment>,
    /// Set when background validation failed: the segment stops serving.
    failed: AtomicBool,
    corrupt_reads: AtomicU64,
    path: PathBuf,
    generation: u64,
}

impl Segment {
    /// Opens over bytes already in memory or mapped. Decodes the header; validates everything
    /// now when `validate_now` is `Validate::Now`, else leaves that to [`Segment::validate`].
    pub fn from_backing(
        backing: Backing,
        path: PathBuf,
        generation: u64,
        when: Validate,
    ) -> Result<Segment, SegmentError> {
        let header = Header::decode(backing.bytes())?;
        // An older format's records are other types: they are never served in place, only
        // converted (`upgrade`), so a v1 archive can never be read as a v2 one.
        if header.format_version != FORMAT_VERSION {
            return Err(SegmentError::OlderFormat {
                found: header.format_version,
            });
        }
        let seg = Segment {
            backing: Arc::new(backing),
            header,
            proof: OnceLock::new(),
            failed: AtomicBool::new(false),
            corrupt_reads: AtomicU64::new(0),
            path,
            generation,
        };
        if when == Validate::Now {
            seg.validate()?;
        }
        Ok(seg)
    }

    /// Maps and opens a segment file, validating it in full now or leaving that for later.
    pub fn open(path: &Path, generation: u64, when: Validate) -> Result<Segment, OpenSegmentError> {
        let file = File::open(path).map_err(OpenSegmentError::Io)?;
        let len = file.metadata().map_err(OpenSegmentError::Io)?.len();
        if len < HEADER_BYTES as u64 {
            return Err(OpenSegmentError::Invalid(SegmentError::Truncated {
                what: "header",
            }));
        }
        let backing = super::mapped::map_file(&file).map_err(OpenSegmentError::Io)?;
        Segment::from_backing(backing, path.to_path_buf(), generation, when)
            .map_err(OpenSegmentError::Invalid)
    }

    /// Opens a segment of any readable format for reading only (`inspect`): a current one is
    /// mapped; an older one is read, converted in memory (`upgrade`) and served from the heap.
    /// Writes nothing.
    pub fn open_converting(path: &Path, generation: u64) -> Result<Segment, OpenSegmentError> {
        match Segment::open(path, generation, Validate::Later) {
            Err(OpenSegmentError::Invalid(SegmentError::OlderFormat { .. })) => {
                let bytes = std::fs::read(path).map_err(OpenSegmentError::Io)?;
                let v2 = upgrade(&bytes).map_err(OpenSegmentError::Invalid)?;
                Segment::from_backing(
                    Backing::Heap(aligned_copy(&v2)),
                    path.to_path_buf(),
                    generation,
                    Validate::Now,
                )
                .map_err(OpenSegmentError::Invalid)
            }
            other => other,
        }
    }

    /// Runs full validation if not done yet. On failure the segment stops serving.
    pub fn validate(&self) -> Result<(), SegmentError> {
        self.validate_paced(&mut |_| true).map(|_| ())
    }

    /// [`Segment::validate`] for a background thread: `tick` is told each checked record's
    /// length and answers whether to go on. `Ok(true)` once validated, `Ok(false)` when `tick`
    /// stopped it (the segment goes on serving through per-read checks; nothing is recorded).
    pub fn validate_paced(
        &self,
        tick: &mut dyn FnMut(usize) -> bool,
    ) -> Result<bool, SegmentError> {
        if self.proof.get().is_some() {
            return Ok(true);
        }
        match validate_paced(&self.backing, tick) {
            Ok(Some((h, proof))) => {
                debug_assert_eq!(h, self.header);
                let _ = self.proof.set(proof);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                self.failed.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Whether full validation has completed successfully.
    pub fn is_validated(&self) -> bool {
        self.proof.get().is_some()
    }

    /// Whether background validation failed (the segment no longer serves).
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// File path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Generation number from the file name.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// File size.
    pub fn bytes_len(&self) -> u64 {
        self.backing.bytes().len() as u64
    }

    /// Reads that found a corrupt record.
    pub fn corrupt_reads(&self) -> u64 {
        self.corrupt_reads.load(Ordering::Relaxed)
    }

    /// Looks `key` up: at most `slot_count` probes, stopping at the first empty slot.
    pub fn find(&self, key: RecordKey) -> Found {
        if self.is_failed() {
            return Found::Absent;
        }
        let b = self.backing.bytes();
        let mask = self.header.slot_count - 1;
        let mut i = key.slot_hash() & mask;
        for _ in 0..self.header.slot_count {
            let Some(slot) = read_slot(b, &self.header, i) else {
                return Found::Absent;
            };
            if slot.claim.len == 0 {
                return Found::Absent;
            }
            if slot.key == key.0 {
                let rec = match self.proof.get() {
                    Some(p) => RecordBytes::from_validated(p, &self.backing, &slot.claim),
                    None => RecordBytes::check_claim(&self.backing, &slot.claim),
                };
                return match rec {
                    Some(r) => Found::Record(r),
                    None => {
                        self.corrupt_reads.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(segment = %self.path.display(), slot = i, "record failed its checksum; treated as missing");
                        Found::Corrupt
                    }
                };
            }
            i = (i + 1) & mask;
        }
        Found::Absent
    }

    /// Every revocation record, proven one by one (its xxh3 against its slot, then rkyv's
    /// checked access unless the segment is validated). Corrupt records are skipped and counted.
    ///
    /// Reads only the slots the revocation directory names: O(revocations), not O(slots).
    /// A segment without a directory (written before it existed), or whose directory fails its
    /// checks, is read by scanning every slot instead; a failed directory is also counted as a
    /// corrupt read and logged, and full validation refuses (quarantines) the segment.
    pub fn revocation_records(&self) -> impl Iterator<Item = (RecordKey, RecordBytes)> + '_ {
        let b = self.backing.bytes();
        let slots: Box<dyn Iterator<Item = u64>> = if self.is_failed() {
            Box::new(std::iter::empty())
        } else {
            match revocation_directory(b, &self.header) {
                Some(Ok(listed)) => Box::new(listed.into_iter()),
                found => {
                    if let Some(Err(reason)) = found {
                        self.corrupt_reads.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(segment = %self.path.display(), reason, "revocation directory failed its checks; scanning the index instead");
                    }
                    Box::new(0..self.header.slot_count)
                }
            }
        };
        slots.filter_map(move |i| {
            let slot = read_slot(b, &self.header, i)?;
            if slot.claim.len == 0 || slot.claim.kind != kind::REVOCATION {
                return None;
            }
            let rec = match self.proof.get() {
                Some(p) => RecordBytes::from_validated(p, &self.backing, &slot.claim),
                None => RecordBytes::check_claim(&self.backing, &slot.claim),
            };
            if rec.is_none() {
                self.corrupt_reads.fetch_add(1, Ordering::Relaxed);
            }
            Some((RecordKey(slot.key), rec?))
        })
    }

    /// Every record, proven one by one (compaction input, `inspect`). Corrupt records are
    /// skipped and counted.
    pub fn records(&self) -> impl Iterator<Item = (RecordKey, RecordBytes)> + '_ {
        let b = self.backing.bytes();
        (0..self.header.slot_count).filter_map(move |i| {
            let slot = read_slot(b, &self.header, i)?;
            if slot.claim.len == 0 {
                return None;
            }
            let rec = match self.proof.get() {
                Some(p) => RecordBytes::from_validated(p, &self.backing, &slot.claim),
                None => RecordBytes::check_claim(&self.backing, &slot.claim),
            };
            if rec.is_none() {
                self.corrupt_reads.fetch_add(1, Ordering::Relaxed);
            }
            Some((RecordKey(slot.key), rec?))
        })
    }
}

/// Converts the bytes of a segment written by an older format into the bytes of an
/// equivalent current-format segment: same shard, same keys, every record converted by
/// `format::upgrade_record`. The old segment is checked as fully as a current one (header,
/// index and body checksums, slots, every record's checksum and rkyv's checked access of its
/// old type); any failure is an error and converts nothing.
pub fn upgrade(bytes: &[u8]) -> Result<Vec<u8>, SegmentError> {
    // Offsets in the file are RECORD_ALIGN multiples; an aligned copy keeps records aligned.
    let b = aligned_copy(bytes);
    let Layout {
        header: h,
        records_start,
        occupied,
    } = check_layout(&b)?;
    if h.format_version == FORMAT_VERSION {
        // Nothing to convert, but the same promise: what comes out validates. (Found by the
        // `store_segment_upgrade` fuzz target: a current-format segment whose records fail
        // validation was passed through unchecked.)
        validate(&Backing::Heap(b))?;
        return Ok(bytes.to_vec());
    }
    let mut converted = Vec::with_capacity(occupied.len());
    for (i, slot) in &occupied {
        let bad = |reason| SegmentError::Record { slot: *i, reason };
        let off = usize::try_from(slot.claim.offset).map_err(|_| bad("offset"))?;
        let end = off
            .checked_add(slot.claim.len as usize)
            .ok_or(bad("length"))?;
        if off < records_start || !off.is_multiple_of(RECORD_ALIGN) {
            return Err(bad("offset"));
        }
        let rec = b.get(off..end).ok_or(bad("length"))?;
        if xxhash_rust::xxh3::xxh3_64(rec) != slot.claim.xxh3 {
            return Err(bad("checksum"));
        }
        let new = format::upgrade_record(h.format_version, slot.claim.kind, rec)
            .map_err(|_| bad("not a valid archive of its format version"))?;
        let proven = RecordBytes::check_owned(slot.claim.kind, new)
            .ok_or(bad("converted record failed validation"))?;
        let exp = record_expires_at(&proven).ok_or(bad("kind"))?;
        converted.push((RecordKey(slot.key), proven, exp));
    }
    converted.sort_by_key(|(k, _, _)| *k);
    let input: Vec<BuildRecord<'_>> = converted
        .iter()
        .map(|(k, r, exp)| BuildRecord {
            key: *k,
            kind: r.kind(),
            bytes: r.bytes(),
            expires_at_secs: *exp,
        })
        .collect();
    Ok(build(h.shard, h.shard_count, &input))
}

/// The expiry of a proven record of any kind.
pub fn record_expires_at(rec: &RecordBytes) -> Option<i64> {
    match rec.kind() {
        kind::SESSION => rec.clone().into_session().map(|s| s.expires_at_secs()),
        kind::ARTIFACT => rec.clone().into_artifact().map(|a| a.expires_at_secs()),
        kind::REVOCATION => rec.clone().into_revocation().map(|r| r.expires_at_secs()),
        _ => None,
    }
}

/// When to run full validation of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validate {
    /// Before it serves.
    Now,
    /// By a later call to [`Segment::validate`]; until then every read is checked access.
    Later,
}

/// Why a segment file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenSegmentError {
    /// Reading or mapping failed.
    #[error("segment I/O: {0}")]
    Io(std::io::Error),
    /// The bytes are not a valid segment.
    #[error("segment invalid: {0}")]
    Invalid(SegmentError),
}

/// Recomputes the index, body and header checksums of `bytes` in place, where the header's
/// declared geometry fits. For fuzzing and tests: it lets mutated segments reach slot and
/// record validation instead of stopping at a checksum.
#[doc(hidden)]
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() < HEADER_BYTES {
        return;
    }
    let slot_count = le_u64(bytes, 64);
    let records_offset = le_u64(bytes, 72);
    let index_end =
        (slot_count.saturating_mul(SLOT_BYTES as u64)).saturating_add(HEADER_BYTES as u64);
    if let (Ok(ie), Ok(ro)) = (usize::try_from(index_end), usize::try_from(records_offset)) {
        if let Some(index) = bytes.get(HEADER_BYTES..ie) {
            let sum = xxhash_rust::xxh3::xxh3_64(index);
            if let Some(d) = bytes.get_mut(88..96) {
                d.copy_from_slice(&sum.to_le_bytes());
            }
        }
        if let Some(body) = bytes.get(ro..) {
            let sum = xxhash_rust::xxh3::xxh3_64(body);
            if let Some(d) = bytes.get_mut(96..104) {
                d.copy_from_slice(&sum.to_le_bytes());
            }
        }
    }
    if le_u32(bytes, 112) & FLAG_REVOCATION_DIRECTORY != 0 {
        let start = index_end;
        let end = le_u64(bytes, 104)
            .saturating_mul(DIRECTORY_ENTRY_BYTES)
            .saturating_add(start);
        if let (Ok(s), Ok(e)) = (usize::try_from(start), usize::try_from(end))
            && let Some(entries) = bytes.get(s..e)
        {
            let sum = xxhash_rust::xxh3::xxh3_64(entries);
            if let Some(d) = e.checked_add(8).and_then(|end8| bytes.get_mut(e..end8)) {
                d.copy_from_slice(&sum.to_le_bytes());
            }
        }
    }
    let sum = xxhash_rust::xxh3::xxh3_64(bytes.get(..120).unwrap_or(&[]));
    if let Some(d) = bytes.get_mut(120..128) {
        d.copy_from_slice(&sum.to_le_bytes());
    }
}

/// Copies `bytes` into a buffer aligned as records need (fuzzing, tests, `inspect` of
/// fixtures).
pub fn aligned_copy(bytes: &[u8]) -> AlignedVec<RECORD_ALIGN> {
    let mut v = AlignedVec::<RECORD_ALIGN>::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::DiskSession;
    use crate::store::testutil::sample_snapshot;

    fn records(n: u64) -> Vec<(RecordKey, AlignedVec<RECORD_ALIGN>)> {
        (0..n)
            .map(|i| {
                let s = DiskSession::from_snapshot(&sample_snapshot(i, 1000 + i as i64));
                let key = RecordKey(
                    u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                );
                (key, rkyv::to_bytes::<rkyv::rancor::Error>(&s).unwrap())
            })
            .collect()
    }

    /// Regression (fuzz target `store_segment_upgrade`, seed
    /// `current_format_with_an_invalid_record`): `upgrade` passed a current-format segment
    /// through without validating its records, so its output could fail validation.
    #[test]
    fn upgrade_validates_a_current_format_segment_instead_of_passing_it_through() {
        let (_, good) = built(3);
        assert_eq!(upgrade(&good).as_deref(), Ok(&good[..]));
        let input = include_bytes!(
            "../../fuzz/corpus-seed/store_segment_upgrade/current_format_with_an_invalid_record"
        );
        let mut bytes = input[1..].to_vec();
        reseal(&mut bytes);
        assert!(matches!(upgrade(&bytes), Err(SegmentError::Record { .. })));
        crate::fuzzing::store::segment_upgrade(input);
    }

    fn built(n: u64) -> (Vec<(RecordKey, AlignedVec<RECORD_ALIGN>)>, Vec<u8>) {
        let recs = records(n);
        let input: Vec<BuildRecord<'_>> = recs
            .iter()
            .enumerate()
            .map(|(i, (k, b))| BuildRecord {
                key: *k,
                kind: kind::SESSION,
                bytes: b,
                expires_at_secs: 1000 + i as i64,
            })
            .collect();
        let bytes = build(3, 8, &input);
        (recs, bytes)
    }

    #[test]
    fn built_segment_validates_and_finds_every_key() {
        let (recs, bytes) = built(20);
        let seg = Segment::from_backing(
            Backing::Heap(aligned_copy(&bytes)),
            PathBuf::new(),
            1,
            Validate::Now,
        )
        .unwrap();
        assert_eq!(seg.header().record_count, 20);
        assert_eq!(seg.header().min_expires_at_secs, 1000);
        assert_eq!(seg.header().max_expires_at_secs, 1019);
        for (i, (k, _)) in recs.iter().enumerate() {
            let Found::Record(r) = seg.find(*k) else {
                panic!("missing {i}")
            };
            assert_eq!(r.into_session().unwrap().user.as_str(), format!("user-{i}"));
        }
        assert!(matches!(seg.find(RecordKey(12345)), Found::Absent));
        assert_eq!(seg.records().count(), 20);
    }

    #[test]
    fn unvalidated_segment_serves_through_checked_access() {
        let (recs, bytes) = built(5);
        let seg = Segment::from_backing(
            Backing::Heap(aligned_copy(&bytes)),
            PathBuf::new(),
            1,
            Validate::Later,
        )
        .unwrap();
        assert!(!seg.is_validated());
        assert!(matches!(seg.find(recs[2].0), Found::Record(_)));
        seg.validate().unwrap();
        assert!(seg.is_validated());
    }

    #[test]
    fn a_paced_validation_told_to_stop_proves_nothing_and_a_later_one_finishes() {
        let (recs, bytes) = built(5);
        let seg = open_heap(&bytes, Validate::Later).unwrap();
        let mut seen = Vec::new();
        let stopped = seg
            .validate_paced(&mut |n| {
                seen.push(n);
                seen.len() < 2
            })
            .unwrap();
        assert!(!stopped, "the tick said stop after two records");
        assert_eq!(seen.len(), 2);
        assert!(!seg.is_validated() && !seg.is_failed());
        assert!(matches!(seg.find(recs[1].0), Found::Record(_)));

        let mut total = 0;
        assert!(
            seg.validate_paced(&mut |n| {
                total += n;
                true
            })
            .unwrap()
        );
        assert!(seg.is_validated());
        let records: usize = recs.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(total, records, "the tick is told every record's length");
    }

    #[test]
    fn empty_segment_is_valid() {
        let bytes = build(0, 1, &[]);
        let seg = Segment::from_backing(
            Backing::Heap(aligned_copy(&bytes)),
            PathBuf::new(),
            1,
            Validate::Now,
        )
        .unwrap();
        assert!(matches!(seg.find(RecordKey(1)), Found::Absent));
    }

    #[test]
    fn every_flipped_byte_is_refused_or_harmless() {
        // A flip anywhere must make validation fail: header, index and body all carry checksums.
        let (_, bytes) = built(3);
        for at in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            let r = Segment::from_backing(
                Backing::Heap(aligned_copy(&b)),
                PathBuf::new(),
                1,
                Validate::Now,
            );
            assert!(r.is_err(), "flip at {at} accepted");
        }
    }

    #[test]
    fn flipped_record_byte_is_corrupt_read_before_validation() {
        let (recs, bytes) = built(4);
        let seg0 = Segment::from_backing(
            Backing::Heap(aligned_copy(&bytes)),
            PathBuf::new(),
            1,
            Validate::Now,
        )
        .unwrap();
        let Found::Record(r) = seg0.find(recs[1].0) else {
            panic!()
        };
        let off = r.bytes().as_ptr() as usize - seg0.backing.bytes().as_ptr() as usize;
        let mut b = bytes.clone();
        b[off + 3] ^= 1;
        let seg = Segment::from_backing(
            Backing::Heap(aligned_copy(&b)),
            PathBuf::new(),
            1,
            Validate::Later,
        )
        .unwrap();
        assert!(matches!(seg.find(recs[1].0), Found::Corrupt));
        assert_eq!(seg.corrupt_reads(), 1);
        assert!(matches!(seg.find(recs[0].0), Found::Record(_)));
        assert!(seg.validate().is_err());
        assert!(seg.is_failed());
        assert!(matches!(seg.find(recs[0].0), Found::Absent));
    }

    #[test]
    fn revocation_records_are_counted_found_and_listed_by_kind() {
        let (recs, _) = built(3);
        let ev = crate::store::format::DiskRevocation {
            id: "ev".into(),
            kind: 1,
            subject_kind: 1,
            source: 1,
            subject: "u".into(),
            time_secs: 1,
            recorded_at_secs: 2,
            expires_at_secs: 900,
        };
        let evb = rkyv::to_bytes::<rkyv::rancor::Error>(&ev).unwrap();
        let mut input: Vec<BuildRecord<'_>> = recs
            .iter()
            .map(|(k, b)| BuildRecord {
                key: *k,
                kind: kind::SESSION,
                bytes: b,
                expires_at_secs: 1000,
            })
            .collect();
        input.push(BuildRecord {
            key: RecordKey(77),
            kind: kind::REVOCATION,
            bytes: &evb,
            expires_at_secs: 900,
        });
        let bytes = build(0, 1, &input);
        let seg = Segment::from_backing(
            Backing::Heap(aligned_copy(&bytes)),
            PathBuf::new(),
            1,
            Validate::Now,
        )
        .unwrap();
        let h = *seg.header();
        assert_eq!(
            (h.record_count, h.session_count, h.revocation_count),
            (4, 3, 1)
        );
        assert_eq!(h.min_expires_at_secs, 900);
        let listed: Vec<_> = seg.revocation_records().collect();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, RecordKey(77));
        let Found::Record(r) = seg.find(RecordKey(77)) else {
            panic!("revocation not found")
        };
        assert_eq!(record_expires_at(&r), Some(900));
        assert!(r.into_revocation().unwrap().is_id("ev"));

        // A header whose revocation count disagrees with the slots is refused.
        let mut b = bytes.clone();
        b[104] = 2;
        reseal(&mut b);
        assert!(
            Segment::from_backing(
                Backing::Heap(aligned_copy(&b)),
                PathBuf::new(),
                1,
                Validate::Now
            )
            .is_err()
        );
    }

    /// Sessions and revocation events mixed, keyed so that they share probe runs.
    fn mixed(sessions: u64, events: u64) -> Vec<(RecordKey, u8, AlignedVec<RECORD_ALIGN>)> {
        let mut v: Vec<_> = records(sessions)
            .into_iter()
            .map(|(k, b)| (k, kind::SESSION, b))
            .collect();
        for i in 0..events {
            let ev = crate::store::format::DiskRevocation {
                id: format!("ev-{i}"),
                kind: 1,
                subject_kind: 1,
                source: 1,
                subject: "u".into(),
                time_secs: 1,
                recorded_at_secs: 2,
                expires_at_secs: 900,
            };
            let key = RecordKey(u128::from(i).wrapping_mul(0x517c_c1b7_2722_0a95) + 1);
            v.push((
                key,
                kind::REVOCATION,
                rkyv::to_bytes::<rkyv::rancor::Error>(&ev).unwrap(),
            ));
        }
        v
    }

    fn input(recs: &[(RecordKey, u8, AlignedVec<RECORD_ALIGN>)]) -> Vec<BuildRecord<'_>> {
        recs.iter()
            .map(|(k, kind, b)| BuildRecord {
                key: *k,
                kind: *kind,
                bytes: b,
                expires_at_secs: 1000,
            })
            .collect()
    }

    fn open_heap(bytes: &[u8], when: Validate) -> Result<Segment, SegmentError> {
        Segment::from_backing(Backing::Heap(aligned_copy(bytes)), PathBuf::new(), 1, when)
    }

    fn listed_ids(seg: &Segment) -> Vec<String> {
        let mut ids: Vec<String> = seg
            .revocation_records()
            .map(|(_, r)| r.into_revocation().unwrap().to_record().id)
            .collect();
        ids.sort();
        ids
    }

    fn directory_at(bytes: &[u8]) -> usize {
        let h = Header::decode(bytes).unwrap();
        h.index_range().1
    }

    #[test]
    fn revocation_directory_lists_exactly_the_revocation_slots() {
        let recs = mixed(200, 37);
        let bytes = build(0, 1, &input(&recs));
        let want: Vec<String> = {
            let mut v: Vec<String> = (0..37).map(|i| format!("ev-{i}")).collect();
            v.sort();
            v
        };
        for when in [Validate::Now, Validate::Later] {
            let seg = open_heap(&bytes, when).unwrap();
            assert!(seg.header().has_revocation_directory());
            assert_eq!(listed_ids(&seg), want);
            assert_eq!(seg.corrupt_reads(), 0);
        }
        // The directory is what the read used: listed slot numbers, ascending.
        let h = Header::decode(&bytes).unwrap();
        let listed = revocation_directory(&bytes, &h).unwrap().unwrap();
        assert_eq!(listed.len(), 37);
        assert!(listed.windows(2).all(|w| w[0] < w[1]));
        // An empty directory (no events) is still written and checks out.
        let none = build(0, 1, &input(&mixed(5, 0)));
        let seg = open_heap(&none, Validate::Now).unwrap();
        assert!(seg.header().has_revocation_directory());
        assert_eq!(seg.revocation_records().count(), 0);
    }

    #[test]
    fn segment_without_directory_falls_back_to_the_index_scan() {
        // As written before the directory existed (and as the v2 fixture's segments are).
        let recs = mixed(50, 9);
        let old = build_without_revocation_directory(0, 1, &input(&recs));
        let h = Header::decode(&old).unwrap();
        assert!(!h.has_revocation_directory());
        assert_eq!(h.records_offset, h.index_range().1 as u64);
        for when in [Validate::Now, Validate::Later] {
            let seg = open_heap(&old, when).unwrap();
            assert_eq!(listed_ids(&seg).len(), 9);
            assert_eq!(seg.corrupt_reads(), 0);
        }
        // The same records with a directory list the same events.
        let new = build(0, 1, &input(&recs));
        assert_eq!(
            listed_ids(&open_heap(&new, Validate::Now).unwrap()),
            listed_ids(&open_heap(&old, Validate::Now).unwrap())
        );
    }

    #[test]
    fn corrupt_revocation_directory_is_read_around_and_refused_by_validation() {
        let recs = mixed(40, 6);
        let bytes = build(0, 1, &input(&recs));
        let at = directory_at(&bytes);
        let h = Header::decode(&bytes).unwrap();
        let listed = revocation_directory(&bytes, &h).unwrap().unwrap();
        let session_slot = (0..h.slot_count)
            .find(|&i| read_slot(&bytes, &h, i).unwrap().claim.kind == kind::SESSION)
            .unwrap();
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        // Rot in an entry or in the checksum: the checksum catches it.
        let mut b = bytes.clone();
        b[at + 1] ^= 0x04;
        cases.push(("entry flipped", b));
        let mut b = bytes.clone();
        b[at + 6 * 8] ^= 0x01;
        cases.push(("checksum flipped", b));
        // Resealed (checksum right) but naming a session slot, or the same slot twice.
        let mut b = bytes.clone();
        b[at..at + 8].copy_from_slice(&session_slot.to_le_bytes());
        let mut sorted: Vec<u64> = listed[1..].to_vec();
        sorted.push(session_slot);
        sorted.sort_unstable();
        for (e, s) in b[at..at + 6 * 8].chunks_exact_mut(8).zip(&sorted) {
            e.copy_from_slice(&s.to_le_bytes());
        }
        reseal(&mut b);
        cases.push(("names a session slot", b));
        let mut b = bytes.clone();
        b[at + 8..at + 16].copy_from_slice(&listed[0].to_le_bytes());
        reseal(&mut b);
        cases.push(("repeats a slot", b));
        for (what, b) in cases {
            // Before validation: the events are still all found, by the scan, and the failed
            // directory is counted.
            let seg = open_heap(&b, Validate::Later).unwrap();
            assert_eq!(listed_ids(&seg).len(), 6, "{what}");
            assert_eq!(seg.corrupt_reads(), 1, "{what}");
            // Validation refuses the segment (open quarantines it).
            assert!(
                matches!(seg.validate(), Err(SegmentError::Directory { .. })),
                "{what}"
            );
            assert!(seg.is_failed());
            assert_eq!(seg.revocation_records().count(), 0, "{what}");
        }
        // Non-zero padding after the directory, or a flag this build does not know: refused.
        let mut b = bytes.clone();
        let pad = at + 7 * 8;
        if pad < h.records_offset as usize {
            b[pad] = 1;
            reseal(&mut b);
            assert!(open_heap(&b, Validate::Now).is_err());
        }
        let mut b = bytes.clone();
        b[112] |= 0x02;
        reseal(&mut b);
        assert!(matches!(
            open_heap(&b, Validate::Later).err(),
            Some(SegmentError::Header { field: "flags" })
        ));
        // A clear flag over a directory leaves non-zero bytes before the records: refused.
        let mut b = bytes.clone();
        b[112] &= !0x01;
        reseal(&mut b);
        assert!(open_heap(&b, Validate::Now).is_err());
    }

    #[test]
    fn newer_version_is_refused() {
        let mut b = build(0, 1, &[]);
        b[8] = 99;
        let sum = xxhash_rust::xxh3::xxh3_64(&b[..120]);
        b[120..128].copy_from_slice(&sum.to_le_bytes());
        let err = Segment::from_backing(
            Backing::Heap(aligned_copy(&b)),
            PathBuf::new(),
            1,
            Validate::Now,
        )
        .err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(
                SegmentError::NewerFormat {
                    found: 99,
                    supported: FORMAT_VERSION
                }
                .to_string()
            )
        );
    }
}
