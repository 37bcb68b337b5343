//! The outbox: pending documents and changes, cleared by relay acknowledgements.

mod common;

use common::{Fixture, todos};
use syncline::Heads;

#[test]
fn pending_until_acknowledged_and_again_after_new_writes() {
    let fx = Fixture::new();
    let a = fx.store.create(&todos()).expect("a");
    let b = fx.store.create(&todos()).expect("b");
    a.put("x", 1).expect("write");
    assert_eq!(fx.store.pending_documents().expect("pending").len(), 2);
    assert_eq!(fx.store.pending_changes().expect("changes").len(), 3);

    fx.store
        .mark_acknowledged(a.id(), "relay-1", &a.heads().expect("heads"))
        .expect("ack");
    assert_eq!(
        fx.store.pending_documents().expect("pending"),
        vec![b.id().clone()]
    );

    // Acknowledging older heads leaves only the newer change pending.
    let old = b.heads().expect("heads");
    b.put("y", 2).expect("write");
    fx.store
        .mark_acknowledged(b.id(), "relay-1", &old)
        .expect("partial ack");
    let pending = fx.store.pending_changes().expect("changes");
    assert_eq!(pending.len(), 1);
    assert_eq!(&pending[0].doc_id, b.id());
    assert_eq!(
        Heads::new(vec![pending[0].change.hash]),
        b.heads().expect("heads")
    );

    // Acknowledgements survive a restart; a new write makes a document pending again.
    let (a_doc, b_doc) = (a, b);
    let (a, b) = (a_doc.id().clone(), b_doc.id().clone());
    drop((a_doc, b_doc));
    let fx = fx.reopen();
    assert_eq!(fx.store.pending_documents().expect("pending"), vec![b]);
    let a = fx.store.document(&a).expect("a");
    a.put("x", 2).expect("write");
    assert_eq!(fx.store.pending_documents().expect("pending").len(), 2);
}

#[test]
fn unknown_hashes_in_an_ack_are_ignored() {
    let fx = Fixture::new();
    let a = fx.store.create(&todos()).expect("a");
    let unknown: Heads = "11".repeat(32).parse().expect("hash syntax");
    fx.store
        .mark_acknowledged(a.id(), "relay-1", &unknown)
        .expect("ack");
    assert_eq!(
        fx.store.pending_documents().expect("pending"),
        vec![a.id().clone()]
    );
    let mut both = a.heads().expect("heads").as_slice().to_vec();
    both.extend(unknown.as_slice());
    fx.store
        .mark_acknowledged(a.id(), "relay-1", &Heads::new(both))
        .expect("ack");
    assert!(fx.store.pending_documents().expect("pending").is_empty());
}
