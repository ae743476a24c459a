//! Format version 1's archived record types, frozen as released: a v1 WAL record or segment
//! record is read through these, then converted at the boundary (`format::upgrade_record`).
//!
//! Never edit this file. Its field order and types *are* the v1 layout; changing anything here
//! would make every v1 store unreadable. The conversions to the current types live in
//! `format`, which is allowed to change.

use rkyv::rancor::Failure;
use rkyv::{Archive, Deserialize, Serialize};

/// The version these types describe.
pub const VERSION: u32 = 1;

/// A v1 token template.
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
}

/// A v1 session snapshot.
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

/// A v1 artifact record.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DiskArtifact {
    /// `ArtifactKind` code.
    pub kind: u8,
    /// The full keyed digest.
    pub digest: [u8; 32],
    /// Tenant.
    pub tenant: String,
    /// User.
    pub user: String,
    /// Device.
    pub device: String,
    /// App.
    pub app: String,
    /// Issued at, unix seconds.
    pub issued_at_secs: i64,
    /// Expires at, unix seconds.
    pub expires_at_secs: i64,
}

/// A v1 session archive, proven by rkyv's checked access (`None` if the bytes are not one).
/// The bytes must start `RECORD_ALIGN`-aligned, as every record does on disk.
pub fn session(bytes: &[u8]) -> Option<&ArchivedDiskSession> {
    rkyv::access::<ArchivedDiskSession, Failure>(bytes).ok()
}

/// A v1 artifact archive, proven by rkyv's checked access.
pub fn artifact(bytes: &[u8]) -> Option<&ArchivedDiskArtifact> {
    rkyv::access::<ArchivedDiskArtifact, Failure>(bytes).ok()
}
