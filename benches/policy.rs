//! Policy evaluation bench (issue 6): one request against 200 policies and 50 IP named
//! locations (20 CIDRs each, IPv4 and IPv6), the request's share of the outage path. Reports the
//! ratio to one bare Ed25519 signature measured in the same run, the cost of the token it gates.
//!
//! `cargo bench --bench policy`.

// A bench harness: a failed unwrap aborts the run with a line number, which is what we want.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::print_stdout,
    missing_docs
)]

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use backstop::eligibility::{
    EligibilityConfig, Interaction, RequestFacts as EligibilityRequest, SnapshotFacts, decide,
};
use backstop::policy::{
    ClientAppType, Decision, DevicePlatform, NO_STRINGS, RequestFacts, RiskLevel, SessionFacts,
    evaluate, load,
};
use backstop::revocation::{EventKind, RevocationEvent, RevocationSet, Source, Subject};
use criterion::Criterion;
use serde_json::{Value, json};

const POLICIES: usize = 200;
const LOCATIONS: usize = 50;
const RANGES_PER_LOCATION: usize = 20;

/// A tenant-like mix: most policies target groups and require MFA or a compliant device from
/// outside trusted locations; some are scoped to other apps, some are report-only blocks.
fn document() -> Value {
    let locations: Vec<Value> = (0..LOCATIONS)
        .map(|l| {
            let ranges: Vec<Value> = (0..RANGES_PER_LOCATION)
                .map(|r| {
                    let cidr = if r % 2 == 0 {
                        format!("10.{l}.{r}.0/24")
                    } else {
                        format!("2001:db8:{l:x}:{r:x}::/64")
                    };
                    json!({"cidrAddress": cidr})
                })
                .collect();
            json!({"id": format!("loc-{l}"), "isTrusted": l % 5 == 0, "ipRanges": ranges})
        })
        .collect();
    let policies: Vec<Value> = (0..POLICIES)
        .map(|p| {
            let state = if p % 10 == 9 {
                "enabledForReportingButNotEnforced"
            } else {
                "enabled"
            };
            let apps = if p % 4 == 3 {
                json!([format!("other-app-{p}")])
            } else {
                json!(["All"])
            };
            let grant = match p % 3 {
                0 => json!({"operator": "OR", "builtInControls": ["mfa"]}),
                1 => json!({"operator": "OR", "builtInControls": ["mfa", "compliantDevice"]}),
                _ => json!({"operator": "AND", "builtInControls": ["mfa"]}),
            };
            let grant = if p % 10 == 9 {
                json!({"builtInControls": ["block"]})
            } else {
                grant
            };
            json!({
                "id": format!("policy-{p}"),
                "displayName": format!("Policy {p}"),
                "state": state,
                "conditions": {
                    "users": {
                        "includeGroups": [format!("group-{}", p % 20), "group-all-staff"],
                        "excludeGroups": [format!("breakglass-{p}")],
                        "excludeUsers": [format!("admin-{p}")]
                    },
                    "applications": {"includeApplications": apps},
                    "platforms": {"includePlatforms": ["all"], "excludePlatforms": ["linux"]},
                    "locations": {
                        "includeLocations": ["All"],
                        "excludeLocations": ["AllTrusted", format!("loc-{}", p % LOCATIONS)]
                    },
                    "clientAppTypes": ["browser", "mobileAppsAndDesktopClients"]
                },
                "grantControls": grant
            })
        })
        .collect();
    json!({"conditionalAccessPolicies": policies, "namedLocations": locations})
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();

    let set = load(&serde_json::to_vec(&document()).unwrap()).unwrap().set;
    assert_eq!(
        (set.policy_count(), set.location_count()),
        (POLICIES, LOCATIONS)
    );
    let groups = ["group-3", "group-all-staff", "group-x", "group-y"];
    let request = RequestFacts {
        user_id: "user-1",
        app_id: "app-1",
        platform: Some(DevicePlatform::Windows),
        // Outside every named location: every location condition scans every range.
        client_ip: "2001:db8:ffff::1".parse().unwrap(),
        client_app: ClientAppType::MobileAppsAndDesktopClients,
    };
    let session = SessionFacts {
        groups: &groups,
        roles: NO_STRINGS,
        sign_in_risk: Some(RiskLevel::None),
        user_risk: Some(RiskLevel::None),
        amr: &["pwd", "mfa"],
        device_compliant: true,
        device_domain_joined: false,
        home_tenant: true,
    };
    // The work is real: every enforced policy applies and is satisfied, and every report-only
    // block on an app in scope is reported.
    let Decision::Allow(allowed) = evaluate(&set, &request, &session) else {
        panic!("the bench request must be allowed");
    };
    let report_only = allowed.report_only().len();
    assert!(report_only > 0);

    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    assert!(!key.public_key().as_ref().is_empty());
    let message = [b'a'; 700];

    let mut g = c.benchmark_group("policy");
    g.bench_function("evaluate_200x50", |b| {
        b.iter(
            || match evaluate(black_box(&set), black_box(&request), black_box(&session)) {
                Decision::Allow(a) => assert_eq!(a.report_only().len(), report_only),
                Decision::Refuse(r) => panic!("refused: {r:?}"),
            },
        )
    });
    g.bench_function("ed25519_sign", |b| b.iter(|| key.sign(black_box(&message))));

    // The whole eligibility decision (five rules) on the same policies, with 100 k revocation
    // events for other subjects: evaluation plus four clean revocation checks.
    let mut revocations = RevocationSet::new(200_000).unwrap();
    for i in 0..100_000 {
        revocations
            .insert(RevocationEvent {
                id: format!("e{i}"),
                kind: EventKind::CredentialChange,
                subject: Subject::User(format!("other-user-{i}")),
                time_secs: 1_000,
                source: Source::AdminApi,
            })
            .unwrap();
    }
    let filter = revocations.snapshot();
    let amr = ["pwd", "mfa"];
    let facts = SnapshotFacts {
        user: "user-1",
        device: Some("device-1"),
        session: Some("session-1"),
        app: "app-1",
        home_tenant: true,
        auth_time_secs: Some(1_500),
        recorded_at_secs: 1_500,
        expires_at_secs: 100_000,
        groups: &groups,
        roles: NO_STRINGS,
        amr: &amr,
        sign_in_risk: Some(RiskLevel::None),
        user_risk: Some(RiskLevel::None),
        device_compliant: true,
        device_domain_joined: false,
    };
    let eligibility_request = EligibilityRequest {
        platform: request.platform,
        client_ip: request.client_ip,
        client_app: request.client_app,
        interaction: Interaction::default(),
    };
    let config = EligibilityConfig::default();
    g.bench_function("eligibility_decide_200x50", |b| {
        b.iter(|| {
            let decision = decide(
                black_box(&eligibility_request),
                Some(black_box(&facts)),
                black_box(&set),
                black_box(&filter),
                &config,
                2_000,
            );
            assert!(decision.is_serve());
        })
    });
    g.finish();
    c.final_summary();

    if let (Some(e), Some(s)) = (
        mean_ns("policy", "evaluate_200x50"),
        mean_ns("policy", "ed25519_sign"),
    ) {
        println!(
            "\npolicy evaluation {:.2} µs, bare Ed25519 signature {:.2} µs, ratio {:.3}",
            e / 1e3,
            s / 1e3,
            e / s
        );
    }
    if let Some(d) = mean_ns("policy", "eligibility_decide_200x50") {
        println!(
            "eligibility decision (five rules, 100 k revocation events) {:.2} µs",
            d / 1e3
        );
    }
}

fn mean_ns(group: &str, function: &str) -> Option<f64> {
    let path = format!(
        "{}/target/criterion/{group}/{function}/new/estimates.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}
