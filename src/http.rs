//! The local status listener (`[http] listen`): `/metrics`, `/healthz`,
//! `/readyz`, `/status`, `POST /pardon/{uuid}` and `POST /hangup`
//! (in [`crate::manual`]).

use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{Listener, ListenerExt as _};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::call::CallUuid;
use crate::clock::SharedClock;
use crate::engine::{AccountStatus, Command, HaRole, PardonReply, MAX_UNTRACKED_PARDONS};
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

/// Serves the listener on `listener`, within `limits`, until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    limits: ListenerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = BoundedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        max_connections: limits.max_connections.max(1),
        idle_timeout: limits.idle_timeout,
        cap_logged_at: None,
    }
    // `TapIo` is what carries the peer address into `ConnectInfo` for a
    // listener of our own; the tap itself does nothing.
    .tap_io(|_| {});
    axum::serve(
        listener,
        router(state)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn(refuse_large_bodies))
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Largest request body the listener takes; no endpoint needs one at all.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a connection may stay silent (no byte read or written) before
/// it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds of the status listener, so idle or slow clients cannot take
/// the descriptors that enforcement needs for API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Most connections served at once (`[http] max_connections`); more wait
    /// in the kernel's accept queue, costing the process nothing.
    pub max_connections: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
}

impl ListenerLimits {
    /// `max_connections` with the standard idle timeout.
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Answers 413 before routing when the declared body is over [`MAX_BODY_BYTES`].
async fn refuse_large_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {} KiB\n", MAX_BODY_BYTES / 1024),
        )
            .into_response();
    }
    next.run(request).await
}

/// A TCP listener that holds one semaphore permit per open connection and
/// stops accepting while none is free.
struct BoundedListener {
    inner: tokio::net::TcpListener,
    permits: Arc<Semaphore>,
    max_connections: usize,
    idle_timeout: Duration,
    cap_logged_at: Option<tokio::time::Instant>,
}

impl Listener for BoundedListener {
    type Io = BoundedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let permit = match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    self.log_cap();
                    match Arc::clone(&self.permits).acquire_owned().await {
                        Ok(permit) => permit,
                        // The semaphore is never closed; never accept without a permit.
                        Err(_) => std::future::pending().await,
                    }
                }
            };
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let io = BoundedIo {
                        stream,
                        idle_timeout: self.idle_timeout,
                        deadline: Box::pin(tokio::time::sleep(self.idle_timeout)),
                        _permit: permit,
                    };
                    return (io, peer);
                }
                Err(error) => {
                    drop(permit);
                    // EMFILE and friends: wait instead of spinning, as axum does.
                    tracing::warn!(%error, "status listener cannot accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl BoundedListener {
    /// Warns that the cap is reached, at most once a minute.
    fn log_cap(&mut self) {
        let now = tokio::time::Instant::now();
        if self
            .cap_logged_at
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            return;
        }
        self.cap_logged_at = Some(now);
        tracing::warn!(
            max_connections = self.max_connections,
            idle_timeout_s = self.idle_timeout.as_secs(),
            "status listener at its connection cap; new connections wait until one closes"
        );
    }
}

/// One accepted connection: closed with `TimedOut` after `idle_timeout`
/// without progress; its permit is released when it is dropped.
struct BoundedIo {
    stream: tokio::net::TcpStream,
    idle_timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl BoundedIo {
    fn touch(&mut self) {
        let next = tokio::time::Instant::now() + self.idle_timeout;
        self.deadline.as_mut().reset(next);
    }

    /// After the stream said Pending: an error once the deadline passed
    /// (polling the timer also registers the wake-up).
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "idle connection closed",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for BoundedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.expired(cx).map(Err),
        }
    }
}

impl AsyncWrite for BoundedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, data) {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|n| *n > 0) {
                    self.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.expired(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => self.expired(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|n| *n > 0) {
                    self.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.expired(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
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

impl HttpState {
    /// With `[ha]`: the accounts this node does not lead, each with the
    /// member that does (when known), for answers that send a caller there.
    pub fn led_elsewhere(&self) -> Vec<LedElsewhere> {
        self.accounts
            .iter()
            .filter_map(|a| {
                let status = a.status.borrow();
                let ha = status.ha.as_ref()?;
                (ha.role != HaRole::Leader).then(|| LedElsewhere {
                    account: status.account.clone(),
                    leader: ha.leader.clone(),
                })
            })
            .collect()
    }
}

/// An account another member leads, as answers name it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedElsewhere {
    /// The account.
    pub account: String,
    /// Its leader's `node_id`, when one holds the lease.
    pub leader: Option<String>,
}

/// `account (leader X)` pairs in words, for refusals.
pub fn describe_leaders(elsewhere: &[LedElsewhere]) -> String {
    elsewhere
        .iter()
        .map(|e| {
            format!(
                "`{}` is led by {}",
                e.account,
                e.leader.as_deref().unwrap_or("no member yet")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ready: polled recently; with `[ha]` a standby is ready while it reaches
/// the database (it is ready to take over), and a node that cannot is not.
fn is_ready(account: &AccountStatus, now: DateTime<Utc>, window: TimeDelta) -> bool {
    match account.ha.as_ref().map(|ha| ha.role) {
        Some(HaRole::Standby) => true,
        Some(HaRole::NoDatabase) => false,
        Some(HaRole::Leader) | None => {
            account.healthy && account.last_poll_ok.is_some_and(|at| now - at <= window)
        }
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let document = state.document();
    let roles: Vec<String> = document
        .accounts
        .iter()
        .filter_map(|a| Some(format!("{}: {}", a.account, a.ha.as_ref()?.role.as_str())))
        .collect();
    let word = if document.ready { "ready" } else { "not ready" };
    let body = if roles.is_empty() {
        format!("{word}\n")
    } else {
        format!("{word} ({})\n", roles.join(", "))
    };
    let code = if document.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

async fn status(State(state): State<HttpState>) -> Json<StatusDocument> {
    let mut document = state.document();
    for (account, handle) in document.accounts.iter_mut().zip(&state.accounts) {
        account.calls = handle.calls().await;
    }
    Json(document)
}

/// How long `/status` waits for an engine's list of calls: an engine busy
/// past this (or stopped) is shown without it rather than hold the answer.
const CALLS_TIMEOUT: Duration = Duration::from_secs(10);

impl AccountHandle {
    /// The engine's tracked calls, asked for now; none if it does not
    /// answer within [`CALLS_TIMEOUT`].
    async fn calls(&self) -> Vec<crate::engine::CallStatus> {
        let ask = async {
            let (reply, answer) = oneshot::channel();
            self.commands.send(Command::Calls { reply }).await.ok()?;
            answer.await.ok()
        };
        tokio::time::timeout(CALLS_TIMEOUT, ask)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }
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
    let mut refused = false;
    for account in &state.accounts {
        let (reply, answer) = oneshot::channel();
        let command = Command::Pardon {
            uuid: uuid.clone(),
            until,
            reply,
        };
        if account.commands.send(command).await.is_ok() {
            match answer.await {
                Ok(PardonReply::Tracked) => tracked = true,
                Ok(PardonReply::Refused) => refused = true,
                Ok(PardonReply::Untracked) | Err(_) => {}
            }
        }
    }
    if refused && !tracked {
        let retry_after = state.poll_interval.as_secs().max(1).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after)],
            format!(
                "too many pardons of calls callwarden does not track (at most {MAX_UNTRACKED_PARDONS} until the next poll); try again later\n"
            ),
        )
            .into_response();
    }
    let elsewhere = state.led_elsewhere();
    if !tracked && !elsewhere.is_empty() {
        let body = serde_json::json!({
            "call_uuid": uuid.as_str(),
            "tracked": false,
            "error": format!(
                "no account this node leads tracks the call; send the pardon to the leader: {}",
                describe_leaders(&elsewhere)
            ),
            "led_elsewhere": elsewhere,
        });
        return (StatusCode::CONFLICT, Json(body)).into_response();
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
