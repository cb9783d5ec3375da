//! The simulator's data: a simulated call and its life-cycle state, and
//! what the control API takes (new calls, state changes, churn) and gives
//! back (the request log).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::Shape;

/// The life-cycle state of a simulated call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimStatus {
    /// Created, not yet ringing.
    Queued,
    /// Ringing at the far end.
    Ringing,
    /// Early media before answer.
    EarlyMedia,
    /// Answered.
    InProgress,
    /// Over; a CDR exists.
    Completed,
}

impl SimStatus {
    /// The API's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Ringing => "ringing",
            Self::EarlyMedia => "early-media",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
        }
    }

    /// Listed by `?status=live`.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Ringing | Self::EarlyMedia | Self::InProgress)
    }

    /// Listed by `?status=queued`.
    pub fn is_queued(self) -> bool {
        matches!(self, Self::Queued | Self::Ringing)
    }
}

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndedBy {
    /// `DELETE /Call/{uuid}/`.
    Api,
    /// `POST /_sim/calls/{uuid}/end`.
    Caller,
    /// Its A-leg ended.
    Parent,
}

/// One simulated call, live or ended.
#[derive(Debug, Clone, Serialize)]
pub struct SimCall {
    /// Its UUID.
    pub uuid: String,
    /// The auth id of the account it belongs to.
    pub account: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Calling number as the API shows it.
    pub from: String,
    /// Called number as the API shows it.
    pub to: String,
    /// Caller name.
    pub caller_name: String,
    /// Current state.
    pub status: SimStatus,
    /// Shape of its detail answers.
    pub shape: Shape,
    /// Session start.
    pub started_at: DateTime<Utc>,
    /// Answer time, once answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// End time, once ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Who ended it.
    pub ended_by: Option<EndedBy>,
    /// The A-leg of this B-leg.
    pub parent_call_uuid: Option<String>,
    /// DELETEs of this call answered 2xx (more than one is a bug in the caller).
    pub hangups: u32,
    /// Every DELETE of this call, whatever the answer.
    pub delete_requests: u32,
    /// Texts spoken on it, in order.
    pub speaks: Vec<String>,
}

/// One call to create through `POST /_sim/calls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    /// Fixed UUID (random v4 when absent).
    pub uuid: Option<String>,
    /// Seconds since the session started.
    #[serde(default)]
    pub age_s: f64,
    /// `inbound` (default) or `outbound`.
    pub direction: Option<String>,
    /// Calling number.
    #[serde(default)]
    pub from: String,
    /// Called number.
    #[serde(default)]
    pub to: String,
    /// Caller name.
    #[serde(default)]
    pub caller_name: String,
    /// Answered (default true).
    pub answered: Option<bool>,
    /// Ringing time before the answer (default 0).
    #[serde(default)]
    pub ring_s: f64,
    /// Status override: `queued`, `ringing`, `early-media`, `in-progress`.
    pub status: Option<SimStatus>,
    /// The A-leg, making this call a B-leg.
    pub parent_call_uuid: Option<String>,
    /// Shape override: `flat` or `legacy`.
    pub shape: Option<String>,
    /// Account auth id (default: the request's `account`, else the first account).
    pub account: Option<String>,
}

/// Body of `POST /_sim/calls`: explicit calls, or `generate` random ones.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCalls {
    /// Account for every call without its own.
    pub account: Option<String>,
    /// Explicit calls.
    #[serde(default)]
    pub calls: Vec<CallSpec>,
    /// Number of random live calls to create.
    pub generate: Option<usize>,
    /// Oldest age of generated calls (default 1800 s).
    pub age_max_s: Option<f64>,
}

/// Body of `POST /_sim/calls/{uuid}/state`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateChange {
    /// New status (not `completed`: use `/end`).
    pub status: SimStatus,
    /// New called number.
    pub to: Option<String>,
    /// New calling number.
    pub from: Option<String>,
}

/// One API request as the simulator saw it.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    /// Increasing sequence number, from 1.
    pub seq: u64,
    /// Arrival on the simulator's clock (RFC 3339, µs).
    pub t_wall: String,
    /// HTTP method.
    pub method: String,
    /// Path as requested.
    pub path: String,
    /// Query string (empty when none).
    pub query: String,
    /// Status answered; `null` for a dropped connection.
    pub status: Option<u16>,
    /// Call UUID in the path, if any.
    pub uuid: Option<String>,
}

/// Body of `POST /_sim/churn`: calls arrive and leave by themselves.
///
/// Arrivals are a Poisson process of `arrivals_per_s`; every live call of the
/// account (those there when churn starts, those created later) is given an
/// exponential holding time of mean `mean_hold_s` from now or from its start
/// (memoryless, so the live count stays near `arrivals_per_s × mean_hold_s`),
/// and the caller hangs up at its end. A rate of 0 stops churn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnSpec {
    /// New calls per second (Poisson).
    #[serde(default)]
    pub arrivals_per_s: f64,
    /// Mean holding time in seconds (exponential).
    #[serde(default)]
    pub mean_hold_s: f64,
    /// Account auth id (default: the first account).
    pub account: Option<String>,
    /// Seed of the churn's own RNG, so the schedule does not depend on
    /// which requests arrive when (default 0).
    #[serde(default)]
    pub seed: u64,
}
