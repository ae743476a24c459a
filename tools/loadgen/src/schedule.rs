//! The open-loop schedule: request `k` of a run at rate `R` is due `k / R` seconds after the
//! start, whatever happened to earlier requests, so a slow server cannot slow the load down and
//! hide its own latency (coordinated omission). Connections take the next slot when they are
//! free; a slot already due is sent at once and its latency counts from when it was due.
//!
//! Pure arithmetic over offsets from the run's start; the caller reads the clock.

use std::time::Duration;

/// Offset of slot `slot` from the start at `rate_per_sec` requests per second.
pub fn slot_offset(slot: u64, rate_per_sec: u64) -> Duration {
    let rate = u128::from(rate_per_sec.max(1));
    let nanos = u128::from(slot) * 1_000_000_000 / rate;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How many slots fall in `[0, duration)` at `rate_per_sec`: the run's request count.
pub fn slot_count(duration: Duration, rate_per_sec: u64) -> u64 {
    // ceil(duration_ns * rate / 1e9): slot k is in the run iff k * 1e9 / rate < duration_ns.
    let n = duration.as_nanos() * u128::from(rate_per_sec);
    u64::try_from(n.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

/// What a connection does with the slot it took, at offset `now` from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// The slot is ahead: wait this long, then send; latency counts from the actual send (the
    /// client's timer granularity, ~1 ms in tokio, is not the server's doing).
    Wait(Duration),
    /// The slot was due this long ago while every connection was busy: send now, and count
    /// latency from the slot's due time.
    Late(Duration),
}

/// [`Pace`] of a slot due at `due` when taken at `now` (both offsets from the start).
pub fn pace(due: Duration, now: Duration) -> Pace {
    match due.checked_sub(now) {
        Some(wait) if !wait.is_zero() => Pace::Wait(wait),
        _ => Pace::Late(now.saturating_sub(due)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_evenly_spaced_at_the_rate() {
        assert_eq!(slot_offset(0, 10_000), Duration::ZERO);
        assert_eq!(slot_offset(1, 10_000), Duration::from_micros(100));
        assert_eq!(slot_offset(10_000, 10_000), Duration::from_secs(1));
        // Non-integral spacing accumulates without drift: 3 per second, slot 3 at exactly 1 s.
        assert_eq!(slot_offset(1, 3), Duration::from_nanos(333_333_333));
        assert_eq!(slot_offset(3, 3), Duration::from_secs(1));
        // A zero rate is treated as one per second rather than dividing by zero.
        assert_eq!(slot_offset(2, 0), Duration::from_secs(2));
    }

    #[test]
    fn slot_count_covers_exactly_the_slots_due_within_the_duration() {
        assert_eq!(slot_count(Duration::from_secs(10), 10_000), 100_000);
        assert_eq!(slot_count(Duration::from_secs(1), 3), 3);
        assert_eq!(slot_count(Duration::from_millis(1500), 3), 5); // 0, .33, .67, 1, 1.33
        assert_eq!(slot_count(Duration::ZERO, 1000), 0);
        for (d, r) in [
            (Duration::from_millis(1234), 777u64),
            (Duration::from_secs(3), 10_000),
        ] {
            let n = slot_count(d, r);
            assert!(slot_offset(n - 1, r) < d);
            assert!(slot_offset(n, r) >= d);
        }
    }

    #[test]
    fn a_future_slot_waits_and_a_due_slot_is_late_by_its_lag() {
        let ms = Duration::from_millis;
        assert_eq!(pace(ms(10), ms(4)), Pace::Wait(ms(6)));
        assert_eq!(pace(ms(10), ms(10)), Pace::Late(Duration::ZERO));
        assert_eq!(pace(ms(10), ms(25)), Pace::Late(ms(15)));
    }
}
