//! The clock prober: every answer's `Date` narrows the skew bound, and while
//! the bound is loose (at start, and once drift has widened it) rounds of
//! cheap requests timed on the phase of the server's second narrow it to
//! within [`skew::PROBE_TARGET`] plus a round trip.

use super::*;

impl<A: VobizApi> Engine<A> {
    /// Takes an answer's `Date` into account, re-times the tracked calls if
    /// the lower bound moved, and probes again if the bound is still loose.
    pub(super) fn observe_skew<T>(&mut self, fetched: &Fetched<T>) {
        let Some(moved) = self.clocks.observe(fetched, self.now()) else {
            return;
        };
        if moved {
            // About every 100 s of drift in steady state (see `Clocks::observe`):
            // at 100,000 calls this pass is the largest single one.
            tracing::debug!(account = %self.account, calls = self.calls.len(),
                "the clock bound moved: re-timing every tracked call");
            self.evaluate_all();
        }
        self.start_probes();
    }

    /// Sends the next round of probes if the bound needs one and no round
    /// is under way.
    fn start_probes(&mut self) {
        if self.unhealthy.is_some() {
            return;
        }
        for at in self.clocks.plan_probes(self.now()) {
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
        self.clocks.probe_answered();
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
