//! The group-commit writer: one thread owns the write connection and commits every job that
//! queued up while the previous commit was syncing, in a single transaction.
//!
//! Callers block in [`Writer::run`] until their job's transaction is durable. Each job runs
//! inside its own savepoint, so a job that fails is rolled back alone and the rest of its group
//! still commits; if the commit itself fails, every job of the group gets the error.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::{Error, Result};

/// Most jobs committed in one transaction; bounds the latency a job can add to its group.
const MAX_GROUP: usize = 512;

/// A queued unit of work: runs inside the group transaction, then learns how the commit went.
trait Job: Send {
    /// Runs the work; returns whether it succeeded (a failure is rolled back to its savepoint).
    fn execute(&mut self, conn: &Connection) -> bool;
    /// Reports the outcome to the caller; `group_error` is set when the group did not commit.
    fn complete(self: Box<Self>, group_error: Option<&str>);
}

struct TypedJob<F, R> {
    work: Option<F>,
    outcome: Option<Result<R>>,
    reply: mpsc::SyncSender<Result<R>>,
}

impl<F, R> Job for TypedJob<F, R>
where
    F: FnOnce(&Connection) -> Result<R> + Send,
    R: Send,
{
    fn execute(&mut self, conn: &Connection) -> bool {
        let outcome = self.work.take().map(|work| work(conn));
        let ok = matches!(outcome, Some(Ok(_)));
        self.outcome = outcome;
        ok
    }

    fn complete(self: Box<Self>, group_error: Option<&str>) {
        let result = match (self.outcome, group_error) {
            (Some(Err(job_error)), _) => Err(job_error),
            (Some(Ok(value)), None) => Ok(value),
            (_, error) => Err(Error::CommitFailed(
                error.unwrap_or("job did not run").to_owned(),
            )),
        };
        // The caller stops waiting only if its thread died; then there is no one to tell.
        let _ = self.reply.send(result);
    }
}

/// Handle to the writer thread. Dropping it finishes the queued jobs and joins the thread.
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn spawn(conn: Connection) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("syncline-writer".into())
            .spawn(move || writer_loop(&conn, &queue))?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Runs `work` on the write connection inside the next group transaction and returns its
    /// result once that transaction has committed (or failed).
    ///
    /// # Errors
    /// The job's own error, [`Error::CommitFailed`] if its group failed to commit, or
    /// [`Error::Closed`] if the writer has stopped.
    pub(crate) fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Box::new(TypedJob {
            work: Some(work),
            outcome: None,
            reply,
        });
        self.jobs
            .as_ref()
            .ok_or(Error::Closed)?
            .send(job)
            .map_err(|_| Error::Closed)?;
        answer.recv().map_err(|_| Error::Closed)?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            // A panicked writer thread has already answered its callers by dropping the replies.
            let _ = thread.join();
        }
    }
}

fn writer_loop(conn: &Connection, queue: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(conn, group);
    }
}

fn commit_group(conn: &Connection, mut group: Vec<Box<dyn Job>>) {
    let outcome = run_group(conn, &mut group);
    if let Err(e) = &outcome {
        tracing::error!(error = %e, jobs = group.len(), "group commit failed");
        // Leaves no transaction open whatever step failed; an error here means none was.
        let _ = conn.execute_batch("ROLLBACK");
    }
    let error = outcome.err().map(|e| e.to_string());
    for job in group {
        job.complete(error.as_deref());
    }
}

fn run_group(conn: &Connection, group: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for job in group.iter_mut() {
        conn.execute_batch("SAVEPOINT job")?;
        if job.execute(conn) {
            conn.execute_batch("RELEASE job")?;
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
        }
    }
    conn.execute_batch("COMMIT")
}
