//! What the end-to-end tests share about devices' stores: waiting for a condition, comparing
//! two stores, what a relay acknowledged.

use std::time::Duration;

use syncline::{Collection, Store};

/// Waits until `f` holds, at most `wait` (failing the test with `what` past it).
pub fn eventually(wait: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + wait;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Both stores hold the same documents of `collection`, at the same heads.
pub fn same_documents(a: &Store, b: &Store, collection: &Collection) -> bool {
    let (la, lb) = (
        a.list(collection).expect("list"),
        b.list(collection).expect("list"),
    );
    la.len() == lb.len()
        && la.iter().all(|info| {
            let ha = a.document(&info.id).and_then(|d| d.heads());
            let hb = b.document(&info.id).and_then(|d| d.heads());
            matches!((ha, hb), (Ok(x), Ok(y)) if x == y)
        })
}

/// The documents of `collection` the relay acknowledged whole (none of their changes pending).
pub fn acknowledged(store: &Store, collection: &Collection) -> Vec<syncline::DocId> {
    let pending: std::collections::HashSet<_> = store
        .pending_documents()
        .expect("pending")
        .into_iter()
        .collect();
    store
        .list(collection)
        .expect("list")
        .into_iter()
        .map(|info| info.id)
        .filter(|id| !pending.contains(id))
        .collect()
}
