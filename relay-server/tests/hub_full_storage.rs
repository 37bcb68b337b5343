//! A full storage (issue 15, class 9): the relay refuses the changes it cannot store with a
//! typed error per document (the device keeps them and sends them again), keeps serving
//! reads and connections, and stores again as soon as there is room, without a restart.

mod common;

use automerge::transaction::Transactable;
use common::{World, doc, grants, reconcile, tenant};
use syncline_protocol::Message;
use syncline_protocol::Priority;
use syncline_protocol::messages::{CollectionSubscription, DeviceClass, ErrorCode, SyncMode};
use syncline_relay::auth::Identity;
use syncline_relay::hub::STORAGE_FULL_RETRY_MS;
use syncline_relay::session::Action;
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

/// Device 1 writes about 480 KB of text to `big` and pushes it: more than a full storage's
/// free pages hold.
fn push_big(w: &mut World, big: &syncline_protocol::DocId) {
    let client = w.clients.get_mut(&1).expect("client");
    let document = client.docs.entry(big.clone()).or_default();
    document.set_actor(automerge::ActorId::from([1u8; 16].as_slice()));
    let mut tx = document.transaction();
    tx.put(automerge::ROOT, "text", "lorem ipsum ".repeat(40_000))
        .expect("put");
    tx.commit();
    w.push(1, std::slice::from_ref(big));
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
    push_big(&mut w, &big);
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

/// A device never seen before connects while the storage is full: it is admitted and reads
/// (its owner binding waits in memory), another user's token for it is refused meanwhile, and
/// the binding is written once there is room.
#[test]
fn a_new_device_reads_while_the_storage_is_full_and_is_bound_once_there_is_room() {
    let mut w = World::new();
    let (read, rw) = (grants(&["todos"], &[]), grants(&["todos"], &["todos"]));
    w.join(1, "acme", rw);
    let a = doc("todos/a");
    w.clients.get_mut(&1).expect("client").put(&a, "x", 1);
    w.push(1, std::slice::from_ref(&a));

    // Full: bind made-up devices until a binding no longer fits, the reserve above the cap
    // included (bounded).
    w.storage.set_max_bytes(Some(1)).expect("cap");
    let acme = tenant("acme");
    let newcomer = (0u32..100_000)
        .map(|i| {
            let mut id = [0xAA; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            syncline_protocol::DeviceId::from_bytes(id)
        })
        .find(|device| {
            w.storage
                .bind_device(&acme, device, "filler")
                .is_err_and(|e| e.is_full())
        })
        .expect("the binding table fills up");

    let identity = |user: &str| Identity {
        user: user.into(),
        device: newcomer,
        tenant: tenant("acme"),
    };
    w.hub
        .admit(&identity("newcomer"))
        .expect("a device never seen before is admitted while the storage is full");
    assert!(
        matches!(
            w.hub.admit(&identity("mallory")),
            Err(syncline_relay::hub::HubError::DeviceOwned)
        ),
        "its binding holds against another user meanwhile"
    );
    // It reads (session 7 stands for its connection).
    w.hub.connect(7, identity("newcomer"), read, 1);
    w.clients.insert(7, common::Client::default());
    let todos = vec![CollectionSubscription {
        collection: common::col("todos"),
        priority: Priority::Normal,
        mode: SyncMode::Eager,
    }];
    w.run(vec![
        (
            7,
            Action::Register(syncline_testkit::profile(DeviceClass::Phone)),
        ),
        (7, Action::Subscribe(todos)),
        (7, reconcile(vec![])),
    ]);
    assert!(errors(&w, 7).is_empty(), "{:?}", errors(&w, 7));
    assert_eq!(
        w.clients[&7].get(&a, "x"),
        Some(1),
        "it read what is stored"
    );

    // Room again: its next admission writes the binding.
    w.storage.set_max_bytes(None).expect("uncap");
    w.hub.admit(&identity("newcomer")).expect("admitted");
    assert_eq!(
        w.storage
            .bind_device(&acme, &newcomer, "someone else")
            .expect("bind"),
        "newcomer",
        "the binding was written"
    );
}

/// Past the operator's cap, a new device's binding still goes to disk while the reserve above
/// the cap holds it (`BINDING_RESERVE_BYTES`): it survives a restart of the relay, and another
/// user's token for the device is refused after it.
#[test]
fn a_new_devices_binding_is_durable_past_the_operators_cap() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &["todos"]));
    let a = doc("todos/a");
    w.clients.get_mut(&1).expect("client").put(&a, "x", 1);
    w.push(1, std::slice::from_ref(&a));
    w.storage.set_max_bytes(Some(1)).expect("cap");
    // Documents are refused: the storage is full.
    let big = doc("todos/big");
    push_big(&mut w, &big);
    assert_eq!(w.hub.storage_full(), 1, "{:?}", errors(&w, 1));
    // Thousands of bindings still go to disk (far more than the free room in its pages).
    let acme = tenant("acme");
    for i in 0u32..2_000 {
        let mut id = [0xAA; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        w.storage
            .bind_device(
                &acme,
                &syncline_protocol::DeviceId::from_bytes(id),
                "filler",
            )
            .expect("a binding takes the reserve above the cap");
    }
    let newcomer = syncline_protocol::DeviceId::from_bytes([0xBB; 16]);
    let identity = |user: &str| Identity {
        user: user.into(),
        device: newcomer,
        tenant: tenant("acme"),
    };
    w.hub.admit(&identity("newcomer")).expect("admitted");
    // The relay restarts: the binding was written, not kept in memory.
    w.hub = syncline_relay::hub::Hub::new(std::sync::Arc::clone(&w.storage));
    assert!(
        matches!(
            w.hub.admit(&identity("mallory")),
            Err(syncline_relay::hub::HubError::DeviceOwned)
        ),
        "the binding survived the restart"
    );
    w.hub
        .admit(&identity("newcomer"))
        .expect("its owner is admitted");
}
