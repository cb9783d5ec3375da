//! The policy index: for each field, one trie over the literal and prefix
//! patterns of every rule, so a call is sorted against all rules with one
//! walk per field instead of a scan of every pattern of every rule.
//!
//! Patterns the trie cannot decide (`1[2-5]??8*`, `{a,b}`) are filed under
//! their literal stem and checked with the rule's own matcher, only for calls
//! whose value runs through that stem. The index decides exactly what
//! [`Match::first_mismatch`] and [`Match::first_hit`] decide; a property test
//! holds it to that.

use super::matcher::{FieldMatcher, FieldValues, IndexKeys, Key, Match, MatchField};
use super::Rule;

/// A set of rule indices, one bit per rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RuleSet {
    words: Vec<u64>,
}

impl RuleSet {
    /// No rule of `len`.
    fn empty(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
        }
    }

    /// Every rule of `len`.
    fn full(len: usize) -> Self {
        let mut set = Self {
            words: vec![u64::MAX; len.div_ceil(64)],
        };
        if let (Some(last), tail @ 1..) = (set.words.last_mut(), len % 64) {
            *last = (1 << tail) - 1;
        }
        set
    }

    fn insert(&mut self, rule: usize) {
        if let Some(word) = self.words.get_mut(rule / 64) {
            *word |= 1 << (rule % 64);
        }
    }

    fn contains(&self, rule: usize) -> bool {
        self.words
            .get(rule / 64)
            .is_some_and(|word| word & (1 << (rule % 64)) != 0)
    }

    fn is_empty(&self) -> bool {
        self.words.iter().all(|word| *word == 0)
    }

    fn copy_from(&mut self, other: &RuleSet) {
        self.words.clone_from(&other.words);
    }

    /// The members, in increasing order.
    pub(super) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(index, word)| {
            let mut bits = *word;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    index * 64 + bit
                })
            })
        })
    }

    /// Keeps only the members of `keep`; `dropped` sees each one removed.
    fn keep_only(&mut self, keep: &RuleSet, mut dropped: impl FnMut(usize)) {
        for (index, (word, keep)) in self.words.iter_mut().zip(&keep.words).enumerate() {
            each_bit(index, *word & !keep, &mut dropped);
            *word &= keep;
        }
    }

    /// Removes the members of `remove`; `dropped` sees each one removed.
    fn remove_all(&mut self, remove: &RuleSet, mut dropped: impl FnMut(usize)) {
        for (index, (word, remove)) in self.words.iter_mut().zip(&remove.words).enumerate() {
            each_bit(index, *word & remove, &mut dropped);
            *word &= !remove;
        }
    }
}

fn each_bit(index: usize, mut bits: u64, f: &mut impl FnMut(usize)) {
    while bits != 0 {
        f(index * 64 + bits.trailing_zeros() as usize);
        bits &= bits - 1;
    }
}

/// Which table of a rule an index covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    /// `[rule.match]`: a rule without a matcher on a field passes it.
    Match,
    /// `[rule.unless]`: a rule without a matcher on a field is not exempted by it.
    Unless,
}

impl Table {
    fn of(self, rule: &Rule) -> Option<&Match> {
        match self {
            Table::Match => Some(&rule.matcher),
            Table::Unless => rule.unless.as_ref(),
        }
    }

    fn matcher(self, rules: &[Rule], rule: u32, slot: u32) -> Option<&FieldMatcher> {
        let table = self.of(rules.get(rule as usize)?)?;
        table.fields.get(slot as usize)
    }
}

/// One trie node: the rules whose patterns end at this stem.
#[derive(Debug, Clone, Default)]
struct Node {
    /// (byte, node) per child.
    children: Vec<(u8, u32)>,
    /// Rules with a `stem*` pattern: every value through here matches.
    prefix: Vec<u32>,
    /// Rules with a literal `stem`: a value ending here matches.
    literal: Vec<u32>,
    /// (rule, slot of its field matcher) to check with the matcher itself.
    check: Vec<(u32, u32)>,
}

/// The index of one field of one table across every rule.
#[derive(Debug, Clone, Default)]
struct FieldIndex {
    field: Option<MatchField>,
    /// Rules decided without the value: for `match`, those without a
    /// matcher on the field or with `*`; for `unless`, those with `*`.
    always: RuleSet,
    /// Whether any rule needs the value looked at.
    used: bool,
    /// The trie; node 0 is the root (the empty stem).
    nodes: Vec<Node>,
}

impl FieldIndex {
    fn new(rules: &[Rule], table: Table, field: MatchField) -> Self {
        let mut index = Self {
            field: Some(field),
            always: RuleSet::empty(rules.len()),
            used: false,
            nodes: vec![Node::default()],
        };
        for (rule_index, rule) in rules.iter().enumerate() {
            let Ok(rule_id) = u32::try_from(rule_index) else {
                break;
            };
            let Some(fields) = table.of(rule).map(|t| &t.fields) else {
                continue;
            };
            let Some((slot, matcher)) = fields.iter().enumerate().find(|(_, m)| m.field == field)
            else {
                if table == Table::Match {
                    index.always.insert(rule_index);
                }
                continue;
            };
            match matcher.index_keys() {
                IndexKeys::Any => index.always.insert(rule_index),
                IndexKeys::Exact(keys) => {
                    index.used = true;
                    for key in keys {
                        match key {
                            Key::Literal(text) => index.node_for(text).literal.push(rule_id),
                            Key::Prefix(text) => index.node_for(text).prefix.push(rule_id),
                        }
                    }
                }
                IndexKeys::Stems(stems) => {
                    index.used = true;
                    let Ok(slot) = u32::try_from(slot) else {
                        continue;
                    };
                    for stem in stems {
                        let check = &mut index.node_for(&stem).check;
                        if !check.contains(&(rule_id, slot)) {
                            check.push((rule_id, slot));
                        }
                    }
                }
            }
        }
        index
    }

    /// The node for `stem`, created on the way.
    fn node_for(&mut self, stem: &str) -> &mut Node {
        let mut current = 0usize;
        for &byte in stem.as_bytes() {
            let found = self.nodes[current]
                .children
                .iter()
                .find(|(b, _)| *b == byte)
                .map(|(_, next)| *next as usize);
            current = match found {
                Some(next) => next,
                None => {
                    let next = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[current].children.push((byte, next as u32));
                    next
                }
            };
        }
        &mut self.nodes[current]
    }

    /// Writes to `out` the rules whose matcher on this field matches
    /// `value` (for `match`: plus those without one). Matcher checks are
    /// only spent on rules in `interest`; others may be missing from `out`.
    fn matching(
        &self,
        value: &str,
        interest: &RuleSet,
        rules: &[Rule],
        table: Table,
        out: &mut RuleSet,
    ) {
        out.copy_from(&self.always);
        if !self.used {
            return;
        }
        let bytes = value.as_bytes();
        let mut node = &self.nodes[0];
        let mut depth = 0;
        loop {
            for &rule in &node.prefix {
                out.insert(rule as usize);
            }
            for &(rule, slot) in &node.check {
                let wanted = interest.contains(rule as usize) && !out.contains(rule as usize);
                if wanted
                    && table
                        .matcher(rules, rule, slot)
                        .is_some_and(|m| m.is_match(value))
                {
                    out.insert(rule as usize);
                }
            }
            let Some(&byte) = bytes.get(depth) else {
                for &rule in &node.literal {
                    out.insert(rule as usize);
                }
                return;
            };
            let next = node.children.iter().find(|(b, _)| *b == byte);
            match next.and_then(|(_, next)| self.nodes.get(*next as usize)) {
                Some(next) => {
                    node = next;
                    depth += 1;
                }
                None => return,
            }
        }
    }
}

/// What a rule's tables say of one call, before any deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// `[rule.match]` matches and `[rule.unless]` does not.
    Applies,
    /// `[rule.match]` fails first on this field.
    NotMatched(MatchField),
    /// `[rule.unless]` matches first on this field.
    Exempt(MatchField),
}

/// The index of every field of both tables of a policy's rules.
#[derive(Debug, Clone, Default)]
pub(super) struct PolicyIndex {
    /// How many rules it was built for; `None` when the rules have a shape
    /// it does not model (then evaluation scans).
    rules: Option<usize>,
    /// Per field of `[rule.match]`, in [`MatchField::ALL`] order.
    matcher: Vec<FieldIndex>,
    /// Per field of `[rule.unless]`, in [`MatchField::ALL`] order.
    unless: Vec<FieldIndex>,
    /// The rules that are not dry-run.
    live: RuleSet,
}

impl PolicyIndex {
    /// Indexes `rules`.
    pub(super) fn new(rules: &[Rule]) -> Self {
        // A table naming one field twice (not possible from a policy file)
        // would AND the two matchers; the index models one per field.
        let repeats = |table: &Match| {
            MatchField::ALL
                .iter()
                .any(|f| table.fields.iter().filter(|m| m.field == *f).count() > 1)
        };
        if rules.iter().any(|rule| {
            repeats(&rule.matcher) || rule.unless.as_ref().is_some_and(repeats)
        }) {
            return Self::default();
        }
        let mut live = RuleSet::empty(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            if !rule.action.dry_run {
                live.insert(index);
            }
        }
        let build = |table| {
            MatchField::ALL
                .iter()
                .map(|field| FieldIndex::new(rules, table, *field))
                .collect()
        };
        Self {
            rules: u32::try_from(rules.len()).ok().map(|_| rules.len()),
            matcher: build(Table::Match),
            unless: build(Table::Unless),
            live,
        }
    }

    /// Whether the index was built for `rules` (same count; the rules are
    /// only ever replaced together with their index, by [`super::Policy::new`]).
    pub(super) fn covers(&self, rules: &[Rule]) -> bool {
        self.rules == Some(rules.len())
    }

    /// The class of every rule for the call with `values`.
    pub(super) fn classify(&self, rules: &[Rule], values: &FieldValues<'_>) -> Vec<Class> {
        let mut classes = vec![Class::Applies; rules.len()];
        let mut remaining = RuleSet::full(rules.len());
        self.sort(rules, values, &mut remaining, |rule, class| {
            if let Some(slot) = classes.get_mut(rule) {
                *slot = class;
            }
        });
        classes
    }

    /// The live (not dry-run) rules that apply to the call with `values`.
    pub(super) fn live_applicable(&self, rules: &[Rule], values: &FieldValues<'_>) -> RuleSet {
        let mut remaining = self.live.clone();
        self.sort(rules, values, &mut remaining, |_, _| {});
        remaining
    }

    /// Removes from `remaining` every rule that does not apply, telling
    /// `sorted` why; the first field in check order decides, as in
    /// [`Match::first_mismatch`] and [`Match::first_hit`].
    fn sort(
        &self,
        rules: &[Rule],
        values: &FieldValues<'_>,
        remaining: &mut RuleSet,
        mut sorted: impl FnMut(usize, Class),
    ) {
        let mut hits = RuleSet::empty(rules.len());
        for index in &self.matcher {
            let Some(field) = index.field else { continue };
            if remaining.is_empty() {
                return;
            }
            if !index.used {
                continue;
            }
            index.matching(values.get(field), remaining, rules, Table::Match, &mut hits);
            remaining.keep_only(&hits, |rule| sorted(rule, Class::NotMatched(field)));
        }
        for index in &self.unless {
            let Some(field) = index.field else { continue };
            if remaining.is_empty() {
                return;
            }
            if !index.used && index.always.is_empty() {
                continue;
            }
            index.matching(values.get(field), remaining, rules, Table::Unless, &mut hits);
            remaining.remove_all(&hits, |rule| sorted(rule, Class::Exempt(field)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{normalize_number, Call, CallStatus, CallUuid, Direction, Shape};
    use crate::policy::{Action, HangupScope, Limit, Source};
    use proptest::prelude::*;

    const PATTERNS: &[&str] = &[
        "*",
        "",
        "1900*",
        "+1 900*",
        "19*",
        "1900",
        "44*",
        "4420",
        "1[2-5]*",
        "1?00*",
        "{19,44}*",
        "x\\*y",
        "inbound",
        "outbound",
        "ringing",
        "in-progress",
        "q*",
        "NOC *",
        "default",
        "acct-1",
        "acct-*",
        "anonymous",
        "sip:*",
        "?*",
    ];

    const VALUES: &[&str] = &[
        "",
        "19005551234",
        "1900",
        "19",
        "4420",
        "442071838750",
        "1299",
        "1800",
        "x*y",
        "NOC x",
        "anonymous",
        "sip:a@b",
        "acct-1",
    ];

    fn table() -> impl Strategy<Value = Vec<(MatchField, Vec<&'static str>)>> {
        proptest::collection::vec(
            (
                proptest::sample::select(MatchField::ALL.to_vec()),
                proptest::collection::vec(proptest::sample::select(PATTERNS), 1..4),
            ),
            0..4,
        )
        .prop_map(|mut fields| {
            fields.sort_by_key(|(field, _)| field.index());
            fields.dedup_by_key(|(field, _)| *field);
            fields
        })
    }

    fn compile(fields: &[(MatchField, Vec<&str>)]) -> Match {
        Match::new(
            fields
                .iter()
                .map(|(field, patterns)| {
                    let patterns = patterns.iter().map(|p| p.to_string()).collect();
                    FieldMatcher::new(*field, patterns).unwrap()
                })
                .collect(),
        )
    }

    fn rule(index: usize, matcher: Match, unless: Option<Match>, dry_run: bool) -> Rule {
        Rule {
            name: format!("r{index}"),
            description: String::new(),
            limit: Limit::IdleTimeout(std::time::Duration::from_secs(60)),
            priority: 0,
            matcher,
            unless,
            windows: Vec::new(),
            action: Action {
                hangup: HangupScope::Call,
                warn: None,
                dry_run,
                bypass_breaker: false,
            },
            source: Source {
                file: "p.toml".into(),
                line: 1,
            },
        }
    }

    fn call_of(
        direction: Direction,
        to: &str,
        from: &str,
        status: &str,
        caller_name: &str,
    ) -> Call {
        Call {
            uuid: CallUuid::parse("c1").unwrap(),
            direction,
            from: normalize_number(from),
            to: normalize_number(to),
            caller_name: caller_name.to_owned(),
            status: CallStatus::from_api(status),
            started_at: None,
            answered_at: None,
            duration_s: None,
            parent_call_uuid: None,
            shape: Shape::Legacy,
            raw: serde_json::Value::Null,
        }
    }

    /// What the plain scan of one rule says.
    fn scanned(rule: &Rule, values: &FieldValues<'_>) -> Class {
        if let Some(field) = rule.matcher.first_mismatch(values) {
            return Class::NotMatched(field);
        }
        match rule.unless.as_ref().and_then(|u| u.first_hit(values)) {
            Some(field) => Class::Exempt(field),
            None => Class::Applies,
        }
    }

    proptest! {
        #[test]
        fn index_agrees_with_the_scan(
            tables in proptest::collection::vec(
                (table(), proptest::option::of(table()), any::<bool>()),
                0..80,
            ),
            direction in proptest::sample::select(
                vec![Direction::Inbound, Direction::Outbound, Direction::Unknown],
            ),
            to in proptest::sample::select(VALUES),
            from in proptest::sample::select(VALUES),
            status in proptest::sample::select(
                vec!["ringing", "queued", "in-progress", "completed", ""],
            ),
            caller_name in proptest::sample::select(VALUES),
            account in proptest::sample::select(vec!["default", "acct-1", "acct-22", ""]),
        ) {
            let rules: Vec<Rule> = tables
                .iter()
                .enumerate()
                .map(|(i, (m, u, dry))| rule(i, compile(m), u.as_deref().map(compile), *dry))
                .collect();
            let index = PolicyIndex::new(&rules);
            prop_assert!(index.covers(&rules));
            let call = call_of(direction, to, from, status, caller_name);
            let values = FieldValues::new(&call, account);
            let expected: Vec<Class> = rules.iter().map(|r| scanned(r, &values)).collect();
            prop_assert_eq!(&index.classify(&rules, &values), &expected);
            let live: Vec<usize> = expected
                .iter()
                .enumerate()
                .filter(|(i, class)| **class == Class::Applies && !rules[*i].action.dry_run)
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(index.live_applicable(&rules, &values).iter().collect::<Vec<_>>(), live);
        }
    }

    #[test]
    fn rule_sets() {
        let full = RuleSet::full(130);
        assert_eq!(full.iter().count(), 130);
        assert_eq!(full.iter().last(), Some(129));
        assert!(RuleSet::full(0).is_empty());
        assert_eq!(RuleSet::full(64).iter().count(), 64);
        let mut set = RuleSet::empty(130);
        set.insert(3);
        set.insert(70);
        set.insert(129);
        assert!(set.contains(70) && !set.contains(71));
        let mut keep = RuleSet::empty(130);
        keep.insert(70);
        let mut dropped = Vec::new();
        set.keep_only(&keep, |r| dropped.push(r));
        assert_eq!(dropped, [3, 129]);
        assert_eq!(set.iter().collect::<Vec<_>>(), [70]);
        let mut dropped = Vec::new();
        set.remove_all(&keep, |r| dropped.push(r));
        assert_eq!(dropped, [70]);
        assert!(set.is_empty());
    }
}
