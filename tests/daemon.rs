//! The real `callwarden` binary in production shape: `run` with signals,
//! sd_notify, the status listener and its metrics, `pardon`, and the exit
//! codes of `check`, `once` and a bad command — each against an in-process
//! simulator on 127.0.0.1, each bounded in time, the child killed on drop.

mod common;

use std::time::Duration;

use callwarden::sim::SimHandle;
use common::calls::{ended, outbound};
use common::daemon::{
    command, endpoint_of, message, run, sample_sum, status_label, Daemon, Knobs, Setup, LIMIT,
};
use common::engine::wait_for;
use common::policies::PREMIUM_5S;
use common::{add_calls, default_sim, log_since, set_faults};
use serde_json::{json, Value};

/// The same rule, widened to +44... as well.
const PREMIUM_AND_UK_5S: &str = r#"
[[rule]]
name = "premium-5s"
max_duration = "5s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
to = ["+1900*", "+44*"]
"#;

/// Waits until `/status` shows `uuid` among the tracked calls.
async fn wait_tracked(daemon: &Daemon, uuid: &str) {
    let until = tokio::time::Instant::now() + LIMIT;
    loop {
        let status = daemon.status().await;
        let tracked = status["accounts"][0]["calls"]
            .as_array()
            .is_some_and(|calls| calls.iter().any(|c| c["call_uuid"] == uuid));
        if tracked {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{uuid} never tracked: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the sum of `metric{labels}` reaches exactly `value`.
async fn wait_metric(daemon: &Daemon, metric: &str, labels: &[(&str, &str)], value: f64) {
    let got = wait_metric_at_least(daemon, metric, labels, value).await;
    assert_eq!(got, value, "{metric}{labels:?} went past {value}");
}

/// Waits until the sum of `metric{labels}` reaches `value`; returns it.
async fn wait_metric_at_least(
    daemon: &Daemon,
    metric: &str,
    labels: &[(&str, &str)],
    value: f64,
) -> f64 {
    let until = tokio::time::Instant::now() + LIMIT;
    loop {
        let got = sample_sum(&daemon.metrics().await, metric, labels);
        if got >= value {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{metric}{labels:?} = {got}, never {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the daemon has finished two polls that started after `instant`.
async fn wait_polls_after(daemon: &Daemon, instant: chrono::DateTime<chrono::Utc>) {
    while chrono::Utc::now() <= instant {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let polls = sample_sum(&daemon.metrics().await, "callwarden_polls_total", &[]);
    wait_metric_at_least(daemon, "callwarden_polls_total", &[], polls + 2.0).await;
}

async fn wait_ended(sim: &SimHandle, uuid: &str) -> bool {
    let state = sim.state().clone();
    let id = uuid.to_owned();
    wait_for(LIMIT, move || {
        state.call(&id).is_some_and(|c| c.ended_at.is_some())
    })
    .await
}

async fn stop(mut daemon: Daemon) {
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait_exit(LIMIT)
        .await
        .expect("daemon stops on SIGTERM");
    assert!(
        status.success(),
        "exit status {status}: {:#?}",
        daemon.logs()
    );
}

// ---- signals ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_change_and_keeps_the_old_rules_on_a_broken_one() {
    let sim = default_sim();
    let uk = add_calls(&sim, json!([outbound(60.0, "+442071234567")])).await[0].clone();
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_5S)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    wait_tracked(&daemon, &uk).await;
    // Tracked under the old rules, long past 5 s, and spared: no rule matched.
    wait_metric_at_least(&daemon, "callwarden_polls_total", &[("outcome", "ok")], 2.0).await;
    assert!(
        !ended(&sim, &uk),
        "the old rules hung up a call they do not match"
    );

    setup.write_policy("rules.toml", PREMIUM_AND_UK_5S);
    daemon.signal(libc::SIGHUP);
    assert!(
        wait_ended(&sim, &uk).await,
        "the reloaded rule was not applied"
    );
    wait_metric(
        &daemon,
        "callwarden_config_reloads_total",
        &[("outcome", "ok")],
        1.0,
    )
    .await;

    setup.write_policy(
        "rules.toml",
        "[[rule]]\nname = \"Not A Valid Name\"\nmax_duration = \"oops\"\n",
    );
    daemon.signal(libc::SIGHUP);
    wait_metric(
        &daemon,
        "callwarden_config_reloads_total",
        &[("outcome", "error")],
        1.0,
    )
    .await;
    let metrics = daemon.metrics().await;
    assert_eq!(
        sample_sum(
            &metrics,
            "callwarden_config_reloads_total",
            &[("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(sample_sum(&metrics, "callwarden_policy_rules", &[]), 1.0);
    assert_eq!(
        sample_sum(&metrics, "callwarden_config_last_reload_successful", &[]),
        0.0,
        "a failed reload shows in the gauge the alert uses"
    );
    assert!(
        daemon
            .wait_log(|l| message(l).starts_with("reload failed") && l["level"] == "ERROR")
            .await
            .is_some(),
        "no reload error logged"
    );
    // Logged before the summary line above, so already taken in.
    assert!(
        daemon
            .json_logs()
            .iter()
            .any(|l| message(l).contains("rules.toml:")),
        "the broken file's position is not logged"
    );

    // The old (widened) rules still enforce.
    let uk2 = add_calls(&sim, json!([outbound(60.0, "+442079999999")])).await[0].clone();
    assert!(
        wait_ended(&sim, &uk2).await,
        "enforcement stopped after a bad reload"
    );
    let status = daemon.status().await;
    assert_eq!(status["accounts"][0]["rules"], json!(["premium-5s"]));
    stop(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_retry_storm_exits_zero_with_a_readable_audit_log() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(60.0, "+19005550100")])).await[0].clone();
    set_faults(
        &sim,
        json!({"scripts": [{"method": "DELETE", "uuid": uuid, "responses": vec![503; 50]}]}),
    )
    .await;
    let knobs = Knobs {
        max_attempts: 50,
        max_backoff: "10s",
        ..Knobs::default()
    };
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_5S)], knobs);
    let mut daemon = Daemon::start(&setup).await;
    let sim_ref = &sim;
    let id = uuid.clone();
    let until = tokio::time::Instant::now() + LIMIT;
    // In the storm: at least two DELETEs answered 503.
    loop {
        let log = log_since(sim_ref, 0).await;
        let storms = log
            .iter()
            .filter(|r| r["method"] == "DELETE" && r["uuid"] == id && r["status"] == 503)
            .count();
        if storms >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "no retry storm");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    daemon.signal(libc::SIGTERM);
    // Bounded drain: stop_grace (5 s here) plus start-up slack; a hang guard.
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the daemon exits during a retry storm");
    assert!(status.success(), "exit status {status}");
    assert!(!ended(&sim, &uuid), "503s never hang up");

    let audit = setup.audit();
    assert!(!audit.is_empty());
    for record in &audit {
        for key in [
            "ts",
            "account",
            "call_uuid",
            "event",
            "rules",
            "rule",
            "action",
            "dry_run",
        ] {
            assert!(
                record.get(key).is_some(),
                "audit record without {key}: {record}"
            );
        }
        assert!(
            chrono::DateTime::parse_from_rfc3339(record["ts"].as_str().unwrap()).is_ok(),
            "ts is not RFC 3339: {record}"
        );
    }
    let events: Vec<&str> = audit
        .iter()
        .filter(|r| r["call_uuid"] == uuid)
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"intent"), "{events:?}");
    assert!(
        !audit.iter().any(|r| r["outcome"] == "ok"),
        "an ok outcome without a 2xx"
    );
    assert!(
        daemon.wait_log(|l| message(l) == "stopped").await.is_some(),
        "no clean stop logged"
    );
}

// ---- metrics ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_agree_with_the_simulator_log() {
    let sim = default_sim();
    let uuids = add_calls(
        &sim,
        json!([
            outbound(60.0, "+19005550101"),
            outbound(60.0, "+19005550102"),
            outbound(60.0, "+442071234567"),
            // Due, but from a protected number: a decision, not a hangup.
            json!({"age_s": 60.0, "direction": "outbound", "from": "911", "to": "+19005550199"}),
        ]),
    )
    .await;
    let test_start = chrono::Utc::now().timestamp() as f64;
    // One DELETE fails once first, so the status label has two values.
    set_faults(
        &sim,
        json!({"scripts": [{"method": "DELETE", "uuid": uuids[0], "responses": [503]}]}),
    )
    .await;
    // One poll at start, then quiet for the rest of the test.
    let knobs = Knobs {
        poll: "5m",
        ..Knobs::default()
    };
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_5S)], knobs);
    let daemon = Daemon::start(&setup).await;
    for uuid in &uuids[..2] {
        assert!(wait_ended(&sim, uuid).await, "{uuid} not hung up");
    }
    wait_metric(
        &daemon,
        "callwarden_hangups_total",
        &[("outcome", "ok")],
        2.0,
    )
    .await;

    // Counters and the simulator log read while nothing is in flight: two
    // identical scrapes around the log read.
    let until = tokio::time::Instant::now() + LIMIT;
    let (scrape, log) = loop {
        let before = daemon.get("/metrics").await.1;
        let log = log_since(&sim, 0).await;
        let after = daemon.get("/metrics").await.1;
        if before == after {
            let scrape = prometheus_parse::Scrape::parse(after.lines().map(|l| Ok(l.to_owned())))
                .expect("/metrics parses");
            break (scrape, log);
        }
        assert!(tokio::time::Instant::now() < until, "metrics never settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let deletes_204 = log
        .iter()
        .filter(|r| endpoint_of(r) == "hangup" && r["status"] == 204)
        .count() as f64;
    assert_eq!(deletes_204, 2.0);
    assert_eq!(
        sample_sum(&scrape, "callwarden_hangups_total", &[("outcome", "ok")]),
        deletes_204
    );
    assert_eq!(
        sample_sum(
            &scrape,
            "callwarden_hangups_total",
            &[
                ("account", "default"),
                ("rule", "premium-5s"),
                ("outcome", "ok")
            ]
        ),
        deletes_204
    );
    // Every (endpoint, status) the simulator saw, and nothing else.
    let mut seen = std::collections::BTreeMap::<(String, String), f64>::new();
    for record in &log {
        *seen
            .entry((endpoint_of(record).to_owned(), status_label(record)))
            .or_default() += 1.0;
    }
    assert!(seen.contains_key(&("hangup".to_owned(), "5xx".to_owned())));
    for ((endpoint, status), count) in &seen {
        assert_eq!(
            sample_sum(
                &scrape,
                "callwarden_api_requests_total",
                &[("endpoint", endpoint), ("status", status)]
            ),
            *count,
            "api requests {endpoint} {status}"
        );
    }
    assert_eq!(
        sample_sum(&scrape, "callwarden_api_requests_total", &[]),
        log.len() as f64
    );
    // The deprecated series keeps the old mixed labels for one release.
    assert_eq!(
        sample_sum(
            &scrape,
            "callwarden_api_requests_by_code_total",
            &[("endpoint", "hangup"), ("status", "503")]
        ),
        1.0
    );
    assert_eq!(
        sample_sum(&scrape, "callwarden_api_requests_by_code_total", &[]),
        log.len() as f64
    );
    // Hangups are hangups; the protected call is a decision.
    assert_eq!(
        sample_sum(&scrape, "callwarden_hangups_total", &[("outcome", "ok")]),
        2.0
    );
    assert_eq!(
        sample_sum(
            &scrape,
            "callwarden_decisions_total",
            &[("outcome", "protected"), ("rule", "premium-5s")]
        ),
        1.0
    );
    assert_eq!(sample_sum(&scrape, "callwarden_decisions_total", &[]), 1.0);
    // Deprecated, for one release: the old series still counts it too.
    assert_eq!(
        sample_sum(
            &scrape,
            "callwarden_hangups_total",
            &[("outcome", "protected")]
        ),
        1.0
    );
    assert_eq!(
        sample_sum(
            &scrape,
            "callwarden_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let last_poll = sample_sum(
        &scrape,
        "callwarden_last_successful_poll_timestamp_seconds",
        &[("account", "default")],
    );
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (test_start - 1.0..=now + 1.0).contains(&last_poll),
        "last successful poll {last_poll} not within the test ({test_start}..{now})"
    );
    assert_eq!(sample_sum(&scrape, "callwarden_api_unauthorized", &[]), 0.0);
    assert_eq!(sample_sum(&scrape, "callwarden_live_calls", &[]), 4.0);
    assert_eq!(sample_sum(&scrape, "callwarden_policy_rules", &[]), 1.0);
    assert_eq!(sample_sum(&scrape, "callwarden_breaker_open", &[]), 0.0);
    assert_eq!(
        sample_sum(&scrape, "callwarden_polls_total", &[("outcome", "ok")]),
        log.iter().filter(|r| endpoint_of(r) == "list").count() as f64
    );
    let lag = scrape
        .samples
        .iter()
        .find(|s| s.metric == "callwarden_enforcement_lag_seconds")
        .expect("lag histogram");
    let prometheus_parse::Value::Histogram(buckets) = &lag.value else {
        panic!("lag is not a histogram: {lag:?}");
    };
    let inf = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("+Inf");
    assert_eq!(inf.count, deletes_204, "one lag sample per hangup");
    stop(daemon).await;
}

// ---- systemd --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_status_watchdog_reload_and_stopping() {
    let sim = default_sim();
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_5S)], Knobs::default());
    let socket_path = setup.dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = std::sync::Arc::clone(&received);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf).await {
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let has = |prefix: &'static str| {
        let received = std::sync::Arc::clone(&received);
        move || {
            received
                .lock()
                .unwrap()
                .iter()
                .any(|m| m.lines().any(|l| l.starts_with(prefix)))
        }
    };

    let mut run_cmd = setup.command(&["run"]);
    run_cmd.env("NOTIFY_SOCKET", &socket_path);
    let mut daemon = Daemon::start_with(run_cmd).await;
    assert!(wait_for(LIMIT, has("READY=1")).await, "no READY=1");
    assert!(wait_for(LIMIT, has("WATCHDOG=1")).await, "no WATCHDOG=1");
    assert!(
        wait_for(
            LIMIT,
            has("STATUS=default: 0 live, 0 tracked, last poll ok")
        )
        .await,
        "no STATUS= after a good poll: {:?}",
        received.lock().unwrap()
    );

    daemon.signal(libc::SIGHUP);
    assert!(wait_for(LIMIT, has("RELOADING=1")).await, "no RELOADING=1");
    let reload_then_ready = {
        let received = std::sync::Arc::clone(&received);
        move || {
            let messages = received.lock().unwrap();
            let reloading = messages.iter().position(|m| m.contains("RELOADING=1"));
            reloading.is_some_and(|at| messages[at..].iter().any(|m| m.contains("READY=1")))
        }
    };
    assert!(
        wait_for(LIMIT, reload_then_ready).await,
        "no READY=1 after reload"
    );

    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(LIMIT).await.expect("stops");
    assert!(status.success());
    // The datagram is sent before the exit, but the reader may take it later.
    assert!(wait_for(LIMIT, has("STOPPING=1")).await, "no STOPPING=1");
    // READY=1 came before any STOPPING=1.
    let messages = received.lock().unwrap().clone();
    let ready = messages.iter().position(|m| m.contains("READY=1")).unwrap();
    let stopping = messages
        .iter()
        .position(|m| m.contains("STOPPING=1"))
        .unwrap();
    assert!(ready < stopping, "{messages:?}");
}

// ---- the status listener ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_readyz_and_status_follow_the_api() {
    let sim = default_sim();
    // Down before the daemon starts: READY=1 and /healthz do not wait for it.
    set_faults(&sim, json!({"outage_s": 600.0})).await;
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_5S)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    assert_eq!(
        daemon.get("/readyz").await.0,
        503,
        "ready before any good poll"
    );
    assert_eq!(daemon.get("/healthz").await.0, 200);
    let status = daemon.status().await;
    assert_eq!(status["ready"], false);
    assert!(status["accounts"][0]["last_poll_ok"].is_null());
    set_faults(&sim, json!({})).await;

    let ready = |want: u16| {
        let addr = daemon.addr;
        async move {
            let until = tokio::time::Instant::now() + LIMIT;
            loop {
                let code = reqwest::get(format!("http://{addr}/readyz"))
                    .await
                    .expect("readyz")
                    .status()
                    .as_u16();
                if code == want {
                    return true;
                }
                if tokio::time::Instant::now() > until {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(ready(200).await, "not ready after the outage ended");
    let status = daemon.status().await;
    assert_eq!(status["ready"], true);
    let account = &status["accounts"][0];
    assert_eq!(account["account"], "default");
    assert_eq!(account["healthy"], true);
    assert_eq!(account["rules"], json!(["premium-5s"]));
    assert!(account["last_poll_ok"].is_string());
    assert_eq!(account["breaker_open"], false);

    set_faults(&sim, json!({"outage_s": 60.0})).await;
    assert!(ready(503).await, "still ready during an outage");
    assert_eq!(
        daemon.get("/healthz").await.0,
        200,
        "alive during an outage"
    );
    let status = daemon.status().await;
    assert_eq!(status["ready"], false);
    assert!(status["accounts"][0]["last_poll_error"].is_string());

    set_faults(&sim, json!({})).await;
    assert!(ready(200).await, "not ready again after the outage");
    stop(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pardon_spares_a_call_past_its_deadline() {
    let sim = default_sim();
    let rule = PREMIUM_5S.replace("\"5s\"", "\"12s\"");
    let setup = Setup::new(&sim, &[("rules.toml", &rule)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    let uuid = add_calls(&sim, json!([outbound(0.0, "+19005550103")])).await[0].clone();
    wait_tracked(&daemon, &uuid).await;

    let cli = setup.cli_config(daemon.addr);
    let output = run(command(&cli, &["pardon", &uuid, "--for", "1m"])).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("pardoned {uuid}")), "{stdout}");

    let status = daemon.status().await;
    let tracked = status["accounts"][0]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call_uuid"] == uuid.as_str())
        .cloned()
        .unwrap();
    assert!(tracked["pardoned_until"].is_string(), "{tracked}");
    // Past its deadline and two more polls, the call is still up.
    let deadline = sim.state().call(&uuid).unwrap().started_at + chrono::TimeDelta::seconds(12);
    wait_polls_after(&daemon, deadline).await;
    let records = setup.audit_of(&uuid);
    let pardon = records
        .iter()
        .find(|r| r["event"] == "pardon")
        .expect("a pardon record");
    assert_eq!(pardon["outcome"], "pardoned");
    let call = sim.state().call(&uuid).expect("call");
    assert!(call.ended_at.is_none(), "a pardoned call was hung up");
    assert!(chrono::Utc::now() > call.started_at + chrono::TimeDelta::seconds(12));
    let log = log_since(&sim, 0).await;
    assert!(!log
        .iter()
        .any(|r| r["method"] == "DELETE" && r["uuid"] == uuid));

    // An unknown call: exit 1.
    let output = run(command(
        &cli,
        &["pardon", "00000000-0000-0000-0000-000000000000"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(1));
    stop(daemon).await;
}

// ---- logging ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_comes_from_the_config_and_the_flag_wins() {
    let sim = default_sim();
    let knobs = Knobs {
        log_format: "pretty",
        ..Knobs::default()
    };
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_5S)], knobs);
    // Flag: JSON lines although the config says pretty (the harness reads JSON).
    let mut run_cmd = setup.command(&["--log-format", "json", "run"]);
    run_cmd.env("RUST_LOG", "callwarden=info");
    let daemon = Daemon::start_with(run_cmd).await;
    stop(daemon).await;

    // No flag: the config's `pretty` holds even though stderr is a pipe.
    let mut run_cmd = setup.command(&["run"]);
    run_cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = run_cmd.spawn().expect("spawn");
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let first = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("a log line in time")
        .expect("read")
        .expect("a line");
    assert!(
        serde_json::from_str::<Value>(&first).is_err(),
        "JSON despite pretty: {first}"
    );
    assert!(first.contains("callwarden"), "{first}");
    assert!(
        !first.contains('\u{1b}'),
        "colour codes off a terminal: {first}"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_is_one_log_event_with_its_fields() {
    let sim = default_sim();
    let uuid = add_calls(&sim, json!([outbound(60.0, "+19005550104")])).await[0].clone();
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_5S)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    assert!(wait_ended(&sim, &uuid).await);
    let id = uuid.clone();
    let found = {
        let until = tokio::time::Instant::now() + LIMIT;
        loop {
            let hit = daemon
                .json_logs()
                .into_iter()
                .find(|l| l["call"] == id.as_str() && l["outcome"].is_string());
            if hit.is_some() || tokio::time::Instant::now() > until {
                break hit;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let event = found.expect("a decision log event");
    assert_eq!(event["rule"], "premium-5s");
    assert_eq!(event["action"], "hangup:call");
    assert_eq!(event["outcome"], "ok");
    assert_eq!(event["dry_run"], false);
    assert_eq!(event["account"], "default");
    stop(daemon).await;
}

// ---- CLI exit codes ------------------------------------------------------------

#[tokio::test]
async fn check_accepts_the_example_config() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/callwarden.toml");
    let output = run(command(config.as_ref(), &["check"])).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let summary = stdout.lines().last().expect("a summary line");
    assert!(
        summary.contains("files,") && summary.contains(": ok"),
        "{summary}"
    );
}

#[tokio::test]
async fn check_reports_positions_and_exits_1_on_a_bad_policy() {
    let dir = tempfile::tempdir().unwrap();
    let bad = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bad/bad_cron.toml"
    );
    let config = dir.path().join("callwarden.toml");
    std::fs::write(
        &config,
        format!("policies = [\"{bad}\"]\n[api]\nauth_id = \"MA00000000000000SIM0\"\n"),
    )
    .unwrap();
    let output = run(command(&config, &["check"])).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let error = stdout
        .lines()
        .find(|l| l.contains(": error: "))
        .expect("an error line");
    // FILE:LINE:COL: error: MESSAGE
    let (position, _) = error.split_once(": error: ").unwrap();
    let mut parts = position.rsplitn(3, ':');
    let col = parts.next().unwrap();
    let line = parts.next().unwrap();
    let file = parts.next().unwrap();
    assert!(file.ends_with("bad_cron.toml"), "{error}");
    assert!(
        line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(),
        "{error}"
    );
    assert!(stdout.lines().last().unwrap().contains("error"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_hangs_up_what_is_due_and_exits_0() {
    let sim = default_sim();
    let uuids = add_calls(
        &sim,
        json!([
            outbound(60.0, "+19005550105"),
            outbound(1.0, "+19005550106")
        ]),
    )
    .await;
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_5S)], Knobs::default());
    let output = run(setup.command(&["once"])).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("account default: 2 live"), "{stdout}");
    assert!(ended(&sim, &uuids[0]), "the due call was not hung up");
    assert!(!ended(&sim, &uuids[1]), "once waited for a deadline");
    let outcome = setup
        .audit_of(&uuids[0])
        .into_iter()
        .find(|r| r["event"] == "outcome")
        .expect("outcome audited");
    assert_eq!(outcome["outcome"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_refuses_while_the_daemon_holds_the_state_lock() {
    let sim = default_sim();
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_5S)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    let before = log_since(&sim, 0).await.len();
    let output = run(setup.command(&["once"])).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds"), "{stderr}");
    stop(daemon).await;
    // Without the daemon it runs.
    let output = run(setup.command(&["once"])).await;
    assert_eq!(output.status.code(), Some(0));
    assert!(log_since(&sim, 0).await.len() > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_3_when_the_breaker_holds_hangups() {
    let sim = default_sim();
    let uuids = add_calls(
        &sim,
        json!([
            outbound(60.0, "+19005550107"),
            outbound(60.0, "+19005550108"),
            outbound(60.0, "+19005550109"),
        ]),
    )
    .await;
    let knobs = Knobs {
        max_hangups_per_cycle: 1,
        ..Knobs::default()
    };
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_5S)], knobs);
    let output = run(setup.command(&["once"])).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("BREAKER"), "{stdout}");
    for uuid in &uuids {
        assert!(!ended(&sim, uuid), "the breaker let {uuid} through");
    }
    assert!(setup.audit().iter().any(|r| r["outcome"] == "breaker"));
}

#[tokio::test]
async fn usage_errors_exit_2_and_a_bad_config_exits_1() {
    let output = run(command("/nonexistent.toml".as_ref(), &["frobnicate"])).await;
    assert_eq!(output.status.code(), Some(2));
    let output = run(command("/nonexistent.toml".as_ref(), &["run", "--bogus"])).await;
    assert_eq!(output.status.code(), Some(2));
    let output = run(command("/nonexistent/callwarden.toml".as_ref(), &["run"])).await;
    assert_eq!(output.status.code(), Some(1));
}

#[tokio::test]
async fn the_packaged_sample_config_checks_clean() {
    // As installed: /etc/callwarden/callwarden.toml beside policies/.
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let config = dir.path().join("callwarden.toml");
    std::fs::copy(format!("{root}/packaging/callwarden.toml"), &config).unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    for entry in std::fs::read_dir(format!("{root}/policies")).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue; // policies/tests/ holds test cases
        }
        std::fs::copy(
            &path,
            dir.path().join("policies").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let output = run(command(&config, &["check"])).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");
    assert!(stdout.lines().last().unwrap().ends_with(": ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_at_the_first_log_line_does_not_kill_the_daemon() {
    let sim = default_sim();
    let setup = Setup::new(&sim, &[("rules.toml", PREMIUM_5S)], Knobs::default());
    let mut run_cmd = setup.command(&["run"]);
    run_cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = run_cmd.spawn().expect("spawn");
    let pid = child.id().unwrap() as i32;
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let mut first = true;
    let running = loop {
        let line = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("a log line in time")
            .expect("read");
        let Some(line) = line else { break false };
        if first {
            // As systemd may, as soon as the process shows any sign of life.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGHUP) };
            first = false;
        }
        if line.contains("callwarden running") {
            break true;
        }
    };
    let exited = child.try_wait().unwrap();
    assert!(
        running && exited.is_none(),
        "the daemon died of an early SIGHUP: {exited:?}"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
