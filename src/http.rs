//! The local status listener (`[http] listen`): `/metrics`, `/healthz`,
//! `/readyz`, `/status` and `POST /pardon/{uuid}`.

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

/// The longest `?for=` a pardon takes: longer is a typo or an attack, and a
/// pardon for good needs no duration at all.
pub const MAX_PARDON: Duration = Duration::from_secs(30 * 24 * 3600);

/// When a pardon given at `now` for `text` (`10m`, `2h`) ends, or why it is
/// refused: not a duration, zero, or longer than [`MAX_PARDON`].
pub fn pardon_until(now: DateTime<Utc>, text: &str) -> Result<DateTime<Utc>, String> {
    // Bounded before parsing: humantime sums any number of terms.
    if text.len() > 64 {
        return Err("bad duration: longer than 64 characters".to_owned());
    }
    let duration = humantime::parse_duration(text)
        .map_err(|error| format!("bad duration `{text}`: {error}"))?;
    if duration.is_zero() {
        return Err(format!("bad duration `{text}`: must be longer than 0s"));
    }
    if duration > MAX_PARDON {
        return Err(format!(
            "duration `{text}` is too long: a pardon lasts at most 30 days (omit `for` to pardon for good)"
        ));
    }
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .ok_or_else(|| format!("duration `{text}` is out of range"))
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
    let until = match query.for_.as_deref() {
        None => None,
        Some(text) => match pardon_until(state.clock.now(), text) {
            Ok(until) => Some(until),
            Err(message) => {
                return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
            }
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pardon_durations_are_bounded() {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(pardon_until(now, "10m"), Ok(now + TimeDelta::minutes(10)));
        assert_eq!(pardon_until(now, "30days"), Ok(now + TimeDelta::days(30)));
        for bad in [
            "31days",
            "1000000years",
            "18446744073709551615s",
            "0s",
            "soon",
            "",
            &"1s ".repeat(40),
        ] {
            assert!(pardon_until(now, bad).is_err(), "{bad:?}");
        }
        // Near the end of time the sum is checked, not a panic.
        assert!(pardon_until(DateTime::<Utc>::MAX_UTC, "1s").is_err());
    }
}
