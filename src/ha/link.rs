//! One database connection that mends itself: connected on first use,
//! every use bounded by a timeout, and dropped after any error so that the
//! next use connects afresh (a restarted server, a dead TCP connection).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::db::{connect, HaError};
use crate::vobiz::Secret;

/// A lazily (re)connected client, used by one task at a time.
pub struct Link {
    url: Secret,
    dead_after: Duration,
    client: Mutex<Option<Client>>,
}

/// Why a use of the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The database answered with an error, or the connection failed.
    #[error(transparent)]
    Db(#[from] HaError),
    /// No answer within the bound.
    #[error("the HA database did not answer within {0:?}")]
    Timeout(Duration),
}

impl Link {
    /// A link to `url` (not connected yet); `dead_after` bounds connecting
    /// and how long a silent connection lives (TCP user timeout).
    pub fn new(url: Secret, dead_after: Duration) -> Self {
        Self {
            url,
            dead_after,
            client: Mutex::new(None),
        }
    }

    /// Runs `work` on the connection within `limit`, connecting first if
    /// needed. On any error or timeout the connection is dropped.
    pub async fn run<T>(
        &self,
        limit: Duration,
        work: impl AsyncFnOnce(&mut Client) -> Result<T, HaError>,
    ) -> Result<T, LinkError> {
        let mut slot = match tokio::time::timeout(limit, self.client.lock()).await {
            Ok(slot) => slot,
            Err(_) => return Err(LinkError::Timeout(limit)),
        };
        let result = tokio::time::timeout(limit, async {
            let client = match slot.take() {
                Some(client) if !client.is_closed() => client,
                _ => connect(self.url.expose(), self.dead_after).await?,
            };
            work(slot.insert(client)).await
        })
        .await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                *slot = None;
                Err(LinkError::Db(error))
            }
            Err(_) => {
                *slot = None;
                Err(LinkError::Timeout(limit))
            }
        }
    }
}

/// A few links used in turn, so that hangups falling due together record
/// their intents side by side instead of queueing behind one connection
/// (PostgreSQL commits them together).
pub struct Links {
    links: Vec<Link>,
    next: AtomicUsize,
}

impl Links {
    /// `count` links (at least one) to `url`.
    pub fn new(url: &Secret, dead_after: Duration, count: usize) -> Self {
        Self {
            links: (0..count.max(1))
                .map(|_| Link::new(url.clone(), dead_after))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// [`Link::run`] on the next link in turn.
    pub async fn run<T>(
        &self,
        limit: Duration,
        work: impl AsyncFnOnce(&mut Client) -> Result<T, HaError>,
    ) -> Result<T, LinkError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.links.len();
        self.links[index].run(limit, work).await
    }
}
