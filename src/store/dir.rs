//! The data-dir layout: the `FORMAT` file, the flock that keeps a second process out, file
//! naming of WAL and segment generations, and directory fsync.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::StoreError;
use super::format::{FORMAT_VERSION, FORMAT_VERSION_MIN};

/// Sub-directory of WAL files.
pub const WAL_DIR: &str = "wal";
/// Sub-directory of segment files.
pub const SEG_DIR: &str = "segments";
/// Sub-directory where failed segments are moved.
pub const QUARANTINE_DIR: &str = "quarantine";
/// The format file: version and shard count.
pub const FORMAT_FILE: &str = "FORMAT";
/// The lock file.
pub const LOCK_FILE: &str = "LOCK";

/// Maps an I/O error to a `StoreError::Io` naming `op` and `path`.
pub fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// fsyncs a directory, making renames and creations in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync dir", dir))
}

/// Creates `dir` (mode 0700) and its sub-directories if missing.
pub fn create_layout(dir: &Path) -> Result<(), StoreError> {
    for sub in [None, Some(WAL_DIR), Some(SEG_DIR), Some(QUARANTINE_DIR)] {
        let p = sub.map_or_else(|| dir.to_path_buf(), |s| dir.join(s));
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&p)
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("mkdir", &p)(e)),
        }
    }
    sync_dir(dir)
}

/// Holds the exclusive flock on `LOCK` for as long as it lives.
pub struct DirLock {
    _file: File,
}

/// Takes the data-dir lock, failing at once if another process holds it.
pub fn lock(dir: &Path) -> Result<DirLock, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("open lock", &path))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(StoreError::Locked { path }),
        Err(e) => Err(io_err("flock", &path)(e.into())),
    }
}

/// What the `FORMAT` file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatFile {
    /// The store's format version (`FORMAT_VERSION_MIN..=FORMAT_VERSION`).
    pub version: u32,
    /// The store's shard count (fixed at creation).
    pub shard_count: u32,
}

/// Reads the `FORMAT` file, or writes it (current version) for a new store.
pub fn check_or_write_format(dir: &Path, shard_count: u32) -> Result<FormatFile, StoreError> {
    let path = dir.join(FORMAT_FILE);
    match File::open(&path) {
        Ok(f) => {
            let mut s = String::new();
            f.take(4096)
                .read_to_string(&mut s)
                .map_err(io_err("read", &path))?;
            let bad = |reason| StoreError::BadFormatFile {
                path: path.clone(),
                reason,
            };
            let mut version = None;
            let mut shards = None;
            for line in s.lines() {
                if let Some(v) = line.strip_prefix("format_version=") {
                    version = Some(
                        v.trim()
                            .parse::<u32>()
                            .map_err(|_| bad("format_version is not a number"))?,
                    );
                } else if let Some(v) = line.strip_prefix("shard_count=") {
                    shards = Some(
                        v.trim()
                            .parse::<u32>()
                            .map_err(|_| bad("shard_count is not a number"))?,
                    );
                }
            }
            let version = version.ok_or_else(|| bad("no format_version line"))?;
            if version > FORMAT_VERSION {
                return Err(StoreError::NewerFormat {
                    path,
                    found: version,
                    supported: FORMAT_VERSION,
                });
            }
            if version < FORMAT_VERSION_MIN {
                return Err(bad("format_version is older than any this build reads"));
            }
            let shards = shards.ok_or_else(|| bad("no shard_count line"))?;
            if shards == 0 {
                return Err(bad("shard_count is 0"));
            }
            Ok(FormatFile {
                version,
                shard_count: shards,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_format(dir, shard_count)?;
            Ok(FormatFile {
                version: FORMAT_VERSION,
                shard_count,
            })
        }
        Err(e) => Err(io_err("open", &path)(e)),
    }
}

/// Writes the `FORMAT` file for the current version atomically: temp file, fsync, rename,
/// fsync the directory. Used at creation and as the last step of an upgrade.
pub fn write_format(dir: &Path, shard_count: u32) -> Result<(), StoreError> {
    let path = dir.join(FORMAT_FILE);
    let tmp = dir.join("FORMAT.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    let body = format!(
        "backstop session store\nformat_version={FORMAT_VERSION}\nshard_count={shard_count}\n"
    );
    f.write_all(body.as_bytes())
        .map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    sync_dir(dir)
}

/// `wal/g{group}-{generation}.wal`
pub fn wal_path(dir: &Path, group: u32, generation: u64) -> PathBuf {
    dir.join(WAL_DIR)
        .join(format!("g{group:03}-{generation:016x}.wal"))
}

/// `segments/s{shard}-{generation}.seg`
pub fn seg_path(dir: &Path, shard: u32, generation: u64) -> PathBuf {
    dir.join(SEG_DIR)
        .join(format!("s{shard:05}-{generation:016x}.seg"))
}

/// `segments/tmp-{generation}.seg`: a compaction output before its rename.
pub fn seg_tmp_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(SEG_DIR).join(format!("tmp-{generation:016x}.seg"))
}

/// Parses `g{group}-{generation}.wal`.
pub fn parse_wal_name(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix('g')?.strip_suffix(".wal")?;
    let (g, generation) = rest.split_once('-')?;
    Some((g.parse().ok()?, u64::from_str_radix(generation, 16).ok()?))
}

/// Parses `s{shard}-{generation}.seg`.
pub fn parse_seg_name(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix('s')?.strip_suffix(".seg")?;
    let (s, generation) = rest.split_once('-')?;
    Some((s.parse().ok()?, u64::from_str_radix(generation, 16).ok()?))
}

/// File names in a directory (non-UTF-8 names are ignored: we never write one).
pub fn list(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err("read dir", dir))? {
        let e = e.map_err(io_err("read dir", dir))?;
        if let Ok(name) = e.file_name().into_string() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Moves a failed segment to `quarantine/`, keeping its name, and makes the move durable.
pub fn quarantine(dir: &Path, seg: &Path) -> Result<PathBuf, StoreError> {
    let name = seg
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let to = dir.join(QUARANTINE_DIR).join(name);
    std::fs::rename(seg, &to).map_err(io_err("rename to quarantine", seg))?;
    sync_dir(&dir.join(SEG_DIR))?;
    sync_dir(&dir.join(QUARANTINE_DIR))?;
    Ok(to)
}
