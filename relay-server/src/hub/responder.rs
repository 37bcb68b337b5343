//! Automerge's sync protocol, answered from a [`DocGraph`] instead of a materialised document.
//!
//! [`generate_sync_message`] and [`receive_sync_message`] follow Automerge 0.12's
//! `SyncDoc` implementation step for step, on the same `automerge::sync::State`, so a device
//! running Automerge cannot tell the relay from an Automerge peer (and the relay's saved
//! states and `syncline_protocol::sync_state` priming keep working). The differences are all
//! on the relay's side of the wire:
//! - the relay's messages are V1 and carry no flags: it sends changes, never a whole saved
//!   document (that would need the document), and a device then never needs to reset it;
//! - a message carries at most [`MAX_MESSAGE_CHANGE_BYTES`] of changes, oldest first: a longer
//!   history goes over several exchanges;
//! - received changes join the graph through [`DocGraph::add`], which refuses (all or nothing)
//!   what Automerge would panic on or silently drop, and checks authorship.

use std::collections::HashSet;

use automerge::ChangeHash;
use automerge::sync::{
    BloomFilter, Capability, ChunkList, Have, Message, MessageFlags, MessageVersion, State,
};

use syncline_protocol::payload::Budget;

use super::graph::{DocGraph, GraphError, check_payload, parse_checked};

/// Checks what Automerge itself trusts in a peer's message
/// ([`syncline_protocol::payload::check_sync_message`]).
///
/// # Errors
/// [`GraphError::Undecodable`] naming what is wrong.
pub fn check_message(message: &Message) -> Result<(), GraphError> {
    syncline_protocol::payload::check_sync_message(message)
        .map_err(|e| GraphError::Undecodable(e.to_string()))
}

/// The next message for the peer of `state`, or `None` when there is nothing to say (the
/// peer is up to date, or a message is in flight).
pub fn generate_sync_message(graph: &DocGraph, state: &mut State) -> Option<Message> {
    let our_heads = graph.heads();
    let our_need = if state.read_only {
        Vec::new()
    } else {
        graph.missing_deps_from(state.their_heads.iter().flatten().copied())
    };
    let their_heads: HashSet<&ChangeHash> = state.their_heads.iter().flatten().collect();
    let our_have = if our_need.iter().all(|hash| their_heads.contains(hash)) {
        vec![Have {
            last_sync: state.shared_heads.clone(),
            bloom: BloomFilter::from_hashes(graph.hashes_since(&state.shared_heads).iter()),
        }]
    } else {
        Vec::new()
    };
    if let Some(first) = state.their_have.as_ref().and_then(|h| h.first())
        && !first.last_sync.iter().all(|hash| graph.has_change(hash))
    {
        // The peer synced with a state of the document we do not have: start over.
        return Some(Message {
            heads: our_heads,
            need: Vec::new(),
            have: vec![Have::default()],
            changes: ChunkList::empty(),
            flags: None,
            version: MessageVersion::V1,
        });
    }
    let to_send: Vec<ChangeHash> = if state.peer_read_only {
        Vec::new()
    } else if let (Some(have), Some(need)) = (&state.their_have, &state.their_need) {
        hashes_to_send(graph, have, need)
            .into_iter()
            .filter(|hash| !state.sent_hashes.contains(hash))
            .collect()
    } else {
        Vec::new()
    };
    // A long history goes in several messages: each exchange sends the oldest part still
    // unsent, the device answers, and the next part follows (Automerge's own `need` and
    // `sent_hashes` carry the rest), so no document is too large for a frame.
    let to_send = within_message(graph, to_send);
    let heads_unchanged = state.last_sent_heads == our_heads;
    let heads_equal = state.their_heads.as_ref() == Some(&our_heads);
    if heads_unchanged && state.have_responded {
        if (heads_equal || state.read_only) && to_send.is_empty() {
            return None;
        }
        if state.in_flight {
            return None;
        }
    }
    state.have_responded = true;
    state.last_sent_heads.clone_from(&our_heads);
    state.sent_hashes.extend(to_send.iter().copied());
    state.in_flight = true;
    Some(Message {
        heads: our_heads,
        need: our_need,
        have: our_have,
        changes: ChunkList::from(graph.raw_changes(&to_send)),
        flags: None,
        version: MessageVersion::V1,
    })
}

/// Applies a message from the peer of `state`: its changes join the graph (by `author` only,
/// when given, or changes the graph already holds), and the state learns the peer's heads,
/// needs and Bloom filter. Its payload spends from `budget` (checked before it is decoded).
/// Returns how many changes joined the graph.
///
/// # Errors
/// [`GraphError`] when the message's changes are refused; then neither the graph nor `state`
/// changed.
pub fn receive_sync_message(
    graph: &mut DocGraph,
    state: &mut State,
    message: Message,
    author: Option<&[u8]>,
    budget: &mut Budget,
) -> Result<usize, GraphError> {
    check_message(&message)?;
    let before: Vec<ChangeHash> = graph.heads();
    let mut joined = 0;
    let changes_is_empty = message.changes.is_empty();
    if !changes_is_empty && !state.read_only {
        for chunk in message.changes.iter() {
            check_payload(chunk, budget)?;
        }
        let mut changes = Vec::new();
        for chunk in message.changes.iter() {
            changes.extend(parse_checked(chunk)?);
        }
        joined = graph.add(changes, author)?;
    }
    state.in_flight = false;
    if let Some(flags) = message.flags {
        let mut capabilities = vec![Capability::MessageV2];
        if flags.contains(MessageFlags::SUPPORTS_SYNC_RESET) {
            capabilities.push(Capability::SyncReset);
        }
        state.their_capabilities = Some(capabilities);
        if flags.contains(MessageFlags::SYNC_RESET) {
            state.sent_hashes.clear();
        }
        state.peer_read_only = flags.contains(MessageFlags::READ_ONLY);
    }
    if !changes_is_empty && !state.read_only {
        state.shared_heads = advance_heads(&before, &graph.heads(), &state.shared_heads);
    }
    // Forget the sent changes the peer now has: keep those that are not ancestors of its heads.
    if !state.sent_hashes.is_empty() {
        let known: Vec<ChangeHash> = message
            .heads
            .iter()
            .filter(|h| graph.has_change(h))
            .copied()
            .collect();
        let unseen: HashSet<ChangeHash> = graph.hashes_since(&known).into_iter().collect();
        state.sent_hashes.retain(|h| unseen.contains(h));
    }
    if changes_is_empty && message.heads == before {
        state.last_sent_heads.clone_from(&message.heads);
    }
    let known_heads: Vec<ChangeHash> = message
        .heads
        .iter()
        .filter(|head| graph.has_change(head))
        .copied()
        .collect();
    if known_heads.len() == message.heads.len() {
        state.shared_heads.clone_from(&message.heads);
        if message.heads.is_empty() {
            // The peer lost everything: send it all again.
            state.last_sent_heads = Vec::new();
            state.sent_hashes = Default::default();
        }
    } else {
        let mut shared: Vec<ChangeHash> = state
            .shared_heads
            .iter()
            .chain(known_heads.iter())
            .copied()
            .collect();
        shared.sort();
        shared.dedup();
        state.shared_heads = shared;
    }
    state.their_have = Some(message.have);
    state.their_heads = Some(message.heads);
    state.their_need = Some(message.need);
    Ok(joined)
}

/// Bytes of changes one sync message from the relay carries at most (a single larger change
/// goes alone): a document's history larger than a frame reaches a new device in parts.
pub use syncline_protocol::messages::MAX_MESSAGE_CHANGE_BYTES;

/// The longest prefix of `hashes` (in causal order) within [`MAX_MESSAGE_CHANGE_BYTES`], and
/// at least the first.
fn within_message(graph: &DocGraph, mut hashes: Vec<ChangeHash>) -> Vec<ChangeHash> {
    let mut bytes = 0usize;
    let keep = hashes
        .iter()
        .position(|hash| {
            bytes += graph.raw_len(hash);
            bytes > MAX_MESSAGE_CHANGE_BYTES
        })
        .map_or(hashes.len(), |at| at.max(1));
    hashes.truncate(keep);
    hashes
}

/// The changes to send a peer that has `have` (Bloom filters of what it added since each
/// `last_sync`) and asks for `need`: those its filters do not contain, everything that depends
/// on them, and what it asked for, in causal order (Automerge's `get_hashes_to_send`).
fn hashes_to_send(graph: &DocGraph, have: &[Have], need: &[ChangeHash]) -> Vec<ChangeHash> {
    let mut seen = HashSet::new();
    let need: Vec<ChangeHash> = need
        .iter()
        .filter(|hash| graph.has_change(hash) && seen.insert(**hash))
        .copied()
        .collect();
    if have.is_empty() {
        return need;
    }
    let mut last_sync: Vec<ChangeHash> = have
        .iter()
        .flat_map(|h| h.last_sync.iter().copied())
        .collect();
    last_sync.sort();
    last_sync.dedup();
    let hashes = graph.hashes_since(&last_sync);
    let mut dependents: std::collections::HashMap<ChangeHash, Vec<ChangeHash>> =
        std::collections::HashMap::new();
    let mut to_send: HashSet<ChangeHash> = HashSet::new();
    for hash in &hashes {
        for dep in graph.deps(hash).unwrap_or_default() {
            dependents.entry(*dep).or_default().push(*hash);
        }
        if have.iter().all(|h| !h.bloom.contains_hash(hash)) {
            to_send.insert(*hash);
        }
    }
    let mut stack: Vec<ChangeHash> = to_send.iter().copied().collect();
    while let Some(hash) = stack.pop() {
        for dependent in dependents.get(&hash).into_iter().flatten() {
            if to_send.insert(*dependent) {
                stack.push(*dependent);
            }
        }
    }
    let mut out: Vec<ChangeHash> = need
        .into_iter()
        .filter(|hash| !to_send.contains(hash))
        .collect();
    out.extend(hashes.into_iter().filter(|hash| to_send.contains(hash)));
    out
}

/// The shared heads after our heads moved from `before` to `after` by applying the peer's
/// changes: our new heads, and the old shared heads that are still heads.
fn advance_heads(
    before: &[ChangeHash],
    after: &[ChangeHash],
    shared: &[ChangeHash],
) -> Vec<ChangeHash> {
    let before: HashSet<&ChangeHash> = before.iter().collect();
    let after_set: HashSet<&ChangeHash> = after.iter().collect();
    let mut advanced: Vec<ChangeHash> = after
        .iter()
        .filter(|head| !before.contains(head))
        .chain(shared.iter().filter(|head| after_set.contains(head)))
        .copied()
        .collect();
    advanced.sort();
    advanced.dedup();
    advanced
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::sync::SyncDoc;
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT};

    use syncline_protocol::payload::{MAX_HAVES, MAX_NEEDS};

    fn budget() -> Budget {
        Budget::new(syncline_protocol::PayloadLimits::DEFAULT)
    }

    fn put(doc: &mut Automerge, key: &str, value: i64) {
        let mut tx = doc.transaction();
        tx.put(ROOT, key, value).expect("put");
        tx.commit();
    }

    /// Runs the protocol between an Automerge device and the graph until both are quiet.
    fn exchange(
        device: &mut Automerge,
        device_state: &mut State,
        graph: &mut DocGraph,
        state: &mut State,
    ) -> usize {
        let mut messages = 0;
        for _ in 0..20 {
            let mut quiet = true;
            if let Some(m) = device.generate_sync_message(device_state) {
                let m = Message::decode(&m.encode()).expect("round trip");
                receive_sync_message(graph, state, m, None, &mut budget()).expect("relay applies");
                quiet = false;
                messages += 1;
            }
            if let Some(m) = generate_sync_message(graph, state) {
                let m = Message::decode(&m.encode()).expect("round trip");
                device
                    .receive_sync_message(device_state, m)
                    .expect("device applies");
                quiet = false;
                messages += 1;
            }
            if quiet {
                return messages;
            }
        }
        panic!("the sync did not settle");
    }

    /// A device, its sync state, and the relay's state for it.
    struct Device {
        doc: Automerge,
        state: State,
        at_relay: State,
    }

    impl Device {
        fn new() -> Self {
            Self {
                doc: Automerge::new(),
                state: State::new(),
                at_relay: State::new(),
            }
        }

        fn sync(&mut self, graph: &mut DocGraph) -> usize {
            exchange(&mut self.doc, &mut self.state, graph, &mut self.at_relay)
        }
    }

    #[test]
    fn two_devices_converge_through_the_graph() {
        let (mut phone, mut laptop) = (Device::new(), Device::new());
        put(&mut phone.doc, "a", 1);
        put(&mut phone.doc, "b", 2);
        put(&mut laptop.doc, "c", 3);
        let mut graph = DocGraph::new();
        phone.sync(&mut graph);
        laptop.sync(&mut graph);
        phone.sync(&mut graph);
        assert_eq!(phone.doc.get_heads(), laptop.doc.get_heads());
        assert_eq!(graph.heads(), phone.doc.get_heads());
        // Concurrent edits on both, then again.
        put(&mut phone.doc, "a", 10);
        put(&mut laptop.doc, "a", 20);
        laptop.sync(&mut graph);
        phone.sync(&mut graph);
        laptop.sync(&mut graph);
        assert_eq!(phone.doc.get_heads(), laptop.doc.get_heads());
        assert_eq!(graph.heads(), phone.doc.get_heads());
        // Nothing more to say once in sync.
        assert_eq!(phone.sync(&mut graph), 0);
    }

    #[test]
    fn a_device_that_lost_its_data_gets_everything_again() {
        let mut phone = Automerge::new();
        for i in 0..10 {
            put(&mut phone, "n", i);
        }
        let mut graph = DocGraph::new();
        let (mut phone_state, mut at_relay) = (State::new(), State::new());
        exchange(&mut phone, &mut phone_state, &mut graph, &mut at_relay);
        let mut fresh = Automerge::new();
        exchange(&mut fresh, &mut State::new(), &mut graph, &mut at_relay);
        assert_eq!(fresh.get_heads(), phone.get_heads());
    }

    #[test]
    fn a_refused_message_changes_neither_graph_nor_state() {
        let mut device = Automerge::new();
        put(&mut device, "a", 1);
        // Primed as a Syncline device primes a state for a relay that holds nothing: the first
        // message carries the whole document (a saved-document chunk).
        let mut device_state = syncline_protocol::sync_state::primed(Vec::new());
        let message = device
            .generate_sync_message(&mut device_state)
            .expect("message");
        assert!(!message.changes.is_empty());
        let mut graph = DocGraph::new();
        let mut state = State::new();
        let refused = receive_sync_message(
            &mut graph,
            &mut state,
            message,
            Some(b"someone else"),
            &mut budget(),
        );
        assert!(matches!(refused, Err(GraphError::Foreign { .. })));
        assert!(graph.is_empty());
        assert_eq!(state, State::new());
        // The same message from its author is taken apart into its change.
        let author = device.get_actor().to_bytes().to_vec();
        let message = device
            .generate_sync_message(&mut syncline_protocol::sync_state::primed(Vec::new()))
            .expect("message");
        assert_eq!(
            receive_sync_message(
                &mut graph,
                &mut state,
                message,
                Some(&author),
                &mut budget()
            ),
            Ok(1)
        );
        assert_eq!(graph.heads(), device.get_heads());
    }

    /// Replaces the encoding of `bloom` (length-prefixed) inside an encoded message.
    fn with_bloom_bytes(message: &[u8], bloom: &[u8], replacement: &[u8]) -> Vec<u8> {
        let mut needle = vec![u8::try_from(bloom.len()).expect("short")];
        needle.extend_from_slice(bloom);
        let at = message
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .expect("the filter is in the message");
        let mut out = message[..at].to_vec();
        out.push(u8::try_from(replacement.len()).expect("short"));
        out.extend_from_slice(replacement);
        out.extend_from_slice(&message[at + needle.len()..]);
        out
    }

    #[test]
    fn malformed_bloom_filters_and_oversized_lists_are_refused() {
        let mut device = Automerge::new();
        put(&mut device, "a", 1);
        let bloom = BloomFilter::from_hashes(device.get_heads().iter());
        let message = Message {
            heads: device.get_heads(),
            need: Vec::new(),
            have: vec![Have {
                last_sync: Vec::new(),
                bloom: bloom.clone(),
            }],
            changes: ChunkList::empty(),
            flags: None,
            version: MessageVersion::V1,
        };
        assert_eq!(check_message(&message), Ok(()));
        let encoded = message.clone().encode();
        // No bits to probe (Automerge would divide by zero), and four billion probes (it would
        // allocate for all of them).
        for replacement in [
            vec![1, 0, 1],
            vec![1, 10, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0],
        ] {
            let crafted = with_bloom_bytes(&encoded, &bloom.to_bytes(), &replacement);
            let decoded = Message::decode(&crafted).expect("Automerge decodes it");
            assert!(check_message(&decoded).is_err(), "{replacement:?}");
            let mut graph = DocGraph::new();
            let mut state = State::new();
            assert!(
                receive_sync_message(&mut graph, &mut state, decoded, None, &mut budget()).is_err()
            );
            assert_eq!(state, State::new());
        }
        let mut many = message.clone();
        many.have = vec![Have::default(); MAX_HAVES + 1];
        assert!(check_message(&many).is_err());
        let mut needy = message;
        needy.need = vec![device.get_heads()[0]; MAX_NEEDS + 1];
        assert!(check_message(&needy).is_err());
    }
}
