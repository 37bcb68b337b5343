//! The document repository: [`Store`], the app's entry point, and the per-document handle
//! [`Document`].
//!
//! A write runs an Automerge transaction on the cached document while holding its slot, hands
//! the change to the group-commit writer and returns once it is durable; if the commit fails
//! the cached copy is dropped, so memory never keeps a change the file does not have.
//! Listeners fire after the commit, with no lock held.

mod budget;
mod cache;
mod conflicts;
mod document;
mod history;
mod kept;
mod listeners;
mod model;
mod shared;
mod sync;
mod transaction;

use std::path::Path as FsPath;
use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ChangeHash, PatchLog, ROOT};
use syncline_protocol::{Collection, DeviceId, DocId, Priority};

use crate::clock::{Clock, SystemClock};
use crate::db::{Database, DbOptions, DocRow, Durability, NewDoc, Origin};
use crate::{Error, Heads, Result, Value};
use cache::DocCache;
use listeners::Scope;
pub(crate) use shared::{InsideDocument, Shared, UpdateOutcome};
use shared::{apply_untrusted, new_doc_id};

pub use budget::BudgetOutcome;
pub use conflicts::{Conflict, ConflictStrategy, ConflictValue, MAX_CONFLICTS_LISTED};
pub use document::{Document, DocumentView};
pub use history::{ChangeInfo, PendingChange};
pub use listeners::{ChangeEvent, ChangeOrigin, Patch, PatchAction, Subscription};
pub use transaction::{Transaction, WriteOp};

/// Tuning for [`Store::open_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Upper bound, in estimated bytes, of the documents kept loaded in memory. Default 64 MiB.
    pub cache_bytes: usize,
    /// How commits survive power loss. Default [`Durability::Full`].
    pub durability: Durability,
    /// A document's incremental chunks are compacted into a new snapshot once there are this
    /// many, or once they weigh half as much as the snapshot (and at least 4 KiB). Default 256.
    pub compact_after_chunks: u64,
    /// The wall clock the store stamps metadata and Automerge changes with. Default
    /// [`SystemClock`]; a simulation passes a virtual one so that a seed replays exactly.
    pub clock: Arc<dyn Clock>,
    /// The device id of a store created by this open (a simulation or a migration from another
    /// install chooses it); `None` draws a random one. Opening an existing store with a
    /// different id is [`Error::DeviceMismatch`].
    pub device_id: Option<DeviceId>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 << 20,
            durability: Durability::Full,
            compact_after_chunks: 256,
            clock: Arc::new(SystemClock),
            device_id: None,
        }
    }
}

/// Metadata of a stored document, read without loading its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentInfo {
    /// The document's address.
    pub id: DocId,
    /// Its sync priority.
    pub priority: Priority,
    /// True once deleted (the tombstone is kept so the deletion syncs).
    pub deleted: bool,
    /// Bytes stored for it (snapshot plus chunks).
    pub stored_bytes: u64,
    /// When it was created here, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Last local change, in milliseconds since the Unix epoch.
    pub local_change_at: Option<i64>,
    /// Last change received from elsewhere, in milliseconds since the Unix epoch.
    pub remote_change_at: Option<i64>,
    /// Its content was evicted to stay within the storage budget (`SyncClient::open` fetches
    /// it again); the metadata stays.
    pub evicted: bool,
    /// Bytes of this device's own changes to it kept apart since its content was evicted (or
    /// not yet back in it): what a relay restored from an older backup gets back. 0 when
    /// there are none, also when the storage budget could not hold them (then the relay
    /// alone holds them).
    pub kept_bytes: u64,
}

impl From<&DocRow> for DocumentInfo {
    fn from(row: &DocRow) -> Self {
        Self {
            id: row.id.clone(),
            priority: row.priority,
            deleted: row.deleted,
            stored_bytes: row.snapshot_bytes + row.chunk_bytes,
            created_at: row.created_at,
            local_change_at: row.local_change_at,
            remote_change_at: row.remote_change_at,
            evicted: row.evicted,
            kept_bytes: row.kept_bytes,
        }
    }
}

/// How the store's writes were grouped into commits since it was opened: see
/// [`Store::write_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Transactions committed (under [`Durability::Full`], one fsync each).
    pub commits: u64,
    /// Writes those transactions carried: local writes, merges of remote changes and sync
    /// batches, one each.
    pub writes: u64,
    /// Time spent in those transactions' `COMMIT`s: writing the WAL, under
    /// [`Durability::Full`] the fsync, and the WAL checkpoints SQLite runs after some commits.
    pub commit_time: std::time::Duration,
}

/// An open, offline-first document store: one SQLite file per account.
///
/// Cheap to clone (all clones share one store) and safe to use from many threads; concurrent
/// writes are group-committed. Only one `Store` may have a file open at a time.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl Store {
    /// Opens the store file at `path`, creating it (and this device's identity) if it does not
    /// exist. Reads no document.
    ///
    /// # Errors
    /// [`Error::NotAStore`], [`Error::SchemaTooNew`], [`Error::Locked`], or the SQLite / I/O
    /// error that prevented opening.
    pub fn open(path: impl AsRef<FsPath>) -> Result<Self> {
        Self::open_with(path, StoreOptions::default())
    }

    /// [`Store::open`] with explicit options.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(path: impl AsRef<FsPath>, options: StoreOptions) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let db = Database::open(
            &path,
            &DbOptions {
                durability: options.durability,
                device_id: options.device_id,
                now_ms: options.clock.now_ms(),
            },
        )?;
        let actor = ActorId::from(db.device_id().as_bytes().as_slice());
        Ok(Self {
            shared: Arc::new(Shared {
                conflicted: parking_lot::Mutex::new(
                    db.conflicted_documents()?.into_iter().collect(),
                ),
                db,
                cache: DocCache::new(options.cache_bytes),
                listeners: Arc::default(),
                actor,
                path,
                options,
                hooks: parking_lot::RwLock::default(),
                strategies: parking_lot::RwLock::default(),
            }),
        })
    }

    /// The store file's path.
    pub fn path(&self) -> &FsPath {
        &self.shared.path
    }

    /// This device's identity (also its Automerge actor id).
    pub fn device_id(&self) -> DeviceId {
        self.shared.db.device_id()
    }

    /// Creates an empty document with a new unique id in `collection`.
    ///
    /// # Errors
    /// A storage error; the document then does not exist.
    pub fn create(&self, collection: &Collection) -> Result<Document> {
        self.create_with(collection, Value::Map(Default::default()), Priority::Normal)
    }

    /// Creates a document with a new unique id in `collection`, holding `initial` (a
    /// [`Value::Map`]) and the given priority, in one durable change.
    ///
    /// # Errors
    /// [`Error::TypeMismatch`] if `initial` is not a map, or a storage error.
    pub fn create_with(
        &self,
        collection: &Collection,
        initial: Value,
        priority: Priority,
    ) -> Result<Document> {
        let id = DocId::new(collection.clone(), new_doc_id())?;
        self.create_at(id, initial, priority)
    }

    /// Creates a document at a chosen id.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if the id is taken (even by a deleted document),
    /// [`Error::TypeMismatch`] if `initial` is not a map, or a storage error.
    pub fn create_at(&self, id: DocId, initial: Value, priority: Priority) -> Result<Document> {
        let Value::Map(entries) = initial else {
            return Err(Error::TypeMismatch {
                path: "/".into(),
                expected: "map",
                found: initial.type_name(),
            });
        };
        let mut doc = Automerge::new().with_actor(self.shared.actor.clone());
        let mut tx = doc.transaction();
        for (key, value) in &entries {
            let path = crate::Path::root().key(key.clone());
            let (obj, prop) = model::locate_for_write(&mut tx, &path)?;
            model::write_value(&mut tx, &obj, prop, value, false)?;
        }
        shared::change_ops_bounded(automerge::transaction::Transactable::pending_ops(&tx))?;
        let options = || {
            CommitOptions::default()
                .with_message("create")
                .with_time(self.shared.now_secs())
        };
        if tx.commit_with(options()).0.is_none() {
            // Automerge records nothing for an empty transaction, but the document's existence
            // must be a change so that it syncs: commit an empty one.
            doc.empty_commit(options());
        }
        if let Some(change) = doc.get_last_local_change() {
            shared::change_bytes_bounded(change.raw_bytes().len())?;
        }
        let heads = Heads::new(doc.get_heads());
        let event = self.shared.listeners.wants(&id).then(|| ChangeEvent {
            doc_id: id.clone(),
            origin: ChangeOrigin::Local,
            heads: heads.clone(),
            deleted: false,
            patches: listeners::convert_patches(doc.diff(&[], heads.as_slice())),
            devices: vec![self.device_id()],
            conflicts: Vec::new(),
        });
        let new = NewDoc {
            id: id.clone(),
            priority,
            chunk: doc.save(),
            heads,
            deleted: false,
            origin: Origin::Local,
            at: self.shared.now_ms(),
        };
        self.shared.insert_new(new, doc, event)?;
        self.shared.local_changed(&id);
        Ok(Document::new(self.clone(), id))
    }

    /// A handle to an existing, not deleted document whose content is here.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Deleted`], [`Error::Evicted`], or a storage error.
    pub fn document(&self, id: &DocId) -> Result<Document> {
        let info = self.info(id)?;
        if info.deleted {
            return Err(Error::Deleted(id.clone()));
        }
        if info.evicted {
            return Err(Error::Evicted(id.clone()));
        }
        Ok(Document::new(self.clone(), id.clone()))
    }

    /// The metadata of a document (deleted or not), read without loading it.
    ///
    /// # Errors
    /// [`Error::NotFound`] or a storage error.
    pub fn info(&self, id: &DocId) -> Result<DocumentInfo> {
        let row = self
            .shared
            .db
            .lookup(id)?
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        Ok(DocumentInfo::from(&row))
    }

    /// The documents of `collection` that are not deleted, oldest first, evicted ones included
    /// (see [`DocumentInfo::evicted`]). Reads metadata only.
    ///
    /// # Errors
    /// A storage error.
    pub fn list(&self, collection: &Collection) -> Result<Vec<DocumentInfo>> {
        Ok(self
            .shared
            .db
            .list(collection)?
            .iter()
            .filter(|row| !row.deleted)
            .map(DocumentInfo::from)
            .collect())
    }

    /// Deletes a document: a durable tombstone change that syncs like any other, so every
    /// device learns of the deletion. Deleting a deleted document does nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::CorruptDocument`], or a storage error.
    pub fn delete(&self, id: &DocId) -> Result<()> {
        match self.shared.write_local(id, Some("delete"), |tx| {
            tx.inner().put(ROOT, model::TOMBSTONE_KEY, true)?;
            Ok(())
        }) {
            Err(Error::Deleted(_)) => Ok(()),
            other => other,
        }
    }

    /// Sets a document's sync priority.
    ///
    /// # Errors
    /// [`Error::NotFound`] or a storage error.
    pub fn set_priority(&self, id: &DocId, priority: Priority) -> Result<()> {
        self.shared.with_doc(id, |loaded| {
            self.shared.db.set_priority(loaded.row.key, priority)?;
            loaded.row.priority = priority;
            Ok(())
        })
    }

    /// Calls `listener` after every durable change to any document of `collection`, local or
    /// remote, including creations and deletions. The listener stays until the returned
    /// [`Subscription`] is dropped.
    pub fn watch_collection(
        &self,
        collection: &Collection,
        listener: impl Fn(&ChangeEvent) + Send + Sync + 'static,
    ) -> Subscription {
        self.shared
            .listeners
            .subscribe(Scope::Collection(collection.clone()), listener)
    }

    /// The last `limit` connections to any relay, newest first: when each started and ended,
    /// documents and bytes each way, round trips, the documents refused, how it ended and the
    /// relay's session id (the same `session` as in the relay's logs). The store keeps the
    /// last [`crate::KEPT_SYNC_RECORDS`].
    ///
    /// # Errors
    /// The store could not be read.
    pub fn sync_history(&self, limit: usize) -> Result<Vec<crate::SyncRecord>> {
        self.shared.db.sync_history(limit)
    }

    /// Calls `listener` after every durable change to any document of the store, in every
    /// collection, local or remote (see [`ChangeEvent::origin`] and [`ChangeEvent::devices`]
    /// for where it came from). The listener stays until the returned [`Subscription`] is
    /// dropped.
    pub fn watch_all(
        &self,
        listener: impl Fn(&ChangeEvent) + Send + Sync + 'static,
    ) -> Subscription {
        self.shared.listeners.subscribe(Scope::Store, listener)
    }

    /// How many change listeners (`watch_document`, `watch_collection`, `watch_all` and the
    /// conflict watchers) are registered now: a subscription dropped or cancelled no longer
    /// counts. For diagnostics and for bindings' tests that an abandoned stream unsubscribed.
    pub fn listener_count(&self) -> usize {
        self.shared.listeners.len()
    }

    /// Calls `listener` after every durable change to the document `id`.
    pub fn watch_document(
        &self,
        id: &DocId,
        listener: impl Fn(&ChangeEvent) + Send + Sync + 'static,
    ) -> Subscription {
        self.shared
            .listeners
            .subscribe(Scope::Document(id.clone()), listener)
    }

    /// The documents a relay announced and held back, highest priority first, then the most
    /// recently announced: too large for a metered network, in a low-priority collection on a
    /// metered network, or in an on-demand collection and not fetched. Each lists its size and
    /// reason; `SyncClient::fetch` asks for one. Recorded durably, so the list survives
    /// restarts and works offline.
    ///
    /// # Errors
    /// A storage error.
    pub fn deferred(&self) -> Result<Vec<crate::DeferredDoc>> {
        self.shared.db.deferred(None)
    }

    /// The documents holding changes that no relay has acknowledged yet, highest priority
    /// first. Answered from the store's metadata, without loading documents.
    ///
    /// # Errors
    /// A storage error.
    pub fn pending_documents(&self) -> Result<Vec<DocId>> {
        Ok(self
            .shared
            .db
            .pending()?
            .into_iter()
            .map(|row| row.id)
            .collect())
    }

    /// Every change that no relay has acknowledged yet, per pending document.
    ///
    /// # Errors
    /// A storage error, or [`Error::CorruptDocument`] for a pending document that cannot load.
    pub fn pending_changes(&self) -> Result<Vec<PendingChange>> {
        let mut pending = Vec::new();
        for row in self.shared.db.pending()? {
            // Evicted: what is pending of it is the own changes kept at its eviction.
            if row.evicted {
                let kept = self.shared.db.kept_changes(row.key)?.unwrap_or_default();
                let changes = kept::decode(&kept).map_err(|reason| Error::CorruptDocument {
                    doc: row.id.clone(),
                    reason,
                })?;
                pending.extend(changes.iter().map(|change| PendingChange {
                    doc_id: row.id.clone(),
                    change: ChangeInfo::from_change(change),
                }));
                continue;
            }
            let acked: Vec<ChangeHash> = self
                .shared
                .db
                .acked_heads(row.key)?
                .into_iter()
                .flat_map(|(_, heads)| heads.as_slice().to_vec())
                .collect();
            self.shared.with_doc(&row.id, |loaded| {
                let known: Vec<ChangeHash> = acked
                    .iter()
                    .copied()
                    .filter(|h| loaded.doc.get_change_meta_by_hash(h).is_some())
                    .collect();
                pending.extend(loaded.doc.get_changes_meta(&known).iter().map(|meta| {
                    PendingChange {
                        doc_id: row.id.clone(),
                        change: ChangeInfo::from_meta(meta),
                    }
                }));
                Ok(())
            })?;
        }
        Ok(pending)
    }

    /// Records that `relay` has durably stored the document up to `heads`. Hashes this store
    /// does not know are ignored. Used by the sync engine when a relay acknowledges.
    ///
    /// # Errors
    /// [`Error::NotFound`] or a storage error.
    pub fn mark_acknowledged(&self, id: &DocId, relay: &str, heads: &Heads) -> Result<()> {
        self.shared.with_doc(id, |loaded| {
            match self.shared.ack_record(loaded, relay, heads)? {
                Some(record) => self
                    .shared
                    .db
                    .record_ack(loaded.row.key, relay.to_owned(), record),
                None => Ok(()),
            }
        })
    }

    /// The changes of a document that are not ancestors of `since`, as encoded Automerge
    /// changes, oldest first: what another replica at `since` is missing.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::CorruptDocument`], or a storage error.
    pub fn changes_since(&self, id: &DocId, since: &Heads) -> Result<Vec<Vec<u8>>> {
        self.shared.with_doc(id, |loaded| {
            Ok(loaded
                .doc
                .get_changes(since.as_slice())
                .into_iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect())
        })
    }

    /// Merges encoded Automerge changes received from another replica into document `id`,
    /// creating it if this store has never seen it. Durable before it returns; listeners see
    /// a [`ChangeOrigin::Remote`] event. Returns the document's heads afterwards: a change whose
    /// dependencies are missing is not applied (nor stored) and its hash is not in them; it
    /// must be sent again with its dependencies, which the sync protocol does.
    ///
    /// # Errors
    /// [`Error::InvalidChange`] if any change does not decode or cannot be applied (then
    /// nothing is applied), [`Error::NestedAccess`], or a storage error.
    pub fn apply_changes(&self, id: &DocId, changes: &[Vec<u8>]) -> Result<Heads> {
        let changes = changes
            .iter()
            .map(|bytes| Change::from_bytes(bytes.clone()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidChange(e.to_string()))?;
        let applied = match self.shared.apply_remote(id, changes.clone()) {
            Err(Error::NotFound(_)) => self.create_from_remote(id, changes),
            other => other,
        };
        if applied.is_ok() {
            // No relay has acknowledged these yet: the sync engine must hear of them.
            self.shared.local_changed(id);
        }
        applied
    }

    fn create_from_remote(&self, id: &DocId, changes: Vec<Change>) -> Result<Heads> {
        let mut doc = Automerge::new().with_actor(self.shared.actor.clone());
        apply_untrusted(&mut doc, changes, &mut PatchLog::inactive())?;
        let heads = Heads::new(doc.get_heads());
        if heads.is_empty() {
            // Nothing applicable (every change waits for a dependency): nothing to store.
            return Ok(heads);
        }
        let deleted = model::is_tombstoned(&doc);
        let event = self.shared.listeners.wants(id).then(|| ChangeEvent {
            doc_id: id.clone(),
            origin: ChangeOrigin::Remote,
            heads: heads.clone(),
            deleted,
            patches: listeners::convert_patches(doc.diff(&[], heads.as_slice())),
            devices: listeners::authors(&doc, &[]),
            conflicts: if conflicts::may_have_new(&doc, &[]) {
                conflicts::find(&doc, id)
            } else {
                Vec::new()
            },
        });
        let new = NewDoc {
            id: id.clone(),
            priority: Priority::Normal,
            chunk: doc.save(),
            heads: heads.clone(),
            deleted,
            origin: Origin::Remote,
            at: self.shared.now_ms(),
        };
        let all_changes = doc.get_changes(&[]);
        match self.shared.insert_new(new, doc, event) {
            // Created concurrently by another thread: merge into that one instead.
            Err(Error::AlreadyExists(_)) => self.shared.apply_remote(id, all_changes),
            Err(e) => Err(e),
            Ok(()) => {
                let conflicted = self.shared.with_doc(id, |loaded| {
                    Ok(!self.shared.note_conflicts(loaded, &[]).is_empty())
                })?;
                if conflicted && let Some(strategy) = self.shared.strategy(id) {
                    self.shared.resolve_conflicts(id, &strategy)?;
                    self.shared.listeners.deliver();
                    return self
                        .shared
                        .with_doc(id, |loaded| Ok(Heads::new(loaded.doc.get_heads())));
                }
                Ok(heads)
            }
        }
    }

    /// The documents a merge left with concurrent values at some path, and no write has
    /// resolved yet (kept in the store, so the list survives a restart).
    ///
    /// # Errors
    /// The store could not be read.
    pub fn conflicted_documents(&self) -> Result<Vec<DocId>> {
        self.shared.db.conflicted_documents()
    }

    /// Resolves the conflicts of `collection`'s documents with `strategy` from now on (or no
    /// longer, with `None`): as soon as a merge leaves concurrent scalar values at a path,
    /// the store writes the value the strategy picks, as a local change with the message
    /// `resolve conflict (STRATEGY)`. Documents already conflicted are resolved now. Every
    /// device must run the same strategy for a collection: a deterministic strategy then
    /// converges (devices resolving one conflict at once write equal values, which is no
    /// conflict).
    ///
    /// # Errors
    /// The conflicted documents could not be listed, or a resolution could not be written.
    pub fn set_conflict_strategy(
        &self,
        collection: &Collection,
        strategy: Option<ConflictStrategy>,
    ) -> Result<()> {
        match strategy {
            None => {
                self.shared.strategies.write().remove(collection);
                Ok(())
            }
            Some(strategy) => {
                self.shared
                    .strategies
                    .write()
                    .insert(collection.clone(), strategy.clone());
                for id in self.conflicted_documents()? {
                    if id.collection() != collection {
                        continue;
                    }
                    match self.shared.resolve_conflicts(&id, &strategy) {
                        // Nothing to resolve here: deleted, or its content is on the relay
                        // (resolved when it comes back).
                        Ok(()) | Err(Error::Deleted(_) | Error::Evicted(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                self.shared.listeners.deliver();
                Ok(())
            }
        }
    }

    /// Calls `listener` with each conflict a change leaves in any document of the store
    /// (after every change to a conflicted document, with each of its conflicts), until the
    /// returned [`Subscription`] is dropped.
    pub fn watch_conflicts(
        &self,
        listener: impl Fn(&Conflict) + Send + Sync + 'static,
    ) -> Subscription {
        self.watch_all(conflict_listener(listener))
    }

    /// [`Store::watch_conflicts`] for the documents of `collection`.
    pub fn watch_collection_conflicts(
        &self,
        collection: &Collection,
        listener: impl Fn(&Conflict) + Send + Sync + 'static,
    ) -> Subscription {
        self.watch_collection(collection, conflict_listener(listener))
    }

    /// Writes committed since the store was opened, and the commits that carried them: more
    /// writes than commits means concurrent writers shared commits (and fsyncs). Read while
    /// writes are under way, the fields may be a commit apart.
    pub fn write_stats(&self) -> WriteStats {
        let counts = self.shared.db.commit_counts();
        WriteStats {
            commits: counts.commits,
            writes: counts.jobs,
            commit_time: counts.commit_time,
        }
    }

    /// Estimated bytes of the documents currently loaded in memory.
    pub fn cache_used_bytes(&self) -> usize {
        self.shared.cache.used_bytes()
    }

    /// Number of documents currently loaded (or being loaded) in memory.
    pub fn cached_documents(&self) -> usize {
        self.shared.cache.len()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .field("device_id", &self.device_id())
            .finish_non_exhaustive()
    }
}

/// A change listener that calls `listener` with each conflict of each event.
fn conflict_listener(
    listener: impl Fn(&Conflict) + Send + Sync + 'static,
) -> impl Fn(&ChangeEvent) + Send + Sync + 'static {
    move |event: &ChangeEvent| event.conflicts.iter().for_each(&listener)
}
