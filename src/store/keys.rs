//! Per-deployment secrets and the keys derived from them: the keyed xxh3-128 session key and
//! the HMAC-SHA-256 artifact digest. Secrets are generated on first open, kept in the data dir
//! with mode 0600, and never printed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::StoreError;
use super::model::{ArtifactDigest, ArtifactKind, SessionIdentity, SessionIdentityRef};

/// File holding the xxh3 secret for session keys.
pub const SESSION_SECRET_FILE: &str = "session-key.secret";
/// File holding the HMAC pepper for artifact digests.
pub const ARTIFACT_PEPPER_FILE: &str = "artifact-pepper.secret";

/// Bytes of the xxh3 secret: xxh3's default secret size (it needs at least 136).
pub const SESSION_SECRET_BYTES: usize = 192;
/// Bytes of the HMAC pepper: one SHA-256 block's worth of key strength.
pub const ARTIFACT_PEPPER_BYTES: usize = 32;

// xxh3 requires a secret of at least 136 bytes (its SECRET_SIZE_MIN, not exported).
const _: () = assert!(SESSION_SECRET_BYTES >= 136);

/// The key that routes a record to its shard and index slot. Not a proof of identity: a
/// lookup always compares the full identifiers or the full digest behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey(pub u128);

impl RecordKey {
    /// Shard for this key. The high half routes, the low half picks the index slot, so the
    /// two choices are independent.
    pub fn shard(self, shard_count: u32) -> u32 {
        let hi = (self.0 >> 64) as u64;
        // INVARIANT: shard_count >= 1 (limits::STORE_SHARDS.min), so the remainder fits u32.
        u32::try_from(hi % u64::from(shard_count.max(1))).unwrap_or(0)
    }

    /// The low 64 bits, which pick the index slot.
    pub fn slot_hash(self) -> u64 {
        self.0 as u64
    }
}

/// The session-key secret. No `Debug`: it must never reach a log.
pub struct SessionSecret([u8; SESSION_SECRET_BYTES]);

/// The artifact pepper, as an HMAC state already keyed with it (cloned per digest, so the
/// key schedule's two compressions are paid once, at open). No `Debug`.
pub struct ArtifactPepper(Hmac<Sha256>);

impl ArtifactPepper {
    fn new(pepper: &[u8; ARTIFACT_PEPPER_BYTES]) -> Self {
        // INVARIANT: HMAC accepts keys of any length; `new_from_slice` cannot fail. The
        // fallback keys with nothing rather than panic, and is unreachable.
        Self(
            Hmac::<Sha256>::new_from_slice(pepper)
                .unwrap_or_else(|_| <Hmac<Sha256> as hmac::Mac>::new(&Default::default())),
        )
    }
}

/// Both secrets, loaded once at open.
pub struct Keys {
    session: SessionSecret,
    pepper: ArtifactPepper,
}

impl Keys {
    /// Builds keys from raw secrets (tests, fuzzing).
    pub fn from_secrets(
        session: [u8; SESSION_SECRET_BYTES],
        pepper: [u8; ARTIFACT_PEPPER_BYTES],
    ) -> Self {
        Keys {
            session: SessionSecret(session),
            pepper: ArtifactPepper::new(&pepper),
        }
    }

    /// Loads both secrets from `dir`, generating any that do not exist yet.
    pub fn load_or_create(dir: &Path) -> Result<Self, StoreError> {
        let mut session = [0u8; SESSION_SECRET_BYTES];
        load_or_create_secret(&dir.join(SESSION_SECRET_FILE), &mut session)?;
        let mut pepper = [0u8; ARTIFACT_PEPPER_BYTES];
        load_or_create_secret(&dir.join(ARTIFACT_PEPPER_FILE), &mut pepper)?;
        Ok(Keys::from_secrets(session, pepper))
    }

    /// Loads both secrets from `dir` without creating any (read-only tools such as
    /// `inspect`). Refuses a secret readable by group or others, like `load_or_create`.
    pub fn load(dir: &Path) -> Result<Self, StoreError> {
        let mut session = [0u8; SESSION_SECRET_BYTES];
        load_secret(&dir.join(SESSION_SECRET_FILE), &mut session)?;
        let mut pepper = [0u8; ARTIFACT_PEPPER_BYTES];
        load_secret(&dir.join(ARTIFACT_PEPPER_FILE), &mut pepper)?;
        Ok(Keys::from_secrets(session, pepper))
    }

    /// Keyed xxh3-128 over the length-prefixed identifiers. The length prefixes make the
    /// encoding injective: ("ab","c") and ("a","bc") hash different inputs.
    pub fn session_key(&self, id: &SessionIdentity) -> RecordKey {
        self.session_key_ref(&id.as_ref())
    }

    /// [`Keys::session_key`] of a borrowed identity.
    pub fn session_key_ref(&self, id: &SessionIdentityRef<'_>) -> RecordKey {
        let fields = [id.tenant, id.user, id.device, id.app, id.resource];
        let total: usize = 1 + fields.iter().map(|f| f.len() + 4).sum::<usize>();
        // On the lookup path: typical identities fit a stack buffer, so no allocation.
        let mut stack = [0u8; 512];
        let mut heap = Vec::new();
        let buf: &mut [u8] = match stack.get_mut(..total) {
            Some(b) => b,
            None => {
                heap.resize(total, 0);
                &mut heap
            }
        };
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(d) = buf.get_mut(at..at + bytes.len()) {
                d.copy_from_slice(bytes);
            }
            at += bytes.len();
        };
        // Domain separation from artifact keys, which share the key space.
        put(b"S");
        for f in fields {
            let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
            put(&len.to_le_bytes());
            put(f.as_bytes());
        }
        debug_assert_eq!(at, total);
        // INVARIANT: the secret is SESSION_SECRET_BYTES >= 136 (asserted above), so xxh3's
        // length assertion cannot fire.
        RecordKey(xxhash_rust::xxh3::xxh3_128_with_secret(
            buf,
            &self.session.0,
        ))
    }

    /// The routing key of a revocation event: keyed xxh3-128 over `"R" ‖ u32 len ‖ id`. The
    /// domain byte keeps it apart from session keys (`"S"`), which use the same secret; the
    /// secret keeps anyone from choosing ids that collide. A lookup compares the full id.
    pub fn revocation_key(&self, id: &str) -> RecordKey {
        let len = u32::try_from(id.len()).unwrap_or(u32::MAX);
        let mut buf = Vec::with_capacity(5 + id.len());
        buf.push(b'R');
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(id.as_bytes());
        // INVARIANT: the secret is SESSION_SECRET_BYTES >= 136 (asserted above).
        RecordKey(xxhash_rust::xxh3::xxh3_128_with_secret(
            &buf,
            &self.session.0,
        ))
    }

    /// HMAC-SHA-256 under the pepper over the kind byte and the raw credential.
    pub fn artifact_digest(&self, kind: ArtifactKind, raw: &[u8]) -> ArtifactDigest {
        let mut mac = self.pepper.0.clone();
        mac.update(&[kind.code()]);
        mac.update(raw);
        ArtifactDigest(mac.finalize().into_bytes().into())
    }
}

/// The routing key of an artifact: the first 16 bytes of its (already keyed) digest. Session
/// keys hash a domain byte first, so the two kinds do not share inputs; the record kind is also
/// checked on every lookup.
pub fn artifact_key(digest: &ArtifactDigest) -> RecordKey {
    let mut b = [0u8; 16];
    b.copy_from_slice(digest.0.get(..16).unwrap_or(&[0u8; 16]));
    RecordKey(u128::from_le_bytes(b))
}

fn load_or_create_secret(path: &Path, out: &mut [u8]) -> Result<(), StoreError> {
    let io = |op: &'static str| {
        move |source: std::io::Error| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            getrandom::fill(out).map_err(|e| StoreError::Random(e.to_string()))?;
            f.write_all(out).map_err(io("write secret"))?;
            f.sync_all().map_err(io("fsync secret"))?;
            if let Some(parent) = path.parent() {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(io("fsync dir"))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_secret(path, out),
        Err(e) => Err(io("create secret")(e)),
    }
}

fn load_secret(path: &Path, out: &mut [u8]) -> Result<(), StoreError> {
    let io = |op: &'static str| {
        move |source: std::io::Error| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut f = File::open(path).map_err(io("open secret"))?;
    let meta = f.metadata().map_err(io("stat secret"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::SecretPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() != out.len() as u64 {
        return Err(StoreError::SecretLength {
            path: path.to_path_buf(),
            found: meta.len(),
            expected: out.len(),
        });
    }
    f.read_exact(out).map_err(io("read secret"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(t: &str, u: &str) -> SessionIdentity {
        SessionIdentity {
            tenant: t.into(),
            user: u.into(),
            device: "d".into(),
            app: "a".into(),
            resource: "r".into(),
        }
    }

    #[test]
    fn length_prefix_separates_shifted_identifiers() {
        let k = Keys::from_secrets([7; SESSION_SECRET_BYTES], [9; ARTIFACT_PEPPER_BYTES]);
        assert_ne!(k.session_key(&id("ab", "c")), k.session_key(&id("a", "bc")));
    }

    #[test]
    fn long_identities_hash_on_the_heap_path_and_stay_distinct() {
        let k = Keys::from_secrets([7; SESSION_SECRET_BYTES], [9; ARTIFACT_PEPPER_BYTES]);
        let long = "x".repeat(600);
        let a = k.session_key(&id(&long, "u"));
        assert_eq!(a, k.session_key(&id(&long, "u")));
        assert_ne!(a, k.session_key(&id(&long, "v")));
        assert_ne!(a, k.session_key(&id("x", "u")));
    }

    #[test]
    fn session_key_depends_on_secret() {
        let a = Keys::from_secrets([7; SESSION_SECRET_BYTES], [9; ARTIFACT_PEPPER_BYTES]);
        let b = Keys::from_secrets([8; SESSION_SECRET_BYTES], [9; ARTIFACT_PEPPER_BYTES]);
        assert_ne!(a.session_key(&id("t", "u")), b.session_key(&id("t", "u")));
    }

    #[test]
    fn artifact_digest_depends_on_kind_and_pepper() {
        let a = Keys::from_secrets([7; SESSION_SECRET_BYTES], [9; ARTIFACT_PEPPER_BYTES]);
        let b = Keys::from_secrets([7; SESSION_SECRET_BYTES], [1; ARTIFACT_PEPPER_BYTES]);
        let rt = a.artifact_digest(ArtifactKind::RefreshToken, b"tok");
        assert_ne!(rt, a.artifact_digest(ArtifactKind::SessionCookie, b"tok"));
        assert_ne!(rt, b.artifact_digest(ArtifactKind::RefreshToken, b"tok"));
    }

    #[test]
    fn secrets_are_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = Keys::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SESSION_SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let k2 = Keys::load_or_create(dir.path()).unwrap();
        assert_eq!(k1.session_key(&id("t", "u")), k2.session_key(&id("t", "u")));
    }

    #[test]
    fn group_readable_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Keys::load_or_create(dir.path()).unwrap();
        let p = dir.path().join(ARTIFACT_PEPPER_FILE);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Keys::load_or_create(dir.path()).err().unwrap();
        assert!(
            matches!(err, StoreError::SecretPermissions { mode: 0o640, .. }),
            "{err}"
        );
    }
}
