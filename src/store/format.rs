//! On-disk record types (rkyv archives) and the format version, kept apart from the domain
//! types in `model` so a change of either is a visible, written-out conversion.
//!
//! Every integer here is fixed-width. The rkyv features that decide the layout (little endian,
//! aligned, 32-bit relative pointers) are pinned in `Cargo.toml`; changing them, or any field
//! below, changes the format and must bump [`FORMAT_VERSION`] (see `docs/store-format.md`).

pub mod v1;

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use super::model::{
    ArtifactDigest, ArtifactKind, ArtifactRecord, ArtifactState, ClientAuthMethod,
    DeviceCompliance, RevocationRecord, RiskLevel, SessionIdentity, SessionSnapshot, TokenTemplate,
};

/// Format version written in the `FORMAT` file, every WAL header and every segment header.
/// A directory or file with a larger one is refused (written by a newer backstop); one with a
/// smaller one is converted at open (`docs/store-format.md`, "Upgrades").
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format this build reads (and converts).
pub const FORMAT_VERSION_MIN: u32 = v1::VERSION;

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
    /// A revocation event (`DiskRevocation`). Since format 2.
    pub const REVOCATION: u8 = 4;
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

/// A revocation event on disk (since format 2).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DiskRevocation {
    /// Event id; compared in full on lookup (the routing key is a keyed hash of it).
    pub id: String,
    /// Event kind code.
    pub kind: u8,
    /// Subject kind code.
    pub subject_kind: u8,
    /// Source code.
    pub source: u8,
    /// Subject identifier.
    pub subject: String,
    /// When the event happened, unix seconds.
    pub time_secs: i64,
    /// When backstop recorded it, unix seconds.
    pub recorded_at_secs: i64,
    /// When it may be dropped, unix seconds.
    pub expires_at_secs: i64,
}

impl DiskRevocation {
    /// The on-disk form of a revocation event.
    pub fn from_record(r: &RevocationRecord) -> Self {
        DiskRevocation {
            id: r.id.clone(),
            kind: r.kind,
            subject_kind: r.subject_kind,
            source: r.source,
            subject: r.subject.clone(),
            time_secs: r.time_secs,
            recorded_at_secs: r.recorded_at_secs,
            expires_at_secs: r.expires_at_secs,
        }
    }
}

impl ArchivedDiskRevocation {
    /// Whether this record is the event `id` (the full id, byte for byte).
    pub fn is_id(&self, id: &str) -> bool {
        self.id.as_str() == id
    }

    /// Expiry, unix seconds.
    pub fn expires_at_secs(&self) -> i64 {
        self.expires_at_secs.to_native()
    }

    /// Copies the record out into a domain value.
    pub fn to_record(&self) -> RevocationRecord {
        RevocationRecord {
            id: self.id.as_str().to_owned(),
            kind: self.kind,
            subject_kind: self.subject_kind,
            subject: self.subject.as_str().to_owned(),
            time_secs: self.time_secs.to_native(),
            source: self.source,
            recorded_at_secs: self.recorded_at_secs.to_native(),
            expires_at_secs: self.expires_at_secs.to_native(),
        }
    }
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
pub const fn risk_from_code(c: u8) -> RiskLevel {
    match c {
        1 => RiskLevel::None,
        2 => RiskLevel::Low,
        3 => RiskLevel::Medium,
        4 => RiskLevel::High,
        _ => RiskLevel::Unknown,
    }
}

/// The on-disk byte of a compliance state.
pub const fn compliance_code(c: DeviceCompliance) -> u8 {
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
        self.is_identity_ref(&id.as_ref())
    }

    /// [`ArchivedDiskSession::is_identity`] for a borrowed identity.
    pub fn is_identity_ref(&self, id: &super::model::SessionIdentityRef<'_>) -> bool {
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

// Conversions from older formats. Written out field by field: every field the old format
// lacked gets its documented default (`docs/store-format.md`, format log).

fn template_from_v1(t: &v1::ArchivedDiskTemplate) -> DiskTemplate {
    DiskTemplate {
        claims_json: t.claims_json.as_slice().to_vec(),
        time_claims: t.time_claims,
        lifetime_secs: t.lifetime_secs.to_native(),
        alg: t.alg.as_str().to_owned(),
        typ: t.typ.as_str().to_owned(),
        // v1 kept no `nbf` offset: 0 is what a token whose `nbf` equals `iat` carries.
        nbf_offset_secs: 0,
    }
}

fn session_from_v1(s: &v1::ArchivedDiskSession) -> DiskSession {
    DiskSession {
        tenant: s.tenant.as_str().to_owned(),
        user: s.user.as_str().to_owned(),
        device: s.device.as_str().to_owned(),
        app: s.app.as_str().to_owned(),
        resource: s.resource.as_str().to_owned(),
        home_tenant: s.home_tenant,
        auth_time_secs: s.auth_time_secs.to_native(),
        recorded_at_secs: s.recorded_at_secs.to_native(),
        expires_at_secs: s.expires_at_secs.to_native(),
        amr: strings(&s.amr),
        acr: s.acr.as_str().to_owned(),
        groups: strings(&s.groups),
        roles: strings(&s.roles),
        sign_in_risk: s.sign_in_risk,
        user_risk: s.user_risk,
        device_platform: s.device_platform.as_str().to_owned(),
        device_compliance: s.device_compliance,
        dpop_jkt: s.dpop_jkt.as_ref().map(|j| j.as_str().to_owned()),
        access_token: template_from_v1(&s.access_token),
        id_token: s.id_token.as_ref().map(template_from_v1),
        scopes: strings(&s.scopes),
        token_type: s.token_type.as_str().to_owned(),
    }
}

fn artifact_from_v1(a: &v1::ArchivedDiskArtifact) -> DiskArtifact {
    DiskArtifact {
        kind: a.kind,
        digest: a.digest,
        tenant: a.tenant.as_str().to_owned(),
        user: a.user.as_str().to_owned(),
        device: a.device.as_str().to_owned(),
        app: a.app.as_str().to_owned(),
        // Unknown before v2: an empty resource and family, an unknown client method (which
        // the outage path refuses to serve for confidential clients: fail closed), and the
        // state every v1 record was in, current (v1 removed rotated-out tokens instead).
        resource: String::new(),
        family: String::new(),
        client_auth: ClientAuthMethod::Unknown.code(),
        state: ArtifactState::Current.code(),
        successor: [0; 32],
        state_changed_at_secs: 0,
        issued_at_secs: a.issued_at_secs.to_native(),
        expires_at_secs: a.expires_at_secs.to_native(),
    }
}

/// Why a record of an older format could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// The version is not one this build converts from.
    #[error("format version {0} cannot be converted by this build")]
    Version(u32),
    /// The kind byte names no record of that version.
    #[error("record kind {0} does not exist in that format version")]
    Kind(u8),
    /// The bytes are not a valid archive of that version and kind.
    #[error("record is not a valid archive of its format version")]
    Archive,
    /// Serializing the converted record failed.
    #[error("re-encoding the converted record failed: {0}")]
    Encode(String),
}

/// Re-encodes a record archived by format `version` (older than [`FORMAT_VERSION`]) as a
/// current-format archive of the same kind. The bytes must start `RECORD_ALIGN`-aligned. The
/// old archive is read through rkyv's checked access, so any bytes are safe to pass.
pub fn upgrade_record(
    version: u32,
    kind_byte: u8,
    bytes: &[u8],
) -> Result<AlignedVec<RECORD_ALIGN>, UpgradeError> {
    if version != v1::VERSION {
        return Err(UpgradeError::Version(version));
    }
    let enc = |e: rkyv::rancor::Error| UpgradeError::Encode(e.to_string());
    match kind_byte {
        kind::SESSION => {
            let s = v1::session(bytes).ok_or(UpgradeError::Archive)?;
            rkyv::to_bytes::<rkyv::rancor::Error>(&session_from_v1(s)).map_err(enc)
        }
        kind::ARTIFACT => {
            let a = v1::artifact(bytes).ok_or(UpgradeError::Archive)?;
            rkyv::to_bytes::<rkyv::rancor::Error>(&artifact_from_v1(a)).map_err(enc)
        }
        k => Err(UpgradeError::Kind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_artifact() -> v1::DiskArtifact {
        v1::DiskArtifact {
            kind: ArtifactKind::RefreshToken.code(),
            digest: [7; 32],
            tenant: "t".into(),
            user: "u".into(),
            device: "d".into(),
            app: "a".into(),
            issued_at_secs: 10,
            expires_at_secs: 20,
        }
    }

    #[test]
    fn v1_artifact_converts_with_the_documented_defaults() {
        let old = rkyv::to_bytes::<rkyv::rancor::Error>(&v1_artifact()).unwrap();
        let new = upgrade_record(v1::VERSION, kind::ARTIFACT, &old).unwrap();
        let a = rkyv::access::<ArchivedDiskArtifact, rkyv::rancor::Error>(&new).unwrap();
        assert_eq!(
            a.to_record(),
            Some(ArtifactRecord {
                kind: ArtifactKind::RefreshToken,
                digest: ArtifactDigest([7; 32]),
                tenant: "t".into(),
                user: "u".into(),
                device: "d".into(),
                app: "a".into(),
                resource: String::new(),
                family: String::new(),
                client_auth: ClientAuthMethod::Unknown,
                state: ArtifactState::Current,
                state_changed_at_secs: 0,
                issued_at_secs: 10,
                expires_at_secs: 20,
            })
        );
    }

    #[test]
    fn v1_template_converts_with_a_zero_nbf_offset() {
        let t = v1::DiskTemplate {
            claims_json: b"{}".to_vec(),
            time_claims: 5,
            lifetime_secs: 60,
            alg: "ES256".into(),
            typ: "JWT".into(),
        };
        let s = v1::DiskSession {
            tenant: "t".into(),
            user: "u".into(),
            device: "d".into(),
            app: "a".into(),
            resource: "r".into(),
            home_tenant: true,
            auth_time_secs: 1,
            recorded_at_secs: 2,
            expires_at_secs: 3,
            amr: vec!["pwd".into()],
            acr: String::new(),
            groups: vec![],
            roles: vec![],
            sign_in_risk: 2,
            user_risk: 0,
            device_platform: "iOS".into(),
            device_compliance: 1,
            dpop_jkt: None,
            access_token: t.clone(),
            id_token: Some(t),
            scopes: vec!["openid".into()],
            token_type: "Bearer".into(),
        };
        let old = rkyv::to_bytes::<rkyv::rancor::Error>(&s).unwrap();
        let new = upgrade_record(v1::VERSION, kind::SESSION, &old).unwrap();
        let snap = rkyv::access::<ArchivedDiskSession, rkyv::rancor::Error>(&new)
            .unwrap()
            .to_snapshot();
        assert_eq!(snap.access_token.nbf_offset_secs, 0);
        assert_eq!(snap.id_token.map(|t| t.alg), Some("ES256".to_owned()));
        assert_eq!(snap.sign_in_risk, RiskLevel::Low);
        assert_eq!(snap.identity.resource, "r");
    }

    #[test]
    fn conversion_refuses_what_it_cannot_read() {
        let old = rkyv::to_bytes::<rkyv::rancor::Error>(&v1_artifact()).unwrap();
        assert_eq!(
            upgrade_record(FORMAT_VERSION + 1, kind::ARTIFACT, &old).err(),
            Some(UpgradeError::Version(FORMAT_VERSION + 1))
        );
        assert_eq!(
            upgrade_record(v1::VERSION, kind::REVOCATION, &old).err(),
            Some(UpgradeError::Kind(kind::REVOCATION))
        );
        // An artifact's bytes are not a session archive.
        assert_eq!(
            upgrade_record(v1::VERSION, kind::SESSION, &old).err(),
            Some(UpgradeError::Archive)
        );
    }
}
