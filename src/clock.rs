//! Wall-clock time behind a trait, so the engine and the in-process
//! simulator can share one clock that tests control.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock instant.
    fn now(&self) -> DateTime<Utc>;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall-clock time that follows tokio's clock, so `tokio::time::pause()` and
/// `advance()` move it: tests run hours of call time in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin_wall: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start` now and advances with tokio's time.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self {
            origin_wall: start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.origin);
        chrono::TimeDelta::from_std(elapsed)
            .ok()
            .and_then(|delta| self.origin_wall.checked_add_signed(delta))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}
