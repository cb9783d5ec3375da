//! `callwarden check --format json`: one JSON object per diagnostic, for CI
//! pipelines that keep policies in git; the same findings as the text format.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn check(config: &Path, format: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .arg("--config")
        .arg(config)
        .arg("check")
        .args(format)
        .env_remove("VOBIZ_AUTH_ID")
        .env_remove("VOBIZ_AUTH_TOKEN")
        .env_remove("VOBIZ_BASE_URL")
        .output()
        .expect("callwarden check runs")
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn json_has_one_object_per_diagnostic_with_position_severity_and_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("callwarden.toml");
    write_private(
        &config,
        "policies = [\"p.toml\"]\n[api]\nauth_id = \"MA1\"\n",
    );
    // Line 3: an unknown key (error). Lines 5-7: an idle rule on answered
    // calls (warning). Line 10: a bad duration (error).
    let policy = dir.path().join("p.toml");
    write_private(
        &policy,
        "[[rule]]\nname = \"a\"\nmax_durration = \"1h\"\n\n[[rule]]\nname = \"idle\"\n\
         idle_timeout = \"5m\"\n\n[[rule]]\nname = \"c\"\nmax_duration = \"soon\"\n",
    );

    let text = check(&config, &[]);
    let json = check(&config, &["--format", "json"]);
    assert_eq!(json.status.code(), Some(1), "errors: exit 1");
    assert_eq!(text.status.code(), json.status.code());

    let objects: Vec<Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    let text_out = String::from_utf8_lossy(&text.stdout);
    let text_lines: Vec<&str> = text_out.lines().collect();
    // Text: the same diagnostics, then the summary line.
    assert_eq!(objects.len() + 1, text_lines.len(), "{text_out}");
    assert!(objects.len() >= 3, "{objects:?}");
    for (object, line) in objects.iter().zip(&text_lines) {
        let keys: Vec<&String> = object.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            ["column", "file", "line", "message", "severity"],
            "{object}"
        );
        let rebuilt = format!(
            "{}:{}:{}: {}: {}",
            object["file"].as_str().expect("file"),
            object["line"].as_u64().expect("line"),
            object["column"].as_u64().expect("column"),
            object["severity"].as_str().expect("severity"),
            object["message"].as_str().expect("message"),
        );
        assert_eq!(&rebuilt, line);
    }
    let at = |line: u64, severity: &str| {
        objects.iter().any(|o| {
            o["file"].as_str().is_some_and(|f| f.ends_with("p.toml"))
                && o["line"] == line
                && o["severity"] == severity
        })
    };
    assert!(at(3, "error"), "unknown key: {objects:?}");
    assert!(
        at(7, "warning") || at(6, "warning") || at(5, "warning"),
        "{objects:?}"
    );
    assert!(at(11, "error"), "bad duration: {objects:?}");

    // A clean config: exit 0 and nothing to report.
    write_private(&policy, "[[rule]]\nname = \"a\"\nmax_duration = \"1h\"\n");
    let clean = check(&config, &["--format", "json"]);
    assert_eq!(clean.status.code(), Some(0));
    assert!(
        clean.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );

    // A bad value of the flag is a usage error.
    assert_eq!(check(&config, &["--format", "xml"]).status.code(), Some(2));
}
