//! Logging set-up: pretty on a terminal, JSON lines otherwise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` wins over `-v`.
pub fn init(format: LogFormat, verbose: u8) {
    install(format, verbose, "info");
}

/// Like [`init`], but only warnings and errors unless `-v` is given.
pub fn init_quiet(format: LogFormat, verbose: u8) {
    install(format, verbose, "warn");
}

fn install(format: LogFormat, verbose: u8, quiet_level: &str) {
    let default_level = match verbose {
        0 => quiet_level,
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("callwarden={default_level},warn")));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, demo) keeps the first subscriber; that is fine.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
