//! Loading `callwarden.toml` and the policy files: raw TOML with spans,
//! validation that reports every problem with its position, and compilation
//! into the typed [`Config`] and [`crate::policy::Policy`].
//!
//! `check`, `run` and SIGHUP reload all go through [`load`], so what `check`
//! accepts is exactly what the daemon runs.

mod diagnostic;
mod load;
mod rules;
mod walk;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;

use crate::policy::Policy;
use crate::vobiz::Secret;

pub(crate) use diagnostic::FileDiagnostics;
pub use diagnostic::{CheckReport, Diagnostic, Diagnostics, Severity};
pub(crate) use load::parse_toml;
pub use load::{
    check, load, load_policy_files, Environment, Loaded, CONFIG_KEYS, CREDENTIAL_NAME,
    DEFAULT_BASE_URL, DEFAULT_LEASE_TTL, DEFAULT_LISTEN, DEFAULT_PROTECTED_NUMBERS,
    DEFAULT_RENEW_EVERY, DEFAULT_STATE_DIR, HA_UNAVAILABLE,
};
pub use rules::policy_keys;
pub(crate) use walk::{Reader, Table};

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file it was read from.
    pub source: PathBuf,
    /// Every account to police (a single-account config is `default`).
    pub accounts: Vec<Account>,
    /// `[api]`.
    pub api: ApiSettings,
    /// `[poll]` interval: how often the live-call list is fetched.
    pub poll_interval: Duration,
    /// `[enforce]`.
    pub enforce: EnforceSettings,
    /// `[retry]`.
    pub retry: RetrySettings,
    /// `[safety]`.
    pub safety: SafetySettings,
    /// `[state] dir` (or `$STATE_DIRECTORY`).
    pub state_dir: PathBuf,
    /// `[http]`.
    pub http: HttpSettings,
    /// `[log] format`.
    pub log_format: LogFormat,
}

/// `[ha]`: the PostgreSQL-backed multi-host mode, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaSettings {
    /// The PostgreSQL URL read from `postgres_url_file` (redacted in `Debug`:
    /// it may hold a password).
    pub postgres_url: Option<Secret>,
    /// This member's name; `None` means the hostname.
    pub node_id: Option<String>,
    /// How long a renewed lease lasts on the database clock.
    pub lease_ttl: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
}

/// One Vobiz account and the rules that apply to it.
#[derive(Debug, Clone)]
pub struct Account {
    /// The account's name (`default` for a single-account config); a metric label.
    pub name: String,
    /// The Vobiz `auth_id`.
    pub auth_id: String,
    /// The token, when one was found (env, file, systemd credential);
    /// `check` does not need it, `run` does.
    pub token: Option<Secret>,
    /// The rules for this account.
    pub policy: Arc<Policy>,
}

impl Config {
    /// The rules of the account named `account` (none if there is no such account).
    pub fn policy_of(&self, account: &str) -> Arc<Policy> {
        self.accounts
            .iter()
            .find(|a| a.name == account)
            .map(|a| Arc::clone(&a.policy))
            .unwrap_or_default()
    }
}

/// `[api]`: how to reach the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Base URL up to and including `/api/v1`, no trailing slash.
    pub base_url: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Client-side budget per account, all requests.
    pub max_requests_per_second: u32,
    /// Requests in flight at once per account.
    pub max_concurrent_requests: usize,
    /// Zone of API timestamps that carry none.
    pub timestamp_zone: Tz,
}

/// `[enforce]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnforceSettings {
    /// Log and audit what would be hung up, hang up nothing.
    pub dry_run: bool,
    /// Extra time added to every deadline.
    pub grace: Duration,
}

/// `[retry]`: hangup retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Attempts in all, the first try included.
    pub max_attempts: u32,
    /// Upper bound of the first backoff; doubles each attempt.
    pub initial_backoff: Duration,
    /// Cap on any backoff and on a 429 pause.
    pub max_backoff: Duration,
}

/// `[safety]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetySettings {
    /// Digits-only numbers never hung up (exact match of `to` or `from`).
    pub protected_numbers: Vec<String>,
    /// Breaker: more hangups than this due in one cycle are held.
    pub max_hangups_per_cycle: usize,
    /// Breaker: more than this share (percent) of live calls due are held.
    pub max_hangups_percent: u32,
    /// The percent rule applies from this many live calls.
    pub breaker_min_live_calls: usize,
}

/// `[http]`: the local status listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Where to listen; `None` when disabled with `listen = ""`.
    pub listen: Option<SocketAddr>,
    /// Accept `POST /pardon` from non-loopback clients.
    pub allow_remote_pardon: bool,
    /// Most connections served at once; more wait in the kernel's queue.
    pub max_connections: usize,
    /// `api_token_file`: the bearer token remote callers of `POST /hangup`
    /// must send; without it only loopback may ask.
    pub api_token: Option<Secret>,
}

/// `--log-format` / `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// journald under systemd, else JSON lines when stderr is not a terminal, else pretty.
    #[default]
    Auto,
    /// JSON lines.
    Json,
    /// Human-readable.
    Pretty,
}
