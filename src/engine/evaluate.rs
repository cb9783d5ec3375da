//! Evaluation: judging a tracked call by the rules on the skew-corrected
//! timeline, and turning the verdict into its winning rule, deadline and
//! timers; the fraud guard's selection of calls beyond a cap.

use super::*;

/// What one evaluation of a call decides for its timers.
struct Judgement {
    winner: Option<Winner>,
    dry_runs: Vec<(RuleId, DateTime<Utc>)>,
    watched: bool,
}

impl<A: VobizApi> Engine<A> {
    /// Evaluates a tracked call on the skew-corrected timeline, so every caller judges calls the
    /// same way.
    pub(super) fn evaluate_tracked(
        &self,
        tracked: &Tracked,
        now: DateTime<Utc>,
    ) -> policy::Evaluation {
        let mut evaluation = policy::evaluate(
            self.rules.policy(),
            &tracked.call,
            &self.account,
            &self.timeline(tracked),
            now,
            self.settings.enforce.grace,
        );
        evaluation.apply_caps(self.rules.policy(), |rule| {
            self.caps.since(&tracked.call.uuid, self.rules.id(rule))
        });
        evaluation
    }

    /// The instants a tracked call is judged by: skew-corrected, or from
    /// first sight when the timestamps are not trusted.
    fn timeline(&self, tracked: &Tracked) -> policy::Timeline {
        tracked.timeline(
            self.clocks.skew(self.now()),
            self.clocks.mismatch().is_some(),
        )
    }

    /// The winning rule and deadline of a tracked call, its dry-run rules'
    /// own deadlines, and whether an idle rule watches it.
    ///
    /// When no rule needs more than the deadline (no dry-run, idle or
    /// fraud-guard rules), the allocation-free [`policy::deadline_only`]
    /// gives the same winner without building a verdict per rule.
    fn judge(&self, tracked: &Tracked, now: DateTime<Utc>) -> Judgement {
        let policy = self.rules.policy();
        if self.rules.deadline_suffices() {
            let winner = policy::deadline_only(
                policy,
                &tracked.call,
                &self.account,
                &self.timeline(tracked),
                now,
                self.settings.enforce.grace,
            );
            return Judgement {
                winner: winner.map(|(index, deadline)| self.winner(index, deadline)),
                dry_runs: Vec::new(),
                watched: false,
            };
        }
        let evaluation = self.evaluate_tracked(tracked, now);
        let watched = evaluation
            .matched()
            .any(|v| matches!(policy.rules[v.rule].limit, Limit::IdleTimeout(_)));
        Judgement {
            winner: evaluation
                .effective(policy, self.settings.enforce.dry_run)
                .map(|(index, deadline)| self.winner(index, deadline)),
            dry_runs: evaluation
                .dry_run_due(policy)
                .map(|(index, deadline)| (self.rules.id(index), deadline))
                .collect(),
            watched,
        }
    }

    /// The winning rule's deadline of a tracked call, judged at `now`.
    pub(super) fn judged_deadline(
        &self,
        uuid: &CallUuid,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let tracked = self.calls.get(uuid)?;
        self.judge(tracked, now)
            .winner
            .map(|winner| winner.deadline)
    }

    fn winner(&self, index: usize, deadline: DateTime<Utc>) -> Winner {
        Winner {
            rule: self.rules.id(index),
            deadline,
        }
    }

    /// Re-selects the calls beyond the cap of each fraud-guard rule, from
    /// the tracked calls of the latest list, and re-evaluates those whose
    /// state changed. Run once a poll's reads are complete.
    pub(super) fn check_caps(&mut self) {
        let now = self.now();
        let selected: Vec<(CallUuid, RuleId)> = if self.rules.policy().has_concurrency_rules() {
            let skew = self.clocks.skew(now);
            let mismatch = self.clocks.mismatch().is_some();
            // Calls hung up but still listed, and calls the latest list left
            // out (kept live one more poll so that they are not ended by
            // mistake), hold no place in a group: a newer call must not be
            // ended for them.
            let members: Vec<(&Tracked, policy::Timeline)> = self
                .calls
                .iter()
                .filter(|(uuid, _)| {
                    self.discovery.is_live(uuid)
                        && !self.discovery.is_missing(uuid)
                        && !self.decisions.is_hung_up(uuid)
                })
                .map(|(_, tracked)| (tracked, seniority_timeline(tracked, skew, mismatch)))
                .collect();
            let live: Vec<policy::LiveCall<'_>> = members
                .iter()
                .map(|(tracked, timeline)| policy::LiveCall {
                    call: &tracked.call,
                    account: &self.account,
                    timeline,
                })
                .collect();
            policy::calls_beyond_caps(self.rules.policy(), &live, now)
                .into_iter()
                .map(|(member, rule)| (members[member].0.call.uuid.clone(), self.rules.id(rule)))
                .collect()
        } else {
            Vec::new()
        };
        for uuid in self.caps.update(selected, now) {
            self.evaluate(&uuid);
        }
    }

    /// Re-evaluates one call and (re)schedules its timers.
    pub(super) fn evaluate(&mut self, uuid: &CallUuid) {
        let now = self.now();
        let Some(tracked) = self.calls.get(uuid) else {
            return;
        };
        let Judgement {
            winner,
            dry_runs: dry,
            watched,
        } = self.judge(tracked, now);
        // Only a call found overdue joins its batch's hold. One whose timer
        // is set fell due on its own; a re-evaluation in the instant before
        // its timer fires (a skew update re-times every call) must not make
        // it wait for the rest of the batch to be read.
        let held_with_batch =
            self.discovery.in_batch(tracked.first_seen) && !self.deadlines.hangup_armed(uuid);
        self.calls.set_watched(uuid, watched);

        self.deadlines.cancel(uuid);
        for rule in self.rules.dry_run_ids() {
            if !dry.iter().any(|(r, _)| *r == rule) {
                self.deadlines.cancel_dry_run(uuid, rule);
            }
        }
        for (rule, deadline) in dry {
            if !self.decisions.is_dry_run_done(uuid, rule) {
                self.deadlines.schedule_dry_run(uuid, rule, deadline);
            }
        }
        self.deadlines.set_winner(uuid, winner);
        let (Some(winner), Some(rule)) = (winner, winner.and_then(|w| self.rules.get(w.rule)))
        else {
            self.breaker.unhold(uuid);
            return;
        };
        if self.decisions.is_decided(uuid) {
            return;
        }
        let deadline = match self.deadlines.pardon(uuid) {
            Some(None) => return,
            Some(Some(until)) if until > winner.deadline => until,
            _ => winner.deadline,
        };
        let bypass = rule.action.bypass_breaker;
        let warn_before = rule.action.warn.as_ref().map(|warning| warning.before);
        if !bypass && held_with_batch && deadline <= now {
            self.discovery.hold_for_batch(uuid.clone());
        } else {
            self.deadlines.schedule_hangup(uuid, deadline, bypass);
        }
        let Some(before) = warn_before else {
            return;
        };
        if self.decisions.is_warned(uuid) || !self.deadlines.speaks_warnings() {
            return;
        }
        let warn_at = deadline - TimeDelta::from_std(before).unwrap_or_default();
        if warn_at >= now || deadline - now >= MIN_LATE_WARNING {
            self.deadlines.schedule_warning(uuid, warn_at.max(now));
        } else if deadline > now {
            self.decisions.warn(uuid);
            if let Some(job) = self.warn_job(uuid) {
                self.audit_outcome(
                    &job,
                    AuditEvent::Warn,
                    Outcome::Skipped,
                    0,
                    "less than 5 s left when first judged",
                );
            }
        }
    }

    /// Re-evaluates every tracked call (the rules, the clock bound or the
    /// trust in timestamps changed).
    pub(super) fn evaluate_all(&mut self) {
        for uuid in self.calls.uuids() {
            self.evaluate(&uuid);
        }
    }
}

/// The timeline a call's seniority in a fraud-guard group is judged by.
///
/// A call first seen already answered, with no answer time from the API
/// (the flat shape), was answered at some unknown instant before it was
/// seen: its start stands in, so calls seen in the same poll are ordered
/// by their real age, not by the order their details were read.
fn seniority_timeline(tracked: &Tracked, skew: SkewEstimate, mismatch: bool) -> policy::Timeline {
    let timeline = tracked.timeline(skew, mismatch);
    let seen_answered_at_first_sight = tracked.call.answered_at.is_none()
        && tracked
            .answered_seen
            .is_some_and(|seen| seen <= tracked.first_seen);
    if seen_answered_at_first_sight && timeline.started.is_some() {
        policy::Timeline {
            answered: timeline.started,
            ..timeline
        }
    } else {
        timeline
    }
}
