//! The simulator's world: accounts, calls (a map plus a creation-order
//! index), the active faults, the request log and the seeded RNG — all behind
//! one lock, shared by the API and the control API.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::faults::{ActiveFaults, FaultSpec};
use super::ShapeMode;
use crate::call::{CallUuid, Shape};
use crate::clock::SharedClock;

pub use super::model::{
    AddCalls, CallSpec, ChurnSpec, EndedBy, LogRecord, SimCall, SimStatus, StateChange,
};

/// Active churn: the arrival schedule and the planned caller hangups.
pub(crate) struct Churn {
    spec: ChurnSpec,
    account: String,
    rng: StdRng,
    next_arrival: DateTime<Utc>,
    /// Planned ends, earliest first.
    ends: BinaryHeap<Reverse<(DateTime<Utc>, String)>>,
}

impl Churn {
    fn exp_s(&mut self, mean_s: f64) -> TimeDelta {
        let u: f64 = self.rng.random();
        seconds(-(1.0 - u).ln() * mean_s)
    }

    fn plan_end(&mut self, uuid: &str, from: DateTime<Utc>) {
        let end = from + self.exp_s(self.spec.mean_hold_s);
        self.ends.push(Reverse((end, uuid.to_owned())));
    }
}

/// Mutable world state; see [`SimState`].
pub(crate) struct World {
    /// The accounts the API accepts: (auth id, token).
    pub accounts: Vec<(String, String)>,
    /// Which detail shape calls answer in.
    pub shape: ShapeMode,
    /// Every call by UUID, live or ended.
    pub calls: HashMap<String, SimCall>,
    /// Creation order of `calls`, so lists are stable and cheap.
    pub order: Vec<String>,
    /// B-legs by parent UUID, so ending a call does not scan every call.
    pub legs: HashMap<String, Vec<String>>,
    /// The faults tests injected, in force until replaced.
    pub faults: ActiveFaults,
    /// Seeded randomness, so a run can be repeated.
    pub rng: StdRng,
    /// Every API request, for tests to inspect.
    pub log: Vec<LogRecord>,
    /// Background calls starting and ending, when asked for.
    pub churn: Option<Churn>,
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
                legs: HashMap::new(),
                faults: ActiveFaults::default(),
                rng: StdRng::seed_from_u64(seed),
                log: Vec::new(),
                churn: None,
                seed,
            }),
            clock,
        }
    }

    /// The simulator's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The world, locked; every change goes through here.
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        // Nothing under this lock can leave the world half-updated in a way
        // that matters to a test double; keep serving after a panic.
        let mut world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        // Churn is applied lazily, at its planned instants, whenever anyone
        // looks: no background task, and exact start and end times.
        if world.churn.is_some() {
            world.advance_churn(self.clock.now());
        }
        world
    }

    /// Starts, replaces or (rate 0) stops churn.
    pub fn set_churn(&self, spec: ChurnSpec) -> Result<(), ControlError> {
        let now = self.now();
        let mut world = self.lock();
        if spec.arrivals_per_s == 0.0 {
            world.churn = None;
            return Ok(());
        }
        for (name, value) in [
            ("arrivals_per_s", spec.arrivals_per_s),
            ("mean_hold_s", spec.mean_hold_s),
        ] {
            if !(value.is_finite() && value > 0.0 && value < 1e9) {
                return Err(ControlError::Invalid(format!(
                    "{name} must be a positive number of at most 1e9"
                )));
            }
        }
        let account = match &spec.account {
            Some(account) if world.accounts.iter().any(|(id, _)| id == account) => account.clone(),
            Some(account) => {
                return Err(ControlError::Invalid(format!(
                    "unknown account {account:?}"
                )))
            }
            None => world
                .accounts
                .first()
                .map(|(id, _)| id.clone())
                .unwrap_or_default(),
        };
        let mut churn = Churn {
            rng: StdRng::seed_from_u64(spec.seed),
            spec,
            account,
            next_arrival: now,
            ends: BinaryHeap::new(),
        };
        churn.next_arrival = now + churn.exp_s(1.0 / churn.spec.arrivals_per_s);
        for uuid in &world.order {
            if let Some(call) = world.calls.get(uuid) {
                if call.account == churn.account && call.status.is_live() {
                    churn.plan_end(uuid, now);
                }
            }
        }
        world.churn = Some(churn);
        Ok(())
    }

    /// The churn as last set (rate 0 when off).
    pub fn churn(&self) -> ChurnSpec {
        self.lock()
            .churn
            .as_ref()
            .map(|c| c.spec.clone())
            .unwrap_or_default()
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
            world.insert(call, now);
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
        world.legs.clear();
        world.log.clear();
        world.churn = None;
        world.faults = ActiveFaults::default();
        world.rng = StdRng::seed_from_u64(world.seed);
    }
}

impl World {
    /// Adds a prepared call; under churn its caller hangs up some time after `now`.
    fn insert(&mut self, call: SimCall, now: DateTime<Utc>) {
        if let Some(parent) = &call.parent_call_uuid {
            self.legs
                .entry(parent.clone())
                .or_default()
                .push(call.uuid.clone());
        }
        if let Some(churn) = &mut self.churn {
            if call.account == churn.account && call.status.is_live() {
                churn.plan_end(&call.uuid, now);
            }
        }
        self.order.push(call.uuid.clone());
        self.calls.insert(call.uuid.clone(), call);
    }

    /// Applies every arrival and planned hangup up to `now`, each at its own instant.
    fn advance_churn(&mut self, now: DateTime<Utc>) {
        let Some(mut churn) = self.churn.take() else {
            return;
        };
        while churn.next_arrival <= now {
            let at = churn.next_arrival;
            churn.next_arrival = at + churn.exp_s(1.0 / churn.spec.arrivals_per_s);
            let mut spec = random_spec(&mut churn.rng, 0.0);
            spec.uuid = Some(uuid_v4(&mut churn.rng));
            spec.answered = Some(true);
            spec.ring_s = 0.0;
            spec.shape = Some(
                match self.shape {
                    ShapeMode::Flat => "flat",
                    ShapeMode::Legacy => "legacy",
                    ShapeMode::Mixed if churn.rng.random_bool(0.5) => "legacy",
                    ShapeMode::Mixed => "flat",
                }
                .to_owned(),
            );
            let account = churn.account.clone();
            match self.prepare(spec, &account, now) {
                Ok(mut call) if !self.calls.contains_key(&call.uuid) => {
                    // Exactly at its arrival (a float age would lose microseconds).
                    call.started_at = at;
                    call.answered_at = Some(at);
                    let uuid = call.uuid.clone();
                    self.order.push(uuid.clone());
                    self.calls.insert(uuid.clone(), call);
                    churn.plan_end(&uuid, at);
                }
                _ => {}
            }
        }
        while churn
            .ends
            .peek()
            .is_some_and(|Reverse((end, _))| *end <= now)
        {
            if let Some(Reverse((end, uuid))) = churn.ends.pop() {
                if self.calls.get(&uuid).is_some_and(|c| c.status.is_live()) {
                    self.end(&uuid, EndedBy::Caller, end);
                }
            }
        }
        self.churn = Some(churn);
    }

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
            .legs
            .get(uuid)
            .into_iter()
            .flatten()
            .filter(|leg| {
                self.calls
                    .get(*leg)
                    .is_some_and(|c| c.status != SimStatus::Completed)
            })
            .cloned()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use std::sync::Arc;

    /// A clock the test moves by hand.
    struct Manual(Mutex<DateTime<Utc>>);

    impl Clock for Manual {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    fn world() -> (Arc<Manual>, SimState) {
        let start = DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Arc::new(Manual(Mutex::new(start)));
        let state = SimState::new(
            vec![("MA1".into(), "t".into())],
            ShapeMode::Flat,
            7,
            clock.clone(),
        );
        (clock, state)
    }

    fn advance(clock: &Manual, s: i64) {
        *clock.0.lock().unwrap() += TimeDelta::seconds(s);
    }

    fn live(state: &SimState) -> usize {
        state.calls().iter().filter(|c| c.status.is_live()).count()
    }

    #[test]
    fn churn_keeps_the_live_count_near_rate_times_hold() {
        let (clock, state) = world();
        state
            .add_calls(AddCalls {
                generate: Some(1000),
                ..AddCalls::default()
            })
            .unwrap();
        state
            .set_churn(ChurnSpec {
                arrivals_per_s: 10.0,
                mean_hold_s: 100.0,
                account: None,
                seed: 3,
            })
            .unwrap();
        advance(&clock, 1000);
        let calls = state.calls();
        let live = calls.iter().filter(|c| c.status.is_live()).count();
        // 10 s × 100 = 1000 expected; Poisson noise is ~±32.
        assert!((850..1150).contains(&live), "live {live}");
        let arrived = calls.len() - 1000;
        assert!((9_000..11_000).contains(&arrived), "arrived {arrived}");
        let now = state.now();
        for call in &calls {
            assert!(call.started_at <= now);
            if let Some(ended) = call.ended_at {
                assert_eq!(call.ended_by, Some(EndedBy::Caller));
                assert!(ended >= call.started_at && ended <= now);
            }
        }
    }

    #[test]
    fn churn_schedule_does_not_depend_on_when_it_is_observed() {
        let run = |steps: &[i64]| {
            let (clock, state) = world();
            state
                .set_churn(ChurnSpec {
                    arrivals_per_s: 5.0,
                    mean_hold_s: 20.0,
                    account: None,
                    seed: 11,
                })
                .unwrap();
            for s in steps {
                advance(&clock, *s);
                let _ = live(&state);
            }
            state
                .calls()
                .into_iter()
                .map(|c| (c.uuid, c.started_at, c.ended_at))
                .collect::<Vec<_>>()
        };
        let (one, many) = (run(&[60]), run(&[1, 2, 3, 10, 44]));
        assert!(one.len() > 200, "{}", one.len());
        assert!(
            one == many,
            "the schedule changed with the observation times"
        );
    }

    #[test]
    fn churn_rate_zero_stops_and_bad_specs_are_refused() {
        let (clock, state) = world();
        let bad = ChurnSpec {
            arrivals_per_s: -1.0,
            mean_hold_s: 10.0,
            ..ChurnSpec::default()
        };
        assert!(state.set_churn(bad).is_err());
        let unknown = ChurnSpec {
            arrivals_per_s: 1.0,
            mean_hold_s: 10.0,
            account: Some("nope".into()),
            seed: 0,
        };
        assert!(state.set_churn(unknown).is_err());
        state
            .set_churn(ChurnSpec {
                arrivals_per_s: 1.0,
                mean_hold_s: 1e6,
                ..ChurnSpec::default()
            })
            .unwrap();
        advance(&clock, 50);
        let before = state.calls().len();
        assert!(before > 0);
        state.set_churn(ChurnSpec::default()).unwrap();
        advance(&clock, 50);
        assert_eq!(state.calls().len(), before);
        assert_eq!(state.churn(), ChurnSpec::default());
    }

    #[test]
    fn ending_a_parent_ends_its_legs_only() {
        let (_clock, state) = world();
        let a = "aaaaaaaa-0000-4000-8000-000000000001".to_owned();
        let b = "aaaaaaaa-0000-4000-8000-000000000002".to_owned();
        let c = "aaaaaaaa-0000-4000-8000-000000000003".to_owned();
        let spec = |uuid: &str, parent: Option<&str>| CallSpec {
            uuid: Some(uuid.to_owned()),
            parent_call_uuid: parent.map(str::to_owned),
            ..CallSpec::default()
        };
        state
            .add_calls(AddCalls {
                calls: vec![spec(&a, None), spec(&b, Some(&a)), spec(&c, None)],
                ..AddCalls::default()
            })
            .unwrap();
        state.end_call(&a).unwrap();
        assert_eq!(state.call(&b).unwrap().ended_by, Some(EndedBy::Caller));
        assert!(state.call(&c).unwrap().status.is_live());
    }
}
