//! A high-availability cluster for the scenario tests: the test's own
//! PostgreSQL, one in-process simulator with several accounts, and real
//! `callwarden run` processes, each with its own config and state
//! directory, all pointed at the same database. Plus the checks every
//! scenario makes on the simulator's record of what happened.

use std::path::PathBuf;
use std::time::Duration;

use callwarden::sim::{SimHandle, SimOptions};
use serde_json::Value;

use super::daemon::{command, Daemon, LIMIT};
use super::pg::PgServer;

/// The lease time the scenarios use: short, so failovers are quick.
pub const LEASE_TTL: &str = "3s";
/// The renewal period that goes with it.
pub const RENEW_EVERY: &str = "1s";
/// The poll interval of every node.
pub const POLL: &str = "500ms";
/// Calls to +1900... end 5 s after they start (the rule every scenario uses).
pub const LIMIT_S: f64 = 5.0;

const POLICY: &str = r#"
[[rule]]
name = "premium-5s"
max_duration = "5s"
measure_from = "start"
[rule.match]
to = ["+1900*"]
"#;

/// One account as the simulator and the configs know it.
#[derive(Debug, Clone)]
pub struct Account {
    /// The config's account name.
    pub name: String,
    /// Its auth id.
    pub auth_id: String,
    /// Its token.
    pub token: String,
}

/// The database, the simulator and the accounts; nodes are started on it.
pub struct Cluster {
    /// The test's PostgreSQL.
    pub pg: PgServer,
    /// The simulator every node polls.
    pub sim: SimHandle,
    /// The accounts.
    pub accounts: Vec<Account>,
    root: tempfile::TempDir,
}

impl Cluster {
    /// A cluster with `names` accounts, or `None` (skip) without PostgreSQL.
    pub fn start(names: &[String]) -> Option<Cluster> {
        let pg = PgServer::start()?;
        let accounts: Vec<Account> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Account {
                name: name.clone(),
                auth_id: format!("MA{i:018}"),
                token: format!("token-{i}"),
            })
            .collect();
        let sim = super::start_sim(SimOptions {
            accounts: accounts
                .iter()
                .map(|a| (a.auth_id.clone(), a.token.clone()))
                .collect(),
            ..SimOptions::ephemeral()
        });
        let root = tempfile::tempdir().expect("tempdir");
        Some(Cluster {
            pg,
            sim,
            accounts,
            root,
        })
    }

    /// Writes `node_id`'s config directory (once) and returns its config.
    pub fn config(&self, node_id: &str) -> PathBuf {
        let dir = self.root.path().join(node_id);
        let path = dir.join("callwarden.toml");
        if path.exists() {
            return path;
        }
        std::fs::create_dir_all(dir.join("policies")).expect("policies dir");
        std::fs::write(dir.join("policies/rules.toml"), POLICY).expect("policy");
        let mut text = format!(
            r#"policies = "policies"

[api]
base_url = "{base_url}"
timeout = "2s"
max_requests_per_second = 1000

[poll]
interval = "{POLL}"

[retry]
max_attempts = 4
initial_backoff = "200ms"
max_backoff = "1s"

[safety]
max_hangups_per_cycle = 1000
max_hangups_percent = 100

[state]
dir = "state"

[http]
listen = "127.0.0.1:0"

[log]
format = "json"

[ha]
node_id = "{node_id}"
lease_ttl = "{LEASE_TTL}"
renew_every = "{RENEW_EVERY}"
"#,
            base_url = self.sim.base_url(),
        );
        for (i, account) in self.accounts.iter().enumerate() {
            let token = format!("token-{i}");
            std::fs::write(dir.join(&token), format!("{}\n", account.token)).expect("token");
            super::files::private(&dir.join(&token));
            text.push_str(&format!(
                "\n[[account]]\nname = \"{}\"\nauth_id = \"{}\"\nauth_token_file = \"{token}\"\n",
                account.name, account.auth_id
            ));
        }
        std::fs::write(&path, text).expect("config");
        path
    }

    /// `callwarden run` as `node_id`, the database URL in its environment.
    pub fn run_command(&self, node_id: &str) -> tokio::process::Command {
        let mut run = command(&self.config(node_id), &["run"]);
        run.env("CALLWARDEN_POSTGRES_URL", self.pg.url());
        run
    }

    /// Starts `callwarden run` as `node_id`.
    pub async fn start_node(&self, node_id: &str) -> Daemon {
        Daemon::start_with(self.run_command(node_id)).await
    }

    /// `node_id`'s audit log, every whole line parsed.
    pub fn audit(&self, node_id: &str) -> Vec<Value> {
        let path = self.root.path().join(node_id).join("state/audit.jsonl");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|line| serde_json::from_str(line).expect("an audit line is JSON"))
            .collect()
    }

    /// Adds calls to the account at `index`, `age_s` old, to premium numbers.
    pub async fn add_premium_calls(&self, index: usize, ages: &[f64]) -> Vec<String> {
        let calls: Vec<Value> = ages
            .iter()
            .map(|age| {
                let mut call = super::calls::outbound(*age, "+19005550100");
                call["account"] = self.accounts[index].auth_id.clone().into();
                call
            })
            .collect();
        super::add_calls(&self.sim, Value::Array(calls)).await
    }
}

/// `account`'s role on `daemon` from its `/status`: role word and epoch.
pub async fn role(daemon: &Daemon, account: &str) -> (String, Option<i64>) {
    let status = daemon.status().await;
    let found = status["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["account"] == account)
        .cloned()
        .unwrap_or(Value::Null);
    (
        found["ha"]["role"].as_str().unwrap_or("").to_owned(),
        found["ha"]["epoch"].as_i64(),
    )
}

/// Waits (hang guard [`LIMIT`]) until exactly one of `daemons` leads
/// `account`; returns its index and epoch.
pub async fn wait_single_leader(daemons: &[&Daemon], account: &str) -> (usize, i64) {
    let until = tokio::time::Instant::now() + LIMIT;
    loop {
        let mut leaders = Vec::new();
        for (i, daemon) in daemons.iter().enumerate() {
            if let (word, Some(epoch)) = role(daemon, account).await {
                if word == "leader" {
                    leaders.push((i, epoch));
                }
            }
        }
        if let [only] = leaders[..] {
            return only;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no single leader of {account}: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (hang guard [`LIMIT`]) until `account` is led by the member that
/// rendezvous hashing prefers among `ids` (the names of `daemons`, in
/// order): the cluster has settled, no hand-over is pending.
pub async fn wait_settled(daemons: &[&Daemon], ids: &[&str], account: &str) -> (usize, i64) {
    let preferred = callwarden::ha::preferred_member(account, ids).expect("members");
    let expected = ids.iter().position(|id| *id == preferred).expect("known");
    let until = tokio::time::Instant::now() + LIMIT;
    loop {
        let (leader, epoch) = wait_single_leader(daemons, account).await;
        if leader == expected {
            return (leader, epoch);
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{account} stays with {}, not {preferred}",
            ids[leader]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (hang guard `limit`) until the simulator has ended every call.
pub async fn wait_all_ended(sim: &SimHandle, uuids: &[String], limit: Duration) {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let live: Vec<&String> = uuids
            .iter()
            .filter(|u| !super::calls::ended(sim, u))
            .collect();
        if live.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{} calls never ended: {live:?}",
            live.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The checks of every scenario, from the simulator's own records: no
/// call got two DELETEs answered 2xx, and none was hung up before
/// [`LIMIT_S`] after its start.
pub fn assert_never_twice_never_early(sim: &SimHandle, uuids: &[String]) {
    for uuid in uuids {
        let call = sim.state().call(uuid).expect("the call exists");
        assert!(call.hangups <= 1, "{uuid} got {} 2xx DELETEs", call.hangups);
        if let (Some(ended), Some(callwarden::sim::state::EndedBy::Api)) =
            (call.ended_at, call.ended_by)
        {
            let age = (ended - call.started_at).num_milliseconds() as f64 / 1000.0;
            assert!(
                age >= LIMIT_S,
                "{uuid} hung up early, {age} s after its start"
            );
        }
    }
}

/// DELETE requests `daemon` has sent (any answer), from its own metrics.
pub async fn deletes_sent(daemon: &Daemon) -> f64 {
    super::daemon::sample_sum(
        &daemon.metrics().await,
        "callwarden_api_requests_total",
        &[("endpoint", "hangup")],
    )
}
