//! Token engine: everything that signs or checks a JOSE object (DESIGN §7).
//!
//! The codemap, bottom up:
//! - [`b64`] and [`json`]: strict base64url and strict JSON (depth bound, duplicate keys refused),
//!   the two parsers every piece of outside JOSE input goes through.
//! - [`alg`]: the closed set of algorithms and `typ` values we know.
//! - [`jwk`]: public keys as JWKs, RFC 7638 thumbprints.
//! - [`sign`]: the per-worker [`sign::Signer`] trait and its backends (Ed25519 through aws-lc-rs or
//!   ed25519-dalek; ES256 and RS256 through aws-lc-rs).
//! - [`keyring`]: key files in the data directory, rotation, `backstop keygen`.
//! - [`mint`]: claim templates and minting by splicing bytes.
//! - [`jws`]: JWS compact parsing and verification of tokens from outside against a key set.
//! - [`jwks`]: key sets, merging ours with the primary's, and the remote-JWKS cache state machine.
//! - [`dpop`]: DPoP proof verification (RFC 9449) and its replay cache.
//!
//! Invariant: `token` does no I/O except the keyring's files, reads no clock (every check takes
//! `now_secs`), and knows nothing of HTTP beyond the method and URL strings DPoP binds to.

pub mod alg;
pub mod b64;
pub mod dpop;
pub mod json;
pub mod jwk;
pub mod jwks;
pub mod jws;
pub mod keyring;
pub mod mint;
pub mod sign;
