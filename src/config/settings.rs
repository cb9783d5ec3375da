//! The global settings of the config file, one reader per section, each
//! starting from its section's [`Default`](super::sections).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;

use super::diagnostic::{Diagnostic, FileDiagnostics};
use super::environment::Environment;
use super::files::{read_token_file, resolve};
use super::load::{keys_in, top_level_keys};
use super::walk::{Reader, Table};
use super::{
    ApiSettings, EnforceSettings, HttpSettings, LogFormat, RetrySettings, SafetySettings,
    DEFAULT_POLL_INTERVAL, DEFAULT_STATE_DIR,
};
use crate::call::{number_digits, NumberDigits};

/// Every global setting of the config file.
pub(super) struct Settings {
    /// `[api]`.
    pub(super) api: ApiSettings,
    /// `[poll] interval`.
    pub(super) poll_interval: Duration,
    /// `[enforce]`.
    pub(super) enforce: EnforceSettings,
    /// `[retry]`.
    pub(super) retry: RetrySettings,
    /// `[safety]`.
    pub(super) safety: SafetySettings,
    /// `[state] dir`, or `$STATE_DIRECTORY`.
    pub(super) state_dir: PathBuf,
    /// `[http]`.
    pub(super) http: HttpSettings,
    /// `[log] format`.
    pub(super) log_format: LogFormat,
    /// `[ha]`, when present.
    pub(super) ha: Option<super::HaSettings>,
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
pub(super) fn duration_or(
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

/// An integer within `min..=max`, with a default.
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

/// Reads every section; `None` when any of them had an error.
pub(super) fn read_settings(
    doc: &Table<'_>,
    diags: &mut FileDiagnostics,
    env: &Environment,
    base_dir: &Path,
    extra: &mut Vec<Diagnostic>,
) -> Option<Settings> {
    let mut r = Reader { diags };
    r.unknown_keys(doc, &top_level_keys());
    let errors_before = r.diags.items.iter().filter(|d| d.is_error()).count();

    let api = read_api(&mut r, doc, env);
    let poll = section(&mut r, doc, "poll", &keys_in("poll"));
    let poll_interval = duration_or(&mut r, poll, "interval", DEFAULT_POLL_INTERVAL, false);
    let enforce = read_enforce(&mut r, doc);
    let retry = read_retry(&mut r, doc);
    let safety = read_safety(&mut r, doc);

    let state_t = section(&mut r, doc, "state", &keys_in("state"));
    let configured_state = state_t
        .and_then(|t| r.string(t, "dir"))
        .map(|(dir, _)| resolve(base_dir, dir));
    let state_dir = env
        .state_directory
        .clone()
        .or(configured_state)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));

    let http = read_http(&mut r, doc, base_dir, extra);
    let log_format = read_log(&mut r, doc);
    let ha = super::ha::check_ha(&mut r, doc, base_dir, env, extra);

    let errors_after = r.diags.items.iter().filter(|d| d.is_error()).count();
    (errors_after == errors_before).then_some(Settings {
        api,
        poll_interval,
        enforce,
        retry,
        safety,
        state_dir,
        http,
        log_format,
        ha,
    })
}

/// `[api]`, with `VOBIZ_BASE_URL` winning over `base_url`.
fn read_api(r: &mut Reader<'_>, doc: &Table<'_>, env: &Environment) -> ApiSettings {
    let default = ApiSettings::default();
    let api = section(r, doc, "api", &keys_in("api"));
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
        (None, None) => default.base_url,
    };
    let timestamp_zone = match api.and_then(|t| r.string(t, "timestamp_zone")) {
        None => default.timestamp_zone,
        Some((name, span)) => name.parse::<Tz>().unwrap_or_else(|_| {
            r.diags.error(
                span,
                format!("unknown time zone `{name}` (use an IANA name such as \"UTC\" or \"Asia/Kolkata\")"),
            );
            default.timestamp_zone
        }),
    };
    ApiSettings {
        base_url: base_url.trim_end_matches('/').to_owned(),
        timeout: duration_or(r, api, "timeout", default.timeout, false),
        max_requests_per_second: integer_or(
            r,
            api,
            "max_requests_per_second",
            i64::from(default.max_requests_per_second),
            1,
            100_000,
        ) as u32,
        max_concurrent_requests: integer_or(
            r,
            api,
            "max_concurrent_requests",
            default.max_concurrent_requests as i64,
            1,
            10_000,
        ) as usize,
        timestamp_zone,
    }
}

/// `[enforce]`.
fn read_enforce(r: &mut Reader<'_>, doc: &Table<'_>) -> EnforceSettings {
    let default = EnforceSettings::default();
    let enforce_t = section(r, doc, "enforce", &keys_in("enforce"));
    EnforceSettings {
        dry_run: enforce_t
            .and_then(|t| r.boolean(t, "dry_run"))
            .unwrap_or(default.dry_run),
        grace: duration_or(r, enforce_t, "grace", default.grace, true),
    }
}

/// `[retry]`; the first backoff may not exceed the cap.
fn read_retry(r: &mut Reader<'_>, doc: &Table<'_>) -> RetrySettings {
    let default = RetrySettings::default();
    let retry_t = section(r, doc, "retry", &keys_in("retry"));
    let retry = RetrySettings {
        max_attempts: integer_or(
            r,
            retry_t,
            "max_attempts",
            i64::from(default.max_attempts),
            1,
            100,
        ) as u32,
        initial_backoff: duration_or(
            r,
            retry_t,
            "initial_backoff",
            default.initial_backoff,
            false,
        ),
        max_backoff: duration_or(r, retry_t, "max_backoff", default.max_backoff, false),
    };
    if retry.initial_backoff > retry.max_backoff {
        if let Some(entry) = retry_t.and_then(|t| r.entry(t, "initial_backoff")) {
            r.diags.error(
                entry.span(),
                "`initial_backoff` must not be longer than `max_backoff`",
            );
        }
    }
    retry
}

/// `[safety]`: protected numbers normalized to digits, the breaker's limits.
fn read_safety(r: &mut Reader<'_>, doc: &Table<'_>) -> SafetySettings {
    let default = SafetySettings::default();
    let safety_t = section(r, doc, "safety", &keys_in("safety"));
    let protected_numbers = match safety_t.and_then(|t| r.strings(t, "protected_numbers")) {
        None => default.protected_numbers,
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
    SafetySettings {
        protected_numbers,
        max_hangups_per_cycle: integer_or(
            r,
            safety_t,
            "max_hangups_per_cycle",
            default.max_hangups_per_cycle as i64,
            0,
            1_000_000,
        ) as usize,
        max_hangups_percent: integer_or(
            r,
            safety_t,
            "max_hangups_percent",
            i64::from(default.max_hangups_percent),
            0,
            100,
        ) as u32,
        breaker_min_live_calls: integer_or(
            r,
            safety_t,
            "breaker_min_live_calls",
            default.breaker_min_live_calls as i64,
            0,
            1_000_000,
        ) as usize,
    }
}

/// `[http]`: the listener (`""` disables it) and the bearer token file.
fn read_http(
    r: &mut Reader<'_>,
    doc: &Table<'_>,
    base_dir: &Path,
    extra: &mut Vec<Diagnostic>,
) -> HttpSettings {
    let default = HttpSettings::default();
    let http_t = section(r, doc, "http", &keys_in("http"));
    let listen = match http_t.and_then(|t| r.string(t, "listen")) {
        None => default.listen,
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
    HttpSettings {
        listen,
        allow_remote_pardon: http_t
            .and_then(|t| r.boolean(t, "allow_remote_pardon"))
            .unwrap_or(default.allow_remote_pardon),
        // At most 1,024, so the listener alone can never use up the
        // process's descriptors (the unit allows 4,096).
        max_connections: integer_or(
            r,
            http_t,
            "max_connections",
            default.max_connections as i64,
            1,
            1024,
        ) as usize,
        api_token,
    }
}

/// `[log] format`.
fn read_log(r: &mut Reader<'_>, doc: &Table<'_>) -> LogFormat {
    let log_t = section(r, doc, "log", &keys_in("log"));
    match log_t.and_then(|t| r.string(t, "format")) {
        None | Some(("auto", _)) => LogFormat::Auto,
        Some(("json", _)) => LogFormat::Json,
        Some(("pretty", _)) => LogFormat::Pretty,
        Some((other, span)) => {
            r.diags.error(
                span,
                format!("`format` must be \"auto\", \"json\" or \"pretty\", found `{other}`"),
            );
            LogFormat::default()
        }
    }
}

fn is_http_url(url: &str) -> bool {
    let url = url.trim();
    (url.starts_with("http://") && url.len() > 7) || (url.starts_with("https://") && url.len() > 8)
}
