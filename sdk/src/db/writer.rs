//! Group commit without a writer thread: concurrent writes share one transaction and one
//! fsync, and each write runs on the connection as soon as it arrives.
//!
//! Callers queue a job and wait; the work is done by the callers themselves, on their own
//! threads, in two roles (there is no background thread, and an uncontended write costs no
//! thread hand-off):
//!
//! 1. **Run.** One caller at a time runs every queued job on the write connection, inside the
//!    *open transaction* (begun by the first job after the last commit). Each job but a
//!    transaction's first runs in its own savepoint, so a job that fails is rolled back alone
//!    and its caller told at once; the first, if it fails, rolls the whole transaction back,
//!    which then holds nothing else.
//! 2. **Commit.** A caller commits the open transaction; the connection's `synchronous`
//!    setting decides whether that `COMMIT` fsyncs the WAL. The commit waits until the
//!    transaction holds as many jobs as there are announced writers ([`Writer::announce`]: a
//!    caller is announced from just before it prepares its write until the write returns), at
//!    most [`GATHER_WINDOW`] after the run that began the transaction got the connection
//!    (PostgreSQL's `commit_delay` with `commit_siblings`), so one commit and one fsync cover
//!    all the concurrent writers. A lone writer never waits.
//!
//! Running each job as it arrives overlaps the connection's work with the other callers
//! preparing theirs, so all that is left once the last one has run is the `COMMIT`.
//!
//! A caller returns once its job's transaction has committed. Any caller whose write is not
//! done may take a free role. Who is woken for what:
//! - a caller that leaves, or starts a commit, hands the run role to the first queued job's
//!   owner (which cannot return before its job has run);
//! - the owner of the open transaction's first job keeps the gathering deadline: it sleeps with
//!   a timer until then (woken to set it when another caller began its transaction); once the
//!   deadline has passed, a caller still running or committing commits or hands on when done;
//! - whoever completes the gathering (the last job's runner, or a withdrawn announcement)
//!   commits or wakes that owner;
//! - every other caller sleeps until its result is ready.
//!
//! A panic in the writer's own code (jobs' panics are caught) fails the jobs it held, frees
//! its role and withdraws the panicking caller's own job if still queued, so the other callers
//! carry on; a transaction it leaves open holds no waiting job, and the next run rolls it back
//! as stale before beginning its own.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, Thread, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use rusqlite::Connection;

use crate::{Error, Result};

/// Most jobs one caller runs in one turn; bounds how long the others wait for the connection.
const MAX_RUN: usize = 512;

/// Longest a transaction waits for announced writers before it commits, counted from when the
/// run that began it got the connection.
pub(crate) const GATHER_WINDOW: Duration = Duration::from_micros(200);

/// A queued unit of work: runs inside the open transaction, then learns how the commit went.
trait Job: Send {
    /// Runs the work; returns whether it succeeded (a failure is rolled back).
    fn execute(&mut self, conn: &Connection) -> bool;
    /// Reports the outcome to the caller; `error` is set when the transaction did not commit.
    fn complete(self: Box<Self>, error: Option<&str>);
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
            // A panicking job must not take the other jobs of its transaction (or the
            // connection's transaction state) down with it: it fails alone.
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

    fn complete(self: Box<Self>, error: Option<&str>) {
        let result = match (self.outcome, error) {
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

/// A job and the thread waiting for it. Dropping an entry wakes its owner: after its job
/// completed, or, if the writer panicked while holding it, to find its reply channel closed.
struct Entry {
    job: Option<Box<dyn Job>>,
    owner: Thread,
}

impl Entry {
    fn owner_id(&self) -> ThreadId {
        self.owner.id()
    }

    fn execute(&mut self, conn: &Connection) -> bool {
        self.job.as_mut().is_some_and(|job| job.execute(conn))
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.owner.unpark();
    }
}

/// The write connection and the jobs on their way through it.
pub(crate) struct Writer {
    conn: Mutex<Connection>,
    state: Mutex<State>,
    /// Callers between [`Writer::announce`] and the end of their write.
    announced: AtomicUsize,
    /// How long a transaction waits for announced writers: [`GATHER_WINDOW`] but in tests.
    gather: Duration,
    /// Transactions committed, the jobs they carried and the time their `COMMIT`s took.
    commits: AtomicU64,
    committed_jobs: AtomicU64,
    commit_nanos: AtomicU64,
}

/// What the writer has committed; see [`Writer::commit_counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommitCounts {
    /// Transactions committed.
    pub(crate) commits: u64,
    /// Jobs those transactions carried.
    pub(crate) jobs: u64,
    /// Time spent in their `COMMIT` statements: writing the WAL, the fsync if any, and the
    /// WAL checkpoints SQLite runs at the end of some commits.
    pub(crate) commit_time: Duration,
}

/// A write in preparation; see [`Writer::announce`]. Dropping it withdraws the announcement.
#[must_use = "the announcement is withdrawn when dropped"]
pub(crate) struct Announcement<'a>(&'a Writer);

impl Drop for Announcement<'_> {
    fn drop(&mut self) {
        let writer = self.0;
        let state = writer.state.lock();
        let announced = writer.announced.fetch_sub(1, Ordering::Relaxed) - 1;
        // A transaction may have been waiting for this writer (whose write failed, or was
        // given up, or returned before the others): wake it if it need not wait any more.
        let wake = state
            .gathered(announced)
            .then(|| state.open[0].owner.clone());
        drop(state);
        wake_all(wake);
    }
}

#[derive(Default)]
struct State {
    /// Jobs waiting to run.
    queue: Vec<Entry>,
    /// True while a caller runs jobs on the connection.
    running: bool,
    /// The caller the run role was handed to, until it takes it.
    run_handed: Option<ThreadId>,
    /// Jobs that ran in the open transaction, waiting for its commit. Outside a run or a
    /// commit, the connection has a transaction open whenever this is non-empty; one open
    /// while it is empty is stale (a failed `ROLLBACK`, a panic) and the next run rolls it back.
    open: Vec<Entry>,
    /// When the open transaction's first run got the connection.
    open_since: Option<Instant>,
    /// True while a caller commits the open transaction.
    committing: bool,
}

/// The role a caller takes next.
enum Role {
    Run,
    Commit,
    /// Sleep until woken, or until the instant the open transaction stops gathering.
    Wait(Option<Instant>),
}

impl State {
    /// Whether the open transaction can commit without waiting: it holds as many jobs as there
    /// are announced writers, and no other job is queued or running.
    fn gathered(&self, announced: usize) -> bool {
        !self.committing
            && !self.running
            && self.queue.is_empty()
            && !self.open.is_empty()
            && self.open.len() >= announced
    }

    /// Whether the open transaction must commit now: gathered, or past its deadline.
    fn commit_due(&self, announced: usize, gather: Duration, now: Instant) -> bool {
        !self.committing
            && !self.running
            && !self.open.is_empty()
            && (self.gathered(announced) || self.open_since.is_none_or(|t| now >= t + gather))
    }

    /// What the caller `me` does next, with `announced` callers between [`Writer::announce`]
    /// and the end of their write.
    fn role_for(&self, me: ThreadId, announced: usize, gather: Duration, now: Instant) -> Role {
        if self.commit_due(announced, gather, now) {
            return Role::Commit;
        }
        if !self.queue.is_empty() && !self.running && self.run_handed.is_none_or(|t| t == me) {
            return Role::Run;
        }
        // The owner of the transaction's first job keeps the deadline, asleep with a timer
        // until it (whatever else goes on meanwhile). Once it has passed, a caller that is
        // running or committing is awake and commits, or hands on, when it is done. The other
        // owners keep no timer: one each would wake them all, for nothing, during the fsync.
        let deadline = self
            .open
            .first()
            .filter(|first| first.owner_id() == me)
            .and(self.open_since)
            .map(|t| t + gather)
            .filter(|deadline| *deadline > now);
        Role::Wait(deadline)
    }

    /// Hands the run role to the first queued job's owner if no caller runs or has been
    /// handed it, and wakes the open transaction's first owner if its commit is due. Returns
    /// the callers to wake.
    fn hand_out(&mut self, announced: usize, gather: Duration, now: Instant) -> Vec<Thread> {
        let mut wake = Vec::new();
        if !self.queue.is_empty() && !self.running && self.run_handed.is_none() {
            let owner = &self.queue[0].owner;
            self.run_handed = Some(owner.id());
            wake.push(owner.clone());
        }
        if self.commit_due(announced, gather, now) {
            wake.push(self.open[0].owner.clone());
        }
        wake
    }
}

/// How a turn of running jobs went.
struct RunOutcome {
    /// Jobs that ran and wait in the open transaction.
    ran: Vec<Entry>,
    /// Jobs whose work failed and was rolled back: their callers can be told now.
    failed: Vec<Entry>,
    /// Set when the open transaction itself failed and was rolled back: every job in it
    /// (including earlier turns') fails with this.
    broken: Option<String>,
}

/// What a [`PanicGuard`] cleans up.
#[derive(Clone, Copy)]
enum Held {
    /// The run role: the transaction it was adding to is failed and left to the next run,
    /// which finds it stale (no jobs wait in it) and rolls it back.
    Run,
    /// The commit role: its jobs fail as its local list of them is dropped.
    Commit,
    /// A caller's place in [`Writer::run`]: its job, if still queued, is taken out (it may
    /// have been committing others' jobs); nobody would be told the job's outcome, and nobody
    /// would keep the deadline of a transaction it began.
    Caller(ThreadId),
}

/// Frees what a caller held if the writer's own code panics (a job's panic is caught), and
/// wakes the callers that can carry on.
struct PanicGuard<'a> {
    writer: &'a Writer,
    held: Held,
    /// False when created on a thread already unwinding (a store write from a `Drop`): the
    /// guard then has nothing of its own to clean up.
    armed: bool,
}

impl<'a> PanicGuard<'a> {
    /// Create it with the state unlocked: its drop locks it.
    fn new(writer: &'a Writer, held: Held) -> Self {
        Self {
            writer,
            held,
            armed: !thread::panicking(),
        }
    }
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if !self.armed || !thread::panicking() {
            return;
        }
        let writer = self.writer;
        let mut state = writer.state.lock();
        let lost: Vec<Entry> = match self.held {
            Held::Run => {
                state.running = false;
                state.open_since = None;
                std::mem::take(&mut state.open)
            }
            Held::Commit => {
                state.committing = false;
                Vec::new()
            }
            Held::Caller(me) => {
                if state.run_handed == Some(me) {
                    state.run_handed = None;
                }
                state.queue.extract_if(.., |e| e.owner_id() == me).collect()
            }
        };
        let wake = state.hand_out(
            writer.announced.load(Ordering::Relaxed),
            writer.gather,
            Instant::now(),
        );
        drop(state);
        // Their reply channels close with them: their callers get an error.
        drop(lost);
        wake_all(wake);
    }
}

impl Writer {
    /// Wraps the write connection.
    pub(crate) fn new(conn: Connection) -> Self {
        Self::with_gather_window(conn, GATHER_WINDOW)
    }

    fn with_gather_window(conn: Connection, gather: Duration) -> Self {
        Self {
            conn: Mutex::new(conn),
            state: Mutex::default(),
            announced: AtomicUsize::new(0),
            gather,
            commits: AtomicU64::new(0),
            committed_jobs: AtomicU64::new(0),
            commit_nanos: AtomicU64::new(0),
        }
    }

    /// What has been committed so far (read field by field: a snapshot only when no commit is
    /// under way).
    pub(crate) fn commit_counts(&self) -> CommitCounts {
        CommitCounts {
            commits: self.commits.load(Ordering::Relaxed),
            jobs: self.committed_jobs.load(Ordering::Relaxed),
            commit_time: Duration::from_nanos(self.commit_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Tells the writer a job is being prepared, so the open transaction may wait for it and
    /// commit it with the others. Hold the returned value until the write returns.
    pub(crate) fn announce(&self) -> Announcement<'_> {
        self.announced.fetch_add(1, Ordering::Relaxed);
        Announcement(self)
    }

    /// Runs `work` on the write connection inside the open transaction and returns its result
    /// once that transaction has committed (or failed).
    ///
    /// # Errors
    /// The job's own error, or [`Error::CommitFailed`] if its transaction failed.
    pub(crate) fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (reply, answer) = mpsc::sync_channel(1);
        let me = thread::current();
        // Declared before `state`, so an unwinding `state` is unlocked before it runs.
        let _withdraw = PanicGuard::new(self, Held::Caller(me.id()));
        let mut state = self.state.lock();
        state.queue.push(Entry {
            job: Some(Box::new(TypedJob {
                work: Some(work),
                outcome: None,
                reply,
            })),
            owner: me.clone(),
        });
        loop {
            let result = match answer.try_recv() {
                Ok(result) => Some(result),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => Some(Err(Error::CommitFailed(
                    "the store's writer failed while holding this write; it was rolled back".into(),
                ))),
            };
            let announced = self.announced.load(Ordering::Relaxed);
            if let Some(result) = result {
                // Leaving: hand on what this caller will no longer do.
                let wake = state.hand_out(announced, self.gather, Instant::now());
                drop(state);
                wake_all(wake);
                return result;
            }
            match state.role_for(me.id(), announced, self.gather, Instant::now()) {
                Role::Run => state = self.run_queued(state),
                Role::Commit => state = self.commit(state),
                Role::Wait(until) => {
                    drop(state);
                    // Woken when the result is sent or a role is handed over; a stray wake-up
                    // just goes round the loop again.
                    match until {
                        Some(until) => {
                            thread::park_timeout(until.saturating_duration_since(Instant::now()));
                        }
                        None => thread::park(),
                    }
                    state = self.state.lock();
                }
            }
        }
    }

    /// Runs the queued jobs (up to [`MAX_RUN`]) in the open transaction.
    fn run_queued<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let take = state.queue.len().min(MAX_RUN);
        let entries: Vec<Entry> = state.queue.drain(..take).collect();
        let in_transaction = !state.open.is_empty();
        state.running = true;
        state.run_handed = None;
        drop(state);

        let guard = PanicGuard::new(self, Held::Run);
        let (outcome, started) = {
            let conn = self.conn.lock();
            // A new transaction's window starts now, not while this caller waited for the
            // connection (behind a commit's fsync, say).
            let started = Instant::now();
            (run_jobs(&conn, entries, in_transaction), started)
        };
        drop(guard);

        let mut state = self.state.lock();
        state.running = false;
        let RunOutcome {
            ran,
            failed,
            broken,
        } = outcome;
        let lost = if let Some(error) = broken {
            tracing::error!(error, "a write transaction failed and was rolled back");
            let mut lost = std::mem::take(&mut state.open);
            lost.extend(ran);
            Some((lost, error))
        } else {
            state.open.extend(ran);
            None
        };
        if state.open.is_empty() {
            state.open_since = None;
        } else if !in_transaction {
            state.open_since = Some(started);
        }
        // When another caller's job began the transaction, its owner keeps the deadline: it
        // may be asleep without a timer, so wake it to set one.
        let me = thread::current().id();
        let wake = (!in_transaction)
            .then(|| state.open.first())
            .flatten()
            .filter(|first| first.owner_id() != me)
            .map(|first| first.owner.clone());
        drop(state);
        wake_all(wake);
        complete(failed, None);
        if let Some((lost, error)) = lost {
            complete(lost, Some(&error));
        }
        self.state.lock()
    }

    /// Commits the open transaction and tells its callers.
    fn commit<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let entries = std::mem::take(&mut state.open);
        state.open_since = None;
        state.committing = true;
        // Taken before the state is released, so that no job runs into the transaction after
        // its entries were taken; it is free, as no caller is running jobs.
        let conn = self.conn.lock();
        // Whatever is queued runs next, in the next transaction, by another caller.
        let wake = state.hand_out(
            self.announced.load(Ordering::Relaxed),
            self.gather,
            Instant::now(),
        );
        drop(state);
        let guard = PanicGuard::new(self, Held::Commit);
        wake_all(wake);

        let started = Instant::now();
        let committed = if conn.is_autocommit() {
            // SQLite rolled the transaction back by itself (after an I/O error, say).
            Err("the write transaction was rolled back before its commit".to_owned())
        } else {
            sql(&conn, "COMMIT").map_err(|e| e.to_string())
        };
        let took = started.elapsed();
        if committed.is_err() && !conn.is_autocommit() {
            // If this fails too, the next run finds the stale transaction and rolls it back.
            let _ = conn.execute_batch("ROLLBACK");
        }
        drop(conn);
        if committed.is_ok() {
            self.commits.fetch_add(1, Ordering::Relaxed);
            let jobs = u64::try_from(entries.len()).unwrap_or(u64::MAX);
            self.committed_jobs.fetch_add(jobs, Ordering::Relaxed);
            let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            self.commit_nanos.fetch_add(nanos, Ordering::Relaxed);
        }
        let error = committed.err().inspect(|e| {
            tracing::error!(error = %e, jobs = entries.len(), "commit failed");
        });

        drop(guard);
        self.state.lock().committing = false;
        complete(entries, error.as_deref());
        self.state.lock()
    }
}

/// Tells each job's caller its outcome; dropping the entry wakes it.
fn complete(entries: Vec<Entry>, error: Option<&str>) {
    for mut entry in entries {
        if let Some(job) = entry.job.take() {
            job.complete(error);
        }
    }
}

fn wake_all(threads: impl IntoIterator<Item = Thread>) {
    for thread in threads {
        thread.unpark();
    }
}

/// Runs one statement through the connection's statement cache: parsing the transaction
/// statements on every use was a measurable part of the serial work.
fn sql(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?.execute([]).map(drop)
}

/// Runs `entries` in the open transaction (`in_transaction`: jobs of earlier turns wait in
/// it), beginning one if none is open.
fn run_jobs(conn: &Connection, entries: Vec<Entry>, in_transaction: bool) -> RunOutcome {
    let mut outcome = RunOutcome {
        ran: Vec::with_capacity(entries.len()),
        failed: Vec::new(),
        broken: None,
    };
    let mut in_transaction = in_transaction;
    let mut entries = entries.into_iter();
    while let Some(mut entry) = entries.next() {
        let step = if in_transaction {
            if conn.is_autocommit() {
                // SQLite rolled the open transaction back by itself (an I/O error, say): the
                // jobs waiting in it are lost.
                Err("the write transaction was rolled back by SQLite".to_owned())
            } else {
                sql(conn, "SAVEPOINT job")
                    .and_then(|()| {
                        let ok = entry.execute(conn);
                        if !ok {
                            sql(conn, "ROLLBACK TO job")?;
                        }
                        sql(conn, "RELEASE job").map(|()| ok)
                    })
                    .map_err(|e| format!("write transaction failed: {e}"))
            }
        } else {
            // A transaction left open by a failed ROLLBACK holds work whose callers were told
            // it failed: it must not be committed with the next jobs.
            let stale = if conn.is_autocommit() {
                Ok(())
            } else {
                sql(conn, "ROLLBACK")
            };
            // The transaction's first job needs no savepoint: if it fails, rolling the whole
            // transaction back loses nothing else.
            stale
                .and_then(|()| sql(conn, "BEGIN IMMEDIATE"))
                .and_then(|()| {
                    if entry.execute(conn) {
                        Ok(true)
                    } else {
                        sql(conn, "ROLLBACK").map(|()| false)
                    }
                })
                .map_err(|e| format!("write transaction failed: {e}"))
        };
        match step {
            Ok(true) => {
                in_transaction = true;
                outcome.ran.push(entry);
            }
            Ok(false) => outcome.failed.push(entry),
            Err(error) => {
                // The transaction is in an unknown state: roll it back with everything in it.
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                outcome.broken = Some(error);
                outcome.ran.push(entry);
                outcome.ran.extend(entries);
                break;
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Barrier};

    use super::*;

    type TestJob = Box<dyn FnOnce(&Connection) -> Result<()> + Send>;

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
        writer: Arc<Writer>,
    }

    /// A writer over a fresh file with one table, `rows(id)`, whose deferred foreign key only
    /// `COMMIT` checks.
    /// Waits (bounded) until `condition` holds.
    fn wait_until(condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !condition() {
            assert!(Instant::now() < deadline, "the condition never held");
            thread::yield_now();
        }
    }

    /// An entry of `owner`'s, as the writer's state holds it (the job itself is not needed by
    /// the decisions tested in virtual time).
    fn entry(owner: &Thread) -> Entry {
        Entry {
            job: None,
            owner: owner.clone(),
        }
    }

    #[test]
    fn an_open_transaction_commits_when_gathered_or_at_its_deadline() {
        let gather = Duration::from_millis(50);
        let t0 = Instant::now();
        let me = thread::current();
        let mut state = State {
            open: vec![entry(&me)],
            open_since: Some(t0),
            ..State::default()
        };
        // Two writers announced, one job in: gather until the deadline, not a moment less.
        assert!(!state.commit_due(2, gather, t0));
        assert!(!state.commit_due(2, gather, t0 + Duration::from_millis(49)));
        assert!(state.commit_due(2, gather, t0 + gather));
        // Everyone announced is in: commit at once.
        assert!(state.commit_due(1, gather, t0));
        // Never while a run or a commit is under way.
        state.running = true;
        assert!(!state.commit_due(1, gather, t0 + gather * 10));
        state.running = false;
        state.committing = true;
        assert!(!state.commit_due(1, gather, t0 + gather * 10));
    }

    #[test]
    fn a_keeper_woken_mid_run_keeps_its_deadline() {
        let gather = Duration::from_millis(300);
        let t0 = Instant::now();
        let keeper = thread::current();
        let other = thread::spawn(|| {}).thread().clone();
        // The keeper's job is in the open transaction; another caller is running its own.
        let state = State {
            open: vec![entry(&keeper)],
            open_since: Some(t0),
            running: true,
            ..State::default()
        };
        // Woken early (a stray unpark), the keeper sleeps again with the same deadline.
        match state.role_for(keeper.id(), 3, gather, t0 + Duration::from_millis(10)) {
            Role::Wait(Some(deadline)) => assert_eq!(deadline, t0 + gather),
            _ => panic!("the keeper must wait for its deadline"),
        }
        // Another owner keeps no timer; past the deadline, the running caller commits.
        assert!(matches!(
            state.role_for(other.id(), 3, gather, t0 + Duration::from_millis(10)),
            Role::Wait(None)
        ));
        assert!(matches!(
            state.role_for(keeper.id(), 3, gather, t0 + gather * 2),
            Role::Wait(None)
        ));
        // With the run over and the deadline past, the keeper commits.
        let done = State {
            running: false,
            ..state
        };
        assert!(matches!(
            done.role_for(keeper.id(), 3, gather, t0 + gather),
            Role::Commit
        ));
    }

    #[test]
    fn the_run_role_goes_to_the_first_queued_owner() {
        let gather = Duration::from_millis(50);
        let t0 = Instant::now();
        let first = thread::current();
        let mut state = State {
            queue: vec![entry(&first)],
            ..State::default()
        };
        let wake = state.hand_out(1, gather, t0);
        assert_eq!(wake.len(), 1);
        assert_eq!(wake[0].id(), first.id());
        assert_eq!(state.run_handed, Some(first.id()));
        assert!(matches!(
            state.role_for(first.id(), 1, gather, t0),
            Role::Run
        ));
        // Handed once: a second hand-out wakes nobody.
        assert!(state.hand_out(1, gather, t0).is_empty());
    }

    fn fixture(gather: Duration) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;
             CREATE TABLE parents (id INTEGER PRIMARY KEY);
             CREATE TABLE rows (id INTEGER PRIMARY KEY, parent INTEGER
                 REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .expect("schema");
        let writer = Arc::new(Writer::with_gather_window(conn, gather));
        Fixture {
            _dir: dir,
            path,
            writer,
        }
    }

    fn insert(id: i64) -> impl FnOnce(&Connection) -> Result<()> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO rows (id) VALUES (?1)", [id])?;
            Ok(())
        }
    }

    /// The committed rows, read through a connection of their own.
    fn committed(path: &Path) -> Vec<i64> {
        let conn = Connection::open(path).expect("open");
        let mut stmt = conn
            .prepare("SELECT id FROM rows ORDER BY id")
            .expect("query");
        stmt.query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    /// A writer that announces itself (then meets `announced`) and never writes, until
    /// withdrawn.
    struct AbsentWriter {
        withdraw: mpsc::Sender<()>,
        thread: thread::JoinHandle<()>,
    }

    impl AbsentWriter {
        fn announce(writer: &Arc<Writer>, announced: &Arc<Barrier>) -> Self {
            let (withdraw, withdrawn) = mpsc::channel();
            let (writer, announced) = (writer.clone(), announced.clone());
            let thread = thread::spawn(move || {
                let _never = writer.announce();
                announced.wait();
                let _ = withdrawn.recv();
            });
            Self { withdraw, thread }
        }

        fn withdraw(self) {
            let _ = self.withdraw.send(());
            self.thread.join().expect("absent writer");
        }
    }

    /// Runs `first` and then `rest` from one thread each, all announced before any starts,
    /// so (with a long gathering window) they share one transaction. `first` runs before the
    /// others start, so it is the transaction's first job and the others run in savepoints.
    fn run_together(writer: &Arc<Writer>, first: TestJob, rest: Vec<TestJob>) -> Vec<Result<()>> {
        let announced = Arc::new(Barrier::new(rest.len() + 2));
        let (first_ran, wait_first) = mpsc::channel::<()>();
        let wait_first = Arc::new(Mutex::new(wait_first));
        let mut handles = Vec::new();
        {
            let (writer, announced) = (writer.clone(), announced.clone());
            handles.push(thread::spawn(move || {
                let _announced = writer.announce();
                announced.wait();
                writer.run(move |conn| {
                    let result = first(conn);
                    let _ = first_ran.send(());
                    result
                })
            }));
        }
        for job in rest {
            let (writer, announced, wait_first) =
                (writer.clone(), announced.clone(), wait_first.clone());
            handles.push(thread::spawn(move || {
                let _announced = writer.announce();
                announced.wait();
                // Returns once the first job has run: with its message, or, for the others,
                // when the job (and the sender in it) is dropped after running.
                let _ = wait_first.lock().recv();
                writer.run(job)
            }));
        }
        announced.wait();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    }

    #[test]
    fn announced_writers_share_one_commit_and_a_failing_job_is_rolled_back_alone() {
        let fx = fixture(Duration::from_secs(60));
        let outcomes = run_together(
            &fx.writer,
            Box::new(insert(1)),
            vec![
                Box::new(|conn: &Connection| -> Result<()> {
                    insert(2)(conn)?;
                    Err(Error::InvalidChange("refused after writing".into()))
                }),
                Box::new(|conn: &Connection| -> Result<()> {
                    insert(3)(conn)?;
                    panic!("a job that panics after writing")
                }),
                Box::new(insert(4)),
            ],
        );
        assert!(outcomes[0].is_ok() && outcomes[3].is_ok(), "{outcomes:?}");
        assert!(matches!(outcomes[1], Err(Error::InvalidChange(_))));
        assert!(matches!(outcomes[2], Err(Error::CommitFailed(_))));
        assert_eq!(committed(&fx.path), vec![1, 4]);
        // One transaction, holding the two jobs that did not fail.
        let counts = fx.writer.commit_counts();
        assert_eq!((counts.commits, counts.jobs), (1, 2));
    }

    #[test]
    fn a_failing_first_job_leaves_no_transaction_behind() {
        let fx = fixture(Duration::from_secs(60));
        let failed = fx.writer.run(|conn| -> Result<()> {
            insert(1)(conn)?;
            Err(Error::InvalidChange("refused".into()))
        });
        assert!(matches!(failed, Err(Error::InvalidChange(_))));
        assert!(fx.writer.conn.lock().is_autocommit());
        fx.writer.run(insert(2)).expect("the next transaction");
        assert_eq!(committed(&fx.path), vec![2]);
    }

    #[test]
    fn a_failed_commit_fails_every_job_of_its_transaction_and_the_next_one_commits() {
        let fx = fixture(Duration::from_secs(60));
        let outcomes = run_together(
            &fx.writer,
            Box::new(insert(1)),
            // Valid until COMMIT checks the deferred foreign key.
            vec![Box::new(|conn: &Connection| -> Result<()> {
                conn.execute("INSERT INTO rows (id, parent) VALUES (2, 99)", [])?;
                Ok(())
            })],
        );
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Err(Error::CommitFailed(_)))),
            "{outcomes:?}"
        );
        assert_eq!(committed(&fx.path), Vec::<i64>::new());
        fx.writer.run(insert(3)).expect("the writer goes on");
        assert_eq!(committed(&fx.path), vec![3]);
    }

    /// SQLite rolls a transaction back by itself after some errors (a full disk, an I/O
    /// error); a job ending it here stands in for that.
    #[test]
    fn a_transaction_rolled_back_under_the_writer_fails_every_job_in_it() {
        let fx = fixture(Duration::from_secs(60));
        let ends_it = || -> TestJob {
            Box::new(|conn: &Connection| -> Result<()> {
                insert(2)(conn)?;
                conn.execute_batch("ROLLBACK")?;
                Ok(())
            })
        };
        // In the middle of a transaction: the savepoint's RELEASE finds no transaction.
        let outcomes = run_together(&fx.writer, Box::new(insert(1)), vec![ends_it()]);
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Err(Error::CommitFailed(_)))),
            "{outcomes:?}"
        );
        // As a transaction's only job: the commit finds no transaction.
        let alone = fx.writer.run(ends_it());
        assert!(matches!(alone, Err(Error::CommitFailed(_))), "{alone:?}");
        assert_eq!(committed(&fx.path), Vec::<i64>::new());
        fx.writer.run(insert(3)).expect("the writer goes on");
        assert_eq!(committed(&fx.path), vec![3]);
    }

    #[test]
    fn a_lone_or_unannounced_writer_does_not_wait_for_the_window() {
        let window = Duration::from_secs(60);
        let fx = fixture(window);
        let start = Instant::now();
        fx.writer.run(insert(1)).expect("unannounced");
        {
            let _announced = fx.writer.announce();
            fx.writer.run(insert(2)).expect("announced, alone");
        }
        assert!(start.elapsed() < window / 2, "a lone writer waited");
        assert_eq!(committed(&fx.path), vec![1, 2]);
    }

    #[test]
    fn a_writer_that_never_arrives_delays_a_commit_by_the_window() {
        let window = Duration::from_millis(50);
        let fx = fixture(window);
        let announced = Arc::new(Barrier::new(2));
        let absent = AbsentWriter::announce(&fx.writer, &announced);
        announced.wait();
        let start = Instant::now();
        {
            let _mine = fx.writer.announce();
            fx.writer
                .run(insert(1))
                .expect("commits without the absent writer");
        }
        let waited = start.elapsed();
        assert!(waited >= window, "did not wait for the announced writer");
        // Bounded by the window (a scheduling hiccup may add milliseconds).
        assert!(waited < window * 40, "waited {waited:?}");
        assert_eq!(committed(&fx.path), vec![1]);
        absent.withdraw();
    }

    #[test]
    fn a_withdrawn_announcement_ends_the_wait_for_it() {
        let window = Duration::from_secs(60);
        let fx = fixture(window);
        let announced = Arc::new(Barrier::new(2));
        let (mine_ran, wait_mine) = mpsc::channel::<()>();
        let gives_up = {
            let (writer, announced) = (fx.writer.clone(), announced.clone());
            thread::spawn(move || {
                let _announced = writer.announce();
                announced.wait();
                // Withdrawn only once the other write ran and waits in the open transaction.
                wait_mine.recv().expect("the other write ran");
                wait_until(|| {
                    let state = writer.state.lock();
                    !state.running && !state.open.is_empty()
                });
            })
        };
        announced.wait();
        let start = Instant::now();
        {
            let _mine = fx.writer.announce();
            fx.writer
                .run(move |conn| {
                    insert(1)(conn)?;
                    mine_ran.send(()).expect("the other thread waits");
                    Ok(())
                })
                .expect("write");
        }
        assert!(
            start.elapsed() < window / 2,
            "waited for a withdrawn writer"
        );
        gives_up.join().expect("thread");
        assert_eq!(committed(&fx.path), vec![1]);
    }

    /// The deadline keeper (the first job's owner) is woken while another caller runs a job
    /// into its transaction; the commit must still come at the deadline, though an announced
    /// writer never arrives and the other runner goes to sleep.
    #[test]
    fn the_deadline_holds_when_another_caller_runs_into_the_transaction() {
        let window = Duration::from_millis(300);
        let fx = fixture(window);
        let all_announced = Arc::new(Barrier::new(4));
        let absent = AbsentWriter::announce(&fx.writer, &all_announced);
        let (first_ran, wait_first) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel::<&'static str>();
        let keeper = {
            let (writer, all_announced, done) =
                (fx.writer.clone(), all_announced.clone(), done.clone());
            thread::spawn(move || {
                let _announced = writer.announce();
                all_announced.wait();
                writer
                    .run(move |conn| {
                        insert(1)(conn)?;
                        first_ran.send(()).expect("test waits");
                        Ok(())
                    })
                    .expect("first write");
                done.send("keeper").expect("test waits");
            })
        };
        let (second_started, wait_second) = mpsc::channel::<ThreadId>();
        let hold_second = Arc::new(Barrier::new(2));
        let runner = {
            let (writer, all_announced, hold) = (
                fx.writer.clone(),
                all_announced.clone(),
                hold_second.clone(),
            );
            thread::spawn(move || {
                let _announced = writer.announce();
                all_announced.wait();
                wait_first.recv().expect("first job ran");
                // The keeper has finished its run: its job waits in the open transaction.
                wait_until(|| {
                    let state = writer.state.lock();
                    !state.running && state.open.len() == 1
                });
                writer
                    .run(move |conn| {
                        second_started
                            .send(thread::current().id())
                            .expect("test waits");
                        hold.wait();
                        insert(2)(conn)
                    })
                    .expect("second write");
                done.send("runner").expect("test waits");
            })
        };
        all_announced.wait();
        let ran_by = wait_second.recv().expect("second job started");
        assert_eq!(
            ran_by,
            runner.thread().id(),
            "the second job must run on its own caller's thread, into the keeper's transaction"
        );
        // A stray wake-up while the second job runs: the keeper looks again, mid-run. Nothing
        // observable marks that it has looked, so it is given a moment; the decision it takes
        // is tested in virtual time by `a_keeper_woken_mid_run_keeps_its_deadline`.
        keeper.thread().unpark();
        thread::sleep(Duration::from_millis(50));
        hold_second.wait();
        let start = Instant::now();
        for _ in 0..2 {
            finished
                .recv_timeout(window * 50)
                .expect("the commit waited past its deadline");
        }
        assert!(start.elapsed() < window * 50);
        assert_eq!(committed(&fx.path), vec![1, 2]);
        absent.withdraw();
        for handle in [keeper, runner] {
            handle.join().expect("thread");
        }
    }

    /// A subscriber whose every event panics: the writer's own `tracing::error!` on a failed
    /// commit then panics inside the writer, outside any job.
    struct PanickingSubscriber;

    impl tracing::Subscriber for PanickingSubscriber {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {
            panic!("a subscriber that panics");
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn a_panic_in_the_writer_fails_its_write_and_the_others_carry_on() {
        let fx = fixture(Duration::from_secs(60));
        let writer = fx.writer.clone();
        let panicked = thread::spawn(move || {
            tracing::subscriber::with_default(PanickingSubscriber, || {
                // Fails at COMMIT (the deferred foreign key), which logs, which panics.
                writer.run(|conn| -> Result<()> {
                    conn.execute("INSERT INTO rows (id, parent) VALUES (1, 99)", [])?;
                    Ok(())
                })
            })
        })
        .join();
        assert!(
            panicked.is_err(),
            "the subscriber's panic reached the caller"
        );
        // The role it held is free again (a stuck writer would hang: bounded here) and nothing
        // of its write was committed.
        let (done, result) = mpsc::channel();
        let writer = fx.writer.clone();
        thread::spawn(move || done.send(writer.run(insert(2))));
        result
            .recv_timeout(Duration::from_secs(30))
            .expect("the writer is stuck after the panic")
            .expect("the writer goes on");
        let outcomes = run_together(&fx.writer, Box::new(insert(3)), vec![Box::new(insert(4))]);
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(committed(&fx.path), vec![2, 3, 4]);
    }

    #[test]
    fn many_writers_lose_nothing() {
        const THREADS: i64 = 4;
        const WRITES: i64 = 50;
        let fx = fixture(Duration::from_secs(60));
        let barrier = Arc::new(Barrier::new(usize::try_from(THREADS).expect("small")));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (writer, barrier) = (fx.writer.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    for i in 0..WRITES {
                        let _announced = writer.announce();
                        writer.run(insert(t * WRITES + i)).expect("write");
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("writer thread");
        }
        // How the writes grouped depends on scheduling; the grouping itself is checked by
        // `announced_writers_share_one_commit_and_a_failing_job_is_rolled_back_alone`.
        assert_eq!(
            committed(&fx.path),
            (0..THREADS * WRITES).collect::<Vec<_>>()
        );
    }
}
