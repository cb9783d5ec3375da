//! Typed reads from a spanned TOML document that record a positioned
//! diagnostic for every problem instead of stopping at the first.

use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diagnostic::FileDiagnostics;

/// A spanned TOML table.
pub(crate) type Table<'i> = DeTable<'i>;
/// A spanned TOML value.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// A string with the span it was written at.
pub(crate) type SpannedString = (String, Range<usize>);

/// A value found under a key, with both spans.
pub(crate) struct Entry<'t, 'i> {
    /// Where the key is written.
    pub(crate) key_span: Range<usize>,
    /// The value.
    pub(crate) value: &'t Value<'i>,
}

impl Entry<'_, '_> {
    /// Where the value is written.
    pub(crate) fn span(&self) -> Range<usize> {
        self.value.span()
    }
}

/// Reads one file's tables, recording diagnostics as it goes.
pub(crate) struct Reader<'d> {
    /// Where diagnostics go.
    pub(crate) diags: &'d mut FileDiagnostics,
}

impl Reader<'_> {
    /// The entry for `key`, if present.
    pub(crate) fn entry<'t, 'i>(&self, table: &'t Table<'i>, key: &str) -> Option<Entry<'t, 'i>> {
        table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, value)| Entry {
                key_span: k.span(),
                value,
            })
    }

    /// Records an error for every key of `table` not in `known`, with a
    /// suggestion when one is close.
    pub(crate) fn unknown_keys(&mut self, table: &Table<'_>, known: &[&str]) {
        for (key, _) in table.iter() {
            let name: &str = key.get_ref();
            if !known.contains(&name) {
                let message = match suggest(name, known) {
                    Some(close) => format!("unknown key `{name}`, did you mean `{close}`?"),
                    None => format!("unknown key `{name}`"),
                };
                self.diags.error(key.span(), message);
            }
        }
    }

    fn wrong_type(&mut self, key: &str, expected: &str, value: &Value<'_>) {
        self.diags.error(
            value.span(),
            format!(
                "`{key}` must be {expected}, found {}",
                value.get_ref().type_str()
            ),
        );
    }

    /// A string value.
    pub(crate) fn string<'t>(
        &mut self,
        table: &'t Table<'_>,
        key: &str,
    ) -> Option<(&'t str, Range<usize>)> {
        let entry = self.entry(table, key)?;
        match entry.value.get_ref() {
            DeValue::String(s) => Some((s.as_ref(), entry.span())),
            _ => {
                self.wrong_type(key, "a string", entry.value);
                None
            }
        }
    }

    /// A boolean value.
    pub(crate) fn boolean(&mut self, table: &Table<'_>, key: &str) -> Option<bool> {
        let entry = self.entry(table, key)?;
        match entry.value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(key, "true or false", entry.value);
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub(crate) fn integer(
        &mut self,
        table: &Table<'_>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<(i64, Range<usize>)> {
        let entry = self.entry(table, key)?;
        let DeValue::Integer(raw) = entry.value.get_ref() else {
            self.wrong_type(key, "an integer", entry.value);
            return None;
        };
        let parsed = i64::from_str_radix(&raw.as_str().replace('_', ""), raw.radix()).ok();
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some((n, entry.span())),
            _ => {
                self.diags.error(
                    entry.span(),
                    format!("`{key}` must be between {min} and {max}"),
                );
                None
            }
        }
    }

    /// A humantime duration (`"90s"`, `"1h 30m"`).
    pub(crate) fn duration(
        &mut self,
        table: &Table<'_>,
        key: &str,
    ) -> Option<(Duration, Range<usize>)> {
        let (text, span) = self.string(table, key)?;
        match humantime::parse_duration(text.trim()) {
            Ok(duration) => Some((duration, span)),
            Err(err) => {
                self.diags.error(
                    span,
                    format!("`{key}`: bad duration `{text}`: {err} (use e.g. \"90s\", \"5m\", \"1h 30m\")"),
                );
                None
            }
        }
    }

    /// A sub-table (`[a.b]` or inline), with the span of its header or value.
    pub(crate) fn table<'t, 'i>(
        &mut self,
        table: &'t Table<'i>,
        key: &str,
    ) -> Option<(&'t Table<'i>, Range<usize>)> {
        let entry = self.entry(table, key)?;
        match entry.value.get_ref() {
            DeValue::Table(t) => Some((t, entry.span())),
            _ => {
                self.wrong_type(key, "a table", entry.value);
                None
            }
        }
    }

    /// An array of tables (`[[a.b]]`), each with its header span.
    pub(crate) fn tables<'t, 'i>(
        &mut self,
        table: &'t Table<'i>,
        key: &str,
    ) -> Vec<(&'t Table<'i>, Range<usize>)> {
        let Some(entry) = self.entry(table, key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = entry.value.get_ref() else {
            self.wrong_type(key, "an array of tables", entry.value);
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) => out.push((t, item.span())),
                _ => self.wrong_type(key, "an array of tables", item),
            }
        }
        out
    }

    /// A string or an array of strings, each with its span; `None` when absent
    /// or of the wrong type.
    pub(crate) fn strings(
        &mut self,
        table: &Table<'_>,
        key: &str,
    ) -> Option<(Vec<SpannedString>, Range<usize>)> {
        let entry = self.entry(table, key)?;
        match entry.value.get_ref() {
            DeValue::String(s) => Some((vec![(s.to_string(), entry.span())], entry.span())),
            DeValue::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.to_string(), item.span())),
                        _ => {
                            self.wrong_type(key, "a list of strings", item);
                            ok = false;
                        }
                    }
                }
                ok.then_some((out, entry.span()))
            }
            _ => {
                self.wrong_type(key, "a string or a list of strings", entry.value);
                None
            }
        }
    }
}

/// The closest known word to `word`, if it is close enough to be a typo.
pub(crate) fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (word.chars().count().div_ceil(3)).clamp(1, 3);
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous_diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous_diagonal + usize::from(ca != *cb);
            previous_diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("max_duraton", "max_duration"), 1);
    }

    #[test]
    fn suggestions_only_when_close() {
        let known = ["max_duration", "idle_timeout", "name"];
        assert_eq!(suggest("max_duraton", &known), Some("max_duration"));
        assert_eq!(suggest("nmae", &known), Some("name"));
        assert_eq!(suggest("colour", &known), None);
    }
}
