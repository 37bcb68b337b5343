//! The sync engine over the in-memory port (`MemorySyncStore`, no SQLite) against the relay's
//! real session and hub: the engine depends on the `SyncStore` port, not on the SQLite store.

use std::collections::VecDeque;
use std::sync::Arc;

use syncline::engine::{Backoff, Effect, Engine, EngineConfig, Event, Status};
use syncline::{
    Collection, CollectionSubscription, DeviceClass, DeviceId, DocId, Priority, SyncMode,
};
use syncline_protocol::frame;
use syncline_relay::Tenant;
use syncline_relay::auth::Identity;
use syncline_relay::hub::Hub;
use syncline_relay::session::{Action, Session};
use syncline_relay::storage::MemoryStorage;
use syncline_testkit::memory::MemorySyncStore;
use syncline_testkit::sim;

const RELAY: &str = "memory-relay";

struct Device {
    engine: Engine<MemorySyncStore>,
    session: Option<Session>,
    status: Status,
}

/// Devices and a relay in one thread; frames are delivered in order, with no latency.
struct World {
    now: u64,
    hub: Hub<MemoryStorage>,
    devices: Vec<Device>,
    /// Frames in flight: (device, towards the relay?, bytes).
    wire: VecDeque<(usize, bool, Vec<u8>)>,
}

fn collection() -> Collection {
    Collection::new("notes").expect("valid")
}

fn device_id(n: u8) -> DeviceId {
    DeviceId::from_bytes([n; 16])
}

impl World {
    fn new(devices: u8) -> Self {
        let devices = (1..=devices)
            .map(|n| {
                let config = EngineConfig {
                    relay: RELAY.into(),
                    profile: syncline_testkit::profile(DeviceClass::Phone),
                    subscriptions: vec![CollectionSubscription {
                        collection: collection(),
                        priority: Priority::Normal,
                        mode: SyncMode::Eager,
                    }],
                    client: "memory".into(),
                    backoff: Backoff {
                        min_ms: 10,
                        max_ms: 100,
                    },
                    stall_timeout_ms: 5_000,
                    sync_interval_ms: 60_000,
                    defer_metered_uploads: true,
                };
                Device {
                    engine: Engine::new(MemorySyncStore::new(device_id(n)), config, u64::from(n)),
                    session: None,
                    status: Status::Offline,
                }
            })
            .collect();
        Self {
            now: 1_000,
            hub: Hub::new(Arc::new(MemoryStorage::default())),
            devices,
            wire: VecDeque::new(),
        }
    }

    fn store(&self, i: usize) -> &MemorySyncStore {
        self.devices[i].engine.store()
    }

    fn handle(&mut self, i: usize, event: Event) {
        let effects = self.devices[i].engine.handle(event, self.now);
        for effect in effects {
            match effect {
                Effect::Connect => self.connect(i),
                Effect::Send(bytes) => self.wire.push_back((i, true, bytes)),
                Effect::Disconnect => self.devices[i].session = None,
                Effect::Status(status) => self.devices[i].status = status,
                // No device here sends ephemerals.
                Effect::WakeAt(_) | Effect::Ephemeral(_) => {}
            }
        }
    }

    fn connect(&mut self, i: usize) {
        let identity = Identity {
            user: "u".into(),
            device: device_id(u8::try_from(i + 1).expect("few devices")),
            tenant: Tenant::default_tenant(),
        };
        let grants = sim::all_grants();
        let verified = sim::verified(identity.clone(), grants.clone());
        self.devices[i].session = Some(Session::new(
            format!("s{i}"),
            verified,
            sim::relaxed_limits(),
            self.now,
        ));
        self.hub.connect(i as u64, identity, grants, self.now);
        // Connected is handled once this call's effects are applied: queue it as a frame-less
        // step by handling it right away (Connect is the engine's only effect here).
        self.handle(i, Event::Connected);
    }

    fn disconnect(&mut self, i: usize) {
        self.devices[i].session = None;
        self.hub.disconnect(i as u64, self.now).expect("disconnect");
        self.handle(
            i,
            Event::Disconnected(syncline::engine::Disconnect::Failed("test".into())),
        );
    }

    /// Delivers frames until none is in flight (bounded).
    fn run(&mut self) {
        for _ in 0..10_000 {
            let Some((i, to_relay, bytes)) = self.wire.pop_front() else {
                return;
            };
            self.now += 1;
            if !to_relay {
                self.handle(i, Event::Frame(bytes));
                continue;
            }
            let Some(session) = self.devices[i].session.as_mut() else {
                continue;
            };
            let out = session.handle_frame(&bytes, self.now);
            for message in out.send {
                self.wire.push_back((i, false, frame::encode(&message)));
            }
            for action in out.actions {
                if matches!(action, Action::VerifyToken(_) | Action::ClientError(_)) {
                    continue;
                }
                for delivery in self.hub.handle(i as u64, action, self.now).expect("hub") {
                    let to = usize::try_from(delivery.to).expect("a device index");
                    if self.devices[to].session.is_some() {
                        self.wire
                            .push_back((to, false, frame::encode(&delivery.message)));
                    }
                }
            }
            assert!(
                out.close.is_none(),
                "the relay closed device {i}: {:?}",
                out.close
            );
        }
        panic!("the exchange did not settle in 10,000 frames");
    }
}

#[test]
fn engines_over_the_memory_port_converge_through_the_relay() {
    let mut world = World::new(2);
    let a_doc = DocId::new(collection(), "from-a").expect("valid");
    let b_doc = DocId::new(collection(), "from-b").expect("valid");
    let shared = DocId::new(collection(), "shared").expect("valid");
    world
        .store(0)
        .put(&a_doc, "title", "written on a", 1)
        .expect("put");
    world.store(0).put(&shared, "a", "1", 1).expect("put");
    world
        .store(1)
        .put(&b_doc, "title", "written on b", 1)
        .expect("put");
    world.store(1).put(&shared, "b", "2", 1).expect("put");

    for i in 0..2 {
        world.handle(i, Event::Start);
        world.run();
    }
    // Device 0 synced before device 1 wrote anything it lacked: a second round brings it
    // device 1's documents through the fan-out.
    for i in 0..2 {
        assert!(
            matches!(world.devices[i].status, Status::Synced { .. }),
            "device {i}: {:?}",
            world.devices[i].status
        );
    }
    for doc in [&a_doc, &b_doc, &shared] {
        assert_eq!(
            world.store(0).heads(doc),
            world.store(1).heads(doc),
            "{doc}"
        );
        assert!(!world.store(0).heads(doc).is_empty(), "{doc} exists");
    }
    assert_eq!(
        world.store(1).get(&a_doc, "title").as_deref(),
        Some("written on a")
    );
    assert_eq!(world.store(0).get(&shared, "b").as_deref(), Some("2"));
    assert_eq!(world.store(1).get(&shared, "a").as_deref(), Some("1"));
    // What arrived by sync is stamped with the engine's `now`, not a clock of the store's.
    let stamped = world.store(1).received_at(&a_doc).expect("received");
    assert!((1_000..=world.now).contains(&stamped), "{stamped}");
    for i in 0..2 {
        use syncline::engine::SyncStore;
        assert_eq!(
            world
                .store(i)
                .unacknowledged(RELAY, &collection())
                .expect("read"),
            Vec::<DocId>::new(),
            "device {i} has everything acknowledged"
        );
    }

    // Offline, then a change on one side reaches the other on reconnect.
    world.disconnect(1);
    world.store(0).put(&shared, "a", "changed", 2).expect("put");
    world.handle(0, Event::LocalChanges(vec![shared.clone()]));
    world.run();
    world.handle(1, Event::NetworkUp);
    world.run();
    assert_eq!(world.store(1).get(&shared, "a").as_deref(), Some("changed"));
    assert_eq!(world.store(0).heads(&shared), world.store(1).heads(&shared));
    // Nothing is left to send.
    assert!(world.wire.is_empty());
}

/// The in-memory port keeps this device's own changes to a document it evicts, as the SQLite
/// store does: once the relay says it lost them, the document is listed to fetch, and one the
/// relay holds nothing of is made again from them.
#[test]
fn the_memory_port_keeps_own_changes_of_what_it_evicts() {
    use syncline::engine::SyncStore;
    let store = MemorySyncStore::new(device_id(1));
    let doc = DocId::new(collection(), "a").expect("valid");
    let heads = store.put(&doc, "title", "mine", 1).expect("put");
    store
        .acknowledge(RELAY, &[(doc.clone(), heads)], &[])
        .expect("ack");
    let outcome = store
        .enforce_budget(RELAY, 0, &[collection()], &Default::default(), 1)
        .expect("budget");
    assert_eq!(outcome.evicted.len(), 1);
    assert!(store.documents().is_empty());
    assert!(store.kept_unacknowledged(RELAY).expect("kept").is_empty());
    store
        .forget_positions(RELAY, &[collection()])
        .expect("forget");
    assert_eq!(
        store.kept_unacknowledged(RELAY).expect("kept"),
        vec![doc.clone()]
    );
    assert!(store.restore_kept(&doc, 2).expect("restore"));
    assert_eq!(store.get(&doc, "title").as_deref(), Some("mine"));
    assert!(store.deferred(RELAY).expect("deferred").is_empty());
}
