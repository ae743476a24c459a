//! `backstop seed --dpop-every K`: every K-th seeded session is bound to the DPoP key
//! `seed::dpop_key(token_seed, i)`, the outage path serves it a refresh with a proof made from
//! that key (and refuses other keys and no proof), and its `--tokens-out` line carries the key.
// Integration-test crate: helpers outside `#[test]` fns may unwrap like the tests do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Mutex;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use backstop::gateway::outage::{
    AllowAll, Decision, Minters, OutageEnv, OutageRequest, Refusal, serve_refresh,
};
use backstop::seed::{SeedSpec, client_of, dpop_key, seed};
use backstop::store::{Store, StoreOpts};
use backstop::token::alg::SigningAlg;
use backstop::token::b64;
use backstop::token::dpop::{DpopPolicy, ReplayCache};
use backstop::token::keyring::Keyring;
use backstop::token::sign::Ed25519Backend;

const NOW: i64 = 1_800_000_000;
const URL: &str = "https://login.example.com/token";

fn spec() -> SeedSpec {
    SeedSpec {
        sessions: 40,
        alg: SigningAlg::EdDsa,
        issuer: "https://login.example.com".into(),
        apps: 3,
        resources: 2,
        token_seed: 11,
        window_secs: 86_400,
        id_token: true,
        dpop_every: 4,
    }
}

/// A DPoP proof (RFC 9449 §4.2) for `POST URL`, signed with the Ed25519 key of `private_seed`.
fn proof(private_seed: &[u8; 32], jti: &str) -> String {
    let kp = Ed25519KeyPair::from_seed_unchecked(private_seed).unwrap();
    let header = format!(
        r#"{{"typ":"dpop+jwt","alg":"EdDSA","jwk":{{"crv":"Ed25519","kty":"OKP","x":"{}"}}}}"#,
        b64::encode(kp.public_key().as_ref())
    );
    let claims = format!(r#"{{"jti":"{jti}","htm":"POST","htu":"{URL}","iat":{NOW}}}"#);
    let mut input = b64::encode(header.as_bytes());
    input.push('.');
    input.push_str(&b64::encode(claims.as_bytes()));
    let sig = kp.sign(input.as_bytes());
    format!("{input}.{}", b64::encode(sig.as_ref()))
}

struct Fixture {
    _dir: tempfile::TempDir,
    _key_dir: tempfile::TempDir,
    store: Store,
    keyring: Keyring,
    replay: Mutex<ReplayCache>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOpts::manual()).unwrap();
    seed(&store, &spec(), NOW, |_| {}).unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::load_or_generate(key_dir.path(), SigningAlg::EdDsa, NOW as u64).unwrap();
    Fixture {
        _dir: dir,
        _key_dir: key_dir,
        store,
        keyring,
        replay: Mutex::new(ReplayCache::new(1024)),
    }
}

fn refresh(f: &Fixture, i: u64, dpop: Option<&str>) -> Decision {
    let c = client_of(&spec(), i);
    let body = format!(
        "grant_type=refresh_token&refresh_token={}&client_id={}",
        c.refresh_token, c.client_id
    );
    let env = OutageEnv {
        store: &f.store,
        token_url: URL,
        dpop_replay: &f.replay,
        dpop_policy: DpopPolicy::default(),
        checks: &AllowAll,
        now_secs: NOW + 10,
    };
    let req = OutageRequest {
        body: body.as_bytes(),
        authorization: None,
        dpop: dpop.map(str::as_bytes),
        dpop_repeated: false,
        client_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        user_agent: None,
    };
    let mut minters =
        Minters::new(std::slice::from_ref(&f.keyring), Ed25519Backend::AwsLc).unwrap();
    serve_refresh(&req, &env, &mut minters)
}

fn refused(d: &Decision) -> Option<Refusal> {
    match d {
        Decision::Served { .. } => None,
        Decision::Refused { reason, .. } => Some(*reason),
    }
}

#[test]
fn a_seeded_dpop_session_is_served_with_a_proof_of_its_key_only() {
    let f = fixture();
    let s = spec();
    // Session 8 is bound (8 % 4 == 0): served with its own key's proof, as DPoP.
    let key = dpop_key(s.token_seed, 8);
    let d = refresh(&f, 8, Some(&proof(&key, "a")));
    let Decision::Served { body, .. } = d else {
        panic!("not served: {:?}", refused(&d));
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["token_type"], "DPoP");
    // Without a proof, or with another session's key: refused.
    assert_eq!(
        refused(&refresh(&f, 8, None)),
        Some(Refusal::DpopProofInvalid)
    );
    let other = dpop_key(s.token_seed, 12);
    assert_eq!(
        refused(&refresh(&f, 8, Some(&proof(&other, "b")))),
        Some(Refusal::DpopKeyMismatch)
    );
    // Session 9 is not bound: served without a proof.
    assert_eq!(refused(&refresh(&f, 9, None)), None);
}

#[test]
fn tokens_out_lines_carry_the_dpop_key_of_bound_sessions_only() {
    let s = spec();
    for i in 0..12 {
        let line = client_of(&s, i).line();
        let fields: Vec<&str> = line.split(' ').collect();
        if i % 4 == 0 {
            assert_eq!(fields.len(), 4, "{line}");
            let k = fields[3].strip_prefix("dpop:").unwrap();
            assert_eq!(k.len(), 43, "base64url without padding of 32 bytes");
            assert_eq!(
                b64::decode(k.as_bytes(), "dpop").unwrap(),
                dpop_key(s.token_seed, i).to_vec()
            );
        } else {
            assert_eq!(fields.len(), 3, "{line}");
        }
    }
    assert_ne!(dpop_key(1, 4), dpop_key(1, 8));
    assert_ne!(dpop_key(1, 4), dpop_key(2, 4));
}
