//! Running the real engine against an in-process simulator: policies from
//! TOML text, settings with small timings, the audit log in a temp dir.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use callwarden::audit::{self, AuditLog, Record};
use callwarden::clock::{SharedClock, SystemClock};
use callwarden::config::{self, EnforceSettings, RetrySettings, SafetySettings};
use callwarden::engine::{AccountStatus, Command, Engine, Settings, Shared};
use callwarden::metrics::Metrics;
use callwarden::sim::SimHandle;
use callwarden::vobiz::Client;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Settings for tests: 1 s polls, quick retries, the default safety limits.
pub fn settings() -> Settings {
    Settings {
        poll_interval: Duration::from_secs(1),
        enforce: EnforceSettings {
            dry_run: false,
            grace: Duration::ZERO,
        },
        retry: RetrySettings {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(3),
        },
        safety: SafetySettings {
            protected_numbers: ["911", "112", "999"].map(String::from).to_vec(),
            max_hangups_per_cycle: 100,
            max_hangups_percent: 100,
            breaker_min_live_calls: 20,
        },
        max_concurrent_requests: 8,
        max_requests_per_second: 0,
        jitter_seed: Some(7),
        stop_grace: Duration::from_secs(5),
    }
}

/// A running engine and what a test needs to watch it.
pub struct Running {
    /// The audit directory.
    pub state: tempfile::TempDir,
    /// Commands to the engine.
    pub commands: mpsc::Sender<Command>,
    /// The engine's published state.
    pub status: watch::Receiver<AccountStatus>,
    /// The metrics it updates.
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Every audit record so far.
    pub fn audit(&self) -> Vec<Record> {
        audit::read_all(self.state.path())
            .expect("audit readable")
            .0
    }

    /// Audit records about one call.
    pub fn audit_of(&self, uuid: &str) -> Vec<Record> {
        self.audit()
            .into_iter()
            .filter(|r| r.call_uuid == uuid)
            .collect()
    }

    /// Stops the engine and waits for it.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        self.state
    }
}

/// Writes `policy_toml` to a file and compiles it.
pub fn policy(policy_toml: &str) -> Arc<callwarden::policy::Policy> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("rules.toml");
    std::fs::write(&path, policy_toml).expect("write policy");
    let (policy, _warnings) = config::load_policy_files(&[path], Utc::now())
        .unwrap_or_else(|d| panic!("test policy invalid: {d:?}"));
    Arc::new(policy)
}

/// Starts the engine for the default account of `sim`.
pub fn start(sim: &SimHandle, policy_toml: &str, settings: Settings) -> Running {
    start_in(
        sim,
        policy_toml,
        settings,
        tempfile::tempdir().expect("tempdir"),
    )
}

/// Starts the engine with an existing state directory (restart tests).
pub fn start_in(
    sim: &SimHandle,
    policy_toml: &str,
    settings: Settings,
    state: tempfile::TempDir,
) -> Running {
    start_with(super::client_config(sim), policy_toml, settings, state)
}

/// Starts the engine with a client configured by the test (rate budget, ...).
pub fn start_with(
    client: callwarden::vobiz::ClientConfig,
    policy_toml: &str,
    settings: Settings,
    state: tempfile::TempDir,
) -> Running {
    let audit = AuditLog::open(state.path()).expect("audit");
    start_with_audit(client, policy_toml, settings, state, audit)
}

/// Starts the engine writing its audit log through `audit` (a test's disk).
pub fn start_with_audit(
    client: callwarden::vobiz::ClientConfig,
    policy_toml: &str,
    settings: Settings,
    state: tempfile::TempDir,
    audit: AuditLog,
) -> Running {
    let client = Arc::new(Client::new(client).expect("client"));
    start_on(client, policy_toml, settings, state, audit)
}

/// Starts the engine on a client the test shares, so that the client and
/// its connections outlive the engine (a count of what the engine alone
/// frees when it stops).
pub fn start_on(
    client: Arc<Client>,
    policy_toml: &str,
    settings: Settings,
    state: tempfile::TempDir,
    audit: AuditLog,
) -> Running {
    let clock: SharedClock = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new());
    let shared = Shared {
        state_dir: Some(state.path().to_path_buf()),
        fence: None,
        audit: Arc::new(audit),
        metrics: Arc::clone(&metrics),
        clock,
    };
    let replay = audit::replay(state.path()).expect("replay");
    let engine = Engine::new(
        "default".to_owned(),
        client,
        policy(policy_toml),
        settings,
        shared,
        &replay,
    );
    let status = engine.status();
    let (commands, commands_rx) = mpsc::channel(8);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(commands_rx, async move {
        let _ = stop_rx.await;
    }));
    Running {
        state,
        commands,
        status,
        metrics,
        stop: Some(stop),
        task,
    }
}

/// The audit file with syncs that return at once: for tests of timing that
/// the disk has no part in (the writer still runs on its own thread).
struct NoSyncDisk(audit::FileDisk);

impl audit::Disk for NoSyncDisk {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.0.truncate(len)
    }
    fn size(&mut self) -> std::io::Result<u64> {
        self.0.size()
    }
    fn rotate(&mut self) -> std::io::Result<()> {
        self.0.rotate()
    }
    fn name(&self) -> String {
        self.0.name()
    }
}

/// An audit log in `dir` whose syncs take no time (see [`NoSyncDisk`]).
pub fn instant_audit(dir: &std::path::Path) -> AuditLog {
    let path = dir.join(audit::AUDIT_FILE);
    let disk = NoSyncDisk(audit::FileDisk::open(&path).expect("audit file"));
    AuditLog::with_disk(path, disk, audit::Options::default()).expect("audit writer")
}

/// Polls `condition` every 50 ms until it holds or `limit` passes.
pub async fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < until {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

/// Waits until every call in `uuids` has ended in the simulator.
pub async fn wait_ended(sim: &SimHandle, uuids: &[String], limit: Duration) -> bool {
    let state = sim.state().clone();
    let uuids = uuids.to_vec();
    wait_for(limit, move || {
        uuids
            .iter()
            .all(|u| state.call(u).is_some_and(|c| c.ended_at.is_some()))
    })
    .await
}

/// Parses a simulator log timestamp.
pub fn t_wall(record: &serde_json::Value) -> DateTime<Utc> {
    record["t_wall"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .expect("t_wall")
        .with_timezone(&Utc)
}

/// The simulator's API requests of one method on one call.
pub fn requests(log: &[serde_json::Value], method: &str, uuid: &str) -> Vec<serde_json::Value> {
    log.iter()
        .filter(|r| r["method"] == method && r["uuid"] == uuid)
        .cloned()
        .collect()
}
