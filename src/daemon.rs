//! `callwarden run`: loads the config, starts one engine per account, the
//! status listener and the signal handlers, and talks to systemd.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use tokio::sync::{mpsc, watch};

use crate::audit::{self, AuditLog};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{self, Config, Diagnostic, Environment};
use crate::engine::{AccountStatus, Command, Engine, Settings, Shared};
use crate::http::{self, AccountHandle, HttpState};
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

/// What `run` needs besides the config path.
pub struct RunOptions {
    /// The environment (tokens, state directory).
    pub env: Environment,
    /// Wall-clock time.
    pub clock: SharedClock,
    /// Jitter seed for retries (tests).
    pub jitter_seed: Option<u64>,
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config_path: PathBuf, options: RunOptions) -> anyhow::Result<()> {
    // Installed first: until then SIGHUP/SIGTERM would kill the process
    // outright, and systemd may send them as soon as READY=1 is out.
    let mut signals = signal_hook_tokio::Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1])
        .context("cannot install signal handlers")?;
    let loaded = load_config(&config_path, &options.env)?;
    let config = loaded.config;
    let clock = options.clock;
    let metrics = Arc::new(Metrics::new());
    let state = open_state(&config, Arc::clone(&clock), Arc::clone(&metrics))?;
    let (shared, replay) = (state.shared.clone(), &state.replay);
    let mut settings = Settings::from_config(&config);
    settings.jitter_seed = options.jitter_seed;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::new();
    let mut engines = Vec::new();
    for (name, client) in clients(&config, &clock)? {
        let policy = config.policy_of(&name);
        let engine = Engine::new(
            name.clone(),
            client,
            policy,
            settings.clone(),
            shared.clone(),
            replay,
        );
        let (commands_tx, commands_rx) = mpsc::channel(64);
        handles.push((
            name,
            AccountHandle {
                status: engine.status(),
                commands: commands_tx,
            },
        ));
        let mut stop = stop_rx.clone();
        engines.push(tokio::spawn(engine.run(commands_rx, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })));
    }

    let listener = match config.http.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ([http] listen)"))?,
        ),
        None => None,
    };
    if let Some(listener) = listener {
        // Plain `addr` so scripts (and tests, with port 0) can read it.
        match listener.local_addr() {
            Ok(addr) => tracing::info!(
                %addr,
                "status listener up: /metrics /healthz /readyz /status /pardon /hangup"
            ),
            Err(error) => tracing::warn!(%error, "status listener up at an unknown address"),
        }
        let state = HttpState {
            metrics: Arc::clone(&metrics),
            accounts: handles.iter().map(|(_, h)| h.clone()).collect(),
            allow_remote_pardon: config.http.allow_remote_pardon,
            poll_interval: config.poll_interval,
            clock: Arc::clone(&clock),
            api_token: config.http.api_token.clone(),
            global_dry_run: config.enforce.dry_run,
            hangups: Arc::new(crate::manual::Requests::acted_on(
                state.replay.request_ids.iter().cloned(),
            )),
        };
        let mut stop = stop_rx.clone();
        let config_max_connections = config.http.max_connections;
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            let limits = http::ListenerLimits::new(config_max_connections);
            if let Err(error) = http::serve(listener, state, limits, shutdown).await {
                tracing::error!(%error, "status listener failed");
            }
        });
    }

    tokio::spawn(feed_systemd(
        handles.iter().map(|(_, h)| h.status.clone()).collect(),
        metrics.audit.failing.clone(),
    ));
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        accounts = handles.len(),
        config = %config_path.display(),
        dry_run = config.enforce.dry_run,
        "callwarden running"
    );

    while let Some(signal) = signals.next().await {
        match signal {
            SIGHUP => {
                reload(
                    &config_path,
                    &options.env,
                    &config,
                    &handles,
                    &metrics,
                    options.jitter_seed,
                )
                .await
            }
            SIGUSR1 => {
                for (_, handle) in &handles {
                    let _ = handle.commands.send(Command::ReleaseBreaker).await;
                }
            }
            _ => {
                tracing::info!(signal, "stopping: finishing in-flight hangups");
                break;
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    for engine in engines {
        let _ = engine.await;
    }
    state.flush_audit().await;
    tracing::info!("stopped");
    Ok(())
}

async fn reload(
    config_path: &Path,
    env: &Environment,
    running: &Config,
    handles: &[(String, AccountHandle)],
    metrics: &Metrics,
    jitter_seed: Option<u64>,
) {
    notify(&[sd_notify::NotifyState::Reloading]);
    match config::load(config_path, env) {
        Err(diagnostics) => {
            metrics.reload(false);
            for diagnostic in &diagnostics {
                tracing::error!("{diagnostic}");
            }
            tracing::error!(
                errors = diagnostics.iter().filter(|d| d.is_error()).count(),
                "reload failed: the old config and policies stay in force"
            );
        }
        Ok(loaded) => {
            for warning in &loaded.warnings {
                tracing::warn!("{warning}");
            }
            let names =
                |c: &Config| -> Vec<String> { c.accounts.iter().map(|a| a.name.clone()).collect() };
            if names(&loaded.config) != names(running) {
                tracing::warn!(
                    "the set of accounts changed: new or removed accounts take effect on restart"
                );
            }
            let mut settings = Settings::from_config(&loaded.config);
            settings.jitter_seed = jitter_seed;
            for (name, handle) in handles {
                if let Some(account) = loaded.config.accounts.iter().find(|a| &a.name == name) {
                    let _ = handle
                        .commands
                        .send(Command::Reload {
                            policy: Arc::clone(&account.policy),
                            settings: Box::new(settings.clone()),
                        })
                        .await;
                }
            }
            metrics.reload(true);
            tracing::info!(files = loaded.files.len(), "reloaded config and policies");
        }
    }
    notify(&[sd_notify::NotifyState::Ready]);
}

/// Keeps STATUS= current and tells systemd the engines are alive
/// (WATCHDOG=1) once every engine has published since the last ping — each
/// does from its loop at every poll tick — so one stuck account loop stops
/// the pings even while others run.
async fn feed_systemd(
    mut statuses: Vec<watch::Receiver<AccountStatus>>,
    audit_failing: prometheus_client::metrics::gauge::Gauge,
) {
    if statuses.is_empty() {
        return;
    }
    let mut fresh = vec![false; statuses.len()];
    loop {
        let (changed, index, _) =
            futures::future::select_all(statuses.iter_mut().map(|s| Box::pin(s.changed()))).await;
        if changed.is_err() {
            return;
        }
        fresh[index] = true;
        // The others may have published meanwhile too.
        for (seen, status) in fresh.iter_mut().zip(statuses.iter_mut()) {
            if status.has_changed().unwrap_or(false) {
                status.mark_unchanged();
                *seen = true;
            }
        }
        let line = with_audit_state(status_line(&statuses), audit_failing.get() != 0);
        if take_all_fresh(&mut fresh) {
            notify(&[
                sd_notify::NotifyState::Watchdog,
                sd_notify::NotifyState::Status(&line),
            ]);
        } else {
            notify(&[sd_notify::NotifyState::Status(&line)]);
        }
        // Publishing happens several times a poll; a message a second is plenty.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// True when every engine published since the last ping; then starts over.
fn take_all_fresh(fresh: &mut [bool]) -> bool {
    if fresh.iter().all(|f| *f) {
        fresh.fill(false);
        true
    } else {
        false
    }
}

fn status_line(statuses: &[watch::Receiver<AccountStatus>]) -> String {
    let parts: Vec<String> = statuses
        .iter()
        .map(|s| {
            let s = s.borrow();
            let poll = match (&s.last_poll_error, s.last_poll_ok) {
                (Some(error), _) => format!("last poll failed: {error}"),
                (None, Some(at)) => format!("last poll ok {}", at.format("%H:%M:%S")),
                (None, None) => "no poll yet".to_owned(),
            };
            format!(
                "{}: {} live, {} tracked, {}{}",
                s.account,
                s.live_calls,
                s.tracked_calls,
                poll,
                if s.breaker_open { ", BREAKER OPEN" } else { "" }
            )
        })
        .collect();
    // One line: a newline would start a new assignment in the notify datagram.
    parts.join("; ").replace(['\n', '\r'], " ")
}

/// Puts a failing audit log first on the STATUS= line: while it lasts no
/// hangup is sent, which `systemctl status` should say before anything else.
fn with_audit_state(line: String, failing: bool) -> String {
    if failing {
        format!("AUDIT LOG NOT WRITABLE, hangups stopped; {line}")
    } else {
        line
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    let _ = sd_notify::notify(false, states);
}

/// The system clock, shared.
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_waits_for_every_engine() {
        let mut fresh = vec![true, false];
        assert!(!take_all_fresh(&mut fresh));
        assert_eq!(fresh, [true, false], "a partial round is kept");
        fresh[1] = true;
        assert!(take_all_fresh(&mut fresh));
        assert_eq!(fresh, [false, false], "each ping needs a new round");
        assert!(take_all_fresh(&mut []), "no engines: nothing to wait for");
    }

    #[test]
    fn a_failing_audit_log_leads_the_status_line() {
        assert_eq!(
            with_audit_state("default: 1 live".to_owned(), true),
            "AUDIT LOG NOT WRITABLE, hangups stopped; default: 1 live"
        );
        assert_eq!(
            with_audit_state("default: 1 live".to_owned(), false),
            "default: 1 live"
        );
    }

    #[test]
    fn the_status_line_is_one_line() {
        let (_tx, rx) = watch::channel(AccountStatus {
            account: "default".to_owned(),
            last_poll_error: Some("bad\nanswer".to_owned()),
            live_calls: 3,
            ..AccountStatus::default()
        });
        let line = status_line(&[rx]);
        assert_eq!(
            line,
            "default: 3 live, 0 tracked, last poll failed: bad answer"
        );
    }
}
