//! The enforcement engine for one account.
//!
//! One task owns all state and reacts to events: poll ticks, list and detail
//! answers, timers and operator commands. Requests run in spawned tasks that
//! report back, so a slow API never delays a deadline. The flow:
//!
//! list → new UUIDs → details → [`Tracked`] → policy evaluation → deadline
//! timers → (timer fires) re-read → re-evaluate → [`plan::plan_hangup`] →
//! audit intent → DELETE with retries → audit outcome.
//!
//! The state lives in parts, each owning its data and the invariants over
//! it behind a small API; [`Engine`] composes them and passes data between
//! them:
//!
//! - `calls`: the tracked calls (each stored once, shared with the jobs
//!   that act on it), the B-leg index, the memory across restarts.
//! - `discovery`: the list in flight, the live set, the detail-read queue
//!   and reads in flight, the discovery batch, malformed-answer pauses.
//! - `deadlines`: each call's winning rule and deadline, its timers, pardons.
//! - `decisions`: the never-twice bookkeeping (in flight, decided, hung up,
//!   resumed intents, warnings spoken, dry-run rules audited).
//! - [`breaker`]: open or not, held calls, overrides, recent fires.
//! - `clocks`: the server-clock skew bound, probes, a clock/zone mismatch.
//! - [`rules`]: the policy in force and [`rules::RuleId`]s that carry its
//!   generation, so no reference to a rule survives a reload unchecked.
//! - [`caps`]: the fraud guard's calls beyond a cap.
//!
//! The event handling that moves data between them is split by flow: `poll`
//! (list and details), `evaluate` (verdicts into timers), `enforce`
//! (re-read, act, DELETE), `warnings`, `safety` (breaker, pardons, health,
//! reloads), `manual`, `prober`, `report` (audit, metrics, `/status`), and
//! `once`, the driver of a single cycle.

pub mod actions;
pub mod backoff;
pub mod breaker;
mod calls;
pub mod caps;
mod clocks;
mod deadlines;
mod decisions;
mod discovery;
mod enforce;
mod evaluate;
pub mod fence;
mod manual;
pub mod memory;
mod once;
pub mod plan;
mod poll;
mod prober;
mod report;
pub mod rules;
mod safety;
pub mod skew;
pub mod status;
pub mod timers;
pub mod tracker;
mod warnings;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot, watch};

use crate::audit::{self, AuditLog, CallDetails, Event as AuditEvent, Outcome, Record};
use crate::call::{Call, CallUuid};
use crate::clock::SharedClock;
use crate::config::{Config, EnforceSettings, RetrySettings, SafetySettings};
use crate::metrics::{AccountLabel, HangupLabels, Metrics, PollLabels};
use crate::policy::{self, HangupScope, Limit, Policy, RuleOutcome};
use crate::vobiz::{Error as ApiError, Fetched, Metered, SpeakLegs, VobizApi};

use actions::{HangupResult, Retrier};
use backoff::Jitter;
use breaker::Breaker;
use calls::Calls;
use clocks::Clocks;
use deadlines::{Deadlines, Winner};
use decisions::Decisions;
use discovery::{Discovery, Fetch};
pub use manual::{is_refusal, ManualDecision, ManualRequest, Selection, MANUAL_RULE};
use once::Note;
pub use once::{OnceOutcome, OnceReport};
use plan::Plan;
use rules::{RuleId, Rules};
use skew::{Mismatch, SkewEstimate};
pub use status::{AccountStatus, CallStatus, HaRole, HaStatus};
pub use tracker::Tracked;

/// A warning is still spoken late only if at least this much time remains.
const MIN_LATE_WARNING: TimeDelta = TimeDelta::seconds(5);

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
    /// Every tracked call for `/status`: built on request, as at 100,000
    /// calls it is too large to build at every poll.
    Calls {
        /// Answer: one entry per tracked call.
        reply: oneshot::Sender<Vec<CallStatus>>,
    },
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
    DryRunRule(RuleId),
    /// A manual hangup (its job waits in `manual_jobs`).
    Manual,
}

/// What the spawned requests report back to the engine's task.
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

/// One poll's answer: the live list and, when rules need it, the queued one.
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
    /// The details acted on, shared with the tracked call (`None`: not tracked).
    call: Option<Arc<Call>>,
}

/// The engine of one account: it composes the parts that own the state
/// and passes data between them.
pub struct Engine<A: VobizApi> {
    account: String,
    /// The client, counting every request in the metrics.
    api: Arc<Metered<A>>,
    rules: Rules,
    settings: Settings,
    shared: Shared,
    retrier: Arc<Retrier>,
    calls: Calls,
    discovery: Discovery,
    deadlines: Deadlines,
    decisions: Decisions,
    breaker: Breaker,
    clocks: Clocks,
    /// Calls beyond the cap of a fraud-guard rule.
    caps: caps::Caps,
    /// Manual hangups waiting for their re-read.
    manual_jobs: HashMap<CallUuid, Job>,
    /// Why enforcement stopped (refused credentials), until a reload.
    unhealthy: Option<String>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    status_tx: watch::Sender<AccountStatus>,
    /// Who hears of every decision and error as it happens (`once`'s report).
    observer: Option<mpsc::UnboundedSender<Note>>,
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
        let memory_path = shared
            .state_dir
            .as_deref()
            .map(|dir| memory::path(dir, &account));
        let engine = Self {
            calls: Calls::new(memory_path),
            decisions: Decisions::resume(mine(&replay.hung_up), mine(&replay.pending)),
            account,
            api: Arc::new(Metered::new(api, Arc::clone(&shared.metrics))),
            rules: Rules::new(policy),
            settings,
            shared,
            retrier,
            discovery: Discovery::default(),
            deadlines: Deadlines::default(),
            breaker: Breaker::default(),
            clocks: Clocks::default(),
            caps: caps::Caps::default(),
            manual_jobs: HashMap::new(),
            unhealthy: None,
            events_tx,
            events_rx,
            status_tx,
            observer: None,
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

    /// The injected clock's time, so tests control every instant the engine sees.
    fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// One poll interval, as a time span.
    fn poll_interval(&self) -> TimeDelta {
        TimeDelta::from_std(self.settings.poll_interval).unwrap_or_default()
    }

    /// Handles events until `done` says the engine has settled (or no
    /// sender is left): the `once` cycle's waits.
    async fn settle(&mut self, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            match self.events_rx.recv().await {
                Some(event) => self.handle(event),
                None => break,
            }
        }
    }

    fn sleep_until_next_timer(&self) -> tokio::time::Sleep {
        let now = self.now();
        let next = [
            self.discovery.batch_release_at(self.poll_interval(), now),
            self.deadlines.next_at(),
        ]
        .into_iter()
        .flatten()
        .min();
        let wait = match next {
            Some(at) => (at - now).to_std().unwrap_or(Duration::ZERO),
            // Nothing scheduled: wake rarely; events and ticks wake us anyway.
            None => Duration::from_secs(3600),
        };
        tokio::time::sleep(wait)
    }

    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + self.settings.stop_grace;
        while self.decisions.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, self.events_rx.recv()).await {
                Ok(Some(event)) => match event {
                    Event::HungUp { job, results } => self.on_hung_up(job, results),
                    Event::IntentLost { job, error } => self.on_intent_lost(job, error),
                    Event::Reread { uuid, .. } => self.decisions.stop(&uuid),
                    _ => {}
                },
                _ => {
                    tracing::warn!(account = %self.account, in_flight = self.decisions.in_flight(),
                        "stopping with hangups still in flight; they resume on the next start");
                    break;
                }
            }
        }
        if let Some(write) = self.calls.memory_snapshot(self.discovery.live(), true) {
            // Synchronously: the runtime may be going away.
            write();
        }
        self.publish();
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Listed { sent_at, result } => {
                // Timed apart from the requests: the per-poll work over the fleet.
                let answered = result.is_ok();
                let started = std::time::Instant::now();
                self.on_listed(sent_at, result);
                if answered {
                    let spent = started.elapsed().as_secs_f64();
                    self.shared.metrics.poll_handling.observe(spent);
                }
            }
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
