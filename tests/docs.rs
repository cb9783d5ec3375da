//! The project's own documentation agrees with the code: every config key,
//! every linked page, and no pointer to files outside the repository.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use callwarden::config::CONFIG_KEYS;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|err| panic!("cannot read {relative}: {err}"))
}

/// The lines of the `## heading` section of a Markdown page.
fn section<'a>(page: &'a str, heading: &str) -> Vec<&'a str> {
    page.lines()
        .skip_while(|line| line.trim() != format!("## {heading}"))
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .collect()
}

/// The backticked names in the first cell of every table row in `lines`
/// (a cell may name several: `` `to`, `from` ``).
fn first_cells(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('|').next())
        .flat_map(|cell| {
            format!("`{cell}")
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn configuration_page_names_exactly_the_keys_the_loader_accepts() {
    let page = read("docs/configuration.md");
    let documented = first_cells(&section(&page, "Keys"));
    let accepted: BTreeSet<String> = CONFIG_KEYS.iter().map(|k| (*k).to_owned()).collect();
    let missing: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md is out of date: keys the loader accepts but the page \
         does not name: {missing:?}; keys the page names but the loader rejects: {unknown:?}"
    );
}

#[test]
fn the_commented_example_config_shows_every_key() {
    let example = read("examples/callwarden.toml");
    let mut missing = Vec::new();
    for key in CONFIG_KEYS {
        let (section, leaf) = key.split_once('.').unwrap_or(("", key));
        let header = match section {
            "" => String::new(),
            "account" => "[[account]]".to_owned(),
            other => format!("[{other}]"),
        };
        // The key, set or commented out, after its section's header.
        let after = example.find(&header).map_or("", |at| &example[at..]);
        let shown = after.lines().any(|line| {
            line.trim_start_matches(['#', ' '])
                .starts_with(&format!("{leaf} ="))
        });
        if !shown {
            missing.push(*key);
        }
    }
    assert!(
        missing.is_empty(),
        "examples/callwarden.toml does not show {missing:?}"
    );
}

#[test]
fn the_loader_accepts_every_documented_key_and_rejects_others() {
    // One config that sets every key of CONFIG_KEYS must pass the loader's
    // unknown-key check; a typo must not. Uses the real binary's `check`.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("policies")).expect("policies dir");
    std::fs::write(
        dir.path().join("policies/a.toml"),
        "[[rule]]\nname = \"a\"\nmax_duration = \"1h\"\n",
    )
    .expect("policy");
    std::fs::write(dir.path().join("token"), "t").expect("token");
    let single = |extra: &str| {
        format!(
            "policies = \"policies\"\n{extra}\n[api]\nbase_url = \"http://127.0.0.1:1/api/v1\"\n\
             auth_id = \"MA1\"\nauth_token_file = \"token\"\ntimeout = \"5s\"\n\
             max_requests_per_second = 5\nmax_concurrent_requests = 2\ntimestamp_zone = \"UTC\"\n\
             [poll]\ninterval = \"5s\"\n[enforce]\ndry_run = true\ngrace = \"1s\"\n\
             [retry]\nmax_attempts = 3\ninitial_backoff = \"1s\"\nmax_backoff = \"2s\"\n\
             [safety]\nprotected_numbers = [\"911\"]\nmax_hangups_per_cycle = 10\n\
             max_hangups_percent = 50\nbreaker_min_live_calls = 5\n\
             [state]\ndir = \"state\"\n[http]\nlisten = \"\"\nallow_remote_pardon = false\nmax_connections = 64\n\
             api_token_file = \"token\"\n\
             [log]\nformat = \"json\"\n"
        )
    };
    let check = |text: &str| {
        let path = dir.path().join("callwarden.toml");
        std::fs::write(&path, text).expect("config");
        std::process::Command::new(env!("CARGO_BIN_EXE_callwarden"))
            .arg("--config")
            .arg(&path)
            .arg("check")
            .env_remove("VOBIZ_AUTH_ID")
            .env_remove("VOBIZ_AUTH_TOKEN")
            .env_remove("VOBIZ_BASE_URL")
            .output()
            .expect("callwarden check runs")
    };
    let ok = check(&single(""));
    assert!(
        ok.status.success(),
        "every single-account key: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let accounts = "policies = \"policies\"\n[[account]]\nname = \"a\"\nauth_id = \"MA1\"\n\
                    auth_token_file = \"token\"\npolicies = [\"policies/a.toml\"]\n";
    let ok = check(accounts);
    assert!(
        ok.status.success(),
        "every account key: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // The single-account config above sets every key except account.* and
    // ha.* (a build without HA refuses `[ha]`; tests/ha_config.rs covers it).
    let set_above: BTreeSet<&str> = CONFIG_KEYS
        .iter()
        .copied()
        .filter(|k| !k.starts_with("account.") && !k.starts_with("ha."))
        .collect();
    for key in &set_above {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        assert!(
            single("").contains(&format!("{leaf} =")),
            "test config misses `{key}`: add it here"
        );
    }
    let typo = check(&single("polices = \"x\""));
    assert_eq!(typo.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&typo.stdout).contains("unknown key `polices`"));
}

/// Every Markdown page under docs/.
fn doc_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    pages
}

#[test]
fn readme_links_every_docs_page() {
    let readme = read("README.md");
    for page in doc_pages() {
        let name = page.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            readme.contains(&format!("(docs/{name})")),
            "README.md does not link docs/{name}"
        );
    }
}

#[test]
fn relative_links_in_docs_point_at_files_that_exist() {
    let mut pages = doc_pages();
    pages.push(root().join("README.md"));
    for page in pages {
        let text = std::fs::read_to_string(&page).expect("page");
        let dir = page.parent().expect("parent");
        for target in text.split("](").skip(1).filter_map(|s| s.split_once(')')) {
            let link = target.0.split('#').next().unwrap_or("");
            if link.is_empty() || link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            assert!(
                dir.join(link).exists(),
                "{}: link to `{link}` points at nothing",
                page.display()
            );
        }
    }
}

/// Source, tests and docs, recursively.
fn project_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            project_files(&path, out);
        } else if ["rs", "md", "toml", "service", "sh", "py"]
            .iter()
            .any(|ext| path.extension().is_some_and(|x| x == *ext))
        {
            out.push(path);
        }
    }
}

#[test]
fn nothing_points_outside_the_repository() {
    // Built from pieces so this file does not match itself.
    let banned = [
        format!("{}{}", "SPEC", " §"),
        format!("{}{}", "SPEC", ".md"),
        format!("{}{}", "vobiz-api", ".md"),
    ];
    let mut files = Vec::new();
    for dir in [
        "src",
        "tests",
        "docs",
        "benches",
        "bench",
        "examples",
        "systemd",
        "packaging",
        "policies",
    ] {
        project_files(&root().join(dir), &mut files);
    }
    for file in ["README.md", "BENCHMARKS.md", "Cargo.toml"] {
        files.push(root().join(file));
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for word in &banned {
                assert!(
                    !line.contains(word.as_str()),
                    "{}:{}: points at `{word}`, which is not part of the repository: {line}",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}

/// The fenced code blocks of `language` in a Markdown page, with the line
/// each starts on.
fn code_blocks(page: &str, language: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in page.lines().enumerate() {
        match current.as_mut() {
            None if line.trim() == format!("```{language}") => {
                current = Some((n + 2, String::new()))
            }
            None => {}
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    blocks
}

/// Runs `callwarden check` on a config whose only policy file is `policy`.
fn check_policy(policy: &str) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("callwarden.toml");
    let file = dir.path().join("example.toml");
    std::fs::write(&file, policy).expect("policy");
    std::fs::write(
        &config,
        "policies = [\"example.toml\"]\n[api]\nauth_id = \"MA1\"\n",
    )
    .expect("config");
    for path in [&config, &file] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    std::process::Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .arg("--config")
        .arg(&config)
        .arg("check")
        .env_remove("VOBIZ_AUTH_ID")
        .env_remove("VOBIZ_AUTH_TOKEN")
        .env_remove("VOBIZ_BASE_URL")
        .output()
        .expect("callwarden check runs")
}

#[test]
fn every_policy_example_in_the_docs_passes_check() {
    let mut checked = 0;
    for page in doc_pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        for (line, block) in code_blocks(&text, "toml") {
            if !block.contains("[[rule]]") {
                continue;
            }
            let output = check_policy(&block);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && !stdout.contains(": warning:"),
                "{}:{line}: the example is not a clean policy file:\n{stdout}{}",
                page.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} policy examples found");
}

/// The string literals inside the call that starts at `start` (just after
/// its opening parenthesis), unescaped, in order.
fn literals_of_call(text: &str, start: usize) -> Vec<String> {
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (1, start);
    let mut literals = Vec::new();
    while depth > 0 && i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let mut literal = String::new();
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' && i + 1 < bytes.len() {
                        i += 1;
                        match bytes[i] {
                            b'n' => literal.push(' '),
                            // A line continuation: skip the newline and indentation.
                            b'\n' => {
                                while i + 1 < bytes.len() && bytes[i + 1].is_ascii_whitespace() {
                                    i += 1;
                                }
                            }
                            other => literal.push(other as char),
                        }
                    } else {
                        let ch = text[i..].chars().next().unwrap_or(' ');
                        literal.push(ch);
                        i += ch.len_utf8() - 1;
                    }
                    i += 1;
                }
                literals.push(literal);
            }
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    literals
}

/// The fixed words of a format string: the parts between placeholders,
/// trimmed of spaces and punctuation, long enough to search for.
fn fixed_parts(message: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let (part, tail) = match rest.find('{') {
            Some(open) => {
                let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
                (&rest[..open], &rest[close..])
            }
            None => (rest, ""),
        };
        let part = part.trim_matches(|c: char| c.is_whitespace() || "`'\";:,.()".contains(c));
        if part.len() >= 6 {
            parts.push(part.to_owned());
        }
        rest = tail;
    }
    parts
}

/// `(file, line, message)` of every call of one of `macros` in `files`; the
/// message is the call's last string literal.
fn messages(files: &[PathBuf], macros: &[&str]) -> Vec<(String, usize, String)> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("source");
        for name in macros {
            for (at, _) in text.match_indices(name) {
                let before = text[..at].chars().next_back().unwrap_or(' ');
                if before.is_alphanumeric() || before == '_' {
                    continue;
                }
                let literals = literals_of_call(&text, at + name.len());
                if let Some(message) = literals.last() {
                    let line = text[..at].matches('\n').count() + 1;
                    let shown = file.strip_prefix(root()).unwrap_or(file);
                    found.push((shown.display().to_string(), line, message.clone()));
                }
            }
        }
    }
    found
}

#[test]
fn the_runbook_lists_every_error_and_warning() {
    let runbook = read("docs/operations.md");
    let mut sources = Vec::new();
    project_files(&root().join("src"), &mut sources);
    sources.retain(|p| p.extension().is_some_and(|x| x == "rs"));
    let mut all = messages(&sources, &["error!(", "warn!("]);
    // The daemon's fatal errors at start.
    all.extend(messages(
        &[
            root().join("src/daemon/mod.rs"),
            root().join("src/startup.rs"),
        ],
        &["bail!(", "context(", "with_context("],
    ));
    assert!(all.len() > 20, "found only {} messages", all.len());
    let missing: Vec<String> = all
        .iter()
        .flat_map(|(file, line, message)| {
            fixed_parts(message)
                .into_iter()
                .filter(|part| !runbook.contains(part.as_str()))
                .map(move |part| format!("{file}:{line}: {part:?}"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md does not list these messages (add each with what to do):\n{}",
        missing.join("\n")
    );

    // And the other way: every message the runbook lists for a running
    // daemon is one the source can still log.
    let source: String = sources
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("source"))
        .collect();
    let stale: Vec<String> = section(&runbook, "Messages and what to do")
        .iter()
        .filter(|line| line.starts_with("| ERROR |") || line.starts_with("| WARN |"))
        .filter_map(|line| line.split('|').nth(2))
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .flat_map(|quoted| quoted.split("..."))
                .map(|part| part.trim().to_owned())
                .filter(|part| part.len() >= 6 && !part.contains("FILE:LINE"))
                .collect::<Vec<_>>()
        })
        .filter(|part| !source.contains(part.as_str()))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/operations.md lists messages the source no longer logs: {stale:?}"
    );
}

/// Every `callwarden_*` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("callwarden_") {
        let before = text[..at].chars().next_back().unwrap_or(' ');
        if before.is_alphanumeric() || before == '_' {
            continue;
        }
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        names.insert(name.trim_end_matches('_').to_owned());
    }
    names
}

/// What a real daemon exports: the names of its samples, from the `# TYPE`
/// lines (so series with no sample yet count) as Prometheus stores them, and
/// the base names the `# TYPE` lines use.
fn exported_names(scrape: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut samples, mut families) = (BTreeSet::new(), BTreeSet::new());
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            families.insert(name.to_owned());
            match kind {
                "counter" => {
                    samples.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        samples.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    samples.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#') {
            let name: String = line
                .chars()
                .take_while(|c| *c != '{' && *c != ' ')
                .collect();
            if !name.is_empty() {
                samples.insert(name);
            }
        }
    }
    (samples, families)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_dashboard_and_metrics_page_use_only_metrics_the_daemon_exports() {
    use common::daemon::{Daemon, Knobs, Setup};
    let sim = common::default_sim();
    // One call to hang up and one protected call, so that the series that
    // appear with their first sample (hangups, decisions) exist too.
    common::add_calls(
        &sim,
        serde_json::json!([
            {"age_s": 60.0, "direction": "outbound", "from": "+14155550100", "to": "+19005550101"},
            {"age_s": 60.0, "direction": "outbound", "from": "911", "to": "+19005550102"},
        ]),
    )
    .await;
    let rule = "[[rule]]\nname = \"premium\"\nmax_duration = \"5s\"\nmeasure_from = \"start\"\n\
                [rule.match]\nto = [\"+1900*\"]\n";
    let setup = Setup::new(&sim, &[("rules.toml", rule)], Knobs::default());
    let daemon = Daemon::start(&setup).await;
    daemon.signal(libc::SIGHUP);
    let until = tokio::time::Instant::now() + common::daemon::LIMIT;
    let scrape = loop {
        let (code, body) = daemon.get("/metrics").await;
        assert_eq!(code, 200);
        let has = |name: &str| body.lines().any(|l| l.starts_with(name));
        if has("callwarden_last_successful_poll_timestamp_seconds{")
            && has("callwarden_hangups_total{")
            && has("callwarden_decisions_total{")
            && has("callwarden_config_reloads_total{")
        {
            break body;
        }
        assert!(tokio::time::Instant::now() < until, "no successful poll");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let (samples, families) = exported_names(&scrape);
    assert!(samples.contains("callwarden_hangups_total"), "{scrape}");

    let alerts = read("examples/prometheus/callwarden-alerts.yml");
    let dashboard_text = read("examples/grafana/callwarden-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("the dashboard is JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("every target has an expr");
            exprs.push_str(expr);
            exprs.push('\n');
        }
    }
    assert!(
        metric_names(&dashboard_text) == metric_names(&exprs),
        "the dashboard names metrics outside its queries"
    );
    let alert_count = alerts.matches("- alert: ").count();
    assert!(alert_count >= 8, "{alert_count} alerts");
    assert_eq!(alerts.matches("\n        expr: ").count(), alert_count);

    for (file, text) in [
        ("examples/prometheus/callwarden-alerts.yml", &alerts),
        ("examples/grafana/callwarden-dashboard.json", &exprs),
    ] {
        let used = metric_names(text);
        assert!(used.len() >= 8, "{file}: only {used:?}");
        let unknown: Vec<_> = used.difference(&samples).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the daemon does not export: {unknown:?}"
        );
    }

    // docs/metrics.md names every metric the daemon exports, and no other.
    let page = read("docs/metrics.md");
    let named = metric_names(&page);
    let unknown: Vec<_> = named
        .iter()
        .filter(|n| !samples.contains(*n) && !families.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/metrics.md names metrics the daemon does not export: {unknown:?}"
    );
    let undocumented: Vec<_> = families
        .iter()
        .filter(|family| !named.contains(*family) && !named.contains(&format!("{family}_total")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "docs/metrics.md does not document: {undocumented:?}"
    );
    drop(daemon);
}

#[test]
fn the_example_config_states_exactly_the_defaults() {
    use callwarden::config::{
        self, ApiSettings, EnforceSettings, Environment, HttpSettings, LogFormat, RetrySettings,
        SafetySettings, DEFAULT_POLL_INTERVAL, DEFAULT_STATE_DIR,
    };
    // Every key with a default is written out, not left commented.
    let text = read("examples/callwarden.toml");
    let doc: toml::Table = text.parse().expect("the example is TOML");
    let without_default = ["api.auth_token_file", "http.api_token_file"];
    let unstated: Vec<&str> = CONFIG_KEYS
        .iter()
        .copied()
        // `[ha]` stays commented out: this build refuses it.
        .filter(|key| {
            !key.starts_with("account.")
                && !key.starts_with("ha.")
                && !without_default.contains(key)
        })
        .filter(|key| match key.split_once('.') {
            Some((section, key)) => doc
                .get(section)
                .and_then(|t| t.as_table())
                .is_none_or(|t| !t.contains_key(key)),
            None => !doc.contains_key(*key),
        })
        .collect();
    assert!(
        unstated.is_empty(),
        "examples/callwarden.toml leaves out {unstated:?}"
    );

    // ...and each states the default the loader and the client use.
    let loaded = config::load(
        &root().join("examples/callwarden.toml"),
        &Environment::default(),
    )
    .unwrap_or_else(|errors| panic!("the example does not load: {errors:?}"));
    let config = loaded.config;
    assert_eq!(config.api, ApiSettings::default());
    assert_eq!(config.poll_interval, DEFAULT_POLL_INTERVAL);
    assert_eq!(config.enforce, EnforceSettings::default());
    assert_eq!(config.retry, RetrySettings::default());
    assert_eq!(config.safety, SafetySettings::default());
    assert_eq!(config.state_dir, Path::new(DEFAULT_STATE_DIR));
    assert_eq!(config.http, HttpSettings::default());
    assert_eq!(config.log_format, LogFormat::default());
}

/// `callwarden ARGS` and its stdout.
fn help_of(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_callwarden"))
        .args(args)
        .output()
        .expect("callwarden runs");
    assert!(output.status.success(), "{args:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_command_and_flag_in_help_is_documented() {
    let help = help_of(&["--help"]);
    let commands: BTreeSet<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    assert!(commands.len() >= 8, "{help}");

    // The README's command table names exactly the commands of --help.
    let readme = read("README.md");
    let table: BTreeSet<String> = section(&readme, "Commands")
        .iter()
        .filter_map(|l| l.strip_prefix("| `callwarden "))
        .filter_map(|rest| rest.split([' ', '`']).next())
        .map(str::to_owned)
        .collect();
    assert_eq!(
        table, commands,
        "README's command table and --help disagree"
    );

    // Every long flag of every command is documented somewhere.
    let mut docs = readme.clone();
    for page in doc_pages() {
        docs.push_str(&std::fs::read_to_string(page).expect("page"));
    }
    let mut undocumented = Vec::new();
    for command in std::iter::once(None).chain(commands.iter().map(Some)) {
        let args: Vec<&str> = command
            .map(String::as_str)
            .into_iter()
            .chain(["--help"])
            .collect();
        for line in help_of(&args).lines() {
            let line = line.trim_start();
            let flag = line
                .strip_prefix("-")
                .and_then(|_| line.split_whitespace().find(|w| w.starts_with("--")))
                .map(|w| w.trim_end_matches([',', '.']).to_owned());
            if let Some(flag) = flag.filter(|f| f != "--help" && f != "--version") {
                if !docs.contains(&format!("{flag} "))
                    && !docs.contains(&format!("{flag}`"))
                    && !docs.contains(&format!("{flag}]"))
                    && !docs.contains(&format!("{flag}="))
                {
                    undocumented.push(format!("{} {flag}", command.map_or("", |c| c)));
                }
            }
        }
    }
    undocumented.sort();
    undocumented.dedup();
    assert!(
        undocumented.is_empty(),
        "flags in --help that README.md and docs/ never mention: {undocumented:?}"
    );
}

#[test]
fn policies_page_names_exactly_the_keys_a_rule_accepts() {
    let page = read("docs/policies.md");
    let keys = callwarden::config::policy_keys();
    let top: BTreeSet<String> = keys.iter().filter(|k| !k.contains('.')).cloned().collect();
    assert_eq!(
        first_cells(&section(&page, "A rule, key by key")),
        top,
        "docs/policies.md: the rule key table and the loader disagree"
    );
    let fields: BTreeSet<String> = keys
        .iter()
        .filter_map(|k| k.strip_prefix("match."))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        first_cells(&section(&page, "Matching")),
        fields,
        "docs/policies.md: the match field table and the loader disagree"
    );
    for key in keys
        .iter()
        .filter_map(|k| k.split_once('.'))
        .map(|(_, k)| k)
    {
        assert!(
            page.contains(&format!("`{key}`")) || page.contains(&format!("\n{key} =")),
            "docs/policies.md never names `{key}`"
        );
    }
}

#[test]
fn every_section_key_the_docs_mention_is_one_the_loader_accepts() {
    let mut pages = vec![root().join("README.md")];
    pages.extend(doc_pages());
    let word = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect()
    };
    let mut unknown = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).expect("page");
        for (at, _) in text.match_indices('[') {
            // `[section] key`, not `[[account]]`, `[rule.match]` or a link.
            if text[..at].ends_with('[') {
                continue;
            }
            let rest = &text[at + 1..];
            let section = word(rest);
            let Some(after) = rest[section.len()..].strip_prefix("] ") else {
                continue;
            };
            let key = word(after);
            if section.is_empty() || key.is_empty() || section == "rule" {
                continue;
            }
            let full = format!("{section}.{key}");
            if !CONFIG_KEYS.contains(&full.as_str()) {
                let name = page.file_name().map(|n| n.to_string_lossy().into_owned());
                unknown.push(format!("{}: [{section}] {key}", name.unwrap_or_default()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the docs name config keys the loader does not accept: {unknown:?}"
    );
}
