//! `callwarden cluster`: the HA cluster as the database has it — members,
//! each account's leader, epoch and lease expiry, and pending intents.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Environment;
use crate::ha::db::{self, Lease, Member};
use crate::startup;

use super::EXIT_OK;

/// How long the command waits for the database.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// The whole answer, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Cluster {
    members: Vec<MemberRow>,
    accounts: Vec<AccountRow>,
    pending_intents: Vec<PendingRow>,
}

#[derive(Debug, Serialize)]
struct MemberRow {
    node_id: String,
    live: bool,
    last_seen: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
struct AccountRow {
    account: String,
    /// `None` while no member holds an unexpired lease.
    leader: Option<String>,
    epoch: Option<i64>,
    lease_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
struct PendingRow {
    account: String,
    call_uuid: String,
    action: String,
    holder: String,
    epoch: i64,
}

/// Prints the cluster; exit 1 (an error) when the database cannot be read.
pub async fn run(config_path: &Path, env: &Environment, json: bool) -> anyhow::Result<u8> {
    let config = startup::load_config(config_path, env)?.config;
    let Some(ha) = &config.ha else {
        bail!(
            "{} has no [ha] section: this callwarden runs single-node",
            config_path.display()
        );
    };
    let url = ha.require_url().map_err(anyhow::Error::msg)?;
    let (members, leases, pending) = tokio::time::timeout(CONNECT_LIMIT, async {
        let client = crate::ha::connect(url.expose(), CONNECT_LIMIT).await?;
        Ok::<_, crate::ha::HaError>((
            db::members(&client).await?,
            db::leases(&client).await?,
            db::all_pending_intents(&client).await?,
        ))
    })
    .await
    .context("the HA database did not answer in time")?
    .context("cannot read the HA database")?;
    let names: Vec<String> = config.accounts.iter().map(|a| a.name.clone()).collect();
    let cluster = Cluster {
        members: members.iter().map(member_row).collect(),
        accounts: names
            .iter()
            .map(|name| account_row(name, leases.iter().find(|l| &l.account == name)))
            .collect(),
        pending_intents: pending
            .into_iter()
            .map(|(account, p)| PendingRow {
                account,
                call_uuid: p.call_uuid,
                action: p.action,
                holder: p.holder,
                epoch: p.epoch,
            })
            .collect(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&cluster)?);
    } else {
        print!("{}", render(&cluster));
    }
    Ok(EXIT_OK)
}

fn member_row(member: &Member) -> MemberRow {
    MemberRow {
        node_id: member.node_id.clone(),
        live: member.live,
        last_seen: DateTime::from_timestamp_millis(member.last_seen_ms),
    }
}

fn account_row(name: &str, lease: Option<&Lease>) -> AccountRow {
    AccountRow {
        account: name.to_owned(),
        leader: lease
            .filter(|l| l.expired_for_ms < 0)
            .map(|l| l.holder.clone()),
        epoch: lease.map(|l| l.epoch),
        lease_expires_at: lease.and_then(|l| DateTime::from_timestamp_millis(l.expires_at_ms)),
    }
}

/// The text form: three small tables.
fn render(cluster: &Cluster) -> String {
    let time = |t: Option<DateTime<Utc>>| {
        t.map_or("-".to_owned(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
    };
    let mut out = String::from("MEMBER\tLIVE\tLAST SEEN\n");
    for m in &cluster.members {
        let live = if m.live { "yes" } else { "no" };
        out.push_str(&format!("{}\t{live}\t{}\n", m.node_id, time(m.last_seen)));
    }
    out.push_str("\nACCOUNT\tLEADER\tEPOCH\tLEASE EXPIRES\n");
    for a in &cluster.accounts {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            a.account,
            a.leader.as_deref().unwrap_or("NONE"),
            a.epoch.map_or("-".to_owned(), |e| e.to_string()),
            time(a.lease_expires_at)
        ));
    }
    out.push_str(&format!(
        "\nPENDING INTENTS: {}\n",
        cluster.pending_intents.len()
    ));
    for p in &cluster.pending_intents {
        out.push_str(&format!(
            "{}\t{}\t{}\tby {} at epoch {}\n",
            p.account, p.call_uuid, p.action, p.holder, p.epoch
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_lease_has_no_leader() {
        let lease = Lease {
            account: "a".into(),
            holder: "node-a".into(),
            epoch: 4,
            expires_at_ms: 1_800_000_000_000,
            expired_for_ms: 10,
        };
        let row = account_row("a", Some(&lease));
        assert_eq!((row.leader, row.epoch), (None, Some(4)));
        let held = Lease {
            expired_for_ms: -10,
            ..lease
        };
        assert_eq!(
            account_row("a", Some(&held)).leader.as_deref(),
            Some("node-a")
        );
        let text = render(&Cluster {
            members: Vec::new(),
            accounts: vec![account_row("b", None)],
            pending_intents: Vec::new(),
        });
        assert!(text.contains("b\tNONE\t-\t-"), "{text}");
    }
}
