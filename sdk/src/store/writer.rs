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
//!    transaction holds a job from every announced writer ([`Writer::announce`]: a caller is
//!    announced from before it prepares its write until the write returns), at most
//!    [`GATHER_WINDOW`] after the transaction's first job ran (PostgreSQL's `commit_delay` with
//!    `commit_siblings`), so one commit and one fsync cover all the concurrent writers. A lone
//!    writer never waits.
//!
//! Running each job as it arrives overlaps the connection's work with the other callers
//! preparing theirs, so all that is left once the last one has run is the `COMMIT`.
//!
//! A caller returns once its job's transaction has committed. The run role is handed to the
//! owner of the first queued job, and the commit is taken by an owner of a job in the open
//! transaction, so a caller that must take a role cannot return before taking it; every other
//! caller sleeps until its result is ready.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, Thread, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use rusqlite::Connection;

use crate::{Error, Result};

/// Most jobs one caller runs in one turn; bounds how long the others wait for the connection.
const MAX_RUN: usize = 512;

/// Longest a transaction waits for announced writers before it commits, counted from when its
/// first job ran.
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

/// A job and the thread waiting for it.
struct Entry {
    job: Box<dyn Job>,
    owner: Thread,
}

/// The write connection and the jobs on their way through it.
pub(crate) struct Writer {
    conn: Mutex<Connection>,
    state: Mutex<State>,
    /// Callers between [`Writer::announce`] and the end of their write.
    announced: AtomicUsize,
    /// How long a transaction waits for announced writers: [`GATHER_WINDOW`] but in tests.
    gather: Duration,
    /// Transactions committed, for tests to see how jobs were grouped.
    #[cfg(test)]
    commits: AtomicUsize,
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
        wake_all(wake.into_iter().collect());
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
    /// Jobs that ran in the open transaction, waiting for its commit.
    open: Vec<Entry>,
    /// When the open transaction's first job ran.
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
    /// Whether the open transaction can commit without waiting: every announced writer's job
    /// has run in it (or the writer returned), and no other job is queued or running.
    fn gathered(&self, announced: usize) -> bool {
        !self.committing
            && !self.running
            && self.queue.is_empty()
            && !self.open.is_empty()
            && self.open.len() >= announced
    }

    /// What the caller `me` does next, with `announced` callers between [`Writer::announce`]
    /// and the end of their write.
    fn role_for(&self, me: ThreadId, announced: usize, gather: Duration, now: Instant) -> Role {
        let mut until = None;
        if !self.committing && !self.open.is_empty() {
            let deadline = self.open_since.map(|t| t + gather);
            if !self.running && (self.gathered(announced) || deadline.is_none_or(|d| now >= d)) {
                return Role::Commit;
            }
            // One caller keeps the deadline: the owner of the transaction's first job. (A timer
            // for each would wake them all, for nothing, while the commit's fsync runs.)
            if self.open[0].owner.id() == me {
                until = deadline;
            }
        }
        if !self.queue.is_empty() && !self.running && self.run_handed.is_none_or(|t| t == me) {
            return Role::Run;
        }
        Role::Wait(until)
    }

    /// Hands the run role to the first queued job's owner if no caller runs or has been handed
    /// it, and, with `commit_wake`, wakes an owner of a job in the open transaction (to commit,
    /// or to sleep until the gathering deadline). Returns the callers to wake. A caller's job
    /// is not done before someone takes the role it needs, so a caller woken for a role always
    /// takes it or finds it taken.
    fn hand_out(&mut self, commit_wake: bool) -> Vec<Thread> {
        let mut wake = Vec::new();
        if !self.queue.is_empty() && !self.running && self.run_handed.is_none() {
            let owner = &self.queue[0].owner;
            self.run_handed = Some(owner.id());
            wake.push(owner.clone());
        }
        if commit_wake && !self.committing {
            wake.extend(self.open.first().map(|e| e.owner.clone()));
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
            #[cfg(test)]
            commits: AtomicUsize::new(0),
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
        let mut state = self.state.lock();
        state.queue.push(Entry {
            job: Box::new(TypedJob {
                work: Some(work),
                outcome: None,
                reply,
            }),
            owner: me.clone(),
        });
        loop {
            if let Ok(result) = answer.try_recv() {
                // Leaving: hand on what this caller will no longer do.
                let wake = state.hand_out(true);
                drop(state);
                wake_all(wake);
                return result;
            }
            let announced = self.announced.load(Ordering::Relaxed);
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
        state.running = true;
        state.run_handed = None;
        drop(state);

        let outcome = run_jobs(&self.conn.lock(), entries);

        let mut state = self.state.lock();
        state.running = false;
        let RunOutcome {
            ran,
            failed,
            broken,
        } = outcome;
        let lost = if let Some(error) = broken {
            tracing::error!(error, "a write transaction failed and was rolled back");
            state.open_since = None;
            let mut lost = std::mem::take(&mut state.open);
            lost.extend(ran);
            Some((lost, error))
        } else {
            if !ran.is_empty() {
                state.open_since.get_or_insert_with(Instant::now);
            }
            state.open.extend(ran);
            None
        };
        // This caller stays awake: it goes on to commit, or to run what was queued meanwhile.
        drop(state);
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
        let wake = state.hand_out(false);
        drop(state);
        wake_all(wake);

        let committed = commit_open(&conn);
        if committed.is_err() {
            // Leaves no transaction open; an error here means none was.
            let _ = conn.execute_batch("ROLLBACK");
        }
        drop(conn);
        #[cfg(test)]
        self.commits.fetch_add(1, Ordering::Relaxed);
        let error = committed.err().map(|e| {
            tracing::error!(error = %e, jobs = entries.len(), "commit failed");
            e.to_string()
        });

        self.state.lock().committing = false;
        // Among them this caller's own job: it leaves next, handing on the roles.
        complete(entries, error.as_deref());
        self.state.lock()
    }
}

/// Tells each job's caller its outcome and wakes it.
fn complete(entries: Vec<Entry>, error: Option<&str>) {
    for Entry { job, owner } in entries {
        job.complete(error);
        owner.unpark();
    }
}

fn wake_all(threads: Vec<Thread>) {
    for thread in threads {
        thread.unpark();
    }
}

/// Runs one statement through the connection's statement cache: parsing the transaction
/// statements on every use was a measurable part of the serial work.
fn sql(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?.execute([]).map(drop)
}

/// Runs `entries` in the open transaction, beginning it if none is open.
fn run_jobs(conn: &Connection, entries: Vec<Entry>) -> RunOutcome {
    let mut outcome = RunOutcome {
        ran: Vec::with_capacity(entries.len()),
        failed: Vec::new(),
        broken: None,
    };
    let mut entries = entries.into_iter();
    while let Some(mut entry) = entries.next() {
        let step = if conn.is_autocommit() {
            // The transaction's first job needs no savepoint: if it fails, rolling the whole
            // transaction back loses nothing else.
            sql(conn, "BEGIN IMMEDIATE").and_then(|()| {
                if entry.job.execute(conn) {
                    Ok(true)
                } else {
                    sql(conn, "ROLLBACK").map(|()| false)
                }
            })
        } else {
            sql(conn, "SAVEPOINT job").and_then(|()| {
                let ok = entry.job.execute(conn);
                if !ok {
                    sql(conn, "ROLLBACK TO job")?;
                }
                sql(conn, "RELEASE job").map(|()| ok)
            })
        };
        match step {
            Ok(true) => outcome.ran.push(entry),
            Ok(false) => outcome.failed.push(entry),
            Err(e) => {
                // The transaction is in an unknown state: roll it back with everything in it.
                let _ = conn.execute_batch("ROLLBACK");
                outcome.broken = Some(format!("write transaction failed: {e}"));
                outcome.ran.push(entry);
                outcome.ran.extend(entries);
                break;
            }
        }
    }
    outcome
}

/// Commits the open transaction, if there is one.
fn commit_open(conn: &Connection) -> rusqlite::Result<()> {
    if conn.is_autocommit() {
        // Every job of the transaction failed alone and the first one rolled it back.
        return Ok(());
    }
    sql(conn, "COMMIT")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    type TestJob = Box<dyn FnOnce(&Connection) -> Result<()> + Send>;

    /// A writer over a fresh file with one table, `rows(id)`, and a deferred foreign key that
    /// only `COMMIT` checks.
    fn writer(gather: Duration) -> (tempfile::TempDir, Arc<Writer>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = Connection::open(dir.path().join("w.db")).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;
             CREATE TABLE parents (id INTEGER PRIMARY KEY);
             CREATE TABLE rows (id INTEGER PRIMARY KEY, parent INTEGER
                 REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .expect("schema");
        (dir, Arc::new(Writer::with_gather_window(conn, gather)))
    }

    fn insert(id: i64) -> impl FnOnce(&Connection) -> Result<()> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO rows (id) VALUES (?1)", [id])?;
            Ok(())
        }
    }

    fn rows(writer: &Writer) -> Vec<i64> {
        let conn = writer.conn.lock();
        let mut stmt = conn
            .prepare("SELECT id FROM rows ORDER BY id")
            .expect("query");
        stmt.query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    /// Runs `jobs` from one thread each, all announced before any starts, so (with a long
    /// gathering window) they share one transaction.
    fn run_together(writer: &Arc<Writer>, jobs: Vec<TestJob>) -> Vec<Result<()>> {
        let barrier = Arc::new(Barrier::new(jobs.len()));
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let (writer, barrier) = (writer.clone(), barrier.clone());
                thread::spawn(move || {
                    let _announced = writer.announce();
                    barrier.wait();
                    writer.run(job)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    }

    #[test]
    fn announced_writers_share_one_commit_and_a_failing_job_is_rolled_back_alone() {
        let (_dir, writer) = writer(Duration::from_secs(60));
        let outcomes = run_together(
            &writer,
            vec![
                Box::new(insert(1)),
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
        assert_eq!(rows(&writer), vec![1, 4]);
        assert_eq!(writer.commits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_failing_first_job_takes_nothing_else_down() {
        let (_dir, writer) = writer(Duration::from_secs(60));
        let failed = writer.run(|conn| -> Result<()> {
            insert(1)(conn)?;
            Err(Error::InvalidChange("refused".into()))
        });
        assert!(matches!(failed, Err(Error::InvalidChange(_))));
        writer.run(insert(2)).expect("the next transaction");
        assert_eq!(rows(&writer), vec![2]);
    }

    #[test]
    fn a_failed_commit_fails_every_job_of_its_transaction_and_the_next_one_commits() {
        let (_dir, writer) = writer(Duration::from_secs(60));
        let outcomes = run_together(
            &writer,
            vec![
                Box::new(insert(1)),
                // Valid until COMMIT checks the deferred foreign key.
                Box::new(|conn: &Connection| -> Result<()> {
                    conn.execute("INSERT INTO rows (id, parent) VALUES (2, 99)", [])?;
                    Ok(())
                }),
            ],
        );
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Err(Error::CommitFailed(_)))),
            "{outcomes:?}"
        );
        assert_eq!(rows(&writer), Vec::<i64>::new());
        writer.run(insert(3)).expect("the writer goes on");
        assert_eq!(rows(&writer), vec![3]);
    }

    #[test]
    fn a_lone_or_unannounced_writer_does_not_wait_for_the_window() {
        let window = Duration::from_secs(60);
        let (_dir, writer) = writer(window);
        let start = Instant::now();
        writer.run(insert(1)).expect("unannounced");
        {
            let _announced = writer.announce();
            writer.run(insert(2)).expect("announced, alone");
        }
        assert!(start.elapsed() < window / 2, "a lone writer waited");
        assert_eq!(rows(&writer), vec![1, 2]);
    }

    #[test]
    fn a_writer_that_never_arrives_delays_a_commit_by_the_window_at_most() {
        let (_dir, writer) = writer(Duration::from_millis(50));
        let (announced, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let absent = {
            let (writer, announced, release) = (writer.clone(), announced.clone(), release.clone());
            thread::spawn(move || {
                let _never = writer.announce();
                announced.wait();
                release.wait();
            })
        };
        announced.wait();
        let _mine = writer.announce();
        let start = Instant::now();
        writer
            .run(insert(1))
            .expect("commits without the absent writer");
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(rows(&writer), vec![1]);
        release.wait();
        absent.join().expect("absent writer");
    }

    #[test]
    fn a_withdrawn_announcement_ends_the_wait_for_it() {
        let window = Duration::from_secs(60);
        let (_dir, writer) = writer(window);
        let announced = Arc::new(Barrier::new(2));
        let gives_up = {
            let (writer, announced) = (writer.clone(), announced.clone());
            thread::spawn(move || {
                let _announced = writer.announce();
                announced.wait();
                thread::sleep(Duration::from_millis(20));
            })
        };
        announced.wait();
        let start = Instant::now();
        {
            let _mine = writer.announce();
            writer.run(insert(1)).expect("write");
        }
        assert!(
            start.elapsed() < window / 2,
            "waited for a withdrawn writer"
        );
        gives_up.join().expect("thread");
        assert_eq!(rows(&writer), vec![1]);
    }

    #[test]
    fn many_writers_lose_nothing() {
        const THREADS: i64 = 4;
        const WRITES: i64 = 50;
        let (_dir, writer) = writer(Duration::from_secs(60));
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (writer, barrier) = (writer.clone(), barrier.clone());
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
        assert_eq!(rows(&writer), (0..THREADS * WRITES).collect::<Vec<_>>());
    }
}
