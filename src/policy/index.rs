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

/// Words kept inline in a [`RuleSet`]: policies of up to 256 rules
/// evaluate without a heap allocation.
const INLINE_WORDS: usize = 4;

/// A set of rule indices, one bit per rule; inline up to 256 rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RuleSet(Words);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Words {
    /// `words[..len]` are used; the rest stay zero.
    Inline {
        len: u8,
        words: [u64; INLINE_WORDS],
    },
    Heap(Box<[u64]>),
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::empty(0)
    }
}

impl RuleSet {
    /// No rule of `len`.
    pub(super) fn empty(len: usize) -> Self {
        let count = len.div_ceil(64);
        match u8::try_from(count) {
            Ok(len) if count <= INLINE_WORDS => Self(Words::Inline {
                len,
                words: [0; INLINE_WORDS],
            }),
            _ => Self(Words::Heap(vec![0; count].into_boxed_slice())),
        }
    }

    /// Every rule of `len`.
    fn full(len: usize) -> Self {
        let mut set = Self::empty(len);
        set.words_mut().fill(u64::MAX);
        if let (Some(last), tail @ 1..) = (set.words_mut().last_mut(), len % 64) {
            *last = (1 << tail) - 1;
        }
        set
    }

    fn words(&self) -> &[u64] {
        match &self.0 {
            Words::Inline { len, words } => &words[..usize::from(*len)],
            Words::Heap(words) => words,
        }
    }

    fn words_mut(&mut self) -> &mut [u64] {
        match &mut self.0 {
            Words::Inline { len, words } => &mut words[..usize::from(*len)],
            Words::Heap(words) => words,
        }
    }

    /// Adds `rule`.
    pub(super) fn insert(&mut self, rule: usize) {
        if let Some(word) = self.words_mut().get_mut(rule / 64) {
            *word |= 1 << (rule % 64);
        }
    }

    /// Whether `rule` is a member.
    pub(super) fn contains(&self, rule: usize) -> bool {
        self.words()
            .get(rule / 64)
            .is_some_and(|word| word & (1 << (rule % 64)) != 0)
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.words().iter().all(|word| *word == 0)
    }

    /// How many members.
    pub(super) fn len(&self) -> usize {
        self.words().iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The words of two inline sets of as many rules, whole: the unused
    /// words are zero in both and every operation below keeps them zero,
    /// so a fixed-length loop (unrolled, no slicing) gives the same answer.
    fn inline_pair<'a>(
        &'a mut self,
        other: &'a RuleSet,
    ) -> Option<(&'a mut [u64; INLINE_WORDS], &'a [u64; INLINE_WORDS])> {
        match (&mut self.0, &other.0) {
            (Words::Inline { len, words }, Words::Inline { len: l, words: w }) if len == l => {
                Some((words, w))
            }
            _ => None,
        }
    }

    /// Becomes a copy of `other` (a set of as many rules).
    fn copy_from(&mut self, other: &RuleSet) {
        if let Some((words, other)) = self.inline_pair(other) {
            *words = *other;
            return;
        }
        for (word, other) in self.words_mut().iter_mut().zip(other.words()) {
            *word = *other;
        }
    }

    fn union_with(&mut self, other: &RuleSet) {
        if let Some((words, other)) = self.inline_pair(other) {
            for (word, other) in words.iter_mut().zip(other) {
                *word |= other;
            }
            return;
        }
        for (word, other) in self.words_mut().iter_mut().zip(other.words()) {
            *word |= other;
        }
    }

    fn intersects(&self, other: &RuleSet) -> bool {
        self.words()
            .iter()
            .zip(other.words())
            .any(|(a, b)| a & b != 0)
    }

    fn is_subset(&self, other: &RuleSet) -> bool {
        self.words()
            .iter()
            .zip(other.words())
            .all(|(a, b)| a & !b == 0)
    }

    /// The members, in increasing order.
    pub(super) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words().iter().enumerate().flat_map(|(index, word)| {
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

    /// Keeps only the members of `keep`; `dropped` becomes the members removed.
    #[inline]
    fn keep_only(&mut self, keep: &RuleSet, dropped: &mut RuleSet) -> bool {
        self.split(keep, dropped, |word, keep| (word & keep, word & !keep))
    }

    /// Removes the members of `remove`; `dropped` becomes the members removed.
    #[inline]
    fn remove_all(&mut self, remove: &RuleSet, dropped: &mut RuleSet) -> bool {
        self.split(remove, dropped, |word, remove| {
            (word & !remove, word & remove)
        })
    }

    /// Replaces each word by the first half of `f(word, other's word)` and
    /// makes `dropped` the second halves; whether any of those is not empty.
    #[inline]
    fn split(
        &mut self,
        other: &RuleSet,
        dropped: &mut RuleSet,
        f: impl Fn(u64, u64) -> (u64, u64),
    ) -> bool {
        let mut any = 0;
        // Three inline sets of as many rules: whole arrays (see `inline_pair`).
        if let (
            Words::Inline { len, words },
            Words::Inline { len: l, words: w },
            Words::Inline { len: d, words: out },
        ) = (&mut self.0, &other.0, &mut dropped.0)
        {
            if len == l && len == d {
                for ((word, other), out) in words.iter_mut().zip(w).zip(out) {
                    let (kept, removed) = f(*word, *other);
                    *out = removed;
                    any |= removed;
                    *word = kept;
                }
                return any != 0;
            }
        }
        let words = self.words_mut().iter_mut().zip(other.words());
        for ((word, other), out) in words.zip(dropped.words_mut()) {
            let (kept, removed) = f(*word, *other);
            *out = removed;
            any |= removed;
            *word = kept;
        }
        any != 0
    }
}

/// Which table of a rule an index covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
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

/// "No node".
const NONE: u32 = u32::MAX;

/// A node whose children's bytes span at most this many more values than
/// twice their count keeps a dense child table (a digit node always does).
const DENSE_SLACK: usize = 8;

/// One trie node, laid out flat; its stem is the bytes on the path from the root.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Its children: `edges[first_edge..first_edge + edge_count]`; when
    /// `dense`, edge `i` is byte `min_byte + i` (target [`NONE`] for none),
    /// so a child is found by one subtraction instead of a search.
    first_edge: u32,
    edge_count: u32,
    min_byte: u8,
    dense: bool,
    /// The rules that match a value which runs through this node and
    /// leaves the trie below it, before checks (an index into `sets`).
    through: u32,
    /// The rules that match the stem itself, checks included.
    exact: u32,
    /// Check groups filed under this stem: `node_groups[first_group..][..group_count]`.
    first_group: u32,
    group_count: u32,
    /// The nearest node at or above this one with check groups.
    chain: u32,
    /// The nearest node strictly above this one with check groups.
    up: u32,
}

/// Rules whose patterns the trie cannot decide and that share one pattern
/// list: one matcher call decides them all.
#[derive(Debug, Clone)]
struct CheckGroup {
    /// (rule, slot) of the first rule with this list: its matcher is used.
    matcher: (u32, u32),
    /// Every rule with this list.
    rules: RuleSet,
}

/// The index of one field of one table across every rule.
#[derive(Debug, Clone)]
struct FieldIndex {
    field: MatchField,
    table: Table,
    /// Whether any rule needs the value looked at; when not, every rule
    /// passes (`match`) or none but those in `always` is hit (`unless`).
    used: bool,
    /// Rules decided without the value: for `match`, those without a
    /// matcher on the field or with `*`; for `unless`, those with `*`.
    always: RuleSet,
    /// The trie; node 0 is the root (the empty stem).
    nodes: Vec<Node>,
    /// The byte of each edge, and the node it leads to.
    edge_bytes: Vec<u8>,
    edge_targets: Vec<u32>,
    /// The check groups of each node, in runs.
    node_groups: Vec<u32>,
    /// The rule sets the nodes point to.
    sets: Vec<RuleSet>,
    groups: Vec<CheckGroup>,
    /// What [`FieldIndex::matching`] answers for each of
    /// [`MatchField::known_words`], worked out once: a call's direction and
    /// status are then looked up, not walked.
    known: Vec<RuleSet>,
}

/// A trie node while the index is built.
#[derive(Debug, Clone, Default)]
struct BuildNode {
    children: Vec<(u8, u32)>,
    /// Rules with a `stem*` pattern.
    prefix: Vec<usize>,
    /// Rules with the literal `stem`.
    literal: Vec<usize>,
    groups: Vec<u32>,
}

/// The trie while the index is built.
#[derive(Debug, Default)]
struct Builder {
    nodes: Vec<BuildNode>,
}

impl Builder {
    /// The node for `stem`, created on the way.
    fn node(&mut self, stem: &str) -> &mut BuildNode {
        if self.nodes.is_empty() {
            self.nodes.push(BuildNode::default());
        }
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
                    self.nodes.push(BuildNode::default());
                    self.nodes[current].children.push((byte, next as u32));
                    next
                }
            };
        }
        &mut self.nodes[current]
    }
}

impl FieldIndex {
    fn new(rules: &[Rule], table: Table, field: MatchField) -> Self {
        let mut index = Self {
            field,
            table,
            used: false,
            always: RuleSet::empty(rules.len()),
            nodes: Vec::new(),
            edge_bytes: Vec::new(),
            edge_targets: Vec::new(),
            node_groups: Vec::new(),
            sets: Vec::new(),
            groups: Vec::new(),
            known: Vec::new(),
        };
        let mut trie = Builder::default();
        trie.node("");
        let mut group_of: Vec<(&[String], u32)> = Vec::new();
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
                            Key::Literal(text) => trie.node(text).literal.push(rule_index),
                            Key::Prefix(text) => trie.node(text).prefix.push(rule_index),
                        }
                    }
                }
                IndexKeys::Stems(stems) => {
                    index.used = true;
                    let Ok(slot) = u32::try_from(slot) else {
                        continue;
                    };
                    let patterns = matcher.patterns.as_slice();
                    let group = match group_of.iter().find(|(p, _)| *p == patterns) {
                        Some((_, group)) => *group,
                        None => {
                            let group = index.groups.len() as u32;
                            index.groups.push(CheckGroup {
                                matcher: (rule_id, slot),
                                rules: RuleSet::empty(rules.len()),
                            });
                            group_of.push((patterns, group));
                            for stem in stems {
                                let node = trie.node(&stem);
                                if !node.groups.contains(&group) {
                                    node.groups.push(group);
                                }
                            }
                            group
                        }
                    };
                    index.groups[group as usize].rules.insert(rule_index);
                }
            }
        }
        index.finish(rules, &trie.nodes);
        let every = RuleSet::full(rules.len());
        let mut scratch = RuleSet::empty(rules.len());
        index.known = field
            .known_words()
            .iter()
            .map(|word| index.matching(word, &every, rules, &mut scratch).clone())
            .collect();
        index
    }

    /// [`FieldIndex::matching`] for the call with `values`.
    fn matching_call<'a>(
        &'a self,
        values: &FieldValues<'_>,
        interest: &RuleSet,
        rules: &[Rule],
        scratch: &'a mut RuleSet,
    ) -> &'a RuleSet {
        let known = values
            .known_word(self.field)
            .and_then(|at| self.known.get(at));
        match known {
            Some(set) => set,
            None => self.matching(values.get(self.field), interest, rules, scratch),
        }
    }

    /// Lays the trie out flat and computes every node's `through` and
    /// `exact` sets, top-down: a value equal to a stem is decided entirely
    /// here, checks included.
    fn finish(&mut self, rules: &[Rule], built: &[BuildNode]) {
        let empty = Node {
            first_edge: 0,
            edge_count: 0,
            min_byte: 0,
            dense: false,
            through: 0,
            exact: 0,
            first_group: 0,
            group_count: 0,
            chain: NONE,
            up: NONE,
        };
        self.nodes = vec![empty; built.len()];
        let mut root_through = self.always.clone();
        for &rule in built.first().map_or(&[][..], |root| &root.prefix) {
            root_through.insert(rule);
        }
        self.sets.push(root_through);
        // (node, its stem, the parent's through set, the parent's chain)
        let mut stack = vec![(0usize, Vec::<u8>::new(), 0u32, NONE)];
        while let Some((node, stem, parent_through, parent_chain)) = stack.pop() {
            let Some(source) = built.get(node) else {
                continue;
            };
            let mut through = parent_through;
            if node != 0 && !source.prefix.is_empty() {
                let mut set = self.sets[parent_through as usize].clone();
                for &rule in &source.prefix {
                    set.insert(rule);
                }
                through = self.push_set(set);
            }
            let first_group = self.node_groups.len() as u32;
            self.node_groups.extend(&source.groups);
            let chain = if source.groups.is_empty() {
                parent_chain
            } else {
                node as u32
            };
            let first_edge = self.edge_bytes.len() as u32;
            let bytes = source.children.iter().map(|(byte, _)| *byte);
            let (min_byte, max_byte) = (bytes.clone().min(), bytes.max());
            let span = match (min_byte, max_byte) {
                (Some(min), Some(max)) => usize::from(max - min) + 1,
                _ => 0,
            };
            let dense = span <= 2 * source.children.len() + DENSE_SLACK;
            let min_byte = min_byte.unwrap_or(0);
            if dense {
                self.edge_bytes
                    .extend((0..span).map(|i| min_byte.wrapping_add(i as u8)));
                self.edge_targets.extend(std::iter::repeat_n(NONE, span));
                for &(byte, child) in &source.children {
                    self.edge_targets[first_edge as usize + usize::from(byte - min_byte)] = child;
                }
            } else {
                for &(byte, child) in &source.children {
                    self.edge_bytes.push(byte);
                    self.edge_targets.push(child);
                }
            }
            // Set before `each_group` below walks up from here.
            self.nodes[node] = Node {
                first_edge,
                edge_count: (self.edge_bytes.len() as u32) - first_edge,
                min_byte,
                dense,
                through,
                exact: through,
                first_group,
                group_count: source.groups.len() as u32,
                chain,
                up: parent_chain,
            };
            let mut exact = self.sets[through as usize].clone();
            for &rule in &source.literal {
                exact.insert(rule);
            }
            let text = String::from_utf8_lossy(&stem);
            self.each_group(chain, |group| {
                let (rule, slot) = group.matcher;
                if self
                    .table
                    .matcher(rules, rule, slot)
                    .is_some_and(|m| m.is_match(&text))
                {
                    exact.union_with(&group.rules);
                }
            });
            if exact != self.sets[through as usize] {
                self.nodes[node].exact = self.push_set(exact);
            }
            for &(byte, child) in &source.children {
                let mut child_stem = stem.clone();
                child_stem.push(byte);
                stack.push((child as usize, child_stem, through, chain));
            }
        }
    }

    fn push_set(&mut self, set: RuleSet) -> u32 {
        self.sets.push(set);
        (self.sets.len() - 1) as u32
    }

    /// The child of `node` along `byte`.
    #[inline]
    fn child(&self, node: &Node, byte: u8) -> Option<&Node> {
        let start = node.first_edge as usize;
        if node.dense {
            let at = usize::from(byte.wrapping_sub(node.min_byte));
            if at >= node.edge_count as usize {
                return None;
            }
            // A gap holds `NONE`, which is no node.
            let target = *self.edge_targets.get(start + at)?;
            return self.nodes.get(target as usize);
        }
        let bytes = self
            .edge_bytes
            .get(start..start + node.edge_count as usize)?;
        let at = bytes.iter().position(|b| *b == byte)?;
        let target = *self.edge_targets.get(start + at)?;
        self.nodes.get(target as usize)
    }

    /// Calls `f` with every check group filed at `chain` and above it.
    fn each_group(&self, mut chain: u32, mut f: impl FnMut(&CheckGroup)) {
        while let Some(node) = self.nodes.get(chain as usize) {
            let start = node.first_group as usize;
            let ids = self
                .node_groups
                .get(start..start + node.group_count as usize)
                .unwrap_or_default();
            for &group in ids {
                if let Some(group) = self.groups.get(group as usize) {
                    f(group);
                }
            }
            chain = node.up;
        }
    }

    /// The rules whose matcher on this field matches `value` (for `match`:
    /// plus those without one). Matcher checks are only spent on rules in
    /// `interest`; others may be missing. `scratch` holds the answer when it
    /// is not one of the precomputed sets.
    fn matching<'a>(
        &'a self,
        value: &str,
        interest: &RuleSet,
        rules: &[Rule],
        scratch: &'a mut RuleSet,
    ) -> &'a RuleSet {
        let Some(mut node) = self.nodes.first() else {
            return &self.always;
        };
        let bytes = value.as_bytes();
        let mut depth = 0;
        while let Some(&byte) = bytes.get(depth) {
            match self.child(node, byte) {
                Some(next) => {
                    node = next;
                    depth += 1;
                }
                None => break,
            }
        }
        let set = |id: u32| self.sets.get(id as usize).unwrap_or(&self.always);
        if depth == bytes.len() {
            return set(node.exact);
        }
        let through = set(node.through);
        if node.chain == NONE {
            return through;
        }
        scratch.copy_from(through);
        self.each_group(node.chain, |group| {
            let (rule, slot) = group.matcher;
            if group.rules.intersects(interest)
                && !group.rules.is_subset(scratch)
                && self
                    .table
                    .matcher(rules, rule, slot)
                    .is_some_and(|m| m.is_match(value))
            {
                scratch.union_with(&group.rules);
            }
        });
        scratch
    }
}

/// What a rule's tables say of one call, before any deadline (what the
/// property test compares).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
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
    /// See [`PolicyIndex::deciding_fields`].
    deciding: usize,
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
        if rules
            .iter()
            .any(|rule| repeats(&rule.matcher) || rule.unless.as_ref().is_some_and(repeats))
        {
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
        let matcher: Vec<FieldIndex> = build(Table::Match);
        let unless: Vec<FieldIndex> = build(Table::Unless);
        let deciding = matcher.iter().filter(|i| i.used).count()
            + unless
                .iter()
                .filter(|i| i.used || !i.always.is_empty())
                .count();
        Self {
            rules: u32::try_from(rules.len()).ok().map(|_| rules.len()),
            matcher,
            unless,
            live,
            deciding,
        }
    }

    /// How many field indexes can decide rules: the most fields one
    /// evaluation records as deciding.
    pub(super) fn deciding_fields(&self) -> usize {
        self.deciding
    }

    /// Whether the index was built for `rules` (same count; the rules are
    /// only ever replaced together with their index, by [`super::Policy::new`]).
    pub(super) fn covers(&self, rules: &[Rule]) -> bool {
        self.rules == Some(rules.len())
    }

    /// The rules that apply to the call with `values` (`[rule.match]`
    /// matches, `[rule.unless]` does not); `sorted` sees, per field and
    /// table, the rules that field decided (only when there are some).
    pub(super) fn sort_all(
        &self,
        rules: &[Rule],
        values: &FieldValues<'_>,
        sorted: impl FnMut(Table, MatchField, &RuleSet),
    ) -> RuleSet {
        let mut remaining = RuleSet::full(rules.len());
        self.sort(rules, values, &mut remaining, sorted);
        remaining
    }

    /// The live (not dry-run) rules that apply to the call with `values`.
    pub(super) fn live_applicable(&self, rules: &[Rule], values: &FieldValues<'_>) -> RuleSet {
        let mut remaining = self.live.clone();
        self.sort(rules, values, &mut remaining, |_, _, _| {});
        remaining
    }

    /// Removes from `remaining` every rule that does not apply, telling
    /// `sorted` which field of which table removed which rules; the first
    /// field in check order decides, as in [`Match::first_mismatch`] and
    /// [`Match::first_hit`].
    fn sort(
        &self,
        rules: &[Rule],
        values: &FieldValues<'_>,
        remaining: &mut RuleSet,
        mut sorted: impl FnMut(Table, MatchField, &RuleSet),
    ) {
        let mut scratch = RuleSet::empty(rules.len());
        let mut dropped = RuleSet::empty(rules.len());
        for index in &self.matcher {
            if remaining.is_empty() {
                return;
            }
            if !index.used {
                continue;
            }
            let field = index.field;
            let hits = index.matching_call(values, remaining, rules, &mut scratch);
            if remaining.keep_only(hits, &mut dropped) {
                sorted(Table::Match, field, &dropped);
            }
        }
        for index in &self.unless {
            if remaining.is_empty() {
                return;
            }
            if !index.used && index.always.is_empty() {
                continue;
            }
            let field = index.field;
            let hits = index.matching_call(values, remaining, rules, &mut scratch);
            if remaining.remove_all(hits, &mut dropped) {
                sorted(Table::Unless, field, &dropped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{normalize_number, Call, CallStatus, Direction, Shape};
    use crate::policy::Limit;
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
        let limit = Limit::IdleTimeout(std::time::Duration::from_secs(60));
        let mut rule = Rule::for_test(&format!("r{index}"), limit);
        rule.matcher = matcher;
        rule.unless = unless;
        rule.action.dry_run = dry_run;
        rule
    }

    fn call_of(
        direction: Direction,
        to: &str,
        from: &str,
        status: &str,
        caller_name: &str,
    ) -> Call {
        Call {
            direction,
            from: normalize_number(from).into(),
            to: normalize_number(to).into(),
            caller_name: caller_name.into(),
            status: CallStatus::from_api(status),
            shape: Shape::Legacy,
            ..Call::for_test("c1")
        }
    }

    /// The class of every rule, as the index sorts them.
    fn classify(index: &PolicyIndex, rules: &[Rule], values: &FieldValues<'_>) -> Vec<Class> {
        let mut classes = vec![Class::Applies; rules.len()];
        index.sort_all(rules, values, |table, field, dropped| {
            for rule in dropped.iter() {
                classes[rule] = match table {
                    Table::Match => Class::NotMatched(field),
                    Table::Unless => Class::Exempt(field),
                };
            }
        });
        classes
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
            prop_assert_eq!(&classify(&index, &rules, &values), &expected);
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
        let mut dropped = RuleSet::empty(130);
        assert!(set.keep_only(&keep, &mut dropped));
        assert_eq!(dropped.iter().collect::<Vec<_>>(), [3, 129]);
        assert_eq!(set.iter().collect::<Vec<_>>(), [70]);
        assert_eq!(set.len(), 1);
        assert!(set.remove_all(&keep, &mut dropped));
        assert_eq!(dropped.iter().collect::<Vec<_>>(), [70]);
        assert!(set.is_empty());
        assert!(!set.remove_all(&keep, &mut dropped));
        // Past 256 rules the words live on the heap; same behaviour.
        let mut big = RuleSet::empty(300);
        big.insert(299);
        assert!(big.contains(299) && !big.contains(298));
        assert_eq!(RuleSet::full(300).len(), 300);
        assert_eq!(RuleSet::full(256).len(), 256);
    }
}
