//! Group commit on the relay: the `Sync` frames of many sessions that were queued together are
//! applied to the change graphs and appended in **one** storage transaction per tenant
//! ([`Hub::sync_group`]); only then are acknowledgements, replies and fan-out produced. A
//! tenant whose commit failed acknowledges nothing, and its changed documents are dropped from
//! memory (`SyncGroup::failed`), so memory never runs ahead of storage.

use std::collections::{BTreeMap, HashMap, HashSet};

use automerge::sync::Message as SyncMessage;
use syncline_protocol::messages::{Ack, AckItem, Cursor, Error, ErrorCode, SyncItem};
use syncline_protocol::payload::Budget;
use syncline_protocol::{DocId, Message};

use super::{
    Delivery, FOREIGN_RETRY_MS, GraphError, Hub, HubError, Lane, MAX_SESSION_STATE_BYTES,
    STORAGE_FULL_RETRY_MS, SessionId, SyncGroup, error, push_batches, responder, wire_heads,
};
use crate::storage::{Append, Storage, StorageError};
use crate::tenant::Tenant;

/// The documents a group commit touched before this frame, and those this frame touched,
/// each with its change count at the first touch.
pub(super) struct Touched<'a> {
    group: &'a [(DocId, usize)],
    frame: &'a mut Vec<(DocId, usize)>,
}

/// How many times a group commit appends again without the documents another relay changed
/// meanwhile ([`StorageError::Conflict`]) before it gives up on the tenant's group.
const MAX_CONFLICT_RETRIES: usize = 4;

/// How long a device waits before it sends again a change refused because another relay
/// changed the document meanwhile (the relay has reloaded it by then).
pub const CONFLICT_RETRY_MS: u64 = 100;

impl<S: Storage> Hub<S> {
    /// Group commit across sessions: applies the `Sync` frames of several sessions, appends
    /// everything they changed in one storage transaction per tenant, then sends each session
    /// its replies and acknowledgements and fans the changes out. Concurrent writers then share
    /// an fsync instead of queueing for one each.
    ///
    /// Memory never runs ahead of storage: every document changed in memory is either in a
    /// committed batch or evicted (to be reloaded from storage). Nothing after a commit can
    /// abort the acknowledgements, replies and fan-out of what was committed. A session whose
    /// tenant's commit failed, or one of whose documents had to be evicted, is in
    /// [`SyncGroup::failed`] and is sent an `INTERNAL` error instead of (a complete)
    /// acknowledgement, so its client reconnects and resends.
    pub fn sync_group(
        &mut self,
        frames: Vec<(SessionId, Vec<SyncItem>)>,
        now_ms: u64,
    ) -> SyncGroup {
        self.tick(now_ms);
        let mut group = SyncGroup::default();
        // Per tenant, each document's change count before the group first touched it.
        let mut before: BTreeMap<Tenant, Vec<(DocId, usize)>> = BTreeMap::new();
        // Per session: its tenant, the documents it touched, those whose items carried
        // changes (acknowledged even when already stored: a resend after a cut).
        let mut sessions: Vec<(SessionId, Tenant, Vec<DocId>, Vec<DocId>)> = Vec::new();
        let mut broken: BTreeMap<Tenant, String> = BTreeMap::new();
        for (id, items) in frames {
            let Some(peer) = self.peers.get(&id) else {
                continue;
            };
            let tenant = peer.tenant.clone();
            let mut first_seen = Vec::new();
            let mut carried = Vec::new();
            let applied = self.apply_items(
                id,
                &tenant,
                items,
                Touched {
                    group: before.get(&tenant).map_or(&[][..], Vec::as_slice),
                    frame: &mut first_seen,
                },
                &mut carried,
                &mut group.deliveries,
            );
            let seen = before.entry(tenant.clone()).or_default();
            let touched: Vec<DocId> = first_seen.iter().map(|(doc, _)| doc.clone()).collect();
            for (doc, len) in first_seen {
                if !seen.iter().any(|(d, _)| *d == doc) {
                    seen.push((doc, len));
                }
            }
            if let Err(e) = applied {
                // A storage read failed: nothing of this tenant's group is committed.
                broken
                    .entry(tenant.clone())
                    .or_insert_with(|| e.to_string());
            }
            sessions.push((id, tenant, touched, carried));
        }
        let mut changed: BTreeMap<Tenant, Vec<DocId>> = BTreeMap::new();
        let mut seqs: HashMap<(Tenant, DocId), u64> = HashMap::new();
        // Per tenant whose storage was full, the documents whose changes were not stored.
        let mut unstored: HashMap<Tenant, HashSet<DocId>> = HashMap::new();
        // Per tenant, the documents another relay sharing the storage changed since this one
        // loaded them: their changes were not stored (see `StorageError::Conflict`).
        let mut stale: HashMap<Tenant, HashSet<DocId>> = HashMap::new();
        for (tenant, docs) in &before {
            if broken.contains_key(tenant) {
                self.evict(tenant, docs.iter().map(|(doc, _)| doc));
                continue;
            }
            let mut appends = Vec::new();
            for (doc_id, len_before) in docs {
                // Absent: evicted after a failed read; its durable state is what counts.
                let Some(doc) = self.docs.peek(&(tenant.clone(), doc_id.clone())) else {
                    continue;
                };
                if doc.len() != *len_before {
                    appends.push(Append {
                        doc: doc_id.clone(),
                        chunk: doc.raw_since(*len_before),
                        heads: wire_heads(&doc.heads()),
                        priority: doc.priority(),
                        at_ms: now_ms,
                        base_seq: Some(doc.stored_seq()),
                    });
                }
            }
            // A round trip that stored nothing costs no transaction.
            if appends.is_empty() {
                continue;
            }
            // Documents another relay sharing the storage changed since this one loaded them:
            // dropped from memory (reloaded on next use) and left out of the append; the
            // sessions that changed them are not acknowledged and send again.
            let mut appended = self.storage.append(tenant, &appends);
            for _ in 0..MAX_CONFLICT_RETRIES {
                let Err(StorageError::Conflict { docs: moved }) = &appended else {
                    break;
                };
                tracing::debug!(%tenant, documents = moved.len(), "documents changed through another relay: reloaded, their changes refused for now");
                self.evict(tenant, moved.iter());
                appends.retain(|a| !moved.contains(&a.doc));
                stale
                    .entry(tenant.clone())
                    .or_default()
                    .extend(moved.iter().cloned());
                if appends.is_empty() {
                    break;
                }
                appended = self.storage.append(tenant, &appends);
            }
            if appends.is_empty() {
                continue;
            }
            match appended {
                Ok(stored) => {
                    for (append, seq) in appends.iter().zip(&stored) {
                        let key = (tenant.clone(), append.doc.clone());
                        if let Some(doc) = self.docs.peek_mut(&key) {
                            doc.set_stored_seq(*seq);
                            // Fanned out to this relay's sessions below.
                            doc.set_announced_seq(*seq);
                        }
                        seqs.insert(key, *seq);
                    }
                    self.own_commits(tenant, &appends, &stored);
                    changed.insert(tenant.clone(), appends.into_iter().map(|a| a.doc).collect());
                }
                Err(e) if e.is_full() => {
                    // Only these documents ran ahead of storage; everything else of the group
                    // (reads included) goes on.
                    let lost: HashSet<DocId> = appends.into_iter().map(|a| a.doc).collect();
                    self.evict(tenant, lost.iter());
                    self.storage_full += 1;
                    tracing::warn!(%tenant, documents = lost.len(), "storage is full: changes refused until there is room");
                    unstored.insert(tenant.clone(), lost);
                }
                Err(e) => {
                    self.evict(tenant, docs.iter().map(|(doc, _)| doc));
                    broken.insert(tenant.clone(), e.to_string());
                }
            }
        }
        // Per tenant and document, the sessions whose frames touched it (they had replies).
        let mut senders: HashMap<Tenant, HashMap<DocId, Vec<SessionId>>> = HashMap::new();
        for (id, tenant, mut touched, mut carried) in sessions {
            if let Some(reason) = broken.get(&tenant) {
                group.failed.push((id, HubError::Failed(reason.clone())));
                group.deliveries.push(Delivery::internal(
                    id,
                    "the relay could not store this; reconnect and resend",
                ));
                continue;
            }
            if let Some(lost) = unstored.get(&tenant) {
                // The changes this session brought and the relay could not store: refused,
                // to be sent again; its sync state of them (which counted them) starts afresh.
                for doc in carried.iter().filter(|doc| lost.contains(*doc)) {
                    self.forget_doc(id, doc);
                    group.deliveries.push(Delivery::live(
                        id,
                        Message::Error(Error {
                            code: ErrorCode::STORAGE_FULL,
                            message: "the relay's storage is full; send this again later".into(),
                            retry_after_ms: Some(STORAGE_FULL_RETRY_MS),
                            doc: Some(doc.clone()),
                            collection: None,
                        }),
                    ));
                }
                let refused: HashSet<DocId> =
                    carried.extract_if(.., |doc| lost.contains(doc)).collect();
                touched.retain(|doc| !refused.contains(doc));
            }
            if let Some(moved) = stale.get(&tenant) {
                // The changes this session brought to a document another relay changed
                // meanwhile: refused for now, to be sent again at once from a fresh sync
                // state (the relay has reloaded the document); the rest of the frame goes on.
                for doc in carried.iter().filter(|doc| moved.contains(*doc)) {
                    self.forget_doc(id, doc);
                    group.deliveries.push(Delivery::live(
                        id,
                        Message::Error(Error {
                            code: ErrorCode::INTERNAL,
                            message: "changed through another relay meanwhile; send this again"
                                .into(),
                            retry_after_ms: Some(CONFLICT_RETRY_MS),
                            doc: Some(doc.clone()),
                            collection: None,
                        }),
                    ));
                }
                let refused: HashSet<DocId> =
                    carried.extract_if(.., |doc| moved.contains(doc)).collect();
                touched.retain(|doc| !refused.contains(doc));
            }
            let touched_by = senders.entry(tenant.clone()).or_default();
            for doc in &touched {
                touched_by.entry(doc.clone()).or_default().push(id);
            }
            // Replies go before the acknowledgement: a client that has its Ack has also had
            // everything the relay answered to that frame.
            let replies = self.outgoing_logged(id, &touched);
            push_batches(&mut group.deliveries, id, replies, Lane::Live);
            let carried: Vec<DocId> = carried
                .into_iter()
                .filter(|doc| touched.contains(doc))
                .collect();
            if carried.is_empty() {
                continue;
            }
            let acks = self.acks(&tenant, &carried, &seqs);
            if acks.len() < carried.len() {
                // A document this session changed was evicted (another session's item for it
                // failed): its changes may not be stored, so nothing of the frame is acked.
                group.failed.push((
                    id,
                    HubError::Failed("a document of the frame was reloaded".into()),
                ));
                group.deliveries.push(Delivery::internal(
                    id,
                    "the relay could not store this; reconnect and resend",
                ));
            }
            let positions = self.ack_positions(id, &acks);
            group.deliveries.push(Delivery::live(
                id,
                Message::Ack(Ack {
                    items: acks,
                    positions: Some(positions),
                }),
            ));
            // Kept in memory and written at disconnect: an fsync per round trip would
            // dominate the cost of syncing.
            self.peer_mut(id).last_sync_ms = Some(now_ms);
        }
        for (tenant, docs) in changed {
            let no_senders = HashMap::new();
            let touched_by = senders.get(&tenant).unwrap_or(&no_senders);
            let mut receivers: BTreeMap<SessionId, Vec<DocId>> = BTreeMap::new();
            for doc in &docs {
                let sent = touched_by.get(doc);
                for other in self.watchers.candidates(&tenant, doc) {
                    // The senders had their replies above.
                    if sent.is_some_and(|s| s.contains(&other)) {
                        continue;
                    }
                    let list = receivers.entry(other).or_default();
                    if list.last() != Some(doc)
                        && self
                            .peers
                            .get(&other)
                            .is_some_and(|p| p.receives(&tenant, doc))
                    {
                        list.push(doc.clone());
                    }
                }
            }
            for (other, receives) in receivers {
                if !receives.is_empty() {
                    self.push(other, &receives, now_ms, &mut group.deliveries);
                }
            }
        }
        self.trim();
        group
    }

    /// Applies each item to its in-memory document, recording the change count each document
    /// had before this frame. An item that is refused changes nothing and gets an error.
    pub(super) fn apply_items(
        &mut self,
        id: SessionId,
        tenant: &Tenant,
        items: Vec<SyncItem>,
        touched: Touched<'_>,
        carried: &mut Vec<DocId>,
        out: &mut Vec<Delivery>,
    ) -> Result<(), HubError> {
        let Touched {
            group: earlier,
            frame: before,
        } = touched;
        let device = self.peers[&id].identity.device;
        let own_only = (!self.allow_foreign_changes).then_some(device.as_bytes().as_slice());
        // One frame's payloads share one budget (what decoding them may cost).
        let mut budget = Budget::new(self.payload_limits);
        // Documents of the frame with an item applied, and with an item refused after the
        // document was loaded: a refused item gets its error and nothing else (no reply, no
        // acknowledgement), unless another item of the frame for the document was applied.
        let mut applied: HashSet<DocId> = HashSet::new();
        let mut refused_docs: Vec<DocId> = Vec::new();
        for item in items {
            let Ok(message) = SyncMessage::decode(&item.message) else {
                out.push(error(id, ErrorCode::BAD_DOCUMENT, &item.doc, "undecodable"));
                continue;
            };
            let has_changes = !message.changes.is_empty();
            // A message without changes names a document the relay holds, or (Automerge's
            // opening message) one the device holds and may write: made-up ids from a reader
            // must not create documents, sync states or saved rows.
            let peer = &self.peers[&id];
            let may_create =
                !message.heads.is_empty() && peer.grants.can_write(item.doc.collection());
            if !has_changes
                && !may_create
                && !peer.states.contains_key(&item.doc)
                && !self.holds(tenant, &item.doc)?
            {
                out.push(error(
                    id,
                    ErrorCode::BAD_DOCUMENT,
                    &item.doc,
                    "unknown document (a sync without changes names a document the relay holds)",
                ));
                continue;
            }
            let cost = state_cost(&message);
            if !self.peers[&id].fits(&item.doc, cost) {
                let why = format!(
                    "the session's sync states would keep more than {MAX_SESSION_STATE_BYTES} bytes"
                );
                out.push(error(id, ErrorCode::LIMIT_EXCEEDED, &item.doc, &why));
                continue;
            }
            if has_changes && !carried.contains(&item.doc) {
                carried.push(item.doc.clone());
            }
            let len = match self.doc(tenant, &item.doc) {
                Ok(graph) => graph.len(),
                // A stored document that does not load refuses this item only.
                Err(e @ HubError::Corrupt { .. }) => {
                    self.corrupt(id, &item.doc, &e);
                    out.push(error(
                        id,
                        ErrorCode::INTERNAL,
                        &item.doc,
                        "the relay cannot load this document",
                    ));
                    refused_docs.push(item.doc.clone());
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.ensure_state(id, &item.doc)?;
            if !before.iter().any(|(doc, _)| *doc == item.doc) {
                before.push((item.doc.clone(), len));
            }
            // With other relays on the storage, a change by another device this copy lacks
            // may be one they stored since it was loaded: kept to try once more on a fresh copy.
            let spare = self.remote_following().then(|| message.clone());
            let mut received = self.receive(id, tenant, &item.doc, message, own_only, &mut budget);
            if let (Err(GraphError::Foreign { .. }), Some(message)) = (&received, spare)
                && !earlier.iter().any(|(doc, _)| *doc == item.doc)
                && self.reload_if_untouched(tenant, &item.doc, before)?
            {
                received = self.receive(id, tenant, &item.doc, message, own_only, &mut budget);
            }
            let peer = self.peers.get_mut(&id).expect("checked");
            let graph = self
                .docs
                .get_mut(&(tenant.clone(), item.doc.clone()))
                .expect("loaded");
            match received {
                Ok(_) => {
                    applied.insert(item.doc.clone());
                    // The state now keeps this message (on a refusal it kept the last one).
                    peer.charge(&item.doc, cost);
                    peer.confirmed.insert(item.doc.clone());
                    // The app's priority comes with the changes its device writes.
                    if has_changes {
                        graph.set_priority(item.priority);
                    }
                }
                Err(refused) => {
                    let code = match refused {
                        GraphError::Foreign { .. } => ErrorCode::FORBIDDEN,
                        GraphError::QueueFull | GraphError::OverLimit(_) => {
                            ErrorCode::LIMIT_EXCEEDED
                        }
                        GraphError::Undecodable(_)
                        | GraphError::BadSequence { .. }
                        | GraphError::LateAuthor { .. } => ErrorCode::BAD_DOCUMENT,
                    };
                    let mut refusal = error(id, code, &item.doc, &refused.to_string());
                    if matches!(refused, GraphError::Foreign { .. })
                        && let Message::Error(e) = &mut refusal.message
                    {
                        // Another device's change this relay does not hold may be one it lost
                        // (restored from a backup) and its author has yet to send again:
                        // the device tries again later rather than giving up.
                        e.retry_after_ms = Some(FOREIGN_RETRY_MS);
                    }
                    out.push(refusal);
                    refused_docs.push(item.doc.clone());
                }
            }
        }
        for doc in refused_docs.iter().filter(|doc| !applied.contains(*doc)) {
            carried.retain(|d| d != doc);
            before.retain(|(d, _)| d != doc);
        }
        Ok(())
    }

    /// Session `id`'s sync message for `doc` applied to the document in memory (loaded), with
    /// changes by other devices refused unless `own_only` is `None` or the session repairs
    /// the collection.
    fn receive(
        &mut self,
        id: SessionId,
        tenant: &Tenant,
        doc: &DocId,
        message: SyncMessage,
        own_only: Option<&[u8]>,
        budget: &mut Budget,
    ) -> Result<(), GraphError> {
        let peer = self.peers.get_mut(&id).expect("checked");
        let state = peer.states.get_mut(doc).expect("ensured");
        let graph = self
            .docs
            .get_mut(&(tenant.clone(), doc.clone()))
            .expect("loaded");
        let bytes_before = graph.estimated_bytes();
        // Repairing a relay restored from an older backup: what it lost comes back from
        // whichever device holds it.
        let author = own_only.filter(|_| !peer.repair.contains(doc.collection()));
        let received = responder::receive_sync_message(graph, state, message, author, budget);
        self.docs_bytes = (self.docs_bytes + graph.estimated_bytes()).saturating_sub(bytes_before);
        received.map(|_| ())
    }

    /// Loads `doc` again from storage if nothing of this frame changed it in memory yet
    /// (`before` holds its change count at the frame's first touch; the caller checked that no
    /// earlier frame of the group touched it); true when the stored document moved past the
    /// copy (another relay appended), so a refusal is worth trying again.
    fn reload_if_untouched(
        &mut self,
        tenant: &Tenant,
        doc: &DocId,
        before: &mut [(DocId, usize)],
    ) -> Result<bool, HubError> {
        let key = (tenant.clone(), doc.clone());
        let Some(graph) = self.docs.peek(&key) else {
            return Ok(false);
        };
        let (old_len, old_seq) = (graph.len(), graph.stored_seq());
        let Some(entry) = before.iter_mut().find(|(d, _)| d == doc) else {
            return Ok(false);
        };
        if entry.1 != old_len {
            // Changed in memory by this group: not ours to drop before the commit.
            return Ok(false);
        }
        self.evict(tenant, std::iter::once(doc));
        let fresh = self.doc(tenant, doc)?;
        let moved = fresh.stored_seq() > old_seq;
        entry.1 = fresh.len();
        Ok(moved)
    }

    /// Acknowledgements for the documents of a frame, with the heads now durable; none for
    /// a document no longer in memory.
    pub(super) fn acks(
        &self,
        tenant: &Tenant,
        docs: &[DocId],
        seqs: &HashMap<(Tenant, DocId), u64>,
    ) -> Vec<AckItem> {
        docs.iter()
            .filter_map(|doc| {
                let key = (tenant.clone(), doc.clone());
                let loaded = self.docs.peek(&key)?;
                // Always the document's position: a device checks, on its next connection,
                // that the relay still holds what it acknowledged.
                let seq = seqs.get(&key).copied().unwrap_or(loaded.stored_seq());
                Some(AckItem {
                    doc: doc.clone(),
                    heads: wire_heads(&loaded.heads()),
                    seq: (seq > 0).then_some(seq),
                })
            })
            .collect()
    }
}

impl<S: Storage> Hub<S> {
    /// Per collection of `acks`, the highest sequence number among them, with this data's
    /// epoch and the relay's receipt for session `id`'s device.
    fn ack_positions(&self, id: SessionId, acks: &[AckItem]) -> Vec<Cursor> {
        let seqs = acks
            .iter()
            .filter_map(|item| Some((item.doc.collection(), item.seq?)));
        self.vouched_positions(id, seqs)
    }
}

/// Bytes a sync state keeps of `message`: its heads, needs and Bloom filters.
fn state_cost(message: &SyncMessage) -> usize {
    let hashes = message.heads.len() + message.need.len();
    let filters: usize = message
        .have
        .iter()
        .map(|h| h.bloom.to_bytes().len() + 32 * h.last_sync.len())
        .sum();
    64 + 32 * hashes + filters
}
