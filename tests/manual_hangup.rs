//! Manual hangups through the real binary: `callwarden run` against the
//! simulator, asked by `callwarden hangup` and by raw `POST /hangup`
//! requests. Each test checks the simulator's request log, its call states
//! and the audit log.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use callwarden::sim::SimHandle;
use common::calls::{ended, outbound};
use common::daemon::{command, run, Daemon, Knobs, Setup, LIMIT};
use common::engine::wait_for;
use common::{add_calls, default_sim, http, log_since, wait_polls};
use serde_json::{json, Value};

/// A rule that never fires during a test: the daemon only acts when asked.
const QUIET: &str = r#"
[[rule]]
name = "day-limit"
max_duration = "24h"
"#;

async fn wait_ended(sim: &SimHandle, uuids: &[String]) {
    let state = sim.state().clone();
    let uuids = uuids.to_vec();
    assert!(
        wait_for(LIMIT, move || uuids
            .iter()
            .all(|u| state.call(u).is_some_and(|c| c.ended_at.is_some())))
        .await,
        "calls did not end"
    );
}

/// Waits until the daemon tracks every call of `uuids`.
async fn wait_tracked(daemon: &Daemon, uuids: &[String]) {
    let until = tokio::time::Instant::now() + LIMIT;
    loop {
        let status = daemon.status().await;
        let tracked: Vec<String> = status["accounts"][0]["calls"]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .filter_map(|c| c["call_uuid"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if uuids.iter().all(|u| tracked.contains(u)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "calls never tracked: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The UUIDs the simulator got a DELETE for, in order.
async fn deletes(sim: &SimHandle) -> Vec<String> {
    log_since(sim, 0)
        .await
        .iter()
        .filter(|r| r["method"] == "DELETE")
        .filter_map(|r| r["uuid"].as_str().map(str::to_owned))
        .collect()
}

/// `POST /hangup` with `body`: status and JSON answer (or text).
async fn post_hangup(addr: SocketAddr, body: Value, token: Option<&str>) -> (u16, Value) {
    let mut request = http()
        .post(format!("http://{addr}/hangup"))
        .timeout(Duration::from_secs(10))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("listener answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn decisions(answer: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = answer["calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    (
                        c["call_uuid"].as_str().unwrap_or("").to_owned(),
                        c["decision"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn named_calls_are_re_read_then_hung_up_once_audited_with_the_reason_even_when_pardoned() {
    let sim = default_sim();
    let uuids = add_calls(
        &sim,
        json!([
            outbound(30.0, "+442071830001"),
            outbound(20.0, "+442071830002")
        ]),
    )
    .await;
    let bystander = add_calls(&sim, json!([outbound(10.0, "+442071830003")])).await;
    let setup = Setup::new(&sim, &[("quiet.toml", QUIET)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    wait_tracked(&daemon, &uuids).await;
    let cli = setup.cli_config(daemon.addr);
    // A pardon does not stop a manual hangup.
    let output = run(command(&cli, &["pardon", &uuids[1]])).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    let since = log_since(&sim, 0).await.len() as u64;
    let output = run(command(
        &cli,
        &[
            "hangup",
            &uuids[0],
            &uuids[1],
            "--reason",
            "fraud alert 4711",
        ],
    ))
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("2 calls: 2 accepted"),
        "{}",
        stdout(&output)
    );
    wait_ended(&sim, &uuids).await;
    assert!(!ended(&sim, &bystander[0]));

    // Each call read again before its one DELETE.
    let records = log_since(&sim, since).await;
    for uuid in &uuids {
        let get = records
            .iter()
            .position(|r| r["method"] == "GET" && r["uuid"] == uuid.as_str());
        let delete = records
            .iter()
            .position(|r| r["method"] == "DELETE" && r["uuid"] == uuid.as_str());
        assert!(
            get.is_some() && get < delete,
            "{uuid}: no re-read before the DELETE"
        );
        let audit = setup
            .wait_audit_of(uuid, |records| {
                records.iter().filter(|r| r["rule"] == "manual").count() >= 2
            })
            .await;
        let manual: Vec<&Value> = audit.iter().filter(|r| r["rule"] == "manual").collect();
        assert_eq!(manual.len(), 2, "{audit:?}");
        assert_eq!(manual[0]["event"], "intent");
        assert_eq!(manual[1]["outcome"], "ok");
        assert_eq!(
            manual[0]["reason"],
            "manual hangup requested by 127.0.0.1: fraud alert 4711"
        );
    }
    // Asked again: already ended, never a second DELETE.
    let output = run(command(&cli, &["hangup", &uuids[0], "--reason", "again"])).await;
    assert_ne!(output.status.code(), Some(1), "{}", stdout(&output));
    let mut sent = deletes(&sim).await;
    sent.sort();
    let mut expected = uuids.clone();
    expected.sort();
    assert_eq!(sent, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_previews_without_yes_and_spares_protected_calls() {
    let sim = default_sim();
    let fraud = add_calls(
        &sim,
        json!([
            outbound(600.0, "+88216000001"),
            outbound(400.0, "+88216000002")
        ]),
    )
    .await;
    let young = add_calls(&sim, json!([outbound(30.0, "+88216000003")])).await;
    let emergency = add_calls(&sim, json!([outbound(900.0, "911")])).await;
    let setup = Setup::new(&sim, &[("quiet.toml", QUIET)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    let all: Vec<String> = [fraud.clone(), young.clone(), emergency.clone()].concat();
    wait_tracked(&daemon, &all).await;
    let cli = setup.cli_config(daemon.addr);
    let args = [
        "hangup",
        "--match",
        "to=+882*",
        "--match",
        "to=911",
        "--older-than",
        "5m",
        "--limit",
        "50",
        "--reason",
        "fraud alert",
    ];

    // Without --yes: only shown, nothing done, nothing audited.
    let output = run(command(&cli, &args)).await;
    let text = stdout(&output);
    assert!(text.contains("nothing was done"), "{text}");
    assert!(text.contains("would_hang_up"), "{text}");
    assert!(
        text.contains(&format!("{} ", emergency[0])) && text.contains("protected"),
        "{text}"
    );
    assert!(
        !text.contains(&young[0]),
        "a call younger than --older-than is not selected: {text}"
    );
    assert!(setup.audit().is_empty());
    assert!(deletes(&sim).await.is_empty());

    let output = run(command(&cli, &[&args[..], &["--yes"]].concat())).await;
    assert_eq!(
        output.status.code(),
        Some(3),
        "protected is a partial refusal: {}",
        stdout(&output)
    );
    wait_ended(&sim, &fraud).await;
    assert!(
        !ended(&sim, &emergency[0]),
        "a protected call is never hung up"
    );
    assert!(!ended(&sim, &young[0]));
    let protected = setup
        .wait_audit_of(&emergency[0], |records| !records.is_empty())
        .await;
    assert_eq!(protected.len(), 1, "{protected:?}");
    assert_eq!(protected[0]["outcome"], "protected");
    assert_eq!(protected[0]["rule"], "manual");
    let mut sent = deletes(&sim).await;
    sent.sort();
    assert_eq!(sent, fraud);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_request_id_does_not_act_twice() {
    let sim = default_sim();
    let first = add_calls(
        &sim,
        json!([
            outbound(60.0, "+88216000001"),
            outbound(50.0, "+88216000002")
        ]),
    )
    .await;
    let setup = Setup::new(&sim, &[("quiet.toml", QUIET)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    wait_tracked(&daemon, &first).await;
    let body = json!({"match": {"to": "+882*"}, "reason": "fraud alert", "request_id": "alert-1"});

    let (code, answer) = post_hangup(daemon.addr, body.clone(), None).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["replayed"], false);
    wait_ended(&sim, &first).await;

    // A new call matches the same selector; the replay must not end it.
    let later = add_calls(&sim, json!([outbound(5.0, "+88216000003")])).await;
    wait_tracked(&daemon, &later).await;
    let (code, replay) = post_hangup(daemon.addr, body.clone(), None).await;
    assert_eq!(code, 202, "{replay}");
    assert_eq!(replay["replayed"], true);
    assert_eq!(decisions(&replay), decisions(&answer));
    // The same id sent twice at once also acts once.
    let (a, b) = tokio::join!(
        post_hangup(daemon.addr, body.clone(), None),
        post_hangup(daemon.addr, body.clone(), None)
    );
    assert_eq!((a.0, b.0), (202, 202));
    // Two more polls: nothing else happened.
    wait_polls(&sim, 2).await;
    assert!(!ended(&sim, &later[0]), "the replay acted on a new call");
    let mut sent = deletes(&sim).await;
    sent.sort();
    assert_eq!(sent, first);
    let intents = setup
        .audit()
        .iter()
        .filter(|r| r["event"] == "intent" && r["rule"] == "manual")
        .count();
    assert_eq!(intents, 2);
    // A different id acts again.
    let (code, _) = post_hangup(
        daemon.addr,
        json!({"match": {"to": "+882*"}, "reason": "fraud alert", "request_id": "alert-2"}),
        None,
    )
    .await;
    assert_eq!(code, 202);
    wait_ended(&sim, &later).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_acted_on_before_a_restart_does_not_act_again() {
    let sim = default_sim();
    let first = add_calls(&sim, json!([outbound(60.0, "+88216000001")])).await;
    let setup = Setup::new(&sim, &[("quiet.toml", QUIET)], Knobs::default());
    let mut daemon = Daemon::start(&setup).await;
    wait_tracked(&daemon, &first).await;
    let body = json!({"match": {"to": "+882*"}, "reason": "fraud alert", "request_id": "alert-9"});
    let (code, _) = post_hangup(daemon.addr, body.clone(), None).await;
    assert_eq!(code, 202);
    wait_ended(&sim, &first).await;
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(LIMIT).await.expect("daemon stops");

    let later = add_calls(&sim, json!([outbound(5.0, "+88216000002")])).await;
    let daemon = Daemon::start(&setup).await;
    wait_tracked(&daemon, &later).await;
    let (code, replay) = post_hangup(daemon.addr, body, None).await;
    assert_eq!(code, 202, "{replay}");
    assert_eq!(replay["replayed"], true, "{replay}");
    wait_polls(&sim, 2).await;
    assert!(!ended(&sim, &later[0]), "the replay after a restart acted");
    assert_eq!(deletes(&sim).await, first);
}

/// Rewrites the setup's config with `edit` applied.
fn edit_config(setup: &Setup, knobs: &Knobs, edit: impl Fn(String) -> String) {
    std::fs::write(setup.config_path(), edit(setup.config_text(knobs))).expect("config");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_over_most_of_the_fleet_is_held_by_the_breaker_unless_forced() {
    let sim = default_sim();
    let fraud: Vec<String> = add_calls(
        &sim,
        json!((0..8)
            .map(|i| outbound(100.0 + i as f64, &format!("+8821600000{i}")))
            .collect::<Vec<_>>()),
    )
    .await;
    let others = add_calls(
        &sim,
        json!([
            outbound(50.0, "+442071830001"),
            outbound(40.0, "+442071830002")
        ]),
    )
    .await;
    let knobs = Knobs {
        breaker_min_live_calls: 5,
        ..Knobs::default()
    };
    let setup = Setup::new(&sim, &[("quiet.toml", QUIET)], knobs.clone());
    edit_config(&setup, &knobs, |text| {
        text.replace("max_hangups_percent = 100", "max_hangups_percent = 50")
    });
    let daemon = Daemon::start(&setup).await;
    wait_tracked(&daemon, &[fraud.clone(), others.clone()].concat()).await;

    // 8 of 10 live calls: 80 % > 50 %.
    let body = json!({"match": {"to": "+882*"}, "reason": "fraud alert"});
    let (code, answer) = post_hangup(daemon.addr, body, None).await;
    assert_eq!(code, 202, "{answer}");
    assert!(
        decisions(&answer).iter().all(|(_, d)| d == "breaker"),
        "{answer}"
    );
    assert_eq!(decisions(&answer).len(), 8);
    assert!(setup
        .wait_audit_of(&fraud[0], |records| records
            .iter()
            .any(|r| r["outcome"] == "breaker"))
        .await
        .iter()
        .any(|r| r["outcome"] == "breaker"));
    // Named calls are not held.
    let (code, answer) = post_hangup(
        daemon.addr,
        json!({"calls": [fraud[0]], "reason": "this one"}),
        None,
    )
    .await;
    assert_eq!(code, 202);
    assert_eq!(
        decisions(&answer),
        vec![(fraud[0].clone(), "accepted".to_owned())]
    );
    wait_ended(&sim, &fraud[..1]).await;
    assert!(fraud[1..].iter().all(|u| !ended(&sim, u)));

    let forced = json!({"match": {"to": "+882*"}, "reason": "fraud alert", "force": true});
    let (code, answer) = post_hangup(daemon.addr, forced, None).await;
    assert_eq!(code, 202, "{answer}");
    // The named call may still be listed: it is reported, never hung up twice.
    assert!(
        decisions(&answer)
            .iter()
            .all(|(u, d)| d == "accepted" || (*u == fraud[0] && d == "already_ended")),
        "{answer}"
    );
    wait_ended(&sim, &fraud).await;
    assert_eq!(
        deletes(&sim)
            .await
            .iter()
            .filter(|u| **u == fraud[0])
            .count(),
        1
    );
    assert!(others.iter().all(|u| !ended(&sim, u)));
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_requests_and_a_dry_run_daemon_hang_up_nothing() {
    let sim = default_sim();
    let uuids = add_calls(&sim, json!([outbound(60.0, "+88216000001")])).await;
    let setup = Setup::new(&sim, &[("quiet.toml", QUIET)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    wait_tracked(&daemon, &uuids).await;
    let (code, answer) = post_hangup(
        daemon.addr,
        json!({"calls": uuids, "reason": "drill", "dry_run": true}),
        None,
    )
    .await;
    assert_eq!(code, 202);
    assert_eq!(
        decisions(&answer),
        vec![(uuids[0].clone(), "dry_run".to_owned())]
    );
    let audit = setup
        .wait_audit_of(&uuids[0], |records| {
            records
                .iter()
                .any(|r| r["outcome"] == "dry_run" && r["dry_run"] == true)
        })
        .await;
    assert!(
        audit
            .iter()
            .any(|r| r["outcome"] == "dry_run" && r["dry_run"] == true),
        "{audit:?}"
    );
    // Bad requests are refused with 400 and a reason, never acted on.
    let (code, answer) = post_hangup(daemon.addr, json!({"calls": uuids}), None).await;
    assert_eq!(code, 400, "{answer}");
    assert!(answer.as_str().unwrap_or("").contains("reason"));
    let (code, _) = post_hangup(daemon.addr, json!({"calls": ["../x"], "reason": "r"}), None).await;
    assert_eq!(code, 400);
    // Unknown UUIDs are reported, not an error.
    let (code, answer) = post_hangup(
        daemon.addr,
        json!({"calls": ["no-such-call"], "reason": "r"}),
        None,
    )
    .await;
    assert_eq!(code, 202);
    assert_eq!(
        decisions(&answer),
        vec![("no-such-call".to_owned(), "not_found".to_owned())]
    );
    assert!(deletes(&sim).await.is_empty());
    assert!(!ended(&sim, &uuids[0]));
}

/// This host's address on a non-loopback interface, if it has one.
fn non_loopback_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks a route.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_callers_need_the_bearer_token_which_never_appears_in_output() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("SKIP: this host has no non-loopback address to call the listener from");
        return;
    };
    const TOKEN: &str = "api-t0ken-5ecret-value";
    let sim = default_sim();
    let uuids = add_calls(
        &sim,
        json!([
            outbound(60.0, "+88216000001"),
            outbound(50.0, "+88216000002")
        ]),
    )
    .await;
    let knobs = Knobs {
        listen: "0.0.0.0:0".to_owned(),
        ..Knobs::default()
    };

    // Without api_token_file: remote callers are refused.
    let setup = Setup::new(&sim, &[("quiet.toml", QUIET)], knobs.clone());
    let mut daemon = Daemon::start(&setup).await;
    wait_tracked(&daemon, &uuids).await;
    let remote = SocketAddr::new(ip, daemon.addr.port());
    let body = json!({"calls": [uuids[0]], "reason": "remote fraud system"});
    let (code, answer) = post_hangup(remote, body.clone(), Some(TOKEN)).await;
    assert_eq!(code, 403, "{answer}");
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(LIMIT).await.expect("daemon stops");

    // With it: refused without or with a wrong token, accepted with it.
    std::fs::write(setup.dir.path().join("api-token"), format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(
        setup.dir.path().join("api-token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    edit_config(&setup, &knobs, |text| {
        text.replace("[http]\n", "[http]\napi_token_file = \"api-token\"\n")
    });
    let daemon = Daemon::start(&setup).await;
    wait_tracked(&daemon, &uuids).await;
    let remote = SocketAddr::new(ip, daemon.addr.port());
    let (code, _) = post_hangup(remote, body.clone(), None).await;
    assert_eq!(code, 403);
    let (code, _) = post_hangup(remote, body.clone(), Some("api-t0ken-5ecret-valuX")).await;
    assert_eq!(code, 403);
    assert!(deletes(&sim).await.is_empty(), "a refused request acted");
    let (code, answer) = post_hangup(remote, body, Some(TOKEN)).await;
    assert_eq!(code, 202, "{answer}");
    wait_ended(&sim, &uuids[..1]).await;
    let audit = setup
        .wait_audit_of(&uuids[0], |records| records.len() >= 2)
        .await;
    assert!(
        audit.iter().any(|r| r["reason"].as_str().is_some_and(
            |reason| reason.contains(&format!("requested by {ip}: remote fraud system"))
        )),
        "{audit:?}"
    );
    // Loopback needs no token.
    let local = SocketAddr::new("127.0.0.1".parse().unwrap(), daemon.addr.port());
    let (code, _) = post_hangup(local, json!({"calls": [uuids[1]], "reason": "local"}), None).await;
    assert_eq!(code, 202);
    wait_ended(&sim, &uuids[1..]).await;
    // The token is in no log line, no answer, no audit record.
    let audit_text = std::fs::read_to_string(setup.state_dir().join("audit.jsonl")).unwrap();
    assert!(!audit_text.contains(TOKEN));
    assert!(!daemon.logs().iter().any(|l| l.contains(TOKEN)));
    assert!(!daemon.status().await.to_string().contains(TOKEN));
    assert!(daemon
        .logs()
        .iter()
        .any(|l| l.contains("POST /hangup refused: not loopback and no valid bearer token")));
}
