//! Claim templates and minting by splicing bytes: a backup token costs one signature, not JSON.
//!
//! A template is the primary's claims JSON with `iat`, `nbf`, `exp` and `jti` cut out, kept as the
//! primary's own bytes (no re-serialization, so numbers, escapes and member order survive), plus
//! a 12-byte [`TemplateMeta`] saying which time claims the primary carried and how they related.
//! The store persists both as plain bytes. Minting writes the header (pre-encoded per signer),
//! the fresh time claims and the template into one reusable buffer, base64url's it and signs.

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};

use crate::append;
use crate::limits;
use crate::token::alg::{SigningAlg, Typ};
use crate::token::b64;
use crate::token::json::{self, JsonError};
use crate::token::sign::{SIGNATURE_BYTES_MAX, SignError, Signer};

/// The time-varying claims (DESIGN §7): replaced at mint time, never copied from the primary.
pub const TIME_CLAIMS: [&str; 4] = ["iat", "nbf", "exp", "jti"];

/// Why a template could not be built or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The claims are not a strict JSON object.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// Over `limits::CLAIMS_TEMPLATE_BYTES_MAX`.
    #[error("claims template of {bytes} bytes exceeds {max} bytes")]
    TooLarge {
        /// Size found.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A time claim of the wrong JSON type (`iat`/`nbf`/`exp` must be non-negative integers,
    /// `jti` a string).
    #[error("time claim {claim:?} has the wrong type")]
    TimeClaimType {
        /// The claim.
        claim: &'static str,
    },
    /// `exp` not after `iat`, or a lifetime that does not fit `u32` seconds.
    #[error("token lifetime (exp - iat) out of range")]
    Lifetime,
    /// A stored template still contains a time claim (it was not built by [`build_template`]).
    #[error("template contains time claim {claim:?}")]
    ContainsTimeClaim {
        /// The claim.
        claim: &'static str,
    },
    /// Stored metadata with an unknown version or code.
    #[error("template metadata field {field} invalid")]
    Meta {
        /// The field.
        field: &'static str,
    },
}

/// Which time claims the primary's token carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeClaims {
    /// `iat` present.
    pub iat: bool,
    /// `nbf` present.
    pub nbf: bool,
    /// `exp` present.
    pub exp: bool,
    /// `jti` present.
    pub jti: bool,
}

impl TimeClaims {
    fn bits(self) -> u8 {
        u8::from(self.iat)
            | u8::from(self.nbf) << 1
            | u8::from(self.exp) << 2
            | u8::from(self.jti) << 3
    }
    fn from_bits(b: u8) -> Option<Self> {
        (b & !0x0f == 0).then_some(Self {
            iat: b & 1 != 0,
            nbf: b & 2 != 0,
            exp: b & 4 != 0,
            jti: b & 8 != 0,
        })
    }
}

/// Fixed-width facts about a template, stored next to its bytes as [`TemplateMeta::BYTES`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateMeta {
    /// Which time claims to mint.
    pub time_claims: TimeClaims,
    /// The primary's `typ` header, if it had one (copied, so verifiers pinning it still pass).
    pub typ: Option<Typ>,
    /// The algorithm the primary signed with; we sign with our key of the same type.
    pub alg: SigningAlg,
    /// `exp - iat` of the primary's token (0 when it had no `exp`).
    pub lifetime_secs: u32,
    /// `nbf - iat` of the primary's token (0 when it had no `nbf`); usually 0 or a small negative.
    pub nbf_offset_secs: i32,
}

const META_VERSION: u8 = 1;

impl TemplateMeta {
    /// Encoded size.
    pub const BYTES: usize = 12;

    /// Encodes as `[version, flags, typ, alg, lifetime_secs u32 LE, nbf_offset_secs i32 LE]`.
    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut out = [0u8; Self::BYTES];
        let l = self.lifetime_secs.to_le_bytes();
        let n = self.nbf_offset_secs.to_le_bytes();
        let head = [
            META_VERSION,
            self.time_claims.bits(),
            self.typ.map_or(0, Typ::code),
            self.alg.code(),
        ];
        for (dst, src) in out
            .iter_mut()
            .zip(head.iter().chain(l.iter()).chain(n.iter()))
        {
            *dst = *src;
        }
        out
    }

    /// The meta of a template as the store keeps it (`store::TokenTemplate`'s fields): the
    /// time-claim bit set, the primary's `typ` and `alg` names, lifetime and `nbf` offset.
    /// Fails closed on a name or bit this build does not know.
    pub fn from_stored(
        time_claims: u8,
        typ: &str,
        alg: &str,
        lifetime_secs: u32,
        nbf_offset_secs: i32,
    ) -> Result<Self, TemplateError> {
        Ok(Self {
            time_claims: TimeClaims::from_bits(time_claims)
                .ok_or(TemplateError::Meta { field: "flags" })?,
            typ: match typ {
                "" => None,
                t => Some(Typ::from_header(t).ok_or(TemplateError::Meta { field: "typ" })?),
            },
            alg: SigningAlg::from_name(alg).ok_or(TemplateError::Meta { field: "alg" })?,
            lifetime_secs,
            nbf_offset_secs,
        })
    }

    /// The time-claim bit set as the store keeps it (`store::model::TIME_CLAIM_*`).
    pub fn time_claim_bits(&self) -> u8 {
        self.time_claims.bits()
    }

    /// Decodes [`TemplateMeta::to_bytes`].
    pub fn from_bytes(b: &[u8; Self::BYTES]) -> Result<Self, TemplateError> {
        let [v, flags, typ, alg, l0, l1, l2, l3, n0, n1, n2, n3] = *b;
        if v != META_VERSION {
            return Err(TemplateError::Meta { field: "version" });
        }
        Ok(Self {
            time_claims: TimeClaims::from_bits(flags)
                .ok_or(TemplateError::Meta { field: "flags" })?,
            typ: match typ {
                0 => None,
                c => Some(Typ::from_code(c).ok_or(TemplateError::Meta { field: "typ" })?),
            },
            alg: SigningAlg::from_code(alg).ok_or(TemplateError::Meta { field: "alg" })?,
            lifetime_secs: u32::from_le_bytes([l0, l1, l2, l3]),
            nbf_offset_secs: i32::from_le_bytes([n0, n1, n2, n3]),
        })
    }
}

/// A template as the store keeps it: claims bytes (a JSON object without time claims) and meta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The claims JSON object, time claims removed, otherwise the primary's bytes.
    pub claims: Vec<u8>,
    /// Metadata.
    pub meta: TemplateMeta,
}

impl Template {
    /// Borrows for minting.
    pub fn as_ref(&self) -> TemplateRef<'_> {
        TemplateRef {
            claims: &self.claims,
            meta: self.meta,
        }
    }
}

/// A borrowed template, e.g. straight out of a mapped store record.
#[derive(Debug, Clone, Copy)]
pub struct TemplateRef<'a> {
    claims: &'a [u8],
    meta: TemplateMeta,
}

impl<'a> TemplateRef<'a> {
    /// Fully checks bytes of unknown origin: a strict JSON object, within the size bound, with no
    /// time claim (which would otherwise appear twice in the minted token).
    pub fn validated(claims: &'a [u8], meta: TemplateMeta) -> Result<Self, TemplateError> {
        check_size(claims)?;
        let obj = json::parse_object(claims, "template", limits::JOSE_JSON_DEPTH_MAX)?;
        if let Some(claim) = TIME_CLAIMS.into_iter().find(|c| obj.contains_key(*c)) {
            return Err(TemplateError::ContainsTimeClaim { claim });
        }
        if !claims.starts_with(b"{") || !claims.ends_with(b"}") {
            // build_template writes no surrounding whitespace; the splice relies on it.
            return Err(TemplateError::Json(JsonError::Syntax { field: "template" }));
        }
        Ok(Self { claims, meta })
    }

    /// Cheap check for bytes that [`build_template`] produced and the store has since proven by
    /// checksum (the hot path: no JSON parse). Checks only the size and the braces the splice
    /// needs; debug builds re-validate fully.
    pub fn from_stored(claims: &'a [u8], meta: TemplateMeta) -> Result<Self, TemplateError> {
        check_size(claims)?;
        if !claims.starts_with(b"{") || !claims.ends_with(b"}") || claims.len() < 2 {
            return Err(TemplateError::Json(JsonError::Syntax { field: "template" }));
        }
        debug_assert!(Self::validated(claims, meta).is_ok());
        Ok(Self { claims, meta })
    }

    /// The metadata.
    pub fn meta(&self) -> TemplateMeta {
        self.meta
    }

    /// The members between the braces (may be empty).
    fn members(&self) -> &'a [u8] {
        self.claims
            .get(1..self.claims.len().saturating_sub(1))
            .unwrap_or(b"")
    }
}

fn check_size(claims: &[u8]) -> Result<(), TemplateError> {
    if claims.len() > limits::CLAIMS_TEMPLATE_BYTES_MAX {
        return Err(TemplateError::TooLarge {
            bytes: claims.len(),
            max: limits::CLAIMS_TEMPLATE_BYTES_MAX,
        });
    }
    Ok(())
}

/// What the primary's token looked like, besides its claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryTokenShape {
    /// The primary's `typ` header.
    pub typ: Option<Typ>,
    /// The primary's signing algorithm, mapped to ours of the same type.
    pub alg: SigningAlg,
}

impl PrimaryTokenShape {
    /// The shape of a primary's token from its parsed header (`jws::parse_compact`; the capture
    /// path reads the primary's own response, so no signature check is needed to learn the shape).
    /// `None` when the primary signed with an algorithm we have no key type for (PS256): such a
    /// token cannot be reproduced, and its session is not servable in an outage.
    pub fn from_header(header: &crate::token::jws::Header) -> Option<Self> {
        let alg = match header.alg {
            crate::token::alg::Alg::EdDsa => SigningAlg::EdDsa,
            crate::token::alg::Alg::Es256 => SigningAlg::Es256,
            crate::token::alg::Alg::Rs256 => SigningAlg::Rs256,
            crate::token::alg::Alg::Ps256 => return None,
        };
        // An unknown typ is kept out rather than guessed: emit none, as for a missing one.
        let typ = header.typ.as_deref().and_then(Typ::from_header);
        Some(Self { typ, alg })
    }
}

/// Builds a template from a primary token's decoded claims JSON: cuts out `iat`, `nbf`, `exp` and
/// `jti` byte for byte, records which were present, `exp - iat` and `nbf - iat`. `recorded_at_secs`
/// stands in for `iat` when the primary sent none.
pub fn build_template(
    claims_json: &[u8],
    shape: PrimaryTokenShape,
    recorded_at_secs: u64,
) -> Result<Template, TemplateError> {
    if claims_json.len() > limits::CLAIMS_TEMPLATE_BYTES_MAX + 512 {
        return Err(TemplateError::TooLarge {
            bytes: claims_json.len(),
            max: limits::CLAIMS_TEMPLATE_BYTES_MAX,
        });
    }
    // Strict parse first: the byte scanner below may then assume well-formed JSON.
    let obj = json::parse_object(claims_json, "claims", limits::JOSE_JSON_DEPTH_MAX)?;
    let int = |claim: &'static str| -> Result<Option<u64>, TemplateError> {
        match obj.get(claim) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or(TemplateError::TimeClaimType { claim }),
        }
    };
    let iat = int("iat")?;
    let nbf = int("nbf")?;
    let exp = int("exp")?;
    let jti = match obj.get("jti") {
        None => false,
        Some(v) if v.is_string() => true,
        Some(_) => return Err(TemplateError::TimeClaimType { claim: "jti" }),
    };
    let base = iat.unwrap_or(recorded_at_secs);
    let lifetime_secs = match exp {
        None => 0,
        Some(exp) => exp
            .checked_sub(base)
            .filter(|l| *l > 0)
            .and_then(|l| u32::try_from(l).ok())
            .ok_or(TemplateError::Lifetime)?,
    };
    let nbf_offset_secs = match nbf {
        None => 0,
        Some(nbf) => i32::try_from(i128::from(nbf) - i128::from(base))
            .map_err(|_| TemplateError::Lifetime)?,
    };

    let mut claims = Vec::with_capacity(claims_json.len());
    claims.push(b'{');
    for (name, member) in TopLevelMembers::new(claims_json) {
        let decoded: String =
            serde_json::from_slice(name).map_err(|_| JsonError::Syntax { field: "claims" })?;
        if TIME_CLAIMS.contains(&decoded.as_str()) {
            continue;
        }
        if claims.len() > 1 {
            claims.push(b',');
        }
        claims.extend_from_slice(member);
    }
    claims.push(b'}');
    check_size(&claims)?;
    let meta = TemplateMeta {
        time_claims: TimeClaims {
            iat: iat.is_some(),
            nbf: nbf.is_some(),
            exp: exp.is_some(),
            jti,
        },
        typ: shape.typ,
        alg: shape.alg,
        lifetime_secs,
        nbf_offset_secs,
    };
    Ok(Template { claims, meta })
}

/// Iterates the top-level members of a JSON object already proven well-formed, yielding the raw
/// bytes of each member name (with quotes) and of the whole member (`"name":value`, whitespace
/// around the colon kept). Stops quietly on anything unexpected.
struct TopLevelMembers<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> TopLevelMembers<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut it = Self { bytes, pos: 0 };
        it.skip_ws();
        if it.peek() == Some(b'{') {
            it.pos += 1;
        } else {
            it.pos = bytes.len();
        }
        it
    }
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }
    /// Skips a string starting at the opening quote.
    fn skip_string(&mut self) {
        self.pos += 1;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                b'\\' => self.pos += 1,
                b'"' => return,
                _ => {}
            }
        }
    }
    /// Skips one value; nested containers by counting brackets outside strings.
    fn skip_value(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    self.skip_string();
                    if depth == 0 {
                        return;
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                    if depth == 0 {
                        self.pos += 1;
                        return;
                    }
                }
                b',' if depth == 0 => return,
                b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => return,
                _ => {}
            }
            self.pos += 1;
        }
    }
}

impl<'a> Iterator for TopLevelMembers<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        self.skip_ws();
        if self.peek() == Some(b',') {
            self.pos += 1;
            self.skip_ws();
        }
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.pos;
        self.skip_string();
        let name = self.bytes.get(start..self.pos)?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return None;
        }
        self.pos += 1;
        self.skip_ws();
        self.skip_value();
        Some((name, self.bytes.get(start..self.pos)?))
    }
}

/// Why minting failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The template asks for another algorithm than this minter's key.
    #[error("template wants {template} but this minter signs {signer}")]
    AlgMismatch {
        /// The template's algorithm.
        template: &'static str,
        /// The signer's.
        signer: &'static str,
    },
    /// Randomness for `jti` unavailable.
    #[error("random source failed while generating jti")]
    Random,
    /// The signer failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// The fresh values a minted token carries (for the audit record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MintedTimes {
    /// `iat` (always the mint time, present in the token only if the template had it).
    pub iat_secs: u64,
    /// `exp`, when minted.
    pub exp_secs: Option<u64>,
    /// `nbf`, when minted.
    pub nbf_secs: Option<u64>,
    /// `jti` bytes (base64url in the token), when minted.
    pub jti: Option<[u8; 16]>,
}

/// Mints tokens with one signer. One per worker thread, `&mut self`, no lock; the scratch
/// buffer is reused so steady-state minting allocates only inside the crypto library.
pub struct Minter {
    signer: Box<dyn Signer>,
    /// base64url headers, indexed by `Typ::code()` (0 = no `typ`).
    headers: [Vec<u8>; 5],
    scratch: Vec<u8>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("alg", &self.signer.alg())
            .field("kid", &self.signer.kid())
            .finish()
    }
}

impl Minter {
    /// A minter around `signer`; pre-encodes its headers.
    pub fn new(signer: Box<dyn Signer>) -> Self {
        let header = |typ: Option<Typ>| {
            let mut json = String::with_capacity(96);
            json.push_str(r#"{"alg":""#);
            json.push_str(signer.alg().name());
            if let Some(t) = typ {
                json.push_str(r#"","typ":""#);
                json.push_str(t.name());
            }
            json.push_str(r#"","kid":""#);
            json.push_str(signer.kid());
            json.push_str(r#""}"#);
            let mut out = Vec::new();
            b64::encode_into(json.as_bytes(), &mut out);
            out
        };
        let headers = [
            header(None),
            header(Some(Typ::Jwt)),
            header(Some(Typ::AtJwt)),
            header(Some(Typ::DpopJwt)),
            header(Some(Typ::SeceventJwt)),
        ];
        Self {
            signer,
            headers,
            scratch: Vec::with_capacity(4096),
            rng: SystemRandom::new(),
        }
    }

    /// The signer's `kid`.
    pub fn kid(&self) -> &str {
        self.signer.kid()
    }

    /// The signer's algorithm.
    pub fn alg(&self) -> SigningAlg {
        self.signer.alg()
    }

    /// Mints a token from `template` at `now_secs` into `out` (cleared first).
    pub fn mint(
        &mut self,
        template: TemplateRef<'_>,
        now_secs: u64,
        out: &mut Vec<u8>,
    ) -> Result<MintedTimes, MintError> {
        let mut jti = [0u8; 16];
        if template.meta.time_claims.jti {
            self.rng.fill(&mut jti).map_err(|_| MintError::Random)?;
        }
        self.mint_with_jti(template, now_secs, jti, out)
    }

    /// [`Minter::mint`] with a caller-chosen `jti` (tests and benches; production uses random).
    pub fn mint_with_jti(
        &mut self,
        template: TemplateRef<'_>,
        now_secs: u64,
        jti: [u8; 16],
        out: &mut Vec<u8>,
    ) -> Result<MintedTimes, MintError> {
        let meta = template.meta;
        if meta.alg != self.signer.alg() {
            return Err(MintError::AlgMismatch {
                template: meta.alg.name(),
                signer: self.signer.alg().name(),
            });
        }
        let tc = meta.time_claims;
        let nbf_secs = tc
            .nbf
            .then(|| now_secs.saturating_add_signed(i64::from(meta.nbf_offset_secs)));
        let exp_secs = tc
            .exp
            .then(|| now_secs.saturating_add(u64::from(meta.lifetime_secs)));

        // Payload: fresh time claims first, then the primary's members verbatim.
        let p = &mut self.scratch;
        p.clear();
        p.push(b'{');
        let mut first = true;
        let mut sep = |p: &mut Vec<u8>| {
            if !first {
                p.push(b',');
            }
            first = false;
        };
        if tc.iat {
            sep(p);
            p.extend_from_slice(b"\"iat\":");
            append::push_u64(p, now_secs);
        }
        if let Some(nbf) = nbf_secs {
            sep(p);
            p.extend_from_slice(b"\"nbf\":");
            append::push_u64(p, nbf);
        }
        if let Some(exp) = exp_secs {
            sep(p);
            p.extend_from_slice(b"\"exp\":");
            append::push_u64(p, exp);
        }
        if tc.jti {
            sep(p);
            p.extend_from_slice(b"\"jti\":\"");
            b64::encode_into(&jti, p);
            p.push(b'"');
        }
        let members = template.members();
        if !members.is_empty() {
            sep(p);
            p.extend_from_slice(members);
        }
        p.push(b'}');

        out.clear();
        let header = self
            .headers
            .get(usize::from(meta.typ.map_or(0, Typ::code)))
            .map_or(&b""[..], |h| &h[..]);
        out.reserve(
            header.len() + 2 + b64::encoded_len(p.len()) + b64::encoded_len(SIGNATURE_BYTES_MAX),
        );
        out.extend_from_slice(header);
        out.push(b'.');
        b64::encode_into(p, out);
        let mut sig = [0u8; SIGNATURE_BYTES_MAX];
        let n = self.signer.sign(out, &mut sig)?;
        out.push(b'.');
        b64::encode_into(sig.get(..n).unwrap_or(&[]), out);
        Ok(MintedTimes {
            iat_secs: now_secs,
            exp_secs,
            nbf_secs,
            jti: tc.jti.then_some(jti),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::sign::{Ed25519Backend, SigningKey};

    const SHAPE: PrimaryTokenShape = PrimaryTokenShape {
        typ: Some(Typ::AtJwt),
        alg: SigningAlg::EdDsa,
    };

    #[test]
    fn build_template_cuts_time_claims_byte_for_byte_and_records_them() {
        let claims = br#" { "iss" : "https://idp", "iat":1000,"exp":4600 , "nbf":990,"jti":"a\"b","nonce":"n\u00e9","big":123456789012345678901234567890,"cnf":{"jkt":"x","exp":1},"aud":["a","b"] } "#;
        let t = build_template(claims, SHAPE, 5).unwrap();
        assert_eq!(
            std::str::from_utf8(&t.claims).unwrap(),
            r#"{"iss" : "https://idp","nonce":"n\u00e9","big":123456789012345678901234567890,"cnf":{"jkt":"x","exp":1},"aud":["a","b"]}"#
        );
        assert_eq!(
            t.meta.time_claims,
            TimeClaims {
                iat: true,
                nbf: true,
                exp: true,
                jti: true
            }
        );
        assert_eq!(t.meta.lifetime_secs, 3600);
        assert_eq!(t.meta.nbf_offset_secs, -10);
        assert!(TemplateRef::validated(&t.claims, t.meta).is_ok());
    }

    #[test]
    fn build_template_without_iat_uses_recorded_time_and_refuses_bad_types() {
        let t = build_template(br#"{"sub":"u","exp":1300}"#, SHAPE, 1000).unwrap();
        assert_eq!(
            t.meta.time_claims,
            TimeClaims {
                iat: false,
                nbf: false,
                exp: true,
                jti: false
            }
        );
        assert_eq!(t.meta.lifetime_secs, 300);
        assert_eq!(
            build_template(br#"{"exp":"soon"}"#, SHAPE, 0),
            Err(TemplateError::TimeClaimType { claim: "exp" })
        );
        assert_eq!(
            build_template(br#"{"iat":10,"exp":5}"#, SHAPE, 0),
            Err(TemplateError::Lifetime)
        );
        assert!(matches!(
            build_template(br#"{"a":1,"a":2}"#, SHAPE, 0),
            Err(TemplateError::Json(_))
        ));
    }

    #[test]
    fn meta_round_trips_and_refuses_unknown_codes() {
        let m = TemplateMeta {
            time_claims: TimeClaims {
                iat: true,
                nbf: false,
                exp: true,
                jti: true,
            },
            typ: None,
            alg: SigningAlg::Rs256,
            lifetime_secs: 3600,
            nbf_offset_secs: -300,
        };
        assert_eq!(TemplateMeta::from_bytes(&m.to_bytes()), Ok(m));
        let mut b = m.to_bytes();
        b[3] = 9;
        assert_eq!(
            TemplateMeta::from_bytes(&b),
            Err(TemplateError::Meta { field: "alg" })
        );
        b[0] = 2;
        assert_eq!(
            TemplateMeta::from_bytes(&b),
            Err(TemplateError::Meta { field: "version" })
        );
    }

    #[test]
    fn stored_template_with_a_time_claim_is_refused_when_validated() {
        let meta = build_template(b"{}", SHAPE, 0).unwrap().meta;
        assert_eq!(
            TemplateRef::validated(br#"{"a":1,"exp":2}"#, meta).map(|_| ()),
            Err(TemplateError::ContainsTimeClaim { claim: "exp" })
        );
    }

    #[test]
    fn mint_with_empty_template_and_alg_mismatch() {
        let key = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let mut m = Minter::new(key.signer(Ed25519Backend::AwsLc).unwrap());
        let t = build_template(br#"{"iat":1,"exp":61}"#, SHAPE, 0).unwrap();
        let mut out = Vec::new();
        m.mint(t.as_ref(), 100, &mut out).unwrap();
        let payload = out.split(|b| *b == b'.').nth(1).unwrap();
        assert_eq!(
            b64::decode(payload, "p").unwrap(),
            br#"{"iat":100,"exp":160}"#
        );
        let rs = build_template(
            b"{}",
            PrimaryTokenShape {
                typ: None,
                alg: SigningAlg::Rs256,
            },
            0,
        )
        .unwrap();
        assert_eq!(
            m.mint(rs.as_ref(), 100, &mut out),
            Err(MintError::AlgMismatch {
                template: "RS256",
                signer: "EdDSA"
            })
        );
    }

    #[test]
    fn minting_reuses_the_output_and_scratch_buffers() {
        let key = SigningKey::generate(SigningAlg::EdDsa).unwrap();
        let mut m = Minter::new(key.signer(Ed25519Backend::Dalek).unwrap());
        let t = build_template(
            br#"{"sub":"s","iat":1,"exp":61,"jti":"x","aud":["a","b"]}"#,
            SHAPE,
            0,
        )
        .unwrap();
        let mut out = Vec::new();
        m.mint(t.as_ref(), 100, &mut out).unwrap();
        let (out_ptr, out_cap) = (out.as_ptr(), out.capacity());
        let (scratch_ptr, scratch_cap) = (m.scratch.as_ptr(), m.scratch.capacity());
        for now in 101..200 {
            m.mint(t.as_ref(), now, &mut out).unwrap();
        }
        // Same allocations throughout: steady-state minting allocates nothing of its own.
        assert_eq!((out.as_ptr(), out.capacity()), (out_ptr, out_cap));
        assert_eq!(
            (m.scratch.as_ptr(), m.scratch.capacity()),
            (scratch_ptr, scratch_cap)
        );
    }
}
