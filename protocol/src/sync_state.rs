//! The Automerge sync-state conventions both ends of a Syncline connection follow
//! (`docs/PROTOCOL.md`, "Sync states"). Only with the `automerge` feature.
//!
//! Automerge's sync protocol, started from a blank state, spends a round trip per document
//! exchanging heads and Bloom filters before any change moves. Syncline peers usually know
//! more: the relay keeps each device's last shared heads, and a device knows the heads the relay
//! has durably acknowledged. [`primed`] turns that knowledge into a state whose first message
//! already carries the changes the peer lacks, and [`settle`] keeps a peer from answering a
//! message that left both sides with equal heads.

use automerge::ChangeHash;
use automerge::sync::{BloomFilter, Capability, Have, State};

/// A sync state for a peer known to hold `shared` (and possibly more): its first message sends
/// every change after `shared`. With `shared` empty (a peer known to hold nothing of the
/// document) the first message is the whole compressed document.
///
/// If the peer in fact lacks part of `shared`, it answers with what it needs and Automerge's
/// protocol fills the gap; priming only skips the opening exchange, never correctness.
pub fn primed(shared: Vec<ChangeHash>) -> State {
    let mut state = State::new();
    state.their_have = Some(vec![Have {
        last_sync: shared.clone(),
        bloom: BloomFilter::default(),
    }]);
    state.their_need = Some(Vec::new());
    state.their_heads = Some(shared.clone());
    state.shared_heads = shared;
    state.their_capabilities = Some(vec![Capability::MessageV2, Capability::SyncReset]);
    state
}

/// A sync state for a peer whose holdings are unknown except for `shared` heads it had in
/// common earlier: Automerge's normal opening exchange, starting from `shared`.
pub fn resumed(shared: Vec<ChangeHash>) -> State {
    let mut state = State::new();
    state.shared_heads = shared;
    state
}

/// Marks `state` as having nothing to say when the peer's last known heads equal `ours`, so
/// the next `generate_sync_message` returns `None` instead of an echo of equal heads. Call it
/// before generating; it changes nothing when the heads differ.
pub fn settle(state: &mut State, ours: &[ChangeHash]) {
    if state.their_heads.as_deref() == Some(ours) {
        state.last_sent_heads = ours.to_vec();
        state.have_responded = true;
        state.shared_heads = ours.to_vec();
    }
}

/// Marks `state` as synced at `heads` after the peer durably acknowledged exactly the heads we
/// hold (a Syncline `Ack`): it holds them, nothing sent is in flight, and the next exchange
/// starts from there (so neither side walks the history before `heads` again).
pub fn acknowledged(state: &mut State, heads: Vec<ChangeHash>) {
    state.shared_heads.clone_from(&heads);
    state.their_heads = Some(heads.clone());
    state.their_need = Some(Vec::new());
    state.their_have = Some(vec![Have {
        last_sync: heads,
        bloom: BloomFilter::default(),
    }]);
    state.sent_hashes.clear();
    state.in_flight = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::sync::SyncDoc;
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT};

    fn doc_with(key: &str) -> Automerge {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, key, 1).expect("put");
        tx.commit();
        doc
    }

    #[test]
    fn a_primed_state_sends_the_changes_after_shared_in_the_first_message() {
        let mut ours = doc_with("a");
        let shared = ours.get_heads();
        let mut theirs = ours.fork();
        let mut tx = ours.transaction();
        tx.put(ROOT, "b", 2).expect("put");
        tx.commit();
        let mut state = primed(shared);
        let message = ours.generate_sync_message(&mut state).expect("a message");
        assert!(!message.changes.is_empty());
        theirs
            .receive_sync_message(&mut State::new(), message)
            .expect("applies");
        assert_eq!(theirs.get_heads(), ours.get_heads());
    }

    #[test]
    fn primed_with_nothing_sends_the_whole_document() {
        let ours = doc_with("a");
        let mut state = primed(Vec::new());
        let message = ours.generate_sync_message(&mut state).expect("a message");
        let mut theirs = Automerge::new();
        theirs
            .receive_sync_message(&mut State::new(), message)
            .expect("applies");
        assert_eq!(theirs.get_heads(), ours.get_heads());
    }

    #[test]
    fn a_settled_state_stays_silent_only_while_heads_are_equal() {
        let mut ours = doc_with("a");
        let heads = ours.get_heads();
        let mut state = primed(heads.clone());
        settle(&mut state, &heads);
        assert!(ours.generate_sync_message(&mut state).is_none());
        let mut tx = ours.transaction();
        tx.put(ROOT, "b", 2).expect("put");
        tx.commit();
        settle(&mut state, &ours.get_heads());
        let message = ours.generate_sync_message(&mut state).expect("a message");
        assert_eq!(message.changes.len(), 1);
    }
}
