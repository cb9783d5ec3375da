//! The engine's requests with their retry rules (backoff with full jitter,
//! 429 pauses the account, 404 is success): re-reading a call
//! before acting, and hanging it up with backoff.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::call::{Call, CallUuid};
use crate::config::RetrySettings;
use crate::vobiz::{Error, Fetched, VobizApi};

use super::backoff::Jitter;

/// How one hangup (of one leg) ended.
#[derive(Debug, Clone, PartialEq)]
pub enum HangupResult {
    /// The API confirmed it; `at` is when the successful DELETE was sent.
    Done {
        /// Requests made.
        attempts: u32,
        /// When the confirmed DELETE was sent.
        at: DateTime<Utc>,
    },
    /// The call was already gone (404, or gone on the re-read after a
    /// DELETE whose answer was lost).
    Gone {
        /// Requests made.
        attempts: u32,
        /// Why we think so.
        reason: String,
    },
    /// Attempts ran out, or the API refused for good.
    Failed {
        /// Requests made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
    /// 401/403: the account's credentials no longer work.
    AuthFailed {
        /// Requests made.
        attempts: u32,
        /// The error.
        reason: String,
    },
}

/// Shared retry settings and jitter source.
#[derive(Debug)]
pub struct Retrier {
    /// `[retry]`.
    pub settings: RetrySettings,
    /// Full-jitter source (seeded in tests).
    pub jitter: Mutex<Jitter>,
}

impl Retrier {
    /// Waits the backoff after `failed` failed attempts, or the server's
    /// `Retry-After` (capped at `max_backoff`) after a 429.
    async fn wait(&self, failed: u32, error: &Error) {
        let delay = match error {
            Error::RateLimited {
                retry_after: Some(after),
            } => (*after).min(self.settings.max_backoff),
            _ => match self.jitter.lock() {
                Ok(mut jitter) => jitter.backoff(failed, &self.settings),
                Err(_) => self.settings.initial_backoff,
            },
        };
        tokio::time::sleep(delay).await;
    }
}

/// Reads the call's current details, retrying transient errors (5xx,
/// timeouts, connection errors, malformed or truncated answers) with the
/// backoff. 404 and permanent errors come back at once.
pub async fn reread<A: VobizApi>(
    api: &A,
    uuid: &CallUuid,
    queued: bool,
    retrier: &Retrier,
) -> (Result<Fetched<Call>, Error>, u32) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = api.reread(uuid, queued).await;
        match result {
            Err(error) if error.is_retryable() && attempts < retrier.settings.max_attempts => {
                retrier.wait(attempts, &error).await;
            }
            other => return (other, attempts),
        }
    }
}

/// Hangs up one leg with retries: 5xx, timeouts, connection errors and
/// malformed answers back off; 429 waits `Retry-After`; 404 is success; 401/403 and other 4xx stop.
/// After a DELETE whose answer was lost (timeout, connection error) the call
/// is re-read before any further DELETE, so it is never ended twice.
pub async fn hang_up<A: VobizApi>(api: &A, uuid: &CallUuid, retrier: &Retrier) -> HangupResult {
    let max_attempts = retrier.settings.max_attempts.max(1);
    // `max_attempts` bounds the DELETEs and, separately, the re-reads; the
    // audit counts every request.
    let (mut deletes, mut rereads) = (0u32, 0u32);
    let mut answer_lost = false;
    loop {
        if answer_lost {
            rereads += 1;
            let attempts = deletes + rereads;
            let result = api.reread(uuid, false).await;
            match result {
                Ok(_) => answer_lost = false,
                Err(Error::NotFound) => {
                    return HangupResult::Gone {
                        attempts,
                        reason: "a DELETE's answer was lost and the call is no longer live"
                            .to_owned(),
                    }
                }
                Err(error @ (Error::Unauthorized | Error::Forbidden)) => {
                    return HangupResult::AuthFailed {
                        attempts,
                        reason: error.to_string(),
                    }
                }
                Err(error) => {
                    if rereads >= max_attempts {
                        return HangupResult::Failed {
                            attempts,
                            reason: format!("re-read before retrying failed: {error}"),
                        };
                    }
                    retrier.wait(rereads, &error).await;
                    continue;
                }
            }
        }
        deletes += 1;
        let attempts = deletes + rereads;
        let result = api.hangup(uuid).await;
        let error = match result {
            Ok(fetched) => {
                return HangupResult::Done {
                    attempts,
                    at: fetched.sent_at,
                }
            }
            Err(Error::NotFound) => {
                return HangupResult::Gone {
                    attempts,
                    reason: "the API answered 404: already gone".to_owned(),
                }
            }
            Err(error @ (Error::Unauthorized | Error::Forbidden)) => {
                return HangupResult::AuthFailed {
                    attempts,
                    reason: error.to_string(),
                }
            }
            Err(error) if !error.is_retryable() => {
                return HangupResult::Failed {
                    attempts,
                    reason: error.to_string(),
                }
            }
            Err(error) => error,
        };
        if matches!(
            error,
            Error::Timeout | Error::Transport(_) | Error::Malformed { .. }
        ) {
            answer_lost = true;
        }
        if deletes >= max_attempts {
            return HangupResult::Failed {
                attempts,
                reason: format!("{deletes} DELETEs, last: {error}"),
            };
        }
        retrier.wait(deletes, &error).await;
    }
}
