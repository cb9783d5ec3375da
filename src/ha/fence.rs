//! Leader self-fencing: a leader stops enforcing before its lease can have
//! expired on the database clock, without asking the database.
//!
//! The lease's expiry is set by the database when it runs the renewal, which
//! is at or after the moment the renewal was sent. Counting the lease time
//! from the moment of sending therefore never overshoots the real expiry,
//! whatever the network delay was; the margin absorbs clock-rate drift and
//! the time one DELETE takes to leave after the last check.

use std::time::{Duration, Instant};

/// When a leader may enforce, given when its last successful renewal was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfFence {
    /// The lease time the database grants on each renewal.
    pub ttl: Duration,
    /// Stop this long before the lease could expire.
    pub margin: Duration,
}

impl SelfFence {
    /// A fence with the default margin: a third of the lease, at most 2 s.
    pub fn new(ttl: Duration) -> SelfFence {
        SelfFence {
            ttl,
            margin: default_margin(ttl),
        }
    }

    /// The instant enforcement must stop, for a renewal sent at `sent`.
    pub fn deadline(&self, sent: Instant) -> Instant {
        sent + self.ttl.saturating_sub(self.margin)
    }

    /// Whether enforcing is allowed at `now`; `None` = never renewed.
    pub fn may_enforce(&self, now: Instant, last_renewal_sent: Option<Instant>) -> bool {
        match last_renewal_sent {
            Some(sent) => now < self.deadline(sent),
            None => false,
        }
    }
}

/// The default margin for a lease of `ttl`: a third, capped at 2 s.
pub fn default_margin(ttl: Duration) -> Duration {
    (ttl / 3).min(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_when_the_renewal_was_sent() {
        let fence = SelfFence {
            ttl: Duration::from_secs(6),
            margin: Duration::from_secs(2),
        };
        let sent = Instant::now();
        assert!(fence.may_enforce(sent, Some(sent)));
        assert!(fence.may_enforce(sent + Duration::from_millis(3999), Some(sent)));
        assert!(!fence.may_enforce(sent + Duration::from_secs(4), Some(sent)));
        assert!(!fence.may_enforce(sent + Duration::from_secs(60), Some(sent)));
    }

    #[test]
    fn a_slow_answer_does_not_extend_the_lease() {
        // Sent at t, answered at t+3s: the lease still ends at t+ttl on the
        // database, so the deadline is measured from t, not t+3s.
        let fence = SelfFence::new(Duration::from_secs(6));
        let sent = Instant::now();
        let answered = sent + Duration::from_secs(3);
        assert_eq!(fence.deadline(sent), sent + Duration::from_secs(4));
        assert!(fence.deadline(sent) < answered + Duration::from_secs(6) - fence.margin);
    }

    #[test]
    fn never_renewed_never_enforces() {
        let fence = SelfFence::new(Duration::from_secs(6));
        assert!(!fence.may_enforce(Instant::now(), None));
    }

    #[test]
    fn margin_larger_than_ttl_fences_at_once() {
        let fence = SelfFence {
            ttl: Duration::from_secs(1),
            margin: Duration::from_secs(5),
        };
        let sent = Instant::now();
        assert!(!fence.may_enforce(sent, Some(sent)));
    }

    #[test]
    fn default_margin_is_a_third_capped() {
        assert_eq!(
            default_margin(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(
            default_margin(Duration::from_secs(60)),
            Duration::from_secs(2)
        );
    }
}
