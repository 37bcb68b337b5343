//! `MemorySyncStore`: the sync engine's port ([`SyncStore`]) in memory, with no SQLite and no
//! files, so the engine can be driven against the relay core by tests that need neither.
//!
//! It keeps one Automerge document per `DocId`, the heads each relay acknowledged and the
//! cursors, and follows the port's contract the way the SQLite store does: states are primed
//! or resumed from the acknowledged heads, an acknowledgement never moves backwards, a
//! document that does not apply (an error or a panic in Automerge) is restored to what it was
//! and answers [`Error::InvalidChange`], and a document first heard of is kept only once
//! something of it arrived. Unlike the SQLite store it keeps each relay's acknowledgements
//! apart (it never records a document's heads as acknowledged because several relays
//! together cover them). The app side is `put` (one change setting a string key) and the read helpers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use automerge::sync::{Message as SyncMessage, State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ChangeHash, ReadDoc, ScalarValue, Value};
use syncline::engine::{
    Outgoing, Positions, Received, SyncStore, acknowledgement, holds_their_heads, next_message,
};
use syncline::{
    BudgetOutcome, Collection, DeferredDoc, DeviceId, DocId, Error, Heads, Priority, Result,
};
use syncline_protocol::messages::Cursor;
use syncline_protocol::sync_state;

/// The engine's port in memory; see the module documentation.
#[derive(Debug)]
pub struct MemorySyncStore {
    device: DeviceId,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    docs: BTreeMap<DocId, Automerge>,
    /// Per relay and document, the heads the relay acknowledged.
    acks: HashMap<(String, DocId), Vec<ChangeHash>>,
    /// Per relay and collection, the cursor synced to, with its epoch and receipt.
    cursors: HashMap<String, BTreeMap<Collection, Cursor>>,
    /// Per relay and collection, the highest acknowledged position, with its epoch and
    /// receipt.
    acked: HashMap<String, BTreeMap<Collection, Cursor>>,
    /// Per document, the `now_ms` of the last batch that changed it.
    received_at: HashMap<DocId, u64>,
    /// Per relay, the documents it announced and held back.
    deferred: HashMap<String, BTreeMap<DocId, DeferredDoc>>,
    /// The history of syncs, oldest first (the last `KEPT_SYNC_RECORDS`).
    history: std::collections::VecDeque<syncline::SyncRecord>,
    /// Per evicted document, this device's own changes to it not yet back in it (as the
    /// SQLite store keeps them).
    kept: BTreeMap<DocId, Vec<automerge::Change>>,
}

impl Inner {
    /// Applies the kept changes of `doc` to `automerge`, keeping those that still do not
    /// apply (they wait on other devices' changes).
    fn merge_kept(&mut self, doc: &DocId, automerge: &mut Automerge) -> Result<()> {
        let Some(kept) = self.kept.remove(doc) else {
            return Ok(());
        };
        let missing: Vec<automerge::Change> = kept
            .into_iter()
            .filter(|c| automerge.get_change_by_hash(&c.hash()).is_none())
            .collect();
        automerge.apply_changes(missing.clone())?;
        let left: Vec<automerge::Change> = missing
            .into_iter()
            .filter(|c| automerge.get_change_by_hash(&c.hash()).is_none())
            .collect();
        if !left.is_empty() {
            self.kept.insert(doc.clone(), left);
        }
        Ok(())
    }
}

impl MemorySyncStore {
    /// An empty store of `device` (its Automerge actor id).
    pub fn new(device: DeviceId) -> Self {
        Self {
            device,
            inner: Mutex::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets `key` to `value` in `doc` (created if missing) as one change by this device, at
    /// `time_s` (Automerge's change time, seconds). Returns the new heads.
    ///
    /// # Errors
    /// Automerge refused the write.
    pub fn put(&self, doc: &DocId, key: &str, value: &str, time_s: i64) -> Result<Heads> {
        let mut inner = self.inner();
        let actor = ActorId::from(self.device.as_bytes().as_slice());
        let automerge = inner
            .docs
            .entry(doc.clone())
            .or_insert_with(|| Automerge::new().with_actor(actor));
        let mut tx = automerge.transaction();
        tx.put(automerge::ROOT, key, value)?;
        tx.commit_with(automerge::transaction::CommitOptions::default().with_time(time_s));
        Ok(Heads::new(automerge.get_heads()))
    }

    /// The string at `key` of `doc`, if both exist.
    pub fn get(&self, doc: &DocId, key: &str) -> Option<String> {
        let inner = self.inner();
        let automerge = inner.docs.get(doc)?;
        match automerge.get(automerge::ROOT, key).ok()?? {
            (Value::Scalar(s), _) => match s.as_ref() {
                ScalarValue::Str(s) => Some(s.to_string()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The heads of `doc` (empty when it is unknown).
    pub fn heads(&self, doc: &DocId) -> Heads {
        Heads::new(
            self.inner()
                .docs
                .get(doc)
                .map(Automerge::get_heads)
                .unwrap_or_default(),
        )
    }

    /// Every document held.
    pub fn documents(&self) -> Vec<DocId> {
        self.inner().docs.keys().cloned().collect()
    }

    /// The `now_ms` stamped when sync last changed `doc`.
    pub fn received_at(&self, doc: &DocId) -> Option<u64> {
        self.inner().received_at.get(doc).copied()
    }
}

impl Inner {
    fn acked(&self, relay: &str, doc: &DocId) -> Vec<ChangeHash> {
        self.acks
            .get(&(relay.to_owned(), doc.clone()))
            .cloned()
            .unwrap_or_default()
    }

    /// Records that `relay` holds `heads` of `doc`, by the rule every store follows
    /// ([`acknowledgement`]); this store keeps each relay's record apart.
    fn record_ack(&mut self, relay: &str, doc: &DocId, heads: &[ChangeHash]) {
        let Some(automerge) = self.docs.get(doc) else {
            return;
        };
        let key = (relay.to_owned(), doc.clone());
        let previous = self.acks.get(&key).map(Vec::as_slice);
        if let Some(record) = acknowledgement(automerge, heads, previous, []) {
            self.acks.insert(key, record.as_slice().to_vec());
        }
    }
}

/// Moves a position forward (never back), keeping the epoch and receipt of the highest
/// sequence number.
fn advance(stored: &mut BTreeMap<Collection, Cursor>, position: &Cursor) {
    match stored.get(&position.collection) {
        Some(old) if old.seq > position.seq => {}
        _ => {
            stored.insert(position.collection.clone(), position.clone());
        }
    }
}

impl SyncStore for MemorySyncStore {
    fn receive(
        &self,
        relay: &str,
        items: Vec<(DocId, SyncMessage)>,
        states: &mut HashMap<DocId, State>,
        now_ms: u64,
    ) -> Vec<(DocId, Result<Received>)> {
        let mut grouped: BTreeMap<DocId, Vec<SyncMessage>> = BTreeMap::new();
        for (doc, message) in items {
            grouped.entry(doc).or_default().push(message);
        }
        let mut inner = self.inner();
        let actor = ActorId::from(self.device.as_bytes().as_slice());
        let mut done = Vec::new();
        for (doc, messages) in grouped {
            let known = inner.docs.contains_key(&doc);
            let acked = inner.acked(relay, &doc);
            let state = states
                .entry(doc.clone())
                .or_insert_with(|| sync_state::resumed(acked));
            let mut automerge = inner
                .docs
                .get(&doc)
                .cloned()
                .unwrap_or_else(|| Automerge::new().with_actor(actor.clone()));
            let before = automerge.get_heads();
            let mut carried = false;
            let mut last_heads = None;
            let mut failed = None;
            for message in messages {
                carried |= !message.changes.is_empty();
                last_heads = Some(message.heads.clone());
                // Automerge may panic on a hostile message: that is this document's error.
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    automerge.receive_sync_message(state, message)
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
                // The copy is dropped: the stored document is what it was.
                states.remove(&doc);
                done.push((doc, Err(e)));
                continue;
            }
            if let Err(e) = inner.merge_kept(&doc, &mut automerge) {
                done.push((doc, Err(e)));
                continue;
            }
            let changed = automerge.get_heads() != before;
            if changed {
                inner.received_at.insert(doc.clone(), now_ms);
            }
            let reply = next_message(&automerge, state, carried);
            let complete = holds_their_heads(&automerge, state);
            if known || changed {
                // A document first heard of is acknowledged only once the relay holds all of
                // it, as the SQLite store does.
                let covered = last_heads.as_ref().is_some_and(|relay_heads| {
                    automerge
                        .get_heads()
                        .iter()
                        .all(|h| relay_heads.contains(h))
                });
                inner.docs.insert(doc.clone(), automerge);
                if let Some(heads) = last_heads
                    && (known || covered)
                {
                    inner.record_ack(relay, &doc, &heads);
                }
            }
            done.push((
                doc,
                Ok(Received {
                    changed,
                    complete,
                    reply,
                }),
            ));
        }
        done
    }

    fn generate(
        &self,
        relay: &str,
        docs: &[DocId],
        states: &mut HashMap<DocId, State>,
    ) -> Vec<(DocId, Result<Option<Outgoing>>)> {
        let inner = self.inner();
        docs.iter()
            .map(|doc| {
                let Some(automerge) = inner.docs.get(doc) else {
                    return (doc.clone(), Err(Error::NotFound(doc.clone())));
                };
                let state = states
                    .entry(doc.clone())
                    .or_insert_with(|| sync_state::primed(inner.acked(relay, doc)));
                (doc.clone(), Ok(next_message(automerge, state, false)))
            })
            .collect()
    }

    fn acknowledge(
        &self,
        relay: &str,
        acks: &[(DocId, Heads)],
        positions: &[Cursor],
    ) -> Result<Vec<(DocId, Heads)>> {
        let mut inner = self.inner();
        let stored = inner.acked.entry(relay.to_owned()).or_default();
        for p in positions {
            advance(stored, p);
        }
        let mut current = Vec::new();
        for (doc, heads) in acks {
            if !inner.docs.contains_key(doc) {
                continue;
            }
            inner.record_ack(relay, doc, heads.as_slice());
            let now = inner
                .docs
                .get(doc)
                .map(Automerge::get_heads)
                .unwrap_or_default();
            current.push((doc.clone(), Heads::new(now)));
        }
        Ok(current)
    }

    fn set_cursors(&self, relay: &str, cursors: &[Cursor]) -> Result<()> {
        let mut inner = self.inner();
        let stored = inner.cursors.entry(relay.to_owned()).or_default();
        for cursor in cursors {
            advance(stored, cursor);
        }
        Ok(())
    }

    fn positions(&self, relay: &str) -> Result<Positions> {
        let inner = self.inner();
        let listed = |map: &HashMap<String, BTreeMap<Collection, Cursor>>| {
            map.get(relay)
                .map(|c| c.values().cloned().collect())
                .unwrap_or_default()
        };
        Ok(Positions {
            cursors: listed(&inner.cursors),
            acked: listed(&inner.acked),
        })
    }

    fn record_sync(&self, record: syncline::SyncRecord) -> Result<()> {
        let mut inner = self.inner();
        inner.history.push_back(record);
        while inner.history.len() > syncline::KEPT_SYNC_RECORDS {
            inner.history.pop_front();
        }
        Ok(())
    }

    fn forget_positions(&self, relay: &str, collections: &[Collection]) -> Result<()> {
        let mut guard = self.inner();
        let inner = &mut *guard;
        for map in [&mut inner.cursors, &mut inner.acked] {
            if let Some(stored) = map.get_mut(relay) {
                stored.retain(|c, _| !collections.contains(c));
            }
        }
        inner
            .acks
            .retain(|(r, doc), _| r != relay || !collections.contains(doc.collection()));
        Ok(())
    }

    fn unacknowledged(&self, relay: &str, collection: &Collection) -> Result<Vec<DocId>> {
        let inner = self.inner();
        Ok(inner
            .docs
            .iter()
            .filter(|(doc, automerge)| {
                doc.collection() == collection && {
                    let mut acked = inner.acked(relay, doc);
                    let mut heads = automerge.get_heads();
                    acked.sort();
                    heads.sort();
                    acked != heads
                }
            })
            .map(|(doc, _)| doc.clone())
            .collect())
    }

    fn held(&self, collection: &Collection) -> Result<Vec<DocId>> {
        Ok(self
            .inner()
            .docs
            .keys()
            .filter(|doc| doc.collection() == collection)
            .cloned()
            .collect())
    }

    fn priority(&self, _doc: &DocId) -> Priority {
        Priority::Normal
    }

    fn defer(&self, relay: &str, entries: &[DeferredDoc]) -> Result<()> {
        let mut inner = self.inner();
        let deferred = inner.deferred.entry(relay.to_owned()).or_default();
        for entry in entries {
            deferred.insert(entry.doc.clone(), entry.clone());
        }
        Ok(())
    }

    fn undefer(&self, relay: &str, docs: &[DocId]) -> Result<()> {
        if let Some(deferred) = self.inner().deferred.get_mut(relay) {
            for doc in docs {
                deferred.remove(doc);
            }
        }
        Ok(())
    }

    fn enforce_budget(
        &self,
        relay: &str,
        budget: u64,
        evictable: &[Collection],
        keep: &std::collections::HashSet<DocId>,
        now_ms: u64,
    ) -> Result<BudgetOutcome> {
        let mut inner = self.inner();
        let size = |doc: &Automerge| doc.save().len() as u64;
        let mut content: u64 = inner.docs.values().map(size).sum();
        let mut candidates: Vec<(u64, DocId)> = inner
            .docs
            .iter()
            .filter(|(id, doc)| {
                evictable.contains(id.collection()) && !keep.contains(*id) && {
                    let mut acked = inner.acked(relay, id);
                    let mut heads = doc.get_heads();
                    acked.sort();
                    heads.sort();
                    acked == heads
                }
            })
            .map(|(id, _)| (inner.received_at.get(id).copied().unwrap_or(0), id.clone()))
            .collect();
        // Least recently changed first.
        candidates.sort();
        let mut outcome = BudgetOutcome::default();
        for (_, id) in candidates {
            if content <= budget {
                break;
            }
            let Some(doc) = inner.docs.remove(&id) else {
                continue;
            };
            let actor = ActorId::from(self.device.as_bytes().as_slice());
            let own: Vec<automerge::Change> = doc
                .get_changes(&[])
                .into_iter()
                .filter(|c| c.actor_id() == &actor)
                .collect();
            if !own.is_empty() {
                inner.kept.insert(id.clone(), own);
            }
            let bytes = size(&doc);
            content = content.saturating_sub(bytes);
            let deferred = DeferredDoc {
                doc: id.clone(),
                priority: Priority::Normal,
                bytes,
                reason: syncline::DeferReason::StorageBudget,
                announced_at_ms: now_ms,
                changed_ms: None,
            };
            inner
                .deferred
                .entry(relay.to_owned())
                .or_default()
                .insert(id, deferred.clone());
            outcome.evicted.push(deferred);
        }
        outcome.content_bytes = content;
        outcome.over_budget_bytes = content.saturating_sub(budget);
        Ok(outcome)
    }

    fn kept_unacknowledged(&self, relay: &str) -> Result<Vec<DocId>> {
        let inner = self.inner();
        Ok(inner
            .kept
            .keys()
            .filter(|doc| {
                !inner.docs.contains_key(*doc)
                    && !inner.acks.contains_key(&(relay.to_owned(), (*doc).clone()))
            })
            .cloned()
            .collect())
    }

    fn restore_kept(&self, doc: &DocId, now_ms: u64) -> Result<bool> {
        let mut inner = self.inner();
        if inner.docs.contains_key(doc) || !inner.kept.contains_key(doc) {
            return Ok(false);
        }
        let actor = ActorId::from(self.device.as_bytes().as_slice());
        let mut automerge = Automerge::new().with_actor(actor);
        let kept = inner.kept.get(doc).cloned().unwrap_or_default();
        automerge.apply_changes(kept.clone())?;
        // Only whole, as the SQLite store: a local change must not reuse a kept change's seq.
        if automerge.get_heads().is_empty()
            || kept
                .iter()
                .any(|c| automerge.get_change_by_hash(&c.hash()).is_none())
        {
            return Ok(false);
        }
        inner.kept.remove(doc);
        inner.docs.insert(doc.clone(), automerge);
        inner.received_at.insert(doc.clone(), now_ms);
        for deferred in inner.deferred.values_mut() {
            deferred.remove(doc);
        }
        Ok(true)
    }

    fn deferred(&self, relay: &str) -> Result<Vec<DeferredDoc>> {
        let mut out: Vec<DeferredDoc> = self
            .inner()
            .deferred
            .get(relay)
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(b.announced_at_ms.cmp(&a.announced_at_ms))
        });
        Ok(out)
    }
}
