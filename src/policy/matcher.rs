//! Compiling validated rules: `[rule.match]` / `[rule.unless]` matchers.

/// One field a rule can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchField {
    /// `direction`.
    Direction,
}

/// A compiled matcher for one field.
#[derive(Debug, Clone)]
pub struct FieldMatcher;

/// A compiled `[rule.match]` or `[rule.unless]` table.
#[derive(Debug, Clone, Default)]
pub struct Match;

impl Match {
    /// Whether the `status` list names `word`.
    pub fn names_status(&self, _word: &str) -> bool {
        false
    }
}
