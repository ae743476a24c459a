//! Token engine benches (issue 4, DESIGN §10): minting vs one bare signature of the same size and
//! algorithm, in the same run, for EdDSA (both backends), ES256 and RS256; DPoP proof
//! verification; RS256 JWT verification. Prints the mint/sign ratios at the end.
//!
//! `cargo bench --bench token` (add `-- --quick` style criterion flags to shorten).

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

use backstop::limits;
use backstop::token::alg::{Alg, SigningAlg, Typ};
use backstop::token::b64;
use backstop::token::dpop::{DpopPolicy, DpopRequest, ReplayCache, verify_proof};
use backstop::token::jwks::KeySet;
use backstop::token::jws::{JwtPolicy, TypRule, verify_jwt};
use backstop::token::keyring::pem_decode;
use backstop::token::mint::{Minter, PrimaryTokenShape, build_template};
use backstop::token::sign::{Ed25519Backend, SignatureBuf, SigningKey};
use criterion::{BatchSize, Criterion};

/// A realistic access token (17 claims incl. time claims; 13 left in the template).
const CLAIMS: &str = r#"{"iss":"https://login.example.com/tenant-1/v2.0","sub":"AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ","aud":"api://orders","azp":"7f0c3e0a-6b1d-4b7c-9a2e-1b2c3d4e5f60","iat":1763770000,"nbf":1763770000,"exp":1763773600,"jti":"Hk2aW1dXQ0CcI9dYbCwxAA","scp":"orders.read orders.write","tid":"0e1f2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7","oid":"5b6c7d8e-9f00-4112-8233-445566778899","amr":["pwd","mfa"],"acr":"1","auth_time":1763769000,"cnf":{"jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},"nonce":"n-0S6_WzA2Mj","roles":["Orders.Admin"]}"#;
const NOW: u64 = 1_800_000_000;

fn rsa_key() -> SigningKey {
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/token/rs256-test-key.pem"
    ))
    .unwrap();
    SigningKey::from_pkcs8(SigningAlg::Rs256, pem_decode(&pem).unwrap()).unwrap()
}

fn mint_vs_sign(c: &mut Criterion, name: &str, key: &SigningKey, backend: Ed25519Backend) {
    let template = build_template(
        CLAIMS.as_bytes(),
        PrimaryTokenShape {
            typ: Some(Typ::AtJwt),
            alg: key.alg(),
        },
        0,
    )
    .unwrap();
    let mut minter = Minter::new(key.signer(backend).unwrap());
    let mut out = Vec::with_capacity(4096);
    minter.mint(template.as_ref(), NOW, &mut out).unwrap();
    // The bare signature signs an input of exactly the minted token's signing-input length.
    let signing_input_len = out.iter().rposition(|b| *b == b'.').unwrap();
    let input = vec![b'a'; signing_input_len];
    let signer = key.signer(backend).unwrap();

    let mut g = c.benchmark_group(name);
    g.bench_function("mint", |b| {
        b.iter(|| {
            minter
                .mint(black_box(template.as_ref()), black_box(NOW), &mut out)
                .unwrap();
            assert!(out.len() > signing_input_len);
        })
    });
    g.bench_function("sign", |b| {
        let mut sig: SignatureBuf = [0; 512];
        b.iter(|| {
            let n = signer.sign(black_box(&input), &mut sig).unwrap();
            assert!(n >= 64);
        })
    });
    // Minting with a signer that only copies a fixed signature of the right length: the cost of
    // everything but the crypto. Small and measured on its own, it gives a ratio that the VM's
    // noise on the signature itself cannot swamp: (splice + sign) / sign.
    let sig_len = {
        let mut sig: SignatureBuf = [0; 512];
        signer.sign(&input, &mut sig).unwrap()
    };
    let mut splicer = Minter::new(Box::new(CopySigner {
        alg: key.alg(),
        kid: key.kid().to_owned(),
        len: sig_len,
    }));
    g.bench_function("splice", |b| {
        b.iter(|| {
            splicer
                .mint(black_box(template.as_ref()), black_box(NOW), &mut out)
                .unwrap();
            assert!(out.len() > signing_input_len);
        })
    });
    g.finish();
}

/// A "signer" that writes a constant signature: isolates the splice cost in the bench.
struct CopySigner {
    alg: SigningAlg,
    kid: String,
    len: usize,
}

impl backstop::token::sign::Signer for CopySigner {
    fn alg(&self) -> SigningAlg {
        self.alg
    }
    fn kid(&self) -> &str {
        &self.kid
    }
    fn sign(
        &self,
        msg: &[u8],
        sig: &mut SignatureBuf,
    ) -> Result<usize, backstop::token::sign::SignError> {
        sig[0] = msg.len() as u8;
        Ok(self.len)
    }
}

fn dpop_proof(key: &SigningKey) -> String {
    let h = format!(
        r#"{{"typ":"dpop+jwt","alg":"{}","jwk":{}}}"#,
        key.alg().name(),
        key.public_jwk().key.canonical_json()
    );
    let c = format!(
        r#"{{"jti":"e1j3V_bKic8-LAEB","htm":"POST","htu":"https://as.example.com/token","iat":{NOW}}}"#
    );
    let mut input = Vec::new();
    b64::encode_into(h.as_bytes(), &mut input);
    input.push(b'.');
    b64::encode_into(c.as_bytes(), &mut input);
    let mut sig: SignatureBuf = [0; 512];
    let n = key
        .signer(Ed25519Backend::AwsLc)
        .unwrap()
        .sign(&input, &mut sig)
        .unwrap();
    input.push(b'.');
    b64::encode_into(&sig[..n], &mut input);
    String::from_utf8(input).unwrap()
}

fn verification(c: &mut Criterion, rsa: &SigningKey) {
    let mut g = c.benchmark_group("verify");
    let req = DpopRequest {
        method: "POST",
        url: "https://as.example.com/token",
        access_token: None,
        nonce: None,
    };
    let pol = DpopPolicy::default();
    for alg in [SigningAlg::Es256, SigningAlg::EdDsa] {
        let key = SigningKey::generate(alg).unwrap();
        let proof = dpop_proof(&key);
        // The bare signature check inside the proof verification, for the ratio.
        let dot = proof.rfind('.').unwrap();
        let sig = b64::decode(&proof.as_bytes()[dot + 1..], "sig").unwrap();
        let entry = KeySet::from_ours(&[key.public_jwk().clone()]).unwrap();
        let entry = entry.find(key.kid()).unwrap();
        g.bench_function(format!("{}_bare", alg.dir_name()), |b| {
            b.iter(|| assert!(entry.verify(alg.alg(), black_box(&proof.as_bytes()[..dot]), &sig)))
        });
        g.bench_function(format!("dpop_{}", alg.dir_name()), |b| {
            // A fresh replay cache per iteration, built outside the timing: the same proof would
            // otherwise be (rightly) refused as a replay after the first call.
            b.iter_batched(
                || ReplayCache::new(limits::DPOP_REPLAY_ENTRIES.min as usize),
                |mut cache| {
                    let v = verify_proof(black_box(proof.as_bytes()), &req, &pol, &mut cache, NOW)
                        .unwrap();
                    assert_eq!(v.jkt.len(), 43);
                },
                BatchSize::SmallInput,
            )
        });
    }
    let template = build_template(
        CLAIMS.as_bytes(),
        PrimaryTokenShape {
            typ: Some(Typ::Jwt),
            alg: SigningAlg::Rs256,
        },
        0,
    )
    .unwrap();
    let mut token = Vec::new();
    Minter::new(rsa.signer(Ed25519Backend::AwsLc).unwrap())
        .mint(template.as_ref(), NOW, &mut token)
        .unwrap();
    let keys = KeySet::from_ours(&[rsa.public_jwk().clone()]).unwrap();
    let policy = JwtPolicy {
        typ: TypRule::JwtOrAbsent,
        algs: &[Alg::Rs256],
        leeway_secs: 60,
        require_exp: true,
        issuer: Some("https://login.example.com/tenant-1/v2.0"),
        audience: Some("api://orders"),
    };
    g.bench_function("rs256_jwt", |b| {
        b.iter(|| {
            let v = verify_jwt(black_box(&token), &keys, &policy, NOW).unwrap();
            assert_eq!(v.claims.len(), 17);
        })
    });
    // The bare RSA verification inside it, for the ratio.
    let dot = token.iter().rposition(|b| *b == b'.').unwrap();
    let sig = b64::decode(&token[dot + 1..], "sig").unwrap();
    let entry = keys.find(rsa.kid()).unwrap();
    g.bench_function("rs256_bare", |b| {
        b.iter(|| assert!(entry.verify(Alg::Rs256, black_box(&token[..dot]), &sig)))
    });
    g.finish();
}

fn mean_ns(group: &str, function: &str) -> Option<f64> {
    let path = format!(
        "{}/target/criterion/{group}/{function}/new/estimates.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    let ed = SigningKey::generate(SigningAlg::EdDsa).unwrap();
    let rsa = rsa_key();
    mint_vs_sign(&mut c, "eddsa_awslc", &ed, Ed25519Backend::AwsLc);
    mint_vs_sign(&mut c, "eddsa_dalek", &ed, Ed25519Backend::Dalek);
    mint_vs_sign(
        &mut c,
        "es256",
        &SigningKey::generate(SigningAlg::Es256).unwrap(),
        Ed25519Backend::AwsLc,
    );
    mint_vs_sign(&mut c, "rs256", &rsa, Ed25519Backend::AwsLc);
    verification(&mut c, &rsa);
    c.final_summary();

    println!("\nratios (mean, same run):");
    for g in ["eddsa_awslc", "eddsa_dalek", "es256", "rs256"] {
        if let (Some(m), Some(s), Some(x)) =
            (mean_ns(g, "mint"), mean_ns(g, "sign"), mean_ns(g, "splice"))
        {
            println!(
                "  {g:12} mint {:8.2} µs  sign {:8.2} µs  splice {:6.3} µs  mint/sign {:.3}  \
                 (splice+sign)/sign {:.3}",
                m / 1e3,
                s / 1e3,
                x / 1e3,
                m / s,
                (x + s) / s
            );
        }
    }
    if let (Some(a), Some(d)) = (
        mean_ns("eddsa_awslc", "sign"),
        mean_ns("eddsa_dalek", "sign"),
    ) {
        println!("  Ed25519 sign dalek/aws-lc {:.2}", d / a);
    }
    if let (Some(j), Some(b)) = (
        mean_ns("verify", "rs256_jwt"),
        mean_ns("verify", "rs256_bare"),
    ) {
        println!(
            "  RS256 JWT verify {:.2} µs, bare {:.2} µs, ratio {:.3}",
            j / 1e3,
            b / 1e3,
            j / b
        );
    }
    for a in ["es256", "eddsa"] {
        if let (Some(p), Some(b)) = (
            mean_ns("verify", &format!("dpop_{a}")),
            mean_ns("verify", &format!("{a}_bare")),
        ) {
            println!(
                "  DPoP {a} proof verify {:.2} µs, bare signature verify {:.2} µs, ratio {:.3}",
                p / 1e3,
                b / 1e3,
                p / b
            );
        }
    }
}
