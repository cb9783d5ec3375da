//! `callwarden generate`: the man page and shell completions, generated from
//! the same clap definitions as `--help`, so the three cannot disagree.
//! The packaged copies live in `packaging/` (checked by tests/packaging.rs).

use std::io::Write as _;

use clap::CommandFactory as _;
use clap_complete::Shell;

use super::{Cli, EXIT_OK};

/// `callwarden generate`, a command of its own so that it stays out of the
/// help, the man pages and the completions it writes.
#[derive(Debug, clap::Parser)]
#[command(name = "callwarden generate")]
pub struct GenerateCli {
    /// What to write.
    #[command(subcommand)]
    pub what: Generated,
}

/// What `generate` writes.
#[derive(Debug, clap::Subcommand)]
pub enum Generated {
    /// The man pages: `callwarden.1` and one `callwarden-COMMAND.1` per command.
    Man {
        /// The directory to write them to.
        dir: std::path::PathBuf,
    },
    /// Completions for one shell.
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// Writes `callwarden.1` and a page per visible command into `dir`.
pub fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "callwarden", &mut out);
    out
}

/// Writes the man pages to their directory, or completions to stdout.
pub fn run(what: Generated) -> anyhow::Result<u8> {
    match what {
        Generated::Man { dir } => man_pages(&dir)
            .map_err(|e| anyhow::anyhow!("cannot write man pages to {}: {e}", dir.display()))?,
        Generated::Completions { shell } => {
            std::io::stdout().lock().write_all(&completions(shell))?;
        }
    }
    Ok(EXIT_OK)
}
