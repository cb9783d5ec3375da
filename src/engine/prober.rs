//! The clock prober: every answer's `Date` narrows the skew bound, and while
//! the bound is loose (at start, and once drift has widened it) rounds of
//! cheap requests timed on the phase of the server's second narrow it to
//! within [`skew::PROBE_TARGET`] plus a round trip.

use super::*;

impl<A: VobizApi> Engine<A> {
    /// The skew bound now (aged by drift since it was measured).
    pub(super) fn skew_now(&self) -> Option<SkewEstimate> {
        self.skew.current(self.now())
    }

    /// Takes an answer's `Date` into account, re-times the tracked calls if
    /// the lower bound moved, and probes again if the bound is still loose.
    pub(super) fn observe_skew<T>(&mut self, fetched: &Fetched<T>) {
        let Some(date) = fetched.server_date else {
            return;
        };
        self.skew
            .observe(date, fetched.sent_at, fetched.received_at);
        if let Some(current) = self.skew_now() {
            // Deadlines already scheduled used the old lower bound. When it
            // has moved noticeably (narrowed by probes, or widened by drift),
            // move them: still never early, since the new bound is as safe
            // as the old. This happens a few times at start and then about
            // every 100 s of drift, so the O(calls) pass is rare.
            let moved = self
                .skew_evaluated_low
                .is_none_or(|old| (current.low - old).abs() >= SKEW_REEVALUATE);
            if moved {
                self.skew_evaluated_low = Some(current.low);
                let uuids: Vec<CallUuid> = self.calls.keys().cloned().collect();
                for uuid in uuids {
                    self.evaluate(&uuid);
                }
            }
        }
        self.start_probes();
    }

    /// Sends the next round of probes if the bound needs one and no round
    /// is under way.
    pub(super) fn start_probes(&mut self) {
        if self.probes_in_flight > 0 || self.once.is_some() || self.unhealthy.is_some() {
            return;
        }
        for at in self.skew.plan(self.now()) {
            self.probes_in_flight += 1;
            let api = Arc::clone(&self.api);
            let tx = self.events_tx.clone();
            tokio::spawn(async move {
                let result = api.probe(at).await;
                let _ = tx.send(Event::Probed { result });
            });
        }
    }

    /// Feeds a probe's `Date` header into the skew bound; a failed probe waits for the next round.
    pub(super) fn on_probed(&mut self, result: Result<Fetched<Result<(), ApiError>>, ApiError>) {
        self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        match result {
            // Whatever the status, the answer carries the server's clock.
            Ok(fetched) => self.observe_skew(&fetched),
            // The next poll's answer starts another round.
            Err(error) => {
                tracing::debug!(account = %self.account, %error, "clock probe failed")
            }
        }
    }
}
