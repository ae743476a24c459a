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
/// keys up in it.
pub fn segment_open(data: &[u8]) {
    let keys = [RecordKey(0), RecordKey(u128::MAX), RecordKey(0x1234_5678)];
    for when in [Validate::Now, Validate::Later] {
        let backing = Backing::Heap(segment::aligned_copy(data));
        let Ok(seg) = Segment::from_backing(backing, std::path::PathBuf::new(), 0, when) else {
            continue;
        };
        for k in keys {
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
