//! Policy language end to end through the library: loading, validation with
//! exact positions, evaluation, windows, exemptions and protected numbers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use callwarden::call::{normalize_number, Call, CallStatus, CallUuid, Direction, Shape};
use callwarden::config::{self, check, load, load_policy_files, Environment, Severity};
use callwarden::policy::{
    deadline_only, evaluate, evaluate_rule, is_protected, MatchField, Policy, RuleOutcome, Timeline,
};
use chrono::{DateTime, Utc};
use proptest::prelude::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/bad").join(name)
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn now() -> DateTime<Utc> {
    utc("2026-06-01T12:00:00Z")
}

/// `(line, col, severity, message)` of every diagnostic, mode warnings left out
/// (they depend on how the checkout was made).
fn positions(diags: &[config::Diagnostic], file: &Path) -> Vec<(usize, usize, Severity, String)> {
    diags
        .iter()
        .filter(|d| !d.message.contains("readable by other users"))
        .map(|d| {
            assert_eq!(d.file, file, "diagnostic for an unexpected file: {d}");
            (d.line, d.col, d.severity, d.message.clone())
        })
        .collect()
}

fn policy_diagnostics(name: &str) -> Vec<(usize, usize, Severity, String)> {
    let path = fixture(name);
    let diags = match load_policy_files(std::slice::from_ref(&path), now()) {
        Ok((_, warnings)) => warnings,
        Err(diags) => diags,
    };
    positions(&diags, &path)
}

/// `(line, col, severity, message)` expected for one diagnostic.
type Expected = (usize, usize, Severity, &'static str);

const E: Severity = Severity::Error;
const W: Severity = Severity::Warning;

#[test]
fn every_bad_policy_file_reports_its_exact_position_and_message() {
    let table: &[(&str, &[Expected])] = &[
        ("syntax.toml", &[(2, 15, E, "invalid basic string, expected `\"`")]),
        (
            "unknown_key.toml",
            &[(3, 1, E, "unknown key `max_duraton`, did you mean `max_duration`?")],
        ),
        (
            "wrong_type.toml",
            &[(4, 12, E, "`priority` must be an integer, found string")],
        ),
        (
            "no_limit.toml",
            &[(1, 1, E, "rule `no-limit` needs one limit: `max_duration`, `idle_timeout` or `max_concurrent`")],
        ),
        (
            "both_limits.toml",
            &[(4, 1, E, "rule `both` has both `max_duration` and `idle_timeout`; give exactly one")],
        ),
        (
            "bad_duration.toml",
            &[(3, 16, E, "`max_duration`: bad duration `5 parsecs`: unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations) (use e.g. \"90s\", \"5m\", \"1h 30m\")")],
        ),
        (
            "bad_cron.toml",
            &[(6, 8, E, "bad cron `0 0 25 * * *`: Component error: Number out of bounds.")],
        ),
        (
            "bad_timezone.toml",
            &[(8, 12, E, "unknown time zone `Europe/Londn` (use an IANA name such as \"Europe/London\")")],
        ),
        (
            "bad_glob.toml",
            &[(6, 17, E, "bad glob `+1[900*` in `to`: unclosed character class; missing ']'")],
        ),
        (
            "warn_before_too_long.toml",
            &[(6, 15, E, "`warn_before` (1m) must be shorter than the rule's limit (1m)")],
        ),
        (
            "warn_before_without_text.toml",
            &[(6, 15, E, "rule `warn-no-text`: `warn_before` needs a `warn_text` to speak")],
        ),
        (
            "warn_text_without_before.toml",
            &[(6, 13, E, "rule `text-no-warn`: `warn_text` needs a `warn_before`")],
        ),
        (
            "empty_match_list.toml",
            &[(6, 6, E, "empty match list `to` matches nothing; remove it to match any value")],
        ),
        (
            "window_without_duration.toml",
            &[(5, 1, E, "window has no `duration`")],
        ),
        (
            "window_longer_than_period.toml",
            &[(7, 12, E, "window `duration` (1h 30m) is longer than its period (1h between two openings of `0 0 * * * *`)")],
        ),
        (
            "measure_from_with_idle.toml",
            &[(4, 1, E, "rule `idle-measure`: `measure_from` applies to `max_duration` only, not `idle_timeout`")],
        ),
        (
            "bad_rule_name.toml",
            &[(2, 8, E, "invalid rule name `Outbound_60`: use lower-case letters, digits and `-`")],
        ),
        (
            "zero_without_window.toml",
            &[(3, 16, E, "rule `zero`: `max_duration = \"0s\"` without a [[rule.window]] would hang up every matching call at once; use it only inside a maintenance window")],
        ),
        (
            "unknown_status.toml",
            &[
                (6, 11, E, "unknown status `ringin`, did you mean `ringing`?"),
                (7, 13, E, "unknown direction `sideways` (one of: inbound, outbound)"),
            ],
        ),
        (
            "idle_not_limited.toml",
            &[(3, 1, W, "idle rule `idle-any` is not limited to ringing/queued/early-media calls; an answered call never changes state, so it would end `idle_timeout` after its last change (add `status = [\"ringing\", \"queued\"]` to [rule.match])")],
        ),
        (
            "invalid_utf8.toml",
            &[(2, 12, E, "file is not valid UTF-8 (first bad byte at offset 20)")],
        ),
        (
            "max_concurrent.toml",
            &[
                (3, 18, E, "`max_concurrent` must be between 1 and 4294967295"),
                (8, 12, E, "`group_by` must be \"rule\", \"to\" or \"from\", found `caller`"),
                (13, 1, E, "rule `cap-and-duration` has both `max_duration` and `max_concurrent`; give exactly one"),
                (18, 1, E, "rule `group-without-cap`: `group_by` applies to `max_concurrent` only, not `max_duration`"),
                (24, 15, E, "rule `cap-with-warning`: `warn_before` does not apply to `max_concurrent`: calls beyond the cap end at once"),
                (29, 18, E, "`max_concurrent` must be an integer, found string"),
            ],
        ),
        (
            "many_errors.toml",
            &[
                (3, 16, E, "`max_duration`: bad duration `1x`: unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations) (use e.g. \"90s\", \"5m\", \"1h 30m\")"),
                (8, 1, E, "rule `two` has both `max_duration` and `idle_timeout`; give exactly one"),
                (14, 1, E, "unknown key `color`"),
            ],
        ),
    ];
    for (name, expected) in table {
        let expected: Vec<_> = expected
            .iter()
            .map(|(l, c, s, m)| (*l, *c, *s, m.to_string()))
            .collect();
        assert_eq!(policy_diagnostics(name), expected, "fixture {name}");
    }
}

#[test]
fn display_is_file_line_col_severity_message() {
    let path = fixture("bad_rule_name.toml");
    let diags = load_policy_files(std::slice::from_ref(&path), now()).unwrap_err();
    assert_eq!(
        diags[0].to_string(),
        format!(
            "{}:2:8: error: invalid rule name `Outbound_60`: use lower-case letters, digits and `-`",
            path.display()
        )
    );
}

#[test]
fn duplicate_rule_names_point_at_the_second_and_name_the_first() {
    let first = fixture("duplicate_a.toml");
    let second = fixture("duplicate_b.toml");
    let diags = load_policy_files(&[first.clone(), second.clone()], now()).unwrap_err();
    assert_eq!(
        positions(&diags, &second),
        vec![(
            6,
            8,
            E,
            format!(
                "duplicate rule name `same-name` (first defined at {}:3)",
                first.display()
            )
        )]
    );
}

fn config_fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/config").join(name)
}

#[test]
fn bad_config_files_report_exact_positions() {
    let table: &[(&str, &[Expected])] = &[
        (
            "unknown_key.toml",
            &[(7, 1, E, "unknown key `intervall`, did you mean `interval`?")],
        ),
        (
            "protected_not_digits.toml",
            &[(7, 29, E, "protected number `emergency` is not a phone number (digits, optional `+`)")],
        ),
        (
            "empty_protected.toml",
            &[(7, 21, W, "`protected_numbers` is empty: emergency numbers are not protected")],
        ),
        (
            "bad_values.toml",
            &[
                (5, 11, E, "`timeout`: bad duration `soon`: expected number at 0 (use e.g. \"90s\", \"5m\", \"1h 30m\")"),
                (6, 18, E, "unknown time zone `Mars/Olympus` (use an IANA name such as \"UTC\" or \"Asia/Kolkata\")"),
                (9, 10, E, "`listen` must be an address like \"127.0.0.1:9469\" (or \"\" to disable), found `localhost`"),
                (12, 10, E, "`format` must be \"auto\", \"json\" or \"pretty\", found `xml`"),
            ],
        ),
    ];
    for (name, expected) in table {
        let path = config_fixture(name);
        let report = check(&path, &Environment::default());
        let expected: Vec<_> = expected
            .iter()
            .map(|(l, c, s, m)| (*l, *c, *s, m.to_string()))
            .collect();
        assert_eq!(
            positions(&report.diagnostics, &path),
            expected,
            "fixture {name}"
        );
        assert_eq!(report.is_ok(), !expected.iter().any(|d| d.2 == E));
    }
}

#[test]
fn a_missing_policy_file_is_reported_at_its_list_entry() {
    let path = config_fixture("missing_policies.toml");
    let report = check(&path, &Environment::default());
    let missing = config_fixture("nowhere.toml");
    assert_eq!(
        positions(&report.diagnostics, &path),
        vec![(
            1,
            45,
            E,
            format!("policy path `{}` does not exist", missing.display())
        )]
    );
    assert!(!report.is_ok());
    assert!(report.summary().starts_with("2 files, 1 rule: 1 error"));
}

#[test]
fn the_sample_config_and_policies_check_clean() {
    let report = check(
        &root().join("examples/callwarden.toml"),
        &Environment::default(),
    );
    assert!(report.is_ok(), "{report}");
    assert!(report
        .diagnostics
        .iter()
        .all(|d| d.message.contains("readable by other users")));
    assert_eq!(report.files.len(), 6);
    assert_eq!(report.rules, 5);

    let loaded = load(
        &root().join("examples/callwarden.toml"),
        &Environment::default(),
    )
    .unwrap();
    let account = &loaded.config.accounts[0];
    assert_eq!(account.name, "default");
    assert_eq!(account.auth_id, "MAXXXXXXXXXXXXXXXXXX");
    assert!(account.token.is_none(), "no token is not a load error");
    let names: Vec<_> = account
        .policy
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "outbound-60m",
            "premium-rate-10m",
            "stuck-ringing-2m",
            "nightly-maintenance",
            "inbound-support-4h"
        ]
    );
    assert!(account.policy.needs_queued_calls());
    assert!(account.policy.has_idle_rules());
}

#[test]
fn defaults_are_exactly_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/a.toml"),
        "[[rule]]\nname = \"a\"\nmax_duration = \"1h\"\n",
    )
    .unwrap();
    let path = dir.path().join("callwarden.toml");
    std::fs::write(&path, "[api]\nauth_id = \"MA1\"\n").unwrap();
    let config = load(&path, &Environment::default()).unwrap().config;
    assert_eq!(config.api.base_url, "https://api.vobiz.ai/api/v1");
    assert_eq!(config.api.timeout, Duration::from_secs(10));
    assert_eq!(config.api.max_requests_per_second, 10);
    assert_eq!(config.api.max_concurrent_requests, 8);
    assert_eq!(config.api.timestamp_zone, chrono_tz::UTC);
    assert_eq!(config.poll_interval, Duration::from_secs(5));
    assert!(!config.enforce.dry_run);
    assert_eq!(config.enforce.grace, Duration::ZERO);
    assert_eq!(config.retry.max_attempts, 6);
    assert_eq!(config.retry.initial_backoff, Duration::from_millis(500));
    assert_eq!(config.retry.max_backoff, Duration::from_secs(30));
    assert_eq!(
        config.safety.protected_numbers,
        ["911", "112", "999", "000", "100", "101", "102", "108"]
    );
    assert_eq!(config.safety.max_hangups_per_cycle, 100);
    assert_eq!(config.safety.max_hangups_percent, 50);
    assert_eq!(config.safety.breaker_min_live_calls, 20);
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/callwarden"));
    assert_eq!(config.http.listen, Some("127.0.0.1:9469".parse().unwrap()));
    assert!(!config.http.allow_remote_pardon);
    assert_eq!(config.log_format, config::LogFormat::Auto);
}

#[test]
fn environment_overrides_tokens_and_paths() {
    let dir = config_fixture("good.toml");
    // Token from the file, trimmed; listen "" disables; relative state dir resolved.
    let loaded = load(&dir, &Environment::default()).unwrap();
    let account = &loaded.config.accounts[0];
    assert_eq!(account.token.as_ref().unwrap().expose(), "secret-token");
    assert_eq!(loaded.config.http.listen, None);
    assert_eq!(loaded.config.state_dir, config_fixture("state"));

    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("vobiz-auth-token"), "from-credential\n").unwrap();
    let env = Environment {
        auth_id: Some("MAENV".into()),
        auth_token: Some("from-env".into()),
        base_url: Some("http://127.0.0.1:8089/api/v1/".into()),
        credentials_directory: Some(creds.path().to_path_buf()),
        state_directory: Some("/run/state".into()),
        postgres_url: None,
    };
    let config = load(&dir, &env).unwrap().config;
    assert_eq!(config.accounts[0].auth_id, "MAENV");
    assert_eq!(
        config.accounts[0].token.as_ref().unwrap().expose(),
        "from-env"
    );
    assert_eq!(config.api.base_url, "http://127.0.0.1:8089/api/v1");
    assert_eq!(config.state_dir, PathBuf::from("/run/state"));

    // No env token: the file wins over the credential.
    let env = Environment {
        auth_token: None,
        ..env
    };
    let config = load(&dir, &env).unwrap().config;
    assert_eq!(
        config.accounts[0].token.as_ref().unwrap().expose(),
        "secret-token"
    );

    // No file either: the credential.
    let config = load(&config_fixture("empty_protected.toml"), &env)
        .unwrap()
        .config;
    assert_eq!(
        config.accounts[0].token.as_ref().unwrap().expose(),
        "from-credential"
    );
    assert!(
        config.safety.protected_numbers.is_empty(),
        "replaces the defaults"
    );
}

#[test]
fn several_accounts_have_their_own_policies_and_credentials() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("vobiz-auth-token-sales"), " sales-token ").unwrap();
    let env = Environment {
        auth_id: Some("IGNORED".into()),
        auth_token: Some("IGNORED".into()),
        credentials_directory: Some(creds.path().to_path_buf()),
        ..Environment::default()
    };
    let loaded = load(&config_fixture("accounts.toml"), &env).unwrap();
    assert!(loaded.warnings.iter().any(|w| w
        .message
        .starts_with("VOBIZ_AUTH_ID / VOBIZ_AUTH_TOKEN are ignored")));
    let config = loaded.config;
    let names: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["sales", "support"]);
    assert_eq!(config.accounts[0].auth_id, "MA1");
    assert_eq!(
        config.accounts[0].token.as_ref().unwrap().expose(),
        "sales-token"
    );
    assert!(config.accounts[1].token.is_none());
    assert_eq!(config.accounts[0].policy.rules[0].name, "stuck-ringing-2m");
    assert_eq!(config.accounts[1].policy.rules[0].name, "outbound-60m");
}

#[cfg(unix)]
#[test]
fn world_readable_token_files_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/a.toml"),
        "[[rule]]\nname = \"a\"\nmax_duration = \"1h\"\n",
    )
    .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = dir.path().join("callwarden.toml");
    std::fs::write(
        &path,
        "[api]\nauth_id = \"MA1\"\nauth_token_file = \"token\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = check(&path, &Environment::default());
    assert!(report.is_ok());
    assert_eq!(report.diagnostics.len(), 1, "{report}");
    assert_eq!(report.diagnostics[0].file, token);
    assert_eq!(
        report.diagnostics[0].message,
        "file is readable by other users (mode 0644); run `chmod o-r` on it"
    );
    assert_eq!(report.summary(), "2 files, 1 rule: ok, 1 warning");
}

// ---- evaluation ----

fn sample_policy() -> Policy {
    let dir = root().join("policies");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        // policies/tests/ holds test cases, not policies.
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    load_policy_files(&paths, now()).unwrap().0
}

fn call(direction: Direction, from: &str, to: &str, status: CallStatus) -> Call {
    Call {
        uuid: CallUuid::parse("c1").unwrap(),
        direction,
        from: normalize_number(from).into(),
        to: normalize_number(to).into(),
        caller_name: "".into(),
        status,
        started_at: None,
        answered_at: None,
        duration_s: None,
        parent_call_uuid: None,
        shape: Shape::Legacy,
        raw: Default::default(),
    }
}

fn index(policy: &Policy, name: &str) -> usize {
    policy.rules.iter().position(|r| r.name == name).unwrap()
}

#[test]
fn premium_rate_beats_the_general_outbound_limit() {
    let policy = sample_policy();
    let c = call(
        Direction::Outbound,
        "+14155550100",
        "+1 900 555 1234",
        CallStatus::InProgress,
    );
    let answered = utc("2026-06-01T11:55:00Z");
    let timeline = Timeline {
        started: Some(utc("2026-06-01T11:54:30Z")),
        answered: Some(answered),
        last_change: answered,
    };
    let eval = evaluate(&policy, &c, "default", &timeline, now(), Duration::ZERO);
    let premium = index(&policy, "premium-rate-10m");
    let outbound = index(&policy, "outbound-60m");
    assert_eq!(
        eval.outcome(premium).unwrap(),
        RuleOutcome::Due {
            deadline: utc("2026-06-01T12:05:00Z")
        }
    );
    assert_eq!(
        eval.outcome(outbound).unwrap(),
        RuleOutcome::Due {
            deadline: utc("2026-06-01T12:55:00Z")
        }
    );
    assert_eq!(
        eval.outcome(index(&policy, "inbound-support-4h")).unwrap(),
        RuleOutcome::NotMatched {
            field: MatchField::Direction,
            value: "outbound".into()
        }
    );
    assert_eq!(
        eval.effective(&policy, false),
        Some((premium, utc("2026-06-01T12:05:00Z")))
    );
    // Global dry-run still names the live winner.
    assert_eq!(
        eval.effective(&policy, true),
        eval.effective(&policy, false)
    );
    assert_eq!(
        deadline_only(&policy, &c, "default", &timeline, now(), Duration::ZERO),
        eval.effective(&policy, false)
    );
    // Grace moves every deadline.
    let graced = evaluate(
        &policy,
        &c,
        "default",
        &timeline,
        now(),
        Duration::from_secs(30),
    );
    assert_eq!(
        graced.effective(&policy, false),
        Some((premium, utc("2026-06-01T12:05:30Z")))
    );
}

#[test]
fn unanswered_calls_are_not_due_from_answer() {
    let policy = sample_policy();
    let c = call(
        Direction::Outbound,
        "1",
        "+14155550100",
        CallStatus::Ringing,
    );
    let timeline = Timeline {
        started: Some(utc("2026-06-01T11:00:00Z")),
        answered: None,
        last_change: utc("2026-06-01T11:59:00Z"),
    };
    let eval = evaluate(&policy, &c, "default", &timeline, now(), Duration::ZERO);
    assert_eq!(
        eval.outcome(index(&policy, "outbound-60m")).unwrap(),
        RuleOutcome::NotMatched {
            field: MatchField::Status,
            value: "ringing".into()
        }
    );
    let stuck = index(&policy, "stuck-ringing-2m");
    assert_eq!(
        eval.effective(&policy, false),
        Some((stuck, utc("2026-06-01T12:01:00Z")))
    );
    // The same call in progress without an answer time is not due.
    let c = call(
        Direction::Outbound,
        "1",
        "+14155550100",
        CallStatus::InProgress,
    );
    let eval = evaluate(&policy, &c, "default", &timeline, now(), Duration::ZERO);
    assert_eq!(
        eval.outcome(index(&policy, "outbound-60m")).unwrap(),
        RuleOutcome::NotDue {
            reason: "not answered yet".into()
        }
    );
    assert_eq!(eval.effective(&policy, false), None);
}

#[test]
fn unless_exempts_when_any_field_matches() {
    let policy = sample_policy();
    let rule = index(&policy, "inbound-support-4h");
    let timeline = Timeline {
        started: Some(utc("2026-06-01T06:00:00Z")),
        answered: Some(utc("2026-06-01T06:00:00Z")),
        last_change: utc("2026-06-01T06:00:00Z"),
    };
    let check = |c: &Call| {
        evaluate(&policy, c, "default", &timeline, now(), Duration::ZERO)
            .outcome(rule)
            .unwrap()
    };
    let plain = call(
        Direction::Inbound,
        "+15550001",
        "+15550002",
        CallStatus::InProgress,
    );
    assert_eq!(
        check(&plain),
        RuleOutcome::Due {
            deadline: utc("2026-06-01T10:00:00Z")
        }
    );
    let desk = call(
        Direction::Inbound,
        "+15550001",
        "18005550195",
        CallStatus::InProgress,
    );
    assert_eq!(
        check(&desk),
        RuleOutcome::Exempt {
            field: MatchField::To,
            value: "18005550195".into()
        }
    );
    let vip = call(
        Direction::Inbound,
        "+44 20 7183 8750",
        "+15550002",
        CallStatus::InProgress,
    );
    assert!(matches!(
        check(&vip),
        RuleOutcome::Exempt {
            field: MatchField::From,
            ..
        }
    ));
    let mut noc = plain.clone();
    noc.caller_name = "NOC London".into();
    assert!(matches!(
        check(&noc),
        RuleOutcome::Exempt {
            field: MatchField::CallerName,
            ..
        }
    ));
}

#[test]
fn dry_run_rules_are_beside_never_instead_of_live_ones() {
    let policy = sample_policy();
    let maintenance = index(&policy, "nightly-maintenance");
    assert!(policy.rules[maintenance].action.dry_run);
    // 01:30 UTC on 1 June is 02:30 BST: inside the window.
    let at = utc("2026-06-01T01:30:00Z");
    let c = call(
        Direction::Outbound,
        "1",
        "+14155550100",
        CallStatus::InProgress,
    );
    let timeline = Timeline {
        started: Some(utc("2026-06-01T01:00:00Z")),
        answered: Some(utc("2026-06-01T01:00:00Z")),
        last_change: utc("2026-06-01T01:00:00Z"),
    };
    let eval = evaluate(&policy, &c, "default", &timeline, at, Duration::ZERO);
    let due: Vec<_> = eval.dry_run_due(&policy).collect();
    // The call started before the window opened (01:00 UTC = 02:00 BST): due at the opening.
    assert_eq!(due, vec![(maintenance, utc("2026-06-01T01:00:00Z"))]);
    let outbound = index(&policy, "outbound-60m");
    assert_eq!(
        eval.effective(&policy, false),
        Some((outbound, utc("2026-06-01T02:00:00Z")))
    );
    assert_eq!(eval.matched().count(), 2);
}

#[test]
fn a_window_that_closed_never_makes_a_call_overdue() {
    let policy = sample_policy();
    let maintenance = index(&policy, "nightly-maintenance");
    let c = call(Direction::Inbound, "1", "2", CallStatus::InProgress);
    // Started 3 days ago; now is 12:00 UTC, outside the window.
    let start = utc("2026-05-29T12:00:00Z");
    let timeline = Timeline {
        started: Some(start),
        answered: Some(start),
        last_change: start,
    };
    let eval = evaluate(&policy, &c, "default", &timeline, now(), Duration::ZERO);
    assert_eq!(
        eval.outcome(maintenance).unwrap(),
        RuleOutcome::Due {
            deadline: utc("2026-06-02T01:00:00Z")
        }
    );
    assert!(!policy.rules[maintenance].is_active_at(now()));
    assert_eq!(
        policy.rules[maintenance].next_change_after(now()),
        Some(utc("2026-06-02T01:00:00Z"))
    );
}

#[test]
fn maintenance_window_across_dst_in_london() {
    let policy = sample_policy();
    let rule = &policy.rules[index(&policy, "nightly-maintenance")];
    // Before spring forward 02:00 GMT = 02:00 UTC; after it 02:00 BST = 01:00 UTC.
    assert!(rule.is_active_at(utc("2026-03-28T02:30:00Z")));
    assert!(rule.is_active_at(utc("2026-03-30T01:30:00Z")));
    assert!(!rule.is_active_at(utc("2026-03-30T02:30:00Z")));
    // Spring-forward day (29 March): 01:00 GMT jumps to 02:00 BST; 02:00 exists as BST.
    assert!(rule.is_active_at(utc("2026-03-29T01:00:00Z")));
    // Fall back (25 October): 02:00 local happens once (after the fold), 02:00 GMT.
    assert!(rule.is_active_at(utc("2026-10-25T02:00:00Z")));
    assert!(!rule.is_active_at(utc("2026-10-25T01:30:00Z")));
}

#[test]
fn new_york_0230_window_on_spring_forward_day() {
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        path.path(),
        "[[rule]]\nname = \"w\"\nmax_duration = \"0s\"\n[[rule.window]]\ncron = \"0 30 2 * * *\"\nduration = \"30m\"\ntimezone = \"America/New_York\"\n",
    )
    .unwrap();
    let policy = load_policy_files(&[path.path().to_path_buf()], now())
        .unwrap()
        .0;
    let rule = &policy.rules[0];
    // 8 March 2026: 02:30 does not exist; the window opens at 03:00 EDT = 07:00 UTC, once.
    let day_before_close = utc("2026-03-07T08:00:00Z");
    assert_eq!(
        rule.next_change_after(day_before_close),
        Some(utc("2026-03-08T07:00:00Z"))
    );
    assert!(rule.is_active_at(utc("2026-03-08T07:10:00Z")));
    assert_eq!(
        rule.next_change_after(utc("2026-03-08T07:10:00Z")),
        Some(utc("2026-03-08T07:30:00Z"))
    );
    assert_eq!(
        rule.next_change_after(utc("2026-03-08T07:30:00Z")),
        Some(utc("2026-03-09T06:30:00Z"))
    );
}

#[test]
fn protected_numbers_are_exact_digit_matches() {
    let list: Vec<String> = ["911", "112"].iter().map(|s| s.to_string()).collect();
    assert!(is_protected("+911", &list));
    assert!(is_protected("911", &list));
    assert!(!is_protected("+9111234567", &list));
    assert!(!is_protected("1911", &list));
    assert!(!is_protected("anonymous", &list));
}

// ---- properties ----

fn arb_call() -> impl Strategy<Value = Call> {
    (
        prop_oneof![
            Just(Direction::Inbound),
            Just(Direction::Outbound),
            Just(Direction::Unknown)
        ],
        prop_oneof![
            Just("+19005551234".to_string()),
            Just("+18005550195".to_string()),
            Just("anonymous".to_string()),
            Just(String::new()),
            "[0-9]{3,12}"
        ],
        prop_oneof![Just("+442071838750".to_string()), "[+]?[0-9]{3,12}"],
        prop_oneof![
            Just(CallStatus::Queued),
            Just(CallStatus::Ringing),
            Just(CallStatus::EarlyMedia),
            Just(CallStatus::InProgress),
        ],
        prop_oneof![
            Just(String::new()),
            Just("NOC x".to_string()),
            "[a-zA-Z ]{0,8}"
        ],
    )
        .prop_map(|(direction, to, from, status, caller_name)| {
            let mut c = call(direction, &from, &to, status);
            c.caller_name = caller_name.into();
            c
        })
}

proptest! {
    #[test]
    fn evaluation_is_total_deterministic_and_picks_the_minimum(
        c in arb_call(),
        start_s in -400_000i64..400_000,
        answer_after in proptest::option::of(0i64..3_600),
        idle_s in 0i64..3_600,
        now_s in -400_000i64..400_000,
        grace_s in 0u64..120,
    ) {
        let policy = sample_policy();
        let base = now();
        let started = base + chrono::Duration::seconds(start_s);
        let timeline = Timeline {
            started: Some(started),
            answered: answer_after.map(|a| started + chrono::Duration::seconds(a)),
            last_change: started + chrono::Duration::seconds(idle_s),
        };
        let at = base + chrono::Duration::seconds(now_s);
        let grace = Duration::from_secs(grace_s);
        let a = evaluate(&policy, &c, "default", &timeline, at, grace);
        let b = evaluate(&policy, &c, "default", &timeline, at, grace);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.verdicts().count(), policy.rules.len());
        // The compact evaluation says what the plain scan of each rule says.
        for (index, rule) in policy.rules.iter().enumerate() {
            let scanned = evaluate_rule(rule, &c, "default", &timeline, at, grace);
            prop_assert_eq!(a.outcome(index), Some(scanned));
        }
        let minimum = a
            .verdicts()
            .filter(|v| !policy.rules[v.rule].action.dry_run)
            .filter_map(|v| v.outcome.deadline())
            .min();
        prop_assert_eq!(a.effective(&policy, false).map(|(_, d)| d), minimum);
        prop_assert_eq!(
            deadline_only(&policy, &c, "default", &timeline, at, grace),
            a.effective(&policy, false)
        );
        for v in a.verdicts() {
            if let Some(deadline) = v.outcome.deadline() {
                // Never earlier than the limit allows.
                let rule = &policy.rules[v.rule];
                if rule.windows.is_empty() {
                    prop_assert!(deadline >= timeline.started.unwrap());
                } else {
                    prop_assert!(rule.is_active_at(deadline));
                }
            }
        }
    }
}

// ---- explain ----

#[test]
fn explain_names_the_failing_field_the_winner_and_protection() {
    use callwarden::policy::{explain, ExplainSettings};
    let policy = sample_policy();
    let c = call(
        Direction::Outbound,
        "+14155550100",
        "+19005551234",
        CallStatus::InProgress,
    );
    let answered = utc("2026-06-01T11:55:00Z");
    let timeline = Timeline {
        started: Some(answered),
        answered: Some(answered),
        last_change: answered,
    };
    let protected = vec!["911".to_string()];
    let settings = ExplainSettings {
        grace: Duration::ZERO,
        global_dry_run: false,
        protected_numbers: &protected,
    };
    let e = explain(&policy, &c, "default", &timeline, now(), &settings);
    let premium = &e.rules[index(&policy, "premium-rate-10m")];
    assert!(premium.winner);
    assert_eq!(premium.time_left_s, Some(300));
    assert_eq!(premium.warn_at, Some(utc("2026-06-01T12:04:30Z")));
    let inbound = &e.rules[index(&policy, "inbound-support-4h")];
    assert_eq!(inbound.result, "not-matched");
    assert_eq!(inbound.field.as_deref(), Some("direction"));
    assert_eq!(inbound.value.as_deref(), Some("outbound"));
    assert_eq!(inbound.patterns, ["inbound"]);
    let decision = e.decision.as_ref().unwrap();
    assert_eq!(decision.rule, "premium-rate-10m");
    assert_eq!(decision.action, "hang up the call at the deadline");
    assert!(!decision.protected);

    let text = e.to_string();
    assert!(text.contains("premium-rate-10m"), "{text}");
    assert!(
        text.contains("direction = \"outbound\" not in [\"inbound\"]"),
        "{text}"
    );
    assert!(text.ends_with("decision: hang up the call at the deadline (rule premium-rate-10m, deadline 2026-06-01T12:05:00Z, in 5m)"), "{text}");
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["decision"]["rule"], "premium-rate-10m");
    assert_eq!(json["rules"][0]["hangup"], "whole");

    // The same call from a protected number is never hung up; global dry-run is only a log.
    let c911 = call(
        Direction::Outbound,
        "911",
        "+19005551234",
        CallStatus::InProgress,
    );
    let e = explain(&policy, &c911, "default", &timeline, now(), &settings);
    assert!(e.decision.as_ref().unwrap().protected);
    let dry = ExplainSettings {
        global_dry_run: true,
        ..settings
    };
    let e = explain(&policy, &c, "default", &timeline, now(), &dry);
    assert_eq!(
        e.decision.unwrap().action,
        "dry run: log that it would hang up the call"
    );
}

#[test]
fn equal_deadlines_go_to_higher_priority_then_name() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "[[rule]]\nname = \"b-low\"\nmax_duration = \"10m\"\n\n\
         [[rule]]\nname = \"c-high\"\nmax_duration = \"10m\"\npriority = 5\n\n\
         [[rule]]\nname = \"a-high\"\nmax_duration = \"10m\"\npriority = 5\n\n\
         [[rule]]\nname = \"dry\"\nmax_duration = \"1m\"\npriority = 99\n[rule.action]\ndry_run = true\n",
    )
    .unwrap();
    let policy = load_policy_files(&[file.path().to_path_buf()], now())
        .unwrap()
        .0;
    let c = call(Direction::Inbound, "1", "2", CallStatus::InProgress);
    let t = utc("2026-06-01T11:00:00Z");
    let timeline = Timeline {
        started: Some(t),
        answered: Some(t),
        last_change: t,
    };
    let eval = evaluate(&policy, &c, "default", &timeline, now(), Duration::ZERO);
    assert_eq!(
        eval.effective(&policy, false),
        Some((index(&policy, "a-high"), utc("2026-06-01T11:10:00Z")))
    );
    assert_eq!(
        eval.dry_run_due(&policy).collect::<Vec<_>>(),
        vec![(index(&policy, "dry"), utc("2026-06-01T11:01:00Z"))]
    );
}

#[test]
fn an_unreadable_config_is_one_error_at_line_1_col_1() {
    let path = root().join("tests/fixtures/does-not-exist.toml");
    let report = check(&path, &Environment::default());
    assert_eq!(report.diagnostics.len(), 1);
    let d = &report.diagnostics[0];
    assert_eq!((d.line, d.col, d.severity), (1, 1, Severity::Error));
    assert!(d.message.starts_with("cannot read file: "), "{}", d.message);
    assert_eq!(report.summary(), "1 file, 0 rules: 1 error");
    assert!(load(&path, &Environment::default()).is_err());
}
