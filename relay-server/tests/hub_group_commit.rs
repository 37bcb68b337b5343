//! Group commit across sessions (`Hub::sync_group`): one storage transaction per tenant for the
//! frames of many sessions, and a failed commit that acknowledges nothing and leaves memory no
//! further ahead than storage.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use syncline_protocol::messages::{ErrorCode, SyncItem};
use syncline_protocol::{Collection, DeviceId, DocId, Heads, Message};
use syncline_relay::Tenant;
use syncline_relay::auth::{CollectionSet, Grants, Identity};
use syncline_relay::hub::{Delivery, Hub};
use syncline_relay::storage::{
    Append, DeviceRecord, DocumentSummary, MemoryStorage, Storage, StorageError, StoredDocument,
};

/// A tenant by name (test names are valid).
fn tenant(name: &str) -> Tenant {
    Tenant::new(name).expect("a valid tenant")
}

/// Memory storage that counts appends and registry writes, and fails appends on demand.
#[derive(Default)]
struct Counting {
    inner: MemoryStorage,
    appends: AtomicUsize,
    registrations: AtomicUsize,
    fail: AtomicBool,
}

impl Storage for Counting {
    fn append(&self, tenant: &Tenant, batch: &[Append]) -> Result<Vec<u64>, StorageError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(StorageError::Corrupt {
                table: "documents",
                reason: "disk full (simulated)".into(),
            });
        }
        self.inner.append(tenant, batch)
    }
    fn compact(&self, t: &Tenant, d: &DocId, s: &[u8], h: &Heads) -> Result<(), StorageError> {
        self.inner.compact(t, d, s, h)
    }
    fn load(&self, t: &Tenant, d: &DocId) -> Result<Option<StoredDocument>, StorageError> {
        self.inner.load(t, d)
    }
    fn epoch(&self) -> &str {
        self.inner.epoch()
    }
    fn position_key(&self) -> &[u8; 32] {
        self.inner.position_key()
    }
    fn holds_position(
        &self,
        t: &Tenant,
        c: &Collection,
        epoch: &str,
        seq: u64,
    ) -> Result<bool, StorageError> {
        self.inner.holds_position(t, c, epoch, seq)
    }
    fn changed_since(
        &self,
        t: &Tenant,
        c: &Collection,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DocumentSummary>, StorageError> {
        self.inner.changed_since(t, c, after, limit)
    }
    fn collection_seqs(&self) -> Result<Vec<(Tenant, Collection, u64)>, StorageError> {
        self.inner.collection_seqs()
    }
    fn bind_device(&self, t: &Tenant, d: &DeviceId, user: &str) -> Result<String, StorageError> {
        self.inner.bind_device(t, d, user)
    }
    fn register_device(&self, t: &Tenant, r: &DeviceRecord) -> Result<(), StorageError> {
        self.registrations.fetch_add(1, Ordering::SeqCst);
        self.inner.register_device(t, r)
    }
    fn touch_device(&self, t: &Tenant, d: &DeviceId, at: u64, s: bool) -> Result<(), StorageError> {
        self.inner.touch_device(t, d, at, s)
    }
    fn devices(&self, t: Option<&Tenant>) -> Result<Vec<(Tenant, DeviceRecord)>, StorageError> {
        self.inner.devices(t)
    }
    fn set_cursor(
        &self,
        t: &Tenant,
        d: &DeviceId,
        c: &Collection,
        s: u64,
    ) -> Result<(), StorageError> {
        self.inner.set_cursor(t, d, c, s)
    }
    fn cursors(&self, t: &Tenant, d: &DeviceId) -> Result<Vec<(Collection, u64)>, StorageError> {
        self.inner.cursors(t, d)
    }
    fn save_sync_states(
        &self,
        t: &Tenant,
        d: &DeviceId,
        s: &[(DocId, Vec<u8>)],
    ) -> Result<(), StorageError> {
        self.inner.save_sync_states(t, d, s)
    }
    fn load_sync_state(
        &self,
        t: &Tenant,
        d: &DeviceId,
        doc: &DocId,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.load_sync_state(t, d, doc)
    }
}

fn writer(n: u8) -> (Identity, Grants) {
    let all = CollectionSet::Only(BTreeSet::from([Collection::new("notes").expect("valid")]));
    (
        Identity {
            user: format!("u{n}"),
            device: DeviceId::from_bytes([n; 16]),
            tenant: tenant("t"),
        },
        Grants {
            read: all.clone(),
            write: all,
        },
    )
}

/// A first sync message for a new document holding one change (primed: it carries it).
fn item(n: u8) -> SyncItem {
    let mut doc = Automerge::new().with_actor(automerge::ActorId::from([n; 16].as_slice()));
    let mut tx = doc.transaction();
    tx.put(ROOT, "n", i64::from(n)).expect("put");
    tx.commit();
    let mut state = syncline_protocol::sync_state::primed(Vec::new());
    let message = doc.generate_sync_message(&mut state).expect("a message");
    assert!(!message.changes.is_empty());
    SyncItem {
        doc: format!("notes/d{n}").parse().expect("valid"),
        message: message.encode(),
        priority: None,
    }
}

fn acks_for(deliveries: &[Delivery], session: u64) -> Vec<u64> {
    deliveries
        .iter()
        .filter(|d| d.to == session)
        .filter_map(|d| match &d.message {
            Message::Ack(ack) => Some(ack.items.iter().filter_map(|i| i.seq).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn frames_of_many_sessions_share_one_append() {
    let storage = Arc::new(Counting::default());
    let mut hub = Hub::new(Arc::clone(&storage));
    for n in 1..=5u8 {
        let (identity, grants) = writer(n);
        hub.connect(u64::from(n), identity, grants, 0);
    }
    let frames = (1..=5u8).map(|n| (u64::from(n), vec![item(n)])).collect();
    let group = hub.sync_group(frames, 1);
    assert!(group.failed.is_empty());
    assert_eq!(storage.appends.load(Ordering::SeqCst), 1, "one transaction");
    let mut seqs: Vec<u64> = (1..=5)
        .flat_map(|s| acks_for(&group.deliveries, s))
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4, 5],
        "each session acked with its sequence"
    );
}

#[test]
fn a_failed_group_commit_acknowledges_nothing_and_memory_follows_storage() {
    let storage = Arc::new(Counting::default());
    let mut hub = Hub::new(Arc::clone(&storage));
    for n in 1..=2u8 {
        let (identity, grants) = writer(n);
        hub.connect(u64::from(n), identity, grants, 0);
    }
    storage.fail.store(true, Ordering::SeqCst);
    let group = hub.sync_group(vec![(1, vec![item(1)]), (2, vec![item(2)])], 1);
    assert_eq!(group.failed.len(), 2);
    for session in [1, 2] {
        assert!(acks_for(&group.deliveries, session).is_empty());
        assert!(group.deliveries.iter().any(|d| d.to == session
            && matches!(&d.message, Message::Error(e) if e.code == ErrorCode::INTERNAL)));
    }
    // Retried once storage works: stored and acknowledged, nothing stale in memory.
    storage.fail.store(false, Ordering::SeqCst);
    let group = hub.sync_group(vec![(1, vec![item(1)]), (2, vec![item(2)])], 2);
    assert!(group.failed.is_empty());
    assert_eq!(acks_for(&group.deliveries, 1).len(), 1);
    assert_eq!(acks_for(&group.deliveries, 2).len(), 1);
    let stored = storage
        .load(&tenant("t"), &"notes/d1".parse().expect("valid"))
        .expect("load")
        .expect("stored");
    assert!(!stored.heads.as_slice().is_empty());
}

#[test]
fn changes_by_another_device_are_refused_unless_allowed() {
    let forged = || {
        // Session 1 sends a change written by device 2's actor.
        let mut item = item(2);
        item.doc = "notes/forged".parse().expect("valid");
        item
    };
    let storage = Arc::new(Counting::default());
    let mut hub = Hub::new(Arc::clone(&storage));
    let (identity, grants) = writer(1);
    hub.connect(1, identity, grants, 0);
    let group = hub.sync_group(vec![(1, vec![forged()])], 1);
    assert!(
        group.deliveries.iter().any(|d| matches!(&d.message,
        Message::Error(e) if e.code == ErrorCode::FORBIDDEN && e.doc.is_some()
            && e.retry_after_ms == Some(syncline_relay::hub::FOREIGN_RETRY_MS))),
        "refused for now: its author may send it first (a relay restored from a backup)"
    );
    // The refusal is all the device hears of the item: no sync reply and no acknowledgement
    // (an Ack with empty heads made a standard Automerge client send it once more).
    let heard: Vec<&str> = group
        .deliveries
        .iter()
        .filter(|d| d.to == 1)
        .map(|d| d.message.name())
        .collect();
    assert_eq!(heard, vec!["error"]);
    assert_eq!(storage.appends.load(Ordering::SeqCst), 0, "nothing stored");

    // An operator repairing a relay from devices turns the check off.
    let mut hub = Hub::new(Arc::clone(&storage)).allow_foreign_changes(true);
    let (identity, grants) = writer(1);
    hub.connect(1, identity, grants, 0);
    let group = hub.sync_group(vec![(1, vec![forged()])], 1);
    assert_eq!(acks_for(&group.deliveries, 1).len(), 1);
}

#[test]
fn a_device_that_lost_its_data_gets_unchanged_documents_back() {
    use syncline_protocol::messages::{CollectionSubscription, Reconcile, SyncMode};
    use syncline_relay::session::Action;
    let storage = Arc::new(Counting::default());
    let mut hub = Hub::new(Arc::clone(&storage));
    let (identity, grants) = writer(1);
    hub.connect(1, identity.clone(), grants.clone(), 0);
    hub.sync_group(vec![(1, vec![item(1)])], 1);
    // The sync state saved here says the device holds the document...
    hub.disconnect(1, 2).expect("disconnect");
    // ...but the device comes back empty (reinstalled with the same identity).
    hub.connect(2, identity, grants, 3);
    let subscribe = Action::Subscribe(vec![CollectionSubscription {
        collection: Collection::new("notes").expect("valid"),
        priority: syncline_protocol::Priority::Normal,
        mode: SyncMode::Eager,
    }]);
    hub.handle(2, subscribe, 4).expect("subscribe");
    let out = hub
        .handle(
            2,
            Action::Reconcile(Reconcile {
                cursors: Vec::new(),
                changed: Vec::new(),
                fetched: None,
                acked: None,
            }),
            5,
        )
        .expect("reconcile");
    let d1: DocId = "notes/d1".parse().expect("valid");
    assert!(
        out.iter().any(|d| matches!(&d.message,
            Message::Sync(s) if s.items.iter().any(|i| i.doc == d1))),
        "the relay must not assume the device still holds what it held: {out:?}"
    );
}

/// Sessions 1 to 5 connect, and each stores a new document in one group commit.
fn five_writers_store_a_document_each(hub: &mut Hub<Counting>) {
    for n in 1..=5u8 {
        let (identity, grants) = writer(n);
        hub.connect(u64::from(n), identity, grants, 0);
    }
    let frames = (1..=5u8).map(|n| (u64::from(n), vec![item(n)])).collect();
    let group = hub.sync_group(frames, 1);
    assert!(group.failed.is_empty());
}

#[test]
fn the_document_cache_is_bounded_and_evicted_documents_reload() {
    let storage = Arc::new(Counting::default());
    let mut hub = Hub::new(Arc::clone(&storage)).cache_docs(2);
    five_writers_store_a_document_each(&mut hub);
    assert!(hub.cached_documents() <= 2, "{}", hub.cached_documents());
    // An evicted document reloads from storage: a resend is recognised as already stored.
    let group = hub.sync_group(vec![(1, vec![item(1)])], 2);
    assert!(group.failed.is_empty());
    assert_eq!(
        acks_for(&group.deliveries, 1),
        vec![1],
        "the position it was stored at (loaded with it), not a new one"
    );
    assert_eq!(
        storage.appends.load(Ordering::SeqCst),
        1,
        "nothing stored twice"
    );
}

#[test]
fn the_document_cache_is_bounded_in_bytes_too() {
    let storage = Arc::new(Counting::default());
    // Each of these one-change documents is estimated at a few hundred bytes.
    let mut hub = Hub::new(Arc::clone(&storage)).cache_bytes(600);
    five_writers_store_a_document_each(&mut hub);
    assert!(
        (1..5).contains(&hub.cached_documents()),
        "{} cached",
        hub.cached_documents()
    );
    assert!(
        hub.cached_bytes() <= 600,
        "{} bytes cached",
        hub.cached_bytes()
    );
    // Evicted documents reload: a resend of each is recognised as already stored.
    for n in 1..=5u8 {
        let group = hub.sync_group(vec![(u64::from(n), vec![item(n)])], 2);
        assert!(group.failed.is_empty());
    }
    assert_eq!(
        storage.appends.load(Ordering::SeqCst),
        1,
        "nothing stored twice"
    );
}

/// Issue 15, class 4: a client changing its profile as fast as it can costs one registry
/// write per interval, and the registry still ends with its latest profile.
#[test]
fn registry_writes_are_coalesced_per_session() {
    use syncline_protocol::messages::DeviceClass;
    use syncline_relay::hub::REGISTRY_WRITE_INTERVAL_MS;
    use syncline_relay::session::Action;

    let storage = Arc::new(Counting::default());
    let mut hub = Hub::new(Arc::clone(&storage));
    let (identity, grants) = writer(1);
    hub.connect(1, identity, grants, 0);
    let profile = |budget: u64| {
        let mut p = syncline_testkit::profile(DeviceClass::Phone);
        p.storage_budget_bytes = Some(budget);
        p
    };
    hub.handle(1, Action::Register(profile(0)), 0)
        .expect("register");
    assert_eq!(storage.registrations.load(Ordering::SeqCst), 1);
    for n in 1..=1000u64 {
        hub.handle(1, Action::UpdateProfile(profile(n)), n / 10)
            .expect("update");
    }
    assert_eq!(
        storage.registrations.load(Ordering::SeqCst),
        1,
        "1,000 updates within the interval: no write yet"
    );
    let registered = |storage: &Counting| {
        storage.devices(Some(&tenant("t"))).expect("devices")[0]
            .1
            .profile
            .storage_budget_bytes
    };
    assert_eq!(registered(&storage), Some(0));
    // The next action after the interval writes the latest.
    hub.handle(1, Action::Fetch(Vec::new()), REGISTRY_WRITE_INTERVAL_MS + 1)
        .expect("fetch");
    assert_eq!(storage.registrations.load(Ordering::SeqCst), 2);
    assert_eq!(registered(&storage), Some(1000));
    // And a change just before the connection ends is written at disconnect.
    hub.handle(
        1,
        Action::UpdateProfile(profile(2000)),
        REGISTRY_WRITE_INTERVAL_MS + 2,
    )
    .expect("update");
    hub.disconnect(1, REGISTRY_WRITE_INTERVAL_MS + 3)
        .expect("disconnect");
    assert_eq!(registered(&storage), Some(2000));
}
