//! `callwarden once`: a driver that takes the engine through one cycle —
//! list, read every call, hang up those already past their deadline
//! (breaker, dry-run and safety apply), audit warnings as skipped — and
//! reports what it saw. The engine itself has no "once" mode: the driver
//! turns off what needs time to pass (warnings, clock probes) and listens
//! to the decisions the engine reports to any observer.

use super::*;

/// What `once` reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OnceReport {
    /// Account name.
    pub account: String,
    /// Calls listed.
    pub live_calls: usize,
    /// Calls whose details were read.
    pub evaluated: usize,
    /// Calls past a deadline, by outcome.
    pub outcomes: Vec<OnceOutcome>,
    /// Idle rules that need history and were not evaluated.
    pub not_evaluated: Vec<String>,
    /// Errors that made the cycle partial.
    pub errors: Vec<String>,
    /// Whether the breaker held the hangups.
    pub breaker_held: bool,
}

/// One call's outcome in `once`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OnceOutcome {
    /// The call.
    pub call_uuid: String,
    /// The winning rule.
    pub rule: String,
    /// The outcome word.
    pub outcome: String,
    /// Why.
    pub reason: String,
}

/// What the engine tells an observer as it happens.
#[derive(Debug)]
pub(super) enum Note {
    /// A hangup decision was audited (an outcome, or the breaker's hold).
    Decided(OnceOutcome),
    /// A request failed, so the cycle saw less than everything.
    Failed(String),
}

impl<A: VobizApi> Engine<A> {
    /// One cycle for `callwarden once`: list, read every call, hang up those
    /// already past their deadline (breaker, dry-run and safety apply),
    /// audit warnings as skipped, and report.
    pub async fn run_once(mut self) -> OnceReport {
        let (observer, mut notes) = mpsc::unbounded_channel();
        self.observer = Some(observer);
        self.deadlines.stop_warnings();
        self.clocks.stop_probing();
        self.start_poll();
        self.settle(|engine| !engine.discovery.busy()).await;
        self.act_on_due();
        self.settle(|engine| engine.decisions.in_flight() == 0)
            .await;

        let mut report = OnceReport {
            account: self.account.clone(),
            not_evaluated: self.rules.idle_rule_names(),
            live_calls: self.discovery.live().len(),
            evaluated: self.calls.len(),
            breaker_held: self.breaker.holds_any(),
            ..OnceReport::default()
        };
        self.observer = None;
        while let Ok(note) = notes.try_recv() {
            match note {
                Note::Decided(outcome) => {
                    if outcome.outcome == Outcome::Failed.as_str() {
                        report
                            .errors
                            .push(format!("{}: {}", outcome.call_uuid, outcome.reason));
                    }
                    report.outcomes.push(outcome);
                }
                Note::Failed(error) => report.errors.push(error),
            }
        }
        report
    }

    /// Acts on every call due now, all at once: the breaker judges the whole
    /// batch, and warnings are audited as skipped (`once` never waits to warn).
    fn act_on_due(&mut self) {
        let now = self.now();
        let due = self.deadlines.pop_due(now);
        let hangups: Vec<CallUuid> = due.guarded.into_iter().chain(due.bypassing).collect();
        let subject = hangups.iter().filter(|uuid| !self.bypasses_breaker(uuid));
        let counts = breaker::count(subject, self.discovery.live());
        if breaker::exceeds_limits(counts, &self.settings.safety) {
            self.trip_breaker(counts);
        }
        for (uuid, rule) in due.dry_runs {
            self.act(&uuid, Purpose::DryRunRule(rule), now);
        }
        for uuid in hangups {
            if let Some(job) = self.warn_job(&uuid).filter(|_| self.has_warning(&uuid)) {
                self.audit_outcome(
                    &job,
                    AuditEvent::Warn,
                    Outcome::Skipped,
                    0,
                    "once does not wait to warn",
                );
            }
            if self.held_by_breaker(&uuid) {
                continue;
            }
            self.act(&uuid, Purpose::Enforce, now);
        }
    }
}
