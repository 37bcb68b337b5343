//! The document hub with simulated clients (plain Automerge documents) in one thread.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use common::{World, col, doc, grants, tenant};
use syncline_protocol::messages::*;
use syncline_protocol::{Collection, DeviceId, DocId, Message};
use syncline_relay::hub::{Hub, SessionId};
use syncline_relay::session::Action;
use syncline_relay::storage::Storage;

#[test]
fn changes_are_stored_acknowledged_and_fanned_out() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &["todos"]));
    w.join(2, "acme", grants(&["todos"], &["todos"]));
    let x = doc("todos/x");
    w.clients.get_mut(&1).expect("a").put(&x, "n", 42);
    w.push(1, std::slice::from_ref(&x));

    assert!(
        w.storage.load(&tenant("acme"), &x).expect("load").is_some(),
        "durable on the relay"
    );
    let a = &w.clients[&1];
    let ack = a.acked(&x).expect("acknowledged");
    let heads: Vec<[u8; 32]> = a.docs[&x].get_heads().iter().map(|h| h.0).collect();
    assert_eq!(
        ack.heads.as_slice().iter().map(|h| h.0).collect::<Vec<_>>(),
        heads
    );
    assert_eq!(ack.seq, Some(1));
    assert_eq!(
        w.clients[&2].get(&x, "n"),
        Some(42),
        "fanned out to the other device"
    );

    // And back: B edits, A receives.
    w.clients.get_mut(&2).expect("b").put(&x, "m", 7);
    w.push(2, std::slice::from_ref(&x));
    assert_eq!(w.clients[&1].get(&x, "m"), Some(7));
    assert_eq!(
        w.clients[&1].docs[&x].get_heads(),
        w.clients[&2].docs[&x].get_heads()
    );
}

#[test]
fn a_new_device_reconciles_from_its_cursor() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &["todos"]));
    for i in 0..5 {
        let d = doc(&format!("todos/d{i}"));
        w.clients.get_mut(&1).expect("a").put(&d, "i", i);
        w.push(1, &[d]);
    }
    w.join(3, "acme", grants(&["todos"], &[]));
    w.run(vec![(
        3,
        Action::Reconcile(Reconcile {
            cursors: vec![],
            changed: vec![],
            fetched: None,
            acked: None,
        }),
    )]);
    let c = &w.clients[&3];
    let Some(Message::Plan(plan)) = c
        .inbox
        .iter()
        .find(|m| matches!(m, Message::Plan(_)))
        .cloned()
    else {
        panic!("no plan")
    };
    assert_eq!(plan.send.len(), 5);
    let reached: Vec<(Collection, u64)> = plan
        .cursors
        .iter()
        .map(|c| (c.collection.clone(), c.seq))
        .collect();
    assert_eq!(reached, vec![(col("todos"), 5)]);
    assert!(
        plan.cursors
            .iter()
            .all(|c| c.epoch.is_some() && c.receipt.is_some()),
        "positions carry the data's epoch and the relay's receipt"
    );
    assert_eq!(plan.send[0].doc, doc("todos/d4"), "most recent first");
    for i in 0..5 {
        assert_eq!(c.get(&doc(&format!("todos/d{i}")), "i"), Some(i));
    }
    let cursor = plan.cursors.clone();
    w.clients.get_mut(&3).expect("c").inbox.clear();
    w.run(vec![(
        3,
        Action::Reconcile(Reconcile {
            cursors: cursor,
            changed: vec![],
            fetched: None,
            acked: None,
        }),
    )]);
    let inbox = &w.clients[&3].inbox;
    assert!(
        matches!(&inbox[..], [Message::Plan(p)] if p.send.is_empty()),
        "nothing changed: {inbox:?}"
    );
}

#[test]
fn tenants_and_grants_bound_the_fan_out() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &["todos"]));
    w.join(2, "acme", grants(&["todos"], &[]));
    w.join(4, "globex", grants(&["todos"], &["todos"]));
    let x = doc("todos/x");
    w.clients.get_mut(&1).expect("a").put(&x, "n", 1);
    w.push(1, std::slice::from_ref(&x));
    assert_eq!(w.clients[&2].get(&x, "n"), Some(1));
    assert_eq!(
        w.clients[&4].get(&x, "n"),
        None,
        "another tenant sees nothing"
    );
    w.run(vec![(
        4,
        Action::Reconcile(Reconcile {
            cursors: vec![],
            changed: vec![],
            fetched: None,
            acked: None,
        }),
    )]);
    assert_eq!(w.clients[&4].get(&x, "n"), None);
    assert!(
        w.storage
            .load(&tenant("globex"), &x)
            .expect("load")
            .is_none()
    );

    // Revoking B's read grant stops the fan-out to B at once.
    w.run(vec![(2, Action::GrantsChanged(grants(&[], &[])))]);
    w.clients.get_mut(&1).expect("a").put(&x, "n", 2);
    w.push(1, std::slice::from_ref(&x));
    assert_eq!(w.clients[&2].get(&x, "n"), Some(1), "no longer receives");
}

#[test]
fn a_bad_change_is_refused_and_harms_nothing() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &["todos"]));
    let x = doc("todos/x");
    w.clients.get_mut(&1).expect("a").put(&x, "n", 1);
    w.push(1, std::slice::from_ref(&x));
    let before = w.storage.load(&tenant("acme"), &x).expect("load");
    let bogus = automerge::sync::Message {
        heads: vec![],
        need: vec![],
        have: vec![],
        changes: automerge::sync::ChunkList::from(vec![b"not a change".to_vec()]),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    // The session refuses such a message before it becomes an action (tests/session_protocol.rs);
    // should one reach the hub all the same, it must change nothing.
    w.run(vec![(
        1,
        Action::Sync(vec![SyncItem {
            doc: x.clone(),
            message: bogus.encode(),
            priority: None,
        }]),
    )]);
    assert_eq!(
        w.storage.load(&tenant("acme"), &x).expect("load"),
        before,
        "storage untouched"
    );
    w.run(vec![(
        1,
        Action::Sync(vec![SyncItem {
            doc: x.clone(),
            message: b"garbage".to_vec(),
            priority: None,
        }]),
    )]);
    // Both are refused with an error: the chunk that is not a change (which Automerge's own
    // loading would have dropped without a word) and the message that does not decode.
    assert_eq!(
        w.clients[&1].errors(),
        vec![ErrorCode::BAD_DOCUMENT.0, ErrorCode::BAD_DOCUMENT.0],
        "undecodable: refused"
    );
    w.clients.get_mut(&1).expect("a").put(&x, "n", 2);
    w.push(1, std::slice::from_ref(&x));
    assert_eq!(
        w.storage
            .load(&tenant("acme"), &x)
            .expect("load")
            .expect("doc")
            .seq,
        2,
        "the document still takes changes"
    );
}

#[test]
fn presence_reaches_subscribed_devices_of_the_tenant_only() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &["todos"]));
    w.join(2, "acme", grants(&["todos"], &[]));
    w.join(4, "globex", grants(&["todos"], &[]));
    let e = Ephemeral {
        doc: doc("todos/x"),
        payload: b"cursor".as_slice().into(),
        from: Some(DeviceId::from_bytes([1; 16])),
    };
    w.run(vec![(1, Action::Ephemeral(e.clone()))]);
    assert_eq!(w.clients[&2].inbox.last(), Some(&Message::Ephemeral(e)));
    assert!(
        !w.clients[&4]
            .inbox
            .iter()
            .any(|m| matches!(m, Message::Ephemeral(_)))
    );
    assert!(
        !w.clients[&1]
            .inbox
            .iter()
            .any(|m| matches!(m, Message::Ephemeral(_))),
        "not echoed"
    );
}

#[test]
fn a_restarted_relay_serves_what_it_stored_and_remembers_sync_state() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &["todos"]));
    let x = doc("todos/x");
    w.clients.get_mut(&1).expect("a").put(&x, "n", 9);
    w.push(1, std::slice::from_ref(&x));
    w.hub.disconnect(1, 100).expect("disconnect");
    let device = DeviceId::from_bytes([1; 16]);
    assert!(
        w.storage
            .load_sync_state(&tenant("acme"), &device, &x)
            .expect("load")
            .is_some()
    );
    let devices = w.storage.devices(Some(&tenant("acme"))).expect("devices");
    assert!(
        devices
            .iter()
            .any(|(_, d)| d.device == device && d.last_sync_ms.is_some())
    );

    // A new hub over the same storage: as after a relay restart.
    w.hub = Hub::new(Arc::clone(&w.storage));
    w.join(5, "acme", grants(&["todos"], &[]));
    w.run(vec![(
        5,
        Action::Reconcile(Reconcile {
            cursors: vec![],
            changed: vec![],
            fetched: None,
            acked: None,
        }),
    )]);
    assert_eq!(w.clients[&5].get(&x, "n"), Some(9));
}

/// A client that stops reading once acknowledged (leaving the relay's last reply unread), then
/// writes again: the second change must still reach the other devices.
#[test]
fn a_second_change_reaches_others_when_the_writer_reads_lazily() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &["todos"]));
    w.join(2, "acme", grants(&["todos"], &["todos"]));
    let x = doc("todos/x");
    for value in [42, 43, 44] {
        w.clients.get_mut(&1).expect("a").put(&x, "n", value);
        let items = w
            .clients
            .get_mut(&1)
            .expect("a")
            .outgoing(std::slice::from_ref(&x));
        let mut queue: VecDeque<(SessionId, Action)> = VecDeque::from([(1, Action::Sync(items))]);
        let mut a_acked = false;
        for step in 0..1000 {
            let Some((id, action)) = queue.pop_front() else {
                break;
            };
            for d in w.hub.handle(id, action, step).expect("hub") {
                if d.to == 1 && a_acked {
                    continue; // A no longer reads
                }
                let client = w.clients.get_mut(&d.to).expect("client");
                let replies = client.receive(d.message);
                if d.to == 1 && client.acked(&x).is_some() {
                    a_acked = true;
                }
                if !replies.is_empty() {
                    queue.push_back((d.to, Action::Sync(replies)));
                }
            }
        }
        assert_eq!(
            w.clients[&2].get(&x, "n"),
            Some(value),
            "value {value} reached B"
        );
        w.clients.get_mut(&1).expect("a").inbox.clear();
    }
}

/// Review finding: a frame whose second item for a document fails must leave nothing of that
/// document unstored in memory, acknowledged, or fanned out. Items are refused whole (the
/// relay's change graph takes all of an item's changes or none), so the first item's change is
/// stored, acknowledged and fanned out, and the second's is none of these.
#[test]
fn a_failing_item_leaves_no_unstored_change_behind() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &["todos"]));
    w.join(2, "acme", grants(&["todos"], &[]));
    let x = doc("todos/x");
    // Two different changes with the same actor (the sender's) and sequence number: the second
    // cannot apply.
    let actor = automerge::ActorId::from(vec![1u8; 16]);
    let make = |v: i64| {
        let mut d = Automerge::new().with_actor(actor.clone());
        let mut tx = d.transaction();
        tx.put(ROOT, "n", v).expect("put");
        tx.commit();
        let c = d.get_last_local_change().expect("change");
        automerge::sync::Message {
            heads: vec![c.hash()],
            need: vec![],
            have: vec![],
            changes: automerge::sync::ChunkList::from(vec![c.raw_bytes().to_vec()]),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        }
        .encode()
    };
    let items = vec![
        SyncItem {
            doc: x.clone(),
            message: make(1),
            priority: None,
        },
        SyncItem {
            doc: x.clone(),
            message: make(2),
            priority: None,
        },
    ];
    // One frame, handled once: the injected messages claim heads no real client holds, so
    // running the sync protocol to quiescence would only ping-pong.
    for d in w.hub.handle(1, Action::Sync(items), 1).expect("hub") {
        w.clients.get_mut(&d.to).expect("client").receive(d.message);
    }
    assert!(w.clients[&1].errors().contains(&ErrorCode::BAD_DOCUMENT.0));
    let first = automerge::sync::Message::decode(&make(1))
        .expect("decodes")
        .heads;
    let acked = w.clients[&1]
        .acked(&x)
        .expect("the first item is acknowledged");
    assert_eq!(
        acked
            .heads
            .as_slice()
            .iter()
            .map(|h| h.0)
            .collect::<Vec<_>>(),
        vec![first[0].0]
    );
    let stored = w
        .storage
        .load(&tenant("acme"), &x)
        .expect("load")
        .expect("stored");
    let mut check = Automerge::new();
    for chunk in &stored.chunks {
        check.load_incremental(chunk).expect("loads");
    }
    assert_eq!(
        check.get_heads(),
        first,
        "exactly the first item's change is stored"
    );
    assert_eq!(w.clients[&2].get(&x, "n"), Some(1), "and fanned out");

    // A correct write afterwards (from another device) stores exactly its own change: memory
    // was not left ahead of storage.
    w.join(3, "acme", grants(&["todos"], &["todos"]));
    w.clients.get_mut(&3).expect("c").put(&x, "n", 5);
    w.push(3, std::slice::from_ref(&x));
    assert_eq!(w.clients[&2].get(&x, "n"), Some(5));
    let stored = w
        .storage
        .load(&tenant("acme"), &x)
        .expect("load")
        .expect("stored");
    let mut check = Automerge::new();
    for chunk in &stored.chunks {
        check.load_incremental(chunk).expect("loads");
    }
    assert_eq!(check.get_heads(), w.clients[&3].docs[&x].get_heads());
}

/// Class 4 of the hostile-input issue: the parts of a long fetch send their documents, and
/// only the last part's plan answers the fetch (the device counts one answer per `Fetch`).
#[test]
fn the_parts_of_a_long_fetch_send_every_document_and_answer_once() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &["todos"]));
    let docs: Vec<DocId> = (0..5).map(|i| doc(&format!("todos/f{i}"))).collect();
    for (i, d) in docs.iter().enumerate() {
        w.clients.get_mut(&1).expect("writer").put(d, "n", i as i64);
    }
    w.push(1, &docs);
    w.join(2, "acme", grants(&["todos"], &[]));
    w.run(vec![
        (2, Action::FetchPart(docs[..2].to_vec())),
        (2, Action::FetchPart(docs[2..4].to_vec())),
        (2, Action::Fetch(docs[4..].to_vec())),
    ]);
    let plans: Vec<&Plan> = w.clients[&2]
        .inbox
        .iter()
        .filter_map(|m| match m {
            Message::Plan(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(
        plans.iter().filter(|p| p.fetch).count(),
        1,
        "one answer: {plans:?}"
    );
    assert!(plans.last().is_some_and(|p| p.fetch), "and it comes last");
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(w.clients[&2].get(d, "n"), Some(i as i64), "{d} arrived");
    }
}

/// Review finding: fetching ids the relay does not hold must not create documents or sync
/// states (a cheap way to grow the relay's memory and its `sync_states` table).
#[test]
fn fetching_unknown_documents_creates_nothing() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &[]));
    let made_up: Vec<DocId> = (0..50).map(|i| doc(&format!("todos/nope{i}"))).collect();
    w.run(vec![(1, Action::Fetch(made_up.clone()))]);
    assert!(
        !w.clients[&1]
            .inbox
            .iter()
            .any(|m| matches!(m, Message::Sync(_)))
    );
    w.hub.disconnect(1, 100).expect("disconnect");
    let device = DeviceId::from_bytes([1; 16]);
    for d in &made_up {
        assert_eq!(
            w.storage
                .load_sync_state(&tenant("acme"), &device, d)
                .expect("load"),
            None
        );
    }
}
