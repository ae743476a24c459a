//! Private keys and the per-worker [`Signer`]: one trait, four backends (Ed25519 via aws-lc-rs or
//! ed25519-dalek, ES256 and RS256 via aws-lc-rs).
//!
//! A [`SigningKey`] is the parsed key file (shared, immutable); each worker thread builds its own
//! `Box<dyn Signer>` from it at start, so signing takes no lock and shares no cache line.

use aws_lc_rs::encoding::AsBigEndian as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use zeroize::Zeroizing;

use crate::token::alg::SigningAlg;
use crate::token::jwk::{PublicJwk, PublicKey};

/// Longest signature any backend produces: RSA-4096 (512 bytes).
pub const SIGNATURE_BYTES_MAX: usize = 512;

/// A signature buffer on the stack.
pub type SignatureBuf = [u8; SIGNATURE_BYTES_MAX];

/// Why a key could not be loaded or a signature made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The PKCS#8 document is not a key of the expected algorithm.
    #[error("PKCS#8 key rejected for {alg}: {reason}")]
    KeyRejected {
        /// The algorithm the key was loaded for.
        alg: &'static str,
        /// aws-lc-rs's reason.
        reason: String,
    },
    /// The crypto library failed to sign (out of memory, internal error).
    #[error("signing with {alg} failed")]
    Signing {
        /// The algorithm.
        alg: &'static str,
    },
    /// Key generation failed.
    #[error("generating a {alg} key failed")]
    Generate {
        /// The algorithm.
        alg: &'static str,
    },
}

/// Which implementation signs Ed25519. Both produce identical signatures (Ed25519 is
/// deterministic); the default is the faster one as measured in `benches/token.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ed25519Backend {
    /// aws-lc-rs (C, assembly): ~1.7× faster to sign here; the default.
    #[default]
    AwsLc,
    /// ed25519-dalek (pure Rust).
    Dalek,
}

impl Ed25519Backend {
    /// Parses a config spelling: `aws-lc` or `dalek`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "aws-lc" | "aws-lc-rs" => Some(Self::AwsLc),
            "dalek" | "ed25519-dalek" => Some(Self::Dalek),
            _ => None,
        }
    }
}

/// Signs JWS signing inputs for one key. One per worker thread; `&self` methods, no interior
/// mutability, so nothing here needs a lock.
pub trait Signer: Send {
    /// Algorithm of the key.
    fn alg(&self) -> SigningAlg;
    /// The key's `kid` (RFC 7638 thumbprint).
    fn kid(&self) -> &str;
    /// Signs `msg` into `sig`, returning the signature's length.
    fn sign(&self, msg: &[u8], sig: &mut SignatureBuf) -> Result<usize, SignError>;
}

/// PKCS#8 DER of a private key. Never printed; wiped on drop.
#[derive(Clone)]
pub struct PrivateKeyDer(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for PrivateKeyDer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKeyDer(<redacted>)")
    }
}

impl PrivateKeyDer {
    /// Wraps DER bytes.
    pub fn new(der: Vec<u8>) -> Self {
        Self(Zeroizing::new(der))
    }
    /// The DER bytes, for writing the key file.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// A parsed private key of one of our signing algorithms: its PKCS#8 DER and public half.
#[derive(Debug, Clone)]
pub struct SigningKey {
    alg: SigningAlg,
    der: PrivateKeyDer,
    public: PublicJwk,
}

fn rejected(alg: SigningAlg, e: impl std::fmt::Display) -> SignError {
    SignError::KeyRejected {
        alg: alg.name(),
        reason: e.to_string(),
    }
}

impl SigningKey {
    /// Parses PKCS#8 DER as a key for `alg`, refusing a key of another type.
    pub fn from_pkcs8(alg: SigningAlg, der: PrivateKeyDer) -> Result<Self, SignError> {
        let key = match alg {
            SigningAlg::EdDsa => {
                let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.expose())
                    .map_err(|e| rejected(alg, e))?;
                let x: [u8; 32] = kp
                    .public_key()
                    .as_ref()
                    .try_into()
                    .map_err(|e| rejected(alg, e))?;
                PublicKey::Ed25519 { x }
            }
            SigningAlg::Es256 => {
                let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.expose())
                    .map_err(|e| rejected(alg, e))?;
                ec_public(kp.public_key().as_ref()).ok_or_else(|| rejected(alg, "bad EC point"))?
            }
            SigningAlg::Rs256 => {
                let kp = RsaKeyPair::from_pkcs8(der.expose()).map_err(|e| rejected(alg, e))?;
                // 2048 bits at least (RFC 8725 via NIST), 4096 at most: SIGNATURE_BYTES_MAX.
                if kp.public_modulus_len() < 256 || kp.public_modulus_len() > SIGNATURE_BYTES_MAX {
                    return Err(rejected(alg, "RSA modulus outside 2048..=4096 bits"));
                }
                let p = kp.public_key();
                PublicKey::Rsa {
                    n: p.modulus().big_endian_without_leading_zero().to_vec(),
                    e: p.exponent().big_endian_without_leading_zero().to_vec(),
                }
            }
        };
        Ok(Self {
            alg,
            der,
            public: PublicJwk::ours(key, alg.alg()),
        })
    }

    /// Generates a fresh key: Ed25519, P-256, or RSA 2048 with e = 65537.
    pub fn generate(alg: SigningAlg) -> Result<Self, SignError> {
        let gen_err = |_| SignError::Generate { alg: alg.name() };
        let der = match alg {
            SigningAlg::EdDsa => Ed25519KeyPair::generate()
                .and_then(|k| k.to_pkcs8v1())
                .map_err(gen_err)?
                .as_ref()
                .to_vec(),
            SigningAlg::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(gen_err)?
                    .as_ref()
                    .to_vec()
            }
            SigningAlg::Rs256 => {
                use aws_lc_rs::encoding::AsDer as _;
                let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(gen_err)?;
                kp.as_der().map_err(gen_err)?.as_ref().to_vec()
            }
        };
        Self::from_pkcs8(alg, PrivateKeyDer::new(der))
    }

    /// The algorithm.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The public JWK (`kid` = thumbprint).
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// The `kid`.
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    /// The PKCS#8 DER, for the key file.
    pub fn pkcs8(&self) -> &PrivateKeyDer {
        &self.der
    }

    /// Builds a signer for one worker thread. `backend` matters only for Ed25519.
    pub fn signer(&self, backend: Ed25519Backend) -> Result<Box<dyn Signer>, SignError> {
        let kid = self.public.kid.clone();
        let alg = self.alg;
        Ok(match (alg, backend) {
            (SigningAlg::EdDsa, Ed25519Backend::AwsLc) => Box::new(AwsLcEd25519 {
                key: Ed25519KeyPair::from_pkcs8_maybe_unchecked(self.der.expose())
                    .map_err(|e| rejected(alg, e))?,
                kid,
            }),
            (SigningAlg::EdDsa, Ed25519Backend::Dalek) => {
                let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(self.der.expose())
                    .map_err(|e| rejected(alg, e))?;
                let seed_bin = kp
                    .seed()
                    .and_then(|s| s.as_be_bytes())
                    .map_err(|e| rejected(alg, e))?;
                let seed: Zeroizing<[u8; 32]> =
                    Zeroizing::new(seed_bin.as_ref().try_into().map_err(|e| rejected(alg, e))?);
                Box::new(DalekEd25519 {
                    key: ed25519_dalek::SigningKey::from_bytes(&seed),
                    kid,
                })
            }
            (SigningAlg::Es256, _) => Box::new(AwsLcEs256 {
                key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, self.der.expose())
                    .map_err(|e| rejected(alg, e))?,
                rng: SystemRandom::new(),
                kid,
            }),
            (SigningAlg::Rs256, _) => Box::new(AwsLcRs256 {
                key: RsaKeyPair::from_pkcs8(self.der.expose()).map_err(|e| rejected(alg, e))?,
                rng: SystemRandom::new(),
                kid,
            }),
        })
    }
}

fn ec_public(point: &[u8]) -> Option<PublicKey> {
    // Uncompressed SEC1 point: 0x04 || X || Y.
    match point {
        [4, rest @ ..] if rest.len() == 64 => {
            let (x, y) = rest.split_at(32);
            Some(PublicKey::P256 {
                x: x.try_into().ok()?,
                y: y.try_into().ok()?,
            })
        }
        _ => None,
    }
}

fn copy_sig(src: &[u8], sig: &mut SignatureBuf, alg: SigningAlg) -> Result<usize, SignError> {
    let dst = sig
        .get_mut(..src.len())
        .ok_or(SignError::Signing { alg: alg.name() })?;
    dst.copy_from_slice(src);
    Ok(src.len())
}

struct AwsLcEd25519 {
    key: Ed25519KeyPair,
    kid: String,
}

impl Signer for AwsLcEd25519 {
    fn alg(&self) -> SigningAlg {
        SigningAlg::EdDsa
    }
    fn kid(&self) -> &str {
        &self.kid
    }
    fn sign(&self, msg: &[u8], sig: &mut SignatureBuf) -> Result<usize, SignError> {
        let s = self
            .key
            .try_sign(msg)
            .map_err(|_| SignError::Signing { alg: "EdDSA" })?;
        copy_sig(s.as_ref(), sig, SigningAlg::EdDsa)
    }
}

struct DalekEd25519 {
    key: ed25519_dalek::SigningKey,
    kid: String,
}

impl Signer for DalekEd25519 {
    fn alg(&self) -> SigningAlg {
        SigningAlg::EdDsa
    }
    fn kid(&self) -> &str {
        &self.kid
    }
    fn sign(&self, msg: &[u8], sig: &mut SignatureBuf) -> Result<usize, SignError> {
        use ed25519_dalek::Signer as _;
        let s = self.key.sign(msg);
        copy_sig(&s.to_bytes(), sig, SigningAlg::EdDsa)
    }
}

struct AwsLcEs256 {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
}

impl Signer for AwsLcEs256 {
    fn alg(&self) -> SigningAlg {
        SigningAlg::Es256
    }
    fn kid(&self) -> &str {
        &self.kid
    }
    fn sign(&self, msg: &[u8], sig: &mut SignatureBuf) -> Result<usize, SignError> {
        let s = self
            .key
            .sign(&self.rng, msg)
            .map_err(|_| SignError::Signing { alg: "ES256" })?;
        copy_sig(s.as_ref(), sig, SigningAlg::Es256)
    }
}

struct AwsLcRs256 {
    key: RsaKeyPair,
    rng: SystemRandom,
    kid: String,
}

impl Signer for AwsLcRs256 {
    fn alg(&self) -> SigningAlg {
        SigningAlg::Rs256
    }
    fn kid(&self) -> &str {
        &self.kid
    }
    fn sign(&self, msg: &[u8], sig: &mut SignatureBuf) -> Result<usize, SignError> {
        let n = self.key.public_modulus_len();
        let dst = sig
            .get_mut(..n)
            .ok_or(SignError::Signing { alg: "RS256" })?;
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, msg, dst)
            .map_err(|_| SignError::Signing { alg: "RS256" })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8410 PKCS#8 v1 for an Ed25519 seed (what aws-lc-rs writes).
    pub(crate) fn ed25519_pkcs8(seed: &[u8]) -> PrivateKeyDer {
        let mut der = hex("302e020100300506032b657004220420");
        der.extend_from_slice(seed);
        PrivateKeyDer::new(der)
    }

    /// RFC 8032 §7.1 tests 1–3: public key and signature, both backends.
    #[test]
    fn rfc8032_ed25519_vectors_both_backends() {
        let vectors = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
            (
                "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            ),
        ];
        for (seed, public, msg, expected) in vectors {
            let key = SigningKey::from_pkcs8(SigningAlg::EdDsa, ed25519_pkcs8(&hex(seed))).unwrap();
            assert_eq!(
                key.public_jwk().key,
                PublicKey::Ed25519 {
                    x: hex(public).try_into().unwrap()
                }
            );
            for backend in [Ed25519Backend::AwsLc, Ed25519Backend::Dalek] {
                let signer = key.signer(backend).unwrap();
                let mut sig = [0u8; SIGNATURE_BYTES_MAX];
                let n = signer.sign(&hex(msg), &mut sig).unwrap();
                assert_eq!(&sig[..n], &hex(expected)[..], "{backend:?} seed {seed}");
            }
        }
    }

    #[test]
    fn a_key_of_another_type_is_refused() {
        let ed = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let e = SigningKey::from_pkcs8(SigningAlg::Es256, ed.pkcs8().clone());
        assert!(matches!(
            e,
            Err(SignError::KeyRejected { alg: "ES256", .. })
        ));
    }

    #[test]
    fn private_key_debug_is_redacted() {
        let k = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let shown = format!("{k:?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains(&format!("{:?}", k.pkcs8().expose())));
    }
}
