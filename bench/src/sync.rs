//! Sync engine scenarios: real SDK devices (stores with the default `synchronous=FULL`) syncing
//! through a real `syncline-relay` process over loopback.
//!
//! Each prints its floors in the same run: (a) the same document syncs done by in-memory
//! Automerge documents exchanging Automerge sync messages directly (no network, no storage;
//! time and bytes), with sync states persisted from an earlier sync as automerge-repo keeps
//! them; (b) the raw encoded size of the changes that had to cross.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use syncline::{
    ChangeOrigin, Collection, DocId, Durability, Store, StoreOptions, SyncClient, SyncOptions,
    Value,
};
use syncline_testkit::relay::{Relay, token};

const WAIT: Duration = Duration::from_secs(600);

fn todos() -> Collection {
    Collection::new("todos").expect("valid")
}

struct Device {
    dir: tempfile::TempDir,
    store: Option<Store>,
}

impl Device {
    fn new() -> anyhow::Result<Self> {
        let mut d = Self {
            dir: tempfile::tempdir()?,
            store: None,
        };
        d.reopen(Durability::Normal)?;
        Ok(d)
    }

    fn reopen(&mut self, durability: Durability) -> anyhow::Result<()> {
        self.store = None;
        let options = StoreOptions {
            durability,
            ..StoreOptions::default()
        };
        self.store = Some(Store::open_with(self.dir.path().join("s.db"), options)?);
        Ok(())
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    fn client(&self, relay: &Relay) -> anyhow::Result<SyncClient> {
        let device = self.store().device_id().to_string();
        let token = token(&relay.data_dir, "bench", &device, "todos", "todos", 3600)?;
        let options = SyncOptions::new(relay.url(), &[todos()]);
        Ok(SyncClient::start(self.store(), options, move || {
            Ok(token.clone())
        })?)
    }

    fn sync_once(&self, relay: &Relay) -> anyhow::Result<syncline::SyncStats> {
        let client = self.client(relay)?;
        let stats = client.wait_synced(WAIT, true)?;
        client.stop();
        Ok(stats)
    }
}

fn todo(i: usize) -> Value {
    Value::from_json(&serde_json::json!({"title": format!("todo number {i}"), "done": false}))
}

/// `reconnect --docs N --changed K`: both devices hold N documents; K changed offline on the
/// reconnecting one and K others on a second device, which synced them meanwhile and stays
/// connected. Measured: from starting the reconnecting device's client until it is synced
/// and the second device holds its K changes.
pub fn reconnect(docs: usize, changed: usize) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        2 * changed <= docs,
        "--changed must be at most half of --docs"
    );
    let data = tempfile::tempdir()?;
    let relay = Relay::start(data.path())?;
    let (mut a, mut b) = (Device::new()?, Device::new()?);
    let ids: Vec<DocId> = (0..docs)
        .map(|i| {
            a.store()
                .create_with(&todos(), todo(i), Default::default())
                .map(|d| d.id().clone())
        })
        .collect::<Result<_, _>>()?;
    a.sync_once(&relay)?;
    b.sync_once(&relay)?;
    // Offline edits on both sides.
    for id in &ids[..changed] {
        a.store().document(id)?.put("done", true)?;
    }
    for id in &ids[changed..2 * changed] {
        b.store().document(id)?.put("title", "changed elsewhere")?;
    }
    // Measured with fsync per commit, the default.
    a.reopen(Durability::Full)?;
    b.reopen(Durability::Full)?;
    let b_client = b.client(&relay)?;
    b_client.wait_synced(WAIT, true)?;
    let wanted: HashSet<DocId> = ids[..changed].iter().cloned().collect();
    let (seen_tx, seen_rx) = mpsc::channel();
    let _watch = b.store().watch_collection(&todos(), move |event| {
        if event.origin == ChangeOrigin::Remote && wanted.contains(&event.doc_id) {
            let _ = seen_tx.send(event.doc_id.clone());
        }
    });
    let started = Instant::now();
    let a_client = a.client(&relay)?;
    let stats = a_client.wait_synced(WAIT, true)?;
    let mut seen = HashSet::new();
    while seen.len() < changed {
        seen.insert(
            seen_rx
                .recv_timeout(WAIT)
                .context("b never got a's changes")?,
        );
    }
    let elapsed = started.elapsed();
    a_client.stop();
    b_client.stop();
    let floor = floor_reconnect(changed)?;
    Ok(serde_json::json!({
        "scenario": "reconnect",
        "docs": docs,
        "changed": changed,
        "time_ms": ms(elapsed),
        "bytes": stats.bytes_sent + stats.bytes_received,
        "bytes_sent": stats.bytes_sent,
        "bytes_received": stats.bytes_received,
        "frames": stats.frames_sent + stats.frames_received,
        "round_trips": stats.round_trips,
        "floor_time_ms": ms(floor.time),
        "floor_bytes": floor.bytes,
        "floor_messages": floor.messages,
        "change_bytes": floor.change_bytes,
        "time_vs_floor": ratio(elapsed, floor.time),
        "bytes_vs_floor": stats.bytes_sent.saturating_add(stats.bytes_received) as f64 / floor.bytes.max(1) as f64,
    }))
}

/// `initial --docs N`: a relay holds N small documents; a new device syncs them all.
pub fn initial(docs: usize) -> anyhow::Result<serde_json::Value> {
    let data = tempfile::tempdir()?;
    let relay = Relay::start(data.path())?;
    let source = Device::new()?;
    for i in 0..docs {
        source
            .store()
            .create_with(&todos(), todo(i), Default::default())?;
    }
    source.sync_once(&relay)?;
    let mut fresh = Device::new()?;
    fresh.reopen(Durability::Full)?;
    let started = Instant::now();
    let stats = fresh.sync_once(&relay)?;
    let elapsed = started.elapsed();
    let held = fresh.store().list(&todos())?.len();
    anyhow::ensure!(held == docs, "the new device holds {held} of {docs}");
    let floor = floor_initial(docs)?;
    Ok(serde_json::json!({
        "scenario": "initial",
        "docs": docs,
        "time_ms": ms(elapsed),
        "bytes": stats.bytes_sent + stats.bytes_received,
        "frames": stats.frames_sent + stats.frames_received,
        "round_trips": stats.round_trips,
        "floor_time_ms": ms(floor.time),
        "floor_bytes": floor.bytes,
        "floor_messages": floor.messages,
        "change_bytes": floor.change_bytes,
        "time_vs_floor": ratio(elapsed, floor.time),
    }))
}

struct Floor {
    time: Duration,
    bytes: u64,
    messages: u64,
    change_bytes: u64,
}

fn new_todo(i: usize) -> anyhow::Result<Automerge> {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "title", format!("todo number {i}"))?;
    tx.put(ROOT, "done", false)?;
    tx.commit();
    Ok(doc)
}

/// Syncs two in-memory documents until neither has anything to send; returns bytes and
/// messages exchanged.
fn sync_pair(
    one: &mut Automerge,
    s1: &mut State,
    two: &mut Automerge,
    s2: &mut State,
) -> anyhow::Result<(u64, u64)> {
    let (mut bytes, mut messages) = (0u64, 0u64);
    for _ in 0..32 {
        let mut quiet = true;
        if let Some(m) = one.generate_sync_message(s1) {
            let encoded = m.encode();
            bytes += encoded.len() as u64;
            messages += 1;
            two.receive_sync_message(s2, automerge::sync::Message::decode(&encoded)?)?;
            quiet = false;
        }
        if let Some(m) = two.generate_sync_message(s2) {
            let encoded = m.encode();
            bytes += encoded.len() as u64;
            messages += 1;
            one.receive_sync_message(s1, automerge::sync::Message::decode(&encoded)?)?;
            quiet = false;
        }
        if quiet {
            return Ok((bytes, messages));
        }
    }
    anyhow::bail!("in-memory sync did not settle")
}

/// The floor of a reconnect: K documents changed on the device and K on the relay's side,
/// each synced with sync states persisted (encoded and decoded) from the previous sync.
fn floor_reconnect(changed: usize) -> anyhow::Result<Floor> {
    let mut pairs = Vec::with_capacity(2 * changed);
    let mut change_bytes = 0u64;
    for i in 0..2 * changed {
        let mut device = new_todo(i)?;
        let mut relay = Automerge::new();
        let (mut sd, mut sr) = (State::new(), State::new());
        sync_pair(&mut device, &mut sd, &mut relay, &mut sr)?;
        let (sd, sr) = (State::decode(&sd.encode())?, State::decode(&sr.encode())?);
        let side = if i < changed { &mut device } else { &mut relay };
        let mut tx = side.transaction();
        if i < changed {
            tx.put(ROOT, "done", true)?;
        } else {
            tx.put(ROOT, "title", "changed elsewhere")?;
        }
        tx.commit();
        change_bytes += side
            .get_last_local_change()
            .map_or(0, |c| c.raw_bytes().len() as u64);
        pairs.push((device, sd, relay, sr));
    }
    let started = Instant::now();
    let (mut bytes, mut messages) = (0, 0);
    for (device, sd, relay, sr) in &mut pairs {
        let (b, m) = sync_pair(device, sd, relay, sr)?;
        bytes += b;
        messages += m;
    }
    Ok(Floor {
        time: started.elapsed(),
        bytes,
        messages,
        change_bytes,
    })
}

/// The floor of an initial sync: N documents synced into empty ones from blank states.
fn floor_initial(docs: usize) -> anyhow::Result<Floor> {
    let sources: Vec<Automerge> = (0..docs).map(new_todo).collect::<Result<_, _>>()?;
    let change_bytes = sources
        .iter()
        .flat_map(|d| d.get_changes(&[]))
        .map(|c| c.raw_bytes().len() as u64)
        .sum();
    let started = Instant::now();
    let (mut bytes, mut messages) = (0, 0);
    for mut source in sources {
        let mut target = Automerge::new();
        let (b, m) = sync_pair(
            &mut source,
            &mut State::new(),
            &mut target,
            &mut State::new(),
        )?;
        bytes += b;
        messages += m;
    }
    Ok(Floor {
        time: started.elapsed(),
        bytes,
        messages,
        change_bytes,
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    (a.as_secs_f64() / b.as_secs_f64().max(1e-9) * 100.0).round() / 100.0
}
