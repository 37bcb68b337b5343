//! A document hub driven in one thread by simulated clients (plain Automerge documents), for
//! the hub's tests.

#![allow(dead_code)] // Each test file uses its own part.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc};
use syncline_protocol::messages::*;
use syncline_protocol::{Collection, DeviceId, DocId, Message, Priority};
use syncline_relay::Tenant;
use syncline_relay::auth::claims::CollectionSet;
use syncline_relay::auth::{Grants, Identity};
use syncline_relay::hub::{Hub, SessionId};
use syncline_relay::session::Action;
use syncline_relay::storage::SqliteStorage;

/// A tenant by name (test names are valid).
pub fn tenant(name: &str) -> Tenant {
    Tenant::new(name).expect("a valid tenant")
}

pub fn col(s: &str) -> Collection {
    Collection::new(s).expect("valid")
}

pub fn doc(s: &str) -> DocId {
    s.parse().expect("valid")
}

/// A `Reconcile` from `cursors`, with nothing changed, fetched or acknowledged.
pub fn reconcile(cursors: Vec<Cursor>) -> Action {
    Action::Reconcile(Reconcile {
        cursors,
        changed: vec![],
        fetched: None,
        acked: None,
    })
}

pub fn grants(read: &[&str], write: &[&str]) -> Grants {
    let set =
        |names: &[&str]| CollectionSet::Only(names.iter().map(|n| col(n)).collect::<BTreeSet<_>>());
    Grants {
        read: set(read),
        write: set(write),
    }
}

#[derive(Default)]
pub struct Client {
    /// The device id as Automerge actor (the relay refuses changes by other actors).
    pub actor: Option<automerge::ActorId>,
    pub docs: HashMap<DocId, Automerge>,
    pub states: HashMap<DocId, State>,
    pub inbox: Vec<Message>,
}

impl Client {
    pub fn put(&mut self, d: &DocId, key: &str, value: i64) {
        let doc = self.docs.entry(d.clone()).or_default();
        if let Some(actor) = &self.actor {
            doc.set_actor(actor.clone());
        }
        let mut tx = doc.transaction();
        tx.put(ROOT, key, value).expect("put");
        tx.commit();
    }

    pub fn get(&self, d: &DocId, key: &str) -> Option<i64> {
        let (value, _) = self.docs.get(d)?.get(ROOT, key).ok()??;
        value.as_i64()
    }

    pub fn outgoing(&mut self, docs: &[DocId]) -> Vec<SyncItem> {
        docs.iter()
            .filter_map(|d| {
                let doc = self.docs.entry(d.clone()).or_default();
                let state = self.states.entry(d.clone()).or_default();
                doc.generate_sync_message(state).map(|m| SyncItem {
                    doc: d.clone(),
                    message: m.encode(),
                    priority: None,
                })
            })
            .collect()
    }

    /// Takes a message from the relay; returns the sync replies it calls for.
    pub fn receive(&mut self, message: Message) -> Vec<SyncItem> {
        let mut touched = Vec::new();
        if let Message::Sync(sync) = &message {
            for item in &sync.items {
                let doc = self.docs.entry(item.doc.clone()).or_default();
                let state = self.states.entry(item.doc.clone()).or_default();
                let m = automerge::sync::Message::decode(&item.message)
                    .expect("relay sends valid messages");
                doc.receive_sync_message(state, m).expect("applies");
                touched.push(item.doc.clone());
            }
        }
        self.inbox.push(message);
        self.outgoing(&touched)
    }

    /// The latest acknowledgement of a stored change (an `Ack` without a sequence number only
    /// says the relay had nothing new to store).
    pub fn acked(&self, d: &DocId) -> Option<AckItem> {
        self.inbox.iter().rev().find_map(|m| match m {
            Message::Ack(a) => a
                .items
                .iter()
                .rev()
                .find(|i| &i.doc == d && i.seq.is_some())
                .cloned(),
            _ => None,
        })
    }

    pub fn errors(&self) -> Vec<u16> {
        self.inbox
            .iter()
            .filter_map(|m| {
                if let Message::Error(e) = m {
                    Some(e.code.0)
                } else {
                    None
                }
            })
            .collect()
    }
}

pub struct World {
    pub hub: Hub<SqliteStorage>,
    pub storage: Arc<SqliteStorage>,
    pub clients: HashMap<SessionId, Client>,
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Arc::new(SqliteStorage::open(&dir.path().join("relay.db")).expect("storage"));
        Self {
            hub: Hub::new(Arc::clone(&storage)),
            storage,
            clients: HashMap::new(),
            dir,
        }
    }

    /// A second relay on the same storage file as `other` (as several relays share one
    /// PostgreSQL database): its own hub, epoch and clients.
    pub fn beside(other: &World) -> Self {
        let storage =
            Arc::new(SqliteStorage::open(&other.dir.path().join("relay.db")).expect("storage"));
        Self {
            hub: Hub::new(Arc::clone(&storage)),
            storage,
            clients: HashMap::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Hands `deliveries` (of a call other than [`World::run`]) to their clients, then runs
    /// their replies.
    pub fn deliver(&mut self, deliveries: Vec<syncline_relay::hub::Delivery>) {
        let mut replies = Vec::new();
        for delivery in deliveries {
            let client = self.clients.get_mut(&delivery.to).expect("client");
            let items = client.receive(delivery.message);
            if !items.is_empty() {
                replies.push((delivery.to, Action::Sync(items)));
            }
        }
        self.run(replies);
    }

    /// Connects session `id` for `tenant`, subscribed to todos, and says hello.
    pub fn join(&mut self, id: SessionId, tenant: &str, g: Grants) {
        let profile = syncline_testkit::profile(DeviceClass::Desktop);
        let todos = vec![CollectionSubscription {
            collection: col("todos"),
            priority: Priority::Normal,
            mode: SyncMode::Eager,
        }];
        self.join_with(id, tenant, g, profile, todos);
    }

    /// Connects session `id` for `tenant` with `profile`, subscribed to `subscriptions`.
    pub fn join_with(
        &mut self,
        id: SessionId,
        tenant: &str,
        g: Grants,
        profile: Profile,
        subscriptions: Vec<CollectionSubscription>,
    ) {
        let identity = Identity {
            user: format!("user{id}"),
            device: DeviceId::from_bytes([u8::try_from(id).expect("small"); 16]),
            tenant: self::tenant(tenant),
        };
        self.hub.connect(id, identity, g, 1);
        self.clients.insert(
            id,
            Client {
                actor: Some(automerge::ActorId::from(
                    [u8::try_from(id).expect("small"); 16].as_slice(),
                )),
                ..Client::default()
            },
        );
        self.run(vec![
            (id, Action::Register(profile)),
            (id, Action::Subscribe(subscriptions)),
        ]);
    }

    /// Session `id` connects again (to this hub, perhaps a new one) as the device it was,
    /// keeping its documents and starting new sync states.
    pub fn reconnect(&mut self, id: SessionId, tenant: &str, g: Grants) {
        let identity = Identity {
            user: format!("user{id}"),
            device: DeviceId::from_bytes([u8::try_from(id).expect("small"); 16]),
            tenant: self::tenant(tenant),
        };
        self.hub.connect(id, identity, g, 1);
        let client = self.clients.get_mut(&id).expect("client");
        client.states.clear();
        client.inbox.clear();
        let todos = vec![CollectionSubscription {
            collection: col("todos"),
            priority: Priority::Normal,
            mode: SyncMode::Eager,
        }];
        self.run(vec![
            (
                id,
                Action::Register(syncline_testkit::profile(DeviceClass::Desktop)),
            ),
            (id, Action::Subscribe(todos)),
        ]);
    }

    /// The last plan session `id` received.
    pub fn last_plan(&self, id: SessionId) -> Option<Plan> {
        self.clients[&id].inbox.iter().rev().find_map(|m| match m {
            Message::Plan(p) => Some(p.clone()),
            _ => None,
        })
    }

    /// A document's priority as storage keeps it.
    pub fn storage_priority(&self, d: &DocId) -> Option<Priority> {
        use syncline_relay::storage::Storage;
        self.storage
            .load(&tenant("acme"), d)
            .expect("load")
            .and_then(|stored| stored.priority)
    }

    pub fn push(&mut self, id: SessionId, docs: &[DocId]) {
        let items = self.clients.get_mut(&id).expect("client").outgoing(docs);
        self.run(vec![(id, Action::Sync(items))]);
    }

    /// Runs actions and every reply they cause until nothing moves (bounded).
    pub fn run(&mut self, actions: Vec<(SessionId, Action)>) {
        let mut queue: VecDeque<(SessionId, Action)> = actions.into();
        for step in 0.. {
            assert!(step < 10_000, "did not settle");
            let Some((id, action)) = queue.pop_front() else {
                break;
            };
            for delivery in self.hub.handle(id, action, 10 + step).expect("hub") {
                let client = self.clients.get_mut(&delivery.to).expect("client");
                let replies = client.receive(delivery.message);
                if !replies.is_empty() {
                    queue.push_back((delivery.to, Action::Sync(replies)));
                }
            }
        }
    }
}
