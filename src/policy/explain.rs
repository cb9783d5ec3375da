//! `callwarden explain`: a pure, serializable report of one evaluation —
//! every rule, matched or not and why, its deadline, and what would happen.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::eval::{evaluate, is_protected, RuleOutcome, Timeline};
use super::{HangupScope, Limit, MeasureFrom, Policy};
use crate::call::Call;

/// The explanation of one call against one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The call's UUID.
    pub call_uuid: String,
    /// The account it was listed under.
    pub account: String,
    /// When it was evaluated.
    pub now: DateTime<Utc>,
    /// One entry per rule, in policy order.
    pub rules: Vec<RuleExplanation>,
    /// What would happen to the call, if a live rule is due.
    pub decision: Option<Decision>,
}

/// One rule's part in the explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleExplanation {
    /// The rule's name.
    pub rule: String,
    /// Its description.
    pub description: String,
    /// `not-matched`, `exempt`, `not-due` or `due`.
    pub result: &'static str,
    /// Whether `[rule.match]` matched and `[rule.unless]` did not.
    pub matched: bool,
    /// The field that decided a non-match or an exemption.
    pub field: Option<String>,
    /// The call's value for that field.
    pub value: Option<String>,
    /// The patterns of that field.
    pub patterns: Vec<String>,
    /// The limit, in words (`max_duration 60m from answer`).
    pub limit: String,
    /// Why the rule is not due, when it matched without a deadline.
    pub reason: Option<String>,
    /// The deadline, when due.
    pub deadline: Option<DateTime<Utc>>,
    /// Seconds from `now` to the deadline (negative: overdue).
    pub time_left_s: Option<i64>,
    /// When the warning would be spoken, if the rule warns.
    pub warn_at: Option<DateTime<Utc>>,
    /// Which legs the rule ends.
    pub hangup: HangupScope,
    /// Whether the rule itself is dry-run.
    pub dry_run: bool,
    /// Whether this rule decides the call's deadline.
    pub winner: bool,
}

/// What callwarden would do with the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The winning rule.
    pub rule: String,
    /// Its deadline.
    pub deadline: DateTime<Utc>,
    /// Seconds from `now` to the deadline (negative: overdue).
    pub time_left_s: i64,
    /// Which legs would end.
    pub hangup: HangupScope,
    /// When a warning would be spoken, if any.
    pub warn_at: Option<DateTime<Utc>>,
    /// The global `[enforce] dry_run` makes this a log line only.
    pub dry_run: bool,
    /// The call's `to` or `from` is a protected number: never hung up.
    pub protected: bool,
    /// The rule is not held by the breaker.
    pub bypass_breaker: bool,
    /// The outcome in words.
    pub action: String,
}

/// The enforcement settings an explanation needs (from `[enforce]` and
/// `[safety]`; the loaded config builds them with `Config::explain_settings`).
#[derive(Debug, Clone, Copy)]
pub struct ExplainSettings<'a> {
    /// `[enforce] grace`, added to every deadline.
    pub grace: Duration,
    /// `[enforce] dry_run`: the decision is a log line only.
    pub global_dry_run: bool,
    /// `[safety] protected_numbers`.
    pub protected_numbers: &'a [String],
}

/// Evaluates `call` and explains every rule (no I/O).
pub fn explain(
    policy: &Policy,
    call: &Call,
    account: &str,
    timeline: &Timeline,
    now: DateTime<Utc>,
    settings: &ExplainSettings<'_>,
) -> Explanation {
    explain_with_caps(policy, call, account, timeline, now, settings, &[])
}

/// [`explain`] for a call that is beyond the cap of the fraud-guard rules
/// `beyond` (indices into `policy.rules`), as judged across the live calls
/// with [`super::calls_beyond_caps`]: those rules are due now.
pub fn explain_with_caps(
    policy: &Policy,
    call: &Call,
    account: &str,
    timeline: &Timeline,
    now: DateTime<Utc>,
    settings: &ExplainSettings<'_>,
    beyond: &[usize],
) -> Explanation {
    let ExplainSettings {
        grace,
        global_dry_run,
        protected_numbers,
    } = *settings;
    let mut evaluation = evaluate(policy, call, account, timeline, now, grace);
    evaluation.apply_caps(policy, |rule| beyond.contains(&rule).then_some(now));
    let winner = evaluation.effective(policy, global_dry_run);
    let left = |deadline: DateTime<Utc>| (deadline - now).num_seconds();
    let rules = evaluation
        .verdicts()
        .map(|verdict| {
            let rule = &policy.rules[verdict.rule];
            let (result, field, value, reason, deadline) = match &verdict.outcome {
                RuleOutcome::NotMatched { field, value } => (
                    "not-matched",
                    Some(*field),
                    Some(value.to_string()),
                    None,
                    None,
                ),
                RuleOutcome::Exempt { field, value } => {
                    ("exempt", Some(*field), Some(value.to_string()), None, None)
                }
                RuleOutcome::NotDue { reason } => {
                    ("not-due", None, None, Some(reason.to_string()), None)
                }
                RuleOutcome::Due { deadline } => ("due", None, None, None, Some(*deadline)),
            };
            let table = if result == "exempt" {
                rule.unless.as_ref()
            } else {
                Some(&rule.matcher)
            };
            let patterns = field
                .and_then(|f| table.and_then(|t| t.field(f)))
                .map(|m| m.patterns.clone())
                .unwrap_or_default();
            let warn_at = deadline.and_then(|d| {
                let before = rule.action.warn.as_ref()?.before;
                Some(d - chrono::Duration::from_std(before).ok()?)
            });
            RuleExplanation {
                rule: rule.name.clone(),
                description: rule.description.clone(),
                result,
                matched: verdict.outcome.is_match(),
                field: field.map(|f| f.key().to_owned()),
                value,
                patterns,
                limit: describe_limit(rule.limit),
                reason,
                deadline,
                time_left_s: deadline.map(left),
                warn_at,
                hangup: rule.action.hangup,
                dry_run: rule.action.dry_run,
                winner: winner.is_some_and(|(index, _)| index == verdict.rule),
            }
        })
        .collect();
    let decision = winner.map(|(index, deadline)| {
        let rule = &policy.rules[index];
        let protected = is_protected(&call.to, protected_numbers)
            || is_protected(&call.from, protected_numbers);
        let verb = match rule.action.hangup {
            HangupScope::Call => "hang up the call",
            HangupScope::Whole => "hang up the whole session",
            HangupScope::BLegs => "hang up its B-legs",
        };
        let action = if protected {
            "protected number: never hung up (audited)".to_owned()
        } else if global_dry_run {
            format!("dry run: log that it would {verb}")
        } else if deadline <= now {
            format!("overdue: {verb} now")
        } else {
            format!("{verb} at the deadline")
        };
        Decision {
            rule: rule.name.clone(),
            deadline,
            time_left_s: left(deadline),
            hangup: rule.action.hangup,
            warn_at: rule
                .action
                .warn
                .as_ref()
                .and_then(|w| Some(deadline - chrono::Duration::from_std(w.before).ok()?)),
            dry_run: global_dry_run,
            protected,
            bypass_breaker: rule.action.bypass_breaker,
            action,
        }
    });
    Explanation {
        call_uuid: call.uuid.to_string(),
        account: account.to_owned(),
        now,
        rules,
        decision,
    }
}

fn describe_limit(limit: Limit) -> String {
    match limit {
        Limit::MaxDuration {
            limit,
            measure_from,
        } => format!(
            "max_duration {} from {}",
            humantime::format_duration(limit),
            match measure_from {
                MeasureFrom::Answer => "answer",
                MeasureFrom::Start => "start",
            }
        ),
        Limit::IdleTimeout(limit) => format!("idle_timeout {}", humantime::format_duration(limit)),
        Limit::MaxConcurrent { max, group_by } => {
            format!("max_concurrent {max} per {}", group_by.as_str())
        }
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn left_words(seconds: i64) -> String {
    let magnitude = humantime::format_duration(Duration::from_secs(seconds.unsigned_abs()));
    if seconds < 0 {
        format!("overdue by {magnitude}")
    } else {
        format!("in {magnitude}")
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "call {} (account {}) at {}",
            self.call_uuid,
            self.account,
            time(self.now)
        )?;
        let width = self
            .rules
            .iter()
            .map(|r| r.rule.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(f, "  {:width$}  {:11}  DETAIL", "RULE", "RESULT")?;
        for r in &self.rules {
            let detail = match r.result {
                "not-matched" | "exempt" => format!(
                    "{} = {:?} {} [{}]",
                    r.field.as_deref().unwrap_or("?"),
                    r.value.as_deref().unwrap_or(""),
                    if r.result == "exempt" {
                        "matches unless"
                    } else {
                        "not in"
                    },
                    r.patterns
                        .iter()
                        .map(|p| format!("{p:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "not-due" => format!("{}: {}", r.limit, r.reason.as_deref().unwrap_or("")),
                _ => {
                    let mut d = format!(
                        "{}: deadline {} ({}), hangup {}",
                        r.limit,
                        r.deadline.map(time).unwrap_or_default(),
                        r.time_left_s.map(left_words).unwrap_or_default(),
                        serde_json::to_value(r.hangup)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    );
                    if let Some(w) = r.warn_at {
                        d.push_str(&format!(", warn at {}", time(w)));
                    }
                    if r.dry_run {
                        d.push_str(", dry-run rule");
                    }
                    if r.winner {
                        d.push_str("  <- decides");
                    }
                    d
                }
            };
            writeln!(f, "  {:width$}  {:11}  {}", r.rule, r.result, detail)?;
        }
        match &self.decision {
            Some(d) => write!(
                f,
                "decision: {} (rule {}, deadline {}, {}{})",
                d.action,
                d.rule,
                time(d.deadline),
                left_words(d.time_left_s),
                if d.bypass_breaker {
                    ", bypasses the breaker"
                } else {
                    ""
                }
            ),
            None => write!(f, "decision: no live rule is due; the call is left alone"),
        }
    }
}
