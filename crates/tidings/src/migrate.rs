//! `tidings admin migrate-store`: copies a single-node SQLite deployment into PostgreSQL.
//!
//! The SQLite file is first opened as the server opens it (bringing its schema up to date),
//! then read in one read transaction, which in WAL mode is a consistent snapshot even while a
//! server writes: what is committed after the copy starts is not copied, so for a cut-over the
//! server is stopped first. Rows stream table by table, a chunk at a time, from a blocking
//! reader thread into one PostgreSQL transaction (see `tidings_store_postgres::import`).

use anyhow::{Context, bail};
use rusqlite::types::ValueRef;
use std::path::{Path, PathBuf};
use tidings_store_postgres::PgOptions;
use tidings_store_postgres::import::{Importer, TABLES, Value};
use tokio::sync::mpsc;

/// Rows per chunk handed from the reader to the importer.
const CHUNK: usize = 2_000;

/// SQLite tables that are not state to copy: the full-text index (PostgreSQL rebuilds its own)
/// and its progress.
fn skipped(table: &str) -> bool {
    table.starts_with("sqlite_")
        || table.starts_with("message_search")
        || table == "search_progress"
        // Calls in progress: ephemeral state that ends with the process that rang them (a
        // finished call is a message, and messages are copied).
        || table == "calls"
        // Pending device sign-ins (RFC 8628) live ten minutes; a terminal waiting on one during
        // the move starts again.
        || table == "device_authorizations"
        // Room occupants are the live connections of the old server's nodes, which are gone.
        || table == "occupants"
}

/// What the reader sends: a table's columns, then its rows in chunks.
enum Item {
    Table { name: String, columns: Vec<String> },
    Rows(Vec<Vec<Value>>),
}

/// Copies the deployment at `from` (`sqlite:PATH`) into the empty database `to` (a
/// `postgres://` URL). Returns the rows copied per table.
pub async fn migrate_store(from: &str, to: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let Some(path) = from.strip_prefix("sqlite:") else {
        bail!("--from must be sqlite:PATH (the tidings.db file of the data directory)");
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!("{} is not a file", path.display());
    }
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        bail!("--to must be a postgres:// URL");
    }
    tidings_store_postgres::validate_url(to)
        .map_err(|e| anyhow::anyhow!("--to is not a valid PostgreSQL URL: {e}"))?;

    // Open as the server would, so an older file is migrated to the schema this build copies.
    let open_path = path.clone();
    tokio::task::spawn_blocking(move || {
        tidings_store_sqlite::SqliteStore::open(&open_path, Default::default())
    })
    .await?
    .with_context(|| format!("cannot open {}", path.display()))?;

    let mut importer = Importer::start(PgOptions::new(to))
        .await
        .with_context(|| format!("cannot import into {}", crate::app::redact_url(to)))?;
    let (tx, mut rx) = mpsc::channel::<Item>(2);
    let reader = tokio::task::spawn_blocking(move || read_all(&path, &tx));
    let mut table = String::new();
    let mut columns = Vec::new();
    while let Some(item) = rx.recv().await {
        match item {
            Item::Table { name, columns: c } => {
                table = name;
                columns = c;
            }
            Item::Rows(rows) => importer
                .rows(&table, &columns, &rows)
                .await
                .with_context(|| format!("cannot copy table {table}"))?,
        }
    }
    reader.await??;
    importer.finish().await.context("cannot finish the import")
}

/// Reads every table in dependency order inside one read transaction.
fn read_all(path: &Path, tx: &mpsc::Sender<Item>) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let snapshot = conn.transaction()?;
    let mut names: Vec<String> = snapshot
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    names.retain(|n| !skipped(n));
    if let Some(unknown) = names.iter().find(|n| !TABLES.contains(&n.as_str())) {
        bail!(
            "the database has a table `{unknown}` this version cannot copy; use a matching tidings version"
        );
    }
    for &name in TABLES {
        if !names.iter().any(|n| n == name) {
            continue;
        }
        let mut stmt = snapshot.prepare(&format!("SELECT * FROM \"{name}\""))?;
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        if tx
            .blocking_send(Item::Table {
                name: name.to_owned(),
                columns: columns.clone(),
            })
            .is_err()
        {
            return Ok(());
        }
        let mut rows = stmt.query([])?;
        let mut chunk = Vec::with_capacity(CHUNK);
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Integer(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            chunk.push(values);
            if chunk.len() == CHUNK
                && tx
                    .blocking_send(Item::Rows(std::mem::take(&mut chunk)))
                    .is_err()
            {
                return Ok(());
            }
        }
        if !chunk.is_empty() && tx.blocking_send(Item::Rows(chunk)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}
