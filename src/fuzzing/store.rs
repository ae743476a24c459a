//! Fuzz entry points for the store's parsers of on-disk bytes: WAL records and segment files.
//! Neither may panic or read out of bounds on any input.

use crate::store::mapped::{Backing, RecordBytes};
use crate::store::segment::{self, Found, Segment, Validate};
use crate::store::{RecordKey, wal};

/// Decodes WAL bytes as replay does (records and their archives), and checks that re-encoding
/// each accepted record gives back the same bytes.
pub fn wal_records(data: &[u8]) {
    let mut at = 0usize;
    while let Some(rest) = data.get(at..) {
        let Ok((rec, used)) = wal::decode_record(rest) else {
            break;
        };
        if rec.kind != crate::store::format::kind::TOMBSTONE {
            let _ = RecordBytes::check_owned(rec.kind, segment::aligned_copy(rec.body));
        }
        let mut again = Vec::new();
        wal::encode_record(rec.kind, rec.key, rec.body, &mut again);
        assert_eq!(Some(&again[..]), rest.get(..used), "WAL record round trip");
        at += used;
    }
    let _ = wal::replay(data, |_| true);
    let _ = wal::decode_file_header(data);
}

/// Opens arbitrary bytes as a segment, both ways (validated and lazily checked), and looks
/// keys up in it. If the first byte is odd, the rest gets valid checksums first, so the
/// fuzzer reaches slot and record validation (rkyv's checked access) instead of stopping at a
/// checksum.
pub fn segment_open(data: &[u8]) {
    let (mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        segment::reseal(&mut bytes);
    }
    let mut keys = vec![RecordKey(0), RecordKey(u128::MAX), RecordKey(0x1234_5678)];
    // Keys that are actually in the index, so lookups reach records.
    for i in 0..8usize {
        let at = segment::HEADER_BYTES + i * segment::SLOT_BYTES;
        if let Some(k) = bytes
            .get(at..at + 16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
        {
            keys.push(RecordKey(u128::from_le_bytes(k)));
        }
    }
    for when in [Validate::Now, Validate::Later] {
        let backing = Backing::Heap(segment::aligned_copy(&bytes));
        let Ok(seg) = Segment::from_backing(backing, std::path::PathBuf::new(), 0, when) else {
            continue;
        };
        for &k in &keys {
            if let Found::Record(r) = seg.find(k) {
                if let Some(s) = r.clone().into_session() {
                    let _ = s.to_snapshot();
                }
                if let Some(a) = r.into_artifact() {
                    let _ = a.to_record();
                }
            }
        }
        for (_, r) in seg.records().take(64) {
            if let Some(s) = r.into_session() {
                let _ = s.tenant.len();
            }
        }
        let _ = seg.validate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::{DiskSession, kind};
    use crate::store::segment::BuildRecord;
    use crate::store::testutil::sample_snapshot;

    fn seed() -> Vec<u8> {
        let recs: Vec<_> = (0..3u64)
            .map(|i| {
                let s = DiskSession::from_snapshot(&sample_snapshot(i, 10));
                rkyv::to_bytes::<rkyv::rancor::Error>(&s).unwrap()
            })
            .collect();
        let input: Vec<BuildRecord<'_>> = recs
            .iter()
            .enumerate()
            .map(|(i, b)| BuildRecord {
                key: RecordKey(i as u128 * 0x9e37_79b9_7f4a_7c15),
                kind: kind::SESSION,
                bytes: b,
                expires_at_secs: 10,
            })
            .collect();
        segment::build(0, 1, &input)
    }

    /// A deterministic slice of what the fuzzer does, run by `cargo test`: every byte of a
    /// valid segment flipped and resealed, so each mutation reaches rkyv validation.
    #[test]
    fn resealed_mutations_of_a_segment_never_panic() {
        let base = seed();
        for at in 0..base.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = base.clone();
                b[at] ^= bit;
                let mut input = vec![1u8];
                input.extend_from_slice(&b);
                segment_open(&input);
            }
        }
    }

    #[test]
    fn wal_bytes_never_panic() {
        let mut v = wal::file_header(0, 1).to_vec();
        wal::encode_record(kind::TOMBSTONE, RecordKey(1), &[], &mut v);
        for at in 0..v.len() {
            let mut b = v.clone();
            b[at] ^= 0xff;
            wal_records(&b);
            wal_records(&b[..at]);
        }
    }
}
