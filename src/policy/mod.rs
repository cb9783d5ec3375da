//! The policy language, compiled: rules, matchers, windows and their pure
//! evaluation against a call. No I/O lives here.
//!
//! Loading and validation of the TOML files is in [`crate::config`]; this
//! module holds what they compile into.

pub mod cases;
mod concurrency;
mod eval;
mod explain;
mod glob;
mod index;
mod matcher;
mod plan;
mod window;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::text::InlineStr;
pub use concurrency::{beyond_cap, calls_beyond_caps, GroupBy, LiveCall, Seniority};
pub use eval::{
    deadline_only, evaluate, evaluate_rule, is_protected, rule_deadline, Evaluation, RuleOutcome,
    RuleVerdict, Timeline,
};
pub use explain::{
    explain, explain_with_caps, Decision, ExplainSettings, Explanation, RuleExplanation,
};
pub use matcher::{
    compile_glob, normalize_number_pattern, FieldMatcher, FieldValues, Match, MatchField,
    PatternError,
};
pub use window::{parse_cron, CronParseError, Window, SEARCH_HORIZON};

/// All rules in force for one account, in file order, with an index over
/// their match tables that makes evaluating a call cheap.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The rules; names are unique. Built with [`Policy::new`], which
    /// indexes them: to change the rules, build a new policy.
    pub rules: Vec<Rule>,
    index: index::PolicyIndex,
    plans: plan::Plans,
}

impl Policy {
    /// A policy of `rules`, indexed for evaluation.
    pub fn new(rules: Vec<Rule>) -> Self {
        let index = index::PolicyIndex::new(&rules);
        let plans = plan::Plans::new(&rules);
        Self {
            rules,
            index,
            plans,
        }
    }

    /// Whether any rule can match a queued or ringing call, which is when
    /// queued calls are listed too (`?status=queued`).
    pub fn needs_queued_calls(&self) -> bool {
        self.rules.iter().any(Rule::names_queued_or_ringing)
    }

    /// Whether any rule is a fraud guard (`max_concurrent`), which is
    /// judged across the live calls.
    pub fn has_concurrency_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| matches!(rule.limit, Limit::MaxConcurrent { .. }))
    }

    /// Whether any rule is an idle timeout, which needs state tracking.
    pub fn has_idle_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| matches!(rule.limit, Limit::IdleTimeout(_)))
    }
}

/// One compiled `[[rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name, `[a-z0-9-]+`.
    pub name: String,
    /// Free text for operators.
    pub description: String,
    /// The one limit the rule enforces.
    pub limit: Limit,
    /// Tie-break between equal deadlines: higher wins.
    pub priority: i64,
    /// `[rule.match]`: all fields must match.
    pub matcher: Match,
    /// `[rule.unless]`: any field matching exempts the call.
    pub unless: Option<Match>,
    /// `[[rule.window]]`: the rule applies only while one is open (none = always).
    pub windows: Vec<Window>,
    /// `[rule.action]`.
    pub action: Action,
    /// Where the rule was written, for messages.
    pub source: Source,
}

impl Rule {
    fn names_queued_or_ringing(&self) -> bool {
        self.matcher.names_status("queued") || self.matcher.names_status("ringing")
    }

    /// A live rule named `name` enforcing `limit` on every call, at
    /// `p.toml:1`: the base unit tests change fields of.
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, limit: Limit) -> Self {
        Rule {
            name: name.to_owned(),
            description: String::new(),
            limit,
            priority: 0,
            matcher: Match::default(),
            unless: None,
            windows: Vec::new(),
            action: Action {
                hangup: HangupScope::Call,
                warn: None,
                dry_run: false,
                bypass_breaker: false,
            },
            source: Source {
                file: "p.toml".into(),
                line: 1,
            },
        }
    }
}

/// Where something was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
}

/// The limit of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The call may last at most this long, measured from `measure_from`.
    MaxDuration {
        /// The limit.
        limit: Duration,
        /// From answer (default) or from session start.
        measure_from: MeasureFrom,
    },
    /// The call's observed state may stay unchanged at most this long.
    IdleTimeout(Duration),
    /// The fraud guard: at most `max` matching live calls per group; the
    /// newest beyond it are ended at once.
    MaxConcurrent {
        /// Calls kept per group.
        max: u32,
        /// How matching calls are grouped.
        group_by: GroupBy,
    },
}

/// Where a `max_duration` is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureFrom {
    /// From the answer; unanswered calls are not due.
    Answer,
    /// From the session start.
    Start,
}

/// What happens when a rule's deadline is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Which legs to end.
    pub hangup: HangupScope,
    /// A warning spoken ahead of the hangup.
    pub warn: Option<Warning>,
    /// Log and audit only (true wins over the global setting).
    pub dry_run: bool,
    /// Not held by the breaker (deliberate mass hangups).
    pub bypass_breaker: bool,
}

/// Which legs a hangup ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HangupScope {
    /// The matched call's own UUID.
    Call,
    /// The whole bridged session: the parent A-leg when the call is a B-leg.
    Whole,
    /// Only the legs whose `parent_call_uuid` is the matched call.
    BLegs,
}

/// A spoken warning before a hangup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// How long before the deadline to speak.
    pub before: Duration,
    /// What to say (to both legs).
    pub text: String,
}
