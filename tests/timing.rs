//! Enforcement timing with the real `callwarden` binary against an
//! in-process simulator: under a tight request budget a due call's re-read
//! and DELETE go ahead of the queued discovery reads; with the API's `Date`
//! skewed either way, probes bound the skew tightly within seconds and no
//! hangup comes before its deadline.

mod common;

use chrono::TimeDelta;
use common::daemon::{is_probe, Daemon, Knobs, Setup, LIMIT};
use common::engine::{requests, t_wall, wait_ended};
use common::{add_calls, default_sim, log_since, set_faults};
use serde_json::{json, Value};

/// Calls to +1900... end 12 s after they start.
const PREMIUM_12S: &str = r#"
[[rule]]
name = "premium-12s"
max_duration = "12s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
to = ["+1900*"]
"#;

fn outbound(to: &str) -> Value {
    json!({"age_s": 0.0, "direction": "outbound", "from": "+14155550100", "to": to})
}

fn is_discovery_read(record: &Value, due: &[String]) -> bool {
    record["method"] == "GET"
        && record["uuid"]
            .as_str()
            .is_some_and(|uuid| !due.iter().any(|d| d == uuid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_tight_budget_due_hangups_go_ahead_of_queued_discovery_reads() {
    let sim = default_sim();
    // Five calls listed first fall due together 12 s in; 45 more keep
    // discovery busy for about 25 s at 2 requests per second, so reads are
    // always waiting for a token when the deadlines come.
    let mut calls: Vec<Value> = (0..5)
        .map(|n| outbound(&format!("+1900555{n:04}")))
        .collect();
    calls.extend((0..45).map(|n| outbound(&format!("+1312555{n:04}"))));
    let uuids = add_calls(&sim, json!(calls)).await;
    let due = uuids[..5].to_vec();
    let knobs = Knobs {
        poll: "5m",
        max_requests_per_second: 2,
        ..Knobs::default()
    };
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_12S)], knobs);
    let daemon = Daemon::start(&setup).await;
    assert!(
        wait_ended(&sim, &due, LIMIT).await,
        "the due calls were not hung up"
    );
    let log = log_since(&sim, 0).await;
    // Discovery was still under way: the hangups did not wait for it.
    assert!(
        log.iter().filter(|r| is_discovery_read(r, &due)).count() < 45,
        "discovery finished before the hangups"
    );
    // A due call's second GET is its re-read (the first discovered it).
    let first_reread = due
        .iter()
        .filter_map(|uuid| {
            log.iter()
                .enumerate()
                .filter(|(_, r)| r["method"] == "GET" && r["uuid"] == uuid.as_str())
                .nth(1)
                .map(|(i, _)| i)
        })
        .min()
        .expect("a due call is re-read");
    let last_delete = log
        .iter()
        .rposition(|r| r["method"] == "DELETE")
        .expect("DELETEs");
    // Ten enforcement requests, nearly in a row. A read may get in where one
    // had its token just before the deadline and was still on its way when
    // the first re-read went out, and where the lane stood empty while an
    // intent was syncing on a slow disk. Without the lane, reads and
    // enforcement requests would alternate: about ten reads in between.
    let intruders: Vec<usize> = (first_reread..last_delete)
        .filter(|&i| is_discovery_read(&log[i], &due))
        .collect();
    assert!(
        intruders.len() <= 2,
        "discovery reads went between the re-reads and the DELETEs: {:#?}",
        log[first_reread..=last_delete]
            .iter()
            .map(|r| format!("{} {} {}", r["seq"], r["method"], r["uuid"]))
            .collect::<Vec<_>>()
    );
    drop(daemon);
}

/// Calls to +1900... end 7 s after they start.
const PREMIUM_7S: &str = r#"
[[rule]]
name = "premium-7s"
max_duration = "7s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
to = ["+1900*"]
"#;

/// The daemon's skew bound from `/status`, in ms, once it has one.
async fn skew_bound(daemon: &Daemon) -> Option<(f64, f64)> {
    let status = daemon.status().await;
    let skew = &status["accounts"][0]["clock_skew"];
    Some((skew["low_ms"].as_f64()?, skew["high_ms"].as_f64()?))
}

/// The API's `Date` runs `skew_ms` off the simulator's (and this host's)
/// clock while its call timestamps do not: the bound must contain the skew
/// and narrow to 20 ms, and every hangup must come at or after the deadline
/// by the simulator's clock.
async fn skewed_date(skew_ms: i64) {
    let sim = default_sim();
    set_faults(&sim, json!({ "date_skew_ms": skew_ms })).await;
    let calls: Vec<Value> = (0..4)
        .map(|n| outbound(&format!("+1900555{n:04}")))
        .collect();
    let uuids = add_calls(&sim, json!(calls)).await;
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_7S)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    let truth = skew_ms as f64;
    let until = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some((low, high)) = skew_bound(&daemon).await {
            assert!(
                low <= truth && truth <= high,
                "the bound [{low}, {high}] ms excludes the skew {truth} ms"
            );
            if high - low <= 20.0 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the skew bound never narrowed to 20 ms: {:?}",
            skew_bound(&daemon).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(wait_ended(&sim, &uuids, LIMIT).await, "calls not hung up");
    let log = log_since(&sim, 0).await;
    assert!(log.iter().any(is_probe), "no clock probe was sent");
    for uuid in &uuids {
        let deadline = sim.state().call(uuid).expect("call").started_at + TimeDelta::seconds(7);
        let deletes = requests(&log, "DELETE", uuid);
        assert_eq!(deletes.len(), 1, "{uuid}: {deletes:?}");
        let at = t_wall(&deletes[0]);
        assert!(at >= deadline, "{uuid} hung up early: {at} < {deadline}");
    }
    // The bound still holds the truth after the run.
    let (low, high) = skew_bound(&daemon).await.expect("a bound");
    assert!(low <= truth && truth <= high, "[{low}, {high}] vs {truth}");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_header_ahead_is_bounded_tightly_and_no_hangup_is_early() {
    skewed_date(1_337).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_header_behind_is_bounded_tightly_and_no_hangup_is_early() {
    skewed_date(-2_618).await;
}
