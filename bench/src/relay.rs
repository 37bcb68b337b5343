//! Relay scenarios: a real `syncline-relay serve` child process (built next to this binary:
//! `cargo build --release -p syncline-relay -p syncline-bench`), driven over loopback by raw
//! protocol clients in this process.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ROOT};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use syncline_protocol::messages::*;
use syncline_protocol::{Collection, DocId, Message, Priority, frame, sync_state};
use syncline_relay::admin;
use syncline_relay::auth::Claims;
use syncline_relay::hub::{DocGraph, responder};
use syncline_testkit::Child;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A running relay.
pub struct Relay {
    child: Child,
    pub(crate) addr: String,
    data: tempfile::TempDir,
}

impl Relay {
    /// Starts `syncline-relay serve` on a free port with a fresh data directory.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_seeded(|_| Ok(()))
    }

    /// Like [`Relay::start`], with `seed` writing to the fresh data directory first (through
    /// the relay's own storage, before the relay opens it).
    pub fn start_seeded(
        seed: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        seed(data.path())?;
        Self::start_in(data, None)
    }

    /// A relay on the PostgreSQL database at `url` (others may share it), signing tokens with
    /// the development key of `key_from` (another relay's data directory) when given.
    pub fn start_on_postgres(url: &str, key_from: Option<&Relay>) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        if let Some(other) = key_from {
            syncline_testkit::relay::share_dev_key(other.data.path(), data.path())?;
        }
        Self::start_in(data, Some(url))
    }

    fn start_in(data: tempfile::TempDir, storage: Option<&str>) -> anyhow::Result<Self> {
        let exe = relay_binary()?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("RUST_LOG", "error,automerge=off")
            .env("SYNCLINE_IDLE_TIMEOUT_SECS", "3600");
        if let Some(url) = storage {
            cmd.args(["--storage", url]);
        }
        let mut child = Child::spawn(cmd)?;
        let line = child.next_line()?.context("the relay printed nothing")?;
        let addr = line.rsplit(' ').next().context("no address")?.to_owned();
        Ok(Self { child, addr, data })
    }

    /// Whether the relay process is still running.
    pub fn alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.child.id())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
                .is_ok_and(|s| s.split(' ').nth(2) == Some("Z"))
    }

    /// Whether `/healthz` answers 200.
    pub async fn healthy(&self) -> bool {
        self.answers_200("/healthz").await
    }

    /// Whether `/readyz` answers 200 (on PostgreSQL: the change feed follows the others).
    pub async fn ready(&self) -> bool {
        self.answers_200("/readyz").await
    }

    async fn answers_200(&self, path: &str) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut tcp) = tokio::net::TcpStream::connect(&self.addr).await else {
            return false;
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let mut response = Vec::new();
        tcp.write_all(request.as_bytes()).await.is_ok()
            && tcp.read_to_end(&mut response).await.is_ok()
            && response.starts_with(b"HTTP/1.1 200")
    }

    /// CPU seconds the relay process has used (user and system).
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime is the 14th field.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    }

    /// The relay process's resident memory, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS")
    }

    /// A token for `device` in `tenant`.
    pub(crate) fn token(&self, device: u32, tenant: &str) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub: format!("user{device}"),
            dev: format!("{device:032x}"),
            ten: Some(tenant.into()),
            read: vec!["*".into()],
            write: vec!["*".into()],
            exp: Some(now + 3600),
            nbf: None,
            iat: Some(now),
            aud: None,
            iss: None,
        };
        Ok(admin::issue_token(self.data.path(), claims)?)
    }
}

fn relay_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("exe dir")?.join("syncline-relay");
    anyhow::ensure!(
        path.exists(),
        "{} not found: cargo build --release -p syncline-relay -p syncline-bench",
        path.display()
    );
    Ok(path)
}

/// A raw protocol client.
pub(crate) struct Client {
    pub(crate) socket: Socket,
}

impl Client {
    /// Connects as `device` of the `bench` tenant, subscribed to `collection`.
    pub(crate) async fn connect(
        relay: &Relay,
        device: u32,
        collection: &str,
    ) -> anyhow::Result<Self> {
        Self::connect_in(relay, device, "bench", collection).await
    }

    /// Connects as `device` of `tenant`, subscribed to `collection`.
    pub(crate) async fn connect_in(
        relay: &Relay,
        device: u32,
        tenant: &str,
        collection: &str,
    ) -> anyhow::Result<Self> {
        let mut request = format!("ws://{}/v1/sync", relay.addr).into_client_request()?;
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {}", relay.token(device, tenant)?).parse()?,
        );
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        let mut client = Self { socket };
        client
            .send(&syncline_testkit::hello(
                "syncline-bench",
                DeviceClass::Desktop,
            ))
            .await?;
        anyhow::ensure!(
            matches!(client.next().await?, Message::Welcome(_)),
            "no welcome"
        );
        client
            .send(&Message::Subscribe(Subscribe {
                collections: vec![CollectionSubscription {
                    collection: Collection::new(collection)?,
                    priority: Priority::Normal,
                    mode: SyncMode::Eager,
                }],
            }))
            .await?;
        Ok(client)
    }

    pub(crate) async fn send(&mut self, m: &Message) -> anyhow::Result<()> {
        Ok(self
            .socket
            .send(Ws::Binary(frame::encode(m).into()))
            .await?)
    }

    pub(crate) async fn next(&mut self) -> anyhow::Result<Message> {
        loop {
            let received = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .context("timed out")?
                .context("closed")??;
            if let Ws::Binary(bytes) = received {
                return Ok(frame::decode(&bytes, 1 << 26)?);
            }
        }
    }
}

/// Idle authenticated connections held by one relay, and its memory per connection.
pub async fn connections(count: u32) -> anyhow::Result<serde_json::Value> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let relay = Relay::start()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let floor_kib = relay.rss_kib()?;
    let started = Instant::now();
    let relay = Arc::new(relay);
    let mut clients = Vec::with_capacity(count as usize);
    for chunk in (0..count).collect::<Vec<_>>().chunks(200) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&d| {
                let relay = Arc::clone(&relay);
                tokio::spawn(async move { Client::connect(&relay, d, "bench").await })
            })
            .collect();
        for task in tasks {
            clients.push(task.await??);
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held_kib = relay.rss_kib()?;
    let per_connection = (held_kib.saturating_sub(floor_kib) as f64 * 1024.0) / f64::from(count);
    Ok(serde_json::json!({
        "scenario": "relay-connections",
        "connections": clients.len(),
        "connect_seconds": (connect_secs * 100.0).round() / 100.0,
        "relay_rss_floor_kib": floor_kib,
        "relay_rss_held_kib": held_kib,
        "bytes_per_connection": per_connection.round(),
    }))
}

/// One device's document and sync state, as a client would keep them.
pub(crate) struct Writer {
    pub(crate) doc: Automerge,
    pub(crate) state: State,
    pub(crate) id: DocId,
}

impl Writer {
    pub(crate) fn new(n: u32, collection: &str) -> anyhow::Result<Self> {
        // The device id of `Relay::token(n, _)`, as the actor: the relay refuses changes by
        // other actors.
        let actor = automerge::ActorId::from(u128::from(n).to_be_bytes().as_slice());
        Ok(Self {
            doc: Automerge::new().with_actor(actor),
            state: State::new(),
            id: format!("{collection}/d{n}").parse()?,
        })
    }

    /// Makes one small change and returns the sync message that carries it.
    pub(crate) fn change(&mut self, i: u64) -> Option<Vec<u8>> {
        let mut tx = self.doc.transaction();
        tx.put(ROOT, "n", i64::try_from(i).unwrap_or(i64::MAX))
            .ok()?;
        tx.commit();
        self.doc
            .generate_sync_message(&mut self.state)
            .map(|m| m.encode())
    }

    /// Applies an `Ack` as the SDK's engine does (`sync_state::acknowledged`).
    pub(crate) fn acknowledged(&mut self, ack: &syncline_protocol::messages::Ack) {
        let ours = self.doc.get_heads();
        for item in ack.items.iter().filter(|i| i.doc == self.id) {
            let heads: Vec<ChangeHash> = item
                .heads
                .as_slice()
                .iter()
                .map(|h| ChangeHash(h.0))
                .collect();
            if heads == ours {
                sync_state::acknowledged(&mut self.state, heads);
            }
        }
    }

    /// Writes change `i`, sends it and answers the relay until it is acknowledged (as the
    /// SDK does: an acknowledgement of exactly our heads starts the next exchange from them).
    /// Others' documents may arrive too (everyone subscribes to the collection): only this
    /// writer's own is synced.
    pub(crate) async fn write_acknowledged(
        &mut self,
        client: &mut Client,
        i: u64,
    ) -> anyhow::Result<()> {
        let Some(message) = self.change(i) else {
            return Ok(());
        };
        let mut outgoing = Some(message);
        loop {
            if let Some(message) = outgoing.take() {
                let item = SyncItem {
                    doc: self.id.clone(),
                    message,
                    priority: None,
                };
                client
                    .send(&Message::Sync(Sync {
                        items: vec![item],
                        positions: None,
                    }))
                    .await?;
            }
            match client.next().await? {
                Message::Ack(a) if a.items.iter().any(|i| i.seq.is_some()) => {
                    self.acknowledged(&a);
                    return Ok(());
                }
                Message::Sync(s) => {
                    let mine: Vec<&SyncItem> =
                        s.items.iter().filter(|i| i.doc == self.id).collect();
                    if mine.is_empty() {
                        continue;
                    }
                    for item in mine {
                        self.receive(item)?;
                    }
                    outgoing = self
                        .doc
                        .generate_sync_message(&mut self.state)
                        .map(|reply| reply.encode());
                }
                _ => {}
            }
        }
    }

    pub(crate) fn receive(&mut self, item: &SyncItem) -> anyhow::Result<()> {
        let m = automerge::sync::Message::decode(&item.message)?;
        self.doc.receive_sync_message(&mut self.state, m)?;
        Ok(())
    }
}

/// Where the relay scenarios run: one relay on its embedded SQLite, or `relays` relays on one
/// PostgreSQL server of the run's own (with `fsync` on, as SQLite flushes every commit).
pub struct Relays {
    pub(crate) relays: Vec<Arc<Relay>>,
    /// Kept running for the relays; stopped when the scenario ends.
    _postgres: Option<syncline_testkit::postgres::PostgresServer>,
    storage: &'static str,
}

impl Relays {
    /// `relays` relays on `storage` (`sqlite`: exactly one; `postgres`: any number).
    pub async fn start(storage: &str, relays: usize) -> anyhow::Result<Self> {
        match storage {
            "sqlite" => {
                anyhow::ensure!(relays == 1, "SQLite storage serves one relay");
                Ok(Self {
                    relays: vec![Arc::new(Relay::start()?)],
                    _postgres: None,
                    storage: "sqlite",
                })
            }
            "postgres" => {
                let server = syncline_testkit::postgres::PostgresServer::start_durable()
                    .map_err(anyhow::Error::msg)?;
                let url = server
                    .create_database("relay")
                    .map_err(anyhow::Error::msg)?;
                let mut started: Vec<Arc<Relay>> = Vec::new();
                for _ in 0..relays.max(1) {
                    let relay = Relay::start_on_postgres(&url, started.first().map(|r| &**r))?;
                    started.push(Arc::new(relay));
                }
                // Ready once every change feed follows the others.
                for relay in &started {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !relay.ready().await {
                        anyhow::ensure!(Instant::now() < deadline, "a relay never got ready");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Ok(Self {
                    relays: started,
                    _postgres: Some(server),
                    storage: "postgres",
                })
            }
            other => anyhow::bail!("unknown storage {other:?} (sqlite or postgres)"),
        }
    }

    /// The relay device `d` connects to.
    fn for_device(&self, d: u32) -> Arc<Relay> {
        Arc::clone(&self.relays[d as usize % self.relays.len()])
    }
}

/// Small changes durably acknowledged per second, `devices` devices each writing its own
/// document, each waiting for its acknowledgement before the next change; the devices are
/// spread over the relays of `relays`.
pub async fn throughput(
    relays: &Relays,
    devices: u32,
    seconds: f64,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..devices)
        .map(|d| {
            let relay = relays.for_device(d);
            tokio::spawn(async move {
                // Each device writes its own collection: the scenario measures acknowledged
                // writes, not fan-out (measured by `relay-fanout`).
                let collection = format!("w{d}");
                let mut client = Client::connect(&relay, d, &collection).await?;
                let mut writer = Writer::new(d, &collection)?;
                let mut acked = 0u64;
                while Instant::now() < deadline {
                    writer.write_acknowledged(&mut client, acked).await?;
                    acked += 1;
                }
                anyhow::Ok(acked)
            })
        })
        .collect();
    let started = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64().max(seconds);
    // Floor: the same work with no network and no storage, on one thread: each device makes
    // its change and sync message, the relay's change graph takes it and answers (as the hub
    // does), and the device applies the acknowledgement.
    let floor_started = Instant::now();
    let mut floor_changes = 0u64;
    let mut floor: Vec<(Writer, DocGraph, State)> = (0..devices.min(100))
        .map(|d| {
            Ok((
                Writer::new(d, &format!("w{d}"))?,
                DocGraph::new(),
                sync_state::primed(Vec::new()),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    while floor_started.elapsed() < Duration::from_secs_f64(seconds.min(2.0)) {
        for (writer, graph, state) in &mut floor {
            let Some(message) = writer.change(floor_changes) else {
                continue;
            };
            let author = writer.doc.get_actor().to_bytes().to_vec();
            let message = automerge::sync::Message::decode(&message)?;
            responder::receive_sync_message(
                graph,
                state,
                message,
                Some(&author),
                &mut syncline_protocol::payload::Budget::new(
                    syncline_protocol::PayloadLimits::DEFAULT,
                ),
            )?;
            sync_state::settle(state, &graph.heads());
            if let Some(reply) = responder::generate_sync_message(graph, state) {
                writer.doc.receive_sync_message(&mut writer.state, reply)?;
            }
            if graph.heads() == writer.doc.get_heads() {
                sync_state::acknowledged(&mut writer.state, graph.heads());
            }
            floor_changes += 1;
        }
    }
    let floor_per_s = floor_changes as f64 / floor_started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "scenario": "relay-throughput",
        "storage": relays.storage,
        "relays": relays.relays.len(),
        "devices": devices,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "acknowledged_changes": total,
        "changes_per_s": (total as f64 / elapsed).round(),
        "floor_in_memory_changes_per_s_one_thread": floor_per_s.round(),
    }))
}

/// Latency from one writer's change to its arrival at every one of `receivers` devices. With
/// several relays, the writer is on the first and every receiver on the second: each change
/// crosses relays.
pub async fn fanout(
    relays: &Relays,
    receivers: u32,
    writes: u32,
) -> anyhow::Result<serde_json::Value> {
    let relay = Arc::clone(&relays.relays[0]);
    let receiving = Arc::clone(&relays.relays[1 % relays.relays.len()]);
    let doc_id: DocId = "bench/shared".parse()?;
    let mut writer_client = Client::connect(&relay, 0, "bench").await?;
    let mut writer = Writer::new(0, "bench")?;
    writer.id = doc_id.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u32, u64, Instant)>();
    let mut handles = Vec::new();
    for r in 1..=receivers {
        let relay = Arc::clone(&receiving);
        let tx = tx.clone();
        let doc_id = doc_id.clone();
        let mut client = Client::connect(&relay, r, "bench").await?;
        handles.push(tokio::spawn(async move {
            let mut w = Writer::new(r, "bench")?;
            w.id = doc_id;
            let mut seen = 0u64;
            while seen < u64::from(writes) {
                if let Message::Sync(s) = client.next().await? {
                    for item in &s.items {
                        w.receive(item)?;
                    }
                    if let Some(reply) = w.doc.generate_sync_message(&mut w.state) {
                        let item = SyncItem {
                            doc: w.id.clone(),
                            message: reply.encode(),
                            priority: None,
                        };
                        client
                            .send(&Message::Sync(Sync {
                                items: vec![item],
                                positions: None,
                            }))
                            .await?;
                    }
                    let n = automerge::ReadDoc::get(&w.doc, ROOT, "n")?
                        .and_then(|(v, _)| v.as_i64())
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0);
                    if n > seen {
                        seen = n;
                        let _ = tx.send((r, n, Instant::now()));
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    drop(tx);
    // Let every receiver's subscription settle before timing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 1..=u64::from(writes) {
        let Some(message) = writer.change(i) else {
            continue;
        };
        let sent_at = Instant::now();
        let item = SyncItem {
            doc: doc_id.clone(),
            message,
            priority: None,
        };
        writer_client
            .send(&Message::Sync(Sync {
                items: vec![item],
                positions: None,
            }))
            .await?;
        // One write in flight: answer the relay (the sync protocol's round trips) until every
        // receiver has reported this write.
        let mut arrived = 0;
        while arrived < receivers {
            tokio::select! {
                report = rx.recv() => {
                    let (_, n, at) = report.context("receivers ended")?;
                    if n >= i {
                        arrived += 1;
                        let micros = u64::try_from(at.duration_since(sent_at).as_micros()).unwrap_or(u64::MAX);
                        histogram.record(micros.max(1))?;
                    }
                }
                message = writer_client.next() => {
                    if let Message::Sync(s) = message? {
                        for item in &s.items {
                            writer.receive(item)?;
                        }
                        if let Some(reply) = writer.doc.generate_sync_message(&mut writer.state) {
                            let item = SyncItem { doc: doc_id.clone(), message: reply.encode(), priority: None };
                            writer_client.send(&Message::Sync(Sync { items: vec![item] , positions: None })).await?;
                        }
                    }
                }
                () = tokio::time::sleep(Duration::from_secs(30)) => anyhow::bail!("fan-out timed out"),
            }
        }
    }
    for h in handles {
        h.abort();
    }
    Ok(serde_json::json!({
        "scenario": "relay-fanout",
        "storage": relays.storage,
        "relays": relays.relays.len(),
        "receivers": receivers,
        "writes": writes,
        "p50_ms": histogram.value_at_quantile(0.5) as f64 / 1000.0,
        "p99_ms": histogram.value_at_quantile(0.99) as f64 / 1000.0,
        "max_ms": histogram.max() as f64 / 1000.0,
    }))
}
