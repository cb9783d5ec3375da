//! The deadline queue: one pending instant per key, earliest first.
//!
//! A binary heap with lazy deletion: rescheduling or cancelling a key only
//! updates the index, and stale heap entries are skipped when they surface.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;

use chrono::{DateTime, Utc};

/// Instants keyed by `K`, popped in time order.
#[derive(Debug)]
pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<(DateTime<Utc>, u64, K)>>,
    current: HashMap<K, (DateTime<Utc>, u64)>,
    next_seq: u64,
}

impl<K: Clone + Eq + Hash + Ord> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            current: HashMap::new(),
            next_seq: 0,
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> TimerQueue<K> {
    /// Sets `key` to fire at `at`, replacing any earlier setting.
    pub fn schedule(&mut self, key: K, at: DateTime<Utc>) {
        if self.current.get(&key).is_some_and(|(old, _)| *old == at) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.current.insert(key.clone(), (at, seq));
        self.heap.push(Reverse((at, seq, key)));
        self.compact_if_bloated();
    }

    /// Removes `key`, if scheduled.
    pub fn cancel(&mut self, key: &K) {
        self.current.remove(key);
    }

    /// When `key` fires, if scheduled.
    pub fn get(&self, key: &K) -> Option<DateTime<Utc>> {
        self.current.get(key).map(|(at, _)| *at)
    }

    /// The earliest pending instant.
    pub fn next_at(&mut self) -> Option<DateTime<Utc>> {
        self.drop_stale_top();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns every key due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<(K, DateTime<Utc>)> {
        let mut due = Vec::new();
        while let Some(at) = self.next_at() {
            if at > now {
                break;
            }
            if let Some(Reverse((at, _, key))) = self.heap.pop() {
                self.current.remove(&key);
                due.push((key, at));
            }
        }
        due
    }

    /// How many keys are scheduled.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// Every scheduled key and instant, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, DateTime<Utc>)> {
        self.current.iter().map(|(key, (at, _))| (key, *at))
    }

    fn is_live(&self, seq: u64, key: &K) -> bool {
        self.current.get(key).is_some_and(|(_, s)| *s == seq)
    }

    fn drop_stale_top(&mut self) {
        while let Some(Reverse((_, seq, key))) = self.heap.peek() {
            if self.is_live(*seq, key) {
                break;
            }
            self.heap.pop();
        }
    }

    // Lazy deletion lets stale entries pile up when calls are rescheduled
    // often; rebuild once they outnumber live ones to keep memory bounded.
    fn compact_if_bloated(&mut self) {
        if self.heap.len() > 1024 && self.heap.len() > 2 * self.current.len() {
            self.heap = self
                .current
                .iter()
                .map(|(key, (at, seq))| Reverse((*at, *seq, key.clone())))
                .collect();
        }
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
