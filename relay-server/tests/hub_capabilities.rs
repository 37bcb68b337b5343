//! Capability profiles drive the hub's plans (DESIGN §3): on-demand collections, metered
//! networks, priorities, periodic devices and subscription changes, asserted on what each
//! device received and in what order.

mod common;

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use common::{World, col, doc, grants};
use syncline_protocol::messages::*;
use syncline_protocol::{DocId, Message, Priority};
use syncline_relay::hub::SessionId;
use syncline_relay::session::Action;

const WRITER: SessionId = 1;
const READER: SessionId = 2;

fn sub(collection: &str, priority: Priority, mode: SyncMode) -> CollectionSubscription {
    CollectionSubscription {
        collection: col(collection),
        priority,
        mode,
    }
}

fn profile(metered: bool, realtime: bool) -> Profile {
    Profile {
        metered,
        realtime,
        ..syncline_testkit::profile(DeviceClass::Phone)
    }
}

fn all() -> syncline_relay::auth::Grants {
    let names = ["todos", "notes", "photos", "crit", "norm", "low"];
    grants(&names, &names)
}

/// A writer subscribed eagerly to every collection.
fn world_with_writer() -> World {
    let mut w = World::new();
    let subs = ["todos", "notes", "photos", "crit", "norm", "low"]
        .iter()
        .map(|c| sub(c, Priority::Normal, SyncMode::Eager))
        .collect();
    w.join_with(WRITER, "acme", all(), profile(false, true), subs);
    w
}

/// The writer writes `bytes` bytes of text into each document, and syncs them.
fn write(w: &mut World, docs: &[&str], bytes: usize) {
    let ids: Vec<DocId> = docs.iter().map(|d| doc(d)).collect();
    let client = w.clients.get_mut(&WRITER).expect("writer");
    let actor = client.actor.clone().expect("actor");
    for id in &ids {
        let d = client.docs.entry(id.clone()).or_default();
        d.set_actor(actor.clone());
        let mut tx = d.transaction();
        // Text that does not compress away: the size is what travels.
        let text: String = (0..bytes)
            .map(|i| char::from(b'a' + u8::try_from((i * 7919) % 26).expect("letter")))
            .collect();
        tx.put(ROOT, "body", text).expect("put");
        tx.commit();
    }
    w.push(WRITER, &ids);
}

fn reconcile(w: &mut World, id: SessionId, fetched: Option<Vec<DocId>>) {
    w.run(vec![(
        id,
        Action::Reconcile(Reconcile {
            cursors: vec![],
            changed: vec![],
            fetched,
            acked: None,
        }),
    )]);
}

/// Connects the reader with `profile`, subscribed to `subscriptions`.
fn join_reader(w: &mut World, profile: Profile, subscriptions: Vec<CollectionSubscription>) {
    w.join_with(READER, "acme", all(), profile, subscriptions);
}

/// A later `Reconcile` naming only `collection`, from its start.
fn reconcile_named(w: &mut World, id: SessionId, collection: &str) {
    w.run(vec![(
        id,
        Action::Reconcile(Reconcile {
            cursors: vec![Cursor {
                collection: col(collection),
                seq: 0,
                epoch: None,
                receipt: None,
            }],
            changed: vec![],
            fetched: None,
            acked: None,
        }),
    )]);
}

/// Every plan the session received, merged in order: (sent, deferred) entries.
fn plans(w: &World, id: SessionId) -> (Vec<PlanEntry>, Vec<PlanEntry>) {
    let mut send = Vec::new();
    let mut deferred = Vec::new();
    for m in &w.clients[&id].inbox {
        if let Message::Plan(p) = m {
            send.extend(p.send.iter().cloned());
            deferred.extend(p.deferred.iter().cloned());
        }
    }
    (send, deferred)
}

/// The documents whose content reached the session, in the order their first message came.
fn received(w: &World, id: SessionId) -> Vec<DocId> {
    let mut out: Vec<DocId> = Vec::new();
    for m in &w.clients[&id].inbox {
        if let Message::Sync(s) = m {
            for item in &s.items {
                let m = automerge::sync::Message::decode(&item.message).expect("valid");
                if !m.changes.is_empty() && !out.contains(&item.doc) {
                    out.push(item.doc.clone());
                }
            }
        }
    }
    out
}

fn has_body(w: &World, id: SessionId, d: &str) -> bool {
    w.clients[&id]
        .docs
        .get(&doc(d))
        .is_some_and(|d| d.get(ROOT, "body").ok().flatten().is_some())
}

fn reason_of(entries: &[PlanEntry], d: &str) -> Option<DeferReason> {
    entries
        .iter()
        .rev()
        .find(|e| e.doc == doc(d))
        .and_then(|e| e.reason)
}

#[test]
fn on_demand_documents_are_listed_then_fetched_and_then_kept_in_sync() {
    let mut w = world_with_writer();
    write(&mut w, &["photos/p1", "photos/p2"], 5000);
    join_reader(
        &mut w,
        profile(false, true),
        vec![sub("photos", Priority::High, SyncMode::OnDemand)],
    );
    reconcile(&mut w, READER, None);
    let (send, deferred) = plans(&w, READER);
    assert!(
        send.is_empty(),
        "nothing of an on-demand collection is sent"
    );
    assert_eq!(deferred.len(), 2, "both are listed: {deferred:?}");
    for entry in &deferred {
        assert_eq!(entry.reason, Some(DeferReason::OnDemand));
        assert_eq!(entry.priority, Priority::High);
        assert!(
            entry.bytes >= 5000,
            "its size is announced: {}",
            entry.bytes
        );
        assert!(entry.changed_ms.is_some(), "and when it last changed");
    }
    assert!(received(&w, READER).is_empty());

    w.run(vec![(READER, Action::Fetch(vec![doc("photos/p1")]))]);
    assert!(has_body(&w, READER, "photos/p1"), "fetched");
    assert!(!has_body(&w, READER, "photos/p2"), "not asked for");

    // Both change: the fetched one is pushed, the other only announced again.
    w.clients.get_mut(&READER).expect("reader").inbox.clear();
    write(&mut w, &["photos/p1", "photos/p2"], 100);
    assert_eq!(received(&w, READER), vec![doc("photos/p1")]);
    let (_, deferred) = plans(&w, READER);
    assert_eq!(
        reason_of(&deferred, "photos/p2"),
        Some(DeferReason::OnDemand)
    );

    // On its next connection the device says what it holds, and that stays in sync.
    let mut w2 = w;
    w2.hub.disconnect(READER, 100).expect("disconnect");
    // The registry says what is deferred for it.
    let registry = syncline_relay::storage::Storage::devices(
        w2.storage.as_ref(),
        Some(&common::tenant("acme")),
    )
    .expect("devices");
    let reader = &registry
        .iter()
        .find(|(_, d)| d.device == reader_identity().device)
        .expect("registered")
        .1;
    assert_eq!(reader.deferred.docs, 1);
    assert_eq!(reader.deferred.list[0].doc, doc("photos/p2"));
    assert_eq!(reader.deferred.list[0].reason, DeferReason::OnDemand);
    write(&mut w2, &["photos/p1", "photos/p2"], 200);
    let reader = w2.clients.get_mut(&READER).expect("reader");
    reader.inbox.clear();
    // A new connection starts with fresh sync states, as the SDK does.
    reader.states.clear();
    w2.hub.connect(READER, reader_identity(), all(), 101);
    w2.run(vec![
        (READER, Action::Register(profile(false, true))),
        (
            READER,
            Action::Subscribe(vec![sub("photos", Priority::High, SyncMode::OnDemand)]),
        ),
    ]);
    reconcile(&mut w2, READER, Some(vec![doc("photos/p1")]));
    assert_eq!(received(&w2, READER), vec![doc("photos/p1")]);
    let (_, deferred) = plans(&w2, READER);
    assert_eq!(
        reason_of(&deferred, "photos/p2"),
        Some(DeferReason::OnDemand)
    );
}

fn reader_identity() -> syncline_relay::auth::Identity {
    syncline_relay::auth::Identity {
        user: format!("user{READER}"),
        device: syncline_protocol::DeviceId::from_bytes([2; 16]),
        tenant: common::tenant("acme"),
    }
}

#[test]
fn a_metered_device_gets_large_and_low_priority_documents_only_once_unmetered() {
    let mut w = world_with_writer();
    write(&mut w, &["todos/big"], 100_000);
    write(&mut w, &["todos/small"], 1000);
    write(&mut w, &["notes/n"], 10);
    join_reader(
        &mut w,
        profile(true, true),
        vec![
            sub("todos", Priority::Normal, SyncMode::Eager),
            sub("notes", Priority::Low, SyncMode::Eager),
        ],
    );
    reconcile(&mut w, READER, None);
    let (send, deferred) = plans(&w, READER);
    assert_eq!(
        send.iter().map(|e| e.doc.clone()).collect::<Vec<_>>(),
        vec![doc("todos/small")]
    );
    assert_eq!(
        reason_of(&deferred, "todos/big"),
        Some(DeferReason::Metered)
    );
    assert_eq!(
        reason_of(&deferred, "notes/n"),
        Some(DeferReason::LowPriority)
    );
    let big = deferred
        .iter()
        .find(|e| e.doc == doc("todos/big"))
        .expect("announced");
    assert!(big.bytes > 64 << 10, "its size: {}", big.bytes);
    assert_eq!(received(&w, READER), vec![doc("todos/small")]);
    assert!(!has_body(&w, READER, "todos/big"));

    // A change to the large document while metered is announced, not sent.
    write(&mut w, &["todos/big"], 100_000);
    assert!(!received(&w, READER).contains(&doc("todos/big")));

    // Leaving the metered network releases them on the same connection.
    let before = w.clients[&READER].inbox.len();
    w.run(vec![(READER, Action::UpdateProfile(profile(false, true)))]);
    assert!(has_body(&w, READER, "todos/big"));
    assert!(has_body(&w, READER, "notes/n"));
    let plan = w.clients[&READER].inbox[before..]
        .iter()
        .find_map(|m| match m {
            Message::Plan(p) => Some(p.clone()),
            _ => None,
        })
        .expect("a replan");
    assert_eq!(plan.send.len(), 2);
    assert!(plan.deferred.is_empty());
    assert_eq!(
        w.clients[&READER].get(&doc("todos/big"), "missing"),
        None,
        "the content is the writer's"
    );
    let body_len = |id| {
        w.clients[&id].docs[&doc("todos/big")]
            .get(ROOT, "body")
            .expect("get")
            .expect("body")
            .0
            .as_str()
            .map(str::len)
    };
    assert_eq!(body_len(READER), body_len(WRITER), "the latest version");
}

#[test]
fn a_device_threshold_overrides_the_relays() {
    let mut w = world_with_writer();
    write(&mut w, &["todos/a"], 2000);
    join_reader(
        &mut w,
        Profile {
            metered_max_doc_bytes: Some(500),
            ..profile(true, true)
        },
        vec![sub("todos", Priority::Normal, SyncMode::Eager)],
    );
    reconcile(&mut w, READER, None);
    let (_, deferred) = plans(&w, READER);
    assert_eq!(reason_of(&deferred, "todos/a"), Some(DeferReason::Metered));
    // Fetching on purpose sends it, metered or not.
    w.run(vec![(READER, Action::Fetch(vec![doc("todos/a")]))]);
    assert!(has_body(&w, READER, "todos/a"));
}

#[test]
fn plans_go_by_priority_then_recency() {
    let mut w = world_with_writer();
    for name in ["low/1", "norm/1", "crit/1", "low/2", "norm/2", "crit/2"] {
        write(&mut w, &[name], 100);
    }
    join_reader(
        &mut w,
        profile(false, true),
        vec![
            sub("low", Priority::Low, SyncMode::Eager),
            sub("crit", Priority::Critical, SyncMode::Eager),
            sub("norm", Priority::Normal, SyncMode::Eager),
        ],
    );
    reconcile(&mut w, READER, None);
    let expected: Vec<DocId> = ["crit/2", "crit/1", "norm/2", "norm/1", "low/2", "low/1"]
        .iter()
        .map(|d| doc(d))
        .collect();
    let (send, _) = plans(&w, READER);
    assert_eq!(
        send.iter().map(|e| e.doc.clone()).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        received(&w, READER),
        expected,
        "and they come in that order"
    );
}

#[test]
fn a_documents_own_priority_raises_it_in_the_plan() {
    let mut w = world_with_writer();
    write(&mut w, &["norm/1", "low/plain"], 100);
    // The app marks one low-collection document high: its priority travels with its changes.
    let urgent = doc("low/urgent");
    let client = w.clients.get_mut(&WRITER).expect("writer");
    client.put(&urgent, "n", 1);
    // As the SDK does: the first message already carries the changes the relay lacks.
    client.states.insert(
        urgent.clone(),
        syncline_protocol::sync_state::primed(Vec::new()),
    );
    let items: Vec<SyncItem> = client
        .outgoing(std::slice::from_ref(&urgent))
        .into_iter()
        .map(|item| SyncItem {
            priority: Some(Priority::High),
            ..item
        })
        .collect();
    w.run(vec![(WRITER, Action::Sync(items))]);
    assert_eq!(w.storage_priority(&urgent), Some(Priority::High));
    join_reader(
        &mut w,
        profile(false, true),
        vec![
            sub("low", Priority::Low, SyncMode::Eager),
            sub("norm", Priority::Normal, SyncMode::Eager),
        ],
    );
    reconcile(&mut w, READER, None);
    let (send, _) = plans(&w, READER);
    let order: Vec<DocId> = send.iter().map(|e| e.doc.clone()).collect();
    assert_eq!(order, vec![urgent, doc("norm/1"), doc("low/plain")]);
    assert_eq!(send[0].priority, Priority::High);
}

#[test]
fn a_periodic_device_gets_no_push_and_learns_from_its_plan() {
    let mut w = world_with_writer();
    join_reader(
        &mut w,
        profile(false, false),
        vec![sub("todos", Priority::Normal, SyncMode::Eager)],
    );
    reconcile(&mut w, READER, None);
    write(&mut w, &["todos/x"], 100);
    assert!(received(&w, READER).is_empty(), "no push");
    reconcile_named(&mut w, READER, "todos");
    assert_eq!(received(&w, READER), vec![doc("todos/x")]);
}

#[test]
fn removing_a_collection_stops_its_traffic_and_adding_one_plans_it() {
    let mut w = world_with_writer();
    write(&mut w, &["notes/old"], 100);
    join_reader(
        &mut w,
        profile(false, true),
        vec![
            sub("todos", Priority::Normal, SyncMode::Eager),
            sub("notes", Priority::Normal, SyncMode::Eager),
        ],
    );
    reconcile(&mut w, READER, None);
    assert_eq!(received(&w, READER), vec![doc("notes/old")]);
    w.run(vec![(
        READER,
        Action::Subscribe(vec![sub("todos", Priority::Normal, SyncMode::Eager)]),
    )]);
    w.clients.get_mut(&READER).expect("reader").inbox.clear();
    write(&mut w, &["notes/old", "notes/new"], 100);
    write(&mut w, &["todos/t"], 100);
    assert_eq!(received(&w, READER), vec![doc("todos/t")], "notes are off");

    // Added, a collection is planned when the device names it in a Reconcile: only it.
    write(&mut w, &["photos/p"], 100);
    w.run(vec![(
        READER,
        Action::Subscribe(vec![
            sub("todos", Priority::Normal, SyncMode::Eager),
            sub("photos", Priority::Normal, SyncMode::Eager),
        ]),
    )]);
    w.clients.get_mut(&READER).expect("reader").inbox.clear();
    reconcile_named(&mut w, READER, "photos");
    let (send, _) = plans(&w, READER);
    assert_eq!(
        send.iter().map(|e| e.doc.clone()).collect::<Vec<_>>(),
        vec![doc("photos/p")],
        "a later Reconcile plans only what it names"
    );
}

#[test]
fn a_periodic_device_turning_realtime_gets_what_it_was_not_pushed() {
    let mut w = world_with_writer();
    join_reader(
        &mut w,
        profile(false, false),
        vec![sub("todos", Priority::Normal, SyncMode::Eager)],
    );
    reconcile(&mut w, READER, None);
    write(&mut w, &["todos/while-periodic"], 100);
    assert!(received(&w, READER).is_empty());
    w.run(vec![(READER, Action::UpdateProfile(profile(false, true)))]);
    assert_eq!(received(&w, READER), vec![doc("todos/while-periodic")]);
}

#[test]
fn an_on_demand_collection_made_eager_sends_what_was_only_listed() {
    let mut w = world_with_writer();
    write(&mut w, &["photos/a", "photos/b"], 1000);
    join_reader(
        &mut w,
        profile(false, true),
        vec![sub("photos", Priority::Normal, SyncMode::OnDemand)],
    );
    reconcile(&mut w, READER, None);
    assert!(received(&w, READER).is_empty());
    w.run(vec![(
        READER,
        Action::Subscribe(vec![sub("photos", Priority::Normal, SyncMode::Eager)]),
    )]);
    let mut got = received(&w, READER);
    got.sort();
    assert_eq!(got, vec![doc("photos/a"), doc("photos/b")]);
}
