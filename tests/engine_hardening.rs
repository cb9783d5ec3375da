//! Engine hardening against the REAL binary and the simulator: odd calls
//! must not re-time the whole account, partial list answers must not end
//! calls, reloads must not re-decide finished calls, unreadable legacy
//! answer times still end calls, the breaker counts each call once, and a
//! malformed answer is retried like a 5xx.

mod common;

use std::time::Duration;

use callwarden::sim::SimHandle;
use chrono::{DateTime, TimeDelta, Utc};
use common::calls::{ended, outbound};
use common::daemon::{Daemon, Knobs, Setup, LIMIT};
use common::proxy::Proxy;
use common::{add_calls, control_post, default_sim};
use serde_json::{json, Value};

/// Outbound calls to +1900... end 60 s after they start.
const PREMIUM_60S: &str = r#"
[[rule]]
name = "premium-60s"
max_duration = "60s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
to = ["+1900*"]
"#;

/// A config for `sim` whose API requests go through `base_url` instead.
fn setup_via(sim: &SimHandle, base_url: &str, policies: &[(&str, &str)]) -> Setup {
    let setup = Setup::new(sim, policies, Knobs::default());
    let text = std::fs::read_to_string(setup.config_path()).expect("config");
    std::fs::write(setup.config_path(), text.replace(&sim.base_url(), base_url)).expect("config");
    setup
}

/// Polls `probe` every 100 ms until it returns `Some` (bounded by [`LIMIT`]).
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < until, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The account's entry of `/status`.
async fn account(daemon: &Daemon) -> Value {
    daemon.status().await["accounts"][0].clone()
}

/// When `/status` says the daemon first saw `uuid`, once it tracks it.
async fn first_seen(daemon: &Daemon, uuid: &str) -> DateTime<Utc> {
    eventually(&format!("{uuid} tracked"), || async {
        account(daemon).await["calls"]
            .as_array()?
            .iter()
            .find(|c| c["call_uuid"] == uuid)?["first_seen"]
            .as_str()?
            .parse()
            .ok()
    })
    .await
}

async fn wait_ended(sim: &SimHandle, uuid: &str) {
    eventually(&format!("{uuid} ended"), || async {
        ended(sim, uuid).then_some(())
    })
    .await;
}

/// The deadline the audit intent of `uuid` was decided for
/// (its reason reads "rule NAME due at RFC3339").
fn intent_deadline(setup: &Setup, uuid: &str) -> DateTime<Utc> {
    let audit = setup.audit_of(uuid);
    let intent = audit
        .iter()
        .find(|r| r["event"] == "intent")
        .unwrap_or_else(|| panic!("no intent for {uuid}: {audit:#?}"));
    let reason = intent["reason"].as_str().expect("reason");
    let (_, at) = reason.rsplit_once(" due at ").expect("deadline in reason");
    at.parse().expect("deadline parses")
}

/// The deadline a call timed from its own `session_start` gets: the start
/// plus the limit, and at most a second later for the `Date` header's
/// whole seconds. First-sight timing would put it about its age later.
fn assert_timed_from_start(sim: &SimHandle, uuid: &str, deadline: DateTime<Utc>, limit_s: i64) {
    let started = sim.state().call(uuid).expect("call").started_at;
    let from_start = started + TimeDelta::seconds(limit_s);
    assert!(deadline >= from_start, "early: {deadline} < {from_start}");
    assert!(
        deadline <= from_start + TimeDelta::seconds(2),
        "{uuid} was re-timed: deadline {deadline}, {from_start} by its start"
    );
}

#[tokio::test]
async fn a_queued_call_answered_late_does_not_retime_the_other_calls() {
    let sim = default_sim();
    let live = add_calls(&sim, json!([outbound(50.0, "+19005550101")])).await[0].clone();
    let mut queued = outbound(300.0, "+19005550102");
    queued["answered"] = json!(false);
    queued["status"] = json!("queued");
    let queued = add_calls(&sim, json!([queued])).await[0].clone();
    let setup = Setup::new(&sim, &[("p.toml", PREMIUM_60S)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    first_seen(&daemon, &live).await;
    // A few polls later the queued call is answered: it joins the live list
    // looking 300 s old, though it was absent from the previous live list.
    tokio::time::sleep(Duration::from_secs(3)).await;
    control_post(
        &sim,
        &format!("/calls/{queued}/state"),
        json!({"status": "in-progress"}),
    )
    .await;
    let seen = first_seen(&daemon, &queued).await;

    wait_ended(&sim, &live).await;
    assert_timed_from_start(&sim, &live, intent_deadline(&setup, &live), 60);
    let status = account(&daemon).await;
    assert!(status["clock_mismatch"].is_null(), "{status}");
    // The odd call itself is timed from when the daemon first saw it live.
    let deadline = status["next_deadlines"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["call_uuid"] == queued.as_str()))
        .and_then(|d| d["deadline"].as_str())
        .and_then(|d| d.parse::<DateTime<Utc>>().ok())
        .unwrap_or_else(|| panic!("no deadline for the answered call: {status}"));
    assert!(
        deadline >= seen + TimeDelta::seconds(60),
        "{deadline} < {seen} + 60 s"
    );
    assert!(!ended(&sim, &queued));
}

#[tokio::test]
async fn a_list_that_leaves_out_a_call_once_neither_ends_it_nor_retimes_the_account() {
    let sim = default_sim();
    let proxy = Proxy::start(&sim).await;
    let uuids = add_calls(
        &sim,
        json!([
            outbound(50.0, "+19005550101"),
            json!({"age_s": 600.0, "direction": "inbound", "from": "+14155550100", "to": "+14155550111"}),
        ]),
    )
    .await;
    let (due, old) = (uuids[0].clone(), uuids[1].clone());
    let setup = setup_via(&sim, &proxy.base_url(), &[("p.toml", PREMIUM_60S)]);
    let daemon = Daemon::start(&setup).await;
    let seen = first_seen(&daemon, &old).await;
    first_seen(&daemon, &due).await;
    proxy.omit_from_live_list(&old, 1);
    eventually("a list answer left the old call out", || async {
        (proxy.rewritten() == 1).then_some(())
    })
    .await;

    wait_ended(&sim, &due).await;
    assert_timed_from_start(&sim, &due, intent_deadline(&setup, &due), 60);
    let status = account(&daemon).await;
    assert!(status["clock_mismatch"].is_null(), "{status}");
    // Still the same tracked call: never forgotten, never rediscovered.
    assert_eq!(first_seen(&daemon, &old).await, seen);
}

/// A dry-run rule for +1900... and a live rule that also names 911
/// (protected in the test config).
const DRY_AND_PROTECTED: &str = r#"
[[rule]]
name = "premium-dry"
max_duration = "60s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
to = ["+1900*"]
[rule.action]
dry_run = true

[[rule]]
name = "emergency-60s"
max_duration = "60s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
to = ["911"]
"#;

/// The sum of `metric{labels}` on the daemon's `/metrics`.
async fn metric(daemon: &Daemon, metric: &str, labels: &[(&str, &str)]) -> f64 {
    common::daemon::sample_sum(&daemon.metrics().await, metric, labels)
}

/// Outcome records (not intents, warnings or pardons) of `uuid`.
fn outcomes(setup: &Setup, uuid: &str) -> Vec<Value> {
    setup
        .audit_of(uuid)
        .into_iter()
        .filter(|r| r["event"] == "outcome")
        .collect()
}

#[tokio::test]
async fn reloads_do_not_decide_finished_calls_again() {
    let sim = default_sim();
    let uuids = add_calls(
        &sim,
        json!([outbound(70.0, "+19005550101"), outbound(70.0, "911")]),
    )
    .await;
    let (dry, protected) = (uuids[0].clone(), uuids[1].clone());
    let setup = Setup::new(&sim, &[("p.toml", DRY_AND_PROTECTED)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    eventually("both calls decided", || async {
        (outcomes(&setup, &dry).len() == 1 && outcomes(&setup, &protected).len() == 1).then_some(())
    })
    .await;

    let reloads = 5;
    for n in 1..=reloads {
        daemon.signal(libc::SIGHUP);
        eventually("the reload", || async {
            let ok = metric(
                &daemon,
                "callwarden_config_reloads_total",
                &[("outcome", "ok")],
            )
            .await;
            (ok >= f64::from(n)).then_some(())
        })
        .await;
    }
    // Two more polls after the last reload.
    let polls = metric(&daemon, "callwarden_polls_total", &[("outcome", "ok")]).await;
    eventually("two more polls", || async {
        let now = metric(&daemon, "callwarden_polls_total", &[("outcome", "ok")]).await;
        (now >= polls + 2.0).then_some(())
    })
    .await;
    assert_eq!(
        outcomes(&setup, &dry).len(),
        1,
        "{:#?}",
        setup.audit_of(&dry)
    );
    assert_eq!(
        outcomes(&setup, &protected).len(),
        1,
        "{:#?}",
        setup.audit_of(&protected)
    );
    let hangups = "callwarden_hangups_total";
    assert_eq!(
        metric(&daemon, hangups, &[("outcome", "dry_run")]).await,
        1.0
    );
    assert_eq!(
        metric(&daemon, hangups, &[("outcome", "protected")]).await,
        1.0
    );
    assert!(!ended(&sim, &dry) && !ended(&sim, &protected));

    // A renamed rule is a new decision: it is audited once more.
    setup.write_policy(
        "p.toml",
        &DRY_AND_PROTECTED.replace("premium-dry", "premium-dry-2"),
    );
    daemon.signal(libc::SIGHUP);
    eventually("the renamed rule decides again", || async {
        (outcomes(&setup, &dry).len() == 2).then_some(())
    })
    .await;
    assert_eq!(outcomes(&setup, &dry)[1]["rule"], "premium-dry-2");

    // 911 no longer protected: the call spared as protected is judged again.
    let config = std::fs::read_to_string(setup.config_path()).expect("config");
    let config = config.replace(
        r#"protected_numbers = ["911"]"#,
        r#"protected_numbers = ["112"]"#,
    );
    std::fs::write(setup.config_path(), config).expect("config");
    daemon.signal(libc::SIGHUP);
    wait_ended(&sim, &protected).await;
}

/// Calls to +1900... end 2 s after they are answered.
const ANSWERED_2S: &str = r#"
[[rule]]
name = "premium-answered-2s"
max_duration = "2s"
measure_from = "answer"
[rule.match]
direction = ["outbound"]
to = ["+1900*"]
"#;

#[tokio::test]
async fn a_legacy_call_with_an_unreadable_answer_time_is_timed_from_first_sight() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hostile/api/legacy_unreadable_answer_time.json"
    );
    let body = std::fs::read(fixture).expect("fixture");
    let uuid = "97ceeb52-58b6-41e1-86da-77300b68f8bb";
    let sim = default_sim();
    let mut call = outbound(10.0, "+19005550123");
    call["uuid"] = json!(uuid);
    add_calls(&sim, json!([call])).await;
    let proxy = Proxy::start(&sim).await;
    proxy.replace_live_detail(uuid, body);
    let setup = setup_via(&sim, &proxy.base_url(), &[("p.toml", ANSWERED_2S)]);
    let daemon = Daemon::start(&setup).await;
    let seen = first_seen(&daemon, uuid).await;
    wait_ended(&sim, uuid).await;
    // Timed from the first answer that showed it in progress: not before.
    // (The audit reason writes the deadline in whole milliseconds.)
    let deadline = intent_deadline(&setup, uuid) + TimeDelta::milliseconds(1);
    assert!(
        deadline >= seen + TimeDelta::seconds(2),
        "{deadline} < {seen} + 2 s"
    );
    let outcome = outcomes(&setup, uuid);
    assert_eq!(outcome.len(), 1);
    assert_eq!(outcome[0]["outcome"], "ok");
    drop(daemon);
}

#[tokio::test]
async fn the_whole_fleet_falling_due_at_once_ends_under_one_hundred_percent() {
    let sim = default_sim();
    // 40 calls falling due within 2 s, some seconds after start: the test
    // config has `max_hangups_percent = 100` and 100 hangups per cycle.
    let calls: Vec<Value> = (0..40)
        .map(|i| outbound(55.0 + f64::from(i) * 0.05, "+19005550101"))
        .collect();
    let uuids = add_calls(&sim, json!(calls)).await;
    let setup = Setup::new(&sim, &[("p.toml", PREMIUM_60S)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    for uuid in &uuids {
        wait_ended(&sim, uuid).await;
    }
    // The outcome is written after the DELETE's answer reaches the daemon.
    let oks = |audit: &[Value]| {
        audit
            .iter()
            .filter(|r| r["event"] == "outcome" && r["outcome"] == "ok")
            .count()
    };
    common::engine::wait_for(LIMIT, || oks(&setup.audit()) >= 40).await;
    let audit = setup.audit();
    let held: Vec<&Value> = audit.iter().filter(|r| r["event"] == "breaker").collect();
    assert!(held.is_empty(), "the breaker held calls: {held:#?}");
    assert_eq!(oks(&audit), 40);
    let tripped = daemon
        .json_logs()
        .into_iter()
        .filter(|l| common::daemon::message(l).starts_with("breaker open"))
        .count();
    assert_eq!(tripped, 0);
}

#[tokio::test]
async fn a_malformed_reread_of_a_due_call_is_retried_with_the_backoff() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(55.0, "+19005550101")])).await[0].clone();
    // A regression would park the call for max_backoff: far beyond LIMIT.
    let knobs = Knobs {
        max_backoff: "1h",
        ..Knobs::default()
    };
    let setup = Setup::new(&sim, &[("p.toml", PREMIUM_60S)], knobs);
    let daemon = Daemon::start(&setup).await;
    first_seen(&daemon, &uuid).await;
    // Tracked and answered: the next read of its details is the re-read at
    // the deadline, and its answer is cut short.
    common::set_faults(
        &sim,
        json!({"scripts": [{"endpoint": "detail", "uuid": uuid,
            "responses": [{"malformed": "truncated"}]}]}),
    )
    .await;
    wait_ended(&sim, &uuid).await;

    let log = common::log_since(&sim, 0).await;
    let mine: Vec<String> = log
        .iter()
        .filter(|r| r["uuid"] == uuid.as_str())
        .map(|r| format!("{} {}", r["method"], r["status"]))
        .collect();
    // Discovery read, the malformed re-read, its retry, then the DELETE
    // (the simulator logs a malformed body under its 200 status).
    let expected = [
        r#""GET" 200"#,
        r#""GET" 200"#,
        r#""GET" 200"#,
        r#""DELETE" 204"#,
    ];
    assert_eq!(mine, expected);
    let outcome = outcomes(&setup, &uuid);
    assert_eq!(outcome.len(), 1);
    assert_eq!(outcome[0]["outcome"], "ok");
    let malformed = common::daemon::sample_sum(
        &daemon.metrics().await,
        "callwarden_api_requests_total",
        &[("endpoint", "detail"), ("status", "none")],
    );
    assert_eq!(malformed, 1.0);
}

#[tokio::test]
async fn a_call_whose_details_keep_answering_malformed_is_read_after_a_growing_pause() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(1.0, "+14155550199")])).await[0].clone();
    // Six malformed detail answers, then normal ones. Pauses start at the
    // test config's 200 ms and double up to max_backoff (10 s here).
    common::set_faults(
        &sim,
        json!({"scripts": [{"endpoint": "detail", "uuid": uuid,
            "responses": vec![json!({"malformed": "garbage"}); 6]}]}),
    )
    .await;
    let knobs = Knobs {
        max_backoff: "10s",
        ..Knobs::default()
    };
    let setup = Setup::new(&sim, &[("p.toml", PREMIUM_60S)], knobs);
    let daemon = Daemon::start(&setup).await;
    first_seen(&daemon, &uuid).await;

    let log = common::log_since(&sim, 0).await;
    let reads: Vec<u64> = log
        .iter()
        .filter(|r| r["uuid"] == uuid.as_str())
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(reads.len(), 7, "six malformed reads and the good one");
    // Polls from the first to the sixth (last malformed) read: at every
    // poll without the pause, about twice as many with it (reads at polls
    // 0, 1, 2, 3, 5 and 9).
    let polls = log
        .iter()
        .filter(|r| r["uuid"].is_null() && r["method"] == "GET" && !common::daemon::is_probe(r))
        .filter(|r| (reads[0]..=reads[5]).contains(&r["seq"].as_u64().unwrap_or(0)))
        .count();
    assert!(polls >= 8, "{polls} polls for 6 reads: read at every poll");
    let warning = |l: &Value| common::daemon::message(l).starts_with("reading call details failed");
    assert!(daemon.wait_log(warning).await.is_some(), "no warning");
    let warned = daemon.json_logs().into_iter().filter(warning).count();
    assert_eq!(warned, 1, "warned once for the call");
}

#[tokio::test]
async fn invalid_list_entries_are_reported_once_not_at_every_poll() {
    let sim = default_sim();
    let proxy = Proxy::start(&sim).await;
    proxy.add_to_live_list(vec![json!("a/b"), json!(""), json!(7)]);
    let setup = setup_via(&sim, &proxy.base_url(), &[("p.toml", PREMIUM_60S)]);
    let daemon = Daemon::start(&setup).await;
    eventually("five polls", || async {
        let polls = metric(&daemon, "callwarden_polls_total", &[("outcome", "ok")]).await;
        (polls >= 5.0).then_some(())
    })
    .await;
    let reports: Vec<Value> = daemon
        .json_logs()
        .into_iter()
        .filter(|l| common::daemon::message(l).starts_with("skipping"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert_eq!(reports[0]["skipped"], 3);
    assert_eq!(reports[0]["first"], r#""a/b""#);
}
