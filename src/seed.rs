//! Seeding a store with a synthetic population of sessions, for load tests and the scale run
//! (issue 7): realistic snapshots (Entra-like claims templates of a few hundred bytes) and
//! refresh-token artifacts, written through the store's own API, durably, with group commit.
//!
//! Refresh tokens are derived from a seed and the session's index ([`refresh_token`]), so a
//! load generator regenerates any session's token instead of reading a file of millions. They
//! are test credentials of a synthetic population: never seed a production data directory.

use crate::store::{
    ArtifactKind, ArtifactRecord, ArtifactState, ClientAuthMethod, DeviceCompliance, RiskLevel,
    SessionIdentity, SessionSnapshot, Store, StoreError, TokenTemplate,
};
use crate::token::alg::{SigningAlg, Typ};
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
    /// The async runtime could not be started.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A write task failed to complete.
    #[error("write task: {0}")]
    Join(String),
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
    }
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

/// The snapshot and artifact of session `i`.
pub fn session(
    store: &Store,
    spec: &SeedSpec,
    i: u64,
    now_secs: i64,
) -> Result<(SessionSnapshot, ArtifactRecord), SeedError> {
    let now = u64::try_from(now_secs).unwrap_or(0);
    let user = format!("user-{:010}", i / 2);
    let device = format!("family:seed-{i:012x}");
    let app = app(spec, i);
    let resource = resource(spec, i);
    let tenant = "seed-tenant-0001".to_string();
    let iat = now;
    let access_claims = format!(
        r#"{{"aud":"{resource}","iss":"{iss}","iat":{iat},"nbf":{iat},"exp":{exp},"aio":"E2ZgYDh1c2VlZA==","amr":["pwd","mfa"],"appid":"{app}","appidacr":"0","groups":["5f2c9a1e-0000-4000-8000-00000000000{g}"],"idp":"{iss}","ipaddr":"203.0.113.7","name":"Seed User {i}","oid":"{user}","rh":"0.AAAA.seed","roles":["Reader"],"scp":"read write","sub":"{user}","tid":"{tenant}","unique_name":"{user}@seed.example","uti":"seed{i}","ver":"2.0"}}"#,
        iss = spec.issuer,
        exp = iat + 3600,
        g = i % 10,
    );
    let id_claims = format!(
        r#"{{"aud":"{app}","iss":"{iss}","iat":{iat},"exp":{exp},"auth_time":{auth},"nonce":"seed-nonce-{i}","sub":"{user}","tid":"{tenant}","amr":["pwd","mfa"],"acr":"1"}}"#,
        iss = spec.issuer,
        exp = iat + 3600,
        auth = iat.saturating_sub(600),
    );
    let at_shape = PrimaryTokenShape {
        typ: Some(Typ::AtJwt),
        alg: spec.alg,
    };
    let id_shape = PrimaryTokenShape {
        typ: Some(Typ::Jwt),
        alg: spec.alg,
    };
    let snapshot = SessionSnapshot {
        identity: SessionIdentity {
            tenant: tenant.clone(),
            user: user.clone(),
            device: device.clone(),
            app: app.clone(),
            resource: resource.clone(),
        },
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
        dpop_jkt: None,
        access_token: template(&access_claims, at_shape, now)?,
        id_token: if spec.id_token {
            Some(template(&id_claims, id_shape, now)?)
        } else {
            None
        },
        scopes: if spec.id_token {
            vec!["openid".into(), "read".into(), "write".into()]
        } else {
            vec!["read".into(), "write".into()]
        },
        token_type: "Bearer".into(),
    };
    let artifact = ArtifactRecord {
        kind: ArtifactKind::RefreshToken,
        digest: store.artifact_digest(
            ArtifactKind::RefreshToken,
            refresh_token(spec.token_seed, i).as_bytes(),
        ),
        tenant,
        user,
        device,
        app,
        resource,
        family: format!("seed-{i:012x}"),
        client_auth: ClientAuthMethod::None,
        state: ArtifactState::Current,
        state_changed_at_secs: 0,
        issued_at_secs: now_secs,
        expires_at_secs: now_secs + spec.window_secs,
    };
    Ok((snapshot, artifact))
}

/// Seeds `spec.sessions` sessions, calling `progress(done)` now and then; compacts every
/// 2 Mi sessions (bounding memory as the background compactor would) and at the end.
pub fn seed(
    store: &Store,
    spec: &SeedSpec,
    now_secs: i64,
    mut progress: impl FnMut(u64),
) -> Result<(), SeedError> {
    const CHUNK: u64 = 16_384;
    const IN_FLIGHT: usize = 4096;
    const COMPACT_EVERY: u64 = 1 << 21;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut start = 0;
    while start < spec.sessions {
        let end = (start + CHUNK).min(spec.sessions);
        let records = (start..end)
            .map(|i| session(store, spec, i, now_secs))
            .collect::<Result<Vec<_>, _>>()?;
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (snapshot, artifact) in records {
                tasks.spawn(store.put_artifact(&artifact));
                tasks.spawn(store.put_session_owned(snapshot));
                while tasks.len() >= IN_FLIGHT {
                    join_one(&mut tasks).await?;
                }
            }
            while !tasks.is_empty() {
                join_one(&mut tasks).await?;
            }
            Ok::<(), SeedError>(())
        })?;
        if end / COMPACT_EVERY != start / COMPACT_EVERY {
            store.compact(now_secs)?;
        }
        start = end;
        progress(end);
    }
    store.compact(now_secs)?;
    Ok(())
}

async fn join_one(
    tasks: &mut tokio::task::JoinSet<Result<(), StoreError>>,
) -> Result<(), SeedError> {
    match tasks.join_next().await {
        Some(Ok(r)) => Ok(r?),
        Some(Err(e)) => Err(SeedError::Join(e.to_string())),
        None => Ok(()),
    }
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
}
