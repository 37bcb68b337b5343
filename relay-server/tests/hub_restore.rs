//! A relay restored from an older backup (issue 15, class 10): positions it showed devices and
//! then lost are recognised by their epoch, the collections are planned from the start, and
//! changes by other devices are taken back only from a device that proves, with the relay's
//! receipt, that it was shown them.

mod common;

use std::sync::Arc;

use automerge::Automerge;
use automerge::sync::{State, SyncDoc};
use common::{World, col, doc, grants, reconcile};
use syncline_protocol::DocId;
use syncline_protocol::messages::{Cursor, ErrorCode, SyncItem};
use syncline_relay::hub::{Hub, SessionId};
use syncline_relay::session::Action;
use syncline_relay::storage::{SqliteStorage, Storage, sqlite_backup};

/// A sync item for `d` carrying every change of `doc`, whoever wrote them.
fn every_change(d: &DocId, doc: &Automerge) -> SyncItem {
    let mut message = doc
        .generate_sync_message(&mut State::new())
        .expect("a message");
    message.changes = doc
        .get_changes(&[])
        .into_iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect::<Vec<_>>()
        .into();
    SyncItem {
        doc: d.clone(),
        message: message.encode(),
        priority: None,
    }
}

/// Device 1 writes `todos/a` and the relay's data is backed up; returns the backup and the
/// id of the document the tests write after it, `todos/b`.
fn written_and_backed_up(w: &mut World) -> (std::path::PathBuf, DocId) {
    let a = doc("todos/a");
    w.clients.get_mut(&1).expect("client").put(&a, "x", 1);
    w.push(1, std::slice::from_ref(&a));
    let backup = w.dir.path().join("backup.db");
    sqlite_backup(&w.dir.path().join("relay.db"), &backup).expect("backup");
    (backup, doc("todos/b"))
}

/// After the backup of [`written_and_backed_up`], device 1 writes `todos/b` and device 2 gets
/// it and is shown its position; then the relay is restored (device 1 is gone for good).
/// Returns the positions shown to device 2 and `todos/b`.
fn shown_then_restored(w: &mut World) -> (Vec<Cursor>, DocId) {
    let (backup, b) = written_and_backed_up(w);
    w.clients.get_mut(&1).expect("client").put(&b, "x", 2);
    w.push(1, std::slice::from_ref(&b));
    w.run(vec![(2, reconcile(vec![]))]);
    let shown = w.last_plan(2).expect("plan").cursors;
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].seq, 2);
    assert!(shown[0].receipt.is_some() && shown[0].epoch.is_some());
    assert_eq!(w.clients[&2].get(&b, "x"), Some(2));
    let restored = Arc::new(SqliteStorage::open(&backup).expect("open the backup"));
    assert_ne!(restored.epoch(), shown[0].epoch.as_deref().expect("epoch"));
    w.hub = Hub::new(Arc::clone(&restored));
    w.storage = restored;
    (shown, b)
}

/// Device `device` got no error, and the relay stores `d` again, with content.
fn taken_back(w: &World, device: SessionId, d: &DocId) {
    assert!(
        w.clients[&device].errors().is_empty(),
        "{:?}",
        w.clients[&device].inbox
    );
    let stored = w
        .storage
        .load(&common::tenant("acme"), d)
        .expect("load")
        .expect("the document is back");
    assert!(!stored.chunks.is_empty());
}

#[test]
fn a_restored_relay_takes_lost_changes_back_only_from_devices_it_showed_them() {
    let mut w = World::new();
    let todos = || grants(&["todos"], &["todos"]);
    w.join(1, "acme", todos());
    w.join(2, "acme", todos());
    w.join(3, "acme", todos());
    let (shown, b) = shown_then_restored(&mut w);

    // Device 3 makes up a lost position and a change by device 1: the collection is
    // replanned, but the forged change is refused.
    w.reconnect(3, "acme", todos());
    let forged = Cursor {
        receipt: Some("00".repeat(16)),
        ..shown[0].clone()
    };
    w.run(vec![(3, reconcile(vec![forged]))]);
    assert_eq!(w.last_plan(3).expect("plan").reset, vec![col("todos")]);
    let forged_change = every_change(&b, &w.clients[&1].docs[&b]);
    w.run(vec![(3, Action::Sync(vec![forged_change]))]);
    assert!(
        w.clients[&3].errors().contains(&ErrorCode::FORBIDDEN.0),
        "{:?}",
        w.clients[&3].inbox
    );
    assert!(
        w.storage
            .load(&common::tenant("acme"), &b)
            .expect("load")
            .is_none()
    );

    // Device 2 shows the position it was given: it may send device 1's change back.
    w.reconnect(2, "acme", todos());
    w.run(vec![(2, reconcile(shown.clone()))]);
    assert_eq!(w.last_plan(2).expect("plan").reset, vec![col("todos")]);
    w.push(2, std::slice::from_ref(&b));
    taken_back(&w, 2, &b);

    // A receipt is the device's own: device 3 replaying device 2's is refused like a forgery.
    w.reconnect(3, "acme", todos());
    w.run(vec![(3, reconcile(shown))]);
    assert_eq!(w.last_plan(3).expect("plan").reset, vec![col("todos")]);
    w.clients.get_mut(&1).expect("client").put(&b, "y", 3);
    let errors_before = w.clients[&3].errors().len();
    let replayed = every_change(&b, &w.clients[&1].docs[&b]);
    w.run(vec![(3, Action::Sync(vec![replayed]))]);
    assert_eq!(
        w.clients[&3].errors()[errors_before..],
        [ErrorCode::FORBIDDEN.0]
    );
}

/// Found by the simulation (seed 8978 of 10,000): a device that proved the loss and was cut
/// before it sent the lost changes back no longer shows the lost position when it comes back
/// (it forgot it when told of the loss). The grant outlives the connection: it may still send
/// back another device's change.
#[test]
fn a_repair_cut_short_goes_on_when_the_device_comes_back() {
    let mut w = World::new();
    let todos = || grants(&["todos"], &["todos"]);
    w.join(1, "acme", todos());
    w.join(2, "acme", todos());
    let (shown, b) = shown_then_restored(&mut w);

    // Device 2 proves the loss, then its connection is cut before it sends anything back.
    w.reconnect(2, "acme", todos());
    w.run(vec![(2, reconcile(shown))]);
    assert_eq!(w.last_plan(2).expect("plan").reset, vec![col("todos")]);

    // Back without the lost position (its cursors were reset): device 1's change goes back.
    w.reconnect(2, "acme", todos());
    w.run(vec![(2, reconcile(vec![]))]);
    let lost = every_change(&b, &w.clients[&1].docs[&b]);
    w.run(vec![(2, Action::Sync(vec![lost]))]);
    taken_back(&w, 2, &b);
}

/// A cursor named without an epoch is not checked (devices from before epochs), so it may
/// name any number: the relay answers with it but vouches only for what its data holds.
#[test]
fn the_relay_vouches_only_for_positions_it_holds() {
    let mut w = World::new();
    w.join(1, "acme", grants(&["todos"], &["todos"]));
    let a = doc("todos/a");
    w.clients.get_mut(&1).expect("client").put(&a, "x", 1);
    w.push(1, std::slice::from_ref(&a));
    let unchecked = |seq| Cursor {
        collection: col("todos"),
        seq,
        epoch: None,
        receipt: None,
    };
    w.run(vec![(1, reconcile(vec![unchecked(1)]))]);
    let held = w.last_plan(1).expect("plan").cursors;
    assert!(held[0].receipt.is_some(), "{held:?}");
    w.run(vec![(1, reconcile(vec![unchecked(1_000_000)]))]);
    let made_up = w.last_plan(1).expect("plan").cursors;
    assert_eq!(made_up[0].seq, 1_000_000);
    assert_eq!(
        (made_up[0].epoch.as_ref(), made_up[0].receipt.as_ref()),
        (None, None),
        "no receipt for a position the data never reached"
    );
}

/// A push carries the position of what it pushes, with a receipt for the receiving device: a
/// device that has another device's change only from a push may send it back to a relay
/// restored from a backup that lost it, when its author never returns.
#[test]
fn a_change_received_only_by_push_comes_back_after_a_restore() {
    use syncline_protocol::Message;
    use syncline_protocol::messages::Reconcile;
    let mut w = World::new();
    let todos = || grants(&["todos"], &["todos"]);
    w.join(1, "acme", todos());
    w.join(2, "acme", todos());
    let (backup, b) = written_and_backed_up(&mut w);

    // After the backup device 1 writes b; device 2 gets it pushed, with b's position.
    w.clients.get_mut(&2).expect("client").inbox.clear();
    w.clients.get_mut(&1).expect("client").put(&b, "x", 2);
    w.push(1, std::slice::from_ref(&b));
    assert_eq!(w.clients[&2].get(&b, "x"), Some(2), "pushed");
    let pushed: Vec<Cursor> = w.clients[&2]
        .inbox
        .iter()
        .filter_map(|m| match m {
            Message::Sync(s) => s.positions.clone(),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(pushed.len(), 1, "{:?}", w.clients[&2].inbox);
    assert_eq!(
        (pushed[0].collection.clone(), pushed[0].seq),
        (col("todos"), 2)
    );
    assert!(pushed[0].receipt.is_some() && pushed[0].epoch.is_some());

    // The relay is restored; device 1 is gone for good. Device 2 shows the pushed position as
    // one acknowledged to it: the collection is replanned and device 1's change comes back.
    let restored = Arc::new(SqliteStorage::open(&backup).expect("open the backup"));
    w.hub = Hub::new(Arc::clone(&restored));
    w.storage = restored;
    w.reconnect(2, "acme", todos());
    w.run(vec![(
        2,
        Action::Reconcile(Reconcile {
            cursors: Vec::new(),
            changed: Vec::new(),
            fetched: None,
            acked: Some(pushed),
        }),
    )]);
    assert_eq!(w.last_plan(2).expect("plan").reset, vec![col("todos")]);
    w.push(2, std::slice::from_ref(&b));
    taken_back(&w, 2, &b);
}
