//! The single writer: one connection on one OS thread, fed with jobs over a channel, committing
//! whatever is queued together (group commit).
//!
//! SQLite allows one writer at a time. Rather than let connections queue on the file lock (and
//! block whichever thread holds them), every write goes to this thread. Each job runs inside its
//! own SAVEPOINT, so a job that fails leaves no trace, and all jobs queued at the moment the
//! thread picks up work share one `BEGIN IMMEDIATE ... COMMIT`, so one fsync acknowledges many
//! callers under load. No caller is answered before the COMMIT that holds its work has returned.

use crate::error::backend;
use rusqlite::Connection;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tidings_store::{StoreError, StoreResult};
use tokio::sync::oneshot;

/// At most this many jobs share one transaction, which bounds how long the first caller of a
/// group waits for the others.
const MAX_GROUP: usize = 64;

/// The handle the store keeps: a channel to the writer thread.
pub(crate) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// Kept to report, in `ping`, a writer thread that has died.
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer thread, which owns `conn` until every handle is dropped.
    pub(crate) fn start(conn: Connection, path: &Path) -> StoreResult<Writer> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let path = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("tidings-sqlite-writer".into())
            .spawn(move || run(conn, queue, &path))
            .map_err(|e| StoreError::Backend(format!("could not start the writer thread: {e}")))?;
        Ok(Writer { jobs, thread })
    }

    /// Runs `work` on the writer connection inside a transaction and returns its result once
    /// that transaction is committed. If `work` returns an error, everything it wrote is undone.
    pub(crate) async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Task {
            work: Some(work),
            outcome: None,
            reply,
        });
        self.jobs.send(job).map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    pub(crate) fn is_alive(&self) -> bool {
        !self.thread.is_finished()
    }
}

fn writer_gone() -> StoreError {
    StoreError::Backend("the SQLite writer thread has stopped".into())
}

/// One unit of work for the writer, type-erased so jobs of every result type share a channel.
trait Job: Send {
    /// Runs the work in the open transaction, inside a savepoint when `isolate` is set. An `Err`
    /// means the transaction itself is broken (not that the work failed), and the group must be
    /// abandoned.
    fn run(&mut self, conn: &Connection, isolate: bool) -> Result<(), StoreError>;
    /// Whether the work ran and failed (its effects must not be committed).
    fn failed(&self) -> bool;
    /// Answers the caller once the fate of the transaction is known.
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>);
}

struct Task<T, F> {
    work: Option<F>,
    outcome: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job for Task<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
{
    fn run(&mut self, conn: &Connection, isolate: bool) -> Result<(), StoreError> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        // A caller that stopped waiting (a cancelled request) never saw an answer; skipping its
        // work is indistinguishable, for it, from the request arriving a moment later.
        if self.reply.is_closed() {
            return Ok(());
        }
        if isolate {
            exec(conn, "SAVEPOINT job")?;
        }
        // The work is our own code and should not panic; if it does, the thread survives and
        // only this caller gets an error.
        let outcome = catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Backend("a write job panicked".into())));
        if isolate {
            if outcome.is_err() {
                exec(conn, "ROLLBACK TO job")?;
            }
            exec(conn, "RELEASE job")?;
        }
        self.outcome = Some(outcome);
        Ok(())
    }

    fn failed(&self) -> bool {
        matches!(self.outcome, Some(Err(_)))
    }

    fn finish(self: Box<Self>, commit: Result<(), &StoreError>) {
        let result = match (self.outcome, commit) {
            (Some(Ok(value)), Ok(())) => Ok(value),
            // The work itself failed and was rolled back: its own error is the answer.
            (Some(Err(err)), _) => Err(err),
            (_, Err(err)) => Err(StoreError::Backend(err.to_string())),
            (None, Ok(())) => Err(StoreError::Backend("the write was cancelled".into())),
        };
        // The caller may have gone away; then nobody needs the answer.
        let _ = self.reply.send(result);
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(drop)
        .map_err(backend)
}

/// The writer thread's loop: wait for a job, take whatever else is queued, commit them together.
fn run(conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>, path: &str) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&conn, group);
    }
    // Every store handle is gone. Let SQLite refresh its planner statistics, as it recommends
    // before closing a long-lived connection; dropping the connection then checkpoints the log.
    if let Err(err) = conn.execute_batch("PRAGMA optimize") {
        tracing::warn!(%path, %err, "SQLite optimize before close failed.");
    }
}

fn commit_group(conn: &Connection, mut group: Vec<Box<dyn Job>>) {
    // A job alone in its transaction needs no savepoint: if it fails, the whole transaction is
    // rolled back instead. Savepoints make SQLite keep statement journals, which cost real
    // time on the append path.
    let alone = group.len() == 1;
    let outcome = (|| {
        exec(conn, "BEGIN IMMEDIATE")?;
        for job in &mut group {
            job.run(conn, !alone)?;
        }
        if alone && group[0].failed() {
            exec(conn, "ROLLBACK")
        } else {
            exec(conn, "COMMIT")
        }
    })();
    if let Err(err) = &outcome {
        // Nothing of the group is durable. SQLite may already have rolled back on its own
        // (disk full, I/O error), in which case there is nothing left to roll back.
        if !conn.is_autocommit()
            && let Err(rollback) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(%err, %rollback, "SQLite rollback after a failed write failed.");
        }
        tracing::error!(%err, jobs = group.len(), "SQLite write transaction failed.");
    }
    let commit = outcome.as_ref().map(|_| ());
    for job in group {
        job.finish(commit);
    }
}
