//! Policy benchmarks: evaluating 100,000 calls against 100 rules, and
//! loading + validating 1,000 rules.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use callwarden::call::{normalize_number, Call, CallStatus, CallUuid, Direction, Shape};
use callwarden::config::load_policy_files;
use callwarden::policy::{deadline_only, evaluate, Policy, Timeline};
use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};

/// `count` rules of mixed kinds: number prefixes, literals, idle, windows, exemptions.
fn rules_toml(count: usize, offset: usize) -> String {
    let mut out = String::new();
    for i in 0..count {
        let n = i + offset;
        out.push_str(&format!("[[rule]]\nname = \"rule-{n}\"\n"));
        match i % 10 {
            0..=3 => out.push_str(&format!(
                "max_duration = \"{}m\"\n[rule.match]\ndirection = \"outbound\"\nto = [\"+1900{}*\", \"+44{}*\"]\n",
                10 + i, i % 97, i % 89
            )),
            4..=6 => out.push_str(&format!(
                "max_duration = \"{}m\"\n[rule.match]\ndirection = \"inbound\"\nfrom = [\"+1415555{:04}\", \"+91*\"]\nstatus = \"in-progress\"\n[rule.unless]\ncaller_name = [\"NOC *\"]\n",
                30 + i, i
            )),
            7 => out.push_str(
                "idle_timeout = \"2m\"\n[rule.match]\nstatus = [\"ringing\", \"queued\"]\n",
            ),
            // Maintenance windows; `i / 10` varies the glob from rule to rule.
            8 => out.push_str(&format!(
                "max_duration = \"0s\"\n[rule.match]\nto = [\"+1[2-5]??{}*\"]\n[[rule.window]]\ncron = \"0 0 2 * * *\"\nduration = \"1h\"\ntimezone = \"Europe/London\"\n",
                (i / 10) % 10
            )),
            _ => out.push_str(&format!(
                "max_duration = \"4h\"\nmeasure_from = \"start\"\n[rule.match]\naccount = [\"acct-{}\"]\n",
                i % 5
            )),
        }
        out.push('\n');
    }
    out
}

fn write_policy(dir: &std::path::Path, files: usize, rules_per_file: usize) -> Vec<PathBuf> {
    (0..files)
        .map(|f| {
            let path = dir.join(format!("{f:03}.toml"));
            std::fs::write(&path, rules_toml(rules_per_file, f * rules_per_file)).unwrap();
            path
        })
        .collect()
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn calls(count: usize) -> Vec<(Call, Timeline)> {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..count)
        .map(|i| {
            let r = next();
            let to = match r % 4 {
                0 => format!("+1900{}", r % 10_000_000),
                1 => format!("+44{}", r % 1_000_000_000),
                2 => format!("+1{}", 2_000_000_000 + r % 8_000_000_000),
                _ => format!("+91{}", r % 10_000_000_000),
            };
            let from = format!("+1415555{:04}", (r >> 20) % 10_000);
            let status = match (r >> 8) % 4 {
                0 => CallStatus::Ringing,
                1 => CallStatus::Queued,
                _ => CallStatus::InProgress,
            };
            let started = now() - chrono::Duration::seconds(((r >> 12) % 7200) as i64);
            let answered = matches!(status, CallStatus::InProgress)
                .then(|| started + chrono::Duration::seconds(5));
            let call = Call {
                uuid: CallUuid::parse(&format!("call-{i}")).unwrap(),
                direction: if r % 3 == 0 {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
                from: normalize_number(&from).into(),
                to: normalize_number(&to).into(),
                caller_name: if r % 50 == 0 { "NOC x" } else { "" }.into(),
                status,
                started_at: Some(started),
                answered_at: answered,
                duration_s: None,
                parent_call_uuid: None,
                shape: Shape::Legacy,
                raw: Default::default(),
            };
            let timeline = Timeline {
                started: Some(started),
                answered,
                last_change: answered.unwrap_or(started),
            };
            (call, timeline)
        })
        .collect()
}

fn load_policy(rules: usize) -> Policy {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_policy(dir.path(), 1, rules);
    load_policy_files(&paths, now()).unwrap().0
}

fn bench(c: &mut Criterion) {
    let policy = load_policy(100);
    let calls = calls(100_000);
    let accounts = ["default", "acct-1", "acct-3"];
    // The engine reads its clock once per evaluation; parsing a timestamp
    // per call would measure chrono's parser, not the policy.
    let now = now();
    let mut group = c.benchmark_group("policy");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("deadline_only 100k calls x 100 rules", |b| {
        b.iter(|| {
            let mut due = 0usize;
            for (i, (call, timeline)) in calls.iter().enumerate() {
                let account = accounts[i % accounts.len()];
                if deadline_only(&policy, call, account, timeline, now, Duration::ZERO).is_some() {
                    due += 1;
                }
            }
            black_box(due)
        })
    });
    group.bench_function("evaluate 100k calls x 100 rules", |b| {
        b.iter(|| {
            let mut matched = 0usize;
            for (i, (call, timeline)) in calls.iter().enumerate() {
                let account = accounts[i % accounts.len()];
                let eval = evaluate(&policy, call, account, timeline, now, Duration::ZERO);
                matched += eval.matched().count();
            }
            black_box(matched)
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let paths = write_policy(dir.path(), 10, 100);
    group.bench_function("load + validate 1,000 rules (10 files)", |b| {
        b.iter(|| black_box(load_policy_files(&paths, now).unwrap().0.rules.len()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
