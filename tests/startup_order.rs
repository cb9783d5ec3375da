//! The order of the start-up reads, with the real binary against the
//! simulator: after a restart, a call whose hangup intent the audit log
//! left open is read first, then the calls the earlier run saw, the longest
//! seen first, and the calls it never saw after them in list order.
//! Asserted on the simulator's request log, never on time.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use callwarden::audit::{AuditLog, Event, Record};
use callwarden::engine::memory;
use common::calls::outbound;
use common::daemon::{Daemon, Knobs, Setup, LIMIT};
use common::{add_calls, control_post, default_sim, log_since};
use serde_json::{json, Value};

/// A rule that ends nothing during the test: every call is young.
const POLICY: &str = r#"
[[rule]]
name = "limit-4h"
max_duration = "4h"
measure_from = "start"
[rule.match]
direction = ["outbound"]
"#;

/// The calls whose details were read (live reads, not lists), in the
/// order the simulator received them, each at its first read.
fn first_reads(log: &[Value]) -> Vec<String> {
    let mut seen = HashSet::new();
    log.iter()
        .filter(|r| r["method"] == "GET")
        .filter_map(|r| r["uuid"].as_str())
        .filter(|uuid| seen.insert(uuid.to_string()))
        .map(str::to_owned)
        .collect()
}

/// Waits until every one of `uuids` was read in the log after `since`.
async fn wait_read(sim: &callwarden::sim::SimHandle, since: u64, uuids: &[String]) -> Vec<Value> {
    let until = tokio::time::Instant::now() + 2 * LIMIT;
    loop {
        let log = log_since(sim, since).await;
        let read: HashSet<String> = first_reads(&log).into_iter().collect();
        if uuids.iter().all(|uuid| read.contains(uuid)) {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "not every call was read: {read:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Moves queued calls into the live list (answered now).
async fn go_live(sim: &callwarden::sim::SimHandle, uuids: &[String]) {
    for uuid in uuids {
        control_post(
            sim,
            &format!("/calls/{uuid}/state"),
            json!({"status": "in-progress"}),
        )
        .await;
    }
}

/// Stops the daemon as systemd does; it writes what it remembers on the way out.
async fn stop(mut daemon: Daemon) {
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(LIMIT).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {:#?}",
        daemon.logs()
    );
}

/// Leaves an intent to end `uuid` open in the audit log of `state`, as a
/// crash between the intent and the DELETE would.
async fn open_intent(state: &std::path::Path, uuid: &str) {
    let audit = AuditLog::open(state).expect("audit log opens");
    let intent = Record {
        ts: chrono::Utc::now(),
        account: "default".into(),
        call_uuid: uuid.into(),
        event: Event::Intent,
        rules: vec!["limit-4h".into()],
        rule: Some("limit-4h".into()),
        action: Some("hangup:call".into()),
        outcome: None,
        attempts: 1,
        dry_run: false,
        reason: "the test's crash".into(),
        call: None,
        epoch: None,
    };
    audit.commit(&intent).await.expect("intent written");
}

fn last_seq(log: &[Value]) -> u64 {
    log.iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_restart_reads_an_open_intent_then_the_calls_seen_longest_then_the_rest_in_list_order() {
    let sim = default_sim();
    // Created (and so listed) in this order. Queued calls are not in the
    // live list, so the first run sees only the calls live at the time.
    let queued = |n: usize, prefix: &str| -> Vec<Value> {
        (0..n)
            .map(|i| {
                let mut call = outbound(30.0, &format!("+1312555{prefix}{i:03}"));
                call["status"] = json!("queued");
                call["answered"] = json!(false);
                call
            })
            .collect()
    };
    let never_seen = add_calls(&sim, json!(queued(8, "1"))).await;
    let seen_later = add_calls(&sim, json!(queued(3, "2"))).await;
    let seen_first = add_calls(
        &sim,
        json!((0..3)
            .map(|i| outbound(30.0, &format!("+13125553{i:03}")))
            .collect::<Vec<_>>()),
    )
    .await;

    // A budget of 10 requests per second reads one call at a time, so the
    // log's order is the order of the reads.
    let knobs = Knobs {
        max_requests_per_second: 10,
        ..Knobs::default()
    };
    let setup = Setup::new(&sim, &[("limit.toml", POLICY)], knobs);
    let daemon = Daemon::start(&setup).await;
    wait_read(&sim, 0, &seen_first).await;
    go_live(&sim, &seen_later).await;
    let log = wait_read(&sim, 0, &seen_later).await;
    // A read answered is not yet a call remembered: wait for the file.
    let memory = memory::path(&setup.state_dir(), "default");
    let remembered = common::engine::wait_for(2 * LIMIT, || {
        let known = memory::load(&memory);
        seen_first
            .iter()
            .chain(&seen_later)
            .all(|uuid| known.contains_key(uuid))
    })
    .await;
    assert!(remembered, "the first run never wrote what it saw");
    stop(daemon).await;
    let first_run = first_reads(&log);
    assert!(
        first_run.iter().all(|uuid| !never_seen.contains(uuid)),
        "the first run read a call that was not live yet"
    );

    go_live(&sim, &never_seen).await;
    // The last call listed was due (its intent is open): it is read first.
    let (never_seen, resumed) = never_seen.split_at(never_seen.len() - 1);
    let (never_seen, resumed) = (never_seen.to_vec(), resumed.to_vec());
    open_intent(&setup.state_dir(), &resumed[0]).await;
    let since = last_seq(&log_since(&sim, 0).await);
    let daemon = Daemon::start(&setup).await;
    let everything: Vec<String> = [&never_seen, &seen_later, &seen_first, &resumed]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let log = wait_read(&sim, since, &everything).await;
    stop(daemon).await;

    let order = first_reads(&log);
    let group = |range: std::ops::Range<usize>| -> HashSet<String> {
        order[range].iter().cloned().collect()
    };
    assert_eq!(order[0], resumed[0], "the open intent first: {order:#?}");
    assert_eq!(
        group(1..4),
        seen_first.iter().cloned().collect(),
        "then the calls seen longest: {order:#?}"
    );
    assert_eq!(
        group(4..7),
        seen_later.iter().cloned().collect(),
        "then the calls seen later: {order:#?}"
    );
    assert_eq!(
        order[7..],
        never_seen[..],
        "then the calls never seen, in list order"
    );
    // The order changed nothing else: no call was due, none was ended.
    assert!(
        log.iter().all(|r| r["method"] != "DELETE"),
        "a call was hung up"
    );
}
