//! A full storage (issue 15, class 9): the relay refuses the changes it cannot store with a
//! typed error per document (the device keeps them and sends them again), keeps serving
//! reads and connections, and stores again as soon as there is room, without a restart.

mod common;

use automerge::transaction::Transactable;
use common::{World, doc, grants, reconcile, tenant};
use syncline_protocol::Message;
use syncline_protocol::messages::ErrorCode;
use syncline_relay::auth::Identity;
use syncline_relay::hub::STORAGE_FULL_RETRY_MS;
use syncline_relay::storage::Storage;

fn errors(w: &World, id: u64) -> Vec<(u16, Option<u64>, Option<String>)> {
    w.clients[&id]
        .inbox
        .iter()
        .filter_map(|m| match m {
            Message::Error(e) => Some((
                e.code.0,
                e.retry_after_ms,
                e.doc.as_ref().map(|d| d.to_string()),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_full_storage_refuses_writes_with_a_typed_error_serves_reads_and_recovers() {
    let mut w = World::new();
    let rw = || grants(&["todos"], &["todos"]);
    w.join(1, "acme", rw());
    w.join(2, "acme", rw());
    let (a, big) = (doc("todos/a"), doc("todos/big"));
    w.clients.get_mut(&1).expect("client").put(&a, "x", 1);
    w.push(1, std::slice::from_ref(&a));
    assert!(w.storage.load(&tenant("acme"), &a).expect("load").is_some());

    // The database may not grow any more.
    w.storage.set_max_bytes(Some(1)).expect("cap");
    {
        let client = w.clients.get_mut(&1).expect("client");
        let document = client.docs.entry(big.clone()).or_default();
        document.set_actor(automerge::ActorId::from([1u8; 16].as_slice()));
        let mut tx = document.transaction();
        tx.put(automerge::ROOT, "text", "lorem ipsum ".repeat(40_000))
            .expect("put");
        tx.commit();
    }
    w.push(1, std::slice::from_ref(&big));
    assert_eq!(
        errors(&w, 1),
        vec![(
            ErrorCode::STORAGE_FULL.0,
            Some(STORAGE_FULL_RETRY_MS),
            Some("todos/big".into())
        )],
        "one typed error for the document, nothing else"
    );
    assert!(
        w.storage
            .load(&tenant("acme"), &big)
            .expect("load")
            .is_none()
    );
    assert_eq!(w.hub.storage_full(), 1);

    // Reads go on: device 2 reconciles and gets what is stored; it disconnects and comes
    // back (its registry and sync states are not written, and nothing fails).
    w.run(vec![(2, reconcile(vec![]))]);
    assert_eq!(w.clients[&2].get(&a, "x"), Some(1));
    assert!(errors(&w, 2).is_empty(), "{:?}", errors(&w, 2));
    w.hub
        .disconnect(2, 100)
        .expect("a disconnect writes nothing it needs");
    let identity = Identity {
        user: "user2".into(),
        device: syncline_protocol::DeviceId::from_bytes([2; 16]),
        tenant: tenant("acme"),
    };
    w.hub.admit(&identity).expect("a known device is admitted");
    w.reconnect(2, "acme", rw());
    assert!(errors(&w, 2).is_empty(), "{:?}", errors(&w, 2));

    // Room again: the device's resend (a fresh exchange) is stored and acknowledged.
    w.storage.set_max_bytes(None).expect("uncap");
    let client = w.clients.get_mut(&1).expect("client");
    client.states.remove(&big);
    client.inbox.clear();
    w.push(1, std::slice::from_ref(&big));
    assert!(errors(&w, 1).is_empty(), "{:?}", errors(&w, 1));
    assert!(w.clients[&1].acked(&big).is_some());
    assert!(
        w.storage
            .load(&tenant("acme"), &big)
            .expect("load")
            .is_some()
    );
    assert!(
        w.clients[&2].docs.contains_key(&big),
        "device 2 is pushed the document now that it is stored"
    );
}
