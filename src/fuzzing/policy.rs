//! Fuzz entry point for the policy loader: any bytes as a policy document; a document that
//! loads is evaluated against fixed facts, and loading it again must give the same set.

use crate::policy::{
    ClientAppType, Decision, DevicePlatform, RequestFacts, RiskLevel, SessionFacts, evaluate, load,
};

/// A policy document (`[policy] file`, `PUT /admin/policies`).
pub fn policy_json(data: &[u8]) {
    let Ok(loaded) = load(data) else {
        return;
    };
    let again = load(data);
    assert!(
        again
            .as_ref()
            .is_ok_and(|l| l.set.policy_count() == loaded.set.policy_count()
                && l.set.location_count() == loaded.set.location_count()
                && l.warnings == loaded.warnings),
        "loading the same document twice must give the same set"
    );
    let groups = ["g1", "group-1"];
    let request = RequestFacts {
        user_id: "u1",
        app_id: "app1",
        platform: Some(DevicePlatform::Ios),
        client_ip: std::net::IpAddr::from([203, 0, 113, 9]),
        client_app: ClientAppType::MobileAppsAndDesktopClients,
    };
    let session = SessionFacts {
        groups: &groups,
        roles: &["r1"],
        sign_in_risk: Some(RiskLevel::Low),
        user_risk: None,
        amr: &["pwd", "mfa"],
        device_compliant: true,
        device_domain_joined: false,
        home_tenant: true,
    };
    match evaluate(&loaded.set, &request, &session) {
        Decision::Allow(allowed) => {
            assert!(allowed.report_only().len() <= loaded.set.policy_count());
        }
        Decision::Refuse(refusal) => {
            assert!(!refusal.reason.as_str().is_empty());
        }
    }
}
