//! Throwaway databases for tests: each one is created with a unique name on the server that
//! `PG_TEST_URL` names (default `postgres://postgres@127.0.0.1:5432/test`) and dropped when its
//! guard is dropped.
//!
//! When the server cannot be reached the test fails: a test that skipped would let a broken
//! setup pass.

use crate::{PgOptions, PgStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tidings_store::Store;

/// The server's administrative URL for tests.
pub fn admin_url() -> String {
    std::env::var("PG_TEST_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database that exists until this guard is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDatabase {
    /// Creates a fresh, empty database. Panics when the server is unreachable.
    pub async fn create() -> TestDatabase {
        let admin = admin_url();
        let client = connect(&admin).await.unwrap_or_else(|err| {
            panic!(
                "PostgreSQL at {admin} is not reachable ({err}); the PostgreSQL tests need it \
                 (set PG_TEST_URL to use another server)"
            )
        });
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "tidings_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        let url = with_database(&admin, &name);
        TestDatabase { name, url, admin }
    }

    /// Opens a store on this database with a small pool.
    pub async fn store(&self) -> Arc<dyn Store> {
        let mut options = PgOptions::new(self.url.clone());
        options.max_connections = 4;
        Arc::new(PgStore::connect(options).await.expect("the store opens"))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, where blocking on async work is not allowed; a
        // short-lived thread with its own runtime does it. FORCE ends the pool's connections.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(client) = connect(&admin).await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://u@h", "x"),
            "postgres://u@h/x"
        );
    }
}
