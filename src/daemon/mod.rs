//! `callwarden run`: starts one engine per account, the status listener and
//! the reload/breaker signal handlers, and runs until its stop future
//! resolves. Start-up shared with other commands is in [`crate::startup`],
//! systemd in `systemd.rs`.

mod ha;
mod systemd;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt as _;
use signal_hook::consts::signal::{SIGHUP, SIGUSR1};
use tokio::sync::{mpsc, watch};

use crate::clock::SharedClock;
use crate::config::{self, Config, Environment};
use crate::engine::{AccountStatus, Command, Engine, Settings};
use crate::ha::coordinator::Node;
use crate::http::{self, AccountHandle, HttpState};
use crate::metrics::{AccountLabel, Metrics};
use crate::startup::{clients, load_config, open_state};

use systemd::{feed_systemd, notify};

/// What `run` needs besides the config path.
pub struct RunOptions {
    /// The environment (tokens, state directory).
    pub env: Environment,
    /// Wall-clock time.
    pub clock: SharedClock,
    /// Jitter seed for retries (tests).
    pub jitter_seed: Option<u64>,
}

/// Runs the daemon until `shutdown` resolves (the command passes SIGTERM or
/// SIGINT; tests pass their own), then lets in-flight hangups finish and
/// flushes the audit log. SIGHUP reloads, SIGUSR1 releases the breaker.
pub async fn run(
    config_path: PathBuf,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Installed first: until then SIGHUP would kill the process outright,
    // and systemd may send it as soon as READY=1 is out.
    let mut signals = signal_hook_tokio::Signals::new([SIGHUP, SIGUSR1])
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
    let node = match &config.ha {
        Some(ha) => {
            let names: Vec<String> = config.accounts.iter().map(|a| a.name.clone()).collect();
            let node = Node::new(ha::node_settings(ha)?, &names, Arc::clone(&metrics));
            tokio::spawn(Arc::clone(&node).run(stop_signalled(stop_rx.clone())));
            tracing::info!(node_id = %node.node_id(), lease_ttl = ?ha.lease_ttl,
                renew_every = ?ha.renew_every, "high availability on: enforcing only the accounts whose lease this node holds");
            Some(node)
        }
        None => None,
    };
    let replay = Arc::new(replay.clone());
    for (name, client) in clients(&config, &clock)? {
        let policy = config.policy_of(&name);
        let (commands_tx, commands_rx) = mpsc::channel(64);
        let status = match &node {
            Some(node) => {
                let (status_tx, status) = watch::channel(AccountStatus {
                    account: name.clone(),
                    ..AccountStatus::default()
                });
                let supervisor = ha::Supervisor {
                    account: name.clone(),
                    api: client,
                    policy,
                    settings: settings.clone(),
                    shared: shared.clone(),
                    replay: Some(Arc::clone(&replay)),
                    node: Arc::clone(node),
                };
                engines.push(tokio::spawn(supervisor.run(
                    commands_rx,
                    status_tx,
                    stop_rx.clone(),
                )));
                status
            }
            None => {
                let engine = Engine::new(
                    name.clone(),
                    client,
                    policy,
                    settings.clone(),
                    shared.clone(),
                    &replay,
                );
                // A single node leads every account it has.
                let label = AccountLabel {
                    account: name.clone(),
                };
                metrics.leader.get_or_create(&label).set(1);
                metrics.lease_epoch.get_or_create(&label).set(0);
                let status = engine.status();
                engines.push(tokio::spawn(
                    engine.run(commands_rx, stop_signalled(stop_rx.clone())),
                ));
                status
            }
        };
        handles.push((
            name,
            AccountHandle {
                status,
                commands: commands_tx,
            },
        ));
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
        let shutdown = stop_signalled(stop_rx.clone());
        let config_max_connections = config.http.max_connections;
        tokio::spawn(async move {
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

    tokio::pin!(shutdown);
    loop {
        let signal = tokio::select! {
            () = &mut shutdown => break,
            signal = signals.next() => signal,
        };
        match signal {
            Some(SIGHUP) => {
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
            Some(SIGUSR1) => {
                for (_, handle) in &handles {
                    let _ = handle.commands.send(Command::ReleaseBreaker).await;
                }
            }
            // The handlers are gone: nothing can reload or stop us any more.
            _ => break,
        }
    }
    tracing::info!("stopping: finishing in-flight hangups");
    notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    for engine in engines {
        let _ = engine.await;
    }
    state.flush_audit().await;
    if let Some(node) = node {
        node.leave().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves once `stop` turns true (or its sender is gone): how every task
/// of the daemon learns that the daemon is stopping.
pub(super) async fn stop_signalled(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
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
            for diagnostic in &diagnostics {
                tracing::error!("{diagnostic}");
            }
            tracing::error!(
                errors = diagnostics.iter().filter(|d| d.is_error()).count(),
                "reload failed: the old config and policies stay in force"
            );
            // Counted after the log lines, so whoever sees the counter move
            // (an alert, a test) finds the reason already logged.
            metrics.reload(false);
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
            tracing::info!(files = loaded.files.len(), "reloaded config and policies");
            metrics.reload(true);
        }
    }
    notify(&[sd_notify::NotifyState::Ready]);
}
