//! Discovery's state: the list in flight, the calls taken as live, the
//! queue of detail reads and the reads in flight, the discovery batch whose
//! overdue calls are held until it is read, and the pause of calls whose
//! answers keep coming back malformed.
//!
//! The queue reads first the new calls most likely to be due already (a
//! start-up under a tight budget takes minutes to hours): those an earlier
//! run decided to end, then those it saw, the longest seen first, then the
//! rest in list order. Refresh reads of tracked calls take turns with them.
//!
//! It sends nothing: the engine asks it what to read next and tells it what
//! came back (`engine::poll` does the requests).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};

use crate::call::CallUuid;
use crate::config::RetrySettings;

use super::backoff;

/// How many consecutive complete lists must leave a tracked call out before
/// it is taken as ended.
const MISSING_POLLS_TO_END: u8 = 2;

/// Capacity of the set of pending reads kept once it is empty; a start-up
/// that read more gives the rest back (tens of bytes per call of the fleet).
const SHRINK_ABOVE: usize = 1_024;

/// Why details are being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fetch {
    /// A call not tracked yet.
    Discover {
        /// The previous poll's time, when the call was absent from it.
        new_since: Option<DateTime<Utc>>,
        /// Listed as queued (read with `?status=queued`).
        queued: bool,
        /// How soon it is read among the calls waiting for a first read.
        urgency: Urgency,
    },
    /// A tracked call that rules need read at each poll.
    Refresh,
}

/// A complete list set against the tracked calls.
#[derive(Debug)]
pub(super) struct Reconciled {
    /// The calls taken as live from now on.
    pub(super) live: HashSet<CallUuid>,
    /// Tracked calls this list left out, kept live one more poll.
    pub(super) kept: usize,
    /// Tracked calls no longer live: they ended.
    pub(super) ended: Vec<CallUuid>,
}

/// What is known of a new call's age before its details are read: the
/// smaller, the sooner it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Urgency {
    /// An earlier run decided to end it and wrote no outcome: it was due then.
    Resumed,
    /// An earlier run (or another leader) first saw it then: the earliest
    /// is the oldest call, and the likeliest to be past a limit.
    Seen(DateTime<Utc>),
    /// Nothing is known (a call that began since the last run, or one it
    /// never read): the list's order is the only hint, so it is kept.
    Unknown,
}

/// The urgency of a new call from what the audit log (`resumed`: an intent
/// without an outcome) and the memory across restarts (`first_seen`) say.
pub(super) fn urgency(resumed: bool, first_seen: Option<DateTime<Utc>>) -> Urgency {
    match (resumed, first_seen) {
        (true, _) => Urgency::Resumed,
        (false, Some(at)) => Urgency::Seen(at),
        (false, None) => Urgency::Unknown,
    }
}

/// What discovery knows between polls.
#[derive(Debug, Default)]
pub(super) struct Discovery {
    list_in_flight: bool,
    /// First reads waiting for a slot, the most urgent first, then in the
    /// order queued (list order): keyed by urgency and `queued_total`.
    discoveries: BTreeMap<(Urgency, u64), (CallUuid, Fetch)>,
    /// Refresh reads waiting for a slot, in the order queued.
    refreshes: VecDeque<CallUuid>,
    /// Reads queued so far: the tie-break that keeps list order.
    queued_total: u64,
    /// When both kinds wait, whether a first read goes next: they take
    /// turns (a refresh first), so neither holds the other up for good.
    discovery_turn: bool,
    /// The calls queued or in flight, each at most once.
    pending: HashSet<CallUuid>,
    in_flight: usize,
    /// Discovery reads (not refreshes) not yet answered in the open batch.
    discovering: usize,
    /// When the open batch began.
    batch_started: Option<DateTime<Utc>>,
    /// Newly discovered calls already overdue, held until their batch is
    /// read so the breaker sees the whole batch at once.
    batch_due: Vec<CallUuid>,
    /// The calls taken as live after the latest complete list.
    live: HashSet<CallUuid>,
    /// Tracked calls missing from the latest complete list(s), and how many
    /// lists in a row left them out.
    missing: HashMap<CallUuid, u8>,
    /// Calls whose detail answers were malformed: failures in a row, and
    /// when they may be read again.
    backoff: HashMap<CallUuid, (u32, DateTime<Utc>)>,
    last_poll: Option<DateTime<Utc>>,
    last_poll_error: Option<String>,
}

impl Discovery {
    /// Claims the one list request a poll may have in flight; false if one is.
    pub(super) fn begin_list(&mut self) -> bool {
        !std::mem::replace(&mut self.list_in_flight, true)
    }

    /// The list failed: nothing is known that was not before.
    pub(super) fn list_failed(&mut self, error: String) {
        self.list_in_flight = false;
        self.last_poll_error = Some(error);
    }

    /// The list sent at `sent_at` answered; returns the previous poll's time.
    pub(super) fn list_answered(&mut self, sent_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.list_in_flight = false;
        self.last_poll_error = None;
        self.last_poll.replace(sent_at)
    }

    /// The calls taken as live after a complete list: those `listed`, and
    /// `tracked` calls missing from this list only (one answer that leaves a
    /// call out does not end it; two consecutive ones do, as does a 404).
    /// The same pass over the tracked calls finds those no longer live, so
    /// the caller need not look again.
    pub(super) fn still_live<'a>(
        &mut self,
        listed: HashSet<CallUuid>,
        tracked: impl Iterator<Item = &'a CallUuid>,
    ) -> Reconciled {
        let mut live = listed;
        let mut missing = HashMap::new();
        let mut ended = Vec::new();
        for uuid in tracked {
            if live.contains(uuid) {
                continue;
            }
            let times = self.missing.get(uuid).copied().unwrap_or(0) + 1;
            if times < MISSING_POLLS_TO_END {
                missing.insert(uuid.clone(), times);
            } else {
                ended.push(uuid.clone());
            }
        }
        live.extend(missing.keys().cloned());
        let kept = missing.len();
        self.missing = missing;
        Reconciled { live, kept, ended }
    }

    /// Takes `live` as the live calls from now on, and drops the pauses of
    /// calls that ended.
    pub(super) fn set_live(&mut self, live: HashSet<CallUuid>) {
        self.backoff.retain(|uuid, _| live.contains(uuid));
        self.live = live;
    }

    /// The calls taken as live.
    pub(super) fn live(&self) -> &HashSet<CallUuid> {
        &self.live
    }

    /// Whether `uuid` is taken as live.
    pub(super) fn is_live(&self, uuid: &CallUuid) -> bool {
        self.live.contains(uuid)
    }

    /// Whether the latest list left `uuid` out (it is kept live one more poll).
    pub(super) fn is_missing(&self, uuid: &CallUuid) -> bool {
        self.missing.contains_key(uuid)
    }

    /// Whether a read of `uuid` is queued or in flight.
    pub(super) fn is_pending(&self, uuid: &CallUuid) -> bool {
        self.pending.contains(uuid)
    }

    /// Whether `uuid`'s details answered malformed lately and must not be
    /// read again before its pause ends.
    pub(super) fn backing_off(&self, uuid: &CallUuid, now: DateTime<Utc>) -> bool {
        self.backoff
            .get(uuid)
            .is_some_and(|(_, not_before)| *not_before > now)
    }

    /// A read of `uuid` answered: its pause, if any, is over.
    pub(super) fn read_ok(&mut self, uuid: &CallUuid) {
        self.backoff.remove(uuid);
    }

    /// A read of `uuid` answered malformed at `now`: it is read again after
    /// a pause that grows with each failure in a row. Returns the failures.
    pub(super) fn read_malformed(
        &mut self,
        uuid: &CallUuid,
        now: DateTime<Utc>,
        retry: &RetrySettings,
    ) -> u32 {
        let backoff = self.backoff.entry(uuid.clone()).or_insert((0, now));
        backoff.0 += 1;
        let pause = backoff::backoff_ceiling(backoff.0, retry);
        backoff.1 = now + TimeDelta::from_std(pause).unwrap_or_default();
        backoff.0
    }

    /// Queues one detail read, once per call, and opens a discovery batch
    /// at `now` when none is open.
    pub(super) fn enqueue(&mut self, uuid: CallUuid, fetch: Fetch, now: DateTime<Utc>) {
        if !self.pending.insert(uuid.clone()) {
            return;
        }
        match fetch {
            Fetch::Discover { urgency, .. } => {
                if self.discovering == 0 {
                    self.batch_started = Some(now);
                }
                self.discovering += 1;
                self.discoveries
                    .insert((urgency, self.queued_total), (uuid, fetch));
            }
            Fetch::Refresh => self.refreshes.push_back(uuid),
        }
        self.queued_total += 1;
    }

    /// The next read to send, while fewer than `concurrency` are in flight.
    pub(super) fn next_read(&mut self, concurrency: usize) -> Option<(CallUuid, Fetch)> {
        if self.in_flight >= concurrency {
            return None;
        }
        let refresh =
            !self.refreshes.is_empty() && (!self.discovery_turn || self.discoveries.is_empty());
        let next = if refresh {
            self.refreshes
                .pop_front()
                .map(|uuid| (uuid, Fetch::Refresh))
        } else {
            self.discoveries.pop_first().map(|(_, read)| read)
        }?;
        self.discovery_turn = refresh;
        self.in_flight += 1;
        Some(next)
    }

    /// A read of `uuid` came back (whatever its result).
    pub(super) fn read_answered(&mut self, uuid: &CallUuid) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.pending.remove(uuid);
        if self.pending.is_empty() && self.pending.capacity() > SHRINK_ABOVE {
            // A start-up read the whole fleet through these: give it back.
            self.pending.shrink_to_fit();
            self.refreshes.shrink_to_fit();
        }
    }

    /// A discovery read was taken into account; when it was the batch's
    /// last, returns the batch's held overdue calls, to be let go together.
    pub(super) fn discovered(&mut self) -> Option<Vec<CallUuid>> {
        self.discovering = self.discovering.saturating_sub(1);
        if self.discovering > 0 {
            return None;
        }
        self.batch_started = None;
        Some(std::mem::take(&mut self.batch_due))
    }

    /// Whether a call first seen at `first_seen` belongs to the open batch.
    pub(super) fn in_batch(&self, first_seen: DateTime<Utc>) -> bool {
        self.batch_started
            .is_some_and(|started| first_seen >= started)
    }

    /// Holds an overdue call of the open batch until the batch is read.
    pub(super) fn hold_for_batch(&mut self, uuid: CallUuid) {
        self.batch_due.push(uuid);
    }

    /// When the held overdue calls of the open batch are let go at the
    /// latest: one poll `interval` after the batch began, so a slow start-up
    /// (a large account under a tight rate budget) still enforces.
    pub(super) fn batch_release_at(
        &self,
        interval: TimeDelta,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if self.batch_due.is_empty() {
            return None;
        }
        Some(self.batch_started.unwrap_or(now) + interval)
    }

    /// Lets the held overdue calls go, before their batch is read.
    pub(super) fn release_batch(&mut self) -> Vec<CallUuid> {
        std::mem::take(&mut self.batch_due)
    }

    /// Whether no read is queued or in flight: a poll's reads are complete.
    pub(super) fn reads_done(&self) -> bool {
        self.discoveries.is_empty() && self.refreshes.is_empty() && self.in_flight == 0
    }

    /// Whether a list or a read is still out: a cycle of `once` waits for it.
    pub(super) fn busy(&self) -> bool {
        self.list_in_flight || !self.reads_done()
    }

    /// Calls waiting for their details, for `/status`.
    pub(super) fn pending_reads(&self) -> usize {
        self.discoveries.len() + self.refreshes.len() + self.in_flight
    }

    /// When the last poll that answered was sent.
    pub(super) fn last_poll(&self) -> Option<DateTime<Utc>> {
        self.last_poll
    }

    /// Why the last poll failed, if it did.
    pub(super) fn last_poll_error(&self) -> Option<&str> {
        self.last_poll_error.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uuid(s: &str) -> CallUuid {
        CallUuid::parse(s).unwrap()
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(s)
    }

    fn discover(urgency: Urgency) -> Fetch {
        Fetch::Discover {
            new_since: None,
            queued: false,
            urgency,
        }
    }

    /// Sends every queued read one at a time and answers it; the order read.
    fn read_all(discovery: &mut Discovery) -> Vec<(CallUuid, Fetch)> {
        let mut read = Vec::new();
        while let Some((uuid, fetch)) = discovery.next_read(1) {
            discovery.read_answered(&uuid);
            read.push((uuid, fetch));
        }
        read
    }

    #[test]
    fn a_tracked_call_ends_only_after_two_lists_leave_it_out() {
        let mut discovery = Discovery::default();
        let tracked = [uuid("a"), uuid("b")];
        let listed: HashSet<CallUuid> = [uuid("a")].into();
        let first = discovery.still_live(listed.clone(), tracked.iter());
        assert!(first.live.contains(&uuid("b")) && first.kept == 1);
        assert!(first.ended.is_empty());
        assert!(discovery.is_missing(&uuid("b")));
        let second = discovery.still_live(listed, tracked.iter());
        assert!(!second.live.contains(&uuid("b")) && second.kept == 0);
        assert_eq!(second.ended, vec![uuid("b")]);
    }

    #[test]
    fn a_batch_lets_its_overdue_calls_go_when_its_last_read_is_in() {
        let mut discovery = Discovery::default();
        let fetch = discover(Urgency::Unknown);
        discovery.enqueue(uuid("a"), fetch, t(10));
        discovery.enqueue(uuid("b"), fetch, t(11));
        discovery.enqueue(uuid("a"), fetch, t(12));
        assert_eq!(discovery.pending_reads(), 2, "each call queued once");
        assert!(discovery.in_batch(t(10)) && !discovery.in_batch(t(9)));
        let (first, _) = discovery.next_read(1).unwrap();
        assert!(
            discovery.next_read(1).is_none(),
            "one read in flight at most"
        );
        discovery.hold_for_batch(first.clone());
        assert_eq!(
            discovery.batch_release_at(TimeDelta::seconds(5), t(20)),
            Some(t(15))
        );
        discovery.read_answered(&first);
        assert_eq!(discovery.discovered(), None);
        let (second, _) = discovery.next_read(1).unwrap();
        discovery.read_answered(&second);
        assert_eq!(discovery.discovered(), Some(vec![first]));
        assert!(discovery.reads_done() && !discovery.busy());
    }

    #[test]
    fn the_calls_likeliest_due_are_read_first_and_the_rest_in_list_order() {
        let mut discovery = Discovery::default();
        let queued = [
            ("new-1", Urgency::Unknown),
            ("seen-late", urgency(false, Some(t(20)))),
            ("resumed", urgency(true, Some(t(30)))),
            ("seen-early", urgency(false, Some(t(10)))),
            ("new-2", urgency(false, None)),
        ];
        for (name, urgency) in queued {
            discovery.enqueue(uuid(name), discover(urgency), t(40));
        }
        let order: Vec<String> = read_all(&mut discovery)
            .into_iter()
            .map(|(uuid, _)| uuid.to_string())
            .collect();
        assert_eq!(
            order,
            ["resumed", "seen-early", "seen-late", "new-1", "new-2"]
        );
        assert!(discovery.reads_done());
    }

    #[test]
    fn refresh_reads_take_turns_with_first_reads() {
        let mut discovery = Discovery::default();
        for name in ["a", "b", "c"] {
            discovery.enqueue(uuid(name), discover(Urgency::Unknown), t(1));
        }
        for name in ["x", "y"] {
            discovery.enqueue(uuid(name), Fetch::Refresh, t(1));
        }
        let order: Vec<String> = read_all(&mut discovery)
            .into_iter()
            .map(|(uuid, _)| uuid.to_string())
            .collect();
        assert_eq!(order, ["x", "a", "y", "b", "c"]);
    }

    fn any_urgency() -> impl Strategy<Value = Urgency> {
        prop_oneof![
            Just(Urgency::Resumed),
            (0i64..5).prop_map(|s| Urgency::Seen(t(s))),
            Just(Urgency::Unknown),
        ]
    }

    /// One step: queue a read of call `n` (a refresh when `None`), or send
    /// and answer the next read.
    fn any_step() -> impl Strategy<Value = Option<(u8, Option<Urgency>)>> {
        proptest::option::weighted(0.7, (0u8..12, proptest::option::of(any_urgency())))
    }

    proptest! {
        #[test]
        fn every_queued_call_is_read_exactly_once(steps in proptest::collection::vec(any_step(), 0..80)) {
            let mut discovery = Discovery::default();
            let mut queued = Vec::new();
            let mut read = Vec::new();
            for step in steps {
                match step {
                    Some((n, kind)) => {
                        let call = uuid(&format!("call-{n}"));
                        let fetch = kind.map_or(Fetch::Refresh, discover);
                        if !discovery.is_pending(&call) {
                            queued.push(call.clone());
                        }
                        discovery.enqueue(call, fetch, t(0));
                    }
                    None => {
                        if let Some((call, _)) = discovery.next_read(1) {
                            discovery.read_answered(&call);
                            read.push(call);
                        }
                    }
                }
            }
            read.extend(read_all(&mut discovery).into_iter().map(|(call, _)| call));
            let key = |call: &CallUuid| call.to_string();
            read.sort_by_key(key);
            queued.sort_by_key(key);
            prop_assert_eq!(read, queued);
        }

        #[test]
        fn first_reads_go_by_urgency_then_queue_order_taking_turns_with_refreshes(
            reads in proptest::collection::vec(proptest::option::of(any_urgency()), 0..40),
        ) {
            let mut discovery = Discovery::default();
            for (n, kind) in reads.iter().enumerate() {
                discovery.enqueue(uuid(&format!("call-{n}")), kind.map_or(Fetch::Refresh, discover), t(0));
            }
            let order = read_all(&mut discovery);
            let mut expected: Vec<(Urgency, usize)> = reads
                .iter()
                .enumerate()
                .filter_map(|(n, kind)| kind.map(|urgency| (urgency, n)))
                .collect();
            expected.sort();
            let first_reads: Vec<usize> = order
                .iter()
                .filter_map(|(call, fetch)| match fetch {
                    Fetch::Discover { .. } => call.to_string()[5..].parse().ok(),
                    Fetch::Refresh => None,
                })
                .collect();
            prop_assert_eq!(first_reads, expected.iter().map(|(_, n)| *n).collect::<Vec<_>>());
            // While both kinds wait, they alternate, a refresh first.
            let refreshes = reads.iter().filter(|kind| kind.is_none()).count();
            let both = refreshes.min(expected.len());
            for (i, (call, fetch)) in order.iter().take(2 * both).enumerate() {
                prop_assert_eq!(matches!(fetch, Fetch::Refresh), i % 2 == 0, "{} read at {}", call, i);
            }
        }
    }
}
