//! Capability scenarios: what a device's declared profile does to a real sync through a real
//! `syncline-relay` process over loopback.
//!
//! - `first-screen`: a phone on a 1 Mbit/s metered link (a throttling loopback proxy, so the
//!   link really is that slow) holding a 50 MB account, whose `critical` collection is 500 KB:
//!   the time until that collection is complete, with priorities and without (everything in
//!   one stream), beside the floor: the critical collection's bytes at the link's rate.
//! - `pacing`: a declared 100 KB/s, 5 MB to transfer, each way: the achieved rate beside the
//!   declared one, and the floor (the same transfer unpaced, in the same run).
//! - `wire-bytes`: the bytes a new device receives for a text-heavy and a numeric workload,
//!   with the relay compressing and without, beside the floor (the documents' stored size, no
//!   network).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use syncline::{
    Collection, CollectionSubscription, DeviceClass, Durability, Priority, Store, StoreOptions,
    SyncClient, SyncMode, SyncOptions, Value,
};
use syncline_protocol::Pacer;
use syncline_testkit::relay::{Relay, token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(1800);

fn collection(name: &str) -> Collection {
    Collection::new(name).expect("valid")
}

/// Random bytes: what compression cannot shrink (photos, attachments).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u8(..)).collect()
}

fn open_store(dir: &std::path::Path) -> anyhow::Result<Store> {
    Ok(Store::open_with(
        dir.join("s.db"),
        StoreOptions {
            durability: Durability::Normal,
            ..StoreOptions::default()
        },
    )?)
}

/// A client of `store` through `url`, for the collections `subscriptions`, as `profile` says.
fn client(
    relay: &Relay,
    url: &str,
    store: &Store,
    subscriptions: Vec<CollectionSubscription>,
    profile: impl FnOnce(&mut syncline::Profile),
) -> anyhow::Result<SyncClient> {
    let names: Vec<&str> = subscriptions
        .iter()
        .map(|s| s.collection.as_str())
        .collect();
    let grants = names.join(",");
    let device = store.device_id().to_string();
    let token = token(&relay.data_dir, "bench", &device, &grants, &grants, 3600)?;
    let mut options = SyncOptions::new(url, &[]);
    options.subscriptions = subscriptions;
    profile(&mut options.profile);
    Ok(SyncClient::start(
        store,
        options,
        move || Ok(token.clone()),
    )?)
}

fn eager(name: &str, priority: Priority) -> CollectionSubscription {
    CollectionSubscription {
        collection: collection(name),
        priority,
        mode: SyncMode::Eager,
    }
}

/// A TCP proxy on loopback that forwards to `upstream` at most `bytes_per_s` each way, in
/// packets of at most 1,460 bytes: a slow link, for real.
pub struct Throttle {
    /// Where clients connect.
    pub addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
}

impl Throttle {
    /// Starts the proxy.
    pub fn start(upstream: SocketAddr, bytes_per_s: u64) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pump(client_read, server_write, bytes_per_s));
                    tokio::spawn(pump(server_read, client_write, bytes_per_s));
                });
            }
        });
        Ok(Self { addr, runtime })
    }

    /// The WebSocket URL of the relay through the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        // The runtime's tasks end with it.
        let _ = &self.runtime;
    }
}

/// Copies `from` to `to` at `bytes_per_s`, a packet at a time.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes_per_s: u64,
) {
    let started = Instant::now();
    let now = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut pacer = Pacer::default();
    pacer.set_rate(Some(bytes_per_s), 0);
    let mut buf = vec![0u8; 1460];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while !pacer.ready(now()) {
            let at = pacer.ready_at().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(now()).max(1))).await;
        }
        pacer.spend(n as u64, now());
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// `first-screen`: see the module documentation.
pub fn first_screen(
    account_mb: usize,
    critical_kb: usize,
    doc_kb: usize,
    cap: Duration,
) -> anyhow::Result<serde_json::Value> {
    const LINK: u64 = 125_000; // 1 Mbit/s
    let data = tempfile::tempdir()?;
    let relay = Relay::start(data.path())?;
    let writer_dir = tempfile::tempdir()?;
    let writer = open_store(writer_dir.path())?;
    let docs = account_mb * 1024 / doc_kb;
    let critical_docs = critical_kb / doc_kb;
    // The critical documents are spread through the account's history, as an inbox's
    // starred messages are: in one stream by recency they come throughout.
    let every = (docs / critical_docs.max(1)).max(1);
    let mut critical_bytes = 0;
    for i in 0..docs {
        let name = if i % every == every / 2 && critical_bytes < (critical_kb as u64) << 10 {
            critical_bytes += (doc_kb as u64) << 10;
            "critical"
        } else {
            "mail"
        };
        let body = Value::Bytes(random_bytes(doc_kb << 10, i as u64));
        writer.create_with(
            &collection(name),
            Value::Map([("body".to_owned(), body)].into_iter().collect()),
            Priority::Normal,
        )?;
    }
    let subs = |critical| vec![eager("critical", critical), eager("mail", Priority::Normal)];
    let uploader = client(
        &relay,
        &relay.url(),
        &writer,
        subs(Priority::Normal),
        |_| {},
    )?;
    uploader.wait_synced(WAIT, true)?;
    uploader.stop();
    let critical_count = writer.list(&collection("critical"))?.len();
    let critical_stored: u64 = writer
        .list(&collection("critical"))?
        .iter()
        .map(|i| i.stored_bytes)
        .sum();
    let upstream: SocketAddr = relay.url().trim_start_matches("ws://").parse()?;
    let mut runs = serde_json::Map::new();
    for (name, priority) in [
        ("with_priorities", Priority::Critical),
        ("one_stream", Priority::Normal),
    ] {
        let throttle = Throttle::start(upstream, LINK)?;
        let phone_dir = tempfile::tempdir()?;
        let phone = open_store(phone_dir.path())?;
        let started = Instant::now();
        let sync = client(&relay, &throttle.url(), &phone, subs(priority), |p| {
            p.class = DeviceClass::Phone;
            p.metered = true;
            p.download_bytes_per_s = Some(LINK);
            p.upload_bytes_per_s = Some(LINK);
        })?;
        let mut done = None;
        while started.elapsed() < cap {
            if phone.list(&collection("critical"))?.len() >= critical_count {
                done = Some(started.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let held = phone.list(&collection("critical"))?.len();
        let stats = sync.stats();
        sync.stop();
        runs.insert(
            name.into(),
            serde_json::json!({
                "critical_complete_ms": done.map(|d| d.as_millis()),
                "critical_held": held,
                "gave_up_after_ms": done.is_none().then_some(cap.as_millis()),
                "bytes_received": stats.bytes_received,
            }),
        );
    }
    let floor_ms = critical_stored * 1000 / LINK;
    let with = runs["with_priorities"]["critical_complete_ms"].as_u64();
    Ok(serde_json::json!({
        "scenario": "first-screen",
        "account_bytes": docs * (doc_kb << 10),
        "documents": docs,
        "critical_documents": critical_count,
        "critical_bytes": critical_stored,
        "link_bytes_per_s": LINK,
        "floor_ms": floor_ms,
        "runs": runs,
        "with_priorities_vs_floor": with.map(|w| w as f64 / floor_ms.max(1) as f64),
        "target_vs_floor": 1.3,
    }))
}

/// `pacing`: see the module documentation.
pub fn pacing(rate: u64, total_kb: usize) -> anyhow::Result<serde_json::Value> {
    let doc_kb = 100;
    let docs = total_kb / doc_kb;
    let data = tempfile::tempdir()?;
    let relay = Relay::start(data.path())?;
    let fill = |store: &Store, seed: u64| -> anyhow::Result<()> {
        for i in 0..docs {
            let body = Value::Bytes(random_bytes(doc_kb << 10, seed + i as u64));
            store.create_with(
                &collection("files"),
                Value::Map([("body".to_owned(), body)].into_iter().collect()),
                Priority::Normal,
            )?;
        }
        Ok(())
    };
    let subs = || vec![eager("files", Priority::Normal)];
    let timed = |store: &Store,
                 profile: &dyn Fn(&mut syncline::Profile)|
     -> anyhow::Result<(Duration, syncline::SyncStats)> {
        let started = Instant::now();
        let c = client(&relay, &relay.url(), store, subs(), |p| profile(p))?;
        let stats = c.wait_synced(WAIT, true)?;
        let elapsed = started.elapsed();
        c.stop();
        Ok((elapsed, stats))
    };
    // Upload: a device holding the files declares its upload rate.
    let up_dir = tempfile::tempdir()?;
    let up = open_store(up_dir.path())?;
    fill(&up, 0)?;
    let (up_time, up_stats) = timed(&up, &|p| p.upload_bytes_per_s = Some(rate))?;
    // Download: a new device declares its download rate.
    let down_dir = tempfile::tempdir()?;
    let down = open_store(down_dir.path())?;
    let (down_time, down_stats) = timed(&down, &|p| p.download_bytes_per_s = Some(rate))?;
    // The floors: the same transfers with nothing declared.
    let floor_up_dir = tempfile::tempdir()?;
    let floor_up = open_store(floor_up_dir.path())?;
    fill(&floor_up, 1_000_000)?;
    let (floor_up_time, _) = timed(&floor_up, &|_| {})?;
    let floor_down_dir = tempfile::tempdir()?;
    let floor_down = open_store(floor_down_dir.path())?;
    let (floor_down_time, _) = timed(&floor_down, &|_| {})?;
    let achieved = |bytes: u64, time: Duration| bytes as f64 / time.as_secs_f64();
    let up_rate = achieved(up_stats.bytes_sent, up_time);
    let down_rate = achieved(down_stats.bytes_received, down_time);
    Ok(serde_json::json!({
        "scenario": "pacing",
        "declared_bytes_per_s": rate,
        "upload_bytes": up_stats.bytes_sent,
        "upload_ms": up_time.as_millis(),
        "upload_achieved_bytes_per_s": up_rate.round(),
        "upload_vs_declared": up_rate / rate as f64,
        "download_bytes": down_stats.bytes_received,
        "download_ms": down_time.as_millis(),
        "download_achieved_bytes_per_s": down_rate.round(),
        "download_vs_declared": down_rate / rate as f64,
        "floor_upload_unpaced_ms": floor_up_time.as_millis(),
        "floor_download_unpaced_ms": floor_down_time.as_millis(),
        "target": "within 10% of declared",
    }))
}

/// `wire-bytes`: see the module documentation.
pub fn wire_bytes(docs: usize) -> anyhow::Result<serde_json::Value> {
    let words = [
        "sync",
        "offline",
        "device",
        "relay",
        "document",
        "change",
        "merge",
        "the",
        "a",
        "of",
        "and",
        "to",
        "is",
        "with",
        "every",
        "write",
        "works",
        "network",
        "phone",
        "laptop",
        "conflict",
        "history",
        "priority",
        "bandwidth",
        "metered",
        "budget",
        "plan",
        "todo",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let text = |rng: &mut fastrand::Rng| -> String {
        (0..400)
            .map(|_| words[rng.usize(..words.len())])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut workloads = serde_json::Map::new();
    for workload in ["text", "numeric"] {
        let source_dir = tempfile::tempdir()?;
        let source = open_store(source_dir.path())?;
        let mut saved = 0u64;
        for _ in 0..docs {
            let value = match workload {
                "text" => Value::Map(
                    [
                        (
                            "title".to_owned(),
                            Value::from(text(&mut rng)[..40].to_owned()),
                        ),
                        ("body".to_owned(), Value::Text(text(&mut rng))),
                    ]
                    .into_iter()
                    .collect(),
                ),
                _ => Value::Map(
                    (0..200)
                        .map(|k| {
                            let v = if k % 2 == 0 {
                                Value::Int(rng.i64(..))
                            } else {
                                Value::F64(rng.f64() * 1e6)
                            };
                            (format!("m{k}"), v)
                        })
                        .collect(),
                ),
            };
            let doc = source.create_with(&collection("data"), value, Priority::Normal)?;
            saved += source.info(doc.id())?.stored_bytes;
        }
        let mut row = serde_json::Map::new();
        row.insert("floor_saved_bytes".into(), saved.into());
        for compression in [true, false] {
            let data = tempfile::tempdir()?;
            let toml = format!("compression = {compression}\n");
            let relay = Relay::start_with(data.path(), "127.0.0.1:0", Some(&toml))?;
            let subs = || vec![eager("data", Priority::Normal)];
            let up = client(&relay, &relay.url(), &source, subs(), |_| {})?;
            up.wait_synced(WAIT, true)?;
            up.stop();
            let fresh_dir = tempfile::tempdir()?;
            let fresh = open_store(fresh_dir.path())?;
            let down = client(&relay, &relay.url(), &fresh, subs(), |_| {})?;
            let stats = down.wait_synced(WAIT, true)?;
            down.stop();
            let key = if compression {
                "compressed"
            } else {
                "uncompressed"
            };
            row.insert(format!("{key}_bytes_received"), stats.bytes_received.into());
        }
        let c = row["compressed_bytes_received"].as_u64().unwrap_or(0);
        let u = row["uncompressed_bytes_received"].as_u64().unwrap_or(1);
        row.insert(
            "compressed_vs_uncompressed".into(),
            (c as f64 / u.max(1) as f64).into(),
        );
        workloads.insert(workload.into(), row.into());
    }
    Ok(serde_json::json!({
        "scenario": "wire-bytes",
        "documents": docs,
        "workloads": workloads,
    }))
}
