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
pub mod caps;
mod discovery;
mod enforce;
pub mod fence;
mod manual;
pub mod memory;
pub mod plan;
mod prober;
mod report;
mod safety;
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
use crate::vobiz::{Error as ApiError, Fetched, Metered, SpeakLegs, VobizApi};

use actions::{HangupResult, Retrier};
use backoff::Jitter;
pub use manual::{is_refusal, ManualDecision, ManualRequest, Selection, MANUAL_RULE};
use plan::Plan;
use skew::{Mismatch, SkewEstimate, SkewTracker, NO_SKEW};
pub use status::{AccountStatus, HaRole, HaStatus};
use timers::TimerQueue;
pub use tracker::Tracked;

/// A warning is still spoken late only if at least this much time remains.
const MIN_LATE_WARNING: TimeDelta = TimeDelta::seconds(5);

/// A change of the clock-skew lower bound that re-times every tracked call.
const SKEW_REEVALUATE: TimeDelta = TimeDelta::milliseconds(20);

/// How many consecutive complete lists must leave a tracked call out before
/// it is taken as ended.
const MISSING_POLLS_TO_END: u8 = 2;

/// How many calls must break the new-call age bound at once before the
/// whole account is timed from first sight (fewer are timed so alone).
const OUTLIERS_FOR_FALLBACK: usize = 3;

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
    /// The account's request budget per second (0: unlimited).
    pub max_requests_per_second: u32,
    /// Seed of the jitter source (tests); `None` seeds from the OS.
    pub jitter_seed: Option<u64>,
    /// How long a stop waits for in-flight hangups.
    pub stop_grace: Duration,
}

impl Settings {
    /// How many detail reads may wait on the budget at once.
    ///
    /// Enforcement requests overtake waiting reads in the token bucket, but
    /// a poll's list read waits in the same queue as the reads. Under
    /// a tight budget a single read in flight uses the whole budget anyway
    /// (each waits for its token, then takes milliseconds), so keep about a
    /// tenth of a second of reads queued: discovery keeps its pace and the
    /// next poll is not held up behind a long queue of reads.
    pub fn detail_concurrency(&self) -> usize {
        let limit = self.max_concurrent_requests.max(1);
        match self.max_requests_per_second {
            0 => limit,
            rate => usize::try_from(rate / 10).unwrap_or(limit).clamp(1, limit),
        }
    }

    /// The engine's settings from a loaded config.
    pub fn from_config(config: &Config) -> Self {
        Self {
            poll_interval: config.poll_interval,
            enforce: config.enforce,
            retry: config.retry,
            safety: config.safety.clone(),
            max_concurrent_requests: config.api.max_concurrent_requests.max(1),
            max_requests_per_second: config.api.max_requests_per_second,
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
    /// Where to remember call times across restarts (`None`: nowhere).
    pub state_dir: Option<std::path::PathBuf>,
    /// With `[ha]`: the lease every hangup is fenced by (`None`: single-node).
    pub fence: Option<Arc<dyn fence::Fence>>,
}

/// Operator requests to a running engine.
#[derive(Debug)]
pub enum Command {
    /// Spare a call until the instant (`None` = for good).
    Pardon {
        /// The call.
        uuid: CallUuid,
        /// Until when.
        until: Option<DateTime<Utc>>,
        /// Answer: whether the pardon was kept, and for a tracked call.
        reply: oneshot::Sender<PardonReply>,
    },
    /// End calls now on an operator's or external trigger's request;
    /// replies with a decision per call this engine tracks.
    Hangup {
        /// The request.
        request: Box<ManualRequest>,
        /// Answer: the decisions.
        reply: oneshot::Sender<Vec<ManualDecision>>,
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

/// How an engine took a pardon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PardonReply {
    /// Kept, for a call the engine tracks.
    Tracked,
    /// Kept until the next poll, in case the call shows up.
    Untracked,
    /// Refused: [`MAX_UNTRACKED_PARDONS`] pardons of untracked calls are
    /// already kept.
    Refused,
}

/// Pardons of calls the engine does not track, kept at most at once. Each
/// poll drops those whose calls are not live, so this bounds what a flood
/// of pardons can hold in memory and write to the audit log per poll.
pub const MAX_UNTRACKED_PARDONS: usize = 1_000;

/// Why the engine fires a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Purpose {
    /// The winning rule's hangup.
    Enforce,
    /// A rule-level dry-run rule's own deadline.
    DryRunRule(usize),
    /// A manual hangup (its job waits in `manual_jobs`).
    Manual,
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
    Probed {
        result: Result<Fetched<Result<(), ApiError>>, ApiError>,
    },
    IntentLost {
        job: Job,
        error: audit::WriteError,
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
    /// The rule acted for; `None` when no rule decided (a pardon of a call
    /// no rule had claimed).
    rule: Option<String>,
    rules: Vec<String>,
    /// What was done, as the audit log spells it; `None` until known.
    action: Option<String>,
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
    /// The client, counting every request in the metrics.
    api: Arc<Metered<A>>,
    policy: Arc<Policy>,
    settings: Settings,
    shared: Shared,
    retrier: Arc<Retrier>,

    calls: HashMap<CallUuid, Tracked>,
    /// B-legs by parent A-leg, kept exact as calls come and go.
    children: HashMap<CallUuid, std::collections::BTreeSet<CallUuid>>,
    winners: HashMap<CallUuid, (usize, DateTime<Utc>)>,
    enforce_timers: TimerQueue<CallUuid>,
    bypass_timers: TimerQueue<CallUuid>,
    warn_timers: TimerQueue<CallUuid>,
    dry_timers: TimerQueue<(CallUuid, usize)>,

    detail_queue: VecDeque<(CallUuid, Fetch)>,
    detail_queued: HashSet<CallUuid>,
    /// Discovery fetches not yet answered, and when that batch began.
    discovering: usize,
    batch_started: Option<DateTime<Utc>>,
    /// Newly discovered calls already overdue, held until their batch is
    /// read so the breaker sees the whole batch at once.
    batch_due: Vec<CallUuid>,
    details_in_flight: usize,
    list_in_flight: bool,
    live: HashSet<CallUuid>,
    /// Tracked calls missing from the latest complete list(s), and how many
    /// lists in a row left them out.
    missing: HashMap<CallUuid, u8>,
    /// Calls whose detail answers were malformed: failures in a row, and
    /// when they may be read again.
    detail_backoff: HashMap<CallUuid, (u32, DateTime<Utc>)>,
    last_poll: Option<DateTime<Utc>>,
    last_poll_error: Option<String>,

    busy: HashSet<CallUuid>,
    finished: HashSet<CallUuid>,
    hung_up: HashSet<CallUuid>,
    resumed: HashSet<CallUuid>,
    warned: HashSet<CallUuid>,
    dry_done: HashSet<(CallUuid, usize)>,
    pardons: HashMap<CallUuid, Option<DateTime<Utc>>>,
    /// When a refused pardon was last logged (at most once a poll interval).
    pardon_refusal_logged: Option<DateTime<Utc>>,

    /// Calls beyond the cap of a fraud-guard rule.
    caps: caps::Caps,
    /// Manual hangups waiting for their re-read.
    manual_jobs: HashMap<CallUuid, Job>,

    breaker_open: bool,
    held: HashSet<CallUuid>,
    overridden: HashSet<CallUuid>,
    /// Calls fired by the breaker-guarded timers, with when.
    recent_fires: VecDeque<(DateTime<Utc>, CallUuid)>,

    remembered: HashMap<String, memory::Remembered>,
    memory_dirty: bool,
    memory_writes: Arc<Mutex<u64>>,
    memory_generation: u64,

    skew: SkewTracker,
    /// The skew lower bound the tracked calls were last timed with.
    skew_evaluated_low: Option<TimeDelta>,
    probes_in_flight: usize,
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
        let remembered = shared
            .state_dir
            .as_deref()
            .map(|dir| memory::load(&memory::path(dir, &account)))
            .unwrap_or_default();
        let engine = Self {
            remembered,
            memory_dirty: false,
            memory_writes: Arc::new(Mutex::new(0)),
            memory_generation: 0,
            hung_up: mine(&replay.hung_up),
            resumed: mine(&replay.pending),
            account,
            api: Arc::new(Metered::new(api, Arc::clone(&shared.metrics))),
            policy,
            settings,
            shared,
            retrier,
            calls: HashMap::new(),
            children: HashMap::new(),
            winners: HashMap::new(),
            enforce_timers: TimerQueue::default(),
            bypass_timers: TimerQueue::default(),
            warn_timers: TimerQueue::default(),
            dry_timers: TimerQueue::default(),
            detail_queue: VecDeque::new(),
            detail_queued: HashSet::new(),
            discovering: 0,
            batch_started: None,
            batch_due: Vec::new(),
            details_in_flight: 0,
            list_in_flight: false,
            live: HashSet::new(),
            missing: HashMap::new(),
            detail_backoff: HashMap::new(),
            last_poll: None,
            last_poll_error: None,
            busy: HashSet::new(),
            finished: HashSet::new(),
            warned: HashSet::new(),
            dry_done: HashSet::new(),
            pardons: HashMap::new(),
            pardon_refusal_logged: None,
            caps: caps::Caps::default(),
            manual_jobs: HashMap::new(),
            breaker_open: false,
            held: HashSet::new(),
            overridden: HashSet::new(),
            recent_fires: VecDeque::new(),
            skew: SkewTracker::default(),
            skew_evaluated_low: None,
            probes_in_flight: 0,
            mismatch: None,
            unhealthy: None,
            events_tx,
            events_rx,
            status_tx,
            once: None,
        };
        engine.publish_rules();
        // Every per-account gauge exists from the start, so alerts and
        // dashboards see 0 rather than no series.
        let metrics = &engine.shared.metrics;
        let label = engine.label();
        metrics.api_unauthorized.get_or_create(&label).set(0);
        metrics.breaker_open.get_or_create(&label).set(0);
        metrics.clock_mismatch.get_or_create(&label).set(0);
        metrics.live_calls.get_or_create(&label).set(0);
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
        let subject = due.iter().filter(|uuid| !self.bypasses_breaker(uuid));
        let live: HashSet<&CallUuid> = self.live.iter().collect();
        let counts = breaker::count(subject, &live);
        if breaker::exceeds_limits(counts, &self.settings.safety) {
            self.trip_breaker(counts);
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

    /// The injected clock's time, so tests control every instant the engine sees.
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    fn sleep_until_next_timer(&self) -> tokio::time::Sleep {
        let next = [
            self.batch_release_at(),
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

    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + self.settings.stop_grace;
        while !self.busy.is_empty() {
            match tokio::time::timeout_at(deadline, self.events_rx.recv()).await {
                Ok(Some(event)) => match event {
                    Event::HungUp { job, results } => self.on_hung_up(job, results),
                    Event::IntentLost { job, error } => self.on_intent_lost(job, error),
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
        self.memory_dirty = true;
        if let Some(write) = self.memory_snapshot() {
            // Synchronously: the runtime may be going away.
            write();
        }
        self.publish();
    }

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
            Event::Probed { result } => self.on_probed(result),
            Event::IntentLost { job, error } => self.on_intent_lost(job, error),
        }
    }
}

impl<A: VobizApi> plan::Legs for Engine<A> {
    fn call(&self, uuid: &CallUuid) -> Option<&Call> {
        self.calls.get(uuid).map(|t| &t.call)
    }

    fn children(&self, parent: &CallUuid) -> Vec<CallUuid> {
        self.children
            .get(parent)
            .map(|legs| legs.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Indices of the rules that are dry-run by their own action.
fn dry_run_rules(policy: &Policy) -> impl Iterator<Item = usize> + '_ {
    policy
        .rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| rule.action.dry_run)
        .map(|(index, _)| index)
}

fn scope_word(scope: HangupScope) -> &'static str {
    match scope {
        HangupScope::Call => "call",
        HangupScope::Whole => "whole",
        HangupScope::BLegs => "b-legs",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_concurrent_requests: usize, max_requests_per_second: u32) -> Settings {
        Settings {
            poll_interval: crate::config::DEFAULT_POLL_INTERVAL,
            enforce: EnforceSettings::default(),
            retry: RetrySettings::default(),
            safety: SafetySettings::default(),
            max_concurrent_requests,
            max_requests_per_second,
            jitter_seed: None,
            stop_grace: Duration::from_secs(5),
        }
    }

    #[test]
    fn detail_reads_queue_about_a_tenth_of_a_second_of_budget() {
        assert_eq!(settings(8, 10).detail_concurrency(), 1);
        assert_eq!(settings(8, 1).detail_concurrency(), 1);
        assert_eq!(settings(8, 40).detail_concurrency(), 4);
        assert_eq!(settings(8, 1000).detail_concurrency(), 8);
        assert_eq!(settings(8, 0).detail_concurrency(), 8);
        assert_eq!(settings(0, 0).detail_concurrency(), 1);
    }
}
