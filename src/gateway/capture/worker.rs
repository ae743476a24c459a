//! The capture queue and its worker thread: jobs from the server's workers, in batches, to the
//! store.
//!
//! The queue is a bounded tokio channel: [`CaptureQueue::try_send`] never waits, a full queue
//! drops the job and counts it. The worker owns a current-thread runtime on its own thread and
//! takes up to `limits::CAPTURE_BATCH_JOBS_MAX` jobs at a time. Within a batch, jobs are
//! derived in order against the store *and* the batch's own pending writes (a refresh captured
//! right after the code grant that issued its token finds that token), writes are coalesced
//! per key (the last state of a record wins, so the order in which the store applies them
//! cannot matter), then all are submitted at once and awaited: a batch costs about one group
//! commit. Batches run one after another, so a later batch sees every earlier write. After a
//! batch that did not fill, the worker lingers `limits::CAPTURE_LINGER_MS` so the next one
//! gathers more jobs and the senders rarely have a thread to wake.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::derive::{DeriveContext, Skip, derive, proof_thumbprint};
use super::stats::CaptureStats;
use super::{CaptureJob, DEVICE_PREFIX_JKT, GrantCapture};
use crate::config::CaptureConfig;
use crate::limits;
use crate::store::{
    ArtifactDigest, ArtifactKind, ArtifactRecord, ArtifactState, SessionIdentity, SessionSnapshot,
    Store,
};
use crate::token::jwks::KeySet;

/// Why the capture worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The worker's runtime could not be built.
    #[error("cannot build the capture worker's runtime: {0}")]
    Runtime(std::io::Error),
    /// The worker thread could not be spawned.
    #[error("cannot spawn the capture worker thread: {0}")]
    Thread(std::io::Error),
}

/// The sending side of the capture queue: cheap to clone, one per server worker.
#[derive(Debug, Clone)]
pub struct CaptureQueue {
    tx: mpsc::Sender<CaptureJob>,
    stats: Arc<CaptureStats>,
}

impl CaptureQueue {
    /// Queues a job without waiting. `false` when the queue is full or the worker has stopped:
    /// the job is dropped and counted (`backstop_capture_dropped_total`).
    pub fn try_send(&self, job: CaptureJob) -> bool {
        // Before the send: a job can be taken (and settled) as soon as it is in the queue, and
        // `settled >= offered` must never hold while an offered job is still unfinished.
        self.stats.on_offered();
        self.stats.depth_add();
        match self.tx.try_send(job) {
            Ok(()) => {
                self.stats.on_enqueued();
                true
            }
            Err(_) => {
                self.stats.depth_sub(1);
                self.stats.on_dropped();
                false
            }
        }
    }

    /// Jobs waiting for the worker.
    pub fn depth(&self) -> u64 {
        self.stats.queue_depth()
    }
}

/// The worker thread. [`CaptureWorker::shutdown`] closes the queue, lets the worker write what
/// was queued, and joins it; dropping the handle does the same without waiting.
#[derive(Debug)]
pub struct CaptureWorker {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl CaptureWorker {
    /// Closes the queue (later `try_send`s drop and count), drains what is queued into the
    /// store, and waits for the thread to finish.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CaptureWorker {
    fn drop(&mut self) {
        // Dropping the sender wakes the worker like an explicit stop; the thread is detached.
        self.stop.take();
    }
}

/// Starts the capture worker. `primary_keys` gives the primary's current key set (`None` until
/// it has been fetched: jobs are then skipped as `no_primary_keys`).
pub fn spawn_capture_worker<K>(
    store: Arc<Store>,
    primary_keys: K,
    cfg: CaptureConfig,
    issuer: String,
    stats: Arc<CaptureStats>,
) -> Result<(CaptureQueue, CaptureWorker), CaptureError>
where
    K: Fn() -> Option<Arc<KeySet>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(cfg.queue_len.max(1));
    let (stop_tx, stop_rx) = oneshot::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(CaptureError::Runtime)?;
    let worker = Worker {
        store,
        primary_keys,
        cfg,
        issuer,
        stats: Arc::clone(&stats),
        last_warn_secs: std::cell::Cell::new(i64::MIN),
    };
    let thread = std::thread::Builder::new()
        .name("backstop-capture".into())
        .spawn(move || rt.block_on(worker.run(rx, stop_rx)))
        .map_err(CaptureError::Thread)?;
    Ok((
        CaptureQueue { tx, stats },
        CaptureWorker {
            stop: Some(stop_tx),
            thread: Some(thread),
        },
    ))
}

struct Worker<K> {
    store: Arc<Store>,
    primary_keys: K,
    cfg: CaptureConfig,
    issuer: String,
    stats: Arc<CaptureStats>,
    /// Job time of the last rate-limited warning.
    last_warn_secs: std::cell::Cell<i64>,
}

/// One batch's writes, coalesced per key, and what they will count once durable.
#[derive(Default)]
struct Batch {
    sessions: HashMap<SessionIdentity, SessionSnapshot>,
    artifacts: HashMap<ArtifactDigest, ArtifactRecord>,
    captured: u64,
    superseded: u64,
    revoked: u64,
    /// Jobs taken into this batch.
    jobs: u64,
}

impl<K> Worker<K>
where
    K: Fn() -> Option<Arc<KeySet>>,
{
    async fn run(self, mut rx: mpsc::Receiver<CaptureJob>, mut stop: oneshot::Receiver<()>) {
        let mut jobs = Vec::with_capacity(limits::CAPTURE_BATCH_JOBS_MAX);
        let mut stopping = false;
        loop {
            tokio::select! {
                // Stop or handle dropped: refuse new jobs, keep draining what is queued.
                _ = &mut stop, if !stopping => {
                    stopping = true;
                    rx.close();
                }
                n = rx.recv_many(&mut jobs, limits::CAPTURE_BATCH_JOBS_MAX) => {
                    if n == 0 {
                        break; // closed and empty: every sender gone, or stopped and drained
                    }
                    self.stats.depth_sub(n as u64);
                    let mut batch = Batch::default();
                    for job in jobs.drain(..) {
                        self.process(job, &mut batch);
                    }
                    self.flush(batch).await;
                    if !stopping && n < limits::CAPTURE_BATCH_JOBS_MAX {
                        tokio::time::sleep(std::time::Duration::from_millis(
                            limits::CAPTURE_LINGER_MS,
                        ))
                        .await;
                    }
                }
            }
        }
        tracing::debug!("capture worker stopped");
    }

    /// Whether a rate-limited warning may be logged at `now` (one a minute: a provider whose
    /// tokens never verify, such as Entra's Graph tokens with a header nonce, must not flood
    /// the log; the counter has every occurrence).
    fn warn_due(&self, now: i64) -> bool {
        let last = self.last_warn_secs.get();
        if now.saturating_sub(last) >= 60 {
            self.last_warn_secs.set(now);
            true
        } else {
            false
        }
    }

    /// The record of `digest` as the batch or the store has it.
    fn lookup(&self, batch: &Batch, digest: &ArtifactDigest, now: i64) -> Option<ArtifactRecord> {
        match batch.artifacts.get(digest) {
            Some(a) => Some(a.clone()),
            None => self
                .store
                .get_artifact(digest, now)
                .and_then(|v| v.to_record()),
        }
    }

    fn process(&self, job: CaptureJob, batch: &mut Batch) {
        batch.jobs += 1;
        match job {
            CaptureJob::Granted(g) => {
                if let Err(reason) = self.granted(&g, batch) {
                    self.stats.on_skipped(reason);
                    if reason == Skip::BadSignature && self.warn_due(g.received_at_secs) {
                        tracing::warn!(
                            client_id = %g.client_id,
                            skipped_total = self.stats.counts().skipped(reason),
                            "capture skipped: a primary token's signature does not verify \
                             (logged at most once a minute; see backstop_capture_skipped_total)"
                        );
                    } else {
                        tracing::debug!(client_id = %g.client_id, reason = reason.as_str(), "capture skipped");
                    }
                }
            }
            CaptureJob::Refused {
                presented,
                client_id,
                dpop_proof,
                at_secs,
            } => {
                let request = RefusedRequest {
                    client_id: &client_id,
                    dpop_proof: dpop_proof.as_deref(),
                };
                self.refused(presented, &request, at_secs, batch);
            }
        }
    }

    fn granted(&self, g: &GrantCapture, batch: &mut Batch) -> Result<(), Skip> {
        let keys = (self.primary_keys)().ok_or(Skip::NoPrimaryKeys)?;
        let now = g.received_at_secs;
        let previous = g
            .presented_refresh
            .and_then(|d| self.lookup(batch, &d, now));
        let store = &self.store;
        let refresh_digest = |raw: &[u8]| store.artifact_digest(ArtifactKind::RefreshToken, raw);
        let ctx = DeriveContext {
            keys: &keys,
            cfg: &self.cfg,
            issuer: &self.issuer,
            refresh_digest: &refresh_digest,
        };
        let d = derive(g, &ctx, previous.as_ref(), new_family)?;
        batch.captured += 1;
        if let Some(s) = d.superseded {
            batch.superseded += 1;
            // The presented token had been rotated out already and the primary still accepted
            // it (a provider with a reuse grace period): the family's newer tokens are older
            // than the one just issued, and an older refresh token never works at the backup.
            if let Some(ArtifactRecord {
                state: ArtifactState::Superseded { successor },
                ..
            }) = previous
            {
                self.supersede_chain(successor, d.artifact.digest, now, batch);
            }
            batch.artifacts.insert(s.digest, s);
        }
        if let Some(c) = d.client_secret {
            batch.artifacts.insert(c.digest, c);
        }
        batch.artifacts.insert(d.artifact.digest, d.artifact);
        batch
            .sessions
            .insert(d.snapshot.identity.clone(), d.snapshot);
        Ok(())
    }

    /// The DPoP key `rec`'s session is bound to: the snapshot's `dpop_jkt` (batch first, then
    /// the store). Without a snapshot, a `jkt:` device is taken as bound (refusing to act on a
    /// refusal is the side that cannot be abused to kill a grant).
    fn bound_key(&self, batch: &Batch, rec: &ArtifactRecord, now: i64) -> Option<String> {
        let id = SessionIdentity {
            tenant: rec.tenant.clone(),
            user: rec.user.clone(),
            device: rec.device.clone(),
            app: rec.app.clone(),
            resource: rec.resource.clone(),
        };
        match batch.sessions.get(&id) {
            Some(s) => s.dpop_jkt.clone(),
            None => match self.store.get_session(&id, now) {
                Some(s) => s.to_snapshot().dpop_jkt,
                None => rec
                    .device
                    .strip_prefix(DEVICE_PREFIX_JKT)
                    .map(str::to_string),
            },
        }
    }

    /// Marks the current token of the chain starting at `from` as superseded by `newest`.
    fn supersede_chain(
        &self,
        from: ArtifactDigest,
        newest: ArtifactDigest,
        now: i64,
        batch: &mut Batch,
    ) {
        let mut next = from;
        for _ in 0..limits::CAPTURE_SUCCESSOR_HOPS_MAX {
            if next == newest {
                return;
            }
            let Some(mut rec) = self.lookup(batch, &next, now) else {
                return;
            };
            match rec.state {
                ArtifactState::Revoked => return,
                ArtifactState::Superseded { successor } => next = successor,
                ArtifactState::Current => {
                    rec.state = ArtifactState::Superseded { successor: newest };
                    rec.state_changed_at_secs = now;
                    batch.superseded += 1;
                    batch.artifacts.insert(rec.digest, rec);
                    return;
                }
            }
        }
    }

    /// The primary refused `presented` (`invalid_grant`). Strict rotation means it has revoked
    /// the whole grant: revoke the current token of the family, following successor links from
    /// a rotated-out one.
    fn refused(
        &self,
        presented: ArtifactDigest,
        request: &RefusedRequest<'_>,
        now: i64,
        batch: &mut Batch,
    ) {
        let Some(mut rec) = self
            .lookup(batch, &presented, now)
            .filter(|r| r.kind == ArtifactKind::RefreshToken)
        else {
            tracing::debug!(artifact = ?presented, "primary refused a refresh token never captured");
            return;
        };
        if !request.is_holder_of(&rec, self.bound_key(batch, &rec, now).as_deref()) {
            self.stats.on_refusal_ignored();
            tracing::info!(
                artifact = ?presented,
                "primary refused a refresh token presented by another client or DPoP key; not revoked"
            );
            return;
        }
        for _ in 0..=limits::CAPTURE_SUCCESSOR_HOPS_MAX {
            match rec.state {
                ArtifactState::Revoked => return,
                ArtifactState::Current => {
                    tracing::info!(
                        presented = ?presented,
                        revoked = ?rec.digest,
                        "primary refused a refresh token; its family's current token is revoked"
                    );
                    rec.state = ArtifactState::Revoked;
                    rec.state_changed_at_secs = now;
                    batch.revoked += 1;
                    batch.artifacts.insert(rec.digest, rec);
                    return;
                }
                ArtifactState::Superseded { successor } => {
                    match self.lookup(batch, &successor, now) {
                        Some(next) => rec = next,
                        None => {
                            tracing::info!(
                                presented = ?presented,
                                "primary refused a rotated-out refresh token; its successor is unknown or expired"
                            );
                            return;
                        }
                    }
                }
            }
        }
        tracing::warn!(
            presented = ?presented,
            hops = limits::CAPTURE_SUCCESSOR_HOPS_MAX,
            "primary refused a refresh token; its family's current token is beyond the successor hop limit and was not revoked"
        );
    }

    async fn flush(&self, batch: Batch) {
        let mut writes = tokio::task::JoinSet::new();
        for a in batch.artifacts.values() {
            writes.spawn(self.store.put_artifact(a));
        }
        for s in batch.sessions.into_values() {
            writes.spawn(self.store.put_session_owned(s));
        }
        let mut failed = 0u64;
        while let Some(r) = writes.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failed += 1;
                    tracing::warn!(error = %e, "capture write failed");
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %e, "capture write task failed");
                }
            }
        }
        if failed == 0 {
            self.stats.on_captured(batch.captured);
            self.stats.on_superseded(batch.superseded);
            self.stats.on_revoked(batch.revoked);
            self.stats.on_settled(batch.jobs);
        } else {
            self.stats.on_store_failed(failed);
        }
    }
}

/// Who presented a refused token.
struct RefusedRequest<'a> {
    client_id: &'a str,
    dpop_proof: Option<&'a [u8]>,
}

impl RefusedRequest<'_> {
    /// The request came from the token's own client and, when the token is bound to a DPoP key
    /// (`bound_jkt`), proved possession of that key. An unbound token refused to its own
    /// client is dead whatever proof came with it.
    fn is_holder_of(&self, rec: &ArtifactRecord, bound_jkt: Option<&str>) -> bool {
        if rec.app != self.client_id {
            return false;
        }
        match bound_jkt {
            None => true,
            Some(jkt) => self
                .dpop_proof
                .and_then(proof_thumbprint)
                .is_some_and(|t| t == jkt),
        }
    }
}

/// A fresh refresh-token family id: 128 random bits, hex.
fn new_family() -> Option<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use serde_json::json;

    use super::super::testkit::*;
    use super::super::{CaptureCounts, client_secret_digest};
    use super::*;
    use crate::gateway::capture::Skip;
    use crate::store::{ClientAuthMethod, StoreOpts};
    use crate::token::alg::SigningAlg;
    use crate::token::sign::SigningKey;

    fn open(dir: &tempfile::TempDir) -> Arc<Store> {
        Arc::new(Store::open(dir.path(), StoreOpts::manual()).unwrap())
    }

    fn start(
        store: &Arc<Store>,
        keys: Option<Arc<KeySet>>,
        queue_len: usize,
    ) -> (CaptureQueue, CaptureWorker, Arc<CaptureStats>) {
        let stats = Arc::new(CaptureStats::new());
        let cfg = CaptureConfig {
            queue_len,
            ..CaptureConfig::default()
        };
        let (q, w) = spawn_capture_worker(
            Arc::clone(store),
            move || keys.clone(),
            cfg,
            ISSUER.to_string(),
            Arc::clone(&stats),
        )
        .unwrap();
        (q, w, stats)
    }

    fn granted(job: GrantCapture) -> CaptureJob {
        CaptureJob::Granted(Box::new(job))
    }

    fn code(p: &JwsSigner, rt: &str) -> GrantCapture {
        let at = p.jwt(Some("at+jwt"), &at_claims("alice"));
        let id = p.jwt(Some("JWT"), &id_claims("alice"));
        code_job(response(&at, Some(&id), Some(rt), json!({})))
    }

    fn refresh(p: &JwsSigner, store: &Store, from: &str, to: &str) -> GrantCapture {
        let at = p.jwt(Some("at+jwt"), &at_claims("alice"));
        refresh_job(
            response(&at, None, Some(to), json!({})),
            digest_of(store, from),
        )
    }

    fn digest_of(store: &Store, rt: &str) -> ArtifactDigest {
        store.artifact_digest(ArtifactKind::RefreshToken, rt.as_bytes())
    }

    fn artifact(store: &Store, rt: &str) -> ArtifactRecord {
        store
            .get_artifact(&digest_of(store, rt), NOW)
            .and_then(|v| v.to_record())
            .unwrap_or_else(|| panic!("artifact {rt} missing"))
    }

    #[test]
    fn a_granted_job_writes_snapshot_artifact_and_client_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let p = JwsSigner::primary();
        let (q, w, stats) = start(&store, Some(Arc::new(p.key_set())), 16);
        let mut job = code(&p, "rt-1");
        job.client_auth = ClientAuthMethod::SecretPost;
        job.client_secret_digest = Some(client_secret_digest(&store, CLIENT, b"s3cret"));
        assert!(q.try_send(granted(job)));
        w.shutdown();

        let a = artifact(&store, "rt-1");
        assert_eq!(a.state, ArtifactState::Current);
        assert_eq!(a.user, "alice");
        let id = SessionIdentity {
            tenant: a.tenant.clone(),
            user: a.user.clone(),
            device: a.device.clone(),
            app: a.app.clone(),
            resource: a.resource.clone(),
        };
        let s = store.get_session(&id, NOW).unwrap().to_snapshot();
        assert_eq!(s.amr, ["pwd", "mfa"]);
        assert_eq!(s.auth_time_secs, NOW - 600);
        let secret = store
            .get_artifact(&client_secret_digest(&store, CLIENT, b"s3cret"), NOW)
            .and_then(|v| v.to_record())
            .unwrap();
        assert_eq!(secret.kind, ArtifactKind::ClientSecret);
        assert_eq!(secret.client_auth, ClientAuthMethod::SecretPost);
        assert_eq!(
            stats.counts(),
            CaptureCounts {
                offered: 1,
                enqueued: 1,
                captured: 1,
                settled: 1,
                ..CaptureCounts::default()
            }
        );
    }

    #[test]
    fn client_secret_digest_depends_on_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let a = client_secret_digest(&store, "app-a", b"secret");
        assert_eq!(a, client_secret_digest(&store, "app-a", b"secret"));
        assert_ne!(a, client_secret_digest(&store, "app-b", b"secret"));
        assert_ne!(a, client_secret_digest(&store, "app-a", b"secret2"));
        assert_ne!(
            a,
            store.artifact_digest(ArtifactKind::ClientSecret, b"secret")
        );
    }

    #[test]
    fn rotation_then_refusal_in_one_batch_revokes_the_family() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let p = JwsSigner::primary();
        let (q, w, stats) = start(&store, Some(Arc::new(p.key_set())), 16);
        assert!(q.try_send(granted(code(&p, "rt-1"))));
        assert!(q.try_send(granted(refresh(&p, &store, "rt-1", "rt-2"))));
        // The client replays the rotated-out token; the primary refuses and kills the grant.
        assert!(q.try_send(CaptureJob::Refused {
            presented: digest_of(&store, "rt-1"),
            client_id: CLIENT.into(),
            dpop_proof: None,
            at_secs: NOW + 1,
        }));
        w.shutdown();
        assert_eq!(
            artifact(&store, "rt-1").state,
            ArtifactState::Superseded {
                successor: digest_of(&store, "rt-2")
            }
        );
        let current = artifact(&store, "rt-2");
        assert_eq!(current.state, ArtifactState::Revoked);
        assert_eq!(current.state_changed_at_secs, NOW + 1);
        assert_eq!(current.family, artifact(&store, "rt-1").family);
        let c = stats.counts();
        assert_eq!((c.captured, c.superseded, c.revoked), (2, 1, 1));
    }

    #[test]
    fn later_workers_follow_what_earlier_ones_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let p = JwsSigner::primary();
        let keys = Some(Arc::new(p.key_set()));
        let (q, w, _) = start(&store, keys.clone(), 16);
        assert!(q.try_send(granted(code(&p, "rt-1"))));
        w.shutdown();
        let (q, w, _) = start(&store, keys.clone(), 16);
        assert!(q.try_send(granted(refresh(&p, &store, "rt-1", "rt-2"))));
        w.shutdown();
        let (q, w, _) = start(&store, keys.clone(), 16);
        assert!(q.try_send(granted(refresh(&p, &store, "rt-2", "rt-3"))));
        w.shutdown();
        let family = artifact(&store, "rt-1").family;
        assert_eq!(artifact(&store, "rt-3").family, family);
        assert!(matches!(
            artifact(&store, "rt-2").state,
            ArtifactState::Superseded { .. }
        ));

        // Refused through two successor links from the oldest token, read from the store.
        let (q, w, stats) = start(&store, keys.clone(), 16);
        assert!(q.try_send(CaptureJob::Refused {
            presented: digest_of(&store, "rt-1"),
            client_id: CLIENT.into(),
            dpop_proof: None,
            at_secs: NOW + 5,
        }));
        // A token never captured is nothing to revoke.
        assert!(q.try_send(CaptureJob::Refused {
            presented: digest_of(&store, "never-seen"),
            client_id: CLIENT.into(),
            dpop_proof: None,
            at_secs: NOW + 5,
        }));
        w.shutdown();
        assert_eq!(artifact(&store, "rt-3").state, ArtifactState::Revoked);
        assert_eq!(stats.counts().revoked, 1);

        // Refused on the current token itself, in a fresh family.
        let (q, w, stats) = start(&store, keys, 16);
        assert!(q.try_send(granted(code(&p, "rt-9"))));
        assert!(q.try_send(CaptureJob::Refused {
            presented: digest_of(&store, "rt-9"),
            client_id: CLIENT.into(),
            dpop_proof: None,
            at_secs: NOW + 6,
        }));
        w.shutdown();
        assert_eq!(artifact(&store, "rt-9").state, ArtifactState::Revoked);
        assert_eq!(stats.counts().revoked, 1);
    }

    #[test]
    fn a_rotated_out_token_the_primary_still_accepts_supersedes_its_newer_sibling() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let p = JwsSigner::primary();
        let (q, w, stats) = start(&store, Some(Arc::new(p.key_set())), 16);
        assert!(q.try_send(granted(code(&p, "rt-1"))));
        assert!(q.try_send(granted(refresh(&p, &store, "rt-1", "rt-2"))));
        // A provider with a reuse grace period accepts rt-1 once more and issues rt-3.
        assert!(q.try_send(granted(refresh(&p, &store, "rt-1", "rt-3"))));
        w.shutdown();
        let rt3 = digest_of(&store, "rt-3");
        assert_eq!(artifact(&store, "rt-3").state, ArtifactState::Current);
        for old in ["rt-1", "rt-2"] {
            assert_eq!(
                artifact(&store, old).state,
                ArtifactState::Superseded { successor: rt3 },
                "{old}"
            );
        }
        assert_eq!(stats.counts().superseded, 3);
    }

    #[test]
    fn a_refusal_of_another_client_or_dpop_key_revokes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let p = JwsSigner::primary();
        let holder = JwsSigner::new(SigningKey::generate(SigningAlg::Es256).unwrap());
        let thief = JwsSigner::new(SigningKey::generate(SigningAlg::Es256).unwrap());
        let (holder_proof, jkt) = holder.dpop_proof();
        let (thief_proof, _) = thief.dpop_proof();
        let (q, w, stats) = start(&store, Some(Arc::new(p.key_set())), 16);
        let at = p.jwt(
            Some("at+jwt"),
            &serde_json::json!({"cnf": {"jkt": jkt}, "iss": ISSUER, "sub": "alice", "iat": NOW, "exp": NOW + 60}),
        );
        assert!(q.try_send(granted(code_job(response(
            &at,
            None,
            Some("rt-b"),
            json!({"token_type": "DPoP"})
        )))));
        assert!(q.try_send(granted(code(&p, "rt-plain"))));
        let refused = |rt: &str, client: &str, proof: Option<&str>| CaptureJob::Refused {
            presented: digest_of(&store, rt),
            client_id: client.into(),
            dpop_proof: proof.map(|p| bytes::Bytes::from(p.to_string())),
            at_secs: NOW + 1,
        };
        assert!(q.try_send(refused("rt-plain", "other-app", None)));
        assert!(q.try_send(refused("rt-b", CLIENT, None)));
        assert!(q.try_send(refused("rt-b", CLIENT, Some(&thief_proof))));
        w.shutdown();
        assert_eq!(artifact(&store, "rt-plain").state, ArtifactState::Current);
        assert_eq!(artifact(&store, "rt-b").state, ArtifactState::Current);
        let c = stats.counts();
        assert_eq!((c.revoked, c.refusals_ignored), (0, 3));

        // The holder's own refused refresh does revoke.
        let (q, w, stats) = start(&store, Some(Arc::new(p.key_set())), 16);
        assert!(q.try_send(refused("rt-b", CLIENT, Some(&holder_proof))));
        w.shutdown();
        assert_eq!(artifact(&store, "rt-b").state, ArtifactState::Revoked);
        assert_eq!(stats.counts().revoked, 1);

        // A Bearer session whose device is a proof's key is not bound: the primary's refusal is
        // about the grant, and revokes it whatever proof came along.
        let (q, w, stats) = start(&store, Some(Arc::new(p.key_set())), 16);
        let mut job = code(&p, "rt-u");
        job.dpop_proof = Some(bytes::Bytes::from(holder_proof.clone()));
        assert!(q.try_send(granted(job)));
        assert!(q.try_send(refused("rt-u", CLIENT, None)));
        w.shutdown();
        let u = artifact(&store, "rt-u");
        assert_eq!(u.device, format!("jkt:{jkt}"));
        assert_eq!(u.state, ArtifactState::Revoked);
        assert_eq!(stats.counts().revoked, 1);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let p = JwsSigner::primary();
        let keys = Arc::new(p.key_set());
        // The worker's first key lookup waits for the test, so the queue fills behind it.
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new((entered_tx, release_rx));
        let first = AtomicBool::new(true);
        let stats = Arc::new(CaptureStats::new());
        let cfg = CaptureConfig {
            queue_len: 1,
            ..CaptureConfig::default()
        };
        let (q, w) = spawn_capture_worker(
            Arc::clone(&store),
            move || {
                if first.swap(false, Ordering::SeqCst) {
                    let g = gate.lock().unwrap();
                    g.0.send(()).unwrap();
                    g.1.recv().unwrap();
                }
                Some(Arc::clone(&keys))
            },
            cfg,
            ISSUER.to_string(),
            Arc::clone(&stats),
        )
        .unwrap();
        assert!(q.try_send(granted(code(&p, "rt-1"))));
        entered_rx.recv().unwrap();
        assert!(q.try_send(granted(code(&p, "rt-2"))));
        assert!(!q.try_send(granted(code(&p, "rt-3"))));
        assert_eq!(q.depth(), 1);
        assert_eq!(stats.counts().dropped, 1);
        release_tx.send(()).unwrap();
        w.shutdown();
        // After shutdown the queue is closed: a send is dropped and counted, never blocks.
        assert!(!q.try_send(granted(code(&p, "rt-4"))));
        let c = stats.counts();
        assert_eq!(
            (c.enqueued, c.dropped, c.captured, c.queue_depth),
            (2, 2, 2, 0)
        );
        assert_eq!(
            (c.offered, c.settled),
            (4, 2),
            "drops are offered, never settled"
        );
        artifact(&store, "rt-2");
        assert!(
            store
                .get_artifact(&digest_of(&store, "rt-3"), NOW)
                .is_none()
        );
    }

    #[test]
    fn once_settled_reaches_the_offered_count_every_offered_capture_is_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let p = JwsSigner::primary();
        let (q, w, stats) = start(&store, Some(Arc::new(p.key_set())), 16);
        for rt in ["rt-1", "rt-2", "rt-3"] {
            assert!(q.try_send(granted(code(&p, rt))));
        }
        // What a client that has seen its responses reads, then waits for.
        let offered = stats.counts().offered;
        assert_eq!(offered, 3);
        // Bounded wait (10 s) without reading the clock.
        for tries in 0.. {
            if stats.counts().settled >= offered {
                break;
            }
            assert!(tries < 2000, "never settled");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for rt in ["rt-1", "rt-2", "rt-3"] {
            artifact(&store, rt);
        }
        w.shutdown();
        assert_eq!(stats.counts().settled, 3);
    }

    #[test]
    fn without_primary_keys_jobs_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let p = JwsSigner::primary();
        let (q, w, stats) = start(&store, None, 4);
        assert!(q.try_send(granted(code(&p, "rt-1"))));
        w.shutdown();
        assert_eq!(stats.counts().skipped(Skip::NoPrimaryKeys), 1);
        assert!(
            store
                .get_artifact(&digest_of(&store, "rt-1"), NOW)
                .is_none()
        );
    }

    #[test]
    fn the_worker_exits_when_every_sender_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let p = JwsSigner::primary();
        let (q, mut w, stats) = start(&store, Some(Arc::new(p.key_set())), 4);
        assert!(q.try_send(granted(code(&p, "rt-1"))));
        drop(q);
        let thread = w.thread.take().unwrap();
        thread.join().unwrap();
        assert_eq!(stats.counts().captured, 1);
        drop(w);
    }
}
