//! `callwarden demo`: the embedded default. Starts the simulator in-process
//! with a few dozen calls, runs the engine against it with the sample
//! policies plus a short maintenance window, shows each decision as it is
//! audited, then summarises. Needs no config; everything is temporary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Timelike, Utc};
use tokio::sync::mpsc;

use crate::audit::{self, Event, Outcome, Record};
use crate::config::Environment;
use crate::engine::{Engine, Settings};
use crate::metrics::Metrics;
use crate::sim::{AddCalls, CallSpec, SimOptions, SimStatus, Simulator};
use crate::startup;

use super::EXIT_OK;

/// The sample policies, embedded so the demo runs from anywhere.
const SAMPLE_POLICIES: &[(&str, &str)] = &[
    (
        "10-outbound-compliance.toml",
        include_str!("../../policies/10-outbound-compliance.toml"),
    ),
    (
        "20-premium-rate.toml",
        include_str!("../../policies/20-premium-rate.toml"),
    ),
    (
        "30-stuck-calls.toml",
        include_str!("../../policies/30-stuck-calls.toml"),
    ),
    (
        "40-maintenance-window.toml",
        include_str!("../../policies/40-maintenance-window.toml"),
    ),
    (
        "50-exemptions.toml",
        include_str!("../../policies/50-exemptions.toml"),
    ),
];

/// Runs the demo for `duration`.
pub async fn run(duration: Duration) -> anyhow::Result<u8> {
    let clock = startup::system_clock();
    let dir = TempDir::new()?;
    let sim = Simulator::start(SimOptions::ephemeral(), Arc::clone(&clock))
        .context("cannot start the simulator")?;
    let start = clock.now();
    let window_opens = start + chrono::TimeDelta::seconds(12);
    let config_path = write_files(dir.path(), &sim.base_url(), window_opens)?;
    sim.state()
        .add_calls(demo_calls())
        .map_err(|e| anyhow::anyhow!("cannot add demo calls: {e:?}"))?;

    let config = startup::load_config(&config_path, &Environment::default())?.config;
    let state = startup::open_state(&config, Arc::clone(&clock), Arc::new(Metrics::new()))?;
    let (name, client) = startup::clients(&config, &clock)?
        .into_iter()
        .next()
        .context("the demo config has no account")?;
    let policy = config.policy_of(&name);
    println!(
        "callwarden demo: simulator at {} with {} live calls, {} rules, maintenance window opens at {} for 10 s",
        sim.base_url(),
        sim.state().calls().len(),
        policy.rules.len(),
        window_opens.format("%H:%M:%S UTC"),
    );
    println!(
        "watching for {} ...\n",
        humantime::format_duration(duration)
    );
    let engine = Engine::new(
        name,
        client,
        policy,
        Settings::from_config(&config),
        state.shared.clone(),
        &state.replay,
    );
    let (_commands, commands_rx) = mpsc::channel(1);
    let stop = tokio::time::sleep(duration);
    let engine = tokio::spawn(engine.run(commands_rx, stop));

    let mut shown = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    while !engine.is_finished() {
        ticker.tick().await;
        shown = show_new_records(&config.state_dir, shown, start);
    }
    let _ = engine.await;
    state.flush_audit().await;
    show_new_records(&config.state_dir, shown, start);
    print_summary(&config.state_dir, &sim.state().calls());
    sim.shutdown().await;
    Ok(EXIT_OK)
}

fn write_files(dir: &Path, base_url: &str, window_opens: DateTime<Utc>) -> anyhow::Result<PathBuf> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    for (name, text) in SAMPLE_POLICIES {
        std::fs::write(policies.join(name), text)?;
    }
    let cron = format!(
        "{} {} {} * * *",
        window_opens.second(),
        window_opens.minute(),
        window_opens.hour()
    );
    std::fs::write(
        policies.join("90-demo-maintenance.toml"),
        format!(
            r#"# Demo only: a 10-second maintenance window on the test-lab range.
[[rule]]
name = "demo-lab-maintenance"
description = "Clear the +1555 test lab when the demo's maintenance window opens."
max_duration = "0s"
measure_from = "start"
[rule.match]
to = ["+1555*"]
[[rule.window]]
cron = "{cron}"
duration = "10s"
timezone = "UTC"
[rule.action]
hangup = "call"
bypass_breaker = true
"#
        ),
    )?;
    let token = dir.join("token");
    std::fs::write(&token, crate::sim::DEFAULT_AUTH_TOKEN)?;
    set_private(&token)?;
    let config = dir.join("callwarden.toml");
    std::fs::write(
        &config,
        format!(
            r#"policies = "policies"
[api]
base_url = "{base_url}"
auth_id = "{auth_id}"
auth_token_file = "token"
[poll]
interval = "1s"
[state]
dir = "state"
[http]
listen = ""
"#,
            auth_id = crate::sim::DEFAULT_AUTH_ID
        ),
    )?;
    set_private(&config)?;
    Ok(config)
}

fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

// The legacy shape carries `answer_time`, so answer-based limits can be
// judged from the first poll (the flat shape needs the daemon to see the
// answer itself).
fn spec(direction: &str, from: &str, to: &str, age_s: f64) -> CallSpec {
    CallSpec {
        direction: Some(direction.to_owned()),
        from: from.to_owned(),
        to: to.to_owned(),
        age_s,
        shape: Some("legacy".to_owned()),
        ..CallSpec::default()
    }
}

fn demo_calls() -> AddCalls {
    let mut calls = vec![
        // Premium rate, 10 min limit: due in 8 s, warned at once.
        spec("outbound", "+14155550111", "+19005550101", 592.0),
        // Outbound compliance, 60 min: due in 15 s.
        spec("outbound", "+14155550112", "+14155559876", 3585.0),
        // Same age, but to an emergency number: protected.
        spec("outbound", "+14155550113", "911", 3590.0),
        // Inbound, 4 h: due in 6 s.
        spec("inbound", "+13125550100", "+18885550100", 14_394.0),
        // Inbound to the escalation desk: exempt from the 4 h rule.
        spec("inbound", "+13125550101", "+18005550100", 14_390.0),
    ];
    // The test lab, cleared when the maintenance window opens.
    for n in 0..3 {
        calls.push(spec(
            "outbound",
            "+14155550120",
            &format!("+1555010{n}"),
            30.0 + f64::from(n),
        ));
    }
    // A ringing call: the idle rule watches it (2 min, longer than the demo).
    calls.push(CallSpec {
        answered: Some(false),
        status: Some(SimStatus::Ringing),
        ..spec("outbound", "+14155550130", "+14155550131", 20.0)
    });
    // Ordinary traffic that no rule touches yet.
    for n in 0..25u32 {
        let direction = if n % 2 == 0 { "inbound" } else { "outbound" };
        calls.push(spec(
            direction,
            &format!("+1312555{:04}", 2000 + n),
            &format!("+1415555{:04}", 3000 + n),
            f64::from(30 + n * 41),
        ));
    }
    AddCalls {
        calls,
        ..AddCalls::default()
    }
}

/// Prints the audit records after the first `shown`; returns the new count.
fn show_new_records(state_dir: &Path, shown: usize, start: DateTime<Utc>) -> usize {
    let Ok((records, _)) = audit::read_all(state_dir) else {
        return shown;
    };
    for record in records.iter().skip(shown) {
        if let Some(line) = describe(record, start) {
            println!("{line}");
        }
    }
    records.len().max(shown)
}

fn describe(record: &Record, start: DateTime<Utc>) -> Option<String> {
    let at = (record.ts - start).num_milliseconds() as f64 / 1000.0;
    let who = record
        .call
        .as_ref()
        .map(|c| {
            let c = c.json();
            let field = |a: &str, b: &str| {
                c.get(a)
                    .or_else(|| c.get(b))
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_owned()
            };
            format!(
                "{} -> {}",
                field("from", "from_number"),
                field("to", "to_number")
            )
        })
        .unwrap_or_default();
    let rule = record.rule.clone().unwrap_or_default();
    let short = record.call_uuid.get(..8).unwrap_or(&record.call_uuid);
    let what = match (record.event, record.outcome) {
        (Event::Intent, _) => return None,
        (Event::Outcome, Some(Outcome::Ok)) => "HUNG UP  ",
        (Event::Outcome, Some(Outcome::Gone)) => "GONE     ",
        (Event::Outcome, Some(Outcome::Protected)) => "PROTECTED",
        (Event::Outcome, Some(Outcome::DryRun)) => "DRY RUN  ",
        (Event::Outcome, Some(Outcome::Failed)) => "FAILED   ",
        (Event::Warn, Some(Outcome::Ok)) => "WARNED   ",
        (Event::Warn, Some(Outcome::Skipped)) => "NO WARN  ",
        (Event::Breaker, _) => "HELD     ",
        _ => "NOTE     ",
    };
    Some(format!(
        "[+{at:5.1}s] {what} {short}  {who:<32} rule {rule}: {}",
        record.reason
    ))
}

fn print_summary(state_dir: &Path, calls: &[crate::sim::SimCall]) {
    let (records, _) = audit::read_all(state_dir).unwrap_or_default();
    let count = |event: Event, outcome: Outcome| {
        records
            .iter()
            .filter(|r| r.event == event && r.outcome == Some(outcome))
            .count()
    };
    let ended_by_us = calls.iter().filter(|c| c.hangups > 0).count();
    let still_live = calls.iter().filter(|c| c.ended_at.is_none()).count();
    let double = calls.iter().filter(|c| c.hangups > 1).count();
    println!("\nsummary:");
    println!("  hung up:          {}", count(Event::Outcome, Outcome::Ok));
    println!("  warned:           {}", count(Event::Warn, Outcome::Ok));
    println!(
        "  protected:        {}",
        count(Event::Outcome, Outcome::Protected)
    );
    println!(
        "  dry run:          {}",
        count(Event::Outcome, Outcome::DryRun)
    );
    println!(
        "  failed:           {}",
        count(Event::Outcome, Outcome::Failed)
    );
    println!("  simulator: {ended_by_us} calls ended by callwarden, {still_live} still live, {double} hung up twice");
    println!(
        "  exempt and young calls were left alone; `callwarden explain` shows why for any call."
    );
}

/// A temporary directory removed on drop (the demo leaves nothing behind).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "callwarden-demo-{}-{}",
            std::process::id(),
            Utc::now().timestamp_micros()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
