//! High availability on PostgreSQL: several hosts run the same config, and
//! each account is enforced by the one member that holds its lease.
//!
//! - [`coordinator`]: per node, heart-beats, reads members and leases, and
//!   renews, acquires, hands over or waits for each account ([`plan`], pure),
//!   choosing accounts by [`rendezvous`] hashing; the daemon runs an
//!   account's engine only while this node leads it.
//! - [`guard`]: the engine's fence: every intent committed under the lease
//!   before its DELETE, outcomes, first-seen times and pardons shared.
//! - [`fence`]: when a leader must stop on its own (self-fencing).
//! - [`db`], [`schema`], [`link`]: the database side (connections with
//!   keepalives that mend themselves, versioned migrations, the lease
//!   upsert, the fenced intent insert, member heartbeats).

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
