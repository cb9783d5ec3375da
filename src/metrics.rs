//! The Prometheus metrics of SPEC §5, in one registry shared by the engine
//! and the HTTP listener. prometheus-client appends `_total` to counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

/// Labels of `callwarden_api_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// `list`, `detail`, `hangup`, `speak`.
    pub endpoint: String,
    /// HTTP status class or error kind (`2xx`, `404`, `429`, `timeout`, ...).
    pub status: String,
}

/// Labels of `callwarden_hangups_total`.
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
    /// Hangup decisions by rule and outcome.
    pub hangups: Family<HangupLabels, Counter>,
    /// Actual hangup time minus deadline, seconds.
    pub enforcement_lag: Histogram,
    /// 1 while the breaker holds hangups for an account.
    pub breaker_open: Family<AccountLabel, Gauge>,
    /// Rules in force per account.
    pub policy_rules: Family<AccountLabel, Gauge>,
    /// 1 while an account's timestamps disagree with the clocks.
    pub clock_mismatch: Family<AccountLabel, Gauge>,
    /// Config reloads by outcome.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// The audit writer's failures and syncs.
    pub audit: crate::audit::Health,
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
        let enforcement_lag = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]);
        let breaker_open = Family::default();
        let policy_rules = Family::default();
        let clock_mismatch = Family::default();
        let config_reloads = Family::default();
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
            "callwarden_api_requests",
            "Requests to the Vobiz API",
            api_requests.clone(),
        );
        registry.register(
            "callwarden_hangups",
            "Hangup decisions by outcome",
            hangups.clone(),
        );
        registry.register(
            "callwarden_enforcement_lag_seconds",
            "Actual hangup time minus deadline",
            enforcement_lag.clone(),
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
            live_calls,
            polls,
            api_requests,
            hangups,
            enforcement_lag,
            breaker_open,
            policy_rules,
            clock_mismatch,
            config_reloads,
        }
    }

    /// Counts one API request and how it ended.
    pub fn api_request<T>(&self, endpoint: &str, result: &Result<T, vobiz::Error>) {
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
        self.api_requests
            .get_or_create(&ApiLabels {
                endpoint: endpoint.to_owned(),
                status,
            })
            .inc();
    }

    /// Counts a reload.
    pub fn reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" }.to_owned();
        self.config_reloads
            .get_or_create(&ReloadLabels { outcome })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
