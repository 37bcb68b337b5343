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
//! - The device's own changes to it are kept apart ([`super::kept`]), so a relay restored from
//!   an older backup gets them back (a document mostly of its own changes is passed over:
//!   keeping them frees nothing). Only if that cannot bring the content within the budget
//!   do own changes go too, kept changes of evicted documents first, least recently used
//!   first: then the relay alone holds them.
//! - Eager collections are never evicted; when their content alone is over the budget, the
//!   outcome says by how much.

use std::collections::HashSet;

use syncline_protocol::messages::DeferReason;
use syncline_protocol::{Collection, DocId};

use super::shared::Shared;
use super::sync::release;
use super::{Store, kept};
use crate::db::{BatchWrite, DocKey};
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
        // First the content, keeping this device's own changes; then, if that is not enough,
        // the own changes too (the relay's custody alone).
        for keep_own in [true, false] {
            if content <= budget {
                break;
            }
            if !keep_own {
                for row in shared.db.kept_acknowledged(relay, evictable)? {
                    if content <= budget {
                        break;
                    }
                    if keep.contains(&row.id) {
                        continue;
                    }
                    content = content.saturating_sub(drop_kept(shared, relay, &row.id)?);
                }
            }
            let mut candidates = shared.db.evictable(relay, evictable)?;
            candidates.retain(|row| !keep.contains(&row.id));
            // Not open in this process first; the sort is stable, so by last change within.
            candidates.sort_by_key(|row| shared.cache.contains(&row.id));
            for candidate in candidates {
                if content <= budget {
                    break;
                }
                if let Some((freed, deferred)) =
                    evict(shared, relay, &candidate.id, keep_own, now_ms)?
                {
                    content = content.saturating_sub(freed);
                    outcome.evicted.push(deferred);
                }
            }
        }
        outcome.content_bytes = content;
        outcome.over_budget_bytes = content.saturating_sub(budget);
        Ok(outcome)
    }
}

/// True if `relay` alone acknowledged the document's current heads (checked under its lock).
fn acknowledged_by(shared: &Shared, relay: &str, key: DocKey) -> Result<bool> {
    let heads = shared.db.heads(key)?;
    let records = shared.db.acked_heads(key)?;
    Ok(!records.is_empty() && records.iter().all(|(r, h)| r == relay && *h == heads))
}

/// Evicts `doc`'s content if it is still present and all acknowledged by `relay`, keeping its
/// own changes apart when `keep_own` (and then only if that frees anything); the bytes freed
/// and its deferral.
fn evict(
    shared: &Shared,
    relay: &str,
    doc: &DocId,
    keep_own: bool,
    now_ms: u64,
) -> Result<Option<(u64, DeferredDoc)>> {
    let slot = shared.cache.slot(doc);
    let mut guard = slot.lock_arc();
    // Again under the lock: still present, and still all acknowledged.
    let Some(row) = shared.db.lookup(doc)? else {
        release(shared, doc, slot, guard);
        return Ok(None);
    };
    if row.evicted || row.kept_bytes > 0 || !acknowledged_by(shared, relay, row.key)? {
        release(shared, doc, slot, guard);
        return Ok(None);
    }
    let bytes = row.snapshot_bytes + row.chunk_bytes;
    let own = if keep_own {
        let own = match guard.as_ref() {
            Some(loaded) => kept::own_changes(&loaded.doc, &shared.actor),
            None => match shared.load(doc) {
                Ok(loaded) => kept::own_changes(&loaded.doc, &shared.actor),
                Err(e) => {
                    tracing::warn!(%doc, error = %e, "not evicted: its content does not load");
                    release(shared, doc, slot, guard);
                    return Ok(None);
                }
            },
        };
        if own.len() as u64 >= bytes {
            // Mostly this device's own: keeping them would free nothing.
            release(shared, doc, slot, guard);
            return Ok(None);
        }
        own
    } else {
        Vec::new()
    };
    let freed = bytes - own.len() as u64;
    let deferred = DeferredDoc {
        doc: doc.clone(),
        priority: row.priority,
        bytes,
        reason: DeferReason::StorageBudget,
        announced_at_ms: now_ms,
        changed_ms: None,
    };
    shared.db.commit_batch(vec![
        BatchWrite::Evict(row.key, own),
        BatchWrite::Defer(relay.to_owned(), deferred.clone()),
    ])?;
    *guard = None;
    release(shared, doc, slot, guard);
    Ok(Some((freed, deferred)))
}

/// Drops the kept own changes of an evicted document if `relay` acknowledged all of it; the
/// bytes freed.
fn drop_kept(shared: &Shared, relay: &str, doc: &DocId) -> Result<u64> {
    let slot = shared.cache.slot(doc);
    let guard = slot.lock_arc();
    let freed = match shared.db.lookup(doc)? {
        Some(row)
            if row.evicted && row.kept_bytes > 0 && acknowledged_by(shared, relay, row.key)? =>
        {
            shared
                .db
                .commit_batch(vec![BatchWrite::Kept(row.key, None)])?;
            tracing::warn!(%doc, bytes = row.kept_bytes, "over the storage budget: this device's own changes to an evicted document are left to the relay alone");
            row.kept_bytes
        }
        _ => 0,
    };
    release(shared, doc, slot, guard);
    Ok(freed)
}
