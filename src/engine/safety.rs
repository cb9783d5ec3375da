//! Safety and operator control: the breaker, account health, pardons,
//! breaker release and reloads.

use super::*;

impl<A: VobizApi> Engine<A> {
    /// Whether the call's winning rule may act while the breaker holds others.
    pub(super) fn bypasses_breaker(&self, uuid: &CallUuid) -> bool {
        self.deadlines
            .winner(uuid)
            .and_then(|winner| self.rules.get(winner.rule))
            .is_some_and(|rule| rule.action.bypass_breaker)
    }

    /// Calls due within one poll interval (fired in the last interval,
    /// held, and scheduled for the next), each once, against the fleet the
    /// interval saw.
    fn due_within_interval(&mut self) -> breaker::Counts {
        let now = self.now();
        let window = self.poll_interval();
        let live = self.discovery.live();
        let cap = self.settings.safety.max_hangups_per_cycle.saturating_add(1);
        let scheduled = self
            .deadlines
            .guarded_until(now + window, cap.max(live.len()));
        self.breaker.due_within(now, window, scheduled, live)
    }

    /// Opens or closes the breaker from the hangups due within one poll interval.
    pub(super) fn check_breaker(&mut self) {
        let counts = self.due_within_interval();
        let exceeds = breaker::exceeds_limits(counts, &self.settings.safety);
        if exceeds && !self.breaker.is_open() {
            self.trip_breaker(counts);
        } else if !exceeds && self.breaker.is_open() {
            tracing::warn!(account = %self.account, due = counts.due, fleet = counts.fleet,
                "breaker closed: the excess cleared");
            let held = self.breaker.close();
            self.set_breaker_metric();
            let now = self.now();
            for uuid in held {
                self.deadlines.schedule_hangup(&uuid, now, false);
            }
        }
    }

    /// Opens the breaker and says why, so an operator can judge the held batch.
    pub(super) fn trip_breaker(&mut self, counts: breaker::Counts) {
        self.breaker.open();
        self.set_breaker_metric();
        let safety = &self.settings.safety;
        tracing::error!(
            account = %self.account,
            due = counts.due,
            fleet = counts.fleet,
            live = self.discovery.live().len(),
            max_per_cycle = safety.max_hangups_per_cycle,
            max_percent = safety.max_hangups_percent,
            "breaker open: too many hangups due at once; holding them (SIGUSR1 lets this batch through)"
        );
    }

    /// Mirrors the breaker state into its gauge, which alerts watch.
    pub(super) fn set_breaker_metric(&self) {
        self.shared
            .metrics
            .breaker_open
            .get_or_create(&self.label())
            .set(i64::from(self.breaker.is_open()));
    }

    /// Whether the breaker holds `uuid` now; holds (and audits) it if so.
    pub(super) fn held_by_breaker(&mut self, uuid: &CallUuid) -> bool {
        if self.bypasses_breaker(uuid) {
            return false;
        }
        let Some(newly) = self.breaker.hold(uuid) else {
            return false;
        };
        if newly {
            let mut job = self.bare_job(uuid);
            job.action = Some("hangup".to_owned());
            self.audit_outcome(
                &job,
                AuditEvent::Breaker,
                Outcome::Breaker,
                0,
                "breaker open: too many hangups due within one poll interval",
            );
        }
        true
    }

    /// Lets the held batch through once, on an operator's SIGUSR1.
    pub(super) fn release_breaker(&mut self) {
        let now = self.now();
        let held = self.breaker.release();
        tracing::warn!(account = %self.account, calls = held.len(), "operator override: letting the held batch through once");
        for uuid in held {
            let job = self.bare_job(&uuid);
            self.audit_outcome(
                &job,
                AuditEvent::Override,
                Outcome::Skipped,
                0,
                "operator override (SIGUSR1): held hangup released",
            );
            self.deadlines.schedule_hangup(&uuid, now, false);
        }
    }

    fn is_tracked(&self, uuid: &CallUuid) -> bool {
        self.calls.contains(uuid) || self.discovery.is_live(uuid)
    }

    fn pardon(&mut self, uuid: CallUuid, until: Option<DateTime<Utc>>) -> PardonReply {
        let tracked = self.is_tracked(&uuid);
        if !tracked && self.deadlines.pardon(&uuid).is_none() && self.untracked_pardons_full() {
            let now = self.now();
            if self.deadlines.log_refusal(now, self.poll_interval()) {
                tracing::warn!(account = %self.account, call = %uuid, max = MAX_UNTRACKED_PARDONS,
                    "refusing pardons of calls callwarden does not track: too many kept until the next poll");
            }
            return PardonReply::Refused;
        }
        self.deadlines.add_pardon(uuid.clone(), until);
        let mut job = self.bare_job(&uuid);
        job.action = Some("pardon".to_owned());
        let reason = match until {
            Some(until) => format!("pardoned until {}", until.to_rfc3339()),
            None => "pardoned for good".to_owned(),
        };
        self.audit_outcome(&job, AuditEvent::Pardon, Outcome::Pardoned, 0, &reason);
        self.breaker.unhold(&uuid);
        self.evaluate(&uuid);
        if tracked {
            PardonReply::Tracked
        } else {
            PardonReply::Untracked
        }
    }

    // Counted only near the cap, so a pardon costs a scan only in a flood.
    fn untracked_pardons_full(&self) -> bool {
        self.deadlines.pardon_count() >= MAX_UNTRACKED_PARDONS
            && self
                .deadlines
                .pardoned()
                .filter(|uuid| !self.is_tracked(uuid))
                .count()
                >= MAX_UNTRACKED_PARDONS
    }

    /// Stops enforcement for the account after refused credentials, until a reload.
    pub(super) fn mark_unhealthy(&mut self, reason: String) {
        if self.unhealthy.is_none() {
            tracing::error!(account = %self.account, %reason,
                "the API refused our credentials: enforcement stopped for this account until a reload");
        }
        self.unhealthy = Some(reason);
        self.shared
            .metrics
            .api_unauthorized
            .get_or_create(&self.label())
            .set(1);
    }

    /// After a reload, keeps the finished decisions (hung up, protected,
    /// dry-run audited) whose rule still exists by name and still decides
    /// the same way (dry-run or not): only those are not decided, audited or
    /// counted again. A rule renamed, removed or switched in or out of
    /// dry-run decides afresh; so does every call not hung up when the
    /// protected numbers changed (a call spared as protected may not be now).
    fn keep_decisions(&mut self, old: &Rules, old_dry_run: bool, protected_changed: bool) {
        let new_dry_run = self.settings.enforce.dry_run;
        let rules = &self.rules;
        let by_name: HashMap<&str, RuleId> = rules.named().collect();
        // The rule of an old id in the new rules: same name, and whether
        // each is dry-run by its own action.
        let renew = |id: RuleId| -> Option<(RuleId, bool, bool)> {
            let old_rule = old.get(id)?;
            let new_id = *by_name.get(old_rule.name.as_str())?;
            let new_rule = rules.get(new_id)?;
            Some((new_id, old_rule.action.dry_run, new_rule.action.dry_run))
        };
        // Every tracked call is evaluated again right after, which also
        // renews the winners under the new rules.
        let stale: Vec<CallUuid> = self
            .decisions
            .finished()
            .filter(|uuid| {
                if protected_changed && !self.decisions.is_hung_up(uuid) {
                    return true;
                }
                let Some(winner) = self.deadlines.winner(uuid) else {
                    return false;
                };
                !renew(winner.rule).is_some_and(|(_, old_rule_dry, new_rule_dry)| {
                    (old_dry_run || old_rule_dry) == (new_dry_run || new_rule_dry)
                })
            })
            .cloned()
            .collect();
        for uuid in stale {
            self.decisions.undecide(&uuid);
        }
        self.decisions.renew_dry_runs(|id| match renew(id) {
            Some((new_id, true, true)) => Some(new_id),
            _ => None,
        });
    }

    /// Applies an operator command; returns a new poll interval if it changed.
    pub(super) fn command(&mut self, command: Command) -> Option<Duration> {
        match command {
            Command::Pardon { uuid, until, reply } => {
                let answer = self.pardon(uuid, until);
                let _ = reply.send(answer);
                None
            }
            Command::Hangup { request, reply } => {
                let decisions = self.manual(&request);
                let _ = reply.send(decisions);
                None
            }
            Command::ReleaseBreaker => {
                self.release_breaker();
                None
            }
            Command::Calls { reply } => {
                let _ = reply.send(self.call_statuses());
                None
            }
            Command::Reload { policy, settings } => {
                let interval = (settings.poll_interval != self.settings.poll_interval)
                    .then_some(settings.poll_interval);
                let old_rules = self.rules.replace(policy);
                let old_dry_run = self.settings.enforce.dry_run;
                let protected_changed =
                    self.settings.safety.protected_numbers != settings.safety.protected_numbers;
                self.settings.poll_interval = settings.poll_interval;
                self.settings.enforce = settings.enforce;
                self.settings.safety = settings.safety;
                self.settings.retry = settings.retry;
                self.unhealthy = None;
                self.shared
                    .metrics
                    .api_unauthorized
                    .get_or_create(&self.label())
                    .set(0);
                self.clocks.clear_mismatch();
                self.shared
                    .metrics
                    .clock_mismatch
                    .get_or_create(&self.label())
                    .set(0);
                self.keep_decisions(&old_rules, old_dry_run, protected_changed);
                self.deadlines.clear_dry_runs();
                // The caps' rule ids are of the old rules: select afresh.
                self.caps.clear();
                self.publish_rules();
                self.evaluate_all();
                self.check_caps();
                interval
            }
        }
    }
}
