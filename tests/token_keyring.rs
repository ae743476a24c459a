//! Keyring: files and modes, refusal of loose permissions, keygen, rotation (tokens signed by the
//! previous key still verify with the published JWKS), and kid/file mismatches.

// A test crate: a failed unwrap is a failed test with a line number.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fixtures/token/support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt as _;

use backstop::token::alg::{SigningAlg, Typ};
use backstop::token::jwks::{KeySet, merge};
use backstop::token::jws::{JwtPolicy, TypRule, verify_jwt};
use backstop::token::keyring::{Keyring, KeyringError, keygen, retire_previous, ring_dir, rotate};
use backstop::token::mint::{PrimaryTokenShape, build_template};

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("backstop-token-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_writes_0600_pkcs8_files_and_a_manifest_and_refuses_to_run_twice() {
    let d = tempdir("keygen");
    for alg in SigningAlg::ALL {
        let jwk = keygen(&d, alg, 1000).unwrap();
        let dir = ring_dir(&d, alg);
        assert_eq!(mode(&dir), 0o700);
        let key_file = dir.join(format!("{}.pem", jwk.kid));
        assert_eq!(mode(&key_file), 0o600);
        assert_eq!(mode(&dir.join("ring.json")), 0o600);
        let pem = std::fs::read_to_string(&key_file).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let ring = Keyring::load(&d, alg).unwrap().unwrap();
        assert_eq!(ring.current().public_jwk(), &jwk);
        assert_eq!(jwk.kid, jwk.key.thumbprint());
        assert!(ring.previous().is_none());
        assert!(matches!(
            keygen(&d, alg, 1001),
            Err(KeyringError::AlreadyExists { .. })
        ));
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_group_or_world_readable_key_file_is_refused_with_the_fix() {
    let d = tempdir("perms");
    let jwk = keygen(&d, SigningAlg::EdDsa, 1).unwrap();
    let path = ring_dir(&d, SigningAlg::EdDsa).join(format!("{}.pem", jwk.kid));
    for loose in [0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
        let err = Keyring::load(&d, SigningAlg::EdDsa).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, KeyringError::Permissions { mode, .. } if mode == loose),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Keyring::load(&d, SigningAlg::EdDsa).unwrap().is_some());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_key_file_whose_content_does_not_match_its_kid_is_refused() {
    let d = tempdir("kid");
    let jwk = keygen(&d, SigningAlg::Es256, 1).unwrap();
    let dir = ring_dir(&d, SigningAlg::Es256);
    let ring = Keyring::load(&d, SigningAlg::Es256).unwrap().unwrap();
    // Swap the current key file's content for the next key's.
    let next = std::fs::read(dir.join(format!("{}.pem", ring.next().kid()))).unwrap();
    std::fs::write(dir.join(format!("{}.pem", jwk.kid)), next).unwrap();
    assert!(matches!(
        Keyring::load(&d, SigningAlg::Es256),
        Err(KeyringError::KidMismatch { .. })
    ));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn rotation_moves_next_to_current_and_tokens_of_the_previous_key_still_verify() {
    let d = tempdir("rotate");
    assert!(matches!(
        rotate(&d, SigningAlg::EdDsa, 5),
        Err(KeyringError::Missing { .. })
    ));
    let first = Keyring::load_or_generate(&d, SigningAlg::EdDsa, 10).unwrap();
    let template = build_template(
        br#"{"iss":"https://idp","sub":"u","iat":1,"exp":3601}"#,
        PrimaryTokenShape {
            typ: Some(Typ::Jwt),
            alg: SigningAlg::EdDsa,
        },
        0,
    )
    .unwrap();
    let mut old_token = Vec::new();
    first
        .minter(backstop::token::sign::Ed25519Backend::Dalek)
        .unwrap()
        .mint(template.as_ref(), 100, &mut old_token)
        .unwrap();

    let second = rotate(&d, SigningAlg::EdDsa, 200).unwrap();
    assert_eq!(second.current().kid(), first.next().kid());
    assert_eq!(second.previous().unwrap().kid(), first.current().kid());
    assert_ne!(second.next().kid(), first.next().kid());
    // Reloading from disk gives the same ring.
    let reloaded = Keyring::load(&d, SigningAlg::EdDsa).unwrap().unwrap();
    assert_eq!(reloaded.published(), second.published());
    assert_eq!(reloaded.rotated_at_secs(), 200);

    // The published JWKS (ours merged with an empty primary set) verifies the old token.
    let doc = merge(&second.published(), &KeySet::default());
    let (keys, _) = KeySet::parse(doc.document.as_bytes()).unwrap();
    assert_eq!(keys.len(), 3);
    let policy = JwtPolicy {
        typ: TypRule::JwtOrAbsent,
        algs: &[backstop::token::alg::Alg::EdDsa],
        leeway_secs: 0,
        require_exp: true,
        issuer: None,
        audience: None,
    };
    verify_jwt(&old_token, &keys, &policy, 300).unwrap();
    // A second rotation drops the first key: its tokens no longer verify.
    let third = rotate(&d, SigningAlg::EdDsa, 400).unwrap();
    let (keys, _) = KeySet::parse(
        merge(&third.published(), &KeySet::default())
            .document
            .as_bytes(),
    )
    .unwrap();
    assert!(verify_jwt(&old_token, &keys, &policy, 300).is_err());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn previous_is_retired_only_after_its_tokens_can_have_expired() {
    let d = tempdir("retire");
    assert!(
        !retire_previous(&d, SigningAlg::Es256, 0, 3600).unwrap(),
        "no ring yet"
    );
    Keyring::load_or_generate(&d, SigningAlg::Es256, 0).unwrap();
    assert!(
        !retire_previous(&d, SigningAlg::Es256, 10_000, 3600).unwrap(),
        "no previous yet"
    );
    let ring = rotate(&d, SigningAlg::Es256, 1000).unwrap();
    let old = ring.previous().unwrap().kid().to_owned();
    assert!(!retire_previous(&d, SigningAlg::Es256, 4599, 3600).unwrap());
    assert!(
        Keyring::load(&d, SigningAlg::Es256)
            .unwrap()
            .unwrap()
            .previous()
            .is_some()
    );
    assert!(retire_previous(&d, SigningAlg::Es256, 4600, 3600).unwrap());
    let after = Keyring::load(&d, SigningAlg::Es256).unwrap().unwrap();
    assert!(after.previous().is_none());
    assert_eq!(after.published().len(), 2);
    assert!(
        !ring_dir(&d, SigningAlg::Es256)
            .join(format!("{old}.pem"))
            .exists()
    );
    let _ = std::fs::remove_dir_all(&d);
}
