//! High availability end to end: two or three real `callwarden run`
//! processes share one PostgreSQL (the test's own) and one simulator. In
//! every scenario the simulator's records show that no call got two DELETEs
//! answered 2xx, none was hung up early, and every due call ended. Bounds
//! are hang guards, generous for a loaded machine; the real failover time
//! is measured by bench/ha_failover.py (BENCHMARKS.md).

mod common;

use std::time::Duration;

use common::ha::{
    assert_never_twice_never_early, deletes_sent, role, wait_all_ended, wait_single_leader, Cluster,
};

/// Generous: every wait here is for a condition, this only stops a hang.
const WAIT: Duration = Duration::from_secs(60);

fn one_account() -> Vec<String> {
    vec!["default".to_owned()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_enforcer_then_takeover_when_the_leader_is_paused() {
    let Some(cluster) = Cluster::start(&one_account()) else {
        return;
    };
    let a = cluster.start_node("node-a").await;
    let b = cluster.start_node("node-b").await;
    let nodes = [&a, &b];
    let (leader, epoch) = wait_single_leader(&nodes, "default").await;
    let standby = 1 - leader;
    assert_eq!(role(nodes[standby], "default").await.0, "standby");

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

    // The leader stops dead; calls fall due while it is paused.
    nodes[leader].signal(libc::SIGSTOP);
    let second = cluster.add_premium_calls(0, &[3.0, 3.0, 4.0, 4.0]).await;
    let (taken_by, new_epoch) = wait_single_leader(&[nodes[standby]], "default").await;
    assert_eq!(taken_by, 0);
    assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
    wait_all_ended(&cluster.sim, &second, WAIT).await;

    // Woken, the old leader finds its lease gone: no DELETE from it.
    let third = cluster.add_premium_calls(0, &[4.5, 4.5]).await;
    nodes[leader].signal(libc::SIGCONT);
    wait_all_ended(&cluster.sim, &third, WAIT).await;
    common::wait_polls(&cluster.sim, 6).await;
    assert_eq!(role(nodes[leader], "default").await.0, "standby");
    assert_eq!(
        deletes_sent(nodes[leader]).await,
        sent_before_pause,
        "the old leader sent a DELETE after it was paused"
    );
    let all: Vec<String> = [first, second, third].concat();
    assert_never_twice_never_early(&cluster.sim, &all);
}
