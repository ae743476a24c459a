//! The admin API's revocation event shape (`POST /admin/revocations`, `GET
//! /admin/revocations`): `{"id", "kind", "subject": {"type", "id"}, "time"}`. Parsed strictly
//! (unknown fields refused, every string bounded) into a [`RevocationEvent`] with source
//! `admin_api`; written back the same way, with its `source`. [`AdminQuery`] is the filter of
//! `GET /admin/revocations` (`?subject_type=user&subject_id=alice&kind=...&since=...`).

use serde::Deserialize;
use serde_json::{Value, json};

use super::event::{EventKind, RevocationEvent, Source, Subject, SubjectKind};
use crate::limits::{
    ADMIN_REVOCATION_BODY_BYTES_MAX, ADMIN_REVOCATION_FUTURE_SECS_MAX,
    REVOCATION_EVENT_ID_BYTES_MAX, REVOCATION_SUBJECT_ID_BYTES_MAX,
};

/// Why an admin revocation body was refused (HTTP 400, naming the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminEventError {
    /// The body is over `limits::ADMIN_REVOCATION_BODY_BYTES_MAX`.
    #[error("body over {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Not JSON of the expected shape (serde's message names the field).
    #[error("invalid revocation event: {0}")]
    Shape(String),
    /// A field's value is not allowed.
    #[error("`{field}`: {allowed}")]
    Invalid {
        /// The field (`id`, `kind`, `subject.type`, `subject.id`, `time`).
        field: &'static str,
        /// What is allowed.
        allowed: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent {
    id: String,
    kind: String,
    subject: WireSubject,
    time: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSubject {
    #[serde(rename = "type")]
    kind: String,
    id: String,
}

fn invalid(field: &'static str, allowed: impl Into<String>) -> AdminEventError {
    AdminEventError::Invalid {
        field,
        allowed: allowed.into(),
    }
}

/// Parses a `POST /admin/revocations` body. `time` defaults to `now_secs`, and may not lie
/// more than `limits::ADMIN_REVOCATION_FUTURE_SECS_MAX` ahead of it (an event in the future
/// would deny fresh sign-ins until then).
pub fn parse_admin_event(body: &[u8], now_secs: i64) -> Result<RevocationEvent, AdminEventError> {
    if body.len() > ADMIN_REVOCATION_BODY_BYTES_MAX {
        return Err(AdminEventError::TooLarge {
            max: ADMIN_REVOCATION_BODY_BYTES_MAX,
        });
    }
    let wire: WireEvent =
        serde_json::from_slice(body).map_err(|e| AdminEventError::Shape(e.to_string()))?;
    if wire.id.is_empty() || wire.id.len() > REVOCATION_EVENT_ID_BYTES_MAX {
        return Err(invalid(
            "id",
            format!("1 to {REVOCATION_EVENT_ID_BYTES_MAX} bytes"),
        ));
    }
    let kind = EventKind::from_name(&wire.kind).ok_or_else(|| {
        let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        invalid("kind", format!("one of {}", names.join(", ")))
    })?;
    let subject_kind = SubjectKind::from_name(&wire.subject.kind)
        .ok_or_else(|| invalid("subject.type", "one of user, device, session, app"))?;
    if wire.subject.id.is_empty() || wire.subject.id.len() > REVOCATION_SUBJECT_ID_BYTES_MAX {
        return Err(invalid(
            "subject.id",
            format!("1 to {REVOCATION_SUBJECT_ID_BYTES_MAX} bytes"),
        ));
    }
    let time_secs = wire.time.unwrap_or(now_secs);
    if time_secs > now_secs.saturating_add(ADMIN_REVOCATION_FUTURE_SECS_MAX) {
        return Err(invalid(
            "time",
            format!("Unix seconds, at most {ADMIN_REVOCATION_FUTURE_SECS_MAX} s ahead of now"),
        ));
    }
    Ok(RevocationEvent {
        id: wire.id,
        kind,
        subject: Subject::new(subject_kind, wire.subject.id),
        time_secs,
        source: Source::AdminApi,
    })
}

/// The event as the admin API lists it: the `POST` shape plus its `source`.
pub fn admin_event_json(event: &RevocationEvent) -> Value {
    json!({
        "id": event.id,
        "kind": event.kind.as_str(),
        "subject": {"type": event.subject.type_str(), "id": event.subject.id()},
        "time": event.time_secs,
        "source": event.source.as_str(),
    })
}

/// The filters of `GET /admin/revocations`; every one that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminQuery {
    /// `subject_type`: `user`, `device`, `session` or `app`.
    pub subject_type: Option<SubjectKind>,
    /// `subject_id`: the exact identifier.
    pub subject_id: Option<String>,
    /// `kind`: an event kind name.
    pub kind: Option<EventKind>,
    /// `since`: events at or after this time, Unix seconds.
    pub since_secs: Option<i64>,
}

impl AdminQuery {
    /// Builds the query from decoded `(name, value)` pairs (the server's form parser bounds
    /// them). Unknown names and bad values are refused, naming the parameter.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, AdminEventError> {
        let mut query = AdminQuery::default();
        for (name, value) in pairs {
            match name {
                "subject_type" => {
                    query.subject_type = Some(SubjectKind::from_name(value).ok_or_else(|| {
                        invalid("subject_type", "one of user, device, session, app")
                    })?);
                }
                "subject_id" => {
                    if value.is_empty() || value.len() > REVOCATION_SUBJECT_ID_BYTES_MAX {
                        return Err(invalid(
                            "subject_id",
                            format!("1 to {REVOCATION_SUBJECT_ID_BYTES_MAX} bytes"),
                        ));
                    }
                    query.subject_id = Some(value.to_owned());
                }
                "kind" => {
                    query.kind = Some(
                        EventKind::from_name(value)
                            .ok_or_else(|| invalid("kind", "an event kind name"))?,
                    );
                }
                "since" => {
                    query.since_secs = Some(
                        value
                            .parse()
                            .map_err(|_| invalid("since", "Unix seconds"))?,
                    );
                }
                _ => return Err(invalid("query", "subject_type, subject_id, kind, since")),
            }
        }
        Ok(query)
    }

    /// Whether `event` passes every filter that is set.
    pub fn matches(&self, event: &RevocationEvent) -> bool {
        self.subject_type.is_none_or(|k| event.subject.kind() == k)
            && self
                .subject_id
                .as_deref()
                .is_none_or(|id| event.subject.id() == id)
            && self.kind.is_none_or(|k| event.kind == k)
            && self.since_secs.is_none_or(|t| event.time_secs >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    #[test]
    fn parses_the_issue_shape_and_writes_it_back() {
        let body = br#"{"id": "r-1", "kind": "credential_change",
                        "subject": {"type": "user", "id": "alice"}, "time": 999000}"#;
        let event = parse_admin_event(body, NOW).unwrap();
        assert_eq!(
            event,
            RevocationEvent {
                id: "r-1".into(),
                kind: EventKind::CredentialChange,
                subject: Subject::User("alice".into()),
                time_secs: 999_000,
                source: Source::AdminApi,
            }
        );
        assert_eq!(
            admin_event_json(&event),
            json!({"id": "r-1", "kind": "credential_change",
                   "subject": {"type": "user", "id": "alice"}, "time": 999000,
                   "source": "admin_api"})
        );
        let without_time =
            br#"{"id":"r","kind":"sessions_revoked","subject":{"type":"app","id":"c"}}"#;
        assert_eq!(parse_admin_event(without_time, NOW).unwrap().time_secs, NOW);
    }

    #[test]
    fn query_filters_by_every_field() {
        let event = parse_admin_event(
            br#"{"id":"r","kind":"sessions_revoked","subject":{"type":"device","id":"d1"},"time":500}"#,
            NOW,
        )
        .unwrap();
        let matching = [
            vec![],
            vec![("subject_type", "device")],
            vec![("subject_id", "d1"), ("kind", "sessions_revoked")],
            vec![("since", "500")],
        ];
        for pairs in matching {
            assert!(
                AdminQuery::from_pairs(pairs.clone())
                    .unwrap()
                    .matches(&event),
                "{pairs:?}"
            );
        }
        let missing = [
            vec![("subject_type", "user")],
            vec![("subject_id", "d2")],
            vec![("kind", "credential_change")],
            vec![("since", "501")],
        ];
        for pairs in missing {
            assert!(
                !AdminQuery::from_pairs(pairs.clone())
                    .unwrap()
                    .matches(&event),
                "{pairs:?}"
            );
        }
        for (pairs, field) in [
            (vec![("subject_type", "tenant")], "subject_type"),
            (vec![("since", "soon")], "since"),
            (vec![("kind", "x")], "kind"),
            (vec![("subject_id", "")], "subject_id"),
            (vec![("limit", "5")], "query"),
        ] {
            assert!(
                matches!(AdminQuery::from_pairs(pairs), Err(AdminEventError::Invalid { field: f, .. }) if f == field),
                "{field}"
            );
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let long_id = "x".repeat(REVOCATION_EVENT_ID_BYTES_MAX + 1);
        let cases: Vec<(String, Option<&str>)> = vec![
            (r#"{"id":"","kind":"credential_change","subject":{"type":"user","id":"a"}}"#.into(), Some("id")),
            (format!(r#"{{"id":"{long_id}","kind":"credential_change","subject":{{"type":"user","id":"a"}}}}"#), Some("id")),
            (r#"{"id":"r","kind":"nope","subject":{"type":"user","id":"a"}}"#.into(), Some("kind")),
            (r#"{"id":"r","kind":"credential_change","subject":{"type":"tenant","id":"a"}}"#.into(), Some("subject.type")),
            (r#"{"id":"r","kind":"credential_change","subject":{"type":"user","id":""}}"#.into(), Some("subject.id")),
            (format!(r#"{{"id":"r","kind":"credential_change","subject":{{"type":"user","id":"a"}},"time":{}}}"#, NOW + ADMIN_REVOCATION_FUTURE_SECS_MAX + 1), Some("time")),
            (r#"{"id":"r","kind":"credential_change","subject":{"type":"user","id":"a"},"extra":1}"#.into(), None),
            (r#"{"id":"r","kind":"credential_change"}"#.into(), None),
            ("[]".into(), None),
        ];
        for (body, field) in cases {
            let err = parse_admin_event(body.as_bytes(), NOW).unwrap_err();
            match (field, &err) {
                (Some(want), AdminEventError::Invalid { field, .. }) => {
                    assert_eq!(*field, want, "{body}")
                }
                (None, AdminEventError::Shape(_)) => {}
                _ => panic!("{body}: {err:?}"),
            }
        }
        let big = vec![b' '; ADMIN_REVOCATION_BODY_BYTES_MAX + 1];
        assert!(matches!(
            parse_admin_event(&big, NOW),
            Err(AdminEventError::TooLarge { .. })
        ));
    }
}
