//! Clock skew between the API server and this host, measured from the HTTP
//! `Date` header, and the conversion of API instants to local ones.
//!
//! The header has whole-second resolution and the answer spends time on the
//! wire, so each answer only bounds the offset (server − local) to an
//! interval. The estimator intersects those intervals and converts with the
//! lower bound: a call's start then looks later, i.e. the call younger, than
//! it really is — never older, so skew can delay a hangup but not advance it.
//!
//! An answer narrows the bound only when a server second boundary falls
//! inside its round trip, so the prober times cheap requests to make that
//! happen: [`plan_probes`] aims each at the boundary that one candidate
//! offset predicts, and whichever side of it the answer's `Date` lands on
//! cuts the interval there (a search on the phase of the server's second).
//! [`SkewTracker`] widens the bound with the time since it was measured
//! ([`DRIFT_PPM`]), so a clock drifting apart is never trusted past what was
//! measured, and asks for probes again once the bound has grown loose.

use chrono::{DateTime, TimeDelta, Utc};

/// Bounds on `server clock − local clock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkewEstimate {
    /// The offset is at least this.
    pub low: TimeDelta,
    /// The offset is at most this.
    pub high: TimeDelta,
}

impl SkewEstimate {
    /// How far apart the bounds are.
    pub fn width(self) -> TimeDelta {
        self.high - self.low
    }

    /// The bounds `elapsed` later, widened on both sides by what the two
    /// clocks may have drifted apart meanwhile.
    pub fn aged(self, elapsed: TimeDelta) -> Self {
        let drift = drift_over(elapsed);
        Self {
            low: self.low - drift,
            high: self.high + drift,
        }
    }

    /// The bounds one answer gives: the server wrote `date` (truncated to
    /// the second) at some local instant between `sent_at` and `received_at`.
    pub fn from_answer(
        date: DateTime<Utc>,
        sent_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
    ) -> Self {
        Self {
            low: date - received_at,
            high: date + TimeDelta::seconds(1) - sent_at,
        }
    }

    /// Narrows the estimate with a new answer. When the two disagree the
    /// server clock has been stepped: the new answer alone is trusted.
    pub fn update(self, sample: Self) -> Self {
        let low = self.low.max(sample.low);
        let high = self.high.min(sample.high);
        if low <= high {
            Self { low, high }
        } else {
            sample
        }
    }

    /// Converts an instant on the server's clock to the local clock, choosing
    /// the latest local instant the bounds allow.
    pub fn to_local(self, server_instant: DateTime<Utc>) -> DateTime<Utc> {
        server_instant - self.low
    }

    /// [`Self::to_local`], but never earlier than the instant as written.
    ///
    /// The `Date` header and the call timestamps may come from different
    /// clocks (a front end and the telephony host), so a `Date` that runs
    /// ahead proves nothing about the timestamps. A correction is applied
    /// only when it makes a call look younger; when the server's clock
    /// really is ahead, its timestamps then lie in the future, which the
    /// mismatch check catches (calls are timed from first sight: late,
    /// never early).
    pub fn to_local_never_older(self, server_instant: DateTime<Utc>) -> DateTime<Utc> {
        self.to_local(server_instant).max(server_instant)
    }
}

/// The no-information estimate: local and server clocks agree exactly.
/// Used until the first `Date` header arrives.
pub const NO_SKEW: SkewEstimate = SkewEstimate {
    low: TimeDelta::zero(),
    high: TimeDelta::zero(),
};

/// The fastest the two clocks are assumed to drift apart, in parts per
/// million: quartz oscillators are specified within ±100 ppm. A clock
/// stepped or slewed faster shows up as answers that contradict the bound,
/// which then restarts from the newest answer.
pub const DRIFT_PPM: i64 = 200;

/// The prober stops once the bound is this narrow.
pub const PROBE_TARGET: TimeDelta = TimeDelta::milliseconds(20);

/// The prober starts again once drift has widened the bound to this (or to
/// twice what the last probing reached, when round trips kept it wider).
pub const PROBE_RECHECK: TimeDelta = TimeDelta::milliseconds(40);

/// Probes per round: each round cuts the bound into this many plus one parts.
pub const PROBES_PER_ROUND: usize = 3;

/// What the clocks may drift apart in `elapsed` (rounded up to the microsecond).
fn drift_over(elapsed: TimeDelta) -> TimeDelta {
    let micros = elapsed.num_microseconds().unwrap_or(i64::MAX).max(0);
    TimeDelta::microseconds(micros.saturating_mul(DRIFT_PPM).div_euclid(1_000_000) + 1)
}

/// The skew bound over time: the intersection of every answer's bounds,
/// each aged by the drift since it was measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkewTracker {
    /// The bound as of `at`, if any answer carried a `Date`.
    measured: Option<(SkewEstimate, DateTime<Utc>)>,
    /// The round trip of the latest answer, to aim probes with.
    round_trip: TimeDelta,
    /// While probing: the bound's width when the current round was planned.
    round_started: Option<TimeDelta>,
    /// Probing starts again above this width (`None`: [`PROBE_RECHECK`]).
    recheck: Option<TimeDelta>,
}

impl SkewTracker {
    /// Takes one answer's `Date` into account.
    pub fn observe(
        &mut self,
        date: DateTime<Utc>,
        sent_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
    ) {
        let sample = SkewEstimate::from_answer(date, sent_at, received_at);
        let at = received_at;
        let estimate = match self.measured {
            Some((old, old_at)) if old_at <= at => old.aged(at - old_at).update(sample),
            // An answer older than the bound: age the sample instead.
            Some((old, old_at)) => sample.aged(old_at - at).update(old),
            None => sample,
        };
        let at = self.measured.map_or(at, |(_, old_at)| old_at.max(at));
        self.measured = Some((estimate, at));
        self.round_trip = (received_at - sent_at).max(TimeDelta::zero());
    }

    /// The bound at `now`: as measured, aged by the drift since.
    pub fn current(&self, now: DateTime<Utc>) -> Option<SkewEstimate> {
        self.measured
            .map(|(estimate, at)| estimate.aged((now - at).max(TimeDelta::zero())))
    }

    /// The next round of probes, if the bound needs narrowing at `now`;
    /// called when the previous round's answers are all in.
    ///
    /// Probing runs from a bound wider than the re-check width down to
    /// [`PROBE_TARGET`]. A round that cut the bound by less than a tenth
    /// shows that round trips, not the phase, limit it: probing then stops
    /// until drift has doubled the bound, rather than spend the budget for
    /// nothing.
    pub fn plan(&mut self, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let Some(estimate) = self.current(now) else {
            return Vec::new();
        };
        let width = estimate.width();
        match self.round_started {
            None if width <= self.recheck.unwrap_or(PROBE_RECHECK) => return Vec::new(),
            Some(_) if width <= PROBE_TARGET => {
                self.round_started = None;
                self.recheck = None;
                return Vec::new();
            }
            Some(previous) if width * 10 > previous * 9 => {
                self.round_started = None;
                self.recheck = Some((width * 2).max(PROBE_RECHECK));
                return Vec::new();
            }
            _ => {}
        }
        self.round_started = Some(width);
        plan_probes(estimate, now, self.round_trip, PROBES_PER_ROUND)
    }
}

/// When to send `probes` requests (local instants, from `now` on) so that
/// each one's answer cuts `estimate`: probe `j` assumes the offset is the
/// `j`-th of `probes` points evenly inside the bound and is timed so the
/// server passes a whole second half a round trip after sending — when the
/// answer is most likely written. A `Date` of the second before that
/// boundary proves the offset below the assumed point, one of the second
/// after proves it above; either way the bound shrinks to about one part
/// plus a round trip.
pub fn plan_probes(
    estimate: SkewEstimate,
    now: DateTime<Utc>,
    round_trip: TimeDelta,
    probes: usize,
) -> Vec<DateTime<Utc>> {
    let half_trip = round_trip / 2;
    let parts = i32::try_from(probes).unwrap_or(i32::MAX).saturating_add(1);
    let mut plan = (1..parts)
        .filter_map(|j| {
            let assumed = estimate.low + estimate.width() * j / parts;
            // The server's clock when a request sent now would be answered.
            let server = now.checked_add_signed(half_trip + assumed)?;
            let boundary = next_whole_second(server)?;
            boundary.checked_sub_signed(half_trip + assumed)
        })
        .collect::<Vec<_>>();
    plan.sort();
    plan
}

/// The first instant at or after `t` with no fraction of a second.
fn next_whole_second(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if t.timestamp_subsec_nanos() == 0 {
        Some(t)
    } else {
        DateTime::from_timestamp(t.timestamp().checked_add(1)?, 0)
    }
}

/// How far a new call's apparent age may exceed what the previous poll
/// allows before the clocks or zones are declared mismatched.
pub const MISMATCH_TOLERANCE: TimeDelta = TimeDelta::seconds(60);

/// Why a call's timestamps cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The call started in the future.
    StartInFuture {
        /// By how much.
        ahead: TimeDelta,
    },
    /// The call was not in the previous poll but looks older than that poll.
    TooOldForNewCall {
        /// Its apparent age.
        age: TimeDelta,
        /// The most it can be.
        bound: TimeDelta,
    },
    /// `call_duration` and `answer_time` disagree.
    DurationDisagrees {
        /// Seconds since answer by the timestamps.
        by_timestamps: i64,
        /// Seconds by `call_duration`.
        by_duration: u64,
    },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::StartInFuture { ahead } => {
                write!(f, "call starts {}s in the future", ahead.num_seconds())
            }
            Self::TooOldForNewCall { age, bound } => write!(
                f,
                "new call looks {}s old but was absent from a poll {}s ago",
                age.num_seconds(),
                bound.num_seconds()
            ),
            Self::DurationDisagrees {
                by_timestamps,
                by_duration,
            } => write!(
                f,
                "answer_time says {by_timestamps}s but call_duration says {by_duration}s"
            ),
        }
    }
}

/// Checks one call's local start/answer instants for a clock or zone
/// mismatch (start in the future, or older than the time since the previous
/// poll allows). `new_since` is the local time of the previous
/// successful poll when the call was absent from it.
pub fn check_mismatch(
    started: Option<DateTime<Utc>>,
    answered: Option<DateTime<Utc>>,
    duration_s: Option<u64>,
    now: DateTime<Utc>,
    new_since: Option<DateTime<Utc>>,
) -> Option<Mismatch> {
    for instant in [started, answered].into_iter().flatten() {
        let ahead = instant - now;
        if ahead > MISMATCH_TOLERANCE {
            return Some(Mismatch::StartInFuture { ahead });
        }
    }
    if let (Some(start), Some(previous_poll)) = (started, new_since) {
        let age = now - start;
        let bound = now - previous_poll;
        if age > bound + MISMATCH_TOLERANCE {
            return Some(Mismatch::TooOldForNewCall { age, bound });
        }
    }
    if let (Some(answer), Some(duration)) = (answered, duration_s) {
        let by_timestamps = (now - answer).num_seconds();
        let gap = by_timestamps.abs_diff(i64::try_from(duration).unwrap_or(i64::MAX));
        if gap > MISMATCH_TOLERANCE.num_seconds().unsigned_abs() {
            return Some(Mismatch::DurationDisagrees {
                by_timestamps,
                by_duration: duration,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::milliseconds(ms)
    }

    #[test]
    fn server_five_minutes_ahead_is_corrected() {
        // Server is 300.4 s ahead; answer took 20 ms.
        let sent = at(1_000_000);
        let received = at(1_000_020);
        let date = at(1_300_000); // true server time 1_300_410, truncated
        let est = SkewEstimate::from_answer(date, sent, received);
        let server_start = at(1_300_410 - 60_000); // call began 60 s ago
        let local_start = est.to_local(server_start);
        let age = received - local_start;
        assert!(age <= TimeDelta::seconds(60), "looks older: {age}");
        assert!(age >= TimeDelta::seconds(59), "too young: {age}");
    }

    #[test]
    fn a_date_header_running_ahead_never_makes_a_call_older() {
        // Date says +300 s, the timestamps are true: no correction.
        let est = SkewEstimate::from_answer(at(1_300_000), at(1_000_000), at(1_000_020));
        assert_eq!(est.to_local_never_older(at(940_000)), at(940_000));
        // Date says -300 s: the correction makes the call younger, so it holds.
        let est = SkewEstimate::from_answer(at(700_000), at(1_000_000), at(1_000_020));
        assert_eq!(
            est.to_local_never_older(at(640_000)),
            est.to_local(at(640_000))
        );
    }

    #[test]
    fn disagreeing_sample_resets_the_estimate() {
        let a = SkewEstimate::from_answer(at(10_000), at(0), at(10));
        let b = SkewEstimate::from_answer(at(500_000), at(20_000), at(20_010));
        assert_eq!(a.update(b), b);
    }

    #[test]
    fn mismatch_detects_future_start_and_old_new_call() {
        let now = at(1_000_000);
        assert!(matches!(
            check_mismatch(Some(at(1_200_000)), None, None, now, None),
            Some(Mismatch::StartInFuture { .. })
        ));
        assert!(matches!(
            check_mismatch(Some(at(0)), None, None, now, Some(at(995_000))),
            Some(Mismatch::TooOldForNewCall { .. })
        ));
        assert_eq!(
            check_mismatch(Some(at(990_000)), None, None, now, Some(at(995_000))),
            None
        );
        assert!(matches!(
            check_mismatch(None, Some(at(0)), Some(10), now, None),
            Some(Mismatch::DurationDisagrees { .. })
        ));
    }

    #[test]
    fn aging_widens_the_bound_by_the_drift_on_each_side() {
        let est = SkewEstimate {
            low: TimeDelta::milliseconds(100),
            high: TimeDelta::milliseconds(110),
        };
        let aged = est.aged(TimeDelta::seconds(100));
        // 200 ppm of 100 s is 20 ms (plus a microsecond of rounding).
        assert_eq!(aged.low, TimeDelta::microseconds(79_999));
        assert_eq!(aged.high, TimeDelta::microseconds(130_001));
    }

    #[test]
    fn probes_aim_at_the_boundaries_the_candidate_offsets_predict() {
        // Offset somewhere in [-0.2 s, 0.6 s); round trip 10 ms.
        let est = SkewEstimate {
            low: TimeDelta::milliseconds(-200),
            high: TimeDelta::milliseconds(600),
        };
        let now = at(1_000_300);
        let plan = plan_probes(est, now, TimeDelta::milliseconds(10), 3);
        // Candidates 0 ms, 200 ms, 400 ms: the server passes 1001 s (local
        // 1_000_995 ms minus the candidate) half a round trip after sending.
        assert_eq!(plan, vec![at(1_000_595), at(1_000_795), at(1_000_995)]);
        assert!(plan
            .iter()
            .all(|t| *t >= now && *t < now + TimeDelta::seconds(1)));
    }

    #[test]
    fn the_tracker_probes_until_the_target_and_again_after_drift() {
        let mut tracker = SkewTracker::default();
        assert!(tracker.plan(at(0)).is_empty(), "nothing to aim with yet");
        tracker.observe(at(5_000), at(4_700), at(4_710));
        assert_eq!(tracker.plan(at(4_710)).len(), PROBES_PER_ROUND);
        // An answer whose second began after it was sent: [-710 ms, 300 ms],
        // which cuts the bound to [290 ms, 300 ms] (plus a second's drift).
        tracker.observe(at(5_000), at(5_700), at(5_710));
        let width = tracker.current(at(5_700)).unwrap().width();
        assert!(width <= PROBE_TARGET, "{width}");
        assert!(tracker.plan(at(5_700)).is_empty());
        // 200 ppm widens it by 0.4 ms a second: past 40 ms after ~75 s.
        assert!(tracker.plan(at(60_000)).is_empty());
        assert_eq!(tracker.plan(at(90_000)).len(), PROBES_PER_ROUND);
    }

    #[test]
    fn probing_stops_when_round_trips_keep_the_bound_wide() {
        // Every answer takes 300 ms: the bound cannot get much below that.
        let offset_us = 123_456;
        let mut tracker = SkewTracker::default();
        let answer = |tracker: &mut SkewTracker, sent_us: i64| {
            let written_us = sent_us + 150_000;
            tracker.observe(
                date_at(written_us, offset_us),
                at_us(sent_us),
                at_us(sent_us + 300_000),
            );
        };
        let mut now_us = 1_000_000_000_000;
        answer(&mut tracker, now_us);
        now_us += 300_000;
        let mut rounds = 0;
        loop {
            let plan = tracker.plan(at_us(now_us));
            if plan.is_empty() {
                break;
            }
            rounds += 1;
            assert!(rounds <= 8, "still probing after {rounds} rounds");
            for probe in plan {
                let sent_us = (probe - DateTime::<Utc>::UNIX_EPOCH)
                    .num_microseconds()
                    .unwrap();
                answer(&mut tracker, sent_us);
                now_us = now_us.max(sent_us + 300_000);
            }
        }
        let width = tracker.current(at_us(now_us)).unwrap().width();
        assert!(width > PROBE_TARGET, "{width}");
        // Drift alone does not restart it until the bound has doubled.
        assert!(tracker.plan(at_us(now_us + 10_000_000)).is_empty());
        let doubled = now_us + (width.num_microseconds().unwrap() / 400) * 1_000_000 + 10_000_000;
        assert_eq!(tracker.plan(at_us(doubled)).len(), PROBES_PER_ROUND);
    }

    /// The `Date` an answer written at local instant `written_ms` carries
    /// when the server's clock is `offset_us` ahead.
    fn date_at(written_us: i64, offset_us: i64) -> DateTime<Utc> {
        let server_us = written_us + offset_us;
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(server_us.div_euclid(1_000_000))
    }

    fn at_us(us: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::microseconds(us)
    }

    proptest! {
        // Whatever the true offset and wire delays, the converted start is
        // never earlier than the true local start: calls never look older.
        #[test]
        fn conversion_never_makes_a_call_older(
            offset_ms in -600_000i64..600_000,
            samples in proptest::collection::vec((0i64..100_000, 0i64..2_000, 0i64..2_000), 1..20),
            age_ms in 0i64..10_000_000,
        ) {
            let mut estimate: Option<SkewEstimate> = None;
            let mut now = 0;
            for (gap, before, after) in samples {
                now += gap;
                let sent = now;
                let written = now + before; // local instant the server wrote Date
                let received = written + after;
                let server_written = written + offset_ms;
                let date = at(server_written.div_euclid(1000) * 1000);
                let sample = SkewEstimate::from_answer(date, at(sent), at(received));
                estimate = Some(match estimate { Some(e) => e.update(sample), None => sample });
                now = received;
            }
            let estimate = estimate.unwrap();
            let true_local_start = now - age_ms;
            let server_start = at(true_local_start + offset_ms);
            prop_assert!(estimate.to_local(server_start) >= at(true_local_start));
        }

        // Probing converges: from one answer at start, rounds of probes
        // sent when the planner says, with answers written anywhere inside
        // their round trips, bound the offset to within 20 ms plus the
        // round trip in four rounds (under 5 s), and the bound contains the
        // true offset after every answer: calls never look older.
        #[test]
        fn probing_converges_and_always_contains_the_truth(
            offset_us in -600_000_000i64..600_000_000,
            start_us in 1_000_000_000_000i64..1_000_100_000_000,
            max_trip_us in 200i64..10_000,
            jitter in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 64),
        ) {
            let mut jitter = jitter.into_iter().cycle();
            let mut draw = |sent_us: i64| {
                let (trip, write) = jitter.next().unwrap();
                let trip_us = (trip * max_trip_us as f64) as i64;
                let written_us = sent_us + (write * trip_us as f64) as i64;
                (date_at(written_us, offset_us), sent_us + trip_us)
            };
            let mut tracker = SkewTracker::default();
            let (date, received_us) = draw(start_us);
            tracker.observe(date, at_us(start_us), at_us(received_us));
            let mut now_us = received_us;
            let truth = TimeDelta::microseconds(offset_us);
            for _round in 0..4 {
                let planned_at = now_us;
                let plan = tracker.plan(at_us(planned_at));
                for probe in plan {
                    let sent_us = (probe - DateTime::<Utc>::UNIX_EPOCH).num_microseconds().unwrap();
                    prop_assert!(sent_us >= planned_at);
                    let (date, received_us) = draw(sent_us);
                    tracker.observe(date, at_us(sent_us), at_us(received_us));
                    let bound = tracker.current(at_us(received_us)).unwrap();
                    prop_assert!(bound.low <= truth && truth <= bound.high,
                        "{bound:?} excludes {truth}");
                    now_us = now_us.max(received_us);
                }
            }
            let bound = tracker.current(at_us(now_us)).unwrap();
            prop_assert!(bound.low <= truth && truth <= bound.high);
            prop_assert!(
                bound.width() <= PROBE_TARGET + TimeDelta::microseconds(2 * max_trip_us),
                "{} wide after four rounds", bound.width()
            );
            prop_assert!(now_us - start_us <= 5_000_000, "took {} us", now_us - start_us);
        }
    }
}
