//! Bad input: a corrupt document row affects only its document and loses nothing.

mod common;

use common::{Fixture, todos};
use syncline::Error;

#[test]
fn a_corrupt_row_affects_only_its_document() {
    let fx = Fixture::new();
    let good = fx.store.create(&todos()).expect("good");
    good.put("title", "fine").expect("write");
    let bad = fx.store.create(&todos()).expect("bad");
    bad.put("title", "soon corrupt").expect("write");
    let (good_id, bad_id) = (good.id().clone(), bad.id().clone());
    let path = fx.store.path().to_owned();
    let dir = fx.dir;
    drop((good, bad, fx.store));

    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let original: Vec<u8> = conn
        .query_row(
            "SELECT c.data FROM chunks c JOIN documents d USING (doc_key) \
             WHERE d.doc_id = ?1 ORDER BY c.seq LIMIT 1",
            [bad_id.id()],
            |r| r.get(0),
        )
        .expect("chunk");
    conn.execute(
        "UPDATE chunks SET data = X'DEADBEEF00' WHERE seq = 0 AND doc_key = \
         (SELECT doc_key FROM documents WHERE doc_id = ?1)",
        [bad_id.id()],
    )
    .expect("corrupt it");
    drop(conn);

    let store = syncline::Store::open(&path).expect("the store still opens");
    assert_eq!(store.list(&todos()).expect("list").len(), 2);
    let err = store
        .document(&bad_id)
        .and_then(|d| d.get("title"))
        .expect_err("corrupt");
    assert!(
        matches!(err, Error::CorruptDocument { ref doc, .. } if *doc == bad_id),
        "{err:?}"
    );
    assert!(matches!(
        store.document(&bad_id).and_then(|d| d.put("x", 1)),
        Err(Error::CorruptDocument { .. })
    ));
    let good = store.document(&good_id).expect("good doc");
    assert_eq!(
        good.get_str("title").expect("read").as_deref(),
        Some("fine")
    );
    good.put("title", "still writable").expect("write");
    assert!(
        store.pending_changes().is_err(),
        "the outbox reports the corrupt document"
    );
    drop((good, store));

    // Nothing was lost: restoring the bytes restores the document.
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute(
        "UPDATE chunks SET data = ?2 WHERE seq = 0 AND doc_key = \
         (SELECT doc_key FROM documents WHERE doc_id = ?1)",
        rusqlite::params![bad_id.id(), original],
    )
    .expect("restore");
    drop(conn);
    let store = syncline::Store::open(&path).expect("open");
    assert_eq!(
        store
            .document(&bad_id)
            .and_then(|d| d.get_str("title"))
            .expect("restored")
            .as_deref(),
        Some("soon corrupt")
    );
    drop(dir);
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let fx = Fixture::new();
    assert!(matches!(
        syncline::Store::open(fx.store.path()),
        Err(Error::Locked { .. })
    ));
}
