//! `Shared`: the store's internals behind every handle: the write path (`write_local`, group
//! commit through the database, poisoning on failure), the load path (snapshot plus chunks,
//! checked against the stored heads), remote changes (`apply_remote`), compaction
//! (`prepare_update`), acknowledgement records and the local-change hooks the sync shell
//! listens to. `Store` (in `mod.rs`) is the public API on top of it.
//!
//! # Write path (`Document::transact` -> `Shared::write_local`)
//!
//! 1. The caller takes the document's slot from `DocCache` and locks it (loading the document if
//!    the slot is empty), then announces the write (`Database::announce_write`). A thread-local
//!    guard refuses a document operation nested inside another (`Error::NestedAccess`) instead of
//!    risking a deadlock.
//! 2. The closure runs as one Automerge transaction on the cached document, with a patch log only
//!    if a listener wants this document. An `Err` or an empty change writes nothing.
//! 3. `persist` builds a `DocUpdate` (the change's bytes as a new chunk, or a compaction) and
//!    calls `Database::update_document`, which hands a job to `Writer::run` and blocks.
//! 4. Group commit on the callers' own threads (there is no writer thread), in an *open
//!    transaction*: a caller whose write is not done and finds the connection free runs every
//!    queued job (up to 512) at once, beginning the transaction if none is open (and rolling back
//!    a stale one left by a failed `ROLLBACK`); each job but the transaction's first gets its own
//!    `SAVEPOINT`, so a failing or panicking job is rolled back alone and its caller told at once
//!    (a failing first job rolls back the transaction, which holds nothing else). The transaction
//!    commits once it holds as many jobs as there are announced writers (`Writer::announce`,
//!    taken in `write_local` once the document is locked, held until the write returns), or
//!    `GATHER_WINDOW` (200 µs) after the run that began it got the connection; `COMMIT` with
//!    `synchronous=FULL` fsyncs the WAL. Jobs thus run while the other callers are still
//!    preparing theirs, and only the `COMMIT` remains once the last arrives. Callers sleep with
//!    `thread::park` and are woken with `unpark`: a caller that leaves, or starts a commit, hands
//!    the run role to the first queued job's owner; the owner of the transaction's first job keeps
//!    the deadline (woken to do so if someone else began its transaction); whoever completes the
//!    gathering (the last runner, or a dropped announcement) commits or wakes it. If the commit
//!    fails, or SQLite rolled the transaction back under it, every job of the transaction gets
//!    `Error::CommitFailed`; a panic in the writer's own code fails the jobs it held and frees the
//!    role. Sync batches (`sync_receive`) are not announced: they take document locks one by one,
//!    and a commit waiting for them could be waiting for a writer that holds one. The writer
//!    counts its commits, the jobs they carried and the time spent in `COMMIT`
//!    (`Writer::commit_counts`), which `Store::write_stats` returns as `WriteStats`.
//! 5. If persisting failed, the cached copy is marked poisoned and dropped when the slot is
//!    released, so memory never keeps a change the file lacks. On success a `ChangeEvent` is
//!    queued with `Registry::publish` while the slot is still locked (commit order).
//! 6. The slot is released and the cache resized (evicting if over budget); then
//!    `Registry::deliver` calls the listeners with no lock of the store held.
//!
//! Remote changes (`Store::apply_changes`) take the same path through `Shared::apply_remote`:
//! untrusted changes are applied with Automerge panics turned into `Error::InvalidChange` (the
//! half-changed copy is poisoned), and the stored chunk is `save_after(previous heads)`. An unknown
//! document is created from the remote changes.
//!
//! # Load path (`Shared::load`)
//!
//! `Database::lookup` (`Error::NotFound`), then `load_content`
//! returns the snapshot (if any) and the chunks in write order; `Automerge::load` the snapshot, then
//! one `load_incremental` of all the chunks concatenated (Automerge applies each call as a batch
//! costing in proportion to the document, so chunk by chunk was 6–17× slower; on failure the chunks
//! are replayed one by one on a fresh copy only to name the corrupt one). The resulting heads must equal the heads stored in `documents`.
//! Any decoding failure or heads mismatch is `Error::CorruptDocument` for that document only; its
//! rows are left untouched, and the empty slot is discarded.
//!
//! # Compaction (in `persist`)
//!
//! when the chunk count reaches
//! `StoreOptions::compact_after_chunks`, or the chunks weigh at least 4 KiB and at least half the
//! snapshot, the write stores `doc.save()` as the new snapshot and deletes the document's chunks,
//! in the same transaction as the change (`ContentWrite::Compact`). Waiting for half the snapshot
//! keeps the cost per write proportional to the change; the count cap bounds load work.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ChangeHash, PatchLog};
use syncline_protocol::messages::{MAX_CHANGE_BYTES, MAX_CHANGE_OPS};
use syncline_protocol::{DeviceId, DocId};

use super::StoreOptions;
use super::cache::{DocCache, LoadedDoc};
use super::conflicts::{self, Conflict, ConflictStrategy};
use super::listeners::{self, ChangeEvent, ChangeOrigin, Registry};
use super::model;
use super::transaction::Transaction;
use crate::db::{BatchWrite, ContentWrite, Database, DocRow, DocUpdate, NewDoc, Origin};
use crate::engine::acknowledgement;
use crate::{Error, Heads, Result, Value};

/// What every handle of one open store shares.
pub(crate) struct Shared {
    pub(super) db: Database,
    pub(super) cache: DocCache,
    pub(super) listeners: Arc<Registry>,
    pub(super) actor: ActorId,
    pub(super) path: PathBuf,
    pub(super) options: StoreOptions,
    /// Local-change hooks (next id, hooks); see [`Shared::add_local_hook`].
    pub(super) hooks: parking_lot::RwLock<(u64, Vec<(u64, LocalHook)>)>,
    /// The documents recorded as conflicted (as in the `conflicted` table).
    pub(super) conflicted: parking_lot::Mutex<std::collections::HashSet<DocId>>,
    /// Per collection, the strategy that resolves its conflicts.
    pub(super) strategies: parking_lot::RwLock<
        std::collections::HashMap<syncline_protocol::Collection, ConflictStrategy>,
    >,
}

impl Shared {
    /// After a change to `loaded` from `before`: the document's conflicts now (computed only
    /// when the change was a merge that could leave some, or the document had some), with
    /// the record of whether it has any brought up to date.
    pub(super) fn note_conflicts(
        &self,
        loaded: &LoadedDoc,
        before: &[ChangeHash],
    ) -> Vec<Conflict> {
        let id = &loaded.row.id;
        let flagged = self.conflicted.lock().contains(id);
        if !flagged && !conflicts::may_have_new(&loaded.doc, before) {
            return Vec::new();
        }
        let found = conflicts::find(&loaded.doc, id);
        let now = !found.is_empty();
        if now != flagged {
            match self
                .db
                .commit_batch(vec![BatchWrite::Conflicted(loaded.row.key, now)])
            {
                Ok(_) => {
                    let mut set = self.conflicted.lock();
                    if now {
                        set.insert(id.clone());
                    } else {
                        set.remove(id);
                    }
                }
                // Only the list of conflicted documents is behind; the next change fixes it.
                Err(e) => tracing::warn!(doc = %id, error = %e, "could not record conflicts"),
            }
        }
        found
    }

    /// The strategy for `id`'s collection, if its conflicts are to be resolved.
    pub(super) fn strategy(&self, id: &DocId) -> Option<ConflictStrategy> {
        self.strategies.read().get(id.collection()).cloned()
    }

    /// Resolves `id`'s conflicts between scalar values with `strategy`, as one local change
    /// (listeners are delivered by the caller). Nothing is written when none is left.
    pub(super) fn resolve_conflicts(&self, id: &DocId, strategy: &ConflictStrategy) -> Result<()> {
        let found = self.with_doc(id, |loaded| Ok(conflicts::find(&loaded.doc, id)))?;
        let choices: Vec<(crate::Path, Value)> = found
            .iter()
            .filter(|c| c.values.iter().all(|v| !v.object))
            .map(|c| (c.path.clone(), strategy.choose(c)))
            .collect();
        if choices.is_empty() {
            return Ok(());
        }
        let message = format!("resolve conflict ({})", strategy.name());
        self.write_local_undelivered(id, Some(&message), |tx| {
            for (path, value) in choices {
                tx.put(path, value)?;
            }
            Ok(())
        })
    }

    /// The store clock's time, in milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> i64 {
        self.options.clock.now_ms()
    }

    /// The store clock's time in seconds, the unit of Automerge change timestamps.
    pub(super) fn now_secs(&self) -> i64 {
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
    pub(super) fn insert_new(
        &self,
        new: NewDoc,
        doc: Automerge,
        event: Option<ChangeEvent>,
    ) -> Result<()> {
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
            evicted: false,
            kept_bytes: 0,
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

    pub(super) fn load(&self, id: &DocId) -> Result<LoadedDoc> {
        let row = self
            .db
            .lookup(id)?
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        if row.evicted {
            return Err(Error::Evicted(id.clone()));
        }
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
        let result = self.write_local_undelivered(id, message, f)?;
        self.listeners.deliver();
        Ok(result)
    }

    /// [`Shared::write_local`], leaving its event queued for the caller to deliver.
    pub(super) fn write_local_undelivered<R>(
        &self,
        id: &DocId,
        message: Option<&str>,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R>,
    ) -> Result<R> {
        let observed = self.listeners.wants(id);
        self.with_doc(id, |loaded| {
            if loaded.row.deleted {
                return Err(Error::Deleted(id.clone()));
            }
            // A local change would take the sequence numbers of this device's kept changes
            // still waiting to go back in (`super::kept`): two different changes under one.
            if loaded.row.kept_bytes > 0 {
                return Err(Error::AwaitingOwnChanges(id.clone()));
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
            if let Err(e) = change_ops_bounded(tx.pending_ops()) {
                tx.rollback();
                return Err(e);
            }
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
            if let Err(e) = change_bytes_bounded(change.len()) {
                // Committed in memory only: the durable state, reloaded, does not have it.
                loaded.poisoned = true;
                return Err(e);
            }
            self.persist(loaded, change, Origin::Local)?;
            self.local_changed(id);
            // A local change merges every head it saw: it resolves conflicts, never makes any.
            let heads = loaded.doc.get_heads();
            let conflicts = self.note_conflicts(loaded, &heads);
            if observed {
                self.listeners.publish(ChangeEvent {
                    doc_id: id.clone(),
                    origin: ChangeOrigin::Local,
                    heads: Heads::new(heads),
                    deleted: loaded.row.deleted,
                    patches: listeners::convert_patches(loaded.doc.make_patches(&mut patch_log)),
                    devices: DeviceId::try_from_slice(self.actor.to_bytes())
                        .into_iter()
                        .collect(),
                    conflicts,
                });
            }
            Ok(result)
        })
    }

    /// Merges remote changes into an existing document and makes them durable.
    pub(super) fn apply_remote(&self, id: &DocId, changes: Vec<Change>) -> Result<Heads> {
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
                return Ok((Heads::new(after), false));
            }
            let chunk = loaded.doc.save_after(&before);
            self.persist(loaded, chunk, Origin::Remote)?;
            let heads = Heads::new(after);
            let conflicts = self.note_conflicts(loaded, &before);
            let conflicted = !conflicts.is_empty();
            if observed {
                self.listeners.publish(ChangeEvent {
                    doc_id: id.clone(),
                    origin: ChangeOrigin::Remote,
                    heads: heads.clone(),
                    deleted: loaded.row.deleted,
                    patches: listeners::convert_patches(loaded.doc.make_patches(&mut patch_log)),
                    devices: listeners::authors(&loaded.doc, &before),
                    conflicts,
                });
            }
            Ok((heads, conflicted))
        })?;
        let (mut heads, conflicted) = heads;
        if conflicted && let Some(strategy) = self.strategy(id) {
            self.resolve_conflicts(id, &strategy)?;
            heads = self.with_doc(id, |loaded| Ok(Heads::new(loaded.doc.get_heads())))?;
        }
        self.listeners.deliver();
        Ok(heads)
    }

    /// Writes the document's new state: one more chunk, or a compacted snapshot. On failure
    /// the cached copy is poisoned, so it is reloaded from the durable state.
    pub(super) fn persist(
        &self,
        loaded: &mut LoadedDoc,
        chunk: Vec<u8>,
        origin: Origin,
    ) -> Result<()> {
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
        let acks = self.db.acked_heads(loaded.row.key)?;
        let previous = acks
            .iter()
            .find(|(r, _)| r == relay)
            .map(|(_, h)| h.as_slice());
        let others = acks
            .iter()
            .filter(|(r, _)| r != relay)
            .map(|(_, h)| h.as_slice());
        Ok(acknowledgement(
            &loaded.doc,
            heads.as_slice(),
            previous,
            others,
        ))
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

    pub(super) fn local_changed(&self, doc: &DocId) {
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
pub(super) fn new_doc_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Applies changes that came from elsewhere. Automerge can panic on a change that decodes but
/// references operations it does not have; that is bad input, not a bug of ours, so it becomes
/// [`Error::InvalidChange`] (the caller then discards the half-changed document).
pub(super) fn apply_untrusted(
    doc: &mut Automerge,
    changes: Vec<Change>,
    log: &mut PatchLog,
) -> Result<()> {
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

/// Refuses a local change of more than [`MAX_CHANGE_OPS`] operations: no relay with default
/// limits would take it, and a change cannot be split.
pub(super) fn change_ops_bounded(ops: usize) -> Result<()> {
    if ops > MAX_CHANGE_OPS {
        return Err(Error::ChangeTooLarge {
            size: ops,
            max: MAX_CHANGE_OPS,
            unit: "operations",
        });
    }
    Ok(())
}

/// Refuses a local change of more than [`MAX_CHANGE_BYTES`] (before compression).
pub(super) fn change_bytes_bounded(bytes: usize) -> Result<()> {
    if bytes > MAX_CHANGE_BYTES {
        return Err(Error::ChangeTooLarge {
            size: bytes,
            max: MAX_CHANGE_BYTES,
            unit: "bytes",
        });
    }
    Ok(())
}
