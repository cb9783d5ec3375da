//! Reading files for the config: bounded UTF-8 text, permission warnings,
//! TOML with spans, token files, and the policy files a config names.

use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use toml::de::DeTable;

use super::diagnostic::{Diagnostic, Diagnostics, FileDiagnostics, Severity};
use super::rules::{compile_rules, is_policy_name, SeenNames};
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
    // Opening a FIFO blocks until a writer comes: look before opening.
    let meta = std::fs::metadata(path).map_err(cannot_read)?;
    if !meta.is_file() {
        return Err(Diagnostic::file_level(
            path,
            Severity::Error,
            format!(
                "cannot read file: it is {}, not a regular file",
                file_kind(&meta.file_type())
            ),
        ));
    }
    // Bounded, so a runaway file cannot exhaust memory.
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
    match read_secret(path) {
        Ok(token) => {
            extra.extend(readable_by_others(path));
            Some(token)
        }
        Err(message) => {
            diags.error(span, message);
            None
        }
    }
}

/// Longest token file or credential read: a token is a few dozen bytes, so
/// anything bigger is the wrong file (a log, a device, a key bundle).
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Reads a token file: a regular file of at most [`MAX_TOKEN_FILE_BYTES`],
/// UTF-8, not blank; trimmed. The error names the file.
pub(super) fn read_secret(path: &Path) -> Result<Secret, String> {
    use std::io::Read as _;
    let shown = path.display();
    let cannot_read = |err: std::io::Error| format!("cannot read token file `{shown}`: {err}");
    // Look before opening: opening a FIFO blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(cannot_read)?;
    if !meta.is_file() {
        return Err(format!(
            "token file `{shown}` is {}, not a regular file",
            file_kind(&meta.file_type())
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_TOKEN_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "token file `{shown}` is larger than {MAX_TOKEN_FILE_BYTES} bytes: not a token"
        ));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| format!("token file `{shown}` is not valid UTF-8"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("token file `{shown}` is empty"));
    }
    Ok(Secret::new(token))
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
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                paths.extend(policy_dir(&path, span, r.diags));
            }
            Ok(meta) if meta.is_file() => paths.push(path),
            Ok(meta) => r.diags.error(
                span,
                format!(
                    "policy path `{}` is {}, not a file or directory",
                    path.display(),
                    file_kind(&meta.file_type())
                ),
            ),
            Err(err) => r
                .diags
                .error(span, missing_path("policy path", &path, &err)),
        }
    }
    paths
}

/// The `*.toml` files of a policy directory, sorted by name. An entry whose
/// name ends in `.toml` but is not a regular file, after following
/// symlinks, is an error with its path: skipping it would drop its rules
/// without a word.
fn policy_dir(path: &Path, span: Range<usize>, diags: &mut FileDiagnostics) -> Vec<PathBuf> {
    let dir = match std::fs::read_dir(path) {
        Ok(dir) => dir,
        Err(err) => {
            diags.error(
                span,
                format!("cannot read policy directory `{}`: {err}", path.display()),
            );
            return Vec::new();
        }
    };
    let mut entries = Vec::new();
    for entry in dir {
        match entry {
            Ok(entry) => entries.push(entry.path()),
            Err(err) => diags.error(
                span.clone(),
                format!("cannot list policy directory `{}`: {err}", path.display()),
            ),
        }
    }
    entries.retain(|p| is_policy_name(p));
    entries.sort();
    let mut files = Vec::new();
    let mut bad = false;
    for entry in entries {
        // `metadata` follows symlinks and never opens the entry, so a FIFO
        // cannot block the load.
        match std::fs::metadata(&entry) {
            Ok(meta) if meta.is_file() => files.push(entry),
            Ok(meta) => {
                bad = true;
                diags.error(
                    span.clone(),
                    format!(
                        "policy file `{}` is {}, not a regular file",
                        entry.display(),
                        file_kind(&meta.file_type())
                    ),
                );
            }
            Err(err) => {
                bad = true;
                diags.error(span.clone(), missing_path("policy file", &entry, &err));
            }
        }
    }
    if files.is_empty() && !bad {
        diags.warning(
            span,
            format!(
                "policy directory `{}` holds no *.toml files",
                path.display()
            ),
        );
    }
    files
}

/// Why `path` could not be followed: missing, a dangling symlink, a loop.
fn missing_path(what: &str, path: &Path, err: &std::io::Error) -> String {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        if err.kind() == std::io::ErrorKind::NotFound {
            return format!("{what} `{}` does not exist", path.display());
        }
        return format!("cannot read {what} `{}`: {err}", path.display());
    }
    match std::fs::read_link(path) {
        Ok(target) if err.kind() == std::io::ErrorKind::NotFound => format!(
            "{what} `{}` is a dangling symlink (to `{}`)",
            path.display(),
            target.display()
        ),
        _ => format!(
            "{what} `{}` is a symlink that cannot be followed (a loop?): {err}",
            path.display()
        ),
    }
}

/// What kind of non-regular file `kind` is, for an error message.
pub(crate) fn file_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}
