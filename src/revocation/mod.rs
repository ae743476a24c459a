//! Revocation (DESIGN §6): the event model and the filter that answers "any event for this
//! subject at or after t?" with no false negatives, read lock-free on the request path.
//!
//! Pure: no I/O, no clock. [`RevocationSet`] is the single-writer builder (insert, expire);
//! [`RevocationSet::snapshot`] hands out an immutable [`FilterSnapshot`] in O(1), which the
//! server publishes through `arc-swap` so every worker reads the latest one without a lock.
//! Durability (the WAL), the admin routes and the Shared Signals receiver (`ssf`) live
//! elsewhere and feed events in; this module gives them the stable on-disk codes
//! ([`RevocationEvent::codes`]) and the admin API's event shape ([`parse_admin_event`],
//! [`admin_event_json`], [`AdminQuery`]).

mod admin;
mod event;
mod filter;

pub use admin::{AdminEventError, AdminQuery, admin_event_json, parse_admin_event};
pub use event::{EventKind, RevocationEvent, Source, Subject, SubjectKind};
pub use filter::{FilterSnapshot, Inserted, NotRevoked, RevocationError, RevocationSet, Verdict};
