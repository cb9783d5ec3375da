//! The simulator's world: accounts, calls (a map plus a creation-order
//! index), the active faults, the request log and the seeded RNG — all behind
//! one lock, shared by the API and the control API.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::faults::{ActiveFaults, FaultSpec};
use super::ShapeMode;
use crate::call::{CallUuid, Shape};
use crate::clock::SharedClock;

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

/// Mutable world state; see [`SimState`].
pub(crate) struct World {
    pub accounts: Vec<(String, String)>,
    pub shape: ShapeMode,
    pub calls: HashMap<String, SimCall>,
    /// Creation order of `calls`, so lists are stable and cheap.
    pub order: Vec<String>,
    pub faults: ActiveFaults,
    pub rng: StdRng,
    pub log: Vec<LogRecord>,
    seed: u64,
}

/// The simulator's shared state.
pub struct SimState {
    world: Mutex<World>,
    clock: SharedClock,
}

/// An error of the control API, answered as 400/404/409 JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// Bad input.
    Invalid(String),
    /// No such call.
    NotFound(String),
    /// The call is already over.
    Conflict(String),
}

impl SimState {
    /// A fresh world with these accounts, default shape and RNG seed.
    pub fn new(
        accounts: Vec<(String, String)>,
        shape: ShapeMode,
        seed: u64,
        clock: SharedClock,
    ) -> Self {
        Self {
            world: Mutex::new(World {
                accounts,
                shape,
                calls: HashMap::new(),
                order: Vec::new(),
                faults: ActiveFaults::default(),
                rng: StdRng::seed_from_u64(seed),
                log: Vec::new(),
                seed,
            }),
            clock,
        }
    }

    /// The simulator's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        // Nothing under this lock can leave the world half-updated in a way
        // that matters to a test double; keep serving after a panic.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The accepted `(auth_id, token)` pairs.
    pub fn accounts(&self) -> Vec<(String, String)> {
        self.lock().accounts.clone()
    }

    /// Creates calls; returns their UUIDs in order.
    pub fn add_calls(&self, request: AddCalls) -> Result<Vec<String>, ControlError> {
        let now = self.now();
        let mut world = self.lock();
        let default_account = match &request.account {
            Some(account) => account.clone(),
            None => world
                .accounts
                .first()
                .map(|(id, _)| id.clone())
                .unwrap_or_default(),
        };
        let mut specs = request.calls;
        if let Some(n) = request.generate {
            let age_max = request.age_max_s.unwrap_or(1800.0).max(0.0);
            specs.extend((0..n).map(|_| random_spec(&mut world.rng, age_max)));
        }
        // Validate everything first so a bad entry creates nothing.
        let mut prepared: Vec<SimCall> = Vec::with_capacity(specs.len());
        let mut seen = HashSet::with_capacity(specs.len());
        for spec in specs {
            let call = world.prepare(spec, &default_account, now)?;
            if world.calls.contains_key(&call.uuid) || !seen.insert(call.uuid.clone()) {
                return Err(ControlError::Invalid(format!(
                    "duplicate call uuid {}",
                    call.uuid
                )));
            }
            prepared.push(call);
        }
        let uuids = prepared.iter().map(|c| c.uuid.clone()).collect();
        for call in prepared {
            world.order.push(call.uuid.clone());
            world.calls.insert(call.uuid.clone(), call);
        }
        Ok(uuids)
    }

    /// Every call, live and ended, in creation order.
    pub fn calls(&self) -> Vec<SimCall> {
        let world = self.lock();
        world
            .order
            .iter()
            .filter_map(|uuid| world.calls.get(uuid).cloned())
            .collect()
    }

    /// One call by UUID.
    pub fn call(&self, uuid: &str) -> Option<SimCall> {
        self.lock().calls.get(uuid).cloned()
    }

    /// Changes a live call's status and numbers; answering sets the answer time.
    pub fn set_state(&self, uuid: &str, change: StateChange) -> Result<SimCall, ControlError> {
        if change.status == SimStatus::Completed {
            return Err(ControlError::Invalid(
                "use POST /_sim/calls/{uuid}/end to end a call".to_owned(),
            ));
        }
        let now = self.now();
        let mut world = self.lock();
        let call = world
            .calls
            .get_mut(uuid)
            .ok_or_else(|| ControlError::NotFound(uuid.to_owned()))?;
        if call.status == SimStatus::Completed {
            return Err(ControlError::Conflict(format!("call {uuid} has ended")));
        }
        if change.status == SimStatus::InProgress && call.answered_at.is_none() {
            call.answered_at = Some(now);
        }
        call.status = change.status;
        if let Some(to) = change.to {
            call.to = to;
        }
        if let Some(from) = change.from {
            call.from = from;
        }
        Ok(call.clone())
    }

    /// Ends a live call as if the caller hung up (and its B-legs with it).
    pub fn end_call(&self, uuid: &str) -> Result<SimCall, ControlError> {
        let now = self.now();
        let mut world = self.lock();
        match world.calls.get(uuid) {
            None => return Err(ControlError::NotFound(uuid.to_owned())),
            Some(call) if call.status == SimStatus::Completed => {
                return Err(ControlError::Conflict(format!("call {uuid} has ended")))
            }
            Some(_) => {}
        }
        world.end(uuid, EndedBy::Caller, now);
        world
            .calls
            .get(uuid)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(uuid.to_owned()))
    }

    /// Replaces the active faults (`FaultSpec::default()` clears them).
    pub fn set_faults(&self, spec: FaultSpec) -> Result<(), ControlError> {
        let now = self.now();
        let active = ActiveFaults::from_spec(spec, now).map_err(ControlError::Invalid)?;
        self.lock().faults = active;
        Ok(())
    }

    /// The faults as last set.
    pub fn faults(&self) -> FaultSpec {
        self.lock().faults.spec.clone()
    }

    /// Log records with `seq > since`.
    pub fn log(&self, since: u64) -> Vec<LogRecord> {
        let world = self.lock();
        // Sequence numbers are 1-based positions, so skip without searching.
        let start = usize::try_from(since)
            .unwrap_or(usize::MAX)
            .min(world.log.len());
        world.log[start..].to_vec()
    }

    /// Forgets every call, fault and log record; re-seeds the RNG.
    pub fn reset(&self) {
        let mut world = self.lock();
        world.calls.clear();
        world.order.clear();
        world.log.clear();
        world.faults = ActiveFaults::default();
        world.rng = StdRng::seed_from_u64(world.seed);
    }
}

impl World {
    /// Validates a spec into a call (kept in `pending` until inserted).
    fn prepare(
        &mut self,
        spec: CallSpec,
        default_account: &str,
        now: DateTime<Utc>,
    ) -> Result<SimCall, ControlError> {
        let invalid = |msg: String| ControlError::Invalid(msg);
        let uuid = match spec.uuid {
            Some(uuid) => {
                CallUuid::parse(&uuid).map_err(|e| invalid(format!("uuid {uuid:?}: {e}")))?;
                uuid
            }
            None => uuid_v4(&mut self.rng),
        };
        let account = spec.account.unwrap_or_else(|| default_account.to_owned());
        if !self.accounts.iter().any(|(id, _)| *id == account) {
            return Err(invalid(format!("unknown account {account:?}")));
        }
        for (name, value) in [("age_s", spec.age_s), ("ring_s", spec.ring_s)] {
            if !(value.is_finite() && (0.0..1e9).contains(&value)) {
                return Err(invalid(format!("{name} must be between 0 and 1e9 seconds")));
            }
        }
        let direction = spec.direction.unwrap_or_else(|| "inbound".to_owned());
        if direction != "inbound" && direction != "outbound" {
            return Err(invalid(format!(
                "direction must be inbound or outbound, not {direction:?}"
            )));
        }
        if let Some(parent) = &spec.parent_call_uuid {
            CallUuid::parse(parent)
                .map_err(|e| invalid(format!("parent_call_uuid {parent:?}: {e}")))?;
        }
        let shape = match spec.shape.as_deref() {
            Some("flat") => Shape::Flat,
            Some("legacy") => Shape::Legacy,
            Some(other) => {
                return Err(invalid(format!(
                    "shape must be flat or legacy, not {other:?}"
                )))
            }
            None => match self.shape {
                ShapeMode::Flat => Shape::Flat,
                ShapeMode::Legacy => Shape::Legacy,
                ShapeMode::Mixed if self.rng.random_bool(0.5) => Shape::Legacy,
                ShapeMode::Mixed => Shape::Flat,
            },
        };
        let started_at = now - seconds(spec.age_s);
        let answer_at = (started_at + seconds(spec.ring_s)).min(now);
        let (status, answered_at) = match spec.status {
            Some(SimStatus::Completed) => {
                return Err(invalid(
                    "status completed: create the call, then end it".to_owned(),
                ))
            }
            Some(SimStatus::InProgress) => (SimStatus::InProgress, Some(answer_at)),
            Some(other) => (other, None),
            None if spec.answered.unwrap_or(true) => (SimStatus::InProgress, Some(answer_at)),
            None => (SimStatus::Ringing, None),
        };
        Ok(SimCall {
            uuid,
            account,
            direction,
            from: spec.from,
            to: spec.to,
            caller_name: spec.caller_name,
            status,
            shape,
            started_at,
            answered_at,
            ended_at: None,
            ended_by: None,
            parent_call_uuid: spec.parent_call_uuid.filter(|p| !p.is_empty()),
            hangups: 0,
            delete_requests: 0,
            speaks: Vec::new(),
        })
    }

    /// Ends `uuid` and its live B-legs.
    pub(crate) fn end(&mut self, uuid: &str, by: EndedBy, now: DateTime<Utc>) {
        if let Some(call) = self.calls.get_mut(uuid) {
            if call.status != SimStatus::Completed {
                call.status = SimStatus::Completed;
                call.ended_at = Some(now);
                call.ended_by = Some(by);
            }
        }
        let legs: Vec<String> = self
            .calls
            .values()
            .filter(|c| {
                c.parent_call_uuid.as_deref() == Some(uuid) && c.status != SimStatus::Completed
            })
            .map(|c| c.uuid.clone())
            .collect();
        let leg_end = match by {
            EndedBy::Caller => EndedBy::Caller,
            _ => EndedBy::Parent,
        };
        for leg in legs {
            self.end(&leg, leg_end, now);
        }
    }

    /// Whether `(auth_id, token)` is an account.
    pub(crate) fn authorized(&self, auth_id: &str, token: &str) -> bool {
        self.accounts
            .iter()
            .any(|(id, t)| id == auth_id && t == token)
    }

    /// Timestamps rendered in the active zone.
    pub(crate) fn zone(&self) -> chrono_tz::Tz {
        self.faults.zone
    }

    /// Appends a log record.
    pub(crate) fn record(&mut self, mut record: LogRecord) {
        record.seq = self.log.len() as u64 + 1;
        self.log.push(record);
    }
}

/// A random v4 UUID from `rng`.
pub fn uuid_v4(rng: &mut impl RngExt) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// RFC 3339 with microseconds, as in the log.
pub fn rfc3339_micros(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn random_spec(rng: &mut StdRng, age_max_s: f64) -> CallSpec {
    let outbound = rng.random_bool(0.5);
    let number = |rng: &mut StdRng| {
        let plus = if rng.random_bool(0.5) { "+" } else { "" };
        let country = ["1", "44", "91"][rng.random_range(0..3)];
        format!(
            "{plus}{country}{}",
            rng.random_range(2_000_000_000u64..9_999_999_999)
        )
    };
    let age_s = rng.random_range(0.0..=age_max_s);
    let answered = rng.random_bool(0.9);
    CallSpec {
        age_s,
        direction: Some(if outbound { "outbound" } else { "inbound" }.to_owned()),
        from: number(rng),
        to: number(rng),
        caller_name: ["", "Alice", "Bob", "Support"][rng.random_range(0..4)].to_owned(),
        answered: Some(answered),
        ring_s: rng.random_range(0.0..=age_s.min(20.0)),
        ..CallSpec::default()
    }
}

fn seconds(s: f64) -> TimeDelta {
    TimeDelta::microseconds((s * 1e6) as i64)
}
