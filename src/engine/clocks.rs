//! What the engine knows of the API server's clock: the skew bound from
//! every answer's `Date`, the bound the tracked calls were last timed with,
//! the clock probes in flight, and a detected clock/zone mismatch.

use chrono::{DateTime, TimeDelta, Utc};

use crate::vobiz::Fetched;

use super::skew::{Mismatch, SkewEstimate, SkewTracker, NO_SKEW};

/// A change of the clock-skew lower bound that re-times every tracked call.
const SKEW_REEVALUATE: TimeDelta = TimeDelta::milliseconds(20);

/// The clock state of one account.
#[derive(Debug)]
pub(super) struct Clocks {
    skew: SkewTracker,
    /// The skew lower bound the tracked calls were last timed with.
    timed_with: Option<TimeDelta>,
    probes_in_flight: usize,
    /// Whether probes are sent: one cycle of `once` ends before they help.
    probing: bool,
    mismatch: Option<Mismatch>,
}

impl Default for Clocks {
    fn default() -> Self {
        Self {
            skew: SkewTracker::default(),
            timed_with: None,
            probes_in_flight: 0,
            probing: true,
            mismatch: None,
        }
    }
}

impl Clocks {
    /// The skew bound at `now` (aged by drift since it was measured).
    pub(super) fn bound(&self, now: DateTime<Utc>) -> Option<SkewEstimate> {
        self.skew.current(now)
    }

    /// The skew calls are timed with at `now`: none until an answer had a `Date`.
    pub(super) fn skew(&self, now: DateTime<Utc>) -> SkewEstimate {
        self.bound(now).unwrap_or(NO_SKEW)
    }

    /// Takes an answer's `Date` into account. `None` if it had none;
    /// otherwise whether the lower bound moved enough that every tracked
    /// call must be timed again (still never early: the new bound is as
    /// safe as the old). That happens a few times at start and then about
    /// every 100 s of drift, so the pass over every call is rare.
    pub(super) fn observe<T>(&mut self, fetched: &Fetched<T>, now: DateTime<Utc>) -> Option<bool> {
        let date = fetched.server_date?;
        self.skew
            .observe(date, fetched.sent_at, fetched.received_at);
        let Some(current) = self.bound(now) else {
            return Some(false);
        };
        let moved = self
            .timed_with
            .is_none_or(|old| (current.low - old).abs() >= SKEW_REEVALUATE);
        if moved {
            self.timed_with = Some(current.low);
        }
        Some(moved)
    }

    /// The instants of the next round of probes, if the bound needs one and
    /// no round is under way; they count as in flight from now on.
    pub(super) fn plan_probes(&mut self, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        if self.probes_in_flight > 0 || !self.probing {
            return Vec::new();
        }
        let round = self.skew.plan(now);
        self.probes_in_flight += round.len();
        round
    }

    /// A probe came back.
    pub(super) fn probe_answered(&mut self) {
        self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
    }

    /// Stops probing (a single cycle ends before a probe could help).
    pub(super) fn stop_probing(&mut self) {
        self.probing = false;
    }

    /// The detected clock/zone mismatch, if any: calls are then timed from first sight.
    pub(super) fn mismatch(&self) -> Option<&Mismatch> {
        self.mismatch.as_ref()
    }

    /// Records a mismatch (the account's calls are timed from first sight).
    pub(super) fn set_mismatch(&mut self, mismatch: Mismatch) {
        self.mismatch = Some(mismatch);
    }

    /// Trusts the timestamps again (a reload may have fixed the zone).
    pub(super) fn clear_mismatch(&mut self) {
        self.mismatch = None;
    }
}
