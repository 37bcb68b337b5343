//! The planner: what a device gets, in what order, and what is announced but held back.
//!
//! - **Reconcile.** From the device's cursors it lists every document of the named subscribed
//!   collections changed since (paged through [`Storage::changed_since`]); the connection's
//!   first `Reconcile` also plans every other subscribed collection from the start. It adds
//!   the documents the device says it changed, orders everything by priority (the
//!   collection's, raised by the document's own when its app set a higher one) then recency,
//!   and offers each document to the capability policy ([`super::policy`]): a document goes
//!   now (its first sync message, in the bulk lane) or is announced as deferred, with its size
//!   and reason. The `Plan` (sent first) lists both.
//! - **Replan.** A new profile on the live connection releases what the policy now allows
//!   (the device left a metered network), at once, as a `Plan` and its messages.
//! - **Subscription change.** Removing a collection stops its traffic: the session forgets its
//!   documents' sync states and deferrals (a document fetched from a collection never
//!   subscribed stays). A collection made eager gets what was only listed; an added one is
//!   planned when the device names it in a `Reconcile`.
//! - **Taken back.** Catch-up the session took back before it went (the device turned
//!   metered) is forgotten as sent and announced as deferred (`unsent`).
//! - **Fetch.** The named documents go now, whole (the device may have evicted what it had),
//!   whatever the policy, and an on-demand document fetched is kept in sync from then on.
//! - **Push.** A change fanned out to a device passes the same policy: held back documents
//!   are announced in a `Plan` instead, and a periodic device gets no push at all.

use std::collections::BTreeMap;

use syncline_protocol::messages::{
    CollectionSubscription, Cursor, Plan, PlanDone, PlanEntry, Reconcile, SyncItem,
};
use syncline_protocol::{Collection, DocId, Message, Priority};

use super::{
    Delivery, DocGraph, Hub, HubError, Lane, MAX_REPAIRING_DEVICES, REPAIR_GRANT_MS, SessionId,
    policy, push_batches, receipts,
};
use crate::storage::Storage;

/// Documents listed per storage query while planning.
const PLAN_PAGE: usize = 1000;

/// What the policy made of one document for one session.
enum Offer {
    /// Send this message now; the entry describes it.
    Send(PlanEntry, SyncItem),
    /// Announce and hold back.
    Defer(PlanEntry),
    /// The session already has everything of it.
    Nothing,
}

/// The deliveries of a plan: the `Plan`, then the messages in `lane`.
struct Planned {
    send: Vec<PlanEntry>,
    items: Vec<SyncItem>,
    deferred: Vec<PlanEntry>,
}

impl Planned {
    fn new() -> Self {
        Self {
            send: Vec::new(),
            items: Vec::new(),
            deferred: Vec::new(),
        }
    }

    fn add(&mut self, offer: Offer) {
        match offer {
            Offer::Send(entry, item) => {
                self.send.push(entry);
                self.items.push(item);
            }
            Offer::Defer(entry) => self.deferred.push(entry),
            Offer::Nothing => {}
        }
    }

    /// Delivers the plan and its messages: the answer to a `Reconcile` or a `Fetch` always
    /// (the client counts them), an update only when it says something. With `last_id` (the
    /// session's last plan id, when it negotiated `PlanDone`), the plan is numbered and a
    /// `PlanDone` follows its messages in their lane.
    fn deliver(
        self,
        id: SessionId,
        kind: PlanKind,
        lane: Lane,
        last_id: Option<&mut u64>,
        out: &mut Vec<Delivery>,
    ) {
        let quiet = matches!(kind, PlanKind::Update);
        let (cursors, reset, update, fetch) = match kind {
            PlanKind::Reconcile(cursors, reset) => (cursors, reset, false, false),
            PlanKind::Fetch => (Vec::new(), Vec::new(), true, true),
            PlanKind::Update => (Vec::new(), Vec::new(), true, false),
        };
        if quiet && self.send.is_empty() && self.deferred.is_empty() {
            return;
        }
        let number = last_id.map(|last| {
            *last += 1;
            *last
        });
        out.push(Delivery::live(
            id,
            Message::Plan(Plan {
                send: self.send,
                deferred: self.deferred,
                cursors,
                update,
                fetch,
                reset,
                id: number,
            }),
        ));
        push_batches(out, id, self.items, lane);
        if let Some(plan) = number {
            out.push(Delivery {
                to: id,
                message: Message::PlanDone(PlanDone { plan }),
                lane,
            });
        }
    }
}

/// A document a reconcile may plan: its priority, collection sequence (recency), stored
/// bytes and last change.
struct Candidate {
    priority: Priority,
    seq: u64,
    bytes: u64,
    changed_ms: Option<u64>,
}

/// Which plan a [`Planned`] is.
enum PlanKind {
    /// The answer to a `Reconcile`, with the cursors reached and the collections reset.
    Reconcile(Vec<Cursor>, Vec<Collection>),
    /// The answer to a `Fetch`.
    Fetch,
    /// The relay's own update.
    Update,
}

impl<S: Storage> Hub<S> {
    /// Plans a reconnect (see the module documentation): sends the plan, then the first sync
    /// message of each document that goes now.
    pub(super) fn reconcile(
        &mut self,
        id: SessionId,
        reconcile: Reconcile,
    ) -> Result<Vec<Delivery>, HubError> {
        let peer = self.peers.get_mut(&id).expect("checked by handle");
        let tenant = peer.tenant.clone();
        let first = !peer.reconciled;
        peer.reconciled = true;
        for doc in reconcile.fetched.iter().flatten().cloned() {
            if peer.grants.can_read(doc.collection()) {
                peer.held.insert(doc);
            }
        }
        // Positions this data never reached: it was restored from an older backup. Those
        // collections are planned from the start, and the device sends what it holds again.
        let (reset, repair) = self.lost_positions(id, &reconcile)?;
        let repair = self.remember_repairs(id, repair);
        self.peer_mut(id).repair.extend(repair);
        let peer = &self.peers[&id];
        let mut named: BTreeMap<Collection, u64> = reconcile
            .cursors
            .into_iter()
            .map(|c| (c.collection, c.seq))
            .collect();
        for collection in &reset {
            named.insert(collection.clone(), 0);
        }
        // Each document with its priority and collection sequence, for ordering by recency.
        let mut entries: BTreeMap<DocId, Candidate> = BTreeMap::new();
        let mut reached = Vec::new();
        for sub in peer
            .subscriptions
            .iter()
            .filter(|s| peer.grants.can_read(&s.collection))
        {
            let mut after = match named.get(&sub.collection) {
                Some(seq) => *seq,
                None if first => 0,
                None => continue,
            };
            loop {
                let page =
                    self.storage
                        .changed_since(&tenant, &sub.collection, after, PLAN_PAGE)?;
                for summary in &page {
                    // A document's own priority raises it above its collection's.
                    let priority = summary
                        .priority
                        .map_or(sub.priority, |p| p.max(sub.priority));
                    entries.insert(
                        summary.doc.clone(),
                        Candidate {
                            priority,
                            seq: summary.seq,
                            bytes: summary.stored_bytes,
                            changed_ms: summary.changed_ms,
                        },
                    );
                    after = after.max(summary.seq);
                }
                if page.len() < PLAN_PAGE {
                    break;
                }
            }
            let mut cursor = Cursor {
                collection: sub.collection.clone(),
                seq: after,
                epoch: None,
                receipt: None,
            };
            // A cursor the device named without an epoch is not checked, and may name more
            // than this data ever reached: the relay vouches only for what it holds.
            if self
                .storage
                .holds_position(&tenant, &sub.collection, self.storage.epoch(), after)?
            {
                self.vouch(id, &mut cursor);
            }
            reached.push(cursor);
        }
        // The device's own changes are the most recent of all (and the device holds them).
        let changed: Vec<DocId> = reconcile
            .changed
            .iter()
            .filter(|c| peer.grants.can_read(c.doc.collection()))
            .map(|c| c.doc.clone())
            .collect();
        self.peer_mut(id).held.extend(changed.iter().cloned());
        let peer = &self.peers[&id];
        for changed in reconcile
            .changed
            .into_iter()
            .filter(|c| peer.grants.can_read(c.doc.collection()))
        {
            let priority = peer
                .subscription(changed.doc.collection())
                .map_or(Priority::Normal, |s| s.priority);
            entries
                .entry(changed.doc)
                .or_insert(Candidate {
                    priority,
                    seq: 0,
                    bytes: 0,
                    changed_ms: None,
                })
                .seq = u64::MAX;
        }
        let mut ordered: Vec<(DocId, Candidate)> = entries.into_iter().collect();
        ordered.sort_by(|(_, a), (_, b)| b.priority.cmp(&a.priority).then(b.seq.cmp(&a.seq)));
        for cursor in &reached {
            self.spare(
                "storing a cursor",
                self.storage.set_cursor(
                    &tenant,
                    &peer.identity.device,
                    &cursor.collection,
                    cursor.seq,
                ),
            )?;
        }
        // A copy in memory older than the sequence planned (another relay appended since it
        // was loaded, and its announcement is yet to come) would send an older state under a
        // cursor that says the device has this one: drop it, so the offer loads what is stored.
        let stale: Vec<DocId> = ordered
            .iter()
            .filter(|(doc, c)| {
                c.seq != u64::MAX
                    && self
                        .docs
                        .peek(&(tenant.clone(), doc.clone()))
                        .is_some_and(|graph| graph.stored_seq() < c.seq)
            })
            .map(|(doc, _)| doc.clone())
            .collect();
        self.evict(&tenant, stale.iter());
        let mut planned = Planned::new();
        for (doc, c) in ordered {
            planned.add(self.offer(id, &doc, c.priority, c.bytes, c.changed_ms)?);
        }
        let mut out = Vec::new();
        self.note_deferred(id, &planned);
        let last_id = self.peer_mut(id).last_plan_id.as_mut();
        planned.deliver(
            id,
            PlanKind::Reconcile(reached, reset),
            Lane::Bulk,
            last_id,
            &mut out,
        );
        Ok(out)
    }

    /// Remembers the collections in which session `id`'s device proved a loss now
    /// (`proven`), and returns every collection in which it did so within
    /// [`REPAIR_GRANT_MS`]: a device whose repair was cut short no longer shows the lost
    /// positions (it forgot them when told of the loss), and each device holding another's
    /// lost change would refuse the other's otherwise, for good.
    fn remember_repairs(&mut self, id: SessionId, proven: Vec<Collection>) -> Vec<Collection> {
        let peer = &self.peers[&id];
        let key = (peer.tenant.clone(), peer.identity.device);
        let now = self.clock_ms;
        if !proven.is_empty()
            && (self.repairing.contains_key(&key) || self.repairing.len() < MAX_REPAIRING_DEVICES)
        {
            let grants = self.repairing.entry(key.clone()).or_default();
            for collection in proven {
                grants.insert(collection, now);
            }
        }
        let Some(grants) = self.repairing.get_mut(&key) else {
            return Vec::new();
        };
        grants.retain(|_, at| now.saturating_sub(*at) < REPAIR_GRANT_MS);
        let granted = grants.keys().cloned().collect();
        if grants.is_empty() {
            self.repairing.remove(&key);
        }
        granted
    }

    /// Tags `position` with this data's epoch and the relay's receipt for session `id`'s
    /// device.
    pub(super) fn vouch(&self, id: SessionId, position: &mut Cursor) {
        let peer = &self.peers[&id];
        let epoch = self.storage.epoch();
        position.receipt = Some(receipts::receipt(
            self.storage.position_key(),
            &receipts::Position {
                tenant: &peer.tenant,
                device: &peer.identity.device,
                collection: &position.collection,
                epoch,
                seq: position.seq,
            },
        ));
        position.epoch = Some(epoch.to_owned());
    }

    /// The collections in which the device shows a position (a cursor, or the sequence number
    /// of an acknowledgement) this data does not hold: a copy of it that has since been lost
    /// (the relay was restored from an older backup) showed it. Positions without an epoch
    /// (from relays before epochs) are not checked. Also returns those of them where the
    /// position carries the relay's valid receipt: the device may send back what others wrote.
    fn lost_positions(
        &self,
        id: SessionId,
        reconcile: &Reconcile,
    ) -> Result<(Vec<Collection>, Vec<Collection>), HubError> {
        let peer = &self.peers[&id];
        let mut lost: Vec<Collection> = Vec::new();
        let mut proven: Vec<Collection> = Vec::new();
        for position in reconcile
            .cursors
            .iter()
            .chain(reconcile.acked.iter().flatten())
        {
            let Some(epoch) = &position.epoch else {
                continue;
            };
            if lost.contains(&position.collection) {
                continue;
            }
            if !self.storage.holds_position(
                &peer.tenant,
                &position.collection,
                epoch,
                position.seq,
            )? {
                lost.push(position.collection.clone());
                let shown = receipts::Position {
                    tenant: &peer.tenant,
                    device: &peer.identity.device,
                    collection: &position.collection,
                    epoch,
                    seq: position.seq,
                };
                if position
                    .receipt
                    .as_deref()
                    .is_some_and(|r| receipts::valid(self.storage.position_key(), &shown, r))
                {
                    proven.push(position.collection.clone());
                }
            }
        }
        if !lost.is_empty() {
            let collections: Vec<&str> = lost.iter().map(Collection::as_str).collect();
            tracing::warn!(
                device = %peer.identity.device,
                ?collections,
                proven = proven.len(),
                "the device was shown positions this data does not hold (restored from an \
                 older backup?): planning them from the start, the device sends its changes again"
            );
        }
        Ok((lost, proven))
    }

    /// The profile changed on the live connection: sends at once what the policy no longer
    /// holds back, highest priority first; a device that turned realtime gets what changed
    /// while it was periodic.
    pub(super) fn replan(&mut self, id: SessionId, now_ms: u64) -> Result<Vec<Delivery>, HubError> {
        let mut out = Vec::new();
        if self.policy_device(id).realtime() {
            let skipped: Vec<DocId> = std::mem::take(&mut self.peer_mut(id).skipped)
                .into_iter()
                .collect();
            if !skipped.is_empty() {
                self.push(id, &skipped, now_ms, &mut out);
            }
        }
        let device = self.policy_device(id);
        let mut released: Vec<PlanEntry> = self.peers[&id]
            .deferred
            .values()
            .filter(|entry| device.releases(entry.reason))
            .cloned()
            .collect();
        released.sort_by_key(|e| std::cmp::Reverse(e.priority));
        out.extend(self.release(id, released)?);
        Ok(out)
    }

    /// Offers again documents that were held back, as the relay's own plan update.
    fn release(
        &mut self,
        id: SessionId,
        entries: Vec<PlanEntry>,
    ) -> Result<Vec<Delivery>, HubError> {
        let mut planned = Planned::new();
        for entry in entries {
            self.peer_mut(id).deferred.remove(&entry.doc);
            planned.add(self.offer(
                id,
                &entry.doc,
                entry.priority,
                entry.bytes,
                entry.changed_ms,
            )?);
        }
        self.note_deferred(id, &planned);
        let mut out = Vec::new();
        let last_id = self.peer_mut(id).last_plan_id.as_mut();
        planned.deliver(id, PlanKind::Update, Lane::Bulk, last_id, &mut out);
        Ok(out)
    }

    /// Replaces the session's subscription; the documents of a removed collection get no
    /// more traffic on this connection, and those only listed in a collection now kept eagerly
    /// are sent.
    pub(super) fn resubscribe(
        &mut self,
        id: SessionId,
        collections: Vec<CollectionSubscription>,
    ) -> Result<Vec<Delivery>, HubError> {
        let peer = self.peers.get_mut(&id).expect("checked by handle");
        self.watchers
            .subscribe(&peer.tenant, id, &peer.subscriptions, &collections);
        // Only collections unsubscribed now stop: a document fetched from a collection never
        // subscribed stays in sync.
        let removed: Vec<Collection> = peer
            .subscriptions
            .iter()
            .map(|s| s.collection.clone())
            .filter(|c| !collections.iter().any(|s| &s.collection == c))
            .collect();
        let kept = |c: &Collection| !removed.contains(c);
        let dropped: Vec<DocId> = peer
            .states
            .keys()
            .chain(peer.held.iter())
            .chain(peer.deferred.keys())
            .filter(|doc| !kept(doc.collection()))
            .cloned()
            .collect();
        for doc in &dropped {
            peer.states.remove(doc);
            peer.uncharge(doc);
            peer.confirmed.remove(doc);
            peer.held.remove(doc);
            peer.deferred.remove(doc);
            self.watchers.unwatch_doc(&peer.tenant, id, doc);
        }
        peer.skipped.retain(|doc| kept(doc.collection()));
        peer.subscriptions = collections;
        let listed: Vec<PlanEntry> = peer
            .deferred
            .values()
            .filter(|e| {
                e.reason == Some(syncline_protocol::messages::DeferReason::OnDemand)
                    && peer
                        .subscription(e.doc.collection())
                        .is_some_and(|s| s.mode == syncline_protocol::messages::SyncMode::Eager)
            })
            .cloned()
            .collect();
        self.release(id, listed)
    }

    /// Sends the named documents the relay holds, whatever the policy; an on-demand document
    /// fetched stays in sync from then on. `answer`: this is (the last part of) the device's
    /// `Fetch`, answered by a plan marked `fetch`; an earlier part's plan is an update, sent
    /// only when it has something to say.
    pub(super) fn fetch(
        &mut self,
        id: SessionId,
        docs: Vec<DocId>,
        answer: bool,
    ) -> Result<Vec<Delivery>, HubError> {
        // Only documents the relay holds: fetching made-up ids must not create empty
        // documents and sync states.
        let tenant = self.peers[&id].tenant.clone();
        let mut planned = Planned::new();
        for doc in docs {
            let key = (tenant.clone(), doc);
            if !self.docs.contains(&key) && self.storage.load(&tenant, &key.1)?.is_none() {
                continue;
            }
            let doc = key.1;
            let tenant = tenant.clone();
            let peer = self.peer_mut(id);
            peer.held.insert(doc.clone());
            // From scratch: the device may have evicted what it once had, so it gets the
            // whole document.
            if peer.grants.can_read(doc.collection()) {
                peer.states.insert(
                    doc.clone(),
                    syncline_protocol::sync_state::primed(Vec::new()),
                );
                peer.confirmed.remove(&doc);
                self.watchers.watch_doc(&tenant, id, &doc);
            }
            let peer = self.peer_mut(id);
            let deferred = peer.deferred.remove(&doc);
            let priority = deferred.as_ref().map_or_else(
                || {
                    peer.subscription(doc.collection())
                        .map_or(Priority::Normal, |s| s.priority)
                },
                |entry| entry.priority,
            );
            let outgoing = match self.outgoing(id, std::slice::from_ref(&doc)) {
                Err(e @ HubError::Corrupt { .. }) => {
                    self.corrupt(id, &doc, &e);
                    continue;
                }
                other => other?,
            };
            for item in outgoing {
                let entry = PlanEntry {
                    doc: doc.clone(),
                    priority,
                    bytes: item.message.len() as u64,
                    reason: None,
                    changed_ms: None,
                };
                planned.add(Offer::Send(entry, item));
            }
        }
        let mut out = Vec::new();
        let kind = if answer {
            PlanKind::Fetch
        } else {
            PlanKind::Update
        };
        let last_id = self.peer_mut(id).last_plan_id.as_mut();
        planned.deliver(id, kind, Lane::Asked, last_id, &mut out);
        Ok(out)
    }

    /// The connection took back queued messages before they went (the device turned
    /// metered): the session forgets what it assumed sent, and the documents are announced as
    /// deferred, released when the device leaves the metered network or fetches them.
    pub(super) fn unsent(
        &mut self,
        id: SessionId,
        docs: Vec<(DocId, u64, syncline_protocol::messages::DeferReason)>,
    ) -> Vec<Delivery> {
        let mut deferred = Vec::new();
        for (doc, bytes, reason) in docs {
            self.forget_doc(id, &doc);
            let mut priority = self.peers[&id]
                .subscription(doc.collection())
                .map_or(Priority::Normal, |s| s.priority);
            let key = (self.peers[&id].tenant.clone(), doc.clone());
            if let Some(own) = self.docs.peek(&key).and_then(DocGraph::priority) {
                priority = priority.max(own);
            }
            deferred.push(PlanEntry {
                doc,
                priority,
                bytes,
                reason: Some(reason),
                changed_ms: None,
            });
        }
        let planned = Planned {
            send: Vec::new(),
            items: Vec::new(),
            deferred,
        };
        self.note_deferred(id, &planned);
        let mut out = Vec::new();
        let last_id = self.peer_mut(id).last_plan_id.as_mut();
        planned.deliver(id, PlanKind::Update, Lane::Live, last_id, &mut out);
        out
    }

    /// Pushes changed documents to session `id` as they happen, through the policy: what it
    /// holds back is announced in a `Plan`; a periodic device gets nothing (it learns of the
    /// changes from its next plan). A failure is logged and skips that document.
    pub(super) fn push(
        &mut self,
        id: SessionId,
        docs: &[DocId],
        now_ms: u64,
        out: &mut Vec<Delivery>,
    ) {
        if !self.policy_device(id).realtime() {
            self.peer_mut(id).skipped.extend(docs.iter().cloned());
            return;
        }
        let mut planned = Planned::new();
        let mut failed = false;
        for doc in docs {
            let sub = self.peers[&id].subscription(doc.collection());
            let mut priority = sub.map_or(Priority::Normal, |s| s.priority);
            let key = (self.peers[&id].tenant.clone(), doc.clone());
            if let Some(own) = self.docs.peek(&key).and_then(DocGraph::priority) {
                priority = priority.max(own);
            }
            let bytes = self.estimated_bytes(id, doc);
            match self.offer(id, doc, priority, bytes, Some(now_ms)) {
                Ok(offer) => planned.add(offer),
                Err(e) => {
                    tracing::error!(session = id, doc = %doc, error = %e, "could not prepare a sync message");
                    self.forget_doc(id, doc);
                    // A stored document that does not load stays out (the operator sees it);
                    // any other failure (storage away) would leave the device without the
                    // change until it reconnects, so it is told to reconnect.
                    failed |= !matches!(e, HubError::Corrupt { .. });
                }
            }
        }
        if failed {
            out.push(Delivery::internal(
                id,
                "the relay could not send a change; reconnect to resync",
            ));
        }
        self.note_deferred(id, &planned);
        // Changes go without a plan entry; what is held back is announced.
        let Planned {
            items, deferred, ..
        } = planned;
        let announced = Planned {
            send: Vec::new(),
            items: Vec::new(),
            deferred,
        };
        let last_id = self.peer_mut(id).last_plan_id.as_mut();
        announced.deliver(id, PlanKind::Update, Lane::Live, last_id, out);
        let positions = self.push_positions(id, &items);
        let first = out.len();
        push_batches(out, id, items, Lane::Live);
        // With the last batch: the device records them once it has everything pushed.
        if let Some(Delivery {
            message: Message::Sync(last),
            ..
        }) = out[first..].last_mut()
            && !positions.is_empty()
        {
            last.positions = Some(positions);
        }
    }

    /// Per collection of pushed `items`, the position the relay holds them at durably, with
    /// its receipt for session `id`'s device: a device that has another device's change only
    /// from a push may send it back to a relay restored from a backup that lost it.
    fn push_positions(&self, id: SessionId, items: &[SyncItem]) -> Vec<Cursor> {
        let tenant = &self.peers[&id].tenant;
        let seqs = items.iter().filter_map(|item| {
            let key = (tenant.clone(), item.doc.clone());
            let seq = self.docs.peek(&key).map(DocGraph::stored_seq)?;
            (seq > 0).then_some((item.doc.collection(), seq))
        });
        self.vouched_positions(id, seqs)
    }

    /// Per collection of `seqs`, the highest sequence number, with this data's epoch and the
    /// relay's receipt for session `id`'s device.
    pub(super) fn vouched_positions<'a>(
        &self,
        id: SessionId,
        seqs: impl IntoIterator<Item = (&'a Collection, u64)>,
    ) -> Vec<Cursor> {
        let mut positions: Vec<Cursor> = Vec::new();
        for (collection, seq) in seqs {
            match positions.iter_mut().find(|p| &p.collection == collection) {
                Some(p) => p.seq = p.seq.max(seq),
                None => positions.push(Cursor {
                    collection: collection.clone(),
                    seq,
                    epoch: None,
                    receipt: None,
                }),
            }
        }
        for p in &mut positions {
            self.vouch(id, p);
        }
        positions
    }

    /// The policy's view of session `id`'s device.
    fn policy_device(&self, id: SessionId) -> policy::Device<'_> {
        policy::Device {
            profile: self.peers[&id].profile.as_ref(),
            relay_threshold: self.metered_threshold,
        }
    }

    /// Bytes of a document in memory (for announcing one held back without its message).
    fn estimated_bytes(&self, id: SessionId, doc: &DocId) -> u64 {
        let key = (self.peers[&id].tenant.clone(), doc.clone());
        self.docs
            .peek(&key)
            .map_or(0, |graph| graph.estimated_bytes() as u64)
    }

    /// Offers one document to session `id` through the policy. A message made and then held
    /// back (too large for a metered network) leaves the session's sync state as it was.
    fn offer(
        &mut self,
        id: SessionId,
        doc: &DocId,
        priority: Priority,
        bytes: u64,
        changed_ms: Option<u64>,
    ) -> Result<Offer, HubError> {
        let peer = &self.peers[&id];
        let device = self.policy_device(id);
        let entry = |bytes, reason| PlanEntry {
            changed_ms,
            doc: doc.clone(),
            priority,
            bytes,
            reason,
        };
        let held = peer.held.contains(doc) || peer.states.contains_key(doc);
        if let Some(reason) = device.hold_back(peer.subscription(doc.collection()), held) {
            return Ok(Offer::Defer(entry(bytes, Some(reason))));
        }
        let threshold = device.metered_threshold();
        // Only a metered device can have a message held back: keep its state to restore.
        let before = threshold.map(|_| peer.states.get(doc).cloned());
        let outgoing = match self.outgoing(id, std::slice::from_ref(doc)) {
            // A document that does not load stays out of the plan; the rest goes on.
            Err(e @ HubError::Corrupt { .. }) => {
                self.corrupt(id, doc, &e);
                return Ok(Offer::Nothing);
            }
            other => other?,
        };
        let Some(item) = outgoing.into_iter().last() else {
            return Ok(Offer::Nothing);
        };
        let size = item.message.len() as u64;
        if let Some(reason) = self.policy_device(id).hold_back_bytes(size) {
            let tenant = self.peers[&id].tenant.clone();
            let peer = self.peer_mut(id);
            match before.flatten() {
                Some(state) => {
                    peer.states.insert(doc.clone(), state);
                }
                None => {
                    peer.states.remove(doc);
                    peer.uncharge(doc);
                    peer.confirmed.remove(doc);
                    self.watchers.unwatch_doc(&tenant, id, doc);
                }
            }
            return Ok(Offer::Defer(entry(size, Some(reason))));
        }
        Ok(Offer::Send(entry(size, None), item))
    }

    /// Records what a plan announced and held back, and forgets what it sends.
    fn note_deferred(&mut self, id: SessionId, planned: &Planned) {
        let peer = self.peer_mut(id);
        for entry in &planned.send {
            peer.deferred.remove(&entry.doc);
        }
        for entry in &planned.deferred {
            peer.deferred.insert(entry.doc.clone(), entry.clone());
        }
    }

    /// Drops session `id`'s sync state for `doc`, so its sync starts afresh next time.
    pub(super) fn forget_doc(&mut self, id: SessionId, doc: &DocId) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.states.remove(doc);
            peer.uncharge(doc);
            peer.confirmed.remove(doc);
            self.watchers.unwatch_doc(&peer.tenant, id, doc);
        }
    }
}
