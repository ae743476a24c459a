//! `backstop inspect DATA_DIR`: a read-only report of a store directory (shards, record
//! counts, bytes, expiry histogram, segment and WAL health) and single-record lookups.
//!
//! Read-only on purpose: it takes no lock (it works next to a running server), truncates and
//! quarantines nothing, and creates no secret. Segments are immutable and WAL files only grow,
//! so reading them concurrently with a server is safe; what it reports is a moment's view.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::dir;
use super::error::StoreError;
use super::format::{ArchivedDiskArtifact, ArchivedDiskSession, kind};
use super::keys::{Keys, RecordKey, artifact_key};
use super::mapped::RecordBytes;
use super::model::ArtifactState;
use super::model::{ArtifactDigest, ArtifactKind, SessionIdentity};
use super::segment::{self, Found, Segment};
use super::wal;

/// What to report.
#[derive(Debug, Clone)]
pub enum InspectQuery {
    /// Shards, counts, bytes, expiry histogram, segment and WAL health.
    Summary,
    /// The newest record of one session (`--session`).
    Session(SessionIdentity),
    /// The newest record of one artifact (`--artifact`).
    Artifact(ArtifactLookup),
}

/// How `--artifact` names the artifact.
#[derive(Debug, Clone)]
pub enum ArtifactLookup {
    /// By digest (64 hex characters, as logged).
    Digest(ArtifactDigest),
    /// By the raw credential; digested with the store's pepper and not printed.
    Credential {
        /// What the credential is.
        kind: ArtifactKind,
        /// The raw bytes.
        raw: Vec<u8>,
    },
}

/// Why `inspect` failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
    /// `DATA_DIR` has no store.
    #[error("{0} has no FORMAT file: not a backstop store directory")]
    NotAStore(PathBuf),
}

/// Expiry buckets of the histogram, relative to `now_secs`: upper bounds in seconds.
const BUCKETS: [(&str, i64); 6] = [
    ("expired", 0),
    ("< 1 h", 3600),
    ("< 1 d", 86_400),
    ("< 3 d", 3 * 86_400),
    ("< 7 d", 7 * 86_400),
    (">= 7 d", i64::MAX),
];

fn bucket(expires_at_secs: i64, now_secs: i64) -> usize {
    let left = expires_at_secs.saturating_sub(now_secs);
    BUCKETS
        .iter()
        .position(|(_, max)| left <= *max && (*max == 0 || left < *max))
        .unwrap_or(BUCKETS.len() - 1)
}

fn expires_of(rec: &RecordBytes) -> Option<i64> {
    segment::record_expires_at(rec)
}

/// The format version in a WAL file's header; `None` if the header is torn. Records of an
/// older version are converted in memory as they are read (`proven_wal_body`), as open would.
fn wal_version(bytes: &[u8]) -> Option<u32> {
    wal::decode_file_header(bytes).map(|h| h.format_version)
}

struct WalFileInfo {
    path: PathBuf,
    records: u64,
    bytes: u64,
    torn: Option<wal::TornTail>,
}

/// Shard -> (generation, path) of its newest segment.
type NewestSegments = BTreeMap<u32, (u64, PathBuf)>;

/// Newest segment per shard, and WAL files in generation order.
fn listing(d: &Path) -> Result<(NewestSegments, Vec<PathBuf>), StoreError> {
    let mut segs: BTreeMap<u32, (u64, PathBuf)> = BTreeMap::new();
    for name in dir::list(&d.join(dir::SEG_DIR))? {
        if let Some((shard, generation)) = dir::parse_seg_name(&name) {
            let path = d.join(dir::SEG_DIR).join(&name);
            let e = segs.entry(shard).or_insert((generation, path.clone()));
            if generation > e.0 {
                *e = (generation, path);
            }
        }
    }
    let mut wals: Vec<(u64, PathBuf)> = Vec::new();
    for name in dir::list(&d.join(dir::WAL_DIR))? {
        if let Some((_, generation)) = dir::parse_wal_name(&name) {
            wals.push((generation, d.join(dir::WAL_DIR).join(name)));
        }
    }
    wals.sort();
    Ok((segs, wals.into_iter().map(|(_, p)| p).collect()))
}

fn progress(len: u64, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

/// Writes the report for `query` about the store in `dir` to `out`; a progress bar goes to
/// stderr (hidden when stderr is not a terminal). `now_secs` anchors expiry.
pub fn run(
    dir_path: &Path,
    query: &InspectQuery,
    now_secs: i64,
    out: &mut impl Write,
) -> Result<(), InspectError> {
    let format = dir_path.join(dir::FORMAT_FILE);
    if !format.exists() {
        return Err(InspectError::NotAStore(dir_path.to_path_buf()));
    }
    // Refuses a newer format exactly as `Store::open` does; writes nothing for an existing file.
    let format = dir::check_or_write_format(dir_path, 1)?;
    let shard_count = format.shard_count;
    match query {
        InspectQuery::Summary => summary(dir_path, format, now_secs, out),
        InspectQuery::Session(id) => {
            let keys = Keys::load(dir_path)?;
            let key = keys.session_key(id);
            match find(dir_path, shard_count, key)? {
                Some(rec) => match rec.into_session().filter(|s| s.is_identity(id)) {
                    Some(s) => print_session(&s, now_secs, out)?,
                    None => writeln!(out, "no session recorded for that identity")?,
                },
                None => writeln!(out, "no session recorded for that identity")?,
            }
            Ok(())
        }
        InspectQuery::Artifact(lookup) => {
            let digest = match lookup {
                ArtifactLookup::Digest(d) => *d,
                ArtifactLookup::Credential { kind, raw } => {
                    Keys::load(dir_path)?.artifact_digest(*kind, raw)
                }
            };
            match find(dir_path, shard_count, artifact_key(&digest))? {
                Some(rec) => match rec.into_artifact().filter(|a| a.is_digest(&digest)) {
                    Some(a) => print_artifact(&a, now_secs, out)?,
                    None => writeln!(out, "no artifact recorded with digest {}", digest.to_hex())?,
                },
                None => writeln!(out, "no artifact recorded with digest {}", digest.to_hex())?,
            }
            Ok(())
        }
    }
}

/// The newest record for `key`: the last WAL record (generation order), else the segment.
/// `Some` of a tombstone's absence is `None`.
fn find(d: &Path, shard_count: u32, key: RecordKey) -> Result<Option<RecordBytes>, StoreError> {
    let (segs, wals) = listing(d)?;
    let mut newest: Option<Option<RecordBytes>> = None;
    for path in &wals {
        let bytes = wal::read_file(path).map_err(dir::io_err("read wal", path))?;
        let Some(version) = wal_version(&bytes) else {
            continue;
        };
        let _ = wal::replay(&bytes, |r| {
            if r.key == key {
                newest = Some(if r.kind == kind::TOMBSTONE {
                    None
                } else {
                    super::proven_wal_body(version, r.kind, r.body)
                });
            }
            true
        });
    }
    if let Some(n) = newest {
        return Ok(n);
    }
    let shard = key.shard(shard_count);
    let Some((generation, path)) = segs.get(&shard) else {
        return Ok(None);
    };
    match Segment::open_converting(path, *generation) {
        Ok(seg) => Ok(match seg.find(key) {
            Found::Record(r) => Some(r),
            Found::Absent | Found::Corrupt => None,
        }),
        Err(_) => Ok(None),
    }
}

fn summary(
    d: &Path,
    format: dir::FormatFile,
    now_secs: i64,
    out: &mut impl Write,
) -> Result<(), InspectError> {
    let (segs, wals) = listing(d)?;
    writeln!(out, "store {}", d.display())?;
    writeln!(
        out,
        "format version: {}{}",
        format.version,
        if format.version < super::format::FORMAT_VERSION {
            " (converted to the current format at the next open)"
        } else {
            ""
        }
    )?;
    writeln!(out, "shards: {}", format.shard_count)?;
    let total_bytes: u64 = segs
        .values()
        .filter_map(|(_, p)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress(total_bytes, "validating segments");
    let mut hist = [0u64; BUCKETS.len()];
    let (mut sessions, mut artifacts, mut revocations) = (0u64, 0u64, 0u64);
    let (mut seg_bytes, mut bad) = (0u64, 0u64);
    writeln!(out, "\nsegments (newest per shard):")?;
    writeln!(
        out,
        "  {:>6} {:>7} {:>10} {:>10} {:>11} {:>12}  health",
        "shard", "version", "sessions", "artifacts", "revocations", "bytes"
    )?;
    for (shard, (generation, path)) in &segs {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let on_disk_version = std::fs::read(path)
            .ok()
            .and_then(|b| b.get(8..12).and_then(|v| <[u8; 4]>::try_from(v).ok()))
            .map_or(0, u32::from_le_bytes);
        let health = match Segment::open_converting(path, *generation) {
            Err(e) => {
                bad += 1;
                format!("INVALID: {e}")
            }
            Ok(seg) => match seg.validate() {
                Err(e) => {
                    bad += 1;
                    format!("INVALID: {e}")
                }
                Ok(()) => {
                    let h = *seg.header();
                    sessions += h.session_count;
                    artifacts += h.artifact_count;
                    revocations += h.revocation_count;
                    for (_, rec) in seg.records() {
                        if let Some(e) = expires_of(&rec)
                            && let Some(b) = hist.get_mut(bucket(e, now_secs))
                        {
                            *b += 1;
                        }
                    }
                    // Events in a segment written before the revocation directory are listed
                    // at start by scanning its index: worth knowing at scale.
                    let scan = if h.revocation_count > 0 && !h.has_revocation_directory() {
                        ", no revocation directory: events listed by index scan"
                    } else {
                        ""
                    };
                    format!(
                        "ok (expires in {}..{} s{scan})",
                        h.min_expires_at_secs.saturating_sub(now_secs),
                        h.max_expires_at_secs.saturating_sub(now_secs)
                    )
                }
            },
        };
        seg_bytes += len;
        bar.inc(len);
        let (s, a, r) = match Segment::open_converting(path, *generation) {
            Ok(seg) => {
                let h = seg.header();
                (h.session_count, h.artifact_count, h.revocation_count)
            }
            Err(_) => (0, 0, 0),
        };
        writeln!(
            out,
            "  {shard:>6} {on_disk_version:>7} {s:>10} {a:>10} {r:>11} {len:>12}  {health}"
        )?;
    }
    bar.finish_and_clear();
    let mut wal_infos = Vec::new();
    for path in &wals {
        let bytes = wal::read_file(path).map_err(dir::io_err("read wal", path))?;
        let (records, torn) = if let Some(version) = wal_version(&bytes) {
            wal::replay(&bytes, |r| {
                if r.kind != kind::TOMBSTONE
                    && let Some(e) = super::proven_wal_body(version, r.kind, r.body)
                        .as_ref()
                        .and_then(expires_of)
                    && let Some(b) = hist.get_mut(bucket(e, now_secs))
                {
                    *b += 1;
                }
                true
            })
        } else {
            (
                0,
                Some(wal::TornTail {
                    good_bytes: 0,
                    dropped_bytes: bytes.len() as u64,
                    reason: "torn file header".into(),
                }),
            )
        };
        wal_infos.push(WalFileInfo {
            path: path.clone(),
            records,
            bytes: bytes.len() as u64,
            torn,
        });
    }
    writeln!(out, "\nWAL files (replayed at next open):")?;
    for w in &wal_infos {
        let name = w
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match &w.torn {
            None => writeln!(
                out,
                "  {name}: {} records, {} bytes, ok",
                w.records, w.bytes
            )?,
            Some(t) => writeln!(
                out,
                "  {name}: {} records, {} bytes, TORN TAIL at {} ({} bytes: {})",
                w.records, w.bytes, t.good_bytes, t.dropped_bytes, t.reason
            )?,
        }
    }
    // A store that never quarantined anything may have no quarantine directory at all (a copy,
    // a fixture from git); that is an empty quarantine, not an error.
    let quarantine = d.join(dir::QUARANTINE_DIR);
    let quarantined = if quarantine.is_dir() {
        dir::list(&quarantine)?
    } else {
        Vec::new()
    };
    writeln!(
        out,
        "\ntotals: {sessions} sessions and {artifacts} artifacts in segments ({revocations} revocation events), {seg_bytes} segment bytes, {} WAL records",
        wal_infos.iter().map(|w| w.records).sum::<u64>()
    )?;
    writeln!(
        out,
        "segments failing validation: {bad}; quarantined files: {}",
        quarantined.len()
    )?;
    for q in &quarantined {
        writeln!(out, "  quarantine/{q}")?;
    }
    writeln!(
        out,
        "\nexpiry histogram (all records, WAL included, relative to now):"
    )?;
    for ((label, _), n) in BUCKETS.iter().zip(hist) {
        writeln!(out, "  {label:>8}: {n}")?;
    }
    Ok(())
}

fn print_session(
    s: &ArchivedDiskSession,
    now_secs: i64,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let snap = s.to_snapshot();
    let id = &snap.identity;
    writeln!(
        out,
        "session tenant={} user={} device={} app={} resource={}",
        id.tenant, id.user, id.device, id.app, id.resource
    )?;
    writeln!(out, "  home_tenant: {}", snap.home_tenant)?;
    writeln!(
        out,
        "  auth_time: {}  recorded_at: {}  expires_at: {} ({})",
        snap.auth_time_secs,
        snap.recorded_at_secs,
        snap.expires_at_secs,
        if snap.expires_at_secs > now_secs {
            "live"
        } else {
            "EXPIRED"
        }
    )?;
    writeln!(out, "  amr: {:?}  acr: {:?}", snap.amr, snap.acr)?;
    writeln!(out, "  groups: {:?}  roles: {:?}", snap.groups, snap.roles)?;
    writeln!(
        out,
        "  sign_in_risk: {:?}  user_risk: {:?}  device: {} {:?}",
        snap.sign_in_risk, snap.user_risk, snap.device_platform, snap.device_compliance
    )?;
    writeln!(
        out,
        "  dpop_jkt: {:?}  token_type: {}  scopes: {:?}",
        snap.dpop_jkt, snap.token_type, snap.scopes
    )?;
    for (name, t) in [
        ("access_token", Some(&snap.access_token)),
        ("id_token", snap.id_token.as_ref()),
    ] {
        match t {
            Some(t) => writeln!(
                out,
                "  {name}: alg={} typ={} lifetime_secs={} time_claims={:#06b} claims={}",
                t.alg,
                t.typ,
                t.lifetime_secs,
                t.time_claims,
                String::from_utf8_lossy(&t.claims_json)
            )?,
            None => writeln!(out, "  {name}: none")?,
        }
    }
    Ok(())
}

fn print_artifact(
    a: &ArchivedDiskArtifact,
    now_secs: i64,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let kind = ArtifactKind::from_code(a.kind)
        .map_or_else(|| format!("unknown({})", a.kind), |k| format!("{k:?}"));
    writeln!(
        out,
        "artifact {} digest={}",
        kind,
        ArtifactDigest(a.digest).to_hex()
    )?;
    writeln!(
        out,
        "  tenant={} user={} device={} app={}",
        a.tenant.as_str(),
        a.user.as_str(),
        a.device.as_str(),
        a.app.as_str()
    )?;
    writeln!(
        out,
        "  resource={:?} family={:?} client_auth={:?}",
        a.resource.as_str(),
        a.family.as_str(),
        super::model::ClientAuthMethod::from_code(a.client_auth)
    )?;
    let state = match a.state() {
        ArtifactState::Current => "current".to_owned(),
        ArtifactState::Superseded { successor } => {
            // A prefix is enough to find the successor with `--artifact` and a log search.
            let hex = successor.to_hex();
            format!("superseded by {}..", hex.get(..16).unwrap_or(&hex))
        }
        ArtifactState::Revoked => "revoked".to_owned(),
    };
    writeln!(
        out,
        "  state: {state}  state_changed_at: {}",
        a.state_changed_at_secs.to_native()
    )?;
    let exp = a.expires_at_secs();
    writeln!(
        out,
        "  issued_at: {}  expires_at: {} ({})",
        a.issued_at_secs.to_native(),
        exp,
        if exp > now_secs { "live" } else { "EXPIRED" }
    )
}
