//! Clock skew between the API server and this host, measured from the HTTP
//! `Date` header, and the conversion of API instants to local ones.
//!
//! The header has whole-second resolution and the answer spends time on the
//! wire, so each answer only bounds the offset (server − local) to an
//! interval. The estimator intersects those intervals and converts with the
//! lower bound: a call's start then looks later, i.e. the call younger, than
//! it really is — never older, so skew can delay a hangup but not advance it.

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
    }
}
