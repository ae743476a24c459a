//! The library pieces of issue 6 chained as the server will chain them, without the server: a
//! signed SET through the Shared Signals receiver into the revocation filter (and through the
//! WAL codes and back, as a restart would), policies through the manager, and eligibility
//! deciding on a snapshot's facts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fixtures/token/support.rs"]
mod support;

use backstop::config::SsfConfig;
use backstop::eligibility::{
    Eligibility, EligibilityConfig, Interaction, RequestFacts, SnapshotFacts, decide,
};
use backstop::policy::{ClientAppType, DevicePlatform, NO_STRINGS, PolicyManager, RiskLevel};
use backstop::revocation::{RevocationEvent, RevocationSet};
use backstop::ssf::{JtiCache, SET_CONTENT_TYPE, receive};
use backstop::token::jwks::KeySet;
use serde_json::json;
use support::*;

const NOW: i64 = 1_800_000_000;

fn request() -> RequestFacts<'static> {
    RequestFacts {
        platform: DevicePlatform::from_user_agent("Mozilla/5.0 (Windows NT 10.0; Win64; x64)"),
        client_ip: "198.51.100.20".parse().unwrap(),
        client_app: ClientAppType::MobileAppsAndDesktopClients,
        interaction: Interaction::default(),
    }
}

fn snapshot<'a>(recorded_at_secs: i64, amr: &'a Vec<&'a str>) -> SnapshotFacts<'a> {
    SnapshotFacts {
        user: "u1",
        device: Some("d1"),
        session: None,
        app: "app1",
        home_tenant: true,
        auth_time_secs: Some(recorded_at_secs),
        recorded_at_secs,
        expires_at_secs: NOW + 86_400,
        groups: NO_STRINGS,
        roles: NO_STRINGS,
        amr,
        sign_in_risk: Some(RiskLevel::None),
        user_risk: Some(RiskLevel::None),
        device_compliant: false,
        device_domain_joined: false,
    }
}

fn label(decision: &Eligibility) -> &'static str {
    match decision {
        Eligibility::Serve(_) => "serve",
        Eligibility::Refuse(refusal) => refusal.label(),
    }
}

#[test]
fn signed_password_change_refuses_older_snapshots_and_survives_a_restart() {
    let transmitter = rfc8037_key();
    let keys = KeySet::from_ours(&[transmitter.public_jwk().clone()]).unwrap();
    let config = SsfConfig {
        issuer: "https://idp.example.com".into(),
        jwks_uri: "https://idp.example.com/jwks".into(),
        audience: "https://backstop.example.com".into(),
        iat_window_secs: 600,
        replay_cache_entries: 100,
    };
    let claims = json!({
        "iss": "https://idp.example.com", "aud": "https://backstop.example.com",
        "iat": NOW - 10, "jti": "pw-1",
        "sub_id": {"format": "iss_sub", "iss": "https://idp.example.com", "sub": "u1"},
        "events": {"https://schemas.openid.net/secevent/caep/event-type/credential-change":
                   {"credential_type": "password", "change_type": "update",
                    "event_timestamp": NOW - 20}}
    });
    let token = sign_raw(
        &*signer(&transmitter),
        &json!({"alg": "EdDSA", "typ": "secevent+jwt", "kid": transmitter.kid()}).to_string(),
        &claims.to_string(),
    );
    let mut replay = JtiCache::new(100);
    let received = receive(
        token.as_bytes(),
        Some(SET_CONTENT_TYPE),
        &keys,
        &config,
        &replay,
        NOW,
    )
    .unwrap();
    replay.remember(&received.jti, received.jti_expires_at_secs, NOW);

    let mut set = RevocationSet::new(1_000).unwrap();
    for event in &received.events {
        set.insert(event.clone()).unwrap();
    }
    let policies = PolicyManager::empty();
    let amr = vec!["pwd"];
    let decide_at = |set: &RevocationSet, recorded_at| {
        decide(
            &request(),
            Some(&snapshot(recorded_at, &amr)),
            &policies.current().value,
            &set.snapshot(),
            &EligibilityConfig::default(),
            NOW,
        )
    };
    assert_eq!(
        label(&decide_at(&set, NOW - 3_600)),
        "revoked_credential_change"
    );
    assert_eq!(
        label(&decide_at(&set, NOW - 20)),
        "revoked_credential_change"
    );
    assert_eq!(
        label(&decide_at(&set, NOW - 19)),
        "serve",
        "signed in after the change"
    );

    // A restart: the events come back from their WAL codes.
    let mut replayed = RevocationSet::new(1_000).unwrap();
    for event in set.events() {
        let codes = event.codes();
        let back = RevocationEvent::from_codes(
            event.id.clone(),
            codes,
            event.subject.id().to_owned(),
            event.time_secs,
        )
        .unwrap();
        replayed.insert(back).unwrap();
    }
    assert_eq!(
        label(&decide_at(&replayed, NOW - 3_600)),
        "revoked_credential_change"
    );

    // Redelivery of the same SET is a duplicate.
    let again = receive(
        token.as_bytes(),
        Some(SET_CONTENT_TYPE),
        &keys,
        &config,
        &replay,
        NOW,
    )
    .unwrap();
    assert!(again.duplicate && again.events.is_empty());
}

#[test]
fn policy_from_the_admin_api_requires_mfa_and_report_only_never_blocks() {
    let policies = PolicyManager::empty();
    let document = json!({"conditionalAccessPolicies": [
        {"id": "mfa", "state": "enabled",
         "conditions": {"users": {"includeUsers": ["All"]},
                        "applications": {"includeApplications": ["All"]}},
         "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}},
        {"id": "report-block-windows", "state": "enabledForReportingButNotEnforced",
         "conditions": {"users": {"includeUsers": ["All"]},
                        "applications": {"includeApplications": ["All"]},
                        "platforms": {"includePlatforms": ["windows"]}},
         "grantControls": {"operator": "OR", "builtInControls": ["block"]}}
    ]});
    policies
        .replace_from_json(&serde_json::to_vec(&document).unwrap(), NOW)
        .unwrap();
    let set = RevocationSet::new(10).unwrap();
    let run = |amr: &Vec<&str>| {
        decide(
            &request(),
            Some(&snapshot(NOW - 60, amr)),
            &policies.current().value,
            &set.snapshot(),
            &EligibilityConfig::default(),
            NOW,
        )
    };
    let without = run(&vec!["pwd"]);
    assert_eq!(label(&without), "mfa_required");
    let Eligibility::Refuse(refusal) = &without else {
        unreachable!()
    };
    assert_eq!(refusal.wire(), (400, "interaction_required"));
    let with = run(&vec!["pwd", "mfa"]);
    let Eligibility::Serve(eligible) = with else {
        panic!("{with:?}")
    };
    assert_eq!(
        eligible.report_only().len(),
        1,
        "the report-only block is reported"
    );
}
