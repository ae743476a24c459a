//! `backstop check-config` validates the policy file the config names: an error points at the
//! JSON path and exits 2; a good file is summarized with its warnings.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{run, temp_file};

fn config_naming(dir: &std::path::Path, policy_json: &str) -> std::path::PathBuf {
    let policies = temp_file(dir, "policies.json", policy_json);
    temp_file(
        dir,
        "backstop.toml",
        &format!("[policy]\nfile = {:?}\n", policies.to_str().unwrap()),
    )
}

#[test]
fn check_config_rejects_a_bad_policy_file_with_its_json_path_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_naming(
        dir.path(),
        r#"{"conditionalAccessPolicies": [
            {"id": "ok", "state": "enabled",
             "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}}},
            {"id": "bad", "state": "enabled",
             "conditions": {"users": {"includeUsers": "All"}, "applications": {}}}
        ]}"#,
    );
    let (code, _, stderr) = run(&["check-config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(
        stderr.contains("conditionalAccessPolicies[1].conditions.users.includeUsers"),
        "{stderr}"
    );
    assert!(stderr.contains("policies.json"), "{stderr}");
}

#[test]
fn check_config_rejects_a_missing_policy_file_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = temp_file(
        dir.path(),
        "backstop.toml",
        "[policy]\nfile = \"/nonexistent/policies.json\"\n",
    );
    let (code, _, stderr) = run(&["check-config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stderr.contains("/nonexistent/policies.json"), "{stderr}");
}

#[test]
fn check_config_summarizes_a_good_policy_file_and_its_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_naming(
        dir.path(),
        r#"{"conditionalAccessPolicies": [
            {"id": "tou", "state": "enabled", "someNewField": 1,
             "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}},
             "grantControls": {"operator": "OR", "termsOfUse": ["t1"]}}
        ], "namedLocations": []}"#,
    );
    let (code, stdout, stderr) = run(&["check-config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("1 policies, 0 named locations"), "{stdout}");
    assert!(
        stdout.contains("conditionalAccessPolicies[0].someNewField"),
        "{stdout}"
    );
    assert!(
        stdout.contains("conditionalAccessPolicies[0].grantControls.termsOfUse"),
        "{stdout}"
    );
}
