//! Loading `callwarden.toml` and its policy files into a [`Config`], with
//! every problem reported as a positioned [`Diagnostic`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use toml::de::DeTable;

use super::diagnostic::{CheckReport, Diagnostic, Diagnostics, FileDiagnostics, Severity};
use super::rules::{compile_rules, is_policy_name, SeenNames};
use super::walk::{Reader, Table};
use super::{
    Account, ApiSettings, Config, EnforceSettings, HaSettings, HttpSettings, LogFormat,
    RetrySettings, SafetySettings,
};
use crate::call::{number_digits, NumberDigits};
use crate::policy::{Policy, Rule};
use crate::vobiz::Secret;

/// The default `[api] base_url`.
pub const DEFAULT_BASE_URL: &str = "https://api.vobiz.ai/api/v1";
/// The default `[safety] protected_numbers`.
pub const DEFAULT_PROTECTED_NUMBERS: &[&str] =
    &["911", "112", "999", "000", "100", "101", "102", "108"];
/// The default `[state] dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/callwarden";
/// The default `[ha] lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);
/// The default `[ha] renew_every`.
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(2);
/// The default `[http] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9469";
/// The systemd credential holding the token of the single `default` account.
pub const CREDENTIAL_NAME: &str = "vobiz-auth-token";

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
fn keys_in(section: &str) -> Vec<&'static str> {
    CONFIG_KEYS
        .iter()
        .filter_map(|k| k.split_once('.'))
        .filter(|(s, _)| *s == section)
        .map(|(_, key)| key)
        .collect()
}

/// The keys and sections [`CONFIG_KEYS`] allows at the top level.
fn top_level_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = Vec::new();
    for key in CONFIG_KEYS {
        let top = key.split_once('.').map_or(*key, |(section, _)| section);
        if !keys.contains(&top) {
            keys.push(top);
        }
    }
    keys
}

/// The process environment callwarden reads; tests build their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// `VOBIZ_AUTH_ID`: overrides `[api] auth_id` of the `default` account.
    pub auth_id: Option<String>,
    /// `VOBIZ_AUTH_TOKEN`: the `default` account's token, before any file.
    pub auth_token: Option<String>,
    /// `VOBIZ_BASE_URL`: overrides `[api] base_url`.
    pub base_url: Option<String>,
    /// `CREDENTIALS_DIRECTORY`: systemd credentials (`vobiz-auth-token[-NAME]`).
    pub credentials_directory: Option<PathBuf>,
    /// `STATE_DIRECTORY`: wins over `[state] dir`.
    pub state_directory: Option<PathBuf>,
}

impl Environment {
    /// Reads the variables of the running process (empty values count as unset).
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            auth_id: var("VOBIZ_AUTH_ID"),
            auth_token: var("VOBIZ_AUTH_TOKEN"),
            base_url: var("VOBIZ_BASE_URL"),
            credentials_directory: var("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            // systemd may list several directories separated by ':'; ours is the first.
            state_directory: var("STATE_DIRECTORY")
                .and_then(|v| v.split(':').next().map(PathBuf::from)),
        }
    }
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

/// Largest config or policy file read (64 MiB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads a file as UTF-8 text, or says why it cannot be used.
fn read_text(path: &Path) -> Result<String, Diagnostic> {
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
fn readable_by_others(path: &Path) -> Option<Diagnostic> {
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
fn load_policy_file(
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
        });
    }
    outcome
}

/// Every global setting of the config file.
struct Settings {
    api: ApiSettings,
    poll_interval: Duration,
    enforce: EnforceSettings,
    retry: RetrySettings,
    safety: SafetySettings,
    state_dir: PathBuf,
    http: HttpSettings,
    log_format: LogFormat,
}

/// An account before its policy is compiled.
struct RawAccount {
    name: String,
    auth_id: String,
    token: Option<Secret>,
    policies: Option<Vec<PathBuf>>,
}

/// A sub-table of the document, or an empty one when absent.
fn section<'t, 'i>(
    r: &mut Reader<'_>,
    doc: &'t Table<'i>,
    key: &str,
    known: &[&str],
) -> Option<&'t Table<'i>> {
    let (table, _) = r.table(doc, key)?;
    r.unknown_keys(table, known);
    Some(table)
}

/// A positive duration with a default.
fn duration_or(
    r: &mut Reader<'_>,
    table: Option<&Table<'_>>,
    key: &str,
    default: Duration,
    allow_zero: bool,
) -> Duration {
    let Some(table) = table else {
        return default;
    };
    match r.duration(table, key) {
        Some((d, span)) if d.is_zero() && !allow_zero => {
            r.diags
                .error(span, format!("`{key}` must be longer than 0s"));
            default
        }
        Some((d, _)) => d,
        None => default,
    }
}

fn integer_or(
    r: &mut Reader<'_>,
    table: Option<&Table<'_>>,
    key: &str,
    default: i64,
    min: i64,
    max: i64,
) -> i64 {
    table
        .and_then(|t| r.integer(t, key, min, max))
        .map_or(default, |(n, _)| n)
}

fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

fn read_settings(
    doc: &Table<'_>,
    diags: &mut FileDiagnostics,
    env: &Environment,
    base_dir: &Path,
    extra: &mut Vec<Diagnostic>,
) -> Option<Settings> {
    let mut r = Reader { diags };
    r.unknown_keys(doc, &top_level_keys());
    let errors_before = r.diags.items.iter().filter(|d| d.is_error()).count();

    let api = section(&mut r, doc, "api", &keys_in("api"));
    let base_url = match (&env.base_url, api.and_then(|t| r.string(t, "base_url"))) {
        (Some(url), _) => {
            if !is_http_url(url) {
                r.diags.error(
                    0..0,
                    format!("VOBIZ_BASE_URL `{url}` is not an http:// or https:// URL"),
                );
            }
            url.clone()
        }
        (None, Some((url, span))) => {
            if !is_http_url(url) {
                r.diags.error(
                    span,
                    format!("`base_url` `{url}` is not an http:// or https:// URL"),
                );
            }
            url.to_owned()
        }
        (None, None) => DEFAULT_BASE_URL.to_owned(),
    };
    let timestamp_zone = match api.and_then(|t| r.string(t, "timestamp_zone")) {
        None => Tz::UTC,
        Some((name, span)) => name.parse::<Tz>().unwrap_or_else(|_| {
            r.diags.error(
                span,
                format!("unknown time zone `{name}` (use an IANA name such as \"UTC\" or \"Asia/Kolkata\")"),
            );
            Tz::UTC
        }),
    };
    let api_settings = ApiSettings {
        base_url: base_url.trim_end_matches('/').to_owned(),
        timeout: duration_or(&mut r, api, "timeout", Duration::from_secs(10), false),
        max_requests_per_second: integer_or(&mut r, api, "max_requests_per_second", 10, 1, 100_000)
            as u32,
        max_concurrent_requests: integer_or(&mut r, api, "max_concurrent_requests", 8, 1, 10_000)
            as usize,
        timestamp_zone,
    };

    let poll = section(&mut r, doc, "poll", &keys_in("poll"));
    let poll_interval = duration_or(&mut r, poll, "interval", Duration::from_secs(5), false);

    let enforce_t = section(&mut r, doc, "enforce", &keys_in("enforce"));
    let enforce = EnforceSettings {
        dry_run: enforce_t
            .and_then(|t| r.boolean(t, "dry_run"))
            .unwrap_or(false),
        grace: duration_or(&mut r, enforce_t, "grace", Duration::ZERO, true),
    };

    let retry_t = section(&mut r, doc, "retry", &keys_in("retry"));
    let retry = RetrySettings {
        max_attempts: integer_or(&mut r, retry_t, "max_attempts", 6, 1, 100) as u32,
        initial_backoff: duration_or(
            &mut r,
            retry_t,
            "initial_backoff",
            Duration::from_millis(500),
            false,
        ),
        max_backoff: duration_or(
            &mut r,
            retry_t,
            "max_backoff",
            Duration::from_secs(30),
            false,
        ),
    };
    if retry.initial_backoff > retry.max_backoff {
        if let Some(entry) = retry_t.and_then(|t| r.entry(t, "initial_backoff")) {
            r.diags.error(
                entry.span(),
                "`initial_backoff` must not be longer than `max_backoff`",
            );
        }
    }

    let safety_t = section(&mut r, doc, "safety", &keys_in("safety"));
    let protected_numbers = match safety_t.and_then(|t| r.strings(t, "protected_numbers")) {
        None => DEFAULT_PROTECTED_NUMBERS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        Some((list, span)) => {
            if list.is_empty() {
                r.diags.warning(
                    span,
                    "`protected_numbers` is empty: emergency numbers are not protected",
                );
            }
            let mut numbers = Vec::new();
            for (raw, span) in list {
                match number_digits(&raw) {
                    NumberDigits::Digits(digits) => numbers.push(digits),
                    NumberDigits::Doubtful | NumberDigits::NotNumber => r.diags.error(
                        span,
                        format!(
                            "protected number `{raw}` is not a phone number (digits, optional `+`)"
                        ),
                    ),
                }
            }
            numbers
        }
    };
    let safety = SafetySettings {
        protected_numbers,
        max_hangups_per_cycle: integer_or(
            &mut r,
            safety_t,
            "max_hangups_per_cycle",
            100,
            0,
            1_000_000,
        ) as usize,
        max_hangups_percent: integer_or(&mut r, safety_t, "max_hangups_percent", 50, 0, 100) as u32,
        breaker_min_live_calls: integer_or(
            &mut r,
            safety_t,
            "breaker_min_live_calls",
            20,
            0,
            1_000_000,
        ) as usize,
    };

    let state_t = section(&mut r, doc, "state", &keys_in("state"));
    let configured_state = state_t
        .and_then(|t| r.string(t, "dir"))
        .map(|(dir, _)| resolve(base_dir, dir));
    let state_dir = env
        .state_directory
        .clone()
        .or(configured_state)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));

    let http_t = section(&mut r, doc, "http", &keys_in("http"));
    let listen = match http_t.and_then(|t| r.string(t, "listen")) {
        None => DEFAULT_LISTEN.parse::<SocketAddr>().ok(),
        Some((text, _)) if text.trim().is_empty() => None,
        Some((text, span)) => match text.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                r.diags.error(
                    span,
                    format!("`listen` must be an address like \"127.0.0.1:9469\" (or \"\" to disable), found `{text}`"),
                );
                None
            }
        },
    };
    let api_token = http_t
        .and_then(|t| r.string(t, "api_token_file"))
        .and_then(|(path, span)| read_token_file(&resolve(base_dir, path), span, r.diags, extra));
    let http = HttpSettings {
        listen,
        allow_remote_pardon: http_t
            .and_then(|t| r.boolean(t, "allow_remote_pardon"))
            .unwrap_or(false),
        // At most 1,024, so the listener alone can never use up the
        // process's descriptors (the unit allows 4,096).
        max_connections: integer_or(&mut r, http_t, "max_connections", 64, 1, 1024) as usize,
        api_token,
    };

    let log_t = section(&mut r, doc, "log", &keys_in("log"));
    let log_format = match log_t.and_then(|t| r.string(t, "format")) {
        None | Some(("auto", _)) => LogFormat::Auto,
        Some(("json", _)) => LogFormat::Json,
        Some(("pretty", _)) => LogFormat::Pretty,
        Some((other, span)) => {
            r.diags.error(
                span,
                format!("`format` must be \"auto\", \"json\" or \"pretty\", found `{other}`"),
            );
            LogFormat::Auto
        }
    };

    // Parsed and validated so mistakes show up in `check`, then refused as
    // a whole: enforcement is not yet fenced by the lease, and a config that
    // asks for HA must not run as if it were.
    if let Some((ha_t, span)) = r.table(doc, "ha") {
        r.unknown_keys(ha_t, &keys_in("ha"));
        let _ = read_ha(&mut r, ha_t, base_dir, extra);
        r.diags.error(span, HA_UNAVAILABLE);
    }

    let errors_after = r.diags.items.iter().filter(|d| d.is_error()).count();
    (errors_after == errors_before).then_some(Settings {
        api: api_settings,
        poll_interval,
        enforce,
        retry,
        safety,
        state_dir,
        http,
        log_format,
    })
}

/// The error for any `[ha]` section while HA is not wired into enforcement.
pub const HA_UNAVAILABLE: &str = "`[ha]`: high availability is not available in this build (leases are not yet wired into enforcement); remove the section to run single-node, see docs/ha.md";

/// Reads and validates `[ha]`.
fn read_ha(
    r: &mut Reader<'_>,
    table: &Table<'_>,
    base_dir: &Path,
    extra: &mut Vec<Diagnostic>,
) -> HaSettings {
    let postgres_url = r
        .string(table, "postgres_url_file")
        .and_then(|(path, span)| {
            let path = resolve(base_dir, path);
            let url = match read_secret(&path) {
                Ok(url) => url,
                Err(message) => {
                    r.diags
                        .error(span, message.replace("token file", "PostgreSQL URL file"));
                    return None;
                }
            };
            extra.extend(readable_by_others(&path));
            // The contents are never shown: the URL may hold a password.
            if url.expose().parse::<tokio_postgres::Config>().is_err() {
                r.diags.error(
                    span,
                    format!(
                        "`postgres_url_file` `{}` does not hold a valid PostgreSQL URL (contents not shown)",
                        path.display()
                    ),
                );
                return None;
            }
            Some(url)
        });
    let node_id = match r.string(table, "node_id") {
        None => None,
        Some((id, span)) => {
            if !valid_node_id(id) {
                r.diags.error(
                    span,
                    format!("`node_id` `{id}` must be 1 to 253 letters, digits, `.`, `-` or `_`"),
                );
            }
            Some(id.to_owned())
        }
    };
    let lease_ttl = duration_or(r, Some(table), "lease_ttl", DEFAULT_LEASE_TTL, false);
    let renew_every = duration_or(r, Some(table), "renew_every", DEFAULT_RENEW_EVERY, false);
    let fenced_after = lease_ttl.saturating_sub(crate::ha::fence::default_margin(lease_ttl));
    if renew_every >= fenced_after {
        let span = r
            .entry(table, "renew_every")
            .or_else(|| r.entry(table, "lease_ttl"))
            .map_or(0..0, |e| e.span());
        r.diags.error(
            span,
            format!(
                "`renew_every` ({}) must be shorter than `lease_ttl` ({}) minus its safety margin ({}), or the leader stops between renewals",
                humantime::format_duration(renew_every),
                humantime::format_duration(lease_ttl),
                humantime::format_duration(lease_ttl - fenced_after),
            ),
        );
    }
    HaSettings {
        postgres_url,
        node_id,
        lease_ttl,
        renew_every,
    }
}

/// Whether `id` is usable as a member name: hostname-like, no spaces.
fn valid_node_id(id: &str) -> bool {
    (1..=253).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn is_http_url(url: &str) -> bool {
    let url = url.trim();
    (url.starts_with("http://") && url.len() > 7) || (url.starts_with("https://") && url.len() > 8)
}

/// Reads a token file: trimmed content, errors at `span` in the config.
fn read_token_file(
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
fn read_secret(path: &Path) -> Result<Secret, String> {
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

/// A systemd credential, when present; a present but unusable one is an error.
fn read_credential(env: &Environment, name: &str, extra: &mut Vec<Diagnostic>) -> Option<Secret> {
    let path = env.credentials_directory.as_ref()?.join(name);
    if std::fs::symlink_metadata(&path).is_err() {
        return None;
    }
    match read_secret(&path) {
        Ok(token) => Some(token),
        Err(message) => {
            extra.push(Diagnostic::file_level(
                &path,
                Severity::Error,
                format!("credential `{name}`: {message}"),
            ));
            None
        }
    }
}

fn read_accounts(
    doc: &Table<'_>,
    diags: &mut FileDiagnostics,
    env: &Environment,
    base_dir: &Path,
    extra: &mut Vec<Diagnostic>,
) -> Vec<RawAccount> {
    let mut r = Reader { diags };
    let tables = r.tables(doc, "account");
    let api = r.table(doc, "api").map(|(t, _)| t);
    if tables.is_empty() {
        // Single account `default`: env, then [api], then credential.
        let configured = api.and_then(|t| r.string(t, "auth_id"));
        let auth_id = match (&env.auth_id, configured) {
            (Some(id), _) => id.clone(),
            (None, Some((id, span))) => {
                if id.trim().is_empty() {
                    r.diags.error(span, "`auth_id` is empty");
                }
                id.trim().to_owned()
            }
            (None, None) => {
                r.diags.error(
                    0..0,
                    "no auth id: set `auth_id` in [api] (or VOBIZ_AUTH_ID), or use [[account]] tables",
                );
                String::new()
            }
        };
        let file_token =
            api.and_then(|t| r.string(t, "auth_token_file"))
                .and_then(|(path, span)| {
                    read_token_file(&resolve(base_dir, path), span, r.diags, extra)
                });
        let token = env
            .auth_token
            .as_ref()
            .map(|t| Secret::new(t.trim()))
            .or(file_token)
            .or_else(|| read_credential(env, CREDENTIAL_NAME, extra));
        return vec![RawAccount {
            name: "default".into(),
            auth_id,
            token,
            policies: None,
        }];
    }

    if env.auth_id.is_some() || env.auth_token.is_some() {
        r.diags.warning(
            0..0,
            "VOBIZ_AUTH_ID / VOBIZ_AUTH_TOKEN are ignored with [[account]] tables (they apply to a single-account config only)",
        );
    }
    for key in ["auth_id", "auth_token_file"] {
        if let Some(entry) = api.and_then(|t| r.entry(t, key)) {
            r.diags.error(
                entry.key_span,
                format!(
                    "`[api] {key}` cannot be used with [[account]] tables; set it in each account"
                ),
            );
        }
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut accounts = Vec::new();
    for (table, header) in tables {
        r.unknown_keys(table, &keys_in("account"));
        let name = match r.string(table, "name") {
            Some((name, span)) => {
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                let line = r.diags.line_of(span.start);
                if !valid {
                    r.diags.error(
                        span,
                        format!(
                            "invalid account name `{name}`: use lower-case letters, digits and `-`"
                        ),
                    );
                } else if let Some(first) = names.get(name) {
                    r.diags.error(
                        span,
                        format!("duplicate account name `{name}` (first defined on line {first})"),
                    );
                } else {
                    names.insert(name.to_owned(), line);
                }
                name.to_owned()
            }
            None => {
                if r.entry(table, "name").is_none() {
                    r.diags.error(header.clone(), "account has no `name`");
                }
                String::new()
            }
        };
        let auth_id = match r.string(table, "auth_id") {
            Some((id, span)) => {
                if id.trim().is_empty() {
                    r.diags.error(span, "`auth_id` is empty");
                }
                id.trim().to_owned()
            }
            None => {
                if r.entry(table, "auth_id").is_none() {
                    r.diags
                        .error(header.clone(), format!("account `{name}` has no `auth_id`"));
                }
                String::new()
            }
        };
        let token = r
            .string(table, "auth_token_file")
            .and_then(|(path, span)| {
                read_token_file(&resolve(base_dir, path), span, r.diags, extra)
            })
            .or_else(|| read_credential(env, &format!("{CREDENTIAL_NAME}-{name}"), extra));
        let policies = r
            .entry(table, "policies")
            .is_some()
            .then(|| policy_paths(table, "policies", r.diags, base_dir));
        accounts.push(RawAccount {
            name,
            auth_id,
            token,
            policies,
        });
    }
    accounts
}

/// The policy files named by `key` (a directory of `*.toml` sorted by name,
/// or a list of files or directories); default `policies`.
fn policy_paths(
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
