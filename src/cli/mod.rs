//! The commands (the table in README.md): argument parsing, logging set-up, and the
//! mapping of each command's result to its documented exit code.

mod calls;
mod check;
mod cluster;
mod demo;
mod generate;
mod hangup;
mod logging;
mod once;
mod pardon;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use signal_hook::consts::signal::{SIGINT, SIGTERM};

use crate::config::{Environment, LogFormat};
use crate::daemon;
use crate::startup;

/// The default config path when neither `--config` nor `$CALLWARDEN_CONFIG` is given.
pub const DEFAULT_CONFIG: &str = "/etc/callwarden/callwarden.toml";

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: fatal error (bad config, call not found, ...).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: usage error, or a command that is not built yet.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `once`: some hangups failed or were held by the breaker.
pub const EXIT_PARTIAL: u8 = 3;

/// Exit codes, files and environment, shown by `--help` and in the man page.
const AFTER_LONG_HELP: &str = "\
Exit codes:
  0  success (check: valid, warnings allowed)
  1  error: bad config, call not found, API, daemon or HA database unreachable
  2  usage error
  3  once: some hangups failed or were held by the breaker

Files:
  /etc/callwarden/callwarden.toml   the config (docs/configuration.md)
  /etc/callwarden/policies/*.toml   the rules (docs/policies.md)
  /var/lib/callwarden/audit.jsonl   the audit log (docs/audit.md)

Environment:
  CALLWARDEN_CONFIG                 the config file when --config is not given
  VOBIZ_AUTH_ID, VOBIZ_AUTH_TOKEN   the single account's auth id and token
  VOBIZ_BASE_URL                    the API base URL
  CALLWARDEN_POSTGRES_URL           the [ha] database (also postgres_url_file, credential postgres-url)
  RUST_LOG                          log filter, e.g. callwarden=debug

Documentation: /usr/share/doc/callwarden/ (README.md and docs/).";

/// Policy-driven call-termination daemon for the Vobiz voice API.
///
/// callwarden watches the live calls of Vobiz accounts, checks each against
/// declarative TOML rules (maximum duration, idle timeout, maintenance
/// windows, exemptions) and hangs up the calls that break them, never early
/// and never twice.
#[derive(Debug, Parser)]
#[command(
    name = "callwarden",
    version,
    about,
    propagate_version = true,
    after_long_help = AFTER_LONG_HELP
)]
pub struct Cli {
    /// Config file.
    #[arg(long, global = true, env = "CALLWARDEN_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Log format: auto = journald under systemd, else JSON lines when not a TTY.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// More log detail (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll, evaluate, enforce until SIGTERM/SIGINT.
    Run,
    /// Validate the config and every policy file without calling the API.
    Check {
        /// Output: `text` (FILE:LINE:COL: error: MESSAGE, then a summary) or
        /// `json` (one JSON object per diagnostic per line, for CI).
        #[arg(long, value_enum, default_value_t = check::CheckFormat::Text)]
        format: check::CheckFormat,
    },
    /// One full cycle: list, evaluate, hang up calls already past their deadline, print a summary.
    Once {
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show every rule for one live call (or a saved call): matched or not, and why.
    Explain {
        /// The live call to explain.
        #[arg(required_unless_present = "call_json", conflicts_with = "call_json")]
        uuid: Option<String>,
        /// Explain a saved call detail (JSON as the API returns it) instead.
        #[arg(long, value_name = "FILE")]
        call_json: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List live calls with age, matched rules and time left.
    Calls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to spare one call, for a while or for good.
    Pardon {
        /// The call to spare.
        uuid: String,
        /// How long to spare it (default: for good).
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        for_: Option<Duration>,
    },
    /// Ask the running daemon to end calls now, by UUID or with --match.
    Hangup(hangup::HangupArgs),
    /// Run the policy test cases (default: tests/ beside the policy directory).
    Test {
        /// A case file, or a directory of *.toml case files.
        path: Option<PathBuf>,
    },
    /// With [ha]: members, each account's leader, epoch and lease expiry, pending intents.
    Cluster {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the bundled Vobiz API simulator.
    Sim(SimArgs),
    /// Start the simulator with sample calls and policies, enforce against it, and summarise.
    Demo {
        /// How long to run.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

/// Flags of `callwarden sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub listen: std::net::SocketAddr,
    /// Auth id to accept (repeat for several accounts).
    #[arg(long)]
    pub auth_id: Vec<String>,
    /// Auth token to accept, paired in order with --auth-id.
    #[arg(long)]
    pub auth_token: Vec<String>,
    /// Random live calls to start with.
    #[arg(long, default_value_t = 0)]
    pub calls: usize,
    /// Shape of call-detail answers.
    #[arg(long, default_value = "flat")]
    pub shape: crate::sim::ShapeMode,
    /// Seed of the simulator's randomness.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Parses the command line, runs the command, and maps the result to an exit code.
pub fn main() -> ExitCode {
    // `callwarden generate ...` is for packaging only: parsed on its own so
    // that it appears in no help, man page or completion.
    if std::env::args_os().nth(1).is_some_and(|a| a == "generate") {
        let args = generate::GenerateCli::parse_from(std::env::args_os().skip(1));
        return match generate::run(args.what) {
            Ok(code) => ExitCode::from(code),
            Err(error) => {
                eprintln!("callwarden: {error:#}");
                ExitCode::from(EXIT_ERROR)
            }
        };
    }
    let cli = Cli::parse();
    if let Command::Demo { .. } = cli.command {
        // The demo has its own live view; logs would drown it.
        logging::init_quiet(cli.log_format.unwrap_or(LogFormat::Pretty), cli.verbose);
    } else {
        // The flag wins; else the daemon follows `[log] format` of its config.
        let format = cli.log_format.or_else(|| match cli.command {
            Command::Run => logging::format_from_config(&cli.config),
            _ => None,
        });
        logging::init(format.unwrap_or_default(), cli.verbose);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("callwarden: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let code = runtime.block_on(dispatch(cli));
    ExitCode::from(code)
}

async fn dispatch(cli: Cli) -> u8 {
    let env = Environment::from_process();
    let result = match cli.command {
        Command::Check { format } => Ok(check::run(&cli.config, format)),
        Command::Test { path } => Ok(test::run(&cli.config, &env, path.as_deref())),
        Command::Sim(args) => sim(args).await,
        Command::Run => run(cli.config, env).await,
        Command::Once { json } => once::run(&cli.config, &env, json).await,
        Command::Explain {
            uuid,
            call_json,
            json,
        } => calls::explain(&cli.config, &env, uuid, call_json, json).await,
        Command::Calls { json } => calls::list(&cli.config, &env, json).await,
        Command::Hangup(args) => hangup::run(&cli.config, &env, args).await,
        Command::Pardon { uuid, for_ } => pardon::run(&cli.config, &env, &uuid, for_).await,
        Command::Demo { duration } => demo::run(duration).await,
        Command::Cluster { json } => cluster::run(&cli.config, &env, json).await,
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("callwarden: {error:#}");
            EXIT_ERROR
        }
    }
}

/// `callwarden run`: the daemon until SIGTERM or SIGINT.
async fn run(config: PathBuf, env: Environment) -> anyhow::Result<u8> {
    // Installed before anything else: until then SIGTERM would kill the
    // process outright instead of letting in-flight hangups finish.
    let mut stop = signal_hook_tokio::Signals::new([SIGTERM, SIGINT])
        .context("cannot install signal handlers")?;
    let options = daemon::RunOptions {
        env,
        clock: startup::system_clock(),
        jitter_seed: None,
    };
    daemon::run(config, options, async move {
        stop.next().await;
    })
    .await?;
    Ok(EXIT_OK)
}

async fn sim(args: SimArgs) -> anyhow::Result<u8> {
    if args.auth_id.len() != args.auth_token.len() {
        eprintln!("callwarden sim: give one --auth-token for each --auth-id");
        return Ok(EXIT_USAGE);
    }
    let options = crate::sim::SimOptions {
        listen: args.listen,
        accounts: args.auth_id.into_iter().zip(args.auth_token).collect(),
        calls: args.calls,
        shape: args.shape,
        seed: args.seed,
    };
    crate::sim::run_cli(options).await?;
    Ok(EXIT_OK)
}
