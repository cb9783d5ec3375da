//! Policy test cases (`policies/tests/*.toml`, run by `callwarden test`):
//! parsing with positions, and deciding each case through the same
//! evaluation the engine arms its deadlines with. Pure: text in, verdicts out.

use std::cmp::Reverse;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use toml::de::DeValue;

use super::eval::{evaluate, is_protected, Timeline};
use super::{Limit, Policy};
use crate::call::{normalize_number, Call, CallStatus, CallUuid, Direction, RawAnswer, Shape};
use crate::config::{parse_toml, Diagnostics, FileDiagnostics, Reader, Table};

/// The instant a case without `at` is evaluated at: fixed, so that a case
/// gives the same answer whenever it runs (a Wednesday, noon UTC, outside
/// any night-time window).
pub const DEFAULT_AT: &str = "2025-01-01T12:00:00Z";

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

/// One `[[case]]`: a call at a moment, and the decision the policies must reach.
#[derive(Debug, Clone)]
pub struct Case {
    /// The case's name, unique in its file.
    pub name: String,
    /// The 1-based line of its `[[case]]` header.
    pub line: usize,
    /// The account the call is listed under (`None`: the first account).
    pub account: Option<String>,
    /// Where `account` was written (line, column), for messages.
    pub account_at: (usize, usize),
    /// The call, normalized as the API client would.
    pub call: Call,
    /// The moment of evaluation.
    pub at: DateTime<Utc>,
    /// The call's times at that moment.
    pub timeline: Timeline,
    /// The decision the policies must reach.
    pub expected: Expected,
    /// Where the expected rule name was written (line, column), for messages.
    pub expected_at: (usize, usize),
    /// For fraud-guard rules: how many older live calls share the call's
    /// group (the call is beyond a cap of N when at least N are older).
    pub older_in_group: u32,
}

/// The decision a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// No rule sets a deadline: the call runs on.
    None,
    /// A rule would end the call, but its `to` or `from` is protected.
    Protected,
    /// This rule decides the call's deadline.
    Rule {
        /// The winning rule.
        rule: String,
        /// Time from the moment to the deadline (negative: overdue); `None`
        /// when the case does not say.
        due_in: Option<SignedDuration>,
    },
}

/// What the policies decided for a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The live winner: the rule whose deadline the engine arms, if any.
    pub live: Option<Due>,
    /// The call's `to` or `from` is protected: the live winner ends nothing.
    pub protected: bool,
    /// Dry-run rules that are due: audited at their deadlines, ending nothing.
    pub dry_run: Vec<Due>,
}

/// A rule and its deadline, relative to the case's moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The rule's name.
    pub rule: String,
    /// Time from the moment to the deadline (negative: overdue).
    pub due_in: SignedDuration,
}

/// A duration that may be negative, to the millisecond (`-5m` = 5 minutes overdue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SignedDuration {
    /// Milliseconds; negative when past.
    pub millis: i64,
}

impl SignedDuration {
    /// Parses a humantime duration with an optional leading `-`.
    pub fn parse(text: &str) -> Result<Self, humantime::DurationError> {
        let text = text.trim();
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, text),
        };
        let duration = humantime::parse_duration(rest)?;
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Ok(Self {
            millis: if negative { -millis } else { millis },
        })
    }

    fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            millis: (to - from).num_milliseconds(),
        }
    }
}

impl fmt::Display for SignedDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = Duration::from_millis(self.millis.unsigned_abs());
        if self.millis < 0 {
            f.write_str("-")?;
        }
        write!(f, "{}", humantime::format_duration(magnitude))
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::None => f.write_str("\"none\""),
            Expected::Protected => f.write_str("\"protected\""),
            Expected::Rule { rule, due_in: None } => write!(f, "{rule}"),
            Expected::Rule {
                rule,
                due_in: Some(due_in),
            } => write!(f, "{rule} due_in {due_in}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.live {
            None => f.write_str("\"none\"")?,
            Some(due) if self.protected => write!(f, "\"protected\" (from {})", due.rule)?,
            Some(due) => write!(f, "{} due_in {}", due.rule, due.due_in)?,
        }
        for (i, due) in self.dry_run.iter().enumerate() {
            let lead = if i == 0 { " (dry-run rules: " } else { ", " };
            write!(f, "{lead}{} due_in {}", due.rule, due.due_in)?;
        }
        if !self.dry_run.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl Expected {
    /// Whether `outcome` is what the case expects. A dry-run rule ends
    /// nothing, so `"none"` holds beside due dry-run rules, and a case can
    /// name a dry-run rule to check its deadline.
    pub fn accepts(&self, outcome: &Outcome) -> bool {
        match self {
            Expected::None => outcome.live.is_none(),
            Expected::Protected => outcome.live.is_some() && outcome.protected,
            Expected::Rule { rule, due_in } => {
                let fits = |due: &Due| &due.rule == rule && due_in.is_none_or(|d| d == due.due_in);
                (!outcome.protected && outcome.live.as_ref().is_some_and(fits))
                    || outcome.dry_run.iter().any(fits)
            }
        }
    }
}

/// What deciding a case needs beyond the policy (from `[enforce]` and `[safety]`).
#[derive(Debug, Clone, Copy)]
pub struct CaseSettings<'a> {
    /// `[enforce] grace`, added to every deadline.
    pub grace: Duration,
    /// `[safety] protected_numbers`.
    pub protected_numbers: &'a [String],
}

/// Decides `case` against `policy` under `account`: the live winner the
/// engine would arm (earliest deadline, then priority, then name), whether
/// protection spares the call, and the dry-run rules the engine would audit.
pub fn decide(policy: &Policy, case: &Case, account: &str, settings: &CaseSettings<'_>) -> Outcome {
    let mut evaluation = evaluate(
        policy,
        &case.call,
        account,
        &case.timeline,
        case.at,
        settings.grace,
    );
    evaluation.apply_caps(policy, |rule| match policy.rules[rule].limit {
        Limit::MaxConcurrent { max, .. } if case.older_in_group >= max => Some(case.at),
        _ => None,
    });
    let due = |(index, deadline): (usize, DateTime<Utc>)| Due {
        rule: policy.rules[index].name.clone(),
        due_in: SignedDuration::between(case.at, deadline),
    };
    let mut dry_run: Vec<(usize, DateTime<Utc>)> = evaluation.dry_run_due(policy).collect();
    dry_run.sort_by_key(|&(index, deadline)| {
        let rule = &policy.rules[index];
        (deadline, Reverse(rule.priority), rule.name.as_str())
    });
    Outcome {
        live: evaluation.effective(policy, false).map(due),
        protected: is_protected(&case.call.to, settings.protected_numbers)
            || is_protected(&case.call.from, settings.protected_numbers),
        dry_run: dry_run.into_iter().map(due).collect(),
    }
}

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
