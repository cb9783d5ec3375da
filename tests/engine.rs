//! The enforcement engine against the simulator over 127.0.0.1: deadlines as
//! timers, retries, safety, idle tracking, dry-run and warnings.

mod common;

use std::time::Duration;

use callwarden::audit::{Event, Outcome};
use callwarden::engine::Command;
use chrono::TimeDelta;
use common::calls::outbound;
use common::daemon::is_probe;
use common::engine::{requests, settings, start, t_wall, wait_ended, wait_for};
use common::policies::START_LIMIT_10S;
use common::{add_calls, default_sim, log_since, set_faults};
use serde_json::json;

#[tokio::test]
async fn a_deadline_between_polls_fires_at_the_deadline_not_at_the_next_poll() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(7.5, "+14155550199")])).await[0].clone();
    let mut settings = settings();
    settings.poll_interval = Duration::from_secs(30);
    let running = start(&sim, START_LIMIT_10S, settings);

    assert!(
        wait_ended(&sim, std::slice::from_ref(&uuid), Duration::from_secs(10)).await,
        "the call was not hung up"
    );
    let call = sim.state().call(&uuid).unwrap();
    let deadline = call.started_at + TimeDelta::seconds(10);
    let log = log_since(&sim, 0).await;
    let deletes = requests(&log, "DELETE", &uuid);
    assert_eq!(deletes.len(), 1, "exactly one DELETE");
    let deleted_at = t_wall(&deletes[0]);
    assert!(
        deleted_at >= deadline,
        "hung up early: {deleted_at} < {deadline}"
    );
    // Only the poll at start happened: the hangup did not wait for the next.
    let lists = log
        .iter()
        .filter(|r| r["uuid"].is_null() && r["method"] == "GET" && !is_probe(r))
        .count();
    assert_eq!(lists, 1, "a second poll ran before the hangup");
    assert_eq!(call.hangups, 1);
    let audit = running.audit_of(&uuid);
    assert_eq!(audit[0].event, Event::Intent, "intent is written first");
    assert_eq!(audit.last().unwrap().outcome, Some(Outcome::Ok));
    running.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_until_success() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(30.0, "+14155550198")])).await[0].clone();
    set_faults(
        &sim,
        json!({"scripts": [{"method": "DELETE", "uuid": uuid, "responses": [500, 500, 204]}]}),
    )
    .await;
    let running = start(&sim, START_LIMIT_10S, settings());
    assert!(wait_ended(&sim, std::slice::from_ref(&uuid), Duration::from_secs(10)).await);
    let log = log_since(&sim, 0).await;
    let deletes = requests(&log, "DELETE", &uuid);
    let statuses: Vec<_> = deletes.iter().map(|r| r["status"].as_u64()).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(204)]);
    // Full jitter: each wait is within its ceiling (200 ms, then 400 ms),
    // plus request time, which a loaded machine can stretch; a retry that
    // waited for the next poll or a max_backoff would take seconds more.
    let gaps: Vec<TimeDelta> = deletes
        .windows(2)
        .map(|w| t_wall(&w[1]) - t_wall(&w[0]))
        .collect();
    assert!(gaps[0] <= TimeDelta::milliseconds(200 + 1500), "{gaps:?}");
    assert!(gaps[1] <= TimeDelta::milliseconds(400 + 1500), "{gaps:?}");
    // The outcome is written after the DELETE answered, by the audit writer.
    assert!(
        wait_for(Duration::from_secs(10), || running
            .audit_of(&uuid)
            .iter()
            .any(|r| r.event == Event::Outcome))
        .await
    );
    let outcome = running
        .audit_of(&uuid)
        .into_iter()
        .find(|r| r.event == Event::Outcome)
        .unwrap();
    assert_eq!(outcome.outcome, Some(Outcome::Ok));
    assert_eq!(outcome.attempts, 3);
    running.stop().await;
}

#[tokio::test]
async fn rate_limited_hangup_waits_for_retry_after() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(30.0, "+14155550197")])).await[0].clone();
    set_faults(
        &sim,
        json!({"scripts": [{"method": "DELETE", "uuid": uuid,
        "responses": [{"status": 429, "retry_after": "2"}]}]}),
    )
    .await;
    let running = start(&sim, START_LIMIT_10S, settings());
    assert!(wait_ended(&sim, std::slice::from_ref(&uuid), Duration::from_secs(10)).await);
    let log = log_since(&sim, 0).await;
    let deletes = requests(&log, "DELETE", &uuid);
    assert_eq!(deletes.len(), 2);
    let gap = t_wall(&deletes[1]) - t_wall(&deletes[0]);
    assert!(
        gap >= TimeDelta::seconds(2),
        "retried after {gap}, before Retry-After"
    );
    running.stop().await;
}

#[tokio::test]
async fn not_found_is_gone_after_one_delete() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(30.0, "+14155550196")])).await[0].clone();
    set_faults(
        &sim,
        json!({"scripts": [{"method": "DELETE", "uuid": uuid, "responses": [404]}]}),
    )
    .await;
    let running = start(&sim, START_LIMIT_10S, settings());
    let id = uuid.clone();
    let finished = wait_for(Duration::from_secs(10), || {
        running
            .audit_of(&id)
            .iter()
            .any(|r| r.event == Event::Outcome)
    })
    .await;
    assert!(finished);
    let outcome = running
        .audit_of(&uuid)
        .into_iter()
        .find(|r| r.event == Event::Outcome)
        .unwrap();
    assert_eq!(outcome.outcome, Some(Outcome::Gone));
    // A few polls later there is still only that one DELETE.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let log = log_since(&sim, 0).await;
    assert_eq!(requests(&log, "DELETE", &uuid).len(), 1);
    running.stop().await;
}

#[tokio::test]
async fn unauthorized_stops_enforcement_without_a_retry_loop() {
    let sim = default_sim();
    let uuids = add_calls(
        &sim,
        json!([
            outbound(30.0, "+14155550195"),
            outbound(30.0, "+14155550194")
        ]),
    )
    .await;
    set_faults(
        &sim,
        json!({"scripts": [{"method": "DELETE", "responses": [401, 401, 401, 401]}]}),
    )
    .await;
    let running = start(&sim, START_LIMIT_10S, settings());
    let mut status = running.status.clone();
    let unhealthy = tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| !s.healthy))
        .await
        .is_ok();
    assert!(unhealthy, "account never marked unhealthy");
    let deletes_then = log_since(&sim, 0)
        .await
        .iter()
        .filter(|r| r["method"] == "DELETE")
        .count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = log_since(&sim, 0).await;
    // Both calls may have been in flight together; neither is retried, and
    // nothing more is sent once the account is unhealthy.
    for uuid in &uuids {
        assert!(
            requests(&log, "DELETE", uuid).len() <= 1,
            "a 401 was retried"
        );
    }
    let deletes_now = log.iter().filter(|r| r["method"] == "DELETE").count();
    assert_eq!(deletes_now, deletes_then, "DELETEs continued after the 401");
    assert!(uuids
        .iter()
        .all(|u| sim.state().call(u).unwrap().ended_at.is_none()));
    let failed = running
        .audit()
        .into_iter()
        .filter(|r| r.outcome == Some(Outcome::Failed))
        .count();
    assert!(failed >= 1, "the refused hangup is audited as failed");
    running.stop().await;
}

#[tokio::test]
async fn idle_timeout_spares_a_changing_call_and_ends_a_stuck_one() {
    let sim = default_sim();
    let uuids = add_calls(
        &sim,
        json!([
            {"age_s": 1.0, "direction": "outbound", "from": "+14155550100", "to": "+14155550101",
             "answered": false, "status": "ringing"},
            {"age_s": 1.0, "direction": "outbound", "from": "+14155550100", "to": "+14155550102",
             "answered": false, "status": "ringing"},
        ]),
    )
    .await;
    let (changing, stuck) = (uuids[0].clone(), uuids[1].clone());
    let running = start(
        &sim,
        r#"
[[rule]]
name = "stuck-3s"
idle_timeout = "3s"
[rule.match]
status = ["ringing", "early-media"]
"#,
        settings(),
    );
    let state = sim.state().clone();
    // Flip the first call between ringing and early media every 700 ms.
    for i in 0..9 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let status = if i % 2 == 0 { "early-media" } else { "ringing" };
        common::control_post(
            &sim,
            &format!("/calls/{changing}/state"),
            json!({"status": status}),
        )
        .await;
    }
    assert!(
        state.call(&stuck).unwrap().ended_at.is_some(),
        "the stuck call survived"
    );
    assert!(
        state.call(&changing).unwrap().ended_at.is_none(),
        "the changing call was hung up"
    );
    running.stop().await;
}

#[tokio::test]
async fn protected_and_exempt_calls_survive_every_rule() {
    let sim = default_sim();
    let uuids = add_calls(
        &sim,
        json!([
            outbound(60.0, "911"),
            outbound(60.0, "+18005550100"),
            outbound(60.0, "+9111234567"),
        ]),
    )
    .await;
    let running = start(
        &sim,
        r#"
[[rule]]
name = "everything-5s"
max_duration = "5s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
[rule.unless]
to = ["+1800*"]
"#,
        settings(),
    );
    let state = sim.state().clone();
    let prefix_only = uuids[2].clone();
    assert!(
        wait_for(Duration::from_secs(10), || state
            .call(&prefix_only)
            .is_some_and(|c| c.ended_at.is_some()))
        .await,
        "911 protects only the exact number, not +9111..."
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        state.call(&uuids[0]).unwrap().ended_at.is_none(),
        "protected call hung up"
    );
    assert!(
        state.call(&uuids[1]).unwrap().ended_at.is_none(),
        "exempt call hung up"
    );
    let protected = running.audit_of(&uuids[0]);
    assert!(protected
        .iter()
        .any(|r| r.outcome == Some(Outcome::Protected)));
    assert!(
        running.audit_of(&uuids[1]).is_empty(),
        "an exempt call needs no decision"
    );
    running.stop().await;
}

#[tokio::test]
async fn the_breaker_holds_a_mass_hangup_until_the_operator_releases_it() {
    let sim = default_sim();
    let calls: Vec<_> = (0..30)
        .map(|n| outbound(60.0, &format!("+1415555{n:04}")))
        .collect();
    let uuids = add_calls(&sim, json!(calls)).await;
    let mut settings = settings();
    settings.safety.max_hangups_per_cycle = 5;
    let running = start(&sim, START_LIMIT_10S, settings);
    let mut status = running.status.clone();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.breaker_open))
            .await
            .is_ok()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = log_since(&sim, 0).await;
    assert_eq!(
        log.iter().filter(|r| r["method"] == "DELETE").count(),
        0,
        "the breaker let hangups through"
    );
    let held = running
        .audit()
        .into_iter()
        .filter(|r| r.event == Event::Breaker)
        .count();
    assert!(
        held > 5,
        "the audit log should say why calls were held, got {held}"
    );

    running
        .commands
        .send(Command::ReleaseBreaker)
        .await
        .unwrap();
    let state = sim.state().clone();
    let all = uuids.clone();
    let released = wait_for(Duration::from_secs(15), || {
        all.iter()
            .all(|u| state.call(u).is_some_and(|c| c.ended_at.is_some()))
    })
    .await;
    let ended = uuids
        .iter()
        .filter(|u| state.call(u).unwrap().ended_at.is_some())
        .count();
    assert!(released, "only {ended} of 30 ended after the override");
    assert!(running.audit().iter().any(|r| r.event == Event::Override));
    assert!(uuids.iter().all(|u| state.call(u).unwrap().hangups == 1));
    running.stop().await;
}

#[tokio::test]
async fn dry_run_hangs_up_nothing_and_writes_the_same_decisions() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(30.0, "+14155550190")])).await[0].clone();
    let mut settings = settings();
    settings.enforce.dry_run = true;
    let running = start(&sim, START_LIMIT_10S, settings);
    let id = uuid.clone();
    assert!(
        wait_for(Duration::from_secs(10), || running
            .audit_of(&id)
            .iter()
            .any(|r| r.event == Event::Outcome))
        .await
    );
    let records = running.audit_of(&uuid);
    assert_eq!(records[0].event, Event::Intent);
    assert!(records[0].dry_run);
    assert_eq!(records[1].outcome, Some(Outcome::DryRun));
    assert_eq!(records[0].rules, ["limit-10s"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = log_since(&sim, 0).await;
    assert_eq!(log.iter().filter(|r| r["method"] == "DELETE").count(), 0);
    assert!(sim.state().call(&uuid).unwrap().ended_at.is_none());
    running.stop().await;
}

#[tokio::test]
async fn a_warning_is_spoken_once_ahead_of_the_hangup() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(1.0, "+14155550189")])).await[0].clone();
    let running = start(
        &sim,
        r#"
[[rule]]
name = "limit-9s"
max_duration = "9s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
[rule.action]
warn_before = "6s"
warn_text = "This call will end soon."
"#,
        settings(),
    );
    assert!(wait_ended(&sim, std::slice::from_ref(&uuid), Duration::from_secs(15)).await);
    let call = sim.state().call(&uuid).unwrap();
    assert_eq!(call.speaks, ["This call will end soon."]);
    let log = log_since(&sim, 0).await;
    let speaks = requests(&log, "POST", &uuid);
    assert_eq!(speaks.len(), 1);
    let spoken_at = t_wall(&speaks[0]);
    let warn_at = call.started_at + TimeDelta::seconds(3);
    assert!(
        spoken_at >= warn_at,
        "warned early: {spoken_at} < {warn_at}"
    );
    let deleted_at = t_wall(&requests(&log, "DELETE", &uuid)[0]);
    assert!(
        deleted_at - spoken_at >= TimeDelta::seconds(5),
        "warning not ahead of the hangup"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_when_a_flat_shape_call_was_first_seen_answered() {
    let sim = default_sim();
    // Flat shape: no answer_time, so the answer is timed from first sight.
    let uuid = add_calls(&sim, json!([outbound(100.0, "+14155550188")])).await[0].clone();
    let policy = r#"
[[rule]]
name = "answered-6s"
max_duration = "6s"
[rule.match]
direction = ["outbound"]
"#;
    let first_sight = chrono::Utc::now();
    let running = start(&sim, policy, settings());
    // Stopped a second before the deadline: kept, the call falls due about
    // a second after the restart; re-timed, six seconds after it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let state = running.stop().await;
    let restarted_at = chrono::Utc::now();
    let running = common::engine::start_in(&sim, policy, settings(), state);
    assert!(wait_ended(&sim, std::slice::from_ref(&uuid), Duration::from_secs(12)).await);
    let log = log_since(&sim, 0).await;
    let deleted_at = t_wall(&requests(&log, "DELETE", &uuid)[0]);
    assert!(
        deleted_at >= first_sight + TimeDelta::seconds(6),
        "early: {deleted_at}"
    );
    assert!(
        deleted_at < restarted_at + TimeDelta::milliseconds(4500),
        "re-timed from the restart ({restarted_at}), hung up at {deleted_at}"
    );
    running.stop().await;
}

#[tokio::test]
async fn under_a_tight_budget_a_due_hangup_does_not_queue_behind_discovery() {
    let sim = default_sim();
    // The first call listed falls due about one second in. 99 inbound calls,
    // which no rule matches, keep discovery busy for about ten seconds at 10
    // requests per second: wide enough that a slow machine, or a skew bound
    // still loose at start, cannot push the deadline past the end of
    // discovery, and nothing else falls due meanwhile.
    let mut calls = vec![outbound(9.0, "+14155550187")];
    calls.extend((0..99).map(|n| {
        let mut call = outbound(1.0, &format!("+1312555{n:04}"));
        call["direction"] = json!("inbound");
        call
    }));
    let uuids = add_calls(&sim, json!(calls)).await;
    let due = uuids[0].clone();
    let mut client = common::client_config(&sim);
    client.max_requests_per_second = 10;
    let mut settings = settings();
    settings.max_requests_per_second = 10;
    settings.poll_interval = Duration::from_secs(60);
    // The intent's sync sits between the re-read and the DELETE, and reads
    // go on meanwhile; a busy disk would let more of them in. This test is
    // about the request budget, so the sync takes no time.
    let state = tempfile::tempdir().unwrap();
    let audit = common::engine::instant_audit(state.path());
    let running = common::engine::start_with_audit(client, START_LIMIT_10S, settings, state, audit);
    assert!(wait_ended(&sim, std::slice::from_ref(&due), Duration::from_secs(30)).await);
    // Let discovery finish, so the log shows what came after the hangup.
    let state = sim.state().clone();
    let everything_read = wait_for(Duration::from_secs(60), || {
        let read: std::collections::HashSet<String> = state
            .log(0)
            .into_iter()
            .filter(|r| r.method == "GET")
            .filter_map(|r| r.uuid)
            .collect();
        uuids.iter().all(|uuid| read.contains(uuid))
    })
    .await;
    assert!(everything_read, "discovery never read every call");
    let log = log_since(&sim, 0).await;
    let timeline = || {
        log.iter()
            .filter(|r| r["uuid"] == due.as_str() || r["method"] == "DELETE")
            .map(|r| format!("{} {} {} {}", r["seq"], r["t_wall"], r["method"], r["uuid"]))
            .collect::<Vec<_>>()
    };
    let reread = log
        .iter()
        .enumerate()
        .filter(|(_, r)| r["method"] == "GET" && r["uuid"] == due.as_str())
        .nth(1)
        .map(|(i, _)| i)
        .expect("the due call is re-read before its hangup");
    let delete = log
        .iter()
        .position(|r| r["method"] == "DELETE" && r["uuid"] == due.as_str())
        .expect("the DELETE");
    let discovery_reads_after = log[delete..]
        .iter()
        .filter(|r| r["method"] == "GET" && !r["uuid"].is_null())
        .count();
    let reads_between = log[reread..delete]
        .iter()
        .filter(|r| r["method"] == "GET" && r["uuid"] != due.as_str())
        .count();
    assert!(
        discovery_reads_after > 0,
        "the hangup waited for discovery to finish: {:#?}",
        timeline()
    );
    assert!(
        reads_between <= 1,
        "{reads_between} discovery reads went between the re-read and the DELETE: {:#?}",
        timeline()
    );
    running.stop().await;
}

/// Calls due tens of seconds after they were first read: the clock bound
/// widens a little as it ages between the timer being set and firing, so a
/// timer can fire a few milliseconds before the deadline the current bound
/// gives. The engine re-times such a timer instead of re-reading the call,
/// so each hangup costs one re-read, never two.
#[tokio::test]
async fn a_timer_set_under_an_older_clock_bound_costs_one_re_read_per_hangup() {
    const LIMIT_25S: &str = r#"
[[rule]]
name = "limit-25s"
max_duration = "25s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
"#;
    let sim = default_sim();
    let calls: Vec<_> = (0..6)
        .map(|i| outbound(f64::from(i) * 2.0, &format!("+1415555012{i}")))
        .collect();
    let uuids = add_calls(&sim, json!(calls)).await;
    let running = start(&sim, LIMIT_25S, settings());
    assert!(
        wait_ended(&sim, &uuids, Duration::from_secs(60)).await,
        "not every call was hung up"
    );
    let log = log_since(&sim, 0).await;
    for uuid in &uuids {
        let call = sim.state().call(uuid).unwrap();
        let deadline = call.started_at + TimeDelta::seconds(25);
        let deletes = requests(&log, "DELETE", uuid);
        assert_eq!(deletes.len(), 1, "{uuid}: exactly one DELETE");
        assert!(t_wall(&deletes[0]) >= deadline, "{uuid}: hung up early");
        // The first read, then the one re-read before the DELETE.
        let reads = requests(&log, "GET", uuid);
        assert_eq!(reads.len(), 2, "{uuid}: reads {reads:?}");
    }
    running.stop().await;
}
