//! Several relays on one storage (issue 17): each hub learns of the others' commits from
//! (tenant, collection, sequence) announcements and catches up from storage; a hub whose
//! cached document another relay changed never appends to it. Two hubs share one SQLite file
//! here, as relays share one PostgreSQL database (the change feed that makes the
//! announcements is tested end to end in `tests/tests/scale_out.rs`).

mod common;

use common::{World, col, doc, grants, reconcile, tenant};
use syncline_protocol::Message;
use syncline_protocol::messages::ErrorCode;
use syncline_relay::storage::Storage;

/// Relay A with device 1, relay B beside it (following A's commits) with device 2; both
/// devices subscribed to `todos`.
fn two_relays() -> (World, World) {
    let mut a = World::new();
    let mut b = World::beside(&a);
    b.hub.follow_remote().expect("follow");
    let todos = || grants(&["todos"], &["todos"]);
    a.join(1, "acme", todos());
    b.join(2, "acme", todos());
    (a, b)
}

/// What `todos` has reached in storage.
fn todos_seq(w: &World) -> u64 {
    w.storage
        .collection_seqs()
        .expect("seqs")
        .into_iter()
        .find(|(t, c, _)| *t == tenant("acme") && *c == col("todos"))
        .map_or(0, |(_, _, seq)| seq)
}

/// B hears that `todos` reached A's latest sequence, and its devices get what it pushes.
fn hear(a: &World, b: &mut World) {
    let pushed = b
        .hub
        .remote_changes(vec![(tenant("acme"), col("todos"), todos_seq(a))], 100)
        .expect("catch up");
    b.deliver(pushed);
}

#[test]
fn a_change_through_one_relay_reaches_a_device_on_the_other_when_announced() {
    let (mut a, mut b) = two_relays();
    let x = doc("todos/x");
    a.clients.get_mut(&1).expect("client").put(&x, "n", 1);
    a.push(1, std::slice::from_ref(&x));
    assert!(a.clients[&1].acked(&x).is_some());
    assert_eq!(b.clients[&2].get(&x, "n"), None, "not announced yet");

    let seq = todos_seq(&a);
    let pushed = b
        .hub
        .remote_changes(vec![(tenant("acme"), col("todos"), seq)], 100)
        .expect("catch up");
    assert!(!pushed.is_empty());
    b.deliver(pushed);
    assert_eq!(b.clients[&2].get(&x, "n"), Some(1));

    // The same announcement again (or a late duplicate) sends nothing more.
    let again = b
        .hub
        .remote_changes(vec![(tenant("acme"), col("todos"), seq)], 101)
        .expect("catch up");
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn a_relay_that_missed_announcements_catches_up_on_every_collection() {
    let (mut a, mut b) = two_relays();
    let (x, y) = (doc("todos/x"), doc("todos/y"));
    let device = a.clients.get_mut(&1).expect("client");
    device.put(&x, "n", 1);
    device.put(&y, "n", 2);
    a.push(1, &[x.clone(), y.clone()]);

    // No announcement reached B (its feed was down): a resync compares every collection.
    let pushed = b.hub.remote_resync(100).expect("resync");
    b.deliver(pushed);
    assert_eq!(b.clients[&2].get(&x, "n"), Some(1));
    assert_eq!(b.clients[&2].get(&y, "n"), Some(2));
    assert!(b.hub.remote_resync(101).expect("resync").is_empty());
}

#[test]
fn a_relay_never_appends_to_a_document_another_relay_changed_since_it_loaded_it() {
    let (mut a, mut b) = two_relays();
    let x = doc("todos/x");
    // Both relays hold `todos/x` in memory.
    a.clients.get_mut(&1).expect("client").put(&x, "n", 1);
    a.push(1, std::slice::from_ref(&x));
    hear(&a, &mut b);
    assert_eq!(b.clients[&2].get(&x, "n"), Some(1));

    // Device 1 changes it through A; before B hears of it, device 2 changes it through B.
    a.clients.get_mut(&1).expect("client").put(&x, "a", 1);
    a.push(1, std::slice::from_ref(&x));
    b.clients.get_mut(&2).expect("client").put(&x, "b", 2);
    let acked_before = b.clients[&2].acked(&x);
    b.push(2, std::slice::from_ref(&x));
    // B's copy was stale: that change was refused for now (nothing acknowledged), the device
    // told to send it again soon.
    let refusal = b.clients[&2].inbox.iter().rev().find_map(|m| match m {
        Message::Error(e) if e.code == ErrorCode::INTERNAL => Some(e.clone()),
        _ => None,
    });
    assert!(
        refusal.is_some_and(|e| e.doc.as_ref() == Some(&x) && e.retry_after_ms.is_some()),
        "{:?}",
        b.clients[&2].inbox
    );
    assert_eq!(
        b.clients[&2].acked(&x),
        acked_before,
        "nothing acknowledged"
    );

    // Sent again, it is stored on top of A's change, which device 2 then gets.
    b.clients.get_mut(&2).expect("client").states.clear();
    b.push(2, std::slice::from_ref(&x));
    let acked = b.clients[&2].acked(&x).expect("acknowledged");
    assert_eq!(
        b.clients[&2].get(&x, "a"),
        Some(1),
        "A's change reached device 2"
    );
    let stored = b
        .storage
        .load(&tenant("acme"), &x)
        .expect("load")
        .expect("stored");
    let graph = syncline_relay::hub::DocGraph::load(stored.chunks.iter().map(Vec::as_slice))
        .expect("loads");
    let heads: Vec<[u8; 32]> = graph.heads().iter().map(|h| h.0).collect();
    let acked_heads: Vec<[u8; 32]> = acked.heads.as_slice().iter().map(|h| h.0).collect();
    assert_eq!(
        heads, acked_heads,
        "the acknowledged heads are the stored ones"
    );
    assert_eq!(
        stored.heads, acked.heads,
        "the stored heads column matches the document"
    );
}

#[test]
fn a_relay_skips_its_own_commits_when_they_are_announced() {
    let (_a, mut b) = two_relays();
    let x = doc("todos/x");
    b.clients.get_mut(&2).expect("client").put(&x, "n", 1);
    b.push(2, std::slice::from_ref(&x));
    let inbox = b.clients[&2].inbox.len();
    let pushed = b
        .hub
        .remote_changes(vec![(tenant("acme"), col("todos"), todos_seq(&b))], 100)
        .expect("catch up");
    assert!(pushed.is_empty(), "{pushed:?}");
    assert_eq!(b.clients[&2].inbox.len(), inbox);
}

#[test]
fn a_document_another_session_loaded_before_the_announcement_is_still_pushed() {
    let (mut a, mut b) = two_relays();
    let todos = || grants(&["todos"], &["todos"]);
    b.join(3, "acme", todos());
    let x = doc("todos/x");
    a.clients.get_mut(&1).expect("client").put(&x, "n", 1);
    a.push(1, std::slice::from_ref(&x));
    // Before B hears of it, device 3 reconnects to B: its plan loads `todos/x` (at the
    // sequence just committed) and sends it to device 3 only.
    b.reconnect(3, "acme", todos());
    b.run(vec![(3, reconcile(vec![]))]);
    assert_eq!(b.clients[&3].get(&x, "n"), Some(1));
    assert_eq!(b.clients[&2].get(&x, "n"), None);
    // The announcement still reaches device 2, although B's copy is current.
    hear(&a, &mut b);
    assert_eq!(b.clients[&2].get(&x, "n"), Some(1));
}

/// Found by the simulation (seed 454 with two relays): a plan read a document's sequence from
/// storage but sent the older copy in memory, and the device stored the plan's cursor, so it
/// never got the newer change.
#[test]
fn a_plan_never_sends_an_older_copy_under_a_newer_cursor() {
    let (mut a, mut b) = two_relays();
    let x = doc("todos/x");
    a.clients.get_mut(&1).expect("client").put(&x, "n", 1);
    a.push(1, std::slice::from_ref(&x));
    hear(&a, &mut b);
    assert_eq!(b.clients[&2].get(&x, "n"), Some(1), "B holds x in memory");
    // A changes it; before B hears of it, device 3 connects to B and plans from scratch.
    a.clients.get_mut(&1).expect("client").put(&x, "n", 2);
    a.push(1, std::slice::from_ref(&x));
    let todos = || grants(&["todos"], &["todos"]);
    b.join(3, "acme", todos());
    b.run(vec![(3, reconcile(vec![]))]);
    assert_eq!(b.clients[&3].get(&x, "n"), Some(2));
    let plan = b.last_plan(3).expect("a plan");
    assert_eq!(plan.cursors[0].seq, todos_seq(&a));
}

/// Random schedules over two hubs sharing one storage: devices write, move between the
/// relays, and the relays' announcements arrive late, out of turn, or never (then a resync
/// makes up for them). Once every announcement is delivered and the replies settle, every
/// connected device holds every acknowledged change, without reconnecting: the cross-relay
/// push is live. Nothing acknowledged is ever missing from storage.
mod schedules {
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;

    use automerge::sync::{State, SyncDoc};
    use automerge::transaction::Transactable;
    use automerge::{ActorId, Automerge, ChangeHash, ROOT};
    use syncline_protocol::messages::{CollectionSubscription, DeviceClass, ErrorCode, SyncMode};
    use syncline_protocol::{Collection, DeviceId, DocId, Message, Priority};
    use syncline_relay::Tenant;
    use syncline_relay::auth::Identity;
    use syncline_relay::hub::{Delivery, DocGraph, Hub, SessionId};
    use syncline_relay::session::Action;
    use syncline_relay::storage::{MemoryStorage, Storage};

    use super::common::{col, grants, reconcile, tenant};

    struct Device {
        actor: ActorId,
        docs: HashMap<DocId, Automerge>,
        states: HashMap<DocId, State>,
        /// (relay, session) while connected.
        on: Option<(usize, SessionId)>,
    }

    struct Net {
        rng: fastrand::Rng,
        storage: MemoryStorage,
        hubs: Vec<Hub<MemoryStorage>>,
        devices: Vec<Device>,
        /// Per hub, announcements of the other's commits not delivered yet.
        announced: Vec<Vec<(Tenant, Collection, u64)>>,
        /// What storage had reached when last looked at (to announce what moved).
        reached: HashMap<(Tenant, Collection), u64>,
        /// Per document, every change a relay acknowledged.
        acked: HashMap<DocId, HashSet<ChangeHash>>,
        next_session: SessionId,
        now: u64,
    }

    fn docs() -> Vec<DocId> {
        ["todos/a", "todos/b", "todos/c"]
            .iter()
            .map(|d| d.parse().expect("valid"))
            .collect()
    }

    impl Net {
        fn new(seed: u64) -> Self {
            let storage = MemoryStorage::seeded(seed);
            let hubs = vec![
                Hub::new(Arc::new(storage.clone())),
                Hub::new(Arc::new(storage.share())),
            ];
            let mut net = Self {
                rng: fastrand::Rng::with_seed(seed),
                storage,
                hubs,
                devices: (1..=4u8)
                    .map(|n| Device {
                        actor: ActorId::from([n; 16].as_slice()),
                        docs: HashMap::new(),
                        states: HashMap::new(),
                        on: None,
                    })
                    .collect(),
                announced: vec![Vec::new(), Vec::new()],
                reached: HashMap::new(),
                acked: HashMap::new(),
                next_session: 1,
                now: 10,
            };
            for hub in &mut net.hubs {
                hub.follow_remote().expect("follow");
            }
            net
        }

        fn connect(&mut self, d: usize, relay: usize) {
            self.disconnect(d);
            let id = self.next_session;
            self.next_session += 1;
            let n = u8::try_from(d + 1).expect("small");
            let identity = Identity {
                user: format!("user{n}"),
                device: DeviceId::from_bytes([n; 16]),
                tenant: tenant("acme"),
            };
            self.hubs[relay].connect(id, identity, grants(&["todos"], &["todos"]), self.now);
            self.devices[d].on = Some((relay, id));
            self.devices[d].states.clear();
            let subscription = vec![CollectionSubscription {
                collection: col("todos"),
                priority: Priority::Normal,
                mode: SyncMode::Eager,
            }];
            self.act(
                relay,
                vec![
                    (
                        id,
                        Action::Register(syncline_testkit::profile(DeviceClass::Desktop)),
                    ),
                    (id, Action::Subscribe(subscription)),
                    (id, reconcile(vec![])),
                ],
            );
            self.push_all(d);
        }

        fn disconnect(&mut self, d: usize) {
            if let Some((relay, id)) = self.devices[d].on.take() {
                self.hubs[relay]
                    .disconnect(id, self.now)
                    .expect("disconnect");
            }
        }

        /// Device `d` sends what it has of every document (a fresh start after a refusal).
        fn push_all(&mut self, d: usize) {
            let Some((relay, id)) = self.devices[d].on else {
                return;
            };
            let items = outgoing(&mut self.devices[d], &docs());
            if !items.is_empty() {
                self.act(relay, vec![(id, Action::Sync(items))]);
            }
        }

        fn write(&mut self, d: usize) {
            let all = docs();
            let doc = all[self.rng.usize(..all.len())].clone();
            let device = &mut self.devices[d];
            let automerge = device.docs.entry(doc.clone()).or_default();
            automerge.set_actor(device.actor.clone());
            let mut tx = automerge.transaction();
            tx.put(
                ROOT,
                format!("k{}", self.now),
                i64::try_from(self.now).expect("small"),
            )
            .expect("put");
            tx.commit();
            if let Some((relay, id)) = device.on {
                let items = outgoing(device, std::slice::from_ref(&doc));
                self.act(relay, vec![(id, Action::Sync(items))]);
            }
        }

        /// Runs actions on hub `relay` and every reply they cause, then announces to the other
        /// hub what storage moved.
        fn act(&mut self, relay: usize, actions: Vec<(SessionId, Action)>) {
            let mut queue: std::collections::VecDeque<(usize, SessionId, Action)> =
                actions.into_iter().map(|(id, a)| (relay, id, a)).collect();
            for step in 0.. {
                assert!(step < 20_000, "did not settle");
                let Some((r, id, action)) = queue.pop_front() else {
                    break;
                };
                self.now += 1;
                let out = self.hubs[r].handle(id, action, self.now).expect("hub");
                for (to, reply) in self.deliver(r, out) {
                    queue.push_back((r, to, reply));
                }
                self.announce();
            }
        }

        /// Hands hub `relay`'s deliveries to the devices connected there; returns their
        /// replies.
        fn deliver(&mut self, relay: usize, out: Vec<Delivery>) -> Vec<(SessionId, Action)> {
            let mut replies = Vec::new();
            for delivery in out {
                let Some(d) = self
                    .devices
                    .iter()
                    .position(|dev| dev.on == Some((relay, delivery.to)))
                else {
                    continue;
                };
                let device = &mut self.devices[d];
                match delivery.message {
                    Message::Sync(sync) => {
                        let touched: Vec<DocId> =
                            sync.items.iter().map(|i| i.doc.clone()).collect();
                        for item in sync.items {
                            let automerge = device.docs.entry(item.doc.clone()).or_default();
                            let state = device.states.entry(item.doc).or_default();
                            let m = automerge::sync::Message::decode(&item.message).expect("valid");
                            automerge.receive_sync_message(state, m).expect("applies");
                        }
                        let items = outgoing(device, &touched);
                        if !items.is_empty() {
                            replies.push((delivery.to, Action::Sync(items)));
                        }
                    }
                    Message::Ack(ack) => {
                        for item in ack.items.iter().filter(|i| i.seq.is_some()) {
                            let heads: Vec<ChangeHash> = item
                                .heads
                                .as_slice()
                                .iter()
                                .map(|h| ChangeHash(h.0))
                                .collect();
                            let doc = device.docs.get(&item.doc).expect("the device's document");
                            // What the acknowledged heads cover: every change not after them.
                            let after: HashSet<ChangeHash> =
                                doc.get_changes(&heads).iter().map(|c| c.hash()).collect();
                            self.acked.entry(item.doc.clone()).or_default().extend(
                                doc.get_changes(&[])
                                    .iter()
                                    .map(|c| c.hash())
                                    .filter(|h| !after.contains(h)),
                            );
                        }
                    }
                    Message::Error(e) if e.code == ErrorCode::INTERNAL => {
                        // Refused for now (another relay changed it): send it again from a
                        // fresh state; without a document, the connection ends.
                        match e.doc {
                            Some(doc) => {
                                device.states.remove(&doc);
                                let items = outgoing(device, std::slice::from_ref(&doc));
                                replies.push((delivery.to, Action::Sync(items)));
                            }
                            None => panic!("an INTERNAL error for the whole connection: {e:?}"),
                        }
                    }
                    Message::Error(e) => panic!("unexpected error {e:?}"),
                    _ => {}
                }
            }
            replies
        }

        /// What storage moved since last looked at goes into both hubs' announcement queues
        /// (each hub skips its own commits; the real feed skips them before the hub).
        fn announce(&mut self) {
            for (t, c, seq) in self.storage.collection_seqs().expect("seqs") {
                let key = (t.clone(), c.clone());
                if self.reached.get(&key) != Some(&seq) {
                    self.reached.insert(key, seq);
                    for queue in &mut self.announced {
                        queue.push((t.clone(), c.clone(), seq));
                    }
                }
            }
        }

        /// Hub `relay` takes its announcements (or a resync); replies run.
        fn hear(&mut self, relay: usize, resync: bool) {
            self.now += 1;
            let out = if resync {
                self.announced[relay].clear();
                self.hubs[relay].remote_resync(self.now).expect("resync")
            } else {
                let moved = std::mem::take(&mut self.announced[relay]);
                self.hubs[relay]
                    .remote_changes(moved, self.now)
                    .expect("catch up")
            };
            let replies = self.deliver(relay, out);
            self.act(relay, replies);
        }

        fn step(&mut self) {
            match self.rng.u8(0..10) {
                0..=4 => {
                    let d = self.rng.usize(..self.devices.len());
                    self.write(d);
                }
                5 => {
                    let d = self.rng.usize(..self.devices.len());
                    let relay = self.rng.usize(..2);
                    self.connect(d, relay);
                }
                6 => {
                    let d = self.rng.usize(..self.devices.len());
                    self.disconnect(d);
                }
                7 | 8 => {
                    let relay = self.rng.usize(..2);
                    self.hear(relay, false);
                }
                _ => {
                    // A lost notification: dropped, to be made up by a resync later.
                    let relay = self.rng.usize(..2);
                    self.announced[relay].clear();
                }
            }
        }
    }

    fn outgoing(device: &mut Device, docs: &[DocId]) -> Vec<syncline_protocol::messages::SyncItem> {
        docs.iter()
            .filter_map(|d| {
                let doc = device.docs.get_mut(d)?;
                let state = device.states.entry(d.clone()).or_default();
                doc.generate_sync_message(state)
                    .map(|m| syncline_protocol::messages::SyncItem {
                        doc: d.clone(),
                        message: m.encode(),
                        priority: None,
                    })
            })
            .collect()
    }

    #[test]
    fn devices_on_two_relays_converge_live_under_random_schedules() {
        let seeds: u64 = std::env::var("SHARED_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300);
        for seed in 0..seeds {
            let mut net = Net::new(seed);
            for d in 0..net.devices.len() {
                let relay = net.rng.usize(..2);
                net.connect(d, relay);
            }
            for _ in 0..60 {
                net.step();
            }
            // Every device connected somewhere; every announcement lost so far made up by a
            // resync, then everything announced heard, until nothing moves.
            for d in 0..net.devices.len() {
                if net.devices[d].on.is_none() {
                    let relay = net.rng.usize(..2);
                    net.connect(d, relay);
                }
            }
            for relay in 0..2 {
                net.hear(relay, true);
            }
            for _ in 0..20 {
                net.hear(0, false);
                net.hear(1, false);
            }
            assert!(
                net.announced.iter().all(Vec::is_empty),
                "seed {seed}: announcements still flowing"
            );
            let heads: Vec<Vec<Vec<ChangeHash>>> = net
                .devices
                .iter_mut()
                .map(|d| {
                    docs()
                        .iter()
                        .map(|id| d.docs.entry(id.clone()).or_default().get_heads())
                        .collect()
                })
                .collect();
            for (i, h) in heads.iter().enumerate() {
                assert_eq!(
                    h, &heads[0],
                    "seed {seed}: device {i} differs from device 0 without reconnecting"
                );
            }
            for (doc, changes) in &net.acked {
                let stored = net
                    .storage
                    .load(&tenant("acme"), doc)
                    .expect("load")
                    .expect("an acknowledged document is stored");
                let graph = DocGraph::load(stored.chunks.iter().map(Vec::as_slice)).expect("loads");
                for change in changes {
                    assert!(
                        graph.has_change(change),
                        "seed {seed}: acknowledged change {change} of {doc} lost"
                    );
                }
            }
        }
    }
}
