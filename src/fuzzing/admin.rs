//! Fuzz entry point for the admin API's parsers of request bytes (the policy document of `PUT
//! /admin/policies` has its own target, `policy_json`). The first byte, modulo 5, picks the
//! parser; the rest is its input:
//!
//! | byte % 5 | input |
//! |---|---|
//! | 0 | a `POST /admin/revocations` body |
//! | 1 | a `GET /admin/revocations` query string (without `?`) |
//! | 2 | a `POST /admin/mode` body |
//! | 3 | a `PUT /admin/policies` `If-Match` header value |
//! | 4 | the admin listener's `Authorization` header value (`Bearer`) |
//!
//! Each parser must refuse or parse, never panic, and what it accepts must survive being
//! written back the way the server (or an operator's client) writes it.

use super::protocol::form_encode;
use crate::limits::{
    ADMIN_REVOCATION_FUTURE_SECS_MAX, REVOCATION_EVENT_ID_BYTES_MAX,
    REVOCATION_SUBJECT_ID_BYTES_MAX,
};
use crate::policy::parse_if_match;
use crate::revocation::{
    AdminQuery, EventKind, RevocationEvent, Source, Subject, SubjectKind, admin_event_json,
    parse_admin_event,
};
use crate::server::admin::{mode_label, parse_mode_body, parse_revocation_query, strip_bearer};

/// The `now` of every fuzzed admin request.
const NOW_SECS: i64 = 1_800_000_000;

/// One admin request input (see the module documentation for the selector byte).
pub fn admin_api(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => revocation_body(rest),
        1 => revocation_query(rest),
        2 => mode_body(rest),
        3 => if_match(rest),
        _ => bearer(rest),
    }
}

/// An accepted event is within its bounds, is written back (as `GET /admin/revocations` lists
/// it) in a shape that parses to the same event, and survives the store's record codes.
fn revocation_body(body: &[u8]) {
    let Ok(event) = parse_admin_event(body, NOW_SECS) else {
        return;
    };
    assert_eq!(event.source, Source::AdminApi);
    assert!((1..=REVOCATION_EVENT_ID_BYTES_MAX).contains(&event.id.len()));
    assert!((1..=REVOCATION_SUBJECT_ID_BYTES_MAX).contains(&event.subject.id().len()));
    assert!(event.time_secs <= NOW_SECS + ADMIN_REVOCATION_FUTURE_SECS_MAX);
    let mut listed = admin_event_json(&event);
    if let Some(obj) = listed.as_object_mut() {
        obj.remove("source");
    }
    let again = parse_admin_event(listed.to_string().as_bytes(), NOW_SECS);
    assert_eq!(again.as_ref(), Ok(&event), "admin event round trip");
    let stored = RevocationEvent::from_codes(
        event.id.clone(),
        event.codes(),
        event.subject.id().to_owned(),
        event.time_secs,
    );
    assert_eq!(stored.as_ref(), Some(&event), "record codes round trip");
}

/// An accepted query, written canonically, parses to the same filter; and an event built from
/// the filter's own values passes it.
fn revocation_query(query: &[u8]) {
    let Ok(filter) = parse_revocation_query(query) else {
        return;
    };
    let mut canonical = String::new();
    let mut param = |name: &str, value: &str| {
        if !canonical.is_empty() {
            canonical.push('&');
        }
        canonical.push_str(name);
        canonical.push('=');
        form_encode(value, &mut canonical);
    };
    if let Some(k) = filter.subject_type {
        param("subject_type", k.as_str());
    }
    if let Some(id) = &filter.subject_id {
        param("subject_id", id);
    }
    if let Some(k) = filter.kind {
        param("kind", k.as_str());
    }
    if let Some(t) = filter.since_secs {
        param("since", &t.to_string());
    }
    assert_eq!(
        parse_revocation_query(canonical.as_bytes()).as_ref(),
        Ok(&filter),
        "admin query round trip: {canonical}"
    );
    let event = RevocationEvent {
        id: "e".into(),
        kind: filter.kind.unwrap_or(EventKind::CredentialChange),
        subject: Subject::new(
            filter.subject_type.unwrap_or(SubjectKind::User),
            filter.subject_id.clone().unwrap_or_else(|| "s".into()),
        ),
        time_secs: filter.since_secs.unwrap_or(0),
        source: Source::AdminApi,
    };
    assert!(filter.matches(&event), "a query's own event must match it");
    assert!(AdminQuery::default().matches(&event));
}

/// An accepted mode is one of the three, named by its label in the body; the label's own body
/// parses to it. (serde also reads a struct from a JSON array, so `["outage"]` is accepted.)
fn mode_body(body: &[u8]) {
    let Some(mode) = parse_mode_body(body) else {
        return;
    };
    let label = mode_label(mode);
    let value: Result<serde_json::Value, _> = serde_json::from_slice(body);
    let named = value.is_ok_and(|v| {
        v == serde_json::json!({ "mode": label }) || v == serde_json::json!([label])
    });
    assert!(named, "mode {label} read from a body that does not name it");
    let canonical = serde_json::json!({ "mode": label }).to_string();
    assert_eq!(parse_mode_body(canonical.as_bytes()), Some(mode));
}

/// A version read from `If-Match` is read back from the `ETag` the server writes for it, weak
/// or strong.
fn if_match(value: &[u8]) {
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    let Some(version) = parse_if_match(value) else {
        return;
    };
    for etag in [format!("\"{version}\""), format!("W/\"{version}\"")] {
        assert_eq!(parse_if_match(&etag), Some(version), "ETag round trip");
    }
}

/// The token is the header's bytes after a case-insensitive `Bearer `, nothing dropped.
fn bearer(value: &[u8]) {
    if let Some(token) = strip_bearer(value) {
        let scheme = value.get(..7).unwrap_or_default();
        assert!(scheme.eq_ignore_ascii_case(b"bearer "));
        assert_eq!(value.get(7..), Some(token));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry point runs on a few seeds in every `cargo test`, so a broken one is caught
    /// before anyone runs the fuzzer.
    #[test]
    fn entry_point_runs_on_seeds() {
        let seeds: [&[u8]; 12] = [
            b"\x00{\"id\":\"r-1\",\"kind\":\"credential_change\",\"subject\":{\"type\":\"user\",\"id\":\"al\\u00efce\"},\"time\":999}",
            b"\x00{\"id\":\"r\",\"kind\":\"sessions_revoked\",\"subject\":{\"type\":\"app\",\"id\":\"c\"}}",
            b"\x00[\"r\",\"account_disabled\",{\"type\":\"device\",\"id\":\"d\"},5]",
            b"\x01subject_type=user&subject_id=al%C3%AFce&kind=credential_change&since=-5",
            b"\x01since=+7",
            b"\x01subject_id=a&subject_id=b",
            b"\x02{\"mode\":\"outage\"}",
            b"\x02[\"auto\"]",
            b"\x03W/\"007\"",
            b"\x03*",
            b"\x04bEaReR tok en",
            b"",
        ];
        for s in seeds {
            admin_api(s);
        }
    }
}
