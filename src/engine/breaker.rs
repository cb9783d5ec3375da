//! The breaker: when more hangups fall due within one poll interval than the
//! safety limits allow, hold them all.
//!
//! Each call counts once however many times it fired, was held or is
//! scheduled in the interval, and the share is taken of the fleet the
//! interval saw (the live calls plus those already ended in it), so it can
//! never exceed 100 %.

use std::borrow::Borrow;
use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

use chrono::{DateTime, TimeDelta, Utc};

use crate::call::CallUuid;
use crate::config::SafetySettings;

/// What the breaker judges: calls due in the interval, and the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Distinct calls fired in the last interval, held, or due in the next.
    pub due: usize,
    /// Distinct calls the interval saw: live now, or due (fired and ended).
    pub fleet: usize,
}

/// Counts `due` (with repeats) against the `live` calls. `due` may hold
/// references into `live`'s key type, so the live set is used as it is
/// rather than copied at every check.
pub fn count<K, L>(due: impl IntoIterator<Item = K>, live: &HashSet<L>) -> Counts
where
    K: Eq + Hash + Borrow<L>,
    L: Eq + Hash,
{
    let due: HashSet<K> = due.into_iter().collect();
    let gone = due
        .iter()
        .filter(|call| !live.contains((*call).borrow()))
        .count();
    Counts {
        due: due.len(),
        fleet: live.len() + gone,
    }
}

/// Whether the counts exceed the safety limits. `max_hangups_percent = 100`
/// turns the share rule off (every call of the fleet may end at once).
pub fn exceeds_limits(counts: Counts, safety: &SafetySettings) -> bool {
    if counts.due > safety.max_hangups_per_cycle {
        return true;
    }
    let percent = u128::from(safety.max_hangups_percent);
    percent < 100
        && counts.fleet >= safety.breaker_min_live_calls
        && counts.fleet > 0
        && (counts.due as u128) * 100 > percent * counts.fleet as u128
}

/// The breaker of one account: whether it is open, the calls it holds,
/// those an operator let through, and the recent fires it counts.
#[derive(Debug, Default)]
pub struct Breaker {
    open: bool,
    held: HashSet<CallUuid>,
    /// Let through once by an operator: not held again.
    overridden: HashSet<CallUuid>,
    /// Calls fired by the breaker-guarded timers, with when.
    recent_fires: VecDeque<(DateTime<Utc>, CallUuid)>,
}

impl Breaker {
    /// Whether the breaker holds hangups.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Opens the breaker.
    pub fn open(&mut self) {
        self.open = true;
    }

    /// Closes the breaker; returns the calls it held, to be scheduled now.
    pub fn close(&mut self) -> Vec<CallUuid> {
        self.open = false;
        self.held.drain().collect()
    }

    /// Lets the held calls through once (an operator's override); returns them.
    pub fn release(&mut self) -> Vec<CallUuid> {
        let held: Vec<CallUuid> = self.held.drain().collect();
        self.overridden.extend(held.iter().cloned());
        held
    }

    /// Whether the open breaker must hold `uuid`: not let through by an
    /// operator. Holds it; the bool says whether it was newly held.
    pub fn hold(&mut self, uuid: &CallUuid) -> Option<bool> {
        if !self.open || self.overridden.contains(uuid) {
            return None;
        }
        Some(self.held.insert(uuid.clone()))
    }

    /// Whether `uuid` is held.
    pub fn holds(&self, uuid: &CallUuid) -> bool {
        self.held.contains(uuid)
    }

    /// The held calls.
    pub fn held(&self) -> impl Iterator<Item = &CallUuid> {
        self.held.iter()
    }

    /// Whether any call is held.
    pub fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }

    /// No longer holds `uuid` (decided, pardoned, or asked for by hand).
    pub fn unhold(&mut self, uuid: &CallUuid) {
        self.held.remove(uuid);
    }

    /// The hangup of `uuid` went ahead: an override is used up.
    pub fn acted(&mut self, uuid: &CallUuid) {
        self.overridden.remove(uuid);
    }

    /// Drops every trace of an ended call.
    pub fn forget(&mut self, uuid: &CallUuid) {
        self.held.remove(uuid);
        self.overridden.remove(uuid);
    }

    /// Records the calls the guarded timers fired at `now`.
    pub fn fired<'a>(&mut self, now: DateTime<Utc>, uuids: impl Iterator<Item = &'a CallUuid>) {
        self.recent_fires
            .extend(uuids.map(|uuid| (now, uuid.clone())));
    }

    /// Calls due within one `window` (fired in the last window, held, and
    /// `scheduled` for the next), each once, against the `live` fleet.
    pub fn due_within<'a>(
        &'a mut self,
        now: DateTime<Utc>,
        window: TimeDelta,
        scheduled: impl Iterator<Item = &'a CallUuid>,
        live: &'a HashSet<CallUuid>,
    ) -> Counts {
        while self
            .recent_fires
            .front()
            .is_some_and(|(at, _)| *at < now - window)
        {
            self.recent_fires.pop_front();
        }
        let this: &'a Self = self;
        let due = this
            .recent_fires
            .iter()
            .map(|(_, uuid)| uuid)
            .chain(self.held.iter())
            .chain(scheduled);
        count(due, live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn safety(max_hangups_percent: u32) -> SafetySettings {
        SafetySettings {
            protected_numbers: vec![],
            max_hangups_per_cycle: 100,
            max_hangups_percent,
            breaker_min_live_calls: 20,
        }
    }

    fn counts(due: usize, fleet: usize) -> Counts {
        Counts { due, fleet }
    }

    #[test]
    fn count_and_share_limits() {
        let s = safety(50);
        assert!(!exceeds_limits(counts(100, 1000), &s));
        assert!(exceeds_limits(counts(101, 1000), &s));
        assert!(!exceeds_limits(counts(10, 20), &s));
        assert!(exceeds_limits(counts(11, 20), &s));
        // Below the minimum, the share rule does not apply.
        assert!(!exceeds_limits(counts(19, 19), &s));
    }

    #[test]
    fn exactly_half_due_at_fifty_percent_passes() {
        let live: HashSet<u32> = (0..40).collect();
        let half = count(0..20, &live);
        assert_eq!(half, counts(20, 40));
        assert!(!exceeds_limits(half, &safety(50)));
        assert!(exceeds_limits(count(0..21, &live), &safety(50)));
    }

    #[test]
    fn the_whole_fleet_due_at_one_hundred_percent_passes() {
        let live: HashSet<u32> = (0..40).collect();
        // Fired, held and scheduled again: still 40 calls, not 41 or more.
        let due = (0..40).chain(0..5).chain(35..40);
        let all = count(due, &live);
        assert_eq!(all, counts(40, 40));
        assert!(!exceeds_limits(all, &safety(100)));
        // Half of them already hung up in the interval: still the same fleet.
        let still_live: HashSet<u32> = (20..40).collect();
        assert_eq!(count(0..40, &still_live), counts(40, 40));
        // The count limit still holds at 100 %.
        let many: HashSet<u32> = (0..1000).collect();
        assert!(exceeds_limits(count(0..101, &many), &safety(100)));
    }

    proptest! {
        // Whatever repeats and endings, the share never exceeds 100 %, and
        // at 100 % only the count limit can trip.
        #[test]
        fn the_share_never_exceeds_the_fleet(
            due in proptest::collection::vec(0u32..200, 0..400),
            live in proptest::collection::hash_set(0u32..200, 0..200),
            percent in 1u32..=100,
        ) {
            let counts = count(due.iter().copied(), &live);
            prop_assert!(counts.due <= counts.fleet);
            let distinct: HashSet<u32> = due.iter().copied().collect();
            prop_assert_eq!(counts.due, distinct.len());
            let s = safety(percent);
            if percent == 100 {
                prop_assert_eq!(exceeds_limits(counts, &s), counts.due > s.max_hangups_per_cycle);
            }
        }
    }
}
