//! Manual hangups (`POST /hangup`, `callwarden hangup`): an operator or an
//! external trigger asks the engine to end calls now. They take the same
//! path as rules: protection, dry-run, the audit log, the re-read before the
//! DELETE and the never-twice bookkeeping; selectors count against the
//! breaker unless forced.

use std::time::Duration;

use serde::Serialize;

use super::*;
use crate::policy::{FieldValues, Match};

/// The rule name manual hangups are audited under.
pub const MANUAL_RULE: &str = "manual";

/// Which calls a request is about.
#[derive(Debug, Clone)]
pub enum Selection {
    /// These calls, by UUID: not held by the breaker.
    Calls(Vec<CallUuid>),
    /// Every live call that matches, oldest first: counts against the breaker.
    Match {
        /// The fields to match, as in `[rule.match]`.
        matcher: Match,
        /// Only calls that started at least this long ago.
        older_than: Option<Duration>,
        /// At most this many calls (per account).
        limit: Option<usize>,
    },
}

/// A manual hangup request, validated.
#[derive(Debug, Clone)]
pub struct ManualRequest {
    /// The calls.
    pub selection: Selection,
    /// Why, in the operator's words (audited).
    pub reason: String,
    /// Who asked (the peer address), audited.
    pub requested_by: String,
    /// The caller's idempotency key, audited.
    pub request_id: Option<String>,
    /// Audit what would happen, hang up nothing.
    pub dry_run: bool,
    /// A selector is not held by the breaker.
    pub force: bool,
    /// Only say what would be selected: nothing is audited or done.
    pub preview: bool,
}

/// What the engine decided for one call of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManualDecision {
    /// The call.
    pub call_uuid: String,
    /// The account that tracks it.
    pub account: String,
    /// `accepted` (re-read, then hung up), `dry_run`, `would_hang_up`
    /// (preview), `protected`, `breaker`, `already_ended`, `in_progress`,
    /// `refused` or `not_found`.
    pub decision: &'static str,
    /// Details in words.
    pub detail: String,
}

impl ManualDecision {
    /// Whether the call was refused (protected, breaker, unknown, ...).
    pub fn is_refusal(&self) -> bool {
        is_refusal(self.decision)
    }
}

/// Whether a decision word means the call was refused: the CLI exits 3.
pub fn is_refusal(decision: &str) -> bool {
    !matches!(
        decision,
        "accepted" | "dry_run" | "would_hang_up" | "already_ended" | "in_progress"
    )
}

impl<A: VobizApi> Engine<A> {
    /// Decides a manual request; hangups that are accepted start with a
    /// re-read of the call and end through [`Engine::act`].
    pub(super) fn manual(&mut self, request: &ManualRequest) -> Vec<ManualDecision> {
        let now = self.now();
        let (selected, explicit) = match &request.selection {
            Selection::Calls(uuids) => (
                uuids
                    .iter()
                    .filter(|uuid| self.calls.contains(uuid))
                    .cloned()
                    .collect::<Vec<_>>(),
                true,
            ),
            Selection::Match {
                matcher,
                older_than,
                limit,
            } => (self.select(matcher, *older_than, *limit, now), false),
        };
        let account = self.account.clone();
        let decide = |decision: &'static str, uuid: &CallUuid, detail: String| ManualDecision {
            call_uuid: uuid.to_string(),
            account: account.clone(),
            decision,
            detail,
        };
        let mut decisions = Vec::new();
        let mut candidates = Vec::new();
        for uuid in selected {
            if self.decisions.is_hung_up(&uuid) {
                decisions.push(decide("already_ended", &uuid, "already hung up".into()));
            } else if self.decisions.is_busy(&uuid) {
                decisions.push(decide(
                    "in_progress",
                    &uuid,
                    "a re-read or hangup of this call is in flight".into(),
                ));
            } else if let Some(reason) = &self.unhealthy {
                decisions.push(decide(
                    "refused",
                    &uuid,
                    format!("the account is unhealthy: {reason}"),
                ));
            } else {
                candidates.push(uuid);
            }
        }
        // Protection first: a protected call is reported, never counted.
        let mut to_end = Vec::new();
        for uuid in candidates {
            let Some(call) = self.calls.get(&uuid).map(|t| Arc::clone(&t.call)) else {
                continue;
            };
            match self.plan(&call, HangupScope::Call) {
                Plan::End(_) => to_end.push(uuid),
                Plan::Protected { leg, number } => {
                    let detail = format!("leg {leg} has protected number {number}");
                    if !request.preview {
                        let job = self.manual_job(&uuid, request, now);
                        tracing::warn!(account = %self.account, call = %uuid, %leg,
                            "protected number on a leg: not hung up");
                        let audited = format!("{detail}; {}", job.reason);
                        self.audit_outcome(&job, AuditEvent::Outcome, Outcome::Protected, 0, &audited);
                    }
                    decisions.push(decide("protected", &uuid, detail));
                }
                Plan::UnknownLeg(leg) => decisions.push(decide(
                    "refused",
                    &uuid,
                    format!("leg {leg} is not known yet, so its numbers cannot be checked; try again after the next poll"),
                )),
                Plan::NoLegs => decisions.push(decide("refused", &uuid, "no leg to end".into())),
            }
        }
        if !explicit && !request.force && !to_end.is_empty() {
            let counts = breaker::count(to_end.iter(), self.discovery.live());
            if breaker::exceeds_limits(counts, &self.settings.safety) {
                let detail = format!(
                    "breaker: the selector would end {} of {} live calls, beyond [safety] limits; send it again with force to end them",
                    counts.due, counts.fleet
                );
                if !request.preview {
                    tracing::error!(account = %self.account, due = counts.due, fleet = counts.fleet,
                        "breaker: a manual hangup selector would end too many calls; refused (force overrides)");
                }
                for uuid in to_end {
                    if !request.preview {
                        let job = self.manual_job(&uuid, request, now);
                        let audited = format!("{detail}; {}", job.reason);
                        self.audit_outcome(
                            &job,
                            AuditEvent::Breaker,
                            Outcome::Breaker,
                            0,
                            &audited,
                        );
                    }
                    decisions.push(decide("breaker", &uuid, detail.clone()));
                }
                return decisions;
            }
        }
        let dry_run = request.dry_run || self.settings.enforce.dry_run;
        for uuid in to_end {
            if request.preview {
                decisions.push(decide(
                    "would_hang_up",
                    &uuid,
                    "preview: nothing done".into(),
                ));
                continue;
            }
            let mut job = self.manual_job(&uuid, request, now);
            if dry_run {
                job.dry_run = true;
                let reason = job.reason.clone();
                // A dry-run intent is not waited for: nothing is done on it.
                drop(self.audit_intent(&job, &reason));
                tracing::info!(account = %self.account, call = %uuid, rule = MANUAL_RULE,
                    outcome = "dry_run", dry_run = true, "would hang up");
                self.audit_outcome(&job, AuditEvent::Outcome, Outcome::DryRun, 0, &reason);
                decisions.push(decide(
                    "dry_run",
                    &uuid,
                    "dry run: audited, nothing hung up".into(),
                ));
                continue;
            }
            // The manual hangup replaces any rule timer and overrides a pardon.
            self.deadlines.cancel(&uuid);
            self.breaker.unhold(&uuid);
            self.manual_jobs.insert(uuid.clone(), job);
            self.start_reread(uuid.clone(), Purpose::Manual);
            decisions.push(decide(
                "accepted",
                &uuid,
                "re-read, then hung up (see the audit log for the outcome)".into(),
            ));
        }
        decisions
    }

    /// The live calls `matcher` selects, started at least `older_than`
    /// ago (a call of unknown start is never selected), oldest first.
    fn select(
        &self,
        matcher: &Match,
        older_than: Option<Duration>,
        limit: Option<usize>,
        now: DateTime<Utc>,
    ) -> Vec<CallUuid> {
        let skew = self.clocks.skew(now);
        let mismatch = self.clocks.mismatch().is_some();
        let older_than = older_than.and_then(|d| TimeDelta::from_std(d).ok());
        let mut found: Vec<(DateTime<Utc>, CallUuid)> = self
            .calls
            .iter()
            .filter(|(uuid, _)| self.discovery.is_live(uuid))
            .filter(|(_, tracked)| {
                matcher
                    .first_mismatch(&FieldValues::new(&tracked.call, &self.account))
                    .is_none()
            })
            .filter_map(|(uuid, tracked)| {
                let started = tracked.timeline(skew, mismatch).started;
                match older_than {
                    // Times are rounded so calls look younger: never too old.
                    Some(min_age) => started
                        .filter(|at| now - *at >= min_age)
                        .map(|at| (at, uuid.clone())),
                    None => Some((started.unwrap_or(now), uuid.clone())),
                }
            })
            .collect();
        found.sort();
        found
            .into_iter()
            .take(limit.unwrap_or(usize::MAX))
            .map(|(_, uuid)| uuid)
            .collect()
    }

    fn manual_job(&self, uuid: &CallUuid, request: &ManualRequest, now: DateTime<Utc>) -> Job {
        let mut reason = format!(
            "manual hangup requested by {}: {}",
            request.requested_by, request.reason
        );
        if let Some(id) = &request.request_id {
            reason.push_str(&format!(" (request_id {id})"));
        }
        Job {
            uuid: uuid.clone(),
            rule: Some(MANUAL_RULE.to_owned()),
            rules: vec![MANUAL_RULE.to_owned()],
            action: Some("hangup:call".to_owned()),
            deadline: now,
            dry_run: false,
            reason,
            call: self.calls.get(uuid).map(|t| Arc::clone(&t.call)),
        }
    }

    /// After the re-read: end the call if it is still live and unprotected.
    pub(super) fn act_manual(&mut self, uuid: &CallUuid, call: Arc<Call>) {
        let Some(mut job) = self.manual_jobs.remove(uuid) else {
            return;
        };
        job.call = Some(Arc::clone(&call));
        if self.decisions.is_hung_up(uuid) {
            return;
        }
        let targets = match self.plan(&call, HangupScope::Call) {
            Plan::End(targets) => targets,
            Plan::Protected { leg, number } => {
                self.finish(uuid, Purpose::Enforce);
                let detail = format!("leg {leg} has protected number {number}; {}", job.reason);
                self.audit_outcome(&job, AuditEvent::Outcome, Outcome::Protected, 0, &detail);
                return;
            }
            Plan::NoLegs | Plan::UnknownLeg(_) => {
                let detail =
                    "a leg of the call is not known: not hung up; ask again after the next poll";
                self.audit_outcome(&job, AuditEvent::Outcome, Outcome::Skipped, 0, detail);
                return;
            }
        };
        let reason = job.reason.clone();
        let durable = self.audit_intent(&job, &reason);
        self.hang_up_targets(job, targets, durable);
    }

    /// A manual hangup whose re-read failed: audited, not retried.
    pub(super) fn manual_failed(&mut self, uuid: &CallUuid, outcome: Outcome, detail: &str) {
        if let Some(job) = self.manual_jobs.remove(uuid) {
            self.audit_outcome(&job, AuditEvent::Outcome, outcome, 0, detail);
        }
    }
}
