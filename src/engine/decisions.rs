//! What was already done for each call, so nothing is done twice: requests
//! in flight, calls decided (hung up, protected, dry-run audited), calls
//! confirmed hung up (never again, across restarts), intents a crash left
//! open, warnings spoken and dry-run rules audited.

use std::collections::HashSet;

use crate::call::CallUuid;

use super::rules::RuleId;

/// The never-twice bookkeeping of one account.
#[derive(Debug, Default)]
pub(super) struct Decisions {
    /// A re-read or a hangup of the call is in flight.
    busy: HashSet<CallUuid>,
    /// Decided: no hangup timer fires for it again (until a reload says otherwise).
    finished: HashSet<CallUuid>,
    /// A DELETE of the call was confirmed.
    hung_up: HashSet<CallUuid>,
    /// Intents without an outcome in the audit log of an earlier run.
    resumed: HashSet<CallUuid>,
    warned: HashSet<CallUuid>,
    dry_done: HashSet<(CallUuid, RuleId)>,
}

impl Decisions {
    /// Starts from what the audit log says of earlier runs.
    pub(super) fn resume(hung_up: HashSet<CallUuid>, resumed: HashSet<CallUuid>) -> Self {
        Self {
            hung_up,
            resumed,
            ..Self::default()
        }
    }

    /// Whether a request for `uuid` is in flight.
    pub(super) fn is_busy(&self, uuid: &CallUuid) -> bool {
        self.busy.contains(uuid)
    }

    /// Marks a request for `uuid` in flight.
    pub(super) fn start(&mut self, uuid: &CallUuid) {
        self.busy.insert(uuid.clone());
    }

    /// The request for `uuid` came back.
    pub(super) fn stop(&mut self, uuid: &CallUuid) {
        self.busy.remove(uuid);
    }

    /// How many calls have a request in flight.
    pub(super) fn in_flight(&self) -> usize {
        self.busy.len()
    }

    /// Whether the call's hangup is decided or done: no rule acts on it again.
    pub(super) fn is_decided(&self, uuid: &CallUuid) -> bool {
        self.finished.contains(uuid) || self.hung_up.contains(uuid)
    }

    /// Marks `uuid` decided.
    pub(super) fn finish(&mut self, uuid: &CallUuid) {
        self.finished.insert(uuid.clone());
    }

    /// Whether a DELETE of `uuid` was confirmed.
    pub(super) fn is_hung_up(&self, uuid: &CallUuid) -> bool {
        self.hung_up.contains(uuid)
    }

    /// Records a confirmed DELETE.
    pub(super) fn hung_up(&mut self, uuid: &CallUuid) {
        self.hung_up.insert(uuid.clone());
    }

    /// The decided calls, for a reload to judge which decisions still hold.
    pub(super) fn finished(&self) -> impl Iterator<Item = &CallUuid> {
        self.finished.iter()
    }

    /// Lets a rule decide `uuid` afresh (a reload changed its rule).
    pub(super) fn undecide(&mut self, uuid: &CallUuid) {
        self.finished.remove(uuid);
    }

    /// Whether the winning rule's warning was spoken (or skipped) for `uuid`.
    pub(super) fn is_warned(&self, uuid: &CallUuid) -> bool {
        self.warned.contains(uuid)
    }

    /// Marks the warning of `uuid` done; false if it already was.
    pub(super) fn warn(&mut self, uuid: &CallUuid) -> bool {
        self.warned.insert(uuid.clone())
    }

    /// Whether dry-run rule `rule` was audited for `uuid`.
    pub(super) fn is_dry_run_done(&self, uuid: &CallUuid, rule: RuleId) -> bool {
        self.dry_done.contains(&(uuid.clone(), rule))
    }

    /// Marks dry-run rule `rule` audited for `uuid`.
    pub(super) fn dry_run_done(&mut self, uuid: &CallUuid, rule: RuleId) {
        self.dry_done.insert((uuid.clone(), rule));
    }

    /// Carries the audited dry-run rules over a reload: `renew` gives a
    /// rule's id in the new rules, or `None` to audit it afresh.
    pub(super) fn renew_dry_runs(&mut self, renew: impl Fn(RuleId) -> Option<RuleId>) {
        self.dry_done = std::mem::take(&mut self.dry_done)
            .into_iter()
            .filter_map(|(uuid, rule)| Some((uuid, renew(rule)?)))
            .collect();
    }

    /// Adds intents another leader left open (high availability takeover):
    /// each is re-checked like one left by a crash of this node.
    pub(super) fn resume_more(&mut self, pending: impl IntoIterator<Item = CallUuid>) {
        self.resumed.extend(pending);
    }

    /// Whether an earlier run (or leader) left an intent to end `uuid` open:
    /// the call was due then, so discovery reads it first.
    pub(super) fn is_resumed(&self, uuid: &CallUuid) -> bool {
        self.resumed.contains(uuid)
    }

    /// Closes the open intent of `uuid`; true if there was one.
    pub(super) fn close_resumed(&mut self, uuid: &CallUuid) -> bool {
        self.resumed.remove(uuid)
    }

    /// Calls with an open intent that `keep` rejects.
    pub(super) fn resumed_except(&self, keep: impl Fn(&CallUuid) -> bool) -> Vec<CallUuid> {
        self.resumed.iter().filter(|u| !keep(u)).cloned().collect()
    }

    /// After a complete list: forgets the decisions of calls no longer live.
    pub(super) fn retain_live(&mut self, live: impl Fn(&CallUuid) -> bool) {
        self.hung_up.retain(|uuid| live(uuid));
        self.finished.retain(|uuid| live(uuid));
    }

    /// Drops the per-rule marks of an ended call; `dry_run_rules` are the
    /// rules it may have been audited under.
    pub(super) fn forget(&mut self, uuid: &CallUuid, dry_run_rules: impl Iterator<Item = RuleId>) {
        self.warned.remove(uuid);
        for rule in dry_run_rules {
            self.dry_done.remove(&(uuid.clone(), rule));
        }
    }
}
