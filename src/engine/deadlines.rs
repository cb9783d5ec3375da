//! When each tracked call falls due and why: its winning rule and deadline
//! (stored here once), the timers that wake the engine for it, and the
//! operators' pardons that move or cancel its hangup.
//!
//! A call's deadline is the winning rule's instant; a timer is when the
//! engine next acts for it, which a pardon, a retry or the breaker may move.
//! A call has at most one hangup timer, in the queue of the breaker-guarded
//! rules or of the rules that bypass the breaker.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::call::CallUuid;

use super::rules::RuleId;
use super::timers::TimerQueue;

/// The winning rule of a call and its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Winner {
    /// The rule, of the generation it was evaluated under.
    pub(super) rule: RuleId,
    /// When the rule says the call must end.
    pub(super) deadline: DateTime<Utc>,
}

/// The timers that fell due at one instant, by purpose.
#[derive(Debug, Default)]
pub(super) struct Due {
    /// Warnings to speak.
    pub(super) warnings: Vec<CallUuid>,
    /// Dry-run rules' own deadlines.
    pub(super) dry_runs: Vec<(CallUuid, RuleId)>,
    /// Hangups of rules that bypass the breaker.
    pub(super) bypassing: Vec<CallUuid>,
    /// Hangups the breaker guards.
    pub(super) guarded: Vec<CallUuid>,
}

/// Deadlines, timers and pardons of one account.
#[derive(Debug)]
pub(super) struct Deadlines {
    winners: HashMap<CallUuid, Winner>,
    guarded: TimerQueue<CallUuid>,
    bypassing: TimerQueue<CallUuid>,
    warnings: TimerQueue<CallUuid>,
    dry_runs: TimerQueue<(CallUuid, RuleId)>,
    /// Pardoned calls, until when (`None`: for good).
    pardons: HashMap<CallUuid, Option<DateTime<Utc>>>,
    /// When a refused pardon was last logged.
    refusal_logged: Option<DateTime<Utc>>,
    /// Whether warnings are scheduled at all: one cycle of `once` ends
    /// before any could be spoken.
    speak_warnings: bool,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            winners: HashMap::new(),
            guarded: TimerQueue::default(),
            bypassing: TimerQueue::default(),
            warnings: TimerQueue::default(),
            dry_runs: TimerQueue::default(),
            pardons: HashMap::new(),
            refusal_logged: None,
            speak_warnings: true,
        }
    }
}

impl Deadlines {
    /// The winning rule and deadline of `uuid`, if a rule claims it.
    pub(super) fn winner(&self, uuid: &CallUuid) -> Option<Winner> {
        self.winners.get(uuid).copied()
    }

    /// Sets (or clears) the winning rule of `uuid`.
    pub(super) fn set_winner(&mut self, uuid: &CallUuid, winner: Option<Winner>) {
        match winner {
            Some(winner) => {
                self.winners.insert(uuid.clone(), winner);
            }
            None => {
                self.winners.remove(uuid);
            }
        }
    }

    /// Sets the hangup timer of `uuid` to `at`, in the queue its rule
    /// needs: one hangup timer per call.
    pub(super) fn schedule_hangup(&mut self, uuid: &CallUuid, at: DateTime<Utc>, bypass: bool) {
        let (queue, other) = if bypass {
            (&mut self.bypassing, &mut self.guarded)
        } else {
            (&mut self.guarded, &mut self.bypassing)
        };
        other.cancel(uuid);
        queue.schedule(uuid.clone(), at);
    }

    /// Whether `uuid` has a hangup timer set.
    pub(super) fn hangup_armed(&self, uuid: &CallUuid) -> bool {
        self.guarded.get(uuid).is_some() || self.bypassing.get(uuid).is_some()
    }

    /// Sets the warning timer of `uuid`, unless warnings are off.
    pub(super) fn schedule_warning(&mut self, uuid: &CallUuid, at: DateTime<Utc>) {
        if self.speak_warnings {
            self.warnings.schedule(uuid.clone(), at);
        }
    }

    /// Whether warnings are scheduled at all.
    pub(super) fn speaks_warnings(&self) -> bool {
        self.speak_warnings
    }

    /// Stops scheduling warnings (a single cycle never waits to speak one).
    pub(super) fn stop_warnings(&mut self) {
        self.speak_warnings = false;
    }

    /// Sets the timer of a dry-run rule's own deadline for `uuid`.
    pub(super) fn schedule_dry_run(&mut self, uuid: &CallUuid, rule: RuleId, at: DateTime<Utc>) {
        self.dry_runs.schedule((uuid.clone(), rule), at);
    }

    /// Cancels the timer of a dry-run rule's own deadline for `uuid`.
    pub(super) fn cancel_dry_run(&mut self, uuid: &CallUuid, rule: RuleId) {
        self.dry_runs.cancel(&(uuid.clone(), rule));
    }

    /// Drops every dry-run timer (the rules were reloaded).
    pub(super) fn clear_dry_runs(&mut self) {
        self.dry_runs = TimerQueue::default();
    }

    /// Cancels the hangup and warning timers of `uuid`.
    pub(super) fn cancel(&mut self, uuid: &CallUuid) {
        self.guarded.cancel(uuid);
        self.bypassing.cancel(uuid);
        self.warnings.cancel(uuid);
    }

    /// Drops every trace of an ended call; `dry_run_rules` are the rules
    /// whose own timers it may have.
    pub(super) fn forget(&mut self, uuid: &CallUuid, dry_run_rules: impl Iterator<Item = RuleId>) {
        self.winners.remove(uuid);
        self.cancel(uuid);
        for rule in dry_run_rules {
            self.cancel_dry_run(uuid, rule);
        }
    }

    /// The earliest timer of any kind.
    pub(super) fn next_at(&self) -> Option<DateTime<Utc>> {
        [
            self.guarded.next_at(),
            self.bypassing.next_at(),
            self.warnings.next_at(),
            self.dry_runs.next_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Removes and returns every timer due at `now`.
    pub(super) fn pop_due(&mut self, now: DateTime<Utc>) -> Due {
        let keys = |due: Vec<(CallUuid, DateTime<Utc>)>| due.into_iter().map(|(k, _)| k).collect();
        Due {
            warnings: keys(self.warnings.pop_due(now)),
            dry_runs: self
                .dry_runs
                .pop_due(now)
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
            bypassing: keys(self.bypassing.pop_due(now)),
            guarded: keys(self.guarded.pop_due(now)),
        }
    }

    /// The breaker-guarded hangups due by `until`, at most `cap` of them.
    pub(super) fn guarded_until(
        &self,
        until: DateTime<Utc>,
        cap: usize,
    ) -> impl Iterator<Item = &CallUuid> {
        self.guarded.keys_until(until, cap)
    }

    /// The `n` earliest hangup timers of each queue, for `/status`.
    pub(super) fn earliest(&self, n: usize) -> impl Iterator<Item = (&CallUuid, DateTime<Utc>)> {
        self.guarded.earliest(n).chain(self.bypassing.earliest(n))
    }

    /// The pardon of `uuid`: `Some(None)` for good, `Some(Some(until))`.
    pub(super) fn pardon(&self, uuid: &CallUuid) -> Option<Option<DateTime<Utc>>> {
        self.pardons.get(uuid).copied()
    }

    /// Whether a pardon spares `uuid` at `now`.
    pub(super) fn pardoned_at(&self, uuid: &CallUuid, now: DateTime<Utc>) -> bool {
        self.pardon(uuid)
            .is_some_and(|until| until.is_none_or(|until| until > now))
    }

    /// Spares `uuid` until `until` (`None`: for good).
    pub(super) fn add_pardon(&mut self, uuid: CallUuid, until: Option<DateTime<Utc>>) {
        self.pardons.insert(uuid, until);
    }

    /// Whether a refused pardon is logged at `now`: at most once an `interval`.
    pub(super) fn log_refusal(&mut self, now: DateTime<Utc>, interval: TimeDelta) -> bool {
        let log = self.refusal_logged.is_none_or(|at| now - at >= interval);
        if log {
            self.refusal_logged = Some(now);
        }
        log
    }

    /// How many calls are pardoned.
    pub(super) fn pardon_count(&self) -> usize {
        self.pardons.len()
    }

    /// Every pardoned call.
    pub(super) fn pardoned(&self) -> impl Iterator<Item = &CallUuid> {
        self.pardons.keys()
    }

    /// Drops the pardons of calls no longer live.
    pub(super) fn retain_pardons(&mut self, live: impl Fn(&CallUuid) -> bool) {
        self.pardons.retain(|uuid, _| live(uuid));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::rules::Rules;
    use crate::policy::Policy;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(s)
    }

    #[test]
    fn a_call_has_one_hangup_timer_and_forgetting_it_leaves_nothing() {
        let uuid = CallUuid::parse("a").unwrap();
        let rule = Rules::new(Arc::new(Policy::default())).id(0);
        let mut deadlines = Deadlines::default();
        deadlines.schedule_hangup(&uuid, t(10), false);
        deadlines.schedule_hangup(&uuid, t(20), true);
        deadlines.schedule_warning(&uuid, t(5));
        deadlines.schedule_dry_run(&uuid, rule, t(7));
        deadlines.set_winner(
            &uuid,
            Some(Winner {
                rule,
                deadline: t(20),
            }),
        );
        let due = deadlines.pop_due(t(30));
        assert!(due.guarded.is_empty(), "moved to the bypassing queue");
        assert_eq!(due.bypassing, vec![uuid.clone()]);
        deadlines.schedule_hangup(&uuid, t(40), false);
        deadlines.schedule_dry_run(&uuid, rule, t(40));
        deadlines.forget(&uuid, [rule].into_iter());
        assert_eq!(deadlines.next_at(), None);
        assert_eq!(deadlines.winner(&uuid), None);
    }

    #[test]
    fn once_stopped_no_warning_is_scheduled() {
        let uuid = CallUuid::parse("a").unwrap();
        let mut deadlines = Deadlines::default();
        deadlines.stop_warnings();
        deadlines.schedule_warning(&uuid, t(5));
        assert_eq!(deadlines.next_at(), None);
    }
}
