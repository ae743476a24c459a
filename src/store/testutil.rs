//! Sample records for tests, benches and fuzzing: realistic sizes (claims templates of a few
//! hundred bytes) so measurements and crash tests exercise real record shapes.

use super::model::{
    ArtifactDigest, ArtifactKind, ArtifactRecord, ArtifactState, ClientAuthMethod,
    DeviceCompliance, RiskLevel, SessionIdentity, SessionSnapshot, TIME_CLAIM_EXP, TIME_CLAIM_IAT,
    TIME_CLAIM_JTI, TokenTemplate,
};

/// The identity of sample session `i`.
pub fn sample_identity(i: u64) -> SessionIdentity {
    SessionIdentity {
        tenant: "tenant".into(),
        user: format!("user-{i}"),
        device: format!("device-{:x}", i.wrapping_mul(0x9e37_79b9)),
        app: "app-client".into(),
        resource: "https://api.example.com".into(),
    }
}

/// Sample session `i`, expiring at `expires_at_secs`.
pub fn sample_snapshot(i: u64, expires_at_secs: i64) -> SessionSnapshot {
    let identity = sample_identity(i);
    let at = format!(
        r#"{{"iss":"https://idp.example.com/","sub":"{}","aud":"https://api.example.com","scp":"read write","tid":"tenant","oid":"{}","azp":"app-client"}}"#,
        identity.user, identity.user
    );
    let idt = format!(
        r#"{{"iss":"https://idp.example.com/","sub":"{}","aud":"app-client","auth_time":1700000000,"nonce":"n-{i}","name":"User {i}"}}"#,
        identity.user
    );
    SessionSnapshot {
        identity,
        home_tenant: true,
        auth_time_secs: 1_700_000_000,
        recorded_at_secs: 1_700_000_100,
        expires_at_secs,
        amr: vec!["pwd".into(), "mfa".into()],
        acr: "1".into(),
        groups: vec!["g-staff".into(), format!("g-{}", i % 7)],
        roles: vec!["reader".into()],
        sign_in_risk: RiskLevel::Low,
        user_risk: RiskLevel::None,
        device_platform: "iOS".into(),
        device_compliance: DeviceCompliance::Compliant,
        dpop_jkt: i.is_multiple_of(2).then(|| format!("jkt-{i:016x}")),
        access_token: TokenTemplate {
            claims_json: at.into_bytes(),
            time_claims: TIME_CLAIM_IAT | TIME_CLAIM_EXP | TIME_CLAIM_JTI,
            lifetime_secs: 3600,
            alg: "RS256".into(),
            typ: "at+jwt".into(),
            nbf_offset_secs: 0,
        },
        id_token: Some(TokenTemplate {
            claims_json: idt.into_bytes(),
            time_claims: TIME_CLAIM_IAT | TIME_CLAIM_EXP,
            lifetime_secs: 3600,
            alg: "RS256".into(),
            typ: "JWT".into(),
            nbf_offset_secs: 0,
        }),
        scopes: vec!["openid".into(), "read".into(), "write".into()],
        token_type: "Bearer".into(),
    }
}

/// Sample artifact for `digest`, pointing at sample session `i`.
pub fn sample_artifact(i: u64, digest: ArtifactDigest, expires_at_secs: i64) -> ArtifactRecord {
    let id = sample_identity(i);
    ArtifactRecord {
        kind: ArtifactKind::RefreshToken,
        digest,
        tenant: id.tenant,
        user: id.user,
        device: id.device,
        app: id.app,
        resource: id.resource,
        family: format!("family-{i:016x}"),
        client_auth: ClientAuthMethod::None,
        state: ArtifactState::Current,
        state_changed_at_secs: 0,
        issued_at_secs: 1_700_000_000,
        expires_at_secs,
    }
}
