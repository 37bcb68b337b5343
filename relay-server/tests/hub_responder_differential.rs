//! Differential test of the relay's responder (`hub::responder`) against Automerge's own
//! `SyncDoc`: on random histories (a shared prefix, then changes on the device's side and on
//! the relay's side by several actors), a device syncing with the responder over a `DocGraph`
//! and the same device syncing with a plain Automerge relay exchange the same messages, round
//! by round, and end with the same heads.
//!
//! "The same message" is compared on what it means: heads, needs, Bloom filters and the set of
//! changes carried. The responder always sends V1 messages of raw changes with no flags, so
//! the Automerge twins exchange their messages without flags too (`as_v1_peer`): offered
//! flags, Automerge would switch to V2 and send a whole saved document instead of changes. Automerge is pinned exactly (`=0.12.0`)
//! in the workspace so this test holds the responder to the version it copies.

use std::collections::BTreeSet;

use automerge::sync::{Message, State, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ChangeHash};
use proptest::prelude::*;
use syncline_relay::hub::DocGraph;
use syncline_relay::hub::responder;

/// One change: which actor writes (0 = the device), which key, which value.
#[derive(Debug, Clone)]
struct Write {
    actor: u8,
    key: u8,
    value: u32,
}

fn budget() -> syncline_protocol::payload::Budget {
    syncline_protocol::payload::Budget::new(syncline_protocol::PayloadLimits::DEFAULT)
}

fn write() -> impl Strategy<Value = Write> {
    (0u8..3, 0u8..4, any::<u32>()).prop_map(|(actor, key, value)| Write { actor, key, value })
}

fn actor(n: u8) -> ActorId {
    ActorId::from([n + 1; 16].as_slice())
}

/// Applies `writes` to `doc`, each as one change by its actor, at a fixed time.
fn apply(doc: &mut Automerge, writes: &[Write]) {
    for w in writes {
        doc.set_actor(actor(w.actor));
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, format!("k{}", w.key), i64::from(w.value))
            .expect("put");
        tx.commit_with(CommitOptions::default().with_time(1));
    }
}

/// What a message says, independent of its encoding.
#[derive(Debug, PartialEq, Eq)]
struct Meaning {
    heads: Vec<ChangeHash>,
    need: Vec<ChangeHash>,
    have: Vec<(Vec<ChangeHash>, Vec<u8>)>,
    changes: BTreeSet<ChangeHash>,
}

fn meaning(message: &Message) -> Meaning {
    let mut changes = BTreeSet::new();
    for chunk in message.changes.iter() {
        match Change::try_from(chunk) {
            Ok(change) => {
                changes.insert(change.hash());
            }
            // A whole saved document (Automerge's V2 shortcut): every change in it.
            Err(_) => {
                let doc = Automerge::load(chunk).expect("a change or a document");
                changes.extend(doc.get_changes(&[]).iter().map(|c| c.hash()));
            }
        }
    }
    let mut heads = message.heads.clone();
    heads.sort();
    let mut need = message.need.clone();
    need.sort();
    Meaning {
        heads,
        need,
        have: message
            .have
            .iter()
            .map(|h| {
                let mut last = h.last_sync.clone();
                last.sort();
                (last, h.bloom.to_bytes())
            })
            .collect(),
        changes,
    }
}

/// `message` as a peer that speaks only V1 would send it: no flags, so no capabilities.
///
/// The responder never sends flags, so a device never offers it V2 shortcuts; the twins are
/// held to the same mode (an Automerge peer that was offered flags would answer with a whole
/// saved document where the responder sends changes).
fn as_v1_peer(mut message: Message) -> Message {
    message.flags = None;
    message.version = automerge::sync::MessageVersion::V1;
    message
}

/// Syncs a device with the responder and, in lock step, a copy of it with plain Automerge;
/// checks every relay message against its Automerge twin. Returns the rounds it took.
fn differential(shared: &[Write], device_only: &[Write], relay_only: &[Write]) -> usize {
    // After the fork, only the device writes as actor 0 and only others (1, 2) on the relay's
    // side: one actor writing on two copies would fork its own history.
    let device_only: Vec<Write> = device_only
        .iter()
        .map(|w| Write {
            actor: 0,
            ..w.clone()
        })
        .collect();
    let relay_only: Vec<Write> = relay_only
        .iter()
        .map(|w| Write {
            actor: 1 + w.actor % 2,
            ..w.clone()
        })
        .collect();
    let (device_only, relay_only) = (device_only.as_slice(), relay_only.as_slice());
    let mut base = Automerge::new();
    apply(&mut base, shared);
    let mut device = base.fork().with_actor(actor(0));
    apply(&mut device, device_only);
    let mut relay_doc = base.fork();
    apply(&mut relay_doc, relay_only);

    let mut graph = DocGraph::load([relay_doc.save().as_slice()]).expect("the relay's graph");
    let mut twin_device = device.clone();
    let mut twin_relay = relay_doc.clone();
    let (mut device_state, mut relay_state) = (State::new(), State::new());
    let (mut twin_device_state, mut twin_relay_state) = (State::new(), State::new());

    for round in 0..20 {
        let from_device = device.generate_sync_message(&mut device_state);
        let from_twin_device = twin_device.generate_sync_message(&mut twin_device_state);
        assert_eq!(
            from_device.as_ref().map(meaning),
            from_twin_device.as_ref().map(meaning),
            "round {round}: the two devices diverged"
        );
        if let (Some(m), Some(t)) = (from_device.clone(), from_twin_device.clone()) {
            responder::receive_sync_message(&mut graph, &mut relay_state, m, None, &mut budget())
                .expect("the responder takes the device's message");
            twin_relay
                .receive_sync_message(&mut twin_relay_state, as_v1_peer(t))
                .expect("Automerge takes the device's message");
        }
        let from_relay = responder::generate_sync_message(&graph, &mut relay_state);
        let from_twin_relay = twin_relay.generate_sync_message(&mut twin_relay_state);
        assert_eq!(
            from_relay.as_ref().map(meaning),
            from_twin_relay.as_ref().map(meaning),
            "round {round}: the responder answered unlike Automerge"
        );
        if from_device.is_none() && from_relay.is_none() {
            let mut heads = graph.heads();
            heads.sort();
            let mut twin_heads = twin_relay.get_heads();
            twin_heads.sort();
            assert_eq!(heads, twin_heads, "the relays hold the same changes");
            assert_eq!(device.get_heads(), twin_device.get_heads());
            let mut device_heads = device.get_heads();
            device_heads.sort();
            assert_eq!(device_heads, heads, "device and relay converged");
            return round;
        }
        if let Some(m) = from_relay {
            device
                .receive_sync_message(&mut device_state, m)
                .expect("the device takes the responder's message");
        }
        if let Some(m) = from_twin_relay {
            twin_device
                .receive_sync_message(&mut twin_device_state, as_v1_peer(m))
                .expect("the device takes Automerge's message");
        }
    }
    panic!("no convergence in 20 rounds");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_responder_answers_as_automerge_does(
        shared in prop::collection::vec(write(), 0..6),
        device_only in prop::collection::vec(write(), 0..6),
        relay_only in prop::collection::vec(write(), 0..6),
    ) {
        differential(&shared, &device_only, &relay_only);
    }
}

#[test]
fn empty_sides_and_a_fork_match_automerge() {
    let writes: Vec<Write> = (0..5)
        .map(|i| Write {
            actor: i % 3,
            key: i % 4,
            value: u32::from(i),
        })
        .collect();
    // Device empty, relay holding everything (and the reverse), and a fork.
    assert!(differential(&[], &[], &writes) >= 1);
    assert!(differential(&[], &writes, &[]) >= 1);
    assert!(differential(&writes[..2], &writes[2..3], &writes[3..]) >= 1);
}
