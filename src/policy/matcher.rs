//! Compiled `[rule.match]` / `[rule.unless]` tables: one glob set per field,
//! built once, matched against a call without allocating.

use std::fmt;

use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;

use super::glob::SimpleGlob;
use crate::call::{Call, CallStatus, Direction};

/// One field a rule can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchField {
    /// `direction`: `inbound` or `outbound`.
    Direction,
    /// `to`: the called number (normalized).
    To,
    /// `from`: the calling number (normalized).
    From,
    /// `status`: the normalized status word.
    Status,
    /// `caller_name`: as given.
    CallerName,
    /// `account`: the name of the account the call was listed under.
    Account,
}

impl MatchField {
    /// Every field, in the order they are checked and reported.
    pub const ALL: [MatchField; 6] = [
        MatchField::Account,
        MatchField::Direction,
        MatchField::Status,
        MatchField::To,
        MatchField::From,
        MatchField::CallerName,
    ];

    /// The key as written in a policy file.
    pub fn key(self) -> &'static str {
        match self {
            MatchField::Direction => "direction",
            MatchField::To => "to",
            MatchField::From => "from",
            MatchField::Status => "status",
            MatchField::CallerName => "caller_name",
            MatchField::Account => "account",
        }
    }

    /// The field for a policy-file key, if it is one.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| field.key() == key)
    }

    /// The call's value for this field (`""` when the call has none).
    pub fn value_of<'a>(self, call: &'a Call, account: &'a str) -> &'a str {
        match self {
            MatchField::Direction => call.direction.as_str(),
            MatchField::To => &call.to,
            MatchField::From => &call.from,
            MatchField::Status => call.status.as_str(),
            MatchField::CallerName => &call.caller_name,
            MatchField::Account => account,
        }
    }

    /// The values this field takes from a call's enums, in the order
    /// [`FieldValues::known_word`] numbers them: what a rule says of them
    /// can be worked out once per policy.
    pub fn known_words(self) -> &'static [&'static str] {
        match self {
            MatchField::Direction => &["inbound", "outbound", ""],
            MatchField::Status => &["queued", "ringing", "early-media", "in-progress"],
            _ => &[],
        }
    }

    /// A dense index, `0..6`, for [`FieldValues`].
    pub fn index(self) -> usize {
        match self {
            MatchField::Account => 0,
            MatchField::Direction => 1,
            MatchField::Status => 2,
            MatchField::To => 3,
            MatchField::From => 4,
            MatchField::CallerName => 5,
        }
    }

    /// Whether values of this field are phone numbers (patterns normalized).
    pub fn is_number(self) -> bool {
        matches!(self, MatchField::To | MatchField::From)
    }
}

/// A call's value for every field, looked up once per call rather than once
/// per rule.
#[derive(Debug, Clone, Copy)]
pub struct FieldValues<'a> {
    values: [&'a str; 6],
    /// The direction's and the status's place in [`MatchField::known_words`],
    /// read from the call's enums (no string comparison).
    direction: Option<usize>,
    status: Option<usize>,
}

impl<'a> FieldValues<'a> {
    /// The values of `call` listed under `account`.
    pub fn new(call: &'a Call, account: &'a str) -> Self {
        let mut values = [""; 6];
        for field in MatchField::ALL {
            values[field.index()] = field.value_of(call, account);
        }
        let direction = Some(match call.direction {
            Direction::Inbound => 0,
            Direction::Outbound => 1,
            Direction::Unknown => 2,
        });
        let status = match call.status {
            CallStatus::Queued => Some(0),
            CallStatus::Ringing => Some(1),
            CallStatus::EarlyMedia => Some(2),
            CallStatus::InProgress => Some(3),
            CallStatus::Other(_) => None,
        };
        Self {
            values,
            direction,
            status,
        }
    }

    /// The value of `field`.
    pub fn get(&self, field: MatchField) -> &'a str {
        self.values[field.index()]
    }

    /// Where the value of `field` is in [`MatchField::known_words`], if it is one.
    pub fn known_word(&self, field: MatchField) -> Option<usize> {
        match field {
            MatchField::Direction => self.direction,
            MatchField::Status => self.status,
            _ => None,
        }
    }
}

impl fmt::Display for MatchField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A compiled matcher for one field: any pattern matching is a match.
#[derive(Debug, Clone)]
pub struct FieldMatcher {
    /// The field it looks at.
    pub field: MatchField,
    /// The patterns as written (for messages and `explain`).
    pub patterns: Vec<String>,
    strategy: Strategy,
}

/// How a pattern list is matched: most real patterns are literals or
/// prefixes (`+1900*`), which a string comparison decides far faster than a
/// glob engine; anything else goes to a [`GlobSet`].
#[derive(Debug, Clone)]
enum Strategy {
    Simple(Vec<Simple>),
    Glob(GlobSet),
}

/// A pattern that needs no glob engine.
#[derive(Debug, Clone)]
enum Simple {
    Any,
    Literal(String),
    Prefix(String),
    Pattern(SimpleGlob),
}

impl Simple {
    fn classify(normalized: &str) -> Option<Self> {
        let has_meta = |s: &str| s.contains(['*', '?', '[', ']', '{', '}', '\\']);
        if normalized == "*" {
            Some(Simple::Any)
        } else if !has_meta(normalized) {
            Some(Simple::Literal(normalized.to_owned()))
        } else {
            match normalized.strip_suffix('*') {
                Some(stem) if !has_meta(stem) => Some(Simple::Prefix(stem.to_owned())),
                _ => SimpleGlob::new(normalized).map(Simple::Pattern),
            }
        }
    }

    fn is_match(&self, value: &str) -> bool {
        match self {
            Simple::Any => true,
            Simple::Literal(literal) => {
                literal.len() == value.len() && starts_with(value.as_bytes(), literal.as_bytes())
            }
            Simple::Prefix(prefix) => starts_with(value.as_bytes(), prefix.as_bytes()),
            Simple::Pattern(glob) => glob.is_match(value),
        }
    }
}

/// Why a pattern list could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad glob `{pattern}`: {reason}")]
pub struct PatternError {
    /// Index of the offending pattern in its list.
    pub index: usize,
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldMatcher {
    /// Compiles `patterns` for `field`; number patterns are normalized like numbers.
    pub fn new(field: MatchField, patterns: Vec<String>) -> Result<Self, PatternError> {
        let mut builder = GlobSetBuilder::new();
        let mut simple = Some(Vec::new());
        for (index, pattern) in patterns.iter().enumerate() {
            let glob = compile_glob(field, pattern).map_err(|reason| PatternError {
                index,
                pattern: pattern.clone(),
                reason,
            })?;
            simple = simple.and_then(|mut list: Vec<Simple>| {
                list.push(Simple::classify(glob.glob())?);
                Some(list)
            });
            builder.add(glob);
        }
        let strategy = match simple {
            Some(list) => Strategy::Simple(list),
            None => Strategy::Glob(builder.build().map_err(|err| PatternError {
                index: 0,
                pattern: patterns.first().cloned().unwrap_or_default(),
                reason: err.kind().to_string(),
            })?),
        };
        Ok(Self {
            field,
            patterns,
            strategy,
        })
    }

    /// What the policy index needs to know of this matcher.
    pub(super) fn index_keys(&self) -> IndexKeys<'_> {
        match &self.strategy {
            Strategy::Simple(list) => {
                let mut exact = Vec::with_capacity(list.len());
                let mut stems = Vec::new();
                for simple in list {
                    match simple {
                        Simple::Any => return IndexKeys::Any,
                        Simple::Literal(text) => exact.push(Key::Literal(text)),
                        Simple::Prefix(text) => exact.push(Key::Prefix(text)),
                        Simple::Pattern(glob) => stems.extend(glob.stems(MAX_STEMS)),
                    }
                }
                if stems.is_empty() {
                    IndexKeys::Exact(exact)
                } else {
                    // Literals and prefixes are their own stems.
                    stems.extend(exact.iter().map(|key| match key {
                        Key::Literal(text) | Key::Prefix(text) => (*text).to_owned(),
                    }));
                    IndexKeys::Stems(stems)
                }
            }
            Strategy::Glob(_) => {
                let normalized: Vec<String> = self
                    .patterns
                    .iter()
                    .map(|pattern| normalize_for(self.field, pattern))
                    .collect();
                if normalized.iter().any(|pattern| pattern == "*") {
                    return IndexKeys::Any;
                }
                IndexKeys::Stems(normalized.iter().map(|p| glob_stem(p).to_owned()).collect())
            }
        }
    }

    /// Whether `value` matches any pattern.
    pub fn is_match(&self, value: &str) -> bool {
        match &self.strategy {
            Strategy::Simple(list) => list.iter().any(|p| p.is_match(value)),
            Strategy::Glob(set) => set.is_match_candidate(&Candidate::from_bytes(value.as_bytes())),
        }
    }
}

/// How many stems one glob may be spelled out into for the policy index.
const MAX_STEMS: usize = 16;

/// How the policy index sees one field matcher.
pub(super) enum IndexKeys<'a> {
    /// It matches every value.
    Any,
    /// It matches exactly the values these keys accept.
    Exact(Vec<Key<'a>>),
    /// Every value it matches starts with one of these stems; the matcher
    /// itself decides the rest.
    Stems(Vec<String>),
}

/// A pattern decided by string comparison alone.
pub(super) enum Key<'a> {
    /// The value equals it.
    Literal(&'a str),
    /// The value starts with it.
    Prefix(&'a str),
}

/// The literal text before the first glob metacharacter: every value the
/// pattern matches starts with it.
fn glob_stem(pattern: &str) -> &str {
    let end = pattern
        .find(['*', '?', '[', ']', '{', '}', '\\'])
        .unwrap_or(pattern.len());
    &pattern[..end]
}

/// `pattern` normalized the way values of `field` are.
fn normalize_for(field: MatchField, pattern: &str) -> String {
    if field.is_number() {
        normalize_number_pattern(pattern)
    } else {
        pattern.to_owned()
    }
}

/// Compiles one pattern for `field`, or says why it is not a valid glob.
pub fn compile_glob(field: MatchField, pattern: &str) -> Result<Glob, String> {
    let normalized = normalize_for(field, pattern);
    GlobBuilder::new(&normalized)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|err| err.kind().to_string())
}

/// Normalizes a number pattern the way [`crate::call::normalize_number`] normalizes a
/// number, keeping the glob syntax: `+1 900*` becomes `1900*`.
///
/// Patterns that are not numbers (`sip:*@example.com`, `anonymous`) are
/// returned trimmed, to match raw values.
pub fn normalize_number_pattern(pattern: &str) -> String {
    let trimmed = pattern.trim();
    // `tel:+1900*` and `sip:+1900*@carrier.example` mean the number pattern
    // of their user part, as values are read; `sip:*@host` stays raw.
    if let Some(reduced) = uri_user_pattern(trimmed).and_then(number_pattern) {
        if reduced.chars().any(|c| c.is_ascii_digit()) {
            return reduced;
        }
    }
    number_pattern(trimmed).unwrap_or_else(|| trimmed.to_owned())
}

/// The user part of a `tel:`/`sip:`/`sips:` pattern, or `None`.
fn uri_user_pattern(pattern: &str) -> Option<&str> {
    let lower = pattern.get(..5).unwrap_or(pattern).to_ascii_lowercase();
    let rest = if lower.starts_with("tel:") || lower.starts_with("sip:") {
        &pattern[4..]
    } else if lower.starts_with("sips:") {
        &pattern[5..]
    } else {
        return None;
    };
    let user = rest.split('@').next().unwrap_or(rest);
    Some(user.split(';').next().unwrap_or(user))
}

/// `trimmed` as a number pattern, when its literal part is digits.
fn number_pattern(trimmed: &str) -> Option<String> {
    let mut out = String::with_capacity(trimmed.len());
    let mut literal = String::new();
    let mut in_class = false;
    for c in trimmed.chars() {
        if in_class {
            out.push(c);
            if c == ']' {
                in_class = false;
            }
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                out.push(c);
            }
            '*' | '?' => out.push(c),
            '+' | ' ' | '-' | '.' | '(' | ')' => {}
            other => {
                literal.push(other);
                out.push(other);
            }
        }
    }
    // Only a pattern whose literal part is digits is a number pattern; the
    // rest match raw strings, exactly as `normalize_number` treats values.
    let literal_is_digits = literal.chars().all(|c| c.is_ascii_digit());
    (literal_is_digits && !out.is_empty()).then_some(out)
}

/// `value` starts with `prefix`; a plain loop, because these strings are a
/// few bytes long and a `memcmp` call costs more than the comparison.
#[inline]
fn starts_with(value: &[u8], prefix: &[u8]) -> bool {
    prefix.len() <= value.len() && prefix.iter().zip(value).all(|(a, b)| a == b)
}

/// A compiled `[rule.match]` or `[rule.unless]` table.
#[derive(Debug, Clone, Default)]
pub struct Match {
    /// One matcher per field given, in check order.
    pub fields: Vec<FieldMatcher>,
    quick: QuickMasks,
}

/// Which directions and statuses a table accepts, as bit masks, so most
/// non-matching rules are rejected without touching a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QuickMasks {
    direction: u8,
    status: u8,
}

impl Default for QuickMasks {
    fn default() -> Self {
        Self {
            direction: u8::MAX,
            status: u8::MAX,
        }
    }
}

fn direction_bit(direction: Direction) -> u8 {
    match direction {
        Direction::Inbound => 1,
        Direction::Outbound => 2,
        Direction::Unknown => 4,
    }
}

/// The bit of a status; every word outside the four known ones shares the
/// last bit, which is always set (those are decided by the string matcher).
fn status_bit(status: &CallStatus) -> u8 {
    match status {
        CallStatus::Queued => 1,
        CallStatus::Ringing => 2,
        CallStatus::EarlyMedia => 4,
        CallStatus::InProgress => 8,
        CallStatus::Other(_) => 16,
    }
}

impl QuickMasks {
    fn of(fields: &[FieldMatcher]) -> Self {
        let mut masks = Self::default();
        for matcher in fields {
            match matcher.field {
                MatchField::Direction => {
                    masks.direction = [Direction::Inbound, Direction::Outbound, Direction::Unknown]
                        .into_iter()
                        .filter(|d| matcher.is_match(d.as_str()))
                        .fold(0, |mask, d| mask | direction_bit(d));
                }
                MatchField::Status => {
                    masks.status = [
                        CallStatus::Queued,
                        CallStatus::Ringing,
                        CallStatus::EarlyMedia,
                        CallStatus::InProgress,
                    ]
                    .iter()
                    .filter(|s| matcher.is_match(s.as_str()))
                    .fold(16, |mask, s| mask | status_bit(s));
                }
                _ => {}
            }
        }
        masks
    }
}

impl Match {
    /// Builds a table from its field matchers (sorted into check order).
    pub fn new(mut fields: Vec<FieldMatcher>) -> Self {
        fields.sort_by_key(|matcher| {
            MatchField::ALL
                .iter()
                .position(|field| *field == matcher.field)
        });
        let quick = QuickMasks::of(&fields);
        Self { fields, quick }
    }

    /// A cheap test that is false only when `[rule.match]` cannot match
    /// (its direction or status list excludes the call's).
    pub fn may_match(&self, call: &Call) -> bool {
        self.quick.direction & direction_bit(call.direction) != 0
            && self.quick.status & status_bit(&call.status) != 0
    }

    /// The matcher for `field`, if the table has one.
    pub fn field(&self, field: MatchField) -> Option<&FieldMatcher> {
        self.fields.iter().find(|matcher| matcher.field == field)
    }

    /// Whether the `status` list names `word`.
    pub fn names_status(&self, word: &str) -> bool {
        self.field(MatchField::Status)
            .is_some_and(|matcher| matcher.is_match(word))
    }

    /// For `[rule.match]` (AND): the first field that does not match, if any.
    pub fn first_mismatch(&self, values: &FieldValues<'_>) -> Option<MatchField> {
        self.fields
            .iter()
            .find(|matcher| !matcher.is_match(values.get(matcher.field)))
            .map(|matcher| matcher.field)
    }

    /// For `[rule.unless]` (OR): the first field that matches, if any.
    pub fn first_hit(&self, values: &FieldValues<'_>) -> Option<MatchField> {
        self.fields
            .iter()
            .find(|matcher| matcher.is_match(values.get(matcher.field)))
            .map(|matcher| matcher.field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::normalize_number;

    fn matcher(field: MatchField, patterns: &[&str]) -> FieldMatcher {
        FieldMatcher::new(field, patterns.iter().map(|p| p.to_string()).collect()).unwrap()
    }

    #[test]
    fn known_words_are_the_values_the_enums_give() {
        use crate::call::{CallUuid, RawAnswer, Shape};
        let statuses = [
            "queued",
            "ringing",
            "early-media",
            "in-progress",
            "completed",
        ];
        for direction in [Direction::Inbound, Direction::Outbound, Direction::Unknown] {
            for status in statuses {
                let call = Call {
                    uuid: CallUuid::parse("c1").unwrap(),
                    direction,
                    from: "".into(),
                    to: "".into(),
                    caller_name: "".into(),
                    status: CallStatus::from_api(status),
                    started_at: None,
                    answered_at: None,
                    duration_s: None,
                    parent_call_uuid: None,
                    shape: Shape::Flat,
                    raw: RawAnswer::default(),
                };
                let values = FieldValues::new(&call, "a");
                for field in MatchField::ALL {
                    if let Some(at) = values.known_word(field) {
                        assert_eq!(field.known_words()[at], values.get(field), "{field}");
                    }
                }
                let known = values.known_word(MatchField::Status).is_some();
                assert_eq!(known, status != "completed");
            }
        }
    }

    #[test]
    fn number_patterns_are_normalized_like_numbers() {
        assert_eq!(normalize_number_pattern("+1900*"), "1900*");
        assert_eq!(normalize_number_pattern("1900*"), "1900*");
        assert_eq!(normalize_number_pattern("+1 (900) 55?-*"), "190055?*");
        assert_eq!(normalize_number_pattern("+44[0-9]*"), "44[0-9]*");
        assert_eq!(normalize_number_pattern("*"), "*");
        assert_eq!(
            normalize_number_pattern(" sip:*@example.com "),
            "sip:*@example.com"
        );
        assert_eq!(normalize_number_pattern("anonymous"), "anonymous");
        assert_eq!(normalize_number_pattern("tel:+1900*"), "1900*");
        assert_eq!(
            normalize_number_pattern("sip:+1900*@carrier.example;user=phone"),
            "1900*"
        );
        assert_eq!(
            normalize_number_pattern("sip:*@example.com"),
            "sip:*@example.com"
        );
        assert_eq!(normalize_number_pattern("sip:alice@*"), "sip:alice@*");
    }

    #[test]
    fn number_globs_match_with_or_without_plus() {
        for pattern in ["+1900*", "1900*", "+1 900*"] {
            let m = matcher(MatchField::To, &[pattern]);
            assert!(m.is_match(&normalize_number("19005551234")), "{pattern}");
            assert!(m.is_match(&normalize_number("+19005551234")), "{pattern}");
            assert!(!m.is_match(&normalize_number("+18005551234")), "{pattern}");
        }
    }

    #[test]
    fn uri_numbers_match_number_globs() {
        for pattern in ["+1900*", "tel:+1900*", "sip:+1900*@carrier.example"] {
            let m = matcher(MatchField::To, &[pattern]);
            for value in [
                "tel:+1-900-555-0101",
                "sip:+19005550101@carrier.example;user=phone",
                "＋１９００５５５０１０１",
            ] {
                assert!(m.is_match(&normalize_number(value)), "{pattern} {value}");
            }
            assert!(!m.is_match(&normalize_number("sip:alice@example.com")));
        }
        let raw = matcher(MatchField::To, &["sip:*@example.com"]);
        assert!(raw.is_match(&normalize_number("sip:alice@example.com")));
    }

    #[test]
    fn non_number_values_match_raw() {
        let m = matcher(MatchField::From, &["sip:*@example.com", "anonymous"]);
        assert!(m.is_match("sip:alice@example.com"));
        assert!(m.is_match("anonymous"));
        assert!(!m.is_match("sip:alice@example.org"));
    }

    #[test]
    fn star_matches_the_empty_value() {
        let m = matcher(MatchField::CallerName, &["*"]);
        assert!(m.is_match(""));
        let m = matcher(MatchField::CallerName, &["?*"]);
        assert!(!m.is_match(""));
    }

    #[test]
    fn fast_paths_agree_with_the_glob_engine() {
        let values = [
            "",
            "1900",
            "19005551234",
            "44",
            "4420",
            "anonymous",
            "x*y",
            "1800",
        ];
        for pattern in [
            "*",
            "1900*",
            "+1900",
            "44*",
            "anonymous",
            "",
            "1?00*",
            "[14]*",
            "x\\*y",
        ] {
            let m = matcher(MatchField::To, &[pattern]);
            let glob = compile_glob(MatchField::To, pattern)
                .unwrap()
                .compile_matcher();
            for value in values {
                assert_eq!(
                    m.is_match(value),
                    glob.is_match(value),
                    "{pattern:?} vs {value:?}"
                );
            }
        }
    }

    #[test]
    fn bad_glob_reports_its_index() {
        let err = FieldMatcher::new(MatchField::To, vec!["1*".into(), "[12".into()]).unwrap_err();
        assert_eq!(err.index, 1);
        assert_eq!(err.pattern, "[12");
    }
}
