//! Diagnostics with exact positions (`FILE:LINE:COL: error: MESSAGE`) and
//! the report `callwarden check` prints.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The files cannot be used as they are.
    Error,
    /// Valid, but probably not what the operator meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in one file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as it was found (relative paths resolved against the config's directory).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in one line.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic about a whole file (line 1, column 1).
    pub fn file_level(file: &Path, severity: Severity, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 1,
            col: 1,
            severity,
            message: message.into(),
        }
    }

    /// Whether it is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: ",
            self.file.display(),
            self.line,
            self.col,
            self.severity,
        )?;
        // Messages quote file content: a newline would break the one-line
        // format scripts rely on, and escape sequences would reach the
        // operator's terminal.
        for c in self.message.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Every diagnostic of a load, errors and warnings, in file and position order.
pub type Diagnostics = Vec<Diagnostic>;

/// What `callwarden check` prints: every diagnostic, then one summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Every diagnostic, in file and position order.
    pub diagnostics: Diagnostics,
    /// Every file read: the config, then the policy files.
    pub files: Vec<PathBuf>,
    /// How many rules were found (distinct across accounts).
    pub rules: usize,
}

impl CheckReport {
    /// Whether there is no error (warnings allowed): exit code 0.
    pub fn is_ok(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// How many errors.
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// How many warnings.
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    /// The summary line: `N files, M rules: ok[, K warnings]` or
    /// `N files, M rules: K errors[, J warnings]`.
    pub fn summary(&self) -> String {
        let plural = |n: usize, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        let mut line = format!(
            "{}, {}: ",
            plural(self.files.len(), "file"),
            plural(self.rules, "rule")
        );
        if self.is_ok() {
            line.push_str("ok");
        } else {
            line.push_str(&plural(self.errors(), "error"));
        }
        if self.warnings() > 0 {
            line.push_str(", ");
            line.push_str(&plural(self.warnings(), "warning"));
        }
        line
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.diagnostics {
            writeln!(f, "{diagnostic}")?;
        }
        write!(f, "{}", self.summary())
    }
}

/// Turns byte offsets of one file into 1-based lines and columns.
#[derive(Debug, Clone)]
pub(crate) struct LineMap {
    starts: Vec<usize>,
    text: String,
}

impl LineMap {
    /// Indexes `text`.
    pub(crate) fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            starts,
            text: text.to_owned(),
        }
    }

    /// The 1-based line and character column of byte `offset`.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let start = self.starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |prefix| prefix.chars().count());
        (line, col + 1)
    }
}

/// Collects the diagnostics of one file.
#[derive(Debug)]
pub(crate) struct FileDiagnostics {
    /// The file.
    pub(crate) file: PathBuf,
    map: LineMap,
    /// Collected so far.
    pub(crate) items: Vec<Diagnostic>,
}

impl FileDiagnostics {
    /// Starts collecting for `file`, whose text is `text`.
    pub(crate) fn new(file: &Path, text: &str) -> Self {
        Self {
            file: file.to_path_buf(),
            map: LineMap::new(text),
            items: Vec::new(),
        }
    }

    /// The 1-based line and column of byte `offset`.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        self.map.position(offset)
    }

    /// The 1-based line of byte `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.map.position(offset).0
    }

    /// Records a diagnostic at the start of `span`.
    pub(crate) fn push(&mut self, span: Range<usize>, severity: Severity, message: String) {
        let (line, col) = self.map.position(span.start);
        self.items.push(Diagnostic {
            file: self.file.clone(),
            line,
            col,
            severity,
            message,
        });
    }

    /// Records an error at `span`.
    pub(crate) fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(span, Severity::Error, message.into());
    }

    /// Records a warning at `span`.
    pub(crate) fn warning(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(span, Severity::Warning, message.into());
    }

    /// Whether an error was recorded.
    pub(crate) fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics, in position order.
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|d| (d.line, d.col));
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_in_characters() {
        let map = LineMap::new("ab\nçd = 1\n");
        assert_eq!(map.position(0), (1, 1));
        assert_eq!(map.position(1), (1, 2));
        assert_eq!(map.position(3), (2, 1));
        assert_eq!(map.position(5), (2, 2)); // after the two-byte ç
        assert_eq!(map.position(100), (3, 1));
    }

    #[test]
    fn display_and_summary() {
        let d = Diagnostic {
            file: "p/a.toml".into(),
            line: 3,
            col: 7,
            severity: Severity::Error,
            message: "bad".into(),
        };
        assert_eq!(d.to_string(), "p/a.toml:3:7: error: bad");
        let mut report = CheckReport {
            diagnostics: vec![],
            files: vec!["a".into(), "b".into()],
            rules: 1,
        };
        assert_eq!(report.summary(), "2 files, 1 rule: ok");
        report.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            ..d.clone()
        });
        assert_eq!(report.summary(), "2 files, 1 rule: ok, 1 warning");
        report.diagnostics.push(d.clone());
        report.diagnostics.push(d);
        assert!(!report.is_ok());
        assert_eq!(report.summary(), "2 files, 1 rule: 2 errors, 1 warning");
        assert!(report
            .to_string()
            .starts_with("p/a.toml:3:7: warning: bad\n"));
    }
}
