//! `callwarden once`: one full cycle over every account, then a summary.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use crate::config::Environment;
use crate::engine::{Engine, OnceReport, Settings};
use crate::metrics::Metrics;
use crate::startup;

use super::{EXIT_OK, EXIT_PARTIAL};

/// Runs one cycle; exit 0 when every due call was handled, 3 when some
/// hangups failed or the breaker held them.
pub async fn run(config_path: &Path, env: &Environment, json: bool) -> anyhow::Result<u8> {
    let loaded = startup::load_config(config_path, env)?;
    let config = loaded.config;
    let clock = startup::system_clock();
    let state = startup::open_state(&config, Arc::clone(&clock), Arc::new(Metrics::new()))?;
    let settings = Settings::from_config(&config);
    let progress = std::io::stderr().is_terminal() && !json;
    let mut reports = Vec::new();
    for (name, client) in startup::clients(&config, &clock)? {
        if progress {
            eprintln!("{name}: listing and reading calls...");
        }
        let policy = config.policy_of(&name);
        let engine = Engine::new(
            name,
            client,
            policy,
            settings.clone(),
            state.shared.clone(),
            &state.replay,
        );
        reports.push(engine.run_once().await);
    }
    state.flush_audit().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", render(&reports));
    }
    let partial = reports
        .iter()
        .any(|r| r.breaker_held || !r.errors.is_empty());
    Ok(if partial { EXIT_PARTIAL } else { EXIT_OK })
}

/// The summary table.
fn render(reports: &[OnceReport]) -> String {
    let mut out = String::new();
    for report in reports {
        out.push_str(&format!(
            "account {}: {} live, {} evaluated, {} past a deadline\n",
            report.account,
            report.live_calls,
            report.evaluated,
            report.outcomes.len()
        ));
        if !report.outcomes.is_empty() {
            out.push_str(&format!(
                "  {:<38} {:<24} {:<10} REASON\n",
                "CALL", "RULE", "OUTCOME"
            ));
            for o in &report.outcomes {
                out.push_str(&format!(
                    "  {:<38} {:<24} {:<10} {}\n",
                    o.call_uuid, o.rule, o.outcome, o.reason
                ));
            }
        }
        if !report.not_evaluated.is_empty() {
            out.push_str(&format!(
                "  not evaluated (idle rules need history; the daemon judges them): {}\n",
                report.not_evaluated.join(", ")
            ));
        }
        if report.breaker_held {
            out.push_str("  BREAKER: too many hangups due at once; held (see the audit log)\n");
        }
        for error in &report.errors {
            out.push_str(&format!("  error: {error}\n"));
        }
    }
    out
}
