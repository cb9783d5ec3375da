//! The per-node coordinator: every `renew_every` it heart-beats in the
//! members table, reads the members and leases, and for each account
//! renews, acquires, hands over or waits ([`super::plan`]). It publishes
//! each account's role for the daemon, which runs an account's engine only
//! while this node leads it, and it is the self-fence every hangup checks.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::db::{self, LeaseOutcome};
use super::fence::SelfFence;
use super::link::{Link, LinkError, Links};
use super::plan::{self, LeaseView, Step};
use super::rendezvous::preferred_member;
use super::schema;
use crate::engine::{HaRole, HaStatus};
use crate::metrics::{AccountLabel, Metrics};
use crate::vobiz::Secret;

/// How long after a lease's expiry a waiting member looks again: the
/// database clock and this host's timers need not agree to the millisecond.
const EXPIRY_SLACK_MS: i64 = 50;

/// Connections of the data path (intents, outcomes, pardons, takeovers).
const DATA_CONNECTIONS: usize = 4;

/// What the coordinator needs from `[ha]`, resolved.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// This member's name.
    pub node_id: String,
    /// The database URL (never shown).
    pub url: Secret,
    /// How long a renewed lease lasts.
    pub lease_ttl: Duration,
    /// How often leases are renewed and members heart-beat.
    pub renew_every: Duration,
}

/// The lease this node holds on one account, as far as it knows.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    /// When the renewal that granted it was sent (the self-fence counts
    /// from here).
    sent: Instant,
}

/// One account's lease state on this node.
struct AccountLease {
    held: Mutex<Option<Held>>,
    role: watch::Sender<HaStatus>,
}

/// This node in the cluster: shared by the coordinator loop, the account
/// supervisors and the fences of running engines.
pub struct Node {
    settings: NodeSettings,
    fence: SelfFence,
    control: Link,
    /// The connections for intents, outcomes, pardons and takeovers, apart
    /// from the coordinator's, so that a burst of hangups never delays a
    /// renewal.
    pub data: Links,
    accounts: BTreeMap<String, AccountLease>,
    metrics: Arc<Metrics>,
    /// Whether this run has brought the schema up to date yet.
    migrated: AtomicBool,
}

/// What one tick decided for one account.
enum Decided {
    Lead {
        epoch: i64,
        sent: Instant,
    },
    Follow {
        leader: Option<String>,
        epoch: Option<i64>,
    },
}

impl Node {
    /// A node for `accounts`; nothing is done until [`Node::run`].
    pub fn new(settings: NodeSettings, accounts: &[String], metrics: Arc<Metrics>) -> Arc<Self> {
        let accounts = accounts
            .iter()
            .map(|name| {
                let (role, _) = watch::channel(HaStatus {
                    node_id: settings.node_id.clone(),
                    role: HaRole::NoDatabase,
                    leader: None,
                    epoch: None,
                });
                metrics.leader.get_or_create(&label(name)).set(0);
                metrics.lease_epoch.get_or_create(&label(name)).set(0);
                let lease = AccountLease {
                    held: Mutex::new(None),
                    role,
                };
                (name.clone(), lease)
            })
            .collect();
        metrics.ha_database_up.set(0);
        // Dead connections must be noticed before the lease runs out.
        let dead_after = settings.lease_ttl;
        Arc::new(Self {
            fence: SelfFence::new(settings.lease_ttl),
            control: Link::new(settings.url.clone(), dead_after),
            data: Links::new(&settings.url, dead_after, DATA_CONNECTIONS),
            settings,
            accounts,
            metrics,
            migrated: AtomicBool::new(false),
        })
    }

    /// This member's name.
    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// The bound on one database request of the data path.
    pub fn request_limit(&self) -> Duration {
        self.settings.renew_every
    }

    /// The role of this node for `account`, updated every tick.
    pub fn role(&self, account: &str) -> Option<watch::Receiver<HaStatus>> {
        self.accounts.get(account).map(|a| a.role.subscribe())
    }

    /// Whether this node may act on `account` under `epoch` right now: it
    /// holds the lease at that epoch and its self-fence has not closed.
    pub fn holds(&self, account: &str, epoch: i64) -> bool {
        let Some(lease) = self.accounts.get(account) else {
            return false;
        };
        let held = *lock(&lease.held);
        held.is_some_and(|h| {
            h.epoch == epoch && self.fence.may_enforce(Instant::now(), Some(h.sent))
        })
    }

    /// Runs the ticks until `shutdown` resolves. Leases are kept until
    /// [`Node::leave`], so engines can finish their hangups first.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut database_up: Option<bool> = None;
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(next) => {}
            }
            let started = tokio::time::Instant::now();
            let result = self.tick().await;
            // Every `renew_every`, or sooner when a lease this node may
            // take runs out before that, so a failover waits for the
            // lease and not for the next tick too.
            let wait = result.as_ref().ok().copied().flatten();
            next = started
                + wait.map_or(self.settings.renew_every, |w| {
                    w.min(self.settings.renew_every)
                });
            let result = result.map(|_| ());
            // Logged when it changes, not at every tick of an outage.
            match (&result, database_up) {
                (Ok(()), Some(true)) | (Err(_), Some(false)) => {}
                (Ok(()), _) => tracing::info!(node_id = %self.node_id(), "HA database reachable"),
                (Err(error), _) => tracing::warn!(node_id = %self.node_id(), %error,
                    "HA database unreachable: accounts led here stop at their self-fence"),
            }
            database_up = Some(result.is_ok());
        }
    }

    /// One round: heartbeat, then a step per account. Returns how soon a
    /// lease another member holds runs out, when that is worth waking for.
    async fn tick(&self) -> Result<Option<Duration>, LinkError> {
        let me = self.node_id();
        let ttl = self.settings.lease_ttl;
        let patience_ms = millis(self.settings.renew_every * 2);
        let result = self
            .control
            .run(self.settings.renew_every, async |client| {
                if !self.migrated.load(Ordering::Relaxed) {
                    let version = schema::migrate(client).await?;
                    tracing::info!(version, "HA database schema up to date");
                    self.migrated.store(true, Ordering::Relaxed);
                }
                db::heartbeat(client, me, ttl).await?;
                let members = db::live_members(client).await?;
                let leases = db::leases(client).await?;
                let mut decided = Vec::with_capacity(self.accounts.len());
                let mut wake: Option<Duration> = None;
                for account in self.accounts.keys() {
                    let lease = leases.iter().find(|l| &l.account == account);
                    let view = lease.map(|l| LeaseView {
                        holder: &l.holder,
                        expired_for_ms: l.expired_for_ms,
                    });
                    let preferred = preferred_member(account, &members);
                    let running = lease.filter(|l| l.expired_for_ms < 0);
                    let follow = Decided::Follow {
                        leader: running.map(|l| l.holder.clone()),
                        epoch: lease.map(|l| l.epoch),
                    };
                    let next = match plan::step(me, view, preferred, patience_ms) {
                        Step::Renew | Step::Acquire => {
                            let sent = Instant::now();
                            match db::acquire_lease(client, account, me, ttl).await? {
                                LeaseOutcome::Held { epoch } => Decided::Lead { epoch, sent },
                                LeaseOutcome::Other { holder, epoch } => Decided::Follow {
                                    leader: Some(holder),
                                    epoch: Some(epoch),
                                },
                            }
                        }
                        Step::Release => {
                            // Closed here first, so no hangup starts while
                            // the release is on its way.
                            self.set_held(account, None);
                            if let Some(l) = lease {
                                db::release_lease(client, account, me, l.epoch).await?;
                                tracing::info!(%account, to = preferred.unwrap_or_default(),
                                    epoch = l.epoch, "handing the account over to its preferred member");
                            }
                            Decided::Follow {
                                leader: preferred.map(str::to_owned),
                                epoch: lease.map(|l| l.epoch),
                            }
                        }
                        Step::Wait => follow,
                    };
                    if let Some(l) = lease.filter(|l| l.holder != me) {
                        // Just after it would expire when this member is
                        // the one preferred once the holder is gone, else
                        // after the patience.
                        let others: Vec<&String> =
                            members.iter().filter(|m| **m != l.holder).collect();
                        let next_is_me = preferred_member(account, &others).is_none_or(|p| p == me);
                        let due_ms = if next_is_me { 0 } else { patience_ms };
                        let in_ms = (due_ms - l.expired_for_ms).max(0) + EXPIRY_SLACK_MS;
                        let at = Duration::from_millis(u64::try_from(in_ms).unwrap_or(0));
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                    }
                    decided.push((account.clone(), next));
                }
                Ok((decided, wake))
            })
            .await;
        match result {
            Ok((decided, wake)) => {
                self.metrics.ha_database_up.set(1);
                for (account, next) in decided {
                    self.apply(&account, next);
                }
                Ok(wake)
            }
            Err(error) => {
                self.metrics.ha_database_up.set(0);
                for account in self.accounts.keys() {
                    self.lost_database(account);
                }
                Err(error)
            }
        }
    }

    fn apply(&self, account: &str, next: Decided) {
        let Some(lease) = self.accounts.get(account) else {
            return;
        };
        let before = *lock(&lease.held);
        let status = match next {
            Decided::Lead { epoch, sent } => {
                self.set_held(account, Some(Held { epoch, sent }));
                if before.is_none_or(|h| h.epoch != epoch) {
                    tracing::info!(%account, epoch, node_id = %self.node_id(), "leading the account");
                }
                HaStatus {
                    node_id: self.node_id().to_owned(),
                    role: HaRole::Leader,
                    leader: Some(self.node_id().to_owned()),
                    epoch: Some(epoch),
                }
            }
            Decided::Follow { leader, epoch } => {
                self.set_held(account, None);
                if before.is_some() {
                    tracing::warn!(%account, leader = leader.as_deref().unwrap_or("none yet"),
                        "no longer leading the account: enforcement stops here");
                }
                HaStatus {
                    node_id: self.node_id().to_owned(),
                    role: HaRole::Standby,
                    leader,
                    epoch,
                }
            }
        };
        self.publish(account, status);
    }

    /// The database did not answer: keep leading only until the self-fence.
    fn lost_database(&self, account: &str) {
        let Some(lease) = self.accounts.get(account) else {
            return;
        };
        let held = *lock(&lease.held);
        let mut status = lease.role.borrow().clone();
        match held {
            Some(h) if self.fence.may_enforce(Instant::now(), Some(h.sent)) => {}
            _ => {
                if held.is_some() {
                    tracing::error!(%account, "self-fenced: the lease could not be renewed in time; enforcement stops");
                }
                self.set_held(account, None);
                status.role = HaRole::NoDatabase;
                status.leader = None;
            }
        }
        self.publish(account, status);
    }

    fn set_held(&self, account: &str, held: Option<Held>) {
        if let Some(lease) = self.accounts.get(account) {
            *lock(&lease.held) = held;
            self.metrics
                .leader
                .get_or_create(&label(account))
                .set(i64::from(held.is_some()));
        }
    }

    /// Publishes every tick, changed or not: standbys keep the watchdog fed.
    fn publish(&self, account: &str, status: HaStatus) {
        if let Some(lease) = self.accounts.get(account) {
            if let Some(epoch) = status.epoch {
                self.metrics
                    .lease_epoch
                    .get_or_create(&label(account))
                    .set(epoch);
            }
            lease.role.send_replace(status);
        }
    }

    /// Gives up every lease held and leaves the members, so the others
    /// take over at once rather than after `lease_ttl` (a clean stop).
    pub async fn leave(&self) {
        let me = self.node_id();
        let held: Vec<(String, i64)> = self
            .accounts
            .iter()
            .filter_map(|(name, lease)| lock(&lease.held).map(|h| (name.clone(), h.epoch)))
            .collect();
        for (account, _) in &held {
            self.set_held(account, None);
        }
        let result = self
            .control
            .run(self.settings.renew_every, async |client| {
                for (account, epoch) in &held {
                    db::release_lease(client, account, me, *epoch).await?;
                }
                db::leave(client, me).await
            })
            .await;
        match result {
            Ok(()) => tracing::info!(node_id = %me, released = held.len(), "left the HA cluster"),
            Err(error) => tracing::warn!(node_id = %me, %error,
                "could not leave the HA cluster cleanly; others take over when the leases expire"),
        }
    }
}

fn label(account: &str) -> AccountLabel {
    AccountLabel {
        account: account.to_owned(),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A poisoned lock still holds a usable value: a panic elsewhere must not
/// stop the fence from answering.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
