//! Policy files: every `[[rule]]` validated with positions and compiled into
//! [`Rule`]s.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use humantime::format_duration;

use super::diagnostic::FileDiagnostics;
use super::walk::{Reader, Table};
use crate::policy::{
    parse_cron, Action, FieldMatcher, GroupBy, HangupScope, Limit, Match, MatchField, MeasureFrom,
    Rule, Source, Warning, Window,
};

const RULE_KEYS: &[&str] = &[
    "name",
    "description",
    "max_duration",
    "idle_timeout",
    "max_concurrent",
    "group_by",
    "measure_from",
    "priority",
    "match",
    "unless",
    "window",
    "action",
];
const MATCH_KEYS: &[&str] = &[
    "direction",
    "to",
    "from",
    "status",
    "caller_name",
    "account",
];
const WINDOW_KEYS: &[&str] = &["cron", "duration", "timezone"];
const ACTION_KEYS: &[&str] = &[
    "hangup",
    "warn_before",
    "warn_text",
    "dry_run",
    "bypass_breaker",
];
const DIRECTIONS: &[&str] = &["inbound", "outbound"];
const STATUSES: &[&str] = &["queued", "ringing", "early-media", "in-progress"];
/// Statuses in which a call's observed state can still change.
const IDLE_STATUSES: &[&str] = &["queued", "ringing", "early-media"];

/// How far ahead window openings are examined for the period check.
const PERIOD_CHECK_DAYS: i64 = 400;

/// What one load has learnt so far, across all policy files: where the
/// first rule of each name was defined, and what is known of each distinct
/// schedule, so 10,000 rules sharing a cron search its openings once.
#[derive(Debug, Default)]
pub(crate) struct SeenNames {
    names: HashMap<String, (PathBuf, usize)>,
    schedules: HashMap<(String, Tz), Schedule>,
}

/// Facts about one (cron, time zone) pair, found at most once per load.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// It opens within the search horizon.
    fires: bool,
    /// [`Window::period_lower_bound`].
    lower_bound: Option<chrono::Duration>,
    /// [`Window::smallest_period`], searched only when the bound is not enough.
    smallest: Option<Option<chrono::Duration>>,
}

impl SeenNames {
    /// An empty record.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Where a rule named `name` was first defined.
    pub(crate) fn get(&self, name: &str) -> Option<&(PathBuf, usize)> {
        self.names.get(name)
    }

    /// Records where a rule named `name` is defined.
    pub(crate) fn insert(&mut self, name: String, at: (PathBuf, usize)) {
        self.names.insert(name, at);
    }

    /// Whether `window` fires at all (searched once per schedule).
    fn fires(&mut self, window: &Window, now: DateTime<Utc>) -> bool {
        self.schedule(window, now).fires
    }

    /// The smallest period of `window` when its duration might exceed it:
    /// `None` when the duration fits between any two openings.
    fn period_shorter_than_duration(
        &mut self,
        window: &Window,
        now: DateTime<Utc>,
    ) -> Option<chrono::Duration> {
        let duration = chrono::Duration::from_std(window.duration).ok()?;
        let schedule = self.schedule(window, now);
        match schedule.lower_bound {
            // Fewer than two openings in the span: nothing to compare.
            None => return None,
            Some(bound) if duration <= bound => return None,
            Some(_) => {}
        }
        let smallest = match schedule.smallest {
            Some(smallest) => smallest,
            None => {
                let smallest = window.smallest_period(now, PERIOD_CHECK_DAYS);
                if let Some(entry) = self.schedules.get_mut(&key(window)) {
                    entry.smallest = Some(smallest);
                }
                smallest
            }
        };
        smallest.filter(|period| duration > *period)
    }

    fn schedule(&mut self, window: &Window, now: DateTime<Utc>) -> Schedule {
        *self
            .schedules
            .entry(key(window))
            .or_insert_with(|| Schedule {
                fires: window.next_opening(now, true).is_some(),
                lower_bound: window.period_lower_bound(now, PERIOD_CHECK_DAYS),
                smallest: None,
            })
    }
}

/// Schedules are the same when their cron text (fields split by any white
/// space) and zone are.
fn key(window: &Window) -> (String, Tz) {
    let fields: Vec<&str> = window.cron_text.split_whitespace().collect();
    (fields.join(" "), window.timezone)
}

/// Validates and compiles the rules of one parsed policy file.
pub(crate) fn compile_rules(
    doc: &Table<'_>,
    diags: &mut FileDiagnostics,
    seen: &mut SeenNames,
    now: DateTime<Utc>,
) -> Vec<Rule> {
    let mut reader = Reader { diags };
    reader.unknown_keys(doc, &["rule"]);
    let mut rules = Vec::new();
    for (table, header) in reader.tables(doc, "rule") {
        if let Some(rule) = compile_rule(&mut reader, table, header, seen, now) {
            rules.push(rule);
        }
    }
    rules
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn compile_rule(
    r: &mut Reader<'_>,
    table: &Table<'_>,
    header: Range<usize>,
    seen: &mut SeenNames,
    now: DateTime<Utc>,
) -> Option<Rule> {
    let errors_before = r.diags.items.iter().filter(|d| d.is_error()).count();
    r.unknown_keys(table, RULE_KEYS);

    let name = match r.string(table, "name") {
        Some((name, span)) if is_valid_name(name) => {
            let line = r.diags.line_of(span.start);
            if let Some((file, first_line)) = seen.get(name) {
                r.diags.error(
                    span,
                    format!(
                        "duplicate rule name `{name}` (first defined at {}:{first_line})",
                        file.display()
                    ),
                );
            } else {
                seen.insert(name.to_owned(), (r.diags.file.clone(), line));
            }
            Some(name.to_owned())
        }
        Some((name, span)) => {
            r.diags.error(
                span,
                format!("invalid rule name `{name}`: use lower-case letters, digits and `-`"),
            );
            None
        }
        None => {
            if r.entry(table, "name").is_none() {
                r.diags.error(header.clone(), "rule has no `name`");
            }
            None
        }
    };
    let label = name.clone().unwrap_or_else(|| "?".into());
    let description = r
        .string(table, "description")
        .map(|(s, _)| s.to_owned())
        .unwrap_or_default();
    let priority = r
        .integer(table, "priority", i64::MIN, i64::MAX)
        .map_or(0, |(n, _)| n);

    let limit = compile_limit(r, table, &header, &label);
    let windows = compile_windows(r, table, seen, now);

    if let (Some(Limit::MaxDuration { limit, .. }), Some(entry)) =
        (limit, r.entry(table, "max_duration"))
    {
        if limit.is_zero() && windows.is_empty() && r.entry(table, "window").is_none() {
            r.diags.error(
                entry.span(),
                format!(
                    "rule `{label}`: `max_duration = \"0s\"` without a [[rule.window]] would hang up every matching call at once; use it only inside a maintenance window"
                ),
            );
        }
    }

    let matcher = match r.table(table, "match") {
        Some((t, _)) => compile_match(r, t),
        None => Some(Match::default()),
    };
    let unless = match r.table(table, "unless") {
        Some((t, _)) => compile_match(r, t).map(Some),
        None => Some(None),
    };

    if let (Some(Limit::IdleTimeout(_)), Some(entry), Some(m)) =
        (limit, r.entry(table, "idle_timeout"), matcher.as_ref())
    {
        let limited = m.field(MatchField::Status).is_some_and(|status| {
            !STATUSES
                .iter()
                .filter(|s| !IDLE_STATUSES.contains(s))
                .any(|s| status.is_match(s))
        });
        if !limited {
            r.diags.warning(
                entry.key_span,
                format!(
                    "idle rule `{label}` is not limited to ringing/queued/early-media calls; an answered call never changes state, so it would end `idle_timeout` after its last change (add `status = [\"ringing\", \"queued\"]` to [rule.match])"
                ),
            );
        }
    }

    let action = compile_action(r, table, limit, &label);

    let errors_after = r.diags.items.iter().filter(|d| d.is_error()).count();
    if errors_after > errors_before {
        return None;
    }
    Some(Rule {
        name: name?,
        description,
        limit: limit?,
        priority,
        matcher: matcher?,
        unless: unless?,
        windows,
        action: action?,
        source: Source {
            file: r.diags.file.clone(),
            line: r.diags.line_of(header.start),
        },
    })
}

fn compile_limit(
    r: &mut Reader<'_>,
    table: &Table<'_>,
    header: &Range<usize>,
    label: &str,
) -> Option<Limit> {
    const LIMITS: [&str; 3] = ["max_duration", "idle_timeout", "max_concurrent"];
    let mut given: Vec<(&str, Range<usize>)> = LIMITS
        .iter()
        .filter_map(|key| r.entry(table, key).map(|e| (*key, e.key_span)))
        .collect();
    given.sort_by_key(|(_, span)| span.start);
    let measure_from = match r.string(table, "measure_from") {
        Some(("answer", _)) | None => Some(MeasureFrom::Answer),
        Some(("start", _)) => Some(MeasureFrom::Start),
        Some((other, span)) => {
            r.diags.error(
                span,
                format!("`measure_from` must be \"answer\" or \"start\", found `{other}`"),
            );
            None
        }
    };
    let kind = match given.as_slice() {
        [] => {
            // A misspelt limit key is already reported as unknown, with a suggestion.
            let misspelt = table.iter().any(|(key, _)| {
                let key: &str = key.get_ref();
                !RULE_KEYS.contains(&key) && super::walk::suggest(key, &LIMITS).is_some()
            });
            if misspelt {
                return None;
            }
            r.diags.error(
                header.clone(),
                format!("rule `{label}` needs one limit: `max_duration`, `idle_timeout` or `max_concurrent`"),
            );
            return None;
        }
        [(kind, _)] => *kind,
        [(a, _), (b, span), ..] => {
            let (first, second) =
                if LIMITS.iter().position(|k| k == a) < LIMITS.iter().position(|k| k == b) {
                    (a, b)
                } else {
                    (b, a)
                };
            r.diags.error(
                span.clone(),
                format!("rule `{label}` has both `{first}` and `{second}`; give exactly one"),
            );
            return None;
        }
    };
    if kind != "max_concurrent" {
        if let Some(entry) = r.entry(table, "group_by") {
            r.diags.error(
                entry.key_span,
                format!(
                    "rule `{label}`: `group_by` applies to `max_concurrent` only, not `{kind}`"
                ),
            );
        }
    }
    if kind != "max_duration" {
        if let Some(entry) = r.entry(table, "measure_from") {
            r.diags.error(
                entry.key_span,
                format!(
                    "rule `{label}`: `measure_from` applies to `max_duration` only, not `{kind}`"
                ),
            );
        }
    }
    match kind {
        "max_duration" => {
            let (limit, _) = r.duration(table, "max_duration")?;
            Some(Limit::MaxDuration {
                limit,
                measure_from: measure_from?,
            })
        }
        "idle_timeout" => {
            let (limit, span) = r.duration(table, "idle_timeout")?;
            if limit.is_zero() {
                r.diags
                    .error(span, "`idle_timeout` must be longer than 0s".to_string());
                return None;
            }
            Some(Limit::IdleTimeout(limit))
        }
        _ => {
            let max = r.integer(table, "max_concurrent", 1, i64::from(u32::MAX));
            let group_by = match r.string(table, "group_by") {
                None | Some(("rule", _)) => Some(GroupBy::Rule),
                Some(("to", _)) => Some(GroupBy::To),
                Some(("from", _)) => Some(GroupBy::From),
                Some((other, span)) => {
                    r.diags.error(
                        span,
                        format!("`group_by` must be \"rule\", \"to\" or \"from\", found `{other}`"),
                    );
                    None
                }
            };
            let (max, _) = max?;
            Some(Limit::MaxConcurrent {
                max: u32::try_from(max).ok()?,
                group_by: group_by?,
            })
        }
    }
}

fn compile_match(r: &mut Reader<'_>, table: &Table<'_>) -> Option<Match> {
    r.unknown_keys(table, MATCH_KEYS);
    let mut fields = Vec::new();
    let mut ok = true;
    for key in MATCH_KEYS {
        let Some(field) = MatchField::from_key(key) else {
            continue;
        };
        let Some((patterns, span)) = r.strings(table, key) else {
            ok &= r.entry(table, key).is_none();
            continue;
        };
        if patterns.is_empty() {
            r.diags.error(
                span,
                format!("empty match list `{key}` matches nothing; remove it to match any value"),
            );
            ok = false;
            continue;
        }
        for (pattern, span) in &patterns {
            let known: &[&str] = match field {
                MatchField::Direction => DIRECTIONS,
                MatchField::Status => STATUSES,
                _ => &[],
            };
            let is_glob = pattern.contains(['*', '?', '[']);
            if !known.is_empty() && !is_glob && !known.contains(&pattern.as_str()) {
                let hint = super::walk::suggest(pattern, known)
                    .map(|s| format!(", did you mean `{s}`?"))
                    .unwrap_or_else(|| format!(" (one of: {})", known.join(", ")));
                r.diags
                    .error(span.clone(), format!("unknown {key} `{pattern}`{hint}"));
                ok = false;
            }
            if let Err(reason) = crate::policy::compile_glob(field, pattern) {
                r.diags.error(
                    span.clone(),
                    format!("bad glob `{pattern}` in `{key}`: {reason}"),
                );
                ok = false;
            }
        }
        if ok {
            let texts = patterns.into_iter().map(|(p, _)| p).collect();
            match FieldMatcher::new(field, texts) {
                Ok(m) => fields.push(m),
                Err(err) => {
                    r.diags.error(span, err.to_string());
                    ok = false;
                }
            }
        }
    }
    ok.then(|| Match::new(fields))
}

fn compile_windows(
    r: &mut Reader<'_>,
    table: &Table<'_>,
    seen: &mut SeenNames,
    now: DateTime<Utc>,
) -> Vec<Window> {
    let mut windows = Vec::new();
    for (w, header) in r.tables(table, "window") {
        r.unknown_keys(w, WINDOW_KEYS);
        let cron = match r.string(w, "cron") {
            Some((text, span)) => match parse_cron(text) {
                Ok(cron) => Some((text.to_owned(), cron, span)),
                Err(err) => {
                    r.diags.error(span, format!("bad cron `{text}`: {err}"));
                    None
                }
            },
            None => {
                if r.entry(w, "cron").is_none() {
                    r.diags.error(header.clone(), "window has no `cron`");
                }
                None
            }
        };
        let duration = match r.duration(w, "duration") {
            Some((d, span)) if d.is_zero() => {
                r.diags
                    .error(span, "window `duration` must be longer than 0s".to_string());
                None
            }
            Some(found) => Some(found),
            None => {
                if r.entry(w, "duration").is_none() {
                    r.diags.error(header.clone(), "window has no `duration`");
                }
                None
            }
        };
        let timezone = match r.string(w, "timezone") {
            None => Some(Tz::UTC),
            Some((name, span)) => match name.parse::<Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    r.diags
                        .error(span, format!("unknown time zone `{name}` (use an IANA name such as \"Europe/London\")"));
                    None
                }
            },
        };
        let (Some((text, cron, cron_span)), Some((duration, duration_span)), Some(tz)) =
            (cron, duration, timezone)
        else {
            continue;
        };
        let window = Window::new(&text, cron, duration, tz);
        if !seen.fires(&window, now) {
            r.diags.error(
                cron_span,
                format!(
                    "cron `{text}` never fires in the next {} days",
                    crate::policy::SEARCH_HORIZON.num_days()
                ),
            );
            continue;
        }
        if let Some(period) = seen.period_shorter_than_duration(&window, now) {
            let period_std = period.to_std().unwrap_or(Duration::ZERO);
            r.diags.error(
                duration_span,
                format!(
                    "window `duration` ({}) is longer than its period ({} between two openings of `{text}`)",
                    format_duration(duration),
                    format_duration(period_std)
                ),
            );
            continue;
        }
        windows.push(window);
    }
    windows
}

fn compile_action(
    r: &mut Reader<'_>,
    table: &Table<'_>,
    limit: Option<Limit>,
    label: &str,
) -> Option<Action> {
    let Some((t, _)) = r.table(table, "action") else {
        return (r.entry(table, "action").is_none()).then_some(Action {
            hangup: HangupScope::Call,
            warn: None,
            dry_run: false,
            bypass_breaker: false,
        });
    };
    r.unknown_keys(t, ACTION_KEYS);
    let hangup = match r.string(t, "hangup") {
        None => Some(HangupScope::Call),
        Some(("call", _)) => Some(HangupScope::Call),
        Some(("whole", _)) => Some(HangupScope::Whole),
        Some(("b-legs", _)) => Some(HangupScope::BLegs),
        Some((other, span)) => {
            r.diags.error(
                span,
                format!("`hangup` must be \"call\", \"whole\" or \"b-legs\", found `{other}`"),
            );
            None
        }
    };
    let before = r.duration(t, "warn_before");
    let text = r.string(t, "warn_text");
    let warn = match (before, text) {
        (None, None) => {
            // Both absent, or present with errors already reported.
            let broken = r.entry(t, "warn_before").is_some() || r.entry(t, "warn_text").is_some();
            if broken {
                return None;
            }
            Some(None)
        }
        (Some((_, span)), None) => {
            if r.entry(t, "warn_text").is_none() {
                r.diags.error(
                    span,
                    format!("rule `{label}`: `warn_before` needs a `warn_text` to speak"),
                );
            }
            None
        }
        (None, Some((_, span))) => {
            if r.entry(t, "warn_before").is_none() {
                r.diags.error(
                    span,
                    format!("rule `{label}`: `warn_text` needs a `warn_before`"),
                );
            }
            None
        }
        (Some((before, before_span)), Some((text, text_span))) => {
            let limit_duration = match limit {
                Some(Limit::MaxDuration { limit, .. }) | Some(Limit::IdleTimeout(limit)) => {
                    Some(limit)
                }
                Some(Limit::MaxConcurrent { .. }) | None => None,
            };
            if matches!(limit, Some(Limit::MaxConcurrent { .. })) {
                r.diags.error(
                    before_span,
                    format!("rule `{label}`: `warn_before` does not apply to `max_concurrent`: calls beyond the cap end at once"),
                );
                None
            } else if text.trim().is_empty() {
                r.diags.error(text_span, "`warn_text` is empty".to_string());
                None
            } else if let Some(limit) = limit_duration.filter(|l| before >= *l) {
                r.diags.error(
                    before_span,
                    format!(
                        "`warn_before` ({}) must be shorter than the rule's limit ({})",
                        format_duration(before),
                        format_duration(limit)
                    ),
                );
                None
            } else if before.is_zero() {
                r.diags.error(
                    before_span,
                    "`warn_before` must be longer than 0s".to_string(),
                );
                None
            } else {
                Some(Some(Warning {
                    before,
                    text: text.to_owned(),
                }))
            }
        }
    };
    let dry_run = r.boolean(t, "dry_run").unwrap_or(false);
    let bypass_breaker = r.boolean(t, "bypass_breaker").unwrap_or(false);
    Some(Action {
        hangup: hangup?,
        warn: warn?,
        dry_run,
        bypass_breaker,
    })
}

/// Every key a `[[rule]]` accepts, from the same lists the loader checks:
/// `name`, ..., and `match.KEY`, `unless.KEY`, `window.KEY`, `action.KEY`
/// (docs/policies.md names each; tests/docs.rs keeps the two in step).
pub fn policy_keys() -> Vec<String> {
    let mut keys: Vec<String> = RULE_KEYS.iter().map(|k| (*k).to_owned()).collect();
    for (table, list) in [
        ("match", MATCH_KEYS),
        ("unless", MATCH_KEYS),
        ("window", WINDOW_KEYS),
        ("action", ACTION_KEYS),
    ] {
        keys.extend(list.iter().map(|k| format!("{table}.{k}")));
    }
    keys
}

/// Whether `path` is named like a policy file in a directory listing (`*.toml`).
pub(crate) fn is_policy_name(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "toml")
}

#[cfg(test)]
mod tests {
    use crate::config::load_policy_files;
    use chrono::{DateTime, Utc};

    fn load(windows: &[(&str, &str)]) -> Result<usize, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for (i, (cron, duration)) in windows.iter().enumerate() {
            text.push_str(&format!(
                "[[rule]]\nname = \"w-{i}\"\nmax_duration = \"0s\"\n[[rule.window]]\ncron = \"{cron}\"\nduration = \"{duration}\"\ntimezone = \"Europe/London\"\n"
            ));
        }
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        let now = DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        load_policy_files(&[path], now)
            .map(|(policy, _)| policy.rules.len())
            .map_err(|diags| diags.iter().map(|d| d.message.clone()).collect())
    }

    #[test]
    fn the_period_check_is_exact_near_a_clock_change() {
        // 02:00 London: 23 h on the spring-forward day, so 23 h fits and
        // 23 h 30 m does not, whatever the cheap bound says.
        assert_eq!(load(&[("0 0 2 * * *", "23h")]), Ok(1));
        let err = load(&[("0 0 2 * * *", "23h 30m")]).unwrap_err();
        assert!(err[0].contains("longer than its period (23h "), "{err:?}");
        // 01:30 falls in the gap and opens at its end: 23 h 30 m apart.
        assert_eq!(load(&[("0 30 1 * * *", "23h 30m")]), Ok(1));
    }

    #[test]
    fn rules_sharing_a_schedule_get_the_same_verdict() {
        let many: Vec<(&str, &str)> = (0..50)
            .map(|i| {
                if i % 2 == 0 {
                    ("0 0 2 * * *", "1h")
                } else {
                    ("0  0 2 * * *", "25h")
                }
            })
            .collect();
        let err = load(&many).unwrap_err();
        assert_eq!(err.len(), 25, "{err:?}");
    }
}
