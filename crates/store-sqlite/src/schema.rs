//! Opening connections: the pragmas every connection gets, and the embedded schema migrations.

use crate::SqliteOptions;
use crate::error::backend;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use tidings_store::{StoreError, StoreResult};

/// The schema, one migration per element, applied in order. `PRAGMA user_version` records how
/// many have been applied. Never edit a released migration: add a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_blocks.sql"),
    include_str!("migrations/0003_profiles.sql"),
    include_str!("migrations/0004_contacts.sql"),
    include_str!("migrations/0005_admin.sql"),
    include_str!("migrations/0006_groups.sql"),
    include_str!("migrations/0007_files.sql"),
    include_str!("migrations/0008_search.sql"),
    include_str!("migrations/0009_rich.sql"),
    include_str!("migrations/0010_oauth.sql"),
    include_str!("migrations/0011_push.sql"),
    include_str!("migrations/0012_calls.sql"),
    include_str!("migrations/0013_push_outbox.sql"),
    include_str!("migrations/0014_mqtt.sql"),
    include_str!("migrations/0015_two_factor.sql"),
    include_str!("migrations/0016_oauth_grants.sql"),
    include_str!("migrations/0017_external_identities.sql"),
    include_str!("migrations/0018_scram.sql"),
    include_str!("migrations/0019_device_cursors.sql"),
    include_str!("migrations/0020_user_xml.sql"),
    include_str!("migrations/0021_rooms.sql"),
    include_str!("migrations/0022_occupant_presence.sql"),
];

/// Opens the one read-write connection and brings the schema up to date.
pub(crate) fn open_writer(path: &Path, options: &SqliteOptions) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    common_pragmas(&conn, options)?;
    // WAL lets the readers work while the writer writes, and turns each commit into one
    // sequential append to the log. The mode is stored in the file, so readers inherit it.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(backend)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "could not switch {} to WAL (journal_mode is {mode})",
            path.display()
        )));
    }
    // FULL makes every COMMIT wait for fsync of the log: the server acknowledges a message only
    // after its commit, and an acknowledged message must survive a power cut. NORMAL would only
    // protect against corruption, not against losing the last commits.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(backend)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(backend)?;
    // After a checkpoint, truncate the log back to this size so one burst does not leave a
    // large file behind forever.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(backend)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens one read-only connection. Call after [`open_writer`], which creates the file and
/// switches it to WAL.
pub(crate) fn open_reader(path: &Path, options: &SqliteOptions) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    common_pragmas(&conn, options)?;
    Ok(conn)
}

fn common_pragmas(conn: &Connection, options: &SqliteOptions) -> StoreResult<()> {
    conn.busy_timeout(options.busy_timeout).map_err(backend)?;
    // A negative cache_size is in KiB rather than pages.
    conn.pragma_update(None, "cache_size", -i64::from(options.cache_size_kib))
        .map_err(backend)?;
    conn.pragma_update(None, "mmap_size", options.mmap_size)
        .map_err(backend)?;
    // Sorting (ORDER BY without an index, DISTINCT) stays in memory; it is always small here.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(backend)?;
    // The backend has a few dozen distinct statements; keep all of them prepared.
    conn.set_prepared_statement_cache_capacity(128);
    // The query planner stability guarantee: plans never depend on the values bound to a
    // statement. Without it SQLite lets a bound `LIMIT ?` (and, once ANALYZE has run, any
    // bound value compared with an indexed column) steer the plan, and then recompiles the
    // statement on every execution with a new binding, which the hot reads (one message, a
    // page of history) paid each time. Our plans are fixed by the index-plan test anyway.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(backend)?;
    Ok(())
}

/// Applies the migrations this file has not seen yet, all in one transaction, so a crash
/// half-way leaves the previous schema intact.
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    // Read the version inside the write transaction, so two processes opening a fresh file at
    // once cannot both apply the same migration.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    let applied: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(backend)?;
    let applied = usize::try_from(applied)
        .map_err(|_| StoreError::Backend(format!("invalid schema version {applied}")))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "the database has schema version {applied}, newer than this build knows ({}); \
             refusing to open it",
            MIGRATIONS.len()
        )));
    }
    if applied == MIGRATIONS.len() {
        return Ok(());
    }
    for migration in &MIGRATIONS[applied..] {
        tx.execute_batch(migration).map_err(backend)?;
    }
    // user_version lives in the database header, which is written as part of this transaction.
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
        .map_err(backend)?;
    tx.commit().map_err(backend)?;
    tracing::info!(
        from = applied,
        to = MIGRATIONS.len(),
        "Migrated the SQLite schema."
    );
    Ok(())
}
