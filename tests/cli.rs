//! End-to-end tests of the command line: config validation exit codes and messages, help.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// End-to-end tests measure wall-clock time on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{run, temp_file};

#[test]
fn serve_with_invalid_config_exits_2_naming_the_field_value_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let file = temp_file(dir.path(), "bad.toml", "[limits]\nbody_bytes_max = 0\n");
    let (code, _, stderr) = run(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stderr.contains("limits.body_bytes_max"), "{stderr}");
    assert!(stderr.contains("= 0"), "{stderr}");
    assert!(stderr.contains("between"), "{stderr}");
}

#[test]
fn serve_with_unknown_field_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = temp_file(dir.path(), "typo.toml", "listn = \"127.0.0.1:1\"\n");
    let (code, _, stderr) = run(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("listn"), "{stderr}");
}

#[test]
fn serve_with_missing_config_file_exits_2_naming_the_file() {
    let (code, _, stderr) = run(&["serve", "--config", "/nonexistent/backstop.toml"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/backstop.toml"), "{stderr}");
}

#[test]
fn serve_with_short_admin_token_exits_2_without_echoing_it() {
    let (code, _, stderr) = run(
        &["check-config", "/dev/null"],
        &[("BACKSTOP_ADMIN_TOKEN", "short-secret")],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("BACKSTOP_ADMIN_TOKEN"), "{stderr}");
    assert!(!stderr.contains("short-secret"), "{stderr}");
}

#[test]
fn check_config_accepts_the_example_file() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/backstop.example.toml");
    let (code, stdout, stderr) = run(&["check-config", example], &[]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("config OK"), "{stdout}");
    assert!(
        stdout.contains("listen         = 127.0.0.1:8080"),
        "{stdout}"
    );
}

#[test]
fn check_config_rejects_a_bad_issuer_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = temp_file(
        dir.path(),
        "b.toml",
        "issuer = \"http://idp.example.com\"\n",
    );
    let (code, _, stderr) = run(&["check-config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("`issuer`"), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");
}

#[test]
fn serve_reports_an_address_in_use_with_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = temp_file(
        dir.path(),
        "c.toml",
        &format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\n",
            dir.path().join("d").display()
        ),
    );
    let (code, _, stderr) = run(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert!(stderr.contains("`listen`"), "{stderr}");
}

#[test]
fn version_and_help_describe_the_commands() {
    let (code, stdout, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("backstop "));
    let (code, stdout, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for cmd in [
        "serve",
        "check-config",
        "demo",
        "keygen",
        "inspect",
        "Examples:",
    ] {
        assert!(stdout.contains(cmd), "help lacks {cmd}: {stdout}");
    }
}

#[test]
fn keygen_creates_an_owner_only_keyring_and_prints_the_public_jwk() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let (code, stdout, stderr) = run(&["keygen", "--data-dir", data_arg], &[]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let jwk: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["alg"], "EdDSA");
    assert!(jwk.get("d").is_none(), "private key printed: {stdout}");
    let kid = jwk["kid"].as_str().unwrap();
    let key_file = data.join("keys").join("eddsa").join(format!("{kid}.pem"));
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A second keygen refuses and points at --rotate; rotation keeps the old key published.
    let (code, _, stderr) = run(&["keygen", "--data-dir", data_arg], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--rotate"), "{stderr}");
    let (code, stdout, stderr) = run(&["keygen", "--rotate", "--data-dir", data_arg], &[]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let set: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let kids: Vec<&str> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&kid),
        "rotated-out key no longer published: {kids:?}"
    );
    assert_eq!(kids.len(), 3, "previous, current and next: {kids:?}");
}

#[test]
fn keygen_refuses_an_unknown_algorithm_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(
        &[
            "keygen",
            "--alg",
            "HS256",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("HS256"), "{stderr}");
}

fn fixture_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store/v1");
    copy_tree(&src, dir.path());
    dir
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            // git records files as 0644; the store requires its secrets to be owner-only.
            if target.extension().is_some_and(|e| e == "secret") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
}

#[test]
fn inspect_summarizes_a_store_and_changes_nothing() {
    let dir = fixture_store();
    let before: Vec<_> = walk(dir.path());
    let (code, stdout, stderr) = run(&["inspect", dir.path().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("totals: 5 sessions"), "{stdout}");
    assert!(stdout.contains("expiry histogram"), "{stdout}");
    assert_eq!(walk(dir.path()), before, "inspect modified the store");
}

fn walk(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push((entry.path().display().to_string(), meta.len()));
        }
    }
    out.sort();
    out
}

#[test]
fn inspect_looks_up_one_session_by_identity() {
    let dir = fixture_store();
    let path = dir.path().to_str().unwrap();
    let args = [
        "inspect",
        path,
        "--session",
        "tenant",
        "user-1",
        "device-9e3779b9",
        "app-client",
        "https://api.example.com",
    ];
    let (code, stdout, stderr) = run(&args, &[]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("user-1"), "{stdout}");
    let (code, stdout, _) = run(
        &[
            "inspect",
            path,
            "--session",
            "tenant",
            "nobody",
            "d",
            "app-client",
            "r",
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("no session recorded"), "{stdout}");
}

#[test]
fn inspect_refuses_a_directory_that_is_not_a_store_and_a_bad_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(&["inspect", dir.path().to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a backstop store"), "{stderr}");
    let store = fixture_store();
    let (code, _, stderr) = run(
        &[
            "inspect",
            store.path().to_str().unwrap(),
            "--artifact",
            "xyz",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("64 hex"), "{stderr}");
}
