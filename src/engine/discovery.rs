//! Discovery: polling the live list, reading new calls' details, keeping
//! the snapshot of tracked calls (legs, memory across restarts, clock
//! checks) current.

use super::*;

impl<A: VobizApi> Engine<A> {
    /// Lists live (and, when rules need them, queued) calls; one list in flight at a time.
    pub(super) fn start_poll(&mut self) {
        if self.list_in_flight {
            return;
        }
        self.list_in_flight = true;
        let api = Arc::clone(&self.api);
        let with_queued = self.policy.needs_queued_calls();
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
        self.list_in_flight = false;
        let listing = match result {
            Ok(listing) => listing,
            Err(error) => {
                self.count_poll("error");
                tracing::warn!(account = %self.account, %error, "listing live calls failed");
                self.last_poll_error = Some(error.to_string());
                if matches!(error, ApiError::Unauthorized | ApiError::Forbidden) {
                    self.mark_unhealthy(error.to_string());
                }
                if let Some(report) = &mut self.once {
                    report.errors.push(format!("listing calls: {error}"));
                }
                return;
            }
        };
        self.count_poll("ok");
        self.shared
            .metrics
            .poll_succeeded(&self.account, sent_at.timestamp_millis() as f64 / 1000.0);
        self.last_poll_error = None;
        self.observe_skew(&listing.live);
        let previous_poll = self.last_poll;
        self.last_poll = Some(sent_at);

        // The list's order is kept for discovery: it is the only order the
        // API gives (oldest first, where it lists by creation).
        let live_listed = listing.live.value.len();
        let listed: Vec<CallUuid> = listing
            .live
            .value
            .into_iter()
            .chain(listing.queued)
            .collect();
        for uuid in &listed[..live_listed] {
            // A queued call now in the live list is read as a live call.
            if let Some(tracked) = self.calls.get_mut(uuid) {
                tracked.queued = false;
            }
        }
        let listed_set: HashSet<CallUuid> = listed.iter().cloned().collect();
        let live = self.still_live(listed_set);

        // Calls that ended: forget them (a running hangup reports first).
        let gone: Vec<CallUuid> = self
            .calls
            .keys()
            .filter(|uuid| !live.contains(*uuid) && !self.busy.contains(*uuid))
            .cloned()
            .collect();
        for uuid in gone {
            self.forget(&uuid);
        }
        // Intents left open by a crash whose calls are no longer live: the
        // hangup (or the caller) ended them. Close them.
        let ended: Vec<CallUuid> = self
            .resumed
            .iter()
            .filter(|uuid| !live.contains(*uuid) && !self.calls.contains_key(*uuid))
            .cloned()
            .collect();
        for uuid in ended {
            self.forget(&uuid);
        }
        self.hung_up.retain(|uuid| live.contains(uuid));
        self.detail_backoff.retain(|uuid, _| live.contains(uuid));
        let now = self.now();
        self.finished.retain(|uuid| live.contains(uuid));
        self.pardons.retain(|uuid, _| live.contains(uuid));

        for (position, uuid) in listed.iter().enumerate() {
            if self.calls.contains_key(uuid)
                || self.detail_queued.contains(uuid)
                || self.hung_up.contains(uuid)
                || self.backing_off(uuid, now)
            {
                continue;
            }
            // New only if neither list of the previous complete poll had it
            // (a queued call that is answered moves from one to the other,
            // and a call whose details could not be read yet was listed).
            let new_since = previous_poll.filter(|_| !self.live.contains(uuid));
            // A call in both lists is ringing: its first, live, listing wins.
            let fetch = Fetch::Discover {
                new_since,
                queued: position >= live_listed,
            };
            self.enqueue_detail(uuid.clone(), fetch);
        }
        self.live = live;

        let refresh: Vec<CallUuid> = self
            .calls
            .iter()
            .filter(|(_, t)| t.needs_refresh())
            .filter(|(uuid, _)| !self.busy.contains(*uuid) && !self.backing_off(uuid, now))
            .map(|(uuid, _)| uuid.clone())
            .collect();
        for uuid in refresh {
            self.enqueue_detail(uuid, Fetch::Refresh);
        }
        self.observe_legs();
        if self.detail_queue.is_empty() && self.details_in_flight == 0 {
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
            .set(self.live.len() as i64);
        self.pump_details();
    }

    /// Whether `uuid`'s details answered malformed lately and must not be
    /// read again before its pause ends.
    pub(super) fn backing_off(&self, uuid: &CallUuid, now: DateTime<Utc>) -> bool {
        self.detail_backoff
            .get(uuid)
            .is_some_and(|(_, not_before)| *not_before > now)
    }

    /// The calls taken as live after a complete list: those listed, and
    /// tracked calls missing from this list only (one answer that leaves a
    /// call out does not end it; two consecutive ones do, as does a 404).
    pub(super) fn still_live(&mut self, listed: HashSet<CallUuid>) -> HashSet<CallUuid> {
        let mut live = listed;
        let mut missing = HashMap::new();
        for uuid in self.calls.keys() {
            if live.contains(uuid) {
                continue;
            }
            let times = self.missing.get(uuid).copied().unwrap_or(0) + 1;
            if times < MISSING_POLLS_TO_END {
                missing.insert(uuid.clone(), times);
            }
        }
        if !missing.is_empty() {
            tracing::debug!(account = %self.account, calls = missing.len(),
                "tracked calls missing from one list answer: kept until a second list or a 404 confirms they ended");
        }
        live.extend(missing.keys().cloned());
        self.missing = missing;
        live
    }

    /// Queues one detail read, once per call, and starts a discovery batch when none is open.
    pub(super) fn enqueue_detail(&mut self, uuid: CallUuid, fetch: Fetch) {
        if self.detail_queued.insert(uuid.clone()) {
            if matches!(fetch, Fetch::Discover { .. }) {
                if self.discovering == 0 {
                    self.batch_started = Some(self.now());
                }
                self.discovering += 1;
            }
            self.detail_queue.push_back((uuid, fetch));
        }
    }

    /// When the held overdue calls of the current discovery batch are let
    /// go at the latest: one poll interval after the batch began, so a slow
    /// start-up (a large account under a tight rate budget) still enforces.
    pub(super) fn batch_release_at(&self) -> Option<DateTime<Utc>> {
        if self.batch_due.is_empty() {
            return None;
        }
        let interval = TimeDelta::from_std(self.settings.poll_interval).unwrap_or_default();
        Some(self.batch_started.unwrap_or_else(|| self.now()) + interval)
    }

    /// Lets the overdue calls of a finished batch through together, so the breaker sees them at
    /// once.
    pub(super) fn release_batch(&mut self) {
        let now = self.now();
        for uuid in std::mem::take(&mut self.batch_due) {
            self.enforce_timers.schedule(uuid, now);
        }
    }

    /// Starts queued detail reads up to the budget-derived concurrency.
    pub(super) fn pump_details(&mut self) {
        while self.details_in_flight < self.settings.detail_concurrency() {
            let Some((uuid, fetch)) = self.detail_queue.pop_front() else {
                break;
            };
            self.details_in_flight += 1;
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
        self.details_in_flight = self.details_in_flight.saturating_sub(1);
        self.detail_queued.remove(&uuid);
        self.pump_details();
        self.read_detail(uuid, fetch, result);
        if matches!(fetch, Fetch::Discover { .. }) {
            self.discovering = self.discovering.saturating_sub(1);
            if self.discovering == 0 {
                self.batch_started = None;
                self.release_batch();
            }
        }
        if self.detail_queue.is_empty() && self.details_in_flight == 0 {
            // The poll's reads are complete: judge the groups as a whole.
            self.check_caps();
        }
    }

    /// Turns one detail answer into a tracked call (or a backoff), then evaluates it.
    pub(super) fn read_detail(
        &mut self,
        uuid: CallUuid,
        fetch: Fetch,
        result: Result<Fetched<Call>, ApiError>,
    ) {
        let fetched = match result {
            Ok(fetched) => {
                self.detail_backoff.remove(&uuid);
                fetched
            }
            Err(ApiError::NotFound) => {
                // 404 on a queued read: the call may have been answered and
                // be live now; read it as a live call before forgetting it.
                let was_queued = match fetch {
                    Fetch::Discover { queued, .. } => queued,
                    Fetch::Refresh => self.calls.get(&uuid).is_some_and(|t| t.queued),
                };
                if was_queued && self.live.contains(&uuid) {
                    if let Some(tracked) = self.calls.get_mut(&uuid) {
                        tracked.queued = false;
                    }
                    let fetch = match fetch {
                        Fetch::Discover { new_since, .. } => Fetch::Discover {
                            new_since,
                            queued: false,
                        },
                        Fetch::Refresh => Fetch::Refresh,
                    };
                    self.enqueue_detail(uuid, fetch);
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
                let backoff = self.detail_backoff.entry(uuid.clone()).or_insert((0, now));
                backoff.0 += 1;
                let (failures, _) = *backoff;
                let pause = backoff::backoff_ceiling(failures, &self.settings.retry);
                backoff.1 = now + TimeDelta::from_std(pause).unwrap_or_default();
                if failures == 1 {
                    tracing::warn!(account = %self.account, call = %uuid, %error,
                        "reading call details failed: malformed answer; reading this call again after a growing pause");
                } else {
                    tracing::debug!(account = %self.account, call = %uuid, failures, %error,
                        "reading call details failed again: malformed answer");
                }
                if let Some(report) = &mut self.once {
                    report.errors.push(format!("reading {uuid}: {error}"));
                }
                return;
            }
            Err(error) => {
                tracing::warn!(account = %self.account, call = %uuid, %error, "reading call details failed");
                if matches!(error, ApiError::Unauthorized | ApiError::Forbidden) {
                    self.mark_unhealthy(error.to_string());
                }
                if let Some(report) = &mut self.once {
                    report.errors.push(format!("reading {uuid}: {error}"));
                }
                return;
            }
        };
        if !self.live.contains(&uuid) || self.busy.contains(&uuid) {
            return;
        }
        self.observe_skew(&fetched);
        let seen_at = fetched.received_at;
        match fetch {
            Fetch::Discover { new_since, queued } => {
                let mut tracked = Tracked::new(fetched.value, seen_at, new_since, queued);
                if let Some(remembered) = self.remembered.get(uuid.as_str()) {
                    tracked.restore(remembered);
                }
                self.check_mismatch(&mut tracked, seen_at);
                self.index_parent(&uuid, None, tracked.call.parent_call_uuid.clone());
                self.calls.insert(uuid.clone(), tracked);
                self.memory_dirty = true;
            }
            Fetch::Refresh => {
                let legs = self.leg_count(&uuid);
                if !self.refresh_tracked(&uuid, fetched.value, seen_at, legs) {
                    return;
                }
            }
        }
        self.evaluate(&uuid);
    }

    /// Writes the remembered call times when they changed since the last
    /// poll, off the engine's task (at 100,000 calls this is megabytes).
    pub(super) fn save_memory(&mut self) {
        if let Some(write) = self.memory_snapshot() {
            tokio::task::spawn_blocking(write);
        }
    }

    /// The pending write of the remembered call times, if they changed.
    /// Calls no longer live are dropped; one writer at a time, and never an
    /// older snapshot over a newer one.
    pub(super) fn memory_snapshot(&mut self) -> Option<impl FnOnce() + Send + 'static> {
        let dir = self.shared.state_dir.clone()?;
        if !self.memory_dirty && self.remembered.len() == self.calls.len() {
            return None;
        }
        self.memory_dirty = false;
        // Calls still waiting for their details keep what an earlier run knew.
        let live = &self.live;
        self.remembered
            .retain(|uuid, _| CallUuid::parse(uuid).is_ok_and(|uuid| live.contains(&uuid)));
        for (uuid, tracked) in &self.calls {
            self.remembered
                .insert(uuid.to_string(), tracked.remembered());
        }
        let path = memory::path(&dir, &self.account);
        let snapshot = self.remembered.clone();
        self.memory_generation += 1;
        let generation = self.memory_generation;
        let written = Arc::clone(&self.memory_writes);
        Some(move || {
            let Ok(mut last) = written.lock() else {
                return;
            };
            if *last >= generation {
                return;
            }
            match memory::save(&path, &snapshot) {
                Ok(()) => *last = generation,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot save call memory")
                }
            }
        })
    }

    /// Checks a newly tracked call's timestamps against the clocks. A start
    /// in the future switches the whole account to first-sight timing; a
    /// call that only looks too old for a new call (or whose duration
    /// disagrees) is timed from first sight on its own, and the account
    /// follows only when enough such calls are live at once.
    pub(super) fn check_mismatch(&mut self, tracked: &mut Tracked, now: DateTime<Utc>) {
        if self.mismatch.is_some() {
            return;
        }
        let skew = self.skew_now().unwrap_or(NO_SKEW);
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
            let outliers = 1 + self
                .calls
                .values()
                .filter(|other| other.first_sight_only)
                .count();
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
        self.mismatch = Some(mismatch);
        // Every deadline computed so far trusted the timestamps.
        let uuids: Vec<CallUuid> = self.calls.keys().cloned().collect();
        for uuid in uuids {
            self.evaluate(&uuid);
        }
    }

    /// How many B-legs a parent has now, for rules and scopes that count legs.
    pub(super) fn leg_count(&self, parent: &CallUuid) -> usize {
        self.children.get(parent).map_or(0, |legs| legs.len())
    }

    /// Moves `uuid` in the parent index from `old` to `new` parent.
    pub(super) fn index_parent(
        &mut self,
        uuid: &CallUuid,
        old: Option<CallUuid>,
        new: Option<CallUuid>,
    ) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            if let Some(legs) = self.children.get_mut(&old) {
                legs.remove(uuid);
                if legs.is_empty() {
                    self.children.remove(&old);
                }
            }
        }
        if let Some(new) = new {
            self.children.entry(new).or_default().insert(uuid.clone());
        }
    }

    /// Takes fresh details of a tracked call; false if it is not tracked.
    pub(super) fn refresh_tracked(
        &mut self,
        uuid: &CallUuid,
        call: Call,
        seen_at: DateTime<Utc>,
        legs: usize,
    ) -> bool {
        let Some(tracked) = self.calls.get_mut(uuid) else {
            return false;
        };
        let old_parent = tracked.call.parent_call_uuid.clone();
        let new_parent = call.parent_call_uuid.clone();
        self.memory_dirty |= tracked.refresh(call, seen_at, legs);
        self.index_parent(uuid, old_parent, new_parent);
        true
    }

    /// Updates idle tracking from the current legs, only when an idle rule needs it.
    pub(super) fn observe_legs(&mut self) {
        if !self.policy.has_idle_rules() {
            return;
        }
        let now = self.now();
        for (uuid, tracked) in &mut self.calls {
            let legs = self.children.get(uuid).map_or(0, |legs| legs.len());
            tracked.observe_legs(legs, now);
        }
    }

    /// Drops every trace of an ended call, so no timer or index outlives it.
    pub(super) fn forget(&mut self, uuid: &CallUuid) {
        if let Some(tracked) = self.calls.remove(uuid) {
            self.index_parent(uuid, tracked.call.parent_call_uuid, None);
        }
        self.winners.remove(uuid);
        self.caps.forget(uuid);
        self.manual_jobs.remove(uuid);
        self.enforce_timers.cancel(uuid);
        self.bypass_timers.cancel(uuid);
        self.warn_timers.cancel(uuid);
        self.held.remove(uuid);
        self.overridden.remove(uuid);
        self.warned.remove(uuid);
        for index in dry_run_rules(&self.policy) {
            let key = (uuid.clone(), index);
            self.dry_done.remove(&key);
            self.dry_timers.cancel(&key);
        }
        if self.resumed.remove(uuid) {
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
