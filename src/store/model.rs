//! Domain types the store takes in: a session snapshot, an artifact record, and the identity
//! that names a session. Plain Rust values with no on-disk concerns; `format` converts them.

/// The five identifiers that name one session (DESIGN §3): a snapshot is per
/// device-user-app-resource within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionIdentity {
    /// Tenant (directory) the user signed in to.
    pub tenant: String,
    /// User identifier (`sub` / `oid`).
    pub user: String,
    /// Device identifier, strongest available (DPoP `jkt`, mTLS thumbprint, header, family).
    pub device: String,
    /// Client application (`client_id`).
    pub app: String,
    /// Resource: audience, resource indicator or normalized scope set.
    pub resource: String,
}

impl SessionIdentity {
    /// The identity borrowed, for lookups.
    pub fn as_ref(&self) -> SessionIdentityRef<'_> {
        SessionIdentityRef {
            tenant: &self.tenant,
            user: &self.user,
            device: &self.device,
            app: &self.app,
            resource: &self.resource,
        }
    }
}

/// [`SessionIdentity`] borrowed: what a lookup needs, built without allocating (the outage
/// path takes four of the five identifiers from the artifact record it just read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionIdentityRef<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// User.
    pub user: &'a str,
    /// Device.
    pub device: &'a str,
    /// Application.
    pub app: &'a str,
    /// Resource.
    pub resource: &'a str,
}

/// A risk level as the primary reported it at sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RiskLevel {
    /// The primary did not report one.
    Unknown,
    /// No risk detected.
    None,
    /// Low risk.
    Low,
    /// Medium risk.
    Medium,
    /// High risk.
    High,
}

/// Device compliance as of the sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceCompliance {
    /// Not reported.
    Unknown,
    /// Reported compliant.
    Compliant,
    /// Reported not compliant.
    NotCompliant,
}

/// A token as the primary issued it, minus its time-varying claims, ready to be re-minted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenTemplate {
    /// The claims object as pre-serialized JSON, without `iat`, `nbf`, `exp`, `jti`, so
    /// minting splices time claims in and never re-encodes the rest.
    pub claims_json: Vec<u8>,
    /// Which time-varying claims the primary's token carried (bit set of `TIME_CLAIM_*`).
    pub time_claims: u8,
    /// Lifetime (`exp - iat`) the primary gave this token.
    pub lifetime_secs: u32,
    /// JWS algorithm the primary used (`RS256`, `ES256`, `EdDSA`, ...).
    pub alg: String,
    /// JOSE `typ` header the primary used (`at+jwt`, `JWT`), empty if absent.
    pub typ: String,
    /// `nbf - iat` as the primary issued it (0 when it had no `nbf`; often negative for clock
    /// skew allowance), so a minted token keeps the same shape.
    pub nbf_offset_secs: i32,
}

/// The template carried `iat`.
pub const TIME_CLAIM_IAT: u8 = 1;
/// The template carried `nbf`.
pub const TIME_CLAIM_NBF: u8 = 2;
/// The template carried `exp`.
pub const TIME_CLAIM_EXP: u8 = 4;
/// The template carried `jti`.
pub const TIME_CLAIM_JTI: u8 = 8;

/// The state of one successful authentication for one device-user-app-resource (DESIGN §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionSnapshot {
    /// Which session this is.
    pub identity: SessionIdentity,
    /// The user acts in their home tenant (not a B2B guest, not B2C).
    pub home_tenant: bool,
    /// `auth_time` of the primary's authentication, unix seconds.
    pub auth_time_secs: i64,
    /// When backstop recorded this snapshot, unix seconds.
    pub recorded_at_secs: i64,
    /// When this snapshot stops being servable, unix seconds.
    pub expires_at_secs: i64,
    /// Authentication methods (`amr`).
    pub amr: Vec<String>,
    /// Authentication context class (`acr`), empty if absent.
    pub acr: String,
    /// Group memberships as of the sign-in.
    pub groups: Vec<String>,
    /// Role assignments as of the sign-in.
    pub roles: Vec<String>,
    /// Sign-in risk as of the sign-in.
    pub sign_in_risk: RiskLevel,
    /// User risk as of the sign-in.
    pub user_risk: RiskLevel,
    /// Device platform (`iOS`, `Windows`, ...), empty if unknown.
    pub device_platform: String,
    /// Device compliance as of the sign-in.
    pub device_compliance: DeviceCompliance,
    /// DPoP key thumbprint (`jkt`) when the session is sender-constrained.
    pub dpop_jkt: Option<String>,
    /// The access-token template.
    pub access_token: TokenTemplate,
    /// The id-token template, when the primary issued one.
    pub id_token: Option<TokenTemplate>,
    /// Scopes granted (the response `scope`).
    pub scopes: Vec<String>,
    /// `token_type` of the response (`Bearer`, `DPoP`).
    pub token_type: String,
}

/// What kind of credential an artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// An OAuth refresh token.
    RefreshToken,
    /// The primary's session cookie.
    SessionCookie,
    /// A workload's client secret.
    ClientSecret,
}

impl ArtifactKind {
    /// The byte that stands for this kind on disk and in the digest input.
    pub const fn code(self) -> u8 {
        match self {
            ArtifactKind::RefreshToken => 1,
            ArtifactKind::SessionCookie => 2,
            ArtifactKind::ClientSecret => 3,
        }
    }

    /// The kind for an on-disk byte, if it names one.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ArtifactKind::RefreshToken),
            2 => Some(ArtifactKind::SessionCookie),
            3 => Some(ArtifactKind::ClientSecret),
            _ => None,
        }
    }
}

/// A keyed digest of a credential; the raw credential is never stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArtifactDigest(pub [u8; 32]);

impl std::fmt::Debug for ArtifactDigest {
    // A digest is not secret, but a short prefix is enough to recognise one in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArtifactDigest(")?;
        for b in self.0.iter().take(6) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

impl ArtifactDigest {
    /// Lowercase hex of the full digest (for `inspect --artifact`).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let hex = std::str::from_utf8(pair).ok()?;
            *o = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(ArtifactDigest(out))
    }
}

/// Maps a credential to the session it proves (DESIGN §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArtifactRecord {
    /// What the credential is.
    pub kind: ArtifactKind,
    /// Keyed digest of the credential.
    pub digest: ArtifactDigest,
    /// Tenant of the session.
    pub tenant: String,
    /// User of the session.
    pub user: String,
    /// Device of the session.
    pub device: String,
    /// Application of the session.
    pub app: String,
    /// The resource a refresh request that names none means: the resource of the session
    /// captured with the response that issued this credential. Empty when unknown.
    pub resource: String,
    /// Refresh-token family: an id given when a grant is first captured and carried through
    /// every rotation (the device identity of last resort, and the revocation subject
    /// "session"). Empty for kinds without families.
    pub family: String,
    /// How the client authenticated to the primary when this credential was issued.
    pub client_auth: ClientAuthMethod,
    /// Whether this credential is still the one to present.
    pub state: ArtifactState,
    /// When `state` last changed (superseded or revoked), unix seconds; 0 while current.
    pub state_changed_at_secs: i64,
    /// When the primary issued the credential, unix seconds.
    pub issued_at_secs: i64,
    /// When this record stops being servable, unix seconds.
    pub expires_at_secs: i64,
}

/// Client authentication method a client used at the primary's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAuthMethod {
    /// Not recorded (records written before format 2, or kinds without clients).
    Unknown,
    /// A public client: `client_id` only.
    None,
    /// `client_secret_basic`.
    SecretBasic,
    /// `client_secret_post`.
    SecretPost,
    /// `private_key_jwt` / `client_secret_jwt` (an assertion).
    JwtAssertion,
}

impl ClientAuthMethod {
    /// The byte that stands for this method on disk.
    pub const fn code(self) -> u8 {
        match self {
            ClientAuthMethod::Unknown => 0,
            ClientAuthMethod::None => 1,
            ClientAuthMethod::SecretBasic => 2,
            ClientAuthMethod::SecretPost => 3,
            ClientAuthMethod::JwtAssertion => 4,
        }
    }

    /// The method for an on-disk byte; unknown bytes read as `Unknown` (fail closed: the
    /// outage path serves no client whose method it does not know).
    pub const fn from_code(code: u8) -> Self {
        match code {
            1 => ClientAuthMethod::None,
            2 => ClientAuthMethod::SecretBasic,
            3 => ClientAuthMethod::SecretPost,
            4 => ClientAuthMethod::JwtAssertion,
            _ => ClientAuthMethod::Unknown,
        }
    }
}

/// Lifecycle of an artifact (DESIGN §3: a rotation replaces the digest; an older refresh
/// token never works at the backup, and is answered `invalid_grant` as the primary would).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactState {
    /// The latest credential the primary issued for its session.
    Current,
    /// Rotated out by the primary; `successor` is the digest of the credential that replaced
    /// it (followed to revoke the whole family when the primary refuses a rotated-out token).
    Superseded {
        /// Digest of the replacing credential.
        successor: ArtifactDigest,
    },
    /// Refused by the primary (`invalid_grant`) or revoked by an operator.
    Revoked,
}

impl ArtifactState {
    /// The byte that stands for this state on disk (the successor is stored beside it).
    pub const fn code(self) -> u8 {
        match self {
            ArtifactState::Current => 0,
            ArtifactState::Superseded { .. } => 1,
            ArtifactState::Revoked => 2,
        }
    }
}

/// A revocation event as the store keeps it (DESIGN §6): plain data, mapped 1:1 from the
/// revocation module's event (`revocation::RevocationEvent::codes` gives the three codes). The
/// store does not interpret the codes; it keeps events durable, idempotent by `id`, and drops
/// them after `expires_at_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RevocationRecord {
    /// Unique event id (admin-chosen, SET `jti`, or derived); the record's identity.
    pub id: String,
    /// Event kind code (owned by the revocation module).
    pub kind: u8,
    /// Subject kind code (user, device, session, app; owned by the revocation module).
    pub subject_kind: u8,
    /// Subject identifier.
    pub subject: String,
    /// When the event happened, unix seconds.
    pub time_secs: i64,
    /// Source code (admin API, Shared Signals, primary; owned by the revocation module).
    pub source: u8,
    /// When backstop recorded the event, unix seconds.
    pub recorded_at_secs: i64,
    /// When the event no longer matters (no snapshot recorded before it can still be live),
    /// unix seconds; compaction drops it from then on.
    pub expires_at_secs: i64,
}
