//! Loading `callwarden.toml` and the policy files: raw TOML with spans,
//! validation that reports every problem with its position, and compilation
//! into the typed [`Config`] and [`crate::policy::Policy`].
//!
//! `check`, `run` and SIGHUP reload all go through [`load`], so what `check`
//! accepts is exactly what the daemon runs.

mod accounts;
mod cases;
mod diagnostic;
mod environment;
mod files;
mod ha;
mod load;
mod rules;
mod sections;
mod settings;
mod walk;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::{ExplainSettings, Policy};
use crate::vobiz::Secret;

pub use accounts::CREDENTIAL_NAME;
pub use cases::parse_cases;
pub(crate) use diagnostic::FileDiagnostics;
pub use diagnostic::{CheckReport, Diagnostic, Diagnostics, Severity};
pub use environment::Environment;
pub(crate) use files::parse_toml;
pub use files::MAX_FILE_BYTES;
pub use ha::{
    valid_node_id, HaSettings, DEFAULT_LEASE_TTL, DEFAULT_RENEW_EVERY, POSTGRES_URL_CREDENTIAL,
};
pub use load::{check, load, load_policy_files, Loaded, CONFIG_KEYS};
pub use rules::policy_keys;
pub use sections::{
    ApiSettings, EnforceSettings, HttpSettings, LogFormat, RetrySettings, SafetySettings,
    DEFAULT_BASE_URL, DEFAULT_LISTEN, DEFAULT_POLL_INTERVAL, DEFAULT_PROTECTED_NUMBERS,
    DEFAULT_STATE_DIR,
};
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
    /// `[ha]`: several hosts, one enforcer per account (`None`: single-node).
    pub ha: Option<HaSettings>,
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

    /// What `explain` needs from `[enforce]` and `[safety]`; built here so
    /// that `policy` stays free of the config it is loaded by.
    pub fn explain_settings(&self) -> ExplainSettings<'_> {
        ExplainSettings {
            grace: self.enforce.grace,
            global_dry_run: self.enforce.dry_run,
            protected_numbers: &self.safety.protected_numbers,
        }
    }
}
