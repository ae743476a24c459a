//! Revocation events: what happened (kind), to whom (subject), when, and who told us.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// What happened. Every kind denies every session snapshot recorded before the event
/// (DESIGN §6); they differ in why, which the audit log and the refusal reason report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The user's password or other credential changed.
    CredentialChange,
    /// The account was disabled.
    AccountDisabled,
    /// The account was deleted (purged).
    AccountDeleted,
    /// An administrator revoked the subject's sessions.
    SessionsRevoked,
    /// The device is no longer compliant.
    DeviceNotCompliant,
    /// The user's risk became high.
    HighUserRisk,
    /// The user's consent to the app was revoked.
    AppConsentRevoked,
    /// The primary refused a refresh token for this subject (`invalid_grant`).
    RefreshTokenRefusedByPrimary,
}

impl EventKind {
    /// Every kind, for tables and tests.
    pub const ALL: [EventKind; 8] = [
        EventKind::CredentialChange,
        EventKind::AccountDisabled,
        EventKind::AccountDeleted,
        EventKind::SessionsRevoked,
        EventKind::DeviceNotCompliant,
        EventKind::HighUserRisk,
        EventKind::AppConsentRevoked,
        EventKind::RefreshTokenRefusedByPrimary,
    ];

    /// A stable lowercase name, for logs and wire mappings.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::CredentialChange => "credential_change",
            EventKind::AccountDisabled => "account_disabled",
            EventKind::AccountDeleted => "account_deleted",
            EventKind::SessionsRevoked => "sessions_revoked",
            EventKind::DeviceNotCompliant => "device_not_compliant",
            EventKind::HighUserRisk => "high_user_risk",
            EventKind::AppConsentRevoked => "app_consent_revoked",
            EventKind::RefreshTokenRefusedByPrimary => "refresh_token_refused_by_primary",
        }
    }
}

/// Whom an event is about. The identifier is the primary's (e.g. `sub`, device id, `sid`,
/// `client_id`); a user and a device with the same identifier are different subjects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A user (the primary's `sub`).
    User(String),
    /// A device.
    Device(String),
    /// One session at the primary (`sid`).
    Session(String),
    /// An application (`client_id`).
    App(String),
}

impl Subject {
    /// The identifier, without its type.
    pub fn id(&self) -> &str {
        match self {
            Subject::User(id) | Subject::Device(id) | Subject::Session(id) | Subject::App(id) => id,
        }
    }

    /// A stable lowercase name of the subject's type (`user`, `device`, `session`, `app`).
    pub const fn type_str(&self) -> &'static str {
        match self {
            Subject::User(_) => "user",
            Subject::Device(_) => "device",
            Subject::Session(_) => "session",
            Subject::App(_) => "app",
        }
    }

    const fn type_seed(&self) -> u64 {
        match self {
            Subject::User(_) => 1,
            Subject::Device(_) => 2,
            Subject::Session(_) => 3,
            Subject::App(_) => 4,
        }
    }

    /// xxh3-64 of the identifier, seeded by the type so that types never collide by design.
    /// Used to probe the filter's bitmap; collisions only cost a look in the exact map.
    pub(crate) fn filter_hash(&self) -> u64 {
        xxh3_64_with_seed(self.id().as_bytes(), self.type_seed())
    }
}

/// Who told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The authenticated admin API.
    AdminApi,
    /// The OpenID Shared Signals receiver (a verified Security Event Token).
    SharedSignals,
    /// The primary's own answer in normal mode (e.g. `invalid_grant` on a refresh).
    Primary,
}

/// One revocation event. Events are idempotent by `id`: inserting the same event twice is a
/// no-op, inserting a different event under a known `id` is an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RevocationEvent {
    /// Unique identifier (admin-chosen id, SET `jti`, or one we derive for primary answers).
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// Whom it is about.
    pub subject: Subject,
    /// When it happened, in Unix seconds. It denies snapshots recorded at or before it.
    pub time_secs: i64,
    /// Who told us.
    pub source: Source,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_types_with_the_same_id_hash_differently() {
        let ids = ["alice", "", "42"];
        for id in ids {
            let hashes = [
                Subject::User(id.into()).filter_hash(),
                Subject::Device(id.into()).filter_hash(),
                Subject::Session(id.into()).filter_hash(),
                Subject::App(id.into()).filter_hash(),
            ];
            for (i, a) in hashes.iter().enumerate() {
                for b in hashes.iter().skip(i + 1) {
                    assert_ne!(a, b, "id {id:?}");
                }
            }
        }
    }

    #[test]
    fn subject_hash_is_stable_for_equal_subjects() {
        assert_eq!(
            Subject::User("alice".into()).filter_hash(),
            Subject::User(String::from("alice")).filter_hash()
        );
    }

    #[test]
    fn event_kind_names_are_distinct() {
        let mut names: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
    }
}
