//! Revocation events: what happened (kind), to whom (subject), when, and who told us; and
//! their stable one-byte codes for the store's WAL record (`RevocationEvent::codes`).

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
    /// The subject's authentication assurance was lowered (CAEP `assurance-level-change`
    /// with a downgrade): a snapshot recorded at the higher level no longer holds.
    AssuranceDowngraded,
    /// Claims the primary puts in the subject's tokens changed (CAEP `token-claims-change`):
    /// a snapshot's claims templates are stale.
    TokenClaimsChanged,
}

impl EventKind {
    /// Every kind, for tables and tests.
    pub const ALL: [EventKind; 10] = [
        EventKind::CredentialChange,
        EventKind::AccountDisabled,
        EventKind::AccountDeleted,
        EventKind::SessionsRevoked,
        EventKind::DeviceNotCompliant,
        EventKind::HighUserRisk,
        EventKind::AppConsentRevoked,
        EventKind::RefreshTokenRefusedByPrimary,
        EventKind::AssuranceDowngraded,
        EventKind::TokenClaimsChanged,
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
            EventKind::AssuranceDowngraded => "assurance_downgraded",
            EventKind::TokenClaimsChanged => "token_claims_changed",
        }
    }

    /// The kind named by [`EventKind::as_str`] (the admin API's `kind`), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The stable on-disk code (never reused; 0 is never a kind). See [`RevocationEvent::codes`].
    pub const fn code(self) -> u8 {
        match self {
            EventKind::CredentialChange => 1,
            EventKind::AccountDisabled => 2,
            EventKind::AccountDeleted => 3,
            EventKind::SessionsRevoked => 4,
            EventKind::DeviceNotCompliant => 5,
            EventKind::HighUserRisk => 6,
            EventKind::AppConsentRevoked => 7,
            EventKind::RefreshTokenRefusedByPrimary => 8,
            EventKind::AssuranceDowngraded => 9,
            EventKind::TokenClaimsChanged => 10,
        }
    }

    /// The kind for an on-disk code, if it names one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }
}

/// The type of a [`Subject`], without its identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// A user (the primary's `sub`).
    User,
    /// A device.
    Device,
    /// One session at the primary (`sid`) or a refresh-token family.
    Session,
    /// An application (`client_id`).
    App,
}

impl SubjectKind {
    /// Every kind, for tables and tests.
    pub const ALL: [SubjectKind; 4] = [
        SubjectKind::User,
        SubjectKind::Device,
        SubjectKind::Session,
        SubjectKind::App,
    ];

    /// The stable on-disk code, also the seed of the filter hash (so it must never change).
    pub const fn code(self) -> u8 {
        match self {
            SubjectKind::User => 1,
            SubjectKind::Device => 2,
            SubjectKind::Session => 3,
            SubjectKind::App => 4,
        }
    }

    /// The kind for an on-disk code, if it names one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// A stable lowercase name (`user`, `device`, `session`, `app`): the admin API's
    /// `subject.type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "user",
            SubjectKind::Device => "device",
            SubjectKind::Session => "session",
            SubjectKind::App => "app",
        }
    }

    /// The kind named by [`SubjectKind::as_str`], if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// xxh3-64 of `id`, seeded by the kind: the filter's bitmap probe for a borrowed subject.
    pub(crate) fn filter_hash(self, id: &str) -> u64 {
        xxh3_64_with_seed(id.as_bytes(), u64::from(self.code()))
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
        self.kind().as_str()
    }

    /// The subject's type.
    pub const fn kind(&self) -> SubjectKind {
        match self {
            Subject::User(_) => SubjectKind::User,
            Subject::Device(_) => SubjectKind::Device,
            Subject::Session(_) => SubjectKind::Session,
            Subject::App(_) => SubjectKind::App,
        }
    }

    /// A subject of `kind` with identifier `id`.
    pub fn new(kind: SubjectKind, id: impl Into<String>) -> Self {
        let id = id.into();
        match kind {
            SubjectKind::User => Subject::User(id),
            SubjectKind::Device => Subject::Device(id),
            SubjectKind::Session => Subject::Session(id),
            SubjectKind::App => Subject::App(id),
        }
    }

    /// xxh3-64 of the identifier, seeded by the type so that types never collide by design.
    /// Used to probe the filter's bitmap; collisions only cost a look in the exact map.
    pub(crate) fn filter_hash(&self) -> u64 {
        self.kind().filter_hash(self.id())
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

impl Source {
    /// Every source, for tables and tests.
    pub const ALL: [Source; 3] = [Source::AdminApi, Source::SharedSignals, Source::Primary];

    /// The stable on-disk code (never reused; 0 is never a source).
    pub const fn code(self) -> u8 {
        match self {
            Source::AdminApi => 1,
            Source::SharedSignals => 2,
            Source::Primary => 3,
        }
    }

    /// The source for an on-disk code, if it names one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|source| source.code() == code)
    }

    /// A stable lowercase name (`admin_api`, `shared_signals`, `primary`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::AdminApi => "admin_api",
            Source::SharedSignals => "shared_signals",
            Source::Primary => "primary",
        }
    }
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

impl RevocationEvent {
    /// The event's one-byte codes `(kind, subject_kind, source)` for an on-disk record
    /// (`store::model::RevocationRecord`). The codes are stable: they are written to the WAL
    /// and read back after upgrades, so a code is never changed or reused; 0 never names
    /// anything (a zeroed record never decodes).
    ///
    /// | code | kind | subject | source |
    /// |---|---|---|---|
    /// | 1 | `credential_change` | user | admin API |
    /// | 2 | `account_disabled` | device | Shared Signals |
    /// | 3 | `account_deleted` | session | primary |
    /// | 4 | `sessions_revoked` | app | |
    /// | 5 | `device_not_compliant` | | |
    /// | 6 | `high_user_risk` | | |
    /// | 7 | `app_consent_revoked` | | |
    /// | 8 | `refresh_token_refused_by_primary` | | |
    /// | 9 | `assurance_downgraded` | | |
    /// | 10 | `token_claims_changed` | | |
    pub const fn codes(&self) -> (u8, u8, u8) {
        (
            self.kind.code(),
            self.subject.kind().code(),
            self.source.code(),
        )
    }

    /// Rebuilds an event from a record's fields; `None` if any code names nothing (a record
    /// from a newer version, or corrupt: the caller reports it).
    pub fn from_codes(
        id: String,
        (kind, subject_kind, source): (u8, u8, u8),
        subject_id: String,
        time_secs: i64,
    ) -> Option<Self> {
        Some(RevocationEvent {
            id,
            kind: EventKind::from_code(kind)?,
            subject: Subject::new(SubjectKind::from_code(subject_kind)?, subject_id),
            time_secs,
            source: Source::from_code(source)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_for_every_kind_subject_and_source() {
        for kind in EventKind::ALL {
            for subject_kind in SubjectKind::ALL {
                for source in Source::ALL {
                    let event = RevocationEvent {
                        id: "e1".into(),
                        kind,
                        subject: Subject::new(subject_kind, "s"),
                        time_secs: -5,
                        source,
                    };
                    let codes = event.codes();
                    let back = RevocationEvent::from_codes("e1".into(), codes, "s".into(), -5);
                    assert_eq!(back.as_ref(), Some(&event));
                }
            }
        }
    }

    /// The codes are written to disk: this table pins them.
    #[test]
    fn codes_are_pinned() {
        let kinds: Vec<u8> = EventKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(kinds, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let subjects: Vec<u8> = SubjectKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(subjects, [1, 2, 3, 4]);
        let sources: Vec<u8> = Source::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(sources, [1, 2, 3]);
        assert_eq!(
            RevocationEvent {
                id: "x".into(),
                kind: EventKind::DeviceNotCompliant,
                subject: Subject::Device("d".into()),
                time_secs: 0,
                source: Source::SharedSignals,
            }
            .codes(),
            (5, 2, 2)
        );
    }

    #[test]
    fn unknown_codes_decode_to_none() {
        for codes in [
            (0, 1, 1),
            (11, 1, 1),
            (1, 0, 1),
            (1, 5, 1),
            (1, 1, 0),
            (1, 1, 4),
        ] {
            assert_eq!(
                RevocationEvent::from_codes("x".into(), codes, "s".into(), 0),
                None,
                "{codes:?}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.as_str()), Some(kind));
        }
        for kind in SubjectKind::ALL {
            assert_eq!(SubjectKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::from_name("nope"), None);
    }

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
