//! Polling: the requests of discovery (the live list, then the details of
//! new calls) and what their answers change — the tracked calls, their
//! legs, the memory across restarts, and the clock checks of new calls.

use super::*;

impl<A: VobizApi> Engine<A> {
    /// Lists live (and, when rules need them, queued) calls; one list in flight at a time.
    pub(super) fn start_poll(&mut self) {
        if !self.discovery.begin_list() {
            return;
        }
        let api = Arc::clone(&self.api);
        let with_queued = self.rules.policy().needs_queued_calls();
        let tx = self.events_tx.clone();
        let sent_at = self.now();
        tokio::spawn(async move {
            let live = api.list_live().await;
            let result = match live {
                Err(e) => Err(e),
                Ok(live) if with_queued => {
                    let queued = api.list_queued().await;
                    queued.map(|q| Listing {
                        live,
                        queued: q.value,
                    })
                }
                Ok(live) => Ok(Listing {
                    live,
                    queued: Vec::new(),
                }),
            };
            let _ = tx.send(Event::Listed { sent_at, result });
        });
    }

    /// Reconciles the list with the tracked calls: new ones are read, missing ones ended.
    pub(super) fn on_listed(&mut self, sent_at: DateTime<Utc>, result: Result<Listing, ApiError>) {
        let listing = match result {
            Ok(listing) => listing,
            Err(error) => {
                self.discovery.list_failed(error.to_string());
                self.count_poll("error");
                tracing::warn!(account = %self.account, %error, "listing live calls failed");
                if matches!(error, ApiError::Unauthorized | ApiError::Forbidden) {
                    self.mark_unhealthy(error.to_string());
                }
                self.note(Note::Failed(format!("listing calls: {error}")));
                return;
            }
        };
        let previous_poll = self.discovery.list_answered(sent_at);
        self.count_poll("ok");
        self.shared
            .metrics
            .poll_succeeded(&self.account, sent_at.timestamp_millis() as f64 / 1000.0);
        self.observe_skew(&listing.live);

        // The list's order is kept for discovery, after the calls an earlier
        // run knew: it is the only order the API gives (oldest first, where
        // it lists by creation).
        let live_listed = listing.live.value.len();
        let listed: Vec<CallUuid> = listing
            .live
            .value
            .into_iter()
            .chain(listing.queued)
            .collect();
        if self.calls.any_queued() {
            for uuid in &listed[..live_listed] {
                // A queued call now in the live list is read as a live call.
                self.calls.set_queued(uuid, false);
            }
        }
        // The tracked calls' own UUIDs: the live set shares their text.
        let listed_set: HashSet<CallUuid> = listed
            .iter()
            .map(|uuid| self.calls.shared_uuid(uuid).clone())
            .collect();
        let tracked = self.calls.iter().map(|(uuid, _)| uuid);
        let discovery::Reconciled { live, kept, ended } =
            self.discovery.still_live(listed_set, tracked);
        if kept > 0 {
            tracing::debug!(account = %self.account, calls = kept,
                "tracked calls missing from one list answer: kept until a second list or a 404 confirms they ended");
        }

        // Calls that ended: forget them (a running hangup reports first).
        for uuid in ended {
            if !self.decisions.is_busy(&uuid) {
                self.forget(&uuid);
            }
        }
        // Intents left open by a crash whose calls are no longer live: the
        // hangup (or the caller) ended them. Close them.
        let ended = self
            .decisions
            .resumed_except(|uuid| live.contains(uuid) || self.calls.contains(uuid));
        for uuid in ended {
            self.forget(&uuid);
        }
        self.decisions.retain_live(|uuid| live.contains(uuid));
        self.deadlines.retain_pardons(|uuid| live.contains(uuid));
        let now = self.now();

        for (position, uuid) in listed.iter().enumerate() {
            if self.calls.contains(uuid)
                || self.discovery.is_pending(uuid)
                || self.decisions.is_hung_up(uuid)
                || self.discovery.backing_off(uuid, now)
            {
                continue;
            }
            // New only if neither list of the previous complete poll had it
            // (a queued call that is answered moves from one to the other,
            // and a call whose details could not be read yet was listed).
            let new_since = previous_poll.filter(|_| !self.discovery.is_live(uuid));
            // A call in both lists is ringing: its first, live, listing wins.
            let fetch = Fetch::Discover {
                new_since,
                queued: position >= live_listed,
                urgency: discovery::urgency(
                    self.decisions.is_resumed(uuid),
                    self.calls.remembered(uuid).map(|r| r.first_seen),
                ),
            };
            self.discovery.enqueue(uuid.clone(), fetch, now);
        }
        self.discovery.set_live(live);

        let refresh: Vec<CallUuid> = self
            .calls
            .needing_refresh()
            .filter(|uuid| !self.decisions.is_busy(uuid) && !self.discovery.backing_off(uuid, now))
            .cloned()
            .collect();
        for uuid in refresh {
            self.discovery.enqueue(uuid, Fetch::Refresh, now);
        }
        if self.rules.policy().has_idle_rules() {
            self.calls.observe_legs(now);
        }
        if self.discovery.reads_done() {
            // No reads to wait for: the list alone may have freed room.
            self.check_caps();
        }
        self.check_breaker();
        self.save_memory();
        self.share_poll();
        self.publish();
        self.shared
            .metrics
            .live_calls
            .get_or_create(&self.label())
            .set(self.discovery.live().len() as i64);
        self.pump_details();
    }

    /// Starts queued detail reads up to the budget-derived concurrency.
    fn pump_details(&mut self) {
        let concurrency = self.settings.detail_concurrency();
        while let Some((uuid, fetch)) = self.discovery.next_read(concurrency) {
            let api = Arc::clone(&self.api);
            let tx = self.events_tx.clone();
            let queued = match fetch {
                Fetch::Discover { queued, .. } => queued,
                Fetch::Refresh => self.calls.get(&uuid).is_some_and(|t| t.queued),
            };
            tokio::spawn(async move {
                let result = if queued {
                    api.get_queued(&uuid).await
                } else {
                    api.get_live(&uuid).await
                };
                let _ = tx.send(Event::Detail {
                    uuid,
                    fetch,
                    result,
                });
            });
        }
    }

    /// Books a finished detail read and closes its batch when it was the last.
    pub(super) fn on_detail(
        &mut self,
        uuid: CallUuid,
        fetch: Fetch,
        result: Result<Fetched<Call>, ApiError>,
    ) {
        self.discovery.read_answered(&uuid);
        self.pump_details();
        self.read_detail(uuid, fetch, result);
        if matches!(fetch, Fetch::Discover { .. }) {
            if let Some(due) = self.discovery.discovered() {
                self.release_batch(due);
            }
        }
        if self.discovery.reads_done() {
            // The poll's reads are complete: judge the groups as a whole.
            self.check_caps();
        }
    }

    /// Lets the overdue calls of a batch through together, so the breaker sees them at once.
    pub(super) fn release_batch(&mut self, due: Vec<CallUuid>) {
        let now = self.now();
        for uuid in due {
            self.deadlines.schedule_hangup(&uuid, now, false);
        }
    }

    /// Turns one detail answer into a tracked call (or a backoff), then evaluates it.
    fn read_detail(
        &mut self,
        uuid: CallUuid,
        fetch: Fetch,
        result: Result<Fetched<Call>, ApiError>,
    ) {
        let fetched = match result {
            Ok(fetched) => {
                self.discovery.read_ok(&uuid);
                fetched
            }
            Err(ApiError::NotFound) => {
                // 404 on a queued read: the call may have been answered and
                // be live now; read it as a live call before forgetting it.
                let was_queued = match fetch {
                    Fetch::Discover { queued, .. } => queued,
                    Fetch::Refresh => self.calls.get(&uuid).is_some_and(|t| t.queued),
                };
                if was_queued && self.discovery.is_live(&uuid) {
                    self.calls.set_queued(&uuid, false);
                    let fetch = match fetch {
                        Fetch::Discover {
                            new_since, urgency, ..
                        } => Fetch::Discover {
                            new_since,
                            queued: false,
                            urgency,
                        },
                        Fetch::Refresh => Fetch::Refresh,
                    };
                    let now = self.now();
                    self.discovery.enqueue(uuid, fetch, now);
                    self.pump_details();
                } else {
                    self.forget(&uuid);
                }
                return;
            }
            Err(error @ ApiError::Malformed { .. }) => {
                // One call's answer that keeps coming back unreadable is read
                // again after a growing pause, not at every poll.
                let now = self.now();
                let failures = self
                    .discovery
                    .read_malformed(&uuid, now, &self.settings.retry);
                if failures == 1 {
                    tracing::warn!(account = %self.account, call = %uuid, %error,
                        "reading call details failed: malformed answer; reading this call again after a growing pause");
                } else {
                    tracing::debug!(account = %self.account, call = %uuid, failures, %error,
                        "reading call details failed again: malformed answer");
                }
                self.note(Note::Failed(format!("reading {uuid}: {error}")));
                return;
            }
            Err(error) => {
                tracing::warn!(account = %self.account, call = %uuid, %error, "reading call details failed");
                if matches!(error, ApiError::Unauthorized | ApiError::Forbidden) {
                    self.mark_unhealthy(error.to_string());
                }
                self.note(Note::Failed(format!("reading {uuid}: {error}")));
                return;
            }
        };
        if !self.discovery.is_live(&uuid) || self.decisions.is_busy(&uuid) {
            return;
        }
        self.observe_skew(&fetched);
        let seen_at = fetched.received_at;
        match fetch {
            Fetch::Discover {
                new_since, queued, ..
            } => {
                let mut tracked = Tracked::new(fetched.value, seen_at, new_since, queued);
                if let Some(remembered) = self.calls.remembered(&uuid) {
                    tracked.restore(remembered);
                }
                self.check_mismatch(&mut tracked, seen_at);
                self.calls.insert(uuid.clone(), tracked);
            }
            Fetch::Refresh => {
                if !self.calls.refresh(&uuid, fetched.value, seen_at) {
                    return;
                }
            }
        }
        self.evaluate(&uuid);
    }

    /// Writes the remembered call times when they changed since the last
    /// poll, off the engine's task (at 100,000 calls this is megabytes).
    fn save_memory(&mut self) {
        if let Some(write) = self.calls.memory_snapshot(self.discovery.live(), false) {
            tokio::task::spawn_blocking(write);
        }
    }

    /// Checks a newly tracked call's timestamps against the clocks. A start
    /// in the future switches the whole account to first-sight timing; a
    /// call that only looks too old for a new call (or whose duration
    /// disagrees) is timed from first sight on its own, and the account
    /// follows only when enough such calls are live at once.
    fn check_mismatch(&mut self, tracked: &mut Tracked, now: DateTime<Utc>) {
        if self.clocks.mismatch().is_some() {
            return;
        }
        let skew = self.clocks.skew(self.now());
        let timeline = tracked.timeline(skew, false);
        let answered = tracked
            .call
            .answered_at
            .map(|at| skew.to_local_never_older(at));
        let Some(mismatch) = skew::check_mismatch(
            timeline.started,
            answered,
            tracked.call.duration_s,
            now,
            tracked.new_since,
        ) else {
            return;
        };
        if !matches!(mismatch, Mismatch::StartInFuture { .. }) {
            tracked.first_sight_only = true;
            let outliers = 1 + self.calls.first_sight_only();
            if outliers < OUTLIERS_FOR_FALLBACK {
                tracing::warn!(
                    account = %self.account,
                    call = %tracked.call.uuid,
                    %mismatch,
                    "one call's timestamps disagree with the clocks: timing this call from when callwarden first saw it"
                );
                return;
            }
        }
        tracing::error!(
            account = %self.account,
            call = %tracked.call.uuid,
            %mismatch,
            "API timestamps disagree with the clocks: check [api] timestamp_zone; timing calls from when callwarden first saw them until the config is fixed"
        );
        self.shared
            .metrics
            .clock_mismatch
            .get_or_create(&self.label())
            .set(1);
        self.clocks.set_mismatch(mismatch);
        // Every deadline computed so far trusted the timestamps.
        self.evaluate_all();
    }

    /// Drops every trace of an ended call, so no timer or index outlives it.
    pub(super) fn forget(&mut self, uuid: &CallUuid) {
        self.calls.remove(uuid);
        self.deadlines.forget(uuid, self.rules.dry_run_ids());
        self.decisions.forget(uuid, self.rules.dry_run_ids());
        self.caps.forget(uuid);
        self.manual_jobs.remove(uuid);
        self.breaker.forget(uuid);
        if self.decisions.close_resumed(uuid) {
            // A hangup was in flight when the last run stopped; the call has
            // ended since, so close that intent.
            let job = self.bare_job(uuid);
            self.audit_outcome(
                &job,
                AuditEvent::Outcome,
                Outcome::Gone,
                0,
                "resumed after restart: the call had ended",
            );
        }
    }
}
