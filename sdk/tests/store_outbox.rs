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

#[test]
fn acknowledgements_never_go_backwards() {
    let fx = Fixture::new();
    let a = fx.store.create(&todos()).expect("a");
    let old = a.heads().expect("heads");
    a.put("x", 1).expect("write");
    let new = a.heads().expect("heads");
    fx.store
        .mark_acknowledged(a.id(), "relay-1", &new)
        .expect("ack");
    // A late ack of older heads, and an ack of heads we do not know, change nothing.
    fx.store
        .mark_acknowledged(a.id(), "relay-1", &old)
        .expect("late ack");
    let unknown: Heads = "22".repeat(32).parse().expect("hash syntax");
    fx.store
        .mark_acknowledged(a.id(), "relay-1", &unknown)
        .expect("ahead ack");
    assert!(fx.store.pending_documents().expect("pending").is_empty());
    assert!(fx.store.pending_changes().expect("changes").is_empty());
}

#[test]
fn two_relays_covering_two_branches_together_clear_the_document() {
    let fx = Fixture::new();
    let laptop = fx.other_device("laptop");
    let doc = fx.store.create(&todos()).expect("create");
    let id = doc.id().clone();
    laptop
        .apply_changes(
            &id,
            &fx.store
                .changes_since(&id, &Heads::default())
                .expect("export"),
        )
        .expect("copy");
    doc.put("phone", 1).expect("phone branch");
    let phone_branch = doc.heads().expect("heads");
    laptop
        .document(&id)
        .expect("doc")
        .put("laptop", 1)
        .expect("laptop branch");
    let laptop_branch = laptop.document(&id).expect("doc").heads().expect("heads");
    fx.store
        .apply_changes(
            &id,
            &laptop
                .changes_since(&id, &Heads::default())
                .expect("export"),
        )
        .expect("merge");
    fx.store
        .mark_acknowledged(&id, "relay-a", &phone_branch)
        .expect("ack a");
    assert_eq!(fx.store.pending_documents().expect("pending").len(), 1);
    fx.store
        .mark_acknowledged(&id, "relay-b", &laptop_branch)
        .expect("ack b");
    assert!(fx.store.pending_documents().expect("pending").is_empty());
    assert!(fx.store.pending_changes().expect("changes").is_empty());
}
