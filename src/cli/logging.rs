//! Logging set-up: journald when systemd connected stderr to the journal,
//! pretty on a terminal, JSON lines otherwise; `--log-format` wins over
//! `[log] format`, and `RUST_LOG` filters.

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

/// Whether stderr is the stream systemd connected to the journal.
/// `JOURNAL_STREAM` holds `DEV:INODE` of that stream; a child whose stderr
/// was redirected inherits the variable but not the stream, so both must
/// agree (`stderr` is the device and inode of our fd 2).
fn stderr_is_journal(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(value), Some((dev, ino))) = (journal_stream, stderr) else {
        return false;
    };
    let Some((want_dev, want_ino)) = value.trim().split_once(':') else {
        return false;
    };
    want_dev.parse() == Ok(dev) && want_ino.parse() == Ok(ino)
}

/// The device and inode of our stderr, if it has one.
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let metadata = std::fs::File::from(fd).metadata().ok()?;
    Some((metadata.dev(), metadata.ino()))
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
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("callwarden={default_level},warn")))
    };
    let journal = format == LogFormat::Auto
        && stderr_is_journal(
            std::env::var("JOURNAL_STREAM").ok().as_deref(),
            stderr_identity(),
        );
    let mut journald_error = None;
    if journal {
        // Native journald keeps each event's priority (`journalctl -p err`)
        // and its fields (`journalctl ACCOUNT=sales`).
        match tracing_journald::layer() {
            Ok(layer) => {
                use tracing_subscriber::layer::SubscriberExt as _;
                use tracing_subscriber::util::SubscriberInitExt as _;
                let layer = layer
                    .with_syslog_identifier("callwarden".to_owned())
                    .with_field_prefix(None);
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .try_init();
                return;
            }
            Err(error) => journald_error = Some(error),
        }
    }
    let terminal = std::io::stderr().is_terminal();
    let json = wants_json(format, terminal);
    // Colour codes only on a terminal: journald and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_ansi(terminal)
        .with_writer(std::io::stderr);
    // A second init (tests, demo) keeps the first subscriber; that is fine.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Some(error) = journald_error {
        tracing::warn!(%error, "cannot reach journald; logging JSON lines to stderr instead");
    }
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
    fn journal_only_when_the_stream_is_our_stderr() {
        assert!(stderr_is_journal(Some("8:12345"), Some((8, 12345))));
        assert!(stderr_is_journal(Some(" 8:12345\n"), Some((8, 12345))));
        // Inherited by a child whose stderr goes elsewhere.
        assert!(!stderr_is_journal(Some("8:12345"), Some((8, 999))));
        assert!(!stderr_is_journal(Some("8:12345"), Some((9, 12345))));
        assert!(!stderr_is_journal(None, Some((8, 12345))));
        assert!(!stderr_is_journal(Some("8:12345"), None));
        for bad in ["", "8", "8:", ":12345", "x:y", "8:12345:1", "-8:12345"] {
            assert!(!stderr_is_journal(Some(bad), Some((8, 12345))), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_file_gives_none() {
        assert_eq!(
            format_from_config(Path::new("/nonexistent/callwarden.toml")),
            None
        );
    }
}
