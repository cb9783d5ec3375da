//! `POST /hangup` on the status listener: manual and external hangups.
//! Who may ask (loopback, or a bearer token compared in constant time), the
//! request body and its validation, and the `request_id` store that makes a
//! replayed request answer the same without acting twice. The engines
//! decide and act ([`crate::engine::Command::Hangup`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Mutex};

use crate::call::CallUuid;
use crate::engine::{Command, ManualDecision, ManualRequest, Selection};
use crate::http::HttpState;
use crate::policy::{FieldMatcher, Match, MatchField};
use crate::vobiz::Secret;

/// How many `request_id`s are remembered (the oldest are forgotten first).
pub const REMEMBERED_REQUESTS: usize = 10_000;
/// The longest `older_than` accepted.
pub const MAX_OLDER_THAN: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest `reason` and `request_id`, in characters.
const MAX_TEXT: usize = 500;

/// The answers given to requests with a `request_id`, so a replay answers
/// the same and acts on nothing.
#[derive(Debug, Default)]
pub struct Requests {
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    answers: HashMap<String, Answer>,
    order: VecDeque<String>,
}

impl Requests {
    /// A store that knows `ids` were acted on before a restart: their
    /// replays answer `replayed` with no calls, and act on nothing.
    pub fn acted_on(ids: impl IntoIterator<Item = String>) -> Self {
        let mut remembered = Remembered::default();
        for id in ids {
            let answer = Answer {
                request_id: Some(id.clone()),
                replayed: true,
                dry_run: false,
                preview: false,
                calls: Vec::new(),
            };
            remembered.insert(id, answer);
        }
        Self {
            inner: Mutex::new(remembered),
        }
    }
}

impl Remembered {
    fn insert(&mut self, id: String, answer: Answer) {
        if self.answers.insert(id.clone(), answer).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > REMEMBERED_REQUESTS {
            if let Some(oldest) = self.order.pop_front() {
                self.answers.remove(&oldest);
            }
        }
    }
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    calls: Option<Vec<String>>,
    #[serde(rename = "match")]
    matcher: Option<HashMap<String, OneOrMany>>,
    older_than: Option<String>,
    limit: Option<usize>,
    reason: Option<String>,
    dry_run: Option<bool>,
    request_id: Option<String>,
    force: Option<bool>,
    preview: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The answer (202).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    /// The request's id, if it gave one.
    pub request_id: Option<String>,
    /// Whether this answer is the stored one of an earlier request with the
    /// same id (nothing was done this time).
    pub replayed: bool,
    /// Whether nothing was to be hung up (request or global dry-run).
    pub dry_run: bool,
    /// Whether this was a preview.
    pub preview: bool,
    /// A decision per selected call.
    pub calls: Vec<AnswerCall>,
}

/// One call's decision in an [`Answer`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerCall {
    /// The call.
    pub call_uuid: String,
    /// Its account, when a daemon tracks it.
    pub account: Option<String>,
    /// `accepted`, `dry_run`, `would_hang_up`, `protected`, `breaker`,
    /// `already_ended`, `in_progress`, `refused` or `not_found`.
    pub decision: String,
    /// Details in words.
    pub detail: String,
}

impl From<ManualDecision> for AnswerCall {
    fn from(d: ManualDecision) -> Self {
        Self {
            call_uuid: d.call_uuid,
            account: Some(d.account),
            decision: d.decision.to_owned(),
            detail: d.detail,
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths,
/// so a caller cannot find the token one byte at a time.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        difference |= x ^ y;
    }
    difference == 0
}

/// Whether `peer` may ask: loopback always; others with the bearer token.
fn authorized(
    peer: &SocketAddr,
    headers: &HeaderMap,
    token: Option<&Secret>,
) -> Result<(), &'static str> {
    if peer.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    let Some(token) = token else {
        return Err(
            "POST /hangup is accepted from loopback only unless [http] api_token_file is set",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) => Ok(()),
        _ => Err("POST /hangup from other hosts needs a valid `Authorization: Bearer` token"),
    }
}

/// Validates a body into a request; the error is a 400 message.
fn request(body: &[u8], peer: &SocketAddr) -> Result<ManualRequest, String> {
    let body: Body = serde_json::from_slice(body).map_err(|e| format!("bad request body: {e}"))?;
    let reason = body.reason.unwrap_or_default();
    if reason.trim().is_empty() {
        return Err("`reason` is required: say why the calls are ended".into());
    }
    if reason.chars().count() > MAX_TEXT {
        return Err(format!("`reason` is longer than {MAX_TEXT} characters"));
    }
    if let Some(id) = &body.request_id {
        if id.is_empty() || id.chars().count() > MAX_TEXT || id.chars().any(char::is_control) {
            return Err(format!(
                "`request_id` must be 1 to {MAX_TEXT} printable characters"
            ));
        }
    }
    let selection = match (body.calls, body.matcher) {
        (Some(_), Some(_)) => return Err("give `calls` or `match`, not both".into()),
        (None, None) => return Err("give `calls` (UUIDs) or `match` (a selector)".into()),
        (Some(calls), None) => {
            if body.older_than.is_some() || body.limit.is_some() {
                return Err("`older_than` and `limit` go with `match`, not `calls`".into());
            }
            if calls.is_empty() {
                return Err("`calls` is empty".into());
            }
            let uuids = calls
                .iter()
                .map(|raw| CallUuid::parse(raw).map_err(|e| format!("bad call UUID {raw:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            Selection::Calls(uuids)
        }
        (None, Some(fields)) => {
            let mut matchers = Vec::new();
            for (key, patterns) in fields {
                let field = MatchField::from_key(&key).ok_or_else(|| {
                    format!("unknown match field `{key}` (direction, to, from, status, caller_name, account)")
                })?;
                let patterns = match patterns {
                    OneOrMany::One(p) => vec![p],
                    OneOrMany::Many(list) => list,
                };
                if patterns.is_empty() {
                    return Err(format!("empty match list `{key}`"));
                }
                matchers.push(
                    FieldMatcher::new(field, patterns)
                        .map_err(|e| format!("match `{key}`: {e}"))?,
                );
            }
            let older_than = match body.older_than.as_deref() {
                None => None,
                Some(text) => match humantime::parse_duration(text.trim()) {
                    Ok(d) if d <= MAX_OLDER_THAN => Some(d),
                    Ok(_) => return Err("`older_than` is longer than 30 days".into()),
                    Err(e) => return Err(format!("`older_than`: bad duration `{text}`: {e}")),
                },
            };
            if body.limit == Some(0) {
                return Err("`limit` must be at least 1".into());
            }
            Selection::Match {
                matcher: Match::new(matchers),
                older_than,
                limit: body.limit,
            }
        }
    };
    Ok(ManualRequest {
        selection,
        reason: reason.trim().to_owned(),
        requested_by: peer.ip().to_canonical().to_string(),
        request_id: body.request_id,
        dry_run: body.dry_run.unwrap_or(false),
        force: body.force.unwrap_or(false),
        preview: body.preview.unwrap_or(false),
    })
}

/// `POST /hangup`.
pub async fn handle(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = authorized(&peer, &headers, state.api_token.as_ref()) {
        tracing::warn!(peer = %peer.ip(), "POST /hangup refused: not loopback and no valid bearer token");
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    let request = match request(&body, &peer) {
        Ok(request) => request,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    // With [ha], a node that leads no account acts on nothing: the answer
    // names the leaders instead.
    let elsewhere = state.led_elsewhere();
    if !elsewhere.is_empty() && elsewhere.len() == state.accounts.len() {
        let body = serde_json::json!({
            "error": format!(
                "this node is a standby for every account; send the request to the leader: {}",
                crate::http::describe_leaders(&elsewhere)
            ),
            "led_elsewhere": elsewhere,
        });
        return (StatusCode::CONFLICT, Json(body)).into_response();
    }
    // One request at a time: a replay waits for the first to be answered.
    let mut remembered = state.hangups.inner.lock().await;
    if let Some(id) = &request.request_id {
        if let Some(answer) = remembered.answers.get(id) {
            let mut answer = answer.clone();
            answer.replayed = true;
            return (StatusCode::ACCEPTED, Json(answer)).into_response();
        }
    }
    tracing::info!(peer = %peer.ip(), request_id = request.request_id.as_deref().unwrap_or(""),
        reason = %request.reason, preview = request.preview, "manual hangup requested");
    let mut calls: Vec<AnswerCall> = Vec::new();
    for account in &state.accounts {
        let (reply, answer) = oneshot::channel();
        let command = Command::Hangup {
            request: Box::new(request.clone()),
            reply,
        };
        if account.commands.send(command).await.is_ok() {
            calls.extend(
                answer
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(AnswerCall::from),
            );
        }
    }
    if let Selection::Calls(uuids) = &request.selection {
        for uuid in uuids {
            if !calls.iter().any(|c| c.call_uuid == uuid.as_str()) {
                calls.push(AnswerCall {
                    call_uuid: uuid.to_string(),
                    account: None,
                    decision: "not_found".to_owned(),
                    detail: if elsewhere.is_empty() {
                        "no account tracks this call (ended, or not seen by a poll yet)".to_owned()
                    } else {
                        format!(
                            "no account this node leads tracks this call; if it belongs to another, send the request to its leader: {}",
                            crate::http::describe_leaders(&elsewhere)
                        )
                    },
                });
            }
        }
    }
    let answer = Answer {
        request_id: request.request_id.clone(),
        replayed: false,
        dry_run: request.dry_run || state.global_dry_run,
        preview: request.preview,
        calls,
    };
    if let (Some(id), false) = (&request.request_id, request.preview) {
        remembered.insert(id.clone(), answer.clone());
    }
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_exact() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn bodies_are_validated() {
        let bad = [
            (r#"{"calls":["a"]}"#, "`reason` is required"),
            (r#"{"reason":"x"}"#, "give `calls`"),
            (
                r#"{"reason":"x","calls":["a"],"match":{"to":"1"}}"#,
                "not both",
            ),
            (r#"{"reason":"x","calls":["a/b"]}"#, "bad call UUID"),
            (
                r#"{"reason":"x","calls":["a"],"limit":3}"#,
                "go with `match`",
            ),
            (
                r#"{"reason":"x","match":{"colour":"red"}}"#,
                "unknown match field",
            ),
            (r#"{"reason":"x","match":{"to":[]}}"#, "empty match list"),
            (
                r#"{"reason":"x","match":{"to":"+882*"},"older_than":"soon"}"#,
                "bad duration",
            ),
            (
                r#"{"reason":"x","match":{"to":"+882*"},"older_than":"60d"}"#,
                "30 days",
            ),
            (
                r#"{"reason":"x","match":{"to":"+882*"},"limit":0}"#,
                "at least 1",
            ),
            (r#"{"reason":"x","calls":["a"],"extra":1}"#, "unknown field"),
        ];
        for (body, expected) in bad {
            let error = request(body.as_bytes(), &peer()).unwrap_err();
            assert!(error.contains(expected), "{body}: {error}");
        }
        let ok = request(
            br#"{"reason":"fraud","match":{"to":"+882*","direction":["outbound"]},"older_than":"5m","limit":50,"request_id":"r1"}"#,
            &peer(),
        )
        .unwrap();
        assert_eq!(ok.requested_by, "127.0.0.1");
        assert!(matches!(
            ok.selection,
            Selection::Match {
                limit: Some(50),
                ..
            }
        ));
    }

    #[test]
    fn remote_callers_need_the_token() {
        let remote: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        let token = Secret::new("t0ken");
        let mut headers = HeaderMap::new();
        assert!(authorized(&peer(), &headers, None).is_ok());
        assert!(authorized(&mapped, &headers, None).is_ok());
        assert!(authorized(&remote, &headers, None).is_err());
        assert!(authorized(&remote, &headers, Some(&token)).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert!(authorized(&remote, &headers, Some(&token)).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer t0ken".parse().unwrap());
        assert!(authorized(&remote, &headers, Some(&token)).is_ok());
    }
}
