//! What the engine tells the outside: audit records, metrics and the
//! published status.

use super::*;

impl<A: VobizApi> Engine<A> {
    /// A job for a call from what the engine knows now, for audits outside the normal path.
    pub(super) fn bare_job(&self, uuid: &CallUuid) -> Job {
        let winner = self.deadlines.winner(uuid);
        let rule = winner
            .and_then(|w| self.rules.name(w.rule))
            .map(str::to_owned);
        let deadline = winner.map_or_else(|| self.now(), |w| w.deadline);
        Job {
            uuid: uuid.clone(),
            rules: rule.iter().cloned().collect(),
            rule,
            action: None,
            deadline,
            dry_run: self.settings.enforce.dry_run,
            reason: String::new(),
            call: self.calls.get(uuid).map(|t| Arc::clone(&t.call)),
        }
    }

    fn record(
        &self,
        job: &Job,
        event: AuditEvent,
        outcome: Option<Outcome>,
        attempts: u32,
        reason: &str,
    ) -> Record {
        Record {
            ts: self.now(),
            account: self.account.clone(),
            call_uuid: job.uuid.to_string(),
            event,
            rules: job.rules.clone(),
            rule: job.rule.clone(),
            action: job.action.clone(),
            outcome,
            attempts,
            dry_run: job.dry_run,
            reason: reason.to_owned(),
            call: job.call.clone().map(CallDetails::Tracked),
            epoch: self.shared.fence.as_ref().map(|fence| fence.epoch()),
        }
    }

    /// Queues the intent of `job`; the hangup waits for the answer, the
    /// engine does not.
    pub(super) fn audit_intent(&self, job: &Job, reason: &str) -> audit::Durable {
        let record = self.record(job, AuditEvent::Intent, None, 0, reason);
        if job.dry_run {
            // Nothing is done on it, so nothing needs to wait for the disk.
            self.shared.audit.append(&record);
            return audit::Durable::done();
        }
        self.shared.audit.commit(&record)
    }

    /// Writes a decision's outcome to the audit log and counts it in the metrics.
    pub(super) fn audit_outcome(
        &mut self,
        job: &Job,
        event: AuditEvent,
        outcome: Outcome,
        attempts: u32,
        reason: &str,
    ) {
        // Written in order, synced with the next batch: nothing waits on it.
        self.shared
            .audit
            .append(&self.record(job, event, Some(outcome), attempts, reason));
        if matches!(event, AuditEvent::Outcome | AuditEvent::Breaker) {
            self.shared.metrics.decision(&HangupLabels {
                account: self.account.clone(),
                rule: job.rule.clone().unwrap_or_default(),
                outcome: outcome.as_str().to_owned(),
            });
        }
        if matches!(event, AuditEvent::Outcome | AuditEvent::Breaker) {
            self.note(Note::Decided(OnceOutcome {
                call_uuid: job.uuid.to_string(),
                rule: job.rule.clone().unwrap_or_default(),
                outcome: outcome.as_str().to_owned(),
                reason: reason.to_owned(),
            }));
        }
    }

    /// Tells the observer, if one listens (`once` does).
    pub(super) fn note(&self, note: Note) {
        if let Some(observer) = &self.observer {
            let _ = observer.send(note);
        }
    }

    /// The per-account metric label, built in one place.
    pub(super) fn label(&self) -> AccountLabel {
        AccountLabel {
            account: self.account.clone(),
        }
    }

    /// Counts one poll by outcome, for the polling alerts.
    pub(super) fn count_poll(&self, outcome: &str) {
        self.shared
            .metrics
            .polls
            .get_or_create(&PollLabels {
                account: self.account.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Publishes the rule count, so a reload that lost rules is visible.
    pub(super) fn publish_rules(&self) {
        self.shared
            .metrics
            .policy_rules
            .get_or_create(&self.label())
            .set(self.rules.policy().rules.len() as i64);
    }

    /// Publishes the account status for `/status`, systemd and the watchdog:
    /// a summary of bounded size (no per-call list, which `/status` asks
    /// for with [`Command::Calls`]), so it is cheap at every tick.
    pub(super) fn publish(&self) {
        if self.status_tx.receiver_count() == 0 {
            return;
        }
        // A timer without a winning rule (none is expected) is not listed:
        // every listed deadline names its rule.
        let next_deadlines = self
            .deadlines
            .earliest(STATUS_DEADLINES)
            .filter_map(|(uuid, deadline)| {
                let winner = self.deadlines.winner(uuid)?;
                Some(status::DeadlineStatus {
                    call_uuid: uuid.to_string(),
                    rule: self.rules.name(winner.rule)?.to_owned(),
                    deadline,
                })
            })
            .collect();
        self.status_tx.send_replace(AccountStatus {
            account: self.account.clone(),
            healthy: self.unhealthy.is_none(),
            unhealthy_reason: self.unhealthy.clone(),
            last_poll_ok: self.discovery.last_poll(),
            last_poll_error: self.discovery.last_poll_error().map(str::to_owned),
            live_calls: self.discovery.live().len(),
            tracked_calls: self.calls.len(),
            pending_details: self.discovery.pending_reads(),
            breaker_open: self.breaker.is_open(),
            held_calls: self.breaker.held().map(ToString::to_string).collect(),
            clock_mismatch: self.clocks.mismatch().map(ToString::to_string),
            clock_skew: self
                .clocks
                .bound(self.now())
                .map(|bound| status::ClockSkew {
                    low_ms: millis(bound.low),
                    high_ms: millis(bound.high),
                }),
            rules: self
                .rules
                .policy()
                .rules
                .iter()
                .map(|r| r.name.clone())
                .collect(),
            next_deadlines,
            calls: Vec::new(),
            ha: None,
        });
    }

    /// Every tracked call as `/status` lists it, built when asked for.
    pub(super) fn call_statuses(&self) -> Vec<CallStatus> {
        let far_future = DateTime::<Utc>::MAX_UTC;
        self.calls
            .iter()
            .map(|(uuid, t)| CallStatus {
                call_uuid: uuid.to_string(),
                first_seen: t.first_seen,
                answered_seen: t.answered_seen,
                pardoned_until: self.deadlines.pardon(uuid).map(|u| u.unwrap_or(far_future)),
                held: self.breaker.holds(uuid),
            })
            .collect()
    }
}

/// Milliseconds with microsecond precision, for people reading `/status`.
fn millis(delta: TimeDelta) -> f64 {
    delta
        .num_microseconds()
        .map_or(f64::NAN, |us| us as f64 / 1000.0)
}
