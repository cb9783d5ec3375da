//! The fraud guard's state: which tracked calls are beyond the cap of a
//! `max_concurrent` rule, and since when. The selection itself is the pure
//! [`crate::policy::calls_beyond_caps`]; this part only remembers it, so a
//! call's deadline (the instant it was found beyond the cap) stays put
//! from one poll to the next.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::call::CallUuid;

use super::rules::RuleId;

/// Calls beyond a cap: per call, `(rule, found at)`. A rule of older rules
/// never matches a rule in force.
#[derive(Debug, Default)]
pub struct Caps {
    beyond: HashMap<CallUuid, Vec<(RuleId, DateTime<Utc>)>>,
}

impl Caps {
    /// When `uuid` was found beyond the cap of rule `rule`, if it is.
    pub fn since(&self, uuid: &CallUuid, rule: RuleId) -> Option<DateTime<Utc>> {
        self.beyond
            .get(uuid)?
            .iter()
            .find(|(index, _)| *index == rule)
            .map(|(_, since)| *since)
    }

    /// Takes the selection made at `now`: calls that stay beyond a cap keep
    /// their instant, new ones get `now`. Returns the calls whose state
    /// changed, which must be re-evaluated.
    pub fn update(
        &mut self,
        selected: Vec<(CallUuid, RuleId)>,
        now: DateTime<Utc>,
    ) -> Vec<CallUuid> {
        let mut next: HashMap<CallUuid, Vec<(RuleId, DateTime<Utc>)>> = HashMap::new();
        for (uuid, rule) in selected {
            let since = self.since(&uuid, rule).unwrap_or(now);
            next.entry(uuid).or_default().push((rule, since));
        }
        for rules in next.values_mut() {
            rules.sort_unstable();
        }
        let mut changed: Vec<CallUuid> = next
            .iter()
            .filter(|(uuid, rules)| self.beyond.get(*uuid) != Some(*rules))
            .map(|(uuid, _)| uuid.clone())
            .collect();
        changed.extend(
            self.beyond
                .keys()
                .filter(|uuid| !next.contains_key(*uuid))
                .cloned(),
        );
        self.beyond = next;
        changed
    }

    /// Drops a call that ended.
    pub fn forget(&mut self, uuid: &CallUuid) {
        self.beyond.remove(uuid);
    }

    /// Drops everything (new rules: the selection is made afresh).
    pub fn clear(&mut self) {
        self.beyond.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(s: &str) -> CallUuid {
        CallUuid::parse(s).unwrap()
    }

    #[test]
    fn instants_are_kept_while_a_call_stays_beyond_the_cap() {
        let rules = crate::engine::rules::Rules::new(std::sync::Arc::default());
        let (r0, r1) = (rules.id(0), rules.id(1));
        let t0 = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let t1 = t0 + chrono::Duration::seconds(5);
        let mut caps = Caps::default();
        let changed = caps.update(vec![(uuid("a"), r0), (uuid("b"), r0)], t0);
        assert_eq!(changed.len(), 2);
        // `a` stays, `b` leaves (an older call ended), `c` arrives.
        let mut changed = caps.update(vec![(uuid("a"), r0), (uuid("c"), r0)], t1);
        changed.sort();
        assert_eq!(changed, vec![uuid("b"), uuid("c")]);
        assert_eq!(caps.since(&uuid("a"), r0), Some(t0));
        assert_eq!(caps.since(&uuid("c"), r0), Some(t1));
        assert_eq!(caps.since(&uuid("b"), r0), None);
        assert_eq!(caps.since(&uuid("a"), r1), None);
    }
}
