//! Running the REAL `callwarden` binary against an in-process simulator: a
//! temp config (policies, token file, state dir), the child process with its
//! JSON log read line by line, signals, and the status listener whose
//! address the daemon logs (it binds port 0).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callwarden::sim::{SimHandle, DEFAULT_AUTH_ID, DEFAULT_AUTH_TOKEN};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_callwarden");

/// Hang guard for anything a test waits for; never an assertion on speed.
pub const LIMIT: Duration = Duration::from_secs(30);

/// The config values tests change; everything else is fixed and small.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// `[poll] interval`.
    pub poll: &'static str,
    /// `[retry] max_attempts`.
    pub max_attempts: u32,
    /// `[retry] initial_backoff`.
    pub initial_backoff: &'static str,
    /// `[retry] max_backoff`.
    pub max_backoff: &'static str,
    /// `[safety] max_hangups_per_cycle`.
    pub max_hangups_per_cycle: u32,
    /// `[safety] breaker_min_live_calls`.
    pub breaker_min_live_calls: u32,
    /// `[http] listen`.
    pub listen: String,
    /// `[log] format`.
    pub log_format: &'static str,
    /// `[api] max_requests_per_second`.
    pub max_requests_per_second: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            poll: "1s",
            max_attempts: 4,
            initial_backoff: "200ms",
            max_backoff: "2s",
            max_hangups_per_cycle: 100,
            breaker_min_live_calls: 20,
            listen: "127.0.0.1:0".to_owned(),
            log_format: "json",
            max_requests_per_second: 1000,
        }
    }
}

/// A config directory: `callwarden.toml`, `policies/`, `token`, `state/`.
pub struct Setup {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
    base_url: String,
    knobs: Knobs,
}

impl Setup {
    /// Writes a config for `sim` with `policies` (file name, TOML) and `knobs`.
    pub fn new(sim: &SimHandle, policies: &[(&str, &str)], knobs: Knobs) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("policies dir");
        std::fs::write(dir.path().join("token"), format!("{DEFAULT_AUTH_TOKEN}\n")).expect("token");
        let setup = Self {
            dir,
            base_url: sim.base_url(),
            knobs,
        };
        for (name, text) in policies {
            setup.write_policy(name, text);
        }
        std::fs::write(setup.config_path(), setup.config_text(&setup.knobs)).expect("config");
        setup
    }

    /// The config file the daemon runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("callwarden.toml")
    }

    /// The state directory (audit log, lock).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes (or replaces) a policy file.
    pub fn write_policy(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join("policies").join(name), text).expect("policy");
    }

    /// The config text for `knobs`.
    pub fn config_text(&self, knobs: &Knobs) -> String {
        format!(
            r#"policies = "policies"

[api]
base_url = "{base_url}"
auth_id = "{DEFAULT_AUTH_ID}"
auth_token_file = "token"
timeout = "2s"
max_requests_per_second = {max_requests_per_second}

[poll]
interval = "{poll}"

[retry]
max_attempts = {max_attempts}
initial_backoff = "{initial_backoff}"
max_backoff = "{max_backoff}"

[safety]
protected_numbers = ["911"]
max_hangups_per_cycle = {max_hangups_per_cycle}
max_hangups_percent = 100
breaker_min_live_calls = {breaker_min_live_calls}

[state]
dir = "state"

[http]
listen = "{listen}"

[log]
format = "{log_format}"
"#,
            base_url = self.base_url,
            poll = knobs.poll,
            max_attempts = knobs.max_attempts,
            initial_backoff = knobs.initial_backoff,
            max_backoff = knobs.max_backoff,
            max_hangups_per_cycle = knobs.max_hangups_per_cycle,
            breaker_min_live_calls = knobs.breaker_min_live_calls,
            listen = knobs.listen,
            log_format = knobs.log_format,
            max_requests_per_second = knobs.max_requests_per_second,
        )
    }

    /// A second config beside the first, the same but for `[http] listen`:
    /// what an operator's CLI (`pardon`) reads to find a daemon bound to port 0.
    pub fn cli_config(&self, listen: SocketAddr) -> PathBuf {
        let knobs = Knobs {
            listen: listen.to_string(),
            ..self.knobs.clone()
        };
        let path = self.dir.path().join("cli.toml");
        std::fs::write(&path, self.config_text(&knobs)).expect("cli config");
        path
    }

    /// The audit log, every line parsed as JSON (panics on a bad line).
    pub fn audit(&self) -> Vec<Value> {
        let path = self.state_dir().join("audit.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Vec::new();
        };
        // Only whole lines: the writer may be in the middle of a batch.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad audit line {line:?}: {e}"))
            })
            .collect()
    }

    /// Audit records about one call, once `done` holds for them: records
    /// reach the file after the action they describe, written by the
    /// group-commit writer. Gives up after [`LIMIT`] and returns what is there.
    pub async fn wait_audit_of(&self, uuid: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let records = self.audit_of(uuid);
            if done(&records) || tokio::time::Instant::now() >= deadline {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Audit records about one call.
    pub fn audit_of(&self, uuid: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|r| r["call_uuid"] == uuid)
            .collect()
    }

    /// `callwarden --config CONFIG ARGS...` with a clean environment.
    pub fn command(&self, args: &[&str]) -> Command {
        command(&self.config_path(), args)
    }
}

/// `callwarden --config CONFIG ARGS...` without the variables that would
/// change what it reads (tokens, systemd's directories and socket).
pub fn command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.arg("--config").arg(config).args(args);
    for var in [
        "VOBIZ_AUTH_ID",
        "VOBIZ_AUTH_TOKEN",
        "VOBIZ_BASE_URL",
        "CALLWARDEN_CONFIG",
        "CREDENTIALS_DIRECTORY",
        "STATE_DIRECTORY",
        "NOTIFY_SOCKET",
        "RUST_LOG",
        "JOURNAL_STREAM",
    ] {
        command.env_remove(var);
    }
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// Runs a short command to completion (bounded by [`LIMIT`]).
pub async fn run(mut command: Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    tokio::time::timeout(LIMIT, command.output())
        .await
        .expect("command finished in time")
        .expect("command ran")
}

/// A running `callwarden run`; killed (SIGKILL) on drop.
pub struct Daemon {
    child: Child,
    /// The status listener's bound address.
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `callwarden run` for `setup` and waits until it is running.
    pub async fn start(setup: &Setup) -> Self {
        Self::start_with(setup.command(&["run"])).await
    }

    /// Starts a prepared `run` command (extra env, flags) and waits until it
    /// logs that it runs and where its listener is.
    pub async fn start_with(mut command: Command) -> Self {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("daemon starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                // Shown with the test's output when it fails.
                eprintln!("daemon: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let mut daemon = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
        };
        let until = tokio::time::Instant::now() + LIMIT;
        loop {
            let addr = daemon
                .json_logs()
                .iter()
                .find(|l| message(l).starts_with("status listener up"))
                .and_then(|l| l["addr"].as_str().and_then(|a| a.parse().ok()));
            let running = daemon
                .json_logs()
                .iter()
                .any(|l| message(l) == "callwarden running");
            if let (Some(addr), true) = (addr, running) {
                daemon.addr = addr;
                return daemon;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("daemon exited at start ({status}): {:#?}", daemon.logs());
            }
            assert!(
                tokio::time::Instant::now() < until,
                "daemon did not start: {:#?}",
                daemon.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.child.id().expect("daemon still running") as i32
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    /// Waits (at most `limit`) for the daemon to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait"))
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first JSON log line for which `wanted` holds, waiting up to
    /// [`LIMIT`] for it: stderr is read on a task of its own, so a line the
    /// daemon wrote before some other sign (a metric, an exit) may not have
    /// been taken in yet.
    pub async fn wait_log(&self, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let found = self.json_logs().into_iter().find(|l| wanted(l));
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The stderr lines that are JSON objects.
    pub fn json_logs(&self) -> Vec<Value> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// `GET path` on the listener: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("listener answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> Value {
        let (code, body) = self.get("/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("/status is JSON")
    }

    /// `/metrics` through a real Prometheus text parser.
    pub async fn metrics(&self) -> prometheus_parse::Scrape {
        let (code, body) = self.get("/metrics").await;
        assert_eq!(code, 200, "{body}");
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
            .expect("/metrics parses")
    }
}

/// A JSON log line's message.
pub fn message(line: &Value) -> &str {
    line["message"].as_str().unwrap_or("")
}

/// The sum of the samples of `metric` whose labels include `labels`. The
/// parser types OpenMetrics counters (`_total` under a `TYPE x counter`) as
/// untyped; both are plain numbers here.
pub fn sample_sum(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{metric} is not a plain number"),
        })
        .sum()
}

/// Whether a simulator log record is a clock probe (a list read with
/// `limit=1`), not a poll.
pub fn is_probe(record: &Value) -> bool {
    record["query"]
        .as_str()
        .is_some_and(|q| q.split('&').any(|p| p == "limit=1"))
}

/// Which `callwarden_api_requests_total{endpoint}` a simulator log record is.
pub fn endpoint_of(record: &Value) -> &'static str {
    let path = record["path"].as_str().unwrap_or("");
    match (
        record["method"].as_str().unwrap_or(""),
        record["uuid"].is_null(),
    ) {
        (_, _) if path.contains("/Speak") => "speak",
        ("GET", true) if is_probe(record) => "probe",
        ("GET", true) => "list",
        ("GET", false) => "detail",
        ("DELETE", false) => "hangup",
        _ => "other",
    }
}

/// The `status` label the daemon gives a simulator log record's answer.
pub fn status_label(record: &Value) -> String {
    match record["status"].as_u64() {
        Some(s) => format!("{}xx", s / 100),
        None => "none".to_owned(),
    }
}
