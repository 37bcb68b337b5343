//! The storage budget: evicting the content of fully synced on-demand documents, least
//! recently used first, never an unacknowledged change, never an eager collection.

mod common;

use std::collections::HashSet;

use common::{Fixture, todos};
use syncline::{Collection, DeferReason, Error, Value};

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
