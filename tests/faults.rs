//! Fault injection: the real engine against a misbehaving simulator. For
//! every fault the same invariants hold (issue 8): no DELETE before a call's
//! true deadline (taken from the simulator's own times), never two DELETEs
//! answered 2xx for one call, protected and exempt calls untouched, and
//! every due call hung up once the API works again.

mod common;

use std::time::Duration;

use callwarden::audit::{Event, Outcome};
use chrono::{DateTime, TimeDelta, Utc};
use common::calls::outbound;
use common::engine::{requests, settings, start, t_wall, wait_ended, wait_for, Running};
use common::{add_calls, control_post, default_sim, log_since, set_faults};
use serde_json::{json, Value};

use callwarden::sim::SimHandle;

/// Every outbound call ends 6 s after it started, except toll-free ones.
const LIMIT_6S: &str = r#"
[[rule]]
name = "limit-6s"
max_duration = "6s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
[rule.unless]
to = ["+1800*"]
"#;

const LIMIT: TimeDelta = TimeDelta::seconds(6);

/// The calls of one scenario: which must end (at `started + LIMIT` at the
/// earliest) and which must survive.
struct Scenario {
    due: Vec<String>,
    spared: Vec<String>,
}

/// Overdue, soon-due and young calls, plus a protected and an exempt one.
async fn standard_calls(sim: &SimHandle) -> Scenario {
    let uuids = add_calls(
        sim,
        json!([
            outbound(30.0, "+14155550001"),
            outbound(4.0, "+14155550002"),
            outbound(1.0, "+14155550003"),
            outbound(30.0, "911"),
            outbound(30.0, "+18005550100"),
        ]),
    )
    .await;
    Scenario {
        due: uuids[..3].to_vec(),
        spared: uuids[3..].to_vec(),
    }
}

/// Waits until every due call has ended (or `limit` passes).
/// No DELETE before the true deadline, at most one 2xx DELETE per call,
/// nothing sent to spared calls, every due call ended by the API.
async fn assert_safe(sim: &SimHandle, scenario: &Scenario) {
    let log = log_since(sim, 0).await;
    for uuid in &scenario.due {
        let call = sim.state().call(uuid).expect("call exists");
        let deadline = call.started_at + LIMIT;
        for delete in requests(&log, "DELETE", uuid) {
            let at = t_wall(&delete);
            assert!(at >= deadline, "{uuid}: DELETE at {at} before {deadline}");
        }
        assert!(call.hangups <= 1, "{uuid} hung up {} times", call.hangups);
        assert!(call.ended_at.is_some(), "{uuid} was never hung up");
    }
    for uuid in &scenario.spared {
        let call = sim.state().call(uuid).expect("call exists");
        assert!(
            requests(&log, "DELETE", uuid).is_empty(),
            "{uuid} ({}) got a DELETE",
            call.to
        );
        assert!(call.ended_at.is_none(), "{uuid} ({}) ended", call.to);
    }
}

/// Waits until the engine tracks `n` calls.
async fn wait_tracked(running: &Running, n: usize) -> bool {
    let mut status = running.status.clone();
    let tracked = tokio::time::timeout(
        Duration::from_secs(15),
        status.wait_for(|s| s.tracked_calls >= n),
    )
    .await
    .is_ok();
    tracked
}

#[tokio::test]
async fn two_second_latency_on_every_request_delays_but_never_advances() {
    let sim = default_sim();
    set_faults(&sim, json!({"latency_ms": 2000})).await;
    let scenario = standard_calls(&sim).await;
    let running = start(&sim, LIMIT_6S, settings());
    assert!(wait_ended(&sim, &scenario.due, Duration::from_secs(25)).await);
    assert_safe(&sim, &scenario).await;
    running.stop().await;
}

#[tokio::test]
async fn thirty_percent_503s_everywhere_still_end_every_due_call_once() {
    let sim = default_sim();
    set_faults(&sim, json!({"error_rate": 0.3, "error_status": 503})).await;
    let mut scenario = standard_calls(&sim).await;
    let more: Vec<Value> = (0..8)
        .map(|n| outbound(f64::from(n), &format!("+1415555020{n}")))
        .collect();
    scenario.due.extend(add_calls(&sim, json!(more)).await);
    let running = start(&sim, LIMIT_6S, settings());
    assert!(wait_ended(&sim, &scenario.due, Duration::from_secs(40)).await);
    assert_safe(&sim, &scenario).await;
    let log = log_since(&sim, 0).await;
    assert!(
        log.iter().any(|r| r["status"] == 503),
        "the fault never fired"
    );
    running.stop().await;
}

#[tokio::test]
async fn scripted_500_and_429_sequences_on_list_detail_and_delete() {
    let sim = default_sim();
    let scenario = standard_calls(&sim).await;
    let overdue = scenario.due[0].clone();
    set_faults(
        &sim,
        json!({"scripts": [
            {"endpoint": "list", "responses": [500, {"status": 429, "retry_after": "1"}, 502]},
            {"endpoint": "detail", "uuid": overdue, "responses": [503, 500]},
            {"method": "DELETE", "uuid": overdue,
             "responses": [500, {"status": 429, "retry_after": "1"}, 502, {"status": 429}]},
        ]}),
    )
    .await;
    let running = start(&sim, LIMIT_6S, settings());
    assert!(wait_ended(&sim, &scenario.due, Duration::from_secs(30)).await);
    assert_safe(&sim, &scenario).await;
    let log = log_since(&sim, 0).await;
    let statuses: Vec<_> = requests(&log, "DELETE", &overdue)
        .iter()
        .map(|r| r["status"].as_u64())
        .collect();
    // Either all four scripted answers and then the real 204 in one run of
    // retries, or a failed run and a later one: the last answer is the 204.
    assert_eq!(statuses.last(), Some(&Some(204)), "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == Some(204)).count(),
        1,
        "{statuses:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_delete_that_hung_up_but_lost_its_answer_is_never_repeated() {
    let sim = default_sim();
    let scenario = standard_calls(&sim).await;
    let overdue = scenario.due[0].clone();
    set_faults(
        &sim,
        json!({"scripts": [{"method": "DELETE", "uuid": overdue,
            "responses": [{"reset": true, "act_first": true}]}]}),
    )
    .await;
    let running = start(&sim, LIMIT_6S, settings());
    assert!(wait_ended(&sim, &scenario.due, Duration::from_secs(20)).await);
    // Give the engine time to make any mistake it would make.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_safe(&sim, &scenario).await;

    let call = sim.state().call(&overdue).unwrap();
    assert_eq!(
        call.delete_requests, 1,
        "DELETE repeated after a lost answer"
    );
    assert_eq!(call.hangups, 1);
    // After the lost answer the call was re-read before anything else.
    let log = log_since(&sim, 0).await;
    let delete_seq = requests(&log, "DELETE", &overdue)[0]["seq"].as_u64();
    let reread = requests(&log, "GET", &overdue)
        .into_iter()
        .any(|r| r["seq"].as_u64() > delete_seq && r["status"] == 404);
    assert!(reread, "no re-read after the lost answer");
    let outcome = running
        .audit_of(&overdue)
        .into_iter()
        .find(|r| r.event == Event::Outcome)
        .expect("an outcome");
    assert_eq!(outcome.outcome, Some(Outcome::Gone));
    running.stop().await;
}

#[tokio::test]
async fn a_reset_before_acting_is_re_read_then_retried_once() {
    let sim = default_sim();
    let scenario = standard_calls(&sim).await;
    let overdue = scenario.due[0].clone();
    set_faults(
        &sim,
        json!({"scripts": [{"method": "DELETE", "uuid": overdue, "responses": [{"reset": true}]}]}),
    )
    .await;
    let running = start(&sim, LIMIT_6S, settings());
    assert!(wait_ended(&sim, &scenario.due, Duration::from_secs(20)).await);
    assert_safe(&sim, &scenario).await;
    let log = log_since(&sim, 0).await;
    let deletes = requests(&log, "DELETE", &overdue);
    assert_eq!(deletes.len(), 2, "{deletes:?}");
    assert!(deletes[0]["status"].is_null());
    assert_eq!(deletes[1]["status"], 204);
    let (first, second) = (deletes[0]["seq"].as_u64(), deletes[1]["seq"].as_u64());
    assert!(
        requests(&log, "GET", &overdue)
            .iter()
            .any(|r| r["seq"].as_u64() > first && r["seq"].as_u64() < second),
        "the second DELETE was not preceded by a re-read"
    );
    running.stop().await;
}

#[tokio::test]
async fn random_connection_resets_never_cause_a_double_hangup() {
    let sim = default_sim();
    set_faults(&sim, json!({"reset_rate": 0.25})).await;
    let mut scenario = standard_calls(&sim).await;
    let more: Vec<Value> = (0..8)
        .map(|n| outbound(f64::from(n), &format!("+1415555030{n}")))
        .collect();
    scenario.due.extend(add_calls(&sim, json!(more)).await);
    let running = start(&sim, LIMIT_6S, settings());
    assert!(wait_ended(&sim, &scenario.due, Duration::from_secs(40)).await);
    assert_safe(&sim, &scenario).await;
    let log = log_since(&sim, 0).await;
    assert!(log.iter().any(|r| r["status"].is_null()), "no reset fired");
    running.stop().await;
}

#[tokio::test]
async fn an_outage_holds_hangups_until_the_api_is_back_then_ends_them_all() {
    let sim = default_sim();
    // Due 2-4 s from now, i.e. inside the outage.
    let uuids = add_calls(
        &sim,
        json!([
            outbound(3.0, "+14155550401"),
            outbound(4.0, "+14155550402"),
            outbound(30.0, "911"),
            outbound(30.0, "+18005550100"),
        ]),
    )
    .await;
    let scenario = Scenario {
        due: uuids[..2].to_vec(),
        spared: uuids[2..].to_vec(),
    };
    let running = start(&sim, LIMIT_6S, settings());
    assert!(wait_tracked(&running, 4).await);
    set_faults(&sim, json!({"outage_s": 5.0})).await;
    let outage_end = Utc::now() + TimeDelta::seconds(5);
    assert!(wait_ended(&sim, &scenario.due, Duration::from_secs(25)).await);
    assert_safe(&sim, &scenario).await;
    let log = log_since(&sim, 0).await;
    for uuid in &scenario.due {
        let ok: Vec<DateTime<Utc>> = requests(&log, "DELETE", uuid)
            .iter()
            .filter(|r| r["status"] == 204)
            .map(t_wall)
            .collect();
        assert_eq!(ok.len(), 1);
        assert!(ok[0] >= outage_end - TimeDelta::milliseconds(500));
    }
    assert!(log.iter().any(|r| r["status"] == 503));
    running.stop().await;
}

#[tokio::test]
async fn malformed_truncated_and_wrongly_typed_answers_are_skipped_not_fatal() {
    let sim = default_sim();
    let scenario = standard_calls(&sim).await;
    let (overdue, soon) = (scenario.due[0].clone(), scenario.due[1].clone());
    set_faults(
        &sim,
        json!({"scripts": [
            {"endpoint": "list", "responses": [
                {"malformed": "truncated"}, {"malformed": "garbage"}, {"malformed": "wrong_types"}]},
            {"endpoint": "detail", "uuid": overdue, "responses": [
                {"malformed": "wrong_types"}, {"malformed": "truncated"}, {"malformed": "garbage"}]},
            {"endpoint": "detail", "uuid": scenario.spared[0], "responses": [
                {"malformed": "wrong_types"}]},
            {"method": "DELETE", "uuid": soon, "responses": [{"malformed": "garbage"}]},
        ]}),
    )
    .await;
    let running = start(&sim, LIMIT_6S, settings());
    assert!(wait_ended(&sim, &scenario.due, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_safe(&sim, &scenario).await;
    // The garbage answer to the DELETE did hang up; the engine re-read the
    // call instead of sending a second DELETE.
    let call = sim.state().call(&soon).unwrap();
    assert_eq!((call.delete_requests, call.hangups), (1, 1));
    let polls = running
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("callwarden_polls_total") && l.contains("outcome=\"error\""))
        .count();
    assert!(polls >= 1, "bad list answers are counted as failed polls");
    running.stop().await;
}

#[tokio::test]
async fn a_listed_call_whose_detail_is_404_is_never_hung_up() {
    let sim = default_sim();
    let scenario = standard_calls(&sim).await;
    let ghost = add_calls(&sim, json!([outbound(60.0, "+14155550501")])).await[0].clone();
    let not_found: Vec<u16> = vec![404; 200];
    set_faults(
        &sim,
        json!({"scripts": [{"endpoint": "detail", "uuid": ghost, "responses": not_found}]}),
    )
    .await;
    let running = start(&sim, LIMIT_6S, settings());
    assert!(wait_ended(&sim, &scenario.due, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_safe(&sim, &scenario).await;
    let log = log_since(&sim, 0).await;
    assert!(requests(&log, "DELETE", &ghost).is_empty());
    assert!(!requests(&log, "GET", &ghost).is_empty());
    assert!(sim.state().call(&ghost).unwrap().ended_at.is_none());
    running.stop().await;
}

#[tokio::test]
async fn a_call_that_ends_while_its_hangup_is_retried_is_gone_not_hung_up() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(30.0, "+14155550601")])).await[0].clone();
    set_faults(
        &sim,
        json!({"scripts": [{"method": "DELETE", "uuid": uuid,
            "responses": [{"status": 429, "retry_after": "2"}]}]}),
    )
    .await;
    let running = start(&sim, LIMIT_6S, settings());
    // As soon as the first DELETE was refused, the caller hangs up.
    let mut seen = false;
    for _ in 0..200 {
        if !requests(&log_since(&sim, 0).await, "DELETE", &uuid).is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "no DELETE was sent");
    control_post(&sim, &format!("/calls/{uuid}/end"), json!({})).await;
    let id = uuid.clone();
    assert!(
        wait_for(Duration::from_secs(10), || running
            .audit_of(&id)
            .iter()
            .any(|r| r.event == Event::Outcome))
        .await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let call = sim.state().call(&uuid).unwrap();
    assert_eq!(call.hangups, 0);
    let statuses: Vec<_> = requests(&log_since(&sim, 0).await, "DELETE", &uuid)
        .iter()
        .map(|r| r["status"].as_u64())
        .collect();
    assert_eq!(
        statuses,
        [Some(429), Some(404)],
        "the retry stops at the 404"
    );
    let outcome = running
        .audit_of(&uuid)
        .into_iter()
        .find(|r| r.event == Event::Outcome)
        .unwrap();
    assert_eq!(outcome.outcome, Some(Outcome::Gone));
    running.stop().await;
}

/// Calls created after the engine's first poll: a new call can be no older
/// than the time since the previous poll, so the age bound applies to them.
async fn new_calls_after_first_poll(sim: &SimHandle, running: &Running) -> Scenario {
    let mut status = running.status.clone();
    assert!(tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.last_poll_ok.is_some())
    )
    .await
    .is_ok());
    let uuids = add_calls(
        sim,
        json!([
            outbound(0.0, "+14155550701"),
            outbound(0.5, "+14155550702"),
            outbound(0.0, "911"),
            outbound(0.0, "+18005550100"),
        ]),
    )
    .await;
    Scenario {
        due: uuids[..2].to_vec(),
        spared: uuids[2..].to_vec(),
    }
}

async fn assert_clock_mismatch_raised(running: &Running) {
    let mut status = running.status.clone();
    let raised = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.clock_mismatch.is_some()),
    )
    .await
    .is_ok();
    assert!(raised, "no clock mismatch in /status");
    let metrics = running.metrics.encode();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("callwarden_clock_mismatch") && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn date_header_five_minutes_ahead_never_makes_calls_look_older() {
    let sim = default_sim();
    set_faults(&sim, json!({"date_skew_s": 300})).await;
    // Calls there at start-up (no age bound applies) and calls that appear
    // later: the `Date` header alone must not age either.
    let mut scenario = standard_calls(&sim).await;
    let running = start(&sim, LIMIT_6S, settings());
    let later = new_calls_after_first_poll(&sim, &running).await;
    scenario.due.extend(later.due);
    scenario.spared.extend(later.spared);
    assert!(wait_ended(&sim, &scenario.due, Duration::from_secs(20)).await);
    assert_safe(&sim, &scenario).await;
    running.stop().await;
}

#[tokio::test]
async fn date_header_five_minutes_behind_still_ends_calls_in_time() {
    let sim = default_sim();
    set_faults(&sim, json!({"date_skew_s": -300})).await;
    let scenario = standard_calls(&sim).await;
    let running = start(&sim, LIMIT_6S, settings());
    // The timestamps look 5 min in the future: a mismatch, so calls are
    // timed from first sight (late, never early).
    assert_clock_mismatch_raised(&running).await;
    assert!(wait_ended(&sim, &scenario.due, Duration::from_secs(20)).await);
    assert_safe(&sim, &scenario).await;
    running.stop().await;
}

#[tokio::test]
async fn session_start_in_another_zone_is_detected_and_calls_are_timed_from_first_sight() {
    for zone in ["America/New_York", "Asia/Kolkata"] {
        let sim = default_sim();
        set_faults(&sim, json!({"timestamp_zone": zone})).await;
        let running = start(&sim, LIMIT_6S, settings());
        let scenario = new_calls_after_first_poll(&sim, &running).await;
        assert_clock_mismatch_raised(&running).await;
        assert!(
            wait_ended(&sim, &scenario.due, Duration::from_secs(20)).await,
            "{zone}"
        );
        assert_safe(&sim, &scenario).await;
        // Timed from first sight: no earlier than LIMIT after the engine
        // first read the call.
        let log = log_since(&sim, 0).await;
        for uuid in &scenario.due {
            let first_get = t_wall(&requests(&log, "GET", uuid)[0]);
            let delete = t_wall(&requests(&log, "DELETE", uuid)[0]);
            assert!(delete - first_get >= LIMIT, "{zone}: {uuid}");
        }
        running.stop().await;
    }
}
