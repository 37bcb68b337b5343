//! The document repository: [`Store`], the app's entry point, and the per-document handle
//! [`Document`].
//!
//! A write runs an Automerge transaction on the cached document while holding its slot, hands
//! the change to the group-commit writer and returns once it is durable; if the commit fails
//! the cached copy is dropped, so memory never keeps a change the file does not have.
//! Listeners fire after the commit, with no lock held.

mod cache;
mod document;
mod history;
mod listeners;
mod model;
mod sync;
mod transaction;

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ChangeHash, PatchLog, ROOT};
use syncline_protocol::{Collection, DeviceId, DocId, Priority};

use crate::clock::{Clock, SystemClock};
use crate::store::{
    ContentWrite, Database, DbOptions, DocRow, DocUpdate, Durability, NewDoc, Origin,
};
use crate::{Error, Heads, Result, Value};
use cache::{DocCache, LoadedDoc};
use listeners::{Registry, Scope};

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

pub(crate) struct Shared {
    db: Database,
    cache: DocCache,
    listeners: Arc<Registry>,
    actor: ActorId,
    path: PathBuf,
    options: StoreOptions,
    /// Local-change hooks (next id, hooks); see [`Shared::add_local_hook`].
    hooks: parking_lot::RwLock<(u64, Vec<(u64, LocalHook)>)>,
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
                db,
                cache: DocCache::new(options.cache_bytes),
                listeners: Arc::default(),
                actor,
                path,
                options,
                hooks: parking_lot::RwLock::default(),
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
        let heads = Heads::new(doc.get_heads());
        let event = self.shared.listeners.wants(&id).then(|| ChangeEvent {
            doc_id: id.clone(),
            origin: ChangeOrigin::Local,
            heads: heads.clone(),
            deleted: false,
            patches: listeners::convert_patches(doc.diff(&[], heads.as_slice())),
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

    /// A handle to an existing, not deleted document.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Deleted`], or a storage error.
    pub fn document(&self, id: &DocId) -> Result<Document> {
        let info = self.info(id)?;
        if info.deleted {
            return Err(Error::Deleted(id.clone()));
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

    /// The documents of `collection` that are not deleted, oldest first. Reads metadata only.
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
            Ok(()) => Ok(heads),
        }
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

impl Shared {
    /// The store clock's time, in milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> i64 {
        self.options.clock.now_ms()
    }

    /// The store clock's time in seconds, the unit of Automerge change timestamps.
    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Runs `f` on the loaded document `id`, loading it first if needed. The document stays
    /// locked during `f`; if `f` panics the cached copy is dropped (it may be half changed) and
    /// the panic continues.
    ///
    /// # Errors
    /// [`Error::NestedAccess`] when called from inside another document operation on this
    /// thread; the load errors; `f`'s error.
    pub(crate) fn with_doc<R>(
        &self,
        id: &DocId,
        f: impl FnOnce(&mut LoadedDoc) -> Result<R>,
    ) -> Result<R> {
        let _inside = InsideDocument::enter()?;
        let slot = self.cache.slot(id);
        let mut guard = slot.lock();
        if guard.is_none() {
            match self.load(id) {
                Ok(loaded) => *guard = Some(loaded),
                Err(e) => {
                    drop(guard);
                    drop(slot);
                    self.cache.discard_if_idle(id);
                    return Err(e);
                }
            }
        }
        let loaded = guard.as_mut().expect("loaded just above");
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| f(loaded))) {
            Ok(result) => result,
            Err(panic) => {
                *guard = None;
                drop(guard);
                self.cache.resize(id, slot, 0);
                std::panic::resume_unwind(panic);
            }
        };
        if guard.as_ref().is_some_and(|l| l.poisoned) {
            *guard = None;
        }
        let bytes = guard.as_ref().map_or(0, LoadedDoc::estimated_bytes);
        drop(guard);
        self.cache.resize(id, slot, bytes);
        result
    }

    /// Stores a brand-new document and caches it. Its slot stays locked from before the insert
    /// until it holds the new document, so no other thread can load (and then write) a second
    /// copy in between. `event` is published in that window too.
    fn insert_new(&self, new: NewDoc, doc: Automerge, event: Option<ChangeEvent>) -> Result<()> {
        let _inside = InsideDocument::enter()?;
        let id = new.id.clone();
        let slot = self.cache.slot(&id);
        let mut guard = slot.lock();
        let mut row = DocRow {
            key: 0,
            id: id.clone(),
            priority: new.priority,
            deleted: new.deleted,
            snapshot_bytes: 0,
            chunk_count: 1,
            chunk_bytes: u64::try_from(new.chunk.len()).unwrap_or(u64::MAX),
            created_at: new.at,
            local_change_at: (new.origin == Origin::Local).then_some(new.at),
            remote_change_at: (new.origin == Origin::Remote).then_some(new.at),
        };
        match self.db.insert_document(new) {
            Ok(key) => row.key = key,
            Err(e) => {
                drop(guard);
                drop(slot);
                self.cache.discard_if_idle(&id);
                return Err(e);
            }
        }
        *guard = Some(LoadedDoc {
            row,
            doc,
            poisoned: false,
        });
        if let Some(event) = event {
            self.listeners.publish(event);
        }
        let bytes = guard.as_ref().map_or(0, LoadedDoc::estimated_bytes);
        drop(guard);
        self.cache.resize(&id, slot, bytes);
        drop(_inside);
        self.listeners.deliver();
        Ok(())
    }

    fn load(&self, id: &DocId) -> Result<LoadedDoc> {
        let row = self
            .db
            .lookup(id)?
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        let content = self.db.load_content(row.key)?;
        let corrupt = |reason: String| Error::CorruptDocument {
            doc: id.clone(),
            reason,
        };
        let snapshot = || match &content.snapshot {
            Some(bytes) => Automerge::load(bytes).map_err(|e| corrupt(format!("snapshot: {e}"))),
            None => Ok(Automerge::new()),
        };
        let mut doc = snapshot()?;
        if !content.chunks.is_empty() {
            // One call for all the chunks: Automerge applies what one call loads as one batch,
            // and each batch costs in proportion to the document (85 chunks on a 10,000-change
            // document took 88 ms one by one, against 13 ms for the snapshot alone).
            if let Err(e) = doc.load_incremental(&content.chunks.concat()) {
                // Chunk by chunk on a fresh copy, only to say which chunk is corrupt.
                let mut probe = snapshot()?;
                for (i, chunk) in content.chunks.iter().enumerate() {
                    probe
                        .load_incremental(chunk)
                        .map_err(|e| corrupt(format!("chunk {i}: {e}")))?;
                }
                return Err(corrupt(format!("chunks: {e}")));
            }
        }
        let stored = self.db.heads(row.key)?;
        let loaded = Heads::new(doc.get_heads());
        if stored != loaded {
            return Err(corrupt(format!(
                "stored heads {stored} but content has {loaded}"
            )));
        }
        doc.set_actor(self.actor.clone());
        Ok(LoadedDoc {
            row,
            doc,
            poisoned: false,
        })
    }

    /// Runs a local transaction on `id` and makes it durable; see [`Document::transact`].
    pub(crate) fn write_local<R>(
        &self,
        id: &DocId,
        message: Option<&str>,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R>,
    ) -> Result<R> {
        let observed = self.listeners.wants(id);
        let result = self.with_doc(id, |loaded| {
            if loaded.row.deleted {
                return Err(Error::Deleted(id.clone()));
            }
            // Announced only now that the document is locked: a writer still waiting for the
            // lock cannot join the group commit in progress, which must not wait for it.
            let _announcement = self.db.announce_write();
            let tx = if observed {
                loaded
                    .doc
                    .transaction_log_patches(PatchLog::active())
                    .map_err(|e| Error::InvalidChange(format!("patch log: {e}")))?
            } else {
                loaded.doc.transaction()
            };
            let mut wrapper = Transaction::new(tx);
            let result = f(&mut wrapper)?;
            let tx = wrapper.into_inner();
            let mut options = CommitOptions::default().with_time(self.now_secs());
            if let Some(message) = message {
                options.set_message(message);
            }
            let (hash, mut patch_log) = tx.commit_with(options);
            if hash.is_none() {
                return Ok(result);
            }
            let change = loaded
                .doc
                .get_last_local_change()
                .map(|c| c.raw_bytes().to_vec())
                .expect("a commit that returned a hash made a local change");
            self.persist(loaded, change, Origin::Local)?;
            self.local_changed(id);
            if observed {
                self.listeners.publish(ChangeEvent {
                    doc_id: id.clone(),
                    origin: ChangeOrigin::Local,
                    heads: Heads::new(loaded.doc.get_heads()),
                    deleted: loaded.row.deleted,
                    patches: listeners::convert_patches(loaded.doc.make_patches(&mut patch_log)),
                });
            }
            Ok(result)
        })?;
        self.listeners.deliver();
        Ok(result)
    }

    /// Merges remote changes into an existing document and makes them durable.
    fn apply_remote(&self, id: &DocId, changes: Vec<Change>) -> Result<Heads> {
        let observed = self.listeners.wants(id);
        let heads = self.with_doc(id, |loaded| {
            // See `write_local` for why only now.
            let _announcement = self.db.announce_write();
            let before = loaded.doc.get_heads();
            let mut patch_log = if observed {
                PatchLog::active()
            } else {
                PatchLog::inactive()
            };
            if let Err(e) = apply_untrusted(&mut loaded.doc, changes, &mut patch_log) {
                // The document may be half changed: reload the durable state.
                loaded.poisoned = true;
                return Err(e);
            }
            let after = loaded.doc.get_heads();
            if after == before {
                return Ok(Heads::new(after));
            }
            let chunk = loaded.doc.save_after(&before);
            self.persist(loaded, chunk, Origin::Remote)?;
            let heads = Heads::new(after);
            if observed {
                self.listeners.publish(ChangeEvent {
                    doc_id: id.clone(),
                    origin: ChangeOrigin::Remote,
                    heads: heads.clone(),
                    deleted: loaded.row.deleted,
                    patches: listeners::convert_patches(loaded.doc.make_patches(&mut patch_log)),
                });
            }
            Ok(heads)
        })?;
        self.listeners.deliver();
        Ok(heads)
    }

    /// Writes the document's new state: one more chunk, or a compacted snapshot. On failure
    /// the cached copy is poisoned, so it is reloaded from the durable state.
    fn persist(&self, loaded: &mut LoadedDoc, chunk: Vec<u8>, origin: Origin) -> Result<()> {
        let prepared = self.prepare_update(loaded, chunk, origin, self.now_ms());
        if let Err(e) = self.db.update_document(loaded.row.key, prepared.update) {
            loaded.poisoned = true;
            return Err(e);
        }
        prepared.outcome.finish(&mut loaded.row);
        Ok(())
    }

    /// The write that stores `chunk` (a change just made to `loaded`'s document): an append,
    /// or a compaction into a new snapshot. Apply its outcome to the row once committed.
    pub(crate) fn prepare_update(
        &self,
        loaded: &LoadedDoc,
        chunk: Vec<u8>,
        origin: Origin,
        at: i64,
    ) -> PreparedUpdate {
        let chunk_len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        // Compacting rewrites the whole document, so it waits until the chunks weigh half the
        // snapshot: the cost per write then stays proportional to the change, however long the
        // history. The chunk cap bounds the work of loading.
        let chunk_bytes = loaded.row.chunk_bytes + chunk_len;
        let compact = loaded.row.chunk_count + 1 >= self.options.compact_after_chunks
            || (chunk_bytes >= COMPACT_MIN_BYTES && chunk_bytes * 2 >= loaded.row.snapshot_bytes);
        let content = if compact {
            ContentWrite::Compact(loaded.doc.save())
        } else {
            ContentWrite::Append(chunk)
        };
        let deleted = model::is_tombstoned(&loaded.doc);
        let written = match &content {
            ContentWrite::Append(c) | ContentWrite::Compact(c) => {
                u64::try_from(c.len()).unwrap_or(u64::MAX)
            }
        };
        PreparedUpdate {
            update: DocUpdate {
                content,
                heads: Heads::new(loaded.doc.get_heads()),
                deleted,
                origin,
                at,
            },
            outcome: UpdateOutcome {
                compact,
                written,
                deleted,
                origin,
                at,
            },
        }
    }

    /// The acknowledgement to record for `relay` having durably received `heads` of `loaded`'s
    /// document, or `None` if it would change nothing.
    ///
    /// Unknown hashes are ignored and an acknowledgement never goes backwards (what this relay
    /// acknowledged before and `heads` do not cover is kept: acks can arrive out of order).
    /// When the relays together cover every change, the record is the document's exact heads,
    /// so that "pending" stays a plain equality test in SQL.
    pub(crate) fn ack_record(
        &self,
        loaded: &LoadedDoc,
        relay: &str,
        heads: &Heads,
    ) -> Result<Option<Heads>> {
        let doc = &loaded.doc;
        let known = |hashes: &[ChangeHash]| -> Vec<ChangeHash> {
            hashes
                .iter()
                .copied()
                .filter(|h| doc.get_change_meta_by_hash(h).is_some())
                .collect()
        };
        let acks = self.db.acked_heads(loaded.row.key)?;
        let given = known(heads.as_slice());
        let uncovered: HashSet<ChangeHash> = doc
            .get_changes_meta(&given)
            .iter()
            .map(|m| m.hash)
            .collect();
        let mut merged = given;
        let mut previous_record = None;
        for (_, previous) in acks.iter().filter(|(r, _)| r == relay) {
            previous_record = Some(previous.clone());
            merged.extend(
                known(previous.as_slice())
                    .into_iter()
                    .filter(|h| uncovered.contains(h)),
            );
        }
        let mut everyone = merged.clone();
        for (_, other) in acks.iter().filter(|(r, _)| r != relay) {
            everyone.extend(known(other.as_slice()));
        }
        let record = if doc.get_changes_meta(&everyone).is_empty() {
            Heads::new(doc.get_heads())
        } else {
            Heads::new(merged)
        };
        Ok((previous_record.as_ref() != Some(&record)).then_some(record))
    }

    /// Registers `hook`, called with the id of every document changed by a local write, after
    /// the write is durable and before it returns. Hooks must be quick and must not block.
    pub(crate) fn add_local_hook(&self, hook: LocalHook) -> u64 {
        let mut hooks = self.hooks.write();
        let id = hooks.0;
        hooks.0 += 1;
        hooks.1.push((id, hook));
        id
    }

    pub(crate) fn remove_local_hook(&self, id: u64) {
        self.hooks.write().1.retain(|(h, _)| *h != id);
    }

    fn local_changed(&self, doc: &DocId) {
        for (_, hook) in &self.hooks.read().1 {
            hook(doc);
        }
    }
}

/// A function told of each local change; see [`Shared::add_local_hook`].
pub(crate) type LocalHook = Arc<dyn Fn(&DocId) + Send + Sync>;

/// A document write prepared by [`Shared::prepare_update`].
pub(crate) struct PreparedUpdate {
    pub update: DocUpdate,
    pub outcome: UpdateOutcome,
}

/// What a committed [`PreparedUpdate`] changes in the document's cached row.
pub(crate) struct UpdateOutcome {
    compact: bool,
    written: u64,
    deleted: bool,
    origin: Origin,
    at: i64,
}

impl UpdateOutcome {
    pub(crate) fn finish(self, row: &mut DocRow) {
        if self.compact {
            row.snapshot_bytes = self.written;
            row.chunk_count = 0;
            row.chunk_bytes = 0;
        } else {
            row.chunk_count += 1;
            row.chunk_bytes += self.written;
        }
        row.deleted = self.deleted;
        match self.origin {
            Origin::Local => row.local_change_at = Some(self.at),
            Origin::Remote => row.remote_change_at = Some(self.at),
        }
    }
}

/// Chunks below this many bytes are never worth a compaction on their own.
const COMPACT_MIN_BYTES: u64 = 4096;

/// A new document id: a UUIDv7 (time-ordered, so ids sort roughly by creation) in 32 hex digits.
fn new_doc_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Applies changes that came from elsewhere. Automerge can panic on a change that decodes but
/// references operations it does not have; that is bad input, not a bug of ours, so it becomes
/// [`Error::InvalidChange`] (the caller then discards the half-changed document).
fn apply_untrusted(doc: &mut Automerge, changes: Vec<Change>, log: &mut PatchLog) -> Result<()> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| {
        doc.apply_changes_log_patches(changes, log)
    })) {
        Ok(applied) => Ok(applied?),
        Err(_) => Err(Error::InvalidChange(
            "the changes do not apply to this document".into(),
        )),
    }
}

thread_local! {
    /// Set while this thread holds a document's slot.
    static INSIDE_DOCUMENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as inside a document operation; refuses nesting, which could deadlock
/// (a transaction on A touching A again, or two threads nesting A and B in opposite orders).
pub(crate) struct InsideDocument;

impl InsideDocument {
    pub(crate) fn enter() -> Result<Self> {
        if INSIDE_DOCUMENT.with(|inside| inside.replace(true)) {
            return Err(Error::NestedAccess);
        }
        Ok(Self)
    }
}

impl Drop for InsideDocument {
    fn drop(&mut self) {
        INSIDE_DOCUMENT.with(|inside| inside.set(false));
    }
}
