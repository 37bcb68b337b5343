//! `relay-abuse`: one honest device syncing through a real relay while hostile clients run
//! every class of abuse of `docs/SECURITY.md` at once, for a bounded time. Reports the honest
//! device's acknowledgement latency quiet and under abuse (its floor: the same device alone),
//! the relay's peak resident memory, and whether it stayed up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use automerge::sync::{ChunkList, Message as SyncMessage, MessageVersion};
use automerge::transaction::Transactable;
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use syncline_protocol::messages::*;
use syncline_protocol::{DocId, Message, frame};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::relay::{Client, Relay, Writer};

/// Runs the scenario: `quiet` seconds of the honest device alone, then `seconds` of abuse.
pub async fn abuse(
    quiet: f64,
    seconds: f64,
    only: Option<String>,
) -> anyhow::Result<serde_json::Value> {
    let fetching = only
        .as_deref()
        .is_none_or(|o| o.split(',').any(|n| n == "fetch"));
    let relay = Arc::new(if fetching {
        Relay::start_seeded(seed_fetched)?
    } else {
        Relay::start()?
    });
    let alone = honest(&relay, "alone", Duration::from_secs_f64(quiet)).await?;
    let sent = Arc::new(AtomicU64::new(0));
    let cpu_before = relay.cpu_seconds();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let peak = Arc::new(AtomicU64::new(relay.rss_kib()?));
    let sampler = {
        let (relay, peak) = (Arc::clone(&relay), Arc::clone(&peak));
        tokio::spawn(async move {
            while Instant::now() < deadline {
                if let Ok(kib) = relay.rss_kib() {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let attacks: Vec<(&str, Attack)> = vec![
        ("inflate", Attack::Inflate),
        ("ops", Attack::Ops),
        ("states", Attack::States),
        ("ephemeral", Attack::Ephemeral),
        ("profile", Attack::Profile),
        ("errors", Attack::ClientErrors),
        ("fragments", Attack::Fragments),
        ("sockets", Attack::Sockets),
        ("fetch", Attack::Fetch),
    ];
    let attacks: Vec<(&str, Attack)> = attacks
        .into_iter()
        .filter(|(name, _)| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|n| n == *name))
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, (_, attack)) in attacks.iter().enumerate() {
        for copy in 0..2u32 {
            let relay = Arc::clone(&relay);
            let sent = Arc::clone(&sent);
            let attack = *attack;
            let device = 1000 + u32::try_from(i).unwrap_or(0) * 10 + copy;
            tasks.push(tokio::spawn(async move {
                attack.run(&relay, device, deadline, &sent).await
            }));
        }
    }
    let abused = honest(&relay, "abused", Duration::from_secs_f64(seconds)).await?;
    let relay_cpu = relay.cpu_seconds() - cpu_before;
    for task in tasks {
        let _ = task.await;
    }
    sampler.abort();
    let alive = relay.alive() && relay.healthy().await;
    let after = honest(&relay, "after", Duration::from_secs(2)).await?;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "scenario": "relay-abuse",
        "seconds": seconds,
        "attacks": attacks.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "attacker_frames": sent.load(Ordering::Relaxed),
        "peak_rss_mib": peak.load(Ordering::Relaxed) / 1024,
        "relay_cpu_share": relay_cpu / seconds,
        "relay_alive": alive,
        "honest_syncs_alone": alone.len(),
        "honest_p50_ms_alone": ms(&alone, 0.5),
        "honest_p99_ms_alone": ms(&alone, 0.99),
        "honest_syncs_abused": abused.len(),
        "honest_p50_ms_abused": ms(&abused, 0.5),
        "honest_p99_ms_abused": ms(&abused, 0.99),
        "honest_syncs_after": after.len(),
    }))
}

/// The honest device: one small change every 50 ms, timed to its acknowledgement.
async fn honest(relay: &Relay, phase: &str, run: Duration) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    // A document per phase: each phase's writer starts a fresh Automerge document.
    let collection = format!("honest-{phase}");
    let mut client = Client::connect(relay, 1, &collection).await?;
    let mut writer = Writer::new(1, &collection)?;
    let deadline = Instant::now() + run;
    let mut i = u64::try_from(
        std::time::SystemTime::now()
            .elapsed()
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(0);
    while Instant::now() < deadline {
        i += 1;
        let started = Instant::now();
        writer.write_acknowledged(&mut client, i).await?;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        histogram.record(micros.max(1))?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(histogram)
}

#[derive(Clone, Copy)]
enum Attack {
    /// Valid changes whose 48 MiB value deflates to ~50 KB (the 3.7 GB report).
    Inflate,
    /// A change chunk claiming 2^60 operations.
    Ops,
    /// Opening messages with 1,024 heads each for ever new documents.
    States,
    /// 4 KiB ephemerals as fast as the socket takes them.
    Ephemeral,
    /// Profile updates as fast as the socket takes them.
    Profile,
    /// Error reports with forged log lines.
    ClientErrors,
    /// Fragmented messages left unfinished, with pings.
    Fragments,
    /// Raw sockets that never send a request.
    Sockets,
    /// Fetches of [`FETCH_DOCS`] stored documents at a time, cycling through more than the
    /// hub's cache holds, so that every one is loaded from storage: legitimate requests that
    /// saturate the hub thread (class 4: the honest tenant must still get its turns).
    Fetch,
}

/// Documents the relay holds for [`Attack::Fetch`] in the attackers' tenant: more than the
/// hub caches ([`syncline_relay::hub::CACHE_DOCS`]).
const FETCH_SEEDED: usize = syncline_relay::hub::CACHE_DOCS + CACHE_MARGIN;

/// How far [`FETCH_SEEDED`] exceeds the cache.
const CACHE_MARGIN: usize = 2_000;

/// Documents per `Fetch` of [`Attack::Fetch`] (a hundredth of what one may name).
const FETCH_DOCS: usize = 1_000;

/// Writes [`FETCH_SEEDED`] documents of about 1 KiB each in the `abuse` tenant's `todos`.
fn seed_fetched(data: &std::path::Path) -> anyhow::Result<()> {
    use syncline_relay::storage::{Append, SqliteStorage, Storage};
    let storage = SqliteStorage::open(&data.join(syncline_relay::admin::DATABASE_FILE))?;
    let tenant = syncline_relay::Tenant::new("abuse")?;
    let mut batch = Vec::new();
    for i in 0..FETCH_SEEDED {
        let mut doc = automerge::Automerge::new();
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "title", format!("{i:04}").repeat(256))?;
        tx.commit();
        let heads = syncline_protocol::Heads::new(
            doc.get_heads()
                .into_iter()
                .map(|h| syncline_protocol::Hash(h.0))
                .collect(),
        );
        batch.push(Append {
            doc: format!("todos/s{i}").parse()?,
            chunk: doc.save(),
            heads,
            priority: None,
            at_ms: 1,
            base_seq: None,
        });
        if batch.len() == 1_000 {
            storage.append(&tenant, &batch)?;
            batch.clear();
        }
    }
    storage.append(&tenant, &batch)?;
    Ok(())
}

impl Attack {
    /// Runs until `deadline`, reconnecting whenever the relay closes the connection.
    async fn run(
        self,
        relay: &Relay,
        device: u32,
        deadline: Instant,
        sent: &AtomicU64,
    ) -> anyhow::Result<()> {
        let payload = self.payload(device)?;
        while Instant::now() < deadline {
            if let Attack::Sockets = self {
                let mut held = Vec::new();
                for _ in 0..200 {
                    if let Ok(s) = tokio::net::TcpStream::connect(&relay.addr).await {
                        held.push(s);
                    }
                }
                sent.fetch_add(held.len() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // The attackers are another tenant than the honest device: the hub must serve
            // that tenant's turns while they flood it (issue 15, class 4).
            let Ok(mut client) = Client::connect_in(relay, device, "abuse", "todos").await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut n = 0u64;
            // Bounded: a connection's life ends at the deadline or when the relay closes it.
            while Instant::now() < deadline {
                n += 1;
                let sending = match self {
                    Attack::Fragments => {
                        let first =
                            Frame::message(vec![0u8; 4 << 20], OpCode::Data(Data::Binary), false);
                        let _ = client.socket.send(Ws::Frame(first)).await;
                        let mut ok = true;
                        for _ in 0..20 {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            ok &= client
                                .socket
                                .send(Ws::Ping(Vec::new().into()))
                                .await
                                .is_ok();
                        }
                        if ok {
                            Ok(())
                        } else {
                            Err(anyhow::anyhow!("closed"))
                        }
                    }
                    _ => {
                        let frame = self.frame(&payload, device, n)?;
                        client
                            .socket
                            .send(Ws::Binary(frame.into()))
                            .await
                            .map_err(anyhow::Error::from)
                    }
                };
                if sending.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                // Drain whatever the relay answered, without waiting for it.
                while let Ok(Some(Ok(_))) = tokio::time::timeout(
                    Duration::from_millis(0),
                    futures_util::StreamExt::next(&mut client.socket),
                )
                .await
                {}
            }
        }
        Ok(())
    }

    fn payload(self, device: u32) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Attack::Inflate => {
                let actor = automerge::ActorId::from(u128::from(device).to_be_bytes().as_slice());
                let mut doc = automerge::Automerge::new().with_actor(actor);
                let mut tx = doc.transaction();
                tx.put(automerge::ROOT, "title", "a".repeat(48 << 20))?;
                tx.commit();
                let mut change = doc.get_last_local_change().context("a change")?.clone();
                change.bytes().into_owned()
            }
            Attack::Ops => {
                let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 1, 21];
                chunk.extend([0, 1, 0xaa, 1, 1, 0, 0, 0, 1, 0x42, 10]);
                chunk.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 1]);
                chunk
            }
            _ => Vec::new(),
        })
    }

    /// The `n`th frame of the attack.
    fn frame(self, payload: &[u8], device: u32, n: u64) -> anyhow::Result<Vec<u8>> {
        let doc: DocId = format!("todos/a{n}").parse()?;
        let sync = |message: SyncMessage| {
            frame::encode(&Message::Sync(Sync {
                items: vec![SyncItem {
                    doc: doc.clone(),
                    message: message.encode(),
                    priority: None,
                }],
                positions: None,
            }))
        };
        let blank = |changes: ChunkList, heads| SyncMessage {
            heads,
            need: Vec::new(),
            have: vec![automerge::sync::Have::default()],
            changes,
            flags: None,
            version: MessageVersion::V1,
        };
        Ok(match self {
            Attack::Inflate | Attack::Ops => {
                sync(blank(ChunkList::from(vec![payload.to_vec()]), Vec::new()))
            }
            Attack::States => {
                let heads = (0..1024u32)
                    .map(|i| {
                        let mut hash = [0u8; 32];
                        hash[..4].copy_from_slice(&i.to_be_bytes());
                        hash[4..12].copy_from_slice(&n.to_be_bytes());
                        automerge::ChangeHash(hash)
                    })
                    .collect();
                sync(blank(ChunkList::empty(), heads))
            }
            Attack::Ephemeral => frame::encode(&Message::Ephemeral(Ephemeral {
                doc,
                payload: vec![1u8; MAX_EPHEMERAL_BYTES].into(),
                from: None,
            })),
            Attack::Profile => frame::encode(&Message::UpdateProfile(UpdateProfile {
                profile: syncline_testkit::profile(if n.is_multiple_of(2) {
                    DeviceClass::Phone
                } else {
                    DeviceClass::Desktop
                }),
            })),
            Attack::ClientErrors => frame::encode(&Message::Error(Error {
                code: ErrorCode::INTERNAL,
                message: format!(
                    "oops\n2026-12-02T00:00:00Z ERROR forged {}",
                    "x".repeat(4096)
                ),
                retry_after_ms: None,
                doc: None,
                collection: None,
            })),
            Attack::Fetch => {
                // Each attacker walks the documents from its own offset.
                let offset = usize::try_from(device).unwrap_or(0) * 7_919;
                let start = usize::try_from(n).unwrap_or(0) * FETCH_DOCS + offset;
                let docs = (start..start + FETCH_DOCS)
                    .map(|i| format!("todos/s{}", i % FETCH_SEEDED).parse())
                    .collect::<Result<Vec<DocId>, _>>()?;
                frame::encode(&Message::Fetch(Fetch { docs }))
            }
            Attack::Fragments | Attack::Sockets => Vec::new(),
        })
    }
}
