//! The one module allowed `unsafe`: mapping segment files and reading archived records without
//! re-validating them. Everything here is small on purpose; the format logic lives in the safe
//! modules `segment` and `wal`.
//!
//! The contract, written once: a segment file is immutable after its atomic rename and nothing
//! of ours truncates or rewrites it while it is mapped. A record is reached unchecked only
//! through a [`RecordBytes`], which exists only after its bytes were proven, either by rkyv's
//! checked access (bytecheck) or, inside a [`ValidatedSegment`] whose every record passed that
//! check at open, by the per-record xxh3 checksum stored in its index slot.
#![allow(unsafe_code)]

use std::fs::File;
use std::sync::Arc;

use rkyv::rancor::Failure;
use rkyv::util::AlignedVec;

use super::format::{
    ArchivedDiskArtifact, ArchivedDiskRevocation, ArchivedDiskSession, RECORD_ALIGN, kind,
};

/// Bytes a record or segment lives in: a read-only file mapping, or an aligned heap buffer
/// (in-memory table entries, tests and Miri, fuzzing).
pub enum Backing {
    /// A read-only mapping of an immutable segment file.
    Mapped(memmap2::Mmap),
    /// A heap buffer aligned to `RECORD_ALIGN`.
    Heap(AlignedVec<RECORD_ALIGN>),
}

impl Backing {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Heap(v) => v,
        }
    }
}

/// Maps `file` read-only.
///
/// A zero-length file cannot be mapped; the caller rejects such files before this.
pub fn map_file(file: &File) -> std::io::Result<Backing> {
    // SAFETY: memmap2 requires that the file is not modified or truncated while mapped, or
    // reads become undefined (in practice: stale bytes, or SIGBUS past a truncated end). We map
    // only segment files, which are immutable after their atomic rename; nothing of ours writes,
    // truncates or reuses one (they are only unlinked, which keeps the mapping valid). What
    // remains is another process editing the data dir, which the 0700 dir and the flock guard
    // against but cannot exclude; bytes that change under us are caught by the per-record
    // checksum on every read, and a truncation would raise SIGBUS.
    let map = unsafe { memmap2::Mmap::map(file)? };
    // Random point reads over gigabytes miss the TLB on nearly every record with 4 KiB pages;
    // where the page cache holds the file in 2 MiB folios (ext4 and XFS build them for large
    // writes) this lets the kernel map them whole. Advice only: refused or unsupported, the
    // mapping works as before.
    #[cfg(target_os = "linux")]
    if let Err(e) = map.advise(memmap2::Advice::HugePage) {
        tracing::debug!(error = %e, "segment mapping: MADV_HUGEPAGE refused");
    }
    Ok(Backing::Mapped(map))
}

/// Runs rkyv's checked access for a record of `kind`. `true` when the bytes are a valid
/// archive of that kind, aligned, with its root at the end.
pub fn check_archive(kind_byte: u8, bytes: &[u8]) -> bool {
    match kind_byte {
        kind::SESSION => rkyv::access::<ArchivedDiskSession, Failure>(bytes).is_ok(),
        kind::ARTIFACT => rkyv::access::<ArchivedDiskArtifact, Failure>(bytes).is_ok(),
        kind::REVOCATION => rkyv::access::<ArchivedDiskRevocation, Failure>(bytes).is_ok(),
        _ => false,
    }
}

/// Proof that every record slot of a segment passed checksum and rkyv validation once.
/// Constructed only by [`ValidatedSegment::prove`], which does that check.
pub struct ValidatedSegment {
    records_start: usize,
    records_end: usize,
}

/// What one record slot claims: the candidate a validation or lookup is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotClaim {
    /// Record kind.
    pub kind: u8,
    /// Offset of the record in the backing.
    pub offset: u64,
    /// Length of the record.
    pub len: u32,
    /// xxh3-64 of the record bytes.
    pub xxh3: u64,
}

fn claimed_range(claim: &SlotClaim, start: usize, end: usize) -> Option<(usize, usize)> {
    let off = usize::try_from(claim.offset).ok()?;
    let len = usize::try_from(claim.len).ok()?;
    let stop = off.checked_add(len)?;
    if off < start || stop > end || len == 0 || off % RECORD_ALIGN != 0 {
        return None;
    }
    Some((off, stop))
}

impl ValidatedSegment {
    /// Checks every claimed record of a segment: in bounds of `records_start..records_end`,
    /// aligned, matching its checksum, and a valid archive of its kind. Returns the proof, or
    /// the index in `claims` of the first record that fails.
    pub fn prove(
        backing: &Backing,
        records_start: usize,
        records_end: usize,
        claims: impl Iterator<Item = SlotClaim>,
    ) -> Result<Self, usize> {
        check_claims(backing, records_start, records_end, claims, &mut |_| true)?;
        Ok(ValidatedSegment {
            records_start,
            records_end,
        })
    }

    /// [`ValidatedSegment::prove`] for a background thread: `tick` is told each checked
    /// record's length and answers whether to go on. `Ok(None)` when it said stop: nothing
    /// is proven then, and a later call starts over.
    pub fn prove_paced(
        backing: &Backing,
        records_start: usize,
        records_end: usize,
        claims: impl Iterator<Item = SlotClaim>,
        tick: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Self>, usize> {
        if !check_claims(backing, records_start, records_end, claims, tick)? {
            return Ok(None);
        }
        Ok(Some(ValidatedSegment {
            records_start,
            records_end,
        }))
    }
}

/// Checks claims in order; `Ok(false)` when `tick` stopped it before the end.
fn check_claims(
    backing: &Backing,
    records_start: usize,
    records_end: usize,
    claims: impl Iterator<Item = SlotClaim>,
    tick: &mut dyn FnMut(usize) -> bool,
) -> Result<bool, usize> {
    let bytes = backing.bytes();
    if records_end > bytes.len() || records_start > records_end {
        return Err(0);
    }
    for (i, claim) in claims.enumerate() {
        let Some((a, b)) = claimed_range(&claim, records_start, records_end) else {
            return Err(i);
        };
        let Some(rec) = bytes.get(a..b) else {
            return Err(i);
        };
        if xxhash_rust::xxh3::xxh3_64(rec) != claim.xxh3 || !check_archive(claim.kind, rec) {
            return Err(i);
        }
        if !tick(rec.len()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One record's bytes, proven to be a valid archive of `kind`. Cloning shares the backing.
#[derive(Clone)]
pub struct RecordBytes {
    backing: Arc<Backing>,
    start: usize,
    end: usize,
    kind: u8,
}

impl RecordBytes {
    /// Proves a record by rkyv's checked access, then the claimed checksum (for a segment that
    /// has not been validated as a whole yet). `None` if either fails.
    pub fn check_claim(backing: &Arc<Backing>, claim: &SlotClaim) -> Option<Self> {
        let len = backing.bytes().len();
        let (a, b) = claimed_range(claim, 0, len)?;
        let rec = backing.bytes().get(a..b)?;
        if xxhash_rust::xxh3::xxh3_64(rec) != claim.xxh3 || !check_archive(claim.kind, rec) {
            return None;
        }
        Some(RecordBytes {
            backing: Arc::clone(backing),
            start: a,
            end: b,
            kind: claim.kind,
        })
    }

    /// Proves a record of a validated segment by its checksum alone: every record of it
    /// passed rkyv validation at open, so bytes that still match the checksum are those bytes.
    pub fn from_validated(
        proof: &ValidatedSegment,
        backing: &Arc<Backing>,
        claim: &SlotClaim,
    ) -> Option<Self> {
        let (a, b) = claimed_range(claim, proof.records_start, proof.records_end)?;
        let rec = backing.bytes().get(a..b)?;
        if xxhash_rust::xxh3::xxh3_64(rec) != claim.xxh3 {
            return None;
        }
        if !matches!(
            claim.kind,
            kind::SESSION | kind::ARTIFACT | kind::REVOCATION
        ) {
            return None;
        }
        Some(RecordBytes {
            backing: Arc::clone(backing),
            start: a,
            end: b,
            kind: claim.kind,
        })
    }

    /// Proves a whole heap buffer (a WAL payload or a fresh serialization) by checked access.
    pub fn check_owned(kind_byte: u8, buf: AlignedVec<RECORD_ALIGN>) -> Option<Self> {
        if buf.is_empty() || !check_archive(kind_byte, &buf) {
            return None;
        }
        let end = buf.len();
        Some(RecordBytes {
            backing: Arc::new(Backing::Heap(buf)),
            start: 0,
            end,
            kind: kind_byte,
        })
    }

    /// The record kind.
    pub fn kind(&self) -> u8 {
        self.kind
    }

    /// The record bytes.
    pub fn bytes(&self) -> &[u8] {
        // INVARIANT: start..end was checked against the backing length at construction and
        // the backing never shrinks.
        self.backing
            .bytes()
            .get(self.start..self.end)
            .unwrap_or(&[])
    }

    /// The record as a session, if it is one.
    pub fn into_session(self) -> Option<SessionRef> {
        (self.kind == kind::SESSION).then_some(SessionRef(self))
    }

    /// The record as an artifact, if it is one.
    pub fn into_artifact(self) -> Option<ArtifactRef> {
        (self.kind == kind::ARTIFACT).then_some(ArtifactRef(self))
    }

    /// The record as a revocation event, if it is one.
    pub fn into_revocation(self) -> Option<RevocationRef> {
        (self.kind == kind::REVOCATION).then_some(RevocationRef(self))
    }
}

/// A borrowed, zero-copy view of an archived session snapshot. Holds its backing alive, so a
/// reader finishes undisturbed even after compaction swapped the segment out.
#[derive(Clone)]
pub struct SessionRef(RecordBytes);

/// A borrowed, zero-copy view of an archived artifact record.
#[derive(Clone)]
pub struct ArtifactRef(RecordBytes);

/// A borrowed, zero-copy view of an archived revocation event.
#[derive(Clone)]
pub struct RevocationRef(RecordBytes);

impl std::ops::Deref for SessionRef {
    type Target = ArchivedDiskSession;
    fn deref(&self) -> &ArchivedDiskSession {
        // SAFETY: a RecordBytes of kind SESSION exists only after its exact bytes passed
        // `rkyv::access::<ArchivedDiskSession>` (check_claim, check_owned, or
        // ValidatedSegment::prove followed by an xxh3 match in from_validated), so a valid
        // archived session lies at the end of the slice. The slice starts RECORD_ALIGN-aligned
        // in a page-aligned mapping or a RECORD_ALIGN-aligned buffer, which bytecheck verified
        // as well. The backing is immutable and kept alive by the Arc we hold.
        unsafe { rkyv::access_unchecked::<ArchivedDiskSession>(self.0.bytes()) }
    }
}

impl std::ops::Deref for ArtifactRef {
    type Target = ArchivedDiskArtifact;
    fn deref(&self) -> &ArchivedDiskArtifact {
        // SAFETY: as for SessionRef, with kind ARTIFACT proven by
        // `rkyv::access::<ArchivedDiskArtifact>` on the same bytes.
        unsafe { rkyv::access_unchecked::<ArchivedDiskArtifact>(self.0.bytes()) }
    }
}

impl std::ops::Deref for RevocationRef {
    type Target = ArchivedDiskRevocation;
    fn deref(&self) -> &ArchivedDiskRevocation {
        // SAFETY: as for SessionRef, with kind REVOCATION proven by
        // `rkyv::access::<ArchivedDiskRevocation>` on the same bytes.
        unsafe { rkyv::access_unchecked::<ArchivedDiskRevocation>(self.0.bytes()) }
    }
}

impl SessionRef {
    /// The record bytes (for copying into a new segment).
    pub fn record(&self) -> &RecordBytes {
        &self.0
    }
}

impl ArtifactRef {
    /// The record bytes (for copying into a new segment).
    pub fn record(&self) -> &RecordBytes {
        &self.0
    }
}

// These tests run on heap buffers only (no mmap), so Miri can check every unsafe access:
// `cargo +nightly miri test --lib store::mapped`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::{DiskArtifact, DiskSession};
    use crate::store::testutil::sample_snapshot;

    fn session_bytes() -> AlignedVec<RECORD_ALIGN> {
        let s = DiskSession::from_snapshot(&sample_snapshot(1, 100));
        rkyv::to_bytes::<rkyv::rancor::Error>(&s).unwrap()
    }

    /// The `VmFlags` line of the mapping that holds `addr` (`/proc/self/smaps`).
    #[cfg(target_os = "linux")]
    fn vm_flags_at(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split(' ').next().and_then(|r| r.split_once('-'));
            if let Some((a, b)) = range
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&addr);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.trim().to_string();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_mapped_segment_asks_for_huge_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        let backing = map_file(&File::open(&path).unwrap()).unwrap();
        assert_eq!(backing.bytes().len(), 3 << 20);
        let flags = vm_flags_at(backing.bytes().as_ptr() as usize);
        assert!(
            flags.split(' ').any(|f| f == "hg"),
            "MADV_HUGEPAGE not applied: {flags}"
        );
    }

    #[test]
    fn owned_session_reads_back_unchecked() {
        let rb = RecordBytes::check_owned(kind::SESSION, session_bytes()).unwrap();
        let s = rb.into_session().unwrap();
        assert_eq!(s.user.as_str(), "user-1");
        assert_eq!(s.expires_at_secs(), 100);
    }

    #[test]
    fn kind_mismatch_is_refused() {
        assert!(RecordBytes::check_owned(kind::ARTIFACT, session_bytes()).is_none());
        let rb = RecordBytes::check_owned(kind::SESSION, session_bytes()).unwrap();
        assert!(rb.into_artifact().is_none());
    }

    #[test]
    fn garbage_is_refused() {
        let mut v = AlignedVec::<RECORD_ALIGN>::new();
        v.extend_from_slice(&[0xff; 64]);
        assert!(RecordBytes::check_owned(kind::SESSION, v).is_none());
    }

    #[test]
    fn claim_in_buffer_checks_bounds_alignment_and_checksum() {
        let rec = session_bytes();
        let mut buf = AlignedVec::<RECORD_ALIGN>::new();
        buf.extend_from_slice(&[0u8; 32]);
        buf.extend_from_slice(&rec);
        let backing = Arc::new(Backing::Heap(buf));
        let good = SlotClaim {
            kind: kind::SESSION,
            offset: 32,
            len: u32::try_from(rec.len()).unwrap(),
            xxh3: xxhash_rust::xxh3::xxh3_64(&rec),
        };
        let proof =
            ValidatedSegment::prove(&backing, 32, backing.bytes().len(), [good].into_iter())
                .unwrap();
        let s = RecordBytes::from_validated(&proof, &backing, &good).unwrap();
        assert_eq!(s.into_session().unwrap().tenant.as_str(), "tenant");
        assert!(RecordBytes::check_claim(&backing, &good).is_some());
        for bad in [
            SlotClaim { offset: 31, ..good },
            SlotClaim {
                xxh3: good.xxh3 ^ 1,
                ..good
            },
            SlotClaim {
                len: good.len + 1,
                ..good
            },
            SlotClaim {
                offset: u64::MAX - 3,
                ..good
            },
        ] {
            assert!(
                RecordBytes::check_claim(&backing, &bad).is_none(),
                "{bad:?}"
            );
            assert!(
                RecordBytes::from_validated(&proof, &backing, &bad).is_none(),
                "{bad:?}"
            );
        }
        let art = DiskArtifact {
            kind: 1,
            digest: [3; 32],
            tenant: "t".into(),
            user: "u".into(),
            device: "d".into(),
            app: "a".into(),
            resource: "r".into(),
            family: "f".into(),
            client_auth: 1,
            state: 0,
            successor: [0; 32],
            state_changed_at_secs: 0,
            issued_at_secs: 1,
            expires_at_secs: 2,
        };
        let abytes = rkyv::to_bytes::<rkyv::rancor::Error>(&art).unwrap();
        let a = RecordBytes::check_owned(kind::ARTIFACT, abytes)
            .unwrap()
            .into_artifact()
            .unwrap();
        assert_eq!(a.expires_at_secs(), 2);
    }

    #[test]
    fn owned_revocation_reads_back_unchecked_and_is_no_other_kind() {
        let r = crate::store::format::DiskRevocation {
            id: "ev-1".into(),
            kind: 1,
            subject_kind: 1,
            source: 1,
            subject: "alice".into(),
            time_secs: 10,
            recorded_at_secs: 11,
            expires_at_secs: 12,
        };
        let b = rkyv::to_bytes::<rkyv::rancor::Error>(&r).unwrap();
        assert!(RecordBytes::check_owned(kind::SESSION, b.clone()).is_none());
        let rb = RecordBytes::check_owned(kind::REVOCATION, b).unwrap();
        assert!(rb.clone().into_artifact().is_none());
        let v = rb.into_revocation().unwrap();
        assert!(v.is_id("ev-1"));
        assert_eq!(v.expires_at_secs(), 12);
        assert_eq!(v.subject.as_str(), "alice");
    }

    #[test]
    fn prove_rejects_a_flipped_record_byte() {
        let rec = session_bytes();
        let mut buf = AlignedVec::<RECORD_ALIGN>::new();
        buf.extend_from_slice(&rec);
        let claim = SlotClaim {
            kind: kind::SESSION,
            offset: 0,
            len: u32::try_from(rec.len()).unwrap(),
            xxh3: xxhash_rust::xxh3::xxh3_64(&rec),
        };
        let mut flipped = buf.clone();
        if let Some(b) = flipped.get_mut(5) {
            *b ^= 0x40;
        }
        let backing = Backing::Heap(flipped);
        let n = backing.bytes().len();
        assert_eq!(
            ValidatedSegment::prove(&backing, 0, n, [claim].into_iter()).err(),
            Some(0)
        );
    }
}
