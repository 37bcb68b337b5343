//! The document hub: the relay's shared document layer. It executes the [`Action`]s that
//! sessions produce: runs the Automerge sync protocol per (session, document), makes received
//! changes durable before acknowledging them, plans the sync of a reconnecting device from its
//! cursors, and fans changes out to the other subscribed sessions of the same tenant.
//!
//! The hub owns no socket and no clock: the shell calls [`Hub::handle`] and routes the returned
//! [`Delivery`]s to the sessions' connections. It reaches storage only through the
//! [`Storage`] trait. A document changes in memory only together with a durable append: when
//! an append fails, the changed documents are dropped from memory and reloaded from storage.
//!
//! The hub never materialises a document: it holds each one as its change graph
//! ([`graph::DocGraph`]) and answers Automerge's sync protocol from it ([`responder`]), so a
//! change costs the same to accept whatever the document's history.

mod graph;
mod group_commit;
mod planner;
pub(crate) mod policy;
mod receipts;
mod registry;
mod remote;
pub mod responder;
mod watchers;

pub use graph::{
    DocGraph, GraphError, MAX_DOCUMENT_BYTES, STORED_CHUNK_LIMITS, check_payload, parse_changes,
    parse_checked,
};
pub use group_commit::CONFLICT_RETRY_MS;
pub use registry::REGISTRY_WRITE_INTERVAL_MS;
pub use remote::{REMOTE_PAGE, REMOTE_SCAN_DOCS};
pub use responder::check_message;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use automerge::ChangeHash;
use automerge::sync::State as SyncState;
use syncline_protocol::messages::{
    CollectionSubscription, Ephemeral, Error, ErrorCode, PlanEntry, Profile, Sync, SyncItem,
};
use syncline_protocol::sync_state;
use syncline_protocol::{Collection, DeviceId, DocId, Hash, Heads, Message, PayloadLimits};

use crate::auth::{Grants, Identity};
use crate::session::Action;
use crate::storage::{Storage, StorageError};
use crate::tenant::Tenant;

/// Identifies a session within one relay process.
pub type SessionId = u64;

/// Most documents per `Sync` frame the hub sends.
pub const SYNC_BATCH: usize = 256;

/// Most bytes of sync messages per `Sync` frame the hub sends (a single larger message goes
/// alone): a device accepts frames of at most 64 MiB (`docs/PROTOCOL.md`, "Limits"), and 256
/// documents of 4 MiB messages would be far more.
pub const SYNC_BATCH_BYTES: usize = 8 << 20;

/// A message for one session.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The session to send it to.
    pub to: SessionId,
    /// The message.
    pub message: Message,
    /// Which of the connection's lanes it takes when the connection is paced.
    pub lane: Lane,
}

/// How a message shares a paced connection (see [`crate::session::Session::deliver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lane {
    /// Answers, acknowledgements, plans and changes pushed as they happen: sent before
    /// anything in the bulk lane, so a live change never waits behind a catch-up.
    #[default]
    Live,
    /// Catch-up: the documents of a plan (a reconnect, a replan).
    Bulk,
    /// Catch-up the device asked for (`Fetch`): paced like bulk, never taken back when the
    /// plan changes.
    Asked,
}

/// What [`Hub::sync_group`] produced.
#[derive(Debug, Default)]
pub struct SyncGroup {
    /// Messages to route, in order.
    pub deliveries: Vec<Delivery>,
    /// Sessions whose frame was not (wholly) committed, and why (for the log); `deliveries`
    /// already holds the `INTERNAL` error each is sent.
    pub failed: Vec<(SessionId, HubError)>,
}

/// How long a device waits before it sends again changes a full storage refused.
pub const STORAGE_FULL_RETRY_MS: u64 = 30_000;

/// How long a device waits before it sends again an item refused for carrying another
/// device's change the relay does not hold (its author may send it first).
pub const FOREIGN_RETRY_MS: u64 = 10_000;

/// How long a device that proved this data lost positions it showed it (the relay was
/// restored from an older backup) may send back other devices' changes in that collection,
/// on later connections too: a repair cut short (a cut, a slow-consumer close) goes on when
/// the device comes back, although it no longer shows the lost positions then.
pub const REPAIR_GRANT_MS: u64 = 24 * 3_600_000;

/// Devices whose repair grants a hub remembers past their connection ([`REPAIR_GRANT_MS`]).
pub const MAX_REPAIRING_DEVICES: usize = 10_000;

/// Why the hub failed an action. The session gets an `INTERNAL` error and may retry; nothing
/// was acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A group commit failed for this session (see [`Hub::sync_group`]).
    #[error("{0}")]
    Failed(String),
    /// The device id belongs to another user (the first to connect it).
    #[error("this device id is registered to another user")]
    DeviceOwned,
    /// A stored document does not load.
    #[error("stored document {doc} does not load: {reason}")]
    Corrupt {
        /// The document.
        doc: DocId,
        /// Why.
        reason: String,
    },
}

struct Peer {
    tenant: Tenant,
    identity: Identity,
    grants: Grants,
    profile: Option<Profile>,
    subscriptions: Vec<CollectionSubscription>,
    states: HashMap<DocId, SyncState>,
    /// Documents this session sent a message for: their heads in the state are what the
    /// device said, not what the relay assumed when priming.
    confirmed: HashSet<DocId>,
    first_seen_ms: u64,
    /// The last acknowledged sync, persisted at disconnect.
    last_sync_ms: Option<u64>,
    /// Documents of on-demand collections whose content the device holds (it said so in
    /// `Reconcile.fetched`, or fetched them on this connection): kept in sync like eager ones.
    held: HashSet<DocId>,
    /// Documents announced to the device on this connection and held back, with their entry.
    deferred: BTreeMap<DocId, PlanEntry>,
    /// True once the connection's first `Reconcile` was planned.
    reconciled: bool,
    /// When the registry record was last written, and whether a change of it waits.
    registered_ms: Option<u64>,
    registry_dirty: bool,
    /// Collections in which the device proved (by the relay's receipts) that this data lost
    /// positions it showed it: the relay was restored from an older backup, and the device
    /// may send back changes by other devices there.
    repair: HashSet<Collection>,
    /// Documents changed while the device was periodic (no pushes): pushed if it turns
    /// realtime on this connection.
    skipped: BTreeSet<DocId>,
    /// What each sync state keeps of the device's messages (heads, needs, Bloom filters), in
    /// bytes, and their total: bounded by [`MAX_SESSION_STATE_BYTES`].
    state_costs: HashMap<DocId, usize>,
    state_bytes: usize,
    /// With `PlanDone` negotiated, the id of the last plan sent (the first is 1); `None`: the
    /// device did not ask for plans to be numbered and closed.
    last_plan_id: Option<u64>,
}

impl Peer {
    /// Whether `doc`'s state may keep `cost` bytes of the device's message: the session's
    /// states would keep no more than [`MAX_SESSION_STATE_BYTES`] (or no more than now).
    fn fits(&self, doc: &DocId, cost: usize) -> bool {
        let old = self.state_costs.get(doc).copied().unwrap_or(0);
        cost <= old || self.state_bytes - old + cost <= MAX_SESSION_STATE_BYTES
    }

    /// Records that `doc`'s state now keeps `cost` bytes of the device's message (once the
    /// state took the message).
    fn charge(&mut self, doc: &DocId, cost: usize) {
        let old = self.state_costs.insert(doc.clone(), cost).unwrap_or(0);
        self.state_bytes = self.state_bytes - old + cost;
    }

    /// Forgets what `doc`'s (dropped) state kept.
    fn uncharge(&mut self, doc: &DocId) {
        if let Some(old) = self.state_costs.remove(doc) {
            self.state_bytes -= old;
        }
    }

    fn subscription(&self, collection: &Collection) -> Option<&CollectionSubscription> {
        self.subscriptions
            .iter()
            .find(|s| &s.collection == collection)
    }

    fn receives(&self, tenant: &Tenant, doc: &DocId) -> bool {
        self.tenant == *tenant
            && self.grants.can_read(doc.collection())
            && (self.subscription(doc.collection()).is_some() || self.states.contains_key(doc))
    }
}

/// Bytes of the device's sync messages (heads, needs, Bloom filters) one session's sync states
/// may keep in all: a device syncing 100,000 documents keeps a few megabytes; a client cannot
/// make the relay keep more by sending large filters or need lists for many documents.
pub const MAX_SESSION_STATE_BYTES: usize = 32 << 20;

/// The relay's documents and the sessions syncing them.
pub struct Hub<S> {
    storage: Arc<S>,
    peers: HashMap<SessionId, Peer>,
    /// Documents in memory, least recently used first out past `cache_docs` or `cache_bytes`
    /// (trimmed between actions, never during one: outside an action memory equals storage, so
    /// any may go).
    docs: lru::LruCache<(Tenant, DocId), DocGraph>,
    /// The documents' estimated bytes in memory ([`DocGraph::estimated_bytes`] summed).
    docs_bytes: usize,
    /// Who may want each document's changes (fan-out candidates).
    watchers: watchers::Watchers,
    cache_docs: usize,
    cache_bytes: usize,
    allow_foreign_changes: bool,
    /// What one frame's Automerge payloads may cost to decode.
    payload_limits: PayloadLimits,
    /// Stored documents found not to load.
    corrupt_documents: u64,
    /// Stored documents that did not load, each with the time it may be tried again
    /// ([`UNLOADABLE_RETRY_MS`]): until then a use fails at once, without reading or parsing
    /// the row again. At most [`MAX_UNLOADABLE`] entries.
    unloadable: HashMap<(Tenant, DocId), u64>,
    /// Loads of stored documents that failed (reading and parsing the row).
    failed_loads: u64,
    /// The latest time an entry point was called with.
    clock_ms: u64,
    /// Group commits refused by a full storage.
    storage_full: u64,
    /// Devices first admitted while the storage could not hold their owner binding, with the
    /// user that connected them: bound here until a later admission can write it (at most
    /// [`MAX_UNBOUND_DEVICES`]).
    unbound: HashMap<(Tenant, DeviceId), String>,
    /// Per device, the collections in which it proved that this data lost positions it
    /// showed it, with when: it may send back other devices' changes there on later
    /// connections too, for [`REPAIR_GRANT_MS`] (at most [`MAX_REPAIRING_DEVICES`] devices).
    repairing: HashMap<(Tenant, DeviceId), HashMap<Collection, u64>>,
    /// Documents larger than this wait for an unmetered network (unless a device sets its own).
    metered_threshold: u64,
    /// Other relays' commits to the same storage (see [`Hub::remote_changes`]).
    remote: remote::Remote,
    /// Per collection, the documents of it in `docs` (what another relay's commit may have
    /// made stale).
    cached_in: HashMap<(Tenant, Collection), usize>,
    /// Documents dropped from memory with changes queued for missing dependencies: the
    /// sessions that may have sent them are told to send them again
    /// ([`Hub::take_dropped_notices`]). At most [`MAX_DROPPED_QUEUES`].
    dropped_queues: Vec<(Tenant, DocId)>,
}

/// Documents remembered as dropped with queued changes between two
/// [`Hub::take_dropped_notices`]; past it the oldest are forgotten (their senders send them
/// again when they reconnect: the changes stay pending on the devices).
pub const MAX_DROPPED_QUEUES: usize = 10_000;

/// Documents a hub keeps in memory by default.
pub const CACHE_DOCS: usize = 10_000;

/// How long a stored document that did not load is not loaded again (a use fails at once): a
/// client asking for it over and over costs the relay one failed load a minute, and a row an
/// operator repairs is read again within a minute.
pub const UNLOADABLE_RETRY_MS: u64 = 60_000;

/// Most stored documents remembered as not loading; past it, the expired ones are forgotten,
/// then all (a later use loads again).
pub const MAX_UNLOADABLE: usize = 10_000;

/// Most devices admitted while their owner binding could not be written (a full storage);
/// past it, a device never seen before is refused until there is room.
pub const MAX_UNBOUND_DEVICES: usize = 10_000;

/// Estimated bytes of documents a hub keeps in memory by default (each holds its changes'
/// raw bytes plus about 160 bytes per change).
pub const CACHE_BYTES: usize = 256 << 20;

impl<S: Storage> Hub<S> {
    /// A hub over `storage`.
    pub fn new(storage: Arc<S>) -> Self {
        Self {
            storage,
            peers: HashMap::new(),
            docs: lru::LruCache::unbounded(),
            docs_bytes: 0,
            watchers: watchers::Watchers::default(),
            cache_docs: CACHE_DOCS,
            cache_bytes: CACHE_BYTES,
            allow_foreign_changes: false,
            payload_limits: PayloadLimits::DEFAULT,
            corrupt_documents: 0,
            unloadable: HashMap::new(),
            failed_loads: 0,
            clock_ms: 0,
            storage_full: 0,
            unbound: HashMap::new(),
            repairing: HashMap::new(),
            metered_threshold: Profile::DEFAULT_METERED_MAX_DOC_BYTES,
            remote: remote::Remote::default(),
            cached_in: HashMap::new(),
            dropped_queues: Vec::new(),
        }
    }

    /// On a metered network, documents whose transfer is larger than `bytes` are announced
    /// and deferred, for devices whose profile sets no threshold of their own (default
    /// [`Profile::DEFAULT_METERED_MAX_DOC_BYTES`]).
    pub fn metered_threshold(mut self, bytes: u64) -> Self {
        self.metered_threshold = bytes;
        self
    }

    /// How many documents to keep in memory between actions (at least one).
    pub fn cache_docs(mut self, docs: usize) -> Self {
        self.cache_docs = docs.max(1);
        self
    }

    /// How many estimated bytes of documents to keep in memory between actions (the most
    /// recently used document stays even when it alone is larger).
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Documents in memory now.
    pub fn cached_documents(&self) -> usize {
        self.docs.len()
    }

    /// Estimated bytes of the documents in memory now.
    pub fn cached_bytes(&self) -> usize {
        self.docs_bytes
    }

    fn trim(&mut self) {
        while self.docs.len() > self.cache_docs
            || (self.docs_bytes > self.cache_bytes && self.docs.len() > 1)
        {
            let Some((key, doc)) = self.docs.pop_lru() else {
                break;
            };
            self.uncount(&key);
            if doc.has_queued() {
                self.note_dropped_queue(key);
            }
            self.docs_bytes = self.docs_bytes.saturating_sub(doc.estimated_bytes());
        }
    }

    /// Whether a device may send changes by another actor that the relay does not hold (see
    /// `RelayConfig::allow_foreign_changes`). Off by default.
    pub fn allow_foreign_changes(mut self, allow: bool) -> Self {
        self.allow_foreign_changes = allow;
        self
    }

    /// What one frame's Automerge payloads may cost to decode (`RelayConfig::max_inflated_bytes`
    /// and `max_ops_per_frame`). [`PayloadLimits::DEFAULT`] unless set.
    pub fn payload_limits(mut self, limits: PayloadLimits) -> Self {
        self.payload_limits = limits;
        self
    }

    /// Whether `identity` may connect: its device id is bound to the first user that
    /// connected it, and another user's token for it is refused.
    ///
    /// A full storage does not keep a device never seen before out (it may still read). Its
    /// binding goes to disk past the operator's cap while the storage's reserve for bindings
    /// lasts; past that (or on a full disk) it is kept in memory, holds against other users,
    /// and is written by the first admission after there is room again. A relay restarted
    /// before then has not bound it.
    ///
    /// # Errors
    /// [`HubError::DeviceOwned`] for another user's device; [`HubError::Storage`], also for a
    /// full storage once [`MAX_UNBOUND_DEVICES`] devices wait for their binding.
    pub fn admit(&mut self, identity: &Identity) -> Result<(), HubError> {
        let key = (identity.tenant.clone(), identity.device);
        if self
            .unbound
            .get(&key)
            .is_some_and(|owner| *owner != identity.user)
        {
            return Err(HubError::DeviceOwned);
        }
        let owner = match self.storage.bind_device(
            &identity.tenant,
            &identity.device,
            &identity.user,
        ) {
            Ok(owner) => {
                self.unbound.remove(&key);
                owner
            }
            Err(e) if e.is_full() && self.unbound.len() < MAX_UNBOUND_DEVICES => {
                tracing::warn!(
                    tenant = %identity.tenant,
                    device = %identity.device,
                    "the storage is full: the device's owner is bound in memory until there is room"
                );
                self.unbound.insert(key, identity.user.clone());
                identity.user.clone()
            }
            Err(e) => return Err(e.into()),
        };
        if owner == identity.user {
            Ok(())
        } else {
            Err(HubError::DeviceOwned)
        }
    }

    /// Adds an authenticated session.
    pub fn connect(&mut self, id: SessionId, identity: Identity, grants: Grants, now_ms: u64) {
        self.tick(now_ms);
        let peer = Peer {
            tenant: identity.tenant.clone(),
            identity,
            grants,
            profile: None,
            subscriptions: Vec::new(),
            states: HashMap::new(),
            confirmed: HashSet::new(),
            first_seen_ms: now_ms,
            last_sync_ms: None,
            held: HashSet::new(),
            deferred: BTreeMap::new(),
            reconciled: false,
            registered_ms: None,
            registry_dirty: false,
            repair: HashSet::new(),
            skipped: BTreeSet::new(),
            state_costs: HashMap::new(),
            state_bytes: 0,
            last_plan_id: None,
        };
        self.peers.insert(id, peer);
    }

    /// Removes a session, keeping its sync states for its next connection.
    ///
    /// # Errors
    /// [`HubError::Storage`] if the sync states could not be saved (the session is removed
    /// anyway; the next connection then starts those documents' sync afresh).
    pub fn disconnect(&mut self, id: SessionId, now_ms: u64) -> Result<(), HubError> {
        self.tick(now_ms);
        let Some(peer) = self.peers.remove(&id) else {
            return Ok(());
        };
        self.watchers
            .forget(&peer.tenant, id, &peer.subscriptions, peer.states.keys());
        let device = peer.identity.device;
        // Not for a document that never got content (an opening message that went nowhere):
        // no saved row for what the relay does not hold.
        let states: Vec<(DocId, Vec<u8>)> = peer
            .states
            .iter()
            .filter(|(doc, _)| {
                self.docs
                    .peek(&(peer.tenant.clone(), (*doc).clone()))
                    .is_none_or(|graph| !graph.is_empty())
            })
            .map(|(doc, state)| (doc.clone(), state.encode()))
            .collect();
        self.spare(
            "saving sync states",
            self.storage
                .save_sync_states(&peer.tenant, &device, &states),
        )?;
        self.record_activity(&peer, now_ms)
    }

    /// Drops every document from memory, so each is reloaded from storage on next use. After a
    /// panic mid-action, memory may hold changes storage does not: this restores the rule that
    /// memory never runs ahead of storage.
    pub fn forget_documents(&mut self) {
        let queued: Vec<(Tenant, DocId)> = self
            .docs
            .iter()
            .filter(|(_, graph)| graph.has_queued())
            .map(|(key, _)| key.clone())
            .collect();
        for key in queued {
            self.note_dropped_queue(key);
        }
        self.docs.clear();
        self.cached_in.clear();
        self.docs_bytes = 0;
    }

    /// Sessions currently connected.
    pub fn sessions(&self) -> usize {
        self.peers.len()
    }

    /// Executes one action of session `id`.
    ///
    /// # Errors
    /// [`HubError`] when storage fails; then nothing of the action was acknowledged.
    pub fn handle(
        &mut self,
        id: SessionId,
        action: Action,
        now_ms: u64,
    ) -> Result<Vec<Delivery>, HubError> {
        self.tick(now_ms);
        if !self.peers.contains_key(&id) {
            return Ok(Vec::new());
        }
        let result = self.act(id, action, now_ms);
        self.trim();
        if self.peers.contains_key(&id) {
            self.flush_registry(id, now_ms)?;
        }
        result
    }

    fn act(
        &mut self,
        id: SessionId,
        action: Action,
        now_ms: u64,
    ) -> Result<Vec<Delivery>, HubError> {
        match action {
            Action::Register(profile) => {
                self.peer_mut(id).profile = Some(profile);
                self.register(id, now_ms)?;
                Ok(Vec::new())
            }
            Action::ClosePlans => {
                self.peer_mut(id).last_plan_id.get_or_insert(0);
                Ok(Vec::new())
            }
            Action::UpdateProfile(profile) => {
                self.peer_mut(id).profile = Some(profile);
                self.register(id, now_ms)?;
                self.replan(id, now_ms)
            }
            Action::Subscribe(collections) => {
                let out = self.resubscribe(id, collections)?;
                self.register(id, now_ms)?;
                Ok(out)
            }
            Action::Reconcile(reconcile) => self.reconcile(id, reconcile),
            Action::Sync(items) => self.sync(id, items, now_ms),
            Action::Fetch(docs) => self.fetch(id, docs, true),
            Action::FetchPart(docs) => self.fetch(id, docs, false),
            Action::Unsent(docs) => Ok(self.unsent(id, docs)),
            Action::Ephemeral(e) => Ok(self.ephemeral(id, e)),
            Action::GrantsChanged(grants) => {
                let peer = self.peers.get_mut(&id).expect("checked by handle");
                let old = std::mem::take(&mut peer.subscriptions);
                peer.subscriptions = old
                    .iter()
                    .filter(|s| grants.can_read(&s.collection))
                    .cloned()
                    .collect();
                self.watchers
                    .subscribe(&peer.tenant, id, &old, &peer.subscriptions);
                let dropped: Vec<DocId> = peer
                    .states
                    .keys()
                    .filter(|doc| !grants.can_read(doc.collection()))
                    .cloned()
                    .collect();
                for doc in &dropped {
                    peer.states.remove(doc);
                    peer.uncharge(doc);
                    peer.confirmed.remove(doc);
                    self.watchers.unwatch_doc(&peer.tenant, id, doc);
                }
                peer.grants = grants;
                Ok(Vec::new())
            }
            // Token checks happen in the shell; client errors are logged there.
            Action::VerifyToken(_) | Action::ClientError(_) => Ok(Vec::new()),
        }
    }

    fn peer_mut(&mut self, id: SessionId) -> &mut Peer {
        self.peers.get_mut(&id).expect("checked by handle")
    }

    /// Applies a session's sync messages, appends what changed in one durable transaction,
    /// acknowledges, replies, and fans the changes out. [`Hub::sync_group`] of one.
    fn sync(
        &mut self,
        id: SessionId,
        items: Vec<SyncItem>,
        now_ms: u64,
    ) -> Result<Vec<Delivery>, HubError> {
        let group = self.sync_group(vec![(id, items)], now_ms);
        for (session, e) in &group.failed {
            tracing::error!(session, error = %e, "a sync frame was not committed");
        }
        Ok(group.deliveries)
    }

    /// Drops documents from memory, so the next use reloads the durable state.
    fn evict<'a>(&mut self, tenant: &Tenant, docs: impl Iterator<Item = &'a DocId>) {
        for doc in docs {
            let key = (tenant.clone(), doc.clone());
            if let Some(graph) = self.docs.pop(&key) {
                self.uncount(&key);
                if graph.has_queued() {
                    self.note_dropped_queue(key.clone());
                }
                self.docs_bytes = self.docs_bytes.saturating_sub(graph.estimated_bytes());
            }
        }
    }

    /// [`Hub::outgoing`] for use after a commit: a failure is logged and skips that document's
    /// messages for this session, instead of discarding what was committed.
    fn outgoing_logged(&mut self, id: SessionId, docs: &[DocId]) -> Vec<SyncItem> {
        let mut items = Vec::new();
        for doc in docs {
            match self.outgoing(id, std::slice::from_ref(doc)) {
                Ok(mut more) => items.append(&mut more),
                Err(e @ HubError::Corrupt { .. }) => self.corrupt(id, doc, &e),
                Err(e) => {
                    tracing::error!(session = id, doc = %doc, error = %e, "could not prepare a sync message");
                    // Start this document's sync afresh next time rather than stall.
                    self.forget_doc(id, doc);
                }
            }
        }
        items
    }

    /// A stored document that does not load: the operator sees which (an error log line and
    /// the `corrupt_documents` count), and session `id` goes on without it.
    fn corrupt(&mut self, id: SessionId, doc: &DocId, error: &HubError) {
        tracing::error!(session = id, doc = %doc, error = %error, "a stored document does not load; it is left out");
        self.corrupt_documents += 1;
        self.forget_doc(id, doc);
    }

    /// Stored documents found not to load (each time one was needed).
    pub fn corrupt_documents(&self) -> u64 {
        self.corrupt_documents
    }

    /// Loads of stored documents that failed: at most one per document per
    /// [`UNLOADABLE_RETRY_MS`], however often it is needed.
    pub fn failed_loads(&self) -> u64 {
        self.failed_loads
    }

    /// Commits refused because storage was full (each tenant's part of a group counts once).
    pub fn storage_full(&self) -> u64 {
        self.storage_full
    }

    /// A write the relay can do without for now (the registry, cursors, saved sync states):
    /// on a full storage it is skipped with a warning, so reads and syncing go on; anything
    /// else fails the action.
    fn spare(&self, what: &str, result: Result<(), StorageError>) -> Result<(), HubError> {
        match result {
            Err(e) if e.is_full() => {
                tracing::warn!(what, "storage is full: skipped");
                Ok(())
            }
            other => Ok(other?),
        }
    }

    fn ephemeral(&self, id: SessionId, e: Ephemeral) -> Vec<Delivery> {
        let tenant = &self.peers[&id].tenant;
        let mut receivers: Vec<SessionId> = self
            .peers
            .iter()
            .filter(|(other, peer)| **other != id && peer.receives(tenant, &e.doc))
            .map(|(other, _)| *other)
            .collect();
        // In session order, not the map's: the same inputs give the same outputs (the
        // simulation replays a seed exactly).
        receivers.sort_unstable();
        receivers
            .into_iter()
            .map(|other| Delivery::live(other, Message::Ephemeral(e.clone())))
            .collect()
    }

    /// The next sync message for each document, for session `id`; none for a document whose
    /// heads the session is known to share.
    fn outgoing(&mut self, id: SessionId, docs: &[DocId]) -> Result<Vec<SyncItem>, HubError> {
        let tenant = self.peers[&id].tenant.clone();
        let mut items = Vec::new();
        for doc_id in docs {
            if !self.peers[&id].grants.can_read(doc_id.collection()) {
                continue;
            }
            self.ensure_state(id, doc_id)?;
            self.doc(&tenant, doc_id)?;
            let doc = self
                .docs
                .peek(&(tenant.clone(), doc_id.clone()))
                .expect("loaded above");
            let peer = self.peers.get_mut(&id).expect("checked");
            let confirmed = peer.confirmed.contains(doc_id);
            let state = peer.states.get_mut(doc_id).expect("ensured");
            // Only heads the device stated this session prove it has them; primed heads are an
            // assumption (the device may have lost data), so those get at least our heads.
            if confirmed {
                sync_state::settle(state, &doc.heads());
            }
            if let Some(message) = responder::generate_sync_message(doc, state) {
                items.push(SyncItem {
                    doc: doc_id.clone(),
                    message: message.encode(),
                    priority: None,
                });
            }
        }
        Ok(items)
    }

    /// Makes sure session `id` has a sync state for `doc`, primed so that the first message
    /// already carries what the device lacks: the changes since the heads it shared at its
    /// last disconnect (saved then), or, with no saved state, the whole document. A device
    /// only gets a document through a session, whose states are saved when it ends, so no
    /// saved state means the device does not have it; if the relay lost the states (a crash),
    /// the device merely receives some changes twice.
    fn ensure_state(&mut self, id: SessionId, doc: &DocId) -> Result<(), HubError> {
        let peer = self.peers.get_mut(&id).expect("checked");
        if !peer.states.contains_key(doc) {
            let saved = self
                .storage
                .load_sync_state(&peer.tenant, &peer.identity.device, doc)?
                .and_then(|bytes| SyncState::decode(&bytes).ok());
            let shared = saved.map(|s| s.shared_heads).unwrap_or_default();
            let state = sync_state::primed(shared);
            peer.states.insert(doc.clone(), state);
            self.watchers.watch_doc(&peer.tenant, id, doc);
        }
        Ok(())
    }

    /// Whether the relay holds `doc` (in memory or stored), without keeping an empty graph for
    /// a document it does not.
    fn holds(&mut self, tenant: &Tenant, doc: &DocId) -> Result<bool, HubError> {
        let key = (tenant.clone(), doc.clone());
        if self.docs.contains(&key) {
            return Ok(true);
        }
        match self.doc(tenant, doc) {
            Ok(graph) if !graph.is_empty() => return Ok(true),
            Ok(_) => {}
            // Stored, though it does not load: the caller meets (and reports) that itself.
            Err(HubError::Corrupt { .. }) => return Ok(true),
            Err(e) => return Err(e),
        }
        if let Some(empty) = self.docs.pop(&key) {
            self.uncount(&key);
            self.docs_bytes = self.docs_bytes.saturating_sub(empty.estimated_bytes());
        }
        Ok(false)
    }

    /// The in-memory change graph of a document, loaded from storage (or empty if it is new).
    fn doc(&mut self, tenant: &Tenant, doc_id: &DocId) -> Result<&mut DocGraph, HubError> {
        let key = (tenant.clone(), doc_id.clone());
        if !self.docs.contains(&key) {
            if let Some(&retry_at) = self.unloadable.get(&key) {
                if self.clock_ms < retry_at {
                    return Err(HubError::Corrupt {
                        doc: doc_id.clone(),
                        reason: format!(
                            "it did not load; not tried again before {} ms from now",
                            retry_at - self.clock_ms
                        ),
                    });
                }
                self.unloadable.remove(&key);
            }
            let doc = match self.storage.load(tenant, doc_id)? {
                Some(stored) => {
                    let loaded = DocGraph::load(stored.chunks.iter().map(Vec::as_slice));
                    let mut graph = match loaded {
                        Ok(graph) => graph,
                        Err(e) => {
                            self.remember_unloadable(key);
                            return Err(HubError::Corrupt {
                                doc: doc_id.clone(),
                                reason: e.to_string(),
                            });
                        }
                    };
                    graph.set_priority(stored.priority);
                    graph.set_stored_seq(stored.seq);
                    graph
                }
                None => DocGraph::new(),
            };
            self.docs_bytes += doc.estimated_bytes();
            *self
                .cached_in
                .entry((tenant.clone(), doc_id.collection().clone()))
                .or_insert(0) += 1;
            self.docs.put(key.clone(), doc);
        }
        Ok(self.docs.get_mut(&key).expect("inserted above"))
    }
}

impl<S: Storage> Hub<S> {
    /// For each document dropped from memory with changes queued for dependencies it lacked,
    /// every session holding a sync state for it starts that state afresh and is told to send
    /// its changes again (`INTERNAL` for that document, with `retry_after_ms`): a change a
    /// device sent is never left in a queue that no longer exists. The shell routes these
    /// after each input.
    pub fn take_dropped_notices(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        for (tenant, doc) in std::mem::take(&mut self.dropped_queues) {
            let holders: Vec<SessionId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.tenant == tenant && p.states.contains_key(&doc))
                .map(|(id, _)| *id)
                .collect();
            for id in holders {
                self.forget_doc(id, &doc);
                out.push(Delivery::live(
                    id,
                    Message::Error(Error {
                        code: ErrorCode::INTERNAL,
                        message: "the relay dropped changes it was holding for their \
                                  dependencies; send this again"
                            .into(),
                        retry_after_ms: Some(group_commit::CONFLICT_RETRY_MS),
                        doc: Some(doc.clone()),
                        collection: None,
                    }),
                ));
            }
        }
        out
    }
}

impl<S> Hub<S> {
    /// `key` left memory with changes queued for missing dependencies.
    fn note_dropped_queue(&mut self, key: (Tenant, DocId)) {
        if self.dropped_queues.len() >= MAX_DROPPED_QUEUES {
            self.dropped_queues.remove(0);
        }
        if !self.dropped_queues.contains(&key) {
            self.dropped_queues.push(key);
        }
    }

    /// A document left the cache: one fewer of its collection ([`Hub::cached_in`]).
    fn uncount(&mut self, (tenant, doc): &(Tenant, DocId)) {
        let key = (tenant.clone(), doc.collection().clone());
        if let Some(n) = self.cached_in.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.cached_in.remove(&key);
            }
        }
    }

    /// Moves the hub's clock to `now_ms` (never back): entry points call it first.
    fn tick(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
    }

    /// Remembers that the stored `key` did not load, within [`MAX_UNLOADABLE`].
    fn remember_unloadable(&mut self, key: (Tenant, DocId)) {
        self.failed_loads += 1;
        if self.unloadable.len() >= MAX_UNLOADABLE {
            let now = self.clock_ms;
            self.unloadable.retain(|_, retry_at| *retry_at > now);
            if self.unloadable.len() >= MAX_UNLOADABLE {
                self.unloadable.clear();
            }
        }
        self.unloadable
            .insert(key, self.clock_ms.saturating_add(UNLOADABLE_RETRY_MS));
    }
}

fn wire_heads(heads: &[ChangeHash]) -> Heads {
    Heads::new(heads.iter().map(|h| Hash(h.0)).collect())
}

/// `items` for session `to` in `lane`, in frames of at most [`SYNC_BATCH`] documents and
/// [`SYNC_BATCH_BYTES`] of messages.
fn push_batches(out: &mut Vec<Delivery>, to: SessionId, items: Vec<SyncItem>, lane: Lane) {
    let mut batch: Vec<SyncItem> = Vec::new();
    let mut bytes = 0;
    let flush = |batch: &mut Vec<SyncItem>, out: &mut Vec<Delivery>| {
        if !batch.is_empty() {
            out.push(Delivery {
                to,
                message: Message::Sync(Sync {
                    items: std::mem::take(batch),
                    positions: None,
                }),
                lane,
            });
        }
    };
    for item in items {
        let len = item.message.len();
        if batch.len() == SYNC_BATCH || (!batch.is_empty() && bytes + len > SYNC_BATCH_BYTES) {
            flush(&mut batch, out);
            bytes = 0;
        }
        bytes += len;
        batch.push(item);
    }
    flush(&mut batch, out);
}

impl Delivery {
    /// `message` for session `to`, in the live lane.
    pub fn live(to: SessionId, message: Message) -> Self {
        Self {
            to,
            message,
            lane: Lane::Live,
        }
    }

    /// An `INTERNAL` error for session `to`: the relay failed its request, which it should
    /// retry after a second (the SDK reconnects and resends).
    pub fn internal(to: SessionId, message: &str) -> Self {
        Self::live(
            to,
            Message::Error(Error {
                code: ErrorCode::INTERNAL,
                message: message.into(),
                retry_after_ms: Some(1000),
                doc: None,
                collection: None,
            }),
        )
    }
}

fn error(to: SessionId, code: ErrorCode, doc: &DocId, message: &str) -> Delivery {
    Delivery::live(
        to,
        Message::Error(Error {
            code,
            message: format!("{doc}: {message}"),
            retry_after_ms: None,
            doc: Some(doc.clone()),
            collection: None,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames hold at most `SYNC_BATCH` documents and `SYNC_BATCH_BYTES` of messages, a
    /// single larger message alone, in order.
    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let item = |i: usize, len: usize| SyncItem {
            doc: format!("todos/d{i}").parse().expect("valid"),
            message: vec![0; len],
            priority: None,
        };
        let sizes = |items: Vec<SyncItem>| {
            let mut out = Vec::new();
            push_batches(&mut out, 1, items, Lane::Bulk);
            out.into_iter()
                .map(|d| match d.message {
                    Message::Sync(s) => s.items.iter().map(|i| i.message.len()).collect(),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<Vec<usize>>>()
        };
        let many = sizes((0..600).map(|i| item(i, 10)).collect());
        assert_eq!(
            many.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![256, 256, 88]
        );
        let mib = 1 << 20;
        let large = sizes(vec![
            item(0, 3 * mib),
            item(1, 3 * mib),
            item(2, 3 * mib),
            item(3, 20 * mib),
            item(4, 1),
        ]);
        assert_eq!(
            large,
            vec![
                vec![3 * mib, 3 * mib],
                vec![3 * mib],
                vec![20 * mib],
                vec![1]
            ]
        );
    }
}
