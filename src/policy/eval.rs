//! Evaluation of rules against one call: pure functions over plain data.
//!
//! The engine gives the call, the account it was listed under, a
//! [`Timeline`] of conservative instants and the current time; it gets one
//! [`RuleVerdict`] per rule and picks the deadline to arm with
//! [`Evaluation::effective`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::index::{RuleSet, Table};
use super::matcher::{FieldValues, MatchField};
use super::plan::{earliest, DeadlineMemo};
use super::window::SEARCH_HORIZON;
use super::{Limit, MeasureFrom, Policy, Rule};
use crate::call::{number_digits, Call, NumberDigits};
use crate::text::InlineStr;

/// What callwarden knows of a call's times, already skew-corrected and
/// rounded so the call looks younger, never older.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// When the session started, if known.
    pub started: Option<DateTime<Utc>>,
    /// When the call was answered (`answer_time`, or the first poll that saw
    /// it in progress for the flat shape), if it was.
    pub answered: Option<DateTime<Utc>>,
    /// When the call's observed state last changed (for idle rules).
    pub last_change: DateTime<Utc>,
}

/// The result of evaluating every rule of a policy against one call.
///
/// Kept compact, because the engine evaluates every new and changed call:
/// the rules that matched hold their verdicts; the others are one bit each
/// in the set of the field that decided them, with that field's value kept
/// once. [`Evaluation::verdicts`] spells every rule's verdict out.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// How many rules were evaluated.
    rules: usize,
    /// The verdicts of the rules that matched (due or not), in rule order.
    matched: Vec<RuleVerdict>,
    /// The rules that did not match, by the field and table that decided them.
    decided: Vec<Decided>,
}

/// Two evaluations are equal when they give every rule the same verdict.
impl PartialEq for Evaluation {
    fn eq(&self, other: &Self) -> bool {
        self.rules == other.rules && self.verdicts().eq(other.verdicts())
    }
}

impl Eq for Evaluation {}

/// The rules one field of one table decided, and the call's value for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decided {
    table: Table,
    field: MatchField,
    value: InlineStr,
    rules: RuleSet,
}

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleVerdict {
    /// Index of the rule in `policy.rules`.
    pub rule: usize,
    /// What the rule says about the call.
    pub outcome: RuleOutcome,
}

/// What a rule says about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleOutcome {
    /// `[rule.match]` failed on this field, whose value was this.
    NotMatched {
        /// The first field that did not match.
        field: MatchField,
        /// The call's value for it.
        value: InlineStr,
    },
    /// `[rule.unless]` matched on this field, whose value was this.
    Exempt {
        /// The field that exempted the call.
        field: MatchField,
        /// The call's value for it.
        value: InlineStr,
    },
    /// The rule matches but sets no deadline (yet).
    NotDue {
        /// Why: unanswered with `measure_from = "answer"`, no window opening ahead, ...
        reason: Cow<'static, str>,
    },
    /// The rule matches and the call must end at `deadline` (may be past).
    Due {
        /// When the call is due, grace included.
        deadline: DateTime<Utc>,
    },
}

impl RuleOutcome {
    /// Whether the rule matched the call (due or not).
    pub fn is_match(&self) -> bool {
        matches!(self, RuleOutcome::Due { .. } | RuleOutcome::NotDue { .. })
    }

    /// The deadline, when due.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        match self {
            RuleOutcome::Due { deadline } => Some(*deadline),
            _ => None,
        }
    }
}

impl Evaluation {
    /// An evaluation of `rules` rules with no verdict yet.
    fn new(rules: usize) -> Self {
        Self {
            rules,
            matched: Vec::new(),
            decided: Vec::new(),
        }
    }

    /// Records the verdict of rule `rule`; rules come in order.
    fn push(&mut self, rule: usize, outcome: RuleOutcome) {
        let (table, field, value) = match outcome {
            RuleOutcome::NotMatched { field, value } => (Table::Match, field, value),
            RuleOutcome::Exempt { field, value } => (Table::Unless, field, value),
            outcome => return self.matched.push(RuleVerdict { rule, outcome }),
        };
        let at = match self
            .decided
            .iter()
            .position(|d| d.table == table && d.field == field)
        {
            Some(at) => at,
            None => {
                self.decided.push(Decided {
                    table,
                    field,
                    value,
                    rules: RuleSet::empty(self.rules),
                });
                self.decided.len() - 1
            }
        };
        self.decided[at].rules.insert(rule);
    }

    /// The verdicts of the rules that matched (due or not due), in rule order.
    pub fn matched(&self) -> impl Iterator<Item = &RuleVerdict> {
        self.matched.iter()
    }

    /// One verdict per rule, in the order of `policy.rules`.
    pub fn verdicts(&self) -> impl Iterator<Item = RuleVerdict> + '_ {
        (0..self.rules).filter_map(|rule| {
            self.outcome(rule)
                .map(|outcome| RuleVerdict { rule, outcome })
        })
    }

    /// The verdict of rule `rule` (an index into `policy.rules`).
    pub fn outcome(&self, rule: usize) -> Option<RuleOutcome> {
        if rule >= self.rules {
            return None;
        }
        if let Some(decided) = self.decided.iter().find(|d| d.rules.contains(rule)) {
            let (field, value) = (decided.field, decided.value.clone());
            return Some(match decided.table {
                Table::Match => RuleOutcome::NotMatched { field, value },
                Table::Unless => RuleOutcome::Exempt { field, value },
            });
        }
        self.matched
            .iter()
            .find(|v| v.rule == rule)
            .map(|v| v.outcome.clone())
    }

    /// The live decision: the earliest deadline among rules that are not
    /// dry-run themselves; ties go to the higher priority, then the smaller
    /// name. `global_dry_run` does not change the winner — the engine turns
    /// the winner into a log line instead of a hangup.
    pub fn effective(
        &self,
        policy: &Policy,
        global_dry_run: bool,
    ) -> Option<(usize, DateTime<Utc>)> {
        let _ = global_dry_run;
        pick_winner(
            policy,
            self.matched.iter().filter_map(|v| {
                let rule = policy.rules.get(v.rule)?;
                let deadline = v.outcome.deadline()?;
                (!rule.action.dry_run).then_some((v.rule, deadline))
            }),
        )
    }

    /// Makes the fraud-guard rules due for a call beyond their cap:
    /// `beyond(rule)` is the instant the call was found beyond the cap of
    /// that rule (its deadline: at once), `None` when it is within it.
    /// The verdicts then go through [`Evaluation::effective`] like any other.
    pub fn apply_caps(
        &mut self,
        policy: &Policy,
        mut beyond: impl FnMut(usize) -> Option<DateTime<Utc>>,
    ) {
        for verdict in &mut self.matched {
            let Some(rule) = policy.rules.get(verdict.rule) else {
                continue;
            };
            if !matches!(rule.limit, Limit::MaxConcurrent { .. })
                || !matches!(verdict.outcome, RuleOutcome::NotDue { .. })
            {
                continue;
            }
            if let Some(since) = beyond(verdict.rule) {
                verdict.outcome = RuleOutcome::Due { deadline: since };
            }
        }
    }

    /// The rule-level dry-run rules that are due, with their own deadlines;
    /// they are audited at those deadlines and never hide a live rule.
    pub fn dry_run_due<'a>(
        &'a self,
        policy: &'a Policy,
    ) -> impl Iterator<Item = (usize, DateTime<Utc>)> + 'a {
        self.matched.iter().filter_map(move |v| {
            let rule = policy.rules.get(v.rule)?;
            let deadline = v.outcome.deadline()?;
            rule.action.dry_run.then_some((v.rule, deadline))
        })
    }
}

/// Orders two due rules: earlier deadline, then higher priority, then name.
fn better(policy: &Policy, a: (usize, DateTime<Utc>), b: (usize, DateTime<Utc>)) -> Ordering {
    a.1.cmp(&b.1)
        .then_with(|| policy.plans.tie_break(&policy.rules, a.0, b.0))
}

fn pick_winner(
    policy: &Policy,
    due: impl Iterator<Item = (usize, DateTime<Utc>)>,
) -> Option<(usize, DateTime<Utc>)> {
    due.min_by(|a, b| better(policy, *a, *b))
}

/// Evaluates every rule of `policy` against `call` listed under `account`.
pub fn evaluate(
    policy: &Policy,
    call: &Call,
    account: &str,
    timeline: &Timeline,
    now: DateTime<Utc>,
    grace: Duration,
) -> Evaluation {
    let values = FieldValues::new(call, account);
    let mut evaluation = Evaluation::new(policy.rules.len());
    if !policy.index.covers(&policy.rules) {
        for (index, rule) in policy.rules.iter().enumerate() {
            evaluation.push(index, rule_outcome(rule, &values, timeline, now, grace));
        }
        return evaluation;
    }
    evaluation
        .decided
        .reserve_exact(policy.index.deciding_fields());
    let applies = policy
        .index
        .sort_all(&policy.rules, &values, |table, field, dropped| {
            // Each field's value is copied once per call (inline: no allocation).
            evaluation.decided.push(Decided {
                table,
                field,
                value: InlineStr::new(values.get(field)),
                rules: dropped.clone(),
            });
        });
    evaluation.matched.reserve_exact(applies.len());
    let mut memo = DeadlineMemo::default();
    for index in applies.iter() {
        if let Some(rule) = policy.rules.get(index) {
            let deadline = memo.deadline(&policy.plans, (index, rule), timeline, now, grace);
            evaluation.matched.push(RuleVerdict {
                rule: index,
                outcome: deadline_outcome(deadline),
            });
        }
    }
    evaluation
}

/// The live deadline only (what [`Evaluation::effective`] would return),
/// without building verdicts: the allocation-free fast path.
pub fn deadline_only(
    policy: &Policy,
    call: &Call,
    account: &str,
    timeline: &Timeline,
    now: DateTime<Utc>,
    grace: Duration,
) -> Option<(usize, DateTime<Utc>)> {
    let values = FieldValues::new(call, account);
    if !policy.index.covers(&policy.rules) || !policy.plans.covers(&policy.rules) {
        let deadline = |(index, rule): (usize, &Rule)| {
            rule_deadline(rule, timeline, now, grace)
                .ok()
                .map(|deadline| (index, deadline))
        };
        return pick_winner(
            policy,
            policy
                .rules
                .iter()
                .enumerate()
                .filter(|(_, rule)| !rule.action.dry_run && rule.applies_to_values(call, &values))
                .filter_map(deadline),
        );
    }
    let applicable = policy.index.live_applicable(&policy.rules, &values);
    earliest(
        &policy.rules,
        &policy.plans,
        applicable.iter(),
        timeline,
        now,
        grace,
    )
}

/// Evaluates one rule against `call`.
pub fn evaluate_rule(
    rule: &Rule,
    call: &Call,
    account: &str,
    timeline: &Timeline,
    now: DateTime<Utc>,
    grace: Duration,
) -> RuleOutcome {
    rule_outcome(rule, &FieldValues::new(call, account), timeline, now, grace)
}

/// [`evaluate_rule`] with the call's field values already looked up.
fn rule_outcome(
    rule: &Rule,
    values: &FieldValues<'_>,
    timeline: &Timeline,
    now: DateTime<Utc>,
    grace: Duration,
) -> RuleOutcome {
    if let Some(field) = rule.matcher.first_mismatch(values) {
        return RuleOutcome::NotMatched {
            field,
            value: InlineStr::new(values.get(field)),
        };
    }
    if let Some(field) = rule
        .unless
        .as_ref()
        .and_then(|unless| unless.first_hit(values))
    {
        return RuleOutcome::Exempt {
            field,
            value: InlineStr::new(values.get(field)),
        };
    }
    deadline_outcome(rule_deadline(rule, timeline, now, grace))
}

/// The outcome of a rule that applies to a call, from its [`rule_deadline`].
fn deadline_outcome(deadline: Result<DateTime<Utc>, &'static str>) -> RuleOutcome {
    match deadline {
        Ok(deadline) => RuleOutcome::Due { deadline },
        Err(reason) => RuleOutcome::NotDue {
            reason: Cow::Borrowed(reason),
        },
    }
}

impl Rule {
    /// Whether `[rule.match]` matches and `[rule.unless]` does not.
    pub fn applies_to(&self, call: &Call, account: &str) -> bool {
        self.applies_to_values(call, &FieldValues::new(call, account))
    }

    /// [`Rule::applies_to`] with the call's field values already looked up.
    pub fn applies_to_values(&self, call: &Call, values: &FieldValues<'_>) -> bool {
        self.matcher.may_match(call)
            && self.matcher.first_mismatch(values).is_none()
            && self
                .unless
                .as_ref()
                .is_none_or(|unless| unless.first_hit(values).is_none())
    }

    /// Whether the rule is in force at `at` (no windows, or one is open).
    pub fn is_active_at(&self, at: DateTime<Utc>) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|w| w.is_open(at))
    }

    /// The next instant after `at` when any window of the rule opens or
    /// closes — when the engine must re-evaluate; `None` without windows.
    pub fn next_change_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.windows
            .iter()
            .filter_map(|w| w.next_change_after(at))
            .min()
    }
}

/// The deadline of a rule that matches, or why there is none.
pub fn rule_deadline(
    rule: &Rule,
    timeline: &Timeline,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<DateTime<Utc>, &'static str> {
    let (from, limit) = match rule.limit {
        Limit::MaxDuration {
            limit,
            measure_from: MeasureFrom::Answer,
        } => (timeline.answered.ok_or("not answered yet")?, limit),
        Limit::MaxDuration {
            limit,
            measure_from: MeasureFrom::Start,
        } => (timeline.started.ok_or("start time unknown")?, limit),
        Limit::IdleTimeout(limit) => (timeline.last_change, limit),
        // Judged across the live calls: see `Evaluation::apply_caps`.
        Limit::MaxConcurrent { .. } => return Err("within its max_concurrent cap"),
    };
    let base = add(add(from, limit)?, grace)?;
    if rule.windows.is_empty() {
        return Ok(base);
    }
    rule.windows
        .iter()
        .filter_map(|w| window_deadline(w, base, now))
        .min()
        .ok_or("no window opens within the search horizon")
}

/// The earliest instant ≥ `base` at which `window` is open, in an opening
/// that has not closed by `now` (a window that closed in the past must not
/// make a call overdue outside any window).
fn window_deadline(
    window: &super::Window,
    base: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    // After `base`: the opening that holds `now`, else the next one (later
    // than `now`, so later than `base`). Until `base`: the first open
    // instant from `base` on.
    window
        .current_or_next_opening(base.max(now))
        .map(|start| start.max(base))
}

/// The longest limit or grace a deadline is computed with (`SEARCH_HORIZON * 100`).
const MAX_OFFSET: chrono::Duration = chrono::Duration::days(SEARCH_HORIZON.num_days() * 100);

fn add(at: DateTime<Utc>, by: Duration) -> Result<DateTime<Utc>, &'static str> {
    if by.is_zero() {
        return Ok(at);
    }
    chrono::Duration::from_std(by)
        .ok()
        .filter(|d| *d <= MAX_OFFSET)
        .and_then(|d| at.checked_add_signed(d))
        .ok_or("deadline out of range")
}

/// Whether `number` is protected: its digits equal one protected number
/// exactly (never a prefix: `911` does not protect `+9111...`).
///
/// `protected` holds digits-only numbers, as validated by `config`; `number`
/// is read with [`crate::call::number_digits`] (`tel:911` and
/// `sip:112@host` are numbers). A value that mixes digits with characters
/// that cannot be read is protected whenever any number is: a number we
/// cannot read must never be treated as an ordinary one.
pub fn is_protected(number: &str, protected: &[String]) -> bool {
    if protected.iter().all(String::is_empty) {
        return false;
    }
    // Tracked calls hold normalized numbers: compare without allocating.
    if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
        return protected.iter().any(|p| p == number);
    }
    // ASCII with no digit (`anonymous`, `sip:alice@host`) is no number.
    if number.is_ascii() && !number.contains(|c: char| c.is_ascii_digit() || c == '%') {
        return false;
    }
    match number_digits(number) {
        NumberDigits::Digits(digits) => protected.contains(&digits),
        NumberDigits::Doubtful => true,
        NumberDigits::NotNumber => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_is_exact_never_prefix() {
        let list = vec!["911".to_string(), "112".to_string()];
        assert!(is_protected("911", &list));
        assert!(is_protected("+911", &list));
        assert!(is_protected(" 9 1 1 ", &list));
        assert!(!is_protected("+9111234567", &list));
        assert!(!is_protected("91", &list));
        assert!(!is_protected("", &list));
        assert!(!is_protected("911", &[]));
    }

    #[test]
    fn uri_full_width_and_invisible_forms_are_protected() {
        let list = vec!["911".to_string(), "112".to_string(), "999".to_string()];
        for number in [
            "tel:911",
            "tel:+911",
            "sip:112@carrier.example",
            "sip:999@host;user=phone",
            "sips:911@host",
            "９１１",
            "9\u{200B}11",
            // Unreadable digits err on the safe side.
            "٩١١",
            "911#",
        ] {
            assert!(is_protected(number, &list), "{number:?}");
        }
        for number in [
            "sip:9111@host",
            "tel:+9111234567",
            "sip:alice@example.com",
            "anonymous",
        ] {
            assert!(!is_protected(number, &list), "{number:?}");
        }
    }
}
