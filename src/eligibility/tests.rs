//! Eligibility: a table over every rule and every refusal reason, and a property test that the
//! decision serves exactly when all five rules hold, refusing with the first rule that fails.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::policy::NO_STRINGS;
use crate::revocation::{RevocationEvent, RevocationSet, Source, Subject};

const NOW: i64 = 10_000;
const RECORDED: i64 = 9_000;

fn policies() -> PolicySet {
    let all_users = json!({"includeUsers": ["All"]});
    let apps = |ids: &[&str]| json!({"includeApplications": ids});
    let document = json!({
        "conditionalAccessPolicies": [
            {"id": "block-app", "state": "enabled",
             "conditions": {"users": all_users, "applications": apps(&["app-blocked"])},
             "grantControls": {"operator": "OR", "builtInControls": ["block"]}},
            {"id": "block-ip", "state": "enabled",
             "conditions": {"users": all_users, "applications": apps(&["All"]),
                            "locations": {"includeLocations": ["bad-range"]}},
             "grantControls": {"operator": "OR", "builtInControls": ["block"]}},
            {"id": "mfa-group", "state": "enabled",
             "conditions": {"users": {"includeGroups": ["g-mfa"]}, "applications": apps(&["All"])},
             "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}},
            {"id": "compliant-app", "state": "enabled",
             "conditions": {"users": all_users, "applications": apps(&["app-compliant"])},
             "grantControls": {"operator": "OR", "builtInControls": ["compliantDevice"]}},
            {"id": "rd-group", "state": "enabled",
             "conditions": {"users": {"includeGroups": ["g-rd"]}, "applications": apps(&["app-rd"])},
             "grantControls": {"operator": "OR", "builtInControls": ["mfa"]},
             "sessionControls": {"disableResilienceDefaults": true}},
            {"id": "tou-app", "state": "enabled",
             "conditions": {"users": all_users, "applications": apps(&["app-tou"])},
             "grantControls": {"operator": "OR", "termsOfUse": ["tou-1"]}},
            {"id": "report-block", "state": "enabledForReportingButNotEnforced",
             "conditions": {"users": all_users, "applications": apps(&["app-report"])},
             "grantControls": {"operator": "OR", "builtInControls": ["block"]}}
        ],
        "namedLocations": [
            {"@odata.type": "#microsoft.graph.ipNamedLocation", "id": "bad-range",
             "ipRanges": [{"cidrAddress": "203.0.113.0/24"}]}
        ]
    });
    policy::load(&serde_json::to_vec(&document).unwrap())
        .unwrap()
        .set
}

fn event(id: &str, kind: EventKind, subject: Subject, time_secs: i64) -> RevocationEvent {
    RevocationEvent {
        id: id.into(),
        kind,
        subject,
        time_secs,
        source: Source::AdminApi,
    }
}

/// Events after RECORDED for the `*-revoked` subjects; one before it for `u-old`.
fn revocations() -> RevocationSet {
    let mut set = RevocationSet::new(100).unwrap();
    for e in [
        event(
            "e-user",
            EventKind::CredentialChange,
            Subject::User("u-revoked".into()),
            9_500,
        ),
        event(
            "e-dev",
            EventKind::DeviceNotCompliant,
            Subject::Device("d-revoked".into()),
            9_000,
        ),
        event(
            "e-ses",
            EventKind::SessionsRevoked,
            Subject::Session("s-revoked".into()),
            9_999,
        ),
        event(
            "e-app",
            EventKind::AppConsentRevoked,
            Subject::App("app-revoked".into()),
            9_001,
        ),
        event(
            "e-old",
            EventKind::AccountDisabled,
            Subject::User("u-old".into()),
            8_999,
        ),
    ] {
        set.insert(e).unwrap();
    }
    set
}

/// Owned facts, so each case can change one of them.
#[derive(Debug, Clone)]
struct Case {
    present: bool,
    user: &'static str,
    device: Option<&'static str>,
    session: Option<&'static str>,
    app: &'static str,
    home_tenant: bool,
    auth_time: Option<i64>,
    recorded_at: i64,
    expires_at: i64,
    groups: Vec<&'static str>,
    amr: Vec<&'static str>,
    compliant: bool,
    ip: &'static str,
    prompt: Option<&'static str>,
    max_age: Option<u64>,
    claims_challenge: bool,
}

fn base() -> Case {
    Case {
        present: true,
        user: "u1",
        device: Some("d1"),
        session: Some("s1"),
        app: "app1",
        home_tenant: true,
        auth_time: Some(8_900),
        recorded_at: RECORDED,
        expires_at: 20_000,
        groups: vec!["g1"],
        amr: vec!["pwd"],
        compliant: false,
        ip: "192.0.2.10",
        prompt: None,
        max_age: None,
        claims_challenge: false,
    }
}

fn run(case: &Case, set: &PolicySet, filter: &FilterSnapshot) -> Eligibility {
    let request = RequestFacts {
        platform: Some(DevicePlatform::Windows),
        client_ip: case.ip.parse().unwrap(),
        client_app: ClientAppType::MobileAppsAndDesktopClients,
        interaction: Interaction {
            prompt: case.prompt,
            max_age_secs: case.max_age,
            claims_challenge: case.claims_challenge,
        },
    };
    let snapshot = SnapshotFacts {
        user: case.user,
        device: case.device,
        session: case.session,
        app: case.app,
        home_tenant: case.home_tenant,
        auth_time_secs: case.auth_time,
        recorded_at_secs: case.recorded_at,
        expires_at_secs: case.expires_at,
        groups: &case.groups,
        roles: NO_STRINGS,
        amr: &case.amr,
        sign_in_risk: Some(RiskLevel::None),
        user_risk: None,
        device_compliant: case.compliant,
        device_domain_joined: false,
    };
    decide(
        &request,
        case.present.then_some(&snapshot),
        set,
        filter,
        &EligibilityConfig::default(),
        NOW,
    )
}

#[test]
fn base_case_is_served() {
    let decision = run(&base(), &policies(), &revocations().snapshot());
    let Eligibility::Serve(eligible) = decision else {
        panic!("{decision:?}");
    };
    assert!(eligible.report_only().is_empty());
    assert_eq!(eligible.not_revoked().since_secs(), RECORDED);
}

#[test]
fn every_rule_and_reason_table() {
    let window = EligibilityConfig::default().session_window_secs;
    type Edit = fn(&mut Case);
    type Row = (&'static str, Edit, &'static str, u8, (u16, &'static str));
    let cases: Vec<Row> = vec![
        // (what, edit, label, rule, wire)
        (
            "no snapshot",
            |c| c.present = false,
            "no_snapshot",
            1,
            (503, "temporarily_unavailable"),
        ),
        (
            "expired",
            |c| c.expires_at = NOW,
            "snapshot_expired",
            1,
            (503, "temporarily_unavailable"),
        ),
        (
            "from the future",
            |c| c.recorded_at = NOW + 1,
            "snapshot_from_the_future",
            1,
            (503, "temporarily_unavailable"),
        ),
        (
            "prompt=login",
            |c| c.prompt = Some("login"),
            "prompt_login",
            2,
            (400, "interaction_required"),
        ),
        (
            "prompt=none consent",
            |c| c.prompt = Some("none consent"),
            "prompt_consent",
            2,
            (400, "interaction_required"),
        ),
        (
            "prompt=select_account",
            |c| c.prompt = Some("select_account"),
            "prompt_select_account",
            2,
            (400, "interaction_required"),
        ),
        (
            "max_age exceeded",
            |c| c.max_age = Some(1_099),
            "max_age_exceeded",
            2,
            (400, "interaction_required"),
        ),
        (
            "max_age with unknown auth_time",
            |c| {
                c.max_age = Some(1_000_000);
                c.auth_time = None
            },
            "max_age_exceeded",
            2,
            (400, "interaction_required"),
        ),
        (
            "claims challenge",
            |c| c.claims_challenge = true,
            "claims_challenge",
            2,
            (400, "interaction_required"),
        ),
        (
            "guest",
            |c| c.home_tenant = false,
            "not_home_tenant",
            3,
            (503, "temporarily_unavailable"),
        ),
        (
            "blocked app",
            |c| c.app = "app-blocked",
            "blocked_by_policy",
            4,
            (400, "access_denied"),
        ),
        (
            "blocked ip range",
            |c| c.ip = "203.0.113.77",
            "blocked_by_policy",
            4,
            (400, "access_denied"),
        ),
        (
            "mfa group without mfa",
            |c| c.groups = vec!["g-mfa"],
            "mfa_required",
            4,
            (400, "interaction_required"),
        ),
        (
            "compliant device required",
            |c| c.app = "app-compliant",
            "compliant_device_required",
            4,
            (400, "interaction_required"),
        ),
        (
            "resilience defaults off, member",
            |c| {
                c.app = "app-rd";
                c.groups = vec!["g-rd"]
            },
            "resilience_defaults_disabled",
            4,
            (503, "temporarily_unavailable"),
        ),
        (
            "resilience defaults off, non-member",
            |c| c.app = "app-rd",
            "resilience_defaults_disabled",
            4,
            (503, "temporarily_unavailable"),
        ),
        (
            "unsupported control",
            |c| c.app = "app-tou",
            "unsupported_control",
            4,
            (503, "temporarily_unavailable"),
        ),
        (
            "user revoked",
            |c| c.user = "u-revoked",
            "revoked_credential_change",
            5,
            (400, "invalid_grant"),
        ),
        (
            "device revoked at recorded_at",
            |c| c.device = Some("d-revoked"),
            "revoked_device_not_compliant",
            5,
            (400, "invalid_grant"),
        ),
        (
            "session revoked",
            |c| c.session = Some("s-revoked"),
            "revoked_sessions_revoked",
            5,
            (400, "invalid_grant"),
        ),
        (
            "app revoked",
            |c| c.app = "app-revoked",
            "revoked_app_consent_revoked",
            5,
            (400, "invalid_grant"),
        ),
    ];
    let set = policies();
    let filter = revocations().snapshot();
    for (what, edit, label, rule, wire) in cases {
        let mut case = base();
        edit(&mut case);
        match run(&case, &set, &filter) {
            Eligibility::Refuse(refusal) => {
                assert_eq!(refusal.label(), label, "{what}");
                assert_eq!(refusal.rule(), rule, "{what}");
                assert_eq!(refusal.wire(), wire, "{what}");
            }
            Eligibility::Serve(_) => panic!("{what}: served"),
        }
    }

    // Outside the window: recorded longer ago than the window, not yet expired.
    let mut case = base();
    case.recorded_at = NOW - window - 1;
    case.auth_time = Some(case.recorded_at);
    let Eligibility::Refuse(refusal) = run(&case, &set, &filter) else {
        panic!("outside the window: served");
    };
    assert_eq!(refusal.label(), "snapshot_outside_window");
}

#[test]
fn near_misses_are_served() {
    type Edit = fn(&mut Case);
    let cases: Vec<(&str, Edit)> = vec![
        ("prompt=none", |c| c.prompt = Some("none")),
        ("max_age satisfied exactly", |c| c.max_age = Some(1_100)),
        ("event before the snapshot", |c| c.user = "u-old"),
        ("mfa group with mfa", |c| {
            c.groups = vec!["g-mfa"];
            c.amr = vec!["pwd", "mfa"]
        }),
        ("compliant device present", |c| {
            c.app = "app-compliant";
            c.compliant = true
        }),
        ("no device, no session", |c| {
            c.device = None;
            c.session = None
        }),
        ("expires one second later", |c| c.expires_at = NOW + 1),
        ("recorded now", |c| {
            c.recorded_at = NOW;
            c.auth_time = Some(NOW)
        }),
    ];
    let set = policies();
    let filter = revocations().snapshot();
    for (what, edit) in cases {
        let mut case = base();
        edit(&mut case);
        let decision = run(&case, &set, &filter);
        assert!(decision.is_serve(), "{what}: {decision:?}");
    }
}

#[test]
fn report_only_block_is_reported_never_enforced() {
    let mut case = base();
    case.app = "app-report";
    let Eligibility::Serve(eligible) = run(&case, &policies(), &revocations().snapshot()) else {
        panic!("report-only refused");
    };
    assert_eq!(eligible.report_only().len(), 1);
    assert_eq!(eligible.report_only()[0].policy_id, "report-block");
    assert_eq!(
        eligible.report_only()[0].would_refuse,
        Some(RefusalReason::BlockedByPolicy)
    );
}

#[test]
fn snapshot_before_the_revocation_horizon_fails_closed() {
    let mut set = revocations();
    set.expire_before(RECORDED + 1);
    let Eligibility::Refuse(refusal) = run(&base(), &policies(), &set.snapshot()) else {
        panic!("served a snapshot the filter cannot vouch for");
    };
    assert_eq!(
        refusal,
        EligibilityRefusal::RevocationHorizon {
            horizon_secs: RECORDED + 1
        }
    );
    assert_eq!(refusal.label(), "revocation_horizon");
    assert_eq!(refusal.wire(), (503, "temporarily_unavailable"));
}

#[test]
fn refusal_labels_are_distinct_snake_case() {
    let mut labels = vec![
        EligibilityRefusal::NoSnapshot.label(),
        EligibilityRefusal::SnapshotExpired.label(),
        EligibilityRefusal::OutsideWindow.label(),
        EligibilityRefusal::SnapshotFromTheFuture.label(),
        EligibilityRefusal::NotHomeTenant.label(),
        EligibilityRefusal::RevocationHorizon { horizon_secs: 0 }.label(),
    ];
    for reason in [
        InteractionReason::PromptLogin,
        InteractionReason::PromptConsent,
        InteractionReason::PromptSelectAccount,
        InteractionReason::MaxAgeExceeded,
        InteractionReason::ClaimsChallenge,
    ] {
        labels.push(EligibilityRefusal::InteractionRequired(reason).label());
    }
    for kind in EventKind::ALL {
        labels.push(
            EligibilityRefusal::Revoked {
                kind,
                subject: SubjectKind::User,
                event_id: String::new(),
            }
            .label(),
        );
    }
    for reason in [
        RefusalReason::BlockedByPolicy,
        RefusalReason::ResilienceDefaultsDisabled,
        RefusalReason::UnsupportedControl,
        RefusalReason::MfaRequired,
        RefusalReason::CompliantDeviceRequired,
        RefusalReason::DomainJoinedDeviceRequired,
    ] {
        labels.push(
            EligibilityRefusal::Policy {
                reason,
                policy_id: String::new(),
                report_only: Vec::new(),
            }
            .label(),
        );
    }
    for label in &labels {
        assert!(
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{label}"
        );
    }
    let count = labels.len();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), count);
}

/// One generated combination; the oracle below says which rule it breaks, if any, without
/// calling the code under test.
#[derive(Debug, Clone)]
struct Combo {
    present: bool,
    expired: bool,
    outside_window: bool,
    future: bool,
    prompt: Option<&'static str>,
    max_age: Option<u64>,
    auth_time_known: bool,
    claims_challenge: bool,
    home_tenant: bool,
    app: &'static str,
    group: &'static str,
    mfa: bool,
    compliant: bool,
    bad_ip: bool,
    revoked: u8,
    horizon_after_snapshot: bool,
}

fn combo() -> impl Strategy<Value = Combo> {
    let prompts = prop::sample::select(vec![
        None,
        Some("none"),
        Some("login"),
        Some("consent"),
        Some("select_account"),
        Some("none login"),
        Some("LOGIN"),
    ]);
    let apps = prop::sample::select(vec![
        "app1",
        "app-blocked",
        "app-rd",
        "app-tou",
        "app-compliant",
        "app-report",
        "app-revoked",
    ]);
    let groups = prop::sample::select(vec!["g1", "g-mfa", "g-rd"]);
    let max_ages = prop::sample::select(vec![
        None,
        Some(0),
        Some(1_099),
        Some(1_100),
        Some(u64::MAX),
    ]);
    (
        (any::<[bool; 4]>(), prompts, max_ages, any::<[bool; 3]>()),
        (apps, groups, any::<[bool; 4]>(), 0u8..5),
    )
        .prop_map(
            |(
                (
                    [present, expired, outside_window, future],
                    prompt,
                    max_age,
                    [known, claims, home],
                ),
                (app, group, [mfa, compliant, bad_ip, horizon], revoked),
            )| Combo {
                // Bias towards cases that get past rule 1 so later rules are exercised.
                present: present || !expired,
                expired: expired && outside_window,
                outside_window: outside_window && future,
                future: future && expired,
                prompt,
                max_age,
                auth_time_known: known || claims,
                claims_challenge: claims && home && mfa,
                home_tenant: home || mfa,
                app,
                group,
                mfa,
                compliant,
                bad_ip: bad_ip && horizon,
                revoked,
                horizon_after_snapshot: horizon && !compliant && !mfa,
            },
        )
}

/// The first rule `c` breaks, by the rules as DESIGN §2 states them.
fn oracle(c: &Combo) -> Option<u8> {
    if !c.present || c.expired || c.outside_window || c.future {
        return Some(1);
    }
    let auth_age = NOW - 8_900;
    let prompt_needs = c.prompt.is_some_and(|p| {
        p.split(' ')
            .any(|v| matches!(v, "login" | "consent" | "select_account"))
    });
    let max_age_needs = c
        .max_age
        .is_some_and(|m| !c.auth_time_known || i64::try_from(m).unwrap_or(i64::MAX) < auth_age);
    if prompt_needs || max_age_needs || c.claims_challenge {
        return Some(2);
    }
    if !c.home_tenant {
        return Some(3);
    }
    let policy_fails = c.app == "app-blocked"
        || c.bad_ip
        || c.app == "app-rd"
        || c.app == "app-tou"
        || (c.app == "app-compliant" && !c.compliant)
        || (c.group == "g-mfa" && !c.mfa);
    if policy_fails {
        return Some(4);
    }
    if c.revoked != 0 || c.app == "app-revoked" || c.horizon_after_snapshot {
        return Some(5);
    }
    None
}

fn case_of(c: &Combo) -> Case {
    let mut case = base();
    case.present = c.present;
    if c.expired {
        case.expires_at = NOW - 1;
    }
    if c.outside_window {
        case.recorded_at = NOW - EligibilityConfig::default().session_window_secs - 10;
    }
    if c.future {
        case.recorded_at = NOW + 5;
    }
    case.prompt = c.prompt;
    case.max_age = c.max_age;
    case.auth_time = c.auth_time_known.then_some(8_900);
    case.claims_challenge = c.claims_challenge;
    case.home_tenant = c.home_tenant;
    case.app = c.app;
    case.groups = vec![c.group];
    case.amr = if c.mfa {
        vec!["pwd", "mfa"]
    } else {
        vec!["pwd"]
    };
    case.compliant = c.compliant;
    if c.bad_ip {
        case.ip = "203.0.113.5";
    }
    match c.revoked {
        1 => case.user = "u-revoked",
        2 => case.device = Some("d-revoked"),
        3 => case.session = Some("s-revoked"),
        4 => case.user = "u-revoked",
        _ => {}
    }
    case
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Serve exactly when no rule fails; otherwise the refusal names the first rule that does.
    #[test]
    fn serves_only_when_every_rule_holds(c in combo()) {
        let set = policies();
        let mut revocations = revocations();
        if c.horizon_after_snapshot {
            revocations.expire_before(RECORDED + 1);
        }
        let decision = run(&case_of(&c), &set, &revocations.snapshot());
        match (oracle(&c), decision) {
            (None, Eligibility::Serve(_)) => {}
            (Some(rule), Eligibility::Refuse(refusal)) => {
                prop_assert_eq!(refusal.rule(), rule, "{:?} refused as {:?}", c, refusal);
            }
            (expected, decision) => {
                prop_assert!(false, "{:?}: expected rule {:?}, got {:?}", c, expected, decision);
            }
        }
    }
}

#[test]
fn request_facts_from_http_place_the_client_behind_a_trusted_proxy() {
    let config = policy::ClientIpConfig {
        trusted_proxies: vec![policy::Cidr::parse("10.0.0.0/8").unwrap()],
        header: Some("x-forwarded-for".into()),
    };
    let facts = RequestFacts::from_http(
        "10.1.2.3".parse().unwrap(),
        Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4)"),
        ["203.0.113.77"],
        &config,
        ClientAppType::Browser,
        Interaction::default(),
    )
    .unwrap();
    assert_eq!(facts.platform, Some(DevicePlatform::MacOs));
    assert_eq!(facts.client_ip, "203.0.113.77".parse::<IpAddr>().unwrap());
    // The blocked range applies to the forwarded client, not to the proxy.
    let Eligibility::Refuse(refusal) = decide(
        &facts,
        Some(&SnapshotFacts {
            user: "u1",
            device: None,
            session: None,
            app: "app1",
            home_tenant: true,
            auth_time_secs: Some(RECORDED),
            recorded_at_secs: RECORDED,
            expires_at_secs: NOW + 1,
            groups: NO_STRINGS,
            roles: NO_STRINGS,
            amr: NO_STRINGS,
            sign_in_risk: None,
            user_risk: None,
            device_compliant: false,
            device_domain_joined: false,
        }),
        &policies(),
        &revocations().snapshot(),
        &EligibilityConfig::default(),
        NOW,
    ) else {
        panic!("served a client in a blocked range");
    };
    assert_eq!(refusal.label(), "blocked_by_policy");
    assert!(
        RequestFacts::from_http(
            "10.1.2.3".parse().unwrap(),
            None,
            ["not-an-ip"],
            &config,
            ClientAppType::Browser,
            Interaction::default(),
        )
        .is_err()
    );
}
