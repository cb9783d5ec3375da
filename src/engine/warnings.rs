//! Warnings: speaking the winning rule's warning to the call before its
//! deadline, once, never on a call that will not be hung up, and auditing
//! how it went. A failed warning never delays the hangup.

use super::*;

impl<A: VobizApi> Engine<A> {
    /// The job a warning is audited under, when the call still has a winning rule.
    pub(super) fn warn_job(&self, uuid: &CallUuid) -> Option<Job> {
        let winner = self.deadlines.winner(uuid)?;
        let rule = self.rules.get(winner.rule)?;
        let tracked = self.calls.get(uuid)?;
        Some(Job {
            uuid: uuid.clone(),
            rule: Some(rule.name.clone()),
            rules: vec![rule.name.clone()],
            action: Some("warn".to_owned()),
            deadline: winner.deadline,
            dry_run: self.settings.enforce.dry_run || rule.action.dry_run,
            reason: String::new(),
            call: Some(Arc::clone(&tracked.call)),
        })
    }

    /// Whether the winning rule speaks a warning, so its timer is only set when needed.
    pub(super) fn has_warning(&self, uuid: &CallUuid) -> bool {
        self.deadlines
            .winner(uuid)
            .and_then(|winner| self.rules.get(winner.rule))
            .is_some_and(|rule| rule.action.warn.is_some())
    }

    /// Speaks the winning rule's warning once, unless the call is protected or dry-run.
    pub(super) fn fire_warning(&mut self, uuid: &CallUuid) {
        if self.unhealthy.is_some() || !self.decisions.warn(uuid) {
            return;
        }
        let Some(job) = self.warn_job(uuid) else {
            return;
        };
        let Some((text, scope)) = self
            .deadlines
            .winner(uuid)
            .and_then(|winner| self.rules.get(winner.rule))
            .map(|rule| &rule.action)
            .and_then(|action| Some((action.warn.as_ref()?.text.clone(), action.hangup)))
        else {
            return;
        };
        let Some(call) = job.call.clone() else {
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
