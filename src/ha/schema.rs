//! Embedded, versioned migrations. Each member runs them at start; an
//! advisory lock serializes members starting together, and `schema_version`
//! records what was applied, so running them again is a no-op.

use tokio_postgres::Client;

use super::db::HaError;

/// The migrations, in order; a version is never edited once released.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE ha_lease (
    account     text PRIMARY KEY,
    holder      text NOT NULL,
    epoch       bigint NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE TABLE ha_member (
    node_id     text PRIMARY KEY,
    last_seen   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE TABLE ha_decision (
    id          bigserial PRIMARY KEY,
    account     text NOT NULL,
    call_uuid   text NOT NULL,
    action      text NOT NULL,
    holder      text NOT NULL,
    epoch       bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    outcome     text,
    outcome_at  timestamptz,
    UNIQUE (call_uuid, action)
);
CREATE INDEX ha_decision_pending ON ha_decision (account) WHERE outcome IS NULL;
"#,
    ),
    (
        2,
        r#"
CREATE TABLE ha_pardon (
    account     text NOT NULL,
    call_uuid   text NOT NULL,
    until_ms    bigint,
    PRIMARY KEY (account, call_uuid)
);
CREATE TABLE ha_first_seen (
    account       text NOT NULL,
    call_uuid     text NOT NULL,
    first_seen_ms bigint NOT NULL,
    PRIMARY KEY (account, call_uuid)
);
"#,
    ),
];

/// Key of the advisory lock that serializes migrations ("cwmigrat").
const MIGRATION_LOCK: i64 = 0x6377_6d69_6772_6174;

/// The newest schema version this build knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0)
}

/// Applies every migration newer than the database's version; returns the
/// version after. A database newer than this build is refused: an older
/// binary must not write to tables it does not understand.
pub async fn migrate(client: &mut Client) -> Result<i32, HaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?;
    let current: i32 = row.get(0);
    if current > latest_version() {
        return Err(HaError::SchemaTooNew {
            found: current,
            known: latest_version(),
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(latest_version())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase_from_one() {
        for (i, (v, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(*v).unwrap(), i + 1);
        }
    }
}
