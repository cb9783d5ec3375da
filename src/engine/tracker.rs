//! What the engine knows of each live call beyond the API's latest answer:
//! when it was first seen, when it was seen answered, when its observed
//! state last changed — and the timeline the policy evaluates from them.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::call::{Call, CallStatus};
use crate::policy::Timeline;

use super::skew::SkewEstimate;

/// One tracked call.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The latest details, shared (not copied) with the jobs and audit
    /// records that act on them.
    pub call: Arc<Call>,
    /// Local time the call was first seen in a list.
    pub first_seen: DateTime<Utc>,
    /// Local time of the first answer that showed the call in progress
    /// (used when the API gives no `answer_time`).
    pub answered_seen: Option<DateTime<Utc>>,
    /// Local time the observed state (status, parties, legs) last changed.
    pub last_change: DateTime<Utc>,
    /// Fingerprint of the observed state.
    state_key: u64,
    /// The previous poll's time, when the call was absent from it.
    pub new_since: Option<DateTime<Utc>>,
    /// Came from the queued list (details via `?status=queued`).
    pub queued: bool,
    /// An idle rule matched at the last evaluation: re-read at each poll.
    pub watched_by_idle_rule: bool,
    /// Its timestamps broke the new-call age bound: this call alone is
    /// timed from when callwarden first saw it.
    pub first_sight_only: bool,
}

impl Tracked {
    /// Starts tracking `call`, fetched at `seen_at`.
    pub fn new(
        call: Call,
        seen_at: DateTime<Utc>,
        new_since: Option<DateTime<Utc>>,
        queued: bool,
    ) -> Self {
        let state_key = state_key(&call, 0);
        let answered_seen = is_answered(&call).then_some(seen_at);
        Self {
            call: Arc::new(call),
            first_seen: seen_at,
            answered_seen,
            last_change: seen_at,
            state_key,
            new_since,
            queued,
            watched_by_idle_rule: false,
            first_sight_only: false,
        }
    }

    /// Restores the times remembered from an earlier run.
    pub fn restore(&mut self, remembered: &super::memory::Remembered) {
        self.first_seen = remembered.first_seen.min(self.first_seen);
        self.answered_seen = match (remembered.answered_seen, self.answered_seen) {
            (Some(then), Some(now)) => Some(then.min(now)),
            (then, now) => then.or(now),
        };
        // If the state changed while we were down, the change happened at
        // some unknown time: keep "now", the later and so safer choice.
        if remembered.state_key == self.state_key {
            self.last_change = remembered.last_change.min(self.last_change);
        }
        self.new_since = None;
        self.first_sight_only |= remembered.first_sight_only;
    }

    /// The times worth remembering across a restart.
    pub fn remembered(&self) -> super::memory::Remembered {
        super::memory::Remembered {
            first_seen: self.first_seen,
            answered_seen: self.answered_seen,
            last_change: self.last_change,
            state_key: self.state_key,
            first_sight_only: self.first_sight_only,
        }
    }

    /// Takes fresh details fetched at `seen_at`; `legs` is how many live
    /// B-legs name this call as parent. Returns whether the state changed.
    pub fn refresh(&mut self, call: Call, seen_at: DateTime<Utc>, legs: usize) -> bool {
        let key = state_key(&call, legs);
        if self.answered_seen.is_none() && is_answered(&call) {
            self.answered_seen = Some(seen_at);
        }
        self.call = Arc::new(call);
        let changed = key != self.state_key;
        if changed {
            self.state_key = key;
            self.last_change = seen_at;
        }
        changed
    }

    /// Records the number of live B-legs seen at a poll (a leg joining or
    /// leaving is a state change for idle rules).
    pub fn observe_legs(&mut self, legs: usize, seen_at: DateTime<Utc>) {
        let key = state_key(&self.call, legs);
        if key != self.state_key {
            self.state_key = key;
            self.last_change = seen_at;
        }
    }

    /// The instants the policy evaluates, on the local clock.
    ///
    /// With a clock/zone mismatch (of the account, or of this call alone)
    /// the API's instants are not trusted and the call is timed from when
    /// callwarden first saw it.
    pub fn timeline(&self, skew: SkewEstimate, mismatch: bool) -> Timeline {
        if mismatch || self.first_sight_only {
            return Timeline {
                started: Some(self.first_seen),
                answered: self.answered_seen,
                last_change: self.last_change,
            };
        }
        let started = self.call.started_at.map(|at| skew.to_local_never_older(at));
        let answered = self
            .call
            .answered_at
            .map(|at| skew.to_local_never_older(at))
            .or(self.answered_seen);
        Timeline {
            started,
            answered,
            last_change: self.last_change,
        }
    }

    /// Whether details must be fetched again at each poll: the call may
    /// still be answered (unanswered calls are not due under
    /// `measure_from = "answer"`), or an idle rule watches it.
    pub fn needs_refresh(&self) -> bool {
        self.watched_by_idle_rule || !is_answered(&self.call)
    }
}

/// Whether the details show the call answered.
pub fn is_answered(call: &Call) -> bool {
    call.answered_at.is_some() || call.status == CallStatus::InProgress
}

fn state_key(call: &Call, legs: usize) -> u64 {
    let mut hasher = DefaultHasher::new();
    call.status.as_str().hash(&mut hasher);
    call.from.hash(&mut hasher);
    call.to.hash(&mut hasher);
    call.caller_name.hash(&mut hasher);
    call.parent_call_uuid.hash(&mut hasher);
    call.answered_at.hash(&mut hasher);
    legs.hash(&mut hasher);
    hasher.finish()
}
