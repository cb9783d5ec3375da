//! The engine's published state, for `/status`, `calls` and STATUS=.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One account's state as last published by its engine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountStatus {
    /// Account name.
    pub account: String,
    /// False after a 401/403: enforcement is stopped until a reload.
    pub healthy: bool,
    /// Why it is unhealthy, if it is.
    pub unhealthy_reason: Option<String>,
    /// Local time of the last successful poll.
    pub last_poll_ok: Option<DateTime<Utc>>,
    /// The last poll's error, if it failed.
    pub last_poll_error: Option<String>,
    /// Calls in the last list.
    pub live_calls: usize,
    /// Calls with details, tracked.
    pub tracked_calls: usize,
    /// Calls waiting for their first details.
    pub pending_details: usize,
    /// Whether the breaker holds hangups.
    pub breaker_open: bool,
    /// Calls held by the breaker.
    pub held_calls: Vec<String>,
    /// A clock/zone mismatch, if one was detected.
    pub clock_mismatch: Option<String>,
    /// What is known of the API server's clock, once an answer had a `Date`.
    #[serde(default)]
    pub clock_skew: Option<ClockSkew>,
    /// Rules in force.
    pub rules: Vec<String>,
    /// The earliest pending hangups.
    pub next_deadlines: Vec<DeadlineStatus>,
    /// Every tracked call (first seen, answer seen, pardon). Empty in the
    /// summary an engine publishes; `/status` fills it on request.
    pub calls: Vec<CallStatus>,
    /// With `[ha]`: this node's role for the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaStatus>,
}

/// This node's part in enforcing one account, with `[ha]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    /// This node's `node_id`.
    pub node_id: String,
    /// What this node does for the account.
    pub role: HaRole,
    /// The member holding the account's lease, when known.
    pub leader: Option<String>,
    /// The lease's epoch, when known.
    pub epoch: Option<i64>,
}

/// What a node does for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaRole {
    /// Holds the lease and enforces.
    Leader,
    /// Another member leads (or will): this node only watches.
    Standby,
    /// The database cannot be reached: this node does not enforce.
    NoDatabase,
}

impl HaRole {
    /// The word used in `/status`, `/readyz` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leader => "leader",
            Self::Standby => "standby",
            Self::NoDatabase => "no_database",
        }
    }
}

/// Bounds on the API server's clock minus this host's, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClockSkew {
    /// The offset is at least this; call times are converted with it.
    pub low_ms: f64,
    /// The offset is at most this.
    pub high_ms: f64,
}

/// A pending hangup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadlineStatus {
    /// The call.
    pub call_uuid: String,
    /// The winning rule.
    pub rule: String,
    /// When it is due.
    pub deadline: DateTime<Utc>,
}

/// What the daemon knows of one call beyond the API's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallStatus {
    /// The call.
    pub call_uuid: String,
    /// When the daemon first saw it.
    pub first_seen: DateTime<Utc>,
    /// When the daemon first saw it answered.
    pub answered_seen: Option<DateTime<Utc>>,
    /// Pardoned until (far future = for good).
    pub pardoned_until: Option<DateTime<Utc>>,
    /// Held by the breaker.
    pub held: bool,
}
