//! Schema migrations: versioned SQL files embedded in the binary, applied at start.
//!
//! Every gateway runs [`migrate`] when it connects. The whole run is one transaction holding a
//! transaction-scoped advisory lock, so gateways starting together apply each version exactly
//! once: the first takes the lock and migrates, the others wait, then find nothing left to do.

use std::time::Duration;

use tokio_postgres::Client;

use super::error::unavailable;
use crate::store::StoreError;

/// One schema version: applied in order, never edited once released.
#[derive(Debug)]
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in version order. A new one is a new file and a new line here.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "feed_rooms",
        sql: include_str!("../../../migrations/0002_feed_rooms.sql"),
    },
    Migration {
        version: 3,
        name: "bans",
        sql: include_str!("../../../migrations/0003_bans.sql"),
    },
    Migration {
        version: 4,
        name: "outbox",
        sql: include_str!("../../../migrations/0004_outbox.sql"),
    },
    Migration {
        version: 5,
        name: "webhooks",
        sql: include_str!("../../../migrations/0005_webhooks.sql"),
    },
    Migration {
        version: 6,
        name: "push",
        sql: include_str!("../../../migrations/0006_push.sql"),
    },
];

/// The advisory lock key serializing migrations (any constant; "switchboard" in ASCII).
const MIGRATION_LOCK: i64 = 0x7377_6974_6368_626f;

/// Longest a migration run may take, waiting for another gateway's run included. Longer than
/// the statement timeout of ordinary queries: a migration may rewrite a table.
pub(super) const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Brings the schema up to date and returns the store's epoch.
pub(super) async fn migrate(client: &mut Client) -> Result<String, StoreError> {
    let tx = client.transaction().await.map_err(unavailable)?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {};
         SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
        MIGRATION_TIMEOUT.as_millis()
    ))
    .await
    .map_err(unavailable)?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(unavailable)?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(unavailable)?;
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tx.batch_execute(migration.sql).await.map_err(|e| {
            StoreError::unavailable(format!(
                "migration {} ({}) failed: {e}",
                migration.version, migration.name
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&migration.version],
        )
        .await
        .map_err(unavailable)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied schema migration"
        );
    }
    let epoch: String = tx
        .query_one("SELECT epoch FROM store_meta", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{} skips a version", m.name);
            assert!(!m.sql.trim().is_empty());
        }
    }
}
