//! What one member does about one account at each tick: pure, so every
//! rule of leadership is tested without a database.

/// The lease of an account as read at the start of a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseView<'a> {
    /// Who holds (or last held) it.
    pub holder: &'a str,
    /// How long ago it expired (ms); negative while it runs.
    pub expired_for_ms: i64,
}

/// A member's move for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Ours and we stay: renew it.
    Renew,
    /// Free (or expired) and ours to take: acquire it.
    Acquire,
    /// Ours, but the preferred member is live: give it up at once.
    Release,
    /// Another member's, or free for the preferred member to take.
    Wait,
}

/// Decides `me`'s step for an account whose lease is `lease` (`None`: no
/// row yet) and whose preferred live member is `preferred`.
///
/// The preferred member takes a free lease at once. Any other member takes
/// it only once it has stayed free for `patience_ms` (the preferred member
/// had a tick to take it and did not), so an account is never left without
/// an enforcer because its preferred member is live but failing.
pub fn step(
    me: &str,
    lease: Option<LeaseView<'_>>,
    preferred: Option<&str>,
    patience_ms: i64,
) -> Step {
    let preferred_is_me = preferred.is_none_or(|p| p == me);
    match lease {
        Some(l) if l.expired_for_ms < 0 && l.holder == me => {
            if preferred_is_me {
                Step::Renew
            } else {
                Step::Release
            }
        }
        Some(l) if l.expired_for_ms < 0 => Step::Wait,
        _ if preferred_is_me => Step::Acquire,
        Some(l) if l.expired_for_ms >= patience_ms => Step::Acquire,
        Some(_) => Step::Wait,
        // Never held by anyone: the preferred member takes it; if it does
        // not, the row it would have created is missing all the same, so
        // wait a tick for it (a missing row has no expiry to measure).
        None => Step::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str) -> Option<LeaseView<'_>> {
        Some(LeaseView {
            holder,
            expired_for_ms: -1_000,
        })
    }

    fn expired(holder: &str, for_ms: i64) -> Option<LeaseView<'_>> {
        Some(LeaseView {
            holder,
            expired_for_ms: for_ms,
        })
    }

    #[test]
    fn the_holder_renews_unless_another_member_is_preferred() {
        assert_eq!(step("a", held_by("a"), Some("a"), 2000), Step::Renew);
        assert_eq!(step("a", held_by("a"), Some("b"), 2000), Step::Release);
        assert_eq!(step("a", held_by("a"), None, 2000), Step::Renew);
    }

    #[test]
    fn a_running_lease_of_another_is_left_alone() {
        assert_eq!(step("a", held_by("b"), Some("a"), 2000), Step::Wait);
        assert_eq!(step("a", held_by("b"), Some("b"), 2000), Step::Wait);
    }

    #[test]
    fn the_preferred_member_takes_a_free_lease_at_once() {
        assert_eq!(step("a", None, Some("a"), 2000), Step::Acquire);
        assert_eq!(step("a", expired("b", 0), Some("a"), 2000), Step::Acquire);
        // Its own expired lease too (it lost the database for a while).
        assert_eq!(step("a", expired("a", 10), Some("a"), 2000), Step::Acquire);
    }

    #[test]
    fn others_take_a_free_lease_only_after_patience() {
        assert_eq!(step("a", None, Some("b"), 2000), Step::Wait);
        assert_eq!(step("a", expired("c", 500), Some("b"), 2000), Step::Wait);
        assert_eq!(
            step("a", expired("c", 2000), Some("b"), 2000),
            Step::Acquire
        );
    }
}
