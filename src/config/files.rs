//! Reading files for the config: bounded UTF-8 text, permission warnings,
//! TOML with spans, token files, and the policy files a config names.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use toml::de::DeTable;

use super::diagnostic::{Diagnostic, Diagnostics, FileDiagnostics, Severity};
use super::rules::{compile_rules, is_policy_file, SeenNames};
use super::walk::{Reader, Table};
use crate::policy::Rule;
use crate::vobiz::Secret;

/// Largest config or policy file read (64 MiB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads a file as UTF-8 text, or says why it cannot be used.
pub(super) fn read_text(path: &Path) -> Result<String, Diagnostic> {
    use std::io::Read as _;
    let cannot_read = |err: std::io::Error| {
        Diagnostic::file_level(path, Severity::Error, format!("cannot read file: {err}"))
    };
    // Bounded, so a path to /dev/zero or a runaway file cannot exhaust memory.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Diagnostic::file_level(
            path,
            Severity::Error,
            format!("file is larger than {} MiB", MAX_FILE_BYTES >> 20),
        ));
    }
    String::from_utf8(bytes).map_err(|err| {
        let offset = err.utf8_error().valid_up_to();
        // The prefix before the bad byte is valid: point at the byte itself.
        let valid = String::from_utf8_lossy(&err.as_bytes()[..offset]);
        let line = valid.matches('\n').count() + 1;
        let col = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Diagnostic {
            line,
            col,
            ..Diagnostic::file_level(
                path,
                Severity::Error,
                format!("file is not valid UTF-8 (first bad byte at offset {offset})"),
            )
        }
    })
}

/// A warning when `path` is readable by other users.
pub(super) fn readable_by_others(path: &Path) -> Option<Diagnostic> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o004 != 0).then(|| {
            Diagnostic::file_level(
                path,
                Severity::Warning,
                format!(
                    "file is readable by other users (mode {:04o}); run `chmod o-r` on it",
                    mode & 0o7777
                ),
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Parses `text` into a spanned table, recording syntax errors.
pub(crate) fn parse_toml<'i>(text: &'i str, diags: &mut FileDiagnostics) -> Option<DeTable<'i>> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    for err in &errors {
        let span = err.span().unwrap_or(0..0);
        diags.error(span, err.message().trim().to_owned());
    }
    // A document that did not parse is not validated further: the recovered
    // parts would only produce confusing follow-on errors.
    errors.is_empty().then(|| doc.into_inner())
}

/// Reads, parses and compiles one policy file: (rules, `[[rule]]` count, diagnostics).
pub(super) fn load_policy_file(
    path: &Path,
    seen: &mut SeenNames,
    now: DateTime<Utc>,
) -> (Vec<Rule>, usize, Diagnostics) {
    let text = match read_text(path) {
        Ok(text) => text,
        Err(diag) => return (Vec::new(), 0, vec![diag]),
    };
    let mut diags = FileDiagnostics::new(path, &text);
    let Some(doc) = parse_toml(&text, &mut diags) else {
        return (Vec::new(), 0, diags.finish());
    };
    let count = doc
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == "rule")
        .and_then(|(_, v)| v.get_ref().as_array().map(|a| a.len()))
        .unwrap_or(0);
    let rules = compile_rules(&doc, &mut diags, seen, now);
    (rules, count, diags.finish())
}

/// `path` relative to the config file's directory, unless absolute.
pub(super) fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// Reads a token file: trimmed content, errors at `span` in the config.
pub(super) fn read_token_file(
    path: &Path,
    span: std::ops::Range<usize>,
    diags: &mut FileDiagnostics,
    extra: &mut Vec<Diagnostic>,
) -> Option<Secret> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => {
            diags.error(span, format!("token file `{}` is empty", path.display()));
            None
        }
        Ok(text) => {
            extra.extend(readable_by_others(path));
            Some(Secret::new(text.trim()))
        }
        Err(err) => {
            diags.error(
                span,
                format!("cannot read token file `{}`: {err}", path.display()),
            );
            None
        }
    }
}

/// The policy files named by `key` (a directory of `*.toml` sorted by name,
/// or a list of files or directories); default `policies`.
pub(super) fn policy_paths(
    table: &Table<'_>,
    key: &str,
    diags: &mut FileDiagnostics,
    base_dir: &Path,
) -> Vec<PathBuf> {
    let mut r = Reader { diags };
    let entries = match r.strings(table, key) {
        Some((list, _)) => list,
        None if r.entry(table, key).is_some() => return Vec::new(),
        None => vec![("policies".to_owned(), 0..0)],
    };
    let mut paths = Vec::new();
    for (raw, span) in entries {
        let path = resolve(base_dir, &raw);
        if path.is_dir() {
            match std::fs::read_dir(&path) {
                Ok(dir) => {
                    let mut files: Vec<PathBuf> = dir
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| is_policy_file(p))
                        .collect();
                    files.sort();
                    if files.is_empty() {
                        r.diags.warning(
                            span,
                            format!(
                                "policy directory `{}` holds no *.toml files",
                                path.display()
                            ),
                        );
                    }
                    paths.extend(files);
                }
                Err(err) => r.diags.error(
                    span,
                    format!("cannot read policy directory `{}`: {err}", path.display()),
                ),
            }
        } else if path.is_file() {
            paths.push(path);
        } else {
            r.diags.error(
                span,
                format!("policy path `{}` does not exist", path.display()),
            );
        }
    }
    paths
}
