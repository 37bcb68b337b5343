//! Several relays on one storage (issue 17): each hub learns of the others' commits from
//! (tenant, collection, sequence) announcements and catches up from storage; a hub whose
//! cached document another relay changed never appends to it. Two hubs share one SQLite file
//! here, as relays share one PostgreSQL database (the change feed that makes the
//! announcements is tested end to end in `tests/tests/scale_out.rs`).

mod common;

use common::{World, col, doc, grants, reconcile, tenant};
use syncline_protocol::Message;
use syncline_protocol::messages::ErrorCode;
use syncline_relay::storage::Storage;

/// Relay A with device 1, relay B beside it (following A's commits) with device 2; both
/// devices subscribed to `todos`.
fn two_relays() -> (World, World) {
    let mut a = World::new();
    let mut b = World::beside(&a);
    b.hub.follow_remote().expect("follow");
    let todos = || grants(&["todos"], &["todos"]);
    a.join(1, "acme", todos());
    b.join(2, "acme", todos());
    (a, b)
}

/// What `todos` has reached in storage.
fn todos_seq(w: &World) -> u64 {
    w.storage
        .collection_seqs()
        .expect("seqs")
        .into_iter()
        .find(|(t, c, _)| *t == tenant("acme") && *c == col("todos"))
        .map_or(0, |(_, _, seq)| seq)
}

#[test]
fn a_change_through_one_relay_reaches_a_device_on_the_other_when_announced() {
    let (mut a, mut b) = two_relays();
    let x = doc("todos/x");
    a.clients.get_mut(&1).expect("client").put(&x, "n", 1);
    a.push(1, std::slice::from_ref(&x));
    assert!(a.clients[&1].acked(&x).is_some());
    assert_eq!(b.clients[&2].get(&x, "n"), None, "not announced yet");

    let seq = todos_seq(&a);
    let pushed = b
        .hub
        .remote_changes(vec![(tenant("acme"), col("todos"), seq)], 100)
        .expect("catch up");
    assert!(!pushed.is_empty());
    b.deliver(pushed);
    assert_eq!(b.clients[&2].get(&x, "n"), Some(1));

    // The same announcement again (or a late duplicate) sends nothing more.
    let again = b
        .hub
        .remote_changes(vec![(tenant("acme"), col("todos"), seq)], 101)
        .expect("catch up");
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn a_relay_that_missed_announcements_catches_up_on_every_collection() {
    let (mut a, mut b) = two_relays();
    let (x, y) = (doc("todos/x"), doc("todos/y"));
    let device = a.clients.get_mut(&1).expect("client");
    device.put(&x, "n", 1);
    device.put(&y, "n", 2);
    a.push(1, &[x.clone(), y.clone()]);

    // No announcement reached B (its feed was down): a resync compares every collection.
    let pushed = b.hub.remote_resync(100).expect("resync");
    b.deliver(pushed);
    assert_eq!(b.clients[&2].get(&x, "n"), Some(1));
    assert_eq!(b.clients[&2].get(&y, "n"), Some(2));
    assert!(b.hub.remote_resync(101).expect("resync").is_empty());
}

#[test]
fn a_relay_never_appends_to_a_document_another_relay_changed_since_it_loaded_it() {
    let (mut a, mut b) = two_relays();
    let x = doc("todos/x");
    // Both relays hold `todos/x` in memory.
    a.clients.get_mut(&1).expect("client").put(&x, "n", 1);
    a.push(1, std::slice::from_ref(&x));
    let pushed = b
        .hub
        .remote_changes(vec![(tenant("acme"), col("todos"), todos_seq(&a))], 100)
        .expect("catch up");
    b.deliver(pushed);
    assert_eq!(b.clients[&2].get(&x, "n"), Some(1));

    // Device 1 changes it through A; before B hears of it, device 2 changes it through B.
    a.clients.get_mut(&1).expect("client").put(&x, "a", 1);
    a.push(1, std::slice::from_ref(&x));
    b.clients.get_mut(&2).expect("client").put(&x, "b", 2);
    let acked_before = b.clients[&2].acked(&x);
    b.push(2, std::slice::from_ref(&x));
    // B's copy was stale: that change was refused for now (nothing acknowledged), the device
    // told to send it again soon.
    let refusal = b.clients[&2].inbox.iter().rev().find_map(|m| match m {
        Message::Error(e) if e.code == ErrorCode::INTERNAL => Some(e.clone()),
        _ => None,
    });
    assert!(
        refusal.is_some_and(|e| e.doc.as_ref() == Some(&x) && e.retry_after_ms.is_some()),
        "{:?}",
        b.clients[&2].inbox
    );
    assert_eq!(
        b.clients[&2].acked(&x),
        acked_before,
        "nothing acknowledged"
    );

    // Sent again, it is stored on top of A's change, which device 2 then gets.
    b.clients.get_mut(&2).expect("client").states.clear();
    b.push(2, std::slice::from_ref(&x));
    let acked = b.clients[&2].acked(&x).expect("acknowledged");
    assert_eq!(
        b.clients[&2].get(&x, "a"),
        Some(1),
        "A's change reached device 2"
    );
    let stored = b
        .storage
        .load(&tenant("acme"), &x)
        .expect("load")
        .expect("stored");
    let graph = syncline_relay::hub::DocGraph::load(stored.chunks.iter().map(Vec::as_slice))
        .expect("loads");
    let heads: Vec<[u8; 32]> = graph.heads().iter().map(|h| h.0).collect();
    let acked_heads: Vec<[u8; 32]> = acked.heads.as_slice().iter().map(|h| h.0).collect();
    assert_eq!(
        heads, acked_heads,
        "the acknowledged heads are the stored ones"
    );
    assert_eq!(
        stored.heads, acked.heads,
        "the stored heads column matches the document"
    );
}

#[test]
fn a_relay_skips_its_own_commits_when_they_are_announced() {
    let (_a, mut b) = two_relays();
    let x = doc("todos/x");
    b.clients.get_mut(&2).expect("client").put(&x, "n", 1);
    b.push(2, std::slice::from_ref(&x));
    let inbox = b.clients[&2].inbox.len();
    let pushed = b
        .hub
        .remote_changes(vec![(tenant("acme"), col("todos"), todos_seq(&b))], 100)
        .expect("catch up");
    assert!(pushed.is_empty(), "{pushed:?}");
    assert_eq!(b.clients[&2].inbox.len(), inbox);
}

#[test]
fn a_document_another_session_loaded_before_the_announcement_is_still_pushed() {
    let (mut a, mut b) = two_relays();
    let todos = || grants(&["todos"], &["todos"]);
    b.join(3, "acme", todos());
    let x = doc("todos/x");
    a.clients.get_mut(&1).expect("client").put(&x, "n", 1);
    a.push(1, std::slice::from_ref(&x));
    // Before B hears of it, device 3 reconnects to B: its plan loads `todos/x` (at the
    // sequence just committed) and sends it to device 3 only.
    b.reconnect(3, "acme", todos());
    b.run(vec![(3, reconcile(vec![]))]);
    assert_eq!(b.clients[&3].get(&x, "n"), Some(1));
    assert_eq!(b.clients[&2].get(&x, "n"), None);
    // The announcement still reaches device 2, although B's copy is current.
    let pushed = b
        .hub
        .remote_changes(vec![(tenant("acme"), col("todos"), todos_seq(&a))], 100)
        .expect("catch up");
    b.deliver(pushed);
    assert_eq!(b.clients[&2].get(&x, "n"), Some(1));
}
