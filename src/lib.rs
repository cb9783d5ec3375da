//! callwarden: a policy-driven call-termination daemon for the Vobiz voice API.
//!
//! Data flows one way: the [`vobiz`] client lists live calls and fetches their
//! details into normalized [`call::Call`]s; the [`engine`] keeps a snapshot of
//! every tracked call, asks [`policy`] (pure evaluation of the rules that
//! [`config`] loaded and validated) for each call's deadline, keeps those
//! deadlines in a timer queue, and at each deadline re-checks the call and
//! hangs it up, writing every decision to the [`audit`] log first.
//!
//! - [`call`]: the normalized call and number normalization.
//! - [`clock`]: wall-clock time behind a trait, so tests control it.
//! - [`config`]: config and policy files, validation with positions.
//! - [`policy`]: compiled rules, matchers, windows, evaluation.
//! - [`vobiz`]: the API client and response parsers.
//! - [`engine`]: discovery, deadlines, enforcement.
//! - [`ha`]: high availability on PostgreSQL (lease, fencing, members).
//! - [`audit`]: the durable decision log.
//! - [`metrics`]: the Prometheus metrics.
//! - [`sim`]: the bundled Vobiz API simulator.
//! - [`daemon`]: `run`: engines, signals, systemd.
//! - [`http`]: the status listener.
//! - [`manual`]: `POST /hangup`, manual and external hangups.
//! - [`cli`]: the commands.

pub mod audit;
pub mod call;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod ha;
pub mod http;
pub mod manual;
pub mod metrics;
pub mod policy;
pub mod sim;
pub mod vobiz;
