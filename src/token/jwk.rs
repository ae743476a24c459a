//! Public keys as JWKs (RFC 7517, RFC 7518 §6, RFC 8037 §2): parsing, writing, RFC 7638 thumbprints.
//!
//! Only public signature keys exist here. A JWK carrying private members (`d`, `p`, `q`, ...) is
//! refused: a key set or DPoP proof that leaks a private key is a sign of a confused peer, and
//! accepting it would let that key material flow into logs and published documents.

use aws_lc_rs::digest;
use serde_json::{Map, Value};

use crate::token::alg::Alg;
use crate::token::b64;

/// Why a JWK was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// A required member is missing or is not a string.
    #[error("JWK member {member:?} missing or not a string")]
    Missing {
        /// The member name.
        member: &'static str,
    },
    /// A key type or curve we do not verify with.
    #[error("unsupported JWK {member} {value:?}")]
    Unsupported {
        /// `kty` or `crv`.
        member: &'static str,
        /// The value found.
        value: String,
    },
    /// A member did not decode, or has the wrong length.
    #[error("JWK member {member:?} malformed")]
    Malformed {
        /// The member name.
        member: &'static str,
    },
    /// The JWK carries private key material.
    #[error("JWK carries private member {member:?}; only public keys are accepted")]
    PrivateMember {
        /// The offending member.
        member: &'static str,
    },
    /// An RSA modulus under 2048 bits (RFC 8725 §3.5 via NIST SP 800-131A).
    #[error("RSA modulus of {bits} bits is under the 2048-bit minimum")]
    RsaTooShort {
        /// Bits found.
        bits: usize,
    },
}

/// Public key material of one of the key types we verify with.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Ed25519 (`kty: OKP`, `crv: Ed25519`): the 32-byte encoded point.
    Ed25519 {
        /// Public key bytes.
        x: [u8; 32],
    },
    /// P-256 (`kty: EC`, `crv: P-256`): affine coordinates.
    P256 {
        /// X coordinate, big-endian.
        x: [u8; 32],
        /// Y coordinate, big-endian.
        y: [u8; 32],
    },
    /// RSA (`kty: RSA`): modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Public, so printing is safe; the thumbprint is shorter than the key and identifies it.
        write!(f, "PublicKey({})", self.thumbprint())
    }
}

impl PublicKey {
    /// Whether a JWS with `alg` can be signed by this kind of key (RFC 8725 §3.1: the algorithm
    /// must match the key, so an RSA key never checks an HMAC or an EC signature).
    pub fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (Self::Ed25519 { .. }, Alg::EdDsa)
                | (Self::P256 { .. }, Alg::Es256)
                | (Self::Rsa { .. }, Alg::Rs256 | Alg::Ps256)
        )
    }

    /// The RFC 7638 canonical JSON: required members only, in lexicographic order, no spaces.
    pub fn canonical_json(&self) -> String {
        match self {
            Self::Ed25519 { x } => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                b64::encode(x)
            ),
            Self::P256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64::encode(x),
                b64::encode(y)
            ),
            Self::Rsa { n, e } => {
                format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    b64::encode(e),
                    b64::encode(n)
                )
            }
        }
    }

    /// SHA-256 RFC 7638 thumbprint, raw.
    pub fn thumbprint_bytes(&self) -> [u8; 32] {
        let d = digest::digest(&digest::SHA256, self.canonical_json().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// SHA-256 RFC 7638 thumbprint, base64url: our `kid`, and DPoP's `jkt` (RFC 9449 §6.1).
    pub fn thumbprint(&self) -> String {
        b64::encode(&self.thumbprint_bytes())
    }

    /// Parses the key members of a JWK object, refusing private members.
    pub fn from_jwk(obj: &Map<String, Value>) -> Result<Self, JwkError> {
        for member in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            if obj.contains_key(member) {
                return Err(JwkError::PrivateMember { member });
            }
        }
        let kty = str_member(obj, "kty")?;
        match kty {
            "OKP" => {
                let crv = str_member(obj, "crv")?;
                if crv != "Ed25519" {
                    return Err(JwkError::Unsupported {
                        member: "crv",
                        value: crv.to_owned(),
                    });
                }
                let x = b64::decode_array::<32>(str_member(obj, "x")?.as_bytes(), "x")
                    .map_err(|_| JwkError::Malformed { member: "x" })?;
                Ok(Self::Ed25519 { x })
            }
            "EC" => {
                let crv = str_member(obj, "crv")?;
                if crv != "P-256" {
                    return Err(JwkError::Unsupported {
                        member: "crv",
                        value: crv.to_owned(),
                    });
                }
                let x = b64::decode_array::<32>(str_member(obj, "x")?.as_bytes(), "x")
                    .map_err(|_| JwkError::Malformed { member: "x" })?;
                let y = b64::decode_array::<32>(str_member(obj, "y")?.as_bytes(), "y")
                    .map_err(|_| JwkError::Malformed { member: "y" })?;
                Ok(Self::P256 { x, y })
            }
            "RSA" => {
                let n = b64::decode(str_member(obj, "n")?.as_bytes(), "n")
                    .map_err(|_| JwkError::Malformed { member: "n" })?;
                let e = b64::decode(str_member(obj, "e")?.as_bytes(), "e")
                    .map_err(|_| JwkError::Malformed { member: "e" })?;
                // RFC 7518 §6.3.1: unsigned big-endian, minimal; a leading zero would give one
                // key two thumbprints.
                if n.first().is_none_or(|b| *b == 0) {
                    return Err(JwkError::Malformed { member: "n" });
                }
                if e.first().is_none_or(|b| *b == 0) || e.len() > 8 {
                    return Err(JwkError::Malformed { member: "e" });
                }
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                if bits < 2048 {
                    return Err(JwkError::RsaTooShort { bits });
                }
                Ok(Self::Rsa { n, e })
            }
            other => Err(JwkError::Unsupported {
                member: "kty",
                value: other.to_owned(),
            }),
        }
    }

    /// Writes the key members (`kty`, `crv`, coordinates) as JSON object members, no braces.
    fn write_members(&self, out: &mut String) {
        match self {
            Self::Ed25519 { x } => {
                out.push_str(r#""kty":"OKP","crv":"Ed25519","x":""#);
                out.push_str(&b64::encode(x));
                out.push('"');
            }
            Self::P256 { x, y } => {
                out.push_str(r#""kty":"EC","crv":"P-256","x":""#);
                out.push_str(&b64::encode(x));
                out.push_str(r#"","y":""#);
                out.push_str(&b64::encode(y));
                out.push('"');
            }
            Self::Rsa { n, e } => {
                out.push_str(r#""kty":"RSA","n":""#);
                out.push_str(&b64::encode(n));
                out.push_str(r#"","e":""#);
                out.push_str(&b64::encode(e));
                out.push('"');
            }
        }
    }
}

fn str_member<'a>(obj: &'a Map<String, Value>, member: &'static str) -> Result<&'a str, JwkError> {
    obj.get(member)
        .and_then(Value::as_str)
        .ok_or(JwkError::Missing { member })
}

/// A public JWK as we publish it: key, `kid`, `alg`, `use: sig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    /// The key.
    pub key: PublicKey,
    /// Key id: for our keys, the RFC 7638 thumbprint.
    pub kid: String,
    /// The one algorithm this key signs with.
    pub alg: Alg,
}

impl PublicJwk {
    /// A JWK for one of our keys: `kid` is its thumbprint.
    pub fn ours(key: PublicKey, alg: Alg) -> Self {
        let kid = key.thumbprint();
        Self { key, kid, alg }
    }

    /// The JWK as compact JSON with members in a fixed order (stable for snapshots and caches).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(512);
        out.push('{');
        self.key.write_members(&mut out);
        out.push_str(r#","use":"sig","alg":""#);
        out.push_str(self.alg.name());
        out.push_str(r#"","kid":""#);
        // kids we write are base64url thumbprints: no escaping needed.
        out.push_str(&self.kid);
        out.push_str(r#""}"#);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn rfc8037_a3_ed25519_thumbprint() {
        let k = PublicKey::from_jwk(&obj(
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
        ))
        .unwrap();
        assert_eq!(
            k.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn private_members_are_refused() {
        let e = PublicKey::from_jwk(&obj(
            r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
        ));
        assert_eq!(e, Err(JwkError::PrivateMember { member: "d" }));
        let e = PublicKey::from_jwk(&obj(r#"{"kty":"oct","k":"c2VjcmV0"}"#));
        assert_eq!(e, Err(JwkError::PrivateMember { member: "k" }));
    }

    #[test]
    fn unsupported_curves_and_short_rsa_are_refused() {
        let e = PublicKey::from_jwk(&obj(r#"{"kty":"OKP","crv":"X25519","x":"AA"}"#));
        assert!(matches!(
            e,
            Err(JwkError::Unsupported { member: "crv", .. })
        ));
        let n = b64::encode(&[0xC1; 128]);
        let e = PublicKey::from_jwk(&obj(&format!(r#"{{"kty":"RSA","n":"{n}","e":"AQAB"}}"#)));
        assert_eq!(e, Err(JwkError::RsaTooShort { bits: 1024 }));
        let e = PublicKey::from_jwk(&obj(r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#));
        assert_eq!(e, Err(JwkError::Malformed { member: "x" }));
    }

    #[test]
    fn key_type_must_fit_the_algorithm() {
        let ed = PublicKey::Ed25519 { x: [1; 32] };
        assert!(ed.fits(Alg::EdDsa));
        assert!(!ed.fits(Alg::Es256) && !ed.fits(Alg::Rs256));
        let rsa = PublicKey::Rsa {
            n: vec![0xC1; 256],
            e: vec![1, 0, 1],
        };
        assert!(rsa.fits(Alg::Rs256) && rsa.fits(Alg::Ps256) && !rsa.fits(Alg::EdDsa));
    }
}
