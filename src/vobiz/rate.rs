//! Client-side pacing on tokio time: a token bucket for the per-account
//! request budget, and the account-wide pause after a 429.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket of `rate` tokens per second holding at most `rate` tokens.
///
/// Callers reserve a token (the count may go negative) and then sleep until
/// their reservation is covered, so waiters are served in arrival order
/// without a background task.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` requests per second; `0` means no limit.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            state: Mutex::new(BucketState {
                tokens: f64::from(rate),
                updated: Instant::now(),
            }),
        }
    }

    /// Reserves one token and returns how long to wait before using it.
    pub fn reserve(&self) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        // A poisoned lock only means another task panicked mid-update; the
        // numbers inside are still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.rate).min(self.rate);
        state.updated = now;
        state.tokens -= 1.0;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / self.rate)
        }
    }

    /// Waits for one token.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
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
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_paces() {
        let bucket = TokenBucket::new(10);
        for _ in 0..10 {
            assert_eq!(bucket.reserve(), Duration::ZERO);
        }
        let wait = bucket.reserve();
        assert!(
            wait > Duration::from_millis(99) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        let start = Instant::now();
        bucket.acquire().await;
        // The second waiter queues behind the first reservation.
        assert!(Instant::now() - start >= Duration::from_millis(199));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_rate_is_unlimited() {
        let bucket = TokenBucket::new(0);
        for _ in 0..1000 {
            assert_eq!(bucket.reserve(), Duration::ZERO);
        }
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
}
