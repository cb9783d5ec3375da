//! What each rule's deadline depends on, worked out once per policy, so
//! that picking the winner among the rules that apply to a call does not
//! compute every rule's deadline nor compare rule names.
//!
//! A rule without windows is due at `instant + limit + grace`, where the
//! instant is one of the call's [`Timeline`] instants: among rules measured
//! from the same instant, the smallest limit gives the earliest deadline
//! (and when it is out of range, so are the larger ones). Only the best
//! rule per instant then needs its deadline computed.

use std::cmp::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::eval::{rule_deadline, Timeline};
use super::{Limit, MeasureFrom, Rule};

/// The timeline instant a window-less rule's deadline is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Instant {
    Answered,
    Started,
    LastChange,
}

impl Instant {
    fn slot(self) -> usize {
        match self {
            Instant::Answered => 0,
            Instant::Started => 1,
            Instant::LastChange => 2,
        }
    }
}

/// How a rule's deadline is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `instant + limit + grace`: no windows.
    Offset { from: Instant, limit: Duration },
    /// Never due by itself (a fraud guard, judged across the live calls).
    Never,
    /// Anything else (windows): [`rule_deadline`] decides.
    Other,
}

impl Kind {
    fn of(rule: &Rule) -> Self {
        let (from, limit) = match rule.limit {
            Limit::MaxConcurrent { .. } => return Kind::Never,
            _ if !rule.windows.is_empty() => return Kind::Other,
            Limit::MaxDuration {
                limit,
                measure_from: MeasureFrom::Answer,
            } => (Instant::Answered, limit),
            Limit::MaxDuration {
                limit,
                measure_from: MeasureFrom::Start,
            } => (Instant::Started, limit),
            Limit::IdleTimeout(limit) => (Instant::LastChange, limit),
        };
        Kind::Offset { from, limit }
    }
}

/// Every rule's [`Kind`] and its place in the tie-break order.
#[derive(Debug, Clone, Default)]
pub(super) struct Plans {
    kinds: Vec<Kind>,
    /// Each rule's position when sorted by priority (higher first), then
    /// name, then file order: the tie-break between equal deadlines.
    rank: Vec<u32>,
}

impl Plans {
    /// The plans of `rules`.
    pub(super) fn new(rules: &[Rule]) -> Self {
        let mut order: Vec<usize> = (0..rules.len()).collect();
        // Stable: equal priority and name keep file order, as `min_by`
        // keeps the first of equal elements.
        order.sort_by(|a, b| names_order(&rules[*a], &rules[*b]));
        let mut rank = vec![0; rules.len()];
        for (position, rule) in order.into_iter().enumerate() {
            rank[rule] = u32::try_from(position).unwrap_or(u32::MAX);
        }
        Self {
            kinds: rules.iter().map(Kind::of).collect(),
            rank,
        }
    }

    /// Whether the plans were built for `rules` (see `PolicyIndex::covers`).
    pub(super) fn covers(&self, rules: &[Rule]) -> bool {
        self.kinds.len() == rules.len()
    }

    /// How rule `rule`'s deadline is computed ([`Kind::Other`] when unknown).
    pub(super) fn kind(&self, rule: usize) -> Kind {
        self.kinds.get(rule).copied().unwrap_or(Kind::Other)
    }

    /// The tie-break between rules `a` and `b` of `rules` at equal
    /// deadlines: higher priority, then smaller name.
    pub(super) fn tie_break(&self, rules: &[Rule], a: usize, b: usize) -> Ordering {
        match (self.covers(rules), self.rank.get(a), self.rank.get(b)) {
            (true, Some(ra), Some(rb)) => ra.cmp(rb),
            _ => names_order(&rules[a], &rules[b]),
        }
    }
}

/// Higher priority first, then the smaller name.
fn names_order(a: &Rule, b: &Rule) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| a.name.cmp(&b.name))
}

/// The earliest deadline among `applicable` rules (indices into `rules`,
/// with `plans` built for them), ties broken by [`Plans::tie_break`]: what
/// the minimum of [`rule_deadline`] over them is, computing it for at most
/// one window-less rule per timeline instant.
pub(super) fn earliest(
    rules: &[Rule],
    plans: &Plans,
    applicable: impl Iterator<Item = usize>,
    timeline: &Timeline,
    now: DateTime<Utc>,
    grace: Duration,
) -> Option<(usize, DateTime<Utc>)> {
    let mut best: Option<(usize, DateTime<Utc>)> = None;
    let consider = |rule: usize, best: &mut Option<(usize, DateTime<Utc>)>| {
        let Some(deadline) = rules
            .get(rule)
            .and_then(|r| rule_deadline(r, timeline, now, grace).ok())
        else {
            return;
        };
        let wins = best.is_none_or(|(other, at)| {
            deadline
                .cmp(&at)
                .then_with(|| plans.tie_break(rules, rule, other))
                .is_lt()
        });
        if wins {
            *best = Some((rule, deadline));
        }
    };
    // Per instant: the applicable rule with the smallest (limit, rank).
    let mut per_instant: [Option<(Duration, u32, usize)>; 3] = [None; 3];
    for rule in applicable {
        match plans.kind(rule) {
            Kind::Offset { from, limit } => {
                let rank = plans.rank.get(rule).copied().unwrap_or(u32::MAX);
                let slot = &mut per_instant[from.slot()];
                if slot.is_none_or(|(l, r, _)| (limit, rank) < (l, r)) {
                    *slot = Some((limit, rank, rule));
                }
            }
            Kind::Never => {}
            Kind::Other => consider(rule, &mut best),
        }
    }
    for (_, _, rule) in per_instant.into_iter().flatten() {
        consider(rule, &mut best);
    }
    best
}

/// The deadlines already computed for one call, by (instant, limit): rules
/// with the same limit from the same instant (every idle rule of 2 minutes)
/// share one computation.
#[derive(Debug, Default)]
pub(super) struct DeadlineMemo {
    known: [Option<Known>; MEMO],
}

type Known = (Instant, Duration, Result<DateTime<Utc>, &'static str>);

/// How many (instant, limit) pairs [`DeadlineMemo`] remembers per call.
const MEMO: usize = 8;

impl DeadlineMemo {
    /// [`rule_deadline`] of `rule` (index `index`), remembered by its kind.
    pub(super) fn deadline(
        &mut self,
        plans: &Plans,
        (index, rule): (usize, &Rule),
        timeline: &Timeline,
        now: DateTime<Utc>,
        grace: Duration,
    ) -> Result<DateTime<Utc>, &'static str> {
        let Kind::Offset { from, limit } = plans.kind(index) else {
            return rule_deadline(rule, timeline, now, grace);
        };
        let mut free = None;
        for slot in &mut self.known {
            match slot {
                Some((f, l, known)) if *f == from && *l == limit => return *known,
                Some(_) => {}
                None => {
                    free = Some(slot);
                    break;
                }
            }
        }
        let deadline = rule_deadline(rule, timeline, now, grace);
        if let Some(slot) = free {
            *slot = Some((from, limit, deadline));
        }
        deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Window;
    use proptest::prelude::*;

    const DAY: u64 = 86_400;

    fn rule(name: &str, priority: i64, limit: Limit, window: bool) -> Rule {
        let hour = Duration::from_secs(3600);
        Rule {
            priority,
            windows: window
                .then(|| Window::parse("0 0 2 * * *", hour, chrono_tz::UTC).unwrap())
                .into_iter()
                .collect(),
            ..Rule::for_test(name, limit)
        }
    }

    fn limit() -> impl Strategy<Value = Limit> {
        // Small limits that tie, and ones past the range a deadline may take.
        let secs = prop::sample::select(vec![0, 60, 120, 3600, 40_000 * DAY, u64::MAX / 4]);
        (0..4u8, secs).prop_map(|(kind, secs)| {
            let limit = Duration::from_secs(secs);
            match kind {
                0 => Limit::MaxDuration {
                    limit,
                    measure_from: MeasureFrom::Answer,
                },
                1 => Limit::MaxDuration {
                    limit,
                    measure_from: MeasureFrom::Start,
                },
                2 => Limit::IdleTimeout(limit),
                _ => Limit::MaxConcurrent {
                    max: 1,
                    group_by: crate::policy::GroupBy::Rule,
                },
            }
        })
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // Near now, and near the end of chrono's range (deadlines overflow).
        prop::sample::select(vec![0i64, -90, -7_200, 8_000_000_000_000]).prop_map(|offset| {
            DateTime::from_timestamp(1_780_315_200 + offset, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
        })
    }

    proptest! {
        /// `earliest` and the memo give what computing every rule's
        /// deadline and taking the first best (by deadline, priority, name)
        /// gives, ties, out-of-range limits and missing instants included.
        #[test]
        fn earliest_is_the_minimum_of_every_deadline(
            specs in prop::collection::vec(
                (prop::sample::select(vec!["a", "b", "c"]), 0..3i64, limit(), any::<bool>(), any::<bool>()),
                0..24,
            ),
            answered in prop::option::of(instant()),
            started in prop::option::of(instant()),
            last_change in instant(),
            grace in prop::sample::select(vec![0u64, 30, 40_000 * DAY]),
        ) {
            let rules: Vec<Rule> = specs
                .iter()
                .map(|(name, priority, limit, window, _)| rule(name, *priority, *limit, *window))
                .collect();
            let applicable: Vec<usize> = specs
                .iter()
                .enumerate()
                .filter(|(_, spec)| spec.4)
                .map(|(at, _)| at)
                .collect();
            let plans = Plans::new(&rules);
            let timeline = Timeline { started, answered, last_change };
            let now = DateTime::from_timestamp(1_780_315_200, 0).unwrap();
            let grace = Duration::from_secs(grace);
            let deadline = |at: usize| rule_deadline(&rules[at], &timeline, now, grace);
            let expected = applicable
                .iter()
                .filter_map(|at| deadline(*at).ok().map(|d| (*at, d)))
                .min_by(|a, b| a.1.cmp(&b.1).then_with(|| names_order(&rules[a.0], &rules[b.0])));
            let found = earliest(&rules, &plans, applicable.iter().copied(), &timeline, now, grace);
            prop_assert_eq!(found, expected);
            let mut memo = DeadlineMemo::default();
            for (at, rule) in rules.iter().enumerate() {
                let remembered = memo.deadline(&plans, (at, rule), &timeline, now, grace);
                prop_assert_eq!(remembered, deadline(at));
            }
        }
    }
}
