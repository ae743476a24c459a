//! Typed errors of the store, each naming the file, field or limit that failed.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O call failed; `op` says which and `path` on what.
    #[error("store I/O failed: {op} {path}: {source}")]
    Io {
        /// The operation (`open`, `fsync`, `rename`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the data-dir lock.
    #[error("store directory {path} is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The directory or a file in it was written by a newer backstop.
    #[error(
        "{path} has store format version {found}, this build reads up to {supported}: \
         upgrade backstop or point it at another data dir"
    )]
    NewerFormat {
        /// The file that carries the version.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// The `FORMAT` file is not one we wrote.
    #[error("{path} is not a backstop store format file: {reason}")]
    BadFormatFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The configured shard count differs from the one the store was created with.
    #[error("shard_count: configured {configured}, but the store was created with {on_disk}")]
    ShardCountMismatch {
        /// From the options.
        configured: u32,
        /// From the `FORMAT` file.
        on_disk: u32,
    },
    /// An option is outside its bound in `limits`.
    #[error("store option {field} = {value} is outside {min}..={max}")]
    OptionOutOfRange {
        /// Option name.
        field: &'static str,
        /// Value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A secret file is readable or writable by group or others.
    #[error(
        "secret file {path} has mode {mode:o}: it must not be accessible to group or others (chmod 600)"
    )]
    SecretPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret file has the wrong length.
    #[error("secret file {path} holds {found} bytes, expected {expected}")]
    SecretLength {
        /// The file.
        path: PathBuf,
        /// Bytes found.
        found: u64,
        /// Bytes expected.
        expected: usize,
    },
    /// The OS random source failed while generating a secret.
    #[error("could not generate a store secret: {0}")]
    Random(String),
    /// A record is over a size limit.
    #[error("{field} is {found} bytes, over the limit {limit} (limits::{limit_name})")]
    TooLarge {
        /// Which field.
        field: &'static str,
        /// Its size.
        found: usize,
        /// The limit.
        limit: usize,
        /// The constant in `limits`.
        limit_name: &'static str,
    },
    /// rkyv could not serialize a record.
    #[error("could not encode a {what} record: {reason}")]
    Encode {
        /// Record kind.
        what: &'static str,
        /// rkyv's message.
        reason: String,
    },
    /// A WAL group had a write or fsync error earlier and takes no more writes.
    #[error(
        "WAL group {group} is failed after an earlier {op} error and takes no writes: {detail}"
    )]
    GroupFailed {
        /// The group.
        group: u32,
        /// The operation that failed (`write`, `fsync`).
        op: &'static str,
        /// The first error.
        detail: String,
    },
    /// The store was closed while a write was queued.
    #[error("store is closed")]
    Closed,
}

/// Why a segment file failed validation (it is then quarantined).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// Shorter than its header or than the regions its header declares.
    #[error("segment truncated: {what}")]
    Truncated {
        /// Which region does not fit.
        what: &'static str,
    },
    /// Magic bytes wrong.
    #[error("segment magic mismatch")]
    BadMagic,
    /// Written by a newer format.
    #[error("segment format version {found} is newer than {supported}")]
    NewerFormat {
        /// Version in the header.
        found: u32,
        /// Newest this build reads.
        supported: u32,
    },
    /// Written by an older format: converted at open (`segment::upgrade`), never served as is.
    #[error("segment format version {found} is older than this build's; it must be converted")]
    OlderFormat {
        /// Version in the header.
        found: u32,
    },
    /// A checksum did not match.
    #[error("segment {region} checksum mismatch")]
    Checksum {
        /// `header`, `index` or `body`.
        region: &'static str,
    },
    /// A header field is out of range or inconsistent.
    #[error("segment header field {field} is invalid")]
    Header {
        /// The field.
        field: &'static str,
    },
    /// An index slot points outside the records region, is misaligned, or repeats a key.
    #[error("segment index slot {slot} is invalid: {reason}")]
    Slot {
        /// Slot number.
        slot: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The revocation directory fails its checksum, names a slot that holds no revocation, or
    /// does not list exactly the segment's revocation slots.
    #[error("segment revocation directory is invalid: {reason}")]
    Directory {
        /// What is wrong.
        reason: &'static str,
    },
    /// A record failed its checksum or rkyv validation.
    #[error("segment record in slot {slot} is invalid: {reason}")]
    Record {
        /// Slot number.
        slot: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a WAL record could not be decoded (replay stops there and truncates).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalRecordError {
    /// Fewer bytes remain than a record header, or than its declared length.
    #[error("torn record: {what}")]
    Torn {
        /// What was cut.
        what: &'static str,
    },
    /// The declared length is over `limits::STORE_RECORD_BYTES_MAX` or under the minimum.
    #[error("record length {len} out of range")]
    Length {
        /// Declared length.
        len: u32,
    },
    /// Checksum mismatch.
    #[error("record checksum mismatch")]
    Checksum,
    /// The kind byte names no kind.
    #[error("record kind {kind} unknown")]
    Kind {
        /// The byte.
        kind: u8,
    },
    /// The payload is not a valid archive of its kind.
    #[error("record payload invalid for kind {kind}")]
    Payload {
        /// The kind byte.
        kind: u8,
    },
    /// A reserved byte after the kind is not zero (no format writes one; a record that uses it
    /// is not ours to read).
    #[error("record reserved bytes not zero")]
    Reserved,
}
