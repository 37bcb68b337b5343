//! Listeners: per document, per collection and store-wide, local and remote, unsubscribed on
//! drop.

mod common;

use std::sync::{Arc, Mutex};

use common::{Fixture, todos};
use syncline::{ChangeEvent, ChangeOrigin, Collection, Heads, PatchAction, Value};

fn recorder() -> (
    Arc<Mutex<Vec<ChangeEvent>>>,
    impl Fn(&ChangeEvent) + Send + Sync + 'static,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    (events, move |e: &ChangeEvent| {
        sink.lock().expect("lock").push(e.clone())
    })
}

#[test]
fn document_and_collection_listeners_receive_patches() {
    let fx = Fixture::new();
    let (by_collection, listener) = recorder();
    let sub = fx.store.watch_collection(&todos(), listener);
    let (others, other_listener) = recorder();
    let _other = fx
        .store
        .watch_collection(&Collection::new("notes").expect("valid"), other_listener);

    let doc = fx.store.create(&todos()).expect("create");
    let (by_doc, listener) = recorder();
    let doc_sub = doc.watch(listener);
    doc.put("title", "hello").expect("write");

    let events = by_collection.lock().expect("lock").clone();
    assert_eq!(events.len(), 2, "creation and write");
    let write = &events[1];
    assert_eq!(write.origin, ChangeOrigin::Local);
    assert_eq!(write.heads, doc.heads().expect("heads"));
    assert!(matches!(
        &write.patches[..],
        [p] if p.path.is_root() && matches!(&p.action, PatchAction::PutMap { key, value: Value::Str(v), .. } if key == "title" && v == "hello")
    ));
    assert_eq!(by_doc.lock().expect("lock").len(), 1);
    assert!(others.lock().expect("lock").is_empty());

    doc_sub.unsubscribe();
    drop(sub);
    doc.put("title", "again").expect("write");
    assert_eq!(by_collection.lock().expect("lock").len(), 2);
    assert_eq!(by_doc.lock().expect("lock").len(), 1);
}

#[test]
fn remote_changes_fire_listeners_with_remote_origin() {
    let fx = Fixture::new();
    let laptop = fx.other_device("laptop");
    let doc = fx.store.create(&todos()).expect("create");
    doc.put("title", "x").expect("write");
    let (events, listener) = recorder();
    let _sub = laptop.watch_collection(&todos(), listener);
    laptop
        .apply_changes(
            doc.id(),
            &fx.store
                .changes_since(doc.id(), &Heads::default())
                .expect("export"),
        )
        .expect("apply");
    let events = events.lock().expect("lock").clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].origin, ChangeOrigin::Remote);
    assert!(
        events[0]
            .patches
            .iter()
            .any(|p| matches!(&p.action, PatchAction::PutMap { key, .. } if key == "title"))
    );
}

/// The store-wide listener hears every collection; each event names the devices it brings
/// changes from: this store's own for a local write, the authors for a remote merge.
#[test]
fn a_store_wide_listener_hears_every_collection_with_the_authoring_devices() {
    let fx = Fixture::new();
    let laptop = fx.other_device("laptop");
    let (everything, listener) = recorder();
    let sub = laptop.watch_all(listener);
    let notes = Collection::new("notes").expect("valid");

    let mine = laptop.create(&notes).expect("create");
    mine.put("text", "local").expect("write");
    let theirs = fx.store.create(&todos()).expect("create");
    theirs.put("title", "x").expect("write");
    let export = |doc: &syncline::Document| {
        fx.store
            .changes_since(doc.id(), &Heads::default())
            .expect("export")
    };
    laptop
        .apply_changes(theirs.id(), &export(&theirs))
        .expect("apply");
    // Concurrent writes: the merge names the phone only (the laptop's change is its own).
    let shared = laptop.document(theirs.id()).expect("merged");
    shared.put("done", true).expect("laptop writes");
    theirs.put("title", "y").expect("phone writes");
    laptop
        .apply_changes(theirs.id(), &export(&theirs))
        .expect("apply again");

    let events = everything.lock().expect("lock").clone();
    let summary: Vec<(String, ChangeOrigin, Vec<syncline::DeviceId>)> = events
        .iter()
        .map(|e| (e.doc_id.to_string(), e.origin, e.devices.clone()))
        .collect();
    let (phone, me) = (fx.store.device_id(), laptop.device_id());
    assert_eq!(
        summary,
        vec![
            (mine.id().to_string(), ChangeOrigin::Local, vec![me]),
            (mine.id().to_string(), ChangeOrigin::Local, vec![me]),
            (theirs.id().to_string(), ChangeOrigin::Remote, vec![phone]),
            (theirs.id().to_string(), ChangeOrigin::Local, vec![me]),
            (theirs.id().to_string(), ChangeOrigin::Remote, vec![phone]),
        ]
    );
    drop(sub);
    mine.put("text", "unheard").expect("write");
    assert_eq!(everything.lock().expect("lock").len(), 5);
}

#[test]
fn a_listener_may_write_to_the_store() {
    let fx = Fixture::new();
    let audit = fx
        .store
        .create(&Collection::new("audit").expect("valid"))
        .expect("audit");
    let audit_doc = audit.clone();
    let _sub = fx.store.watch_collection(&todos(), move |e| {
        audit_doc
            .put(e.doc_id.id(), true)
            .expect("write from a listener");
    });
    let doc = fx.store.create(&todos()).expect("create");
    assert_eq!(audit.get_bool(doc.id().id()).expect("read"), Some(true));
}

#[test]
fn a_listener_can_unsubscribe_itself_and_a_panicking_one_does_not_stop_delivery() {
    let fx = Fixture::new();
    let slot: Arc<Mutex<Option<syncline::Subscription>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0));
    let (slot2, calls2) = (Arc::clone(&slot), Arc::clone(&calls));
    let sub = fx.store.watch_collection(&todos(), move |_| {
        *calls2.lock().expect("lock") += 1;
        // Dropping its own subscription from inside the callback must not deadlock.
        drop(slot2.lock().expect("lock").take());
    });
    *slot.lock().expect("lock") = Some(sub);
    let doc = fx.store.create(&todos()).expect("create");
    doc.put("a", 1).expect("write");
    assert_eq!(
        *calls.lock().expect("lock"),
        1,
        "called once, then unsubscribed"
    );

    // A listener that panics loses its event but later events still arrive.
    let _boom = fx.store.watch_collection(&todos(), |e| {
        if e.patches
            .iter()
            .any(|p| matches!(&p.action, PatchAction::PutMap { key, .. } if key == "boom"))
        {
            panic!("listener failure");
        }
    });
    let (events, listener) = recorder();
    let _rec = fx.store.watch_collection(&todos(), listener);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doc.put("boom", 1)));
    assert!(
        result.is_err(),
        "the listener's panic reaches the writer's thread"
    );
    doc.put("after", 1).expect("write after the panic");
    assert!(events.lock().expect("lock").iter().any(|e| {
        e.patches
            .iter()
            .any(|p| matches!(&p.action, PatchAction::PutMap { key, .. } if key == "after"))
    }));
    // The write whose listener panicked is durable all the same.
    assert_eq!(doc.get_i64("boom").expect("read"), Some(1));
}

/// The store counts its listeners: each watch adds one, a subscription dropped or unsubscribed
/// removes it (what bindings' tests check after a stream is abandoned).
#[test]
fn the_listener_count_follows_subscriptions() {
    let fx = Fixture::new();
    assert_eq!(fx.store.listener_count(), 0);
    let a = fx.store.watch_collection(&todos(), |_| {});
    let b = fx.store.watch_all(|_| {});
    let doc = fx.store.create(&todos()).expect("create");
    let c = fx.store.watch_document(doc.id(), |_| {});
    let d = fx.store.watch_collection_conflicts(&todos(), |_| {});
    assert_eq!(fx.store.listener_count(), 4);
    drop(a);
    b.unsubscribe();
    assert_eq!(fx.store.listener_count(), 2);
    drop((c, d));
    assert_eq!(fx.store.listener_count(), 0);
}
