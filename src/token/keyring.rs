//! Signing keys in the data directory: PKCS#8 PEM files (mode 0600) and a manifest naming the
//! `current`, `next` and `previous` key of each algorithm; generation, rotation, `backstop keygen`.
//!
//! Layout, one directory per algorithm so each can rotate on its own:
//!
//! ```text
//! <data_dir>/keys/eddsa/ring.json        {"version":1,"current":KID,"next":KID,"previous":KID|null,"rotated_at_secs":N}
//! <data_dir>/keys/eddsa/<kid>.pem        PKCS#8 PEM, mode 0600, kid = RFC 7638 thumbprint
//! ```
//!
//! Rotation writes the new key file first and then replaces the manifest atomically (temp file,
//! fsync, rename, fsync the directory), so a crash leaves either the old ring or the new one,
//! never a ring without a current key. `next` is published before it signs anything, and
//! `previous` stays published after it stops, so relying parties with cached JWKS keep verifying.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::limits;
use crate::token::alg::SigningAlg;
use crate::token::json;
use crate::token::jwk::PublicJwk;
use crate::token::mint::Minter;
use crate::token::sign::{Ed25519Backend, PrivateKeyDer, SignError, SigningKey};

/// Why the keyring could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// A key file readable or writable by group or others.
    #[error(
        "key file {path} has mode {mode:03o}, readable by group or others; refusing to use it. \
         Fix with: chmod 600 {path}"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// File-system error, with the path involved.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A key file that is not a PKCS#8 PEM private key of the ring's algorithm.
    #[error("key file {path}: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key file whose key does not hash to the kid in its name.
    #[error("key file {path} holds a key with thumbprint {actual}, not the kid its name says")]
    KidMismatch {
        /// The file.
        path: PathBuf,
        /// The thumbprint found.
        actual: String,
    },
    /// The manifest is unreadable.
    #[error("keyring manifest {path}: field {field} missing or malformed")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// The field.
        field: &'static str,
    },
    /// `keygen` without `--rotate` on an existing keyring.
    #[error("a {alg} keyring already exists in {dir}; use `backstop keygen --rotate` to rotate it")]
    AlreadyExists {
        /// The algorithm.
        alg: &'static str,
        /// Its directory.
        dir: PathBuf,
    },
    /// `--rotate` without a keyring.
    #[error("no {alg} keyring in {dir}; run `backstop keygen` first")]
    Missing {
        /// The algorithm.
        alg: &'static str,
        /// Its directory.
        dir: PathBuf,
    },
    /// Key generation or parsing failed.
    #[error(transparent)]
    Key(#[from] SignError),
}

fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> KeyringError + 'p {
    move |source| KeyringError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// One algorithm's keys: `current` signs; `next` is published, waiting; `previous` is published
/// until the tokens it signed have expired.
#[derive(Debug, Clone)]
pub struct Keyring {
    alg: SigningAlg,
    current: SigningKey,
    next: SigningKey,
    previous: Option<SigningKey>,
    rotated_at_secs: u64,
}

/// The directory of `alg`'s keyring.
pub fn ring_dir(data_dir: &Path, alg: SigningAlg) -> PathBuf {
    data_dir.join("keys").join(alg.dir_name())
}

impl Keyring {
    /// The algorithm.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }
    /// The key that signs now.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }
    /// The key that signs after the next rotation.
    pub fn next(&self) -> &SigningKey {
        &self.next
    }
    /// The key that signed before the last rotation.
    pub fn previous(&self) -> Option<&SigningKey> {
        self.previous.as_ref()
    }
    /// When the ring last rotated (or was created).
    pub fn rotated_at_secs(&self) -> u64 {
        self.rotated_at_secs
    }

    /// Public keys to publish: current, next, previous.
    pub fn published(&self) -> Vec<PublicJwk> {
        let mut keys = vec![
            self.current.public_jwk().clone(),
            self.next.public_jwk().clone(),
        ];
        keys.extend(self.previous.iter().map(|k| k.public_jwk().clone()));
        keys
    }

    /// A minter signing with the current key, for one worker thread (each worker builds its own:
    /// nothing is shared on the signing path).
    pub fn minter(&self, backend: Ed25519Backend) -> Result<Minter, KeyringError> {
        Ok(Minter::new(self.current.signer(backend)?))
    }

    /// Loads `alg`'s keyring; `Ok(None)` when none exists yet.
    pub fn load(data_dir: &Path, alg: SigningAlg) -> Result<Option<Self>, KeyringError> {
        let dir = ring_dir(data_dir, alg);
        let manifest_path = dir.join("ring.json");
        let bytes = match read_private_file(&manifest_path) {
            Ok(b) => b,
            Err(KeyringError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let manifest_err = |field| KeyringError::Manifest {
            path: manifest_path.clone(),
            field,
        };
        let m = json::parse_object(&bytes, "ring.json", 4).map_err(|_| manifest_err("json"))?;
        if m.get("version").and_then(Value::as_u64) != Some(1) {
            return Err(manifest_err("version"));
        }
        let kid = |field: &'static str| -> Result<&str, KeyringError> {
            m.get(field)
                .and_then(Value::as_str)
                .filter(|k| {
                    k.len() == 43
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
                .ok_or_else(|| manifest_err(field))
        };
        let current = load_key(&dir, alg, kid("current")?)?;
        let next = load_key(&dir, alg, kid("next")?)?;
        let previous = match m.get("previous") {
            None | Some(Value::Null) => None,
            Some(_) => Some(load_key(&dir, alg, kid("previous")?)?),
        };
        let rotated_at_secs = m
            .get("rotated_at_secs")
            .and_then(Value::as_u64)
            .ok_or_else(|| manifest_err("rotated_at_secs"))?;
        Ok(Some(Self {
            alg,
            current,
            next,
            previous,
            rotated_at_secs,
        }))
    }

    /// Loads `alg`'s keyring, creating it (current and next) on first start.
    pub fn load_or_generate(
        data_dir: &Path,
        alg: SigningAlg,
        now_secs: u64,
    ) -> Result<Self, KeyringError> {
        match Self::load(data_dir, alg)? {
            Some(ring) => Ok(ring),
            None => create(data_dir, alg, now_secs),
        }
    }
}

/// `backstop keygen [--alg A]`: creates `alg`'s keyring (a current and a next key) and returns the
/// current key's public JWK for printing. Refuses when the keyring exists (rotate instead).
pub fn keygen(data_dir: &Path, alg: SigningAlg, now_secs: u64) -> Result<PublicJwk, KeyringError> {
    if Keyring::load(data_dir, alg)?.is_some() {
        return Err(KeyringError::AlreadyExists {
            alg: alg.name(),
            dir: ring_dir(data_dir, alg),
        });
    }
    Ok(create(data_dir, alg, now_secs)?
        .current
        .public_jwk()
        .clone())
}

/// `backstop keygen --rotate [--alg A]`: next becomes current, current becomes previous (the old
/// previous is dropped from the ring), a fresh key becomes next. Returns the new ring; print its
/// `published()` keys. Tokens signed by the old current key still verify against the new JWKS.
pub fn rotate(data_dir: &Path, alg: SigningAlg, now_secs: u64) -> Result<Keyring, KeyringError> {
    let old = Keyring::load(data_dir, alg)?.ok_or_else(|| KeyringError::Missing {
        alg: alg.name(),
        dir: ring_dir(data_dir, alg),
    })?;
    let dir = ring_dir(data_dir, alg);
    let fresh = SigningKey::generate(alg)?;
    write_key(&dir, &fresh)?;
    let ring = Keyring {
        alg,
        current: old.next,
        next: fresh,
        previous: Some(old.current),
        rotated_at_secs: now_secs,
    };
    write_manifest(&dir, &ring)?;
    Ok(ring)
}

/// Drops `previous` from the ring once every token it can have signed has expired: it stopped
/// signing at the last rotation, so after `rotated_at + token_lifetime_max_secs` nothing valid
/// carries its kid. Returns whether it was retired. The key file is removed after the manifest
/// no longer names it.
pub fn retire_previous(
    data_dir: &Path,
    alg: SigningAlg,
    now_secs: u64,
    token_lifetime_max_secs: u64,
) -> Result<bool, KeyringError> {
    let Some(mut ring) = Keyring::load(data_dir, alg)? else {
        return Ok(false);
    };
    let Some(previous) = ring.previous.take() else {
        return Ok(false);
    };
    if now_secs < ring.rotated_at_secs.saturating_add(token_lifetime_max_secs) {
        return Ok(false);
    }
    let dir = ring_dir(data_dir, alg);
    write_manifest(&dir, &ring)?;
    let path = dir.join(format!("{}.pem", previous.kid()));
    fs::remove_file(&path).map_err(io("remove", &path))?;
    Ok(true)
}

fn create(data_dir: &Path, alg: SigningAlg, now_secs: u64) -> Result<Keyring, KeyringError> {
    let dir = ring_dir(data_dir, alg);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io("create directory", &dir))?;
    let ring = Keyring {
        alg,
        current: SigningKey::generate(alg)?,
        next: SigningKey::generate(alg)?,
        previous: None,
        rotated_at_secs: now_secs,
    };
    write_key(&dir, &ring.current)?;
    write_key(&dir, &ring.next)?;
    write_manifest(&dir, &ring)?;
    Ok(ring)
}

/// Reads a file that must not be readable by group or others, checking the mode of the opened
/// file (fstat), not of a path someone could swap in between.
fn read_private_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
    let file = File::open(path).map_err(io("open", path))?;
    let meta = file.metadata().map_err(io("stat", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyringError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > limits::KEY_FILE_BYTES_MAX {
        return Err(KeyringError::BadKeyFile {
            path: path.to_owned(),
            reason: "larger than a key file can be".into(),
        });
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(limits::KEY_FILE_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(io("read", path))?;
    Ok(bytes)
}

/// Loads `<dir>/<kid>.pem` and checks the key's thumbprint is `kid`.
pub fn load_key(dir: &Path, alg: SigningAlg, kid: &str) -> Result<SigningKey, KeyringError> {
    let path = dir.join(format!("{kid}.pem"));
    let pem = read_private_file(&path)?;
    let der = pem_decode(&pem).ok_or_else(|| KeyringError::BadKeyFile {
        path: path.clone(),
        reason: "not a PEM \"PRIVATE KEY\" (PKCS#8) document".into(),
    })?;
    let key = SigningKey::from_pkcs8(alg, der).map_err(|e| KeyringError::BadKeyFile {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if key.kid() != kid {
        return Err(KeyringError::KidMismatch {
            path,
            actual: key.kid().to_owned(),
        });
    }
    Ok(key)
}

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// PEM-encodes PKCS#8 DER (RFC 7468 §10), 64 columns.
pub fn pem_encode(der: &PrivateKeyDer) -> Zeroizing<String> {
    let body = Zeroizing::new(STANDARD.encode(der.expose()));
    let mut out = Zeroizing::new(String::with_capacity(body.len() + body.len() / 64 + 64));
    out.push_str(PEM_BEGIN);
    out.push('\n');
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

/// Decodes a PKCS#8 PEM document (one `PRIVATE KEY` block; blank lines and CRLF tolerated).
pub fn pem_decode(pem: &[u8]) -> Option<PrivateKeyDer> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find(PEM_BEGIN)? + PEM_BEGIN.len();
    let end = text.get(start..)?.find(PEM_END)? + start;
    let body: Zeroizing<String> = Zeroizing::new(
        text.get(start..end)?
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    STANDARD
        .decode(body.as_bytes())
        .ok()
        .map(PrivateKeyDer::new)
}

/// Writes `path` atomically with mode 0600: temp file, fsync, rename, fsync the directory.
fn write_private_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<(), KeyringError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    // A stale temp file from a crash is ours to replace.
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(contents).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))?;
    Ok(())
}

fn write_key(dir: &Path, key: &SigningKey) -> Result<(), KeyringError> {
    let pem = pem_encode(key.pkcs8());
    write_private_atomic(dir, &format!("{}.pem", key.kid()), pem.as_bytes())
}

fn write_manifest(dir: &Path, ring: &Keyring) -> Result<(), KeyringError> {
    let previous = ring
        .previous
        .as_ref()
        .map_or("null".to_owned(), |k| format!("\"{}\"", k.kid()));
    let manifest = format!(
        "{{\"version\":1,\"current\":\"{}\",\"next\":\"{}\",\"previous\":{},\"rotated_at_secs\":{}}}\n",
        ring.current.kid(),
        ring.next.kid(),
        previous,
        ring.rotated_at_secs
    );
    write_private_atomic(dir, "ring.json", manifest.as_bytes())
}
