//! `callwarden check`: every problem in the config and policy files, then a
//! summary line, like `nginx -t`; or, for CI, one JSON object per problem.

use std::path::Path;

use crate::config::{self, Diagnostic, Environment};

use super::{EXIT_ERROR, EXIT_OK};

/// `check --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// `FILE:LINE:COL: error: MESSAGE` lines, then a summary line.
    Text,
    /// One JSON object per diagnostic per line (JSON Lines), no summary:
    /// `{"file","line","column","severity","message"}`.
    Json,
}

/// One diagnostic as a JSON object.
fn to_json(diagnostic: &Diagnostic) -> serde_json::Value {
    serde_json::json!({
        "file": diagnostic.file.display().to_string(),
        "line": diagnostic.line,
        "column": diagnostic.col,
        "severity": diagnostic.severity.to_string(),
        "message": diagnostic.message,
    })
}

/// Prints every diagnostic (and, as text, the summary); returns the exit code.
pub fn run(config_path: &Path, format: CheckFormat) -> u8 {
    let report = config::check(config_path, &Environment::from_process());
    match format {
        CheckFormat::Text => {
            for diagnostic in &report.diagnostics {
                println!("{diagnostic}");
            }
            println!("{}", report.summary());
        }
        CheckFormat::Json => {
            for diagnostic in &report.diagnostics {
                println!("{}", to_json(diagnostic));
            }
        }
    }
    if report.is_ok() {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}
