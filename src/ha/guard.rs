//! The engine's fence with `[ha]`: every hangup's intent is committed under
//! this node's lease at the epoch the engine was started with, and its
//! outcome recorded; what a poll finds (first in-progress times, intents of
//! an earlier leader whose calls have ended) goes to the database too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::coordinator::Node;
use super::db::{self, IntentOutcome};
use crate::call::CallUuid;
use crate::engine::fence::{Claim, Fence};

/// The fence of one engine: one account, one epoch.
pub struct LeaseGuard {
    node: Arc<Node>,
    account: String,
    epoch: i64,
    /// Intents an earlier leader left without an outcome, by call.
    inherited: Mutex<HashMap<CallUuid, i64>>,
    /// Calls whose first in-progress time is in the database already.
    shared_first_seen: Arc<Mutex<HashSet<CallUuid>>>,
    /// One write of poll results at a time; a poll meanwhile is skipped
    /// (the next one carries the same calls).
    syncing: Arc<AtomicBool>,
}

impl LeaseGuard {
    /// A guard for `account` at `epoch`, knowing the intents inherited.
    pub fn new(
        node: Arc<Node>,
        account: String,
        epoch: i64,
        inherited: HashMap<CallUuid, i64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            account,
            epoch,
            inherited: Mutex::new(inherited),
            shared_first_seen: Arc::new(Mutex::new(HashSet::new())),
            syncing: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Fence for LeaseGuard {
    fn epoch(&self) -> i64 {
        self.epoch
    }

    fn admit<'a>(
        &'a self,
        call: &'a CallUuid,
        action: &'a str,
    ) -> BoxFuture<'a, Result<Claim, String>> {
        Box::pin(async move {
            if !self.still_held() {
                return Err(format!(
                    "this node no longer holds the lease of `{}` (epoch {})",
                    self.account, self.epoch
                ));
            }
            let node = self.node.node_id();
            let answer = self
                .node
                .data
                .run(self.node.request_limit(), async |client| {
                    db::insert_intent(
                        client,
                        &self.account,
                        node,
                        self.epoch,
                        call.as_str(),
                        action,
                    )
                    .await
                })
                .await;
            match answer {
                // Checked again: the insert may have waited out the lease.
                Ok(IntentOutcome::Recorded { id }) if self.still_held() => {
                    lock(&self.inherited).remove(call);
                    Ok(Claim(id))
                }
                Ok(IntentOutcome::Recorded { .. }) => Err(format!(
                    "this node's lease of `{}` ran out while the intent was recorded",
                    self.account
                )),
                Ok(IntentOutcome::Duplicate { holder, outcome }) => Err(format!(
                    "the hangup was already decided by {holder} (outcome {outcome})"
                )),
                Ok(IntentOutcome::Fenced) => Err(format!(
                    "the lease of `{}` is no longer this node's at epoch {}",
                    self.account, self.epoch
                )),
                Err(error) => Err(format!("cannot record the intent: {error}")),
            }
        })
    }

    fn still_held(&self) -> bool {
        self.node.holds(&self.account, self.epoch)
    }

    fn settle(&self, claim: Claim, outcome: &'static str) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let node = self.node.node_id();
            let result = self
                .node
                .data
                .run(self.node.request_limit(), async |client| {
                    db::record_outcome(client, claim.0, node, self.epoch, outcome).await
                })
                .await;
            if let Err(error) = result {
                // The audit log has it; a later leader re-reads the call.
                tracing::warn!(account = %self.account, intent = claim.0, outcome, %error,
                    "cannot record a hangup's outcome in the HA database");
            }
        })
    }

    fn polled(&self, live: &HashSet<CallUuid>, first_seen: Vec<(CallUuid, DateTime<Utc>)>) {
        let ended: Vec<i64> = {
            let mut inherited = lock(&self.inherited);
            let ended = inherited
                .iter()
                .filter(|(uuid, _)| !live.contains(*uuid))
                .map(|(_, id)| *id)
                .collect();
            inherited.retain(|uuid, _| live.contains(uuid));
            ended
        };
        let new: Vec<(CallUuid, i64)> = {
            let mut shared = lock(&self.shared_first_seen);
            shared.retain(|uuid| live.contains(uuid));
            first_seen
                .into_iter()
                .filter(|(uuid, _)| !shared.contains(uuid))
                .map(|(uuid, at)| (uuid, at.timestamp_millis()))
                .collect()
        };
        if (ended.is_empty() && new.is_empty()) || self.syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        let node = Arc::clone(&self.node);
        let account = self.account.clone();
        let syncing = Arc::clone(&self.syncing);
        let rows: Vec<(String, i64)> = new.iter().map(|(u, t)| (u.to_string(), *t)).collect();
        let done: Vec<CallUuid> = new.into_iter().map(|(u, _)| u).collect();
        let shared = Arc::clone(&self.shared_first_seen);
        tokio::spawn(async move {
            let result = node
                .data
                .run(node.request_limit(), async |client| {
                    if !ended.is_empty() {
                        db::close_ended(client, &ended).await?;
                    }
                    if !rows.is_empty() {
                        db::record_first_seen_many(client, &account, &rows).await?;
                    }
                    Ok(())
                })
                .await;
            match result {
                Ok(()) => lock(&shared).extend(done),
                Err(error) => tracing::warn!(%account, %error,
                    "cannot share first-seen times with the HA database; trying after the next poll"),
            }
            syncing.store(false, Ordering::Release);
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
