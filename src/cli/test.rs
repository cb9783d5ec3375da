//! `callwarden test [PATH]`: runs the policy test cases against the
//! policies of the config, like `promtool test rules`. Prints every failure
//! as `FILE:LINE: FAIL case: expected ..., got ...`, then a summary.

use std::path::{Component, Path, PathBuf};

use crate::config::parse_cases;
use crate::config::{self, Config, Diagnostic, Environment, Severity};
use crate::policy::cases::{decide, Case, CaseSettings, Expected};

use super::{EXIT_ERROR, EXIT_OK, EXIT_USAGE};

/// Largest case file read (16 MiB).
const MAX_CASE_FILE_BYTES: u64 = 16 << 20;

/// Runs the cases in `path` (default: `tests/` beside each policy
/// directory); returns the exit code: 0 all pass, 1 a failure, 2 usage.
pub fn run(config_path: &Path, env: &Environment, path: Option<&Path>) -> u8 {
    let loaded = match config::load(config_path, env) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            for diagnostic in diagnostics.iter().filter(|d| d.is_error()) {
                println!("{diagnostic}");
            }
            println!("callwarden test: the config or policies have errors; run `callwarden check`");
            return EXIT_USAGE;
        }
    };
    let files = match case_files(path, &loaded.files) {
        Ok(files) => files,
        Err(message) => {
            println!("callwarden test: {message}");
            return EXIT_USAGE;
        }
    };
    let config = &loaded.config;
    let mut malformed = 0usize;
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        let cases = match read_cases(file) {
            Ok(cases) => cases,
            Err(diagnostics) => {
                malformed += 1;
                for diagnostic in diagnostics {
                    println!("{diagnostic}");
                }
                continue;
            }
        };
        let problems: Vec<Diagnostic> = cases
            .iter()
            .filter_map(|case| unknown_name(config, file, case))
            .collect();
        if !problems.is_empty() {
            malformed += 1;
            for diagnostic in problems {
                println!("{diagnostic}");
            }
            continue;
        }
        for case in &cases {
            let account = account_of(config, case);
            let policy = config.policy_of(account);
            let settings = CaseSettings {
                grace: config.enforce.grace,
                protected_numbers: &config.safety.protected_numbers,
            };
            let got = decide(&policy, case, account, &settings);
            if case.expected.accepts(&got) {
                passed += 1;
            } else {
                failed += 1;
                println!(
                    "{}:{}: FAIL {}: expected {}, got {}",
                    file.display(),
                    case.line,
                    one_line(&case.name),
                    case.expected,
                    got
                );
            }
        }
    }
    println!("{}", summary(files.len(), passed, failed, malformed));
    if malformed > 0 {
        EXIT_USAGE
    } else if failed > 0 {
        EXIT_ERROR
    } else {
        EXIT_OK
    }
}

/// `N cases in M files: all passed` or `...: K failed, J passed[, I files with errors]`.
fn summary(files: usize, passed: usize, failed: usize, malformed: usize) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut line = format!(
        "{} in {}: ",
        plural(passed + failed, "case"),
        plural(files, "file")
    );
    if failed == 0 && malformed == 0 {
        line.push_str("all passed");
    } else {
        line.push_str(&format!("{failed} failed, {passed} passed"));
    }
    if malformed > 0 {
        line.push_str(&format!(", {} with errors", plural(malformed, "file")));
    }
    line
}

/// Case names are file content: keep the one-line format one line.
fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// The account a case runs under: its `account`, else the first one.
fn account_of<'a>(config: &'a Config, case: &'a Case) -> &'a str {
    case.account
        .as_deref()
        .or_else(|| config.accounts.first().map(|a| a.name.as_str()))
        .unwrap_or("default")
}

/// An error when the case names an account or rule that does not exist.
fn unknown_name(config: &Config, file: &Path, case: &Case) -> Option<Diagnostic> {
    let error = |(line, col): (usize, usize), message: String| Diagnostic {
        file: file.to_path_buf(),
        line,
        col,
        severity: Severity::Error,
        message,
    };
    let account = account_of(config, case);
    if !config.accounts.iter().any(|a| a.name == account) {
        let known: Vec<&str> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        return Some(error(
            case.account_at,
            format!(
                "case `{}`: unknown account `{account}` (accounts: {})",
                case.name,
                known.join(", ")
            ),
        ));
    }
    let Expected::Rule { rule, .. } = &case.expected else {
        return None;
    };
    let policy = config.policy_of(account);
    if policy.rules.iter().any(|r| &r.name == rule) {
        return None;
    }
    Some(error(
        case.expected_at,
        format!(
            "case `{}`: no rule `{rule}` in the policies of account `{account}`",
            case.name
        ),
    ))
}

fn read_cases(file: &Path) -> Result<Vec<Case>, Vec<Diagnostic>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(file)
        .and_then(|f| f.take(MAX_CASE_FILE_BYTES + 1).read_to_end(&mut bytes));
    let problem = |message: String| vec![Diagnostic::file_level(file, Severity::Error, message)];
    if let Err(err) = read {
        return Err(problem(format!("cannot read file: {err}")));
    }
    if bytes.len() as u64 > MAX_CASE_FILE_BYTES {
        return Err(problem(format!(
            "file is larger than {} MiB",
            MAX_CASE_FILE_BYTES >> 20
        )));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| problem("file is not valid UTF-8".to_owned()))?;
    parse_cases(file, &text)
}

/// The case files to run: `path` (a file, or a directory of `*.toml`), or
/// the `tests/` directory beside each policy directory.
fn case_files(path: Option<&Path>, loaded: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let roots: Vec<PathBuf> = match path {
        Some(path) => vec![path.to_path_buf()],
        None => {
            let mut dirs: Vec<PathBuf> = loaded
                .iter()
                .skip(1) // the config file itself
                .filter_map(|p| p.parent().map(|d| shorter(&d.join("tests"))))
                .collect();
            dirs.sort();
            dirs.dedup();
            let found: Vec<PathBuf> = dirs.iter().filter(|d| d.is_dir()).cloned().collect();
            if found.is_empty() {
                let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                return Err(format!(
                    "no test cases: no tests/ directory beside the policies (looked for {}); give a PATH",
                    if looked.is_empty() { "none".to_owned() } else { looked.join(", ") }
                ));
            }
            found
        }
    };
    let mut files = Vec::new();
    for root in roots {
        if root.is_dir() {
            let entries = std::fs::read_dir(&root)
                .map_err(|err| format!("cannot read {}: {err}", root.display()))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(format!("no *.toml case files in {}", root.display()));
            }
            files.extend(found);
        } else if root.exists() {
            files.push(root);
        } else {
            return Err(format!("{} does not exist", root.display()));
        }
    }
    Ok(files)
}

/// `path` with `..` folded away when that names the same directory (not
/// so through a symlink), for shorter `FILE:LINE` output.
fn shorter(path: &Path) -> PathBuf {
    let tidied = tidy(path);
    match (std::fs::canonicalize(path), std::fs::canonicalize(&tidied)) {
        (Ok(a), Ok(b)) if a == b => tidied,
        _ => path.to_path_buf(),
    }
}

/// `examples/../policies/tests` -> `policies/tests`, without touching the disk.
fn tidy(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_folds_parent_components_lexically() {
        assert_eq!(
            tidy(Path::new("examples/../policies/tests")),
            Path::new("policies/tests")
        );
        assert_eq!(tidy(Path::new("../p/./tests")), Path::new("../p/tests"));
        assert_eq!(tidy(Path::new("/etc/x/../y")), Path::new("/etc/y"));
    }

    #[test]
    fn summary_lines() {
        assert_eq!(summary(2, 30, 0, 0), "30 cases in 2 files: all passed");
        assert_eq!(summary(1, 1, 1, 0), "2 cases in 1 file: 1 failed, 1 passed");
        assert_eq!(
            summary(2, 1, 0, 1),
            "1 case in 2 files: 0 failed, 1 passed, 1 file with errors"
        );
    }
}
