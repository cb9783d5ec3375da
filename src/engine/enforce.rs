//! Enforcement: evaluating calls into deadline timers, and at each deadline
//! re-reading the call, re-evaluating it, planning the legs and hanging up;
//! warnings too.

use super::*;

impl<A: VobizApi> Engine<A> {
    /// Evaluates a tracked call on the skew-corrected timeline, so every caller judges calls the
    /// same way.
    pub(super) fn evaluate_tracked(
        &self,
        tracked: &Tracked,
        now: DateTime<Utc>,
    ) -> policy::Evaluation {
        let timeline =
            tracked.timeline(self.skew_now().unwrap_or(NO_SKEW), self.mismatch.is_some());
        let mut evaluation = policy::evaluate(
            &self.policy,
            &tracked.call,
            &self.account,
            &timeline,
            now,
            self.settings.enforce.grace,
        );
        evaluation.apply_caps(&self.policy, |rule| {
            self.caps.since(&tracked.call.uuid, rule)
        });
        evaluation
    }

    /// Re-selects the calls beyond the cap of each fraud-guard rule, from
    /// the tracked calls of the latest list, and re-evaluates those whose
    /// state changed. Run once a poll's reads are complete.
    pub(super) fn check_caps(&mut self) {
        let now = self.now();
        let selected: Vec<(CallUuid, usize)> = if self.policy.has_concurrency_rules() {
            let skew = self.skew_now().unwrap_or(NO_SKEW);
            let mismatch = self.mismatch.is_some();
            // Calls hung up but still listed, and calls the latest list left
            // out (kept live one more poll so that they are not ended by
            // mistake), hold no place in a group: a newer call must not be
            // ended for them.
            let members: Vec<(&Tracked, policy::Timeline)> = self
                .calls
                .iter()
                .filter(|(uuid, _)| {
                    self.live.contains(*uuid)
                        && !self.missing.contains_key(*uuid)
                        && !self.hung_up.contains(*uuid)
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
            policy::calls_beyond_caps(&self.policy, &live, now)
                .into_iter()
                .map(|(member, rule)| (members[member].0.call.uuid.clone(), rule))
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
        let evaluation = self.evaluate_tracked(tracked, now);
        let winner = evaluation.effective(&self.policy, self.settings.enforce.dry_run);
        let dry: Vec<(usize, DateTime<Utc>)> = evaluation.dry_run_due(&self.policy).collect();
        let watched = evaluation
            .matched()
            .any(|v| matches!(self.policy.rules[v.rule].limit, Limit::IdleTimeout(_)));
        if let Some(tracked) = self.calls.get_mut(uuid) {
            tracked.watched_by_idle_rule = watched;
        }

        self.enforce_timers.cancel(uuid);
        self.bypass_timers.cancel(uuid);
        self.warn_timers.cancel(uuid);
        for index in dry_run_rules(&self.policy) {
            if !dry.iter().any(|(i, _)| *i == index) {
                self.dry_timers.cancel(&(uuid.clone(), index));
            }
        }
        for (index, deadline) in dry {
            if !self.dry_done.contains(&(uuid.clone(), index)) {
                self.dry_timers.schedule((uuid.clone(), index), deadline);
            }
        }
        let Some((index, deadline)) = winner else {
            self.winners.remove(uuid);
            self.held.remove(uuid);
            return;
        };
        self.winners.insert(uuid.clone(), (index, deadline));
        if self.finished.contains(uuid) || self.hung_up.contains(uuid) {
            return;
        }
        let deadline = match self.pardons.get(uuid) {
            Some(None) => return,
            Some(Some(until)) if *until > deadline => *until,
            _ => deadline,
        };
        let rule = &self.policy.rules[index];
        let in_batch = self.batch_started.is_some_and(|started| {
            self.calls
                .get(uuid)
                .is_some_and(|t| t.first_seen >= started)
        });
        if rule.action.bypass_breaker {
            self.bypass_timers.schedule(uuid.clone(), deadline);
        } else if in_batch && deadline <= now && self.once.is_none() {
            self.batch_due.push(uuid.clone());
        } else {
            self.enforce_timers.schedule(uuid.clone(), deadline);
        }
        if let Some(warning) = &rule.action.warn {
            if !self.warned.contains(uuid) && self.once.is_none() {
                let warn_at = deadline - TimeDelta::from_std(warning.before).unwrap_or_default();
                if warn_at >= now || deadline - now >= MIN_LATE_WARNING {
                    self.warn_timers.schedule(uuid.clone(), warn_at.max(now));
                } else if deadline > now {
                    self.warned.insert(uuid.clone());
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
        }
    }

    /// Acts on every timer that is due: the loop calls this when its sleep ends.
    pub(super) fn fire_due(&mut self) {
        let now = self.now();
        if self.batch_release_at().is_some_and(|at| at <= now) {
            self.release_batch();
        }
        for (uuid, _) in self.warn_timers.pop_due(now) {
            self.fire_warning(&uuid);
        }
        for ((uuid, index), _) in self.dry_timers.pop_due(now) {
            self.start_reread(uuid, Purpose::DryRunRule(index));
        }
        for (uuid, _) in self.bypass_timers.pop_due(now) {
            self.start_reread(uuid, Purpose::Enforce);
        }
        let due = self.enforce_timers.pop_due(now);
        if due.is_empty() {
            return;
        }
        self.recent_fires
            .extend(due.iter().map(|(uuid, _)| (now, uuid.clone())));
        self.check_breaker();
        for (uuid, _) in due {
            if self.held_by_breaker(&uuid) {
                continue;
            }
            self.start_reread(uuid, Purpose::Enforce);
        }
    }

    /// Re-reads a due call before acting, so a hangup never relies on a stale snapshot.
    pub(super) fn start_reread(&mut self, uuid: CallUuid, purpose: Purpose) {
        if self.unhealthy.is_some() || self.busy.contains(&uuid) {
            return;
        }
        // A timer set while the hangup was in flight (a re-evaluation after
        // a skew update) must not start another round for a decided call.
        if purpose == Purpose::Enforce
            && (self.finished.contains(&uuid) || self.hung_up.contains(&uuid))
        {
            return;
        }
        let Some(tracked) = self.calls.get(&uuid) else {
            return;
        };
        self.busy.insert(uuid.clone());
        let queued = tracked.queued;
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
        self.busy.remove(&uuid);
        let now = self.now();
        match result {
            Ok(fetched) => {
                self.observe_skew(&fetched);
                let legs = self.leg_count(&uuid);
                let seen_at = fetched.received_at;
                if !self.refresh_tracked(&uuid, fetched.value, seen_at, legs) {
                    self.manual_failed(&uuid, Outcome::Gone, "the call had already ended");
                    return;
                }
                let Some(call) = self.calls.get(&uuid).map(|t| t.call.clone()) else {
                    return;
                };
                self.act(&uuid, purpose, call, now);
            }
            Err(ApiError::NotFound) => {
                match self.calls.get_mut(&uuid).filter(|t| t.queued) {
                    // No longer queued, maybe answered: re-read it as live.
                    Some(tracked) => {
                        tracked.queued = false;
                        self.start_reread(uuid, purpose);
                    }
                    None => {
                        self.manual_failed(&uuid, Outcome::Gone, "the call had already ended");
                        self.forget(&uuid);
                    }
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
                    Purpose::DryRunRule(index) => self.dry_timers.schedule((uuid, index), retry_at),
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
        if self.bypasses_breaker(uuid) {
            self.bypass_timers.schedule(uuid.clone(), at);
        } else {
            self.enforce_timers.schedule(uuid.clone(), at);
        }
    }

    /// Re-evaluates `call` with fresh details and, if still due, acts.
    pub(super) fn act(
        &mut self,
        uuid: &CallUuid,
        purpose: Purpose,
        call: Call,
        now: DateTime<Utc>,
    ) {
        if purpose == Purpose::Manual {
            self.act_manual(uuid, call);
            return;
        }
        let Some(tracked) = self.calls.get(uuid) else {
            return;
        };
        if purpose == Purpose::Enforce
            && (self.finished.contains(uuid) || self.hung_up.contains(uuid))
        {
            return;
        }
        let evaluation = self.evaluate_tracked(tracked, now);
        let matched: Vec<String> = evaluation
            .matched()
            .map(|v| self.policy.rules[v.rule].name.clone())
            .collect();
        let (index, deadline) = match purpose {
            Purpose::Enforce => {
                match evaluation.effective(&self.policy, self.settings.enforce.dry_run) {
                    Some((index, deadline)) if deadline <= now => (index, deadline),
                    _ => {
                        // No longer due (answered later, state changed, window
                        // closed, rules reloaded): schedule afresh.
                        self.evaluate(uuid);
                        return;
                    }
                }
            }
            Purpose::DryRunRule(index) => {
                match evaluation.verdicts.get(index).map(|v| &v.outcome) {
                    Some(RuleOutcome::Due { deadline }) if *deadline <= now => (index, *deadline),
                    _ => {
                        self.evaluate(uuid);
                        return;
                    }
                }
            }
            // Handled above, before any rule is evaluated.
            Purpose::Manual => return,
        };
        let rule = &self.policy.rules[index];
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
            action: Some(format!("hangup:{}", scope_word(rule.action.hangup))),
            deadline,
            dry_run,
            reason,
            call: call.raw.clone(),
        };
        if let Purpose::DryRunRule(index) = purpose {
            self.dry_done.insert((uuid.clone(), index));
        }
        let targets = match self.plan(&call, rule.action.hangup) {
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
                let retry_at =
                    now + TimeDelta::from_std(self.settings.poll_interval).unwrap_or_default();
                self.reschedule_enforce(uuid, retry_at);
                return;
            }
        };
        if let Some(until) = self.pardons.get(uuid) {
            if until.is_none_or(|until| until > now) {
                self.audit_outcome(
                    &job,
                    AuditEvent::Outcome,
                    Outcome::Pardoned,
                    0,
                    "pardoned by an operator",
                );
                return;
            }
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
        self.overridden.remove(uuid);
        self.hang_up_targets(job, targets, durable);
    }

    /// Sends the DELETEs of one decided hangup once its intent is durable.
    pub(super) fn hang_up_targets(
        &mut self,
        job: Job,
        targets: Vec<CallUuid>,
        durable: audit::Durable,
    ) {
        self.busy.insert(job.uuid.clone());
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
        self.busy.remove(&job.uuid);
        tracing::error!(account = %self.account, call = %job.uuid, rule = %job.rule.as_deref().unwrap_or_default(), %error,
            "the hangup intent is not on disk: not hanging up; trying again later");
        if job.rule.as_deref() == Some(MANUAL_RULE) {
            // An operator's request is answered, not retried behind their back.
            let reason = format!("not hung up: the intent is not on disk: {error}");
            self.audit_outcome(&job, AuditEvent::Outcome, Outcome::Failed, 0, &reason);
            return;
        }
        let retry_at =
            self.now() + TimeDelta::from_std(self.settings.poll_interval).unwrap_or_default();
        self.reschedule_enforce(&job.uuid, retry_at);
    }

    /// Which legs a hangup of `call` would end, with the safety checks.
    pub(super) fn plan(&self, call: &Call, scope: HangupScope) -> Plan {
        plan::plan_hangup(call, scope, self, &self.settings.safety.protected_numbers)
    }

    /// Marks a call decided and cancels its timers, so nothing fires for it again.
    pub(super) fn finish(&mut self, uuid: &CallUuid, purpose: Purpose) {
        if purpose == Purpose::Enforce {
            self.finished.insert(uuid.clone());
            self.held.remove(uuid);
            self.warn_timers.cancel(uuid);
            self.enforce_timers.cancel(uuid);
            self.bypass_timers.cancel(uuid);
        }
    }

    /// Records the DELETE results: audit, metrics, and whether to try again.
    pub(super) fn on_hung_up(&mut self, job: Job, results: Vec<(CallUuid, HangupResult)>) {
        let uuid = job.uuid.clone();
        self.busy.remove(&uuid);
        self.resumed.remove(&uuid);
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
                    self.hung_up.insert(target.clone());
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

    /// The job a warning is audited under, when the call still has a winning rule.
    pub(super) fn warn_job(&self, uuid: &CallUuid) -> Option<Job> {
        let (index, deadline) = *self.winners.get(uuid)?;
        let rule = self.policy.rules.get(index)?;
        let tracked = self.calls.get(uuid)?;
        Some(Job {
            uuid: uuid.clone(),
            rule: Some(rule.name.clone()),
            rules: vec![rule.name.clone()],
            action: Some("warn".to_owned()),
            deadline,
            dry_run: self.settings.enforce.dry_run || rule.action.dry_run,
            reason: String::new(),
            call: tracked.call.raw.clone(),
        })
    }

    /// Whether the winning rule speaks a warning, so its timer is only set when needed.
    pub(super) fn has_warning(&self, uuid: &CallUuid) -> bool {
        self.winners
            .get(uuid)
            .is_some_and(|(index, _)| self.policy.rules[*index].action.warn.is_some())
    }

    /// Speaks the winning rule's warning once, unless the call is protected or dry-run.
    pub(super) fn fire_warning(&mut self, uuid: &CallUuid) {
        if self.unhealthy.is_some() || !self.warned.insert(uuid.clone()) {
            return;
        }
        let Some(job) = self.warn_job(uuid) else {
            return;
        };
        let Some((text, scope)) = self
            .winners
            .get(uuid)
            .map(|(index, _)| &self.policy.rules[*index].action)
            .and_then(|action| Some((action.warn.as_ref()?.text.clone(), action.hangup)))
        else {
            return;
        };
        let Some(call) = self.calls.get(uuid).map(|t| t.call.clone()) else {
            return;
        };
        if let Plan::Protected { leg, number } = self.plan(&call, scope) {
            // Never tell a caller their call will end when it will not.
            let reason = format!("leg {leg} has protected number {number}: no hangup, no warning");
            self.audit_outcome(&job, AuditEvent::Warn, Outcome::Skipped, 0, &reason);
            return;
        }
        if job.dry_run {
            self.audit_outcome(&job, AuditEvent::Warn, Outcome::DryRun, 0, &text);
            return;
        }
        let api = Arc::clone(&self.api);
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let result = api.speak(&job.uuid, &text, SpeakLegs::Both).await;
            let _ = tx.send(Event::Spoke {
                job,
                result: result.map(|_| ()),
            });
        });
    }

    /// Audits how a warning went; a failed one never delays the hangup.
    pub(super) fn on_spoke(&mut self, job: Job, result: Result<(), ApiError>) {
        match result {
            Ok(()) => self.audit_outcome(&job, AuditEvent::Warn, Outcome::Ok, 1, "warning spoken"),
            Err(error) => {
                // A failed warning never delays the hangup.
                tracing::warn!(account = %self.account, call = %job.uuid, %error, "warning failed");
                self.audit_outcome(
                    &job,
                    AuditEvent::Warn,
                    Outcome::Failed,
                    1,
                    &error.to_string(),
                );
            }
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
