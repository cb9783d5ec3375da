//! High availability on PostgreSQL: building blocks, not yet wired into the
//! daemon.
//!
//! Several hosts run the same config; each account is enforced by the one
//! member that holds its lease. The pieces here are the database side
//! ([`db`]: connection with keepalives, [`schema`] migrations, the lease
//! upsert, the fenced intent insert, member heartbeats) and the pure logic
//! ([`fence`]: when a leader must stop on its own, [`rendezvous`]: which
//! member should lead an account).

pub mod coordinator;
pub mod db;
pub mod fence;
pub mod guard;
pub mod link;
pub mod plan;
pub mod rendezvous;
pub mod schema;

pub use db::{connect, HaError, IntentOutcome, LeaseOutcome};
pub use fence::SelfFence;
pub use rendezvous::preferred_member;
