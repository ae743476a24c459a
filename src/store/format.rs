//! On-disk record types (rkyv archives) and the format version, kept apart from the domain
//! types in `model` so a change of either is a visible, written-out conversion.
//!
//! Every integer here is fixed-width. The rkyv features that decide the layout (little endian,
//! aligned, 32-bit relative pointers) are pinned in `Cargo.toml`; changing them, or any field
//! below, changes the format and must bump [`FORMAT_VERSION`] (see `docs/store-format.md`).

use rkyv::{Archive, Deserialize, Serialize};

use super::model::{
    ArtifactDigest, ArtifactKind, ArtifactRecord, ArtifactState, ClientAuthMethod,
    DeviceCompliance, RiskLevel, SessionIdentity, SessionSnapshot, TokenTemplate,
};

/// Format version written in the `FORMAT` file, every WAL header and every segment header.
/// A directory or file with a larger one is refused (written by a newer backstop).
pub const FORMAT_VERSION: u32 = 2;

/// Alignment of every archived record: rkyv's `AlignedVec` alignment, a multiple of the
/// largest alignment in these types (8, for `i64`).
pub const RECORD_ALIGN: usize = 16;

/// Record kinds as they appear in WAL records and segment index slots.
pub mod kind {
    /// A session snapshot (`DiskSession`).
    pub const SESSION: u8 = 1;
    /// An artifact record (`DiskArtifact`).
    pub const ARTIFACT: u8 = 2;
    /// A removal: hides older records of the same key. WAL and memory only, never in segments.
    pub const TOMBSTONE: u8 = 3;
}

/// A token template on disk.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DiskTemplate {
    /// Pre-serialized JSON claims.
    pub claims_json: Vec<u8>,
    /// Bit set of `model::TIME_CLAIM_*`.
    pub time_claims: u8,
    /// Lifetime in seconds.
    pub lifetime_secs: u32,
    /// JWS algorithm.
    pub alg: String,
    /// JOSE `typ`.
    pub typ: String,
    /// `nbf - iat` as the primary issued it.
    pub nbf_offset_secs: i32,
}

/// A session snapshot on disk. Field order is the layout; see the format log before editing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DiskSession {
    /// Tenant.
    pub tenant: String,
    /// User.
    pub user: String,
    /// Device.
    pub device: String,
    /// App (`client_id`).
    pub app: String,
    /// Resource.
    pub resource: String,
    /// Home-tenant flag.
    pub home_tenant: bool,
    /// `auth_time`, unix seconds.
    pub auth_time_secs: i64,
    /// Recorded at, unix seconds.
    pub recorded_at_secs: i64,
    /// Expires at, unix seconds.
    pub expires_at_secs: i64,
    /// `amr`.
    pub amr: Vec<String>,
    /// `acr`, empty if absent.
    pub acr: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// `RiskLevel` code.
    pub sign_in_risk: u8,
    /// `RiskLevel` code.
    pub user_risk: u8,
    /// Device platform.
    pub device_platform: String,
    /// `DeviceCompliance` code.
    pub device_compliance: u8,
    /// DPoP `jkt`.
    pub dpop_jkt: Option<String>,
    /// Access-token template.
    pub access_token: DiskTemplate,
    /// Id-token template.
    pub id_token: Option<DiskTemplate>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// `token_type`.
    pub token_type: String,
}

/// An artifact record on disk.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DiskArtifact {
    /// `ArtifactKind` code.
    pub kind: u8,
    /// The full keyed digest; compared in constant time on lookup.
    pub digest: [u8; 32],
    /// Tenant.
    pub tenant: String,
    /// User.
    pub user: String,
    /// Device.
    pub device: String,
    /// App.
    pub app: String,
    /// Resource a request naming none means.
    pub resource: String,
    /// Refresh-token family.
    pub family: String,
    /// `ClientAuthMethod` code.
    pub client_auth: u8,
    /// `ArtifactState` code.
    pub state: u8,
    /// Successor digest when superseded, zero otherwise.
    pub successor: [u8; 32],
    /// When the state last changed, unix seconds.
    pub state_changed_at_secs: i64,
    /// Issued at, unix seconds.
    pub issued_at_secs: i64,
    /// Expires at, unix seconds.
    pub expires_at_secs: i64,
}

const fn risk_code(r: RiskLevel) -> u8 {
    match r {
        RiskLevel::Unknown => 0,
        RiskLevel::None => 1,
        RiskLevel::Low => 2,
        RiskLevel::Medium => 3,
        RiskLevel::High => 4,
    }
}

/// Unknown codes read back as `Unknown`: a record that passed its checksum was written by us,
/// so this only matters across a future format change.
const fn risk_from_code(c: u8) -> RiskLevel {
    match c {
        1 => RiskLevel::None,
        2 => RiskLevel::Low,
        3 => RiskLevel::Medium,
        4 => RiskLevel::High,
        _ => RiskLevel::Unknown,
    }
}

const fn compliance_code(c: DeviceCompliance) -> u8 {
    match c {
        DeviceCompliance::Unknown => 0,
        DeviceCompliance::Compliant => 1,
        DeviceCompliance::NotCompliant => 2,
    }
}

const fn compliance_from_code(c: u8) -> DeviceCompliance {
    match c {
        1 => DeviceCompliance::Compliant,
        2 => DeviceCompliance::NotCompliant,
        _ => DeviceCompliance::Unknown,
    }
}

fn template_to_disk(t: &TokenTemplate) -> DiskTemplate {
    DiskTemplate {
        claims_json: t.claims_json.clone(),
        time_claims: t.time_claims,
        lifetime_secs: t.lifetime_secs,
        alg: t.alg.clone(),
        typ: t.typ.clone(),
        nbf_offset_secs: t.nbf_offset_secs,
    }
}

fn template_from_archived(t: &ArchivedDiskTemplate) -> TokenTemplate {
    TokenTemplate {
        claims_json: t.claims_json.as_slice().to_vec(),
        time_claims: t.time_claims,
        lifetime_secs: t.lifetime_secs.to_native(),
        alg: t.alg.as_str().to_owned(),
        typ: t.typ.as_str().to_owned(),
        nbf_offset_secs: t.nbf_offset_secs.to_native(),
    }
}

fn strings(v: &rkyv::vec::ArchivedVec<rkyv::string::ArchivedString>) -> Vec<String> {
    v.iter().map(|s| s.as_str().to_owned()).collect()
}

fn template_into_disk(t: TokenTemplate) -> DiskTemplate {
    DiskTemplate {
        claims_json: t.claims_json,
        time_claims: t.time_claims,
        lifetime_secs: t.lifetime_secs,
        alg: t.alg,
        typ: t.typ,
        nbf_offset_secs: t.nbf_offset_secs,
    }
}

impl DiskSession {
    /// The on-disk form of a snapshot, moving its strings instead of copying them (the write
    /// path's allocations are most of ingest's cost).
    pub fn from_owned(s: SessionSnapshot) -> Self {
        DiskSession {
            tenant: s.identity.tenant,
            user: s.identity.user,
            device: s.identity.device,
            app: s.identity.app,
            resource: s.identity.resource,
            home_tenant: s.home_tenant,
            auth_time_secs: s.auth_time_secs,
            recorded_at_secs: s.recorded_at_secs,
            expires_at_secs: s.expires_at_secs,
            amr: s.amr,
            acr: s.acr,
            groups: s.groups,
            roles: s.roles,
            sign_in_risk: risk_code(s.sign_in_risk),
            user_risk: risk_code(s.user_risk),
            device_platform: s.device_platform,
            device_compliance: compliance_code(s.device_compliance),
            dpop_jkt: s.dpop_jkt,
            access_token: template_into_disk(s.access_token),
            id_token: s.id_token.map(template_into_disk),
            scopes: s.scopes,
            token_type: s.token_type,
        }
    }

    /// The on-disk form of a snapshot.
    pub fn from_snapshot(s: &SessionSnapshot) -> Self {
        DiskSession {
            tenant: s.identity.tenant.clone(),
            user: s.identity.user.clone(),
            device: s.identity.device.clone(),
            app: s.identity.app.clone(),
            resource: s.identity.resource.clone(),
            home_tenant: s.home_tenant,
            auth_time_secs: s.auth_time_secs,
            recorded_at_secs: s.recorded_at_secs,
            expires_at_secs: s.expires_at_secs,
            amr: s.amr.clone(),
            acr: s.acr.clone(),
            groups: s.groups.clone(),
            roles: s.roles.clone(),
            sign_in_risk: risk_code(s.sign_in_risk),
            user_risk: risk_code(s.user_risk),
            device_platform: s.device_platform.clone(),
            device_compliance: compliance_code(s.device_compliance),
            dpop_jkt: s.dpop_jkt.clone(),
            access_token: template_to_disk(&s.access_token),
            id_token: s.id_token.as_ref().map(template_to_disk),
            scopes: s.scopes.clone(),
            token_type: s.token_type.clone(),
        }
    }
}

impl ArchivedDiskSession {
    /// Whether this record belongs to exactly `id` (all five identifiers, byte for byte).
    pub fn is_identity(&self, id: &SessionIdentity) -> bool {
        self.tenant.as_str() == id.tenant
            && self.user.as_str() == id.user
            && self.device.as_str() == id.device
            && self.app.as_str() == id.app
            && self.resource.as_str() == id.resource
    }

    /// Expiry, unix seconds.
    pub fn expires_at_secs(&self) -> i64 {
        self.expires_at_secs.to_native()
    }

    /// Copies the record out into a domain value (for `inspect` and tests; the serving path
    /// reads the archived fields in place).
    pub fn to_snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            identity: SessionIdentity {
                tenant: self.tenant.as_str().to_owned(),
                user: self.user.as_str().to_owned(),
                device: self.device.as_str().to_owned(),
                app: self.app.as_str().to_owned(),
                resource: self.resource.as_str().to_owned(),
            },
            home_tenant: self.home_tenant,
            auth_time_secs: self.auth_time_secs.to_native(),
            recorded_at_secs: self.recorded_at_secs.to_native(),
            expires_at_secs: self.expires_at_secs.to_native(),
            amr: strings(&self.amr),
            acr: self.acr.as_str().to_owned(),
            groups: strings(&self.groups),
            roles: strings(&self.roles),
            sign_in_risk: risk_from_code(self.sign_in_risk),
            user_risk: risk_from_code(self.user_risk),
            device_platform: self.device_platform.as_str().to_owned(),
            device_compliance: compliance_from_code(self.device_compliance),
            dpop_jkt: self.dpop_jkt.as_ref().map(|s| s.as_str().to_owned()),
            access_token: template_from_archived(&self.access_token),
            id_token: self.id_token.as_ref().map(template_from_archived),
            scopes: strings(&self.scopes),
            token_type: self.token_type.as_str().to_owned(),
        }
    }
}

impl DiskArtifact {
    /// The on-disk form of an artifact record.
    pub fn from_record(a: &ArtifactRecord) -> Self {
        DiskArtifact {
            kind: a.kind.code(),
            digest: a.digest.0,
            tenant: a.tenant.clone(),
            user: a.user.clone(),
            device: a.device.clone(),
            app: a.app.clone(),
            resource: a.resource.clone(),
            family: a.family.clone(),
            client_auth: a.client_auth.code(),
            state: a.state.code(),
            successor: match a.state {
                ArtifactState::Superseded { successor } => successor.0,
                ArtifactState::Current | ArtifactState::Revoked => [0; 32],
            },
            state_changed_at_secs: a.state_changed_at_secs,
            issued_at_secs: a.issued_at_secs,
            expires_at_secs: a.expires_at_secs,
        }
    }
}

impl ArchivedDiskArtifact {
    /// Whether this record holds exactly `digest`, compared in constant time.
    pub fn is_digest(&self, digest: &ArtifactDigest) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.digest.ct_eq(&digest.0))
    }

    /// Expiry, unix seconds.
    pub fn expires_at_secs(&self) -> i64 {
        self.expires_at_secs.to_native()
    }

    /// The record's state. An unknown state byte reads as `Revoked` (fail closed).
    pub fn state(&self) -> ArtifactState {
        match self.state {
            0 => ArtifactState::Current,
            1 => ArtifactState::Superseded {
                successor: ArtifactDigest(self.successor),
            },
            _ => ArtifactState::Revoked,
        }
    }

    /// Copies the record out into a domain value. `None` if the kind byte names no kind.
    pub fn to_record(&self) -> Option<ArtifactRecord> {
        Some(ArtifactRecord {
            kind: ArtifactKind::from_code(self.kind)?,
            digest: ArtifactDigest(self.digest),
            tenant: self.tenant.as_str().to_owned(),
            user: self.user.as_str().to_owned(),
            device: self.device.as_str().to_owned(),
            app: self.app.as_str().to_owned(),
            resource: self.resource.as_str().to_owned(),
            family: self.family.as_str().to_owned(),
            client_auth: ClientAuthMethod::from_code(self.client_auth),
            state: self.state(),
            state_changed_at_secs: self.state_changed_at_secs.to_native(),
            issued_at_secs: self.issued_at_secs.to_native(),
            expires_at_secs: self.expires_at_secs.to_native(),
        })
    }
}
