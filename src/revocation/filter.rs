//! The revocation filter: a bitmap over subject hashes in front of an exact map, so the
//! common case (no event for the subject) is one hash and one bit probe, and bitmap false
//! positives never reach a verdict.
//!
//! Writes go to [`RevocationSet`] (one writer); reads go to an immutable [`FilterSnapshot`].
//! A snapshot shares the bitmap (`Arc`, copied on the next write) and the exact map (a
//! persistent `imbl` map) with the set, so taking one is O(1) whatever the event count.
//!
//! No false negatives: every retained event's subject has its bit set, and the exact map
//! holds each subject's latest retained event. Events older than the horizon (the latest
//! `expire_before` cutoff) are gone, so a question about a time before the horizon cannot be
//! answered and gets [`Verdict::BeforeHorizon`], never [`Verdict::Clear`].

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use thiserror::Error;

use super::event::{RevocationEvent, Subject, SubjectKind};
use crate::limits;

/// Bitmap bits per distinct subject, before rounding up to a power of two: between 16 and 32
/// bits (2 to 4 bytes) per subject, so 3 % to 6 % of clean checks look in the exact map.
const BITS_PER_SUBJECT: usize = 16;

/// Smallest bitmap, in bits: one chunk (4 KiB).
const BITMAP_BITS_MIN: usize = CHUNK_WORDS * 64;

/// An event keyed by its id, so the id map holds no second copy of the id.
#[derive(Debug)]
struct ById(Arc<RevocationEvent>);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.as_str().hash(state);
    }
}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

/// A subject's latest event keyed by its subject, so the exact map holds no second copy of
/// the subject and its entries are one pointer wide.
#[derive(Debug, Clone)]
struct BySubject(Arc<RevocationEvent>);

impl PartialEq for BySubject {
    fn eq(&self, other: &Self) -> bool {
        self.0.subject == other.0.subject
    }
}

impl Eq for BySubject {}

impl Hash for BySubject {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.subject.hash(state);
    }
}

impl Borrow<Subject> for BySubject {
    fn borrow(&self) -> &Subject {
        &self.0.subject
    }
}

/// Each subject's latest retained event (a persistent map: cloning it is O(1)).
type Latest = imbl::HashMap<BySubject, ()>;

fn latest_of<'a>(latest: &'a Latest, subject: &Subject) -> Option<&'a RevocationEvent> {
    latest.get_key_value(subject).map(|(key, ())| &*key.0)
}

/// Why an event was refused, or a set could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RevocationError {
    /// The set holds `events_max` events already (`limits::REVOCATION_EVENTS`). The event
    /// is not recorded; failing closed is the caller's decision.
    #[error("revocation set is full: {events_max} events (limits::REVOCATION_EVENTS)")]
    Full {
        /// The cap that was reached.
        events_max: usize,
    },
    /// The requested event cap is outside `limits::REVOCATION_EVENTS`.
    #[error("revocation event cap {events_max} is outside limits::REVOCATION_EVENTS")]
    CapOutOfBound {
        /// The requested cap.
        events_max: u64,
    },
    /// The event id is empty.
    #[error("revocation event id is empty")]
    EventIdEmpty,
    /// The event id is longer than `limits::REVOCATION_EVENT_ID_BYTES_MAX`.
    #[error("revocation event id is {bytes} bytes, over limits::REVOCATION_EVENT_ID_BYTES_MAX")]
    EventIdTooLong {
        /// Its length.
        bytes: usize,
    },
    /// The subject's identifier is empty.
    #[error("revocation subject id is empty")]
    SubjectIdEmpty,
    /// The subject's identifier is longer than `limits::REVOCATION_SUBJECT_ID_BYTES_MAX`.
    #[error("revocation subject id is {bytes} bytes, over limits::REVOCATION_SUBJECT_ID_BYTES_MAX")]
    SubjectIdTooLong {
        /// Its length.
        bytes: usize,
    },
    /// An event with this id is already recorded with different content.
    #[error("revocation event id {id:?} is already recorded with different content")]
    IdConflict {
        /// The id.
        id: String,
    },
}

/// What an accepted insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The event is recorded.
    New,
    /// The same event (same id, same content) was already recorded; nothing changed.
    Duplicate,
    /// The event is older than the horizon: it can only deny snapshots that are already
    /// outside the window, so it is not recorded.
    BeforeHorizon {
        /// The horizon, in Unix seconds.
        horizon_secs: i64,
    },
}

/// Proof that the filter found no event for the checked subjects at or after `since_secs`.
/// Only this module constructs it; minting a backup token takes one.
#[derive(Debug)]
pub struct NotRevoked {
    since_secs: i64,
    generation: u64,
}

impl NotRevoked {
    /// The time the check was made against (the snapshot's recording time), Unix seconds.
    pub fn since_secs(&self) -> i64 {
        self.since_secs
    }

    /// The generation of the filter snapshot that answered.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The filter's answer to "any event for this subject at or after t?".
#[derive(Debug)]
pub enum Verdict<'a> {
    /// No event: the proof.
    Clear(NotRevoked),
    /// The subject's latest event, which is at or after t.
    Revoked(&'a RevocationEvent),
    /// t is before the horizon: events that old were aged out, so the filter cannot say.
    /// Callers refuse (such a snapshot is outside the session window anyway).
    BeforeHorizon {
        /// The horizon, in Unix seconds.
        horizon_secs: i64,
    },
}

impl Verdict<'_> {
    /// Whether the verdict is [`Verdict::Clear`].
    pub fn is_clear(&self) -> bool {
        matches!(self, Verdict::Clear(_))
    }
}

/// A fixed-size bit array indexed by the low bits of a subject hash. Its size is a power of
/// two, so the index is a mask. It is cut into 4 KiB chunks, each behind its own `Arc`, so
/// the first write after a snapshot copies one chunk and the chunk table, not the bitmap.
#[derive(Debug, Clone)]
struct Bitmap {
    chunks: Arc<[Arc<[u64]>]>,
    mask: u64,
}

/// Words per bitmap chunk (4 KiB).
const CHUNK_WORDS: usize = 512;

impl Bitmap {
    /// A bitmap with the bits of `hashes` set, sized for `subject_count` subjects.
    fn build(subject_count: usize, hashes: impl Iterator<Item = u64>) -> Self {
        let bits = subject_count
            .saturating_mul(BITS_PER_SUBJECT)
            .max(BITMAP_BITS_MIN)
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 1));
        debug_assert!(bits.is_power_of_two() && bits.is_multiple_of(CHUNK_WORDS * 64));
        let mask = (bits as u64) - 1;
        let mut words = vec![0_u64; bits / 64];
        for hash in hashes {
            let bit = hash & mask;
            let word = words.get_mut((bit >> 6) as usize);
            debug_assert!(word.is_some(), "mask covers the words");
            if let Some(word) = word {
                *word |= 1 << (bit & 63);
            }
        }
        Bitmap {
            chunks: words.chunks(CHUNK_WORDS).map(Arc::from).collect(),
            mask,
        }
    }

    fn bit_count(&self) -> usize {
        self.chunks.len() * CHUNK_WORDS * 64
    }

    fn bytes(&self) -> usize {
        self.chunks.len() * CHUNK_WORDS * 8
    }

    /// False means no retained event has this hash's subject. A missing word (impossible by
    /// construction) answers true, so an error can only cost a look in the exact map.
    #[inline]
    fn may_contain(&self, hash: u64) -> bool {
        let bit = hash & self.mask;
        let word = (bit >> 6) as usize;
        self.chunks
            .get(word / CHUNK_WORDS)
            .and_then(|chunk| chunk.get(word % CHUNK_WORDS))
            .is_none_or(|word| (word >> (bit & 63)) & 1 == 1)
    }

    /// Sets `hash`'s bit, copying its chunk (and the chunk table) first if a snapshot shares
    /// them.
    fn insert(&mut self, hash: u64) {
        let bit = hash & self.mask;
        let word = (bit >> 6) as usize;
        let chunk = Arc::make_mut(&mut self.chunks).get_mut(word / CHUNK_WORDS);
        debug_assert!(chunk.is_some(), "mask covers the chunks");
        if let Some(chunk) = chunk
            && let Some(word) = Arc::make_mut(chunk).get_mut(word % CHUNK_WORDS)
        {
            *word |= 1 << (bit & 63);
        }
    }
}

/// An immutable view of the filter, for the request path. Publish it with `arc-swap`.
#[derive(Debug, Clone)]
pub struct FilterSnapshot {
    bitmap: Bitmap,
    latest: Latest,
    horizon_secs: i64,
    generation: u64,
    event_count: usize,
}

impl FilterSnapshot {
    /// The filter with no events and no horizon (what a server holds before replay).
    pub fn empty() -> Self {
        FilterSnapshot {
            bitmap: Bitmap::build(0, std::iter::empty()),
            latest: imbl::HashMap::new(),
            horizon_secs: i64::MIN,
            generation: 0,
            event_count: 0,
        }
    }

    /// Any event for `subject` at or after `since_secs`? The common answer costs one hash and
    /// one bit probe.
    #[inline]
    pub fn revoked_since(&self, subject: &Subject, since_secs: i64) -> Verdict<'_> {
        if since_secs < self.horizon_secs {
            return Verdict::BeforeHorizon {
                horizon_secs: self.horizon_secs,
            };
        }
        if self.bitmap.may_contain(subject.filter_hash())
            && let Some(event) = latest_of(&self.latest, subject)
            && event.time_secs >= since_secs
        {
            return Verdict::Revoked(event);
        }
        Verdict::Clear(NotRevoked {
            since_secs,
            generation: self.generation,
        })
    }

    /// [`FilterSnapshot::revoked_since`] for a borrowed subject (`kind`, `id`), e.g. straight
    /// from an archived snapshot: the clean case allocates nothing; only a bitmap hit (a real
    /// event or a 3–6 % false positive) builds the owned key for the exact map.
    #[inline]
    pub fn revoked_since_ref(&self, kind: SubjectKind, id: &str, since_secs: i64) -> Verdict<'_> {
        if since_secs < self.horizon_secs {
            return Verdict::BeforeHorizon {
                horizon_secs: self.horizon_secs,
            };
        }
        if self.bitmap.may_contain(kind.filter_hash(id)) {
            return self.revoked_since(&Subject::new(kind, id), since_secs);
        }
        Verdict::Clear(NotRevoked {
            since_secs,
            generation: self.generation,
        })
    }

    /// Any event for any of `subjects` (a session's user, device, session and app) at or
    /// after `since_secs`? Answers with the first subject's event found.
    pub fn revoked_since_any<'s>(
        &self,
        subjects: impl IntoIterator<Item = &'s Subject>,
        since_secs: i64,
    ) -> Verdict<'_> {
        for subject in subjects {
            match self.revoked_since(subject, since_secs) {
                Verdict::Clear(_) => {}
                other => return other,
            }
        }
        if since_secs < self.horizon_secs {
            return Verdict::BeforeHorizon {
                horizon_secs: self.horizon_secs,
            };
        }
        Verdict::Clear(NotRevoked {
            since_secs,
            generation: self.generation,
        })
    }

    /// Events older than this (Unix seconds) were aged out; `i64::MIN` if none ever were.
    pub fn horizon_secs(&self) -> i64 {
        self.horizon_secs
    }

    /// Counts the set's changes; a snapshot with a higher generation is newer.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Retained events when the snapshot was taken.
    pub fn event_count(&self) -> usize {
        self.event_count
    }

    /// Distinct subjects with a retained event.
    pub fn subject_count(&self) -> usize {
        self.latest.len()
    }

    /// Bytes of the bitmap.
    pub fn bitmap_bytes(&self) -> usize {
        self.bitmap.bytes()
    }
}

impl Default for FilterSnapshot {
    fn default() -> Self {
        Self::empty()
    }
}

/// The mutable filter: inserts events, ages them out, and hands out snapshots. One writer.
#[derive(Debug)]
pub struct RevocationSet {
    events_max: usize,
    /// Every retained event, by id (idempotency and the cap).
    by_id: HashSet<ById>,
    /// Each subject's latest retained event.
    latest: Latest,
    /// A bit for every subject in `latest`.
    bitmap: Bitmap,
    horizon_secs: i64,
    generation: u64,
}

impl RevocationSet {
    /// An empty set holding at most `events_max` events (`limits::REVOCATION_EVENTS`).
    pub fn new(events_max: u64) -> Result<Self, RevocationError> {
        let cap = usize::try_from(events_max)
            .ok()
            .filter(|_| limits::REVOCATION_EVENTS.allows(events_max))
            .ok_or(RevocationError::CapOutOfBound { events_max })?;
        Ok(Self::with_cap(cap))
    }

    fn with_cap(events_max: usize) -> Self {
        RevocationSet {
            events_max,
            by_id: HashSet::new(),
            latest: imbl::HashMap::new(),
            bitmap: Bitmap::build(0, std::iter::empty()),
            horizon_secs: i64::MIN,
            generation: 0,
        }
    }

    /// Records `event`. Idempotent by id; refuses a different event under a known id, an
    /// invalid one, and any new one once the cap is reached.
    pub fn insert(&mut self, event: RevocationEvent) -> Result<Inserted, RevocationError> {
        validate(&event)?;
        if event.time_secs < self.horizon_secs {
            return Ok(Inserted::BeforeHorizon {
                horizon_secs: self.horizon_secs,
            });
        }
        if let Some(known) = self.by_id.get(event.id.as_str()) {
            return if *known.0 == event {
                Ok(Inserted::Duplicate)
            } else {
                Err(RevocationError::IdConflict { id: event.id })
            };
        }
        if self.by_id.len() >= self.events_max {
            return Err(RevocationError::Full {
                events_max: self.events_max,
            });
        }

        let event = Arc::new(event);
        let inserted = self.by_id.insert(ById(Arc::clone(&event)));
        debug_assert!(inserted, "the id was not known");
        let newer = latest_of(&self.latest, &event.subject)
            .is_none_or(|current| current.time_secs < event.time_secs);
        if newer {
            let hash = event.subject.filter_hash();
            let replaced = self.latest.insert(BySubject(Arc::clone(&event)), ());
            if replaced.is_none() {
                if self.latest.len().saturating_mul(BITS_PER_SUBJECT) > self.bitmap.bit_count() {
                    self.rebuild_bitmap();
                } else {
                    self.bitmap.insert(hash);
                }
            }
        }
        self.generation += 1;

        debug_assert!(self.by_id.len() <= self.events_max);
        debug_assert!(self.latest.len() <= self.by_id.len());
        debug_assert!(self.bitmap.may_contain(event.subject.filter_hash()));
        debug_assert!(
            latest_of(&self.latest, &event.subject)
                .is_some_and(|latest| latest.time_secs >= event.time_secs)
        );
        Ok(Inserted::New)
    }

    /// Drops every event older than `cutoff_secs` (the start of the session window) and
    /// rebuilds the bitmap; the horizon becomes `cutoff_secs`. A cutoff at or before the
    /// horizon changes nothing. Returns how many events were dropped.
    pub fn expire_before(&mut self, cutoff_secs: i64) -> usize {
        if cutoff_secs <= self.horizon_secs {
            return 0;
        }
        self.horizon_secs = cutoff_secs;
        let before = self.by_id.len();
        self.by_id.retain(|event| event.0.time_secs >= cutoff_secs);
        // A subject's latest event is its newest, so it goes only when all of its events go.
        self.latest
            .retain(|event, ()| event.0.time_secs >= cutoff_secs);
        self.rebuild_bitmap();
        self.generation += 1;

        debug_assert!(self.latest.len() <= self.by_id.len());
        debug_assert!(self.by_id.iter().all(|e| e.0.time_secs >= cutoff_secs));
        before - self.by_id.len()
    }

    fn rebuild_bitmap(&mut self) {
        self.bitmap = Bitmap::build(
            self.latest.len(),
            self.latest.keys().map(|key| key.0.subject.filter_hash()),
        );
        debug_assert!(
            self.latest.len().saturating_mul(BITS_PER_SUBJECT) <= self.bitmap.bit_count()
        );
    }

    /// An immutable view of the set as it is now. O(1): later writes copy what they change.
    pub fn snapshot(&self) -> Arc<FilterSnapshot> {
        Arc::new(FilterSnapshot {
            bitmap: self.bitmap.clone(),
            latest: self.latest.clone(),
            horizon_secs: self.horizon_secs,
            generation: self.generation,
            event_count: self.by_id.len(),
        })
    }

    /// The retained event with this id.
    pub fn get(&self, id: &str) -> Option<&RevocationEvent> {
        self.by_id.get(id).map(|event| &*event.0)
    }

    /// Every retained event, in no particular order.
    pub fn events(&self) -> impl Iterator<Item = &RevocationEvent> {
        self.by_id.iter().map(|event| &*event.0)
    }

    /// Retained events.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no event is retained.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The cap on retained events.
    pub fn events_max(&self) -> usize {
        self.events_max
    }

    /// Events older than this (Unix seconds) were aged out; `i64::MIN` if none ever were.
    pub fn horizon_secs(&self) -> i64 {
        self.horizon_secs
    }
}

impl Default for RevocationSet {
    /// An empty set with the default cap.
    fn default() -> Self {
        Self::with_cap(usize::try_from(limits::REVOCATION_EVENTS.default).unwrap_or(usize::MAX))
    }
}

fn validate(event: &RevocationEvent) -> Result<(), RevocationError> {
    let id_bytes = event.id.len();
    if id_bytes == 0 {
        return Err(RevocationError::EventIdEmpty);
    }
    if id_bytes > limits::REVOCATION_EVENT_ID_BYTES_MAX {
        return Err(RevocationError::EventIdTooLong { bytes: id_bytes });
    }
    let subject_bytes = event.subject.id().len();
    if subject_bytes == 0 {
        return Err(RevocationError::SubjectIdEmpty);
    }
    if subject_bytes > limits::REVOCATION_SUBJECT_ID_BYTES_MAX {
        return Err(RevocationError::SubjectIdTooLong {
            bytes: subject_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::{EventKind, Source};

    fn event(id: &str, subject: Subject, time_secs: i64) -> RevocationEvent {
        RevocationEvent {
            id: id.into(),
            kind: EventKind::CredentialChange,
            subject,
            time_secs,
            source: Source::AdminApi,
        }
    }

    fn user(id: &str) -> Subject {
        Subject::User(id.into())
    }

    fn set_with(events: &[RevocationEvent]) -> RevocationSet {
        let mut set = RevocationSet::new(100).unwrap();
        for e in events {
            assert_eq!(set.insert(e.clone()), Ok(Inserted::New));
        }
        set
    }

    #[test]
    fn borrowed_check_agrees_with_owned_check() {
        let mut set = set_with(&[
            event("e1", user("alice"), 100),
            event("e2", Subject::Device("alice".into()), 50),
        ]);
        for i in 0..90 {
            let e = event(&format!("x{i}"), Subject::App(format!("app{i}")), 10);
            assert_eq!(set.insert(e), Ok(Inserted::New));
        }
        let snap = set.snapshot();
        for kind in SubjectKind::ALL {
            for id in ["alice", "bob", "app7", "app99", ""] {
                for since in [0, 10, 11, 50, 51, 100, 101] {
                    let owned = snap.revoked_since(&Subject::new(kind, id), since);
                    let borrowed = snap.revoked_since_ref(kind, id, since);
                    assert_eq!(
                        format!("{owned:?}"),
                        format!("{borrowed:?}"),
                        "{kind:?} {id} {since}"
                    );
                }
            }
        }
        set.expire_before(60);
        let snap = set.snapshot();
        assert!(matches!(
            snap.revoked_since_ref(SubjectKind::User, "nobody", 59),
            Verdict::BeforeHorizon { horizon_secs: 60 }
        ));
    }

    #[test]
    fn empty_filter_clears_everyone() {
        let snap = FilterSnapshot::empty();
        let verdict = snap.revoked_since(&user("alice"), 0);
        let Verdict::Clear(proof) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(proof.since_secs(), 0);
        assert_eq!(proof.generation(), 0);
        assert!(
            RevocationSet::default()
                .snapshot()
                .revoked_since(&user("a"), i64::MIN)
                .is_clear()
        );
    }

    #[test]
    fn event_at_or_after_since_revokes_and_before_does_not() {
        let snap = set_with(&[event("e1", user("alice"), 100)]).snapshot();
        let cases = [
            (99, true),
            (100, true),
            (101, false),
            (i64::MIN, true),
            (i64::MAX, false),
        ];
        for (since, revoked) in cases {
            let verdict = snap.revoked_since(&user("alice"), since);
            match verdict {
                Verdict::Revoked(e) => assert!(revoked && e.id == "e1", "since {since}"),
                Verdict::Clear(_) => assert!(!revoked, "since {since}"),
                Verdict::BeforeHorizon { .. } => panic!("no horizon yet"),
            }
        }
    }

    #[test]
    fn other_subjects_and_other_types_with_the_same_id_stay_clear() {
        let snap = set_with(&[event("e1", user("alice"), 100)]).snapshot();
        assert!(snap.revoked_since(&user("bob"), 0).is_clear());
        assert!(
            snap.revoked_since(&Subject::Device("alice".into()), 0)
                .is_clear()
        );
        assert!(
            snap.revoked_since(&Subject::Session("alice".into()), 0)
                .is_clear()
        );
        assert!(
            snap.revoked_since(&Subject::App("alice".into()), 0)
                .is_clear()
        );
    }

    #[test]
    fn latest_event_answers_whatever_the_insert_order() {
        for order in [[0, 1], [1, 0]] {
            let events = [event("old", user("a"), 50), event("new", user("a"), 100)];
            let mut set = RevocationSet::new(10).unwrap();
            for i in order {
                set.insert(events[i].clone()).unwrap();
            }
            let snap = set.snapshot();
            let Verdict::Revoked(e) = snap.revoked_since(&user("a"), 10) else {
                panic!("revoked")
            };
            assert_eq!(e.id, "new");
            assert!(
                matches!(snap.revoked_since(&user("a"), 80), Verdict::Revoked(e) if e.id == "new")
            );
            assert_eq!(snap.event_count(), 2);
            assert_eq!(snap.subject_count(), 1);
        }
    }

    #[test]
    fn same_event_twice_is_a_duplicate() {
        let mut set = set_with(&[event("e1", user("a"), 100)]);
        assert_eq!(
            set.insert(event("e1", user("a"), 100)),
            Ok(Inserted::Duplicate)
        );
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn different_event_under_a_known_id_is_a_conflict() {
        let mut set = set_with(&[event("e1", user("a"), 100)]);
        let conflicts = [
            event("e1", user("b"), 100),
            event("e1", user("a"), 101),
            RevocationEvent {
                kind: EventKind::AccountDisabled,
                ..event("e1", user("a"), 100)
            },
            RevocationEvent {
                source: Source::Primary,
                ..event("e1", user("a"), 100)
            },
        ];
        for e in conflicts {
            assert_eq!(
                set.insert(e),
                Err(RevocationError::IdConflict { id: "e1".into() })
            );
        }
        assert_eq!(set.len(), 1);
        assert!(set.snapshot().revoked_since(&user("b"), 0).is_clear());
    }

    #[test]
    fn full_set_refuses_new_events_and_still_accepts_duplicates() {
        let mut set = RevocationSet::new(2).unwrap();
        set.insert(event("e1", user("a"), 1)).unwrap();
        set.insert(event("e2", user("b"), 1)).unwrap();
        assert_eq!(
            set.insert(event("e3", user("c"), 1)),
            Err(RevocationError::Full { events_max: 2 })
        );
        assert_eq!(
            set.insert(event("e2", user("b"), 1)),
            Ok(Inserted::Duplicate)
        );
        assert_eq!(set.len(), 2);
        // Expiry frees room.
        assert_eq!(set.expire_before(0), 0);
        // An event before the horizon is not recorded, so being full does not matter to it.
        assert_eq!(
            set.insert(event("e0", user("z"), -5)),
            Ok(Inserted::BeforeHorizon { horizon_secs: 0 })
        );
        assert_eq!(set.expire_before(2), 2);
        assert_eq!(set.insert(event("e3", user("c"), 3)), Ok(Inserted::New));
    }

    #[test]
    fn cap_outside_the_limit_is_refused() {
        for cap in [0, limits::REVOCATION_EVENTS.max + 1, u64::MAX] {
            assert_eq!(
                RevocationSet::new(cap).unwrap_err(),
                RevocationError::CapOutOfBound { events_max: cap }
            );
        }
        assert_eq!(RevocationSet::new(1).unwrap().events_max(), 1);
        assert_eq!(
            RevocationSet::default().events_max() as u64,
            limits::REVOCATION_EVENTS.default
        );
    }

    #[test]
    fn malformed_events_are_refused_by_field() {
        let long_id = "x".repeat(limits::REVOCATION_EVENT_ID_BYTES_MAX + 1);
        let long_subject = "x".repeat(limits::REVOCATION_SUBJECT_ID_BYTES_MAX + 1);
        let table = [
            (event("", user("a"), 1), RevocationError::EventIdEmpty),
            (
                event(&long_id, user("a"), 1),
                RevocationError::EventIdTooLong {
                    bytes: long_id.len(),
                },
            ),
            (event("e", user(""), 1), RevocationError::SubjectIdEmpty),
            (
                event("e", Subject::App(long_subject.clone()), 1),
                RevocationError::SubjectIdTooLong {
                    bytes: long_subject.len(),
                },
            ),
        ];
        let mut set = RevocationSet::new(10).unwrap();
        for (e, err) in table {
            assert_eq!(set.insert(e), Err(err));
        }
        assert!(set.is_empty());
        let at_limit = "x".repeat(limits::REVOCATION_EVENT_ID_BYTES_MAX);
        assert_eq!(
            set.insert(event(&at_limit, user("a"), 1)),
            Ok(Inserted::New)
        );
    }

    #[test]
    fn expiry_drops_old_events_and_sets_the_horizon() {
        let mut set = set_with(&[
            event("old", user("a"), 10),
            event("new", user("a"), 30),
            event("gone", user("b"), 10),
        ]);
        assert_eq!(set.expire_before(20), 2);
        assert_eq!(set.horizon_secs(), 20);
        assert!(set.get("old").is_none() && set.get("gone").is_none());
        assert_eq!(set.get("new").map(|e| e.time_secs), Some(30));
        let snap = set.snapshot();
        assert_eq!(snap.horizon_secs(), 20);
        assert!(matches!(snap.revoked_since(&user("a"), 20), Verdict::Revoked(e) if e.id == "new"));
        assert!(snap.revoked_since(&user("b"), 20).is_clear());
        assert!(snap.revoked_since(&user("a"), 31).is_clear());
        // Before the horizon the filter cannot know: never Clear.
        assert!(matches!(
            snap.revoked_since(&user("b"), 19),
            Verdict::BeforeHorizon { horizon_secs: 20 }
        ));
        // An earlier or equal cutoff changes nothing.
        assert_eq!(set.expire_before(15), 0);
        assert_eq!(set.expire_before(20), 0);
        assert_eq!(set.horizon_secs(), 20);
    }

    #[test]
    fn events_before_the_horizon_are_not_recorded() {
        let mut set = RevocationSet::new(10).unwrap();
        set.expire_before(100);
        assert_eq!(
            set.insert(event("e", user("a"), 99)),
            Ok(Inserted::BeforeHorizon { horizon_secs: 100 })
        );
        assert!(set.is_empty());
        assert_eq!(set.insert(event("e", user("a"), 100)), Ok(Inserted::New));
    }

    #[test]
    fn snapshot_does_not_see_later_writes() {
        let mut set = set_with(&[event("e1", user("a"), 10)]);
        let before = set.snapshot();
        set.insert(event("e2", user("b"), 10)).unwrap();
        set.expire_before(11);
        let after = set.snapshot();
        assert!(matches!(
            before.revoked_since(&user("a"), 0),
            Verdict::Revoked(_)
        ));
        assert!(before.revoked_since(&user("b"), 0).is_clear());
        assert_eq!(before.event_count(), 1);
        assert!(after.revoked_since(&user("a"), 11).is_clear());
        assert!(after.generation() > before.generation());
    }

    #[test]
    fn any_of_a_sessions_subjects_revokes() {
        let set = set_with(&[event("e1", Subject::Device("d1".into()), 10)]);
        let snap = set.snapshot();
        let session = [
            user("alice"),
            Subject::Device("d1".into()),
            Subject::Session("s1".into()),
            Subject::App("app".into()),
        ];
        assert!(matches!(snap.revoked_since_any(&session, 5), Verdict::Revoked(e) if e.id == "e1"));
        assert!(snap.revoked_since_any(&session, 11).is_clear());
        assert!(snap.revoked_since_any([], 11).is_clear());
        let mut set = set;
        set.expire_before(20);
        let snap = set.snapshot();
        assert!(matches!(
            snap.revoked_since_any([], 0),
            Verdict::BeforeHorizon { horizon_secs: 20 }
        ));
    }

    #[test]
    fn bitmap_grows_with_subjects_and_every_subject_is_found() {
        let mut set = RevocationSet::new(100_000).unwrap();
        let first = set.snapshot().bitmap_bytes();
        let n = 20_000;
        for i in 0..n {
            set.insert(event(&format!("e{i}"), user(&format!("u{i}")), 1))
                .unwrap();
        }
        let snap = set.snapshot();
        assert!(snap.bitmap_bytes() > first);
        assert!(snap.bitmap_bytes() * 8 >= n * BITS_PER_SUBJECT);
        for i in 0..n {
            assert!(matches!(
                snap.revoked_since(&user(&format!("u{i}")), 1),
                Verdict::Revoked(_)
            ));
        }
        // Clean subjects: the exact map removes every bitmap false positive, and there are few.
        let mut probes_passed = 0;
        for i in 0..n {
            let clean = user(&format!("clean{i}"));
            assert!(snap.revoked_since(&clean, 1).is_clear());
            probes_passed += usize::from(snap.bitmap.may_contain(clean.filter_hash()));
        }
        assert!(probes_passed * 100 / n < 10, "{probes_passed} of {n}");
        // Expiry shrinks it back.
        set.expire_before(2);
        assert_eq!(set.snapshot().bitmap_bytes(), first);
    }
}
