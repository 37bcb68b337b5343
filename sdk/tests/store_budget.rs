//! The storage budget: evicting the content of fully synced on-demand documents, least
//! recently used first, never an unacknowledged change, never an eager collection.

mod common;

use std::collections::HashSet;

use common::{Fixture, todos};
use syncline::engine::SyncStore;
use syncline::{Collection, DeferReason, DocId, Error, Heads, Value};

const RELAY: &str = "relay-1";

fn photos() -> Collection {
    Collection::new("photos").expect("valid")
}

/// Text that does not compress away (Automerge deflates large columns).
fn noise(n: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + u8::try_from(x % 26).expect("letter"))
        })
        .collect()
}

#[test]
fn fully_synced_on_demand_documents_are_evicted_least_recently_changed_first() {
    let fx = Fixture::new();
    let mut photos_ids = Vec::new();
    for i in 0..4 {
        let doc = fx.store.create(&photos()).expect("create");
        doc.put("body", noise(10_000, i + 1)).expect("put");
        fx.store
            .mark_acknowledged(doc.id(), RELAY, &doc.heads().expect("heads"))
            .expect("ack");
        photos_ids.push(doc.id().clone());
    }
    // Not acknowledged: never evicted.
    let pending = fx.store.create(&photos()).expect("create");
    pending.put("body", noise(10_000, 99)).expect("put");
    // Eager content: never evicted.
    let todo = fx.store.create(&todos()).expect("create");
    todo.put("title", "milk").expect("put");
    fx.store
        .mark_acknowledged(todo.id(), RELAY, &todo.heads().expect("heads"))
        .expect("ack");
    let total: u64 = [photos(), todos()]
        .iter()
        .flat_map(|c| fx.store.list(c).expect("list"))
        .map(|i| i.stored_bytes)
        .sum();
    let per_photo = fx.store.info(&photos_ids[0]).expect("info").stored_bytes;

    // Room for all but two photos: the two least recently changed go.
    let budget = total - 2 * per_photo + 10;
    let outcome = fx
        .store
        .enforce_budget(RELAY, budget, &[photos()], &HashSet::new(), 1)
        .expect("enforce");
    let evicted: Vec<_> = outcome.evicted.iter().map(|d| d.doc.clone()).collect();
    assert_eq!(evicted, photos_ids[..2].to_vec());
    assert_eq!(outcome.over_budget_bytes, 0);
    assert!(outcome.content_bytes <= budget);

    // The metadata stays listed; the content is gone, and opening says why.
    let listed = fx.store.list(&photos()).expect("list");
    assert_eq!(listed.len(), 5, "still listed");
    assert!(listed.iter().filter(|i| i.evicted).count() == 2);
    assert!(matches!(
        fx.store.document(&photos_ids[0]),
        Err(Error::Evicted(_))
    ));
    assert_eq!(
        fx.store
            .document(&photos_ids[2])
            .expect("kept")
            .get_str("body")
            .expect("read")
            .map(|s| s.len()),
        Some(10_000)
    );
    let deferred = fx.store.deferred().expect("deferred");
    assert_eq!(deferred.len(), 2);
    assert!(
        deferred
            .iter()
            .all(|d| d.reason == DeferReason::StorageBudget)
    );
    assert!(
        fx.store
            .pending_documents()
            .expect("pending")
            .contains(pending.id())
    );
    assert!(
        !fx.store
            .pending_documents()
            .expect("pending")
            .contains(&photos_ids[0]),
        "an evicted document is not pending"
    );
    // Writing to an evicted document is refused, typed: nothing is lost.
    let doc = Value::from("x");
    assert!(matches!(
        fx.store
            .document(&photos_ids[1])
            .and_then(|d| d.put("k", doc)),
        Err(Error::Evicted(_))
    ));

    // A budget below what may not be evicted: everything evictable goes, and the rest is
    // reported as over the budget. What the sync engine waits on stays; so does a document
    // another relay also holds (only this relay is asked for it again).
    let keep: HashSet<_> = [photos_ids[2].clone()].into_iter().collect();
    let outcome = fx
        .store
        .enforce_budget(RELAY, 1, &[photos()], &keep, 2)
        .expect("enforce");
    assert_eq!(outcome.evicted.len(), 1, "the last acknowledged photo");
    assert!(fx.store.document(&photos_ids[2]).is_ok(), "kept");
    let other = fx.store.document(&photos_ids[2]).expect("kept");
    fx.store
        .mark_acknowledged(&photos_ids[2], "relay-2", &other.heads().expect("heads"))
        .expect("ack");
    drop(other);
    let outcome = fx
        .store
        .enforce_budget(RELAY, 1, &[photos()], &HashSet::new(), 3)
        .expect("enforce");
    assert!(
        outcome.evicted.is_empty(),
        "held by two relays: not evicted"
    );
    assert!(outcome.over_budget_bytes > 0);
    assert!(
        fx.store.document(pending.id()).is_ok(),
        "the unacknowledged one stays"
    );
    assert!(fx.store.document(todo.id()).is_ok(), "eager content stays");

    // It all survives a restart.
    drop((pending, todo));
    let fx = fx.reopen();
    assert!(matches!(
        fx.store.document(&photos_ids[3]),
        Err(Error::Evicted(_))
    ));
    assert_eq!(fx.store.deferred().expect("deferred").len(), 3);
}

/// A photo the camera took and this device captioned, an album this device started and the
/// camera filled, and a document of this device's own; all acknowledged by the relay.
fn shared_and_own(fx: &Fixture) -> (DocId, DocId, DocId) {
    let camera = fx.other_device("camera");
    let copy = |from: &syncline::Store, to: &syncline::Store, id: &DocId| {
        let changes = from.changes_since(id, &Heads::default()).expect("export");
        to.apply_changes(id, &changes).expect("import");
    };
    let photo = camera.create(&photos()).expect("create");
    photo.put("body", noise(20_000, 1)).expect("put");
    let photo = photo.id().clone();
    copy(&camera, &fx.store, &photo);
    let captioned = fx.store.document(&photo).expect("photo");
    captioned.put("caption", "mine").expect("caption");

    let album = fx.store.create(&photos()).expect("create");
    album.put("title", "holidays").expect("title");
    let album = album.id().clone();
    copy(&fx.store, &camera, &album);
    let cover = camera.document(&album).expect("album");
    cover.put("cover", noise(20_000, 2)).expect("cover");
    copy(&camera, &fx.store, &album);

    let own = fx.store.create(&photos()).expect("create");
    own.put("body", noise(20_000, 3)).expect("put");
    let own = own.id().clone();
    for id in [&photo, &album, &own] {
        let heads = fx.store.document(id).expect("doc").heads().expect("heads");
        fx.store.mark_acknowledged(id, RELAY, &heads).expect("ack");
    }
    (photo, album, own)
}

fn evicted(fx: &Fixture, id: &DocId) -> bool {
    matches!(fx.store.document(id), Err(Error::Evicted(_)))
}

/// Issue 15: eviction keeps this device's own changes apart, so that a relay restored from an
/// older backup gets them back: they are pending again once the relay says it lost them, and
/// a document it holds nothing of is made again from them.
#[test]
fn eviction_keeps_this_devices_own_changes_for_a_relay_that_loses_them() {
    let fx = Fixture::new();
    let (photo, album, own) = shared_and_own(&fx);
    let own_bytes = fx.store.info(&own).expect("info").stored_bytes;

    // Room for the own document and a little: the two shared documents go, their own
    // changes stay; the own document is passed over (keeping it would free nothing).
    let outcome = fx
        .store
        .enforce_budget(RELAY, own_bytes + 2_000, &[photos()], &HashSet::new(), 1)
        .expect("enforce");
    assert_eq!(outcome.over_budget_bytes, 0, "{outcome:?}");
    let gone: HashSet<DocId> = outcome.evicted.iter().map(|d| d.doc.clone()).collect();
    assert_eq!(gone, HashSet::from([photo.clone(), album.clone()]));
    assert!(evicted(&fx, &photo) && evicted(&fx, &album) && !evicted(&fx, &own));
    assert!(outcome.content_bytes > own_bytes, "the kept changes count");
    assert!(fx.store.pending_documents().expect("pending").is_empty());

    // The relay lost what it acknowledged: the kept changes are pending again; an evicted
    // document without any would not be (there is nothing of it to send).
    fx.store
        .forget_positions(RELAY, &[photos()])
        .expect("forget");
    let pending: HashSet<DocId> = fx
        .store
        .pending_documents()
        .expect("pending")
        .into_iter()
        .collect();
    assert_eq!(
        pending,
        HashSet::from([photo.clone(), album.clone(), own.clone()])
    );
    let changes = fx.store.pending_changes().expect("pending changes");
    let of_photo: Vec<_> = changes.iter().filter(|c| c.doc_id == photo).collect();
    assert_eq!(of_photo.len(), 1, "the caption, not the camera's body");
    assert_eq!(of_photo[0].change.device, Some(fx.store.device_id()));

    // The relay holds nothing of them: the caption needs the camera's photo, the album is
    // made again from this device's changes alone.
    assert!(!fx.store.restore_kept(&photo, 2).expect("restore"));
    assert!(fx.store.restore_kept(&album, 2).expect("restore"));
    let back = fx.store.document(&album).expect("album is back");
    assert_eq!(
        back.get("title").expect("title"),
        Some(Value::from("holidays"))
    );
    assert_eq!(
        back.get("cover").expect("cover"),
        None,
        "the camera's part comes from it"
    );
    assert!(
        fx.store
            .pending_documents()
            .expect("pending")
            .contains(&album)
    );
    drop(back);

    // Kept across a restart.
    let fx = fx.reopen();
    assert!(evicted(&fx, &photo));
    assert_eq!(
        fx.store
            .pending_changes()
            .expect("pending changes")
            .iter()
            .filter(|c| c.doc_id == photo)
            .count(),
        1
    );
}

/// Only a budget too small for them drops this device's own changes: those of evicted
/// documents first, then documents of its own go whole.
#[test]
fn a_budget_too_small_for_own_changes_leaves_them_to_the_relay() {
    let fx = Fixture::new();
    let (photo, album, own) = shared_and_own(&fx);
    let outcome = fx
        .store
        .enforce_budget(RELAY, 0, &[photos()], &HashSet::new(), 1)
        .expect("enforce");
    assert_eq!(outcome.content_bytes, 0, "{outcome:?}");
    assert_eq!(outcome.evicted.len(), 3);
    assert!([&photo, &album, &own].iter().all(|id| evicted(&fx, id)));
    fx.store
        .forget_positions(RELAY, &[photos()])
        .expect("forget");
    assert!(
        fx.store.pending_documents().expect("pending").is_empty(),
        "nothing kept, nothing to send"
    );
    assert!(!fx.store.restore_kept(&album, 2).expect("restore"));
}

/// A sync message from the relay carrying exactly `changes` (encoded Automerge changes).
fn relay_message(changes: &[Vec<u8>]) -> automerge::sync::Message {
    use automerge::sync::SyncDoc;
    let mut message = automerge::Automerge::new()
        .generate_sync_message(&mut automerge::sync::State::new())
        .expect("a first message");
    message.changes = changes.to_vec().into();
    message
}

/// A kept change that needs another device's change the relay lost stays kept: a document
/// made again from kept changes alone stays evicted, and one whose content came back can be
/// read but not written (a local change would take the kept one's sequence number) until
/// the missing change arrives and the kept one goes back in.
#[test]
fn a_document_waiting_for_its_own_kept_changes_is_not_written() {
    let fx = Fixture::new();
    let camera = fx.other_device("camera");
    let copy = |from: &syncline::Store, to: &syncline::Store, id: &DocId| {
        let changes = from.changes_since(id, &Heads::default()).expect("export");
        to.apply_changes(id, &changes).expect("import");
    };
    // The camera's photo (c0); this device titles it (c1); the camera adds a cover (x);
    // this device renames it after seeing the cover (c2, which needs x).
    let photo = camera.create(&photos()).expect("create");
    photo.put("body", noise(20_000, 1)).expect("body");
    let id = photo.id().clone();
    let c0 = camera.changes_since(&id, &Heads::default()).expect("c0");
    copy(&camera, &fx.store, &id);
    fx.store
        .document(&id)
        .expect("doc")
        .put("title", "draft")
        .expect("c1");
    copy(&fx.store, &camera, &id);
    let before_cover = camera.document(&id).expect("doc").heads().expect("heads");
    camera
        .document(&id)
        .expect("doc")
        .put("cover", "red")
        .expect("x");
    let x = camera.changes_since(&id, &before_cover).expect("x");
    copy(&camera, &fx.store, &id);
    fx.store
        .document(&id)
        .expect("doc")
        .put("title", "final")
        .expect("c2");
    let heads = fx.store.document(&id).expect("doc").heads().expect("heads");
    fx.store.mark_acknowledged(&id, RELAY, &heads).expect("ack");
    fx.store
        .enforce_budget(RELAY, 2_000, &[photos()], &HashSet::new(), 1)
        .expect("evict");
    assert!(evicted(&fx, &id));
    assert!(
        fx.store.info(&id).expect("info").kept_bytes > 0,
        "c1 and c2 kept"
    );
    fx.store
        .forget_positions(RELAY, &[photos()])
        .expect("forget");

    // Made again from its own changes alone: c1 needs c0, so nothing of it; stays evicted.
    assert!(!fx.store.restore_kept(&id, 2).expect("restore"));
    assert!(evicted(&fx, &id));

    // An album this device started (a1) and renamed (a2) after the camera's cover (y): a1
    // alone would apply, but not a2, so it is not made again from a1 alone either.
    let album = fx.store.create(&photos()).expect("a1");
    album.put("title", "holidays").expect("a1");
    let album = album.id().clone();
    copy(&fx.store, &camera, &album);
    camera
        .document(&album)
        .expect("album")
        .put("cover", noise(20_000, 5))
        .expect("y");
    copy(&camera, &fx.store, &album);
    fx.store
        .document(&album)
        .expect("album")
        .put("title", "summer")
        .expect("a2");
    let heads = fx
        .store
        .document(&album)
        .expect("album")
        .heads()
        .expect("heads");
    fx.store
        .mark_acknowledged(&album, RELAY, &heads)
        .expect("ack");
    fx.store
        .enforce_budget(RELAY, 2_000, &[photos()], &HashSet::new(), 1)
        .expect("evict");
    assert!(evicted(&fx, &album));
    fx.store
        .forget_positions(RELAY, &[photos()])
        .expect("forget");
    assert!(!fx.store.restore_kept(&album, 2).expect("restore"));
    assert!(
        evicted(&fx, &album),
        "not made again from part of its changes"
    );

    // The restored relay holds only c0: c1 goes back in, c2 waits for x.
    let mut states = std::collections::HashMap::new();
    let received = fx.store.receive(
        RELAY,
        vec![(id.clone(), relay_message(&c0))],
        &mut states,
        3,
    );
    assert!(received[0].1.is_ok(), "{received:?}");
    let doc = fx.store.document(&id).expect("back");
    assert_eq!(doc.get("title").expect("title"), Some(Value::from("draft")));
    assert!(fx.store.info(&id).expect("info").kept_bytes > 0, "c2 waits");
    assert!(matches!(
        doc.put("title", "mine"),
        Err(Error::AwaitingOwnChanges(_))
    ));

    // x arrives: c2 goes back in, and writes work again.
    let received = fx
        .store
        .receive(RELAY, vec![(id.clone(), relay_message(&x))], &mut states, 4);
    assert!(received[0].1.is_ok(), "{received:?}");
    assert_eq!(doc.get("title").expect("title"), Some(Value::from("final")));
    assert_eq!(fx.store.info(&id).expect("info").kept_bytes, 0);
    doc.put("title", "mine").expect("written");
}
