//! The HTTP client for the Vobiz call API: one pooled `reqwest::Client`,
//! a per-account token bucket and concurrency limit with a priority lane for
//! enforcement, the 429 pause, and the mapping of HTTP outcomes onto [`Error`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, DATE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::parse::{self, malformed};
use super::rate::{Lane, Pause, TokenBucket};
use super::{Cdr, Error, Fetched, Secret, SpeakLegs, VobizApi};
use crate::call::{Call, CallUuid};
use crate::clock::SharedClock;
use crate::config::{ApiSettings, RetrySettings};

/// Longest API error message kept in [`Error::Rejected`].
const MESSAGE_CHARS: usize = 200;

/// Everything a [`Client`] needs; plain data, built by the config loader.
#[derive(Clone)]
pub struct ClientConfig {
    /// API root up to `/api/v1`, e.g. `https://api.vobiz.ai/api/v1`.
    pub base_url: String,
    /// The account's auth id (also the path segment after `/Account/`).
    pub auth_id: String,
    /// The account's auth token.
    pub token: Secret,
    /// Per-request timeout, from sending to the end of the body.
    pub timeout: Duration,
    /// Budget for all requests of this client; `0` disables the limit.
    pub max_requests_per_second: u32,
    /// Requests in flight at once (at least 1).
    pub max_concurrent_requests: usize,
    /// Zone of API timestamps that carry none.
    pub timestamp_zone: Tz,
    /// Longest pause after a 429.
    pub max_backoff: Duration,
    /// Source of `Fetched::received_at`.
    pub clock: SharedClock,
}

impl ClientConfig {
    /// A config with the defaults of `[api]` and `[retry] max_backoff`.
    pub fn new(
        base_url: impl Into<String>,
        auth_id: impl Into<String>,
        token: Secret,
        clock: SharedClock,
    ) -> Self {
        let api = ApiSettings::default();
        Self {
            base_url: base_url.into(),
            auth_id: auth_id.into(),
            token,
            timeout: api.timeout,
            max_requests_per_second: api.max_requests_per_second,
            max_concurrent_requests: api.max_concurrent_requests,
            timestamp_zone: api.timestamp_zone,
            max_backoff: RetrySettings::default().max_backoff,
            clock,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("auth_id", &self.auth_id)
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .field("max_requests_per_second", &self.max_requests_per_second)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("timestamp_zone", &self.timestamp_zone)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

/// A Vobiz API client for one account; cheap to clone (shared state behind `Arc`).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `{base_url}/Account/{auth_id}/Call/`
    calls_url: String,
    auth_id: String,
    token: Secret,
    zone: Tz,
    max_backoff: Duration,
    clock: SharedClock,
    bucket: TokenBucket,
    permits: Semaphore,
    /// Discovery's share of `permits`: all but one, so a request slot is
    /// always free for enforcement.
    discovery_permits: Semaphore,
    pause: Pause,
    /// The previous answer's skipped entries, per list (`live`, `queued`).
    skipped: std::sync::Mutex<std::collections::HashMap<String, parse::SkippedEntries>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("calls_url", &self.inner.calls_url)
            .field("token", &self.inner.token)
            .finish_non_exhaustive()
    }
}

/// A raw answer: status, headers we care about, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    server_date: Option<DateTime<Utc>>,
    sent_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
}

impl Answer {
    fn fetched<T>(&self, value: T) -> Fetched<T> {
        Fetched {
            value,
            server_date: self.server_date,
            sent_at: self.sent_at,
            received_at: self.received_at,
        }
    }
}

impl Client {
    /// Builds the client; fails on an unusable base URL, auth id or token.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let base = config.base_url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(base)
            .map_err(|err| Error::Transport(format!("invalid base URL: {err}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Transport(format!(
                "invalid base URL: scheme {:?} is not http or https",
                parsed.scheme()
            )));
        }
        // The auth id becomes a path segment: refuse anything that could
        // change the path, like we do for call UUIDs.
        if CallUuid::parse(&config.auth_id).is_err() {
            return Err(Error::Transport(
                "invalid auth id: expected letters and digits".to_owned(),
            ));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            "X-Auth-ID",
            HeaderValue::from_str(&config.auth_id)
                .map_err(|_| Error::Transport("invalid auth id".to_owned()))?,
        );
        let mut token = HeaderValue::from_str(config.token.expose()).map_err(|_| {
            Error::Transport("the auth token is not a valid header value".to_owned())
        })?;
        token.set_sensitive(true);
        headers.insert("X-Auth-Token", token);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            // A redirect could carry the token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("callwarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| Error::Transport(format!("cannot build the HTTP client: {err}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                calls_url: format!("{base}/Account/{}/Call/", config.auth_id),
                auth_id: config.auth_id,
                token: config.token,
                zone: config.timestamp_zone,
                max_backoff: config.max_backoff,
                clock: config.clock,
                bucket: TokenBucket::new(config.max_requests_per_second),
                permits: Semaphore::new(config.max_concurrent_requests.max(1)),
                discovery_permits: Semaphore::new(
                    config.max_concurrent_requests.saturating_sub(1).max(1),
                ),
                pause: Pause::default(),
                skipped: std::sync::Mutex::default(),
            }),
        })
    }

    fn call_url(&self, uuid: &CallUuid, suffix: &str) -> String {
        format!("{}{}/{suffix}", self.inner.calls_url, uuid.as_str())
    }

    /// Sends one request through the pause, the budget (in `lane`) and the
    /// concurrency limit, and maps every non-2xx status onto [`Error`].
    async fn send(
        &self,
        lane: Lane,
        method: Method,
        url: String,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Answer, Error> {
        let answer = self.exchange(lane, None, method, url, query, body).await?;
        if answer.status.is_success() {
            return Ok(answer);
        }
        Err(self.status_error(&answer))
    }

    /// One request and its answer, whatever the status. With `at`, the
    /// request leaves at that instant, or a whole number of seconds later
    /// if its turn came after it.
    async fn exchange(
        &self,
        lane: Lane,
        at: Option<DateTime<Utc>>,
        method: Method,
        url: String,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Answer, Error> {
        let inner = &self.inner;
        let shut_down = |_| Error::Transport("client is shut down".to_owned());
        inner.pause.wait().await;
        let discovery_slot = async {
            match lane {
                Lane::Discover => inner.discovery_permits.acquire().await.map(Some),
                Lane::Enforce => Ok(None),
            }
        };
        let _discovery_permit = match at {
            Some(at) => {
                // A timed request takes its token first: waiting for it
                // after the chosen instant would spoil the timing.
                inner.bucket.acquire(lane).await;
                tokio::time::sleep(self.until_phase(at)).await;
                discovery_slot.await.map_err(shut_down)?
            }
            None => {
                let permit = discovery_slot.await.map_err(shut_down)?;
                inner.bucket.acquire(lane).await;
                permit
            }
        };
        let _permit = inner.permits.acquire().await.map_err(shut_down)?;
        // A 429 answered while we queued pauses us too.
        inner.pause.wait().await;

        tracing::debug!(auth_id = %inner.auth_id, %method, %url, ?query, "API request");
        let mut request = inner.http.request(method, url).query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let sent_at = inner.clock.now();
        let response = request.send().await.map_err(|err| self.transport(err))?;
        let status = response.status();
        let headers = response.headers().clone();
        let received_at = inner.clock.now();
        let body = response.bytes().await.map_err(|err| self.transport(err))?;
        // A proxy or a wrong base_url may echo the request back: take the
        // token out before any parser, excerpt or audit record sees the body,
        // so no truncated excerpt can keep half of it either.
        let body = scrub_body(&body, inner.token.expose());
        let server_date = header_date(&headers);
        tracing::debug!(auth_id = %inner.auth_id, status = status.as_u16(), bytes = body.len(), "API answer");
        Ok(Answer {
            status,
            headers,
            body,
            server_date,
            sent_at,
            received_at,
        })
    }

    /// How long until `at`, or until `at` plus the fewest whole seconds
    /// that are not past: the phase within the second is what counts.
    fn until_phase(&self, at: DateTime<Utc>) -> Duration {
        let now = self.inner.clock.now();
        let ahead = at - now;
        let ahead = if ahead < TimeDelta::zero() {
            ahead + TimeDelta::seconds((-ahead).num_seconds() + 1)
        } else {
            ahead
        };
        ahead.to_std().unwrap_or(Duration::ZERO)
    }

    fn status_error(&self, answer: &Answer) -> Error {
        match answer.status.as_u16() {
            401 => Error::Unauthorized,
            403 => Error::Forbidden,
            404 => Error::NotFound,
            429 => {
                let retry_after = retry_after(
                    &answer.headers,
                    answer.server_date.unwrap_or(answer.received_at),
                );
                let pause = retry_after
                    .unwrap_or_else(|| Duration::from_secs(1).min(self.inner.max_backoff))
                    .min(self.inner.max_backoff);
                tracing::warn!(auth_id = %self.inner.auth_id, pause = ?pause, "rate limited (429); pausing every request of this account");
                self.inner.pause.extend(pause);
                Error::RateLimited { retry_after }
            }
            status @ 500..=599 => Error::Server(status),
            status => Error::Rejected {
                status,
                message: self.scrub(&error_message(&answer.body)),
            },
        }
    }

    /// Maps a reqwest failure without URL, headers or token.
    fn transport(&self, err: reqwest::Error) -> Error {
        if err.is_timeout() {
            return Error::Timeout;
        }
        let err = err.without_url();
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::Transport(self.scrub(&message))
    }

    /// Belt and braces: no message we produce may contain the token.
    fn scrub(&self, message: &str) -> String {
        let token = self.inner.token.expose();
        if token.is_empty() {
            message.to_owned()
        } else {
            message.replace(token, "[redacted]")
        }
    }

    async fn get_list(&self, status: &str) -> Result<Fetched<Vec<CallUuid>>, Error> {
        let answer = self
            .send(
                Lane::Discover,
                Method::GET,
                self.inner.calls_url.clone(),
                &[("status", status)],
                None,
            )
            .await?;
        expect_status(&answer, &[200])?;
        let list = parse::parse_call_list_entries(&answer.body)?;
        self.report_skipped(status, &list);
        Ok(answer.fetched(list.uuids))
    }

    /// Warns about invalid list entries once, when they first appear, with
    /// the count of all of them; not again at every poll.
    fn report_skipped(&self, status: &str, list: &parse::CallList) {
        let Ok(mut skipped) = self.inner.skipped.lock() else {
            return;
        };
        if list.skipped == 0 && !skipped.contains_key(status) {
            return;
        }
        let fresh = skipped.entry(status.to_owned()).or_default().fresh(list);
        if let Some(first) = fresh.first() {
            tracing::warn!(
                auth_id = %self.inner.auth_id,
                list = status,
                skipped = list.skipped,
                new = fresh.len(),
                first = %self.scrub(first),
                "skipping invalid entries in the call list (each is reported once, when it first appears)"
            );
        }
    }

    async fn get_detail(
        &self,
        lane: Lane,
        uuid: &CallUuid,
        status: &str,
    ) -> Result<Fetched<Call>, Error> {
        let answer = self
            .send(
                lane,
                Method::GET,
                self.call_url(uuid, ""),
                &[("status", status)],
                None,
            )
            .await?;
        expect_status(&answer, &[200])?;
        let call = parse::parse_call_detail(&answer.body, uuid, self.inner.zone)?;
        Ok(answer.fetched(call))
    }
}

/// `body` with every occurrence of `token` (raw or JSON-escaped) replaced
/// by `[redacted]`.
fn scrub_body(body: &[u8], token: &str) -> Vec<u8> {
    let mut out = replace_bytes(body, token.as_bytes());
    let escaped = serde_json::to_string(token).unwrap_or_default();
    let escaped = escaped.trim_matches('"');
    if escaped != token {
        out = replace_bytes(&out, escaped.as_bytes());
    }
    out
}

/// `haystack` with every occurrence of `needle` replaced by `[redacted]`.
fn replace_bytes(haystack: &[u8], needle: &[u8]) -> Vec<u8> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(b"[redacted]");
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Refuses a 2xx we did not expect (e.g. 204 where a body is due).
fn expect_status(answer: &Answer, accepted: &[u16]) -> Result<(), Error> {
    if accepted.contains(&answer.status.as_u16()) {
        Ok(())
    } else {
        Err(malformed(
            format!("unexpected success status {}", answer.status.as_u16()),
            &answer.body,
        ))
    }
}

/// The API's error message: top-level string `error`, or `error.message`, or `""`.
fn error_message(body: &[u8]) -> String {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => match map.get("error") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(e)) => e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            _ => map
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        },
        _ => String::new(),
    };
    message.chars().take(MESSAGE_CHARS).collect()
}

fn header_date(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let raw = headers.get(DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(raw.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// `Retry-After` as seconds or an HTTP date (relative to `now`).
fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = raw.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).ok())
            .flatten();
    }
    let at = DateTime::parse_from_rfc2822(raw).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

impl VobizApi for Client {
    fn auth_id(&self) -> &str {
        &self.inner.auth_id
    }

    async fn list_live(&self) -> Result<Fetched<Vec<CallUuid>>, Error> {
        self.get_list("live").await
    }

    async fn list_queued(&self) -> Result<Fetched<Vec<CallUuid>>, Error> {
        self.get_list("queued").await
    }

    async fn get_live(&self, uuid: &CallUuid) -> Result<Fetched<Call>, Error> {
        self.get_detail(Lane::Discover, uuid, "live").await
    }

    async fn get_queued(&self, uuid: &CallUuid) -> Result<Fetched<Call>, Error> {
        self.get_detail(Lane::Discover, uuid, "queued").await
    }

    async fn probe(&self, at: DateTime<Utc>) -> Result<Fetched<Result<(), Error>>, Error> {
        let answer = self
            .exchange(
                Lane::Discover,
                Some(at),
                Method::GET,
                self.inner.calls_url.clone(),
                &[("status", "live"), ("limit", "1")],
                None,
            )
            .await?;
        let outcome = if answer.status.is_success() {
            Ok(())
        } else {
            // Still maps a 429 onto the account's pause.
            Err(self.status_error(&answer))
        };
        Ok(answer.fetched(outcome))
    }

    async fn reread(&self, uuid: &CallUuid, queued: bool) -> Result<Fetched<Call>, Error> {
        let status = if queued { "queued" } else { "live" };
        self.get_detail(Lane::Enforce, uuid, status).await
    }

    async fn get_cdr(&self, uuid: &CallUuid) -> Result<Fetched<Cdr>, Error> {
        let answer = self
            .send(
                Lane::Discover,
                Method::GET,
                self.call_url(uuid, ""),
                &[],
                None,
            )
            .await?;
        expect_status(&answer, &[200])?;
        let cdr = parse::parse_cdr(&answer.body, uuid, self.inner.zone)?;
        Ok(answer.fetched(cdr))
    }

    async fn hangup(&self, uuid: &CallUuid) -> Result<Fetched<()>, Error> {
        let answer = self
            .send(
                Lane::Enforce,
                Method::DELETE,
                self.call_url(uuid, ""),
                &[],
                None,
            )
            .await?;
        expect_status(&answer, &[200, 202, 204])?;
        Ok(answer.fetched(()))
    }

    async fn speak(
        &self,
        uuid: &CallUuid,
        text: &str,
        legs: SpeakLegs,
    ) -> Result<Fetched<()>, Error> {
        let legs = match legs {
            SpeakLegs::ALeg => "aleg",
            SpeakLegs::BLeg => "bleg",
            SpeakLegs::Both => "both",
        };
        let body = serde_json::json!({ "text": text, "legs": legs });
        let answer = self
            .send(
                Lane::Enforce,
                Method::POST,
                self.call_url(uuid, "Speak/"),
                &[],
                Some(body),
            )
            .await?;
        expect_status(&answer, &[200, 202])?;
        Ok(answer.fetched(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_either_documented_shape() {
        assert_eq!(
            error_message(br#"{"api_id":"x","error":"bad legs"}"#),
            "bad legs"
        );
        assert_eq!(
            error_message(br#"{"status":"error","error":{"code":"E1","message":"no balance"}}"#),
            "no balance"
        );
        assert_eq!(error_message(b""), "");
        assert_eq!(error_message(b"<html>"), "");
        assert_eq!(error_message(br#"{"error":7}"#), "");
        assert_eq!(error_message("x".repeat(500).as_bytes()), "");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(2)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Thu, 01 Jan 2026 00:00:05 GMT"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(5)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn echoed_tokens_are_scrubbed_from_the_body() {
        // Raw and JSON-escaped echoes both go.
        let token = "ab\"cd";
        let body = br#"{"error":"bad token ab\"cd","raw":ab"cd}"#;
        assert_eq!(
            String::from_utf8(scrub_body(body, token)).unwrap(),
            r#"{"error":"bad token [redacted]","raw":[redacted]}"#
        );
        assert_eq!(scrub_body(b"abc", ""), b"abc");
        assert_eq!(
            scrub_body(b"xxsecretxxsecret", "secret"),
            b"xx[redacted]xx[redacted]"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let config = ClientConfig::new(
            "http://127.0.0.1:1/api/v1",
            "MA123",
            Secret::new("very-secret-token"),
            Arc::new(crate::clock::SystemClock),
        );
        assert!(!format!("{config:?}").contains("very-secret-token"));
        let client = Client::new(config).unwrap();
        assert!(!format!("{client:?}").contains("very-secret-token"));
    }

    #[test]
    fn bad_base_url_or_auth_id_is_refused() {
        let clock: SharedClock = Arc::new(crate::clock::SystemClock);
        let bad_url = ClientConfig::new("ftp://x", "MA1", Secret::new("t"), clock.clone());
        assert!(Client::new(bad_url).is_err());
        let bad_id = ClientConfig::new("http://x/api/v1", "MA/../x", Secret::new("t"), clock);
        assert!(Client::new(bad_id).is_err());
    }
}
