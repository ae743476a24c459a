//! Chaos soak (issue 7): the real `backstop` binary in front of the mock primary on loopback,
//! under steady refresh load, while the primary flaps (down, 500s, slow, hang, healthy) on a
//! random schedule and backstop is SIGKILLed and restarted twice on the same data directory.
//!
//! What it asserts, for every answer (a connection error while backstop is down is not an
//! answer, and it makes the session *uncertain*: the client cannot know what happened):
//!
//! - **No forbidden token.** A 200 minted by the backup (its access token's `kid` is not the
//!   primary's) is forbidden for a user whose revocation (`POST /admin/revocations`) was
//!   acknowledged before the request was sent, for a user a Conditional Access block
//!   (`PUT /admin/policies`) named before the request was sent, for a refresh token whose
//!   rotation (the capture of a later token of its session) was acknowledged, for a token the
//!   primary refused with `invalid_grant` once that refusal's capture was acknowledged, and for
//!   a token backstop never saw. Every 200 names the session's user, and backup tokens verify
//!   against backstop's JWKS (checked for a sample).
//! - **No 5xx but the documented 503**: `temporarily_unavailable` with `Retry-After`. The mock's
//!   500s must never pass through (a 500 from the primary is an outage, issue 5).
//! - **No acknowledged capture lost across a kill.** Backstop never makes a client wait for
//!   capture, so a response is no acknowledgement. The acknowledgement is the capture queue's
//!   watermark: `backstop_capture_offered_total` is counted *before* a job enters the queue,
//!   jobs are taken in order, and `backstop_capture_settled_total` is counted only once a
//!   batch's writes are durable. The test logs every response it received from the primary
//!   (a new refresh token, or an `invalid_grant`), then scrapes `offered`; once `settled`
//!   reaches that value (same process, nothing dropped), every logged capture is durable. After
//!   each restart, with outage forced, the latest acknowledged token of every session must be
//!   known to the backup: served when it is still the session's newest token (and nothing the
//!   client could not see happened to the session), else served or refused as rotated out; an
//!   `unknown` 503 means an acknowledged write was lost.
//! - **Every acknowledged revocation and policy is enforced after a restart** (same check pass).
//!   The block is put through `PUT /admin/policies` only, never written to the `[policy] file`:
//!   its 200 must mean it is saved, and restored at every restart while the file is unchanged.
//! - **Breaker transitions are explained** by the audit log: per process lifetime and per
//!   worker, the recorded transitions form a chain from `closed` (each `from` is the previous
//!   `to`), each has the cause its edge allows (only a successful probe closes, only the open
//!   period's end half-opens, a failure or failed probe opens), and their count per target
//!   state matches `backstop_breaker_transitions_total` (at least the count scraped before a
//!   SIGKILL, which may cut the audit writer's last milliseconds; exactly, for the last
//!   process, once quiet).
//!
//! Duration: `BACKSTOP_SOAK_SECS` (default 35; e.g. 600 for a long manual run). Schedule:
//! `BACKSTOP_SOAK_SEED` (printed at start; random by default). Thread interleavings still vary
//! between runs with one seed, but the schedule of faults, kills, revocations and the policy
//! change is the seed's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// End-to-end tests wait on wall-clock time on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backstop::token::alg::{SigningAlg, Typ};
use backstop::token::jwks::KeySet;
use backstop::token::jws::{JwtPolicy, TypRule, verify_jwt};
use backstop_mock_primary::{Fault, GrantRequest, MockHandle};
use common::oidc::{ADMIN_TOKEN, free_port, quick_failover_tables, start_mock, wait_until};
use common::{Backstop, Reply};
use serde_json::{Value, json};

const LOAD_THREADS: usize = 4;
const APPS: [&str; 2] = ["native-app", "mail-app"];
const BLOCKED_USERS: [&str; 2] = ["blk-0", "blk-1"];

// ---------------------------------------------------------------------------------------------
// A tiny deterministic PRNG (splitmix64): the schedule is the seed's.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Milliseconds in `lo..hi`.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client that reports connection errors instead of panicking.

/// No reply. `sent`: the request may have reached backstop (after a connect error it did not).
#[derive(Debug)]
struct CallError {
    sent: bool,
    what: String,
}

struct Client {
    addr: SocketAddr,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
    read_timeout: Duration,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Client {
            addr,
            conn: None,
            read_timeout: Duration::from_secs(20),
        }
    }

    /// Sends `head` + `body` (the head without its final blank line and content-length) and
    /// reads one reply. `keep` reuses the connection for the next request.
    fn call(&mut self, head: &str, body: &str, keep: bool) -> Result<Reply, CallError> {
        if self.conn.is_none() || !keep {
            let stream =
                TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).map_err(|e| {
                    CallError {
                        sent: false,
                        what: format!("connect: {e}"),
                    }
                })?;
            stream.set_read_timeout(Some(self.read_timeout)).unwrap();
            let reader = BufReader::new(stream.try_clone().unwrap());
            self.conn = Some((stream, reader));
        }
        let connection = if keep { "keep-alive" } else { "close" };
        let request = format!(
            "{head}\r\nconnection: {connection}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let (stream, reader) = self.conn.as_mut().unwrap();
        let result = stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("write: {e}"))
            .and_then(|()| read_reply(reader))
            .map_err(|what| CallError { sent: true, what });
        if result.is_err() || !keep {
            self.conn = None;
        }
        result
    }
}

fn read_reply(reader: &mut BufReader<TcpStream>) -> Result<Reply, String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return Err("closed before a reply".into()),
        Err(e) => return Err(format!("read: {e}")),
        Ok(_) => {}
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).map_err(|e| format!("read: {e}"))?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').ok_or("bad header")?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader
                .read_line(&mut size)
                .map_err(|e| format!("read: {e}"))?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(|e| format!("chunk: {e}"))?;
            let mut chunk = vec![0; n + 2];
            reader
                .read_exact(&mut chunk)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        let len: usize = find("content-length").map_or(0, |v| v.parse().unwrap_or(0));
        body = vec![0; len];
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("read: {e}"))?;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn token_head(addr: SocketAddr) -> String {
    format!(
        "POST /token HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-www-form-urlencoded"
    )
}

fn admin_call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<Reply, CallError> {
    Client::new(addr).call(
        &format!(
            "{method} {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
             content-type: application/json"
        ),
        body,
        false,
    )
}

fn json_of(reply: &Reply) -> Option<Value> {
    serde_json::from_slice(&reply.body).ok()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn jwt_part(token: &str, i: usize) -> Option<Value> {
    let part = token.split('.').nth(i)?;
    let bytes = backstop::token::b64::decode(part.as_bytes(), "part").ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A reply for a failure message, tokens redacted.
fn shown(reply: &Reply) -> String {
    match json_of(reply) {
        Some(Value::Object(mut body)) => {
            for (name, value) in &mut body {
                if name.ends_with("_token") {
                    *value = json!("<redacted>");
                }
            }
            format!("{} {}", reply.status, Value::Object(body))
        }
        _ => format!("{} ({} bytes)", reply.status, reply.body.len()),
    }
}

// ---------------------------------------------------------------------------------------------
// The world the threads share.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Refreshed with its newest token.
    Good,
    /// Its user is revoked at some point (at the primary, then through the admin API).
    Revoked,
    /// Its user is named by the Conditional Access block once the policy is put.
    Blocked,
    /// Presents its previous (rotated-out) token now and then.
    Replay,
}

#[derive(Clone)]
struct Session {
    user: String,
    app: &'static str,
    resource: Option<&'static str>,
    class: Class,
    owner: usize,
    /// Every refresh token the primary gave this session, oldest first.
    tokens: Vec<String>,
    /// Index of the newest token whose capture is acknowledged.
    acked: Option<usize>,
    /// The token the primary (or backup) refused with `invalid_grant`: the session is over.
    dead: Option<String>,
    /// That refusal's capture is acknowledged (or the refusal came from the backup).
    dead_acked: bool,
    /// A request of this session got no answer: what happened to its tokens is unknown.
    uncertain: bool,
}

/// A capture the test waits to see acknowledged: (session, token index) or a refusal.
#[derive(Debug, Clone, Copy)]
enum Logged {
    Token(usize, usize),
    Refusal(usize),
}

#[derive(Default)]
struct Tally {
    sent: u64,
    /// Sent, and no reply (killed, or a connection closed under the request).
    no_answer: u64,
    /// Backstop was not listening: nothing was sent.
    not_connected: u64,
    /// Sessions refused with `invalid_grant`, by class.
    deaths: BTreeMap<String, u64>,
    by_status: BTreeMap<String, u64>,
    primary_served: u64,
    backup_served: u64,
    backup_verified: u64,
    refusals: BTreeMap<String, u64>,
    sign_ins: u64,
    revocations: u64,
    zombie_probes: u64,
    replays: u64,
    strangers: u64,
}

struct State {
    sessions: Vec<Session>,
    /// Users whose revocation the admin API acknowledged.
    revoked_acked: Vec<String>,
    /// Users being revoked (at the primary already, not yet acknowledged here).
    revoking: Vec<String>,
    /// The block policy was acknowledged.
    policy_acked: bool,
    /// Captures logged, waiting for their watermark (with the generation they were seen in).
    log: Vec<(u64, Logged)>,
    tally: Tally,
    violations: Vec<String>,
}

struct World {
    addr: SocketAddr,
    issuer: String,
    mock_kid: String,
    /// Process generation: even while one backstop process runs, odd around a kill/restart.
    gen_: AtomicU64,
    admin_addr: Mutex<Option<SocketAddr>>,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Load threads hold it shared per request; the check pass takes it exclusively.
    pause: RwLock<()>,
    stop: AtomicBool,
    state: Mutex<State>,
}

impl World {
    fn violation(&self, what: String) {
        eprintln!("VIOLATION: {what}");
        self.state.lock().unwrap().violations.push(what);
    }

    fn stable_gen(&self) -> Option<u64> {
        let g = self.gen_.load(Ordering::SeqCst);
        g.is_multiple_of(2).then_some(g)
    }

    fn refresh_body(token: &str, app: &str) -> String {
        format!("grant_type=refresh_token&refresh_token={token}&client_id={app}")
    }

    /// Checks one answer against the 5xx rule: only 503 `temporarily_unavailable` with `Retry-After`.
    fn check_status(&self, reply: &Reply, context: &str) {
        if reply.status >= 500 {
            let ok = reply.status == 503
                && json_of(reply).is_some_and(|b| b["error"] == "temporarily_unavailable")
                && reply.header("retry-after").is_some();
            if !ok {
                self.violation(format!(
                    "{context}: a 5xx other than 503 temporarily_unavailable with Retry-After: {}",
                    shown(reply)
                ));
            }
        }
    }
}

/// The rules in force for one session when its request was sent.
struct Before {
    revoked: bool,
    blocked: bool,
    rotation_acked: bool,
    death_acked: bool,
    never_captured: bool,
}

impl Before {
    fn forbids(&self) -> Option<&'static str> {
        if self.never_captured {
            Some("a token backstop never captured")
        } else if self.revoked {
            Some("a user whose revocation was acknowledged")
        } else if self.blocked {
            Some("a user blocked by an acknowledged policy")
        } else if self.rotation_acked {
            Some("a refresh token whose rotation was acknowledged")
        } else if self.death_acked {
            Some("a token the primary refused (refusal acknowledged)")
        } else {
            None
        }
    }
}

/// Outcome of a token request as the load sees it.
enum Answer {
    PrimaryToken(String),
    BackupToken,
    InvalidGrant,
    Other,
}

/// Classifies a reply to a refresh (or code) request for `user`, enforcing every per-answer
/// rule; counts it.
fn judge(
    world: &World,
    reply: &Reply,
    user: Option<&str>,
    before: &Before,
    context: &str,
) -> Answer {
    world.check_status(reply, context);
    let body = json_of(reply);
    let mut st = world.state.lock().unwrap();
    *st.tally
        .by_status
        .entry(reply.status.to_string())
        .or_default() += 1;
    match reply.status {
        200 => {
            let Some(body) = body else {
                drop(st);
                world.violation(format!("{context}: 200 without JSON"));
                return Answer::Other;
            };
            let access = body["access_token"].as_str().unwrap_or("");
            let kid = jwt_part(access, 0).and_then(|h| h["kid"].as_str().map(str::to_owned));
            let sub = jwt_part(access, 1).and_then(|c| c["sub"].as_str().map(str::to_owned));
            if let Some(user) = user
                && sub.as_deref() != Some(user)
            {
                drop(st);
                world.violation(format!(
                    "{context}: a token for {sub:?} answered a request of {user}"
                ));
                return Answer::Other;
            }
            if kid.as_deref() == Some(world.mock_kid.as_str()) {
                st.tally.primary_served += 1;
                return match body["refresh_token"].as_str() {
                    Some(rt) => Answer::PrimaryToken(rt.to_string()),
                    None => Answer::Other,
                };
            }
            st.tally.backup_served += 1;
            let sample = st.tally.backup_served % 8 == 1;
            drop(st);
            if let Some(why) = before.forbids() {
                world.violation(format!(
                    "{context}: FORBIDDEN token served by the backup for {why}"
                ));
            }
            if sample {
                verify_backup_token(world, access, context);
            }
            Answer::BackupToken
        }
        400 | 401 => {
            let error = body
                .as_ref()
                .and_then(|b| b["error"].as_str().map(str::to_owned))
                .unwrap_or_default();
            *st.tally
                .refusals
                .entry(format!("{} {error}", reply.status))
                .or_default() += 1;
            if error == "invalid_grant" {
                Answer::InvalidGrant
            } else {
                Answer::Other
            }
        }
        503 => {
            *st.tally
                .refusals
                .entry("503 temporarily_unavailable".into())
                .or_default() += 1;
            Answer::Other
        }
        _ => Answer::Other,
    }
}

fn verify_backup_token(world: &World, access: &str, context: &str) {
    let Some(keys) = world.keys.read().unwrap().clone() else {
        return;
    };
    let algs = [
        SigningAlg::Rs256.alg(),
        SigningAlg::Es256.alg(),
        SigningAlg::EdDsa.alg(),
    ];
    let typ = jwt_part(access, 0)
        .and_then(|h| h["typ"].as_str().and_then(Typ::from_header))
        .map_or(TypRule::JwtOrAbsent, TypRule::Exactly);
    let policy = JwtPolicy {
        typ,
        algs: &algs,
        leeway_secs: 30,
        require_exp: true,
        issuer: Some(world.issuer.as_str()),
        audience: None,
    };
    match verify_jwt(access.as_bytes(), &keys, &policy, now_secs()) {
        Ok(_) => world.state.lock().unwrap().tally.backup_verified += 1,
        Err(e) => world.violation(format!(
            "{context}: a backup token does not verify with backstop's JWKS: {e:?}"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Sign-in, load, revocation.

/// Signs a session in through backstop (code grant); `None` when backstop or the primary could
/// not do it now. Logs the first token for acknowledgement.
fn sign_in(
    world: &World,
    mock: &MockHandle,
    client: &mut Client,
    template: Session,
) -> Option<usize> {
    let mut grant = GrantRequest::new(
        &template.user,
        "tenant-1",
        template.app,
        "openid offline_access api.read",
    );
    grant.amr = vec!["pwd".into(), "mfa".into()];
    grant.resource = template.resource.map(str::to_owned);
    let code = mock.create_grant(grant).ok()?;
    let g0 = world.stable_gen()?;
    let body = format!(
        "grant_type=authorization_code&code={code}&client_id={}",
        template.app
    );
    world.state.lock().unwrap().tally.sent += 1;
    let reply = match client.call(&token_head(world.addr), &body, false) {
        Ok(r) => r,
        Err(_) => {
            world.state.lock().unwrap().tally.no_answer += 1;
            return None;
        }
    };
    // The backup never answers a code grant: a backup token here is for a never-captured code.
    let before = Before {
        revoked: false,
        blocked: false,
        rotation_acked: false,
        death_acked: false,
        never_captured: true,
    };
    let Answer::PrimaryToken(rt) = judge(world, &reply, Some(&template.user), &before, "sign-in")
    else {
        return None;
    };
    let mut st = world.state.lock().unwrap();
    let id = st.sessions.len();
    st.sessions.push(Session {
        tokens: vec![rt],
        ..template
    });
    st.tally.sign_ins += 1;
    if world.gen_.load(Ordering::SeqCst) == g0 {
        st.log.push((g0, Logged::Token(id, 0)));
    }
    Some(id)
}

fn template(
    user: &str,
    app: &'static str,
    resource: Option<&'static str>,
    class: Class,
    owner: usize,
) -> Session {
    Session {
        user: user.to_string(),
        app,
        resource,
        class,
        owner,
        tokens: Vec::new(),
        acked: None,
        dead: None,
        dead_acked: false,
        uncertain: false,
    }
}

/// The sessions one load thread owns (templates, signed in at setup and again when they die).
fn population(owner: usize) -> Vec<Session> {
    let mut v = Vec::new();
    for (u, class) in [
        (format!("good-{owner}a"), Class::Good),
        (format!("good-{owner}b"), Class::Good),
        (format!("rev-{owner}"), Class::Revoked),
        (format!("rpl-{owner}"), Class::Replay),
    ] {
        for (i, app) in APPS.iter().enumerate() {
            let resource = (i == 1).then_some("https://api.example.com");
            v.push(template(&u, app, resource, class, owner));
        }
    }
    if let Some(u) = BLOCKED_USERS.get(owner) {
        for app in APPS {
            v.push(template(u, app, None, Class::Blocked, owner));
        }
    }
    v
}

struct LoadPlan {
    owner: usize,
    seed: u64,
    /// When (from the start of load) this thread revokes its `rev-` user.
    revoke_at: Duration,
}

fn load_thread(world: Arc<World>, mock: Arc<MockHandle>, plan: LoadPlan) {
    let mut rng = Rng(plan.seed);
    let mut client = Client::new(world.addr);
    let started = Instant::now();
    let mut revoked = false;
    let rev_user = format!("rev-{}", plan.owner);
    while !world.stop.load(Ordering::SeqCst) {
        let _running = world.pause.read().unwrap();
        if !revoked && started.elapsed() >= plan.revoke_at {
            revoked = revoke(&world, &mock, &rev_user, &mut rng);
            continue;
        }
        if rng.chance(3) {
            stranger(&world, &mock, &mut client, &mut rng);
            continue;
        }
        let (mine, dead_mine): (Vec<usize>, Vec<usize>) = {
            let st = world.state.lock().unwrap();
            let all = st
                .sessions
                .iter()
                .enumerate()
                .filter(|(_, s)| s.owner == plan.owner);
            let (alive, dead): (Vec<_>, Vec<_>) = all.partition(|(_, s)| s.dead.is_none());
            (
                alive.into_iter().map(|(i, _)| i).collect(),
                dead.into_iter().map(|(i, _)| i).collect(),
            )
        };
        if !dead_mine.is_empty() && rng.chance(5) {
            let id = dead_mine[usize::try_from(rng.below(dead_mine.len() as u64)).unwrap()];
            zombie(&world, &mut client, id);
            continue;
        }
        // Replace a dead session (but never a revoked user's: a new sign-in after the event
        // would legitimately bring access back).
        let want = population(plan.owner);
        for t in want {
            let alive = {
                let st = world.state.lock().unwrap();
                st.sessions.iter().any(|s| {
                    s.owner == plan.owner && s.user == t.user && s.app == t.app && s.dead.is_none()
                })
            };
            let revoked_user = t.class == Class::Revoked && revoked;
            if !alive && !revoked_user && rng.chance(20) {
                sign_in(&world, &mock, &mut client, t);
            }
        }
        if mine.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let id = mine[usize::try_from(rng.below(mine.len() as u64)).unwrap()];
        refresh(&world, &mut client, id, &mut rng);
    }
}

/// One refresh of session `id` through backstop, with every rule checked.
fn refresh(world: &World, client: &mut Client, id: usize, rng: &mut Rng) {
    let g0 = world.gen_.load(Ordering::SeqCst);
    let (token, index, user, app, before) = {
        let mut st = world.state.lock().unwrap();
        let s = &st.sessions[id];
        let replay = s.class == Class::Replay && s.tokens.len() >= 2 && rng.chance(10);
        let index = if replay {
            s.tokens.len() - 2
        } else {
            s.tokens.len() - 1
        };
        let before = Before {
            revoked: st.revoked_acked.contains(&s.user),
            blocked: st.policy_acked && s.class == Class::Blocked,
            rotation_acked: s.acked.is_some_and(|a| a > index),
            death_acked: false,
            never_captured: false,
        };
        let out = (
            s.tokens[index].clone(),
            index,
            s.user.clone(),
            s.app,
            before,
        );
        st.tally.sent += 1;
        if replay {
            st.tally.replays += 1;
        }
        out
    };
    let keep = rng.chance(50);
    let reply = client.call(
        &token_head(world.addr),
        &World::refresh_body(&token, app),
        keep,
    );
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => {
            let mut st = world.state.lock().unwrap();
            if e.sent {
                st.tally.no_answer += 1;
                st.sessions[id].uncertain = true;
            } else {
                st.tally.not_connected += 1;
            }
            return;
        }
    };
    let context = format!("refresh of {user}/{app} token #{index}");
    let answer = judge(world, &reply, Some(&user), &before, &context);
    let g1 = world.gen_.load(Ordering::SeqCst);
    let mut st = world.state.lock().unwrap();
    let logged_gen = (g0 == g1 && g0.is_multiple_of(2)).then_some(g0);
    match answer {
        Answer::PrimaryToken(rt) => {
            let s = &mut st.sessions[id];
            if index + 1 != s.tokens.len() {
                // The primary accepted a rotated-out token: a mock without strict rotation?
                s.uncertain = true;
            }
            s.tokens.push(rt);
            let new_index = s.tokens.len() - 1;
            if let Some(g) = logged_gen {
                st.log.push((g, Logged::Token(id, new_index)));
            }
        }
        Answer::InvalidGrant => {
            let s = &mut st.sessions[id];
            s.dead = Some(token);
            let class = format!(
                "{:?}{}",
                s.class,
                if s.uncertain { " (uncertain)" } else { "" }
            );
            *st.tally.deaths.entry(class).or_default() += 1;
            if let Some(g) = logged_gen {
                st.log.push((g, Logged::Refusal(id)));
            }
        }
        Answer::BackupToken | Answer::Other => {}
    }
}

/// Presents the refused token of a dead session again: the backup must never serve it once
/// the refusal is acknowledged.
fn zombie(world: &World, client: &mut Client, id: usize) {
    let (token, user, app, before) = {
        let mut st = world.state.lock().unwrap();
        st.tally.sent += 1;
        st.tally.zombie_probes += 1;
        let s = &st.sessions[id];
        let before = Before {
            revoked: st.revoked_acked.contains(&s.user),
            blocked: st.policy_acked && s.class == Class::Blocked,
            rotation_acked: false,
            death_acked: s.dead_acked,
            never_captured: false,
        };
        (s.dead.clone().unwrap(), s.user.clone(), s.app, before)
    };
    match client.call(
        &token_head(world.addr),
        &World::refresh_body(&token, app),
        false,
    ) {
        Ok(reply) => {
            judge(
                world,
                &reply,
                Some(&user),
                &before,
                &format!("zombie probe of {user}/{app}"),
            );
        }
        Err(_) => world.state.lock().unwrap().tally.no_answer += 1,
    }
}

/// A refresh token the primary issued without backstop (signed in at the primary directly),
/// when the primary answers now.
fn direct_token(mock: &MockHandle, rng: &mut Rng) -> Option<String> {
    let user = format!("direct-{}", rng.below(4));
    let code = mock
        .create_grant(GrantRequest::new(
            &user,
            "tenant-1",
            APPS[0],
            "openid offline_access",
        ))
        .ok()?;
    let mut client = Client::new(mock.addr());
    client.read_timeout = Duration::from_secs(2);
    let reply = client
        .call(
            &token_head(mock.addr()),
            &format!(
                "grant_type=authorization_code&code={code}&client_id={}",
                APPS[0]
            ),
            false,
        )
        .ok()?;
    Some(json_of(&reply)?["refresh_token"].as_str()?.to_string())
}

/// A refresh token backstop never captured: nobody issued it, or the primary issued it to a
/// client that signed in without backstop. Never served by the backup.
fn stranger(world: &World, mock: &MockHandle, client: &mut Client, rng: &mut Rng) {
    let token = match rng.chance(50).then(|| direct_token(mock, rng)).flatten() {
        Some(t) => t,
        None => format!("never-issued-{:016x}{:016x}", rng.next(), rng.next()),
    };
    {
        let mut st = world.state.lock().unwrap();
        st.tally.sent += 1;
        st.tally.strangers += 1;
    }
    let before = Before {
        revoked: false,
        blocked: false,
        rotation_acked: false,
        death_acked: false,
        never_captured: true,
    };
    match client.call(
        &token_head(world.addr),
        &World::refresh_body(&token, APPS[0]),
        rng.chance(50),
    ) {
        Ok(reply) => {
            judge(world, &reply, None, &before, "a never-captured token");
        }
        Err(_) => world.state.lock().unwrap().tally.no_answer += 1,
    }
}

/// Revokes `user` at the primary and then through backstop's admin API, retrying the same
/// event id (idempotent) until acknowledged. `true` once acknowledged.
fn revoke(world: &World, mock: &MockHandle, user: &str, rng: &mut Rng) -> bool {
    {
        let mut st = world.state.lock().unwrap();
        if !st.revoking.iter().any(|u| u == user) {
            st.revoking.push(user.to_string());
            drop(st);
            mock.revoke_user(user);
        }
    }
    let Some(admin) = *world.admin_addr.lock().unwrap() else {
        std::thread::sleep(rng.ms(20, 60));
        return false;
    };
    // The event's time: at or after every snapshot of the user (all were recorded before the
    // revocation at the primary, which came first), so it denies all of them.
    let event = json!({
        "id": format!("chaos-{user}"),
        "kind": "sessions_revoked",
        "subject": {"type": "user", "id": user},
        "time": now_secs()
    })
    .to_string();
    match admin_call(admin, "POST", "/admin/revocations", &event) {
        Ok(reply) if reply.status == 201 || reply.status == 200 => {
            let mut st = world.state.lock().unwrap();
            st.revoked_acked.push(user.to_string());
            st.tally.revocations += 1;
            eprintln!(
                "chaos: revocation of {user} acknowledged ({})",
                reply.status
            );
            true
        }
        Ok(reply) if reply.status == 409 => {
            // A retry whose first attempt was recorded with an earlier `time`: recorded.
            let mut st = world.state.lock().unwrap();
            st.revoked_acked.push(user.to_string());
            st.tally.revocations += 1;
            true
        }
        Ok(reply) => {
            world.violation(format!("revocation of {user}: {}", shown(&reply)));
            true
        }
        Err(_) => {
            std::thread::sleep(rng.ms(20, 60));
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Acknowledgement of captures: the capture queue's watermark.

fn scrape(addr: SocketAddr) -> Option<HashMap<String, f64>> {
    let reply = Client::new(addr)
        .call(&format!("GET /metrics HTTP/1.1\r\nhost: {addr}"), "", false)
        .ok()?;
    (reply.status == 200).then(|| {
        reply
            .text()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    })
}

fn m(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or(0.0)
}

/// Batches of logged captures with the `offered` count scraped after them.
#[derive(Default)]
struct Acker {
    pending: Vec<(u64, f64, Vec<Logged>)>,
    /// A drop or failed write was reported (once).
    reported: bool,
    /// Generations whose capture skipped a job.
    skipping: Vec<u64>,
}

impl Acker {
    /// One round: take the log, scrape, and acknowledge every batch whose watermark `settled`
    /// has reached in the same process.
    fn round(&mut self, world: &World) {
        let Some(g) = world.stable_gen() else {
            return;
        };
        let logged: Vec<Logged> = {
            let mut st = world.state.lock().unwrap();
            let (mine, rest): (Vec<_>, Vec<_>) = st.log.drain(..).partition(|(lg, _)| *lg == g);
            drop(rest); // seen by a process that is gone: never acknowledged
            mine.into_iter().map(|(_, l)| l).collect()
        };
        let Some(metrics) = scrape(world.addr) else {
            return;
        };
        if world.gen_.load(Ordering::SeqCst) != g {
            return;
        }
        let offered = m(&metrics, "backstop_capture_offered_total");
        let settled = m(&metrics, "backstop_capture_settled_total");
        let dropped = m(&metrics, "backstop_capture_dropped_total");
        let failed = m(&metrics, "backstop_capture_store_failed_total");
        // A skipped job settles without a write, and which one was skipped is unknown: nothing
        // is acknowledged in a process that skipped any (reported in the summary).
        let skipped: f64 = metrics
            .iter()
            .filter(|(k, _)| k.starts_with("backstop_capture_skipped_total"))
            .map(|(_, v)| *v)
            .sum();
        if skipped > 0.0 && !self.skipping.contains(&g) {
            self.skipping.push(g);
            eprintln!(
                "chaos: capture skipped {skipped} jobs in generation {g}: no more acknowledgements from it"
            );
        }
        if (dropped > 0.0 || failed > 0.0) && !self.reported {
            self.reported = true;
            world.violation(format!(
                "capture dropped {dropped} jobs and failed {failed} writes: nothing can be acknowledged"
            ));
        }
        self.pending.retain(|(pg, _, _)| *pg == g);
        if !logged.is_empty() {
            self.pending.push((g, offered, logged));
        }
        let mut st = world.state.lock().unwrap();
        self.pending.retain(|(_, mark, batch)| {
            if settled < *mark || dropped > 0.0 || failed > 0.0 || skipped > 0.0 {
                return true;
            }
            for l in batch {
                match *l {
                    Logged::Token(id, i) => {
                        let s = &mut st.sessions[id];
                        s.acked = Some(s.acked.map_or(i, |a| a.max(i)));
                    }
                    Logged::Refusal(id) => st.sessions[id].dead_acked = true,
                }
            }
            false
        });
    }

    /// Waits until everything logged in this process is acknowledged.
    fn drain(&mut self, world: &World) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.round(world);
            let skipping = world
                .stable_gen()
                .is_some_and(|g| self.skipping.contains(&g));
            let empty =
                skipping || (self.pending.is_empty() && world.state.lock().unwrap().log.is_empty());
            if empty {
                return;
            }
            assert!(Instant::now() < deadline, "captures never settled");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The check pass after a restart: forced outage, every session presented once.

fn check_pass(world: &World, server: &Backstop, label: &str) -> BTreeMap<&'static str, u64> {
    let _paused = world.pause.write().unwrap();
    let admin = server.admin_addr.unwrap();
    let reply = admin_call(admin, "POST", "/admin/mode", r#"{"mode":"outage"}"#).unwrap();
    assert_eq!(reply.status, 200, "{}", shown(&reply));
    let mut outcome: BTreeMap<&'static str, u64> = BTreeMap::new();
    let sessions: Vec<Session> = world.state.lock().unwrap().sessions.clone();
    let (revoked, revoking, policy) = {
        let st = world.state.lock().unwrap();
        (
            st.revoked_acked.clone(),
            st.revoking.clone(),
            st.policy_acked,
        )
    };
    let mut client = Client::new(world.addr);
    for session in sessions {
        let Session {
            user,
            app,
            class,
            tokens,
            acked,
            dead,
            dead_acked,
            uncertain,
            ..
        } = session;
        let must_refuse = revoked.contains(&user) || (policy && class == Class::Blocked);
        let probes: Vec<(String, &str)> = if let Some(dead) = dead.clone().filter(|_| dead_acked) {
            vec![(dead, "refused")]
        } else if must_refuse {
            // The newest token too, acknowledged or not: no snapshot of a revoked or blocked
            // user may be served.
            let mut v: Vec<(String, &str)> = acked
                .map(|k| (tokens[k].clone(), "refused"))
                .into_iter()
                .collect();
            if acked != Some(tokens.len() - 1) {
                v.push((tokens[tokens.len() - 1].clone(), "refused"));
            }
            v
        } else if dead.is_some() {
            continue;
        } else if revoking.contains(&user) {
            // Revoked at the primary, and the admin API's answer lost to a kill: the event may
            // or may not be recorded here, so either answer is right.
            *outcome.entry("revocation unacknowledged").or_default() += 1;
            continue;
        } else {
            let Some(k) = acked else {
                *outcome.entry("not yet acknowledged").or_default() += 1;
                continue;
            };
            let newest = k + 1 == tokens.len() && !uncertain;
            vec![(tokens[k].clone(), if newest { "served" } else { "known" })]
        };
        for (token, rule) in probes {
            let reply = client
                .call(
                    &token_head(world.addr),
                    &World::refresh_body(&token, app),
                    true,
                )
                .unwrap_or_else(|e| panic!("{label}: no answer in the check pass: {}", e.what));
            world.check_status(&reply, label);
            let error = json_of(&reply).and_then(|b| b["error"].as_str().map(str::to_owned));
            let what = format!(
                "{label}: {user}/{app} ({class:?}, expected {rule}): {}",
                shown(&reply)
            );
            match (rule, reply.status, error.as_deref()) {
                ("refused", 200, _) => {
                    world.violation(format!("lost revocation or refusal: {what}"))
                }
                ("refused", _, _) => *outcome.entry("refused as acknowledged").or_default() += 1,
                ("served", 200, _) => {
                    *outcome.entry("served (newest, acknowledged)").or_default() += 1
                }
                ("known", 200, _) => {
                    *outcome
                        .entry("served (acknowledged, newer unacknowledged)")
                        .or_default() += 1
                }
                ("known", 400, Some("invalid_grant")) => {
                    *outcome.entry("refused as rotated out").or_default() += 1;
                }
                _ => world.violation(format!("lost acknowledged capture: {what}")),
            }
            if reply.status == 200 {
                let access = json_of(&reply).unwrap()["access_token"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let kid = jwt_part(&access, 0).and_then(|h| h["kid"].as_str().map(str::to_owned));
                if kid.as_deref() == Some(world.mock_kid.as_str()) {
                    world.violation(format!("{label}: forced outage, yet the primary answered"));
                }
                verify_backup_token(world, &access, label);
            }
        }
    }
    let reply = admin_call(admin, "POST", "/admin/mode", r#"{"mode":"auto"}"#).unwrap();
    assert_eq!(reply.status, 200, "{}", shown(&reply));
    outcome
}

// ---------------------------------------------------------------------------------------------
// Breaker transitions in the audit log.

#[derive(Debug, Default)]
struct Lifetime {
    /// Unix ms: records after `from` and at or before `to` belong to this process.
    from_ms: u64,
    to_ms: u64,
    /// Transitions by target state, scraped from the metric (at the end of the lifetime).
    metric: BTreeMap<String, f64>,
    /// Exact (the process ended quietly) or a lower bound (SIGKILL).
    exact: bool,
}

fn audit_records(dir: &Path) -> Vec<Value> {
    let audit = dir.join("data").join("audit");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&audit)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    // audit.N.jsonl, oldest (largest N) first, then audit.jsonl.
    files.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let n: u32 = name
            .strip_prefix("audit.")
            .and_then(|r| r.strip_suffix(".jsonl"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        std::cmp::Reverse(n)
    });
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            // A SIGKILL can cut the last line of a killed process short.
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                out.push(v);
            }
        }
    }
    out
}

fn breaker_metric(metrics: &HashMap<String, f64>) -> BTreeMap<String, f64> {
    ["closed", "open", "half_open"]
        .into_iter()
        .map(|to| {
            let key = format!("backstop_breaker_transitions_total{{to=\"{to}\"}}");
            (to.to_string(), m(metrics, &key))
        })
        .collect()
}

const FAILURE_CAUSES: [&str; 10] = [
    "connect",
    "unavailable_503",
    "server_error_500",
    "bad_gateway_502",
    "gateway_timeout_504",
    "server_error",
    "timeout",
    "reset",
    "garbage",
    "probe_failed",
];

/// Checks one lifetime's transitions; returns how many there were.
fn check_transitions(records: &[Value], life: &Lifetime, n: usize) -> Result<usize, String> {
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "breaker_transition")
        .filter(|r| {
            let t = r["time_ms"].as_u64().unwrap_or(0);
            t > life.from_ms && t <= life.to_ms
        })
        .collect();
    let mut state: HashMap<u64, String> = HashMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for r in &mine {
        let worker = r["worker"].as_u64().ok_or("no worker")?;
        let (from, to, cause) = (
            r["from"].as_str().unwrap_or(""),
            r["to"].as_str().unwrap_or(""),
            r["cause"].as_str().unwrap_or(""),
        );
        let prev = state.entry(worker).or_insert_with(|| "closed".to_string());
        if prev != from {
            return Err(format!(
                "process {n}, worker {worker}: {r} does not follow {prev}"
            ));
        }
        let explained = match to {
            "closed" => cause == "probe_succeeded" && from == "half_open",
            "half_open" => cause == "open_period_over" && from == "open",
            "open" => FAILURE_CAUSES.contains(&cause) && from != "open",
            _ => false,
        };
        if !explained {
            return Err(format!("process {n}: unexplained transition {r}"));
        }
        *prev = to.to_string();
        *counts.entry(to.to_string()).or_default() += 1.0;
    }
    for (to, want) in &life.metric {
        let got = counts.get(to).copied().unwrap_or(0.0);
        let ok = if life.exact {
            got == *want
        } else {
            got >= *want
        };
        if !ok {
            return Err(format!(
                "process {n}: {got} audited transitions to {to}, metric says {want} (exact: {})",
                life.exact
            ));
        }
    }
    Ok(mine.len())
}

/// Scrapes the breaker metric and waits (bounded) until the audit log holds at least as many
/// transitions of this lifetime.
fn settle_audit(server: &Backstop, world: &World, life: &mut Lifetime) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let Some(metrics) = scrape(world.addr) else {
            return;
        };
        life.metric = breaker_metric(&metrics);
        let records = audit_records(server.dir.path());
        let probe = Lifetime {
            from_ms: life.from_ms,
            to_ms: u64::MAX,
            metric: life.metric.clone(),
            exact: false,
        };
        if check_transitions(&records, &probe, 0).is_ok() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------------------------
// The soak.

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn random_fault(rng: &mut Rng) -> Fault {
    match rng.below(10) {
        0..=3 => Fault::Healthy,
        4 => Fault::Down,
        5 => Fault::Error500,
        6 => Fault::Slow { delay_ms: 100 },
        7 => Fault::Slow { delay_ms: 900 },
        8 => Fault::Hang,
        _ => Fault::Down,
    }
}

fn policy_document(blocked: &[&str]) -> Value {
    let policies: Vec<Value> = if blocked.is_empty() {
        Vec::new()
    } else {
        vec![json!({
            "id": "chaos-block",
            "displayName": "chaos soak: block these users",
            "state": "enabled",
            "conditions": {
                "users": {"includeUsers": blocked},
                "applications": {"includeApplications": ["All"]},
                "clientAppTypes": ["all"]
            },
            "grantControls": {"operator": "OR", "builtInControls": ["block"]}
        })]
    };
    json!({"conditionalAccessPolicies": policies, "namedLocations": []})
}

fn write_atomically(path: &Path, doc: &Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn fetch_keys(addr: SocketAddr) -> Option<KeySet> {
    let mut c = Client::new(addr);
    let doc = json_of(
        &c.call(
            &format!("GET /.well-known/openid-configuration HTTP/1.1\r\nhost: {addr}"),
            "",
            false,
        )
        .ok()?,
    )?;
    let issuer = doc["issuer"].as_str()?;
    let path = doc["jwks_uri"].as_str()?.strip_prefix(issuer)?.to_string();
    let reply = c
        .call(&format!("GET {path} HTTP/1.1\r\nhost: {addr}"), "", false)
        .ok()?;
    KeySet::parse(&reply.body).ok().map(|(k, _)| k)
}

fn start(
    tables: &str,
    port: u16,
    dir: Option<tempfile::TempDir>,
    world: Option<&World>,
) -> Backstop {
    let server = common::oidc::start_backstop(tables, port, dir);
    if let Some(world) = world {
        *world.admin_addr.lock().unwrap() = server.admin_addr;
        *world.keys.write().unwrap() = fetch_keys(server.addr).map(Arc::new);
    }
    server
}

#[test]
fn under_load_with_a_flapping_primary_and_two_sigkills_nothing_forbidden_is_served_and_nothing_acknowledged_is_lost()
 {
    let secs = env_u64("BACKSTOP_SOAK_SECS").unwrap_or(35).max(10);
    let seed = env_u64("BACKSTOP_SOAK_SEED").unwrap_or_else(|| {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        t.as_secs() ^ (u64::from(t.subsec_nanos()) << 20)
    });
    eprintln!(
        "chaos soak: BACKSTOP_SOAK_SEED={seed} BACKSTOP_SOAK_SECS={secs} (set both to replay this schedule)"
    );
    let mut rng = Rng(seed);
    let duration = Duration::from_secs(secs);

    let mock = Arc::new(start_mock());
    let port = free_port();
    let policy_dir = tempfile::tempdir().unwrap();
    let policy_file = policy_dir.path().join("policies.json");
    write_atomically(&policy_file, &policy_document(&[]));
    let tables = format!(
        "{}[policy]\nfile = \"{}\"\nreload_poll_ms = 0\n",
        quick_failover_tables(&mock),
        policy_file.display()
    );
    let world = Arc::new(World {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        issuer: format!("http://127.0.0.1:{port}"),
        mock_kid: mock.kid().to_string(),
        gen_: AtomicU64::new(0),
        admin_addr: Mutex::new(None),
        keys: RwLock::new(None),
        pause: RwLock::new(()),
        stop: AtomicBool::new(false),
        state: Mutex::new(State {
            sessions: Vec::new(),
            revoked_acked: Vec::new(),
            revoking: Vec::new(),
            policy_acked: false,
            log: Vec::new(),
            tally: Tally::default(),
            violations: Vec::new(),
        }),
    });
    let mut server = start(&tables, port, None, Some(&world));
    let mut lifetimes = vec![Lifetime {
        from_ms: 0,
        ..Lifetime::default()
    }];

    // Setup: every session signed in at a healthy primary, each capture acknowledged.
    let mut acker = Acker::default();
    let mut client = Client::new(world.addr);
    for owner in 0..LOAD_THREADS {
        for t in population(owner) {
            // A loaded machine can push even a healthy primary past the request timeout.
            let mut tries = 0;
            while sign_in(&world, &mock, &mut client, t.clone()).is_none() {
                tries += 1;
                assert!(
                    tries < 20,
                    "sign-in of {}/{} never succeeded",
                    t.user,
                    t.app
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    acker.drain(&world);
    let population_len = world.state.lock().unwrap().sessions.len();
    eprintln!("chaos: {population_len} sessions signed in and acknowledged");

    // The schedule, from the seed.
    let kill_at = [
        duration.mul_f64(0.25 + 0.2 * (rng.below(1000) as f64 / 1000.0)),
        duration.mul_f64(0.6 + 0.2 * (rng.below(1000) as f64 / 1000.0)),
    ];
    let policy_at = duration.mul_f64(0.05 + 0.15 * (rng.below(1000) as f64 / 1000.0));
    let threads: Vec<_> = (0..LOAD_THREADS)
        .map(|owner| {
            let plan = LoadPlan {
                owner,
                seed: rng.next(),
                revoke_at: duration.mul_f64(0.1 + 0.6 * (rng.below(1000) as f64 / 1000.0)),
            };
            let (w, m) = (world.clone(), mock.clone());
            std::thread::spawn(move || load_thread(w, m, plan))
        })
        .collect();
    let acker_world = world.clone();
    let acker_stop = Arc::new(AtomicBool::new(false));
    let acker_thread = {
        let stop = acker_stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                acker.round(&acker_world);
                std::thread::sleep(Duration::from_millis(100));
            }
            acker
        })
    };

    let started = Instant::now();
    let mut kills = 0;
    let mut flaps: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut policy_put = false;
    let mut next_flap = started + rng.ms(300, 2500);
    let mut checks = Vec::new();
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(20));
        if !policy_put && started.elapsed() >= policy_at {
            // Through the admin API only: its 200 means the document is saved, and a restart
            // (the policy file unchanged) must restore it.
            let doc = policy_document(&BLOCKED_USERS);
            let reply = admin_call(
                server.admin_addr.unwrap(),
                "PUT",
                "/admin/policies",
                &doc.to_string(),
            )
            .unwrap();
            assert_eq!(reply.status, 200, "{}", shown(&reply));
            world.state.lock().unwrap().policy_acked = true;
            policy_put = true;
            eprintln!(
                "chaos: block policy acknowledged at {:?}",
                started.elapsed()
            );
        }
        if Instant::now() >= next_flap {
            let fault = random_fault(&mut rng);
            mock.set_fault(fault).unwrap();
            *flaps.entry(fault.mode()).or_default() += 1;
            next_flap = Instant::now() + rng.ms(300, 2500);
        }
        if kills < 2 && started.elapsed() >= kill_at[kills] {
            // Odd generation: what is answered from now on is not acknowledged by this process.
            world.gen_.fetch_add(1, Ordering::SeqCst);
            *world.admin_addr.lock().unwrap() = None;
            let life = lifetimes.last_mut().unwrap();
            settle_audit(&server, &world, life);
            let dir = server.kill_and_take_dir();
            life.to_ms = now_ms();
            kills += 1;
            eprintln!(
                "chaos: SIGKILL {kills} at {:?} (primary {})",
                started.elapsed(),
                mock.fault().mode()
            );
            server = start(&tables, port, Some(dir), Some(&world));
            lifetimes.push(Lifetime {
                from_ms: life_end(&lifetimes),
                ..Lifetime::default()
            });
            checks.push(check_pass(
                &world,
                &server,
                &format!("after restart {kills}"),
            ));
            world.gen_.fetch_add(1, Ordering::SeqCst);
        }
    }

    // Quiet end: primary healthy, breakers closed, load stopped, every capture settled.
    mock.set_fault(Fault::Healthy).unwrap();
    world.stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    acker_stop.store(true, Ordering::SeqCst);
    let mut acker = acker_thread.join().unwrap();
    acker.drain(&world);
    wait_until("every breaker closed", Duration::from_secs(30), || {
        common::oidc::admin_status(&server)["worker_breakers"]
            .as_array()
            .is_some_and(|b| b.iter().all(|s| s == "closed"))
    });
    checks.push(check_pass(&world, &server, "at the end"));

    // Breaker transitions: every one explained, counts matching the metric.
    let last = lifetimes.last_mut().unwrap();
    last.exact = true;
    last.to_ms = u64::MAX;
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        last.metric = breaker_metric(&scrape(world.addr).unwrap());
        let records = audit_records(server.dir.path());
        if check_transitions(&records, last, kills + 1).is_ok() || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut transitions = Vec::new();
    for (n, life) in lifetimes.iter().enumerate() {
        match check_transitions(&records, life, n + 1) {
            Ok(count) => transitions.push(count),
            Err(e) => world.violation(format!("breaker audit: {e}")),
        }
    }

    // Summary.
    let st = world.state.lock().unwrap();
    let t = &st.tally;
    eprintln!("chaos soak summary (seed {seed}, {secs} s):");
    eprintln!(
        "  requests sent {}, answered by status {:?}, no answer {}, not connected {}",
        t.sent, t.by_status, t.no_answer, t.not_connected
    );
    eprintln!(
        "  sessions refused with invalid_grant, by class: {:?}",
        t.deaths
    );
    eprintln!(
        "  tokens: primary {}, backup {} (signature verified for {})",
        t.primary_served, t.backup_served, t.backup_verified
    );
    eprintln!("  refusals: {:?}", t.refusals);
    eprintln!(
        "  sign-ins {}, revocations acknowledged {}, replays of rotated-out tokens {}, zombie probes {}, never-issued tokens {}",
        t.sign_ins, t.revocations, t.replays, t.zombie_probes, t.strangers
    );
    eprintln!(
        "  sessions {} ({} dead), kills {kills}, flaps {flaps:?}, breaker transitions per process {transitions:?}",
        st.sessions.len(),
        st.sessions.iter().filter(|s| s.dead.is_some()).count()
    );
    if !acker.skipping.is_empty() {
        eprintln!(
            "  capture skipped jobs in generations {:?}: those processes acknowledged nothing after",
            acker.skipping
        );
    }
    for (i, c) in checks.iter().enumerate() {
        eprintln!("  check pass {}: {c:?}", i + 1);
    }
    eprintln!(
        "  violations (forbidden tokens, stray 5xx, lost writes, unexplained transitions): {}",
        st.violations.len()
    );
    assert!(
        st.violations.is_empty(),
        "{} violations (seed {seed}):\n{}",
        st.violations.len(),
        st.violations.join("\n")
    );
    assert_eq!(kills, 2);
    assert!(
        t.backup_served > 0,
        "the backup never served: no outage was exercised"
    );
    assert!(t.primary_served > 0);
}

fn life_end(lifetimes: &[Lifetime]) -> u64 {
    lifetimes.last().map_or(0, |l| l.to_ms)
}

/// The watermark the soak relies on, alone: a response's capture is durable once
/// `backstop_capture_settled_total` reaches the `backstop_capture_offered_total` read after it,
/// so a SIGKILL right then loses nothing.
#[test]
fn a_capture_is_durable_once_settled_reaches_the_offered_count_read_after_its_response() {
    let mock = start_mock();
    let port = free_port();
    let tables = quick_failover_tables(&mock);
    let mut server = start(&tables, port, None, None);
    let addr = server.addr;
    let mut client = Client::new(addr);
    let mut tokens = Vec::new();
    for user in ["w-0", "w-1", "w-2"] {
        let code = mock
            .create_grant(GrantRequest::new(
                user,
                "tenant-1",
                APPS[0],
                "openid offline_access",
            ))
            .unwrap();
        let body = format!(
            "grant_type=authorization_code&code={code}&client_id={}",
            APPS[0]
        );
        let reply = client.call(&token_head(addr), &body, false).unwrap();
        assert_eq!(reply.status, 200, "{}", shown(&reply));
        let rt = json_of(&reply).unwrap()["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        tokens.push((user, rt));
    }
    let offered = m(&scrape(addr).unwrap(), "backstop_capture_offered_total");
    assert!(offered >= 3.0, "offered {offered}");
    wait_until("captures settled", Duration::from_secs(10), || {
        m(&scrape(addr).unwrap(), "backstop_capture_settled_total") >= offered
    });
    let dir = server.kill_and_take_dir();
    let server = start(&tables, port, Some(dir), None);
    let reply = admin_call(
        server.admin_addr.unwrap(),
        "POST",
        "/admin/mode",
        r#"{"mode":"outage"}"#,
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{}", shown(&reply));
    for (user, rt) in tokens {
        let reply = client
            .call(&token_head(addr), &World::refresh_body(&rt, APPS[0]), false)
            .unwrap();
        assert_eq!(reply.status, 200, "{user}: {}", shown(&reply));
        let access = json_of(&reply).unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(jwt_part(&access, 1).unwrap()["sub"], user);
        assert_ne!(
            jwt_part(&access, 0).unwrap()["kid"].as_str(),
            Some(mock.kid()),
            "forced outage: the backup answers"
        );
    }
}
