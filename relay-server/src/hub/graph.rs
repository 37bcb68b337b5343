//! A document as the relay holds it: its change graph, not its content.
//!
//! The relay never reads a document; it stores changes and forwards them. Materialising an
//! Automerge document would cost, per received change, an apply whose price grows with the
//! document's history (Automerge 0.12 splices its columnar op set: about 35 µs for a new
//! document, 130 µs at 1,000 changes, 500 µs at 5,000). A [`DocGraph`] keeps what the sync
//! protocol needs instead: each change's hash, dependencies, actor and sequence number and its
//! raw bytes, in causal order, plus the heads. Adding a change costs a parse and a few hash-map
//! operations whatever the history.
//!
//! What the relay checks of a change (what Automerge's own loading and applying would refuse,
//! short of interpreting the operations against the document): the chunk decodes completely
//! (header, checksum, every operation) and its operations name only actors the change lists;
//! its dependencies are known (or it waits, like Automerge's queue, for them to arrive, within
//! bounds); its sequence number is the next of its actor's; an authored change is its actor's
//! first; and, when an author is given, its actor is that device's unless the relay already
//! holds it. A change that waits is checked against what the graph holds when it arrives, and
//! dropped (with what depends on it) if it no longer fits when its dependencies come.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use automerge::{Automerge, Change, ChangeHash, LoadOptions, OnPartialLoad};
use syncline_protocol::Priority;
use syncline_protocol::payload::{Budget, PayloadLimits};

/// Changes waiting for their dependencies, at most, per document; past it (or past
/// [`MAX_QUEUED_BYTES`]), a message whose changes cannot be placed is refused: a client cannot
/// grow the relay's memory without bound by sending changes whose dependencies never come.
pub const MAX_QUEUED: usize = 10_000;

/// Bytes of changes waiting for their dependencies, at most, per document.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// Changes of one actor waiting for their dependencies, at most, per document: one device
/// cannot fill a document's queue for everyone.
pub const MAX_QUEUED_PER_ACTOR: usize = 1_000;

/// Bytes of changes one document may hold: a client cannot grow one document (which the relay
/// holds in memory while it is in use) past it.
pub const MAX_DOCUMENT_BYTES: usize = 256 << 20;

/// Why changes were refused. The graph is unchanged when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Bytes that are not complete Automerge chunks, or a chunk that does not decode.
    #[error("a change does not decode: {0}")]
    Undecodable(String),
    /// A change whose actor already has a different change at that sequence number, or whose
    /// sequence number skips ahead of its dependencies.
    #[error("change {hash} has sequence number {seq} for its actor, which already has {have}")]
    BadSequence {
        /// The change.
        hash: ChangeHash,
        /// Its sequence number.
        seq: u64,
        /// How many changes of that actor the relay holds.
        have: u64,
    },
    /// A change by an actor other than the sending device, which the relay does not hold.
    #[error("a change by another device ({actor}) that the relay does not hold")]
    Foreign {
        /// The actor, in hex.
        actor: String,
    },
    /// An authored change that is not its actor's first.
    #[error("change {hash} names an author but is not its actor's first change")]
    LateAuthor {
        /// The change.
        hash: ChangeHash,
    },
    /// The payload would cost more to decode than the relay's limits allow (it inflates too
    /// far or declares too many operations); refused before Automerge parses it.
    #[error("{0}")]
    OverLimit(String),
    /// Too many changes (or bytes of them) would wait for dependencies.
    #[error(
        "more than {MAX_QUEUED} changes or {MAX_QUEUED_BYTES} bytes would wait for missing dependencies"
    )]
    QueueFull,
}

/// One change the graph holds.
#[derive(Debug, Clone)]
struct Node {
    hash: ChangeHash,
    deps: Vec<ChangeHash>,
    raw: Vec<u8>,
}

/// A document's changes in causal order, with what the sync protocol asks of them.
#[derive(Debug, Clone, Default)]
pub struct DocGraph {
    /// Every change, each after its dependencies (insertion order).
    nodes: Vec<Node>,
    by_hash: HashMap<ChangeHash, usize>,
    heads: BTreeSet<ChangeHash>,
    /// Per actor id, its last sequence number (how many of its changes the graph holds).
    seqs: HashMap<Vec<u8>, u64>,
    /// Changes whose dependencies have not arrived, by hash.
    queue: BTreeMap<ChangeHash, Change>,
    /// Raw bytes of the queued changes.
    queued_bytes: usize,
    /// Estimated bytes in memory of the changes in the graph (queued ones not counted).
    bytes: usize,
    /// The document's priority as its app set it (kept with the document, stored with its
    /// next append).
    priority: Option<Priority>,
    /// The document's sequence number in its collection as last stored (0: never stored).
    stored_seq: u64,
    /// The sequence number up to which this relay offered the document's changes to its
    /// watching sessions (its own commit fanned out, or another relay's pushed): never set by a
    /// load, which answers only the session that asked.
    announced_seq: u64,
}

/// Memory a node costs beyond its raw bytes (hash, index entries, vectors, dependencies).
const NODE_OVERHEAD: usize = 160;

impl DocGraph {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a stored document from its chunks (changes, or saved documents), in order.
    ///
    /// # Errors
    /// [`GraphError`] for stored data that does not decode or does not fit together.
    pub fn load<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, GraphError> {
        let mut graph = Self::new();
        for row in chunks {
            // A stored row joins the changes of a group commit (many frames); each Automerge
            // chunk in it was checked against a frame's budget when it was received, so each
            // gets that bound again (of the largest frames accepted): a corrupt row costs no
            // more, and a large group's row still loads.
            let mut rest = row;
            let mut changes = Vec::new();
            while !rest.is_empty() {
                let (_, len) = chunk_header(rest)?;
                let (chunk, tail) = rest.split_at(len);
                rest = tail;
                changes.extend(parse_changes(chunk, &mut Budget::new(STORED_CHUNK_LIMITS))?);
            }
            // What was stored loads, whatever the size limit of new writes.
            graph.add_within(changes, None, usize::MAX)?;
        }
        Ok(graph)
    }

    /// The document's priority as its app set it, if one was ever sent.
    pub fn priority(&self) -> Option<Priority> {
        self.priority
    }

    /// The document's sequence number in its collection as last stored (0: never stored).
    pub fn stored_seq(&self) -> u64 {
        self.stored_seq
    }

    /// Records the sequence number storage gave the document's last append (or load).
    pub fn set_stored_seq(&mut self, seq: u64) {
        self.stored_seq = seq;
    }

    /// Whether changes wait in the queue for dependencies the graph lacks (dropping the graph
    /// drops them: their senders must send them again).
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The sequence number up to which the relay's watching sessions were offered the
    /// document's changes (0: not since it was loaded).
    pub fn announced_seq(&self) -> u64 {
        self.announced_seq
    }

    /// Records that the watching sessions were offered the document's changes up to `seq`.
    pub fn set_announced_seq(&mut self, seq: u64) {
        self.announced_seq = self.announced_seq.max(seq);
    }

    /// Records the priority the app set.
    pub fn set_priority(&mut self, priority: Option<Priority>) {
        if priority.is_some() {
            self.priority = priority;
        }
    }

    /// The heads, sorted (as Automerge's `get_heads`).
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.heads.iter().copied().collect()
    }

    /// How many changes are in the graph (queued ones not counted). Changes are only ever
    /// appended, so the changes added after a moment are those past its `len`.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if the graph holds no change.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether the graph holds change `hash` (queued ones not counted).
    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Estimated bytes this graph holds in memory, queued changes included.
    pub fn estimated_bytes(&self) -> usize {
        self.bytes + self.queued_bytes + NODE_OVERHEAD * self.queue.len()
    }

    /// The raw changes added after the first `from`, concatenated: what to store after adding.
    pub fn raw_since(&self, from: usize) -> Vec<u8> {
        let nodes = self.nodes.get(from..).unwrap_or_default();
        let mut out = Vec::with_capacity(nodes.iter().map(|n| n.raw.len()).sum());
        for node in nodes {
            out.extend_from_slice(&node.raw);
        }
        out
    }

    /// The raw bytes of the changes `hashes` that the graph holds, in the order given.
    pub fn raw_changes(&self, hashes: &[ChangeHash]) -> Vec<Vec<u8>> {
        hashes
            .iter()
            .filter_map(|h| self.by_hash.get(h))
            .map(|&i| self.nodes[i].raw.clone())
            .collect()
    }

    /// The size of change `hash` as stored (0 if the graph does not hold it).
    pub fn raw_len(&self, hash: &ChangeHash) -> usize {
        self.by_hash
            .get(hash)
            .map_or(0, |&i| self.nodes[i].raw.len())
    }

    /// The dependencies of change `hash`, if the graph holds it.
    pub fn deps(&self, hash: &ChangeHash) -> Option<&[ChangeHash]> {
        self.by_hash
            .get(hash)
            .map(|&i| self.nodes[i].deps.as_slice())
    }

    /// Adds `changes` (decoded from a received or stored chunk): those whose dependencies are
    /// all held join the graph, in causal order; the others wait for theirs. All or nothing:
    /// on error the graph is unchanged. Returns how many joined the graph.
    ///
    /// With `author` set (a device's actor id), a change by any other actor is refused unless
    /// the graph already holds it.
    ///
    /// # Errors
    /// [`GraphError::Foreign`], [`GraphError::BadSequence`], [`GraphError::QueueFull`],
    /// [`GraphError::OverLimit`] past [`MAX_DOCUMENT_BYTES`].
    pub fn add(
        &mut self,
        changes: Vec<Change>,
        author: Option<&[u8]>,
    ) -> Result<usize, GraphError> {
        self.add_within(changes, author, MAX_DOCUMENT_BYTES)
    }

    /// [`DocGraph::add`], refusing to grow the document past `max_bytes`.
    fn add_within(
        &mut self,
        changes: Vec<Change>,
        author: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<usize, GraphError> {
        let mut pending: BTreeMap<ChangeHash, Change> = BTreeMap::new();
        for change in changes {
            let hash = change.hash();
            if self.has_change(&hash) || self.queue.contains_key(&hash) {
                continue;
            }
            if let Some(author) = author
                && change.actor_id().to_bytes() != author
            {
                return Err(GraphError::Foreign {
                    actor: change.actor_id().to_hex_string(),
                });
            }
            if change.author().is_some() && change.seq() != 1 {
                return Err(GraphError::LateAuthor { hash });
            }
            pending.insert(hash, change);
        }
        if pending.is_empty() {
            return Ok(0);
        }
        // Plan first (which changes join, in what order), so that a refusal changes nothing:
        // Kahn's algorithm over the pending and queued changes, linear in the changes and their
        // dependencies whatever order they came in.
        let candidates: Vec<(&ChangeHash, &Change)> =
            pending.iter().chain(self.queue.iter()).collect();
        let by_hash: HashMap<ChangeHash, &Change> =
            candidates.iter().map(|(h, c)| (**h, *c)).collect();
        let mut missing: HashMap<ChangeHash, usize> = HashMap::new();
        let mut dependents: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
        let mut ready: VecDeque<ChangeHash> = VecDeque::new();
        for (hash, change) in &candidates {
            let lacking: Vec<&ChangeHash> = change
                .deps()
                .iter()
                .filter(|d| !self.has_change(d))
                .collect();
            for dep in &lacking {
                dependents.entry(**dep).or_default().push(**hash);
            }
            if lacking.is_empty() {
                ready.push_back(**hash);
            } else {
                missing.insert(**hash, lacking.len());
            }
        }
        let mut joined: Vec<ChangeHash> = Vec::new();
        // Queued changes that no longer fit (their actor's sequence moved past them): dropped,
        // with whatever waits on them, instead of failing the message that completed them.
        let mut dropped: HashSet<ChangeHash> = HashSet::new();
        // Sequence numbers taken per actor by the changes planned so far.
        let mut taken: HashMap<&[u8], u64> = HashMap::new();
        while let Some(hash) = ready.pop_front() {
            let change = by_hash[&hash];
            let actor = change.actor_id().to_bytes();
            let have = taken
                .get(actor)
                .copied()
                .unwrap_or_else(|| self.actor_seq(actor));
            if change.seq() != have + 1 {
                if pending.contains_key(&hash) {
                    return Err(GraphError::BadSequence {
                        hash,
                        seq: change.seq(),
                        have,
                    });
                }
                dropped.insert(hash);
                continue;
            }
            taken.insert(actor, change.seq());
            joined.push(hash);
            for dependent in dependents.remove(&hash).unwrap_or_default() {
                if let Some(count) = missing.get_mut(&dependent) {
                    *count -= 1;
                    if *count == 0 {
                        missing.remove(&dependent);
                        ready.push_back(dependent);
                    }
                }
            }
        }
        // What is left waits. A new change must be able to fit when its dependencies come: a
        // sequence number its actor has already used (or another waiting change has) never will.
        let joined_set: HashSet<&ChangeHash> = joined.iter().collect();
        let mut waiting_slots: HashMap<(&[u8], u64), ChangeHash> = HashMap::new();
        let mut per_actor: HashMap<&[u8], usize> = HashMap::new();
        let mut stale: Vec<ChangeHash> = Vec::new();
        for (hash, change) in self.queue.iter().chain(pending.iter()) {
            if joined_set.contains(hash) || dropped.contains(hash) {
                continue;
            }
            let actor = change.actor_id().to_bytes();
            let have = taken
                .get(actor)
                .copied()
                .unwrap_or_else(|| self.actor_seq(actor));
            let slot = (actor, change.seq());
            let fits =
                change.seq() > have && waiting_slots.get(&slot).is_none_or(|other| other == hash);
            if !fits {
                if pending.contains_key(hash) {
                    return Err(GraphError::BadSequence {
                        hash: *hash,
                        seq: change.seq(),
                        have,
                    });
                }
                stale.push(*hash);
                continue;
            }
            let fresh = pending.contains_key(hash);
            waiting_slots.insert(slot, *hash);
            let count = per_actor.entry(actor).or_default();
            *count += 1;
            if fresh && *count > MAX_QUEUED_PER_ACTOR {
                return Err(GraphError::QueueFull);
            }
        }
        dropped.extend(stale);
        // Dropping a queued change drops what waits on it.
        let mut stack: Vec<ChangeHash> = dropped.iter().copied().collect();
        while let Some(hash) = stack.pop() {
            for dependent in dependents.get(&hash).into_iter().flatten() {
                if self.queue.contains_key(dependent) && dropped.insert(*dependent) {
                    stack.push(*dependent);
                }
            }
        }
        let waiting = self.queue.len() + pending.len() - joined.len() - dropped.len();
        let waiting_bytes: usize = if waiting == 0 {
            0
        } else {
            pending
                .iter()
                .chain(self.queue.iter())
                .filter(|(hash, _)| !joined_set.contains(hash) && !dropped.contains(hash))
                .map(|(_, change)| change.raw_bytes().len())
                .sum()
        };
        if waiting > MAX_QUEUED || waiting_bytes > MAX_QUEUED_BYTES {
            return Err(GraphError::QueueFull);
        }
        let joining_bytes: usize = joined
            .iter()
            .map(|hash| by_hash[hash].raw_bytes().len())
            .sum();
        if self.bytes + joining_bytes > max_bytes {
            return Err(GraphError::OverLimit(format!(
                "the document would pass {MAX_DOCUMENT_BYTES} bytes of changes"
            )));
        }
        // Commit the plan.
        let count = joined.len();
        for hash in &dropped {
            self.queue.remove(hash);
        }
        for hash in joined {
            let change = match pending.remove(&hash) {
                Some(change) => change,
                None => self
                    .queue
                    .remove(&hash)
                    .expect("a planned change is pending or queued"),
            };
            self.insert(change);
        }
        self.queue.extend(pending);
        self.queued_bytes = waiting_bytes;
        Ok(count)
    }

    /// How many changes of `actor` the graph holds (its last sequence number).
    fn actor_seq(&self, actor: &[u8]) -> u64 {
        self.seqs.get(actor).copied().unwrap_or(0)
    }

    /// Every held change that is not an ancestor of (or one of) `heads`, in causal order.
    /// Hashes in `heads` the graph does not hold are ignored. Walks the changes newer than the
    /// oldest one it returns (with a log factor): when `heads` are recent, a handful, whatever
    /// the document's history.
    pub fn hashes_since(&self, heads: &[ChangeHash]) -> Vec<ChangeHash> {
        const SINCE: u8 = 1;
        const STALE: u8 = 2;
        // The frontier, newest first: a change's dependencies always have smaller indices, so
        // when the newest is taken its marks are final.
        let mut frontier: BTreeMap<usize, u8> = BTreeMap::new();
        let mut since_only = 0usize;
        let mark = |frontier: &mut BTreeMap<usize, u8>, since_only: &mut usize, i: usize, m: u8| {
            let entry = frontier.entry(i).or_insert(0);
            let before = *entry;
            *entry |= m;
            let was = before == SINCE;
            let is = *entry == SINCE;
            match (was, is) {
                (false, true) => *since_only += 1,
                (true, false) => *since_only -= 1,
                _ => {}
            }
        };
        for head in &self.heads {
            mark(&mut frontier, &mut since_only, self.by_hash[head], SINCE);
        }
        for head in heads {
            if let Some(&i) = self.by_hash.get(head) {
                mark(&mut frontier, &mut since_only, i, STALE);
            }
        }
        let mut out = Vec::new();
        while since_only > 0 {
            let Some((i, marks)) = frontier.pop_last() else {
                break;
            };
            if marks == SINCE {
                since_only -= 1;
                out.push(self.nodes[i].hash);
            }
            for dep in &self.nodes[i].deps {
                mark(&mut frontier, &mut since_only, self.by_hash[dep], marks);
            }
        }
        out.reverse();
        out
    }

    /// The hashes among `start` (and, through changes waiting in the queue, their
    /// dependencies) that the graph lacks: what to ask a peer for. Sorted.
    pub fn missing_deps_from(&self, start: impl Iterator<Item = ChangeHash>) -> Vec<ChangeHash> {
        let mut missing = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<ChangeHash> = start.collect();
        while let Some(hash) = stack.pop() {
            if self.has_change(&hash) || !seen.insert(hash) {
                continue;
            }
            match self.queue.get(&hash) {
                Some(change) => stack.extend(change.deps().iter().copied()),
                None => {
                    missing.insert(hash);
                }
            }
        }
        missing.into_iter().collect()
    }

    fn insert(&mut self, change: Change) {
        let hash = change.hash();
        self.seqs
            .insert(change.actor_id().to_bytes().to_vec(), change.seq());
        for dep in change.deps() {
            self.heads.remove(dep);
        }
        self.heads.insert(hash);
        self.by_hash.insert(hash, self.nodes.len());
        let raw = change.raw_bytes().to_vec();
        self.bytes += raw.len() + NODE_OVERHEAD + 32 * change.deps().len();
        self.nodes.push(Node {
            hash,
            deps: change.deps().to_vec(),
            raw,
        });
    }
}

/// Magic bytes that open every Automerge chunk.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk types (Automerge's storage format).
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;

/// What one stored chunk may cost to decode: the most a frame's payload may be configured to
/// cost (stored chunks were each checked against the relay's limits when received), which is
/// also what a device accepts per document from the relay.
pub const STORED_CHUNK_LIMITS: PayloadLimits = PayloadLimits {
    max_inflated_bytes: 128 << 20,
    max_ops: 16_000_000,
};

/// Decodes `bytes` (one or more concatenated Automerge chunks: changes, compressed changes or
/// saved documents), spending from `budget` (checked before Automerge sees the bytes), into
/// changes. Change chunks are parsed on their own; other
/// chunks are loaded with Automerge (strictly) and their changes taken out, which costs in
/// proportion to the document, so devices normally send changes.
///
/// # Errors
/// [`GraphError::Undecodable`] when any part does not decode completely.
pub fn parse_changes(bytes: &[u8], budget: &mut Budget) -> Result<Vec<Change>, GraphError> {
    check_payload(bytes, budget)?;
    parse_checked(bytes)
}

/// Checks what decoding `bytes` would cost, spending from `budget`, without decoding them:
/// Automerge inflates and walks whatever a chunk claims, so a frame's chunks are all checked
/// before any is parsed.
///
/// # Errors
/// [`GraphError::OverLimit`] past the budget, [`GraphError::Undecodable`] for bytes that are
/// not well-formed chunks.
pub fn check_payload(bytes: &[u8], budget: &mut Budget) -> Result<(), GraphError> {
    budget.check(bytes).map(drop).map_err(|e| {
        if e.is_limit() {
            GraphError::OverLimit(e.to_string())
        } else {
            GraphError::Undecodable(e.to_string())
        }
    })
}

/// [`parse_changes`] of bytes [`check_payload`] accepted.
///
/// # Errors
/// [`GraphError::Undecodable`] when any part does not decode completely.
pub fn parse_checked(bytes: &[u8]) -> Result<Vec<Change>, GraphError> {
    let mut changes = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (kind, len) = chunk_header(rest)?;
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        if kind == CHUNK_CHANGE || kind == CHUNK_COMPRESSED {
            // Automerge's parser is meant to be total; should hostile input make it panic all
            // the same, that input is undecodable, not the end of the session or the hub.
            let change = std::panic::catch_unwind(|| Change::try_from(chunk))
                .map_err(|_| GraphError::Undecodable("Automerge panicked parsing it".into()))?
                .map_err(|e| GraphError::Undecodable(e.to_string()))?;
            // `Change::try_from` computes the hash but does not compare the header's checksum
            // (its first four bytes) with it, as loading does; a compressed chunk carries the
            // checksum of the change inside.
            if chunk[4..8] != change.hash().0[..4] {
                return Err(GraphError::Undecodable("checksum mismatch".into()));
            }
            // Operations that name an actor the change does not list decode, but no peer can
            // apply them; expanding the operations (cheap) finds them.
            if std::panic::catch_unwind(|| change.decode()).is_err() {
                return Err(GraphError::Undecodable(
                    "an operation names an actor the change does not list".into(),
                ));
            }
            changes.push(change);
        } else {
            changes.extend(load_whole(chunk)?);
        }
    }
    Ok(changes)
}

/// The type and total length (header included) of the chunk `bytes` starts with.
fn chunk_header(bytes: &[u8]) -> Result<(u8, usize), GraphError> {
    let undecodable = |why: &str| GraphError::Undecodable(why.to_owned());
    if bytes.len() < 9 || bytes[..4] != MAGIC {
        return Err(undecodable("not an Automerge chunk"));
    }
    let kind = bytes[8];
    let mut length: u64 = 0;
    let mut shift = 0u32;
    let mut at = 9;
    loop {
        let byte = *bytes
            .get(at)
            .ok_or_else(|| undecodable("truncated chunk header"))?;
        at += 1;
        if shift >= 64 {
            return Err(undecodable("chunk length overflows"));
        }
        length |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let total = usize::try_from(length)
        .ok()
        .and_then(|l| l.checked_add(at))
        .filter(|&t| t <= bytes.len())
        .ok_or_else(|| undecodable("truncated chunk"))?;
    Ok((kind, total))
}

/// The changes of a saved document or bundle chunk, through Automerge (strict loading; a
/// panic inside Automerge on hostile input is contained and counts as undecodable).
fn load_whole(chunk: &[u8]) -> Result<Vec<Change>, GraphError> {
    let strict = LoadOptions::new().on_partial_load(OnPartialLoad::Error);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Automerge::load_with_options(chunk, strict).map(|doc| doc.get_changes(&[]))
    }))
    .map_err(|_| GraphError::Undecodable("Automerge panicked loading it".into()))?
    .map_err(|e| GraphError::Undecodable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ROOT};

    fn change(doc: &mut Automerge, value: i64) -> Vec<u8> {
        let mut tx = doc.transaction();
        tx.put(ROOT, "n", value).expect("put");
        tx.commit();
        doc.get_last_local_change()
            .expect("a change")
            .raw_bytes()
            .to_vec()
    }

    fn parsed(bytes: &[u8]) -> Vec<Change> {
        parse_changes(bytes, &mut Budget::new(PayloadLimits::DEFAULT)).expect("decodes")
    }

    #[test]
    fn heads_and_order_follow_automerge() {
        let mut a = Automerge::new().with_actor(ActorId::from(b"aaaa".as_slice()));
        let mut b = a.fork().with_actor(ActorId::from(b"bbbb".as_slice()));
        let first = change(&mut a, 1);
        b.load_incremental(&first).expect("load");
        let from_a = change(&mut a, 2);
        let from_b = change(&mut b, 3);
        let mut graph = DocGraph::new();
        // Out of order: the dependents wait for the first change, then all join.
        assert_eq!(graph.add(parsed(&from_b), None), Ok(0));
        assert_eq!(graph.add(parsed(&from_a), None), Ok(0));
        assert_eq!(
            graph.missing_deps_from(graph.queue.keys().copied()).len(),
            1
        );
        assert_eq!(graph.add(parsed(&first), None), Ok(3));
        a.load_incremental(&from_b).expect("merge");
        assert_eq!(graph.heads(), a.get_heads());
        let first_hash = parsed(&first)[0].hash();
        let since = graph.hashes_since(&[first_hash]);
        assert_eq!(since.len(), 2);
        assert_eq!(graph.hashes_since(&graph.heads()), Vec::<ChangeHash>::new());
        assert_eq!(graph.hashes_since(&[]).first(), Some(&first_hash));
        // What the graph would store loads back into the same document.
        let mut loaded = Automerge::new();
        loaded.load_incremental(&graph.raw_since(0)).expect("load");
        assert_eq!(loaded.get_heads(), a.get_heads());
    }

    #[test]
    fn a_saved_document_is_taken_apart_into_its_changes() {
        let mut doc = Automerge::new();
        for i in 0..5 {
            change(&mut doc, i);
        }
        let graph = DocGraph::load([doc.save().as_slice()]).expect("loads");
        assert_eq!(graph.len(), 5);
        assert_eq!(graph.heads(), doc.get_heads());
    }

    #[test]
    fn refusals_leave_the_graph_unchanged() {
        let mut doc = Automerge::new().with_actor(ActorId::from(b"dev1".as_slice()));
        let one = change(&mut doc, 1);
        let two = change(&mut doc, 2);
        let mut graph = DocGraph::new();
        assert!(matches!(
            graph.add(parsed(&one), Some(b"dev2")),
            Err(GraphError::Foreign { .. })
        ));
        assert!(graph.is_empty());
        graph.add(parsed(&one), Some(b"dev1")).expect("own change");
        // Held already: another device may resend it.
        assert_eq!(graph.add(parsed(&one), Some(b"dev2")), Ok(0));
        // A different change with an actor's taken sequence number.
        let mut fork = Automerge::new().with_actor(ActorId::from(b"dev1".as_slice()));
        let clash = change(&mut fork, 9);
        assert!(matches!(
            graph.add(parsed(&clash), None),
            Err(GraphError::BadSequence {
                seq: 1,
                have: 1,
                ..
            })
        ));
        assert_eq!(graph.len(), 1);
        assert_eq!(graph.add(parsed(&two), None), Ok(1));
        let mut truncated = two.clone();
        truncated.pop();
        assert!(matches!(
            parse_changes(&truncated, &mut Budget::new(PayloadLimits::DEFAULT)),
            Err(GraphError::Undecodable(_))
        ));
        assert!(matches!(
            parse_changes(b"garbage!!!", &mut Budget::new(PayloadLimits::DEFAULT)),
            Err(GraphError::Undecodable(_))
        ));
    }

    #[test]
    fn changes_waiting_for_dependencies_are_bounded() {
        let mut doc = Automerge::new();
        let first = change(&mut doc, 0);
        // Changes of half a MiB each (of text that does not compress) whose first dependency
        // never arrives.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut waiting = Vec::new();
        for _ in 0..40 {
            let big: String = (0..512 << 10)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from(b'a' + (seed % 26) as u8)
                })
                .collect();
            let mut tx = doc.transaction();
            tx.put(ROOT, "big", big.as_str()).expect("put");
            tx.commit();
            waiting.push(
                doc.get_last_local_change()
                    .expect("change")
                    .raw_bytes()
                    .to_vec(),
            );
        }
        let mut graph = DocGraph::new();
        let mut refused = None;
        for (i, bytes) in waiting.iter().enumerate() {
            match graph.add(parsed(bytes), None) {
                Ok(0) => {}
                Ok(n) => panic!("{n} joined without their dependency"),
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        let (at, error) = refused.expect("the queue is bounded");
        assert_eq!(error, GraphError::QueueFull);
        assert!(at > 0 && at < 40, "refused at {at}");
        assert!(graph.estimated_bytes() <= MAX_QUEUED_BYTES + (64 << 10));
        // Once the dependency arrives, what waited joins.
        assert_eq!(graph.add(parsed(&first), None), Ok(at + 1));
    }

    #[test]
    fn a_chunk_whose_checksum_does_not_match_is_refused() {
        let mut doc = Automerge::new();
        let mut bytes = change(&mut doc, 1);
        bytes[4] ^= 0xff;
        assert_eq!(
            parse_changes(&bytes, &mut Budget::new(PayloadLimits::DEFAULT)).map(|c| c.len()),
            Err(GraphError::Undecodable("checksum mismatch".into()))
        );
    }

    #[test]
    fn a_waiting_change_must_still_be_able_to_fit() {
        let actor = ActorId::from(b"dev1".as_slice());
        let mut doc = Automerge::new().with_actor(actor.clone());
        let one = change(&mut doc, 1);
        let mut fork = doc.fork().with_actor(actor.clone());
        let two = change(&mut doc, 2);
        let three = change(&mut doc, 3);
        // A different second change by the same actor: it and `two` cannot both join.
        let other_two = change(&mut fork, 20);
        let other_three = change(&mut fork, 30);
        let mut graph = DocGraph::new();
        graph.add(parsed(&one), None).expect("first");
        // `three` waits for `two`; a different change claiming the same (actor, 3) is refused
        // at once rather than left to fail whoever later sends `two`.
        assert_eq!(graph.add(parsed(&three), None), Ok(0));
        assert!(matches!(
            graph.add(parsed(&other_three), None),
            Err(GraphError::BadSequence { seq: 3, .. })
        ));
        // `other_two` joins; `two` is then a clash, refused rather than queued.
        assert_eq!(graph.add(parsed(&other_two), None), Ok(1));
        assert!(matches!(
            graph.add(parsed(&two), None),
            Err(GraphError::BadSequence {
                seq: 2,
                have: 2,
                ..
            })
        ));
        assert_eq!(graph.queue.len(), 1, "`three` still waits for `two`");
        // Once `other_three` joins, `three` can never fit: it is dropped, not left to fail
        // whoever comes next.
        assert_eq!(graph.add(parsed(&other_three), None), Ok(1));
        assert_eq!(graph.queue.len(), 0, "the stale waiting change was dropped");
        assert_eq!(graph.heads(), fork.get_heads());
    }

    #[test]
    fn one_actor_cannot_fill_a_documents_queue() {
        let mut doc = Automerge::new().with_actor(ActorId::from(b"dev1".as_slice()));
        let first = change(&mut doc, 0);
        let waiting: Vec<Vec<u8>> = (0..=MAX_QUEUED_PER_ACTOR)
            .map(|i| change(&mut doc, 1_000 + i64::try_from(i).expect("small")))
            .collect();
        let mut graph = DocGraph::new();
        for bytes in &waiting[..MAX_QUEUED_PER_ACTOR] {
            assert_eq!(graph.add(parsed(bytes), None), Ok(0));
        }
        assert_eq!(
            graph.add(parsed(&waiting[MAX_QUEUED_PER_ACTOR]), None),
            Err(GraphError::QueueFull)
        );
        assert_eq!(
            graph.add(parsed(&first), None),
            Ok(MAX_QUEUED_PER_ACTOR + 1)
        );
    }
}
