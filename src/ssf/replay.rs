//! The `jti` replay cache of the Shared Signals receiver: bounded, each entry expiring when its
//! SET would be refused by the `iat` window anyway.

use std::collections::{HashMap, VecDeque};

/// Remembers the `jti`s of SETs already acted on, until they expire. Capped: when full, the
/// oldest entry is forgotten first (safe: the events a SET yields are idempotent by id, so a
/// redelivery the cache no longer knows inserts nothing new). One writer; the server keeps it
/// behind a mutex (SET pushes are rare).
#[derive(Debug)]
pub struct JtiCache {
    expiry_by_jti: HashMap<String, i64>,
    /// Insertion order, for expiry and eviction. May hold stale pairs for a `jti` that was
    /// removed and re-remembered; those are skipped when they reach the front.
    order: VecDeque<(i64, String)>,
    entries_max: usize,
}

impl JtiCache {
    /// A cache of at most `entries_max` `jti`s (`[ssf] replay_cache_entries`; at least 1).
    pub fn new(entries_max: usize) -> Self {
        Self {
            expiry_by_jti: HashMap::new(),
            order: VecDeque::new(),
            entries_max: entries_max.max(1),
        }
    }

    /// Whether `jti` was remembered and has not expired at `now_secs`.
    pub fn contains(&self, jti: &str, now_secs: i64) -> bool {
        self.expiry_by_jti
            .get(jti)
            .is_some_and(|&expires| now_secs < expires)
    }

    /// Remembers `jti` until `expires_at_secs`. Call it once the SET's events are durable, so
    /// a failed write lets the transmitter's retry through.
    pub fn remember(&mut self, jti: &str, expires_at_secs: i64, now_secs: i64) {
        self.purge(now_secs);
        while self.expiry_by_jti.len() >= self.entries_max {
            if !self.pop_front() {
                break;
            }
        }
        self.expiry_by_jti.insert(jti.to_owned(), expires_at_secs);
        self.order.push_back((expires_at_secs, jti.to_owned()));
        debug_assert!(self.expiry_by_jti.len() <= self.entries_max);
    }

    /// `jti`s remembered (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.expiry_by_jti.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.expiry_by_jti.is_empty()
    }

    /// Drops expired entries from the front of the insertion order.
    fn purge(&mut self, now_secs: i64) {
        while self
            .order
            .front()
            .is_some_and(|(expires, _)| *expires <= now_secs)
        {
            self.pop_front();
        }
    }

    /// Forgets the oldest entry; `false` if there is none.
    fn pop_front(&mut self) -> bool {
        let Some((expires, jti)) = self.order.pop_front() else {
            return false;
        };
        // Only the pair that is current for this jti removes it.
        if self.expiry_by_jti.get(&jti) == Some(&expires) {
            self.expiry_by_jti.remove(&jti);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry() {
        let mut cache = JtiCache::new(10);
        cache.remember("a", 100, 0);
        assert!(cache.contains("a", 99));
        assert!(!cache.contains("a", 100));
        assert!(!cache.contains("b", 0));
        cache.remember("b", 200, 150);
        assert_eq!(cache.len(), 1, "a expired and was purged");
    }

    #[test]
    fn full_cache_forgets_the_oldest_first() {
        let mut cache = JtiCache::new(3);
        for (i, jti) in ["a", "b", "c", "d"].into_iter().enumerate() {
            cache.remember(jti, 1_000 + i64::try_from(i).unwrap(), 0);
        }
        assert_eq!(cache.len(), 3);
        assert!(!cache.contains("a", 0));
        assert!(cache.contains("b", 0) && cache.contains("c", 0) && cache.contains("d", 0));
    }

    #[test]
    fn re_remembering_keeps_the_later_expiry() {
        let mut cache = JtiCache::new(2);
        cache.remember("a", 100, 0);
        cache.remember("a", 300, 0);
        cache.remember("b", 200, 150);
        assert!(cache.contains("a", 250));
        assert!(cache.contains("b", 199));
        assert!(cache.len() <= 2);
    }
}
