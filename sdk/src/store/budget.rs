//! The storage budget (DESIGN §3): when the store's document content is over the budget its
//! device declares, the content of fully synced documents of on-demand collections is
//! evicted, least recently used first (documents not open in this process before those that
//! are, then the least recently changed), until the content fits.
//!
//! - The metadata row stays (it is still listed, [`crate::DocumentInfo::evicted`]), and the
//!   document is recorded as deferred for the relay ([`crate::DeferReason::StorageBudget`]),
//!   so `SyncClient::open` fetches it again and the relay sends it whole.
//! - A document with a change the relay has not acknowledged is never evicted: the check is
//!   made again under the document's lock, so a write racing the eviction wins.
//! - Eager collections are never evicted; when their content alone is over the budget, the
//!   outcome says by how much.

use std::collections::HashSet;

use syncline_protocol::messages::DeferReason;
use syncline_protocol::{Collection, DocId};

use super::Store;
use super::sync::release;
use crate::db::BatchWrite;
use crate::{DeferredDoc, Result};

/// What enforcing the budget did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetOutcome {
    /// Document content in the store afterwards, in bytes.
    pub content_bytes: u64,
    /// The documents whose content was evicted now.
    pub evicted: Vec<DeferredDoc>,
    /// How far the content is still over the budget (eager content and unacknowledged
    /// changes, which are never evicted); 0 within it.
    pub over_budget_bytes: u64,
}

impl Store {
    /// Evicts the content of fully synced documents of `evictable` (on-demand) collections,
    /// but not those in `keep` (the sync engine is waiting on them, or just got them), least
    /// recently used first, until the store's content is within `budget` bytes; see the
    /// module documentation. "Fully synced" is against `relay` alone: a document some other
    /// relay also acknowledged is not evicted, since only `relay` is asked for it again. The
    /// deferral is stamped `now_ms`.
    ///
    /// # Errors
    /// A storage error; what was evicted before it stays evicted.
    pub fn enforce_budget(
        &self,
        relay: &str,
        budget: u64,
        evictable: &[Collection],
        keep: &HashSet<DocId>,
        now_ms: u64,
    ) -> Result<BudgetOutcome> {
        let shared = self.shared();
        let mut content: u64 = shared.db.content_bytes()?.iter().map(|(_, b)| b).sum();
        let mut outcome = BudgetOutcome::default();
        if content > budget {
            let mut candidates = shared.db.evictable(relay, evictable)?;
            candidates.retain(|row| !keep.contains(&row.id));
            // Not open in this process first; the sort is stable, so by last change within.
            candidates.sort_by_key(|row| shared.cache.contains(&row.id));
            for candidate in candidates {
                if content <= budget {
                    break;
                }
                let doc = candidate.id.clone();
                let slot = shared.cache.slot(&doc);
                let mut guard = slot.lock_arc();
                // Again under the lock: still present, and still all acknowledged.
                let Some(row) = shared.db.lookup(&doc)? else {
                    release(shared, &doc, slot, guard);
                    continue;
                };
                let heads = shared.db.heads(row.key)?;
                let records = shared.db.acked_heads(row.key)?;
                let acked =
                    !records.is_empty() && records.iter().all(|(r, h)| r == relay && *h == heads);
                if row.evicted || !acked {
                    release(shared, &doc, slot, guard);
                    continue;
                }
                let bytes = row.snapshot_bytes + row.chunk_bytes;
                let deferred = DeferredDoc {
                    doc: doc.clone(),
                    priority: row.priority,
                    bytes,
                    reason: DeferReason::StorageBudget,
                    announced_at_ms: now_ms,
                    changed_ms: None,
                };
                shared.db.commit_batch(vec![
                    BatchWrite::Evict(row.key),
                    BatchWrite::Defer(relay.to_owned(), deferred.clone()),
                ])?;
                *guard = None;
                release(shared, &doc, slot, guard);
                content = content.saturating_sub(bytes);
                outcome.evicted.push(deferred);
            }
        }
        outcome.content_bytes = content;
        outcome.over_budget_bytes = content.saturating_sub(budget);
        Ok(outcome)
    }
}
