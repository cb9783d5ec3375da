//! The tracked calls: every live call whose details were read, stored once;
//! the index of B-legs by parent, kept exact as calls come and go; and the
//! memory of their times across restarts, marked changed whenever they are.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::call::{Call, CallUuid};

use super::memory::{self, Remembered};
use super::plan;
use super::tracker::Tracked;

/// The tracked calls of one account.
pub(super) struct Calls {
    calls: HashMap<CallUuid, Tracked>,
    /// B-legs by parent A-leg: changed only with `calls`.
    children: HashMap<CallUuid, BTreeSet<CallUuid>>,
    /// The calls read again at each poll (unanswered, or watched by an idle
    /// rule): few of the fleet, so a poll need not look at every call.
    refresh: HashSet<CallUuid>,
    /// How many calls came from the queued list.
    queued: usize,
    memory: Memory,
}

/// The remembered call times and their writes.
struct Memory {
    /// The file (`None`: remember nothing).
    path: Option<PathBuf>,
    /// What an earlier run (or leader) knew of calls not tracked yet; a
    /// tracked call's times live in its [`Tracked`] alone.
    remembered: HashMap<CallUuid, Remembered>,
    /// A tracked call's times changed since the last write.
    dirty: bool,
    /// The generation of the newest snapshot written, shared with writers.
    written: Arc<Mutex<u64>>,
    generation: u64,
}

impl Calls {
    /// No calls yet; the times an earlier run remembered in `memory_path`.
    pub(super) fn new(memory_path: Option<PathBuf>) -> Self {
        let remembered = memory_path
            .as_deref()
            .map(memory::load)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(uuid, times)| Some((CallUuid::parse(&uuid).ok()?, times)))
            .collect();
        Self {
            calls: HashMap::new(),
            children: HashMap::new(),
            refresh: HashSet::new(),
            queued: 0,
            memory: Memory {
                path: memory_path,
                remembered,
                dirty: false,
                written: Arc::new(Mutex::new(0)),
                generation: 0,
            },
        }
    }

    /// A tracked call.
    pub(super) fn get(&self, uuid: &CallUuid) -> Option<&Tracked> {
        self.calls.get(uuid)
    }

    /// Whether `uuid` is tracked.
    pub(super) fn contains(&self, uuid: &CallUuid) -> bool {
        self.calls.contains_key(uuid)
    }

    /// How many calls are tracked.
    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    /// Every tracked call.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&CallUuid, &Tracked)> {
        self.calls.iter()
    }

    /// The tracked UUIDs, for passes that change other parts call by call.
    pub(super) fn uuids(&self) -> Vec<CallUuid> {
        self.calls.keys().cloned().collect()
    }

    /// Takes the time another leader first saw `uuid` in progress (high
    /// availability takeover); the earlier of it and what is known wins.
    pub(super) fn remember_first_seen(&mut self, uuid: &CallUuid, at: DateTime<Utc>) {
        let entry = self
            .memory
            .remembered
            .entry(uuid.clone())
            .or_insert(Remembered {
                first_seen: at,
                answered_seen: Some(at),
                last_change: at,
                state_key: 0,
                first_sight_only: false,
            });
        entry.first_seen = entry.first_seen.min(at);
        entry.answered_seen = Some(entry.answered_seen.map_or(at, |seen| seen.min(at)));
    }

    /// What an earlier run remembered of `uuid`.
    pub(super) fn remembered(&self, uuid: &CallUuid) -> Option<&Remembered> {
        self.memory.remembered.get(uuid)
    }

    /// How many tracked calls are timed from first sight on their own.
    pub(super) fn first_sight_only(&self) -> usize {
        self.calls.values().filter(|t| t.first_sight_only).count()
    }

    /// The calls to read again at this poll.
    pub(super) fn needing_refresh(&self) -> impl Iterator<Item = &CallUuid> {
        self.refresh.iter()
    }

    /// Whether any tracked call came from the queued list.
    pub(super) fn any_queued(&self) -> bool {
        self.queued > 0
    }

    /// The tracked call's own `uuid`, for sets that can share its text
    /// rather than hold a copy per list answer.
    pub(super) fn shared_uuid<'a>(&'a self, uuid: &'a CallUuid) -> &'a CallUuid {
        self.calls.get_key_value(uuid).map_or(uuid, |(key, _)| key)
    }

    /// Starts tracking `uuid`.
    pub(super) fn insert(&mut self, uuid: CallUuid, mut tracked: Tracked) {
        if let Some(call) = Arc::get_mut(&mut tracked.call) {
            share_uuid(call, &uuid);
        }
        let parent = tracked.call.parent_call_uuid.clone();
        self.queued += usize::from(tracked.queued);
        if let Some(old) = self.calls.insert(uuid.clone(), tracked) {
            self.queued -= usize::from(old.queued);
            self.index_parent(&uuid, old.call.parent_call_uuid.clone(), None);
        }
        self.index_parent(&uuid, None, parent);
        self.index_refresh(&uuid);
        // Restored from it by now: the tracked call carries the times.
        self.memory.remembered.remove(&uuid);
        self.memory.dirty = true;
    }

    /// Takes fresh details of a tracked call; false if it is not tracked.
    pub(super) fn refresh(
        &mut self,
        uuid: &CallUuid,
        mut call: Call,
        seen_at: DateTime<Utc>,
    ) -> bool {
        let legs = self.leg_count(uuid);
        let Some(key) = self.calls.get_key_value(uuid).map(|(key, _)| key.clone()) else {
            return false;
        };
        share_uuid(&mut call, &key);
        let Some(tracked) = self.calls.get_mut(uuid) else {
            return false;
        };
        let old_parent = tracked.call.parent_call_uuid.clone();
        let new_parent = call.parent_call_uuid.clone();
        self.memory.dirty |= tracked.refresh(call, seen_at, legs);
        self.index_parent(uuid, old_parent, new_parent);
        self.index_refresh(uuid);
        true
    }

    /// Records whether the call's details come from the queued list.
    pub(super) fn set_queued(&mut self, uuid: &CallUuid, queued: bool) {
        if let Some(tracked) = self.calls.get_mut(uuid) {
            self.queued = self.queued + usize::from(queued) - usize::from(tracked.queued);
            tracked.queued = queued;
        }
    }

    /// Records whether an idle rule watches the call (re-read at each poll).
    pub(super) fn set_watched(&mut self, uuid: &CallUuid, watched: bool) {
        if let Some(tracked) = self.calls.get_mut(uuid) {
            tracked.watched_by_idle_rule = watched;
            self.index_refresh(uuid);
        }
    }

    /// Stops tracking `uuid`.
    pub(super) fn remove(&mut self, uuid: &CallUuid) -> Option<Tracked> {
        let tracked = self.calls.remove(uuid)?;
        self.queued -= usize::from(tracked.queued);
        self.refresh.remove(uuid);
        // Not a reason to write: an ended call left in the file is dropped
        // when the file is next read, or written for a change that matters.
        self.index_parent(uuid, tracked.call.parent_call_uuid.clone(), None);
        Some(tracked)
    }

    /// How many B-legs a parent has now, for rules and scopes that count legs.
    pub(super) fn leg_count(&self, parent: &CallUuid) -> usize {
        self.children.get(parent).map_or(0, BTreeSet::len)
    }

    /// Updates idle tracking from the current legs.
    pub(super) fn observe_legs(&mut self, now: DateTime<Utc>) {
        for (uuid, tracked) in &mut self.calls {
            let legs = self.children.get(uuid).map_or(0, BTreeSet::len);
            tracked.observe_legs(legs, now);
        }
    }

    /// Keeps `uuid` in the refresh set exactly while it needs refreshing.
    fn index_refresh(&mut self, uuid: &CallUuid) {
        match self.calls.get(uuid) {
            Some(tracked) if tracked.needs_refresh() => {
                if !self.refresh.contains(uuid) {
                    self.refresh.insert(uuid.clone());
                }
            }
            _ => {
                self.refresh.remove(uuid);
            }
        }
    }

    /// Moves `uuid` in the parent index from `old` to `new` parent.
    fn index_parent(&mut self, uuid: &CallUuid, old: Option<CallUuid>, new: Option<CallUuid>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            if let Some(legs) = self.children.get_mut(&old) {
                legs.remove(uuid);
                if legs.is_empty() {
                    self.children.remove(&old);
                }
            }
        }
        if let Some(new) = new {
            self.children.entry(new).or_default().insert(uuid.clone());
        }
    }

    /// The pending write of the remembered call times, if they changed
    /// (or `always`). Calls no longer `live` are dropped; one writer at a
    /// time, and never an older snapshot over a newer one.
    pub(super) fn memory_snapshot(
        &mut self,
        live: &HashSet<CallUuid>,
        always: bool,
    ) -> Option<impl FnOnce() + Send + 'static> {
        let path = self.memory.path.clone()?;
        let memory = &mut self.memory;
        // Calls still waiting for their details keep what an earlier run
        // knew; those no longer live are dropped.
        let before = memory.remembered.len();
        memory.remembered.retain(|uuid, _| live.contains(uuid));
        let dropped = memory.remembered.len() != before;
        if !always && !memory.dirty && !dropped {
            return None;
        }
        memory.dirty = false;
        // Shared UUIDs and copied times: no string is built on this task.
        let snapshot: Vec<(CallUuid, Remembered)> = memory
            .remembered
            .iter()
            .map(|(uuid, times)| (uuid.clone(), *times))
            .chain(
                self.calls
                    .iter()
                    .map(|(uuid, tracked)| (uuid.clone(), tracked.remembered())),
            )
            .collect();
        memory.generation += 1;
        let generation = memory.generation;
        let written = Arc::clone(&memory.written);
        Some(move || {
            let Ok(mut last) = written.lock() else {
                return;
            };
            if *last >= generation {
                return;
            }
            match memory::save(&path, &snapshot) {
                Ok(()) => *last = generation,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot save call memory")
                }
            }
        })
    }
}

/// Points `call`'s UUID at `key`'s text when they are the same UUID: one
/// copy of the text per call, however many answers were read.
fn share_uuid(call: &mut Call, key: &CallUuid) {
    if call.uuid == *key {
        call.uuid = key.clone();
    }
}

impl plan::Legs for Calls {
    fn call(&self, uuid: &CallUuid) -> Option<&Call> {
        self.calls.get(uuid).map(|t| &*t.call)
    }

    fn children(&self, parent: &CallUuid) -> Vec<CallUuid> {
        self.children
            .get(parent)
            .map(|legs| legs.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallStatus;

    fn call(id: &str, status: CallStatus) -> Call {
        Call {
            status,
            ..Call::for_test(id)
        }
    }

    fn refreshed(calls: &Calls) -> Vec<String> {
        let mut uuids: Vec<String> = calls.needing_refresh().map(|u| u.to_string()).collect();
        uuids.sort();
        uuids
    }

    #[test]
    fn memory_is_written_for_new_calls_not_for_ended_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = memory::path(dir.path(), "default");
        let mut calls = Calls::new(Some(path.clone()));
        let now = Utc::now();
        let a = CallUuid::parse("a").unwrap();
        let b = CallUuid::parse("b").unwrap();
        let mut live: HashSet<CallUuid> = [a.clone(), b.clone()].into();
        for uuid in [&a, &b] {
            let call = call(uuid.as_str(), CallStatus::InProgress);
            calls.insert(uuid.clone(), Tracked::new(call, now, None, false));
        }
        let write = calls.memory_snapshot(&live, false).expect("new calls");
        write();
        assert_eq!(memory::load(&path).len(), 2);
        assert!(calls.memory_snapshot(&live, false).is_none(), "no change");

        calls.remove(&b);
        live.remove(&b);
        assert!(
            calls.memory_snapshot(&live, false).is_none(),
            "an ended call alone is no reason to write"
        );
        // The next start drops what is no longer live, and a write for any
        // other reason leaves it out.
        let mut restarted = Calls::new(Some(path.clone()));
        assert!(restarted.remembered(&a).is_some() && restarted.remembered(&b).is_some());
        restarted
            .memory_snapshot(&live, false)
            .expect("the ended call is dropped")();
        assert_eq!(memory::load(&path).len(), 1);
        assert!(restarted.remembered(&b).is_none());
    }

    #[test]
    fn the_refresh_set_holds_exactly_the_calls_that_need_a_read() {
        let mut calls = Calls::new(None);
        let now = Utc::now();
        let a = CallUuid::parse("a").unwrap();
        let b = CallUuid::parse("b").unwrap();
        calls.insert(
            a.clone(),
            Tracked::new(call("a", CallStatus::Ringing), now, None, true),
        );
        calls.insert(
            b.clone(),
            Tracked::new(call("b", CallStatus::InProgress), now, None, false),
        );
        assert_eq!(refreshed(&calls), ["a"], "only the unanswered call");
        assert!(calls.any_queued());

        assert!(calls.refresh(&a, call("a", CallStatus::InProgress), now));
        assert!(refreshed(&calls).is_empty(), "answered: no more reads");

        calls.set_watched(&b, true);
        assert_eq!(refreshed(&calls), ["b"], "an idle rule watches it");
        calls.set_watched(&b, false);
        calls.set_watched(&a, true);
        assert_eq!(refreshed(&calls), ["a"]);

        calls.set_queued(&a, false);
        assert!(!calls.any_queued());
        calls.set_queued(&b, true);
        calls.remove(&a);
        calls.remove(&b);
        assert!(refreshed(&calls).is_empty() && !calls.any_queued());
        assert_eq!(calls.len(), 0);
    }
}
