//! Start-up shared by every command that talks to the API or enforces:
//! loading the config, building the clients, and opening the state
//! directory (lock, audit log, replay).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::audit::{self, AuditLog};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{self, Config, Diagnostic, Environment};
use crate::engine::Shared;
use crate::metrics::Metrics;
use crate::vobiz::{Client, ClientConfig};

/// The lock file inside the state directory: one daemon (or `once`) at a time.
pub const LOCK_FILE: &str = "callwarden.lock";

/// How long the exit waits for the audit log's last sync.
const AUDIT_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// An exclusive hold on the state directory, released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Takes the state directory's lock, or says who holds it.
pub fn lock_state_dir(dir: &Path) -> anyhow::Result<StateLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(StateLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another callwarden (the daemon?) holds {}; stop it first",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The state directory opened for enforcement: locked, its audit log open
/// and replayed. The lock is held while this lives.
pub struct OpenState {
    /// What every engine shares (audit log, metrics, clock, state dir).
    pub shared: Shared,
    /// What the audit log says about earlier runs.
    pub replay: audit::Replay,
    _lock: StateLock,
}

impl OpenState {
    /// Waits until every audit record queued so far is on disk: the last
    /// step before exiting. Bounded, so a hung disk cannot hold the exit.
    pub async fn flush_audit(&self) {
        match tokio::time::timeout(AUDIT_FLUSH_LIMIT, self.shared.audit.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "cannot flush the audit log on exit"),
            Err(_) => tracing::error!(
                limit_s = AUDIT_FLUSH_LIMIT.as_secs(),
                "cannot flush the audit log on exit: the disk did not answer in time"
            ),
        }
    }
}

/// Locks `[state] dir`, opens and replays its audit log: the start of
/// `run`, `once` and `demo` alike.
pub fn open_state(
    config: &Config,
    clock: SharedClock,
    metrics: Arc<Metrics>,
) -> anyhow::Result<OpenState> {
    let dir = &config.state_dir;
    let lock = lock_state_dir(dir)?;
    let options = audit::Options {
        health: metrics.audit.clone(),
        ..audit::Options::default()
    };
    let audit = AuditLog::open_with(dir, options)
        .with_context(|| format!("cannot open the audit log in {}", dir.display()))?;
    let replay = audit::replay(dir).context("cannot read the audit log")?;
    if replay.bad_lines > 0 {
        tracing::warn!(
            lines = replay.bad_lines,
            "skipped unreadable audit lines (a torn write from a crash?)"
        );
    }
    if !replay.pending.is_empty() {
        tracing::warn!(
            calls = replay.pending.len(),
            "resuming hangups that were in flight when the last run stopped"
        );
    }
    Ok(OpenState {
        shared: Shared {
            state_dir: Some(dir.clone()),
            fence: None,
            audit: Arc::new(audit),
            metrics,
            clock,
        },
        replay,
        _lock: lock,
    })
}

/// Loads the config or returns every diagnostic as one error.
pub fn load_config(path: &Path, env: &Environment) -> anyhow::Result<config::Loaded> {
    match config::load(path, env) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                tracing::warn!("{warning}");
            }
            Ok(loaded)
        }
        Err(diagnostics) => bail!("{}", render(&diagnostics)),
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    format!("invalid configuration:\n{}", lines.join("\n"))
}

/// Builds the API client of every account; each needs a token.
pub fn clients(config: &Config, clock: &SharedClock) -> anyhow::Result<Vec<(String, Arc<Client>)>> {
    config
        .accounts
        .iter()
        .map(|account| {
            let Some(token) = account.token.clone() else {
                bail!(
                    "account `{}` has no auth token: set VOBIZ_AUTH_TOKEN, auth_token_file, or the systemd credential",
                    account.name
                );
            };
            let client = Client::new(ClientConfig {
                base_url: config.api.base_url.clone(),
                auth_id: account.auth_id.clone(),
                token,
                timeout: config.api.timeout,
                max_requests_per_second: config.api.max_requests_per_second,
                max_concurrent_requests: config.api.max_concurrent_requests,
                timestamp_zone: config.api.timestamp_zone,
                max_backoff: config.retry.max_backoff,
                clock: Arc::clone(clock),
            })
            .with_context(|| format!("account `{}`", account.name))?;
            Ok((account.name.clone(), Arc::new(client)))
        })
        .collect()
}

/// The system clock, shared.
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}
