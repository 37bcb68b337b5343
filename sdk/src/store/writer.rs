//! Group commit without a writer thread: the caller that finds no commit in progress becomes
//! the *leader* and commits, on its own thread, every job queued so far in one transaction;
//! callers that arrive meanwhile queue their job and wait, and one of them leads the next group.
//!
//! An uncontended write therefore costs no thread hand-off at all, and under contention one
//! fsync covers a whole group. To make groups fill up, callers announce a write before they
//! start preparing it ([`Writer::announce`]); a leader that sees fewer queued jobs than
//! announced writers waits up to [`GATHER_WINDOW`] for the rest (PostgreSQL's `commit_delay`
//! with `commit_siblings`). A lone writer never waits. Each job of a group of several runs inside its own savepoint,
//! so a job that fails is rolled back alone and the rest of its group still commits; if the
//! commit itself fails, every job of the group gets the error. Callers block in
//! [`Writer::run`] until their job's transaction is durable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;

use crate::{Error, Result};

/// Most jobs committed in one transaction; bounds the latency a job can add to its group.
const MAX_GROUP: usize = 512;

/// Longest a leader waits for announced writers to queue their jobs before committing.
pub(crate) const GATHER_WINDOW: Duration = Duration::from_micros(200);

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
        let outcome = self.work.take().map(|work| {
            // A panicking job must not take the other jobs of its group (or the connection's
            // transaction state) down with it: it fails alone.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn))).unwrap_or_else(
                |_| {
                    Err(Error::CommitFailed(
                        "a store write panicked; it was rolled back".into(),
                    ))
                },
            )
        });
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

/// The write connection and the queue of jobs waiting for the next group.
pub(crate) struct Writer {
    conn: Mutex<Connection>,
    state: Mutex<State>,
    /// Signalled when a group finishes: waiting callers check their reply or lead.
    turn: Condvar,
    /// Signalled when a job is queued: a gathering leader counts it.
    arrived: Condvar,
    /// Callers between [`Writer::announce`] and the end of their write.
    announced: AtomicUsize,
}

/// A write in preparation; see [`Writer::announce`]. Dropping it withdraws the announcement.
#[must_use = "the announcement is withdrawn when dropped"]
pub(crate) struct Announcement<'a>(&'a Writer);

impl Drop for Announcement<'_> {
    fn drop(&mut self) {
        self.0.announced.fetch_sub(1, Ordering::Relaxed);
        self.0.arrived.notify_one();
    }
}

#[derive(Default)]
struct State {
    queue: Vec<Box<dyn Job>>,
    /// True while a leader is committing a group.
    leading: bool,
}

impl Writer {
    /// Wraps the write connection.
    pub(crate) fn new(conn: Connection) -> Self {
        Self {
            conn: Mutex::new(conn),
            state: Mutex::default(),
            turn: Condvar::new(),
            arrived: Condvar::new(),
            announced: AtomicUsize::new(0),
        }
    }

    /// Tells the writer a job is being prepared, so the current leader may wait for it and
    /// commit it in the same group. Hold the returned value until [`Writer::run`] returns.
    pub(crate) fn announce(&self) -> Announcement<'_> {
        self.announced.fetch_add(1, Ordering::Relaxed);
        Announcement(self)
    }

    /// Runs `work` on the write connection inside the next group transaction and returns its
    /// result once that transaction has committed (or failed).
    ///
    /// # Errors
    /// The job's own error, or [`Error::CommitFailed`] if its group failed to commit.
    pub(crate) fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (reply, answer) = mpsc::sync_channel(1);
        let mut state = self.state.lock();
        state.queue.push(Box::new(TypedJob {
            work: Some(work),
            outcome: None,
            reply,
        }));
        self.arrived.notify_one();
        loop {
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            if state.leading || state.queue.is_empty() {
                // Someone is committing (possibly our job): wait for the group to finish.
                self.turn.wait(&mut state);
                continue;
            }
            state.leading = true;
            drop(state);
            self.lead();
            state = self.state.lock();
        }
    }

    /// Commits one group: what is queued, after waiting up to [`GATHER_WINDOW`] for announced
    /// writers that have not queued their job yet.
    fn lead(&self) {
        let _lead = Leadership(self);
        let deadline = Instant::now() + GATHER_WINDOW;
        let group: Vec<Box<dyn Job>> = {
            let mut state = self.state.lock();
            loop {
                let expected = self.announced.load(Ordering::Relaxed);
                if state.queue.len() >= expected.min(MAX_GROUP)
                    || self.arrived.wait_until(&mut state, deadline).timed_out()
                {
                    break;
                }
            }
            let take = state.queue.len().min(MAX_GROUP);
            state.queue.drain(..take).collect()
        };
        commit_group(&self.conn.lock(), group);
    }
}

/// Ends a leader's turn (even if a job panicked) and wakes the waiting callers.
struct Leadership<'a>(&'a Writer);

impl Drop for Leadership<'_> {
    fn drop(&mut self) {
        self.0.state.lock().leading = false;
        self.0.turn.notify_all();
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
    // Cached statements: parsing these four on every commit was a measurable part of the work
    // the leader does serially for its whole group.
    let sql = |statement: &str| conn.prepare_cached(statement)?.execute([]).map(drop);
    if !conn.is_autocommit() {
        // An earlier failure left a transaction open (its ROLLBACK failed too): end it first.
        sql("ROLLBACK")?;
    }
    sql("BEGIN IMMEDIATE")?;
    if let [job] = group {
        // Alone in its group, a job needs no savepoint: its failure rolls back everything.
        return if job.execute(conn) {
            sql("COMMIT")
        } else {
            sql("ROLLBACK")
        };
    }
    for job in group.iter_mut() {
        sql("SAVEPOINT job")?;
        if job.execute(conn) {
            sql("RELEASE job")?;
        } else {
            sql("ROLLBACK TO job")?;
            sql("RELEASE job")?;
        }
    }
    sql("COMMIT")
}
