//! The control API under `/_sim/` (no auth, JSON in and out): create, change
//! and end calls, set faults and churn, read the request log, reset.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::faults::FaultSpec;
use super::state::{AddCalls, ChurnSpec, ControlError, SimState, StateChange};

/// The `/_sim` routes (to be nested under `/_sim`).
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/calls", post(add_calls).get(list_calls))
        .route("/calls/{uuid}", get(get_call))
        .route("/calls/{uuid}/state", post(set_state))
        .route("/calls/{uuid}/end", post(end_call))
        .route("/faults", post(set_faults).get(get_faults))
        .route("/churn", post(set_churn).get(get_churn))
        .route("/log", get(log))
        .route("/reset", post(reset))
}

fn failure(err: ControlError) -> Response {
    let (status, message) = match err {
        ControlError::Invalid(m) => (StatusCode::BAD_REQUEST, m),
        ControlError::NotFound(uuid) => (StatusCode::NOT_FOUND, format!("no call {uuid}")),
        ControlError::Conflict(m) => (StatusCode::CONFLICT, m),
    };
    (status, Json(json!({ "error": message }))).into_response()
}

fn bad_json(rejection: JsonRejection) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": rejection.body_text() })),
    )
        .into_response()
}

async fn add_calls(
    State(sim): State<Arc<SimState>>,
    body: Result<Json<AddCalls>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return bad_json(rejection),
    };
    match sim.add_calls(request) {
        Ok(uuids) => Json(json!({ "uuids": uuids })).into_response(),
        Err(err) => failure(err),
    }
}

async fn list_calls(State(sim): State<Arc<SimState>>) -> Response {
    Json(json!({ "calls": sim.calls() })).into_response()
}

async fn get_call(State(sim): State<Arc<SimState>>, Path(uuid): Path<String>) -> Response {
    match sim.call(&uuid) {
        Some(call) => Json(call).into_response(),
        None => failure(ControlError::NotFound(uuid)),
    }
}

async fn set_state(
    State(sim): State<Arc<SimState>>,
    Path(uuid): Path<String>,
    body: Result<Json<StateChange>, JsonRejection>,
) -> Response {
    let Json(change) = match body {
        Ok(body) => body,
        Err(rejection) => return bad_json(rejection),
    };
    match sim.set_state(&uuid, change) {
        Ok(call) => Json(call).into_response(),
        Err(err) => failure(err),
    }
}

async fn end_call(State(sim): State<Arc<SimState>>, Path(uuid): Path<String>) -> Response {
    match sim.end_call(&uuid) {
        Ok(call) => Json(call).into_response(),
        Err(err) => failure(err),
    }
}

async fn set_faults(
    State(sim): State<Arc<SimState>>,
    body: Result<Json<FaultSpec>, JsonRejection>,
) -> Response {
    let Json(spec) = match body {
        Ok(body) => body,
        Err(rejection) => return bad_json(rejection),
    };
    match sim.set_faults(spec) {
        Ok(()) => Json(json!({ "faults": sim.faults() })).into_response(),
        Err(err) => failure(err),
    }
}

async fn get_faults(State(sim): State<Arc<SimState>>) -> Response {
    Json(json!({ "faults": sim.faults() })).into_response()
}

async fn set_churn(
    State(sim): State<Arc<SimState>>,
    body: Result<Json<ChurnSpec>, JsonRejection>,
) -> Response {
    let Json(spec) = match body {
        Ok(body) => body,
        Err(rejection) => return bad_json(rejection),
    };
    match sim.set_churn(spec) {
        Ok(()) => Json(json!({ "churn": sim.churn() })).into_response(),
        Err(err) => failure(err),
    }
}

async fn get_churn(State(sim): State<Arc<SimState>>) -> Response {
    Json(json!({ "churn": sim.churn() })).into_response()
}

/// `?since=SEQ`.
#[derive(Debug, Deserialize)]
struct Since {
    since: Option<u64>,
}

async fn log(State(sim): State<Arc<SimState>>, Query(since): Query<Since>) -> Response {
    Json(json!({ "records": sim.log(since.since.unwrap_or(0)) })).into_response()
}

async fn reset(State(sim): State<Arc<SimState>>) -> Response {
    sim.reset();
    Json(json!({ "reset": true })).into_response()
}
