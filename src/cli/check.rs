//! `callwarden check`: every problem in the config and policy files, then a
//! summary line, like `nginx -t`.

use std::path::Path;

use crate::config::{self, Environment};

use super::{EXIT_ERROR, EXIT_OK};

/// Prints every diagnostic and the summary; returns the exit code.
pub fn run(config_path: &Path) -> u8 {
    let report = config::check(config_path, &Environment::from_process());
    for diagnostic in &report.diagnostics {
        println!("{diagnostic}");
    }
    println!("{}", report.summary());
    if report.is_ok() {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}
