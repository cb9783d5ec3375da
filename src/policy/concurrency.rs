//! The fraud guard (`max_concurrent = N`, `group_by`): which live calls are
//! beyond a rule's cap. Pure functions over plain data; the engine, `calls`
//! and `explain` feed them the live calls and turn the answer into due
//! verdicts with [`super::Evaluation::apply_caps`].

use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::eval::Timeline;
use super::{Limit, Policy};
use crate::call::Call;

/// How the calls a fraud-guard rule matches are grouped before the cap applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One group: all calls the rule matches.
    Rule,
    /// One group per called number.
    To,
    /// One group per calling number (a compromised extension).
    From,
}

impl GroupBy {
    /// The word as written in a policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Rule => "rule",
            GroupBy::To => "to",
            GroupBy::From => "from",
        }
    }

    /// The group of `call`.
    pub fn key_of(self, call: &Call) -> &str {
        match self {
            GroupBy::Rule => "",
            GroupBy::To => &call.to,
            GroupBy::From => &call.from,
        }
    }
}

/// How old a call is for the cap: the oldest calls keep going.
///
/// Ordered oldest first: earlier answer, then earlier start, then smaller
/// UUID. A call not answered (or with no known start) counts as newer than
/// any that is, so established calls are the ones kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seniority {
    /// When the call was answered, if it was.
    pub answered: Option<DateTime<Utc>>,
    /// When it started, if known.
    pub started: Option<DateTime<Utc>>,
    /// Its UUID, the last tie-break.
    pub uuid: String,
}

impl Seniority {
    /// The seniority of a call with this timeline.
    pub fn of(call: &Call, timeline: &Timeline) -> Self {
        Self {
            answered: timeline.answered,
            started: timeline.started,
            uuid: call.uuid.to_string(),
        }
    }
}

/// `None` (unknown) sorts after every instant: it is the newest.
fn known_first(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

impl Ord for Seniority {
    fn cmp(&self, other: &Self) -> Ordering {
        known_first(self.answered, other.answered)
            .then_with(|| known_first(self.started, other.started))
            .then_with(|| self.uuid.cmp(&other.uuid))
    }
}

impl PartialOrd for Seniority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The members beyond the cap: in every group, all but the `max` oldest.
/// Returns indices into `members`, in no particular order.
pub fn beyond_cap<G: Eq + std::hash::Hash>(members: &[(G, Seniority)], max: usize) -> Vec<usize> {
    let mut groups: HashMap<&G, Vec<usize>> = HashMap::new();
    for (index, (group, _)) in members.iter().enumerate() {
        groups.entry(group).or_default().push(index);
    }
    let mut beyond = Vec::new();
    for (_, mut indices) in groups {
        if indices.len() <= max {
            continue;
        }
        indices.sort_by(|a, b| members[*a].1.cmp(&members[*b].1));
        beyond.extend_from_slice(&indices[max..]);
    }
    beyond
}

/// One live call as the fraud guard sees it.
#[derive(Debug, Clone, Copy)]
pub struct LiveCall<'a> {
    /// The call's details.
    pub call: &'a Call,
    /// The account it was listed under.
    pub account: &'a str,
    /// Its times.
    pub timeline: &'a Timeline,
}

/// For every fraud-guard rule in force at `now`, the calls beyond its cap:
/// `(index into calls, index of the rule)` pairs.
pub fn calls_beyond_caps(
    policy: &Policy,
    calls: &[LiveCall<'_>],
    now: DateTime<Utc>,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (rule_index, rule) in policy.rules.iter().enumerate() {
        let Limit::MaxConcurrent { max, group_by } = rule.limit else {
            continue;
        };
        if !rule.is_active_at(now) {
            continue;
        }
        let (positions, members): (Vec<usize>, Vec<(&str, Seniority)>) = calls
            .iter()
            .enumerate()
            .filter(|(_, live)| rule.applies_to(live.call, live.account))
            .map(|(position, live)| {
                (
                    position,
                    (
                        group_by.key_of(live.call),
                        Seniority::of(live.call, live.timeline),
                    ),
                )
            })
            .unzip();
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        out.extend(
            beyond_cap(&members, max)
                .into_iter()
                .map(|member| (positions[member], rule_index)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + seconds, 0).unwrap()
    }

    fn seniority(answered: Option<i64>, started: Option<i64>, uuid: u32) -> Seniority {
        Seniority {
            answered: answered.map(at),
            started: started.map(at),
            uuid: format!("{uuid:08}"),
        }
    }

    #[test]
    fn the_newest_beyond_the_cap_are_selected() {
        // Twelve calls answered one second apart: the 7 newest go.
        let members: Vec<(u8, Seniority)> = (0..12)
            .map(|i| (0, seniority(Some(i), Some(i - 5), 100 - i as u32)))
            .collect();
        let mut beyond = beyond_cap(&members, 5);
        beyond.sort();
        assert_eq!(beyond, vec![5, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn unanswered_calls_are_newer_than_answered_ones_and_ties_go_by_start_then_uuid() {
        let members = vec![
            ((), seniority(None, Some(0), 1)),
            ((), seniority(Some(50), Some(40), 2)),
            ((), seniority(Some(50), Some(30), 3)),
            ((), seniority(Some(50), Some(30), 4)),
        ];
        assert_eq!(beyond_cap(&members, 3), vec![0]);
        let mut two = beyond_cap(&members, 2);
        two.sort();
        assert_eq!(two, vec![0, 1]);
        // Same answer: the later start is newer; same start too: the larger UUID.
        assert_eq!(beyond_cap(&members[1..], 2), vec![0]);
        assert_eq!(beyond_cap(&members[2..], 1), vec![1]);
    }

    fn arb_members() -> impl Strategy<Value = Vec<(u8, Seniority)>> {
        prop::collection::vec(
            (
                0u8..4,
                prop::option::of(0i64..50),
                prop::option::of(0i64..50),
            ),
            0..60,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (group, answered, started))| {
                    (group, seniority(answered, started, i as u32))
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn each_group_keeps_exactly_its_oldest_max(members in arb_members(), max in 0usize..8) {
            let beyond = beyond_cap(&members, max);
            let mut unique = beyond.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), beyond.len());
            for group in 0u8..4 {
                let in_group: Vec<usize> = (0..members.len()).filter(|i| members[*i].0 == group).collect();
                let ended: Vec<usize> = in_group.iter().copied().filter(|i| beyond.contains(i)).collect();
                let kept: Vec<usize> = in_group.iter().copied().filter(|i| !beyond.contains(i)).collect();
                // Never more ended than the excess; never more kept than the cap.
                prop_assert_eq!(kept.len(), in_group.len().min(max));
                prop_assert_eq!(ended.len(), in_group.len().saturating_sub(max));
                // Every kept call is older than every ended call of its group.
                for k in &kept {
                    for e in &ended {
                        prop_assert!(members[*k].1 < members[*e].1);
                    }
                }
            }
        }

        #[test]
        fn the_selection_does_not_depend_on_the_order_of_the_calls(
            members in arb_members(), max in 0usize..8, seed in any::<u64>()
        ) {
            let chosen = |list: &[(u8, Seniority)]| {
                let mut uuids: Vec<String> = beyond_cap(list, max)
                    .into_iter()
                    .map(|i| list[i].1.uuid.clone())
                    .collect();
                uuids.sort();
                uuids
            };
            let mut shuffled = members.clone();
            // A deterministic shuffle from the seed.
            let n = shuffled.len();
            for i in (1..n).rev() {
                let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            prop_assert_eq!(chosen(&members), chosen(&shuffled));
        }

        #[test]
        fn a_call_ending_never_pushes_another_beyond_the_cap(
            members in arb_members(), max in 0usize..8, gone in any::<prop::sample::Index>()
        ) {
            prop_assume!(!members.is_empty());
            let gone = gone.index(members.len());
            let before: Vec<String> = beyond_cap(&members, max).into_iter().map(|i| members[i].1.uuid.clone()).collect();
            let mut rest = members.clone();
            rest.remove(gone);
            let after: Vec<String> = beyond_cap(&rest, max).into_iter().map(|i| rest[i].1.uuid.clone()).collect();
            for uuid in &after {
                prop_assert!(before.contains(uuid), "{} became beyond the cap when a call ended", uuid);
            }
        }
    }
}
