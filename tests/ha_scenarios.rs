//! High availability end to end: two or three real `callwarden run`
//! processes share one PostgreSQL (the test's own) and one simulator. In
//! every scenario the simulator's records show that no call got two DELETEs
//! answered 2xx, none was hung up early, and every due call ended. Bounds
//! are hang guards, generous for a loaded machine; the real failover time
//! is measured by bench/ha_failover.py (BENCHMARKS.md).

mod common;

use std::time::Duration;

use common::ha::{
    assert_never_twice_never_early, deletes_sent, role, wait_all_ended, wait_settled,
    wait_single_leader, Cluster,
};

/// Generous: every wait here is for a condition, this only stops a hang.
const WAIT: Duration = Duration::from_secs(60);

/// The node ids of the two-node scenarios.
const IDS: [&str; 2] = ["node-a", "node-b"];

fn one_account() -> Vec<String> {
    vec!["default".to_owned()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_enforcer_then_takeover_when_the_leader_is_paused() {
    let Some(cluster) = Cluster::start(&one_account()) else {
        return;
    };
    let a = cluster.start_node(IDS[0]).await;
    let b = cluster.start_node(IDS[1]).await;
    let nodes = [&a, &b];
    let (leader, epoch) = wait_settled(&nodes, &IDS, "default").await;
    let standby = 1 - leader;
    assert_eq!(role(nodes[standby], "default").await.0, "standby");

    // A standby refuses manual requests, naming the leader (once it has
    // read who that is).
    let leader_id = IDS[leader];
    let until = tokio::time::Instant::now() + WAIT;
    while nodes[standby].status().await["accounts"][0]["ha"]["leader"] != leader_id {
        assert!(
            tokio::time::Instant::now() < until,
            "the standby never names the leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = post_json(
        nodes[standby],
        "/hangup",
        serde_json::json!({"calls": ["abc-123"], "reason": "test"}),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains(leader_id), "{body}");
    let (code, body) = post(nodes[standby], "/pardon/abc-123").await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains(leader_id), "{body}");

    // Enforced by the leader alone.
    let first = cluster.add_premium_calls(0, &[10.0, 10.0, 10.0]).await;
    wait_all_ended(&cluster.sim, &first, WAIT).await;
    assert_eq!(
        deletes_sent(nodes[standby]).await,
        0.0,
        "the standby sent a DELETE"
    );
    let sent_before_pause = deletes_sent(nodes[leader]).await;
    assert!(sent_before_pause >= 3.0);

    // Calls the leader sees, then it stops dead and they fall due.
    let second = cluster.add_premium_calls(0, &[3.0, 3.0, 3.5, 3.5]).await;
    common::wait_polls(&cluster.sim, 2).await;
    nodes[leader].signal(libc::SIGSTOP);
    let paused_at = chrono::Utc::now();
    let (taken_by, new_epoch) = wait_single_leader(&[nodes[standby]], "default").await;
    assert_eq!(taken_by, 0);
    assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
    wait_all_ended(&cluster.sim, &second, WAIT).await;

    // Woken with calls due at once, the old leader finds its lease gone:
    // nothing is hung up under its old epoch. (It is the preferred member,
    // so it soon leads again, under a new epoch.)
    let third = cluster.add_premium_calls(0, &[4.8, 4.8, 4.9]).await;
    nodes[leader].signal(libc::SIGCONT);
    wait_all_ended(&cluster.sim, &third, WAIT).await;
    common::wait_polls(&cluster.sim, 4).await;
    let audit = cluster.audit(IDS[leader]);
    assert!(
        audit
            .iter()
            .any(|r| r["outcome"] == "ok" && r["epoch"] == epoch),
        "the old leader's hangups carry its epoch"
    );
    let stale: Vec<serde_json::Value> = audit
        .into_iter()
        .filter(|r| r["event"] == "outcome" && r["epoch"] == epoch)
        .filter(|r| r["outcome"] == "ok" || r["outcome"] == "gone")
        .filter(|r| {
            r["ts"]
                .as_str()
                .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                .is_some_and(|ts| ts > paused_at)
        })
        .collect();
    assert!(stale.is_empty(), "hung up under a lost lease: {stale:#?}");
    assert!(sent_before_pause >= 3.0);
    let all: Vec<String> = [first, second, third].concat();
    assert_never_twice_never_early(&cluster.sim, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_burst_loses_and_repeats_nothing() {
    let Some(cluster) = Cluster::start(&one_account()) else {
        return;
    };
    let a = cluster.start_node(IDS[0]).await;
    let b = cluster.start_node(IDS[1]).await;
    let leader = wait_settled(&[&a, &b], &IDS, "default").await.0;
    let mut nodes = [Some(a), Some(b)];
    // A burst: forty calls fall due within a second.
    let ages: Vec<f64> = (0..40).map(|i| 3.0 + f64::from(i) / 40.0).collect();
    let burst = cluster.add_premium_calls(0, &ages).await;
    // Killed once the first hangup has landed, while others are in flight.
    let until = tokio::time::Instant::now() + WAIT;
    while !burst.iter().any(|u| common::calls::ended(&cluster.sim, u)) {
        assert!(tokio::time::Instant::now() < until, "no hangup began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(nodes[leader].take());
    let survivor = nodes[1 - leader].as_ref().expect("the other node");
    wait_single_leader(&[survivor], "default").await;
    wait_all_ended(&cluster.sim, &burst, WAIT).await;
    assert_never_twice_never_early(&cluster.sim, &burst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_postgres_pauses_enforcement_then_resumes_without_loss() {
    let Some(cluster) = Cluster::start(&one_account()) else {
        return;
    };
    let a = cluster.start_node(IDS[0]).await;
    let b = cluster.start_node(IDS[1]).await;
    let nodes = [&a, &b];
    wait_settled(&nodes, &IDS, "default").await;
    // Calls falling due before, during and after the outage.
    let ages: Vec<f64> = (0..30).map(|i| f64::from(i) * 0.25).collect();
    let calls = cluster.add_premium_calls(0, &ages).await;
    let until = tokio::time::Instant::now() + WAIT;
    while !calls.iter().any(|u| common::calls::ended(&cluster.sim, u)) {
        assert!(tokio::time::Instant::now() < until, "no hangup began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.pg.stop();
    // Both nodes see the database gone and stop enforcing.
    for node in nodes {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let scrape = node.metrics().await;
            let up = common::daemon::sample_sum(&scrape, "callwarden_ha_database_up", &[]);
            let leading = common::daemon::sample_sum(&scrape, "callwarden_leader", &[]);
            if up == 0.0 && leading == 0.0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "still enforcing without the database"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cluster.pg.restart();
    wait_single_leader(&nodes, "default").await;
    wait_all_ended(&cluster.sim, &calls, WAIT).await;
    assert_never_twice_never_early(&cluster.sim, &calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_spread_six_accounts_and_rebalance_when_one_dies() {
    let nodes_ids = ["node-a", "node-b", "node-c"];
    // Six account names that rendezvous hashing spreads 2/2/2.
    let mut names = Vec::new();
    let mut per_node = [0; 3];
    for i in 0.. {
        let name = format!("acct-{i}");
        let preferred = callwarden::ha::preferred_member(&name, &nodes_ids).expect("a member");
        let n = nodes_ids
            .iter()
            .position(|m| *m == preferred)
            .expect("known");
        if per_node[n] < 2 {
            per_node[n] += 1;
            names.push(name);
        }
        if names.len() == 6 {
            break;
        }
    }
    let Some(cluster) = Cluster::start(&names) else {
        return;
    };
    let mut daemons = Vec::new();
    for id in nodes_ids {
        daemons.push(Some(cluster.start_node(id).await));
    }
    // Balanced once every member has joined.
    let until = tokio::time::Instant::now() + WAIT;
    let spread = loop {
        let led = leaders(&names, &daemons.iter().flatten().collect::<Vec<_>>()).await;
        let counts: Vec<usize> = (0..3)
            .map(|n| led.iter().filter(|l| **l == n).count())
            .collect();
        if counts == [2, 2, 2] {
            break led;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "never spread 2/2/2: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // `cluster` reads the same from the database.
    let mut cluster_command =
        common::daemon::command(&cluster.config(nodes_ids[0]), &["cluster", "--json"]);
    cluster_command.env("CALLWARDEN_POSTGRES_URL", cluster.pg.url());
    let out = common::daemon::run(cluster_command).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json is JSON");
    for (name, leader) in names.iter().zip(&spread) {
        let row = shown["accounts"]
            .as_array()
            .expect("accounts")
            .iter()
            .find(|a| a["account"] == name.as_str())
            .expect("every account listed");
        assert_eq!(row["leader"], nodes_ids[*leader], "{shown}");
    }
    assert_eq!(
        shown["members"].as_array().map(Vec::len),
        Some(3),
        "{shown}"
    );
    // node-c dies; its two accounts move, the others stay where they were.
    drop(daemons[2].take());
    let live: Vec<&common::daemon::Daemon> = daemons.iter().flatten().collect();
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let led = leaders(&names, &live).await;
        let moved = spread
            .iter()
            .zip(&led)
            .all(|(before, after)| *before == 2 || before == after);
        if moved {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "not rebalanced: {spread:?} → {led:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every account is enforced, once.
    let mut calls = Vec::new();
    for index in 0..names.len() {
        calls.extend(cluster.add_premium_calls(index, &[4.0, 4.5]).await);
    }
    wait_all_ended(&cluster.sim, &calls, WAIT).await;
    assert_never_twice_never_early(&cluster.sim, &calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pardons_and_first_seen_times_survive_a_failover() {
    let Some(cluster) = Cluster::start(&one_account()) else {
        return;
    };
    let a = cluster.start_node(IDS[0]).await;
    let b = cluster.start_node(IDS[1]).await;
    let leader = wait_settled(&[&a, &b], &IDS, "default").await.0;
    let mut nodes = [Some(a), Some(b)];
    // A premium call to spare, and a long call the rule leaves alone
    // (flat shape: only callwarden knows when it was first seen answered).
    let spared = cluster.add_premium_calls(0, &[0.0]).await.remove(0);
    let long = common::add_calls(
        &cluster.sim,
        serde_json::json!([common::calls::outbound(0.0, "+14155550199")]),
    )
    .await
    .remove(0);
    let old = nodes[leader].as_ref().expect("leader");
    let seen_by_old = wait_answered_seen(old, &long).await;
    let (code, body) = post(old, &format!("/pardon/{spared}")).await;
    assert_eq!(code, 200, "{body}");
    // Both are in the database before the leader dies.
    let db = callwarden::ha::connect(&cluster.pg.url(), Duration::from_secs(10))
        .await
        .expect("connect");
    let until = tokio::time::Instant::now() + WAIT;
    while callwarden::ha::db::first_seen_times(&db, "default")
        .await
        .expect("first seen")
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < until,
            "first-seen time never shared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(nodes[leader].take());
    let new = nodes[1 - leader].as_ref().expect("the other node");
    wait_single_leader(&[new], "default").await;
    let seen_by_new = wait_answered_seen(new, &long).await;
    assert_eq!(
        seen_by_new.timestamp_millis(),
        seen_by_old.timestamp_millis(),
        "the new leader times the call from when the old one first saw it"
    );
    // Well past the spared call's deadline, several polls later: still live.
    common::wait_polls(&cluster.sim, 12).await;
    let call = cluster.sim.state().call(&spared).expect("call");
    assert!(call.ended_at.is_none(), "the pardoned call was hung up");
    assert!(
        (chrono::Utc::now() - call.started_at).num_seconds() >= 5,
        "not yet past its deadline"
    );
}

/// When `daemon` first saw `uuid` answered, from its `/status`.
async fn wait_answered_seen(
    daemon: &common::daemon::Daemon,
    uuid: &str,
) -> chrono::DateTime<chrono::Utc> {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let status = daemon.status().await;
        let seen = status["accounts"][0]["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["call_uuid"] == uuid)
            .and_then(|c| c["answered_seen"].as_str())
            .and_then(|t| t.parse().ok());
        if let Some(seen) = seen {
            return seen;
        }
        assert!(tokio::time::Instant::now() < until, "{uuid} never tracked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(daemon: &common::daemon::Daemon, path: &str) -> (u16, String) {
    send(reqwest::Client::new().post(format!("http://{}{path}", daemon.addr))).await
}

async fn post_json(
    daemon: &common::daemon::Daemon,
    path: &str,
    body: serde_json::Value,
) -> (u16, String) {
    send(
        reqwest::Client::new()
            .post(format!("http://{}{path}", daemon.addr))
            .json(&body),
    )
    .await
}

async fn send(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("listener answers");
    let code = response.status().as_u16();
    (code, response.text().await.expect("body"))
}

/// The index (in `daemons`) of each account's single leader.
async fn leaders(names: &[String], daemons: &[&common::daemon::Daemon]) -> Vec<usize> {
    let mut led = Vec::new();
    for name in names {
        led.push(wait_single_leader(daemons, name).await.0);
    }
    led
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_keeps_the_systemd_watchdog_fed() {
    let Some(cluster) = Cluster::start(&one_account()) else {
        return;
    };
    let preferred = callwarden::ha::preferred_member("default", &IDS).expect("members");
    let other = IDS.iter().find(|id| **id != preferred).expect("two nodes");
    let leader = cluster.start_node(preferred).await;
    let socket_path =
        std::env::temp_dir().join(format!("cw-ha-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket_path);
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    let mut run = cluster.run_command(other);
    run.env("NOTIFY_SOCKET", &socket_path);
    let standby = common::daemon::Daemon::start_with(run).await;
    wait_settled(&[&leader, &standby], &[preferred, other], "default").await;
    // The leader settled first; the standby shows its role after its own
    // first tick.
    let until = tokio::time::Instant::now() + common::daemon::LIMIT;
    while role(&standby, "default").await.0 != "standby" {
        assert!(
            tokio::time::Instant::now() < until,
            "not a standby: {:?}",
            role(&standby, "default").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Pings that arrive while it is known to be a standby: what came
    // before is dropped.
    let mut pings = 0;
    let mut buf = vec![0u8; 4096];
    while socket.try_recv(&mut buf).is_ok() {}
    while pings < 3 {
        let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
            .await
            .expect("the standby stopped pinging the watchdog")
            .expect("recv");
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.lines().any(|l| l == "WATCHDOG=1") {
            pings += 1;
        }
    }
    assert_eq!(role(&standby, "default").await.0, "standby");
    let _ = std::fs::remove_file(&socket_path);
}
