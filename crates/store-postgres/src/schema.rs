//! The embedded schema migrations and how they are applied.

use crate::error::{Fail, Result};
use crate::queries::MIGRATIONS_LOCK;
use deadpool_postgres::Object;

/// The schema, one migration per element, applied in order; `schema_migrations` records which
/// are applied. Never edit a released migration: add a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_rich.sql"),
    include_str!("migrations/0003_avatars.sql"),
    include_str!("migrations/0004_oauth.sql"),
    include_str!("migrations/0005_push.sql"),
    include_str!("migrations/0006_calls.sql"),
    include_str!("migrations/0007_push_outbox.sql"),
    include_str!("migrations/0008_mqtt.sql"),
    include_str!("migrations/0009_two_factor.sql"),
    include_str!("migrations/0010_oauth_grants.sql"),
    include_str!("migrations/0011_external_identities.sql"),
    include_str!("migrations/0012_scram.sql"),
    include_str!("migrations/0013_device_cursors.sql"),
    include_str!("migrations/0014_user_xml.sql"),
    include_str!("migrations/0015_rooms.sql"),
    include_str!("migrations/0016_occupant_presence.sql"),
];

/// Applies the migrations the database has not seen yet, in one transaction. An advisory lock
/// makes nodes that start together apply them once: the others wait, then find nothing to do.
pub(crate) async fn migrate(client: &mut Object) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATIONS_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version    BIGINT PRIMARY KEY, \
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(Fail::Store(tidings_store::StoreError::Backend(format!(
            "the database has schema version {applied}, newer than this build knows ({known}); \
             refusing to use it"
        ))));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(migration).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(index as i64 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    if applied < known {
        tracing::info!(
            from = applied,
            to = known,
            "Migrated the PostgreSQL schema."
        );
    }
    Ok(())
}
