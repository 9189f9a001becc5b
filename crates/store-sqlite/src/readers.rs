//! The read pool: a few read-only connections, each used by one blocking task at a time.
//!
//! In WAL mode a reader sees the database as of the last commit when its statement starts and
//! never waits for the writer, so reads run beside the writer thread. A semaphore bounds how many
//! reads run at once to the number of connections; the work runs on tokio's blocking pool, so no
//! SQLite call ever runs on an async worker thread.

use rusqlite::Connection;
use std::sync::{Arc, Mutex, PoisonError};
use tidings_store::{StoreError, StoreResult};
use tokio::sync::Semaphore;

pub(crate) struct Readers {
    /// Connections not in use. The semaphore guarantees one is here for every permit holder.
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    pub(crate) fn new(connections: Vec<Connection>) -> Arc<Readers> {
        Arc::new(Readers {
            permits: Arc::new(Semaphore::new(connections.len())),
            idle: Mutex::new(connections),
        })
    }

    /// Runs `work` with a read-only connection on the blocking pool.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Backend("the SQLite read pool is closed".into()))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let lease = Lease {
                conn: pool.lock().pop(),
                pool: &pool,
            };
            match &lease.conn {
                Some(conn) => work(conn),
                None => Err(StoreError::Backend("no idle SQLite read connection".into())),
            }
        })
        .await
        .map_err(|err| StoreError::Backend(format!("a read task failed: {err}")))?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The list is valid whatever a panicking holder was doing: it only pushes and pops.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Returns the connection to the pool when the read ends, even if the work panicked.
struct Lease<'a> {
    conn: Option<Connection>,
    pool: &'a Readers,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.lock().push(conn);
        }
    }
}
