//! The breaker: when more hangups fall due within one poll
//! interval than the safety limits allow, hold them all.

use crate::config::SafetySettings;

/// Whether `due` hangups among `live` calls exceed the safety limits.
pub fn exceeds_limits(due: usize, live: usize, safety: &SafetySettings) -> bool {
    if due > safety.max_hangups_per_cycle {
        return true;
    }
    live >= safety.breaker_min_live_calls
        && live > 0
        && (due as u128) * 100 > u128::from(safety.max_hangups_percent) * live as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safety() -> SafetySettings {
        SafetySettings {
            protected_numbers: vec![],
            max_hangups_per_cycle: 100,
            max_hangups_percent: 50,
            breaker_min_live_calls: 20,
        }
    }

    #[test]
    fn count_and_share_limits() {
        let s = safety();
        assert!(!exceeds_limits(100, 1000, &s));
        assert!(exceeds_limits(101, 1000, &s));
        assert!(!exceeds_limits(10, 20, &s));
        assert!(exceeds_limits(11, 20, &s));
        // Below the minimum, the share rule does not apply.
        assert!(!exceeds_limits(19, 19, &s));
    }
}
