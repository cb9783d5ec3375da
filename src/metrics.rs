//! The Prometheus metrics (docs/metrics.md), in one registry shared by the engine
//! and the HTTP listener. prometheus-client appends `_total` to counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::vobiz;

/// Labels of per-account gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabel {
    /// Account name.
    pub account: String,
}

/// Labels of `callwarden_polls_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    /// Account name.
    pub account: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// Labels of `callwarden_api_requests_total` (and of the deprecated
/// `callwarden_api_requests_by_code_total`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// `list`, `detail`, `hangup`, `speak`.
    pub endpoint: String,
    /// The HTTP status class: `2xx`, `4xx`, `5xx`, or `none` when there was
    /// no usable answer (timeout, connection error, malformed body). The
    /// deprecated series keeps the old mixed values (`404`, `timeout`, ...).
    pub status: String,
}

/// Labels of `callwarden_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version.
    pub version: String,
}

/// Labels of `callwarden_hangups_total` and `callwarden_decisions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HangupLabels {
    /// Account name.
    pub account: String,
    /// The winning rule.
    pub rule: String,
    /// The audit outcome.
    pub outcome: String,
}

/// Labels of `callwarden_config_reloads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub outcome: String,
}

/// Every metric callwarden exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Live calls per account at the last poll.
    pub live_calls: Family<AccountLabel, Gauge>,
    /// Polls by outcome.
    pub polls: Family<PollLabels, Counter>,
    /// API requests by endpoint and status.
    pub api_requests: Family<ApiLabels, Counter>,
    /// Hangups by rule and outcome (`ok`, `gone`, `failed`; for one more
    /// release also the decisions that were not hangups, deprecated).
    pub hangups: Family<HangupLabels, Counter>,
    /// Decisions that were not hangups: `dry_run`, `protected`, `breaker`,
    /// `pardoned`.
    pub decisions: Family<HangupLabels, Counter>,
    /// Deprecated: API requests by the old mixed status labels.
    pub api_requests_by_code: Family<ApiLabels, Counter>,
    /// When each account last listed its calls successfully (Unix seconds).
    pub last_successful_poll: Family<AccountLabel, Gauge<f64, AtomicU64>>,
    /// Actual hangup time minus deadline, seconds.
    pub enforcement_lag: Histogram,
    /// The engine's own time on one list answer, seconds: the per-poll
    /// work that grows with the fleet, apart from the requests.
    pub poll_handling: Histogram,
    /// 1 while the API refuses an account's credentials (enforcement stopped).
    pub api_unauthorized: Family<AccountLabel, Gauge>,
    /// 1 while the breaker holds hangups for an account.
    pub breaker_open: Family<AccountLabel, Gauge>,
    /// Rules in force per account.
    pub policy_rules: Family<AccountLabel, Gauge>,
    /// 1 while an account's timestamps disagree with the clocks.
    pub clock_mismatch: Family<AccountLabel, Gauge>,
    /// Config reloads by outcome.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// 1 when the last reload succeeded (or there was none), 0 after a failed one.
    pub config_last_reload_successful: Gauge,
    /// The audit writer's failures and syncs.
    pub audit: crate::audit::Health,
    /// 1 while this node enforces the account (always, without `[ha]`).
    pub leader: Family<AccountLabel, Gauge>,
    /// The account's lease epoch as this node last saw it (0 without `[ha]`).
    pub lease_epoch: Family<AccountLabel, Gauge>,
    /// With `[ha]`: 1 while the database answers this node, else 0.
    pub ha_database_up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let live_calls = Family::default();
        let polls = Family::default();
        let api_requests = Family::default();
        let hangups = Family::default();
        let decisions = Family::default();
        let api_requests_by_code = Family::default();
        let last_successful_poll = Family::<AccountLabel, Gauge<f64, AtomicU64>>::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "callwarden_build_info",
            "Always 1; the version label says which callwarden runs",
            build_info,
        );
        let enforcement_lag = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]);
        let poll_handling = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        let breaker_open = Family::default();
        let api_unauthorized = Family::default();
        let policy_rules = Family::default();
        let clock_mismatch = Family::default();
        let config_reloads = Family::default();
        let config_last_reload_successful = Gauge::default();
        config_last_reload_successful.set(1);
        registry.register(
            "callwarden_live_calls",
            "Live calls at the last poll",
            live_calls.clone(),
        );
        registry.register(
            "callwarden_polls",
            "Polls of the live-call list",
            polls.clone(),
        );
        registry.register(
            "callwarden_last_successful_poll_timestamp_seconds",
            "When the live-call list was last read successfully (Unix time)",
            last_successful_poll.clone(),
        );
        registry.register(
            "callwarden_api_requests",
            "Requests to the Vobiz API by endpoint and HTTP status class",
            api_requests.clone(),
        );
        registry.register(
            "callwarden_api_requests_by_code",
            "Deprecated, removed in the next release: use callwarden_api_requests_total",
            api_requests_by_code.clone(),
        );
        registry.register(
            "callwarden_hangups",
            "Hangups by outcome (ok, gone, failed); its other outcomes are deprecated, see callwarden_decisions_total",
            hangups.clone(),
        );
        registry.register(
            "callwarden_decisions",
            "Decisions that were not hangups: dry_run, protected, breaker, pardoned",
            decisions.clone(),
        );
        registry.register(
            "callwarden_enforcement_lag_seconds",
            "Actual hangup time minus deadline",
            enforcement_lag.clone(),
        );
        registry.register(
            "callwarden_poll_handling_seconds",
            "The engine's time handling one answer of the live-call list, requests excluded",
            poll_handling.clone(),
        );
        registry.register(
            "callwarden_api_unauthorized",
            "1 while the API refuses the account's credentials and enforcement is stopped",
            api_unauthorized.clone(),
        );
        registry.register(
            "callwarden_breaker_open",
            "1 while the breaker holds hangups",
            breaker_open.clone(),
        );
        registry.register(
            "callwarden_policy_rules",
            "Rules in force",
            policy_rules.clone(),
        );
        registry.register(
            "callwarden_clock_mismatch",
            "1 while API timestamps disagree with the clocks",
            clock_mismatch.clone(),
        );
        registry.register(
            "callwarden_config_reloads",
            "Config reloads by outcome",
            config_reloads.clone(),
        );
        registry.register(
            "callwarden_config_last_reload_successful",
            "1 when the last reload succeeded (or there was none), 0 while the old config stays in force after a failed one",
            config_last_reload_successful.clone(),
        );
        let leader = Family::default();
        let lease_epoch = Family::default();
        let ha_database_up = Gauge::default();
        registry.register(
            "callwarden_leader",
            "1 while this node enforces the account (holds its lease; always 1 without [ha])",
            leader.clone(),
        );
        registry.register(
            "callwarden_lease_epoch",
            "The account's lease epoch as this node last saw it (0 without [ha])",
            lease_epoch.clone(),
        );
        registry.register(
            "callwarden_ha_database_up",
            "With [ha]: 1 while the HA database answers this node; 0 means it enforces nothing",
            ha_database_up.clone(),
        );
        let audit = crate::audit::Health::default();
        registry.register(
            "callwarden_audit_write_errors",
            "Failed writes or syncs of the audit log",
            audit.write_errors.clone(),
        );
        registry.register(
            "callwarden_audit_write_failing",
            "1 while the audit log cannot be written (hangups stop)",
            audit.failing.clone(),
        );
        registry.register(
            "callwarden_audit_syncs",
            "fdatasync calls of the audit log (one per batch)",
            audit.syncs.clone(),
        );
        registry.register(
            "callwarden_audit_queued_records",
            "Audit records waiting for the writer",
            audit.queued.clone(),
        );
        Self {
            registry,
            audit,
            leader,
            lease_epoch,
            ha_database_up,
            live_calls,
            polls,
            api_requests,
            hangups,
            decisions,
            api_requests_by_code,
            last_successful_poll,
            enforcement_lag,
            poll_handling,
            api_unauthorized,
            breaker_open,
            policy_rules,
            clock_mismatch,
            config_reloads,
            config_last_reload_successful,
        }
    }

    /// Counts one API request and how it ended.
    pub fn api_request<T>(&self, endpoint: &str, result: &Result<T, vobiz::Error>) {
        let class = match result {
            Ok(_) => "2xx".to_owned(),
            Err(
                vobiz::Error::Unauthorized
                | vobiz::Error::Forbidden
                | vobiz::Error::NotFound
                | vobiz::Error::RateLimited { .. },
            ) => "4xx".to_owned(),
            Err(vobiz::Error::Rejected { status, .. }) | Err(vobiz::Error::Server(status)) => {
                format!("{}xx", status / 100)
            }
            Err(
                vobiz::Error::Timeout | vobiz::Error::Transport(_) | vobiz::Error::Malformed { .. },
            ) => "none".to_owned(),
        };
        self.api_requests
            .get_or_create(&ApiLabels {
                endpoint: endpoint.to_owned(),
                status: class,
            })
            .inc();
        let status = match result {
            Ok(_) => "2xx".to_owned(),
            Err(vobiz::Error::Unauthorized) => "401".to_owned(),
            Err(vobiz::Error::Forbidden) => "403".to_owned(),
            Err(vobiz::Error::NotFound) => "404".to_owned(),
            Err(vobiz::Error::RateLimited { .. }) => "429".to_owned(),
            Err(vobiz::Error::Rejected { status, .. }) | Err(vobiz::Error::Server(status)) => {
                status.to_string()
            }
            Err(vobiz::Error::Timeout) => "timeout".to_owned(),
            Err(vobiz::Error::Transport(_)) => "transport".to_owned(),
            Err(vobiz::Error::Malformed { .. }) => "malformed".to_owned(),
        };
        self.api_requests_by_code
            .get_or_create(&ApiLabels {
                endpoint: endpoint.to_owned(),
                status,
            })
            .inc();
    }

    /// Counts one decision under `callwarden_hangups_total` when it was a
    /// hangup, else under `callwarden_decisions_total` (and, deprecated for
    /// one release, under `callwarden_hangups_total` as before).
    pub fn decision(&self, labels: &HangupLabels) {
        let hangup = matches!(labels.outcome.as_str(), "ok" | "gone" | "failed");
        if !hangup {
            self.decisions.get_or_create(labels).inc();
        }
        self.hangups.get_or_create(labels).inc();
    }

    /// Records a successful poll of `account` at `unix_seconds`.
    pub fn poll_succeeded(&self, account: &str, unix_seconds: f64) {
        self.last_successful_poll
            .get_or_create(&AccountLabel {
                account: account.to_owned(),
            })
            .set(unix_seconds);
    }

    /// Counts a reload.
    pub fn reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" }.to_owned();
        self.config_reloads
            .get_or_create(&ReloadLabels { outcome })
            .inc();
        self.config_last_reload_successful.set(i64::from(ok));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
