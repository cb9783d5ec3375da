//! Crash recovery with the real binary: `callwarden run` is killed with
//! SIGKILL at a random point of a burst of hangups, then restarted on the
//! same state directory. Checked against the in-process simulator: every due
//! call hung up exactly once and never early, protected calls untouched, the
//! audit log readable (a torn last line tolerated), every confirmed DELETE
//! preceded by its intent, and no intent left open after the restart.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use callwarden::audit::{self, Event};
use callwarden::sim::{SimHandle, DEFAULT_AUTH_TOKEN};
use chrono::TimeDelta;
use common::daemon::{Knobs, Setup};
use common::engine::{requests, t_wall, wait_for};
use common::{add_calls, default_sim, log_since, set_faults};
use serde_json::{json, Value};

const LIMIT: TimeDelta = TimeDelta::seconds(2);
const CALLS: usize = 12;

/// splitmix64: a tiny seeded source for kill points and call ages.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Calls older than 2 s end; a fast poll and short retries so a burst of
/// hangups is under way when the daemon is killed.
const LIMIT_2S: &str = r#"
[[rule]]
name = "limit-2s"
max_duration = "2s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
"#;

fn setup(sim: &SimHandle) -> Setup {
    let knobs = Knobs {
        poll: "500ms",
        max_attempts: 4,
        initial_backoff: "100ms",
        max_backoff: "1s",
        max_hangups_per_cycle: 1000,
        breaker_min_live_calls: 1000,
        listen: String::new(),
        ..Knobs::default()
    };
    Setup::new(sim, &[("limit.toml", LIMIT_2S)], knobs)
}

fn spawn(dir: &Path, run: usize) -> Child {
    let log = std::fs::File::create(dir.join(format!("daemon-{run}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .arg("--config")
        .arg(dir.join("callwarden.toml"))
        .args(["--log-format", "json", "run"])
        .env("VOBIZ_AUTH_TOKEN", DEFAULT_AUTH_TOKEN)
        .env_remove("VOBIZ_AUTH_ID")
        .env_remove("VOBIZ_BASE_URL")
        .env_remove("CALLWARDEN_CONFIG")
        .env_remove("STATE_DIRECTORY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("callwarden starts")
}

fn terminate(child: &mut Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    for _ in 0..100 {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn crash_and_recover(seed: u64) {
    let mut rng = Rng(seed);
    let sim = default_sim();
    // Some latency spreads the burst so the kill can land inside it.
    set_faults(&sim, json!({"latency_ms": 20 + rng.below(80)})).await;
    let calls: Vec<Value> = (0..CALLS)
        .map(|n| {
            let age_s = rng.below(3_000) as f64 / 1000.0;
            json!({"age_s": age_s, "direction": "outbound", "from": "+14155550100",
                   "to": format!("+1415555{n:04}")})
        })
        .chain([
            json!({"age_s": 10.0, "direction": "outbound", "from": "+14155550100", "to": "911"}),
        ])
        .collect();
    let uuids = add_calls(&sim, json!(calls)).await;
    let (due, protected) = (&uuids[..CALLS], &uuids[CALLS]);

    let setup = setup(&sim);
    let dir = &setup.dir;
    let mut first = spawn(dir.path(), 1);
    let kill_after = Duration::from_millis(150 + rng.below(1_500));
    tokio::time::sleep(kill_after).await;
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let before_restart = sim.state().calls().iter().filter(|c| c.hangups > 0).count();

    let open_at_kill = audit::replay(&dir.path().join("state"))
        .map(|r| r.pending.len())
        .unwrap_or(0);
    eprintln!(
        "seed {seed}: killed after {kill_after:?}: {before_restart}/{CALLS} hung up, {open_at_kill} intents open"
    );
    let mut second = spawn(dir.path(), 2);
    let state = sim.state().clone();
    let all_due = due.to_vec();
    let done = wait_for(Duration::from_secs(20), || {
        all_due
            .iter()
            .all(|u| state.call(u).is_some_and(|c| c.ended_at.is_some()))
    })
    .await;
    // A few more polls: time for the restarted daemon to close old intents
    // and to make any mistake it would make.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    terminate(&mut second);
    let logs = std::fs::read_to_string(dir.path().join("daemon-2.log")).unwrap_or_default();
    assert!(
        done,
        "seed {seed} (killed after {kill_after:?}, {before_restart} hung up before): not every due call ended\n{logs}"
    );

    let log = log_since(&sim, 0).await;
    for uuid in due {
        let call = sim.state().call(uuid).unwrap();
        assert_eq!(
            call.hangups, 1,
            "seed {seed}: {uuid} hung up {} times",
            call.hangups
        );
        for delete in requests(&log, "DELETE", uuid) {
            assert!(
                t_wall(&delete) >= call.started_at + LIMIT,
                "seed {seed}: early DELETE"
            );
        }
    }
    assert!(requests(&log, "DELETE", protected).is_empty());
    assert!(sim.state().call(protected).unwrap().ended_at.is_none());

    let state_dir = dir.path().join("state");
    let replay = audit::replay(&state_dir).expect("the audit log is readable");
    assert!(replay.bad_lines <= 1, "seed {seed}: {replay:?}");
    assert!(
        replay.pending.is_empty(),
        "seed {seed}: intents left open after the restart: {:?}",
        replay.pending
    );
    let (records, _) = audit::read_all(&state_dir).unwrap();
    for uuid in due {
        for delete in requests(&log, "DELETE", uuid)
            .iter()
            .filter(|r| r["status"] == 204)
        {
            let sent = t_wall(delete);
            assert!(
                records
                    .iter()
                    .any(|r| r.call_uuid == *uuid && r.event == Event::Intent && r.ts <= sent),
                "seed {seed}: a DELETE of {uuid} with no intent before it"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_seeds_1_to_10() {
    for seed in 1..=10 {
        crash_and_recover(seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_seeds_11_to_20() {
    for seed in 11..=20 {
        crash_and_recover(seed).await;
    }
}
