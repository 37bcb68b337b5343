//! Changes other relays committed to the storage this hub shares with them (several relays on
//! one PostgreSQL, issue 17).
//!
//! The shell learns which collections moved: (tenant, collection, sequence), never the change
//! itself ([`Hub::remote_changes`]); after its notification channel was down, it asks the hub to
//! compare every collection's sequence with what the hub has seen ([`Hub::remote_resync`]).
//! Either way the hub reads what changed after the sequence it last scanned
//! ([`Storage::changed_since`]), drops the documents its cache holds in an older state, and
//! pushes them to its sessions that want them, as it fans out its own commits.
//!
//! What the hub has seen is raised only by its scans, never by its own commits: sequence
//! numbers follow commit order across relays, so when this relay's append got seq 10, another
//! relay's seq 9 is committed but may not have been scanned yet. A document the cache holds at
//! (or past) the scanned sequence is this relay's own append, already fanned out, and is skipped.

use std::collections::{BTreeMap, HashMap};

use syncline_protocol::{Collection, DocId};

use super::{Delivery, Hub, HubError, SessionId};
use crate::storage::{Append, Storage};
use crate::tenant::Tenant;

/// Documents read per storage call while catching up.
pub const REMOTE_PAGE: usize = 256;

/// Most documents one catch-up reads per collection before it yields the hub to the sessions;
/// the rest is read on the next turn ([`Hub::remote_backlog`]).
pub const REMOTE_SCAN_DOCS: usize = 16 * REMOTE_PAGE;

/// What the hub knows of other relays' commits.
#[derive(Debug, Default)]
pub(super) struct Remote {
    /// Per collection, the sequence up to which the hub's cache and its sessions reflect every
    /// commit: from the storage when the hub started following, then raised by scans. `None`
    /// until [`Hub::follow_remote`] (a hub on storage no other relay writes).
    seen: Option<HashMap<(Tenant, Collection), u64>>,
    /// Collections known to have moved past `seen` (to this sequence) and not scanned yet:
    /// a scan cut short, or one whose storage read failed.
    pending: BTreeMap<(Tenant, Collection), u64>,
    /// The last catch-up stopped at [`REMOTE_SCAN_DOCS`] with more to read (not for a failed
    /// read: that waits for the next notification or resync rather than spin).
    yielded: bool,
    /// The last resync failed (the shell asks again).
    resync_failed: bool,
}

impl<S: Storage> Hub<S> {
    /// Starts following other relays' commits to this hub's storage: what every collection has
    /// reached now counts as seen (call it before the hub serves anything, while its cache is
    /// empty). Until it is called, [`Hub::remote_changes`] and [`Hub::remote_resync`] start
    /// following first.
    ///
    /// # Errors
    /// The storage's, reading the collections' sequences.
    pub fn follow_remote(&mut self) -> Result<(), HubError> {
        let reached = self.storage.collection_seqs()?;
        let seen = reached
            .into_iter()
            .map(|(t, c, seq)| ((t, c), seq))
            .collect();
        if self.remote.seen.is_some() || !self.docs.is_empty() {
            // Documents loaded before this point may be older than what was read: drop them.
            self.forget_documents();
        }
        self.remote.seen = Some(seen);
        self.remote.pending.clear();
        Ok(())
    }

    /// Other relays committed in these collections, up to these sequences: reads what changed
    /// since the hub last looked, drops stale cached documents and pushes the changes to the
    /// sessions that want them.
    ///
    /// # Errors
    /// The storage's; the collections it could not read stay pending for the next call.
    pub fn remote_changes(
        &mut self,
        moved: Vec<(Tenant, Collection, u64)>,
        now_ms: u64,
    ) -> Result<Vec<Delivery>, HubError> {
        self.tick(now_ms);
        if self.remote.seen.is_none() {
            // Not following yet: start now (what moved is then counted as seen, and the cache,
            // which may be older, is dropped).
            self.follow_remote()?;
            return Ok(Vec::new());
        }
        for (tenant, collection, seq) in moved {
            let target = self.remote.pending.entry((tenant, collection)).or_insert(0);
            *target = (*target).max(seq);
        }
        self.catch_up(now_ms)
    }

    /// The notification channel was down (or the shell checks now and then): compares every
    /// collection's sequence with what the hub has seen, and catches up on each that moved.
    ///
    /// # Errors
    /// The storage's.
    pub fn remote_resync(&mut self, now_ms: u64) -> Result<Vec<Delivery>, HubError> {
        self.tick(now_ms);
        self.remote.resync_failed = true;
        if self.remote.seen.is_none() {
            self.follow_remote()?;
            self.remote.resync_failed = false;
            return Ok(Vec::new());
        }
        let reached = self.storage.collection_seqs()?;
        self.remote.resync_failed = false;
        for (tenant, collection, seq) in reached {
            let key = (tenant, collection);
            if self.remote_seen(&key) < seq {
                let target = self.remote.pending.entry(key).or_insert(0);
                *target = (*target).max(seq);
            }
        }
        self.catch_up(now_ms)
    }

    /// Whether a catch-up yielded with more to read: the shell calls [`Hub::remote_changes`]
    /// again (with nothing new) on its next turn. Collections whose read failed wait for the
    /// next notification or resync instead.
    pub fn remote_backlog(&self) -> bool {
        self.remote.yielded && !self.remote.pending.is_empty()
    }

    /// Whether the hub follows other relays' commits (several relays share its storage).
    pub(super) fn remote_following(&self) -> bool {
        self.remote.seen.is_some()
    }

    /// Whether the last [`Hub::remote_resync`] failed (the storage away): the shell asks again.
    pub fn remote_resync_failed(&self) -> bool {
        self.remote.resync_failed
    }

    /// This relay committed `appends` at `seqs` (fanned out to its own sessions): where they
    /// continue what the hub has seen without a gap, they count as seen, so a later scan does
    /// not read them again.
    pub(super) fn own_commits(&mut self, tenant: &Tenant, appends: &[Append], seqs: &[u64]) {
        let Some(seen) = self.remote.seen.as_mut() else {
            return;
        };
        let mut blocks: BTreeMap<&Collection, (u64, u64)> = BTreeMap::new();
        for (append, &seq) in appends.iter().zip(seqs) {
            let block = blocks.entry(append.doc.collection()).or_insert((seq, seq));
            block.0 = block.0.min(seq);
            block.1 = block.1.max(seq);
        }
        for (collection, (first, last)) in blocks {
            let key = (tenant.clone(), collection.clone());
            let at = seen.get(&key).copied().unwrap_or(0);
            // The numbers of one append are contiguous per collection (the counter row is
            // locked from the first to the commit).
            if at + 1 == first {
                seen.insert(key, last);
            }
        }
    }

    /// What the hub has seen of `key` (0 for a collection created since it started following).
    fn remote_seen(&self, key: &(Tenant, Collection)) -> u64 {
        self.remote
            .seen
            .as_ref()
            .and_then(|seen| seen.get(key))
            .copied()
            .unwrap_or(0)
    }

    /// Scans the pending collections (up to [`REMOTE_SCAN_DOCS`] documents in all; the rest
    /// waits for the next turn) and pushes what other relays changed. A collection whose read
    /// fails waits for the next notification or resync; the others go on, unless the storage
    /// is away.
    fn catch_up(&mut self, now_ms: u64) -> Result<Vec<Delivery>, HubError> {
        let mut out = Vec::new();
        let pending: Vec<((Tenant, Collection), u64)> = std::mem::take(&mut self.remote.pending)
            .into_iter()
            .collect();
        let mut failure = None;
        let mut budget = REMOTE_SCAN_DOCS;
        self.remote.yielded = false;
        for (key, target) in pending {
            if budget == 0 || failure.as_ref().is_some_and(is_unavailable) {
                self.remote.yielded |= budget == 0;
                self.remote.pending.insert(key, target);
                continue;
            }
            match self.scan(&key, target, now_ms, &mut budget, &mut out) {
                Ok(true) => {}
                Ok(false) => {
                    self.remote.yielded = true;
                    self.remote.pending.insert(key, target);
                }
                Err(e) => {
                    tracing::warn!(tenant = %key.0, collection = %key.1, error = %e, "reading other relays' changes failed; retried on the next notification or resync");
                    self.remote.pending.insert(key, target);
                    failure = Some(e);
                }
            }
        }
        self.trim();
        match failure {
            // What was pushed before the failure still goes out.
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// Reads what changed in `key`'s collection after what the hub has seen (taking from
    /// `budget` the documents it reads) and pushes it; true when it read up to `target` (or to
    /// the end), false when the budget ran out first.
    fn scan(
        &mut self,
        key: &(Tenant, Collection),
        target: u64,
        now_ms: u64,
        budget: &mut usize,
        out: &mut Vec<Delivery>,
    ) -> Result<bool, HubError> {
        let (tenant, collection) = key;
        let mut after = self.remote_seen(key);
        if after >= target {
            return Ok(true);
        }
        if !self.watchers.watch_collection(tenant, collection) && !self.cached_in.contains_key(key)
        {
            // Nobody here wants it and nothing of it is in memory: nothing to read.
            if let Some(seen) = self.remote.seen.as_mut() {
                seen.insert(key.clone(), target);
            }
            return Ok(true);
        }
        let mut receivers: BTreeMap<SessionId, Vec<DocId>> = BTreeMap::new();
        let mut offered: Vec<(DocId, u64)> = Vec::new();
        let done = loop {
            let page = self.storage.changed_since(
                tenant,
                collection,
                after,
                REMOTE_PAGE.min((*budget).max(1)),
            )?;
            *budget = budget.saturating_sub(page.len());
            let ended = page.is_empty();
            for summary in page {
                after = after.max(summary.seq);
                let cached = (tenant.clone(), summary.doc.clone());
                if let Some(graph) = self.docs.peek(&cached) {
                    if graph.announced_seq() >= summary.seq {
                        // This relay's own commit (fanned out then), or pushed already.
                        continue;
                    }
                    if graph.stored_seq() < summary.seq {
                        self.evict(tenant, std::iter::once(&summary.doc));
                    }
                }
                for other in self.watchers.candidates(tenant, &summary.doc) {
                    let list = receivers.entry(other).or_default();
                    if !list.contains(&summary.doc)
                        && self
                            .peers
                            .get(&other)
                            .is_some_and(|p| p.receives(tenant, &summary.doc))
                    {
                        list.push(summary.doc.clone());
                    }
                }
                offered.push((summary.doc, summary.seq));
            }
            if ended || after >= target {
                break true;
            }
            if *budget == 0 {
                break false;
            }
        };
        if let Some(seen) = self.remote.seen.as_mut() {
            seen.insert(key.clone(), after);
        }
        for (other, docs) in receivers {
            if !docs.is_empty() {
                self.push(other, &docs, now_ms, out);
            }
        }
        for (doc, seq) in offered {
            if let Some(graph) = self.docs.peek_mut(&(tenant.clone(), doc)) {
                graph.set_announced_seq(seq);
            }
        }
        Ok(done)
    }
}

/// Whether `e` says the storage is away (no use reading more now).
fn is_unavailable(e: &HubError) -> bool {
    matches!(e, HubError::Storage(s) if s.is_unavailable())
}
