//! callwarden: a policy-driven call-termination daemon for the Vobiz voice API.
//!
//! Data flows one way: the [`vobiz`] client lists live calls and fetches their
//! details into normalized [`call::Call`]s; the [`engine`] keeps a snapshot of
//! every tracked call, asks [`policy`] (pure evaluation of the rules that
//! [`config`] loaded and validated) for each call's deadline, keeps those
//! deadlines in a timer queue, and at each deadline re-checks the call and
//! hangs it up, writing every decision to the [`audit`] log first.
//!
//! - [`call`]: the normalized call, its packed raw answer, and number
//!   normalization.
//! - [`text`]: [`text::InlineStr`], short strings kept inline.
//! - [`clock`]: wall-clock time behind a trait, so tests control it.
//! - [`config`]: config and policy files, validation with positions; each
//!   section a type with one `Default`; loading split into environment,
//!   files, settings and accounts.
//! - [`policy`]: compiled rules, matchers, windows, evaluation.
//! - [`vobiz`]: the API client, response parsers, and [`vobiz::Metered`],
//!   which counts every request the engine makes in the metrics.
//! - [`engine`]: one task per account composing parts that each own their
//!   state: tracked calls, discovery, deadlines (winning rule, timers,
//!   pardons), decisions (never twice), breaker, clocks, and rules whose ids
//!   carry the policy generation; `once` drives it through one cycle.
//! - [`ha`]: high availability on PostgreSQL: the per-node coordinator
//!   (members, leases, self-fence) and the fence every hangup passes.
//! - [`audit`]: the durable decision log.
//! - [`metrics`]: the Prometheus metrics.
//! - [`sim`]: the bundled Vobiz API simulator.
//! - [`startup`]: what every command does first: config, clients, state.
//! - [`daemon`]: `run(config, options, shutdown)`: engines, reloads, and
//!   systemd notify in its own file.
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
pub mod startup;
pub mod text;
pub mod vobiz;
