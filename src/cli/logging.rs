//! Logging set-up: pretty on a terminal, JSON lines otherwise; `--log-format`
//! wins over `[log] format`, and `RUST_LOG` filters.

use std::io::IsTerminal;
use std::path::Path;

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

/// The `[log] format` of the config at `path`, read before anything else so
/// the daemon's first lines already have the right shape. Any problem (no
/// file, bad TOML, bad value) gives `None`: the full load that follows
/// reports it properly.
pub fn format_from_config(path: &Path) -> Option<LogFormat> {
    format_from_toml(&std::fs::read_to_string(path).ok()?)
}

/// The `[log] format` value of a config text, if it has a valid one.
fn format_from_toml(text: &str) -> Option<LogFormat> {
    let table: toml::Table = text.parse().ok()?;
    match table.get("log")?.get("format")?.as_str()? {
        "auto" => Some(LogFormat::Auto),
        "json" => Some(LogFormat::Json),
        "pretty" => Some(LogFormat::Pretty),
        _ => None,
    }
}

/// Whether to write JSON lines: forced either way, or when stderr is no terminal.
fn wants_json(format: LogFormat, stderr_is_terminal: bool) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !stderr_is_terminal,
    }
}

fn install(format: LogFormat, verbose: u8, quiet_level: &str) {
    let default_level = match verbose {
        0 => quiet_level,
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("callwarden={default_level},warn")));
    let terminal = std::io::stderr().is_terminal();
    let json = wants_json(format, terminal);
    // Colour codes only on a terminal: journald and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(std::io::stderr);
    // A second init (tests, demo) keeps the first subscriber; that is fine.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_log_format_key() {
        let config = "policies = \"p\"\n[log]\nformat = \"pretty\"\n";
        assert_eq!(format_from_toml(config), Some(LogFormat::Pretty));
        let config = "[log]\nformat = \"json\"\n";
        assert_eq!(format_from_toml(config), Some(LogFormat::Json));
        let config = "[log]\nformat = \"auto\"\n";
        assert_eq!(format_from_toml(config), Some(LogFormat::Auto));
    }

    #[test]
    fn a_missing_or_bad_key_gives_none() {
        assert_eq!(format_from_toml("policies = \"p\"\n"), None);
        assert_eq!(format_from_toml("[log]\nformat = \"xml\"\n"), None);
        assert_eq!(format_from_toml("[log]\nformat = 3\n"), None);
        assert_eq!(format_from_toml("log = \"json\"\n"), None);
        assert_eq!(format_from_toml("[log\n"), None);
    }

    #[test]
    fn auto_is_json_only_off_a_terminal() {
        assert!(wants_json(LogFormat::Auto, false));
        assert!(!wants_json(LogFormat::Auto, true));
        assert!(wants_json(LogFormat::Json, true));
        assert!(!wants_json(LogFormat::Pretty, false));
    }

    #[test]
    fn a_missing_file_gives_none() {
        assert_eq!(
            format_from_config(Path::new("/nonexistent/callwarden.toml")),
            None
        );
    }
}
