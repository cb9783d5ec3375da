//! The bundled Vobiz API simulator (`callwarden sim`, docs/simulator.md):
//! the Vobiz call endpoints with the same auth, status codes and JSON,
//! plus a control API under `/_sim/` for tests and demos.
//!
//! - [`state`]: accounts, calls, the request log, the seeded RNG.
//! - [`faults`]: latency, outages, resets, random and scripted errors.
//! - `api`: the API endpoints; `render`: their JSON; `control`: `/_sim/`.

mod api;
mod control;
pub mod faults;
mod model;
mod render;
pub mod state;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
pub use faults::FaultSpec;
pub use state::{
    AddCalls, CallSpec, ChurnSpec, LogRecord, SimCall, SimState, SimStatus, StateChange,
};

/// The auth id the simulator accepts when none is given.
pub const DEFAULT_AUTH_ID: &str = "MA00000000000000SIM0";
/// The auth token the simulator accepts when none is given.
pub const DEFAULT_AUTH_TOKEN: &str = "sim-token";
/// Where `callwarden sim` listens when not told.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8089";
/// Oldest age of the random calls `--calls N` creates.
pub const DEFAULT_AGE_MAX_S: f64 = 1800.0;

/// Which detail shape the simulated calls answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShapeMode {
    /// Every call answers in the flat shape.
    #[default]
    Flat,
    /// Every call answers in the legacy `calls[]` shape.
    Legacy,
    /// Each call picks one at creation (seeded) and keeps it.
    Mixed,
}

impl FromStr for ShapeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "flat" => Ok(Self::Flat),
            "legacy" => Ok(Self::Legacy),
            "mixed" => Ok(Self::Mixed),
            other => Err(format!(
                "shape must be flat, legacy or mixed, not {other:?}"
            )),
        }
    }
}

impl fmt::Display for ShapeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flat => "flat",
            Self::Legacy => "legacy",
            Self::Mixed => "mixed",
        })
    }
}

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address to bind (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Accepted `(auth_id, token)` pairs; empty means the defaults.
    pub accounts: Vec<(String, String)>,
    /// Random live calls to create at start (on the first account).
    pub calls: usize,
    /// Detail shape of the calls.
    pub shape: ShapeMode,
    /// Seed of every random choice (call UUIDs, shapes, faults).
    pub seed: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8089)),
            accounts: Vec::new(),
            calls: 0,
            shape: ShapeMode::Flat,
            seed: 0,
        }
    }
}

impl SimOptions {
    /// Defaults on `127.0.0.1:0`, for tests.
    pub fn ephemeral() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::default()
        }
    }
}

/// The simulator entry point.
#[derive(Debug)]
pub struct Simulator;

/// A running simulator.
pub struct SimHandle {
    /// The bound address.
    pub addr: SocketAddr,
    state: Arc<SimState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Binds, spawns the server on the current tokio runtime (call it inside
    /// one), and returns at once.
    pub fn start(options: SimOptions, clock: SharedClock) -> Result<SimHandle, io::Error> {
        let accounts = if options.accounts.is_empty() {
            vec![(DEFAULT_AUTH_ID.to_owned(), DEFAULT_AUTH_TOKEN.to_owned())]
        } else {
            options.accounts.clone()
        };
        let state = Arc::new(SimState::new(accounts, options.shape, options.seed, clock));
        if options.calls > 0 {
            state
                .add_calls(AddCalls {
                    generate: Some(options.calls),
                    age_max_s: Some(DEFAULT_AGE_MAX_S),
                    ..AddCalls::default()
                })
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("{err:?}")))?;
        }
        let listener = std::net::TcpListener::bind(options.listen)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(err) = serve.await {
                tracing::error!(%err, "simulator stopped");
            }
        });
        Ok(SimHandle {
            addr,
            state,
            stop: Some(stop),
            task,
        })
    }
}

/// The whole app: `/_sim/` control routes, everything else is the API.
pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .nest("/_sim", control::routes())
        .fallback(api::handle)
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            add_date,
        ))
        .with_state(state)
}

/// Every answer carries a `Date` from the simulator's clock (the API sets its own, skewed one).
async fn add_date(State(sim): State<Arc<SimState>>, mut response: Response) -> Response {
    if !response.headers().contains_key(header::DATE) {
        if let Ok(value) = HeaderValue::from_str(&api::http_date(sim.now())) {
            response.headers_mut().insert(header::DATE, value);
        }
    }
    response
}

impl SimHandle {
    /// `http://ADDR/api/v1`, the client's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// `http://ADDR`, the root for `/_sim/` requests.
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulator's state, for tests that prefer calls to HTTP.
    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }

    /// Stops accepting, lets in-flight requests finish (at most 5 s), and waits.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// The one line `callwarden sim` prints at start.
pub fn banner(handle: &SimHandle) -> String {
    let accounts: Vec<String> = handle
        .state
        .accounts()
        .iter()
        .map(|(id, token)| format!("auth_id={id} auth_token={token}"))
        .collect();
    format!("listening on {} {}", handle.base_url(), accounts.join(" "))
}

/// Runs `callwarden sim`: starts, prints the banner, serves until Ctrl-C.
pub async fn run_cli(options: SimOptions) -> io::Result<()> {
    let handle = Simulator::start(options, Arc::new(crate::clock::SystemClock))?;
    println!("{}", banner(&handle));
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
