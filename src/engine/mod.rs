//! The enforcement engine: discovery, deadlines, enforcement.

pub mod backoff;
pub mod skew;
pub mod timers;
