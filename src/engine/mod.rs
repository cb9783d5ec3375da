//! The enforcement engine for one account.
//!
//! One task owns all state and reacts to events: poll ticks, list and detail
//! answers, timers and operator commands. Requests run in spawned tasks that
//! report back, so a slow API never delays a deadline. The flow:
//!
//! list → new UUIDs → details → [`Tracked`] → policy evaluation → deadline
//! timers → (timer fires) re-read → re-evaluate → [`plan::plan_hangup`] →
//! audit intent → DELETE with retries → audit outcome.

pub mod actions;
pub mod backoff;
pub mod breaker;
pub mod plan;
pub mod skew;
pub mod status;
pub mod timers;
pub mod tracker;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot, watch};

use crate::audit::{self, AuditLog, Event as AuditEvent, Outcome, Record};
use crate::call::{Call, CallUuid};
use crate::clock::SharedClock;
use crate::config::{Config, EnforceSettings, RetrySettings, SafetySettings};
use crate::metrics::{AccountLabel, HangupLabels, Metrics, PollLabels};
use crate::policy::{self, HangupScope, Limit, Policy, RuleOutcome};
use crate::vobiz::{Error as ApiError, Fetched, SpeakLegs, VobizApi};

use actions::{HangupResult, Retrier};
use backoff::Jitter;
use plan::Plan;
use skew::{Mismatch, SkewEstimate, NO_SKEW};
pub use status::AccountStatus;
use timers::TimerQueue;
pub use tracker::Tracked;

/// A warning is still spoken late only if at least this much time remains.
const MIN_LATE_WARNING: TimeDelta = TimeDelta::seconds(5);

/// A change of the clock-skew lower bound that re-times every tracked call.
const SKEW_REEVALUATE: TimeDelta = TimeDelta::milliseconds(20);

/// How many upcoming deadlines `/status` lists.
const STATUS_DEADLINES: usize = 20;

/// What the engine needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the live list is fetched.
    pub poll_interval: Duration,
    /// `[enforce]`.
    pub enforce: EnforceSettings,
    /// `[retry]`.
    pub retry: RetrySettings,
    /// `[safety]`.
    pub safety: SafetySettings,
    /// Detail fetches in flight at once.
    pub max_concurrent_requests: usize,
    /// Seed of the jitter source (tests); `None` seeds from the OS.
    pub jitter_seed: Option<u64>,
    /// How long a stop waits for in-flight hangups.
    pub stop_grace: Duration,
}

impl Settings {
    /// The engine's settings from a loaded config.
    pub fn from_config(config: &Config) -> Self {
        Self {
            poll_interval: config.poll_interval,
            enforce: config.enforce,
            retry: config.retry,
            safety: config.safety.clone(),
            max_concurrent_requests: config.api.max_concurrent_requests.max(1),
            jitter_seed: None,
            stop_grace: config
                .api
                .timeout
                .saturating_mul(2)
                .max(Duration::from_secs(5)),
        }
    }
}

/// What the engine shares with the rest of the daemon.
#[derive(Clone)]
pub struct Shared {
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Wall-clock time.
    pub clock: SharedClock,
}

/// Operator requests to a running engine.
#[derive(Debug)]
pub enum Command {
    /// Spare a call until the instant (`None` = for good); replies whether
    /// the call is tracked.
    Pardon {
        /// The call.
        uuid: CallUuid,
        /// Until when.
        until: Option<DateTime<Utc>>,
        /// Answer: whether the engine tracks the call.
        reply: oneshot::Sender<bool>,
    },
    /// Let the batch held by the breaker through once (SIGUSR1).
    ReleaseBreaker,
    /// New rules and settings after a successful reload.
    Reload {
        /// The account's new rules.
        policy: Arc<Policy>,
        /// The new settings.
        settings: Box<Settings>,
    },
}

/// Why the engine fires a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Purpose {
    /// The winning rule's hangup.
    Enforce,
    /// A rule-level dry-run rule's own deadline.
    DryRunRule(usize),
}

/// Why details are being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    Discover {
        new_since: Option<DateTime<Utc>>,
        queued: bool,
    },
    Refresh,
}

enum Event {
    Listed {
        sent_at: DateTime<Utc>,
        result: Result<Listing, ApiError>,
    },
    Detail {
        uuid: CallUuid,
        fetch: Fetch,
        result: Result<Fetched<Call>, ApiError>,
    },
    Reread {
        uuid: CallUuid,
        purpose: Purpose,
        result: Result<Fetched<Call>, ApiError>,
    },
    HungUp {
        job: Job,
        results: Vec<(CallUuid, HangupResult)>,
    },
    Spoke {
        job: Job,
        result: Result<(), ApiError>,
    },
}

struct Listing {
    live: Fetched<Vec<CallUuid>>,
    queued: Vec<CallUuid>,
}

/// One decided action, carried to its outcome for the audit log.
#[derive(Debug, Clone)]
struct Job {
    uuid: CallUuid,
    rule: String,
    rules: Vec<String>,
    action: String,
    deadline: DateTime<Utc>,
    dry_run: bool,
    reason: String,
    call: serde_json::Value,
}

/// What `once` reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OnceReport {
    /// Account name.
    pub account: String,
    /// Calls listed.
    pub live_calls: usize,
    /// Calls whose details were read.
    pub evaluated: usize,
    /// Calls past a deadline, by outcome.
    pub outcomes: Vec<OnceOutcome>,
    /// Idle rules that need history and were not evaluated.
    pub not_evaluated: Vec<String>,
    /// Errors that made the cycle partial.
    pub errors: Vec<String>,
    /// Whether the breaker held the hangups.
    pub breaker_held: bool,
}

/// One call's outcome in `once`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OnceOutcome {
    /// The call.
    pub call_uuid: String,
    /// The winning rule.
    pub rule: String,
    /// The outcome word.
    pub outcome: String,
    /// Why.
    pub reason: String,
}

/// The engine of one account.
pub struct Engine<A: VobizApi> {
    account: String,
    api: Arc<A>,
    policy: Arc<Policy>,
    settings: Settings,
    shared: Shared,
    retrier: Arc<Retrier>,

    calls: HashMap<CallUuid, Tracked>,
    /// Whether a tracked call may name a parent (B-legs exist): recomputed
    /// at each poll, set as soon as such a call is read. Without B-legs the
    /// per-hangup leg lookups skip their scan of every tracked call.
    legs_seen: bool,
    winners: HashMap<CallUuid, (usize, DateTime<Utc>)>,
    enforce_timers: TimerQueue<CallUuid>,
    bypass_timers: TimerQueue<CallUuid>,
    warn_timers: TimerQueue<CallUuid>,
    dry_timers: TimerQueue<(CallUuid, usize)>,

    detail_queue: VecDeque<(CallUuid, Fetch)>,
    detail_queued: HashSet<CallUuid>,
    details_in_flight: usize,
    list_in_flight: bool,
    live: HashSet<CallUuid>,
    last_poll: Option<DateTime<Utc>>,
    last_poll_error: Option<String>,

    busy: HashSet<CallUuid>,
    finished: HashSet<CallUuid>,
    hung_up: HashSet<CallUuid>,
    resumed: HashSet<CallUuid>,
    warned: HashSet<CallUuid>,
    dry_done: HashSet<(CallUuid, usize)>,
    pardons: HashMap<CallUuid, Option<DateTime<Utc>>>,

    breaker_open: bool,
    held: HashSet<CallUuid>,
    overridden: HashSet<CallUuid>,
    recent_fires: VecDeque<DateTime<Utc>>,

    skew: Option<SkewEstimate>,
    mismatch: Option<Mismatch>,
    unhealthy: Option<String>,

    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    status_tx: watch::Sender<AccountStatus>,
    once: Option<OnceReport>,
}

impl<A: VobizApi> Engine<A> {
    /// An engine for `account`, resuming what the audit log `replay` says.
    pub fn new(
        account: String,
        api: Arc<A>,
        policy: Arc<Policy>,
        settings: Settings,
        shared: Shared,
        replay: &audit::Replay,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (status_tx, _) = watch::channel(AccountStatus {
            account: account.clone(),
            healthy: true,
            ..AccountStatus::default()
        });
        let mine = |set: &HashSet<(String, String)>| -> HashSet<CallUuid> {
            set.iter()
                .filter(|(a, _)| *a == account)
                .filter_map(|(_, uuid)| CallUuid::parse(uuid).ok())
                .collect()
        };
        let retrier = Arc::new(Retrier {
            settings: settings.retry,
            jitter: Mutex::new(Jitter::new(settings.jitter_seed)),
        });
        let engine = Self {
            hung_up: mine(&replay.hung_up),
            resumed: mine(&replay.pending),
            account,
            api,
            policy,
            settings,
            shared,
            retrier,
            calls: HashMap::new(),
            legs_seen: false,
            winners: HashMap::new(),
            enforce_timers: TimerQueue::default(),
            bypass_timers: TimerQueue::default(),
            warn_timers: TimerQueue::default(),
            dry_timers: TimerQueue::default(),
            detail_queue: VecDeque::new(),
            detail_queued: HashSet::new(),
            details_in_flight: 0,
            list_in_flight: false,
            live: HashSet::new(),
            last_poll: None,
            last_poll_error: None,
            busy: HashSet::new(),
            finished: HashSet::new(),
            warned: HashSet::new(),
            dry_done: HashSet::new(),
            pardons: HashMap::new(),
            breaker_open: false,
            held: HashSet::new(),
            overridden: HashSet::new(),
            recent_fires: VecDeque::new(),
            skew: None,
            mismatch: None,
            unhealthy: None,
            events_tx,
            events_rx,
            status_tx,
            once: None,
        };
        engine.publish_rules();
        engine
    }

    /// A receiver of the engine's published state.
    pub fn status(&self) -> watch::Receiver<AccountStatus> {
        self.status_tx.subscribe()
    }

    /// Runs until `shutdown` resolves: polls every interval, fires deadlines,
    /// obeys `commands`. On shutdown, stops polling and waits (bounded) for
    /// in-flight hangups to finish and be audited.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut poll = tokio::time::interval(self.settings.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sleep = self.sleep_until_next_timer();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(event) = self.events_rx.recv() => self.handle(event),
                () = sleep => self.fire_due(),
                _ = poll.tick() => {
                    self.start_poll();
                    // Also the daemon's sign of life for the systemd watchdog.
                    self.publish();
                }
                Some(command) = commands.recv() => {
                    if let Some(interval) = self.command(command) {
                        poll = tokio::time::interval(interval);
                        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    self.publish();
                }
            }
        }
        self.drain().await;
    }

    /// One cycle for `callwarden once`: list, read every call, hang up those
    /// already past their deadline (breaker, dry-run and safety apply),
    /// audit warnings as skipped, and report.
    pub async fn run_once(mut self) -> OnceReport {
        self.once = Some(OnceReport {
            account: self.account.clone(),
            not_evaluated: self
                .policy
                .rules
                .iter()
                .filter(|r| matches!(r.limit, Limit::IdleTimeout(_)))
                .map(|r| r.name.clone())
                .collect(),
            ..OnceReport::default()
        });
        self.start_poll();
        // Discovery: until the list and every detail have come back.
        while self.list_in_flight || self.details_in_flight > 0 || !self.detail_queue.is_empty() {
            match self.events_rx.recv().await {
                Some(event) => self.handle(event),
                None => break,
            }
        }
        let now = self.now();
        let due: Vec<CallUuid> = self
            .enforce_timers
            .pop_due(now)
            .into_iter()
            .chain(self.bypass_timers.pop_due(now))
            .map(|(uuid, _)| uuid)
            .collect();
        let subject = due
            .iter()
            .filter(|uuid| !self.bypasses_breaker(uuid))
            .count();
        if breaker::exceeds_limits(subject, self.live.len(), &self.settings.safety) {
            self.trip_breaker(subject);
        }
        for (key, _) in self.dry_timers.pop_due(now) {
            let (uuid, rule) = key;
            if let Some(call) = self.calls.get(&uuid).map(|t| t.call.clone()) {
                self.act(&uuid, Purpose::DryRunRule(rule), call, now);
            }
        }
        for uuid in due {
            if let Some(job) = self.warn_job(&uuid).filter(|_| self.has_warning(&uuid)) {
                self.audit_outcome(
                    &job,
                    AuditEvent::Warn,
                    Outcome::Skipped,
                    0,
                    "once does not wait to warn",
                );
            }
            if self.held_by_breaker(&uuid) {
                continue;
            }
            if let Some(call) = self.calls.get(&uuid).map(|t| t.call.clone()) {
                self.act(&uuid, Purpose::Enforce, call, now);
            }
        }
        while !self.busy.is_empty() {
            match self.events_rx.recv().await {
                Some(event) => self.handle(event),
                None => break,
            }
        }
        let mut report = self.once.take().unwrap_or_default();
        report.live_calls = self.live.len();
        report.evaluated = self.calls.len();
        report.breaker_held = !self.held.is_empty();
        report
    }

    fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    fn sleep_until_next_timer(&self) -> tokio::time::Sleep {
        let next = [
            self.enforce_timers.next_at(),
            self.bypass_timers.next_at(),
            self.warn_timers.next_at(),
            self.dry_timers.next_at(),
        ]
        .into_iter()
        .flatten()
        .min();
        let wait = match next {
            Some(at) => (at - self.now()).to_std().unwrap_or(Duration::ZERO),
            // Nothing scheduled: wake rarely; events and ticks wake us anyway.
            None => Duration::from_secs(3600),
        };
        tokio::time::sleep(wait)
    }

    // ---- discovery ------------------------------------------------------

    fn start_poll(&mut self) {
        if self.list_in_flight {
            return;
        }
        self.list_in_flight = true;
        let api = Arc::clone(&self.api);
        let metrics = Arc::clone(&self.shared.metrics);
        let with_queued = self.policy.needs_queued_calls();
        let tx = self.events_tx.clone();
        let sent_at = self.now();
        tokio::spawn(async move {
            let live = api.list_live().await;
            metrics.api_request("list", &live);
            let result = match live {
                Err(e) => Err(e),
                Ok(live) if with_queued => {
                    let queued = api.list_queued().await;
                    metrics.api_request("list", &queued);
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

    fn on_listed(&mut self, sent_at: DateTime<Utc>, result: Result<Listing, ApiError>) {
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
        self.last_poll_error = None;
        self.observe_skew(&listing.live);
        let previous_poll = self.last_poll;
        self.last_poll = Some(sent_at);

        let listed_live: HashSet<CallUuid> = listing.live.value.into_iter().collect();
        let mut live = listed_live.clone();
        live.extend(listing.queued);

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
        self.legs_seen = self
            .calls
            .values()
            .any(|t| t.call.parent_call_uuid.is_some());
        self.hung_up.retain(|uuid| live.contains(uuid));
        self.finished.retain(|uuid| live.contains(uuid));
        self.pardons.retain(|uuid, _| live.contains(uuid));

        for uuid in &live {
            if self.calls.contains_key(uuid)
                || self.detail_queued.contains(uuid)
                || self.hung_up.contains(uuid)
            {
                continue;
            }
            // A call in both lists is ringing: read it as a live call.
            let fetch = Fetch::Discover {
                new_since: previous_poll,
                queued: !listed_live.contains(uuid),
            };
            self.enqueue_detail(uuid.clone(), fetch);
        }
        self.live = live;

        let idle_watch = self.idle_watched();
        let refresh: Vec<CallUuid> = self
            .calls
            .iter()
            .filter(|(uuid, t)| t.needs_refresh(idle_watch.contains(*uuid)))
            .filter(|(uuid, _)| !self.busy.contains(*uuid))
            .map(|(uuid, _)| uuid.clone())
            .collect();
        for uuid in refresh {
            self.enqueue_detail(uuid, Fetch::Refresh);
        }
        self.observe_legs();
        self.check_breaker();
        self.publish();
        self.shared
            .metrics
            .live_calls
            .get_or_create(&self.label())
            .set(self.live.len() as i64);
        self.pump_details();
    }

    fn observe_skew<T>(&mut self, fetched: &Fetched<T>) {
        if let Some(date) = fetched.server_date {
            let sample = SkewEstimate::from_answer(date, fetched.sent_at, fetched.received_at);
            let previous = self.skew;
            let current = match previous {
                Some(current) => current.update(sample),
                None => sample,
            };
            self.skew = Some(current);
            // Deadlines already scheduled used the old lower bound, up to a
            // second too late (the `Date` header has whole seconds). When the
            // bound moves noticeably, move them: still never early, since the
            // new bound is as safe as the old. A lower bound only rises to a
            // new maximum, which happens O(log answers) times, so this
            // O(calls) pass is rare.
            if previous.is_some_and(|old| (current.low - old.low).abs() >= SKEW_REEVALUATE) {
                let uuids: Vec<CallUuid> = self.calls.keys().cloned().collect();
                for uuid in uuids {
                    self.evaluate(&uuid);
                }
            }
        }
    }

    fn enqueue_detail(&mut self, uuid: CallUuid, fetch: Fetch) {
        if self.detail_queued.insert(uuid.clone()) {
            self.detail_queue.push_back((uuid, fetch));
        }
    }

    fn pump_details(&mut self) {
        while self.details_in_flight < self.settings.max_concurrent_requests {
            let Some((uuid, fetch)) = self.detail_queue.pop_front() else {
                break;
            };
            self.details_in_flight += 1;
            let api = Arc::clone(&self.api);
            let metrics = Arc::clone(&self.shared.metrics);
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
                metrics.api_request("detail", &result);
                let _ = tx.send(Event::Detail {
                    uuid,
                    fetch,
                    result,
                });
            });
        }
    }

    fn on_detail(&mut self, uuid: CallUuid, fetch: Fetch, result: Result<Fetched<Call>, ApiError>) {
        self.details_in_flight = self.details_in_flight.saturating_sub(1);
        self.detail_queued.remove(&uuid);
        self.pump_details();
        let fetched = match result {
            Ok(fetched) => fetched,
            Err(ApiError::NotFound) => {
                self.forget(&uuid);
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
        self.legs_seen |= fetched.value.parent_call_uuid.is_some();
        let seen_at = fetched.received_at;
        match fetch {
            Fetch::Discover { new_since, queued } => {
                let tracked = Tracked::new(fetched.value, seen_at, new_since, queued);
                self.check_mismatch(&tracked, seen_at);
                self.calls.insert(uuid.clone(), tracked);
            }
            Fetch::Refresh => {
                let legs = self.leg_count(&uuid);
                match self.calls.get_mut(&uuid) {
                    Some(tracked) => {
                        tracked.refresh(fetched.value, seen_at, legs);
                    }
                    None => return,
                }
            }
        }
        self.evaluate(&uuid);
    }

    fn check_mismatch(&mut self, tracked: &Tracked, now: DateTime<Utc>) {
        if self.mismatch.is_some() {
            return;
        }
        let skew = self.skew.unwrap_or(NO_SKEW);
        let timeline = tracked.timeline(skew, false);
        let answered = tracked.call.answered_at.map(|at| skew.to_local(at));
        if let Some(mismatch) = skew::check_mismatch(
            timeline.started,
            answered,
            tracked.call.duration_s,
            now,
            tracked.new_since,
        ) {
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
    }

    fn leg_count(&self, parent: &CallUuid) -> usize {
        if !self.legs_seen {
            return 0;
        }
        self.calls
            .values()
            .filter(|t| t.call.parent_call_uuid.as_ref() == Some(parent))
            .count()
    }

    fn observe_legs(&mut self) {
        if !self.policy.has_idle_rules() {
            return;
        }
        let mut legs: HashMap<CallUuid, usize> = HashMap::new();
        for tracked in self.calls.values() {
            if let Some(parent) = &tracked.call.parent_call_uuid {
                *legs.entry(parent.clone()).or_default() += 1;
            }
        }
        let now = self.now();
        for (uuid, tracked) in &mut self.calls {
            tracked.observe_legs(legs.get(uuid).copied().unwrap_or(0), now);
        }
    }

    /// Calls an idle rule currently matches: their state is re-read each poll.
    fn idle_watched(&self) -> HashSet<CallUuid> {
        if !self.policy.has_idle_rules() {
            return HashSet::new();
        }
        let now = self.now();
        self.calls
            .iter()
            .filter(|(_, tracked)| {
                let evaluation = self.evaluate_tracked(tracked, now);
                evaluation.verdicts.iter().any(|v| {
                    matches!(self.policy.rules[v.rule].limit, Limit::IdleTimeout(_))
                        && matches!(
                            v.outcome,
                            RuleOutcome::Due { .. } | RuleOutcome::NotDue { .. }
                        )
                })
            })
            .map(|(uuid, _)| uuid.clone())
            .collect()
    }

    fn forget(&mut self, uuid: &CallUuid) {
        self.calls.remove(uuid);
        self.winners.remove(uuid);
        self.enforce_timers.cancel(uuid);
        self.bypass_timers.cancel(uuid);
        self.warn_timers.cancel(uuid);
        self.held.remove(uuid);
        self.overridden.remove(uuid);
        self.warned.remove(uuid);
        self.dry_done.retain(|(u, _)| u != uuid);
        for index in 0..self.policy.rules.len() {
            self.dry_timers.cancel(&(uuid.clone(), index));
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

    // ---- evaluation and timers ------------------------------------------

    fn evaluate_tracked(&self, tracked: &Tracked, now: DateTime<Utc>) -> policy::Evaluation {
        let timeline = tracked.timeline(self.skew.unwrap_or(NO_SKEW), self.mismatch.is_some());
        policy::evaluate(
            &self.policy,
            &tracked.call,
            &self.account,
            &timeline,
            now,
            self.settings.enforce.grace,
        )
    }

    /// Re-evaluates one call and (re)schedules its timers.
    fn evaluate(&mut self, uuid: &CallUuid) {
        let now = self.now();
        let Some(tracked) = self.calls.get(uuid) else {
            return;
        };
        let evaluation = self.evaluate_tracked(tracked, now);
        let winner = evaluation.effective(&self.policy, self.settings.enforce.dry_run);
        let dry: Vec<(usize, DateTime<Utc>)> = evaluation.dry_run_due(&self.policy).collect();

        self.enforce_timers.cancel(uuid);
        self.bypass_timers.cancel(uuid);
        self.warn_timers.cancel(uuid);
        for index in 0..self.policy.rules.len() {
            if !dry.iter().any(|(i, _)| *i == index) {
                self.dry_timers.cancel(&(uuid.clone(), index));
            }
        }
        for (index, deadline) in dry {
            if !self.dry_done.contains(&(uuid.clone(), index)) {
                self.dry_timers.schedule((uuid.clone(), index), deadline);
            }
        }
        let Some((index, deadline)) = winner else {
            self.winners.remove(uuid);
            self.held.remove(uuid);
            return;
        };
        self.winners.insert(uuid.clone(), (index, deadline));
        if self.finished.contains(uuid) || self.hung_up.contains(uuid) {
            return;
        }
        let deadline = match self.pardons.get(uuid) {
            Some(None) => return,
            Some(Some(until)) if *until > deadline => *until,
            _ => deadline,
        };
        let rule = &self.policy.rules[index];
        if rule.action.bypass_breaker {
            self.bypass_timers.schedule(uuid.clone(), deadline);
        } else {
            self.enforce_timers.schedule(uuid.clone(), deadline);
        }
        if let Some(warning) = &rule.action.warn {
            if !self.warned.contains(uuid) && self.once.is_none() {
                let warn_at = deadline - TimeDelta::from_std(warning.before).unwrap_or_default();
                if warn_at >= now || deadline - now >= MIN_LATE_WARNING {
                    self.warn_timers.schedule(uuid.clone(), warn_at.max(now));
                } else if deadline > now {
                    self.warned.insert(uuid.clone());
                    if let Some(job) = self.warn_job(uuid) {
                        self.audit_outcome(
                            &job,
                            AuditEvent::Warn,
                            Outcome::Skipped,
                            0,
                            "less than 5 s left when first judged",
                        );
                    }
                }
            }
        }
    }

    fn fire_due(&mut self) {
        let now = self.now();
        for (uuid, _) in self.warn_timers.pop_due(now) {
            self.fire_warning(&uuid);
        }
        for ((uuid, index), _) in self.dry_timers.pop_due(now) {
            self.start_reread(uuid, Purpose::DryRunRule(index));
        }
        for (uuid, _) in self.bypass_timers.pop_due(now) {
            self.start_reread(uuid, Purpose::Enforce);
        }
        let due = self.enforce_timers.pop_due(now);
        if due.is_empty() {
            return;
        }
        self.recent_fires.extend(due.iter().map(|_| now));
        self.check_breaker();
        for (uuid, _) in due {
            if self.held_by_breaker(&uuid) {
                continue;
            }
            self.start_reread(uuid, Purpose::Enforce);
        }
    }

    fn start_reread(&mut self, uuid: CallUuid, purpose: Purpose) {
        if self.unhealthy.is_some() || self.busy.contains(&uuid) {
            return;
        }
        let Some(tracked) = self.calls.get(&uuid) else {
            return;
        };
        self.busy.insert(uuid.clone());
        let queued = tracked.queued;
        let api = Arc::clone(&self.api);
        let metrics = Arc::clone(&self.shared.metrics);
        let retrier = Arc::clone(&self.retrier);
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let (result, _) = actions::reread(&*api, &uuid, queued, &retrier, &metrics).await;
            let _ = tx.send(Event::Reread {
                uuid,
                purpose,
                result,
            });
        });
    }

    fn on_reread(
        &mut self,
        uuid: CallUuid,
        purpose: Purpose,
        result: Result<Fetched<Call>, ApiError>,
    ) {
        self.busy.remove(&uuid);
        let now = self.now();
        match result {
            Ok(fetched) => {
                self.observe_skew(&fetched);
                self.legs_seen |= fetched.value.parent_call_uuid.is_some();
                let legs = self.leg_count(&uuid);
                let seen_at = fetched.received_at;
                let Some(tracked) = self.calls.get_mut(&uuid) else {
                    return;
                };
                tracked.refresh(fetched.value, seen_at, legs);
                let call = tracked.call.clone();
                self.act(&uuid, purpose, call, now);
            }
            Err(ApiError::NotFound) => self.forget(&uuid),
            Err(error @ (ApiError::Unauthorized | ApiError::Forbidden)) => {
                self.mark_unhealthy(error.to_string());
            }
            Err(error) => {
                tracing::error!(account = %self.account, call = %uuid, %error,
                    "cannot re-read a due call; trying again later");
                let retry_at =
                    now + TimeDelta::from_std(self.settings.retry.max_backoff).unwrap_or_default();
                match purpose {
                    Purpose::Enforce => self.reschedule_enforce(&uuid, retry_at),
                    Purpose::DryRunRule(index) => self.dry_timers.schedule((uuid, index), retry_at),
                }
            }
        }
    }

    fn reschedule_enforce(&mut self, uuid: &CallUuid, at: DateTime<Utc>) {
        if self.bypasses_breaker(uuid) {
            self.bypass_timers.schedule(uuid.clone(), at);
        } else {
            self.enforce_timers.schedule(uuid.clone(), at);
        }
    }

    /// Re-evaluates `call` with fresh details and, if still due, acts.
    fn act(&mut self, uuid: &CallUuid, purpose: Purpose, call: Call, now: DateTime<Utc>) {
        let Some(tracked) = self.calls.get(uuid) else {
            return;
        };
        let evaluation = self.evaluate_tracked(tracked, now);
        let matched: Vec<String> = evaluation
            .matched()
            .map(|v| self.policy.rules[v.rule].name.clone())
            .collect();
        let (index, deadline) = match purpose {
            Purpose::Enforce => {
                match evaluation.effective(&self.policy, self.settings.enforce.dry_run) {
                    Some((index, deadline)) if deadline <= now => (index, deadline),
                    _ => {
                        // No longer due (answered later, state changed, window
                        // closed, rules reloaded): schedule afresh.
                        self.evaluate(uuid);
                        return;
                    }
                }
            }
            Purpose::DryRunRule(index) => {
                match evaluation.verdicts.get(index).map(|v| &v.outcome) {
                    Some(RuleOutcome::Due { deadline }) if *deadline <= now => (index, *deadline),
                    _ => {
                        self.evaluate(uuid);
                        return;
                    }
                }
            }
        };
        let rule = &self.policy.rules[index];
        let dry_run = match purpose {
            Purpose::Enforce => self.settings.enforce.dry_run || rule.action.dry_run,
            Purpose::DryRunRule(_) => true,
        };
        let job = Job {
            uuid: uuid.clone(),
            rule: rule.name.clone(),
            rules: matched,
            action: format!("hangup:{}", scope_word(rule.action.hangup)),
            deadline,
            dry_run,
            reason: format!(
                "rule {} due at {}",
                rule.name,
                deadline.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            call: call.raw.clone(),
        };
        if let Purpose::DryRunRule(index) = purpose {
            self.dry_done.insert((uuid.clone(), index));
        }
        let targets = match self.plan(&call, rule.action.hangup) {
            Plan::End(targets) => targets,
            Plan::Protected { leg, number } => {
                self.finish(uuid, purpose);
                tracing::warn!(account = %self.account, call = %uuid, rule = %job.rule, %leg,
                    "protected number on a leg: not hung up");
                self.audit_outcome(
                    &job,
                    AuditEvent::Outcome,
                    Outcome::Protected,
                    0,
                    &format!("leg {leg} has protected number {number}"),
                );
                return;
            }
            Plan::NoLegs => {
                self.finish(uuid, purpose);
                self.audit_outcome(
                    &job,
                    AuditEvent::Outcome,
                    Outcome::Skipped,
                    0,
                    "the call has no B-legs to end",
                );
                return;
            }
            Plan::UnknownLeg(leg) => {
                tracing::info!(account = %self.account, call = %uuid, %leg,
                    "a leg to end is not known yet; trying after the next poll");
                let retry_at =
                    now + TimeDelta::from_std(self.settings.poll_interval).unwrap_or_default();
                self.reschedule_enforce(uuid, retry_at);
                return;
            }
        };
        if let Some(until) = self.pardons.get(uuid) {
            if until.is_none_or(|until| until > now) {
                self.audit_outcome(
                    &job,
                    AuditEvent::Outcome,
                    Outcome::Pardoned,
                    0,
                    "pardoned by an operator",
                );
                return;
            }
        }
        let reason = job.reason.clone();
        if let Err(error) = self.audit(&job, AuditEvent::Intent, None, 0, &reason) {
            // Nothing is done that is not on disk first.
            tracing::error!(account = %self.account, call = %uuid, %error,
                "cannot write the audit log: not hanging up; trying again later");
            let retry_at =
                now + TimeDelta::from_std(self.settings.retry.max_backoff).unwrap_or_default();
            self.reschedule_enforce(uuid, retry_at);
            return;
        }
        if dry_run {
            if purpose == Purpose::Enforce {
                self.finish(uuid, purpose);
            }
            tracing::info!(account = %self.account, call = %uuid, rule = %job.rule,
                action = %job.action, outcome = "dry_run", dry_run = true, "would hang up");
            self.audit_outcome(&job, AuditEvent::Outcome, Outcome::DryRun, 0, &reason);
            return;
        }
        self.overridden.remove(uuid);
        self.busy.insert(uuid.clone());
        let api = Arc::clone(&self.api);
        let metrics = Arc::clone(&self.shared.metrics);
        let retrier = Arc::clone(&self.retrier);
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let mut results = Vec::with_capacity(targets.len());
            for target in targets {
                let result = actions::hang_up(&*api, &target, &retrier, &metrics).await;
                let stop = matches!(result, HangupResult::AuthFailed { .. });
                results.push((target, result));
                if stop {
                    break;
                }
            }
            let _ = tx.send(Event::HungUp { job, results });
        });
    }

    /// Which legs a hangup of `call` would end, with the safety checks.
    fn plan(&self, call: &Call, scope: HangupScope) -> Plan {
        // Only what a plan can look at: the call, its A-leg, and the B-legs
        // of either. Copying (or even scanning) every tracked call here made
        // each hangup O(tracked calls): at 100,000 calls that was most of
        // the daemon's CPU. B-legs need a scan, and only when any exist.
        let parent = call.parent_call_uuid.as_ref();
        let mut snapshot: HashMap<CallUuid, &Call> = HashMap::new();
        for uuid in std::iter::once(&call.uuid).chain(parent) {
            if let Some(tracked) = self.calls.get(uuid) {
                snapshot.insert(uuid.clone(), &tracked.call);
            }
        }
        if self.legs_seen {
            for (uuid, tracked) in &self.calls {
                let leg_of = tracked.call.parent_call_uuid.as_ref();
                if leg_of.is_some_and(|p| *p == call.uuid || Some(p) == parent) {
                    snapshot.insert(uuid.clone(), &tracked.call);
                }
            }
        }
        plan::plan_hangup(
            call,
            scope,
            &snapshot,
            &self.settings.safety.protected_numbers,
        )
    }

    fn finish(&mut self, uuid: &CallUuid, purpose: Purpose) {
        if purpose == Purpose::Enforce {
            self.finished.insert(uuid.clone());
            self.held.remove(uuid);
            self.warn_timers.cancel(uuid);
        }
    }

    fn on_hung_up(&mut self, job: Job, results: Vec<(CallUuid, HangupResult)>) {
        let uuid = job.uuid.clone();
        self.busy.remove(&uuid);
        self.resumed.remove(&uuid);
        let attempts = results
            .iter()
            .map(|(_, r)| match r {
                HangupResult::Done { attempts, .. }
                | HangupResult::Gone { attempts, .. }
                | HangupResult::Failed { attempts, .. }
                | HangupResult::AuthFailed { attempts, .. } => *attempts,
            })
            .sum();
        let mut outcome = Outcome::Ok;
        let mut reasons = Vec::new();
        for (target, result) in &results {
            match result {
                HangupResult::Done { at, .. } => {
                    self.hung_up.insert(target.clone());
                    let lag = (*at - job.deadline).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    self.shared.metrics.enforcement_lag.observe(lag.max(0.0));
                }
                HangupResult::Gone { reason, .. } => {
                    if outcome == Outcome::Ok {
                        outcome = Outcome::Gone;
                    }
                    reasons.push(format!("{target}: {reason}"));
                }
                HangupResult::Failed { reason, .. } | HangupResult::AuthFailed { reason, .. } => {
                    outcome = Outcome::Failed;
                    reasons.push(format!("{target}: {reason}"));
                }
            }
        }
        let reason = if reasons.is_empty() {
            job.reason.clone()
        } else {
            reasons.join("; ")
        };
        match outcome {
            Outcome::Ok | Outcome::Gone => {
                self.finish(&uuid, Purpose::Enforce);
                tracing::info!(account = %self.account, call = %uuid, rule = %job.rule,
                    action = %job.action, outcome = outcome.as_str(), attempts, dry_run = false,
                    "hung up");
            }
            _ => {
                tracing::error!(account = %self.account, call = %uuid, rule = %job.rule,
                    action = %job.action, outcome = "failed", attempts, %reason,
                    "hangup failed; will try again while the call stays over its limit");
                let retry_at = self.now()
                    + TimeDelta::from_std(self.settings.retry.max_backoff).unwrap_or_default();
                self.reschedule_enforce(&uuid, retry_at);
            }
        }
        self.audit_outcome(&job, AuditEvent::Outcome, outcome, attempts, &reason);
        if let Some((_, HangupResult::AuthFailed { reason, .. })) = results
            .iter()
            .find(|(_, r)| matches!(r, HangupResult::AuthFailed { .. }))
        {
            self.mark_unhealthy(reason.clone());
        }
    }

    // ---- warnings ---------------------------------------------------------

    fn warn_job(&self, uuid: &CallUuid) -> Option<Job> {
        let (index, deadline) = *self.winners.get(uuid)?;
        let rule = self.policy.rules.get(index)?;
        let tracked = self.calls.get(uuid)?;
        Some(Job {
            uuid: uuid.clone(),
            rule: rule.name.clone(),
            rules: vec![rule.name.clone()],
            action: "warn".to_owned(),
            deadline,
            dry_run: self.settings.enforce.dry_run || rule.action.dry_run,
            reason: String::new(),
            call: tracked.call.raw.clone(),
        })
    }

    fn has_warning(&self, uuid: &CallUuid) -> bool {
        self.winners
            .get(uuid)
            .is_some_and(|(index, _)| self.policy.rules[*index].action.warn.is_some())
    }

    fn fire_warning(&mut self, uuid: &CallUuid) {
        if self.unhealthy.is_some() || !self.warned.insert(uuid.clone()) {
            return;
        }
        let Some(job) = self.warn_job(uuid) else {
            return;
        };
        let Some((text, scope)) = self
            .winners
            .get(uuid)
            .map(|(index, _)| &self.policy.rules[*index].action)
            .and_then(|action| Some((action.warn.as_ref()?.text.clone(), action.hangup)))
        else {
            return;
        };
        let Some(call) = self.calls.get(uuid).map(|t| t.call.clone()) else {
            return;
        };
        if let Plan::Protected { leg, number } = self.plan(&call, scope) {
            // Never tell a caller their call will end when it will not.
            let reason = format!("leg {leg} has protected number {number}: no hangup, no warning");
            self.audit_outcome(&job, AuditEvent::Warn, Outcome::Skipped, 0, &reason);
            return;
        }
        if job.dry_run {
            self.audit_outcome(&job, AuditEvent::Warn, Outcome::DryRun, 0, &text);
            return;
        }
        let api = Arc::clone(&self.api);
        let metrics = Arc::clone(&self.shared.metrics);
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let result = api.speak(&job.uuid, &text, SpeakLegs::Both).await;
            metrics.api_request("speak", &result);
            let _ = tx.send(Event::Spoke {
                job,
                result: result.map(|_| ()),
            });
        });
    }

    fn on_spoke(&mut self, job: Job, result: Result<(), ApiError>) {
        match result {
            Ok(()) => self.audit_outcome(&job, AuditEvent::Warn, Outcome::Ok, 1, "warning spoken"),
            Err(error) => {
                // A failed warning never delays the hangup.
                tracing::warn!(account = %self.account, call = %job.uuid, %error, "warning failed");
                self.audit_outcome(
                    &job,
                    AuditEvent::Warn,
                    Outcome::Failed,
                    1,
                    &error.to_string(),
                );
            }
        }
    }

    // ---- safety -----------------------------------------------------------

    fn bypasses_breaker(&self, uuid: &CallUuid) -> bool {
        self.winners
            .get(uuid)
            .and_then(|(index, _)| self.policy.rules.get(*index))
            .is_some_and(|rule| rule.action.bypass_breaker)
    }

    /// Hangups due within one poll interval: fired in the last interval,
    /// held, and scheduled for the next interval.
    fn due_within_interval(&mut self) -> usize {
        let now = self.now();
        let window = TimeDelta::from_std(self.settings.poll_interval).unwrap_or_default();
        while self
            .recent_fires
            .front()
            .is_some_and(|at| *at < now - window)
        {
            self.recent_fires.pop_front();
        }
        let cap = self.settings.safety.max_hangups_per_cycle.saturating_add(1);
        let cap = cap.max(self.live.len());
        self.recent_fires.len()
            + self.held.len()
            + self.enforce_timers.count_until(now + window, cap)
    }

    fn check_breaker(&mut self) {
        let due = self.due_within_interval();
        let exceeds = breaker::exceeds_limits(due, self.live.len(), &self.settings.safety);
        if exceeds && !self.breaker_open {
            self.trip_breaker(due);
        } else if !exceeds && self.breaker_open {
            tracing::warn!(account = %self.account, due, "breaker closed: the excess cleared");
            self.breaker_open = false;
            self.set_breaker_metric();
            let now = self.now();
            let held: Vec<CallUuid> = self.held.drain().collect();
            for uuid in held {
                self.enforce_timers.schedule(uuid, now);
            }
        }
    }

    fn trip_breaker(&mut self, due: usize) {
        self.breaker_open = true;
        self.set_breaker_metric();
        let safety = &self.settings.safety;
        tracing::error!(
            account = %self.account,
            due,
            live = self.live.len(),
            max_per_cycle = safety.max_hangups_per_cycle,
            max_percent = safety.max_hangups_percent,
            "breaker open: too many hangups due at once; holding them (SIGUSR1 lets this batch through)"
        );
    }

    fn set_breaker_metric(&self) {
        self.shared
            .metrics
            .breaker_open
            .get_or_create(&self.label())
            .set(i64::from(self.breaker_open));
    }

    /// Whether the breaker holds `uuid` now; holds (and audits) it if so.
    fn held_by_breaker(&mut self, uuid: &CallUuid) -> bool {
        if !self.breaker_open || self.overridden.contains(uuid) || self.bypasses_breaker(uuid) {
            return false;
        }
        if self.held.insert(uuid.clone()) {
            let mut job = self.bare_job(uuid);
            job.action = "hangup".to_owned();
            self.audit_outcome(
                &job,
                AuditEvent::Breaker,
                Outcome::Breaker,
                0,
                "breaker open: too many hangups due within one poll interval",
            );
        }
        true
    }

    fn release_breaker(&mut self) {
        let now = self.now();
        let held: Vec<CallUuid> = self.held.drain().collect();
        tracing::warn!(account = %self.account, calls = held.len(), "operator override: letting the held batch through once");
        for uuid in held {
            let job = self.bare_job(&uuid);
            self.audit_outcome(
                &job,
                AuditEvent::Override,
                Outcome::Skipped,
                0,
                "operator override (SIGUSR1): held hangup released",
            );
            self.overridden.insert(uuid.clone());
            self.enforce_timers.schedule(uuid, now);
        }
    }

    fn mark_unhealthy(&mut self, reason: String) {
        if self.unhealthy.is_none() {
            tracing::error!(account = %self.account, %reason,
                "the API refused our credentials: enforcement stopped for this account until a reload");
        }
        self.unhealthy = Some(reason);
    }

    // ---- commands -----------------------------------------------------------

    /// Applies an operator command; returns a new poll interval if it changed.
    fn command(&mut self, command: Command) -> Option<Duration> {
        match command {
            Command::Pardon { uuid, until, reply } => {
                let tracked = self.calls.contains_key(&uuid) || self.live.contains(&uuid);
                self.pardons.insert(uuid.clone(), until);
                let mut job = self.bare_job(&uuid);
                job.action = "pardon".to_owned();
                let reason = match until {
                    Some(until) => format!("pardoned until {}", until.to_rfc3339()),
                    None => "pardoned for good".to_owned(),
                };
                self.audit_outcome(&job, AuditEvent::Pardon, Outcome::Pardoned, 0, &reason);
                self.held.remove(&uuid);
                self.evaluate(&uuid);
                let _ = reply.send(tracked);
                None
            }
            Command::ReleaseBreaker => {
                self.release_breaker();
                None
            }
            Command::Reload { policy, settings } => {
                let interval = (settings.poll_interval != self.settings.poll_interval)
                    .then_some(settings.poll_interval);
                self.policy = policy;
                self.settings.poll_interval = settings.poll_interval;
                self.settings.enforce = settings.enforce;
                self.settings.safety = settings.safety;
                self.settings.retry = settings.retry;
                self.unhealthy = None;
                self.mismatch = None;
                self.shared
                    .metrics
                    .clock_mismatch
                    .get_or_create(&self.label())
                    .set(0);
                self.finished.clear();
                self.dry_done.clear();
                self.dry_timers = TimerQueue::default();
                self.publish_rules();
                let uuids: Vec<CallUuid> = self.calls.keys().cloned().collect();
                for uuid in uuids {
                    self.evaluate(&uuid);
                }
                interval
            }
        }
    }

    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + self.settings.stop_grace;
        while !self.busy.is_empty() {
            match tokio::time::timeout_at(deadline, self.events_rx.recv()).await {
                Ok(Some(event)) => match event {
                    Event::HungUp { job, results } => self.on_hung_up(job, results),
                    Event::Reread { uuid, .. } => {
                        self.busy.remove(&uuid);
                    }
                    _ => {}
                },
                _ => {
                    tracing::warn!(account = %self.account, in_flight = self.busy.len(),
                        "stopping with hangups still in flight; they resume on the next start");
                    break;
                }
            }
        }
        self.publish();
    }

    // ---- events -----------------------------------------------------------

    fn handle(&mut self, event: Event) {
        match event {
            Event::Listed { sent_at, result } => self.on_listed(sent_at, result),
            Event::Detail {
                uuid,
                fetch,
                result,
            } => self.on_detail(uuid, fetch, result),
            Event::Reread {
                uuid,
                purpose,
                result,
            } => self.on_reread(uuid, purpose, result),
            Event::HungUp { job, results } => self.on_hung_up(job, results),
            Event::Spoke { job, result } => self.on_spoke(job, result),
        }
    }

    // ---- audit, metrics, status --------------------------------------------

    fn bare_job(&self, uuid: &CallUuid) -> Job {
        let (rule, deadline) = match self.winners.get(uuid) {
            Some((index, deadline)) => (self.policy.rules[*index].name.clone(), *deadline),
            None => (String::new(), self.now()),
        };
        Job {
            uuid: uuid.clone(),
            rules: if rule.is_empty() {
                Vec::new()
            } else {
                vec![rule.clone()]
            },
            rule,
            action: String::new(),
            deadline,
            dry_run: self.settings.enforce.dry_run,
            reason: String::new(),
            call: self
                .calls
                .get(uuid)
                .map(|t| t.call.raw.clone())
                .unwrap_or(serde_json::Value::Null),
        }
    }

    fn audit(
        &self,
        job: &Job,
        event: AuditEvent,
        outcome: Option<Outcome>,
        attempts: u32,
        reason: &str,
    ) -> std::io::Result<()> {
        self.shared.audit.append(&Record {
            ts: self.now(),
            account: self.account.clone(),
            call_uuid: job.uuid.to_string(),
            event,
            rules: job.rules.clone(),
            rule: (!job.rule.is_empty()).then(|| job.rule.clone()),
            action: (!job.action.is_empty()).then(|| job.action.clone()),
            outcome,
            attempts,
            dry_run: job.dry_run,
            reason: reason.to_owned(),
            call: Some(job.call.clone()),
        })
    }

    fn audit_outcome(
        &mut self,
        job: &Job,
        event: AuditEvent,
        outcome: Outcome,
        attempts: u32,
        reason: &str,
    ) {
        if let Err(error) = self.audit(job, event, Some(outcome), attempts, reason) {
            tracing::error!(account = %self.account, call = %job.uuid, %error, "cannot write the audit log");
        }
        if matches!(event, AuditEvent::Outcome | AuditEvent::Breaker) {
            self.shared
                .metrics
                .hangups
                .get_or_create(&HangupLabels {
                    account: self.account.clone(),
                    rule: job.rule.clone(),
                    outcome: outcome.as_str().to_owned(),
                })
                .inc();
        }
        if let Some(report) = &mut self.once {
            if matches!(event, AuditEvent::Outcome | AuditEvent::Breaker) {
                report.outcomes.push(OnceOutcome {
                    call_uuid: job.uuid.to_string(),
                    rule: job.rule.clone(),
                    outcome: outcome.as_str().to_owned(),
                    reason: reason.to_owned(),
                });
                if outcome == Outcome::Failed {
                    report.errors.push(format!("{}: {reason}", job.uuid));
                }
            }
        }
    }

    fn label(&self) -> AccountLabel {
        AccountLabel {
            account: self.account.clone(),
        }
    }

    fn count_poll(&self, outcome: &str) {
        self.shared
            .metrics
            .polls
            .get_or_create(&PollLabels {
                account: self.account.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    fn publish_rules(&self) {
        self.shared
            .metrics
            .policy_rules
            .get_or_create(&self.label())
            .set(self.policy.rules.len() as i64);
    }

    fn publish(&self) {
        if self.status_tx.receiver_count() == 0 {
            return;
        }
        let next_deadlines = self
            .enforce_timers
            .earliest(STATUS_DEADLINES)
            .chain(self.bypass_timers.earliest(STATUS_DEADLINES))
            .map(|(uuid, deadline)| status::DeadlineStatus {
                call_uuid: uuid.to_string(),
                rule: self
                    .winners
                    .get(uuid)
                    .map(|(i, _)| self.policy.rules[*i].name.clone())
                    .unwrap_or_default(),
                deadline,
            })
            .collect();
        let far_future = DateTime::<Utc>::MAX_UTC;
        let calls = self
            .calls
            .iter()
            .map(|(uuid, t)| status::CallStatus {
                call_uuid: uuid.to_string(),
                first_seen: t.first_seen,
                answered_seen: t.answered_seen,
                pardoned_until: self.pardons.get(uuid).map(|u| u.unwrap_or(far_future)),
                held: self.held.contains(uuid),
            })
            .collect();
        self.status_tx.send_replace(AccountStatus {
            account: self.account.clone(),
            healthy: self.unhealthy.is_none(),
            unhealthy_reason: self.unhealthy.clone(),
            last_poll_ok: self.last_poll,
            last_poll_error: self.last_poll_error.clone(),
            live_calls: self.live.len(),
            tracked_calls: self.calls.len(),
            pending_details: self.detail_queue.len() + self.details_in_flight,
            breaker_open: self.breaker_open,
            held_calls: self.held.iter().map(ToString::to_string).collect(),
            clock_mismatch: self.mismatch.as_ref().map(ToString::to_string),
            rules: self.policy.rules.iter().map(|r| r.name.clone()).collect(),
            next_deadlines,
            calls,
        });
    }
}

fn scope_word(scope: HangupScope) -> &'static str {
    match scope {
        HangupScope::Call => "call",
        HangupScope::Whole => "whole",
        HangupScope::BLegs => "b-legs",
    }
}
