//! The document cache: loaded Automerge documents, bounded in (estimated) bytes, least recently
//! used first out.
//!
//! Each document has one [`Slot`]; all readers and writers of a document lock the same slot, so
//! there is never more than one in-memory copy of a document (two copies would both write with
//! this device's actor id and fork its history). A slot someone holds is never evicted: eviction
//! skips entries whose `Arc` is shared, and every clone is taken under the cache lock.

use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;
use syncline_protocol::DocId;

use crate::db::DocRow;

/// A loaded document with its metadata row as last written.
pub(crate) struct LoadedDoc {
    pub row: DocRow,
    pub doc: automerge::Automerge,
    /// Set when the in-memory state went ahead of the store and a write then failed: the slot
    /// is emptied so the next access reloads the durable state.
    pub poisoned: bool,
}

impl LoadedDoc {
    /// Estimated resident bytes: a fixed per-document overhead plus a multiple of the stored
    /// (compressed) size. Calibrated with `syncline-bench memory`; see docs/BENCHMARKS.md.
    pub fn estimated_bytes(&self) -> usize {
        let stored = self.row.snapshot_bytes + self.row.chunk_bytes;
        PER_DOC_OVERHEAD
            + usize::try_from(stored)
                .unwrap_or(usize::MAX)
                .saturating_mul(BYTES_PER_STORED_BYTE)
    }
}

/// Fixed resident cost of a loaded document (Automerge's structures, our row and slot).
pub(crate) const PER_DOC_OVERHEAD: usize = 18 << 10;
/// Resident bytes per stored (compressed) byte.
pub(crate) const BYTES_PER_STORED_BYTE: usize = 8;

/// One document's place in the cache; `None` until loaded.
pub(crate) type Slot = Mutex<Option<LoadedDoc>>;

struct Entry {
    slot: Arc<Slot>,
    bytes: usize,
}

struct Inner {
    entries: LruCache<DocId, Entry>,
    used: usize,
}

/// The cache of one store.
pub(crate) struct DocCache {
    inner: Mutex<Inner>,
    budget: usize,
}

impl DocCache {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                used: 0,
            }),
            budget,
        }
    }

    /// The slot of `id`, created empty if absent, marked most recently used.
    pub(crate) fn slot(&self, id: &DocId) -> Arc<Slot> {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.entries.get(id) {
            return Arc::clone(&entry.slot);
        }
        let slot = Arc::new(Mutex::new(None));
        inner.entries.put(
            id.clone(),
            Entry {
                slot: Arc::clone(&slot),
                bytes: 0,
            },
        );
        slot
    }

    /// Records the size of `id`'s loaded document (0 if it is not loaded) and releases the
    /// caller's `slot`, then evicts least recently used, unshared documents until the cache is
    /// within its budget.
    pub(crate) fn resize(&self, id: &DocId, slot: Arc<Slot>, bytes: usize) {
        let mut inner = self.inner.lock();
        let Inner { entries, used } = &mut *inner;
        // Only if the entry is still this slot (it may have been evicted and recreated).
        if let Some(entry) = entries.peek_mut(id).filter(|e| Arc::ptr_eq(&e.slot, &slot)) {
            *used = *used - entry.bytes + bytes;
            entry.bytes = bytes;
        }
        drop(slot);
        if *used <= self.budget {
            return;
        }
        let victims: Vec<DocId> = entries
            .iter()
            .rev()
            .filter(|(_, e)| Arc::strong_count(&e.slot) == 1)
            .scan(*used, |remaining, (id, e)| {
                (*remaining > self.budget).then(|| {
                    *remaining -= e.bytes;
                    id.clone()
                })
            })
            .collect();
        for victim in victims {
            if let Some(entry) = entries.pop(&victim) {
                *used -= entry.bytes;
            }
        }
    }

    /// Drops `id`'s slot if nobody holds it and it holds no document (after a failed load).
    pub(crate) fn discard_if_idle(&self, id: &DocId) {
        let mut inner = self.inner.lock();
        let idle = inner
            .entries
            .peek(id)
            .is_some_and(|e| Arc::strong_count(&e.slot) == 1 && e.bytes == 0);
        if idle {
            inner.entries.pop(id);
        }
    }

    /// True if `id` has a slot (loaded, or in use): it was used recently.
    pub(crate) fn contains(&self, id: &DocId) -> bool {
        self.inner.lock().entries.contains(id)
    }

    /// Estimated bytes of the loaded documents.
    pub(crate) fn used_bytes(&self) -> usize {
        self.inner.lock().used
    }

    /// Number of slots (loaded or being loaded).
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
}
