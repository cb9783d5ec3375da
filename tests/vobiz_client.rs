//! The Vobiz client against the in-process simulator, over real HTTP:
//! every call, both shapes, every error mapping, the 429 pause, the request log.

mod common;

use std::sync::Arc;
use std::time::Duration;

use callwarden::call::{CallStatus, CallUuid, Direction, Shape};
use callwarden::clock::Clock;
use callwarden::sim::{ShapeMode, SimOptions, DEFAULT_AUTH_ID, DEFAULT_AUTH_TOKEN};
use callwarden::vobiz::{Client, Error, Secret, SpeakLegs, VobizApi};
use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use serde_json::json;

fn uuid(s: &str) -> CallUuid {
    CallUuid::parse(s).unwrap()
}

/// The token must never show in an error.
fn assert_clean(err: &Error) {
    for text in [format!("{err}"), format!("{err:?}")] {
        assert!(!text.contains(DEFAULT_AUTH_TOKEN), "token leaked: {text}");
        assert!(!text.contains("wrong-token-123"), "token leaked: {text}");
    }
}

fn t_wall(record: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(record["t_wall"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn lists_and_reads_flat_calls() {
    let sim = default_sim();
    let api = client(&sim);
    let uuids = add_calls(
        &sim,
        json!([
            {"age_s": 120, "direction": "outbound", "from": "+14155550100", "to": "919148227303", "caller_name": "Alice"},
            {"age_s": 30, "direction": "inbound", "from": "441234", "to": "+1 800 555", "answered": false},
        ]),
    )
    .await;
    let list = api.list_live().await.unwrap();
    assert_eq!(list.value, vec![uuid(&uuids[0]), uuid(&uuids[1])]);
    assert!(list.server_date.is_some());

    let call = api.get_live(&uuid(&uuids[0])).await.unwrap().value;
    assert_eq!(call.shape, Shape::Flat);
    assert_eq!(call.status, CallStatus::InProgress);
    assert_eq!(call.direction, Direction::Outbound);
    assert_eq!(call.from, "14155550100");
    assert_eq!(call.to, "919148227303");
    assert_eq!(call.caller_name, "Alice");
    assert_eq!(call.raw_value()["call_uuid"], uuids[0].as_str());
    // Never older than the truth: µs rendering rounded up by one µs.
    let truth = sim.state().call(&uuids[0]).unwrap().started_at;
    let started = call.started_at.unwrap();
    assert!(
        started > truth && started - truth <= TimeDelta::microseconds(1),
        "{started} vs {truth}"
    );

    let ringing = api.get_live(&uuid(&uuids[1])).await.unwrap().value;
    assert_eq!(ringing.status, CallStatus::Ringing);
    assert_eq!(ringing.to, "1800555");
}

#[tokio::test]
async fn reads_legacy_calls_with_duration_and_whole_seconds() {
    let sim = start_sim(SimOptions {
        shape: ShapeMode::Legacy,
        ..SimOptions::ephemeral()
    });
    let api = client(&sim);
    let uuids = add_calls(
        &sim,
        json!([
            {"age_s": 100, "ring_s": 10, "direction": "outbound", "from": "+14156667777", "to": "+14156667778"},
            {"age_s": 5, "answered": false, "from": "1", "to": "2"},
        ]),
    )
    .await;
    let call = api.get_live(&uuid(&uuids[0])).await.unwrap().value;
    assert_eq!(call.shape, Shape::Legacy);
    assert_eq!(call.status, CallStatus::InProgress);
    assert_eq!(call.from, "14156667777");
    let truth = sim.state().call(&uuids[0]).unwrap();
    let answered = call.answered_at.unwrap();
    let true_answer = truth.answered_at.unwrap();
    assert!(answered > true_answer && answered - true_answer <= TimeDelta::seconds(1));
    let duration = call.duration_s.unwrap();
    assert!((89..=95).contains(&duration), "{duration}");

    let ringing = api.get_live(&uuid(&uuids[1])).await.unwrap().value;
    assert_eq!(ringing.status, CallStatus::Ringing);
    assert_eq!(ringing.duration_s, Some(0));
    assert_eq!(ringing.answered_at, None);
}

#[tokio::test]
async fn mixed_shapes_all_parse_and_keep_their_shape() {
    let sim = start_sim(SimOptions {
        shape: ShapeMode::Mixed,
        calls: 30,
        seed: 7,
        ..SimOptions::ephemeral()
    });
    let api = client(&sim);
    let list = api.list_live().await.unwrap().value;
    let mut shapes = Vec::new();
    for id in &list {
        let first = api.get_live(id).await.unwrap().value;
        let again = api.get_live(id).await.unwrap().value;
        assert_eq!(first.shape, again.shape);
        assert_eq!(&first.uuid, id);
        shapes.push(first.shape);
    }
    assert!(!list.is_empty());
    assert!(
        shapes.contains(&Shape::Flat) && shapes.contains(&Shape::Legacy),
        "{shapes:?}"
    );
}

#[tokio::test]
async fn queued_calls_are_listed_and_read() {
    let sim = default_sim();
    let api = client(&sim);
    let uuids = add_calls(
        &sim,
        json!([
            {"age_s": 3, "status": "queued", "from": "1", "to": "2"},
            {"age_s": 3, "status": "ringing", "from": "1", "to": "2"},
            {"age_s": 3, "from": "1", "to": "2"},
        ]),
    )
    .await;
    let queued = api.list_queued().await.unwrap().value;
    assert_eq!(queued, vec![uuid(&uuids[0]), uuid(&uuids[1])]);
    let live = api.list_live().await.unwrap().value;
    assert_eq!(live, vec![uuid(&uuids[1]), uuid(&uuids[2])]);
    let call = api.get_queued(&uuid(&uuids[0])).await.unwrap().value;
    assert_eq!(call.status, CallStatus::Queued);
    assert_eq!(
        api.get_queued(&uuid(&uuids[2])).await.unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        api.get_live(&uuid(&uuids[0])).await.unwrap_err(),
        Error::NotFound
    );
}

#[tokio::test]
async fn hangup_then_cdr_then_not_found() {
    let sim = default_sim();
    let api = client(&sim);
    let uuids = add_calls(&sim, json!([{"age_s": 60, "from": "1", "to": "2"}])).await;
    let id = uuid(&uuids[0]);
    assert_eq!(
        api.get_cdr(&id).await.unwrap_err(),
        Error::NotFound,
        "no CDR while live"
    );
    api.hangup(&id).await.unwrap();
    assert_eq!(api.hangup(&id).await.unwrap_err(), Error::NotFound);
    assert_eq!(api.get_live(&id).await.unwrap_err(), Error::NotFound);
    assert!(api.list_live().await.unwrap().value.is_empty());
    let cdr = api.get_cdr(&id).await.unwrap().value;
    assert_eq!(cdr.uuid, id);
    assert_eq!(cdr.hangup_source.as_deref(), Some("API"));
    assert_eq!(cdr.hangup_cause_code, Some(16));
    assert_eq!(cdr.hangup_cause_name.as_deref(), Some("NORMAL_CLEARING"));
    assert!(cdr.end_time.is_some() && cdr.answer_time.is_some());
    let state = sim.state().call(&uuids[0]).unwrap();
    assert_eq!((state.hangups, state.delete_requests), (1, 2));
    assert_eq!(
        api.hangup(&uuid("00000000-0000-4000-8000-000000000000"))
            .await
            .unwrap_err(),
        Error::NotFound
    );
}

#[tokio::test]
async fn b_legs_end_with_their_parent_but_not_the_reverse() {
    let sim = default_sim();
    let api = client(&sim);
    let ids = add_calls(
        &sim,
        json!([
            {"uuid": "aaaaaaaa-0000-4000-8000-000000000001", "age_s": 60},
            {"age_s": 50, "parent_call_uuid": "aaaaaaaa-0000-4000-8000-000000000001"},
            {"age_s": 50, "parent_call_uuid": "aaaaaaaa-0000-4000-8000-000000000001"},
        ]),
    )
    .await;
    let leg = api.get_live(&uuid(&ids[1])).await.unwrap().value;
    assert_eq!(leg.parent_call_uuid, Some(uuid(&ids[0])));
    // Hanging up one B-leg ends only that leg.
    api.hangup(&uuid(&ids[1])).await.unwrap();
    assert_eq!(
        api.list_live().await.unwrap().value,
        vec![uuid(&ids[0]), uuid(&ids[2])]
    );
    // The caller ending the A-leg ends the other B-leg too.
    control_post(&sim, &format!("/calls/{}/end", ids[0]), json!({})).await;
    assert!(api.list_live().await.unwrap().value.is_empty());
    let cdr = api.get_cdr(&uuid(&ids[0])).await.unwrap().value;
    assert_eq!(cdr.hangup_source.as_deref(), Some("Caller"));
    let leg_cdr = api.get_cdr(&uuid(&ids[2])).await.unwrap().value;
    assert_eq!(leg_cdr.raw["parent_call_uuid"], ids[0].as_str());
}

#[tokio::test]
async fn speak_succeeds_on_live_calls_only() {
    let sim = default_sim();
    let api = client(&sim);
    let ids = add_calls(&sim, json!([{"age_s": 60}])).await;
    let id = uuid(&ids[0]);
    api.speak(&id, "This call will end in one minute.", SpeakLegs::Both)
        .await
        .unwrap();
    assert_eq!(
        sim.state().call(&ids[0]).unwrap().speaks,
        vec!["This call will end in one minute."]
    );
    let err = api
        .speak(&id, &"x".repeat(1001), SpeakLegs::ALeg)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Rejected { status: 400, ref message } if message.contains("1000")),
        "{err:?}"
    );
    api.hangup(&id).await.unwrap();
    assert_eq!(
        api.speak(&id, "hello", SpeakLegs::BLeg).await.unwrap_err(),
        Error::NotFound
    );
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_and_never_leak() {
    let sim = start_sim(SimOptions {
        accounts: vec![
            ("MAAAAAAAAAAAAAAAAAA1".into(), "token-one".into()),
            ("MABBBBBBBBBBBBBBBBB2".into(), "token-two".into()),
        ],
        ..SimOptions::ephemeral()
    });
    let mut config = client_config(&sim);
    config.auth_id = "MAAAAAAAAAAAAAAAAAA1".into();
    config.token = Secret::new("wrong-token-123");
    let err = Client::new(config.clone())
        .unwrap()
        .list_live()
        .await
        .unwrap_err();
    assert_eq!(err, Error::Unauthorized);
    assert_clean(&err);
    // Another account's valid token does not open this account.
    config.token = Secret::new("token-two");
    let err = Client::new(config.clone())
        .unwrap()
        .list_live()
        .await
        .unwrap_err();
    assert_eq!(err, Error::Unauthorized);
    config.token = Secret::new("token-one");
    assert!(Client::new(config).unwrap().list_live().await.is_ok());

    // Headers for one account, path of another: 401.
    let response = http()
        .get(format!(
            "{}/Account/MABBBBBBBBBBBBBBBBB2/Call/?status=live",
            sim.base_url()
        ))
        .header("X-Auth-ID", "MAAAAAAAAAAAAAAAAAA1")
        .header("X-Auth-Token", "token-one")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["api_id"].is_string() && body["error"].is_string());
}

#[tokio::test]
async fn raw_api_faithfulness() {
    let sim = default_sim();
    let ids = add_calls(&sim, json!([{"age_s": 5}])).await;
    let get = |path: String| {
        http()
            .get(format!("{}{path}", sim.base_url()))
            .header("X-Auth-ID", DEFAULT_AUTH_ID)
            .header("X-Auth-Token", DEFAULT_AUTH_TOKEN)
    };
    // Lower-case paths answer 401 even with good credentials.
    let lower = get(format!("/account/{DEFAULT_AUTH_ID}/call/?status=live"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 401);
    // Wrong method: 405 JSON.
    let post = http()
        .post(format!(
            "{}/Account/{DEFAULT_AUTH_ID}/Call/{}/",
            sim.base_url(),
            ids[0]
        ))
        .header("X-Auth-ID", DEFAULT_AUTH_ID)
        .header("X-Auth-Token", DEFAULT_AUTH_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    let body: serde_json::Value = post.json().await.unwrap();
    assert_eq!(body["error"], "method not allowed");
    // Bad Speak bodies: 400.
    for bad in [
        json!({}),
        json!({"text": "hi", "legs": "cleg"}),
        json!({"text": 5}),
    ] {
        let speak = http()
            .post(format!(
                "{}/Account/{DEFAULT_AUTH_ID}/Call/{}/Speak/",
                sim.base_url(),
                ids[0]
            ))
            .header("X-Auth-ID", DEFAULT_AUTH_ID)
            .header("X-Auth-Token", DEFAULT_AUTH_TOKEN)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(speak.status(), 400, "{bad}");
    }
    // Stop speaking: 204.
    let stop = http()
        .delete(format!(
            "{}/Account/{DEFAULT_AUTH_ID}/Call/{}/Speak/",
            sim.base_url(),
            ids[0]
        ))
        .header("X-Auth-ID", DEFAULT_AUTH_ID)
        .header("X-Auth-Token", DEFAULT_AUTH_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), 204);
    // Every JSON answer has a fresh UUID-v4 api_id.
    let a: serde_json::Value = get(format!("/Account/{DEFAULT_AUTH_ID}/Call/?status=live"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: serde_json::Value = get(format!("/Account/{DEFAULT_AUTH_ID}/Call/?status=live"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (a, b) = (a["api_id"].as_str().unwrap(), b["api_id"].as_str().unwrap());
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "4");
    // Unknown paths: 404 JSON.
    let unknown = get("/Account/nope".into()).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn scripted_client_errors_map_to_rejected_forbidden_and_server() {
    let sim = default_sim();
    let api = client(&sim);
    set_faults(
        &sim,
        json!({"scripts": [{"endpoint": "list", "responses": [
            403, 400, 402, 405, 409, 422,
            {"status": 422, "error_format": "structured"},
            {"status": 400, "error_format": "none"},
            500, 502, 503
        ]}]}),
    )
    .await;
    let mut errors = Vec::new();
    for _ in 0..11 {
        errors.push(api.list_live().await.unwrap_err());
    }
    assert_eq!(errors[0], Error::Forbidden);
    for (err, status) in errors[1..6].iter().zip([400, 402, 405, 409, 422]) {
        assert!(
            matches!(err, Error::Rejected { status: s, message } if *s == status && !message.is_empty()),
            "{err:?}"
        );
    }
    assert_eq!(
        errors[6],
        Error::Rejected {
            status: 422,
            message: "unprocessable entity".into()
        }
    );
    assert_eq!(
        errors[7],
        Error::Rejected {
            status: 400,
            message: String::new()
        }
    );
    assert_eq!(
        &errors[8..],
        &[Error::Server(500), Error::Server(502), Error::Server(503)]
    );
    errors.iter().for_each(assert_clean);
    // Scripts are consumed: normal behaviour afterwards.
    assert!(api.list_live().await.is_ok());
}

#[tokio::test]
async fn rate_limit_pauses_the_whole_account_for_retry_after() {
    let sim = default_sim();
    let api = client(&sim);
    let ids = add_calls(&sim, json!([{"age_s": 5}])).await;
    set_faults(
        &sim,
        json!({"scripts": [{"endpoint": "hangup", "responses": [{"status": 429, "retry_after": "1"}]}]}),
    )
    .await;
    let err = api.hangup(&uuid(&ids[0])).await.unwrap_err();
    assert_eq!(
        err,
        Error::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        }
    );
    assert!(err.is_retryable());
    // Another endpoint of the same account waits out the pause.
    api.list_live().await.unwrap();
    let log = log_since(&sim, 0).await;
    let limited = log.iter().find(|r| r["status"] == 429).unwrap();
    let next = log
        .iter()
        .find(|r| r["seq"].as_u64() > limited["seq"].as_u64())
        .unwrap();
    assert!(
        t_wall(next) - t_wall(limited) >= TimeDelta::milliseconds(990),
        "{limited} {next}"
    );
    // The call was not hung up by the 429.
    assert_eq!(sim.state().call(&ids[0]).unwrap().hangups, 0);
}

#[tokio::test]
async fn rate_limit_without_retry_after_pauses_min_of_one_second_and_max_backoff() {
    let sim = default_sim();
    let mut config = client_config(&sim);
    config.max_backoff = Duration::from_millis(300);
    let api = Client::new(config).unwrap();
    set_faults(&sim, json!({"scripts": [{"responses": [429]}]})).await;
    assert_eq!(
        api.list_live().await.unwrap_err(),
        Error::RateLimited { retry_after: None }
    );
    api.list_live().await.unwrap();
    let log = log_since(&sim, 0).await;
    assert!(t_wall(&log[1]) - t_wall(&log[0]) >= TimeDelta::milliseconds(290));
}

#[tokio::test]
async fn rate_limit_pause_is_capped_at_max_backoff() {
    let sim = default_sim();
    let mut config = client_config(&sim);
    config.max_backoff = Duration::from_millis(200);
    let api = Client::new(config).unwrap();
    set_faults(
        &sim,
        json!({"scripts": [{"responses": [{"status": 429, "retry_after": "3600"}]}]}),
    )
    .await;
    assert_eq!(
        api.list_live().await.unwrap_err(),
        Error::RateLimited {
            retry_after: Some(Duration::from_secs(3600))
        }
    );
    // Without the cap this would wait an hour.
    tokio::time::timeout(Duration::from_secs(60), api.list_live())
        .await
        .expect("the pause is capped")
        .unwrap();
}

#[tokio::test]
async fn token_bucket_paces_all_requests_of_a_client() {
    let sim = default_sim();
    let mut config = client_config(&sim);
    config.max_requests_per_second = 5;
    let api = Client::new(config).unwrap();
    let ids = add_calls(&sim, json!([{"age_s": 5}])).await;
    let id = uuid(&ids[0]);
    // 5 go at once, the other 10 need at least 2 s of refill.
    let mut tasks = Vec::new();
    for i in 0..15 {
        let api = api.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                api.list_live().await.map(|_| ())
            } else {
                api.get_live(&id).await.map(|_| ())
            }
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let log = log_since(&sim, 0).await;
    assert_eq!(log.len(), 15);
    let span = t_wall(&log[14]) - t_wall(&log[0]);
    assert!(span >= TimeDelta::milliseconds(1900), "{span}");
}

#[tokio::test]
async fn latency_beyond_the_timeout_is_a_timeout() {
    let sim = default_sim();
    let mut config = client_config(&sim);
    config.timeout = Duration::from_millis(200);
    let api = Client::new(config).unwrap();
    set_faults(&sim, json!({"latency_ms": 2000})).await;
    let err = api.list_live().await.unwrap_err();
    assert_eq!(err, Error::Timeout);
    assert!(err.is_retryable());
}

#[tokio::test]
async fn connection_resets_are_transport_errors() {
    let sim = default_sim();
    let api = client(&sim);
    let ids = add_calls(&sim, json!([{"age_s": 5}])).await;
    set_faults(
        &sim,
        json!({"scripts": [{"endpoint": "detail", "responses": [{"reset": true}]}]}),
    )
    .await;
    let err = api.get_live(&uuid(&ids[0])).await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_clean(&err);
    assert!(api.get_live(&uuid(&ids[0])).await.is_ok());

    set_faults(&sim, json!({"reset_rate": 1.0})).await;
    let err = api.list_live().await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    let log = log_since(&sim, 0).await;
    assert!(log.last().unwrap()["status"].is_null());
}

#[tokio::test]
async fn outage_answers_503_until_it_ends() {
    let sim = default_sim();
    let api = client(&sim);
    set_faults(&sim, json!({"outage_s": 3600})).await;
    assert_eq!(api.list_live().await.unwrap_err(), Error::Server(503));
    assert_eq!(
        api.get_live(&uuid("x-1")).await.unwrap_err(),
        Error::Server(503)
    );
    set_faults(&sim, json!({"outage_s": 0})).await;
    assert!(api.list_live().await.is_ok());
}

#[tokio::test]
async fn random_errors_follow_the_rate() {
    let sim = default_sim();
    let api = client(&sim);
    set_faults(&sim, json!({"error_rate": 1.0, "error_status": 502})).await;
    assert_eq!(api.list_live().await.unwrap_err(), Error::Server(502));
    set_faults(&sim, json!({})).await;
    assert!(api.list_live().await.is_ok());
}

#[tokio::test]
async fn malformed_bodies_are_malformed_not_panics() {
    let sim = default_sim();
    let api = client(&sim);
    let ids = add_calls(&sim, json!([{"age_s": 5}, {"age_s": 5}])).await;
    let kinds = ["truncated", "garbage", "wrong_types"];
    let responses: Vec<_> = kinds.iter().map(|k| json!({"malformed": k})).collect();
    set_faults(
        &sim,
        json!({"scripts": [
            {"endpoint": "list", "responses": responses},
            {"endpoint": "detail", "responses": responses},
        ]}),
    )
    .await;
    for _ in kinds {
        let err = api.list_live().await.unwrap_err();
        assert!(
            matches!(&err, Error::Malformed { excerpt, .. } if excerpt.chars().count() <= 120),
            "{err:?}"
        );
    }
    for _ in kinds {
        let err = api.get_live(&uuid(&ids[0])).await.unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
        // Transient, like a 5xx: a truncated answer may be whole next time.
        assert!(err.is_retryable());
    }
    // CDR bodies too.
    api.hangup(&uuid(&ids[1])).await.unwrap();
    set_faults(
        &sim,
        json!({"scripts": [{"endpoint": "detail", "responses": responses}]}),
    )
    .await;
    for _ in kinds {
        let err = api.get_cdr(&uuid(&ids[1])).await.unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn scripted_success_for_delete_really_hangs_up() {
    let sim = default_sim();
    let api = client(&sim);
    let ids = add_calls(&sim, json!([{"age_s": 5}, {"age_s": 5}])).await;
    set_faults(
        &sim,
        json!({"scripts": [{"method": "DELETE", "uuid": ids[0], "responses": [500, 202]}]}),
    )
    .await;
    assert_eq!(
        api.hangup(&uuid(&ids[0])).await.unwrap_err(),
        Error::Server(500)
    );
    assert_eq!(sim.state().call(&ids[0]).unwrap().hangups, 0);
    api.hangup(&uuid(&ids[0])).await.unwrap();
    let state = sim.state().call(&ids[0]).unwrap();
    assert_eq!(state.hangups, 1);
    assert_eq!(api.list_live().await.unwrap().value, vec![uuid(&ids[1])]);
}

struct FixedClock(DateTime<Utc>);
impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

#[tokio::test]
async fn date_header_and_received_at_are_captured() {
    let sim = default_sim();
    let fixed: DateTime<Utc> = "2030-01-02T03:04:05Z".parse().unwrap();
    let mut config = client_config(&sim);
    config.clock = Arc::new(FixedClock(fixed));
    let api = Client::new(config).unwrap();
    let before = Utc::now();
    let plain = api.list_live().await.unwrap();
    assert_eq!(plain.received_at, fixed);
    let date = plain.server_date.unwrap();
    assert!(date >= before - TimeDelta::seconds(1) && date <= Utc::now() + TimeDelta::seconds(1));

    set_faults(&sim, json!({"date_skew_s": 3600})).await;
    let skewed = api.list_live().await.unwrap().server_date.unwrap();
    assert!(skewed - Utc::now() > TimeDelta::seconds(3590), "{skewed}");
}

#[tokio::test]
async fn timestamp_zone_fault_renders_local_times() {
    let sim = default_sim();
    let ids = add_calls(&sim, json!([{"age_s": 60}])).await;
    set_faults(&sim, json!({"timestamp_zone": "Asia/Kolkata"})).await;
    let truth = sim.state().call(&ids[0]).unwrap().started_at;

    let mut config = client_config(&sim);
    config.timestamp_zone = "Asia/Kolkata".parse().unwrap();
    let right = Client::new(config)
        .unwrap()
        .get_live(&uuid(&ids[0]))
        .await
        .unwrap()
        .value;
    let started = right.started_at.unwrap();
    assert!(started > truth && started - truth <= TimeDelta::microseconds(1));

    // Read in the wrong zone the call looks 5.5 hours younger (the sim's zone is east of UTC).
    let wrong = client(&sim).get_live(&uuid(&ids[0])).await.unwrap().value;
    let off = wrong.started_at.unwrap() - truth;
    assert!(
        (off - TimeDelta::minutes(330)).num_seconds().abs() <= 1,
        "{off}"
    );
}

#[tokio::test]
async fn request_log_records_api_requests_only() {
    let sim = default_sim();
    let api = client(&sim);
    let ids = add_calls(&sim, json!([{"age_s": 5}])).await;
    api.list_live().await.unwrap();
    api.get_live(&uuid(&ids[0])).await.unwrap();
    api.hangup(&uuid(&ids[0])).await.unwrap();
    let log = log_since(&sim, 0).await;
    assert_eq!(log.len(), 3, "control requests are not logged: {log:?}");
    assert_eq!(log[0]["method"], "GET");
    assert_eq!(
        log[0]["path"],
        format!("/api/v1/Account/{DEFAULT_AUTH_ID}/Call/")
    );
    assert_eq!(log[0]["query"], "status=live");
    assert_eq!(log[0]["status"], 200);
    assert!(log[0]["uuid"].is_null());
    assert_eq!(log[1]["uuid"], ids[0].as_str());
    assert_eq!(log[2]["method"], "DELETE");
    assert_eq!(log[2]["status"], 204);
    assert!(t_wall(&log[0]) <= t_wall(&log[2]));
    let since = log_since(&sim, 2).await;
    assert_eq!(since.len(), 1);
    assert_eq!(since[0]["seq"], 3);

    control_post(&sim, "/reset", json!({})).await;
    assert!(log_since(&sim, 0).await.is_empty());
    assert!(api.list_live().await.unwrap().value.is_empty());
}

#[tokio::test]
async fn control_api_state_changes() {
    let sim = default_sim();
    let api = client(&sim);
    let ids = add_calls(
        &sim,
        json!([{"age_s": 5, "answered": false, "to": "+1900"}]),
    )
    .await;
    let id = uuid(&ids[0]);
    assert_eq!(api.get_live(&id).await.unwrap().value.answered_at, None);
    control_post(
        &sim,
        &format!("/calls/{}/state", ids[0]),
        json!({"status": "in-progress", "to": "+1800"}),
    )
    .await;
    let call = api.get_live(&id).await.unwrap().value;
    assert_eq!(call.status, CallStatus::InProgress);
    assert_eq!(call.to, "1800");
    let all = control_get(&sim, "/calls").await;
    assert_eq!(all["calls"][0]["status"], "in-progress");
    assert!(all["calls"][0]["answered_at"].is_string());
    // Bad control input is a 400 with a message, not a crash.
    let bad = http()
        .post(format!("{}/_sim/calls", sim.root_url()))
        .json(&json!({"calls": [{"age_s": -1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let generated = control_post(&sim, "/calls", json!({"generate": 5, "age_max_s": 60})).await;
    assert_eq!(generated["uuids"].as_array().unwrap().len(), 5);
}

/// Scale figure for the report: `cargo test --test vobiz_client -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn scale_100k_live_calls() {
    let sim = start_sim(SimOptions {
        calls: 100_000,
        ..SimOptions::ephemeral()
    });
    let api = client(&sim);
    let start = std::time::Instant::now();
    let list = api.list_live().await.unwrap();
    let elapsed = start.elapsed();
    println!("live list of {} calls in {elapsed:?}", list.value.len());
    assert!(list.value.len() > 80_000);
}

#[tokio::test]
async fn concurrency_limit_serializes_requests() {
    let sim = default_sim();
    let mut config = client_config(&sim);
    config.max_concurrent_requests = 1;
    let api = Client::new(config).unwrap();
    set_faults(&sim, json!({"latency_ms": 300})).await;
    let (a, b, c) = tokio::join!(api.list_live(), api.list_live(), api.list_queued());
    for result in [a, b, c] {
        result.unwrap();
    }
    // The log stamps arrival; with one request in flight each arrives after
    // the previous one's 300 ms latency.
    let log = log_since(&sim, 0).await;
    assert_eq!(log.len(), 3);
    for pair in log.windows(2) {
        assert!(
            t_wall(&pair[1]) - t_wall(&pair[0]) >= TimeDelta::milliseconds(290),
            "{pair:?}"
        );
    }
}

#[tokio::test]
async fn banner_lists_every_account_on_one_line() {
    let sim = start_sim(SimOptions {
        accounts: vec![("MA1".into(), "t1".into()), ("MA2".into(), "t2".into())],
        ..SimOptions::ephemeral()
    });
    let line = callwarden::sim::banner(&sim);
    assert_eq!(
        line,
        format!(
            "listening on {} auth_id=MA1 auth_token=t1 auth_id=MA2 auth_token=t2",
            sim.base_url()
        )
    );
    assert!(!line.contains('\n'));
    let default = default_sim();
    assert!(callwarden::sim::banner(&default).ends_with(&format!(
        "auth_id={DEFAULT_AUTH_ID} auth_token={DEFAULT_AUTH_TOKEN}"
    )));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lost_answer_after_a_real_hangup_is_a_transport_error() {
    let sim = default_sim();
    let api = client(&sim);
    let ids = add_calls(&sim, json!([{"age_s": 5}, {"age_s": 5}])).await;
    set_faults(
        &sim,
        json!({"scripts": [{"endpoint": "hangup", "responses": [{"reset": true}, {"reset": true, "act_first": true}]}]}),
    )
    .await;
    // A plain reset: nothing happened.
    let err = api.hangup(&uuid(&ids[0])).await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(sim.state().call(&ids[0]).unwrap().hangups, 0);
    // act_first: the call was hung up, the answer is lost; a re-read shows it gone.
    let err = api.hangup(&uuid(&ids[1])).await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(sim.state().call(&ids[1]).unwrap().hangups, 1);
    assert_eq!(
        api.get_live(&uuid(&ids[1])).await.unwrap_err(),
        Error::NotFound
    );
}

#[tokio::test]
async fn accounts_see_only_their_own_calls() {
    let sim = start_sim(SimOptions {
        accounts: vec![
            ("MAAAAAAAAAAAAAAAAAA1".into(), "token-one".into()),
            ("MABBBBBBBBBBBBBBBBB2".into(), "token-two".into()),
        ],
        ..SimOptions::ephemeral()
    });
    let one_calls = add_calls(&sim, json!([{"age_s": 5}])).await;
    let two = control_post(
        &sim,
        "/calls",
        json!({"account": "MABBBBBBBBBBBBBBBBB2", "calls": [{"age_s": 5}]}),
    )
    .await;
    let two_call = two["uuids"][0].as_str().unwrap().to_owned();
    let client_for = |id: &str, token: &str| {
        let mut config = client_config(&sim);
        config.auth_id = id.into();
        config.token = Secret::new(token);
        Client::new(config).unwrap()
    };
    let one = client_for("MAAAAAAAAAAAAAAAAAA1", "token-one");
    let other = client_for("MABBBBBBBBBBBBBBBBB2", "token-two");
    assert_eq!(
        one.list_live().await.unwrap().value,
        vec![uuid(&one_calls[0])]
    );
    assert_eq!(
        other.list_live().await.unwrap().value,
        vec![uuid(&two_call)]
    );
    assert_eq!(
        one.get_live(&uuid(&two_call)).await.unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        one.hangup(&uuid(&two_call)).await.unwrap_err(),
        Error::NotFound
    );
    assert_eq!(sim.state().call(&two_call).unwrap().hangups, 0);
}

#[tokio::test]
async fn churn_over_the_control_api_adds_and_ends_calls() {
    let sim = default_sim();
    let bad = http()
        .post(format!("{}/_sim/churn", sim.root_url()))
        .json(&json!({"arrivals_per_s": 1, "mean_hold_s": -1}))
        .send()
        .await
        .expect("control request");
    assert_eq!(bad.status(), 400);
    let set = control_post(
        &sim,
        "/churn",
        json!({"arrivals_per_s": 200.0, "mean_hold_s": 0.2, "seed": 5}),
    )
    .await;
    assert_eq!(set["churn"]["arrivals_per_s"], 200.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Stopped before counting, so the list and the records see one world.
    control_post(&sim, "/churn", json!({"arrivals_per_s": 0})).await;
    assert_eq!(
        control_get(&sim, "/churn").await["churn"]["arrivals_per_s"],
        0.0
    );
    let calls = control_get(&sim, "/calls").await["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // About 200 arrivals in a second, most of them over (mean hold 0.2 s).
    assert!(calls.len() > 50, "{}", calls.len());
    let ended = calls.iter().filter(|c| c["ended_by"] == "caller").count();
    assert!(ended > 0, "none ended");
    let listed = client(&sim).list_live().await.expect("list").value;
    assert_eq!(listed.len(), calls.len() - ended);
}
