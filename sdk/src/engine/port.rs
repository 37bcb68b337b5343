//! `SyncStore`: the port through which the engine reads and writes the device's documents.
//!
//! The engine owns no I/O: it asks this port to apply a relay's Automerge sync messages, to
//! generate the next message for each document, and to record acknowledgements and cursors.
//! [`crate::Store`] implements it over SQLite; `syncline_testkit::memory::MemorySyncStore`
//! implements it in memory. Every call is synchronous and local; its effects are durable when
//! it returns (for the real store), so the engine may build its next message on what it did.
//!
//! Contract, for every implementation:
//! - `receive` applies each document's messages with that document's `State` (created from the
//!   heads the relay acknowledged when missing), keeps every change it applied, records that
//!   the relay holds the heads its message announced, and answers once per document (in no
//!   order the engine relies on). A panic inside Automerge on a peer's message is that
//!   document's error, never the caller's. It stamps metadata with `now_ms`, never with a clock of its own. It does not run
//!   app listeners: the shell delivers them after [`super::Engine::handle`] returns.
//! - `generate` primes a missing state with the heads the relay acknowledged, so the first
//!   message already carries what the relay lacks, and answers `None` when the relay is known
//!   to hold everything.
//! - `acknowledge` never moves an acknowledgement backwards and ignores unknown documents;
//!   cursors and acknowledged positions never move back either, until `forget_positions`
//!   drops them with the acknowledgements of their collections.

use std::collections::{BTreeSet, HashMap, HashSet};

use automerge::sync::{ChunkList, Message as SyncMessage, MessageVersion, State, SyncDoc};
use automerge::{Automerge, Change, ChangeHash};
use syncline_protocol::messages::{Cursor, MAX_MESSAGE_CHANGE_BYTES};
use syncline_protocol::sync_state;
use syncline_protocol::{Collection, DocId, Priority};

use crate::{BudgetOutcome, DeferredDoc, Heads, Result, SyncRecord};

/// Where a relay has shown this device to be, per collection ([`SyncStore::positions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    /// The change sequence synced to, with the relay's data epoch then.
    pub cursors: Vec<Cursor>,
    /// The highest sequence number the relay gave this device's acknowledged changes, with
    /// its epoch.
    pub acked: Vec<Cursor>,
}

/// What applying one document's messages did.
#[derive(Debug)]
pub struct Received {
    /// True if the messages changed the document.
    pub changed: bool,
    /// True once this device holds every head the relay announced for the document.
    pub complete: bool,
    /// The sync message to answer with, if any.
    pub reply: Option<Outgoing>,
}

/// A message ready to send, and what it asks of the relay.
#[derive(Debug)]
pub struct Outgoing {
    /// The encoded Automerge sync message.
    pub bytes: Vec<u8>,
    /// It carries changes (the relay will acknowledge them).
    pub changes: bool,
    /// It asks for changes (the relay will send them).
    pub needs: bool,
}

/// The documents the engine syncs; see the module documentation for the contract.
pub trait SyncStore {
    /// Applies the sync messages `items` from `relay` with one state per document in `states`,
    /// keeps every change and the acknowledgements the relay's heads imply (one commit for
    /// the whole batch in the real store), and returns, once per document, what happened and
    /// the reply to send. Metadata is stamped with `now_ms`.
    fn receive(
        &self,
        relay: &str,
        items: Vec<(DocId, SyncMessage)>,
        states: &mut HashMap<DocId, State>,
        now_ms: u64,
    ) -> Vec<(DocId, Result<Received>)>;

    /// The next sync message to `relay` for each of `docs` (`None` when the relay is known to
    /// have everything). Unknown documents answer [`crate::Error::NotFound`].
    fn generate(
        &self,
        relay: &str,
        docs: &[DocId],
        states: &mut HashMap<DocId, State>,
    ) -> Vec<(DocId, Result<Option<Outgoing>>)>;

    /// Records that `relay` has durably acknowledged each document's heads, and the
    /// sequence numbers it gave them per collection (`positions`, each with the relay's data
    /// epoch and receipt; the highest is kept), in one commit; returns the current heads of
    /// the acknowledged documents that exist here.
    ///
    /// # Errors
    /// The store could not record them; they stay pending and are acknowledged next time.
    fn acknowledge(
        &self,
        relay: &str,
        acks: &[(DocId, Heads)],
        positions: &[Cursor],
    ) -> Result<Vec<(DocId, Heads)>>;

    /// Records the change sequence each collection of `relay` has been synced to (never
    /// moving back), each with the epoch of the relay's data it is of and its receipt.
    ///
    /// # Errors
    /// The store could not record them; the next connection plans from the older cursors.
    fn set_cursors(&self, relay: &str, cursors: &[Cursor]) -> Result<()>;

    /// Where `relay` has shown this device to be, per collection: the cursors synced to and
    /// the highest acknowledged positions, each with its epoch and receipt (for `Reconcile`).
    ///
    /// # Errors
    /// The store could not read them.
    fn positions(&self, relay: &str) -> Result<Positions>;

    /// Forgets what `relay` acknowledged in `collections` (its acknowledgements of their
    /// documents, the cursors and positions): the relay lost it (it was restored from an
    /// older backup), and every document of them is pending for it again.
    ///
    /// # Errors
    /// The store could not forget them; the relay reports the loss again next connection.
    fn forget_positions(&self, relay: &str, collections: &[Collection]) -> Result<()>;

    /// Appends a connection's record to the history of syncs (which keeps the last
    /// [`crate::KEPT_SYNC_RECORDS`]).
    ///
    /// # Errors
    /// The store could not write it (the record is lost, nothing else).
    fn record_sync(&self, record: SyncRecord) -> Result<()>;

    /// Documents of `collection` whose current heads `relay` has not acknowledged.
    ///
    /// # Errors
    /// The store could not read them.
    fn unacknowledged(&self, relay: &str, collection: &Collection) -> Result<Vec<DocId>>;

    /// Documents of `collection` whose content is here (for `Reconcile.fetched`).
    ///
    /// # Errors
    /// The store could not read them.
    fn held(&self, collection: &Collection) -> Result<Vec<DocId>>;

    /// A document's sync priority (uploads leave in priority order); `Normal` when unknown.
    fn priority(&self, doc: &DocId) -> Priority;

    /// Records documents `relay` announced and held back (replacing earlier announcements of
    /// the same documents), stamped `now_ms`.
    ///
    /// # Errors
    /// The store could not record them; the app does not see them in its deferred list.
    fn defer(&self, relay: &str, entries: &[DeferredDoc]) -> Result<()>;

    /// Forgets `relay`'s deferrals of `docs` (their content arrived, or they are no longer
    /// subscribed).
    ///
    /// # Errors
    /// The store could not forget them.
    fn undefer(&self, relay: &str, docs: &[DocId]) -> Result<()>;

    /// Keeps the content within `budget` bytes by evicting fully synced documents of the
    /// `evictable` collections but `keep`, least recently used first, recording them as
    /// deferred by `relay` (see [`crate::Store::enforce_budget`]).
    ///
    /// # Errors
    /// The store could not evict; nothing is lost, the budget is merely exceeded.
    fn enforce_budget(
        &self,
        relay: &str,
        budget: u64,
        evictable: &[Collection],
        keep: &HashSet<DocId>,
        now_ms: u64,
    ) -> Result<BudgetOutcome>;

    /// The documents `relay` announced and held back, highest priority first.
    ///
    /// # Errors
    /// The store could not read them.
    fn deferred(&self, relay: &str) -> Result<Vec<DeferredDoc>>;

    /// Evicted documents whose own changes the store kept at eviction and `relay` has not
    /// acknowledged (it lost them: it was restored from an older backup). The engine fetches
    /// them, and their content merges the kept changes back in as it arrives.
    ///
    /// # Errors
    /// The store could not read them.
    fn kept_unacknowledged(&self, relay: &str) -> Result<Vec<DocId>>;

    /// Restores an evicted document the relay holds nothing of from the own changes kept at
    /// its eviction: true if they all applied (the document is here again, and pending for
    /// the relay); false if some wait on other devices' changes (it stays evicted: a local
    /// change must not reuse their sequence numbers) or it has none.
    ///
    /// # Errors
    /// The store could not read or write it, or the kept changes are damaged.
    fn restore_kept(&self, doc: &DocId, now_ms: u64) -> Result<bool>;
}

/// The next sync message for the relay from `doc` with `state`, as every [`SyncStore`] makes
/// it. After a message that carried changes (`received_changes`) the reply is sent even with
/// equal heads: it tells the relay what this device now holds. Otherwise equal heads are
/// settled and need no answer.
pub fn next_message(
    doc: &Automerge,
    state: &mut State,
    received_changes: bool,
) -> Option<Outgoing> {
    if !received_changes {
        sync_state::settle(state, &doc.get_heads());
    }
    let sent_before = state.sent_hashes.clone();
    let mut message = doc.generate_sync_message(state)?;
    if message.changes.iter().map(<[u8]>::len).sum::<usize>() > MAX_MESSAGE_CHANGE_BYTES {
        within_message(doc, state, &mut message, sent_before);
    }
    Some(Outgoing {
        changes: !message.changes.is_empty(),
        needs: !message.need.is_empty(),
        bytes: message.encode(),
    })
}

/// Cuts `message` down to its oldest changes within [`MAX_MESSAGE_CHANGE_BYTES`] (at least
/// one), as the relay does the other way: a history larger than a frame goes up in parts, one
/// per exchange. Only what was kept counts as sent (`sent_before` is the state's record before
/// the message), so the next message, after the relay's answer, carries the rest.
fn within_message(
    doc: &Automerge,
    state: &mut State,
    message: &mut SyncMessage,
    sent_before: BTreeSet<ChangeHash>,
) {
    let kept: Vec<Change> = if message.version == MessageVersion::V1 {
        // The chunks are the changes themselves, oldest first: keep a prefix.
        let mut bytes = 0;
        let prefix = message.changes.iter().take_while(|chunk| {
            let first = bytes == 0;
            bytes += chunk.len();
            first || bytes <= MAX_MESSAGE_CHANGE_BYTES
        });
        let parsed: Option<Vec<Change>> = prefix.map(|c| Change::try_from(c).ok()).collect();
        match parsed {
            Some(changes) => changes,
            None => oldest_within(doc, state, &sent_before),
        }
    } else {
        // A whole saved document or one joined chunk: pick the changes again.
        oldest_within(doc, state, &sent_before)
    };
    let mut sent = sent_before;
    sent.extend(kept.iter().map(Change::hash));
    state.sent_hashes = sent;
    message.changes = if message.version == MessageVersion::V1 {
        ChunkList::from(
            kept.iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
    } else {
        ChunkList::from(
            kept.iter()
                .flat_map(|c| c.raw_bytes().to_vec())
                .collect::<Vec<u8>>(),
        )
    };
}

/// The oldest changes `state` newly counts as sent (beyond `sent_before`) that the peer does
/// not hold (after the heads both sides share), in causal order, within
/// [`MAX_MESSAGE_CHANGE_BYTES`] and at least one.
fn oldest_within(
    doc: &Automerge,
    state: &State,
    sent_before: &BTreeSet<ChangeHash>,
) -> Vec<Change> {
    let mut bytes = 0;
    let mut kept = Vec::new();
    let shared: Vec<ChangeHash> = (state.shared_heads.iter().copied())
        .filter(|hash| doc.get_change_meta_by_hash(hash).is_some())
        .collect();
    for change in doc.get_changes(&shared) {
        let hash = change.hash();
        if sent_before.contains(&hash) || !state.sent_hashes.contains(&hash) {
            continue;
        }
        bytes += change.raw_bytes().len();
        if !kept.is_empty() && bytes > MAX_MESSAGE_CHANGE_BYTES {
            break;
        }
        kept.push(change);
    }
    kept
}

/// True once `doc` holds every head the relay announced in `state` ([`Received::complete`]).
pub fn holds_their_heads(doc: &Automerge, state: &State) -> bool {
    state.their_heads.as_ref().is_none_or(|heads| {
        heads
            .iter()
            .all(|h| doc.get_change_meta_by_hash(h).is_some())
    })
}

/// What a [`SyncStore`] records as a relay's acknowledgement of `doc`, given the heads the
/// relay says it durably holds (`given`), what this relay's record held before (`previous`)
/// and the other relays' records (`others`); `None` when the record would not change. Every
/// store follows this one rule:
/// - hashes `doc` does not hold are ignored;
/// - an acknowledgement never goes backwards: what `previous` covered and `given` does not
///   stays covered (acknowledgements can arrive out of order);
/// - once the relays together cover every change, the record is the document's exact heads,
///   so that "pending" is a plain equality of heads.
pub fn acknowledgement<'a>(
    doc: &Automerge,
    given: &[ChangeHash],
    previous: Option<&[ChangeHash]>,
    others: impl IntoIterator<Item = &'a [ChangeHash]>,
) -> Option<Heads> {
    let known = |hashes: &[ChangeHash]| -> Vec<ChangeHash> {
        hashes
            .iter()
            .copied()
            .filter(|h| doc.get_change_meta_by_hash(h).is_some())
            .collect()
    };
    let given = known(given);
    let uncovered: HashSet<ChangeHash> = doc
        .get_changes_meta(&given)
        .iter()
        .map(|m| m.hash)
        .collect();
    let mut merged = given;
    if let Some(previous) = previous {
        merged.extend(
            known(previous)
                .into_iter()
                .filter(|h| uncovered.contains(h)),
        );
    }
    let mut everyone = merged.clone();
    for other in others {
        everyone.extend(known(other));
    }
    let record = if doc.get_changes_meta(&everyone).is_empty() {
        Heads::new(doc.get_heads())
    } else {
        Heads::new(merged)
    };
    (previous != Some(record.as_slice())).then_some(record)
}
