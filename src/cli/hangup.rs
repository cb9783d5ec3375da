//! `callwarden hangup`: asks the running daemon to end calls now, by UUID
//! or with a selector; without `--yes` a selector only shows what it would
//! end.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Map, Value};

use crate::config::Environment;
use crate::manual::Answer;
use crate::startup;

use super::{EXIT_ERROR, EXIT_OK, EXIT_PARTIAL};

/// What to end and how, from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct HangupArgs {
    /// Calls to end, by UUID (not held by the breaker).
    #[arg(required_unless_present = "matches", conflicts_with = "matches")]
    pub uuids: Vec<String>,
    /// Select the calls instead: FIELD=GLOB, as in [rule.match]; repeat a
    /// field for "any of", give several fields for "all of".
    #[arg(long = "match", value_name = "FIELD=GLOB")]
    pub matches: Vec<String>,
    /// With --match: only calls that started at least this long ago.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "matches")]
    pub older_than: Option<Duration>,
    /// With --match: at most this many calls per account, oldest first.
    #[arg(long, requires = "matches")]
    pub limit: Option<usize>,
    /// Why the calls are ended (audited).
    #[arg(long)]
    pub reason: String,
    /// End the calls a selector finds (without it, only show them).
    #[arg(long)]
    pub yes: bool,
    /// A selector is not held by the breaker.
    #[arg(long)]
    pub force: bool,
    /// Audit what would happen, hang up nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// An idempotency key: the daemon acts on one id once.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Posts the request; exit 0 when nothing was refused, 3 when some calls
/// were (protected, breaker, not found), 1 on an error.
pub async fn run(config_path: &Path, env: &Environment, args: HangupArgs) -> anyhow::Result<u8> {
    let config = startup::load_config(config_path, env)?.config;
    let Some(addr) = config.http.listen else {
        bail!("[http] listen is disabled, so the daemon cannot be asked");
    };
    let preview = !args.matches.is_empty() && !args.yes;
    let mut body = Map::new();
    if args.matches.is_empty() {
        body.insert("calls".into(), json!(args.uuids));
    } else {
        let mut fields: Map<String, Value> = Map::new();
        for pair in &args.matches {
            let Some((field, glob)) = pair.split_once('=') else {
                eprintln!("callwarden hangup: --match takes FIELD=GLOB, found {pair:?}");
                return Ok(super::EXIT_USAGE);
            };
            let list = fields
                .entry(field.trim().to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = list {
                list.push(Value::String(glob.trim().to_owned()));
            }
        }
        body.insert("match".into(), Value::Object(fields));
        if let Some(older_than) = args.older_than {
            body.insert(
                "older_than".into(),
                json!(humantime::format_duration(older_than).to_string()),
            );
        }
        if let Some(limit) = args.limit {
            body.insert("limit".into(), json!(limit));
        }
    }
    body.insert("reason".into(), json!(args.reason));
    body.insert("dry_run".into(), json!(args.dry_run));
    body.insert("force".into(), json!(args.force));
    body.insert("preview".into(), json!(preview));
    if let Some(id) = &args.request_id {
        body.insert("request_id".into(), json!(id));
    }
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/hangup"))
        .timeout(Duration::from_secs(30))
        .json(&body);
    if let Some(token) = &config.http.api_token {
        request = request.bearer_auth(token.expose());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {addr}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        eprintln!("callwarden: the daemon refused: {status} {}", text.trim());
        return Ok(EXIT_ERROR);
    }
    let answer: Answer = serde_json::from_str(&text).context("the daemon's answer is not JSON")?;
    if args.json {
        println!("{text}");
    } else {
        print!("{}", render(&answer));
        if preview {
            println!("nothing was done: run again with --yes to end these calls");
        }
    }
    let refused = answer
        .calls
        .iter()
        .any(|c| crate::engine::is_refusal(&c.decision));
    Ok(if refused { EXIT_PARTIAL } else { EXIT_OK })
}

/// The answer as a table and a summary line.
fn render(answer: &Answer) -> String {
    let mut out = format!(
        "{:<38} {:<10} {:<14} DETAIL\n",
        "CALL", "ACCOUNT", "DECISION"
    );
    let mut counts: Vec<(String, usize)> = Vec::new();
    for call in &answer.calls {
        out.push_str(&format!(
            "{:<38} {:<10} {:<14} {}\n",
            call.call_uuid,
            call.account.as_deref().unwrap_or("-"),
            call.decision,
            call.detail
        ));
        match counts.iter_mut().find(|(d, _)| *d == call.decision) {
            Some((_, n)) => *n += 1,
            None => counts.push((call.decision.clone(), 1)),
        }
    }
    let summary: Vec<String> = counts.iter().map(|(d, n)| format!("{n} {d}")).collect();
    out.push_str(&format!(
        "{} call{}{}{}{}\n",
        answer.calls.len(),
        if answer.calls.len() == 1 { "" } else { "s" },
        if summary.is_empty() {
            String::new()
        } else {
            format!(": {}", summary.join(", "))
        },
        if answer.replayed {
            " (replayed: this request_id was answered before; nothing done now)"
        } else {
            ""
        },
        if answer.dry_run { " (dry run)" } else { "" },
    ));
    out
}
