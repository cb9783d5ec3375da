//! `callwarden calls` and `callwarden explain`: read-only views of live
//! calls against the rules. They write no audit records; when the daemon's
//! listener answers they add what only it knows (first seen, answer seen,
//! pardons).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;

use crate::call::{Call, CallUuid};
use crate::config::{Config, Environment};
use crate::engine::status::CallStatus as DaemonCall;
use crate::http::StatusDocument;
use crate::policy::{self, Policy, Timeline};
use crate::startup;
use crate::vobiz::{self, VobizApi};

use super::{EXIT_ERROR, EXIT_OK};

/// `callwarden calls`: every live call with age, matched rules and time left.
pub async fn list(config_path: &Path, env: &Environment, json: bool) -> anyhow::Result<u8> {
    let config = startup::load_config(config_path, env)?.config;
    let clock = startup::system_clock();
    let known = daemon_calls(&config).await;
    let mut rows = Vec::new();
    for (name, client) in startup::clients(&config, &clock)? {
        let policy = config.policy_of(&name);
        let calls = live_calls(&config, &client, &name).await?;
        let now = clock.now();
        let beyond = beyond_caps(&policy, &name, &calls, now);
        for (call, beyond) in calls.iter().zip(&beyond) {
            let explanation = explain_one(
                &config,
                &policy,
                &name,
                call,
                known.get(&call.uuid),
                now,
                beyond,
            );
            rows.push(Row::new(&name, call, &explanation, now));
        }
    }
    rows.sort_by(|a, b| {
        a.time_left_s
            .unwrap_or(i64::MAX)
            .cmp(&b.time_left_s.unwrap_or(i64::MAX))
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", render_rows(&rows));
    }
    Ok(EXIT_OK)
}

/// `callwarden explain`: every rule against one live call or a saved one.
pub async fn explain(
    config_path: &Path,
    env: &Environment,
    uuid: Option<String>,
    call_json: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<u8> {
    let config = startup::load_config(config_path, env)?.config;
    let clock = startup::system_clock();
    let is_live = call_json.is_none();
    let (account, call) = match (uuid, call_json) {
        (_, Some(path)) => {
            let account = config
                .accounts
                .first()
                .map(|a| a.name.clone())
                .unwrap_or_default();
            (account, saved_call(&path, &config)?)
        }
        (Some(uuid), None) => {
            let uuid = CallUuid::parse(&uuid).with_context(|| format!("bad call UUID {uuid:?}"))?;
            match find_live(&config, &clock, &uuid).await? {
                Some(found) => found,
                None => {
                    eprintln!("callwarden: no live call {uuid} in any account");
                    return Ok(EXIT_ERROR);
                }
            }
        }
        (None, None) => bail!("give a call UUID or --call-json FILE"),
    };
    let known = daemon_calls(&config).await;
    let policy = config.policy_of(&account);
    // A fraud-guard rule judges the call among the account's live calls; a
    // saved call is judged alone (within every cap).
    let mut beyond = Vec::new();
    if is_live && policy.has_concurrency_rules() {
        if let Some((_, client)) = startup::clients(&config, &clock)?
            .into_iter()
            .find(|(name, _)| *name == account)
        {
            let mut calls = live_calls(&config, &client, &account).await?;
            calls.retain(|c| c.uuid != call.uuid);
            calls.insert(0, call.clone());
            beyond = beyond_caps(&policy, &account, &calls, clock.now())
                .into_iter()
                .next()
                .unwrap_or_default();
        }
    }
    let explanation = explain_one(
        &config,
        &policy,
        &account,
        &call,
        known.get(&call.uuid),
        clock.now(),
        &beyond,
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{explanation}");
    }
    Ok(EXIT_OK)
}

async fn find_live(
    config: &Config,
    clock: &crate::clock::SharedClock,
    uuid: &CallUuid,
) -> anyhow::Result<Option<(String, Call)>> {
    for (name, client) in startup::clients(config, clock)? {
        match client.get_live(uuid).await {
            Ok(fetched) => return Ok(Some((name, fetched.value))),
            Err(vobiz::Error::NotFound) => continue,
            Err(error) => return Err(error).with_context(|| format!("account `{name}`")),
        }
    }
    Ok(None)
}

/// Reads a saved call detail (either documented shape).
fn saved_call(path: &Path, config: &Config) -> anyhow::Result<Call> {
    let body = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("{}: not JSON", path.display()))?;
    let uuid = value
        .get("call_uuid")
        .or_else(|| value.pointer("/calls/0/call_uuid"))
        .and_then(|v| v.as_str())
        .with_context(|| format!("{}: no call_uuid", path.display()))?;
    let uuid =
        CallUuid::parse(uuid).with_context(|| format!("{}: bad call_uuid", path.display()))?;
    vobiz::parse_call_detail(&body, &uuid, config.api.timestamp_zone)
        .with_context(|| format!("{}", path.display()))
}

/// The daemon's view of its calls, when its listener answers.
async fn daemon_calls(config: &Config) -> HashMap<CallUuid, DaemonCall> {
    let Some(addr) = config.http.listen else {
        return HashMap::new();
    };
    let fetch = async {
        let document: StatusDocument = reqwest::Client::new()
            .get(format!("http://{addr}/status"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(document)
    };
    let Some(document) = fetch.await else {
        return HashMap::new();
    };
    document
        .accounts
        .into_iter()
        .flat_map(|a| a.calls)
        .filter_map(|c| Some((CallUuid::parse(&c.call_uuid).ok()?, c)))
        .collect()
}

/// The details of every live call of one account (calls that ended
/// meanwhile are skipped; other errors are printed and skipped).
async fn live_calls(
    config: &Config,
    client: &Arc<vobiz::Client>,
    account: &str,
) -> anyhow::Result<Vec<Call>> {
    let listed = client
        .list_live()
        .await
        .with_context(|| format!("account `{account}`: listing live calls"))?;
    let details: Vec<_> = futures::stream::iter(listed.value)
        .map(|uuid| {
            let client = Arc::clone(client);
            async move { (uuid.clone(), client.get_live(&uuid).await) }
        })
        .buffer_unordered(config.api.max_concurrent_requests.max(1))
        .collect()
        .await;
    let mut calls = Vec::with_capacity(details.len());
    for (uuid, result) in details {
        match result {
            Ok(fetched) => calls.push(fetched.value),
            Err(vobiz::Error::NotFound) => {}
            Err(error) => eprintln!("callwarden: {uuid}: {error}"),
        }
    }
    Ok(calls)
}

/// For each of `calls`, the fraud-guard rules whose cap it is beyond.
///
/// Seniority comes from the API's own times: a call answered with no
/// answer time (the flat shape) counts from its start, as in the daemon.
fn beyond_caps(
    policy: &Policy,
    account: &str,
    calls: &[Call],
    now: DateTime<Utc>,
) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); calls.len()];
    if !policy.has_concurrency_rules() {
        return out;
    }
    let timelines: Vec<Timeline> = calls
        .iter()
        .map(|call| Timeline {
            started: call.started_at,
            answered: call.answered_at.or_else(|| {
                crate::engine::tracker::is_answered(call)
                    .then_some(call.started_at)
                    .flatten()
            }),
            last_change: now,
        })
        .collect();
    let live: Vec<policy::LiveCall<'_>> = calls
        .iter()
        .zip(&timelines)
        .map(|(call, timeline)| policy::LiveCall {
            call,
            account,
            timeline,
        })
        .collect();
    for (index, rule) in policy::calls_beyond_caps(policy, &live, now) {
        out[index].push(rule);
    }
    out
}

fn explain_one(
    config: &Config,
    policy: &Policy,
    account: &str,
    call: &Call,
    known: Option<&DaemonCall>,
    now: DateTime<Utc>,
    beyond: &[usize],
) -> policy::Explanation {
    // Without the daemon's history a call is judged from the API's own
    // times; idle rules see it as unchanged since now.
    let timeline = Timeline {
        started: call.started_at,
        answered: call.answered_at.or(known.and_then(|k| k.answered_seen)),
        last_change: now,
    };
    policy::explain_with_caps(
        policy,
        call,
        account,
        &timeline,
        now,
        &config.explain_settings(),
        beyond,
    )
}

/// One line of `callwarden calls`.
#[derive(Debug, serde::Serialize)]
struct Row {
    account: String,
    call_uuid: String,
    direction: String,
    from: String,
    to: String,
    status: String,
    age_s: Option<i64>,
    rules: Vec<String>,
    winner: Option<String>,
    time_left_s: Option<i64>,
}

impl Row {
    fn new(
        account: &str,
        call: &Call,
        explanation: &policy::Explanation,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            account: account.to_owned(),
            call_uuid: call.uuid.to_string(),
            direction: call.direction.as_str().to_owned(),
            from: call.from.to_string(),
            to: call.to.to_string(),
            status: call.status.as_str().to_owned(),
            age_s: call.started_at.map(|s| (now - s).num_seconds()),
            rules: explanation
                .rules
                .iter()
                .filter(|r| r.matched)
                .map(|r| r.rule.clone())
                .collect(),
            winner: explanation.decision.as_ref().map(|d| d.rule.clone()),
            time_left_s: explanation.decision.as_ref().map(|d| d.time_left_s),
        }
    }
}

fn render_rows(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<38} {:<8} {:<16} {:<16} {:<11} {:>8} {:>10}  RULES\n",
        "CALL", "DIR", "FROM", "TO", "STATUS", "AGE", "LEFT"
    );
    for row in rows {
        out.push_str(&format!(
            "{:<38} {:<8} {:<16} {:<16} {:<11} {:>8} {:>10}  {}\n",
            row.call_uuid,
            row.direction,
            row.from,
            row.to,
            row.status,
            row.age_s.map(seconds).unwrap_or_else(|| "-".into()),
            row.time_left_s.map(seconds).unwrap_or_else(|| "-".into()),
            row.rules.join(","),
        ));
    }
    out.push_str(&format!("{} live calls\n", rows.len()));
    out
}

fn seconds(s: i64) -> String {
    let sign = if s < 0 { "-" } else { "" };
    let s = s.unsigned_abs();
    if s >= 3600 {
        format!("{sign}{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{sign}{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{sign}{s}s")
    }
}
