//! `[ha]` through the real binary: its keys are parsed and validated with
//! positions, and the PostgreSQL URL is never shown.

use std::path::PathBuf;
use std::process::{Command, Output};

fn config(ha: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/a.toml"),
        "[[rule]]\nname = \"a\"\nmax_duration = \"1h\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pg-url"),
        "postgresql://callwarden:s3cret@db.example:5432/callwarden\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("not-a-url"), "s3cret=\"unterminated\n").unwrap();
    let path = dir.path().join("callwarden.toml");
    std::fs::write(
        &path,
        format!("policies = \"policies\"\n[api]\nauth_id = \"MA1\"\n[http]\nlisten = \"\"\n[state]\ndir = \"state\"\n{ha}"),
    )
    .unwrap();
    (dir, path)
}

fn callwarden(path: &PathBuf, command: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .arg("--config")
        .arg(path)
        .arg(command)
        .env("VOBIZ_AUTH_TOKEN", "t")
        .env("VOBIZ_BASE_URL", "http://127.0.0.1:1/api/v1")
        .env_remove("CALLWARDEN_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("callwarden runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const FULL: &str = "[ha]\npostgres_url_file = \"pg-url\"\nnode_id = \"ops-host-1\"\nlease_ttl = \"6s\"\nrenew_every = \"2s\"\n";

#[test]
fn a_valid_ha_section_passes_check() {
    let (_dir, path) = config(FULL);
    let out = callwarden(&path, "check");
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn run_without_a_postgres_url_says_where_to_give_it() {
    let (_dir, path) = config("[ha]\nnode_id = \"ops-host-1\"\n");
    let out = callwarden(&path, "run");
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    for source in [
        "CALLWARDEN_POSTGRES_URL",
        "postgres_url_file",
        "credential `postgres-url`",
    ] {
        assert!(shown.contains(source), "{source}: {shown}");
    }
}

#[test]
fn a_bad_url_in_the_environment_is_named_without_its_contents() {
    let (_dir, path) = config("[ha]\n");
    let out = Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .env("CALLWARDEN_POSTGRES_URL", "s3cret=\"unterminated")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("callwarden runs");
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("CALLWARDEN_POSTGRES_URL does not hold a valid PostgreSQL URL"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn without_ha_the_same_config_is_valid() {
    let (_dir, path) = config("");
    let out = callwarden(&path, "check");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn bad_ha_values_are_reported_at_their_line() {
    let (_dir, path) = config(
        "[ha]\nnode_id = \"ops host\"\nlease_ttl = \"0s\"\nrenew_every = \"soon\"\nleader = true\n",
    );
    let shown = text(&callwarden(&path, "check"));
    assert!(at(&shown, 9, "`node_id` `ops host`"), "{shown}");
    assert!(
        at(&shown, 10, "`lease_ttl` must be longer than 0s"),
        "{shown}"
    );
    assert!(at(&shown, 11, "bad duration `soon`"), "{shown}");
    assert!(at(&shown, 12, "unknown key `leader`"), "{shown}");
}

/// Whether `shown` has a diagnostic on config line `line` saying `message`.
fn at(shown: &str, line: u32, message: &str) -> bool {
    shown
        .lines()
        .any(|l| l.contains(&format!("callwarden.toml:{line}:")) && l.contains(message))
}

#[test]
fn renewing_slower_than_the_fence_is_an_error() {
    let (_dir, path) = config("[ha]\nlease_ttl = \"6s\"\nrenew_every = \"4s\"\n");
    let shown = text(&callwarden(&path, "check"));
    assert!(at(&shown, 10, "`renew_every` (4s)"), "{shown}");
    assert!(
        shown.contains(
            "`renew_every` (4s) must be shorter than `lease_ttl` (6s) minus its safety margin (2s)"
        ),
        "{shown}"
    );
}

#[test]
fn a_bad_url_file_is_named_without_its_contents() {
    let (_dir, path) = config("[ha]\npostgres_url_file = \"not-a-url\"\n");
    let shown = text(&callwarden(&path, "check"));
    assert!(
        at(
            &shown,
            9,
            "does not hold a valid PostgreSQL URL (contents not shown)"
        ),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");

    let (_dir, path) = config("[ha]\npostgres_url_file = \"missing\"\n");
    let shown = text(&callwarden(&path, "check"));
    assert!(at(&shown, 9, "cannot read PostgreSQL URL file"), "{shown}");
}

#[test]
fn a_good_url_file_is_never_echoed() {
    let (_dir, path) = config(FULL);
    let shown = text(&callwarden(&path, "check"));
    assert!(!shown.contains("s3cret"), "{shown}");
}
