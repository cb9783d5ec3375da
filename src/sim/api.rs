//! The simulated Vobiz API under `/api/v1`: routing by hand (so lower-case
//! paths, wrong methods and unknown paths answer like the real API), auth,
//! faults, the request log, and the call endpoints.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use super::faults::{Endpoint, ErrorFormat, Plan};
use super::render;
use super::state::{rfc3339_micros, uuid_v4, EndedBy, LogRecord, SimState, SimStatus, World};

/// Longest text a Speak request may carry.
const MAX_SPEAK_CHARS: usize = 1000;

/// What a path under `/api/v1/` names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// `/Account/{id}/Call/`
    Calls { account: String },
    /// `/Account/{id}/Call/{uuid}/`
    Call { account: String, uuid: String },
    /// `/Account/{id}/Call/{uuid}/Speak/`
    Speak { account: String, uuid: String },
    /// `account` or `call` in the wrong case: the real API answers 401.
    WrongCase,
    /// Anything else.
    Unknown,
}

impl Route {
    fn parse(path: &str) -> Self {
        let Some(rest) = path.strip_prefix("/api/v1/") else {
            return Self::Unknown;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let wrong_case = |got: &str, want: &str| got != want && got.eq_ignore_ascii_case(want);
        if parts.first().is_some_and(|p| wrong_case(p, "Account"))
            || parts.get(2).is_some_and(|p| wrong_case(p, "Call"))
            || parts.get(4).is_some_and(|p| wrong_case(p, "Speak"))
        {
            return Self::WrongCase;
        }
        let ok = |s: &str| !s.is_empty() && crate::call::CallUuid::parse(s).is_ok();
        match parts.as_slice() {
            ["Account", account, "Call", ""] if ok(account) => Self::Calls {
                account: (*account).to_owned(),
            },
            ["Account", account, "Call", uuid, ""] if ok(account) && ok(uuid) => Self::Call {
                account: (*account).to_owned(),
                uuid: (*uuid).to_owned(),
            },
            ["Account", account, "Call", uuid, "Speak", ""] if ok(account) && ok(uuid) => {
                Self::Speak {
                    account: (*account).to_owned(),
                    uuid: (*uuid).to_owned(),
                }
            }
            _ => Self::Unknown,
        }
    }

    fn uuid(&self) -> Option<&str> {
        match self {
            Self::Call { uuid, .. } | Self::Speak { uuid, .. } => Some(uuid),
            _ => None,
        }
    }
}

/// One answer before it becomes an HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Option<String>,
    content_type: &'static str,
    retry_after: Option<String>,
    allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body.to_string()),
            content_type: "application/json",
            retry_after: None,
            allow: None,
        }
    }

    fn empty(status: u16) -> Self {
        Self {
            status,
            body: None,
            content_type: "application/json",
            retry_after: None,
            allow: None,
        }
    }

    fn error(api_id: &str, status: u16, message: &str) -> Self {
        Self::error_as(api_id, status, message, ErrorFormat::String, None)
    }

    fn error_as(
        api_id: &str,
        status: u16,
        message: &str,
        format: ErrorFormat,
        retry_after: Option<String>,
    ) -> Self {
        Self {
            status,
            body: render::error(api_id, status, message, format),
            content_type: "application/json",
            retry_after,
            allow: None,
        }
    }

    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

enum Outcome {
    Reply(Reply),
    Reset,
}

/// The fallback handler: every request that is not `/_sim/`.
pub async fn handle(
    State(sim): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = sim.now();
    let latency = sim.lock().faults.spec.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let now = sim.now();
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let route = Route::parse(&path);
    let api_id = uuid_v4(&mut rand::rng());

    let mut world = sim.lock();
    let outcome = decide(
        &mut world, &method, &route, &headers, &query, &body, now, &api_id,
    );
    world.record(LogRecord {
        seq: 0,
        t_wall: rfc3339_micros(arrived),
        method: method.to_string(),
        path,
        query,
        status: match &outcome {
            Outcome::Reply(reply) => Some(reply.status),
            Outcome::Reset => None,
        },
        uuid: route.uuid().map(str::to_owned),
    });
    let skew = &world.faults.spec;
    let date = now
        + TimeDelta::seconds(skew.date_skew_s.clamp(-1_000_000_000, 1_000_000_000))
        + TimeDelta::milliseconds(skew.date_skew_ms.clamp(-1_000_000_000, 1_000_000_000));
    drop(world);

    match outcome {
        Outcome::Reply(reply) => respond(reply, date),
        Outcome::Reset => reset(),
    }
}

/// A response whose body fails at once: hyper aborts the connection, so
/// the client sees a transport error, not an answer.
fn reset() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated connection reset",
        ))
    });
    let mut response = Response::new(Body::from_stream(failing));
    // No Content-Length: the body is chunked and never terminated.
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

/// `Date` in the IMF-fixdate format of RFC 9110.
pub fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn respond(reply: Reply, date: DateTime<Utc>) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let has_body = reply.body.is_some();
    let mut response = Response::new(reply.body.map(Body::from).unwrap_or_else(Body::empty));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if has_body {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(reply.content_type),
        );
    }
    if let Ok(value) = HeaderValue::from_str(&http_date(date)) {
        headers.insert(header::DATE, value);
    }
    if let Some(retry_after) = reply
        .retry_after
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(header::RETRY_AFTER, retry_after);
    }
    if let Some(allow) = reply.allow {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    response
}

#[allow(clippy::too_many_arguments)]
fn decide(
    world: &mut World,
    method: &Method,
    route: &Route,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
    now: DateTime<Utc>,
    api_id: &str,
) -> Outcome {
    let World { faults, rng, .. } = world;
    match faults.before_auth(rng, now) {
        Plan::Reset => return Outcome::Reset,
        Plan::Fail {
            status,
            retry_after,
            format,
        } => {
            return Outcome::Reply(Reply::error_as(
                api_id,
                status,
                render::reason(status),
                format,
                retry_after,
            ))
        }
        _ => {}
    }
    let (account, endpoint, allow) = match route {
        Route::Unknown => return Outcome::Reply(Reply::error(api_id, 404, "not found")),
        Route::WrongCase => {
            return Outcome::Reply(Reply::error(api_id, 401, "authentication failed"))
        }
        Route::Calls { account } => (
            account,
            method_endpoint(method, &[(Method::GET, Endpoint::List)]),
            "GET",
        ),
        Route::Call { account, .. } => (
            account,
            method_endpoint(
                method,
                &[
                    (Method::GET, Endpoint::Detail),
                    (Method::DELETE, Endpoint::Hangup),
                ],
            ),
            "GET, DELETE",
        ),
        Route::Speak { account, .. } => (
            account,
            method_endpoint(
                method,
                &[
                    (Method::POST, Endpoint::Speak),
                    (Method::DELETE, Endpoint::Speak),
                ],
            ),
            "POST, DELETE",
        ),
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let auth_id = header("x-auth-id");
    if auth_id != account || !world.authorized(auth_id, header("x-auth-token")) {
        return Outcome::Reply(Reply::error(api_id, 401, "authentication failed"));
    }
    let Some(endpoint) = endpoint else {
        let mut reply = Reply::error(api_id, 405, "method not allowed");
        reply.allow = Some(allow);
        return Outcome::Reply(reply);
    };
    let account = account.clone();
    let uuid = route.uuid();
    let plan = world.faults.scripted(method.as_str(), endpoint, uuid);
    let op = Op {
        account: &account,
        endpoint,
        method,
        uuid,
        query,
        body,
        now,
        api_id,
    };
    match plan {
        Plan::Normal => Outcome::Reply(op.run(world)),
        Plan::Reset => Outcome::Reset,
        Plan::ResetAfter => {
            op.run(world);
            Outcome::Reset
        }
        Plan::Fail {
            status,
            retry_after,
            format,
        } => Outcome::Reply(Reply::error_as(
            api_id,
            status,
            render::reason(status),
            format,
            retry_after,
        )),
        Plan::Succeed(status) => {
            let mut reply = op.run(world);
            if reply.is_success() {
                reply.status = status;
                if status == 204 {
                    reply.body = None;
                } else if reply.body.is_none() {
                    reply.body = Some(json!({ "api_id": api_id, "message": "ok" }).to_string());
                }
            }
            Outcome::Reply(reply)
        }
        Plan::Malformed(kind) => {
            let normal = op.run(world);
            let (body, content_type) =
                render::malformed(kind, endpoint, normal.body.as_deref(), api_id);
            Outcome::Reply(Reply {
                status: 200,
                body: Some(body),
                content_type,
                retry_after: None,
                allow: None,
            })
        }
    }
}

fn method_endpoint(method: &Method, allowed: &[(Method, Endpoint)]) -> Option<Endpoint> {
    allowed.iter().find(|(m, _)| m == method).map(|(_, e)| *e)
}

/// The value of `key` in a query string (values here are plain words).
fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// One authorized API operation.
struct Op<'a> {
    account: &'a str,
    endpoint: Endpoint,
    method: &'a Method,
    uuid: Option<&'a str>,
    query: &'a str,
    body: &'a [u8],
    now: DateTime<Utc>,
    api_id: &'a str,
}

impl Op<'_> {
    fn run(&self, world: &mut World) -> Reply {
        match self.endpoint {
            Endpoint::List => self.list(world),
            Endpoint::Detail => self.detail(world),
            Endpoint::Hangup => self.hangup(world),
            Endpoint::Speak => self.speak(world),
        }
    }

    fn not_found(&self) -> Reply {
        Reply::error(self.api_id, 404, "not found")
    }

    fn list(&self, world: &World) -> Reply {
        let filter = match query_param(self.query, "status") {
            Some(f @ ("live" | "queued")) => f,
            _ => return Reply::error(self.api_id, 400, "status must be live or queued"),
        };
        let uuids = world.order.iter().filter_map(|uuid| {
            let call = world.calls.get(uuid)?;
            (call.account == self.account && render::listed(call.status, filter))
                .then_some(uuid.as_str())
        });
        Reply {
            status: 200,
            body: Some(render::call_list(self.api_id, uuids)),
            content_type: "application/json",
            retry_after: None,
            allow: None,
        }
    }

    fn detail(&self, world: &World) -> Reply {
        let Some(call) = self
            .uuid
            .and_then(|uuid| world.calls.get(uuid))
            .filter(|call| call.account == self.account)
        else {
            return self.not_found();
        };
        let zone = world.zone();
        match query_param(self.query, "status") {
            Some(filter @ ("live" | "queued")) if render::listed(call.status, filter) => {
                Reply::json(200, render::detail(call, zone, self.now, self.api_id))
            }
            Some("live" | "queued") => self.not_found(),
            None | Some("") if call.status == SimStatus::Completed => {
                Reply::json(200, render::cdr(call, zone, self.api_id))
            }
            None | Some("") => self.not_found(),
            Some(_) => Reply::error(self.api_id, 400, "status must be live or queued"),
        }
    }

    fn hangup(&self, world: &mut World) -> Reply {
        let Some(uuid) = self.uuid else {
            return self.not_found();
        };
        let Some(call) = world
            .calls
            .get_mut(uuid)
            .filter(|c| c.account == self.account)
        else {
            return self.not_found();
        };
        call.delete_requests += 1;
        if call.status == SimStatus::Completed {
            return self.not_found();
        }
        call.hangups += 1;
        world.end(uuid, EndedBy::Api, self.now);
        Reply::empty(204)
    }

    fn speak(&self, world: &mut World) -> Reply {
        let Some(call) = self
            .uuid
            .and_then(|uuid| world.calls.get_mut(uuid))
            .filter(|c| c.account == self.account && c.status.is_live())
        else {
            return self.not_found();
        };
        if self.method == Method::DELETE {
            return Reply::empty(204);
        }
        match validate_speak(self.body) {
            Ok(text) => {
                call.speaks.push(text);
                Reply::json(
                    200,
                    json!({ "api_id": self.api_id, "message": "speak started" }),
                )
            }
            Err(message) => Reply::error(self.api_id, 400, &message),
        }
    }
}

/// Checks a Speak body; returns the text.
fn validate_speak(body: &[u8]) -> Result<String, String> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err("body must be a JSON object".to_owned());
    };
    let text = match map.get("text") {
        Some(Value::String(text)) if !text.trim().is_empty() => text,
        Some(Value::String(_)) | None => return Err("text is required".to_owned()),
        Some(_) => return Err("text must be a string".to_owned()),
    };
    if text.chars().count() > MAX_SPEAK_CHARS {
        return Err(format!("text must be at most {MAX_SPEAK_CHARS} characters"));
    }
    let word = |key: &str, allowed: &[&str]| match map.get(key) {
        None => Ok(()),
        Some(Value::String(v)) if allowed.contains(&v.as_str()) => Ok(()),
        Some(_) => Err(format!("{key} must be one of {}", allowed.join(", "))),
    };
    word("legs", &["aleg", "bleg", "both"])?;
    word("voice", &["WOMAN", "MAN"])?;
    for key in ["loop", "mix"] {
        if map.get(key).is_some_and(|v| !v.is_boolean()) {
            return Err(format!("{key} must be true or false"));
        }
    }
    if map.get("language").is_some_and(|v| !v.is_string()) {
        return Err("language must be a string".to_owned());
    }
    Ok(text.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_like_the_api() {
        assert_eq!(
            Route::parse("/api/v1/Account/MA1/Call/"),
            Route::Calls {
                account: "MA1".into()
            }
        );
        assert_eq!(
            Route::parse("/api/v1/Account/MA1/Call/abc-1/Speak/"),
            Route::Speak {
                account: "MA1".into(),
                uuid: "abc-1".into()
            }
        );
        assert_eq!(Route::parse("/api/v1/account/MA1/call/"), Route::WrongCase);
        assert_eq!(
            Route::parse("/api/v1/Account/MA1/call/x/"),
            Route::WrongCase
        );
        assert_eq!(Route::parse("/api/v1/Account/MA1/Call"), Route::Unknown);
        assert_eq!(Route::parse("/api/v1/Account/MA1/Call//"), Route::Unknown);
        assert_eq!(Route::parse("/other"), Route::Unknown);
    }

    #[test]
    fn speak_bodies_are_validated() {
        assert_eq!(
            validate_speak(br#"{"text":"hi","legs":"both"}"#),
            Ok("hi".into())
        );
        assert!(validate_speak(br#"{"legs":"both"}"#).is_err());
        assert!(validate_speak(br#"{"text":"hi","legs":"cleg"}"#).is_err());
        assert!(
            validate_speak(format!(r#"{{"text":"{}"}}"#, "a".repeat(1001)).as_bytes()).is_err()
        );
        assert!(validate_speak(format!(r#"{{"text":"{}"}}"#, "a".repeat(1000)).as_bytes()).is_ok());
        assert!(validate_speak(b"text=hi").is_err());
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("status=live", "status"), Some("live"));
        assert_eq!(query_param("a=1&status=queued", "status"), Some("queued"));
        assert_eq!(query_param("", "status"), None);
    }
}
