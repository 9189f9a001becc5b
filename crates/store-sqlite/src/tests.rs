//! SQLite-specific tests: durability settings, reopening, migrations, and the writer's
//! transaction handling. The shared contract is tested by `tests/conformance.rs`.

use super::*;
use std::path::PathBuf;
use tempfile::TempDir;
use tidings_proto::MessageBody;

fn db_path() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidings.db");
    (dir, path)
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default()).unwrap()
}

fn text(conversation: ConversationId, sender: UserId, client_msg_id: &str) -> NewMessage {
    NewMessage {
        conversation_id: conversation,
        sender_id: sender,
        sender_device_id: DeviceId(1),
        client_msg_id: client_msg_id.to_owned(),
        ts: 1_000,
        body: MessageBody::Text {
            text: client_msg_id.to_owned(),
        },
        relations: Default::default(),
    }
}

/// Runs a pragma on a connection and returns its value as text.
fn pragma(conn: &rusqlite::Connection, name: &str) -> StoreResult<String> {
    conn.query_row(&format!("PRAGMA {name}"), [], |row| {
        row.get::<_, rusqlite::types::Value>(0)
    })
    .map(|value| match value {
        rusqlite::types::Value::Integer(n) => n.to_string(),
        rusqlite::types::Value::Text(s) => s,
        other => format!("{other:?}"),
    })
    .map_err(error::backend)
}

/// New bindings never recompile a statement (the query planner stability guarantee). Without
/// it SQLite compiled every `ORDER BY ... LIMIT ?` read again on each run: the message reads
/// behind every send paid a full prepare.
#[tokio::test]
async fn new_bindings_do_not_recompile_statements() {
    let (_dir, path) = db_path();
    let store = open(&path);
    for store_side in [true, false] {
        let recompiled = move |conn: &rusqlite::Connection| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id FROM messages WHERE conversation_id = ?1 AND seq > ?2 \
                     ORDER BY seq LIMIT ?3",
                )
                .map_err(error::backend)?;
            for limit in 1..5 {
                stmt.query_map(rusqlite::params![1, limit, limit], |row| {
                    row.get::<_, i64>(0)
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(error::backend)?;
            }
            Ok(stmt.get_status(rusqlite::StatementStatus::RePrepare))
        };
        let count = if store_side {
            store.write(recompiled).await.unwrap()
        } else {
            store.read(recompiled).await.unwrap()
        };
        assert_eq!(count, 0, "writer: {store_side}");
    }
}

#[tokio::test]
async fn writer_is_wal_with_full_sync_and_foreign_keys() {
    let (_dir, path) = db_path();
    let store = open(&path);
    let settings = store
        .write(|conn| {
            Ok((
                pragma(conn, "journal_mode")?,
                pragma(conn, "synchronous")?,
                pragma(conn, "foreign_keys")?,
                pragma(conn, "temp_store")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        settings,
        ("wal".into(), "2".into(), "1".into(), "2".into()),
        "journal_mode, synchronous (2 = FULL), foreign_keys, temp_store (2 = MEMORY)"
    );
    let reader_mode = store
        .read(|conn| pragma(conn, "journal_mode"))
        .await
        .unwrap();
    assert_eq!(reader_mode, "wal");
    let write_from_reader = store
        .read(|conn| {
            conn.execute("DELETE FROM users", [])
                .map_err(error::backend)
        })
        .await;
    assert!(
        write_from_reader.is_err(),
        "reader connections cannot write"
    );
}

#[tokio::test]
async fn reopen_keeps_data() {
    let (_dir, path) = db_path();
    let (alice, conversation) = {
        let store = open(&path);
        let alice = store.create_user("alice", "hash", 1).await.unwrap();
        let bob = store.create_user("bob", "hash", 1).await.unwrap();
        let (conversation, _) = store
            .get_or_create_direct(alice.id, bob.id, 2)
            .await
            .unwrap();
        let batch = vec![
            text(conversation.id, alice.id, "m1"),
            text(conversation.id, bob.id, "m2"),
        ];
        store.append_messages(batch).await.unwrap();
        (alice, conversation)
    };

    let store = open(&path);
    assert_eq!(
        store.user_by_name("alice").await.unwrap(),
        Some(alice.clone())
    );
    let history = store.messages_after(conversation.id, 0, 10).await.unwrap();
    assert_eq!(
        history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let next = store
        .append_messages(vec![text(conversation.id, alice.id, "m3")])
        .await
        .unwrap();
    assert_eq!(next[0].as_ref().unwrap().message.seq, 3, "seqs continue");
    let retry = store
        .append_messages(vec![text(conversation.id, alice.id, "m1")])
        .await
        .unwrap();
    assert!(
        retry[0].as_ref().unwrap().duplicate,
        "idempotency survives a restart"
    );
}

/// The schema version and every schema object, to compare before and after a reopen.
type SchemaSnapshot = (i64, Vec<(String, String, Option<String>)>);

async fn schema_of(store: &SqliteStore) -> StoreResult<SchemaSnapshot> {
    store
        .read(|conn| {
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .map_err(error::backend)?;
            let mut stmt = conn
                // sqlite_stat* are planner statistics that `PRAGMA optimize` may add on close.
                .prepare(
                    "SELECT type, name, sql FROM sqlite_schema \
                     WHERE name NOT LIKE 'sqlite_stat%' ORDER BY name",
                )
                .map_err(error::backend)?;
            let objects = stmt
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(error::backend)?;
            Ok((version, objects))
        })
        .await
}

#[tokio::test]
async fn migrations_are_idempotent_on_reopen() {
    let (_dir, path) = db_path();
    let first = {
        let store = open(&path);
        store.create_user("alice", "hash", 1).await.unwrap();
        schema_of(&store).await.unwrap()
    };
    assert_eq!(first.0, schema::MIGRATIONS.len() as i64);
    assert!(
        first
            .1
            .iter()
            .any(|(kind, name, _)| kind == "table" && name == "messages")
    );

    for _ in 0..2 {
        let store = open(&path);
        assert_eq!(
            schema_of(&store).await.unwrap(),
            first,
            "reopening changes nothing"
        );
        assert!(store.user_by_name("alice").await.unwrap().is_some());
    }
}

#[test]
fn refuses_a_newer_schema() {
    let (_dir, path) = db_path();
    drop(open(&path));
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path, SqliteOptions::default())
        .err()
        .expect("a newer schema is refused");
    assert!(
        matches!(&err, StoreError::Backend(message) if message.contains("999")),
        "got {err:?}"
    );
}

#[tokio::test]
async fn failed_write_job_leaves_no_trace_and_spares_its_neighbours() {
    let (_dir, path) = db_path();
    let store = open(&path);
    // Submitted together, these usually share one transaction; either way, only the failing
    // job's own writes are undone.
    let (a, b, c) = tokio::join!(
        store.create_user("a", "hash", 1),
        store.write(|conn| {
            queries::create_user(conn, "b", "hash", 1)?;
            Err::<(), _>(StoreError::Backend("boom".into()))
        }),
        store.create_user("c", "hash", 1),
    );
    assert!(a.is_ok() && c.is_ok());
    assert!(matches!(b, Err(StoreError::Backend(m)) if m == "boom"));
    assert!(store.user_by_name("a").await.unwrap().is_some());
    assert!(store.user_by_name("b").await.unwrap().is_none());
    assert!(store.user_by_name("c").await.unwrap().is_some());
}

#[tokio::test]
async fn panicking_write_job_does_not_kill_the_writer() {
    let (_dir, path) = db_path();
    let store = open(&path);
    let outcome = store
        .write(|conn| -> StoreResult<()> {
            queries::create_user(conn, "ghost", "hash", 1)?;
            panic!("a bug in a write job");
        })
        .await;
    assert!(matches!(outcome, Err(StoreError::Backend(_))));
    store.ping().await.unwrap();
    store.create_user("alive", "hash", 1).await.unwrap();
    assert!(store.user_by_name("ghost").await.unwrap().is_none());
}

/// A SQLite failure in the middle of a batch (here forced by a trigger) fails the whole batch,
/// and nothing of it is stored: no message, no sequence number used up.
#[tokio::test]
async fn backend_failure_mid_batch_stores_nothing() {
    let (_dir, path) = db_path();
    let store = open(&path);
    let alice = store.create_user("alice", "hash", 1).await.unwrap().id;
    let bob = store.create_user("bob", "hash", 1).await.unwrap().id;
    let (conversation, _) = store.get_or_create_direct(alice, bob, 1).await.unwrap();
    store
        .write(|conn| {
            conn.execute_batch(
                "CREATE TEMP TRIGGER poison BEFORE INSERT ON main.messages \
                 WHEN NEW.client_msg_id = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned message'); END;",
            )
            .map_err(error::backend)
        })
        .await
        .unwrap();

    let outcome = store
        .append_messages(vec![
            text(conversation.id, alice, "ok1"),
            text(conversation.id, alice, "poison"),
            text(conversation.id, alice, "ok2"),
        ])
        .await;
    assert!(
        matches!(&outcome, Err(StoreError::Backend(m)) if m.contains("poisoned")),
        "got {outcome:?}"
    );
    assert!(
        store
            .messages_after(conversation.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let record = store.conversation(conversation.id).await.unwrap().unwrap();
    assert_eq!(record.last_seq, 0);
    let marker = store.member(conversation.id, alice).await.unwrap().unwrap();
    assert_eq!(marker.read_seq, 0);

    let next = store
        .append_messages(vec![text(conversation.id, alice, "ok1")])
        .await
        .unwrap();
    let next = next[0].as_ref().unwrap();
    assert!(
        !next.duplicate,
        "the failed batch left no idempotency key behind"
    );
    assert_eq!(next.message.seq, 1);
}

/// WAL lets a read run while the writer holds an open write transaction. The write job below
/// does not finish until the reads have, so reads that waited for the writer would time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_wait_for_the_writer() {
    let (_dir, path) = db_path();
    let store = Arc::new(open(&path));
    store.create_user("alice", "hash", 1).await.unwrap();
    let (started, writer_started) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let held_write = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .write(move |conn| {
                    queries::create_user(conn, "bob", "hash", 1)?;
                    let _ = started.send(());
                    // Holds the write transaction open until the test has read.
                    Ok(released.recv_timeout(Duration::from_secs(10)).is_ok())
                })
                .await
        })
    };
    writer_started.await.unwrap();
    let reads = async {
        (
            store.user_by_name("alice").await.unwrap(),
            store.user_by_name("bob").await.unwrap(),
        )
    };
    let (alice, bob) = tokio::time::timeout(Duration::from_secs(5), reads)
        .await
        .expect("reads finish while a write transaction is open");
    assert!(alice.is_some());
    assert!(bob.is_none(), "readers see only committed data");
    release.send(()).unwrap();
    assert!(
        held_write.await.unwrap().unwrap(),
        "the writer held its transaction throughout"
    );
    assert!(store.user_by_name("bob").await.unwrap().is_some());
}

#[tokio::test]
async fn usernames_are_stored_lowercase() {
    let (_dir, path) = db_path();
    let store = open(&path);
    let user = store.create_user("Alice", "hash", 1).await.unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(store.user_by_name("ALICE").await.unwrap(), Some(user));
    assert!(matches!(
        store.create_user("alice", "hash", 1).await,
        Err(StoreError::Conflict("username"))
    ));
}

#[tokio::test]
async fn unknown_referenced_rows_are_not_found() {
    let (_dir, path) = db_path();
    let store = open(&path);
    let outcome = store.create_device(UserId(42), "phone", 1).await;
    assert!(
        matches!(outcome, Err(StoreError::NotFound)),
        "got {outcome:?}"
    );
    let alice = store.create_user("alice", "hash", 1).await.unwrap().id;
    let outcome = store.create_group(alice, "g", &[UserId(42)], 1).await;
    assert!(
        matches!(outcome, Err(StoreError::NotFound)),
        "got {outcome:?}"
    );
    assert!(
        store.conversations_of(alice).await.unwrap().is_empty(),
        "the failed create_group left no half-made group"
    );
}
