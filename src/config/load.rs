//! Loading `callwarden.toml` and its policy files into a [`Config`], with
//! every problem reported as a positioned [`Diagnostic`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::accounts::read_accounts;
use super::diagnostic::{CheckReport, Diagnostic, Diagnostics, FileDiagnostics};
use super::environment::Environment;
use super::files::{load_policy_file, parse_toml, policy_paths, read_text, readable_by_others};
use super::rules::SeenNames;
use super::settings::read_settings;
use super::walk::Reader;
use super::{Account, Config};
use crate::policy::{Policy, Rule};

/// Every key `callwarden.toml` accepts: `key` at the top level, `section.key`
/// inside `[section]`, `account.key` inside `[[account]]` tables. The loader
/// rejects every other key from this one list, and docs/configuration.md
/// names exactly these (tests/docs.rs), so the two cannot drift apart.
pub const CONFIG_KEYS: &[&str] = &[
    "policies",
    "api.base_url",
    "api.auth_id",
    "api.auth_token_file",
    "api.timeout",
    "api.max_requests_per_second",
    "api.max_concurrent_requests",
    "api.timestamp_zone",
    "poll.interval",
    "enforce.dry_run",
    "enforce.grace",
    "retry.max_attempts",
    "retry.initial_backoff",
    "retry.max_backoff",
    "safety.protected_numbers",
    "safety.max_hangups_per_cycle",
    "safety.max_hangups_percent",
    "safety.breaker_min_live_calls",
    "state.dir",
    "http.listen",
    "http.allow_remote_pardon",
    "http.max_connections",
    "http.api_token_file",
    "log.format",
    "ha.postgres_url_file",
    "ha.node_id",
    "ha.lease_ttl",
    "ha.renew_every",
    "account.name",
    "account.auth_id",
    "account.auth_token_file",
    "account.policies",
];

/// The keys [`CONFIG_KEYS`] allows inside `section`.
pub(super) fn keys_in(section: &str) -> Vec<&'static str> {
    CONFIG_KEYS
        .iter()
        .filter_map(|k| k.split_once('.'))
        .filter(|(s, _)| *s == section)
        .map(|(_, key)| key)
        .collect()
}

/// The keys and sections [`CONFIG_KEYS`] allows at the top level.
pub(super) fn top_level_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = Vec::new();
    for key in CONFIG_KEYS {
        let top = key.split_once('.').map_or(*key, |(section, _)| section);
        if !keys.contains(&top) {
            keys.push(top);
        }
    }
    keys
}

/// A configuration that loaded without errors.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Warnings worth logging.
    pub warnings: Vec<Diagnostic>,
    /// Every file read: the config, then the policy files.
    pub files: Vec<PathBuf>,
}

/// Loads and validates the config at `config_path` and every policy file it
/// names; on any error returns every diagnostic (errors and warnings).
pub fn load(config_path: &Path, env: &Environment) -> Result<Loaded, Diagnostics> {
    let outcome = load_at(config_path, env, Utc::now());
    match outcome.config {
        Some(config) if !outcome.diagnostics.iter().any(Diagnostic::is_error) => Ok(Loaded {
            config,
            warnings: outcome.diagnostics,
            files: outcome.files,
        }),
        _ => Err(outcome.diagnostics),
    }
}

/// Validates everything `load` would, without needing a token or the API:
/// what `callwarden check` prints.
pub fn check(config_path: &Path, env: &Environment) -> CheckReport {
    let outcome = load_at(config_path, env, Utc::now());
    CheckReport {
        diagnostics: outcome.diagnostics,
        files: outcome.files,
        rules: outcome.rules,
    }
}

/// Loads standalone policy files into one [`Policy`] (for tools and tests):
/// the same validation as [`load`], names unique across the files.
/// On success the warnings come with the policy.
pub fn load_policy_files(
    paths: &[PathBuf],
    now: DateTime<Utc>,
) -> Result<(Policy, Diagnostics), Diagnostics> {
    let mut seen = SeenNames::new();
    let mut diagnostics = Vec::new();
    let mut rules = Vec::new();
    for path in paths {
        let (file_rules, _, diags) = load_policy_file(path, &mut seen, now);
        rules.extend(file_rules);
        diagnostics.extend(diags);
    }
    if diagnostics.iter().any(Diagnostic::is_error) {
        Err(diagnostics)
    } else {
        Ok((Policy::new(rules), diagnostics))
    }
}

/// Everything one load produced.
struct Outcome {
    config: Option<Config>,
    diagnostics: Diagnostics,
    files: Vec<PathBuf>,
    rules: usize,
}

fn load_at(config_path: &Path, env: &Environment, now: DateTime<Utc>) -> Outcome {
    let mut outcome = Outcome {
        config: None,
        diagnostics: Vec::new(),
        files: vec![config_path.to_path_buf()],
        rules: 0,
    };
    let text = match read_text(config_path) {
        Ok(text) => text,
        Err(diag) => {
            outcome.diagnostics.push(diag);
            return outcome;
        }
    };
    let mut diags = FileDiagnostics::new(config_path, &text);
    let Some(doc) = parse_toml(&text, &mut diags) else {
        outcome.diagnostics.extend(diags.finish());
        return outcome;
    };
    let base_dir = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut extra = Vec::new();
    if let Some(warning) = readable_by_others(config_path) {
        diags.warning(0..0, warning.message);
    }
    let settings = read_settings(&doc, &mut diags, env, &base_dir, &mut extra);
    let accounts = read_accounts(&doc, &mut diags, env, &base_dir, &mut extra);

    // Policy files: each read once, in order, names unique across all of them.
    let mut seen = SeenNames::new();
    let mut compiled: HashMap<PathBuf, Vec<Rule>> = HashMap::new();
    let mut policy_diags = Vec::new();
    let mut policy_for = |paths: &[PathBuf], outcome: &mut Outcome| -> Policy {
        let mut rules = Vec::new();
        for path in paths {
            if !compiled.contains_key(path) {
                let (file_rules, count, diags) = load_policy_file(path, &mut seen, now);
                outcome.files.push(path.clone());
                outcome.rules += count;
                policy_diags.extend(diags);
                compiled.insert(path.clone(), file_rules);
            }
            rules.extend(compiled.get(path).cloned().unwrap_or_default());
        }
        Policy::new(rules)
    };

    let needs_global = accounts.iter().any(|a| a.policies.is_none())
        || Reader { diags: &mut diags }
            .entry(&doc, "policies")
            .is_some();
    let global_paths = if needs_global {
        policy_paths(&doc, "policies", &mut diags, &base_dir)
    } else {
        Vec::new()
    };
    let global = Arc::new(policy_for(&global_paths, &mut outcome));
    let mut built = Vec::new();
    for account in accounts {
        let policy = match &account.policies {
            Some(paths) => Arc::new(policy_for(paths, &mut outcome)),
            None => Arc::clone(&global),
        };
        built.push(Account {
            name: account.name,
            auth_id: account.auth_id,
            token: account.token,
            policy,
        });
    }
    if outcome.rules == 0 && !diags.has_errors() && policy_diags.is_empty() {
        diags.warning(0..0, "no rules found: nothing will be enforced");
    }

    let config_has_errors = diags.has_errors();
    outcome.diagnostics.extend(diags.finish());
    outcome.diagnostics.extend(policy_diags);
    outcome.diagnostics.extend(extra);
    if config_has_errors || outcome.diagnostics.iter().any(Diagnostic::is_error) {
        return outcome;
    }
    if let Some(settings) = settings {
        outcome.config = Some(Config {
            source: config_path.to_path_buf(),
            accounts: built,
            api: settings.api,
            poll_interval: settings.poll_interval,
            enforce: settings.enforce,
            retry: settings.retry,
            safety: settings.safety,
            state_dir: settings.state_dir,
            http: settings.http,
            log_format: settings.log_format,
            ha: settings.ha,
        });
    }
    outcome
}
