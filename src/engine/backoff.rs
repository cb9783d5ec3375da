//! Retry backoff: exponential with full jitter, from a seedable source.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::config::RetrySettings;

/// The longest a retry may wait before attempt `failed + 1`, after `failed`
/// failed attempts: `min(max_backoff, initial_backoff · 2^(failed-1))`.
pub fn backoff_ceiling(failed: u32, retry: &RetrySettings) -> Duration {
    let doublings = failed.saturating_sub(1).min(32);
    retry
        .initial_backoff
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(retry.max_backoff)
        .min(retry.max_backoff)
}

/// A source of full-jitter delays; seeded in tests so runs repeat.
#[derive(Debug)]
pub struct Jitter {
    rng: StdRng,
}

impl Jitter {
    /// A jitter source seeded from `seed`, or from the OS when `None`.
    pub fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::seed_from_u64(rand::random()),
        };
        Self { rng }
    }

    /// A uniformly random delay in `[0, ceiling]`.
    pub fn delay(&mut self, ceiling: Duration) -> Duration {
        let ceiling_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.rng.random_range(0..=ceiling_us))
    }

    /// The full-jitter wait after `failed` failed attempts.
    pub fn backoff(&mut self, failed: u32, retry: &RetrySettings) -> Duration {
        self.delay(backoff_ceiling(failed, retry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn retry(initial_ms: u64, max_ms: u64) -> RetrySettings {
        RetrySettings {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(initial_ms),
            max_backoff: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let settings = retry(500, 30_000);
        let ceilings: Vec<u64> = (1..=8)
            .map(|n| backoff_ceiling(n, &settings).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }

    #[test]
    fn seeded_jitter_repeats() {
        let settings = retry(500, 30_000);
        let a: Vec<_> = {
            let mut j = Jitter::new(Some(7));
            (1..6).map(|n| j.backoff(n, &settings)).collect()
        };
        let mut j = Jitter::new(Some(7));
        let b: Vec<_> = (1..6).map(|n| j.backoff(n, &settings)).collect();
        assert_eq!(a, b);
    }

    proptest! {
        #[test]
        fn jitter_stays_within_the_ceiling(
            seed in any::<u64>(), failed in 0u32..100, initial in 1u64..10_000, max in 1u64..100_000
        ) {
            let settings = retry(initial, max);
            let mut jitter = Jitter::new(Some(seed));
            let wait = jitter.backoff(failed, &settings);
            prop_assert!(wait <= backoff_ceiling(failed, &settings));
            prop_assert!(backoff_ceiling(failed, &settings) <= settings.max_backoff);
        }
    }
}
