//! Helpers shared by the store's integration tests: a blocking runner, small store options,
//! and a WAL backend that fails the Nth write or fsync.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]
// Test code outside `#[test]` functions: a failed unwrap here is a failed test with a line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use backstop::store::{StdWalBackend, Store, StoreOpts, WalBackend, WalFile};

/// Runs a future to completion on a fresh current-thread runtime.
pub fn block<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Small options: 8 shards in 2 groups, manual compaction.
pub fn small_opts() -> StoreOpts {
    StoreOpts {
        shard_count: 8,
        wal_groups: 2,
        ..StoreOpts::manual()
    }
}

pub fn open(dir: &Path) -> Store {
    Store::open(dir, small_opts()).unwrap()
}

/// Scales a test's iteration count: `BACKSTOP_STORE_TEST_SCALE=10` for a longer manual run.
pub fn scaled(n: u64) -> u64 {
    let k: u64 = std::env::var("BACKSTOP_STORE_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    n * k.max(1)
}

/// Fails the `fail_write_at`-th append or the `fail_sync_at`-th sync (1-based, counted over
/// every file it creates), once; everything else goes to `std::fs`.
pub struct FaultyBackend {
    pub writes: Arc<AtomicU64>,
    pub syncs: Arc<AtomicU64>,
    pub fail_write_at: u64,
    pub fail_sync_at: u64,
}

impl FaultyBackend {
    pub fn new(fail_write_at: u64, fail_sync_at: u64) -> Self {
        FaultyBackend {
            writes: Arc::new(AtomicU64::new(0)),
            syncs: Arc::new(AtomicU64::new(0)),
            fail_write_at,
            fail_sync_at,
        }
    }
}

struct FaultyFile {
    inner: Box<dyn WalFile>,
    writes: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
    fail_write_at: u64,
    fail_sync_at: u64,
}

impl WalFile for FaultyFile {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_write_at {
            // A short write: half the bytes reach the file, as a full disk would leave them.
            self.inner.append(&bytes[..bytes.len() / 2])?;
            return Err(std::io::Error::other("injected write failure"));
        }
        self.inner.append(bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        let n = self.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_sync_at {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        self.inner.sync()
    }
}

impl WalBackend for FaultyBackend {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn WalFile>> {
        Ok(Box::new(FaultyFile {
            inner: StdWalBackend.create(path)?,
            writes: Arc::clone(&self.writes),
            syncs: Arc::clone(&self.syncs),
            fail_write_at: self.fail_write_at,
            fail_sync_at: self.fail_sync_at,
        }))
    }
    fn name(&self) -> &'static str {
        "faulty"
    }
}
