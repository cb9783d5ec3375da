//! The deadline queue: one pending instant per key, earliest first, with
//! counting by time range (the breaker asks how many hangups fall due soon).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use chrono::{DateTime, Utc};

/// Instants keyed by `K`, popped in time order.
#[derive(Debug)]
pub struct TimerQueue<K> {
    by_time: BTreeMap<(DateTime<Utc>, u64), K>,
    by_key: HashMap<K, (DateTime<Utc>, u64)>,
    next_seq: u64,
}

impl<K: Clone + Eq + Hash> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeMap::new(),
            by_key: HashMap::new(),
            next_seq: 0,
        }
    }
}

impl<K: Clone + Eq + Hash> TimerQueue<K> {
    /// Sets `key` to fire at `at`, replacing any earlier setting.
    pub fn schedule(&mut self, key: K, at: DateTime<Utc>) {
        if self.by_key.get(&key).is_some_and(|(old, _)| *old == at) {
            return;
        }
        self.cancel(&key);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_key.insert(key.clone(), (at, seq));
        self.by_time.insert((at, seq), key);
    }

    /// Removes `key`, if scheduled.
    pub fn cancel(&mut self, key: &K) {
        if let Some(slot) = self.by_key.remove(key) {
            self.by_time.remove(&slot);
        }
    }

    /// When `key` fires, if scheduled.
    pub fn get(&self, key: &K) -> Option<DateTime<Utc>> {
        self.by_key.get(key).map(|(at, _)| *at)
    }

    /// The earliest pending instant.
    pub fn next_at(&self) -> Option<DateTime<Utc>> {
        self.by_time.keys().next().map(|(at, _)| *at)
    }

    /// Removes and returns every key due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<(K, DateTime<Utc>)> {
        let mut due = Vec::new();
        while let Some(entry) = self.by_time.first_entry() {
            let (at, _) = *entry.key();
            if at > now {
                break;
            }
            let key = entry.remove();
            self.by_key.remove(&key);
            due.push((key, at));
        }
        due
    }

    /// How many keys fire at or before `until`, counting at most `cap`.
    pub fn count_until(&self, until: DateTime<Utc>, cap: usize) -> usize {
        self.by_time.range(..=(until, u64::MAX)).take(cap).count()
    }

    /// The keys that fire at or before `until`, at most `cap` of them.
    pub fn keys_until(&self, until: DateTime<Utc>, cap: usize) -> impl Iterator<Item = &K> {
        self.by_time
            .range(..=(until, u64::MAX))
            .take(cap)
            .map(|(_, key)| key)
    }

    /// The first `n` keys in time order.
    pub fn earliest(&self, n: usize) -> impl Iterator<Item = (&K, DateTime<Utc>)> {
        self.by_time.iter().take(n).map(|((at, _), key)| (key, *at))
    }

    /// How many keys are scheduled.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use proptest::prelude::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(s)
    }

    #[test]
    fn reschedule_replaces_and_cancel_removes() {
        let mut q = TimerQueue::default();
        q.schedule("a", t(10));
        q.schedule("b", t(5));
        q.schedule("a", t(3));
        q.cancel(&"b");
        assert_eq!(q.next_at(), Some(t(3)));
        assert_eq!(q.count_until(t(100), 10), 1);
        assert_eq!(q.pop_due(t(100)), vec![("a", t(3))]);
        assert!(q.is_empty());
        assert_eq!(q.next_at(), None);
    }

    proptest! {
        // Whatever the order of schedules and cancels, popping yields exactly
        // the last setting of every key that was not cancelled, in time order.
        #[test]
        fn pops_the_latest_setting_of_each_key_in_order(
            ops in proptest::collection::vec((0u8..20, 0i64..1000, any::<bool>()), 0..400)
        ) {
            let mut q = TimerQueue::default();
            let mut model = std::collections::HashMap::new();
            for (key, at, cancel) in ops {
                if cancel {
                    q.cancel(&key);
                    model.remove(&key);
                } else {
                    q.schedule(key, t(at));
                    model.insert(key, t(at));
                }
            }
            prop_assert_eq!(q.count_until(t(500), usize::MAX), model.values().filter(|at| **at <= t(500)).count());
            let popped = q.pop_due(t(1000));
            let mut expected: Vec<_> = model.into_iter().collect();
            expected.sort_by_key(|(k, at)| (*at, *k));
            let mut got = popped.clone();
            got.sort_by_key(|(k, at)| (*at, *k));
            prop_assert_eq!(got, expected);
            prop_assert!(popped.windows(2).all(|w| w[0].1 <= w[1].1));
        }
    }
}
