//! Loading many windowed rules: 10,000 rules that all share one schedule (a
//! fleet of per-customer maintenance rules) and 10,000 rules with 1,440
//! distinct daily schedules, in two zones. Each window's period is checked
//! at load, so this is what a start or a SIGHUP costs.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use callwarden::config::load_policy_files;
use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};

/// `count` windowed rules; `cron(i)` is the schedule of rule `i`.
fn rules_toml(count: usize, cron: impl Fn(usize) -> String) -> String {
    let mut out = String::new();
    for i in 0..count {
        let zone = if i % 2 == 0 { "Europe/London" } else { "UTC" };
        out.push_str(&format!(
            "[[rule]]\nname = \"window-{i}\"\nmax_duration = \"0s\"\n[rule.match]\nto = [\"+1900{}*\"]\n[[rule.window]]\ncron = \"{}\"\nduration = \"1h\"\ntimezone = \"{zone}\"\n\n",
            i % 1000,
            cron(i)
        ));
    }
    out
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> Vec<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    vec![path]
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let same_paths = write(
        dir.path(),
        "same.toml",
        &rules_toml(10_000, |_| "0 0 2 * * *".to_owned()),
    );
    let distinct = write(
        dir.path(),
        "distinct.toml",
        &rules_toml(10_000, |i| format!("0 {} {} * * *", i % 60, (i / 60) % 24)),
    );
    for paths in [&same_paths, &distinct] {
        assert!(load_policy_files(paths, now()).is_ok(), "the rules load");
    }

    let mut group = c.benchmark_group("load windows");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("10,000 windowed rules, one cron", |b| {
        b.iter(|| black_box(load_policy_files(&same_paths, now()).is_ok()))
    });
    group.bench_function("10,000 windowed rules, 1,440 daily crons", |b| {
        b.iter(|| black_box(load_policy_files(&distinct, now()).is_ok()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
