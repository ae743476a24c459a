//! Seeding a store with a synthetic population of sessions, for load tests and the scale run
//! (issue 7): realistic snapshots (Entra-like claims templates of a few hundred bytes) and
//! refresh-token artifacts, written through the store's bulk-load API (`Store::bulk_load`):
//! records are built and serialized on every core, grouped by shard, and each shard's segment
//! is written once, durably (tmp → fsync → rename → fsync dir), with no WAL in between.
//!
//! Refresh tokens are derived from a seed and the session's index ([`refresh_token`]), so a
//! load generator regenerates any session's token instead of reading a file of millions. They
//! are test credentials of a synthetic population: never seed a production data directory.

use crate::store::{
    ArtifactKind, ArtifactRecord, ArtifactState, BulkRecord, ClientAuthMethod, DeviceCompliance,
    RiskLevel, SessionIdentity, SessionSnapshot, Store, StoreError, TokenTemplate,
};
use crate::token::alg::{SigningAlg, Typ};
use crate::token::jwk::PublicKey;
use crate::token::mint::{PrimaryTokenShape, TemplateError, build_template};

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedSpec {
    /// Number of sessions (one refresh token each).
    pub sessions: u64,
    /// Algorithm the "primary" signed with (the backup signs with ours of the same type).
    pub alg: SigningAlg,
    /// `iss` of the templates: the issuer backstop will serve as.
    pub issuer: String,
    /// Distinct client applications (`seed-app-{k}`).
    pub apps: u32,
    /// Distinct resources (`https://api{r}.seed.example`).
    pub resources: u32,
    /// Seed of the refresh tokens (see [`refresh_token`]).
    pub token_seed: u64,
    /// Snapshot lifetime from now, seconds.
    pub window_secs: i64,
    /// Whether the grant had an ID token (`openid` scope): a refresh then mints two tokens.
    pub id_token: bool,
    /// Every `dpop_every`-th session (indices `0, K, 2K, …`) is DPoP-bound to the key
    /// [`dpop_key`] of its index; 0: none.
    pub dpop_every: u64,
}

/// Why seeding stopped.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The store refused a write.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A template could not be built (a bug in the generator).
    #[error("template: {0}")]
    Template(#[from] TemplateError),
    /// A worker thread could not be started.
    #[error("thread: {0}")]
    Thread(#[from] std::io::Error),
    /// A worker thread panicked or stopped early.
    #[error("worker: {0}")]
    Join(String),
    /// A DPoP key could not be derived (a bug in the generator).
    #[error("dpop key of session {index}")]
    DpopKey {
        /// Session index.
        index: u64,
    },
}

/// One seeded session, as a client would present it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededClient {
    /// `client_id`.
    pub client_id: String,
    /// The refresh token.
    pub refresh_token: String,
    /// The resource the session is for.
    pub resource: String,
    /// The Ed25519 private seed of the session's DPoP key, when it is DPoP-bound.
    pub dpop_key: Option<[u8; 32]>,
}

impl SeededClient {
    /// The `--tokens-out` line: `client_id refresh_token resource`, then
    /// `dpop:<base64url, no padding, of the 32-byte private seed>` for a DPoP-bound session.
    pub fn line(&self) -> String {
        let mut l = format!(
            "{} {} {}",
            self.client_id, self.refresh_token, self.resource
        );
        if let Some(k) = &self.dpop_key {
            l.push_str(" dpop:");
            l.push_str(&crate::token::b64::encode(k));
        }
        l
    }
}

/// The refresh token of session `i` under `seed`: 64 base64url-ish characters, deterministic.
pub fn refresh_token(seed: u64, i: u64) -> String {
    let a = xxhash_rust::xxh3::xxh3_128_with_seed(&i.to_le_bytes(), seed);
    let b = xxhash_rust::xxh3::xxh3_128_with_seed(&i.to_le_bytes(), seed ^ 0x9e37_79b9_7f4a_7c15);
    format!("{a:032x}{b:032x}")
}

/// The client that holds session `i`'s token.
pub fn client_of(spec: &SeedSpec, i: u64) -> SeededClient {
    SeededClient {
        client_id: app(spec, i),
        refresh_token: refresh_token(spec.token_seed, i),
        resource: resource(spec, i),
        dpop_key: is_dpop(spec, i).then(|| dpop_key(spec.token_seed, i)),
    }
}

fn is_dpop(spec: &SeedSpec, i: u64) -> bool {
    spec.dpop_every > 0 && i.is_multiple_of(spec.dpop_every)
}

/// The Ed25519 private seed (RFC 8032 §5.1.5) of session `i`'s DPoP key under `seed`:
/// `SHA-256("backstop seed dpop" ‖ seed_le ‖ i_le)`, deterministic so a load generator can
/// rebuild any session's key. Test keys of a synthetic population, like the tokens.
pub fn dpop_key(seed: u64, i: u64) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"backstop seed dpop");
    ctx.update(&seed.to_le_bytes());
    ctx.update(&i.to_le_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The RFC 7638 thumbprint (base64url, DPoP's `jkt`, RFC 9449 §6.1) of the public key of an
/// Ed25519 private seed; `None` if the seed is refused (it never is: any 32 bytes are a seed).
pub fn dpop_jkt(private_seed: &[u8; 32]) -> Option<String> {
    use aws_lc_rs::signature::KeyPair as _;
    let kp = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(private_seed).ok()?;
    let x: [u8; 32] = kp.public_key().as_ref().try_into().ok()?;
    Some(PublicKey::Ed25519 { x }.thumbprint())
}

fn app(spec: &SeedSpec, i: u64) -> String {
    format!("seed-app-{}", i % u64::from(spec.apps.max(1)))
}

fn resource(spec: &SeedSpec, i: u64) -> String {
    format!(
        "https://api{}.seed.example",
        (i / u64::from(spec.apps.max(1))) % u64::from(spec.resources.max(1))
    )
}

/// What every session's templates share: the metadata `build_template` derives from the time
/// claims (identical for all sessions of one run: same `iat`, same lifetime), computed once.
struct Shapes {
    access: TokenTemplate,
    id: TokenTemplate,
}

fn template(claims: &str, shape: PrimaryTokenShape, now: u64) -> Result<TokenTemplate, SeedError> {
    let t = build_template(claims.as_bytes(), shape, now)?;
    Ok(TokenTemplate {
        claims_json: t.claims,
        time_claims: t.meta.time_claim_bits(),
        lifetime_secs: t.meta.lifetime_secs,
        alg: t.meta.alg.name().to_owned(),
        typ: t.meta.typ.map_or("", Typ::name).to_owned(),
        nbf_offset_secs: t.meta.nbf_offset_secs,
    })
}

/// The claims of session `i`'s access and ID tokens as the primary would send them (with
/// `iat`, `nbf`, `exp`), and as the template keeps them (without). The template form is what
/// `build_template` makes of the full form (a test pins that), written out directly because
/// parsing two JSON documents per session was most of the seeding time.
struct Claims {
    access_full: String,
    access_template: String,
    id_full: String,
    id_template: String,
}

fn claims(spec: &SeedSpec, i: u64, now: u64) -> Claims {
    let user = user(i);
    let app = app(spec, i);
    let resource = resource(spec, i);
    let iss = &spec.issuer;
    let iat = now;
    let exp = now + 3600;
    let g = i % 10;
    let access_rest = format!(
        r#""aio":"E2ZgYDh1c2VlZA==","amr":["pwd","mfa"],"appid":"{app}","appidacr":"0","groups":["5f2c9a1e-0000-4000-8000-00000000000{g}"],"idp":"{iss}","ipaddr":"203.0.113.7","name":"Seed User {i}","oid":"{user}","rh":"0.AAAA.seed","roles":["Reader"],"scp":"read write","sub":"{user}","tid":"{TENANT}","unique_name":"{user}@seed.example","uti":"seed{i}","ver":"2.0""#
    );
    let id_rest = format!(
        r#""auth_time":{auth},"nonce":"seed-nonce-{i}","sub":"{user}","tid":"{TENANT}","amr":["pwd","mfa"],"acr":"1""#,
        auth = iat.saturating_sub(600),
    );
    Claims {
        access_full: format!(
            r#"{{"aud":"{resource}","iss":"{iss}","iat":{iat},"nbf":{iat},"exp":{exp},{access_rest}}}"#
        ),
        access_template: format!(r#"{{"aud":"{resource}","iss":"{iss}",{access_rest}}}"#),
        id_full: format!(r#"{{"aud":"{app}","iss":"{iss}","iat":{iat},"exp":{exp},{id_rest}}}"#),
        id_template: format!(r#"{{"aud":"{app}","iss":"{iss}",{id_rest}}}"#),
    }
}

const TENANT: &str = "seed-tenant-0001";

fn user(i: u64) -> String {
    format!("user-{:010}", i / 2)
}

fn device(i: u64) -> String {
    format!("family:seed-{i:012x}")
}

fn shapes(spec: &SeedSpec, now: u64) -> Result<Shapes, SeedError> {
    let c = claims(spec, 0, now);
    let access = template(
        &c.access_full,
        PrimaryTokenShape {
            typ: Some(Typ::AtJwt),
            alg: spec.alg,
        },
        now,
    )?;
    let id = template(
        &c.id_full,
        PrimaryTokenShape {
            typ: Some(Typ::Jwt),
            alg: spec.alg,
        },
        now,
    )?;
    Ok(Shapes { access, id })
}

fn with_claims(shape: &TokenTemplate, claims_json: String) -> TokenTemplate {
    TokenTemplate {
        claims_json: claims_json.into_bytes(),
        time_claims: shape.time_claims,
        lifetime_secs: shape.lifetime_secs,
        alg: shape.alg.clone(),
        typ: shape.typ.clone(),
        nbf_offset_secs: shape.nbf_offset_secs,
    }
}

fn identity(spec: &SeedSpec, i: u64) -> SessionIdentity {
    SessionIdentity {
        tenant: TENANT.to_string(),
        user: user(i),
        device: device(i),
        app: app(spec, i),
        resource: resource(spec, i),
    }
}

fn snapshot(
    spec: &SeedSpec,
    shapes: &Shapes,
    i: u64,
    now_secs: i64,
) -> Result<SessionSnapshot, SeedError> {
    let now = u64::try_from(now_secs).unwrap_or(0);
    let c = claims(spec, i, now);
    // A DPoP-bound grant's tokens are of type DPoP (RFC 9449 §5), as the primary said.
    let jkt = if is_dpop(spec, i) {
        Some(dpop_jkt(&dpop_key(spec.token_seed, i)).ok_or(SeedError::DpopKey { index: i })?)
    } else {
        None
    };
    Ok(SessionSnapshot {
        identity: identity(spec, i),
        home_tenant: true,
        auth_time_secs: now_secs - 600,
        recorded_at_secs: now_secs,
        expires_at_secs: now_secs + spec.window_secs,
        amr: vec!["pwd".into(), "mfa".into()],
        acr: "1".into(),
        groups: vec![format!("5f2c9a1e-0000-4000-8000-00000000000{}", i % 10)],
        roles: vec!["Reader".into()],
        sign_in_risk: RiskLevel::None,
        user_risk: RiskLevel::None,
        device_platform: "iOS".into(),
        device_compliance: DeviceCompliance::Compliant,
        access_token: with_claims(&shapes.access, c.access_template),
        id_token: spec
            .id_token
            .then(|| with_claims(&shapes.id, c.id_template)),
        scopes: if spec.id_token {
            vec!["openid".into(), "read".into(), "write".into()]
        } else {
            vec!["read".into(), "write".into()]
        },
        token_type: if jkt.is_some() { "DPoP" } else { "Bearer" }.into(),
        dpop_jkt: jkt,
    })
}

fn artifact(store: &Store, spec: &SeedSpec, i: u64, now_secs: i64) -> ArtifactRecord {
    ArtifactRecord {
        kind: ArtifactKind::RefreshToken,
        digest: store.artifact_digest(
            ArtifactKind::RefreshToken,
            refresh_token(spec.token_seed, i).as_bytes(),
        ),
        tenant: TENANT.to_string(),
        user: user(i),
        device: device(i),
        app: app(spec, i),
        resource: resource(spec, i),
        family: format!("seed-{i:012x}"),
        client_auth: ClientAuthMethod::None,
        state: ArtifactState::Current,
        state_changed_at_secs: 0,
        issued_at_secs: now_secs,
        expires_at_secs: now_secs + spec.window_secs,
    }
}

/// The snapshot and artifact of session `i`.
pub fn session(
    store: &Store,
    spec: &SeedSpec,
    i: u64,
    now_secs: i64,
) -> Result<(SessionSnapshot, ArtifactRecord), SeedError> {
    let now = u64::try_from(now_secs).unwrap_or(0);
    let s = snapshot(spec, &shapes(spec, now)?, i, now_secs)?;
    Ok((s, artifact(store, spec, i, now_secs)))
}

/// Tags an item of a shard's work list: the artifact of session `i` (set) or its snapshot.
const ARTIFACT_BIT: u64 = 1 << 63;

/// How many threads build records: every core.
fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Runs `f` over `items` split into one contiguous part per worker, on scoped threads, and
/// returns the parts' results in order.
fn par_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&[T]) -> Result<Vec<R>, SeedError> + Sync,
) -> Result<Vec<R>, SeedError> {
    let part = items.len().div_ceil(worker_count()).max(1);
    std::thread::scope(|scope| {
        let handles = items
            .chunks(part)
            .map(|c| {
                let f = &f;
                std::thread::Builder::new()
                    .name("seed-build".into())
                    .spawn_scoped(scope, move || f(c))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            out.extend(h.join().map_err(|_| SeedError::Join("builder".into()))??);
        }
        Ok(out)
    })
}

/// Every record's shard, as work lists: `lists[shard]` holds session indices (snapshots) and
/// `index | ARTIFACT_BIT` (artifacts).
fn route(store: &Store, spec: &SeedSpec) -> Result<Vec<Vec<u64>>, SeedError> {
    let indices: Vec<u64> = (0..spec.sessions).collect();
    let shards = par_map(&indices, |part| {
        Ok(part
            .iter()
            .map(|&i| {
                let session = store.shard_of(store.session_key(&identity(spec, i)));
                let digest = store.artifact_digest(
                    ArtifactKind::RefreshToken,
                    refresh_token(spec.token_seed, i).as_bytes(),
                );
                let artifact = store.shard_of(crate::store::keys::artifact_key(&digest));
                (session, artifact)
            })
            .collect())
    })?;
    let mut lists: Vec<Vec<u64>> = vec![Vec::new(); store.shard_count() as usize];
    for (i, (s, a)) in shards.into_iter().enumerate() {
        let i = i as u64;
        if let Some(l) = lists.get_mut(s as usize) {
            l.push(i);
        }
        if let Some(l) = lists.get_mut(a as usize) {
            l.push(i | ARTIFACT_BIT);
        }
    }
    Ok(lists)
}

/// Seeds `spec.sessions` sessions through [`Store::bulk_load`], calling `progress(done)` after
/// each shard (done = records loaded / 2, in sessions).
///
/// Three steps: route (every session's two keys → their shards, on all cores), then per
/// shard: build and serialize its records on all cores, and bulk-load them (one segment write)
/// on a writer thread while the next shard's records are built. Memory: the routing lists
/// (16 bytes a session) and two shards' records at a time. The store must not be taking
/// other writes (a bulk load sits under the in-memory table, see [`Store::bulk_load`]).
pub fn seed(
    store: &Store,
    spec: &SeedSpec,
    now_secs: i64,
    mut progress: impl FnMut(u64),
) -> Result<(), SeedError> {
    let now = u64::try_from(now_secs).unwrap_or(0);
    let shapes = shapes(spec, now)?;
    let lists = route(store, spec)?;
    std::thread::scope(|scope| {
        // One shard's records queued while the writer loads the previous one.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<BulkRecord>>(1);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Result<u64, StoreError>>();
        let writer = std::thread::Builder::new()
            .name("seed-load".into())
            .spawn_scoped(scope, move || {
                for records in rx {
                    let n = records.len() as u64;
                    let r = store.bulk_load(records, now_secs).map(|()| n);
                    let failed = r.is_err();
                    if done_tx.send(r).is_err() || failed {
                        return;
                    }
                }
            })?;
        let mut loaded = 0u64;
        let mut drain = |block: bool| -> Result<(), SeedError> {
            loop {
                let r = if block {
                    match done_rx.recv() {
                        Ok(r) => r,
                        Err(_) => return Ok(()),
                    }
                } else {
                    match done_rx.try_recv() {
                        Ok(r) => r,
                        Err(_) => return Ok(()),
                    }
                };
                loaded += r?;
                progress(loaded / 2);
            }
        };
        for list in &lists {
            let records = par_map(list, |part| {
                part.iter()
                    .map(|&item| {
                        let i = item & !ARTIFACT_BIT;
                        if item & ARTIFACT_BIT != 0 {
                            Ok(store.bulk_artifact(&artifact(store, spec, i, now_secs))?)
                        } else {
                            Ok(store.bulk_session(snapshot(spec, &shapes, i, now_secs)?)?)
                        }
                    })
                    .collect()
            })?;
            drain(false)?;
            if tx.send(records).is_err() {
                // The writer stopped: its error is waiting.
                break;
            }
        }
        drop(tx);
        drain(true)?;
        writer
            .join()
            .map_err(|_| SeedError::Join("loader".into()))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::StoreOpts;

    #[test]
    fn seeded_sessions_are_found_through_their_refresh_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOpts::manual()).unwrap();
        let spec = SeedSpec {
            sessions: 100,
            alg: SigningAlg::EdDsa,
            issuer: "http://127.0.0.1:8080".into(),
            apps: 3,
            resources: 2,
            token_seed: 7,
            window_secs: 3600,
            id_token: true,
            dpop_every: 0,
        };
        let now = 1_800_000_000;
        let mut seen = 0;
        seed(&store, &spec, now, |n| seen = n).unwrap();
        assert_eq!(seen, 100);
        for i in [0, 41, 99] {
            let c = client_of(&spec, i);
            let d = store.artifact_digest(ArtifactKind::RefreshToken, c.refresh_token.as_bytes());
            let a = store.get_artifact(&d, now).unwrap();
            assert_eq!(a.app.as_str(), c.client_id);
            assert_eq!(a.resource.as_str(), c.resource);
            let id = SessionIdentity {
                tenant: a.tenant.as_str().into(),
                user: a.user.as_str().into(),
                device: a.device.as_str().into(),
                app: a.app.as_str().into(),
                resource: c.resource.clone(),
            };
            assert!(store.get_session(&id, now).is_some(), "session {i}");
        }
        assert_ne!(refresh_token(7, 1), refresh_token(7, 2));
        assert_ne!(refresh_token(7, 1), refresh_token(8, 1));
    }

    #[test]
    fn templates_written_out_equal_what_build_template_makes_of_the_primarys_claims() {
        let spec = SeedSpec {
            sessions: 0,
            alg: SigningAlg::Es256,
            issuer: "https://login.example.com/t/v2.0".into(),
            apps: 4,
            resources: 3,
            token_seed: 1,
            window_secs: 3600,
            id_token: true,
            dpop_every: 0,
        };
        let now = 1_800_000_000u64;
        let sh = shapes(&spec, now).unwrap();
        for i in [0, 1, 7, 12_345, 9_999_999] {
            let c = claims(&spec, i, now);
            let at = PrimaryTokenShape {
                typ: Some(Typ::AtJwt),
                alg: spec.alg,
            };
            let id = PrimaryTokenShape {
                typ: Some(Typ::Jwt),
                alg: spec.alg,
            };
            assert_eq!(
                with_claims(&sh.access, c.access_template),
                template(&c.access_full, at, now).unwrap(),
                "access token of session {i}"
            );
            assert_eq!(
                with_claims(&sh.id, c.id_template),
                template(&c.id_full, id, now).unwrap(),
                "id token of session {i}"
            );
        }
    }
}
