//! Interop with verifiers we did not write: backup tokens minted by the real `backstop` binary
//! during an outage are verified by PyJWT (Python) and jose (Node) against the JWKS found
//! through backstop's own discovery document, as a relying party or resource server would.
//!
//! Proven here, end to end on loopback:
//! - RS256 (the mock primary's algorithm): a session signed in through backstop, then served by
//!   the backup with the primary down. Both peers verify the access token (`typ` `at+jwt`) and
//!   the ID token with the issuer, audience, algorithm and `typ` pinned and `exp`/`iat`
//!   required, and find exactly the primary's last claims but `iat`/`exp`/`nbf`/`jti`. Both
//!   refuse a tampered signature, a wrong issuer and an ID token offered as an access token, so
//!   a pass is not a verifier that says yes to everything.
//! - EdDSA: a store filled by `backstop seed --alg EdDSA`, served in an outage; both peers
//!   verify tokens whose header says `alg: "EdDSA"` (PyJWT rejects the newer `Ed25519` name).
//!
//! The peers, pinned in `tests/interop/requirements.txt` and `tests/interop/package-lock.json`,
//! live inside the work tree (`tests/interop/.pydeps`, `tests/interop/node_modules`; both
//! git-ignored). `tests/interop/install.sh` installs them, and reinstalls only when a pin file
//! changed, so it takes a few seconds once and milliseconds after; `.ci/run` calls it, and so
//! does this test before its first verification, so a plain `cargo test --workspace` works on
//! any machine with python3 + pip, node + npm and the two registries. If the install fails the
//! tests fail, saying so; `BACKSTOP_SKIP_INTEROP=1` skips them instead, with a line saying so.
//! The verifiers (`verify.py`, `verify.mjs`) read the JWKS, the token and the expectations as
//! JSON on stdin and exit non-zero with the library's error; they print nothing on success.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// End-to-end tests wait on wall-clock time on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use backstop_mock_primary::{Fault, GrantRequest, MockHandle};
use common::{Backstop, Reply};
use serde_json::{Value, json};

use common::oidc::{self, free_port, post_token, quick_failover_tables, start_mock, wait_captured};
const CLIENT: &str = "native-app";

// ---- the peers ----------------------------------------------------------------------------

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Whether the peers should run: installs them on first use (a no-op when installed), panics
/// with how to install when that fails, `false` when `BACKSTOP_SKIP_INTEROP=1`.
fn peers_ready(test: &str) -> bool {
    if std::env::var("BACKSTOP_SKIP_INTEROP").is_ok_and(|v| v == "1") {
        // Straight to stderr, past the test harness's capture: a skip must be seen.
        let line =
            format!("skipped: {test}: BACKSTOP_SKIP_INTEROP=1 (no PyJWT/jose verification ran)\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
        return false;
    }
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let script = interop_dir().join("install.sh");
        let out = Command::new("bash").arg(&script).output();
        let why = match out {
            Ok(out) if out.status.success() => return,
            Ok(out) => format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
            Err(e) => e.to_string(),
        };
        panic!(
            "the interop peers (PyJWT, jose) are not installed and {} failed: {why}\n\
             Install them with `tests/interop/install.sh` (needs python3 with pip, node with npm \
             and access to PyPI and the npm registry), or set BACKSTOP_SKIP_INTEROP=1 to skip \
             these tests.",
            script.display()
        );
    });
    true
}

#[derive(Debug, Clone, Copy)]
enum Peer {
    PyJwt,
    Jose,
}

const PEERS: [Peer; 2] = [Peer::PyJwt, Peer::Jose];

/// Runs one peer's verifier on `input`; `Err` holds its exit status and error message.
fn verify_with(peer: Peer, input: &Value) -> Result<(), String> {
    let (program, script) = match peer {
        Peer::PyJwt => ("python3", "verify.py"),
        Peer::Jose => ("node", "verify.mjs"),
    };
    let mut child = Command::new(program)
        .arg(interop_dir().join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// What a relying party pins when it verifies one token.
struct Expect<'a> {
    jwks: &'a Value,
    alg: &'a str,
    typ: Option<&'a str>,
    issuer: &'a str,
    audience: &'a str,
    /// The claims the token must carry, but for `iat`, `exp`, `nbf` and `jti`.
    claims: Option<&'a Value>,
}

fn input(token: &str, e: &Expect<'_>) -> Value {
    json!({
        "jwks": e.jwks, "token": token, "alg": e.alg, "typ": e.typ,
        "issuer": e.issuer, "audience": e.audience, "claims": e.claims,
    })
}

/// Both peers accept `token` under `e`.
fn assert_verifies(what: &str, token: &str, e: &Expect<'_>) {
    for peer in PEERS {
        if let Err(err) = verify_with(peer, &input(token, e)) {
            panic!("{peer:?} rejected the {what}: {err}");
        }
    }
}

/// Both peers refuse `token` under `e`.
fn assert_refused(what: &str, token: &str, e: &Expect<'_>) {
    for peer in PEERS {
        assert!(
            verify_with(peer, &input(token, e)).is_err(),
            "{peer:?} accepted {what}"
        );
    }
}

// ---- backstop and the mock primary (as in tests/gateway.rs) -------------------------------

/// Starts backstop as `http://127.0.0.1:{port}` in front of `mock`, on `dir` if given.
fn start_backstop(mock: &MockHandle, port: u16, dir: Option<tempfile::TempDir>) -> Backstop {
    oidc::start_backstop(&quick_failover_tables(mock), port, dir)
}

fn json_of(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|_| panic!("not JSON ({}): {}", reply.status, reply.text()))
}

/// Signs `user` in through backstop (code grant at the mock primary).
fn sign_in(mock: &MockHandle, server: &Backstop, user: &str) -> Value {
    let mut grant = GrantRequest::new(user, "tenant-1", CLIENT, "openid offline_access api.read");
    grant.amr = vec!["pwd".into(), "mfa".into()];
    grant.acr = Some("urn:acr:mfa".into());
    grant.groups = vec!["g-staff".into()];
    grant.roles = vec!["reader".into()];
    grant.nonce = Some("n-123".into());
    grant.resource = Some("https://api.example.com".into());
    let code = mock.create_grant(grant).unwrap();
    let reply = post_token(
        server.addr,
        &format!("grant_type=authorization_code&code={code}&client_id={CLIENT}"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    json_of(&reply)
}

fn refresh(server: &Backstop, client_id: &str, refresh_token: &str) -> Reply {
    post_token(
        server.addr,
        &format!("grant_type=refresh_token&refresh_token={refresh_token}&client_id={client_id}"),
    )
}

fn take_primary_down(mock: &MockHandle) {
    mock.set_fault(Fault::Down).unwrap();
}

/// The JWKS as a client finds it: discovery at the issuer, then its `jwks_uri`.
fn discovered_jwks(server: &Backstop, issuer: &str) -> Value {
    let reply = common::get(server.addr, "/.well-known/openid-configuration");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let doc = json_of(&reply);
    assert_eq!(doc["issuer"], issuer);
    let jwks_uri = doc["jwks_uri"].as_str().unwrap();
    let path = jwks_uri
        .strip_prefix(issuer)
        .unwrap_or_else(|| panic!("jwks_uri {jwks_uri} is not under the issuer {issuer}"));
    let reply = common::get(server.addr, path);
    assert_eq!(reply.status, 200, "{}", reply.text());
    json_of(&reply)
}

fn part_of(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&backstop::token::b64::decode(part.as_bytes(), "part").unwrap()).unwrap()
}

fn header_of(token: &str) -> Value {
    part_of(token, 0)
}

fn claims_of(token: &str) -> Value {
    part_of(token, 1)
}

/// `token` with its signature's first byte changed.
fn tampered(token: &str) -> String {
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    format!("{signed}.{flipped}{}", &sig[1..])
}

// ---- the tests ----------------------------------------------------------------------------

#[test]
fn rs256_backup_tokens_verify_with_pyjwt_and_jose_and_carry_the_primarys_claims() {
    if !peers_ready("rs256_backup_tokens") {
        return;
    }
    let mock = start_mock();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let server = start_backstop(&mock, port, None);

    // Sign in and refresh once at the primary: its latest tokens are what the backup copies.
    let first = sign_in(&mock, &server, "alice");
    let reply = refresh(&server, CLIENT, first["refresh_token"].as_str().unwrap());
    assert_eq!(reply.status, 200, "{}", reply.text());
    let latest = json_of(&reply);
    wait_captured(&server, 2.0);

    take_primary_down(&mock);
    let reply = refresh(&server, CLIENT, latest["refresh_token"].as_str().unwrap());
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), server.stderr());
    let backup = json_of(&reply);
    let jwks = discovered_jwks(&server, &issuer);

    let (access, primary_access) = (
        backup["access_token"].as_str().unwrap(),
        latest["access_token"].as_str().unwrap(),
    );
    let (id, primary_id) = (
        backup["id_token"].as_str().unwrap(),
        latest["id_token"].as_str().unwrap(),
    );
    // Signed by backstop (its own kid), with the primary's algorithm.
    assert_ne!(header_of(access)["kid"], header_of(primary_access)["kid"]);
    assert_eq!(header_of(primary_access)["alg"], "RS256");
    assert_eq!(header_of(primary_access)["typ"], "at+jwt");

    let (want_access, want_id) = (claims_of(primary_access), claims_of(primary_id));
    let access_expect = Expect {
        jwks: &jwks,
        alg: "RS256",
        typ: Some("at+jwt"),
        issuer: &issuer,
        audience: "https://api.example.com",
        claims: Some(&want_access),
    };
    let id_typ = header_of(primary_id)["typ"].as_str().map(str::to_owned);
    let id_expect = Expect {
        jwks: &jwks,
        alg: "RS256",
        typ: id_typ.as_deref(),
        issuer: &issuer,
        audience: CLIENT,
        claims: Some(&want_id),
    };
    assert_verifies("backup access token", access, &access_expect);
    assert_verifies("backup ID token", id, &id_expect);

    // The same checks refuse what they should, so the passes above mean something.
    assert_refused("a tampered signature", &tampered(access), &access_expect);
    assert_refused(
        "another issuer",
        access,
        &Expect {
            issuer: "http://127.0.0.1:1",
            ..access_expect
        },
    );
    let mut other_user = want_access.clone();
    other_user["sub"] = json!("mallory");
    assert_refused(
        "claims that are not the primary's",
        access,
        &Expect {
            claims: Some(&other_user),
            ..access_expect
        },
    );
    assert_refused(
        "an ID token as an access token",
        id,
        &Expect {
            claims: None,
            audience: CLIENT,
            ..access_expect
        },
    );
}

#[test]
fn eddsa_backup_tokens_from_a_seeded_store_verify_with_pyjwt_and_jose() {
    if !peers_ready("eddsa_backup_tokens") {
        return;
    }
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.txt");
    let data = dir.path().join("data");
    let (code, _, stderr) = common::run(
        &[
            "seed",
            "--data-dir",
            data.to_str().unwrap(),
            "--sessions",
            "10",
            "--issuer",
            &issuer,
            "--alg",
            "EdDSA",
            "--tokens-out",
            tokens.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "seed: {stderr}");

    // The mock primary only lends its discovery (the token endpoint's path); then it goes
    // down and every refresh is the backup's.
    let mock = start_mock();
    let server = start_backstop(&mock, port, Some(dir));
    take_primary_down(&mock);
    let jwks = discovered_jwks(&server, &issuer);

    let lines = std::fs::read_to_string(&tokens).unwrap();
    for line in lines.lines().take(3) {
        let [client_id, refresh_token, resource] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("not `client_id refresh_token resource`: {line}");
        };
        let reply = refresh(&server, client_id, refresh_token);
        assert_eq!(reply.status, 200, "{}\n{}", reply.text(), server.stderr());
        let backup = json_of(&reply);
        let access = backup["access_token"].as_str().unwrap();
        let id = backup["id_token"].as_str().unwrap();
        for token in [access, id] {
            assert_eq!(header_of(token)["alg"], "EdDSA", "the name PyJWT accepts");
        }
        let access_expect = Expect {
            jwks: &jwks,
            alg: "EdDSA",
            typ: Some("at+jwt"),
            issuer: &issuer,
            audience: resource,
            claims: None,
        };
        assert_verifies("EdDSA access token", access, &access_expect);
        assert_verifies(
            "EdDSA ID token",
            id,
            &Expect {
                typ: Some("JWT"),
                audience: client_id,
                ..access_expect
            },
        );
        assert_refused(
            "a tampered EdDSA signature",
            &tampered(access),
            &access_expect,
        );
        // The seeded session's own claims came through (the peers checked iss, aud, times).
        let claims = claims_of(access);
        assert_eq!(claims["appid"], client_id);
        assert!(claims["sub"].as_str().unwrap().starts_with("user-"));
    }
}
