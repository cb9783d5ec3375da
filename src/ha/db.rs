//! The database side of HA: connection, lease, fenced intents, members.
//!
//! Every time that matters is the database's clock (`clock_timestamp()`),
//! so members with skewed clocks still agree on who holds a lease.

use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

/// What can go wrong talking to the HA database.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// The URL could not be parsed; the URL itself is not shown (it may
    /// hold a password).
    #[error("invalid PostgreSQL URL (not shown: it may hold a password): {0}")]
    BadUrl(String),
    /// A query or the connection failed.
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The database was migrated by a newer callwarden.
    #[error("the HA database schema is version {found}, newer than this build knows ({known}); upgrade callwarden")]
    SchemaTooNew {
        /// The version found in `schema_version`.
        found: i32,
        /// The newest version this build has.
        known: i32,
    },
}

/// Connects without TLS, with TCP keepalives and a TCP user timeout so a
/// silently dead connection (host gone, cable pulled) errors within about
/// `dead_after` instead of hanging for the kernel's hours-long default.
/// The connection task runs on the current tokio runtime until it fails.
pub async fn connect(url: &str, dead_after: Duration) -> Result<Client, HaError> {
    let mut config: Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| HaError::BadUrl(e.to_string()))?;
    let probe = (dead_after / 4).max(Duration::from_secs(1));
    config
        .application_name("callwarden")
        .connect_timeout(dead_after)
        .keepalives(true)
        .keepalives_idle(probe)
        .keepalives_interval(probe)
        .keepalives_retries(3)
        .tcp_user_timeout(dead_after);
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            // The next query on the client fails and its caller reports
            // that; this line only dates the loss for debugging.
            tracing::debug!(error = %e, "HA database connection ended");
        }
    });
    Ok(client)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The answer to one lease acquire-or-renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// This member holds the lease for another `ttl`, at this epoch.
    Held {
        /// The lease's epoch; it grows on every change of holder.
        epoch: i64,
    },
    /// Another member holds an unexpired lease.
    Other {
        /// That member's `node_id`.
        holder: String,
        /// Its epoch.
        epoch: i64,
    },
}

/// Acquires or renews `account`'s lease for `holder` for `ttl`, in one
/// upsert on the database clock. It succeeds when the row is new, already
/// ours, or expired; the epoch grows by one when the holder changes, so an
/// intent recorded under an older epoch can never pass the fence again.
pub async fn acquire_lease(
    client: &Client,
    account: &str,
    holder: &str,
    ttl: Duration,
) -> Result<LeaseOutcome, HaError> {
    let ttl_ms = millis(ttl);
    let row = client
        .query_opt(
            "INSERT INTO ha_lease AS l (account, holder, epoch, expires_at)
             VALUES ($1, $2, 1, clock_timestamp() + $3::bigint * interval '1 millisecond')
             ON CONFLICT (account) DO UPDATE
                SET holder = EXCLUDED.holder,
                    epoch = CASE WHEN l.holder = EXCLUDED.holder THEN l.epoch ELSE l.epoch + 1 END,
                    expires_at = EXCLUDED.expires_at
                WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp()
             RETURNING epoch",
            &[&account, &holder, &ttl_ms],
        )
        .await?;
    if let Some(row) = row {
        return Ok(LeaseOutcome::Held { epoch: row.get(0) });
    }
    let row = client
        .query_one(
            "SELECT holder, epoch FROM ha_lease WHERE account = $1",
            &[&account],
        )
        .await?;
    Ok(LeaseOutcome::Other {
        holder: row.get(0),
        epoch: row.get(1),
    })
}

/// Gives the lease up at once (clean shutdown, hand-over to the preferred
/// member), if `holder` still holds it at `epoch`.
pub async fn release_lease(
    client: &Client,
    account: &str,
    holder: &str,
    epoch: i64,
) -> Result<bool, HaError> {
    let n = client
        .execute(
            "UPDATE ha_lease SET expires_at = clock_timestamp()
             WHERE account = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()",
            &[&account, &holder, &epoch],
        )
        .await?;
    Ok(n == 1)
}

/// The answer to one fenced intent insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentOutcome {
    /// The intent is committed: the DELETE may be sent.
    Recorded {
        /// Its row id, for recording the outcome.
        id: i64,
    },
    /// The decision for this call and action is already taken and its
    /// outcome says the call ended (`ok`, `gone`): no DELETE from here.
    Duplicate {
        /// Who recorded it.
        holder: String,
        /// Its outcome.
        outcome: String,
    },
    /// The lease is not ours at this epoch, or has expired: no DELETE.
    Fenced,
}

/// Records the intent to act on `call_uuid`, only while `holder` holds
/// `account`'s lease at `epoch` and it has not expired. The lease row is
/// locked `FOR SHARE` for the transaction, so a takeover (which updates the
/// row) waits until this commits, and sees the intent when it loads them.
///
/// There is one row per call and action. A row whose outcome is not known
/// (a leader died between intent and answer) or `failed` is claimed afresh
/// under the caller's lease: the caller has re-read the call and found it
/// still live, and every DELETE of an ended call answers 404, so at most one
/// is ever answered 2xx. A row whose outcome says the call ended is final.
pub async fn insert_intent(
    client: &mut Client,
    account: &str,
    holder: &str,
    epoch: i64,
    call_uuid: &str,
    action: &str,
) -> Result<IntentOutcome, HaError> {
    let tx = client.transaction().await?;
    let lease = tx
        .query_opt(
            "SELECT 1 FROM ha_lease
             WHERE account = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()
             FOR SHARE",
            &[&account, &holder, &epoch],
        )
        .await?;
    if lease.is_none() {
        tx.rollback().await?;
        return Ok(IntentOutcome::Fenced);
    }
    let row = tx
        .query_opt(
            "INSERT INTO ha_decision AS d (account, call_uuid, action, holder, epoch, created_at)
             VALUES ($1, $2, $3, $4, $5, clock_timestamp())
             ON CONFLICT (call_uuid, action) DO UPDATE
                SET account = EXCLUDED.account, holder = EXCLUDED.holder, epoch = EXCLUDED.epoch,
                    created_at = EXCLUDED.created_at, outcome = NULL, outcome_at = NULL
                WHERE d.outcome IS NULL OR d.outcome = 'failed'
             RETURNING id",
            &[&account, &call_uuid, &action, &holder, &epoch],
        )
        .await?;
    let outcome = match row {
        Some(row) => IntentOutcome::Recorded { id: row.get(0) },
        None => {
            let row = tx
                .query_one(
                    "SELECT holder, coalesce(outcome, '') FROM ha_decision
                     WHERE call_uuid = $1 AND action = $2",
                    &[&call_uuid, &action],
                )
                .await?;
            IntentOutcome::Duplicate {
                holder: row.get(0),
                outcome: row.get(1),
            }
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Records what the DELETE for intent `id` came to (`ok`, `gone`,
/// `failed`), unless another holder or epoch has claimed the row since.
pub async fn record_outcome(
    client: &Client,
    id: i64,
    holder: &str,
    epoch: i64,
    outcome: &str,
) -> Result<bool, HaError> {
    let n = client
        .execute(
            "UPDATE ha_decision SET outcome = $4, outcome_at = clock_timestamp()
             WHERE id = $1 AND holder = $2 AND epoch = $3",
            &[&id, &holder, &epoch, &outcome],
        )
        .await?;
    Ok(n == 1)
}

/// Closes intents left without an outcome by an earlier leader whose calls
/// have ended since (`gone`): they need nothing more.
pub async fn close_ended(client: &Client, ids: &[i64]) -> Result<u64, HaError> {
    Ok(client
        .execute(
            "UPDATE ha_decision SET outcome = 'gone', outcome_at = clock_timestamp()
             WHERE id = ANY($1) AND outcome IS NULL",
            &[&ids],
        )
        .await?)
}

/// Marks `node_id` live for `ttl` on the database clock.
pub async fn heartbeat(client: &Client, node_id: &str, ttl: Duration) -> Result<(), HaError> {
    let ttl_ms = millis(ttl);
    client
        .execute(
            "INSERT INTO ha_member (node_id, last_seen, expires_at)
             VALUES ($1, clock_timestamp(), clock_timestamp() + $2::bigint * interval '1 millisecond')
             ON CONFLICT (node_id) DO UPDATE
                SET last_seen = EXCLUDED.last_seen, expires_at = EXCLUDED.expires_at",
            &[&node_id, &ttl_ms],
        )
        .await?;
    Ok(())
}

/// The members whose heartbeat has not expired, sorted by `node_id`.
pub async fn live_members(client: &Client) -> Result<Vec<String>, HaError> {
    let rows = client
        .query(
            "SELECT node_id FROM ha_member WHERE expires_at > clock_timestamp() ORDER BY node_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// An intent whose outcome is not recorded yet: a new leader re-reads the
/// call before doing anything about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIntent {
    /// The intent's row id.
    pub id: i64,
    /// The call it is about.
    pub call_uuid: String,
    /// The action (e.g. "hangup").
    pub action: String,
    /// The holder that recorded it.
    pub holder: String,
    /// The epoch it was recorded under.
    pub epoch: i64,
}

/// The intents of every account without an outcome, oldest first, with
/// their accounts.
pub async fn all_pending_intents(client: &Client) -> Result<Vec<(String, PendingIntent)>, HaError> {
    let rows = client
        .query(
            "SELECT account, id, call_uuid, action, holder, epoch FROM ha_decision
             WHERE outcome IS NULL ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let intent = PendingIntent {
                id: r.get(1),
                call_uuid: r.get(2),
                action: r.get(3),
                holder: r.get(4),
                epoch: r.get(5),
            };
            (r.get(0), intent)
        })
        .collect())
}

/// The intents of `account` without an outcome, oldest first.
pub async fn pending_intents(
    client: &Client,
    account: &str,
) -> Result<Vec<PendingIntent>, HaError> {
    let rows = client
        .query(
            "SELECT id, call_uuid, action, holder, epoch FROM ha_decision
             WHERE account = $1 AND outcome IS NULL ORDER BY id",
            &[&account],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PendingIntent {
            id: r.get(0),
            call_uuid: r.get(1),
            action: r.get(2),
            holder: r.get(3),
            epoch: r.get(4),
        })
        .collect())
}

/// Records a pardon, until `until_ms` (Unix milliseconds) or for good
/// (`None`). Not fenced: sparing a call is always safe, whoever writes it.
pub async fn save_pardon(
    client: &Client,
    account: &str,
    call_uuid: &str,
    until_ms: Option<i64>,
) -> Result<(), HaError> {
    client
        .execute(
            "INSERT INTO ha_pardon (account, call_uuid, until_ms) VALUES ($1, $2, $3)
             ON CONFLICT (account, call_uuid) DO UPDATE SET until_ms = EXCLUDED.until_ms",
            &[&account, &call_uuid, &until_ms],
        )
        .await?;
    Ok(())
}

/// Every pardon of `account`: call and end (Unix ms; `None` = for good).
pub async fn pardons(
    client: &Client,
    account: &str,
) -> Result<Vec<(String, Option<i64>)>, HaError> {
    let rows = client
        .query(
            "SELECT call_uuid, until_ms FROM ha_pardon WHERE account = $1 ORDER BY call_uuid",
            &[&account],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Records when a call was first seen in progress, keeping the earliest
/// time any member reported, and returns that earliest time (Unix ms).
pub async fn record_first_seen(
    client: &Client,
    account: &str,
    call_uuid: &str,
    at_ms: i64,
) -> Result<i64, HaError> {
    let row = client
        .query_one(
            "INSERT INTO ha_first_seen AS f (account, call_uuid, first_seen_ms) VALUES ($1, $2, $3)
             ON CONFLICT (account, call_uuid)
                DO UPDATE SET first_seen_ms = LEAST(f.first_seen_ms, EXCLUDED.first_seen_ms)
             RETURNING first_seen_ms",
            &[&account, &call_uuid, &at_ms],
        )
        .await?;
    Ok(row.get(0))
}

/// [`record_first_seen`] for many calls in one statement.
pub async fn record_first_seen_many(
    client: &Client,
    account: &str,
    calls: &[(String, i64)],
) -> Result<(), HaError> {
    let uuids: Vec<&str> = calls.iter().map(|(u, _)| u.as_str()).collect();
    let times: Vec<i64> = calls.iter().map(|(_, t)| *t).collect();
    client
        .execute(
            "INSERT INTO ha_first_seen AS f (account, call_uuid, first_seen_ms)
             SELECT $1, u, t FROM unnest($2::text[], $3::bigint[]) AS x(u, t)
             ON CONFLICT (account, call_uuid)
                DO UPDATE SET first_seen_ms = LEAST(f.first_seen_ms, EXCLUDED.first_seen_ms)",
            &[&account, &uuids, &times],
        )
        .await?;
    Ok(())
}

/// Every first-seen time of `account` (call, Unix ms).
pub async fn first_seen_times(
    client: &Client,
    account: &str,
) -> Result<Vec<(String, i64)>, HaError> {
    let rows = client
        .query(
            "SELECT call_uuid, first_seen_ms FROM ha_first_seen WHERE account = $1 ORDER BY call_uuid",
            &[&account],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// One account's lease as the database has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The account.
    pub account: String,
    /// Who holds (or last held) it.
    pub holder: String,
    /// Its epoch.
    pub epoch: i64,
    /// When it expires (Unix ms, database clock).
    pub expires_at_ms: i64,
    /// How long ago it expired (ms); negative while it is held.
    pub expired_for_ms: i64,
}

/// Every lease, by account.
pub async fn leases(client: &Client) -> Result<Vec<Lease>, HaError> {
    let rows = client
        .query(
            "SELECT account, holder, epoch,
                    (extract(epoch FROM expires_at) * 1000)::bigint,
                    (extract(epoch FROM clock_timestamp() - expires_at) * 1000)::bigint
             FROM ha_lease ORDER BY account",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Lease {
            account: r.get(0),
            holder: r.get(1),
            epoch: r.get(2),
            expires_at_ms: r.get(3),
            expired_for_ms: r.get(4),
        })
        .collect())
}

/// One member as the database has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its `node_id`.
    pub node_id: String,
    /// Its last heartbeat (Unix ms, database clock).
    pub last_seen_ms: i64,
    /// Whether its heartbeat has not expired.
    pub live: bool,
}

/// Every member, live or not, by `node_id`.
pub async fn members(client: &Client) -> Result<Vec<Member>, HaError> {
    let rows = client
        .query(
            "SELECT node_id, (extract(epoch FROM last_seen) * 1000)::bigint,
                    expires_at > clock_timestamp()
             FROM ha_member ORDER BY node_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Member {
            node_id: r.get(0),
            last_seen_ms: r.get(1),
            live: r.get(2),
        })
        .collect())
}

/// Takes `node_id` out of the members at once (a clean stop), so the
/// others rebalance without waiting for its heartbeat to expire.
pub async fn leave(client: &Client, node_id: &str) -> Result<(), HaError> {
    client
        .execute("DELETE FROM ha_member WHERE node_id = $1", &[&node_id])
        .await?;
    Ok(())
}
