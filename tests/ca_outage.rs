//! End-to-end tests of Conditional Access and revocation on the outage path (issue 6, "Done
//! when"): the real `backstop` binary in front of the mock OpenID provider on loopback. Each test
//! signs users in through backstop, takes the primary down, and checks what the backup serves and
//! refuses once policies (`[policy] file`, `PUT /admin/policies`) and revocation events (signed
//! Security Event Tokens at `POST /ssf/events`, `POST /admin/revocations`) are in play: the wire
//! answer and the machine reason in the audit record.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// End-to-end tests wait on wall-clock time on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

#[path = "fixtures/token/support.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backstop::token::alg::SigningAlg;
use backstop::token::sign::SigningKey;
use backstop_mock_primary::{Fault, GrantRequest, KeySource, MockHandle, MockOptions, MockPrimary};
use common::{Backstop, Conn, Reply};
use serde_json::{Value, json};

use common::oidc::{self, ADMIN_TOKEN, free_port, metric, post_token, post_token_with, wait_until};
const CLIENT: &str = "native-app";
const SSF_ISSUER: &str = "https://transmitter.example.com";
const SSF_AUDIENCE: &str = "https://backstop.example.com";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

// ---------------------------------------------------------------------------------------------
// Harness

/// A Shared Signals transmitter: its signing key, and a loopback HTTP server answering every
/// request with its JWKS (what backstop fetches from `[ssf] jwks_uri`).
struct Transmitter {
    key: SigningKey,
    jwks_uri: String,
    fetches: Arc<AtomicUsize>,
}

impl Transmitter {
    fn start() -> Self {
        let key = SigningKey::generate(SigningAlg::Es256).unwrap();
        let body = format!(r#"{{"keys":[{}]}}"#, key.public_jwk().to_json());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fetches = Arc::new(AtomicUsize::new(0));
        let count = fetches.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                // Read the request head (a GET has no body), answer, close.
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Transmitter {
            key,
            jwks_uri: format!("http://{addr}/jwks"),
            fetches,
        }
    }

    /// A signed SET about user `sub` carrying one event of `event_type`.
    fn set(&self, jti: &str, sub: &str, event_type: &str, payload: &Value) -> String {
        let user = json!({"format": "iss_sub", "iss": "https://idp.example.com", "sub": sub});
        self.set_about(jti, &user, event_type, payload)
    }

    /// A signed SET about the RFC 9493 subject `sub_id` carrying one event of `event_type`.
    fn set_about(&self, jti: &str, sub_id: &Value, event_type: &str, payload: &Value) -> String {
        self.set_signed_by(&self.key, jti, sub_id, event_type, payload)
    }

    /// [`Transmitter::set_about`] signed with `key` under the transmitter's `kid` (a forgery
    /// unless `key` is the transmitter's).
    fn set_signed_by(
        &self,
        key: &SigningKey,
        jti: &str,
        sub_id: &Value,
        event_type: &str,
        payload: &Value,
    ) -> String {
        let claims = json!({
            "iss": SSF_ISSUER,
            "aud": SSF_AUDIENCE,
            "iat": now_secs(),
            "jti": jti,
            "sub_id": sub_id,
            "events": { event_type: payload },
        });
        let header = json!({"alg": "ES256", "typ": "secevent+jwt", "kid": self.key.kid()});
        support::sign_raw(
            &*support::signer(key),
            &header.to_string(),
            &claims.to_string(),
        )
    }
}

/// What a test configures beyond the gateway defaults.
#[derive(Default)]
struct Setup<'a> {
    /// Contents of the `[policy] file` (none: no file configured).
    policy: Option<&'a Value>,
    /// The Shared Signals transmitter (none: receiver off).
    ssf: Option<&'a Transmitter>,
    /// `[policy] reload_poll_ms` (none: 50, a quick watcher).
    reload_poll_ms: Option<u64>,
    /// Further `[policy]` fields, as written (with a policy file only).
    policy_fields: &'a str,
    /// Further TOML tables, as written.
    tables: &'a str,
}

/// One test's world: the mock primary, a backstop on a fixed port (so a restart keeps its
/// issuer), and the directory holding the policy file.
struct World {
    mock: MockHandle,
    server: Backstop,
    port: u16,
    tables: String,
    policy_file: Option<PathBuf>,
    _policy_dir: tempfile::TempDir,
}

impl World {
    fn start(setup: &Setup<'_>) -> Self {
        let mock = MockPrimary::start(MockOptions {
            key: KeySource::test_fixture(),
            ..MockOptions::default()
        })
        .unwrap();
        let port = free_port();
        let policy_dir = tempfile::tempdir().unwrap();
        // Short timeouts and a quick breaker, as in tests/gateway.rs.
        let mut tables = format!(
            "[primary]\norigin = \"http://{}\"\nconnect_timeout_ms = 200\nrequest_timeout_ms = 600\n\
             [failover]\nconsecutive_failures_max = 2\nwindow_len = 4\nwindow_failures_max = 4\n\
             open_initial_ms = 300\nopen_max_ms = 1000\n",
            mock.addr()
        );
        let policy_file = setup.policy.map(|doc| {
            let path = policy_dir.path().join("policies.json");
            write_policy(&path, doc);
            tables.push_str(&format!(
                "[policy]\nfile = \"{}\"\nreload_poll_ms = {}\n{}",
                path.display(),
                setup.reload_poll_ms.unwrap_or(50),
                setup.policy_fields
            ));
            path
        });
        if let Some(t) = setup.ssf {
            tables.push_str(&format!(
                "[ssf]\nissuer = \"{SSF_ISSUER}\"\njwks_uri = \"{}\"\naudience = \"{SSF_AUDIENCE}\"\n",
                t.jwks_uri
            ));
        }
        tables.push_str(setup.tables);
        let server = start_backstop(port, &tables, None);
        World {
            mock,
            server,
            port,
            tables,
            policy_file,
            _policy_dir: policy_dir,
        }
    }

    /// Kills backstop (SIGKILL, no drain) and starts it again on the same data directory,
    /// address and configuration.
    fn restart(&mut self) {
        let dir = self.server.kill_and_take_dir();
        self.server = start_backstop(self.port, &self.tables, Some(dir));
    }

    fn take_primary_down(&self) {
        self.mock.set_fault(Fault::Down).unwrap();
    }

    /// Signs `grant` in through backstop (code grant at the primary) and waits until its
    /// snapshot is captured; returns the refresh token.
    fn sign_in(&self, grant: GrantRequest) -> String {
        self.sign_in_with(grant, "")
    }

    /// [`World::sign_in`] with extra request headers (each ending in CRLF).
    fn sign_in_with(&self, grant: GrantRequest, extra_headers: &str) -> String {
        let before = metric(&self.server, "backstop_capture_captured_total");
        let code = self.mock.create_grant(grant).unwrap();
        let reply = post_token_with(
            self.server.addr,
            &format!("grant_type=authorization_code&code={code}&client_id={CLIENT}"),
            extra_headers,
        );
        assert_eq!(reply.status, 200, "{}", shown(&reply));
        wait_until("the sign-in captured", Duration::from_secs(10), || {
            metric(&self.server, "backstop_capture_captured_total") > before
        });
        json_of(&reply)["refresh_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn refresh(&self, refresh_token: &str) -> Reply {
        self.refresh_with(refresh_token, "")
    }

    /// A refresh with extra request headers (each ending in CRLF).
    fn refresh_with(&self, refresh_token: &str, extra_headers: &str) -> Reply {
        post_token_with(
            self.server.addr,
            &format!("grant_type=refresh_token&refresh_token={refresh_token}&client_id={CLIENT}"),
            extra_headers,
        )
    }

    /// Asserts a refresh of `user`'s token is served (200 with an access token) and audited.
    fn assert_served(&self, refresh_token: &str, user: &str) {
        let before = self.decisions(user, "served", "served");
        let reply = self.refresh(refresh_token);
        assert_eq!(
            reply.status,
            200,
            "{user}: {}\n{}",
            shown(&reply),
            self.server.stderr()
        );
        assert!(json_of(&reply)["access_token"].is_string(), "{user}");
        self.wait_for_decision(before, user, "served", "served");
    }

    /// Asserts a refresh of `user`'s token is refused with `status` and `error`, and that the
    /// audit log records this refusal with the machine `reason`.
    fn assert_refused(
        &self,
        refresh_token: &str,
        user: &str,
        status: u16,
        error: &str,
        reason: &str,
    ) {
        let before = self.decisions(user, "refused", reason);
        let reply = self.refresh(refresh_token);
        assert_eq!(reply.status, status, "{user}: {}", shown(&reply));
        assert_eq!(json_of(&reply)["error"], error, "{user}");
        if status == 503 {
            assert!(reply.header("retry-after").is_some(), "{user}: Retry-After");
        }
        self.wait_for_decision(before, user, "refused", reason);
    }

    /// How many audit records of backup decisions about `user` say `decision` for `reason`
    /// (the log survives a restart: counting tells this request's record from older ones).
    fn decisions(&self, user: &str, decision: &str, reason: &str) -> usize {
        let path = self.server.dir.path().join("data/audit/audit.jsonl");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        assert!(!text.contains("eyJ"), "a token reached the audit log");
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| {
                r["event"] == "backup_decision"
                    && r["user"] == user
                    && r["decision"] == decision
                    && r["reason"] == reason
            })
            .count()
    }

    /// Waits (the audit writer is off the request path) for one more such record than `before`.
    fn wait_for_decision(&self, before: usize, user: &str, decision: &str, reason: &str) {
        wait_until(
            &format!("the audit record of {user}: {decision} ({reason})"),
            Duration::from_secs(5),
            || self.decisions(user, decision, reason) > before,
        );
    }

    fn admin(&self, method: &str, path: &str, extra_headers: &str, body: &str) -> Reply {
        let mut conn = Conn::open(self.server.admin_addr.unwrap());
        conn.send(
            format!(
                "{method} {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
                 content-type: application/json\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        conn.read_reply().expect("a reply")
    }

    /// `GET /admin/policies`: (ETag, body).
    fn policies(&self) -> (String, Value) {
        let reply = self.admin("GET", "/admin/policies", "", "");
        assert_eq!(reply.status, 200, "{}", shown(&reply));
        let etag = reply.header("etag").unwrap().to_string();
        (etag, json_of(&reply))
    }

    /// Pushes a SET to `POST /ssf/events`. Until backstop has fetched the transmitter's keys it
    /// answers 503 (retry, RFC 8935 §2.4) and remembers nothing; retry until it does not.
    fn push_set(&self, transmitter: &Transmitter, set: &str) -> Reply {
        wait_until("transmitter keys fetched", Duration::from_secs(10), || {
            transmitter.fetches.load(Ordering::SeqCst) > 0
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut conn = Conn::open(self.server.addr);
            conn.send(
                format!(
                    "POST /ssf/events HTTP/1.1\r\nhost: t\r\ncontent-type: application/secevent+jwt\r\n\
                     accept: application/json\r\ncontent-length: {}\r\n\r\n{set}",
                    set.len()
                )
                .as_bytes(),
            );
            let reply = conn.read_reply().expect("a reply");
            if reply.status != 503 {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver never had the transmitter's keys"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn start_backstop(port: u16, tables: &str, dir: Option<tempfile::TempDir>) -> Backstop {
    oidc::start_backstop(tables, port, dir)
}

fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn json_of(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|_| panic!("not JSON ({}): {}", reply.status, shown(reply)))
}

/// A reply body for an assertion message, with any token in it redacted: a test that fails
/// because something was served must not print what was served.
fn shown(reply: &Reply) -> String {
    match serde_json::from_slice::<Value>(&reply.body) {
        Ok(Value::Object(mut body)) => {
            for (name, value) in &mut body {
                if name.ends_with("_token") {
                    *value = json!("<redacted>");
                }
            }
            Value::Object(body).to_string()
        }
        Ok(_) | Err(_) if !reply.text().contains("eyJ") => reply.text(),
        Ok(_) | Err(_) => format!("{} bytes, redacted", reply.body.len()),
    }
}

/// Writes the policy file atomically (temp file + rename), so the watcher never reads half.
fn write_policy(path: &Path, document: &Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(document).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A user of the home tenant with the given `amr` and groups.
fn grant(user: &str, amr: &[&str], groups: &[&str]) -> GrantRequest {
    GrantRequest {
        amr: amr.iter().map(|s| (*s).to_string()).collect(),
        groups: groups.iter().map(|s| (*s).to_string()).collect(),
        ..GrantRequest::new(user, "tenant-1", CLIENT, "openid offline_access api.read")
    }
}

/// A Graph `conditionalAccessPolicy` in `state` for every user, app and client app type, with
/// `extra`'s members merged over it one level deep: `conditions.users` in `extra` replaces the
/// default `includeUsers: ["All"]`.
fn policy(id: &str, state: &str, extra: &Value) -> Value {
    let mut p = json!({
        "id": id,
        "displayName": format!("test policy {id}"),
        "state": state,
        "conditions": {
            "users": {"includeUsers": ["All"]},
            "applications": {"includeApplications": ["All"]},
            "clientAppTypes": ["all"]
        }
    });
    let (Value::Object(base), Value::Object(extra)) = (&mut p, extra) else {
        panic!("objects")
    };
    for (k, v) in extra {
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(e)) => {
                b.extend(e.clone());
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    p
}

fn document(policies: &[Value], locations: &[Value]) -> Value {
    json!({"conditionalAccessPolicies": policies, "namedLocations": locations})
}

fn ip_location(id: &str, cidr: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.ipNamedLocation",
        "id": id,
        "displayName": id,
        "isTrusted": false,
        "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": cidr}]
    })
}

/// A policy blocking every user and app from the named location `location`.
fn block_from(id: &str, location: &str) -> Value {
    policy(
        id,
        "enabled",
        &json!({
            "conditions": {"locations": {"includeLocations": [location]}},
            "grantControls": {"operator": "OR", "builtInControls": ["block"]}
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Revocation

#[test]
fn a_password_change_signalled_after_the_snapshot_refuses_that_user_and_no_one_else() {
    let transmitter = Transmitter::start();
    let world = World::start(&Setup {
        ssf: Some(&transmitter),
        ..Setup::default()
    });
    let alice = world.sign_in(grant("alice", &["pwd"], &[]));
    let bob = world.sign_in(grant("bob", &["pwd"], &[]));
    world.take_primary_down();
    world.assert_served(&alice, "alice");

    // CAEP credential-change (a password update) for alice, after her snapshot.
    let set = transmitter.set(
        "set-password-1",
        "alice",
        &format!("{CAEP}credential-change"),
        &json!({"credential_type": "password", "change_type": "update"}),
    );
    let reply = world.push_set(&transmitter, &set);
    assert_eq!(reply.status, 202, "{}", shown(&reply));

    world.assert_refused(
        &alice,
        "alice",
        400,
        "invalid_grant",
        "revoked_credential_change",
    );
    world.assert_served(&bob, "bob");

    // A forged SET (another key under the transmitter's kid) is refused and revokes nothing.
    let impostor = SigningKey::generate(SigningAlg::Es256).unwrap();
    let forged = transmitter.set_signed_by(
        &impostor,
        "set-forged",
        &json!({"format": "iss_sub", "iss": "https://idp.example.com", "sub": "bob"}),
        &format!("{CAEP}credential-change"),
        &json!({"credential_type": "password", "change_type": "update"}),
    );
    let reply = world.push_set(&transmitter, &forged);
    assert_eq!(reply.status, 400, "{}", shown(&reply));
    assert_eq!(json_of(&reply)["err"], "invalid_key");
    world.assert_served(&bob, "bob");

    // RISC account-credential-change-required refuses the same way (bob this time).
    let set = transmitter.set(
        "set-password-2",
        "bob",
        &format!("{RISC}account-credential-change-required"),
        &json!({}),
    );
    assert_eq!(world.push_set(&transmitter, &set).status, 202);
    world.assert_refused(
        &bob,
        "bob",
        400,
        "invalid_grant",
        "revoked_credential_change",
    );
}

#[test]
fn a_revocation_signalled_as_a_set_applies_at_once_and_survives_a_restart() {
    let transmitter = Transmitter::start();
    let mut world = World::start(&Setup {
        ssf: Some(&transmitter),
        ..Setup::default()
    });
    let carl = world.sign_in(grant("carl", &["pwd"], &[]));
    let erin = world.sign_in(grant("erin", &["pwd"], &[]));
    world.take_primary_down();
    world.assert_served(&carl, "carl");

    // An admin revoked carl's sessions at the primary; its transmitter tells us.
    let set = transmitter.set(
        "set-admin-revoke",
        "carl",
        &format!("{RISC}sessions-revoked"),
        &json!({}),
    );
    let reply = world.push_set(&transmitter, &set);
    assert_eq!(reply.status, 202, "{}", shown(&reply));
    world.assert_refused(
        &carl,
        "carl",
        400,
        "invalid_grant",
        "revoked_sessions_revoked",
    );
    // A redelivery of the same SET is acknowledged and changes nothing.
    assert_eq!(world.push_set(&transmitter, &set).status, 202);

    // Kill and restart on the same directory, primary still down: still refused, and listed.
    world.restart();
    world.assert_refused(
        &carl,
        "carl",
        400,
        "invalid_grant",
        "revoked_sessions_revoked",
    );
    // Others are served after the restart.
    world.assert_served(&erin, "erin");
    let reply = world.admin(
        "GET",
        "/admin/revocations?subject_type=user&subject_id=carl",
        "",
        "",
    );
    assert_eq!(reply.status, 200, "{}", shown(&reply));
    let listed = json_of(&reply)["revocations"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], "set-admin-revoke/0");
    assert_eq!(listed[0]["kind"], "sessions_revoked");
    assert_eq!(listed[0]["source"], "shared_signals");
    assert_eq!(listed[0]["subject"], json!({"type": "user", "id": "carl"}));
}

#[test]
fn an_admin_api_revocation_is_idempotent_by_id_and_refuses_the_next_request() {
    let world = World::start(&Setup::default());
    let dora = world.sign_in(grant("dora", &["pwd"], &[]));
    let erin = world.sign_in(grant("erin", &["pwd"], &[]));
    world.take_primary_down();
    world.assert_served(&dora, "dora");

    let event = json!({
        "id": "adm-1",
        "kind": "account_disabled",
        "subject": {"type": "user", "id": "dora"},
        "time": now_secs()
    })
    .to_string();
    let reply = world.admin("POST", "/admin/revocations", "", &event);
    assert_eq!(reply.status, 201, "{}", shown(&reply));
    assert_eq!(json_of(&reply)["source"], "admin_api");
    let reply = world.admin("POST", "/admin/revocations", "", &event);
    assert_eq!(reply.status, 200, "a repeat is a no-op: {}", shown(&reply));
    let conflicting = json!({
        "id": "adm-1",
        "kind": "account_disabled",
        "subject": {"type": "user", "id": "erin"},
        "time": now_secs()
    })
    .to_string();
    let reply = world.admin("POST", "/admin/revocations", "", &conflicting);
    assert_eq!(reply.status, 409, "{}", shown(&reply));
    assert_eq!(json_of(&reply)["error"], "conflict");

    world.assert_refused(
        &dora,
        "dora",
        400,
        "invalid_grant",
        "revoked_account_disabled",
    );
    // The conflicting event (about erin) was not recorded.
    world.assert_served(&erin, "erin");
    let reply = world.admin("GET", "/admin/revocations", "", "");
    let listed = json_of(&reply)["revocations"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["subject"]["id"], "dora");

    // An app subject: every session of the client.
    let event = json!({
        "id": "adm-app",
        "kind": "app_consent_revoked",
        "subject": {"type": "app", "id": CLIENT},
        "time": now_secs()
    })
    .to_string();
    let reply = world.admin("POST", "/admin/revocations", "", &event);
    assert_eq!(reply.status, 201, "{}", shown(&reply));
    world.assert_refused(
        &erin,
        "erin",
        400,
        "invalid_grant",
        "revoked_app_consent_revoked",
    );
}

/// Regression: the revocation check started at the snapshot's `recorded_at`, which a later
/// sign-in on the same device moves past the event, so the revoked token was served again.
#[test]
fn a_new_sign_in_after_a_revocation_restores_access_but_never_revives_a_token_issued_before_it() {
    // The device header makes both sign-ins one device-user-app-resource: one snapshot.
    let world = World::start(&Setup {
        tables: "[capture]\ndevice_header = \"x-device-id\"\n",
        ..Setup::default()
    });
    let device = "x-device-id: laptop-1\r\n";
    let old = world.sign_in_with(grant("vera", &["pwd"], &[]), device);
    let revoked_at = now_secs();
    let event = json!({
        "id": "adm-vera",
        "kind": "sessions_revoked",
        "subject": {"type": "user", "id": "vera"},
        "time": revoked_at
    })
    .to_string();
    let reply = world.admin("POST", "/admin/revocations", "", &event);
    assert_eq!(reply.status, 201, "{}", shown(&reply));

    // Vera signs in again at the primary after the event (a later second: event times and
    // snapshot times are whole seconds, and an event denies what was recorded at or before it).
    wait_until("the clock past the event", Duration::from_secs(3), || {
        now_secs() > revoked_at
    });
    let new = world.sign_in_with(grant("vera", &["pwd"], &[]), device);
    world.take_primary_down();

    // DESIGN §6: a sign-in after the event brings access back by itself.
    world.assert_served(&new, "vera");
    world.assert_refused(
        &old,
        "vera",
        400,
        "invalid_grant",
        "revoked_sessions_revoked",
    );
}

/// Regression: a device identity from `[capture] device_header` is stored as `hdr:<value>`,
/// and device revocations (which name the device by its value) never matched it.
#[test]
fn device_revocations_from_the_admin_api_and_shared_signals_match_the_device_the_client_names() {
    let transmitter = Transmitter::start();
    let world = World::start(&Setup {
        ssf: Some(&transmitter),
        tables: "[capture]\ndevice_header = \"x-device-id\"\n",
        ..Setup::default()
    });
    let lost = world.sign_in_with(grant("walt", &["pwd"], &[]), "x-device-id: phone-7\r\n");
    let kept = world.sign_in_with(grant("walt", &["pwd"], &[]), "x-device-id: laptop-2\r\n");
    world.take_primary_down();
    world.assert_served(&lost, "walt");

    let event = json!({
        "id": "adm-phone-7",
        "kind": "device_not_compliant",
        "subject": {"type": "device", "id": "phone-7"},
        "time": now_secs()
    })
    .to_string();
    let reply = world.admin("POST", "/admin/revocations", "", &event);
    assert_eq!(reply.status, 201, "{}", shown(&reply));
    world.assert_refused(
        &lost,
        "walt",
        400,
        "invalid_grant",
        "revoked_device_not_compliant",
    );
    world.assert_served(&kept, "walt");

    // CAEP device-compliance-change about the other device (a complex subject: this user on
    // this device) refuses that one too.
    let subject = json!({
        "format": "complex",
        "user": {"format": "iss_sub", "iss": "https://idp.example.com", "sub": "walt"},
        "device": {"format": "opaque", "id": "laptop-2"}
    });
    let set = transmitter.set_about(
        "set-laptop-2",
        &subject,
        &format!("{CAEP}device-compliance-change"),
        &json!({"previous_status": "compliant", "current_status": "not-compliant"}),
    );
    let reply = world.push_set(&transmitter, &set);
    assert_eq!(reply.status, 202, "{}", shown(&reply));
    world.assert_refused(
        &kept,
        "walt",
        400,
        "invalid_grant",
        "revoked_device_not_compliant",
    );
}

// ---------------------------------------------------------------------------------------------
// Conditional Access

#[test]
fn a_policy_requiring_mfa_serves_a_session_with_mfa_and_refuses_one_without() {
    let doc = document(
        &[policy(
            "require-mfa",
            "enabled",
            &json!({"grantControls": {"operator": "OR", "builtInControls": ["mfa"]}}),
        )],
        &[],
    );
    let world = World::start(&Setup {
        policy: Some(&doc),
        ..Setup::default()
    });
    let strong = world.sign_in(grant("mia", &["pwd", "mfa"], &[]));
    let weak = world.sign_in(grant("nina", &["pwd"], &[]));
    world.take_primary_down();

    world.assert_served(&strong, "mia");
    world.assert_refused(&weak, "nina", 400, "interaction_required", "mfa_required");
}

#[test]
fn a_policy_requiring_a_compliant_device_serves_only_sessions_recorded_as_compliant() {
    let doc = document(
        &[policy(
            "require-compliant",
            "enabled",
            &json!({"grantControls": {"operator": "OR", "builtInControls": ["compliantDevice"]}}),
        )],
        &[],
    );
    let world = World::start(&Setup {
        policy: Some(&doc),
        tables: "[capture]\ndevice_compliance_claim = \"device_compliant\"\n",
        ..Setup::default()
    });
    let mut managed = grant("cora", &["pwd"], &[]);
    managed
        .extra_claims
        .insert("device_compliant".into(), json!(true));
    let managed = world.sign_in(managed);
    let mut unmanaged = grant("cole", &["pwd"], &[]);
    unmanaged
        .extra_claims
        .insert("device_compliant".into(), json!(false));
    let unmanaged = world.sign_in(unmanaged);
    let unknown = world.sign_in(grant("cyd", &["pwd"], &[]));
    world.take_primary_down();

    world.assert_served(&managed, "cora");
    for (rt, user) in [(&unmanaged, "cole"), (&unknown, "cyd")] {
        world.assert_refused(
            rt,
            user,
            400,
            "interaction_required",
            "compliant_device_required",
        );
    }
}

#[test]
fn resilience_defaults_disabled_on_a_group_policy_refuses_members_and_non_members_alike() {
    let group_policy = |disable: bool| {
        document(
            &[policy(
                "staff-mfa",
                "enabled",
                &json!({
                    "conditions": {"users": {"includeGroups": ["g-staff"]}},
                    "grantControls": {"operator": "OR", "builtInControls": ["mfa"]},
                    "sessionControls": {"disableResilienceDefaults": disable}
                }),
            )],
            &[],
        )
    };
    let doc = group_policy(true);
    let world = World::start(&Setup {
        policy: Some(&doc),
        ..Setup::default()
    });
    // Both satisfy the policy's control: only resilience defaults can refuse them.
    let member = world.sign_in(grant("gus", &["pwd", "mfa"], &["g-staff"]));
    let outsider = world.sign_in(grant("olga", &["pwd", "mfa"], &["g-other"]));
    world.take_primary_down();

    // Group membership cannot be known live: the policy may apply to anyone.
    for (rt, user) in [(&member, "gus"), (&outsider, "olga")] {
        world.assert_refused(
            rt,
            user,
            503,
            "temporarily_unavailable",
            "resilience_defaults_disabled",
        );
    }

    // The same policy with resilience defaults on: membership comes from the snapshot, and
    // both are served (the member has MFA; the outsider is not targeted).
    let (etag, _) = world.policies();
    let reply = world.admin(
        "PUT",
        "/admin/policies",
        &format!("if-match: {etag}\r\n"),
        &group_policy(false).to_string(),
    );
    assert_eq!(reply.status, 200, "{}", shown(&reply));
    world.assert_served(&member, "gus");
    world.assert_served(&outsider, "olga");
}

#[test]
fn a_blocked_ip_range_containing_the_client_is_refused_and_one_not_containing_it_is_served() {
    let elsewhere = document(
        &[block_from("block-office", "office")],
        &[ip_location("office", "10.0.0.0/8")],
    );
    let world = World::start(&Setup {
        policy: Some(&elsewhere),
        ..Setup::default()
    });
    let rt = world.sign_in(grant("ivan", &["pwd", "mfa"], &[]));
    world.take_primary_down();
    // The client (127.0.0.1) is outside the blocked 10.0.0.0/8.
    world.assert_served(&rt, "ivan");

    // The client (the socket peer, 127.0.0.1) is inside the blocked range.
    let here = document(
        &[block_from("block-loopback", "loopback")],
        &[ip_location("loopback", "127.0.0.1/32")],
    );
    let reply = world.admin("PUT", "/admin/policies", "", &here.to_string());
    assert_eq!(reply.status, 200, "{}", shown(&reply));
    world.assert_refused(&rt, "ivan", 400, "access_denied", "blocked_by_policy");
    // No trusted proxy is configured: a client's own X-Forwarded-For moves it nowhere.
    let reply = world.refresh_with(&rt, "x-forwarded-for: 192.0.2.5\r\n");
    assert_eq!(reply.status, 400, "a spoofed address: {}", shown(&reply));
    assert_eq!(json_of(&reply)["error"], "access_denied");
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_client_address_is_placed_in_named_locations() {
    let doc = document(
        &[block_from("block-office", "office")],
        &[ip_location("office", "10.0.0.0/8")],
    );
    let world = World::start(&Setup {
        policy: Some(&doc),
        policy_fields: "trusted_proxies = [\"127.0.0.1/32\"]\nclient_ip_header = \"x-forwarded-for\"\n",
        ..Setup::default()
    });
    let rt = world.sign_in(grant("tom", &["pwd"], &[]));
    world.take_primary_down();

    // The peer (127.0.0.1) is a trusted proxy: the client is the header's address.
    let reply = world.refresh_with(&rt, "x-forwarded-for: 192.0.2.5\r\n");
    assert_eq!(reply.status, 200, "outside the range: {}", shown(&reply));
    let before = world.decisions("tom", "refused", "blocked_by_policy");
    let reply = world.refresh_with(&rt, "x-forwarded-for: 192.0.2.5, 10.1.2.3\r\n");
    assert_eq!(reply.status, 400, "inside the range: {}", shown(&reply));
    assert_eq!(json_of(&reply)["error"], "access_denied");
    world.wait_for_decision(before, "tom", "refused", "blocked_by_policy");
    // A header that cannot be read: the location cannot be placed, so nothing is served.
    let before = world.decisions("tom", "refused", "client_ip_unknown");
    let reply = world.refresh_with(&rt, "x-forwarded-for: not-an-address\r\n");
    assert_eq!(reply.status, 503, "unreadable: {}", shown(&reply));
    assert_eq!(json_of(&reply)["error"], "temporarily_unavailable");
    world.wait_for_decision(before, "tom", "refused", "client_ip_unknown");
}

#[test]
fn report_only_policies_never_block() {
    let mut report_block = block_from("report-block-loopback", "loopback");
    report_block["state"] = json!("enabledForReportingButNotEnforced");
    let doc = document(
        &[
            report_block,
            policy(
                "report-mfa",
                "enabledForReportingButNotEnforced",
                &json!({"grantControls": {"operator": "OR", "builtInControls": ["mfa"]}}),
            ),
            policy(
                "report-no-resilience",
                "enabledForReportingButNotEnforced",
                &json!({
                    "grantControls": {"operator": "OR", "builtInControls": ["mfa"]},
                    "sessionControls": {"disableResilienceDefaults": true}
                }),
            ),
        ],
        &[ip_location("loopback", "127.0.0.1/32")],
    );
    let world = World::start(&Setup {
        policy: Some(&doc),
        ..Setup::default()
    });
    assert_eq!(world.policies().1["policies"], 3);
    let rt = world.sign_in(grant("rita", &["pwd"], &[]));
    world.take_primary_down();

    // Every policy would refuse rita (blocked location, no MFA, resilience defaults off);
    // none is enforced.
    world.assert_served(&rt, "rita");
    wait_until(
        "the report-only result logged",
        Duration::from_secs(5),
        || {
            world
                .server
                .stderr()
                .contains("report-only policy would have refused")
        },
    );
}

// ---------------------------------------------------------------------------------------------
// What the backup never serves

#[test]
fn b2b_guests_and_interactive_grants_are_refused_in_an_outage_with_their_reasons() {
    let world = World::start(&Setup::default());
    let home = world.sign_in(grant("hana", &["pwd"], &[]));
    // Entra's `acct` optional claim: 1 = guest in this tenant.
    let mut by_acct = grant("gabe", &["pwd"], &[]);
    by_acct.extra_claims.insert("acct".into(), json!(1));
    let by_acct = world.sign_in(by_acct);
    // A home-tenant claim naming another tenant.
    let mut by_idp = grant("gwen", &["pwd"], &[]);
    by_idp
        .extra_claims
        .insert("idp".into(), json!("https://sts.windows.net/other-tenant/"));
    let by_idp = world.sign_in(by_idp);
    world.take_primary_down();

    world.assert_served(&home, "hana");
    world.assert_refused(
        &by_acct,
        "gabe",
        503,
        "temporarily_unavailable",
        "guest_user",
    );
    world.assert_refused(
        &by_idp,
        "gwen",
        503,
        "temporarily_unavailable",
        "guest_user",
    );

    // An authorization-code grant (interactive) is never served from the backup.
    let code = world
        .mock
        .create_grant(grant("hana", &["pwd"], &[]))
        .unwrap();
    let reply = post_token(
        world.server.addr,
        &format!("grant_type=authorization_code&code={code}&client_id={CLIENT}"),
    );
    assert_eq!(reply.status, 503, "{}", shown(&reply));
    assert_eq!(json_of(&reply)["error"], "temporarily_unavailable");
    assert!(reply.header("retry-after").is_some());
    assert!(json_of(&reply).get("access_token").is_none());
    world.server.wait_for_audit(|r| {
        r["event"] == "backup_decision"
            && r["grant_type"] == "authorization_code"
            && r["decision"] == "refused"
            && r["reason"] == "unsupported_grant"
    });
}

// ---------------------------------------------------------------------------------------------
// Policy management

#[test]
fn policy_changes_hot_reload_and_a_stale_or_bad_update_keeps_the_version_in_force() {
    let empty = document(&[], &[]);
    let world = World::start(&Setup {
        policy: Some(&empty),
        ..Setup::default()
    });
    let policy_file = world.policy_file.clone().unwrap();
    let rt = world.sign_in(grant("paul", &["pwd"], &[]));
    world.take_primary_down();
    world.assert_served(&rt, "paul");
    let (v1, _) = world.policies();

    // The file changes: the watcher loads the new version and it applies to the next request.
    let blocking = document(
        &[block_from("block-loopback", "loopback")],
        &[ip_location("loopback", "127.0.0.1/32")],
    );
    write_policy(&policy_file, &blocking);
    wait_until("the file reloaded", Duration::from_secs(10), || {
        world.policies().0 != v1
    });
    let (v2, body) = world.policies();
    assert_eq!(body["policies"], 1);
    assert!(body["origin"].as_str().unwrap().contains("File"), "{body}");
    world.assert_refused(&rt, "paul", 400, "access_denied", "blocked_by_policy");

    // A PUT conditional on the version before the reload: 412, nothing changes.
    let reply = world.admin(
        "PUT",
        "/admin/policies",
        &format!("if-match: {v1}\r\n"),
        &empty.to_string(),
    );
    assert_eq!(reply.status, 412, "{}", shown(&reply));
    assert_eq!(json_of(&reply)["error"], "precondition_failed");
    assert_eq!(world.policies().0, v2);

    // A bad document (an undefined named location): 400 naming the JSON path; v2 stays.
    let mut bad = blocking.clone();
    bad["conditionalAccessPolicies"][0]["conditions"]["locations"]["includeLocations"] =
        json!(["nowhere"]);
    let reply = world.admin(
        "PUT",
        "/admin/policies",
        &format!("if-match: {v2}\r\n"),
        &bad.to_string(),
    );
    assert_eq!(reply.status, 400, "{}", shown(&reply));
    let description = json_of(&reply)["error_description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        description
            .contains("conditionalAccessPolicies[0].conditions.locations.includeLocations[0]"),
        "{description}"
    );
    assert_eq!(world.policies().0, v2);
    world.assert_refused(&rt, "paul", 400, "access_denied", "blocked_by_policy");

    // A bad file is refused the same way (logged with its path); v2 stays in force.
    write_policy(&policy_file, &bad);
    wait_until(
        "the bad file refused, its JSON path logged",
        Duration::from_secs(10),
        || {
            world.server.stderr().lines().any(|l| {
                l.contains("policy file rejected")
                    && l.contains(
                        "conditionalAccessPolicies[0].conditions.locations.includeLocations[0]",
                    )
            })
        },
    );
    assert_eq!(world.policies().0, v2);
    world.assert_refused(&rt, "paul", 400, "access_denied", "blocked_by_policy");

    // A good PUT on the current version replaces it: served again.
    let reply = world.admin(
        "PUT",
        "/admin/policies",
        &format!("if-match: {v2}\r\n"),
        &empty.to_string(),
    );
    assert_eq!(reply.status, 200, "{}", shown(&reply));
    assert_ne!(reply.header("etag").unwrap(), v2);
    world.assert_served(&rt, "paul");
}

#[test]
fn sighup_reloads_the_policy_file_when_the_watcher_is_off() {
    let empty = document(&[], &[]);
    let world = World::start(&Setup {
        policy: Some(&empty),
        reload_poll_ms: Some(0),
        ..Setup::default()
    });
    let policy_file = world.policy_file.clone().unwrap();
    let rt = world.sign_in(grant("sara", &["pwd"], &[]));
    world.take_primary_down();
    world.assert_served(&rt, "sara");
    let (v1, _) = world.policies();

    write_policy(
        &policy_file,
        &document(
            &[block_from("block-loopback", "loopback")],
            &[ip_location("loopback", "127.0.0.1/32")],
        ),
    );
    world.server.signal("HUP");
    wait_until(
        "the file reloaded on SIGHUP",
        Duration::from_secs(10),
        || world.policies().0 != v1,
    );
    world.assert_refused(&rt, "sara", 400, "access_denied", "blocked_by_policy");
}

#[test]
fn a_policy_put_through_the_admin_api_survives_a_kill_until_the_file_changes() {
    let empty = document(&[], &[]);
    let mut world = World::start(&Setup {
        policy: Some(&empty),
        ..Setup::default()
    });
    let policy_file = world.policy_file.clone().unwrap();
    let rt = world.sign_in(grant("tomas", &["pwd"], &[]));
    world.take_primary_down();
    world.assert_served(&rt, "tomas");

    // The operator blocks during the incident; the 200 means the block is on disk.
    let block = document(
        &[block_from("block-loopback", "loopback")],
        &[ip_location("loopback", "127.0.0.1/32")],
    );
    let reply = world.admin("PUT", "/admin/policies", "", &block.to_string());
    assert_eq!(reply.status, 200, "{}", shown(&reply));
    world.assert_refused(&rt, "tomas", 400, "access_denied", "blocked_by_policy");

    // A crash and restart (the policy file is unchanged): the block is still in force.
    world.restart();
    let (_, body) = world.policies();
    assert_eq!(
        body["origin"], "AdminApi",
        "restored from the admin API: {body}"
    );
    world.assert_refused(&rt, "tomas", 400, "access_denied", "blocked_by_policy");

    // The operator then edits the file: the later change wins, and keeps winning at restart.
    write_policy(
        &policy_file,
        &document(&[], &[ip_location("nowhere", "192.0.2.0/24")]),
    );
    wait_until("the edited file reloaded", Duration::from_secs(10), || {
        world.policies().1.to_string().contains("nowhere")
    });
    world.assert_served(&rt, "tomas");
    world.restart();
    world.assert_served(&rt, "tomas");
}
