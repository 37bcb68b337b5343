//! `syncline-todo`: the app a newcomer tries first. A todo list stored in a Syncline store,
//! one document per todo in the collection `todos`, that works with no network at all.
//!
//! ```text
//! syncline-todo --store DIR device            # the store's device id (for its token)
//! syncline-todo --store DIR add "Buy milk" [--priority high] [--note-file F]  # prints the id
//! syncline-todo --store DIR done ID            # an unambiguous id prefix is enough
//! syncline-todo --store DIR list [--json]
//! syncline-todo --store DIR history ID
//! syncline-todo --store DIR deferred [--json]   # todos the relay holds back, and why
//! syncline-todo --store DIR sync --relay URL --token TOKEN [--timeout SECS] [--verbose] [CAPABILITIES]
//! syncline-todo --store DIR fetch ID... --relay URL --token TOKEN [CAPABILITIES]
//! syncline-todo --store DIR watch --relay URL --token TOKEN [CAPABILITIES]
//! syncline-todo demo                            # a relay and two devices, offline and back
//!
//! CAPABILITIES: [--device-class CLASS] [--metered] [--metered-max-doc-bytes N]
//!               [--bandwidth B] [--download B] [--upload B] (bytes per second)
//!               [--on-demand] [--periodic] [--priority P] [--allow-metered-uploads]
//! ```

mod demo;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::time::{Duration, Instant};

use syncline::{
    ChangeOrigin, Collection, CollectionSubscription, DeviceClass, DocId, Priority, Store,
    SyncClient, SyncMode, SyncOptions, SyncStats, Value,
};

/// A todo list that works offline, stored with Syncline.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Directory holding this device's store (created if missing); every command but `demo`
    /// needs it.
    #[arg(long, env = "SYNCLINE_TODO_STORE")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print this store's device id (creating the store if missing): a relay token names it
    /// (`syncline-relay token --device ID`).
    Device,
    /// Add a todo and print its id.
    Add {
        /// What to do.
        title: String,
        /// Its sync priority: low, normal, high or critical (uploads leave in this order).
        #[arg(long, default_value = "normal")]
        priority: Priority,
        /// A file whose text becomes the todo's note (a long note makes a large document).
        #[arg(long)]
        note_file: Option<PathBuf>,
    },
    /// Mark a todo done.
    Done {
        /// The todo's id (or an unambiguous prefix of it).
        id: String,
    },
    /// List the todos, one per line.
    List {
        /// Print a JSON array of {"id", "title", "done"} instead.
        #[arg(long)]
        json: bool,
    },
    /// Show who changed a todo, and when.
    History {
        /// The todo's id (or an unambiguous prefix of it).
        id: String,
    },
    /// List the todos the relay announced but holds back (a metered network, on demand), with
    /// their size and why; `fetch` gets them.
    Deferred {
        /// Print a JSON array of {"id", "bytes", "priority", "reason"} instead.
        #[arg(long)]
        json: bool,
    },
    /// Connect, fetch these todos now (whatever held them back), print each and exit.
    Fetch {
        /// The todos' ids (as `deferred` lists them).
        ids: Vec<String>,
        #[command(flatten)]
        connection: Connection,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Connect to a relay, exchange changes until nothing is pending either way, print a
    /// summary and exit.
    Sync {
        #[command(flatten)]
        connection: Connection,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Also print each connection of this sync from the store's history of syncs (the
        /// relay's session id, times, documents and bytes each way, round trips, refused
        /// todos, how it ended) and each todo that did not sync, with why.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Stay connected to a relay and print changes as they arrive (Ctrl-C to stop).
    Watch {
        #[command(flatten)]
        connection: Connection,
    },
    /// Run a relay and two devices that edit offline (one todo on both), reconnect and
    /// converge; print what happened.
    Demo,
}

/// Where to sync and as what kind of device.
#[derive(clap::Args)]
struct Connection {
    /// The relay, e.g. ws://127.0.0.1:7878.
    #[arg(long)]
    relay: String,
    /// The token (a JWT; `syncline-relay token` prints development ones).
    #[arg(long, env = "SYNCLINE_TOKEN")]
    token: String,
    /// phone, tablet, desktop or server.
    #[arg(long, default_value = "desktop")]
    device_class: String,
    /// The device is on a metered network: large todos wait (see `deferred`).
    #[arg(long)]
    metered: bool,
    /// On a metered network, todos larger than this many bytes wait (default: the relay's,
    /// 64 KiB).
    #[arg(long)]
    metered_max_doc_bytes: Option<u64>,
    /// The device's bandwidth, bytes per second, both ways: the relay paces what it sends to
    /// it, the device paces what it sends.
    #[arg(long)]
    bandwidth: Option<u64>,
    /// The download bandwidth, bytes per second (overrides --bandwidth).
    #[arg(long)]
    download: Option<u64>,
    /// The upload bandwidth, bytes per second (overrides --bandwidth).
    #[arg(long)]
    upload: Option<u64>,
    /// Keep only the list of todos; fetch a todo's content when asked (`fetch`).
    #[arg(long)]
    on_demand: bool,
    /// A periodic device: no pushes, and the connection closes once caught up.
    #[arg(long)]
    periodic: bool,
    /// The priority of the todos collection: low, normal, high or critical.
    #[arg(long, default_value = "normal")]
    priority: Priority,
    /// On a metered network, upload large todos anyway (by default they wait).
    #[arg(long)]
    allow_metered_uploads: bool,
}

impl Connection {
    fn options(&self, todos: &Collection) -> anyhow::Result<SyncOptions> {
        let mut options = SyncOptions::new(&self.relay, std::slice::from_ref(todos));
        options.profile.class = match self.device_class.as_str() {
            "phone" => DeviceClass::Phone,
            "tablet" => DeviceClass::Tablet,
            "desktop" => DeviceClass::Desktop,
            "server" => DeviceClass::Server,
            other => bail!("unknown device class {other:?} (phone, tablet, desktop or server)"),
        };
        options.profile.metered = self.metered;
        options.profile.metered_max_doc_bytes = self.metered_max_doc_bytes;
        options.profile.download_bytes_per_s = self.download.or(self.bandwidth);
        options.profile.upload_bytes_per_s = self.upload.or(self.bandwidth);
        options.profile.realtime = !self.periodic;
        options.defer_metered_uploads = !self.allow_metered_uploads;
        options.subscriptions = vec![CollectionSubscription {
            collection: todos.clone(),
            priority: self.priority,
            mode: if self.on_demand {
                SyncMode::OnDemand
            } else {
                SyncMode::Eager
            },
        }];
        options.client = format!("syncline-todo/{}", env!("CARGO_PKG_VERSION"));
        Ok(options)
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syncline-todo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Demo = cli.command {
        return demo::run();
    }
    let Some(dir) = cli.store else {
        bail!("--store DIR is required (or set SYNCLINE_TODO_STORE)");
    };
    let store = open_store(&dir)?;
    let todos = Collection::new("todos")?;
    match cli.command {
        Command::Device => println!("{}", store.device_id()),
        Command::Add {
            title,
            priority,
            note_file,
        } => {
            if title.trim().is_empty() {
                bail!("a todo needs a title");
            }
            let mut todo = serde_json::json!({"title": title, "done": false});
            if let Some(file) = note_file {
                let note = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                todo["note"] = serde_json::Value::String(note);
            }
            let doc = store.create_with(&todos, Value::from_json(&todo), priority)?;
            println!("{}", doc.id().id());
        }
        Command::Deferred { json } => {
            let deferred: Vec<serde_json::Value> = store
                .deferred()?
                .into_iter()
                .filter(|d| d.doc.collection() == &todos)
                .map(|d| {
                    serde_json::json!({
                        "id": d.doc.id(),
                        "bytes": d.bytes,
                        "priority": d.priority.as_str(),
                        "reason": reason(d.reason),
                        "changed_ms": d.changed_ms,
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(deferred));
            } else {
                for d in deferred {
                    println!(
                        "{}  {} bytes  {}  ({})",
                        d["id"].as_str().unwrap_or(""),
                        d["bytes"],
                        d["priority"].as_str().unwrap_or(""),
                        d["reason"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Command::Fetch {
            ids,
            connection,
            timeout,
        } => {
            let docs = ids
                .iter()
                .map(|id| DocId::new(todos.clone(), id.as_str()))
                .collect::<Result<Vec<_>, _>>()?;
            let token = connection.token.clone();
            let client = SyncClient::start(&store, connection.options(&todos)?, move || {
                Ok(token.clone())
            })?;
            // Connected first: `open` fails at once while offline.
            client
                .wait_synced(Duration::from_secs(timeout), true)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for doc in &docs {
                let opened = client
                    .open(doc, Duration::from_secs(timeout))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let title = opened.get_str("title")?.unwrap_or_default();
                println!("fetched {}: {title}", doc.id());
            }
            client.stop();
        }
        Command::Done { id } => {
            let id = resolve(&store, &todos, &id)?;
            store
                .document(&id)?
                .transact(Some("done"), |tx| tx.put("done", true))?;
        }
        Command::List { json } => {
            let items = list(&store, &todos)?;
            if json {
                println!("{}", serde_json::Value::Array(items));
            } else {
                for item in items {
                    let mark = if item["done"] == true { "x" } else { " " };
                    let title = item["title"].as_str().unwrap_or("");
                    println!("[{mark}] {title}  ({})", item["id"].as_str().unwrap_or(""));
                }
            }
        }
        Command::History { id } => {
            let id = resolve(&store, &todos, &id)?;
            for change in store.document(&id)?.history()? {
                let device = change
                    .device
                    .map_or(change.actor.clone(), |d| d.to_string());
                println!(
                    "{}  device {}  {}",
                    format_time(change.time),
                    &device[..device.len().min(12)],
                    change.message.as_deref().unwrap_or("(no message)")
                );
            }
        }
        Command::Sync {
            connection,
            timeout,
            verbose,
        } => {
            // Before the client starts: its connections begin after this.
            let started_ms =
                u64::try_from(syncline::Clock::now_ms(&syncline::SystemClock)).unwrap_or(0);
            let token = connection.token.clone();
            let client = SyncClient::start(&store, connection.options(&todos)?, move || {
                Ok(token.clone())
            })?;
            let started = Instant::now();
            let progress = progress::Reporter::new();
            let _drawing = {
                let progress = progress.clone();
                client.watch_status(move |status| progress.status(status))
            };
            let waited = client.wait_synced(Duration::from_secs(timeout), true);
            progress.finish();
            let errors = client.sync_errors();
            let deferred = client.deferred().map(|d| d.len());
            client.stop();
            if verbose {
                print_history(&store, started_ms, &errors)?;
            }
            let stats = waited.map_err(|e| anyhow::anyhow!("{e}"))?;
            let deferred = deferred?;
            println!("{}", summary(&stats, started.elapsed()));
            if deferred > 0 {
                println!("{deferred} todos deferred (see `deferred`, get them with `fetch`)");
            }
        }
        Command::Watch { connection } => {
            let token = connection.token.clone();
            let client = SyncClient::start(&store, connection.options(&todos)?, move || {
                Ok(token.clone())
            })?;
            let _status = client.watch_status(|status| eprintln!("status: {status:?}"));
            let reader = store.clone();
            let _changes = store.watch_collection(&todos, move |event| {
                if event.origin != ChangeOrigin::Remote {
                    return;
                }
                match reader.document(&event.doc_id) {
                    Ok(doc) => println!(
                        "changed {}: {} [{}]",
                        event.doc_id.id(),
                        doc.get_str("title").ok().flatten().unwrap_or_default(),
                        if doc.get_bool("done").ok().flatten().unwrap_or(false) {
                            "x"
                        } else {
                            " "
                        }
                    ),
                    Err(_) => println!("deleted {}", event.doc_id.id()),
                }
            });
            // Until the process is stopped (Ctrl-C / SIGTERM end it).
            loop {
                std::thread::park();
            }
        }
        Command::Demo => unreachable!("handled above"),
    }
    Ok(())
}

/// The connections since `since_ms` from the store's history of syncs (oldest first), and the
/// todos that did not sync.
fn print_history(
    store: &Store,
    since_ms: u64,
    errors: &[syncline::DocSyncError],
) -> anyhow::Result<()> {
    let mut records: Vec<syncline::SyncRecord> = store
        .sync_history(syncline::KEPT_SYNC_RECORDS)?
        .into_iter()
        .filter(|r| r.started_at_ms >= since_ms)
        .collect();
    records.reverse();
    for r in &records {
        println!(
            "connection {}: {} ms, sent {} documents ({} bytes), received {} documents ({} bytes), \
             {} round trips, {} refused; ended: {}",
            r.session.as_deref().unwrap_or("(no session)"),
            r.ended_at_ms.saturating_sub(r.started_at_ms),
            r.docs_sent,
            r.bytes_sent,
            r.docs_received,
            r.bytes_received,
            r.round_trips,
            r.refused_count,
            r.end
        );
    }
    for e in errors {
        println!("not synced {}: {:?}: {}", e.doc.id(), e.kind, e.message);
    }
    Ok(())
}

/// The word `deferred` prints for a reason.
fn reason(reason: syncline::DeferReason) -> &'static str {
    match reason {
        syncline::DeferReason::Metered => "metered network",
        syncline::DeferReason::LowPriority => "low priority on a metered network",
        syncline::DeferReason::OnDemand => "on demand",
        syncline::DeferReason::StorageBudget => "over the storage budget",
    }
}

/// Opens (creating if missing) the store in `dir`.
fn open_store(dir: &std::path::Path) -> anyhow::Result<Store> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create store directory {}", dir.display()))?;
    let path = dir.join("syncline.db");
    Store::open(&path).with_context(|| format!("cannot open store {}", path.display()))
}

/// One line: documents and bytes each way, round trips, time.
fn summary(stats: &SyncStats, elapsed: Duration) -> String {
    format!(
        "synced: sent {} documents ({} bytes), received {} documents ({} bytes), {} round trips, {} ms",
        stats.docs_sent,
        stats.bytes_sent,
        stats.docs_received,
        stats.bytes_received,
        stats.round_trips,
        elapsed.as_millis()
    )
}

/// The todos as JSON objects, oldest first (by id: ids are time-ordered, so every device lists
/// them in the same order). A todo that cannot be read is reported on stderr
/// and skipped, so one bad document never hides the rest.
fn list(store: &Store, todos: &Collection) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut items = Vec::new();
    for info in store.list(todos)? {
        let doc = store.document(&info.id)?;
        match (doc.get_str("title"), doc.get_bool("done")) {
            (Ok(title), Ok(done)) => items.push(serde_json::json!({
                "id": info.id.id(),
                "title": title.unwrap_or_default(),
                "done": done.unwrap_or(false),
            })),
            (Err(e), _) | (_, Err(e)) => eprintln!("syncline-todo: skipping {}: {e}", info.id),
        }
    }
    items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(items)
}

/// Finds the todo whose id is `prefix` or starts with it.
fn resolve(store: &Store, todos: &Collection, prefix: &str) -> anyhow::Result<DocId> {
    let matches: Vec<DocId> = store
        .list(todos)?
        .into_iter()
        .map(|info| info.id)
        .filter(|id| id.id().starts_with(prefix))
        .collect();
    match &matches[..] {
        [one] => Ok(one.clone()),
        [] => bail!("no todo with id {prefix:?}"),
        many => bail!("{} todos match {prefix:?}; give more of the id", many.len()),
    }
}

/// Formats seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_764_028_800), "2025-11-25 00:00:00 UTC");
        assert_eq!(format_time(951_782_400 + 3661), "2000-02-29 01:01:01 UTC");
    }
}
