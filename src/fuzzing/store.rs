//! Fuzz entry points for the store's parsers of on-disk bytes: WAL records, segment files, and
//! the conversion of older-format segments and records. None may panic or read out of bounds
//! on any input.

use crate::store::format;
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
            let body = segment::aligned_copy(rec.body);
            let _ = RecordBytes::check_owned(rec.kind, body.clone());
            // The same bytes read as a v1 WAL's body (converted at open).
            if let Ok(v2) = format::upgrade_record(format::v1::VERSION, rec.kind, &body) {
                // Our own conversion output must always prove.
                assert!(
                    RecordBytes::check_owned(rec.kind, v2).is_some(),
                    "converted record fails validation"
                );
            }
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
                if let Some(a) = r.clone().into_artifact() {
                    let _ = a.to_record();
                    let _ = a.state();
                }
                if let Some(e) = r.into_revocation() {
                    let _ = e.to_record();
                }
            }
        }
        // Through the revocation directory when it checks out, else the index scan: both
        // must only ever yield proven revocation records.
        for (_, r) in seg.revocation_records().take(64) {
            assert!(r.into_revocation().is_some(), "non-revocation listed");
        }
        for (_, r) in seg.records().take(64) {
            if let Some(s) = r.into_session() {
                let _ = s.tenant.len();
            }
        }
        let _ = seg.validate();
    }
}

/// Converts arbitrary bytes as an older-format segment (what open does to a v1 segment). If
/// the first byte is odd, checksums are recomputed first. Whatever converts must open and
/// validate as a current segment: conversion never produces a segment we would quarantine.
pub fn segment_upgrade(data: &[u8]) {
    let (mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        segment::reseal(&mut bytes);
    }
    let Ok(v2) = segment::upgrade(&bytes) else {
        return;
    };
    let backing = Backing::Heap(segment::aligned_copy(&v2));
    let seg = Segment::from_backing(backing, std::path::PathBuf::new(), 0, Validate::Now);
    assert!(seg.is_ok(), "converted segment fails validation");
    if let Ok(seg) = seg {
        for (_, r) in seg.records() {
            let _ = segment::record_expires_at(&r);
        }
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

    /// The v1 fixture's segments, every byte flipped and resealed, through the conversion.
    #[test]
    fn resealed_mutations_of_a_v1_segment_never_panic_and_convert_to_valid_segments() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/store/v1/segments");
        let mut converted = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let base = std::fs::read(entry.unwrap().path()).unwrap();
            let mut input = vec![0u8];
            input.extend_from_slice(&base);
            segment_upgrade(&input);
            assert!(segment::upgrade(&base).is_ok());
            converted += 1;
            for at in (0..base.len()).step_by(3) {
                let mut b = base.clone();
                b[at] ^= 0x21;
                let mut input = vec![1u8];
                input.extend_from_slice(&b);
                segment_upgrade(&input);
            }
        }
        assert!(converted > 0);
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
