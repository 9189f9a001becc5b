//! Runs the shared `Store` conformance suite against SQLite, one fresh database file per case.

use std::sync::Arc;
use tempfile::TempDir;
use tidings_store::Store;
use tidings_store_sqlite::{SqliteOptions, SqliteStore};

/// A new database in its own temporary directory (a real file, so WAL is really used). The
/// directory is returned beside the store so it outlives it.
async fn fresh() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tidings.db");
    let store =
        tokio::task::spawn_blocking(move || SqliteStore::open(&path, SqliteOptions::default()))
            .await
            .expect("open does not panic")
            .expect("a fresh database opens");
    (Arc::new(store), dir)
}

tidings_store::store_conformance_tests!(fresh());
