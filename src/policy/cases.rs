//! Policy test cases (`policies/tests/*.toml`, run by `callwarden test`):
//! deciding each case through the same evaluation the engine arms its
//! deadlines with. Pure: cases in, verdicts out. Reading case files, with
//! positions, is in [`crate::config`].

use std::cmp::Reverse;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::eval::{evaluate, is_protected, Timeline};
use super::{Limit, Policy};
use crate::call::Call;

/// The instant a case without `at` is evaluated at: fixed, so that a case
/// gives the same answer whenever it runs (a Wednesday, noon UTC, outside
/// any night-time window).
pub const DEFAULT_AT: &str = "2025-01-01T12:00:00Z";

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

    /// The signed time from `from` to `to`.
    pub fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
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
