//! Property test: random inserts (with repeated and conflicting ids), expiries, snapshots and
//! queries leave the revocation filter answering exactly as a naive list-of-events model does,
//! with zero false negatives against every event ever accepted.
// Integration-test crate: helpers outside `#[test]` fns may unwrap like the tests do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use backstop::revocation::{
    EventKind, FilterSnapshot, Inserted, RevocationError, RevocationEvent, RevocationSet, Source,
    Subject, Verdict,
};
use proptest::prelude::*;

/// The model: the retained events in a list, and the horizon.
#[derive(Debug, Clone)]
struct Model {
    events_max: usize,
    retained: Vec<RevocationEvent>,
    horizon_secs: i64,
}

/// What the model expects of a query.
#[derive(Debug, PartialEq)]
enum Expected {
    Clear,
    Revoked { latest_secs: i64 },
    BeforeHorizon { horizon_secs: i64 },
}

impl Model {
    fn insert(&mut self, event: RevocationEvent) -> Result<Inserted, RevocationError> {
        if event.time_secs < self.horizon_secs {
            return Ok(Inserted::BeforeHorizon {
                horizon_secs: self.horizon_secs,
            });
        }
        if let Some(known) = self.retained.iter().find(|e| e.id == event.id) {
            return if *known == event {
                Ok(Inserted::Duplicate)
            } else {
                Err(RevocationError::IdConflict { id: event.id })
            };
        }
        if self.retained.len() >= self.events_max {
            return Err(RevocationError::Full {
                events_max: self.events_max,
            });
        }
        self.retained.push(event);
        Ok(Inserted::New)
    }

    fn expire_before(&mut self, cutoff_secs: i64) -> usize {
        if cutoff_secs <= self.horizon_secs {
            return 0;
        }
        self.horizon_secs = cutoff_secs;
        let before = self.retained.len();
        self.retained.retain(|e| e.time_secs >= cutoff_secs);
        before - self.retained.len()
    }

    fn query(&self, subject: &Subject, since_secs: i64) -> Expected {
        if since_secs < self.horizon_secs {
            return Expected::BeforeHorizon {
                horizon_secs: self.horizon_secs,
            };
        }
        self.retained
            .iter()
            .filter(|e| e.subject == *subject && e.time_secs >= since_secs)
            .map(|e| e.time_secs)
            .max()
            .map_or(Expected::Clear, |latest_secs| Expected::Revoked {
                latest_secs,
            })
    }
}

fn check(snap: &FilterSnapshot, model: &Model, subject: &Subject, since_secs: i64) {
    let verdict = snap.revoked_since(subject, since_secs);
    let got = match &verdict {
        Verdict::Clear(proof) => {
            assert_eq!(proof.since_secs(), since_secs);
            assert_eq!(proof.generation(), snap.generation());
            Expected::Clear
        }
        Verdict::Revoked(event) => {
            // The event answering is one the model holds, for this subject, at or after t.
            assert!(model.retained.contains(event), "{event:?} not in model");
            assert_eq!(&event.subject, subject);
            Expected::Revoked {
                latest_secs: event.time_secs,
            }
        }
        Verdict::BeforeHorizon { horizon_secs } => Expected::BeforeHorizon {
            horizon_secs: *horizon_secs,
        },
    };
    assert_eq!(
        got,
        model.query(subject, since_secs),
        "{subject:?} since {since_secs}"
    );
}

fn subject() -> impl Strategy<Value = Subject> {
    // A small pool of ids, so that subjects repeat and types share ids.
    (0..4u8, 0..6u8).prop_map(|(kind, id)| {
        let id = format!("s{id}");
        match kind {
            0 => Subject::User(id),
            1 => Subject::Device(id),
            2 => Subject::Session(id),
            _ => Subject::App(id),
        }
    })
}

fn event() -> impl Strategy<Value = RevocationEvent> {
    (
        0..30u8,
        0..EventKind::ALL.len(),
        subject(),
        0..100i64,
        prop_oneof![
            Just(Source::AdminApi),
            Just(Source::SharedSignals),
            Just(Source::Primary)
        ],
    )
        .prop_map(|(id, kind, subject, time_secs, source)| RevocationEvent {
            id: format!("e{id}"),
            kind: EventKind::ALL[kind],
            subject,
            time_secs,
            source,
        })
}

#[derive(Debug, Clone)]
enum Op {
    Insert(RevocationEvent),
    /// Insert the event again (a redelivery), by index into those inserted so far.
    Redeliver(usize),
    Expire(i64),
    /// Keep the current snapshot and model aside, to check later that writes do not reach it.
    Snapshot,
    Query(Subject, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => event().prop_map(Op::Insert),
        2 => any::<usize>().prop_map(Op::Redeliver),
        1 => (0..110i64).prop_map(Op::Expire),
        1 => Just(Op::Snapshot),
        6 => (subject(), -10..110i64).prop_map(|(s, t)| Op::Query(s, t)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, max_shrink_iters: 500, ..ProptestConfig::default() })]

    #[test]
    fn filter_matches_naive_model(events_max in 1..25u64, ops in proptest::collection::vec(op(), 1..80)) {
        let mut set = RevocationSet::new(events_max).unwrap();
        let mut model = Model { events_max: events_max as usize, retained: Vec::new(), horizon_secs: i64::MIN };
        // Every event ever accepted, never expired: the no-false-negative oracle.
        let mut accepted: Vec<RevocationEvent> = Vec::new();
        let mut inserted: Vec<RevocationEvent> = Vec::new();
        let mut kept: Option<(Arc<FilterSnapshot>, Model)> = None;
        for op in ops {
            match op {
                Op::Insert(e) => {
                    let got = set.insert(e.clone());
                    prop_assert_eq!(&got, &model.insert(e.clone()));
                    if got == Ok(Inserted::New) {
                        accepted.push(e.clone());
                    }
                    inserted.push(e);
                }
                Op::Redeliver(i) => {
                    if !inserted.is_empty() {
                        let e = inserted[i % inserted.len()].clone();
                        prop_assert_eq!(set.insert(e.clone()), model.insert(e));
                    }
                }
                Op::Expire(cutoff) => {
                    prop_assert_eq!(set.expire_before(cutoff), model.expire_before(cutoff));
                }
                Op::Snapshot => kept = Some((set.snapshot(), model.clone())),
                Op::Query(subject, since) => {
                    let snap = set.snapshot();
                    check(&snap, &model, &subject, since);
                    if let Some((old, old_model)) = &kept {
                        check(old, old_model, &subject, since);
                    }
                    let verdict = snap.revoked_since(&subject, since);
                    if accepted.iter().any(|e| e.subject == subject && e.time_secs >= since) {
                        prop_assert!(!verdict.is_clear(), "false negative: {:?} since {}", subject, since);
                    }
                }
            }
            prop_assert_eq!(set.len(), model.retained.len());
            prop_assert_eq!(set.horizon_secs(), model.horizon_secs);
            let snap = set.snapshot();
            prop_assert_eq!(snap.event_count(), model.retained.len());
            // Every retained event's subject is found for its own time: the bitmap has its bit.
            for e in &model.retained {
                prop_assert!(matches!(snap.revoked_since(&e.subject, e.time_secs), Verdict::Revoked(_)));
            }
        }
    }
}
