//! Hostile configs and policies through the real `callwarden check`: every
//! one is a clear `FILE:LINE:COL: error: MESSAGE` at the right place, one
//! line per problem, exit 1, never a panic. The corpus is
//! `tests/fixtures/hostile/`; huge and deeply nested inputs are generated.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::files::{offline_config_for, private};

fn hostile(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hostile")
        .join(path)
}

struct Checked {
    code: Option<i32>,
    lines: Vec<String>,
}

fn check(config: &Path) -> Checked {
    let output = Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .arg("--config")
        .arg(config)
        .arg("check")
        .env("VOBIZ_AUTH_TOKEN", "t")
        .env_remove("CALLWARDEN_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("callwarden runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    Checked {
        code: output.status.code(),
        lines: text.lines().map(str::to_owned).collect(),
    }
}

/// Checks the output shape and that `file:line:col: error: …needle…` is there.
fn assert_error_at(checked: &Checked, file: &Path, line: usize, col: usize, needle: &str) {
    assert_eq!(checked.code, Some(1), "{:#?}", checked.lines);
    let (summary, diagnostics) = checked.lines.split_last().expect("output");
    assert!(summary.contains("error"), "summary: {summary}");
    for diagnostic in diagnostics {
        let shaped = diagnostic.contains(": error: ") || diagnostic.contains(": warning: ");
        assert!(shaped, "not FILE:LINE:COL: severity: …: {diagnostic:?}");
    }
    let prefix = format!("{}:{line}:{col}: error: ", file.display());
    assert!(
        diagnostics
            .iter()
            .any(|d| d.starts_with(&prefix) && d.contains(needle)),
        "no `{prefix}…{needle}…` in {diagnostics:#?}"
    );
}

#[test]
fn every_hostile_policy_is_a_positioned_error() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("bad_glob.toml", 5, 7, "bad glob"),
        ("cron_february_31.toml", 5, 8, "never fires"),
        ("cron_out_of_range.toml", 5, 8, "bad cron"),
        ("cron_too_many_fields.toml", 5, 8, "expected 6 fields"),
        ("duplicate_key.toml", 3, 1, "duplicate key"),
        ("duration_negative.toml", 3, 16, "bad duration"),
        ("duration_overflow.toml", 3, 16, "too large"),
        ("duration_unit.toml", 3, 16, "unknown time unit"),
        ("integer_overflow.toml", 4, 12, "priority"),
        ("invalid_utf8.toml", 2, 12, "not valid UTF-8"),
        (
            "many_problems.toml",
            4,
            1,
            "both `max_duration` and `idle_timeout`",
        ),
        ("many_problems.toml", 6, 10, "`hangup` must be"),
        ("nul_byte.toml", 3, 20, "unexpected"),
        ("nul_in_name.toml", 2, 8, "invalid rule name `x\\u{0}y`"),
        ("rule_not_a_table.toml", 1, 8, "array of tables"),
        ("syntax_unclosed_header.toml", 1, 8, "unclosed"),
        ("syntax_unterminated_string.toml", 3, 19, "string"),
        ("unknown_keys.toml", 4, 1, "unknown key `max_durration`"),
        ("unknown_keys.toml", 5, 7, "unknown key `matc`"),
        ("unknown_zone.toml", 7, 12, "unknown time zone"),
        ("utf16_bom.toml", 1, 1, "not valid UTF-8"),
        ("wrong_types.toml", 3, 16, "must be a string"),
        ("wrong_types.toml", 4, 12, "must be an integer"),
        ("wrong_types_in_match.toml", 6, 7, "list of strings"),
    ];
    for (name, line, col, needle) in cases {
        let policy = hostile(&format!("policy/{name}"));
        let (_dir, config) = offline_config_for(&policy);
        assert_error_at(&check(&config), &policy, *line, *col, needle);
    }
}

#[test]
fn every_hostile_config_is_a_positioned_error() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("bad_numbers.toml", 5, 16, "`max_attempts` must be between"),
        ("bad_numbers.toml", 6, 19, "longer than 0s"),
        ("bad_numbers.toml", 7, 15, "too large"),
        ("bad_values.toml", 4, 12, "not an http"),
        ("bad_values.toml", 5, 18, "unknown time zone"),
        ("bad_values.toml", 7, 10, "`listen` must be an address"),
        ("duplicate_table.toml", 4, 2, "duplicate key"),
        ("invalid_utf8.toml", 3, 14, "not valid UTF-8"),
        ("syntax.toml", 2, 5, "unclosed table"),
        ("unknown_keys.toml", 4, 1, "unknown key `auth_tokn`"),
        ("unknown_keys.toml", 5, 2, "unknown key `pol`"),
        ("wrong_types.toml", 4, 11, "must be a string"),
        ("wrong_types.toml", 5, 27, "must be an integer"),
    ];
    for (name, line, col, needle) in cases {
        let config = hostile(&format!("config/{name}"));
        assert_error_at(&check(&config), &config, *line, *col, needle);
    }
}

#[test]
fn a_newline_or_escape_in_a_name_stays_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"a\\nb\\u001b[2Jc\"\nmax_duration = \"1m\"\n",
    )
    .unwrap();
    let (_c, config) = offline_config_for(&policy);
    let checked = check(&config);
    assert_error_at(
        &checked,
        &policy,
        2,
        8,
        "invalid rule name `a\\nb\\u{1b}[2Jc`",
    );
    assert!(checked.lines.iter().all(|l| !l.contains('\u{1b}')));
    assert_eq!(checked.lines.len(), 2, "{:#?}", checked.lines);
}

#[test]
fn huge_files_are_read_and_the_error_is_found_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("huge.toml");
    let mut text = "# padding padding padding padding padding padding padding\n".repeat(150_000);
    text.push_str("[[rule]]\nname = \"x\"\nmax_duration = \"1m\"\nbogus = 1\n");
    std::fs::write(&policy, text).unwrap();
    let (_c, config) = offline_config_for(&policy);
    assert_error_at(&check(&config), &policy, 150_004, 1, "unknown key `bogus`");
}

#[test]
fn files_over_the_size_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("enormous.toml");
    let file = std::fs::File::create(&policy).unwrap();
    // Sparse: 65 MiB of zero bytes without writing them.
    file.set_len(65 << 20).unwrap();
    let (_c, config) = offline_config_for(&policy);
    assert_error_at(&check(&config), &policy, 1, 1, "larger than 64 MiB");
}

#[test]
fn ten_thousand_rules_load_and_a_late_duplicate_is_pinpointed() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("many.toml");
    let mut text: String = (0..10_000)
        .map(|i| {
            format!(
                "[[rule]]\nname = \"r{i}\"\nmax_duration = \"{}m\"\n[rule.match]\nto = [\"+1{i}*\"]\n",
                i % 60 + 1
            )
        })
        .collect();
    let (_c, config) = offline_config_for(&policy);
    std::fs::write(&policy, &text).unwrap();
    let ok = check(&config);
    assert_eq!(ok.code, Some(0), "{:#?}", ok.lines);
    assert!(ok.lines.last().unwrap().contains("10000 rules"));

    text.push_str("[[rule]]\nname = \"r42\"\nmax_duration = \"1m\"\n");
    std::fs::write(&policy, &text).unwrap();
    assert_error_at(
        &check(&config),
        &policy,
        50_002,
        8,
        "duplicate rule name `r42`",
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let cases = [
        (
            "arrays.toml",
            format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth)),
        ),
        (
            "inline.toml",
            format!("x = {}1{}\n", "{a = ".repeat(depth), "}".repeat(depth)),
        ),
        (
            "dotted.toml",
            format!("[{}]\n", vec!["a"; 20_000].join(".")),
        ),
        ("unclosed.toml", format!("x = {}\n", "[".repeat(depth))),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in cases {
        let policy = dir.path().join(name);
        std::fs::write(&policy, text).unwrap();
        let (_c, config) = offline_config_for(&policy);
        let checked = check(&config);
        assert_error_at(&checked, &policy, 1, checked_col(&checked, &policy), "");
    }
}

/// The column of the first error about `file` (deep-nesting errors are
/// reported wherever the parser gave up; only the shape is fixed).
fn checked_col(checked: &Checked, file: &Path) -> usize {
    let prefix = format!("{}:1:", file.display());
    checked
        .lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix)?.split(':').next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no error on line 1 of {}: {:#?}",
                file.display(),
                checked.lines
            )
        })
}

#[test]
fn an_empty_or_binary_config_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("empty.toml", b"".to_vec()),
        ("binary.toml", (0u8..=255).collect::<Vec<u8>>()),
        ("only_nul.toml", vec![0u8; 64]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        private(&path);
        let checked = check(&path);
        assert_eq!(checked.code, Some(1), "{name}: {:#?}", checked.lines);
        assert!(
            checked.lines.iter().any(|l| l.contains(": error: ")),
            "{name}: {:#?}",
            checked.lines
        );
    }
}
