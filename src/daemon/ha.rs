//! `run` with `[ha]`: one supervisor per account runs the account's engine
//! only while this node holds its lease, started with what the previous
//! leader left in the database and fenced by the lease at that epoch. It
//! stands between the listener and the engine, so the listener's handle on
//! an account lives across engines, and a standby still publishes its
//! status (the systemd watchdog and `/readyz` see it).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::audit;
use crate::call::CallUuid;
use crate::config::{self, HaSettings};
use crate::engine::fence::Takeover;
use crate::engine::{
    AccountStatus, Command, Engine, HaRole, HaStatus, PardonReply, Settings, Shared,
};
use crate::ha::coordinator::{Node, NodeSettings};
use crate::ha::db;
use crate::ha::guard::LeaseGuard;
use crate::policy::Policy;
use crate::vobiz::Client;

/// Resolves `[ha]` for this host: the URL is required, the node id
/// defaults to the hostname.
pub(super) fn node_settings(ha: &HaSettings) -> anyhow::Result<NodeSettings> {
    let url = ha.require_url().map_err(anyhow::Error::msg)?.clone();
    let node_id = match &ha.node_id {
        Some(id) => id.clone(),
        None => hostname()?,
    };
    Ok(NodeSettings {
        node_id,
        url,
        lease_ttl: ha.lease_ttl,
        renew_every: ha.renew_every,
    })
}

/// The kernel's host name, checked as a node id.
fn hostname() -> anyhow::Result<String> {
    let path = "/proc/sys/kernel/hostname";
    let name = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the host name from {path}: set [ha] node_id"))?;
    let name = name.trim().to_owned();
    if !config::valid_node_id(&name) {
        bail!("the host name `{name}` is not usable as a node id: set [ha] node_id");
    }
    Ok(name)
}

/// One account on this node.
pub(super) struct Supervisor {
    /// The account.
    pub(super) account: String,
    /// Its API client.
    pub(super) api: Arc<Client>,
    /// Its rules (kept current across reloads for the next engine).
    pub(super) policy: Arc<Policy>,
    /// The engine settings (same).
    pub(super) settings: Settings,
    /// What every engine shares; each engine gets its own fence.
    pub(super) shared: Shared,
    /// What the local audit log said at start: for the first engine only,
    /// as later ones would re-close what the first closed.
    pub(super) replay: Option<Arc<audit::Replay>>,
    /// This node.
    pub(super) node: Arc<Node>,
}

/// The engine running while this node leads.
struct Running {
    epoch: i64,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<AccountStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Supervisor {
    /// Runs until `stop` turns true, then stops the engine (its in-flight
    /// hangups finish) and returns.
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        status: watch::Sender<AccountStatus>,
        stop: watch::Receiver<bool>,
    ) {
        let Some(mut role) = self.node.role(&self.account) else {
            return;
        };
        let mut running: Option<Running> = None;
        let mut stopped: Vec<JoinHandle<()>> = Vec::new();
        loop {
            tokio::select! {
                () = super::stop_signalled(stop.clone()) => break,
                changed = role.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = role.borrow_and_update().clone();
                    self.follow(&now, &mut running, &mut stopped).await;
                    if running.is_none() {
                        status.send_replace(self.standby_status(now));
                    }
                }
                Some(command) = commands.recv() => self.command(command, running.as_ref()).await,
                Some(engine) = engine_status(&mut running) => {
                    let ha = role.borrow().clone();
                    status.send_replace(AccountStatus { ha: Some(ha), ..engine });
                }
            }
        }
        if let Some(running) = running.take() {
            stopped.push(stop_engine(running));
        }
        for task in stopped {
            let _ = task.await;
        }
    }

    /// Starts or stops the engine to match the role.
    async fn follow(
        &mut self,
        role: &HaStatus,
        running: &mut Option<Running>,
        stopped: &mut Vec<JoinHandle<()>>,
    ) {
        let leads_at = (role.role == HaRole::Leader)
            .then_some(role.epoch)
            .flatten();
        if running.as_ref().map(|r| r.epoch) == leads_at {
            return;
        }
        if let Some(old) = running.take() {
            tracing::info!(account = %self.account, epoch = old.epoch, "stopping enforcement of the account");
            stopped.push(stop_engine(old));
        }
        stopped.retain(|task| !task.is_finished());
        if let Some(epoch) = leads_at {
            match self.start(epoch).await {
                Ok(started) => *running = Some(started),
                Err(error) => tracing::error!(account = %self.account, epoch, %error,
                    "cannot take the account over; trying again at the next renewal"),
            }
        }
    }

    /// Loads what the previous leader left and starts an engine at `epoch`.
    async fn start(&mut self, epoch: i64) -> anyhow::Result<Running> {
        let account = self.account.as_str();
        let (pending, pardons, first_seen) = self
            .node
            .data
            .run(self.node.request_limit(), async |client| {
                Ok((
                    db::pending_intents(client, account).await?,
                    db::pardons(client, account).await?,
                    db::first_seen_times(client, account).await?,
                ))
            })
            .await?;
        let now = self.shared.clock.now();
        let inherited: HashMap<CallUuid, i64> = pending
            .iter()
            .filter_map(|p| Some((CallUuid::parse(&p.call_uuid).ok()?, p.id)))
            .collect();
        let takeover = Takeover {
            pending: inherited.keys().cloned().collect(),
            pardons: pardons
                .into_iter()
                .filter_map(|(uuid, until)| {
                    let until = match until {
                        None => None,
                        Some(ms) => Some(DateTime::<Utc>::from_timestamp_millis(ms)?),
                    };
                    until
                        .is_none_or(|u| u > now)
                        .then(|| Some((CallUuid::parse(&uuid).ok()?, until)))
                        .flatten()
                })
                .collect(),
            first_seen: first_seen
                .into_iter()
                .filter_map(|(uuid, ms)| {
                    Some((
                        CallUuid::parse(&uuid).ok()?,
                        DateTime::<Utc>::from_timestamp_millis(ms)?,
                    ))
                })
                .collect(),
        };
        tracing::info!(
            account,
            epoch,
            pending = takeover.pending.len(),
            pardons = takeover.pardons.len(),
            first_seen = takeover.first_seen.len(),
            "taking the account over"
        );
        let guard = LeaseGuard::new(
            Arc::clone(&self.node),
            self.account.clone(),
            epoch,
            inherited,
        );
        let shared = Shared {
            fence: Some(guard),
            ..self.shared.clone()
        };
        let mut engine = Engine::new(
            self.account.clone(),
            Arc::clone(&self.api),
            Arc::clone(&self.policy),
            self.settings.clone(),
            shared,
            &self.replay.take().unwrap_or_default(),
        );
        engine.take_over(takeover);
        let (commands, commands_rx) = mpsc::channel(64);
        let status = engine.status();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(engine.run(commands_rx, super::stop_signalled(stop_rx)));
        Ok(Running {
            epoch,
            commands,
            status,
            stop,
            task,
        })
    }

    /// Passes a command to the engine; keeps reloads for the next engine,
    /// and saves pardons in the database for the next leader.
    async fn command(&mut self, command: Command, running: Option<&Running>) {
        let command = match command {
            Command::Reload { policy, settings } => {
                self.policy = Arc::clone(&policy);
                self.settings = (*settings).clone();
                Command::Reload { policy, settings }
            }
            Command::Pardon { uuid, until, reply } if running.is_some() => {
                let (engine_reply, answer) = oneshot::channel();
                let node = Arc::clone(&self.node);
                let account = self.account.clone();
                let call = uuid.to_string();
                tokio::spawn(async move {
                    let answer = answer.await.unwrap_or(PardonReply::Untracked);
                    if answer != PardonReply::Refused {
                        save_pardon(&node, &account, &call, until).await;
                    }
                    let _ = reply.send(answer);
                });
                Command::Pardon {
                    uuid,
                    until,
                    reply: engine_reply,
                }
            }
            other => other,
        };
        match running {
            Some(running) => {
                let _ = running.commands.send(command).await;
            }
            // A standby tracks nothing; the listener names the leader.
            None => match command {
                Command::Pardon { reply, .. } => {
                    let _ = reply.send(PardonReply::Untracked);
                }
                Command::Hangup { reply, .. } => {
                    let _ = reply.send(Vec::new());
                }
                Command::Calls { reply } => {
                    let _ = reply.send(Vec::new());
                }
                Command::ReleaseBreaker | Command::Reload { .. } => {}
            },
        }
    }

    fn standby_status(&self, ha: HaStatus) -> AccountStatus {
        AccountStatus {
            account: self.account.clone(),
            healthy: true,
            rules: self.policy.rules.iter().map(|r| r.name.clone()).collect(),
            ha: Some(ha),
            ..AccountStatus::default()
        }
    }
}

/// The engine's next published status, or never while none runs.
async fn engine_status(running: &mut Option<Running>) -> Option<AccountStatus> {
    let Some(running) = running else {
        return std::future::pending().await;
    };
    if running.status.changed().await.is_err() {
        return std::future::pending().await;
    }
    Some(running.status.borrow_and_update().clone())
}

/// Asks the engine to stop; it drains its in-flight hangups in the task.
fn stop_engine(running: Running) -> JoinHandle<()> {
    let _ = running.stop.send(true);
    running.task
}

/// Saves a pardon for the next leader; a failure is logged (the running
/// engine has it either way).
async fn save_pardon(node: &Node, account: &str, call: &str, until: Option<DateTime<Utc>>) {
    let until_ms = until.map(|u| u.timestamp_millis());
    let result = node
        .data
        .run(node.request_limit(), async |client| {
            db::save_pardon(client, account, call, until_ms).await
        })
        .await;
    if let Err(error) = result {
        tracing::warn!(%account, call, %error,
            "cannot save the pardon in the HA database: it holds here, but not after a failover");
    }
}
