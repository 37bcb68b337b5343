//! The store operations of the sync engine: applying a relay's Automerge sync messages in
//! batches, generating the messages to send, and recording the relay's acknowledgements and
//! cursors.
//!
//! A batch of received messages is applied with every touched document's slot held (locked in
//! `DocId` order, so two batches cannot deadlock) and committed in **one** transaction, with the
//! acknowledgements the relay's heads imply; only then are the slots released and the
//! listeners told. Memory is never ahead of the file: a failed commit poisons every document
//! of the batch, which is then reloaded from its durable state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use automerge::sync::{Message as SyncMessage, State, SyncDoc};
use automerge::{Automerge, ChangeHash, PatchLog};
use parking_lot::{Mutex, RawMutex, lock_api::ArcMutexGuard};
use syncline_protocol::messages::Cursor;
use syncline_protocol::sync_state;
use syncline_protocol::{Collection, DocId, Priority};

use super::cache::LoadedDoc;
use super::listeners::{self, ChangeEvent, ChangeOrigin};
use super::shared::Shared;
use super::{InsideDocument, Store, UpdateOutcome, kept, model};
use crate::db::{
    AckTarget, BatchWrite, ContentWrite, DocKey, DocRow, DocUpdate, NewDoc, Origin, SyncRecord,
};
use crate::engine::{Outgoing, Positions, Received, SyncStore, holds_their_heads, next_message};
use crate::{DeferredDoc, Error, Heads, Result};

type SlotGuard = ArcMutexGuard<RawMutex, Option<LoadedDoc>>;

/// One document of a batch while it is being applied.
struct Pending {
    doc: DocId,
    slot: Arc<Mutex<Option<LoadedDoc>>>,
    guard: SlotGuard,
    /// A document this device did not have; inserted (if anything applied) by the batch.
    fresh: Option<Automerge>,
    before: Vec<ChangeHash>,
    outcome: Option<UpdateOutcome>,
    event: Option<ChangeEvent>,
    carried_changes: bool,
    /// Bytes of the inserted chunk of a fresh document.
    inserted_bytes: u64,
    /// The row of an evicted document whose content this batch brings back (in `fresh`).
    restoring: Option<DocRow>,
    /// The bytes of kept changes still to apply, if this batch applied some.
    kept_left: Option<u64>,
}

impl Store {
    /// Runs the change listeners for the events that sync queued ([`SyncStore::receive`]
    /// never runs them, so that no app callback runs inside [`crate::engine::Engine::handle`]).
    /// The engine's shell calls this after each `handle`; a custom shell must too. Listeners
    /// run on the calling thread with no store lock held.
    pub fn deliver_events(&self) {
        self.shared().listeners.deliver();
    }
}

/// The SQLite store as the engine's port: every batch is one transaction.
impl SyncStore for Store {
    fn receive(
        &self,
        relay: &str,
        items: Vec<(DocId, SyncMessage)>,
        states: &mut HashMap<DocId, State>,
        now_ms: u64,
    ) -> Vec<(DocId, Result<Received>)> {
        let at = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let inside = match InsideDocument::enter() {
            Ok(inside) => inside,
            Err(_) => {
                return items
                    .into_iter()
                    .map(|(doc, _)| (doc, Err(Error::NestedAccess)))
                    .collect();
            }
        };
        let shared = self.shared();
        let mut grouped: BTreeMap<DocId, Vec<SyncMessage>> = BTreeMap::new();
        for (doc, message) in items {
            grouped.entry(doc).or_default().push(message);
        }
        // Not announced to the group commit: this batch takes document locks one by one, and a
        // commit waiting for it could be waiting for a writer that holds one of them.
        let mut done: Vec<(DocId, Result<Received>)> = Vec::new();
        // Documents the batch left conflicted in a collection with a strategy.
        let mut to_resolve: Vec<DocId> = Vec::new();
        let mut batch: Vec<Pending> = Vec::new();
        let mut writes: Vec<BatchWrite> = Vec::new();
        let mut relay_heads: Vec<Vec<ChangeHash>> = Vec::new();
        for (doc, messages) in grouped {
            let slot = shared.cache.slot(&doc);
            let mut guard = slot.lock_arc();
            let mut fresh = None;
            let mut restoring = None;
            if guard.is_none() {
                match shared.load(&doc) {
                    Ok(loaded) => *guard = Some(loaded),
                    Err(Error::NotFound(_)) => {
                        fresh = Some(Automerge::new().with_actor(shared.actor.clone()))
                    }
                    // Evicted: the content comes back whole, as for a document not here.
                    Err(Error::Evicted(_)) => {
                        restoring = shared.db.lookup(&doc).ok().flatten();
                        fresh = Some(Automerge::new().with_actor(shared.actor.clone()))
                    }
                    Err(e) => {
                        drop(guard);
                        drop(slot);
                        shared.cache.discard_if_idle(&doc);
                        done.push((doc, Err(e)));
                        continue;
                    }
                }
            }
            let state = match states.get_mut(&doc) {
                Some(state) => state,
                None => {
                    let acked = match guard.as_ref() {
                        Some(loaded) => acked_by(shared, loaded, relay).unwrap_or_default(),
                        None => Vec::new(),
                    };
                    states
                        .entry(doc.clone())
                        .or_insert_with(|| sync_state::resumed(acked))
                }
            };
            let observed = shared.listeners.wants(&doc);
            // This device's kept changes go back into it ([`super::kept`]): into content that
            // was evicted and arrives again, or that is still without some of them.
            let kept_row = match (guard.as_ref(), restoring.as_ref()) {
                (Some(loaded), _) => Some(&loaded.row),
                (None, Some(row)) => Some(row),
                (None, None) => None,
            }
            .filter(|row| row.kept_bytes > 0)
            .map(|row| row.key);
            let automerge = match (guard.as_mut(), fresh.as_mut()) {
                (Some(loaded), _) => &mut loaded.doc,
                (None, Some(fresh)) => fresh,
                (None, None) => unreachable!("a loaded or a fresh document"),
            };
            let before = automerge.get_heads();
            let mut log = if observed {
                PatchLog::active()
            } else {
                PatchLog::inactive()
            };
            let mut carried_changes = false;
            let mut last_heads = None;
            let mut failed = None;
            for message in messages {
                carried_changes |= !message.changes.is_empty();
                last_heads = Some(message.heads.clone());
                let applied = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    automerge.receive_sync_message_log_patches(state, message, &mut log)
                }));
                match applied {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        failed = Some(Error::InvalidChange(e.to_string()));
                        break;
                    }
                    Err(_) => {
                        failed = Some(Error::InvalidChange(
                            "the sync message does not apply to this document".into(),
                        ));
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                // The document may be half changed: reload its durable state; restart the
                // relay's view of it too.
                if let Some(loaded) = guard.as_mut() {
                    loaded.poisoned = true;
                }
                states.remove(&doc);
                release(shared, &doc, slot, guard);
                done.push((doc, Err(e)));
                continue;
            }
            let kept_left =
                kept_row.and_then(|key| merge_kept(shared, &doc, key, automerge, &mut log));
            if let Some((key, left)) = &kept_left {
                writes.push(BatchWrite::Kept(
                    *key,
                    (!left.is_empty()).then(|| left.clone()),
                ));
            }
            let after = automerge.get_heads();
            let changed = after != before;
            let mut pending = Pending {
                doc: doc.clone(),
                slot,
                guard,
                fresh: None,
                before,
                outcome: None,
                event: None,
                carried_changes,
                inserted_bytes: 0,
                restoring,
                kept_left: kept_left.map(|(_, left)| left.len() as u64),
            };
            if changed {
                let heads = Heads::new(after.clone());
                match (pending.guard.as_mut(), fresh) {
                    (Some(loaded), _) => {
                        let chunk = loaded.doc.save_after(&pending.before);
                        let prepared = shared.prepare_update(loaded, chunk, Origin::Remote, at);
                        writes.push(BatchWrite::Update(loaded.row.key, prepared.update));
                        pending.outcome = Some(prepared.outcome);
                        if observed {
                            pending.event = Some(ChangeEvent {
                                doc_id: doc.clone(),
                                origin: ChangeOrigin::Remote,
                                heads: heads.clone(),
                                deleted: model::is_tombstoned(&loaded.doc),
                                patches: listeners::convert_patches(
                                    loaded.doc.make_patches(&mut log),
                                ),
                                devices: listeners::authors(&loaded.doc, &pending.before),
                                // Filled in once the document is committed.
                                conflicts: Vec::new(),
                            });
                        }
                    }
                    (None, Some(fresh)) => {
                        let deleted = model::is_tombstoned(&fresh);
                        let chunk = fresh.save();
                        pending.inserted_bytes = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                        match &pending.restoring {
                            // The whole document as a snapshot clears its eviction.
                            Some(row) => writes.push(BatchWrite::Update(
                                row.key,
                                DocUpdate {
                                    content: ContentWrite::Compact(chunk),
                                    heads: heads.clone(),
                                    deleted,
                                    origin: Origin::Remote,
                                    at,
                                },
                            )),
                            None => writes.push(BatchWrite::Insert(NewDoc {
                                id: doc.clone(),
                                priority: Priority::Normal,
                                chunk,
                                heads: heads.clone(),
                                deleted,
                                origin: Origin::Remote,
                                at,
                            })),
                        }
                        if observed {
                            pending.event = Some(ChangeEvent {
                                doc_id: doc.clone(),
                                origin: ChangeOrigin::Remote,
                                heads: heads.clone(),
                                deleted,
                                patches: listeners::convert_patches(
                                    fresh.diff(&[], heads.as_slice()),
                                ),
                                devices: listeners::authors(&fresh, &[]),
                                conflicts: Vec::new(),
                            });
                        }
                        pending.fresh = Some(fresh);
                    }
                    (None, None) => unreachable!("a loaded or a fresh document"),
                }
            } else {
                pending.fresh = fresh;
            }
            // The relay only ever sends heads it has made durable: they acknowledge.
            if let Some(relay_said) = last_heads {
                let target = match (pending.guard.as_ref(), changed && pending.fresh.is_some()) {
                    (_, true) => Some(match &pending.restoring {
                        Some(row) => AckTarget::Key(row.key),
                        None => AckTarget::LastInserted,
                    }),
                    (Some(loaded), false) => Some(AckTarget::Key(loaded.row.key)),
                    (None, false) => None,
                };
                if let Some(target) = target {
                    let record = match (&target, pending.guard.as_ref(), pending.fresh.as_ref()) {
                        (AckTarget::Key(_), Some(loaded), _) => {
                            shared.ack_record(loaded, relay, &Heads::new(relay_said.clone()))
                        }
                        (_, _, Some(fresh)) => Ok(fresh_ack(fresh, &relay_said)),
                        _ => Ok(None),
                    };
                    match record {
                        Ok(Some(record)) => {
                            writes.push(BatchWrite::Ack(target, relay.to_owned(), record))
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(doc = %doc, error = %e, "could not read acks"),
                    }
                }
                relay_heads.push(relay_said);
            }
            batch.push(pending);
        }
        let committed = if writes.is_empty() {
            Ok(Vec::new())
        } else {
            shared.db.commit_batch(writes)
        };
        let mut inserted = match committed {
            Ok(keys) => keys.into_iter(),
            Err(e) => {
                let message = e.to_string();
                for mut pending in batch {
                    if let Some(loaded) = pending.guard.as_mut() {
                        loaded.poisoned = true;
                    }
                    states.remove(&pending.doc);
                    let doc = pending.doc.clone();
                    release(shared, &doc, pending.slot, pending.guard);
                    done.push((doc, Err(Error::CommitFailed(message.clone()))));
                }
                return done;
            }
        };
        for mut pending in batch {
            let doc = pending.doc.clone();
            let state = states.get_mut(&doc).expect("created above");
            if let (Some(loaded), Some(outcome)) = (pending.guard.as_mut(), pending.outcome.take())
            {
                outcome.finish(&mut loaded.row);
            }
            if let (Some(loaded), Some(left)) = (pending.guard.as_mut(), pending.kept_left) {
                loaded.row.kept_bytes = left;
            }
            if let Some(fresh) = pending.fresh.take() {
                if fresh.get_heads() != pending.before {
                    let deleted = model::is_tombstoned(&fresh);
                    let row = match pending.restoring.take() {
                        Some(row) => DocRow {
                            deleted,
                            snapshot_bytes: pending.inserted_bytes,
                            chunk_count: 0,
                            chunk_bytes: 0,
                            remote_change_at: Some(at),
                            evicted: false,
                            kept_bytes: pending.kept_left.unwrap_or(row.kept_bytes),
                            ..row
                        },
                        None => DocRow {
                            key: inserted.next().expect("one key per insert"),
                            id: doc.clone(),
                            priority: Priority::Normal,
                            deleted,
                            snapshot_bytes: 0,
                            chunk_count: 1,
                            chunk_bytes: pending.inserted_bytes,
                            created_at: at,
                            local_change_at: None,
                            remote_change_at: Some(at),
                            evicted: false,
                            kept_bytes: 0,
                        },
                    };
                    *pending.guard = Some(LoadedDoc {
                        row,
                        doc: fresh,
                        poisoned: false,
                    });
                } else {
                    // Nothing of it arrived yet: answer from the empty document, keep nothing.
                    let reply = next_message(&fresh, state, pending.carried_changes);
                    let complete = holds_their_heads(&fresh, state);
                    release(shared, &doc, pending.slot, pending.guard);
                    done.push((
                        doc,
                        Ok(Received {
                            changed: false,
                            complete,
                            reply,
                        }),
                    ));
                    continue;
                }
            }
            let loaded = pending.guard.as_ref().expect("loaded or inserted");
            let conflicts = shared.note_conflicts(loaded, &pending.before);
            if !conflicts.is_empty() && shared.strategy(&doc).is_some() {
                to_resolve.push(doc.clone());
            }
            if let Some(mut event) = pending.event.take() {
                event.conflicts = conflicts;
                shared.listeners.publish(event);
            }
            let heads = Heads::new(loaded.doc.get_heads());
            let changed = heads.as_slice() != pending.before.as_slice();
            let reply = next_message(&loaded.doc, state, pending.carried_changes);
            let complete = holds_their_heads(&loaded.doc, state);
            release(shared, &doc, pending.slot, pending.guard);
            done.push((
                doc,
                Ok(Received {
                    changed,
                    complete,
                    reply,
                }),
            ));
        }
        // Resolved once every lock is released: a resolution is an ordinary local write.
        drop(inside);
        for doc in to_resolve {
            if let Some(strategy) = shared.strategy(&doc)
                && let Err(e) = shared.resolve_conflicts(&doc, &strategy)
            {
                tracing::warn!(doc = %doc, error = %e, "could not resolve conflicts");
            }
        }
        done
    }

    fn generate(
        &self,
        relay: &str,
        docs: &[DocId],
        states: &mut HashMap<DocId, State>,
    ) -> Vec<(DocId, Result<Option<Outgoing>>)> {
        let shared = self.shared();
        docs.iter()
            .map(|doc| {
                let result = shared.with_doc(doc, |loaded| {
                    if !states.contains_key(doc) {
                        let acked = acked_by(shared, loaded, relay)?;
                        states.insert(doc.clone(), sync_state::primed(acked));
                    }
                    let state = states.get_mut(doc).expect("inserted above");
                    Ok(next_message(&loaded.doc, state, false))
                });
                (doc.clone(), result)
            })
            .collect()
    }

    fn acknowledge(
        &self,
        relay: &str,
        acks: &[(DocId, Heads)],
        positions: &[Cursor],
    ) -> Result<Vec<(DocId, Heads)>> {
        let shared = self.shared();
        let mut writes: Vec<BatchWrite> = positions
            .iter()
            .map(|p| BatchWrite::AckedPosition(relay.to_owned(), p.clone()))
            .collect();
        let mut current = Vec::new();
        for (doc, heads) in acks {
            let recorded = shared.with_doc(doc, |loaded| {
                let record = shared.ack_record(loaded, relay, heads)?;
                Ok((loaded.row.key, record, Heads::new(loaded.doc.get_heads())))
            });
            match recorded {
                Ok((key, record, now)) => {
                    if let Some(record) = record {
                        writes.push(BatchWrite::Ack(
                            AckTarget::Key(key),
                            relay.to_owned(),
                            record,
                        ));
                    }
                    current.push((doc.clone(), now));
                }
                Err(Error::NotFound(_) | Error::Evicted(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if !writes.is_empty() {
            shared.db.commit_batch(writes)?;
        }
        Ok(current)
    }

    fn set_cursors(&self, relay: &str, cursors: &[Cursor]) -> Result<()> {
        if cursors.is_empty() {
            return Ok(());
        }
        let writes = cursors
            .iter()
            .map(|c| BatchWrite::Cursor(relay.to_owned(), c.clone()))
            .collect();
        self.shared().db.commit_batch(writes).map(|_| ())
    }

    fn positions(&self, relay: &str) -> Result<Positions> {
        let db = &self.shared().db;
        Ok(Positions {
            cursors: db.cursors(relay)?,
            acked: db.acked_positions(relay)?,
        })
    }

    fn forget_positions(&self, relay: &str, collections: &[Collection]) -> Result<()> {
        if collections.is_empty() {
            return Ok(());
        }
        self.shared().db.forget_relay_positions(relay, collections)
    }

    fn record_sync(&self, record: SyncRecord) -> Result<()> {
        self.shared()
            .db
            .commit_batch(vec![BatchWrite::SyncRecord(Box::new(record))])
            .map(|_| ())
    }

    fn unacknowledged(&self, relay: &str, collection: &Collection) -> Result<Vec<DocId>> {
        Ok(self
            .shared()
            .db
            .unacknowledged(relay, collection)?
            .into_iter()
            .map(|(doc, _)| doc)
            .collect())
    }

    fn held(&self, collection: &Collection) -> Result<Vec<DocId>> {
        Ok(self
            .shared()
            .db
            .list(collection)?
            .into_iter()
            .filter(|row| !row.evicted)
            .map(|row| row.id)
            .collect())
    }

    fn priority(&self, doc: &DocId) -> Priority {
        self.info(doc)
            .map_or(Priority::Normal, |info| info.priority)
    }

    fn defer(&self, relay: &str, entries: &[DeferredDoc]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let writes = entries
            .iter()
            .map(|d| BatchWrite::Defer(relay.to_owned(), d.clone()))
            .collect();
        self.shared().db.commit_batch(writes).map(|_| ())
    }

    fn undefer(&self, relay: &str, docs: &[DocId]) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let writes = docs
            .iter()
            .map(|d| BatchWrite::Undefer(relay.to_owned(), d.clone()))
            .collect();
        self.shared().db.commit_batch(writes).map(|_| ())
    }

    fn kept_unacknowledged(&self, relay: &str) -> Result<Vec<DocId>> {
        Ok(self
            .shared()
            .db
            .kept_unacknowledged(relay)?
            .into_iter()
            .map(|row| row.id)
            .collect())
    }

    fn restore_kept(&self, doc: &DocId, now_ms: u64) -> Result<bool> {
        let shared = self.shared();
        let _inside = InsideDocument::enter()?;
        let slot = shared.cache.slot(doc);
        let mut guard = slot.lock_arc();
        let restored = restore_kept(shared, doc, now_ms);
        if let Ok(Some((loaded, event))) = restored {
            *guard = Some(loaded);
            release(shared, doc, slot, guard);
            if shared.listeners.wants(doc) {
                shared.listeners.publish(event);
            }
            return Ok(true);
        }
        release(shared, doc, slot, guard);
        restored.map(|_| false)
    }

    fn deferred(&self, relay: &str) -> Result<Vec<DeferredDoc>> {
        self.shared().db.deferred(Some(relay))
    }

    fn enforce_budget(
        &self,
        relay: &str,
        budget: u64,
        evictable: &[Collection],
        keep: &HashSet<DocId>,
        now_ms: u64,
    ) -> Result<super::BudgetOutcome> {
        Store::enforce_budget(self, relay, budget, evictable, keep, now_ms)
    }
}

/// The heads `relay` has acknowledged for a loaded document (empty if none).
fn acked_by(shared: &super::Shared, loaded: &LoadedDoc, relay: &str) -> Result<Vec<ChangeHash>> {
    Ok(shared
        .db
        .acked_heads(loaded.row.key)?
        .into_iter()
        .find(|(r, _)| r == relay)
        .map(|(_, heads)| heads.as_slice().to_vec())
        .unwrap_or_default())
}

/// The acknowledgement of a document created from the relay's message: its exact heads when
/// the relay holds all of them.
fn fresh_ack(doc: &Automerge, relay_heads: &[ChangeHash]) -> Option<Heads> {
    let ours = doc.get_heads();
    ours.iter()
        .all(|h| relay_heads.contains(h))
        .then(|| Heads::new(ours))
}

pub(super) fn release(
    shared: &super::Shared,
    doc: &DocId,
    slot: Arc<Mutex<Option<LoadedDoc>>>,
    mut guard: SlotGuard,
) {
    if guard.as_ref().is_some_and(|l| l.poisoned) {
        *guard = None;
    }
    let bytes = guard.as_ref().map_or(0, LoadedDoc::estimated_bytes);
    drop(guard);
    shared.cache.resize(doc, slot, bytes);
    if bytes == 0 {
        shared.cache.discard_if_idle(doc);
    }
}

/// Applies the kept changes of `doc` (row `key`) to `automerge`; the kept changes still to
/// apply afterwards, if any applied (`None`: none did, or they could not be read, which is
/// logged and leaves them kept).
fn merge_kept(
    shared: &Shared,
    doc: &DocId,
    key: DocKey,
    automerge: &mut Automerge,
    log: &mut PatchLog,
) -> Option<(DocKey, Vec<u8>)> {
    let kept = match shared.db.kept_changes(key) {
        Ok(Some(kept)) => kept,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(%doc, error = %e, "could not read the changes kept at eviction");
            return None;
        }
    };
    match kept::merge(automerge, &kept, log) {
        Ok(left) if left.len() < kept.len() => {
            tracing::info!(%doc, left = left.len(), "this device's kept changes went back into it");
            Some((key, left))
        }
        Ok(_) => None,
        Err(reason) => {
            tracing::error!(%doc, %reason, "the changes kept at eviction do not apply; they stay kept");
            None
        }
    }
}

/// The document `doc` made again from the own changes kept at its eviction, written in place
/// of its evicted content, with its change event; `None` if it is not evicted, has no kept
/// changes, or none of them applies without other devices' changes. The caller holds its slot.
fn restore_kept(
    shared: &Shared,
    doc: &DocId,
    now_ms: u64,
) -> Result<Option<(LoadedDoc, ChangeEvent)>> {
    let Some(row) = shared.db.lookup(doc)? else {
        return Ok(None);
    };
    if !row.evicted || row.kept_bytes == 0 {
        return Ok(None);
    }
    let Some(kept) = shared.db.kept_changes(row.key)? else {
        return Ok(None);
    };
    let mut restored = Automerge::new().with_actor(shared.actor.clone());
    let left = kept::merge(&mut restored, &kept, &mut PatchLog::inactive()).map_err(|reason| {
        Error::CorruptDocument {
            doc: doc.clone(),
            reason,
        }
    })?;
    let heads = restored.get_heads();
    // Only whole: with some kept changes left out, a local change would reuse their sequence
    // numbers. It stays evicted until the other devices' changes they need are back.
    if heads.is_empty() || !left.is_empty() {
        return Ok(None);
    }
    let at = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let snapshot = restored.save();
    let deleted = model::is_tombstoned(&restored);
    let kept_left = left.len() as u64;
    shared.db.commit_batch(vec![
        BatchWrite::Update(
            row.key,
            DocUpdate {
                content: ContentWrite::Compact(snapshot.clone()),
                heads: Heads::new(heads.clone()),
                deleted,
                origin: Origin::Remote,
                at,
            },
        ),
        BatchWrite::Kept(row.key, (!left.is_empty()).then_some(left)),
    ])?;
    tracing::info!(%doc, "restored from this device's kept changes: the relay holds nothing of it");
    let event = ChangeEvent {
        doc_id: doc.clone(),
        origin: ChangeOrigin::Remote,
        heads: Heads::new(heads.clone()),
        deleted,
        patches: listeners::convert_patches(restored.diff(&[], &heads)),
        devices: listeners::authors(&restored, &[]),
        conflicts: Vec::new(),
    };
    let row = DocRow {
        deleted,
        snapshot_bytes: snapshot.len() as u64,
        chunk_count: 0,
        chunk_bytes: 0,
        remote_change_at: Some(at),
        evicted: false,
        kept_bytes: kept_left,
        ..row
    };
    Ok(Some((
        LoadedDoc {
            row,
            doc: restored,
            poisoned: false,
        },
        event,
    )))
}
