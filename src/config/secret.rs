//! `Secret`: a string that never prints its value and compares in constant time, and the
//! careful reading of a file that holds one.

use std::path::Path;

use subtle::ConstantTimeEq;

use crate::limits;

/// A secret value (admin token, passphrase). `Debug` prints a placeholder, there is no
/// `Display`, and comparison takes the same time whatever the first differing byte.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &[u8]) -> bool {
        // `ct_eq` on slices of different lengths returns false without looking at the bytes;
        // leaking the length of the secret is acceptable (it is public in the config docs).
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads a secret file: bounded size, not readable by group or others (so a leaked
/// world-readable token is caught at start, not in an incident review).
/// On error, returns what would have been allowed, for `ConfigError::Invalid`.
pub(crate) fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;

    let meta = std::fs::metadata(path).map_err(|e| format!("a readable file ({e})"))?;
    if !meta.is_file() {
        return Err("a regular file".to_string());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "a file readable only by its owner (mode is {mode:o}; fix with `chmod 600 {}`)",
            path.display()
        ));
    }
    if meta.len() > limits::SECRET_FILE_BYTES_MAX {
        return Err(format!(
            "a file of at most {} bytes",
            limits::SECRET_FILE_BYTES_MAX
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("a readable UTF-8 file ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn debug_output_hides_the_value() {
        let s = Secret::new("top-secret-value".into());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let s = Secret::new("abc".into());
        assert!(s.matches(b"abc"));
        assert!(!s.matches(b"abd"));
        assert!(!s.matches(b"ab"));
        assert!(!s.matches(b"abcd"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn secret_file_readable_by_others_is_refused_with_the_fix() {
        let dir = std::env::temp_dir().join(format!("backstop-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "x".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_file(&path).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&path).unwrap(), "x".repeat(32));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
