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
    ///
    /// The wait for a connection happens on a task of its own, never in the caller's future.
    /// The semaphore hands a freed slot to the next queued waiter whether or not anything
    /// polls that waiter, and callers do stop polling: a transport leaves its session's
    /// started requests alone while it awaits a core call of its own. Waiting inside such a
    /// future, a few of them took every slot for good and every read in the server waited
    /// for ever (the XMPP gateway froze after a few dozen sign-ins). A spawned task is always
    /// polled, so a slot it is handed is used and given back.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = Arc::clone(self);
        let task = AbortOnDrop(tokio::spawn(async move {
            let permit = Arc::clone(&pool.permits)
                .acquire_owned()
                .await
                .map_err(|_| StoreError::Backend("the SQLite read pool is closed".into()))?;
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
        }));
        task.await
            .map_err(|err| StoreError::Backend(format!("a read task failed: {err}")))?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The list is valid whatever a panicking holder was doing: it only pushes and pops.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A spawned read that is abandoned when its caller stops waiting (a cancelled request): a
/// read still queued for a connection leaves the queue; one already running on the blocking
/// pool finishes there and gives its connection back.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
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
