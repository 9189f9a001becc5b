//! Importing the rows of another backend (a single-node SQLite deployment) into an empty
//! PostgreSQL database, for `tidings admin migrate-store`.
//!
//! The importer knows the tables in dependency order and takes rows as plain values, a chunk at
//! a time, so the caller streams them from the source without holding a table in memory.
//! Everything is written in one transaction, so a failed import leaves the target empty. Afterwards the identity sequences continue after the copied
//! ids, and every message is marked unindexed so the search indexer rebuilds the index with
//! this backend's lexemes.

use crate::error::Fail;
use crate::{PgOptions, PgStore};
use tidings_store::StoreError;
use tokio_postgres::types::{ToSql, Type};

/// The tables a deployment's state lives in, parents before children (foreign keys).
pub const TABLES: &[&str] = &[
    "users",
    "scram_credentials",
    "external_identities",
    "invites",
    "devices",
    "refresh_tokens",
    "oauth_clients",
    "oauth_codes",
    "device_grants",
    "conversations",
    "members",
    "device_cursors",
    "messages",
    "message_edits",
    "reactions",
    "mentions",
    "pins",
    "hidden_messages",
    "thread_reads",
    "last_seen",
    "blocks",
    "profiles",
    "friend_requests",
    "friendships",
    "privacy_settings",
    "contacts_versions",
    "audit_log",
    "audit_checkpoints",
    "group_bans",
    "group_invite_links",
    "group_join_requests",
    "group_invitations",
    "uploads",
    "blobs",
    "files",
    "file_shares",
    "push_settings",
    "push_subscriptions",
    "push_jobs",
    "push_outbox",
    "mqtt_sessions",
    "mqtt_retained",
    "user_xml",
    "rooms",
    "two_factor",
    "recovery_codes",
];

/// One value of a source row, as SQLite stores it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// An import in progress: one open transaction on the target. Dropping it without
/// [`Importer::finish`] rolls everything back (the connection is discarded).
pub struct Importer {
    client: deadpool_postgres::Object,
    /// Tables written so far, in order, with their row counts.
    written: Vec<(String, u64)>,
}

impl Importer {
    /// Connects to the database at `options.url`, brings its schema up to date, checks that it
    /// holds no deployment yet, and opens the import transaction.
    pub async fn start(options: PgOptions) -> Result<Importer, StoreError> {
        let store = PgStore::connect(options).await?;
        let client = store
            .pool
            .get()
            .await
            .map_err(|e| Fail::from(e).into_store())?;
        let run = async {
            client.batch_execute("BEGIN").await?;
            let existing: i64 = client
                .query_one(
                    "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM messages)",
                    &[],
                )
                .await?
                .try_get(0)?;
            if existing > 0 {
                return Err(Fail::Store(StoreError::Conflict("target_not_empty")));
            }
            Ok(())
        };
        run.await.map_err(Fail::into_store)?;
        Ok(Importer {
            client,
            written: Vec::new(),
        })
    }

    /// Writes rows of `table` (whose source column names are `columns`). Tables must come in
    /// [`TABLES`] order, each in as many calls as the caller likes.
    pub async fn rows(
        &mut self,
        table: &str,
        columns: &[String],
        rows: &[Vec<Value>],
    ) -> Result<(), StoreError> {
        let Some(position) = TABLES.iter().position(|t| *t == table) else {
            return Err(StoreError::Backend(format!(
                "the source has a table `{table}` this version cannot import"
            )));
        };
        let previous = self
            .written
            .last()
            .and_then(|(t, _)| TABLES.iter().position(|x| x == t));
        if previous.is_some_and(|p| p > position) {
            return Err(StoreError::Backend(format!(
                "table `{table}` came after a table that depends on it"
            )));
        }
        let n = copy_rows(&self.client, table, columns, rows)
            .await
            .map_err(Fail::into_store)?;
        match self.written.last_mut() {
            Some((t, count)) if t == table => *count += n,
            _ => self.written.push((table.to_owned(), n)),
        }
        Ok(())
    }

    /// Moves the identity sequences past the copied ids, marks every message for the search
    /// indexer, and commits. Returns the rows written per table.
    pub async fn finish(self) -> Result<Vec<(String, u64)>, StoreError> {
        let run = async {
            // Identity columns continue after the copied ids.
            let identities: Vec<String> = self
                .client
                .query(
                    "SELECT table_name::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND column_name = 'id' \
                     AND is_identity = 'YES'",
                    &[],
                )
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()?;
            for name in identities {
                self.client
                    .execute(
                        &format!(
                            "SELECT setval(pg_get_serial_sequence('{name}', 'id'), \
                             GREATEST((SELECT max(id) FROM {name}), 1), \
                             (SELECT max(id) FROM {name}) IS NOT NULL)"
                        ),
                        &[],
                    )
                    .await?;
            }
            self.client
                .execute(
                    "UPDATE messages SET indexed = false, search_terms = NULL",
                    &[],
                )
                .await?;
            self.client.batch_execute("COMMIT").await?;
            Ok::<_, Fail>(())
        };
        run.await.map_err(Fail::into_store)?;
        Ok(self.written)
    }
}

/// Inserts a table's rows in multi-row statements, converting each value to the target
/// column's type (SQLite keeps booleans as integers and has no BYTEA).
async fn copy_rows(
    client: &deadpool_postgres::Object,
    table: &str,
    columns: &[String],
    rows: &[Vec<Value>],
) -> Result<u64, Fail> {
    if rows.is_empty() {
        return Ok(0);
    }
    let types: Vec<(String, String)> = client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table],
        )
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    let mut column_types = Vec::new();
    for column in columns {
        let Some((_, ty)) = types.iter().find(|(name, _)| name == column) else {
            return Err(Fail::Store(StoreError::Backend(format!(
                "the target has no column {table}.{column}"
            ))));
        };
        column_types.push(match ty.as_str() {
            "bigint" => Type::INT8,
            "boolean" => Type::BOOL,
            "bytea" => Type::BYTEA,
            "text" => Type::TEXT,
            other => {
                return Err(Fail::Store(StoreError::Backend(format!(
                    "cannot import into {table}.{column} of type {other}"
                ))));
            }
        });
    }
    let names = columns
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // PostgreSQL takes at most 65535 parameters per statement.
    let per_statement = (60_000 / columns.len().max(1)).max(1);
    let mut written = 0;
    for chunk in rows.chunks(per_statement) {
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut tuples = Vec::with_capacity(chunk.len());
        for row in chunk {
            let mut placeholders = Vec::with_capacity(row.len());
            for (value, ty) in row.iter().zip(&column_types) {
                params.push(convert(value, ty, table)?);
                placeholders.push(format!("${}", params.len()));
            }
            tuples.push(format!("({})", placeholders.join(", ")));
        }
        let sql = format!("INSERT INTO {table} ({names}) VALUES {}", tuples.join(", "));
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        written += client.execute(&sql, &refs).await?;
    }
    Ok(written)
}

fn convert(value: &Value, ty: &Type, table: &str) -> Result<Box<dyn ToSql + Sync + Send>, Fail> {
    let mismatch = || {
        Fail::Store(StoreError::Backend(format!(
            "a value of {table} does not fit its column ({value:?} for {ty})"
        )))
    };
    Ok(match (value, ty) {
        (Value::Null, &Type::INT8) => Box::new(None::<i64>),
        (Value::Null, &Type::BOOL) => Box::new(None::<bool>),
        (Value::Null, &Type::BYTEA) => Box::new(None::<Vec<u8>>),
        (Value::Null, &Type::TEXT) => Box::new(None::<String>),
        (Value::Integer(i), &Type::INT8) => Box::new(*i),
        (Value::Integer(i), &Type::BOOL) => Box::new(*i != 0),
        (Value::Text(s), &Type::TEXT) => Box::new(s.clone()),
        (Value::Blob(b), &Type::BYTEA) => Box::new(b.clone()),
        _ => return Err(mismatch()),
    })
}
