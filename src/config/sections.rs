//! Each section of `callwarden.toml` as a type with its one [`Default`]:
//! the loader starts from these, the API client's constructor uses them, and
//! `examples/callwarden.toml` states exactly them (tests/docs.rs checks).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use chrono_tz::Tz;

use crate::vobiz::Secret;

/// The default `[api] base_url`.
pub const DEFAULT_BASE_URL: &str = "https://api.vobiz.ai/api/v1";
/// The default `[poll] interval`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// The default `[safety] protected_numbers`.
pub const DEFAULT_PROTECTED_NUMBERS: &[&str] =
    &["911", "112", "999", "000", "100", "101", "102", "108"];
/// The default `[state] dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/callwarden";
/// The default `[http] listen`, as written in the config.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9469";

/// `[api]`: how to reach the API.
#[derive(Debug, Clone, PartialEq)]
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

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: Duration::from_secs(10),
            max_requests_per_second: 10,
            max_concurrent_requests: 8,
            timestamp_zone: Tz::UTC,
        }
    }
}

impl Default for EnforceSettings {
    fn default() -> Self {
        Self {
            dry_run: false,
            grace: Duration::ZERO,
        }
    }
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl Default for SafetySettings {
    fn default() -> Self {
        Self {
            protected_numbers: DEFAULT_PROTECTED_NUMBERS
                .iter()
                .map(|n| (*n).to_owned())
                .collect(),
            max_hangups_per_cycle: 100,
            max_hangups_percent: 50,
            breaker_min_live_calls: 20,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            // DEFAULT_LISTEN, built without parsing so it cannot fail.
            listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9469))),
            allow_remote_pardon: false,
            max_connections: 64,
            api_token: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_listener_is_the_documented_address() {
        assert_eq!(
            HttpSettings::default().listen,
            DEFAULT_LISTEN.parse::<SocketAddr>().ok()
        );
    }
}
