//! A small rewriting HTTP proxy between the daemon and the simulator: it
//! forwards every request as is, but can leave one call out of a number of
//! list answers (a partial list, as a flaky front end might send), and can
//! answer a call's live detail with a fixed body (a hostile answer).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::Response;
use callwarden::sim::SimHandle;
use serde_json::Value;

/// What the proxy rewrites: list answers that leave a call out.
#[derive(Default)]
struct Rewrites {
    /// Call UUID → how many more `?status=live` list answers omit it.
    omit_from_live_list: HashMap<String, u32>,
    /// List answers rewritten so far.
    rewritten: u32,
    /// Call UUID → the body its successful live detail answers carry.
    live_detail: HashMap<String, Vec<u8>>,
    /// Entries appended to every live list answer.
    extra_live_entries: Vec<Value>,
}

/// A running proxy in front of a simulator.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    rewrites: Arc<Mutex<Rewrites>>,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    rewrites: Arc<Mutex<Rewrites>>,
}

impl Proxy {
    /// Starts a proxy to `sim` on 127.0.0.1:0.
    pub async fn start(sim: &SimHandle) -> Self {
        let rewrites = Arc::new(Mutex::new(Rewrites::default()));
        let shared = Arc::new(Shared {
            upstream: sim.root_url(),
            client: reqwest::Client::new(),
            rewrites: Arc::clone(&rewrites),
        });
        let app = axum::Router::new().fallback(forward).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy binds");
        let addr = listener.local_addr().expect("proxy addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, rewrites }
    }

    /// The API base URL through the proxy.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Leaves `uuid` out of the next `times` live list answers.
    pub fn omit_from_live_list(&self, uuid: &str, times: u32) {
        self.rewrites
            .lock()
            .unwrap()
            .omit_from_live_list
            .insert(uuid.to_owned(), times);
    }

    /// Answers every successful live detail read of `uuid` with `body`.
    pub fn replace_live_detail(&self, uuid: &str, body: Vec<u8>) {
        self.rewrites
            .lock()
            .unwrap()
            .live_detail
            .insert(uuid.to_owned(), body);
    }

    /// Appends `entries` to every live list answer from now on.
    pub fn add_to_live_list(&self, entries: Vec<Value>) {
        self.rewrites.lock().unwrap().extra_live_entries = entries;
    }

    /// How many list answers were rewritten so far.
    pub fn rewritten(&self) -> u32 {
        self.rewrites.lock().unwrap().rewritten
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let is_live_list = parts.method == "GET"
        && parts.uri.path().ends_with("/Call/")
        && parts.uri.query() == Some("status=live");
    let body = to_bytes(body, usize::MAX).await.expect("request body");
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).expect("method");
    let mut upstream = shared
        .client
        .request(method, format!("{}{path_and_query}", shared.upstream))
        .body(body.to_vec());
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    let Ok(answer) = upstream.send().await else {
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .expect("response");
    };
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let mut bytes = answer.bytes().await.expect("upstream body").to_vec();
    if is_live_list && status == 200 {
        bytes = omit(&shared.rewrites, bytes);
    }
    if parts.method == "GET" && parts.uri.query() == Some("status=live") && status == 200 {
        let uuid = parts.uri.path().trim_end_matches('/').rsplit('/').next();
        let rewrites = shared.rewrites.lock().unwrap();
        if let Some(body) = uuid.and_then(|uuid| rewrites.live_detail.get(uuid)) {
            bytes = body.clone();
        }
    }
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response = response.header(
                HeaderName::from_bytes(name.as_str().as_bytes()).expect("header"),
                value.as_bytes(),
            );
        }
    }
    response.body(Body::from(bytes)).expect("response")
}

/// Adds the extra entries to, or removes the calls due to be left out
/// from, a list answer.
fn omit(rewrites: &Mutex<Rewrites>, bytes: Vec<u8>) -> Vec<u8> {
    let mut rewrites = rewrites.lock().unwrap();
    if !rewrites.extra_live_entries.is_empty() {
        if let Ok(mut list) = serde_json::from_slice::<Value>(&bytes) {
            if let Some(calls) = list["calls"].as_array_mut() {
                calls.extend(rewrites.extra_live_entries.iter().cloned());
                return serde_json::to_vec(&list).expect("list JSON");
            }
        }
    }
    if rewrites.omit_from_live_list.values().all(|n| *n == 0) {
        return bytes;
    }
    let Ok(mut list) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    let Some(calls) = list["calls"].as_array_mut() else {
        return bytes;
    };
    let mut changed = false;
    calls.retain(|entry| {
        let left = entry
            .as_str()
            .and_then(|uuid| rewrites.omit_from_live_list.get(uuid).copied())
            .unwrap_or(0);
        if left > 0 {
            changed = true;
        }
        left == 0
    });
    if !changed {
        return bytes;
    }
    for left in rewrites.omit_from_live_list.values_mut() {
        *left = left.saturating_sub(1);
    }
    rewrites.rewritten += 1;
    serde_json::to_vec(&list).expect("list JSON")
}
