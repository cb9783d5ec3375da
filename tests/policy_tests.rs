//! `callwarden test` end to end through the real binary: the shipped sample
//! cases pass, a failing case prints its exact `FILE:LINE: FAIL` line, and a
//! malformed case file is a usage error with its position.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn callwarden(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .args(args)
        .current_dir(dir)
        .env_remove("CALLWARDEN_CONFIG")
        .env_remove("VOBIZ_AUTH_ID")
        .env_remove("VOBIZ_AUTH_TOKEN")
        .env_remove("VOBIZ_BASE_URL")
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const CONFIG: &str = r#"
policies = "policies"
[api]
auth_id = "MA0000000000000000000"
[safety]
protected_numbers = ["911", "19005550199"]
"#;

const POLICY: &str = r#"[[rule]]
name = "premium-10m"
max_duration = "10m"
[rule.match]
to = "+1900*"
"#;

/// A config with one policy in a temporary directory, and `tests/` cases.
fn project(cases: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("callwarden.toml"), CONFIG).unwrap();
    std::fs::create_dir_all(dir.path().join("policies/tests")).unwrap();
    std::fs::write(dir.path().join("policies/premium.toml"), POLICY).unwrap();
    for (name, text) in cases {
        std::fs::write(dir.path().join("policies/tests").join(name), text).unwrap();
    }
    dir
}

#[test]
fn the_sample_cases_pass_against_the_sample_policies() {
    let output = callwarden(&root(), &["--config", "examples/callwarden.toml", "test"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    let summary = text.lines().last().unwrap_or_default();
    assert!(
        summary.ends_with("cases in 5 files: all passed"),
        "{summary}"
    );
}

#[test]
fn a_failing_case_prints_file_line_expected_and_got() {
    let cases = r#"# premium calls
[[case]]
name = "premium passes"
age = "4m"
call = { to = "+19005550101" }
decision = { rule = "premium-10m", due_in = "6m" }

[[case]]
name = "premium with the wrong limit"
age = "4m"
call = { to = "+19005550101" }
decision = { rule = "premium-10m", due_in = "1m" }

[[case]]
name = "landline expected to be ended"
call = { to = "+14155550123" }
decision = { rule = "premium-10m" }

[[case]]
name = "a protected premium number"
age = "20m"
call = { to = "+1 900 555 0199" }
decision = "protected"
"#;
    let dir = project(&[("premium.toml", cases)]);
    let output = callwarden(dir.path(), &["--config", "callwarden.toml", "test"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert_eq!(
        stdout(&output),
        "policies/tests/premium.toml:8: FAIL premium with the wrong limit: expected premium-10m due_in 1m, got premium-10m due_in 6m\n\
         policies/tests/premium.toml:14: FAIL landline expected to be ended: expected premium-10m, got \"none\"\n\
         4 cases in 1 file: 2 failed, 2 passed\n"
    );
}

#[test]
fn a_malformed_case_file_is_a_usage_error_with_its_position() {
    let good = "[[case]]\nname = \"ok\"\ncall = { to = \"+1900555\" }\ndecision = { rule = \"premium-10m\", due_in = \"10m\" }\n";
    let bad = "[[case]]\nname = \"typo\"\ncall = { to = \"+1900555\", colour = \"red\" }\ndecision = { rule = \"premium-1m\" }\n";
    let dir = project(&[("a-good.toml", good), ("b-bad.toml", bad)]);
    let output = callwarden(dir.path(), &["--config", "callwarden.toml", "test"]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert_eq!(
        stdout(&output),
        "policies/tests/b-bad.toml:3:27: error: unknown key `colour`\n\
         1 case in 2 files: 0 failed, 1 passed, 1 file with errors\n"
    );

    // A rule name that no policy defines is a usage error too, at its position.
    let unknown = "[[case]]\nname = \"typo\"\ncall = { to = \"+1900555\" }\ndecision = { rule = \"premium-1m\" }\n";
    let dir = project(&[("c.toml", unknown)]);
    let output = callwarden(dir.path(), &["--config", "callwarden.toml", "test"]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(stdout(&output).starts_with(
        "policies/tests/c.toml:4:21: error: case `typo`: no rule `premium-1m` in the policies of account `default`\n"
    ));
}

#[test]
fn a_path_selects_one_case_file_and_a_missing_one_is_a_usage_error() {
    let case = "[[case]]\nname = \"ok\"\ncall = { to = \"+1900555\" }\ndecision = { rule = \"premium-10m\", due_in = \"10m\" }\n";
    let dir = project(&[("one.toml", case), ("two.toml", "not toml [")]);
    let output = callwarden(
        dir.path(),
        &[
            "--config",
            "callwarden.toml",
            "test",
            "policies/tests/one.toml",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(stdout(&output), "1 case in 1 file: all passed\n");

    let output = callwarden(
        dir.path(),
        &["--config", "callwarden.toml", "test", "nowhere.toml"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout(&output).contains("nowhere.toml does not exist"));
}
