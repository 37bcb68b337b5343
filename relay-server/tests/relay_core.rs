//! The relay core without sockets: group commit across sessions, routing, slow consumers.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use syncline_protocol::close_code;
use syncline_protocol::messages::{CollectionSubscription, SyncItem, SyncMode};
use syncline_protocol::{Collection, DeviceId, Message, Priority};
use syncline_relay::Tenant;
use syncline_relay::auth::{CollectionSet, Grants, Identity};
use syncline_relay::hub::{Hub, SessionId};
use syncline_relay::relay_core::{Backlog, Input, OutboxLimits, Output, Queued, RelayCore};
use syncline_relay::session::Action;
use syncline_relay::storage::MemoryStorage;

fn notes() -> Collection {
    Collection::new("notes").expect("valid")
}

fn identity(n: u8) -> (Identity, Grants) {
    let all = CollectionSet::Only(BTreeSet::from([notes()]));
    (
        Identity {
            user: format!("u{n}"),
            device: DeviceId::from_bytes([n; 16]),
            tenant: Tenant::new("t").expect("valid"),
        },
        Grants {
            read: all.clone(),
            write: all,
        },
    )
}

/// A first sync message for a new document `notes/d{n}` holding one change by device `n`.
fn item(n: u8, doc: u8) -> SyncItem {
    let mut automerge = Automerge::new().with_actor(automerge::ActorId::from([n; 16].as_slice()));
    let mut tx = automerge.transaction();
    tx.put(ROOT, "n", i64::from(doc)).expect("put");
    tx.commit();
    let mut state = syncline_protocol::sync_state::primed(Vec::new());
    let message = automerge
        .generate_sync_message(&mut state)
        .expect("a message");
    SyncItem {
        doc: format!("notes/d{doc}").parse().expect("valid"),
        message: message.encode(),
        priority: None,
    }
}

/// Backlogs set by the test.
#[derive(Default)]
struct Backlogs(HashMap<SessionId, Queued>);

impl Backlog for Backlogs {
    fn queued(&self, id: SessionId) -> Queued {
        self.0.get(&id).copied().unwrap_or_default()
    }
}

fn core(limits: OutboxLimits, sessions: u8) -> RelayCore<MemoryStorage> {
    let mut core = RelayCore::new(Hub::new(Arc::new(MemoryStorage::new())), limits);
    for n in 1..=sessions {
        let (identity, grants) = identity(n);
        core.push(
            Input::Connect {
                id: SessionId::from(n),
                identity,
                grants,
            },
            0,
        );
        core.push(
            Input::Action {
                id: SessionId::from(n),
                action: Action::Subscribe(vec![CollectionSubscription {
                    collection: notes(),
                    priority: Priority::Normal,
                    mode: SyncMode::Eager,
                }]),
            },
            0,
        );
    }
    core
}

const ROOMY: OutboxLimits = OutboxLimits {
    messages: 1024,
    bytes: 64 << 20,
};

fn sends_to(outputs: &[Output], to: SessionId) -> Vec<&Message> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { to: t, message, .. } if *t == to => Some(message),
            _ => None,
        })
        .collect()
}

#[test]
fn sync_frames_queued_together_are_one_group_commit_and_fan_out() {
    // Three writers and a fourth session that only reads.
    let mut core = core(ROOMY, 4);
    let backlog = Backlogs::default();
    core.poll(&backlog);
    for n in 1..=3u8 {
        core.push(
            Input::Action {
                id: SessionId::from(n),
                action: Action::Sync(vec![item(n, n)]),
            },
            1,
        );
    }
    let outputs = core.poll(&backlog);
    let stats = core.stats();
    assert_eq!(stats.groups, 1, "three frames, one group");
    assert_eq!(stats.grouped_frames, 3);
    assert_eq!(stats.shared_groups, 1);
    for n in 1..=3u64 {
        let to_n = sends_to(&outputs, n);
        assert!(
            to_n.iter().any(|m| matches!(m, Message::Ack(_))),
            "session {n} is acknowledged"
        );
        // Each gets the other two documents by fan-out.
        let fanned: usize = to_n
            .iter()
            .filter_map(|m| match m {
                Message::Sync(s) => Some(s.items.len()),
                _ => None,
            })
            .sum();
        assert_eq!(fanned, 2, "session {n} gets the others' documents");
    }
    // What the turn's senders get is not counted against them (they are reading: they just
    // wrote); fan-out to the reader is.
    for output in &outputs {
        if let Output::Send {
            to,
            message,
            counted,
            ..
        } = output
        {
            match (to, message) {
                (4, Message::Sync(s)) => assert_eq!(s.items.len(), 3, "the reader gets all three"),
                (4, _) => {}
                (_, _) => assert_eq!(*counted, 0, "an answer within the sender's own turn"),
            }
            if *to == 4 {
                assert!(*counted > 0, "fan-out to a reader counts");
            }
        }
    }
}

#[test]
fn another_input_between_sync_frames_splits_the_group_and_keeps_order() {
    let mut core = core(ROOMY, 2);
    let backlog = Backlogs::default();
    core.poll(&backlog);
    core.push(
        Input::Action {
            id: 1,
            action: Action::Sync(vec![item(1, 1)]),
        },
        1,
    );
    core.push(Input::Disconnect { id: 2 }, 1);
    core.push(
        Input::Action {
            id: 1,
            action: Action::Sync(vec![item(1, 2)]),
        },
        1,
    );
    let outputs = core.poll(&backlog);
    assert_eq!(core.stats().groups, 2);
    // In order: session 2 gets d1 (it was still there), never d2 (it had left).
    let docs_to_2: Vec<String> = sends_to(&outputs, 2)
        .into_iter()
        .filter_map(|m| match m {
            Message::Sync(s) => Some(
                s.items
                    .iter()
                    .map(|i| i.doc.to_string())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(docs_to_2, vec!["notes/d1".to_string()]);
}

#[test]
fn a_connection_that_cannot_keep_up_is_closed_and_sent_nothing_more() {
    let limits = OutboxLimits {
        messages: 4,
        bytes: 64 << 20,
    };
    let mut core = core(limits, 2);
    let mut backlog = Backlogs::default();
    core.poll(&backlog);
    // Session 2 has not taken the last four messages it was given.
    backlog.0.insert(
        2,
        Queued {
            messages: 4,
            bytes: 400,
        },
    );
    core.push(
        Input::Action {
            id: 1,
            action: Action::Sync(vec![item(1, 1)]),
        },
        1,
    );
    let outputs = core.poll(&backlog);
    assert!(
        outputs.iter().any(|o| matches!(
            o,
            Output::Close { to: 2, code, .. } if *code == close_code::SLOW_CONSUMER
        )),
        "{outputs:?}"
    );
    assert!(sends_to(&outputs, 2).is_empty());
    assert!(!sends_to(&outputs, 1).is_empty(), "the writer is answered");
    assert_eq!(core.stats().slow_consumers, 1);
    // Later changes are not routed to it, though its Disconnect has not arrived yet.
    core.push(
        Input::Action {
            id: 1,
            action: Action::Sync(vec![item(1, 2)]),
        },
        2,
    );
    let outputs = core.poll(&Backlogs::default());
    assert!(sends_to(&outputs, 2).is_empty());
    assert!(!outputs.iter().any(|o| matches!(o, Output::Close { .. })));
}

#[test]
fn the_byte_bound_counts_what_this_turn_adds() {
    // A bound of one small message's bytes: the first fan-out to session 3 fits (its queue
    // was empty), the second of the same turn does not.
    let limits = OutboxLimits {
        messages: 1024,
        bytes: 64,
    };
    let mut core = core(limits, 3);
    let backlog = Backlogs::default();
    core.poll(&backlog);
    for n in 1..=2u8 {
        core.push(
            Input::Action {
                id: SessionId::from(n),
                action: Action::Sync(vec![item(n, n)]),
            },
            1,
        );
        // Separate groups: a Subscribe in between.
        core.push(
            Input::Action {
                id: 3,
                action: Action::Subscribe(vec![CollectionSubscription {
                    collection: notes(),
                    priority: Priority::Normal,
                    mode: SyncMode::Eager,
                }]),
            },
            1,
        );
    }
    let outputs = core.poll(&backlog);
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Close { to: 3, .. })),
        "{outputs:?}"
    );
}

#[test]
fn ephemerals_are_shared_and_never_push_a_backlogged_connection_over_its_limit() {
    use syncline_protocol::messages::Ephemeral;
    let limits = OutboxLimits {
        messages: 64,
        bytes: 64 << 10,
    };
    let mut core = core(limits, 3);
    let mut backlog = Backlogs::default();
    core.poll(&backlog);
    // Session 3 is slow: most of its outbox is already queued.
    backlog.0.insert(
        SessionId::from(3u8),
        Queued {
            messages: 40,
            bytes: 48 << 10,
        },
    );
    let payload: Arc<[u8]> = vec![7u8; 4096].into();
    for _ in 0..200 {
        core.push(
            Input::Action {
                id: SessionId::from(1u8),
                action: Action::Ephemeral(Ephemeral {
                    doc: "notes/d1".parse().expect("valid"),
                    payload: Arc::clone(&payload),
                    from: Some(DeviceId::from_bytes([1; 16])),
                }),
            },
            1,
        );
    }
    let outputs = core.poll(&backlog);
    assert!(
        !outputs.iter().any(|o| matches!(o, Output::Close { .. })),
        "nobody is closed for another device's presence"
    );
    assert!(sends_to(&outputs, SessionId::from(3u8)).is_empty());
    let to_two = sends_to(&outputs, SessionId::from(2u8));
    assert!(!to_two.is_empty() && to_two.len() < 200, "{}", to_two.len());
    // One payload in memory however many receive it.
    assert!(
        to_two
            .iter()
            .all(|m| matches!(m, Message::Ephemeral(e) if Arc::ptr_eq(&e.payload, &payload)))
    );
    assert!(core.stats().ephemerals_dropped >= 200);
}

#[test]
fn a_device_id_stays_with_the_user_who_first_connected_it() {
    let mut core = core(ROOMY, 1);
    let backlog = Backlogs::default();
    assert!(core.poll(&backlog).is_empty());
    let (mut stolen, grants) = identity(1);
    stolen.user = "mallory".into();
    core.push(
        Input::Connect {
            id: SessionId::from(9u8),
            identity: stolen,
            grants,
        },
        1,
    );
    let outputs = core.poll(&backlog);
    assert!(
        outputs.iter().any(|o| matches!(
            o,
            Output::Close { to, code, .. } if *to == SessionId::from(9u8) && *code == close_code::DEVICE_OWNED
        )),
        "{outputs:?}"
    );
    // The owner connects again as before.
    let (owner, grants) = identity(1);
    core.push(
        Input::Connect {
            id: SessionId::from(10u8),
            identity: owner,
            grants,
        },
        2,
    );
    assert!(core.poll(&backlog).is_empty());
}
