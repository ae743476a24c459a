//! Subject identifiers (RFC 9493) of a Security Event Token, mapped to the one revocation
//! [`Subject`] that covers what the event is about.
//!
//! | format | becomes |
//! |---|---|
//! | `iss_sub` | user (`sub`) |
//! | `opaque` | user (`id`: the identifier both sides agreed on, the primary's `sub`) |
//! | `complex` | its most specific member: `session` > `device` > `user` > `application` |
//! | inside `complex`: `iss_sub`, `opaque` | that member's kind, with `sub` / `id` |
//!
//! Why the most specific member: a complex subject means the *combination* (this user on this
//! device); the filter cannot express a conjunction, and the most specific member covers every
//! snapshot of the combination while refusing as few others as possible.
//!
//! Unsupported, refused with `invalid_request` so the transmitter learns a revocation did not
//! take (accepting it would drop the revocation silently): `email`, `phone_number`, `account`,
//! `uri`, `did`, `aliases`, and complex members `tenant`, `org_unit` and `group` (a revocation
//! for a whole tenant or group cannot be matched against a snapshot here).

use serde_json::{Map, Value};

use crate::limits::SSF_STRING_BYTES_MAX;
use crate::revocation::{Subject, SubjectKind};

/// Why a subject identifier was refused (maps to `invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Not an object with a string `format`.
    #[error("subject identifier is not an object with a format")]
    Malformed,
    /// A format this receiver does not map (see the module documentation).
    #[error("subject identifier format {0:?} is not supported")]
    UnsupportedFormat(String),
    /// A `complex` member this receiver does not map.
    #[error("complex subject member {0:?} is not supported")]
    UnsupportedMember(String),
    /// A member is missing, not a string, empty or over `limits::SSF_STRING_BYTES_MAX`.
    #[error("subject identifier member {0:?} is missing or malformed")]
    Member(&'static str),
    /// A `complex` subject with none of `user`, `device`, `session`, `application`.
    #[error("complex subject has no user, device, session or application")]
    EmptyComplex,
}

/// Complex members we map, most specific first.
const COMPLEX_MEMBERS: [(&str, SubjectKind); 4] = [
    ("session", SubjectKind::Session),
    ("device", SubjectKind::Device),
    ("user", SubjectKind::User),
    ("application", SubjectKind::App),
];

/// Complex members RFC 9493 and SSF define that we refuse.
const COMPLEX_UNSUPPORTED: [&str; 3] = ["tenant", "org_unit", "group"];

/// The revocation subject for a subject identifier.
pub fn subject_of(identifier: &Value) -> Result<Subject, SubjectError> {
    let object = identifier.as_object().ok_or(SubjectError::Malformed)?;
    match format(object)? {
        "complex" => complex(object),
        _ => simple(object, SubjectKind::User),
    }
}

fn format(object: &Map<String, Value>) -> Result<&str, SubjectError> {
    object
        .get("format")
        .and_then(Value::as_str)
        .ok_or(SubjectError::Malformed)
}

fn complex(object: &Map<String, Value>) -> Result<Subject, SubjectError> {
    for name in COMPLEX_UNSUPPORTED {
        if object.contains_key(name) {
            return Err(SubjectError::UnsupportedMember(name.to_owned()));
        }
    }
    for (name, kind) in COMPLEX_MEMBERS {
        if let Some(member) = object.get(name) {
            let member = member.as_object().ok_or(SubjectError::Malformed)?;
            if format(member)? == "complex" {
                // RFC 9493 §3.2.4: members of a complex identifier are simple ones.
                return Err(SubjectError::UnsupportedFormat("complex".to_owned()));
            }
            return simple(member, kind);
        }
    }
    Err(SubjectError::EmptyComplex)
}

fn simple(object: &Map<String, Value>, kind: SubjectKind) -> Result<Subject, SubjectError> {
    let id = match format(object)? {
        "iss_sub" => {
            member(object, "iss")?;
            member(object, "sub")?
        }
        "opaque" => member(object, "id")?,
        other => return Err(SubjectError::UnsupportedFormat(bounded(other))),
    };
    Ok(Subject::new(kind, id))
}

fn member<'a>(object: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, SubjectError> {
    object
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= SSF_STRING_BYTES_MAX)
        .ok_or(SubjectError::Member(name))
}

/// An unsupported format's name for the error, cut so a hostile SET cannot make it long.
fn bounded(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn subject_identifier_table() {
        let ok: &[(Value, Subject)] = &[
            (
                json!({"format": "iss_sub", "iss": "https://idp", "sub": "u1"}),
                Subject::User("u1".into()),
            ),
            (
                json!({"format": "opaque", "id": "u2"}),
                Subject::User("u2".into()),
            ),
            (
                json!({"format": "complex",
                       "user": {"format": "iss_sub", "iss": "https://idp", "sub": "u1"},
                       "device": {"format": "opaque", "id": "d1"}}),
                Subject::Device("d1".into()),
            ),
            (
                json!({"format": "complex",
                       "user": {"format": "iss_sub", "iss": "https://idp", "sub": "u1"},
                       "session": {"format": "opaque", "id": "sid-1"},
                       "device": {"format": "opaque", "id": "d1"}}),
                Subject::Session("sid-1".into()),
            ),
            (
                json!({"format": "complex",
                       "user": {"format": "iss_sub", "iss": "https://idp", "sub": "u1"}}),
                Subject::User("u1".into()),
            ),
            (
                json!({"format": "complex",
                       "application": {"format": "opaque", "id": "client-9"}}),
                Subject::App("client-9".into()),
            ),
        ];
        for (identifier, want) in ok {
            assert_eq!(subject_of(identifier).as_ref(), Ok(want), "{identifier}");
        }

        let refused: &[(Value, SubjectError)] = &[
            (json!("u1"), SubjectError::Malformed),
            (json!({"sub": "u1"}), SubjectError::Malformed),
            (
                json!({"format": "email", "email": "a@example.com"}),
                SubjectError::UnsupportedFormat("email".into()),
            ),
            (
                json!({"format": "iss_sub", "sub": "u1"}),
                SubjectError::Member("iss"),
            ),
            (
                json!({"format": "iss_sub", "iss": "x", "sub": ""}),
                SubjectError::Member("sub"),
            ),
            (
                json!({"format": "opaque", "id": 5}),
                SubjectError::Member("id"),
            ),
            (
                json!({"format": "opaque", "id": "x".repeat(SSF_STRING_BYTES_MAX + 1)}),
                SubjectError::Member("id"),
            ),
            (
                json!({"format": "complex", "tenant": {"format": "opaque", "id": "t"},
                       "user": {"format": "opaque", "id": "u"}}),
                SubjectError::UnsupportedMember("tenant".into()),
            ),
            (json!({"format": "complex"}), SubjectError::EmptyComplex),
            (
                json!({"format": "complex", "user": {"format": "complex"}}),
                SubjectError::UnsupportedFormat("complex".into()),
            ),
            (
                json!({"format": "complex", "device": {"format": "email", "email": "x"}}),
                SubjectError::UnsupportedFormat("email".into()),
            ),
        ];
        for (identifier, want) in refused {
            assert_eq!(subject_of(identifier).as_ref(), Err(want), "{identifier}");
        }
    }
}
