//! Shared test helpers: an in-process simulator, a client pointed at it,
//! and small wrappers around the `/_sim/` control API.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use callwarden::clock::{SharedClock, SystemClock};
use callwarden::sim::{SimHandle, SimOptions, Simulator, DEFAULT_AUTH_ID, DEFAULT_AUTH_TOKEN};
use callwarden::vobiz::{Client, ClientConfig, Secret};
use serde_json::{json, Value};

/// Starts a simulator on 127.0.0.1:0 with the system clock.
pub fn start_sim(options: SimOptions) -> SimHandle {
    Simulator::start(options, Arc::new(SystemClock)).expect("simulator starts")
}

/// Starts a default simulator (one account, flat shape).
pub fn default_sim() -> SimHandle {
    start_sim(SimOptions::ephemeral())
}

/// A client config for the default account of `sim`, generous limits.
pub fn client_config(sim: &SimHandle) -> ClientConfig {
    let clock: SharedClock = Arc::new(SystemClock);
    let mut config = ClientConfig::new(
        sim.base_url(),
        DEFAULT_AUTH_ID,
        Secret::new(DEFAULT_AUTH_TOKEN),
        clock,
    );
    config.timeout = Duration::from_secs(10);
    config.max_requests_per_second = 0;
    config.max_backoff = Duration::from_secs(2);
    config
}

/// A client for the default account of `sim`.
pub fn client(sim: &SimHandle) -> Client {
    Client::new(client_config(sim)).expect("client builds")
}

/// A plain HTTP client for control requests and raw API requests.
pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// POSTs JSON to `/_sim{path}` and returns the JSON answer (panics on non-2xx).
pub async fn control_post(sim: &SimHandle, path: &str, body: Value) -> Value {
    let response = http()
        .post(format!("{}/_sim{path}", sim.root_url()))
        .json(&body)
        .send()
        .await
        .expect("control request");
    let status = response.status();
    let value: Value = response.json().await.expect("control JSON");
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

/// GETs `/_sim{path}`.
pub async fn control_get(sim: &SimHandle, path: &str) -> Value {
    http()
        .get(format!("{}/_sim{path}", sim.root_url()))
        .send()
        .await
        .expect("control request")
        .json()
        .await
        .expect("control JSON")
}

/// Creates calls through `POST /_sim/calls`; returns their UUIDs.
pub async fn add_calls(sim: &SimHandle, calls: Value) -> Vec<String> {
    let answer = control_post(sim, "/calls", json!({ "calls": calls })).await;
    answer["uuids"]
        .as_array()
        .expect("uuids")
        .iter()
        .map(|u| u.as_str().expect("uuid string").to_owned())
        .collect()
}

/// Replaces the simulator's faults.
pub async fn set_faults(sim: &SimHandle, faults: Value) {
    control_post(sim, "/faults", faults).await;
}

/// The request log records with `seq > since`.
pub async fn log_since(sim: &SimHandle, since: u64) -> Vec<Value> {
    control_get(sim, &format!("/log?since={since}")).await["records"]
        .as_array()
        .expect("records")
        .clone()
}

pub mod calls;
pub mod daemon;
pub mod engine;
pub mod files;
pub mod ha;
pub mod pg;
pub mod policies;
pub mod proxy;

/// Whether a simulator log record is a poll's list request (not a clock
/// probe, which asks for one call with `limit=1`).
pub fn is_poll(record: &Value) -> bool {
    record["method"] == "GET"
        && record["uuid"].is_null()
        && record["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/Call/"))
        && !daemon::is_probe(record)
}

/// How many live-list requests of polls the simulator has answered so far.
pub async fn list_requests(sim: &SimHandle) -> usize {
    log_since(sim, 0)
        .await
        .iter()
        .filter(|r| is_poll(r))
        .count()
}

/// Waits until the daemon has listed `polls` more times, so every call it
/// could judge in between has been judged (a hang guard, not a timing).
pub async fn wait_polls(sim: &SimHandle, polls: usize) {
    let start = list_requests(sim).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while list_requests(sim).await < start + polls {
        assert!(
            tokio::time::Instant::now() < until,
            "the daemon stopped polling"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
