//! `syncline-bench`: scenario benchmarks for Syncline. Each scenario prints, in the same run,
//! its floor: the same work with no Syncline in the way (for the store, raw SQLite commits
//! shaped like Syncline's, with the same journal and `synchronous` settings), so a figure is
//! read as a ratio to the floor rather than as an absolute time on a noisy machine.
//!
//! ```text
//! syncline-bench write  [--writes N]            durable small put: p50/p99 vs raw commit
//! syncline-bench group  [--seconds S] [--threads 4] [--durability full|normal]
//!                                               N threads vs 1 thread, writes per second
//! syncline-bench open   [--docs N]              open a store holding N documents
//! syncline-bench read   [--reads N]             one read: SDK, FFI facade, bare Automerge
//! syncline-bench load   [--changes N] [--chunks C]  first read of a long-history document
//! syncline-bench memory [--docs N] [--cache-mb M]  RSS after reading N documents
//! syncline-bench relay-connections [--count N]  idle connections held, bytes each
//! syncline-bench relay-throughput [--devices N] [--seconds S] [--storage sqlite|postgres]
//!                               [--relays N]     acknowledged changes/s
//! syncline-bench relay-fanout [--receivers N] [--writes W] [--storage sqlite|postgres]
//!                             [--relays N]       write-to-every-receiver latency (across
//!                                               relays with N >= 2)
//! syncline-bench relay-abuse [--quiet S] [--seconds S]  honest sync and relay memory under
//!                                               every abuse class at once
//! ```
//! The relay scenarios start `syncline-relay` from the same directory as this binary:
//! `cargo build --release -p syncline-relay -p syncline-bench`.
//! Add `--json` for one JSON object per scenario.

mod abuse;
mod bindings;
mod capabilities;
mod relay;
mod sync;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use syncline::{Collection, Durability, Store, StoreOptions, Value};

#[derive(Parser)]
#[command(about = "Syncline scenario benchmarks")]
struct Cli {
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Latency of a durable small put, against a raw SQLite commit of the same size.
    Write {
        #[arg(long, default_value_t = 2000)]
        writes: usize,
    },
    /// Writes per second with 1 and with 4 threads (each on its own document).
    Group {
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// `full` (the default: fsync per group) or `normal` (no fsync per commit).
        #[arg(long, default_value = "full")]
        durability: String,
        /// Threads in the concurrent run.
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Per-call cost of a document read through the SDK and the FFI facade, against a bare
    /// Automerge read (the Rust side of the bindings' overhead benchmarks).
    Read {
        #[arg(long, default_value_t = 200_000)]
        reads: usize,
    },
    /// Time to open a store holding N documents.
    Open {
        #[arg(long, default_value_t = 10_000)]
        docs: usize,
    },
    /// Idle authenticated connections held by one relay, and its memory per connection.
    RelayConnections {
        #[arg(long, default_value_t = 10_000)]
        count: u32,
    },
    /// Small changes durably acknowledged per second through one relay.
    RelayThroughput {
        #[arg(long, default_value_t = 100)]
        devices: u32,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// `sqlite` (one relay, the default) or `postgres` (a durable server of the run's own).
        #[arg(long, default_value = "sqlite")]
        storage: String,
        /// Relays on the storage (PostgreSQL only); devices are spread over them.
        #[arg(long, default_value_t = 1)]
        relays: usize,
    },
    /// Latency from one writer's change to every subscribed receiver.
    RelayFanout {
        #[arg(long, default_value_t = 100)]
        receivers: u32,
        #[arg(long, default_value_t = 200)]
        writes: u32,
        /// `sqlite` (one relay, the default) or `postgres`.
        #[arg(long, default_value = "sqlite")]
        storage: String,
        /// Relays on the storage (PostgreSQL only); with two or more the writer is on the first
        /// and every receiver on the second.
        #[arg(long, default_value_t = 1)]
        relays: usize,
    },
    /// One honest device's sync while hostile clients run every abuse class at once: its
    /// latency alone and under abuse, the relay's peak memory, whether it stayed up.
    RelayAbuse {
        /// Seconds of the honest device alone first (its floor).
        #[arg(long, default_value_t = 5.0)]
        quiet: f64,
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// Only these attacks (comma-separated: inflate, ops, states, ephemeral, profile,
        /// errors, fragments, sockets, fetch), for a closer look at one.
        #[arg(long)]
        only: Option<String>,
    },
    /// A device holding N documents reconnects with K changed on it and K changed elsewhere.
    Reconnect {
        #[arg(long, default_value_t = 10_000)]
        docs: usize,
        #[arg(long, default_value_t = 100)]
        changed: usize,
    },
    /// A new device syncs N small documents from a relay.
    Initial {
        #[arg(long, default_value_t = 10_000)]
        docs: usize,
    },
    /// Time until a phone on a throttled 1 Mbit/s metered link has its critical collection,
    /// with priorities and in one stream.
    FirstScreen {
        #[arg(long, default_value_t = 50)]
        account_mb: usize,
        #[arg(long, default_value_t = 500)]
        critical_kb: usize,
        #[arg(long, default_value_t = 10)]
        doc_kb: usize,
        /// Give up on a run after this many seconds.
        #[arg(long, default_value_t = 600)]
        cap_secs: u64,
    },
    /// Achieved rate against a declared bandwidth, each way.
    Pacing {
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        #[arg(long, default_value_t = 5_000)]
        total_kb: usize,
    },
    /// Bytes a new device receives with and without compression, text and numbers.
    WireBytes {
        #[arg(long, default_value_t = 1_000)]
        docs: usize,
    },
    /// First read, after reopening the store, of a document with N changes stored as a
    /// snapshot plus C incremental chunks.
    Load {
        #[arg(long, default_value_t = 10_000)]
        changes: usize,
        #[arg(long, default_value_t = 64)]
        chunks: i64,
    },
    /// Resident memory after reading N documents with a bounded cache.
    Memory {
        #[arg(long, default_value_t = 10_000)]
        docs: usize,
        #[arg(long, default_value_t = 16)]
        cache_mb: usize,
        /// Internal: measure in this process an existing store at this path.
        #[arg(long, hide = true)]
        child: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.scenario {
        Scenario::Write { writes } => write(writes)?,
        Scenario::Group {
            seconds,
            durability,
            threads,
        } => {
            let durability = match durability.as_str() {
                "full" => Durability::Full,
                "normal" => Durability::Normal,
                other => anyhow::bail!("unknown durability {other:?}: use full or normal"),
            };
            group(Duration::from_secs_f64(seconds), durability, threads)?
        }
        Scenario::Open { docs } => open(docs)?,
        Scenario::Read { reads } => bindings::read(reads)?,
        Scenario::Load { changes, chunks } => load(changes, chunks)?,
        Scenario::Memory {
            docs,
            cache_mb,
            child: Some(path),
        } => memory_child(&path, docs, cache_mb)?,
        Scenario::Memory {
            docs,
            cache_mb,
            child: None,
        } => memory(docs, cache_mb)?,
        Scenario::RelayConnections { count } => runtime()?.block_on(relay::connections(count))?,
        Scenario::RelayThroughput {
            devices,
            seconds,
            storage,
            relays,
        } => runtime()?.block_on(async {
            let relays = relay::Relays::start(&storage, relays).await?;
            relay::throughput(&relays, devices, seconds).await
        })?,
        Scenario::RelayFanout {
            receivers,
            writes,
            storage,
            relays,
        } => runtime()?.block_on(async {
            let relays = relay::Relays::start(&storage, relays).await?;
            relay::fanout(&relays, receivers, writes).await
        })?,
        Scenario::RelayAbuse {
            quiet,
            seconds,
            only,
        } => runtime()?.block_on(abuse::abuse(quiet, seconds, only))?,
        Scenario::Reconnect { docs, changed } => sync::reconnect(docs, changed)?,
        Scenario::Initial { docs } => sync::initial(docs)?,
        Scenario::FirstScreen {
            account_mb,
            critical_kb,
            doc_kb,
            cap_secs,
        } => capabilities::first_screen(
            account_mb,
            critical_kb,
            doc_kb,
            Duration::from_secs(cap_secs),
        )?,
        Scenario::Pacing { rate, total_kb } => capabilities::pacing(rate, total_kb)?,
        Scenario::WireBytes { docs } => capabilities::wire_bytes(docs)?,
    };
    if cli.json {
        println!("{report}");
    } else if let Some(fields) = report.as_object() {
        for (k, v) in fields {
            println!("{k:>28}  {v}");
        }
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn todos() -> Collection {
    Collection::new("todos").expect("valid collection")
}

fn write(writes: usize) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("bench.db"))?;
    let doc = store.create(&todos())?;
    let mut syncline = histogram();
    for i in 0..writes {
        let start = Instant::now();
        doc.put("n", i64::try_from(i)?)?;
        syncline.record(micros(start.elapsed()))?;
    }
    // The size of one such change, for the floor's row.
    let change_bytes = store
        .changes_since(doc.id(), &Default::default())?
        .last()
        .map_or(0, Vec::len);
    let floor = raw_commits(&dir.path().join("floor.db"), writes, change_bytes)?;
    let (p50, p99) = (
        syncline.value_at_quantile(0.5),
        syncline.value_at_quantile(0.99),
    );
    let (f50, f99) = (floor.value_at_quantile(0.5), floor.value_at_quantile(0.99));
    Ok(serde_json::json!({
        "scenario": "write",
        "writes": writes,
        "change_bytes": change_bytes,
        "p50_us": p50, "p99_us": p99,
        "floor_p50_us": f50, "floor_p99_us": f99,
        "p50_ratio": ratio(p50, f50), "p99_ratio": ratio(p99, f99),
    }))
}

/// The floor: one SQLite transaction per row of `bytes` bytes, WAL + synchronous=FULL.
fn raw_commits(path: &Path, rows: usize, bytes: usize) -> anyhow::Result<Histogram<u64>> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE chunks (k INTEGER PRIMARY KEY, doc INTEGER, data BLOB)")?;
    let row = vec![7u8; bytes];
    let mut h = histogram();
    for _ in 0..rows {
        let start = Instant::now();
        conn.execute("INSERT INTO chunks (doc, data) VALUES (1, ?1)", [&row])?;
        h.record(micros(start.elapsed()))?;
    }
    Ok(h)
}

fn group(
    duration: Duration,
    durability: Durability,
    threads: usize,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(threads > 0, "--threads must be at least 1");
    // The lone writer, the concurrent writers and the floors take turns in short slices, so
    // that all three see the same disk (whose speed drifts) and their ratios are comparable.
    let one = Writers::new(1, durability)?;
    let many = Writers::new(threads, durability)?;
    let mut floors = RawGroupCommits::new(threads, durability)?;
    let (mut one_run, mut many_run) = (WriteRun::default(), WriteRun::default());
    // Each of the three runs for `duration` in all.
    while one_run.elapsed < duration {
        one_run += one.run(SLICE)?;
        many_run += many.run(SLICE)?;
        floors.run(SLICE)?;
    }
    let (one, many) = (one_run.summary(&one)?, many_run.summary(&many)?);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let ideal = IdealWriter {
        alone: one.per_write,
        alone_commit: one.per_commit,
        group_size: many.writes_per_commit,
        group_commit: many.per_commit,
        parallel: threads.min(cores),
    };
    let (bound, best_group) = ideal.best_speedup(threads);
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let as_us = |d: Duration| round2(d.as_secs_f64() * 1e6);
    Ok(serde_json::json!({
        "scenario": "group",
        "seconds": duration.as_secs_f64(),
        "durability": format!("{durability:?}"),
        "threads": threads,
        "cores": cores,
        "writes_per_s_1_thread": (1.0 / one.per_write.as_secs_f64()).round(),
        "writes_per_s_n_threads": (1.0 / many.per_write.as_secs_f64()).round(),
        "speedup": round2(one.per_write.as_secs_f64() / many.per_write.as_secs_f64()),
        "speedup_bound": round2(bound),
        "speedup_bound_group": best_group,
        "writes_per_commit_n_threads": round2(many.writes_per_commit),
        "cpu_us_per_write_1_thread": as_us(one.cpu_per_write),
        "cpu_us_per_write_n_threads": as_us(many.cpu_per_write),
        "commit_us_1_thread": as_us(one.per_commit),
        "commit_us_n_threads": as_us(many.per_commit),
        "floor_txn_us_1_write": as_us(floors.one.mean()),
        "floor_txn_us_n_writes": as_us(floors.all.mean()),
    }))
}

/// How long each of [`group`]'s runs goes on before the next takes its turn.
const SLICE: Duration = Duration::from_millis(250);

/// What runs of [`Writers::run`] measured, summed.
#[derive(Default)]
struct WriteRun {
    writes: u32,
    elapsed: Duration,
    cpu: Duration,
}

impl std::ops::AddAssign for WriteRun {
    fn add_assign(&mut self, other: Self) {
        self.writes += other.writes;
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
    }
}

impl WriteRun {
    fn summary(&self, writers: &Writers) -> anyhow::Result<WriteSummary> {
        anyhow::ensure!(self.writes > 0, "no write completed");
        let (now, before) = (writers.store.write_stats(), writers.before);
        let commits = u32::try_from((now.commits - before.commits).max(1))?;
        Ok(WriteSummary {
            per_write: self.elapsed / self.writes,
            cpu_per_write: self.cpu / self.writes,
            writes_per_commit: (now.writes - before.writes) as f64 / f64::from(commits),
            per_commit: (now.commit_time - before.commit_time) / commits,
        })
    }
}

/// Per-write figures of a [`WriteRun`].
struct WriteSummary {
    /// Wall time per write, all threads together.
    per_write: Duration,
    /// The process's CPU time (user and system) per write.
    cpu_per_write: Duration,
    /// Writes the store committed per transaction (and fsync).
    writes_per_commit: f64,
    /// Mean time of the store's `COMMIT`s (the fsync included).
    per_commit: Duration,
}

/// A store and one document per writer thread.
struct Writers {
    store: Store,
    docs: Vec<syncline::Document>,
    /// The store's write statistics before the runs (after creating the documents).
    before: syncline::WriteStats,
    _dir: tempfile::TempDir,
}

impl Writers {
    fn new(threads: usize, durability: Durability) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let options = StoreOptions {
            durability,
            ..Default::default()
        };
        let store = Store::open_with(dir.path().join("bench.db"), options)?;
        let docs = (0..threads)
            .map(|_| store.create(&todos()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            before: store.write_stats(),
            store,
            docs,
            _dir: dir,
        })
    }

    /// One thread per document, each writing to it for `duration`.
    fn run(&self, duration: Duration) -> anyhow::Result<WriteRun> {
        let cpu = cpu_time::ProcessTime::now();
        let start = Instant::now();
        let per_thread: Vec<u32> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .docs
                .iter()
                .map(|doc| {
                    s.spawn(move || -> anyhow::Result<u32> {
                        let mut n = 0u32;
                        while start.elapsed() < duration {
                            doc.put("n", i64::from(n))?;
                            n += 1;
                        }
                        Ok(n)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("bench thread"))
                .collect::<anyhow::Result<_>>()
        })?;
        Ok(WriteRun {
            writes: per_thread.iter().sum(),
            elapsed: start.elapsed(),
            cpu: cpu.elapsed(),
        })
    }
}

/// An ideal group-committing writer on this machine, to bound what a real one with the same
/// costs can reach. Optimistic on purpose:
/// - commits are serialized (SQLite's WAL write lock is held through the fsync) and cost what
///   the store's own `COMMIT`s cost (checkpoints included), but use no core;
/// - a write's own work is spread perfectly over the cores (in the store, the statements run
///   one at a time on the connection);
/// - nobody waits to be woken.
///
/// It bounds designs that keep these costs: one file, one `COMMIT` per group, the same work
/// per write. Cutting that work, or fsyncing several files at once, could go beyond it.
struct IdealWriter {
    /// A lone writer's time per write: its commit plus its own work.
    alone: Duration,
    /// A lone writer's mean `COMMIT`.
    alone_commit: Duration,
    /// Writes per commit in the concurrent run.
    group_size: f64,
    /// The concurrent run's mean `COMMIT`.
    group_commit: Duration,
    /// Cores the writers can use at once.
    parallel: usize,
}

impl IdealWriter {
    /// The mean `COMMIT` of `g` writes, in seconds: linear between the two measured sizes.
    fn commit_secs(&self, g: usize) -> f64 {
        let alone = self.alone_commit.as_secs_f64();
        if self.group_size <= 1.0 {
            return alone;
        }
        let per_write = (self.group_commit.as_secs_f64() - alone) / (self.group_size - 1.0);
        (alone + (g as f64 - 1.0) * per_write).max(0.0)
    }

    /// The best speedup of `writers` threads over one, over every group size, and the group
    /// size that gives it.
    ///
    /// A write's own work `w` (preparing the change, running its statements, compacting now
    /// and then: all of a lone write but its `COMMIT`) is `alone - alone_commit`. With groups of `g` following each
    /// other back to back, commit `k + 1` can take only `writers - g` threads that were not in
    /// commit `k`; the other `r = 2g - writers` are released by commit `k`'s end and must do
    /// their work first, which takes at least `max(r × w / parallel, w)`. So a group takes at
    /// least its `COMMIT` plus that, and also at least the time the threads need to fill it
    /// (each one's cycle is at least `w` plus its commit) and the cores need to do its work.
    fn best_speedup(&self, writers: usize) -> (f64, usize) {
        let alone = self.alone.as_secs_f64();
        let work = (alone - self.alone_commit.as_secs_f64()).max(0.0);
        let parallel = self.parallel.max(1) as f64;
        let n = writers as f64;
        (1..=writers)
            .map(|g| {
                let commit = self.commit_secs(g);
                let g_f = g as f64;
                let rejoining = (2.0 * g_f - n).max(0.0);
                let refill = if rejoining > 0.0 {
                    (rejoining * work / parallel).max(work)
                } else {
                    0.0
                };
                let period = (commit + refill)
                    .max(g_f * (work + commit) / n)
                    .max(g_f * work / parallel);
                (g_f * alone / period, g)
            })
            .fold(
                (0.0, 1),
                |best, this| if this.0 > best.0 { this } else { best },
            )
    }
}

/// The floors: raw SQLite transactions (WAL, the same `synchronous`) shaped like one Syncline
/// write and like `docs` writes to as many documents: per document, a 120-byte chunk row
/// inserted (different documents' chunks lie on different pages) and its metadata row updated
/// (all on one page). Two files, measured in alternating blocks. Means, not medians: they
/// include the checkpoints, as a writer's rate does.
struct RawGroupCommits {
    one: RawGroupCommit,
    all: RawGroupCommit,
    _dir: tempfile::TempDir,
}

impl RawGroupCommits {
    fn new(docs: usize, durability: Durability) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Ok(Self {
            one: RawGroupCommit::new(&dir.path().join("one.db"), 1, durability)?,
            all: RawGroupCommit::new(&dir.path().join("all.db"), docs, durability)?,
            _dir: dir,
        })
    }

    /// Commits in both files in turn, in blocks, for about `duration`.
    fn run(&mut self, duration: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < duration {
            for floor in [&mut self.one, &mut self.all] {
                for _ in 0..25 {
                    floor.commit()?;
                }
            }
        }
        Ok(())
    }
}

/// One file of [`RawGroupCommits`].
struct RawGroupCommit {
    conn: rusqlite::Connection,
    docs: i64,
    seq: i64,
    commits: u32,
    spent: Duration,
}

impl RawGroupCommit {
    fn new(path: &Path, docs: usize, durability: Durability) -> anyhow::Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.execute_batch(
            "CREATE TABLE documents (doc INTEGER PRIMARY KEY, heads BLOB, chunk_count INTEGER);
             CREATE TABLE chunks (doc INTEGER, seq INTEGER, data BLOB, PRIMARY KEY (doc, seq))
             WITHOUT ROWID",
        )?;
        let docs = i64::try_from(docs)?;
        // Two pages' worth of rows per document keeps each document's newest chunks on a page
        // of their own.
        let seq = 60;
        conn.execute_batch("BEGIN")?;
        for doc in 0..docs {
            conn.execute(
                "INSERT INTO documents VALUES (?1, zeroblob(32), ?2)",
                [doc, seq],
            )?;
            for s in 0..seq {
                conn.execute(
                    "INSERT INTO chunks VALUES (?1, ?2, zeroblob(120))",
                    [doc, s],
                )?;
            }
        }
        conn.execute_batch("COMMIT")?;
        Ok(Self {
            conn,
            docs,
            seq,
            commits: 0,
            spent: Duration::ZERO,
        })
    }

    fn commit(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        for doc in 0..self.docs {
            self.conn
                .prepare_cached("INSERT INTO chunks VALUES (?1, ?2, zeroblob(120))")?
                .execute([doc, self.seq])?;
            self.conn
                .prepare_cached(
                    "UPDATE documents SET heads = zeroblob(32), chunk_count = chunk_count + 1 \
                     WHERE doc = ?1",
                )?
                .execute([doc])?;
        }
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.spent += start.elapsed();
        self.seq += 1;
        self.commits += 1;
        Ok(())
    }

    fn mean(&self) -> Duration {
        self.spent / self.commits.max(1)
    }
}

/// Builds a store with `docs` small documents (each a todo with a title and a flag).
fn populate(path: &Path, docs: usize) -> anyhow::Result<()> {
    let store = Store::open(path)?;
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = store.clone();
            s.spawn(move || -> anyhow::Result<()> {
                for i in (t..docs).step_by(4) {
                    let v = serde_json::json!({"title": format!("todo number {i}"), "done": i % 3 == 0});
                    store.create_with(&todos(), Value::from_json(&v), Default::default())?;
                }
                Ok(())
            });
        }
    });
    anyhow::ensure!(store.list(&todos())?.len() == docs, "population incomplete");
    Ok(())
}

fn open(docs: usize) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    populate(&path, docs)?;
    let mut times = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let store = Store::open(&path)?;
        times.push(start.elapsed());
        anyhow::ensure!(
            store.cached_documents() == 0,
            "open must not load documents"
        );
        drop(store);
        // Floor: open the same file with SQLite and read one row.
        let start = Instant::now();
        let conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let _: i64 = conn.query_row("SELECT count(*) FROM device", [], |r| r.get(0))?;
        floor.push(start.elapsed());
    }
    times.sort();
    floor.sort();
    Ok(serde_json::json!({
        "scenario": "open",
        "docs": docs,
        "file_bytes": std::fs::metadata(&path)?.len(),
        "median_ms": ms(times[times.len() / 2]),
        "max_ms": ms(times[times.len() - 1]),
        "floor_median_ms": ms(floor[floor.len() / 2]),
    }))
}

fn load(changes: usize, chunks: i64) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    let options = StoreOptions {
        durability: Durability::Normal,
        ..Default::default()
    };
    let store = Store::open_with(&path, options.clone())?;
    let doc = store.create(&todos())?;
    let id = doc.id().clone();
    for n in 0..changes {
        doc.put("n", i64::try_from(n)?)?;
    }
    // Then until the document carries `chunks` chunks on its snapshot (a compaction on the way
    // starts the count again).
    let sql = rusqlite::Connection::open(&path)?;
    let stored = || -> rusqlite::Result<(i64, i64)> {
        sql.query_row(
            "SELECT chunk_count, snapshot_bytes FROM documents",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    };
    let mut written = changes;
    while stored()?.0 < chunks {
        anyhow::ensure!(written < changes + 100_000, "the chunks never accumulate");
        doc.put("n", i64::try_from(written)?)?;
        written += 1;
    }
    let (chunk_count, snapshot_bytes) = stored()?;
    drop((doc, store));
    // Floor: the same document loaded in memory from one snapshot, no storage.
    let whole = {
        let content: Vec<Vec<u8>> = {
            let mut stmt = sql.prepare(
                "SELECT data FROM snapshots UNION ALL SELECT data FROM \
                 (SELECT data FROM chunks ORDER BY seq)",
            )?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        automerge::Automerge::load(&content.concat())?.save()
    };
    let (mut times, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let store = Store::open_with(&path, options.clone())?;
        let start = Instant::now();
        let value = store.document(&id)?.get_i64("n")?;
        times.push(start.elapsed());
        anyhow::ensure!(value == Some(i64::try_from(written - 1)?), "wrong value");
        let start = Instant::now();
        drop(automerge::Automerge::load(&whole)?);
        floor.push(start.elapsed());
    }
    times.sort();
    floor.sort();
    let (median, floor_median) = (times[times.len() / 2], floor[floor.len() / 2]);
    Ok(serde_json::json!({
        "scenario": "load",
        "changes": written,
        "chunks": chunk_count,
        "snapshot_bytes": snapshot_bytes,
        "median_ms": ms(median),
        "max_ms": ms(times[times.len() - 1]),
        "floor_median_ms": ms(floor_median),
        "ratio": (median.as_secs_f64() / floor_median.as_secs_f64() * 100.0).round() / 100.0,
    }))
}

fn memory(docs: usize, cache_mb: usize) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    populate(&path, docs)?;
    // Measure in a fresh process so the population run's memory does not count.
    let out = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--json",
            "memory",
            "--docs",
            &docs.to_string(),
            "--cache-mb",
            &cache_mb.to_string(),
        ])
        .arg("--child")
        .arg(&path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn memory_child(path: &Path, docs: usize, cache_mb: usize) -> anyhow::Result<serde_json::Value> {
    let floor_kib = rss_kib()?;
    let options = StoreOptions {
        cache_bytes: cache_mb << 20,
        ..Default::default()
    };
    let store = Store::open_with(path, options)?;
    let opened_kib = rss_kib()?;
    let ids: Vec<_> = store.list(&todos())?.into_iter().map(|i| i.id).collect();
    anyhow::ensure!(ids.len() == docs, "expected {docs} documents");
    let listed_kib = rss_kib()?;
    for id in &ids {
        store.document(id)?.get_str("title")?.context("title")?;
    }
    let read_kib = rss_kib()?;
    Ok(serde_json::json!({
        "scenario": "memory",
        "docs": docs,
        "cache_bound_kib": cache_mb << 10,
        "cache_estimate_kib": store.cache_used_bytes() >> 10,
        "cached_documents": store.cached_documents(),
        "floor_rss_kib": floor_kib,
        "rss_after_open_kib": opened_kib,
        "rss_after_list_kib": listed_kib,
        "rss_after_reads_kib": read_kib,
        "growth_over_floor_kib": read_kib.saturating_sub(floor_kib),
    }))
}

/// This process's resident set size, from /proc/self/status.
fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS not found")
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn ratio(a: u64, b: u64) -> f64 {
    (a as f64 / b.max(1) as f64 * 100.0).round() / 100.0
}
