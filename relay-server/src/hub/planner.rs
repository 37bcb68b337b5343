//! The planner: what a reconnecting device gets and in what order. From the device's cursors
//! it lists every document of its subscribed collections changed since (paged through
//! [`Storage::changed_since`]), adds the documents the device says it changed, orders them by
//! priority then recency, sends a `Plan` and then each document's first sync message in
//! batches of [`SYNC_BATCH`]. Capability-driven planning (modes, deferral, pacing) grows here.

use std::collections::BTreeMap;

use syncline_protocol::messages::{Cursor, Plan, PlanEntry, Reconcile};
use syncline_protocol::{Collection, DocId, Message, Priority};

use super::{Delivery, Hub, HubError, SessionId, push_batches};
use crate::storage::Storage;

/// Documents listed per storage query while planning.
const PLAN_PAGE: usize = 1000;

impl<S: Storage> Hub<S> {
    /// Plans a reconnect: every document of the subscribed collections changed after the
    /// client's cursor, plus the documents the client changed; highest priority first, then
    /// most recent. Sends the plan, then the first sync message of each document.
    pub(super) fn reconcile(
        &mut self,
        id: SessionId,
        reconcile: Reconcile,
    ) -> Result<Vec<Delivery>, HubError> {
        let peer = &self.peers[&id];
        let tenant = peer.tenant.clone();
        let cursors: BTreeMap<Collection, u64> = reconcile
            .cursors
            .into_iter()
            .map(|c| (c.collection, c.seq))
            .collect();
        // Each entry with its collection sequence, for ordering by recency.
        let mut entries: BTreeMap<DocId, (PlanEntry, u64)> = BTreeMap::new();
        let mut reached = Vec::new();
        for sub in peer
            .subscriptions
            .iter()
            .filter(|s| peer.grants.can_read(&s.collection))
        {
            let mut after = cursors.get(&sub.collection).copied().unwrap_or(0);
            loop {
                let page =
                    self.storage
                        .changed_since(&tenant, &sub.collection, after, PLAN_PAGE)?;
                for summary in &page {
                    let entry = PlanEntry {
                        doc: summary.doc.clone(),
                        priority: sub.priority,
                        bytes: summary.stored_bytes,
                        reason: None,
                    };
                    entries.insert(summary.doc.clone(), (entry, summary.seq));
                    after = after.max(summary.seq);
                }
                if page.len() < PLAN_PAGE {
                    break;
                }
            }
            reached.push(Cursor {
                collection: sub.collection.clone(),
                seq: after,
            });
        }
        for changed in reconcile
            .changed
            .into_iter()
            .filter(|c| peer.grants.can_read(c.doc.collection()))
        {
            let priority = peer
                .subscription(changed.doc.collection())
                .map_or(Priority::Normal, |s| s.priority);
            // The client's own changes are the most recent of all.
            let entry = PlanEntry {
                doc: changed.doc.clone(),
                priority,
                bytes: 0,
                reason: None,
            };
            entries.entry(changed.doc).or_insert((entry, u64::MAX)).1 = u64::MAX;
        }
        let mut ordered: Vec<(PlanEntry, u64)> = entries.into_values().collect();
        ordered
            .sort_by(|(a, a_seq), (b, b_seq)| b.priority.cmp(&a.priority).then(b_seq.cmp(a_seq)));
        let send: Vec<PlanEntry> = ordered.into_iter().map(|(entry, _)| entry).collect();
        for cursor in &reached {
            self.storage.set_cursor(
                &tenant,
                &peer.identity.device,
                &cursor.collection,
                cursor.seq,
            )?;
        }
        let mut items = Vec::new();
        let mut planned = Vec::new();
        for entry in send {
            let mut item = self.outgoing(id, std::slice::from_ref(&entry.doc))?;
            // A document the session already has in full needs no message and no plan entry.
            if !item.is_empty() {
                planned.push(entry);
                items.append(&mut item);
            }
        }
        let mut out = vec![Delivery {
            to: id,
            message: Message::Plan(Plan {
                send: planned,
                deferred: Vec::new(),
                cursors: reached,
            }),
        }];
        push_batches(&mut out, id, items);
        Ok(out)
    }
}
