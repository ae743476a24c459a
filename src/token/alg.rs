//! The closed sets of JWS algorithms and `typ` values backstop knows; everything else is refused.
//!
//! A closed enum means `none`, `HS256` and any name we have not thought about never reach a
//! verifier (RFC 8725 §3.1, §3.2): there is no code path that could accept them.

/// A JWS algorithm we verify. Signing uses the subset [`SigningAlg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// Ed25519 (RFC 8037), written `EdDSA` or, per RFC 9864, `Ed25519`.
    EdDsa,
    /// ECDSA P-256 with SHA-256, signature as fixed-width `r || s` (RFC 7518 §3.4).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
    Rs256,
    /// RSASSA-PSS with SHA-256 and MGF1-SHA-256 (RFC 7518 §3.5).
    Ps256,
}

impl Alg {
    /// Reads a header's `alg`. `EdDSA` and `Ed25519` both mean Ed25519 here (FIELD-NOTES).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" | "Ed25519" => Some(Self::EdDsa),
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            "PS256" => Some(Self::Ps256),
            _ => None,
        }
    }

    /// The name we emit. `EdDSA`, not `Ed25519`: PyJWT, authlib and fast-jwt reject the newer name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
        }
    }
}

/// An algorithm backstop signs with, each with its own keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlg {
    /// Ed25519: the fast path.
    EdDsa,
    /// ECDSA P-256.
    Es256,
    /// RSA 2048 PKCS#1 v1.5: OIDC Core's default for ID tokens.
    Rs256,
}

impl SigningAlg {
    /// Every signing algorithm, for loops over keyrings.
    pub const ALL: [SigningAlg; 3] = [Self::EdDsa, Self::Es256, Self::Rs256];

    /// The verification algorithm of the same name.
    pub const fn alg(self) -> Alg {
        match self {
            Self::EdDsa => Alg::EdDsa,
            Self::Es256 => Alg::Es256,
            Self::Rs256 => Alg::Rs256,
        }
    }

    /// The header name we emit.
    pub const fn name(self) -> &'static str {
        self.alg().name()
    }

    /// Parses a CLI or config spelling (`EdDSA`, `Ed25519`, `ES256`, `RS256`, any case).
    pub fn from_name(name: &str) -> Option<Self> {
        // No allocation: this runs per minted token (the stored template names its alg).
        [
            ("EdDSA", Self::EdDsa),
            ("Ed25519", Self::EdDsa),
            ("ES256", Self::Es256),
            ("RS256", Self::Rs256),
        ]
        .into_iter()
        .find_map(|(n, alg)| n.eq_ignore_ascii_case(name).then_some(alg))
    }

    /// Stable one-byte code for storage in a template's metadata.
    pub const fn code(self) -> u8 {
        match self {
            Self::EdDsa => 1,
            Self::Es256 => 2,
            Self::Rs256 => 3,
        }
    }

    /// Inverse of [`SigningAlg::code`].
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::EdDsa),
            2 => Some(Self::Es256),
            3 => Some(Self::Rs256),
            _ => None,
        }
    }

    /// Directory name of this algorithm's keyring under `<data_dir>/keys/`.
    pub const fn dir_name(self) -> &'static str {
        match self {
            Self::EdDsa => "eddsa",
            Self::Es256 => "es256",
            Self::Rs256 => "rs256",
        }
    }
}

/// A token type (`typ` header). Verifiers pin it: a DPoP proof is never an access token, a SET is
/// never an ID token (RFC 8725 §3.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Typ {
    /// `JWT`: ID tokens and most providers' access tokens.
    Jwt,
    /// `at+jwt`: RFC 9068 access tokens.
    AtJwt,
    /// `dpop+jwt`: RFC 9449 proofs.
    DpopJwt,
    /// `secevent+jwt`: RFC 8417 Security Event Tokens.
    SeceventJwt,
}

impl Typ {
    /// Reads a `typ` header value. Media types compare case-insensitively and may carry the
    /// `application/` prefix (RFC 7515 §4.1.9).
    pub fn from_header(value: &str) -> Option<Self> {
        let v = value.trim();
        let short = match v.get(..12) {
            Some(p) if p.eq_ignore_ascii_case("application/") => v.get(12..).unwrap_or(""),
            _ => v,
        };
        [Self::Jwt, Self::AtJwt, Self::DpopJwt, Self::SeceventJwt]
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(short))
    }

    /// The value we emit.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Jwt => "JWT",
            Self::AtJwt => "at+jwt",
            Self::DpopJwt => "dpop+jwt",
            Self::SeceventJwt => "secevent+jwt",
        }
    }

    /// Stable one-byte code for storage.
    pub const fn code(self) -> u8 {
        match self {
            Self::Jwt => 1,
            Self::AtJwt => 2,
            Self::DpopJwt => 3,
            Self::SeceventJwt => 4,
        }
    }

    /// Inverse of [`Typ::code`].
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Jwt),
            2 => Some(Self::AtJwt),
            3 => Some(Self::DpopJwt),
            4 => Some(Self::SeceventJwt),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_and_hmac_and_unknown_names_are_not_algorithms() {
        for name in [
            "none", "None", "HS256", "HS512", "RS512", "ES256K", "eddsa", "",
        ] {
            assert_eq!(Alg::from_name(name), None, "{name}");
        }
        assert_eq!(Alg::from_name("Ed25519"), Some(Alg::EdDsa));
        assert_eq!(Alg::EdDsa.name(), "EdDSA");
    }

    #[test]
    fn typ_accepts_media_type_spellings_only_of_known_types() {
        assert_eq!(Typ::from_header("application/AT+JWT"), Some(Typ::AtJwt));
        assert_eq!(Typ::from_header("jwt"), Some(Typ::Jwt));
        assert_eq!(Typ::from_header("dpop+jwt"), Some(Typ::DpopJwt));
        assert_eq!(Typ::from_header("at+jwt2"), None);
        assert_eq!(Typ::from_header("JOSE"), None);
    }

    #[test]
    fn codes_round_trip() {
        for a in SigningAlg::ALL {
            assert_eq!(SigningAlg::from_code(a.code()), Some(a));
        }
        for t in [Typ::Jwt, Typ::AtJwt, Typ::DpopJwt, Typ::SeceventJwt] {
            assert_eq!(Typ::from_code(t.code()), Some(t));
        }
        assert_eq!(SigningAlg::from_code(0), None);
    }
}
