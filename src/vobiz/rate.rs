//! Client-side pacing on tokio time: a token bucket for the per-account
//! request budget with a priority lane for enforcement, and the account-wide
//! pause after a 429.
//!
//! Enforcement requests (the re-read of a due call, the DELETE, Speak) take
//! the next token ahead of every waiting discovery read, and discovery
//! leaves half the bucket to them: a hangup (two requests) or a few that
//! fall due together while discovery saturates the budget are sent at once.
//! Discovery keeps the whole rate over time; only its bursts are smaller.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Which queue a request waits in for the account's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Acting on a due call: the re-read before a hangup, the DELETE, Speak.
    Enforce,
    /// Finding calls: list reads, detail reads, refreshes, clock probes.
    Discover,
}

/// A share of a token this small counts as whole: float rounding must not
/// send a waiter to sleep for a nanosecond in a loop.
const EPSILON: f64 = 1e-6;

/// The pure arithmetic of the two-lane bucket: `rate` tokens per second,
/// at most `rate` held, and a reserve of [`reserve_for`] tokens that only
/// enforcement may use.
#[derive(Debug, Clone)]
pub struct Budget {
    rate: f64,
    reserve: f64,
    tokens: f64,
    updated: Instant,
}

impl Budget {
    /// A full budget of `rate` (> 0) requests per second at `now`.
    pub fn new(rate: u32, now: Instant) -> Self {
        let rate = rate.max(1);
        Self {
            rate: f64::from(rate),
            reserve: f64::from(reserve_for(rate)),
            tokens: f64::from(rate),
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.updated = self.updated.max(now);
    }

    /// Takes the next token for an enforcement request and returns how long
    /// to wait before using it: it queues only behind earlier enforcement.
    /// The count may go negative; discovery then waits until it is repaid.
    pub fn take_enforce(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            wait_for(-self.tokens / self.rate)
        }
    }

    /// Takes a token for a discovery request if one beyond the reserve is
    /// free; otherwise says how long until one may be (enforcement can still
    /// take it first, so the caller asks again then).
    pub fn try_take_discover(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let needed = 1.0 + self.reserve;
        if self.tokens + EPSILON >= needed {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(wait_for((needed - self.tokens) / self.rate))
        }
    }
}

/// The tokens discovery leaves to enforcement at `rate` requests per second:
/// half the bucket, rounded down (none at 1 request per second, where the
/// bucket holds a single token).
pub fn reserve_for(rate: u32) -> u32 {
    rate / 2
}

/// `seconds` rounded up to the next whole microsecond, so a waiter always
/// sleeps long enough to find its token.
fn wait_for(seconds: f64) -> Duration {
    let micros = (seconds * 1e6).ceil();
    if micros.is_finite() && micros > 0.0 {
        // Bounded: a deficit of at most a few thousand tokens at >= 1/s.
        Duration::from_micros(micros as u64)
    } else {
        Duration::from_micros(1)
    }
}

/// A two-lane token bucket shared by every request of one account.
#[derive(Debug)]
pub struct TokenBucket {
    /// `None`: no limit.
    budget: Option<Mutex<Budget>>,
    /// Discovery waiters are served one at a time, in arrival order.
    discovery_turn: tokio::sync::Mutex<()>,
}

impl TokenBucket {
    /// A full bucket of `rate` requests per second; `0` means no limit.
    pub fn new(rate: u32) -> Self {
        Self {
            budget: (rate > 0).then(|| Mutex::new(Budget::new(rate, Instant::now()))),
            discovery_turn: tokio::sync::Mutex::new(()),
        }
    }

    fn with_budget<T>(budget: &Mutex<Budget>, f: impl FnOnce(&mut Budget) -> T) -> T {
        // A poisoned lock only means another task panicked mid-update; the
        // numbers inside are still usable.
        let mut budget = budget.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut budget)
    }

    /// Waits for one token in `lane`.
    pub async fn acquire(&self, lane: Lane) {
        let Some(budget) = &self.budget else {
            return;
        };
        match lane {
            Lane::Enforce => {
                let wait = Self::with_budget(budget, |b| b.take_enforce(Instant::now()));
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            Lane::Discover => {
                let _turn = self.discovery_turn.lock().await;
                while let Err(wait) =
                    Self::with_budget(budget, |b| b.try_take_discover(Instant::now()))
                {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The instant until which every request of an account waits (after a 429).
#[derive(Debug, Default)]
pub struct Pause {
    until: Mutex<Option<Instant>>,
}

impl Pause {
    /// Extends the pause to at least `now + length`.
    pub fn extend(&self, length: Duration) {
        let target = Instant::now() + length;
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if until.is_none_or(|current| current < target) {
            *until = Some(target);
        }
    }

    /// Waits while a pause is in force (re-checking, since it may be extended).
    pub async fn wait(&self) {
        loop {
            let until = *self.until.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn discovery_bursts_to_the_reserve_then_paces() {
        let start = Instant::now();
        let mut budget = Budget::new(10, start);
        for _ in 0..5 {
            assert_eq!(budget.try_take_discover(start), Ok(()));
        }
        // The other five tokens are the reserve.
        let wait = budget.try_take_discover(start).unwrap_err();
        assert!(wait > 99 * MS && wait <= 100 * MS, "{wait:?}");
        // Enforcement takes them at once.
        for _ in 0..5 {
            assert_eq!(budget.take_enforce(start), Duration::ZERO);
        }
        // Discovery now needs six tokens' worth of refill.
        let wait = budget.try_take_discover(start).unwrap_err();
        assert!(wait > 599 * MS && wait <= 600 * MS, "{wait:?}");
        assert_eq!(budget.try_take_discover(start + wait), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn enforcement_queues_only_behind_enforcement() {
        let start = Instant::now();
        let mut budget = Budget::new(10, start);
        for _ in 0..10 {
            assert_eq!(budget.take_enforce(start), Duration::ZERO);
        }
        let first = budget.take_enforce(start);
        let second = budget.take_enforce(start);
        assert!(first > 99 * MS && first <= 100 * MS, "{first:?}");
        assert!(second > 199 * MS && second <= 200 * MS, "{second:?}");
        // Discovery waits until both are repaid and the reserve refilled.
        let wait = budget.try_take_discover(start).unwrap_err();
        assert!(wait > 799 * MS && wait <= 800 * MS, "{wait:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn one_request_per_second_has_no_reserve() {
        let start = Instant::now();
        let mut budget = Budget::new(1, start);
        assert_eq!(budget.try_take_discover(start), Ok(()));
        assert_eq!(budget.try_take_discover(start), Err(Duration::from_secs(1)));
        assert_eq!(budget.take_enforce(start), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_hangup_overtakes_waiting_discovery_reads() {
        let bucket = Arc::new(TokenBucket::new(2));
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |lane: Lane, name: &'static str| {
            let bucket = Arc::clone(&bucket);
            let order = Arc::clone(&order);
            tokio::spawn(async move {
                bucket.acquire(lane).await;
                order.lock().unwrap().push((name, Instant::now()));
            })
        };
        let start = Instant::now();
        let mut tasks: Vec<_> = (0..6).map(|_| spawn(Lane::Discover, "read")).collect();
        tokio::time::sleep(10 * MS).await;
        tasks.push(spawn(Lane::Enforce, "reread"));
        tasks.push(spawn(Lane::Enforce, "delete"));
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let names: Vec<&str> = order.iter().map(|(n, _)| *n).collect();
        // One read at once (the other token is the reserve), then the
        // re-read takes the reserve and the DELETE the next token.
        assert_eq!(
            names,
            ["read", "reread", "delete", "read", "read", "read", "read", "read"]
        );
        assert_eq!(order[1].1 - start, 10 * MS);
        assert!(order[2].1 - start <= Duration::from_millis(510));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_rate_is_unlimited() {
        let bucket = TokenBucket::new(0);
        let start = Instant::now();
        for _ in 0..1000 {
            bucket.acquire(Lane::Discover).await;
            bucket.acquire(Lane::Enforce).await;
        }
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn pause_waits_for_the_longest_extension() {
        let pause = Pause::default();
        let start = Instant::now();
        pause.wait().await;
        assert_eq!(Instant::now(), start);
        pause.extend(Duration::from_secs(2));
        pause.extend(Duration::from_secs(1));
        pause.wait().await;
        assert!(Instant::now() - start >= Duration::from_secs(2));
    }

    /// Serves `arrivals` (ms after start, lane, in time order) through the
    /// budget the way [`TokenBucket::acquire`] does: enforcement reserves at
    /// arrival; discovery waits one at a time, in order, asking again after
    /// each wait. Returns each request's grant time in ms.
    fn serve(rate: u32, arrivals: &[(f64, Lane)]) -> Vec<f64> {
        let origin = Instant::now();
        let at = |ms: f64| origin + Duration::from_secs_f64(ms / 1000.0);
        let ms = |t: Instant| (t - origin).as_secs_f64() * 1000.0;
        let mut budget = Budget::new(rate, origin);
        let mut granted = vec![f64::NAN; arrivals.len()];
        let mut waiting = std::collections::VecDeque::new();
        // When the first waiting discovery read next asks for a token.
        let mut asks = 0.0;
        let mut next = 0;
        while next < arrivals.len() || !waiting.is_empty() {
            let arrival = arrivals.get(next).map(|(t, _)| *t);
            // Arrivals first at equal times, as a waking task would see them.
            if arrival.is_some_and(|t| waiting.is_empty() || t <= asks) {
                let (t, lane) = arrivals[next];
                match lane {
                    Lane::Enforce => granted[next] = ms(at(t) + budget.take_enforce(at(t))),
                    Lane::Discover => {
                        if waiting.is_empty() {
                            asks = t;
                        }
                        waiting.push_back(next);
                    }
                }
                next += 1;
            } else if let Some(&head) = waiting.front() {
                match budget.try_take_discover(at(asks)) {
                    Ok(()) => {
                        granted[head] = asks;
                        waiting.pop_front();
                    }
                    Err(wait) => asks = ms(at(asks) + wait),
                }
            }
        }
        granted
    }

    fn lane() -> impl Strategy<Value = Lane> {
        prop_oneof![Just(Lane::Enforce), Just(Lane::Discover)]
    }

    fn sorted(mut arrivals: Vec<(f64, Lane)>) -> Vec<(f64, Lane)> {
        arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
        arrivals
    }

    proptest! {
        // The budget holds: in any window, at most `rate` tokens (the burst)
        // plus what the window refills are granted, whatever the mix.
        #[test]
        fn the_rate_is_never_exceeded(
            rate in 1u32..20,
            arrivals in proptest::collection::vec((0.0f64..5_000.0, lane()), 1..80),
        ) {
            let mut granted = serve(rate, &sorted(arrivals));
            granted.sort_by(f64::total_cmp);
            for (a, &from) in granted.iter().enumerate() {
                for (b, &to) in granted.iter().enumerate().skip(a) {
                    let allowed = f64::from(rate) * (1.0 + (to - from) / 1000.0);
                    prop_assert!((b - a + 1) as f64 <= allowed + 1e-6,
                        "{} grants in [{from}, {to}] at {rate}/s", b - a + 1);
                }
            }
        }

        // Discovery alone still gets the whole rate over time: every read
        // is served, none later than the budget allows.
        #[test]
        fn discovery_alone_is_served_at_the_full_rate(
            rate in 1u32..20,
            reads in 1usize..60,
        ) {
            let granted = serve(rate, &vec![(0.0, Lane::Discover); reads]);
            let last = granted.iter().copied().fold(0.0, f64::max);
            let burst = f64::from(rate - reserve_for(rate));
            let tokens_needed = (reads as f64 - burst + 1.0).max(0.0);
            // Waits are rounded up to the microsecond.
            prop_assert!(last <= tokens_needed * 1000.0 / f64::from(rate) + reads as f64 * 0.001,
                "{reads} reads at {rate}/s: last at {last} ms");
        }

        // Due calls never queue behind discovery, however many reads wait:
        // a cluster of enforcement requests (re-reads and DELETEs of calls
        // due together) finds the reserve, so request j of the cluster waits
        // only for the j + 1 - reserve tokens that the reserve lacks.
        #[test]
        fn due_calls_are_served_ahead_of_any_discovery_backlog(
            rate in 2u32..20,
            reads in proptest::collection::vec(0.0f64..20_000.0, 0..200),
            clusters in proptest::collection::vec(
                (0.0f64..1_000.0, proptest::collection::vec(0.0f64..50.0, 1..4)), 1..4),
        ) {
            // Clusters at least 4 s apart: each finds the reserve refilled.
            let mut arrivals: Vec<(f64, Lane)> =
                reads.into_iter().map(|t| (t, Lane::Discover)).collect();
            let mut cluster_of = Vec::new();
            for (k, (offset, gaps)) in clusters.iter().enumerate() {
                let mut t = 5_000.0 * k as f64 + offset;
                for gap in gaps {
                    t += gap;
                    arrivals.push((t, Lane::Enforce));
                    cluster_of.push((t, k));
                }
            }
            let arrivals = sorted(arrivals);
            let granted = serve(rate, &arrivals);
            let reserve = f64::from(reserve_for(rate));
            let mut position = vec![0usize; clusters.len()];
            for ((t, lane), g) in arrivals.iter().zip(&granted) {
                if *lane != Lane::Enforce {
                    continue;
                }
                let k = cluster_of.iter().find(|(at, _)| at == t).map(|(_, k)| *k).unwrap();
                let j = position[k] as f64;
                position[k] += 1;
                let allowed = (j + 1.0 - reserve).max(0.0) * 1000.0 / f64::from(rate);
                prop_assert!(g - t <= allowed + 0.01,
                    "request {j} of cluster {k} waited {} ms (allowed {allowed})", g - t);
            }
        }
    }
}
