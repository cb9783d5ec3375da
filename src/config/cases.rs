//! Reading policy test case files (`policies/tests/*.toml`) into
//! [`Case`]s, with every problem reported at its position. Deciding them is
//! [`crate::policy::cases`].

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use toml::de::DeValue;

use super::{parse_toml, Diagnostics, FileDiagnostics, Reader, Table};
use crate::call::{normalize_number, Call, CallStatus, CallUuid, Direction, RawAnswer, Shape};
use crate::policy::cases::{Case, Expected, SignedDuration, DEFAULT_AT};
use crate::policy::Timeline;

const CASE_KEYS: &[&str] = &[
    "name",
    "description",
    "call",
    "at",
    "age",
    "older_in_group",
    "decision",
];
const CALL_KEYS: &[&str] = &[
    "uuid",
    "direction",
    "from",
    "to",
    "status",
    "caller_name",
    "account",
    "answered",
    "ringing",
    "unchanged_for",
    "parent_call_uuid",
];
const DECISION_KEYS: &[&str] = &["rule", "due_in"];
const DIRECTIONS: &[&str] = &["inbound", "outbound"];
const STATUSES: &[&str] = &["queued", "ringing", "early-media", "in-progress"];

/// Parses the `[[case]]` tables of one case file; on any problem, every
/// diagnostic with its position.
pub fn parse_cases(file: &Path, text: &str) -> Result<Vec<Case>, Diagnostics> {
    let mut diags = FileDiagnostics::new(file, text);
    let Some(doc) = parse_toml(text, &mut diags) else {
        return Err(diags.finish());
    };
    let mut r = Reader { diags: &mut diags };
    r.unknown_keys(&doc, &["case"]);
    let tables = r.tables(&doc, "case");
    if tables.is_empty() && r.entry(&doc, "case").is_none() {
        r.diags.error(0..0, "no [[case]] tables in this file");
    }
    let mut cases: Vec<Case> = Vec::new();
    for (table, header) in tables {
        if let Some(case) = parse_case(&mut r, table, header.clone()) {
            if let Some(first) = cases.iter().find(|c| c.name == case.name) {
                r.diags.error(
                    header,
                    format!(
                        "duplicate case name `{}` (first at line {})",
                        case.name, first.line
                    ),
                );
            } else {
                cases.push(case);
            }
        }
    }
    if diags.has_errors() {
        Err(diags.finish())
    } else {
        Ok(cases)
    }
}

fn parse_case(r: &mut Reader<'_>, table: &Table<'_>, header: Range<usize>) -> Option<Case> {
    let errors_before = r.diags.items.len();
    r.unknown_keys(table, CASE_KEYS);
    let name = match r.string(table, "name") {
        Some((name, _)) if !name.trim().is_empty() => Some(name.to_owned()),
        Some((_, span)) => {
            r.diags.error(span, "case `name` is empty");
            None
        }
        None => {
            if r.entry(table, "name").is_none() {
                r.diags.error(header.clone(), "case has no `name`");
            }
            None
        }
    };
    // Free text; read only to check its type.
    let _ = r.string(table, "description");
    let at = match r.entry(table, "at") {
        None => DateTime::parse_from_rfc3339(DEFAULT_AT)
            .ok()
            .map(|at| at.with_timezone(&Utc)),
        Some(entry) => {
            let span = entry.span();
            let text = match entry.value.get_ref() {
                DeValue::String(s) => Some(s.to_string()),
                DeValue::Datetime(d) => Some(d.to_string()),
                other => {
                    r.diags.error(
                        span.clone(),
                        format!(
                            "`at` must be a date-time such as 2025-01-05T02:30:00Z, found {}",
                            other.type_str()
                        ),
                    );
                    None
                }
            };
            text.and_then(|text| match DateTime::parse_from_rfc3339(text.trim()) {
                Ok(at) => Some(at.with_timezone(&Utc)),
                Err(err) => {
                    r.diags.error(
                        span,
                        format!("`at`: bad date-time `{text}`: {err} (use RFC 3339 with a zone, e.g. 2025-01-05T02:30:00Z)"),
                    );
                    None
                }
            })
        }
    };
    let age = match r.entry(table, "age") {
        None => Some(Duration::ZERO),
        Some(_) => r.duration(table, "age").map(|(d, _)| d),
    };
    let call = match r.table(table, "call") {
        Some((call, _)) => parse_call(r, call),
        None => {
            if r.entry(table, "call").is_none() {
                r.diags
                    .error(header.clone(), "case has no [case.call] table");
            }
            None
        }
    };
    let older_in_group = r
        .integer(table, "older_in_group", 0, i64::from(u32::MAX))
        .map_or(0, |(n, _)| u32::try_from(n).unwrap_or(u32::MAX));
    let expected = parse_decision(r, table, &header);
    if r.diags.items.len() > errors_before {
        return None;
    }
    let (at, age, call, (expected, expected_at)) = (at?, age?, call?, expected?);
    let started = chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| at.checked_sub_signed(age));
    let Some(started) = started else {
        let span = r.entry(table, "age").map_or(header.clone(), |e| e.span());
        r.diags.error(span, "`age` is too long");
        return None;
    };
    let answered = match call.answered {
        None => None,
        Some(ringing) if ringing <= age => chrono::Duration::from_std(ringing)
            .ok()
            .and_then(|ringing| started.checked_add_signed(ringing)),
        Some(_) => {
            r.diags.error(
                call.ringing_span.clone().unwrap_or(header.clone()),
                "`ringing` is longer than the call's `age`",
            );
            return None;
        }
    };
    let last_change = match call.unchanged_for {
        Some(unchanged) if unchanged <= age => chrono::Duration::from_std(unchanged)
            .ok()
            .and_then(|d| at.checked_sub_signed(d))
            .unwrap_or(started),
        Some(_) => {
            r.diags.error(
                call.unchanged_span.clone().unwrap_or(header.clone()),
                "`unchanged_for` is longer than the call's `age`",
            );
            return None;
        }
        // Unchanged since the answer, or since the start when unanswered.
        None => answered.unwrap_or(started),
    };
    let account_at = r.diags.position(call.account_span.start);
    Some(Case {
        name: name?,
        line: r.diags.line_of(header.start),
        account: call.account,
        account_at,
        call: Call {
            started_at: Some(started),
            answered_at: answered,
            ..call.call
        },
        at,
        timeline: Timeline {
            started: Some(started),
            answered,
            last_change,
        },
        expected,
        expected_at,
        older_in_group,
    })
}

/// A `[case.call]` table before the moment is applied.
struct RawCall {
    call: Call,
    account: Option<String>,
    account_span: Range<usize>,
    /// Time from start to answer, when answered.
    answered: Option<Duration>,
    ringing_span: Option<Range<usize>>,
    unchanged_for: Option<Duration>,
    unchanged_span: Option<Range<usize>>,
}

fn parse_call(r: &mut Reader<'_>, table: &Table<'_>) -> Option<RawCall> {
    let errors_before = r.diags.items.len();
    r.unknown_keys(table, CALL_KEYS);
    let word =
        |r: &mut Reader<'_>, key: &str, known: &[&str], default: &str| match r.string(table, key) {
            None => Some(default.to_owned()),
            Some((value, _)) if known.contains(&value) => Some(value.to_owned()),
            Some((value, span)) => {
                r.diags.error(
                    span,
                    format!("unknown {key} `{value}` (one of: {})", known.join(", ")),
                );
                None
            }
        };
    let direction = word(r, "direction", DIRECTIONS, "outbound");
    let status = word(r, "status", STATUSES, "in-progress");
    let text = |r: &mut Reader<'_>, key: &str| {
        r.string(table, key)
            .map(|(s, _)| s.to_owned())
            .unwrap_or_default()
    };
    let from = text(r, "from");
    let to = text(r, "to");
    let caller_name = text(r, "caller_name");
    let account = r.string(table, "account");
    let account_span = account.as_ref().map_or(0..0, |(_, span)| span.clone());
    let account = account.map(|(name, _)| name.to_owned());
    let uuid = match r.string(table, "uuid") {
        None => CallUuid::parse("test-case-call").ok(),
        Some((raw, span)) => match CallUuid::parse(raw) {
            Ok(uuid) => Some(uuid),
            Err(err) => {
                r.diags.error(span, format!("bad `uuid`: {err}"));
                None
            }
        },
    };
    let parent = match r.string(table, "parent_call_uuid") {
        None => Some(None),
        Some((raw, span)) => match CallUuid::parse(raw) {
            Ok(uuid) => Some(Some(uuid)),
            Err(err) => {
                r.diags
                    .error(span, format!("bad `parent_call_uuid`: {err}"));
                None
            }
        },
    };
    let status_word = status.clone().unwrap_or_default();
    let answered_flag = r
        .boolean(table, "answered")
        .unwrap_or(status_word == "in-progress");
    let ringing = r.duration(table, "ringing");
    let ringing_span = ringing.as_ref().map(|(_, span)| span.clone());
    let unchanged = r.duration(table, "unchanged_for");
    let unchanged_span = unchanged.as_ref().map(|(_, span)| span.clone());
    if r.diags.items.len() > errors_before {
        return None;
    }
    let call = Call {
        uuid: uuid?,
        direction: Direction::from_api(&direction?),
        from: normalize_number(&from).into(),
        to: normalize_number(&to).into(),
        caller_name: caller_name.into(),
        status: CallStatus::from_api(&status?),
        started_at: None,
        answered_at: None,
        duration_s: None,
        parent_call_uuid: parent?,
        shape: Shape::Flat,
        raw: RawAnswer::default(),
    };
    Some(RawCall {
        call,
        account,
        account_span,
        answered: answered_flag.then(|| ringing.map_or(Duration::ZERO, |(d, _)| d)),
        ringing_span,
        unchanged_for: unchanged.map(|(d, _)| d),
        unchanged_span,
    })
}

fn parse_decision(
    r: &mut Reader<'_>,
    table: &Table<'_>,
    header: &Range<usize>,
) -> Option<(Expected, (usize, usize))> {
    let Some(entry) = r.entry(table, "decision") else {
        r.diags.error(
            header.clone(),
            "case has no `decision` (a rule table, \"none\" or \"protected\")",
        );
        return None;
    };
    let span = entry.span();
    let at = r.diags.position(span.start);
    match entry.value.get_ref() {
        DeValue::String(s) => match s.as_ref() {
            "none" => Some((Expected::None, at)),
            "protected" => Some((Expected::Protected, at)),
            other => {
                r.diags.error(
                    span,
                    format!("`decision` must be \"none\", \"protected\" or {{ rule = \"...\", due_in = \"...\" }}, found `{other}`"),
                );
                None
            }
        },
        DeValue::Table(t) => {
            r.unknown_keys(t, DECISION_KEYS);
            let rule = match r.string(t, "rule") {
                Some((rule, span)) => Some((rule.to_owned(), r.diags.position(span.start))),
                None => {
                    if r.entry(t, "rule").is_none() {
                        r.diags
                            .error(span.clone(), "`decision` table has no `rule`");
                    }
                    None
                }
            };
            let due_in = match r.string(t, "due_in") {
                None => Some(None),
                Some((text, span)) => match SignedDuration::parse(text) {
                    Ok(due) => Some(Some(due)),
                    Err(err) => {
                        r.diags.error(
                            span,
                            format!("`due_in`: bad duration `{text}`: {err} (use e.g. \"5m\", or \"-30s\" when overdue)"),
                        );
                        None
                    }
                },
            };
            let (rule, rule_at) = rule?;
            Some((
                Expected::Rule {
                    rule,
                    due_in: due_in?,
                },
                rule_at,
            ))
        }
        other => {
            r.diags.error(
                span,
                format!(
                    "`decision` must be a table or a string, found {}",
                    other.type_str()
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_policy_files;
    use crate::policy::cases::{decide, CaseSettings, Outcome};
    use crate::policy::Policy;

    const POLICY: &str = r#"
[[rule]]
name = "outbound-60m"
max_duration = "60m"
[rule.match]
direction = "outbound"

[[rule]]
name = "premium-10m"
max_duration = "10m"
priority = 10
[rule.match]
to = "+1900*"

[[rule]]
name = "stuck"
idle_timeout = "2m"
[rule.match]
status = ["ringing"]

[[rule]]
name = "cap-882"
max_concurrent = 2
group_by = "to"
[rule.match]
to = "+882*"

[[rule]]
name = "night"
max_duration = "0s"
measure_from = "start"
[[rule.window]]
cron = "0 0 2 * * *"
duration = "1h"
[rule.action]
dry_run = true
"#;

    fn policy() -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, POLICY).unwrap();
        load_policy_files(&[path], Utc::now()).unwrap().0
    }

    fn run(text: &str) -> Vec<(String, bool, Outcome)> {
        let policy = policy();
        let protected = vec!["911".to_string()];
        let settings = CaseSettings {
            grace: Duration::ZERO,
            protected_numbers: &protected,
        };
        parse_cases(Path::new("t.toml"), text)
            .unwrap()
            .iter()
            .map(|case| {
                let got = decide(&policy, case, "default", &settings);
                (case.name.clone(), case.expected.accepts(&got), got)
            })
            .collect()
    }

    #[test]
    fn decisions_follow_the_engine_evaluation() {
        let results = run(r#"
[[case]]
name = "premium wins over outbound"
age = "9m"
call = { to = "+1 900 555 0101" }
decision = { rule = "premium-10m", due_in = "1m" }

[[case]]
name = "overdue"
age = "70m"
call = { direction = "outbound", to = "+442071838750" }
decision = { rule = "outbound-60m", due_in = "-10m" }

[[case]]
name = "ringing time is not counted"
age = "5m"
call = { direction = "outbound", ringing = "30s" }
decision = { rule = "outbound-60m", due_in = "55m 30s" }

[[case]]
name = "inbound answered call runs on"
call = { direction = "inbound" }
decision = "none"

[[case]]
name = "stuck ringing"
age = "5m"
call = { direction = "inbound", status = "ringing", unchanged_for = "1m" }
decision = { rule = "stuck", due_in = "1m" }

[[case]]
name = "emergency"
age = "2h"
call = { to = "911" }
decision = "protected"

[[case]]
name = "window dry-run rule when nothing live applies"
at = 2025-01-05T02:30:00Z
age = "10m"
call = { direction = "inbound" }
decision = { rule = "night", due_in = "-10m" }
"#);
        for (name, ok, got) in &results {
            assert!(ok, "{name}: got {got}");
        }
        assert_eq!(results.len(), 7);
    }

    #[test]
    fn fraud_guard_cases_say_how_many_older_calls_share_the_group() {
        let results = run(r#"
[[case]]
name = "within the cap"
older_in_group = 1
call = { direction = "inbound", to = "+88216000001" }
decision = "none"

[[case]]
name = "beyond the cap"
older_in_group = 2
call = { direction = "inbound", to = "+88216000001" }
decision = { rule = "cap-882", due_in = "0s" }
"#);
        for (name, ok, got) in &results {
            assert!(ok, "{name}: got {got}");
        }
    }

    #[test]
    fn mismatches_are_reported_not_accepted() {
        let results = run(r#"
[[case]]
name = "wrong due"
age = "9m"
call = { to = "+1900555" }
decision = { rule = "premium-10m", due_in = "2m" }
"#);
        assert!(!results[0].1);
        assert_eq!(
            results[0].2.to_string(),
            "premium-10m due_in 1m (dry-run rules: night due_in 14h)"
        );
    }

    #[test]
    fn malformed_cases_name_line_and_column() {
        let text = "[[case]]\nname = \"x\"\nage = \"soon\"\ncall = { direction = \"sideways\" }\ndecision = \"maybe\"\n";
        let errors = parse_cases(Path::new("t.toml"), text).unwrap_err();
        let lines: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
        assert!(
            lines[0].starts_with("t.toml:3:7: error: `age`"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("t.toml:4:22: error: unknown direction"),
            "{lines:?}"
        );
        assert!(lines[2].starts_with("t.toml:5:12: error: `decision` must be"));
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn signed_durations_round_trip() {
        for text in ["5m", "-30s", "1h 30m", "0s"] {
            let parsed = SignedDuration::parse(text).unwrap();
            assert_eq!(SignedDuration::parse(&parsed.to_string()).unwrap(), parsed);
        }
        assert_eq!(SignedDuration::parse("-1m").unwrap().millis, -60_000);
    }
}
