//! The fraud guard (`max_concurrent`) through the real daemon binary against
//! the simulator: the newest calls beyond the cap end, the oldest keep going,
//! a new call beyond the cap ends at the poll that shows it, calls that end
//! on their own free room, and protection and the audit log apply as for
//! time limits.

mod common;

use callwarden::sim::SimHandle;
use common::calls::ended;
use common::daemon::{Daemon, Knobs, Setup, LIMIT};
use common::engine::wait_for;
use common::{add_calls, default_sim, http, log_since, wait_polls};
use serde_json::{json, Value};

/// At most 5 concurrent calls to +882 (international networks).
const GUARD_882: &str = r#"
[[rule]]
name = "intl-882-cap"
max_concurrent = 5
[rule.match]
to = ["+882*"]
"#;

fn to_882(age_s: f64, n: usize) -> Value {
    json!({"age_s": age_s, "direction": "outbound", "from": "+14155550100", "to": format!("+88216{n:06}")})
}

fn live(sim: &SimHandle, uuids: &[String]) -> Vec<String> {
    uuids.iter().filter(|u| !ended(sim, u)).cloned().collect()
}

async fn end_call(sim: &SimHandle, uuid: &str) {
    let response = http()
        .post(format!("{}/_sim/calls/{uuid}/end", sim.root_url()))
        .send()
        .await
        .expect("end request");
    assert!(response.status().is_success());
}

#[tokio::test(flavor = "multi_thread")]
async fn twelve_calls_with_a_cap_of_five_end_exactly_the_seven_newest() {
    let sim = default_sim();
    // Oldest first: call i started 200 - 10 i seconds ago.
    let calls: Vec<Value> = (0..12)
        .map(|i| to_882(200.0 - 10.0 * i as f64, i))
        .collect();
    let uuids = add_calls(&sim, json!(calls)).await;
    let other = add_calls(&sim, json!([{"age_s": 5.0, "direction": "outbound", "from": "+14155550100", "to": "+14155550199"}])).await;
    let setup = Setup::new(&sim, &[("guard.toml", GUARD_882)], Knobs::default());
    let _daemon = Daemon::start(&setup).await;

    let state = sim.state().clone();
    let newest: Vec<String> = uuids[5..].to_vec();
    let watch = newest.clone();
    assert!(
        wait_for(LIMIT, move || watch
            .iter()
            .all(|u| state.call(u).is_some_and(|c| c.ended_at.is_some())))
        .await,
        "the 7 newest did not all end"
    );
    // Two more polls: nothing else may end.
    wait_polls(&sim, 2).await;
    assert_eq!(
        live(&sim, &uuids),
        uuids[..5].to_vec(),
        "exactly the 5 oldest keep going"
    );
    assert!(
        !ended(&sim, &other[0]),
        "a call the rule does not match is not counted"
    );

    // Each hangup audited like a time limit: intent, then outcome ok.
    for uuid in &newest {
        let records = setup.audit_of(uuid);
        let events: Vec<(&str, &str)> = records
            .iter()
            .map(|r| {
                (
                    r["event"].as_str().unwrap_or(""),
                    r["outcome"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(events.first().map(|e| e.0), Some("intent"), "{records:?}");
        assert!(events.contains(&("outcome", "ok")), "{records:?}");
        assert_eq!(records[0]["rule"], "intl-882-cap");
        let reason = records[0]["reason"].as_str().unwrap_or("");
        assert!(reason.contains("at most 5 calls per rule"), "{reason}");
    }
    for uuid in &uuids[..5] {
        assert!(setup.audit_of(uuid).is_empty(), "{uuid} was judged");
    }
    // One DELETE per ended call, none for the others.
    let deletes: Vec<String> = log_since(&sim, 0)
        .await
        .iter()
        .filter(|r| r["method"] == "DELETE")
        .filter_map(|r| r["uuid"].as_str().map(str::to_owned))
        .collect();
    let mut sorted = deletes.clone();
    sorted.sort();
    let mut expected = newest.clone();
    expected.sort();
    assert_eq!(sorted, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_call_beyond_the_cap_ends_at_its_first_poll_and_ended_calls_free_room() {
    let sim = default_sim();
    let calls: Vec<Value> = (0..5).map(|i| to_882(100.0 - 10.0 * i as f64, i)).collect();
    let kept = add_calls(&sim, json!(calls)).await;
    let setup = Setup::new(&sim, &[("guard.toml", GUARD_882)], Knobs::default());
    let _daemon = Daemon::start(&setup).await;
    // The group is full, not beyond: nothing ends.
    wait_polls(&sim, 2).await;
    assert_eq!(live(&sim, &kept), kept);

    // A sixth call is beyond the cap: it ends after the poll that shows it.
    let since = log_since(&sim, 0).await.len() as u64;
    let sixth = add_calls(&sim, json!([to_882(1.0, 100)])).await;
    let state = sim.state().clone();
    let watch = sixth[0].clone();
    assert!(
        wait_for(LIMIT, move || state
            .call(&watch)
            .is_some_and(|c| c.ended_at.is_some()))
        .await
    );
    let records = log_since(&sim, since).await;
    let delete_at = records
        .iter()
        .position(|r| r["method"] == "DELETE" && r["uuid"] == sixth[0].as_str())
        .expect("a DELETE for the sixth call");
    let lists_before = records[..delete_at]
        .iter()
        .filter(|r| common::is_poll(r))
        .count();
    // The list that may have been in flight when the call was added, then
    // the one that showed it: never a further poll.
    assert!(lists_before <= 2, "{lists_before} polls before the hangup");
    assert_eq!(live(&sim, &kept), kept, "the oldest five keep going");

    // Two calls of the group end on their own and two newcomers arrive at
    // once: they fit, even at the first poll, which still keeps the ended
    // calls live (one list that leaves a call out does not end it).
    end_call(&sim, &kept[0]).await;
    end_call(&sim, &kept[3]).await;
    let newcomers = add_calls(&sim, json!([to_882(2.0, 200), to_882(1.0, 201)])).await;
    wait_polls(&sim, 3).await;
    assert_eq!(
        live(&sim, &newcomers),
        newcomers,
        "room freed by ended calls is used"
    );
    // The group is full again: one more is beyond.
    let extra = add_calls(&sim, json!([to_882(0.0, 300)])).await;
    let state = sim.state().clone();
    let watch = extra[0].clone();
    assert!(
        wait_for(LIMIT, move || state
            .call(&watch)
            .is_some_and(|c| c.ended_at.is_some()))
        .await
    );
    wait_polls(&sim, 1).await;
    assert_eq!(live(&sim, &newcomers), newcomers);
    assert_eq!(
        live(&sim, &kept),
        vec![kept[1].clone(), kept[2].clone(), kept[4].clone()]
    );
}

/// At most 2 concurrent calls per called number.
const GUARD_PER_TO: &str = r#"
[[rule]]
name = "per-destination-cap"
max_concurrent = 2
group_by = "to"
[rule.match]
direction = "outbound"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn groups_by_number_and_protected_calls_are_spared_and_audited() {
    let sim = default_sim();
    let call = |age: f64, to: &str| json!({"age_s": age, "direction": "outbound", "from": "+14155550100", "to": to});
    // Three calls to A, three to 911 (protected), one to B.
    let a = add_calls(
        &sim,
        json!([
            call(90.0, "+442071830001"),
            call(60.0, "+442071830001"),
            call(30.0, "+442071830001")
        ]),
    )
    .await;
    let emergency = add_calls(
        &sim,
        json!([call(80.0, "911"), call(50.0, "911"), call(20.0, "911")]),
    )
    .await;
    let b = add_calls(&sim, json!([call(10.0, "+442071830002")])).await;
    let setup = Setup::new(&sim, &[("guard.toml", GUARD_PER_TO)], Knobs::default());
    let _daemon = Daemon::start(&setup).await;

    let state = sim.state().clone();
    let newest_a = a[2].clone();
    assert!(
        wait_for(LIMIT, move || state
            .call(&newest_a)
            .is_some_and(|c| c.ended_at.is_some()))
        .await
    );
    let watch = emergency[2].clone();
    let audit_setup = &setup;
    assert!(
        wait_for(LIMIT, || audit_setup
            .audit_of(&watch)
            .iter()
            .any(|r| r["outcome"] == "protected"))
        .await,
        "the protected call beyond the cap is audited as protected"
    );
    wait_polls(&sim, 2).await;
    assert_eq!(live(&sim, &a), a[..2].to_vec());
    assert_eq!(
        live(&sim, &emergency),
        emergency,
        "protected numbers are never hung up"
    );
    assert_eq!(live(&sim, &b), b);
    // Judged once, not at every poll.
    let protected: Vec<Value> = setup
        .audit_of(&emergency[2])
        .into_iter()
        .filter(|r| r["outcome"] == "protected")
        .collect();
    assert_eq!(protected.len(), 1, "{protected:?}");
    assert_eq!(protected[0]["rule"], "per-destination-cap");
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_and_explain_show_which_calls_are_beyond_the_cap() {
    let sim = default_sim();
    let calls: Vec<Value> = (0..7).map(|i| to_882(100.0 - 10.0 * i as f64, i)).collect();
    let uuids = add_calls(&sim, json!(calls)).await;
    let setup = Setup::new(&sim, &[("guard.toml", GUARD_882)], Knobs::default());

    let output = common::daemon::run(setup.command(&["calls", "--json"])).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).expect("calls --json");
    let winner = |uuid: &str| {
        rows.iter()
            .find(|r| r["call_uuid"] == uuid)
            .map(|r| r["winner"].clone())
            .expect("row for every call")
    };
    for uuid in &uuids[..5] {
        assert_eq!(winner(uuid), Value::Null, "{uuid} is within the cap");
    }
    for uuid in &uuids[5..] {
        assert_eq!(winner(uuid), "intl-882-cap", "{uuid} is beyond the cap");
    }

    let output = common::daemon::run(setup.command(&["explain", &uuids[6], "--json"])).await;
    let explanation: Value = serde_json::from_slice(&output.stdout).expect("explain --json");
    assert_eq!(explanation["decision"]["rule"], "intl-882-cap");
    assert_eq!(
        explanation["rules"][0]["limit"],
        "max_concurrent 5 per rule"
    );
    let output = common::daemon::run(setup.command(&["explain", &uuids[0], "--json"])).await;
    let explanation: Value = serde_json::from_slice(&output.stdout).expect("explain --json");
    assert_eq!(explanation["decision"], Value::Null);
    assert_eq!(
        explanation["rules"][0]["reason"],
        "within its max_concurrent cap"
    );
    // Read-only: nothing was hung up, nothing audited.
    assert_eq!(live(&sim, &uuids), uuids);
    assert!(setup.audit().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn in_dry_run_the_call_beyond_the_cap_is_audited_once_and_kept() {
    let sim = default_sim();
    let calls: Vec<Value> = (0..6).map(|i| to_882(100.0 - 10.0 * i as f64, i)).collect();
    let uuids = add_calls(&sim, json!(calls)).await;
    let knobs = Knobs::default();
    let setup = Setup::new(&sim, &[("guard.toml", GUARD_882)], knobs.clone());
    let text = setup.config_text(&knobs) + "\n[enforce]\ndry_run = true\n";
    std::fs::write(setup.config_path(), text).unwrap();
    let _daemon = Daemon::start(&setup).await;
    let newest = uuids[5].clone();
    assert!(
        wait_for(LIMIT, || setup
            .audit_of(&newest)
            .iter()
            .any(|r| r["outcome"] == "dry_run"))
        .await,
        "the call beyond the cap is audited as a dry run"
    );
    wait_polls(&sim, 3).await;
    let dry: Vec<Value> = setup
        .audit_of(&newest)
        .into_iter()
        .filter(|r| r["outcome"] == "dry_run")
        .collect();
    assert_eq!(dry.len(), 1, "audited once, not at every poll: {dry:?}");
    assert_eq!(dry[0]["rule"], "intl-882-cap");
    assert_eq!(live(&sim, &uuids), uuids, "dry run hangs up nothing");
    for uuid in &uuids[..5] {
        assert!(setup.audit_of(uuid).is_empty());
    }
}
