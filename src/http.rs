//! The local status listener (`[http] listen`): `/metrics`, `/healthz`,
//! `/readyz`, `/status`, `POST /pardon/{uuid}` and `POST /hangup`
//! (in [`crate::manual`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::call::CallUuid;
use crate::clock::SharedClock;
use crate::engine::{AccountStatus, Command};
use crate::metrics::Metrics;

/// One account's engine as the listener sees it.
#[derive(Clone)]
pub struct AccountHandle {
    /// The engine's published state.
    pub status: watch::Receiver<AccountStatus>,
    /// Where to send operator commands.
    pub commands: mpsc::Sender<Command>,
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Every account's engine.
    pub accounts: Vec<AccountHandle>,
    /// Accept pardons from non-loopback clients.
    pub allow_remote_pardon: bool,
    /// The poll interval: ready means a successful poll in the last three.
    pub poll_interval: Duration,
    /// Wall-clock time.
    pub clock: SharedClock,
    /// `[http] api_token_file`: the bearer token remote `POST /hangup`
    /// callers must send.
    pub api_token: Option<crate::vobiz::Secret>,
    /// `[enforce] dry_run`, reported in `POST /hangup` answers.
    pub global_dry_run: bool,
    /// The answers to `POST /hangup` requests with a `request_id`.
    pub hangups: Arc<crate::manual::Requests>,
}

/// The whole `/status` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDocument {
    /// Whether every account polled successfully recently.
    pub ready: bool,
    /// Each account's state.
    pub accounts: Vec<AccountStatus>,
}

/// The router, for tests and the daemon.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/pardon/{uuid}", post(pardon))
        .route(
            "/hangup",
            post(crate::manual::handle).layer(axum::extract::DefaultBodyLimit::max(64 * 1024)),
        )
        .with_state(state)
}

/// Serves the listener on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

impl HttpState {
    fn document(&self) -> StatusDocument {
        let accounts: Vec<AccountStatus> = self
            .accounts
            .iter()
            .map(|a| a.status.borrow().clone())
            .collect();
        let now = self.clock.now();
        let window = TimeDelta::from_std(self.poll_interval * 3).unwrap_or(TimeDelta::MAX);
        let ready = !accounts.is_empty() && accounts.iter().all(|a| is_ready(a, now, window));
        StatusDocument { ready, accounts }
    }
}

fn is_ready(account: &AccountStatus, now: DateTime<Utc>, window: TimeDelta) -> bool {
    account.healthy && account.last_poll_ok.is_some_and(|at| now - at <= window)
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.document().ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn status(State(state): State<HttpState>) -> Json<StatusDocument> {
    Json(state.document())
}

/// `?for=10m` on `POST /pardon/{uuid}`.
#[derive(Debug, Deserialize)]
struct PardonQuery {
    #[serde(rename = "for")]
    for_: Option<String>,
}

async fn pardon(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(uuid): Path<String>,
    Query(query): Query<PardonQuery>,
) -> Response {
    if !peer.ip().is_loopback() && !state.allow_remote_pardon {
        return (
            StatusCode::FORBIDDEN,
            "pardons are accepted from loopback only ([http] allow_remote_pardon)\n",
        )
            .into_response();
    }
    let uuid = match CallUuid::parse(&uuid) {
        Ok(uuid) => uuid,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    let until = match query.for_.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(duration)) => {
            Some(state.clock.now() + TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX))
        }
        Some(Err(error)) => {
            return (StatusCode::BAD_REQUEST, format!("bad duration: {error}\n")).into_response()
        }
    };
    let mut tracked = false;
    for account in &state.accounts {
        let (reply, answer) = oneshot::channel();
        let command = Command::Pardon {
            uuid: uuid.clone(),
            until,
            reply,
        };
        if account.commands.send(command).await.is_ok() {
            tracked |= answer.await.unwrap_or(false);
        }
    }
    let body = serde_json::json!({
        "call_uuid": uuid.as_str(),
        "pardoned_until": until.map(|u| u.to_rfc3339()),
        "tracked": tracked,
    });
    let code = if tracked {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    (code, Json(body)).into_response()
}
