//! The Vobiz call API: a typed client behind the small [`VobizApi`] trait,
//! the parsers for both documented response shapes, credentials, and the
//! [`Metered`] wrapper that counts requests.

mod client;
mod metered;
mod parse;
mod rate;
mod secret;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::call::{Call, CallUuid};

pub use client::{Client, ClientConfig};
pub use metered::Metered;
pub use parse::{
    parse_call_detail, parse_call_list, parse_call_list_entries, parse_cdr, parse_timestamp,
    CallList, Cdr, SkippedEntries,
};
pub use secret::Secret;

/// What went wrong talking to the API. The engine's retry decision is a
/// `match` on this.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// 401: the credentials were refused.
    #[error("the API refused the credentials (401)")]
    Unauthorized,
    /// 403: the credentials may not do this.
    #[error("the API forbade the request (403)")]
    Forbidden,
    /// 404: no such (live) call.
    #[error("not found (404)")]
    NotFound,
    /// 429: slow down; `retry_after` from the header when it had one.
    #[error("rate limited (429), retry after {retry_after:?}")]
    RateLimited {
        /// The `Retry-After` header, when present and readable.
        retry_after: Option<Duration>,
    },
    /// 400, 402, 405, 409, 422 and other 4xx: retrying will not help.
    #[error("the API rejected the request ({status}): {message}")]
    Rejected {
        /// The HTTP status code.
        status: u16,
        /// The API's error message, if it gave one (truncated).
        message: String,
    },
    /// 5xx: the server failed; worth retrying.
    #[error("server error ({0})")]
    Server(u16),
    /// The request did not complete within the configured timeout.
    #[error("the request timed out")]
    Timeout,
    /// Connection refused, reset, DNS failure, TLS failure, ...
    #[error("transport error: {0}")]
    Transport(String),
    /// The answer was not the JSON we expected.
    #[error("malformed response: {reason}; body starts {excerpt:?}")]
    Malformed {
        /// What was wrong with it.
        reason: String,
        /// The first bytes of the body, for the log.
        excerpt: String,
    },
}

impl Error {
    /// Whether the same request may succeed if sent again later. A
    /// malformed or truncated answer is transient (a proxy or a load
    /// balancer cut it short), so it is retried like a 5xx.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server(_)
                | Self::Timeout
                | Self::Transport(_)
                | Self::Malformed { .. }
        )
    }
}

/// A successful answer with what the HTTP layer told us about time.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched<T> {
    /// The parsed answer.
    pub value: T,
    /// The server's `Date` header, if present and valid (whole seconds).
    pub server_date: Option<DateTime<Utc>>,
    /// Our wall clock when the request was sent.
    pub sent_at: DateTime<Utc>,
    /// Our wall clock when the answer arrived.
    pub received_at: DateTime<Utc>,
}

/// The words `legs` takes in a Speak request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeakLegs {
    /// The A-leg only.
    ALeg,
    /// The B-leg only.
    BLeg,
    /// Both legs.
    Both,
}

/// The calls callwarden makes. The engine is generic over this so that the
/// same code runs against the real API and the simulator.
pub trait VobizApi: Send + Sync + 'static {
    /// The account's `auth_id` (for logs and labels; not secret).
    fn auth_id(&self) -> &str;

    /// `GET /Call/?status=live`: UUIDs of all live calls.
    fn list_live(&self) -> impl Future<Output = Result<Fetched<Vec<CallUuid>>, Error>> + Send;

    /// `GET /Call/?status=queued`: UUIDs of queued (not yet answered) calls.
    fn list_queued(&self) -> impl Future<Output = Result<Fetched<Vec<CallUuid>>, Error>> + Send;

    /// `GET /Call/{uuid}/?status=live`: details of one live call.
    fn get_live(
        &self,
        uuid: &CallUuid,
    ) -> impl Future<Output = Result<Fetched<Call>, Error>> + Send;

    /// `GET /Call/{uuid}/?status=queued`: details of one queued call.
    fn get_queued(
        &self,
        uuid: &CallUuid,
    ) -> impl Future<Output = Result<Fetched<Call>, Error>> + Send;

    /// A cheap read (`GET /Call/?status=live&limit=1`, the list if the API
    /// ignores `limit`) sent for its `Date` header at the local instant `at`,
    /// or a whole number of seconds later if the budget holds it past `at`.
    /// `Ok` whenever an answer arrived, whatever its status (the inner
    /// result): every answer carries the server's clock.
    fn probe(
        &self,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Fetched<Result<(), Error>>, Error>> + Send;

    /// The same read as [`Self::get_live`] (or [`Self::get_queued`] when
    /// `queued`), for a call about to be acted on: it takes the account's
    /// next request token ahead of any waiting discovery read.
    fn reread(
        &self,
        uuid: &CallUuid,
        queued: bool,
    ) -> impl Future<Output = Result<Fetched<Call>, Error>> + Send;

    /// `GET /Call/{uuid}/`: the final record of an ended call.
    fn get_cdr(&self, uuid: &CallUuid) -> impl Future<Output = Result<Fetched<Cdr>, Error>> + Send;

    /// `DELETE /Call/{uuid}/`: hang up (enforcement lane, like [`Self::reread`]).
    /// 404 comes back as [`Error::NotFound`].
    fn hangup(&self, uuid: &CallUuid) -> impl Future<Output = Result<Fetched<()>, Error>> + Send;

    /// `POST /Call/{uuid}/Speak/`: speak `text` on the call (enforcement lane).
    fn speak(
        &self,
        uuid: &CallUuid,
        text: &str,
        legs: SpeakLegs,
    ) -> impl Future<Output = Result<Fetched<()>, Error>> + Send;
}
