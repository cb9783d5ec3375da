//! Enforcement: at each deadline, re-reading the call, re-evaluating it,
//! planning the legs and hanging up, with the intent on disk before any
//! DELETE; and what the DELETEs' answers decide.

use super::*;

impl<A: VobizApi> Engine<A> {
    /// Acts on every timer that is due: the loop calls this when its sleep ends.
    pub(super) fn fire_due(&mut self) {
        let now = self.now();
        if self
            .discovery
            .batch_release_at(self.poll_interval(), now)
            .is_some_and(|at| at <= now)
        {
            let due = self.discovery.release_batch();
            self.release_batch(due);
        }
        let due = self.deadlines.pop_due(now);
        for uuid in due.warnings {
            self.fire_warning(&uuid);
        }
        for (uuid, rule) in due.dry_runs {
            self.start_reread(uuid, Purpose::DryRunRule(rule));
        }
        for uuid in due.bypassing {
            if !self.due_later(&uuid, now) {
                self.start_reread(uuid, Purpose::Enforce);
            }
        }
        let guarded: Vec<CallUuid> = due
            .guarded
            .into_iter()
            .filter(|uuid| !self.due_later(uuid, now))
            .collect();
        if guarded.is_empty() {
            return;
        }
        self.breaker.fired(now, guarded.iter());
        self.check_breaker();
        for uuid in guarded {
            if self.held_by_breaker(&uuid) {
                continue;
            }
            self.start_reread(uuid, Purpose::Enforce);
        }
    }

    /// Whether a hangup timer that fired is now due later, and if so re-times it.
    ///
    /// The clock bound widens a little as it ages and the fleet is re-timed
    /// only when it has moved by a step, so a timer set under the older bound
    /// can fire a few milliseconds before the deadline the current bound
    /// gives. Re-reading then would only find the call not yet due and cost
    /// a second read before the hangup: the timer is set again instead.
    fn due_later(&mut self, uuid: &CallUuid, now: DateTime<Utc>) -> bool {
        let later = self
            .judged_deadline(uuid, now)
            .is_some_and(|deadline| deadline > now);
        if later {
            self.evaluate(uuid);
        }
        later
    }

    /// Re-reads a due call before acting, so a hangup never relies on a stale snapshot.
    pub(super) fn start_reread(&mut self, uuid: CallUuid, purpose: Purpose) {
        if self.unhealthy.is_some() || self.decisions.is_busy(&uuid) {
            return;
        }
        // A timer set while the hangup was in flight (a re-evaluation after
        // a skew update) must not start another round for a decided call.
        if purpose == Purpose::Enforce && self.decisions.is_decided(&uuid) {
            return;
        }
        let Some(tracked) = self.calls.get(&uuid) else {
            return;
        };
        let queued = tracked.queued;
        self.decisions.start(&uuid);
        let api = Arc::clone(&self.api);
        let retrier = Arc::clone(&self.retrier);
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let (result, _) = actions::reread(&*api, &uuid, queued, &retrier).await;
            let _ = tx.send(Event::Reread {
                uuid,
                purpose,
                result,
            });
        });
    }

    /// Decides on the fresh read: hang up, re-time, or drop a call that ended meanwhile.
    pub(super) fn on_reread(
        &mut self,
        uuid: CallUuid,
        purpose: Purpose,
        result: Result<Fetched<Call>, ApiError>,
    ) {
        self.decisions.stop(&uuid);
        let now = self.now();
        match result {
            Ok(fetched) => {
                self.observe_skew(&fetched);
                let seen_at = fetched.received_at;
                if !self.calls.refresh(&uuid, fetched.value, seen_at) {
                    self.manual_failed(&uuid, Outcome::Gone, "the call had already ended");
                    return;
                }
                self.act(&uuid, purpose, now);
            }
            Err(ApiError::NotFound) => {
                if self.calls.get(&uuid).is_some_and(|t| t.queued) {
                    // No longer queued, maybe answered: re-read it as live.
                    self.calls.set_queued(&uuid, false);
                    self.start_reread(uuid, purpose);
                } else {
                    self.manual_failed(&uuid, Outcome::Gone, "the call had already ended");
                    self.forget(&uuid);
                }
            }
            Err(error @ (ApiError::Unauthorized | ApiError::Forbidden)) => {
                self.manual_failed(&uuid, Outcome::Failed, &error.to_string());
                self.mark_unhealthy(error.to_string());
            }
            Err(error) => {
                tracing::error!(account = %self.account, call = %uuid, %error,
                    "cannot re-read a due call; trying again later");
                let retry_at =
                    now + TimeDelta::from_std(self.settings.retry.max_backoff).unwrap_or_default();
                match purpose {
                    Purpose::Enforce => self.reschedule_enforce(&uuid, retry_at),
                    Purpose::DryRunRule(rule) => {
                        self.deadlines.schedule_dry_run(&uuid, rule, retry_at)
                    }
                    Purpose::Manual => self.manual_failed(
                        &uuid,
                        Outcome::Failed,
                        &format!("cannot re-read the call: {error}"),
                    ),
                }
            }
        }
    }

    /// Puts a deadline in the right queue, so breaker-exempt rules never wait behind the breaker.
    pub(super) fn reschedule_enforce(&mut self, uuid: &CallUuid, at: DateTime<Utc>) {
        let bypass = self.bypasses_breaker(uuid);
        self.deadlines.schedule_hangup(uuid, at, bypass);
    }

    /// Re-evaluates the tracked call with its fresh details and, if still
    /// due, acts: the details are the tracked call's own, shared with the
    /// job and its audit records, never copied.
    pub(super) fn act(&mut self, uuid: &CallUuid, purpose: Purpose, now: DateTime<Utc>) {
        let Some(tracked) = self.calls.get(uuid) else {
            return;
        };
        let call = Arc::clone(&tracked.call);
        if purpose == Purpose::Manual {
            self.act_manual(uuid, call);
            return;
        }
        if purpose == Purpose::Enforce && self.decisions.is_decided(uuid) {
            return;
        }
        let evaluation = self.evaluate_tracked(tracked, now);
        let policy = self.rules.policy();
        let due = match purpose {
            Purpose::Enforce => evaluation
                .effective(policy, self.settings.enforce.dry_run)
                .filter(|(_, deadline)| *deadline <= now),
            // A dry-run rule of older rules decides nothing: the call is
            // evaluated afresh under the rules in force.
            Purpose::DryRunRule(rule) => self.rules.index(rule).and_then(|index| match evaluation
                .matched()
                .find(|v| v.rule == index)
                .map(|v| &v.outcome)
            {
                Some(RuleOutcome::Due { deadline }) if *deadline <= now => Some((index, *deadline)),
                _ => None,
            }),
            // Handled above, before any rule is evaluated.
            Purpose::Manual => return,
        };
        let Some((index, deadline)) = due else {
            // No longer due (answered later, state changed, window closed,
            // rules reloaded): schedule afresh.
            self.evaluate(uuid);
            return;
        };
        let matched: Vec<String> = evaluation
            .matched()
            .map(|v| policy.rules[v.rule].name.clone())
            .collect();
        let rule = &policy.rules[index];
        let scope = rule.action.hangup;
        let dry_run = match purpose {
            Purpose::Enforce => self.settings.enforce.dry_run || rule.action.dry_run,
            Purpose::DryRunRule(_) => true,
            Purpose::Manual => false,
        };
        let deadline_text = deadline.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let reason = match rule.limit {
            Limit::MaxConcurrent { max, group_by } => format!(
                "rule {} keeps at most {max} calls per {}: this call is beyond the cap since {deadline_text}",
                rule.name,
                group_by.as_str()
            ),
            _ => format!("rule {} due at {deadline_text}", rule.name),
        };
        let job = Job {
            uuid: uuid.clone(),
            rule: Some(rule.name.clone()),
            rules: matched,
            action: Some(format!("hangup:{}", scope_word(scope))),
            deadline,
            dry_run,
            reason,
            call: Some(Arc::clone(&call)),
        };
        if let Purpose::DryRunRule(rule) = purpose {
            self.decisions.dry_run_done(uuid, rule);
        }
        let targets = match self.plan(&call, scope) {
            Plan::End(targets) => targets,
            Plan::Protected { leg, number } => {
                self.finish(uuid, purpose);
                tracing::warn!(account = %self.account, call = %uuid, rule = %job.rule.as_deref().unwrap_or_default(), %leg,
                    "protected number on a leg: not hung up");
                self.audit_outcome(
                    &job,
                    AuditEvent::Outcome,
                    Outcome::Protected,
                    0,
                    &format!("leg {leg} has protected number {number}"),
                );
                return;
            }
            Plan::NoLegs => {
                self.finish(uuid, purpose);
                self.audit_outcome(
                    &job,
                    AuditEvent::Outcome,
                    Outcome::Skipped,
                    0,
                    "the call has no B-legs to end",
                );
                return;
            }
            Plan::UnknownLeg(leg) => {
                tracing::info!(account = %self.account, call = %uuid, %leg,
                    "a leg to end is not known yet; trying after the next poll");
                let retry_at = now + self.poll_interval();
                self.reschedule_enforce(uuid, retry_at);
                return;
            }
        };
        if self.deadlines.pardoned_at(uuid, now) {
            self.audit_outcome(
                &job,
                AuditEvent::Outcome,
                Outcome::Pardoned,
                0,
                "pardoned by an operator",
            );
            return;
        }
        let reason = job.reason.clone();
        let durable = self.audit_intent(&job, &reason);
        if dry_run {
            if purpose == Purpose::Enforce {
                self.finish(uuid, purpose);
            }
            tracing::info!(account = %self.account, call = %uuid, rule = %job.rule.as_deref().unwrap_or_default(),
                action = %job.action.as_deref().unwrap_or_default(), outcome = "dry_run", dry_run = true, "would hang up");
            self.audit_outcome(&job, AuditEvent::Outcome, Outcome::DryRun, 0, &reason);
            return;
        }
        self.breaker.acted(uuid);
        self.hang_up_targets(job, targets, durable);
    }

    /// Sends the DELETEs of one decided hangup once its intent is durable:
    /// the one place where an intent on disk turns into DELETEs.
    pub(super) fn hang_up_targets(
        &mut self,
        job: Job,
        targets: Vec<CallUuid>,
        durable: audit::Durable,
    ) {
        self.decisions.start(&job.uuid);
        let api = Arc::clone(&self.api);
        let retrier = Arc::clone(&self.retrier);
        let tx = self.events_tx.clone();
        let fence = self.shared.fence.clone();
        tokio::spawn(async move {
            // Nothing is done that is not on disk first; only this hangup
            // waits for it.
            if let Err(error) = durable.await {
                let _ = tx.send(Event::IntentLost { job, error });
                return;
            }
            // With [ha], nothing is done that is not committed under the
            // lease either; a refusal is a failed hangup, retried later.
            let claim = match fence::admit(fence.as_ref(), &job.uuid).await {
                Ok(claim) => claim,
                Err(refused) => {
                    let results = vec![(job.uuid.clone(), refused)];
                    let _ = tx.send(Event::HungUp { job, results });
                    return;
                }
            };
            let mut results = Vec::with_capacity(targets.len());
            for target in targets {
                if let Some(refused) = fence::lease_ran_out(fence.as_ref()) {
                    results.push((target, refused));
                    break;
                }
                let result = actions::hang_up(&*api, &target, &retrier).await;
                let stop = matches!(result, HangupResult::AuthFailed { .. });
                results.push((target, result));
                if stop {
                    break;
                }
            }
            fence::settle(fence.as_ref(), claim, &results).await;
            let _ = tx.send(Event::HungUp { job, results });
        });
    }

    /// The intent of a hangup did not reach the disk: no DELETE was sent.
    pub(super) fn on_intent_lost(&mut self, job: Job, error: audit::WriteError) {
        self.decisions.stop(&job.uuid);
        tracing::error!(account = %self.account, call = %job.uuid, rule = %job.rule.as_deref().unwrap_or_default(), %error,
            "the hangup intent is not on disk: not hanging up; trying again later");
        if job.rule.as_deref() == Some(MANUAL_RULE) {
            // An operator's request is answered, not retried behind their back.
            let reason = format!("not hung up: the intent is not on disk: {error}");
            self.audit_outcome(&job, AuditEvent::Outcome, Outcome::Failed, 0, &reason);
            return;
        }
        let retry_at = self.now() + self.poll_interval();
        self.reschedule_enforce(&job.uuid, retry_at);
    }

    /// Which legs a hangup of `call` would end, with the safety checks.
    pub(super) fn plan(&self, call: &Call, scope: HangupScope) -> Plan {
        plan::plan_hangup(
            call,
            scope,
            &self.calls,
            &self.settings.safety.protected_numbers,
        )
    }

    /// Marks a call decided and cancels its timers, so nothing fires for it again.
    pub(super) fn finish(&mut self, uuid: &CallUuid, purpose: Purpose) {
        if purpose == Purpose::Enforce {
            self.decisions.finish(uuid);
            self.breaker.unhold(uuid);
            self.deadlines.cancel(uuid);
        }
    }

    /// Records the DELETE results: audit, metrics, and whether to try again.
    pub(super) fn on_hung_up(&mut self, job: Job, results: Vec<(CallUuid, HangupResult)>) {
        let uuid = job.uuid.clone();
        self.decisions.stop(&uuid);
        self.decisions.close_resumed(&uuid);
        let attempts = results
            .iter()
            .map(|(_, r)| match r {
                HangupResult::Done { attempts, .. }
                | HangupResult::Gone { attempts, .. }
                | HangupResult::Failed { attempts, .. }
                | HangupResult::AuthFailed { attempts, .. } => *attempts,
            })
            .sum();
        let mut outcome = Outcome::Ok;
        let mut reasons = Vec::new();
        for (target, result) in &results {
            match result {
                HangupResult::Done { at, .. } => {
                    self.decisions.hung_up(target);
                    let lag = (*at - job.deadline).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    self.shared.metrics.enforcement_lag.observe(lag.max(0.0));
                }
                HangupResult::Gone { reason, .. } => {
                    if outcome == Outcome::Ok {
                        outcome = Outcome::Gone;
                    }
                    reasons.push(format!("{target}: {reason}"));
                }
                HangupResult::Failed { reason, .. } | HangupResult::AuthFailed { reason, .. } => {
                    outcome = Outcome::Failed;
                    reasons.push(format!("{target}: {reason}"));
                }
            }
        }
        let reason = if reasons.is_empty() {
            job.reason.clone()
        } else {
            reasons.join("; ")
        };
        match outcome {
            Outcome::Ok | Outcome::Gone => {
                self.finish(&uuid, Purpose::Enforce);
                tracing::info!(account = %self.account, call = %uuid, rule = %job.rule.as_deref().unwrap_or_default(),
                    action = %job.action.as_deref().unwrap_or_default(), outcome = outcome.as_str(), attempts, dry_run = false,
                    "hung up");
            }
            _ => {
                tracing::error!(account = %self.account, call = %uuid, rule = %job.rule.as_deref().unwrap_or_default(),
                    action = %job.action.as_deref().unwrap_or_default(), outcome = "failed", attempts, %reason,
                    "hangup failed; will try again while the call stays over its limit");
                let retry_at = self.now()
                    + TimeDelta::from_std(self.settings.retry.max_backoff).unwrap_or_default();
                self.reschedule_enforce(&uuid, retry_at);
            }
        }
        self.audit_outcome(&job, AuditEvent::Outcome, outcome, attempts, &reason);
        if let Some((_, HangupResult::AuthFailed { reason, .. })) = results
            .iter()
            .find(|(_, r)| matches!(r, HangupResult::AuthFailed { .. }))
        {
            self.mark_unhealthy(reason.clone());
        }
    }
}
