//! The hook through which high availability fences enforcement: with
//! `[ha]`, a hangup goes out only after its intent is committed under this
//! node's lease, and the outcome is recorded in the shared database too.
//! Without `[ha]` there is no fence and nothing here runs.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::actions::HangupResult;
use super::Engine;
use crate::call::CallUuid;
use crate::vobiz::VobizApi;

/// A committed intent, to record the outcome against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim(pub i64);

/// What an engine asks of the lease it enforces under (implemented by
/// `ha`; the engine knows nothing of the database).
pub trait Fence: Send + Sync {
    /// The lease epoch this engine enforces under, for the audit log.
    fn epoch(&self) -> i64;

    /// Commits the intent to `action` on `call` while the lease is held;
    /// `Err` (why) means no DELETE may be sent.
    fn admit<'a>(
        &'a self,
        call: &'a CallUuid,
        action: &'a str,
    ) -> BoxFuture<'a, Result<Claim, String>>;

    /// Whether a DELETE may still leave now, without I/O (the self-fence).
    fn still_held(&self) -> bool;

    /// Records how the DELETEs of `claim` ended: `ok`, `gone` or `failed`.
    fn settle(&self, claim: Claim, outcome: &'static str) -> BoxFuture<'_, ()>;

    /// After each successful poll: the calls still live (a call not in it
    /// has ended), and when each tracked call was first seen in progress,
    /// so a new leader times them from then.
    fn polled(&self, live: &HashSet<CallUuid>, first_seen: Vec<(CallUuid, DateTime<Utc>)>);
}

/// Asks `fence` (when there is one) to admit the hangup of `call`. One
/// decision per call whatever the scope, so two rules never both act on
/// it. `Err` is the result to report instead: nothing was sent.
pub(super) async fn admit(
    fence: Option<&Arc<dyn Fence>>,
    call: &CallUuid,
) -> Result<Option<Claim>, HangupResult> {
    let Some(fence) = fence else {
        return Ok(None);
    };
    fence
        .admit(call, "hangup")
        .await
        .map(Some)
        .map_err(|reason| HangupResult::Failed {
            attempts: 0,
            reason: format!("not sent: {reason}"),
        })
}

/// The result for a leg whose DELETE may no longer leave, checked before
/// each leg: the lease can run out while earlier legs are hung up.
pub(super) fn lease_ran_out(fence: Option<&Arc<dyn Fence>>) -> Option<HangupResult> {
    fence
        .filter(|fence| !fence.still_held())
        .map(|_| HangupResult::Failed {
            attempts: 0,
            reason: "not sent: this node's lease ran out".to_owned(),
        })
}

/// Records the outcome of an admitted hangup in the fence's database.
pub(super) async fn settle(
    fence: Option<&Arc<dyn Fence>>,
    claim: Option<Claim>,
    results: &[(CallUuid, HangupResult)],
) {
    if let (Some(fence), Some(claim)) = (fence, claim) {
        fence.settle(claim, outcome_of(results)).await;
    }
}

/// The outcome of one hangup's DELETEs, in the words of the decisions table.
pub fn outcome_of(results: &[(CallUuid, HangupResult)]) -> &'static str {
    if results.iter().any(|(_, r)| {
        matches!(
            r,
            HangupResult::Failed { .. } | HangupResult::AuthFailed { .. }
        )
    }) {
        "failed"
    } else if results
        .iter()
        .all(|(_, r)| matches!(r, HangupResult::Done { .. }))
    {
        "ok"
    } else {
        "gone"
    }
}

/// What a new leader takes over from the database before its first poll.
#[derive(Debug, Clone, Default)]
pub struct Takeover {
    /// Calls with an intent but no outcome: re-read before anything is done.
    pub pending: Vec<CallUuid>,
    /// Pardons: until when (`None` = for good).
    pub pardons: Vec<(CallUuid, Option<DateTime<Utc>>)>,
    /// When each call was first seen in progress by any leader.
    pub first_seen: Vec<(CallUuid, DateTime<Utc>)>,
}

impl<A: VobizApi> Engine<A> {
    /// Takes over what an earlier leader left in the database; called
    /// before [`Engine::run`]. Pending intents are only re-checked (each
    /// call is re-read before any DELETE), pardons apply at once, and
    /// first-seen times win over later local ones.
    pub fn take_over(&mut self, takeover: Takeover) {
        self.decisions.resume_more(takeover.pending);
        for (uuid, until) in takeover.pardons {
            self.deadlines.add_pardon(uuid, until);
        }
        for (uuid, at) in takeover.first_seen {
            self.calls.remember_first_seen(&uuid, at);
        }
    }

    /// Tells the fence what a poll found: live calls, first in-progress times.
    pub(super) fn share_poll(&self) {
        if let Some(fence) = &self.shared.fence {
            let seen = self
                .calls
                .iter()
                .filter_map(|(uuid, tracked)| Some((uuid.clone(), tracked.answered_seen?)))
                .collect();
            fence.polled(self.discovery.live(), seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(s: &str) -> CallUuid {
        CallUuid::parse(s).unwrap()
    }

    #[test]
    fn one_failed_leg_fails_the_hangup() {
        let done = HangupResult::Done {
            attempts: 1,
            at: Utc::now(),
        };
        let gone = HangupResult::Gone {
            attempts: 1,
            reason: String::new(),
        };
        let failed = HangupResult::Failed {
            attempts: 3,
            reason: String::new(),
        };
        assert_eq!(outcome_of(&[(uuid("a"), done.clone())]), "ok");
        assert_eq!(
            outcome_of(&[(uuid("a"), done.clone()), (uuid("b"), gone.clone())]),
            "gone"
        );
        assert_eq!(
            outcome_of(&[(uuid("a"), done), (uuid("b"), failed)]),
            "failed"
        );
        assert_eq!(outcome_of(&[(uuid("a"), gone)]), "gone");
    }
}
