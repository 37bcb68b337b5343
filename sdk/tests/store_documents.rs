//! Documents: create, read, write operations, list, delete, durability across reopen.

mod common;

use common::{Fixture, todos};
use syncline::{Collection, DocId, Error, Path, Priority, Value, WriteOp};

#[test]
fn create_write_and_read_back_after_reopen() {
    let fx = Fixture::new();
    let doc = fx.store.create(&todos()).expect("create");
    doc.transact(Some("first"), |tx| {
        tx.put("title", "Buy milk")?;
        tx.put("done", false)?;
        tx.put("meta/tags", Value::List(vec!["a".into(), "b".into()]))?;
        tx.put("notes", Value::Text("hello".into()))?;
        tx.put("votes", Value::Counter(0))?;
        tx.put("ratio", 0.5)
    })
    .expect("write");
    doc.increment("votes", 3).expect("increment");
    doc.splice_text("notes", 5, 0, " world").expect("splice");
    doc.transact(None, |tx| {
        tx.insert("meta/tags/0", "first")?;
        tx.push("meta/tags", "last")?;
        tx.delete("meta/tags/1")
    })
    .expect("list ops");
    let id = doc.id().clone();
    let heads = doc.heads().expect("heads");
    drop(doc); // a handle keeps the store open

    let fx = fx.reopen();
    let doc = fx.store.document(&id).expect("still there");
    assert_eq!(doc.heads().expect("heads"), heads);
    assert_eq!(
        doc.to_json().expect("json"),
        serde_json::json!({
            "title": "Buy milk", "done": false, "ratio": 0.5, "votes": 3,
            "notes": "hello world", "meta": {"tags": ["first", "b", "last"]}
        })
    );
    assert_eq!(
        doc.get_str("title").expect("typed"),
        Some("Buy milk".into())
    );
    assert_eq!(doc.get_bool("done").expect("typed"), Some(false));
    assert_eq!(doc.get_i64("votes").expect("typed"), Some(3));
    assert_eq!(doc.get_f64("ratio").expect("typed"), Some(0.5));
    assert_eq!(
        doc.get_str("meta/tags/2").expect("typed"),
        Some("last".into())
    );
    assert_eq!(doc.get("missing/deeper").expect("absent is fine"), None);
}

#[test]
fn typed_getters_and_paths_report_typed_errors() {
    let fx = Fixture::new();
    let doc = fx.store.create(&todos()).expect("create");
    doc.transact(None, |tx| {
        tx.put("title", "x")?;
        tx.put("list", Value::List(vec![1.into()]))
    })
    .expect("write");
    assert!(matches!(
        doc.get_i64("title"),
        Err(Error::TypeMismatch {
            expected: "int",
            found: "string",
            ..
        })
    ));
    assert!(matches!(
        doc.get("title/inner"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        doc.get("list/first"),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        doc.put("list/5", 1),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(doc.put("", 1), Err(Error::InvalidPath { .. })));
    assert!(matches!(
        doc.increment("title", 1),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        doc.splice_text("title", 0, 0, "x"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        doc.put("bad~2", 1),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        doc.put("_syncline_deleted", true),
        Err(Error::InvalidPath { .. })
    ));
    // Nothing of the failed writes reached the document.
    assert_eq!(
        doc.to_json().expect("json"),
        serde_json::json!({"title": "x", "list": [1]})
    );
}

#[test]
fn a_failing_transaction_writes_nothing() {
    let fx = Fixture::new();
    let doc = fx.store.create(&todos()).expect("create");
    let before = doc.heads().expect("heads");
    let result: Result<(), Error> = doc.transact(None, |tx| {
        tx.put("a", 1)?;
        tx.put("a/b/c", 2) // a is a scalar: fails after the first put
    });
    assert!(result.is_err());
    assert_eq!(doc.heads().expect("heads"), before);
    assert_eq!(doc.get("a").expect("read"), None);
}

#[test]
fn list_and_delete_by_collection() {
    let fx = Fixture::new();
    let notes = Collection::new("notes").expect("valid");
    let a = fx.store.create(&todos()).expect("a");
    let b = fx.store.create(&todos()).expect("b");
    fx.store.create(&notes).expect("note");
    let listed: Vec<DocId> = fx
        .store
        .list(&todos())
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(listed, vec![a.id().clone(), b.id().clone()]);

    fx.store.delete(a.id()).expect("delete");
    fx.store.delete(a.id()).expect("deleting twice is a no-op");
    assert!(matches!(a.get("x"), Err(Error::Deleted(_))));
    assert!(matches!(fx.store.document(a.id()), Err(Error::Deleted(_))));
    assert!(fx.store.info(a.id()).expect("tombstone kept").deleted);
    let a_doc = a;
    let a = a_doc.id().clone();
    drop((a_doc, b));
    let fx = fx.reopen();
    assert_eq!(fx.store.list(&todos()).expect("list").len(), 1);
    assert!(matches!(fx.store.document(&a), Err(Error::Deleted(_))));
    // The deletion is pending: it must sync.
    assert!(fx.store.pending_documents().expect("pending").contains(&a));
}

#[test]
fn create_at_priority_and_write_ops() {
    let fx = Fixture::new();
    let id: DocId = "todos/chosen-id".parse().expect("valid");
    let initial = Value::from_json(&serde_json::json!({"title": "t", "n": 1}));
    let doc = fx
        .store
        .create_at(id.clone(), initial.clone(), Priority::High)
        .expect("create");
    assert!(matches!(
        fx.store.create_at(id.clone(), initial, Priority::Low),
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(doc.priority().expect("priority"), Priority::High);
    doc.set_priority(Priority::Critical).expect("set");
    assert_eq!(
        fx.store.info(&id).expect("info").priority,
        Priority::Critical
    );

    doc.apply(
        &[
            WriteOp::Put {
                path: Path::parse("items").expect("path"),
                value: Value::List(vec![]),
            },
            WriteOp::Push {
                list: Path::root().key("items"),
                value: "x".into(),
            },
            WriteOp::Delete {
                path: Path::root().key("n"),
            },
        ],
        Some("ops"),
    )
    .expect("apply");
    assert_eq!(
        doc.to_json().expect("json"),
        serde_json::json!({"title": "t", "items": ["x"]})
    );
    assert!(matches!(
        fx.store.create_at(id.clone(), Value::Int(1), Priority::Low),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        fx.store.document(&"todos/nope".parse().expect("valid")),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn one_thread_commits_each_write_alone() {
    let fx = Fixture::new();
    let doc = fx.store.create(&todos()).expect("create");
    for i in 0..10 {
        doc.put("n", i).expect("write");
    }
    // A lone writer never waits for a group: each write is its own commit.
    let stats = fx.store.write_stats();
    assert_eq!((stats.commits, stats.writes), (11, 11));
    assert!(stats.commit_time > std::time::Duration::ZERO);
}

#[test]
fn writes_from_many_threads_all_land() {
    let fx = Fixture::new();
    let shared = fx.store.create(&todos()).expect("create");
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = fx.store.clone();
            let shared = shared.clone();
            s.spawn(move || {
                let own = store.create(&todos()).expect("own doc");
                for i in 0..25 {
                    own.put(format!("k{i}").as_str(), i).expect("own write");
                    shared
                        .put(format!("t{t}-{i}").as_str(), i)
                        .expect("shared write");
                }
            });
        }
    });
    // Every write was committed once: 5 creates and 200 puts, in at most as many commits.
    let stats = fx.store.write_stats();
    assert_eq!(stats.writes, 205, "{stats:?}");
    assert!((1..=205).contains(&stats.commits), "{stats:?}");
    let shared_doc = shared;
    let shared = shared_doc.id().clone();
    drop(shared_doc);
    let fx = fx.reopen();
    let doc = fx.store.document(&shared).expect("shared");
    let json = doc.to_json().expect("json");
    assert_eq!(json.as_object().expect("map").len(), 100);
    assert_eq!(fx.store.list(&todos()).expect("list").len(), 5);
}

#[test]
fn compaction_keeps_content_and_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    let options = syncline::StoreOptions {
        compact_after_chunks: 4,
        ..Default::default()
    };
    let store = syncline::Store::open_with(&path, options.clone()).expect("open");
    let doc = store.create(&todos()).expect("create");
    for i in 0..23 {
        doc.put("n", i).expect("write");
    }
    let heads = doc.heads().expect("heads");
    let id = doc.id().clone();
    assert!(store.info(&id).expect("info").stored_bytes > 0);
    drop((doc, store));
    let store = syncline::Store::open_with(&path, options).expect("reopen");
    let doc = store.document(&id).expect("doc");
    assert_eq!(doc.heads().expect("heads"), heads);
    assert_eq!(doc.get_i64("n").expect("read"), Some(22));
    assert_eq!(doc.history().expect("history").len(), 24);
}

#[test]
fn the_cache_stays_within_its_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = syncline::StoreOptions {
        cache_bytes: 64 << 10,
        ..Default::default()
    };
    let store = syncline::Store::open_with(dir.path().join("s.db"), options).expect("open");
    let ids: Vec<DocId> = (0..200)
        .map(|i| {
            let doc = store.create(&todos()).expect("create");
            doc.put("i", i).expect("write");
            doc.id().clone()
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let doc = store.document(id).expect("doc");
        assert_eq!(
            doc.get_i64("i").expect("read"),
            Some(i64::try_from(i).expect("small"))
        );
        assert!(store.cache_used_bytes() <= 64 << 10, "cache over budget");
    }
    assert!(
        store.cached_documents() < 200,
        "some documents must have been evicted"
    );
}

#[test]
fn nested_document_access_is_an_error_not_a_deadlock() {
    let fx = Fixture::new();
    let a = fx.store.create(&todos()).expect("a");
    let b = fx.store.create(&todos()).expect("b");
    let result = a.transact(None, |tx| {
        tx.put("x", 1)?;
        b.get("y") // another document, from inside a's transaction
    });
    assert!(matches!(result, Err(Error::NestedAccess)));
    assert!(matches!(
        a.transact(None, |_| a.get("x")),
        Err(Error::NestedAccess)
    ));
    assert_eq!(
        a.get("x").expect("read"),
        None,
        "the failed transaction wrote nothing"
    );
    a.put("x", 2).expect("the store is still usable");
}

#[test]
fn racing_creators_of_one_id_get_one_success() {
    let fx = Fixture::new();
    let id: DocId = "todos/contested".parse().expect("valid");
    let outcomes: Vec<Result<(), Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (store, id) = (fx.store.clone(), id.clone());
                s.spawn(move || {
                    // Unrelated writes in the same commit groups must not be affected.
                    store.create(&todos()).expect("unrelated create");
                    let initial = Value::from_json(&serde_json::json!({ "by": i }));
                    store.create_at(id, initial, Priority::Normal).map(|_| ())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
    assert!(
        outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .all(|e| matches!(e, Error::AlreadyExists(_)))
    );
    let winner = fx
        .store
        .document(&id)
        .expect("exists")
        .get_i64("by")
        .expect("read");
    assert!(winner.is_some());
    assert_eq!(fx.store.list(&todos()).expect("list").len(), 7);
}

/// Issue 15: a change no relay would take (it cannot be split) is refused when it is made,
/// with a typed error, and nothing of it is kept; the document takes smaller writes after.
#[test]
fn a_change_too_large_to_sync_is_refused_when_it_is_made() {
    use syncline::{MAX_CHANGE_BYTES, MAX_CHANGE_OPS};
    let fx = Fixture::new();
    let doc = fx.store.create(&todos()).expect("create");
    doc.put("notes", Value::Text("keep".into()))
        .expect("small write");
    let heads = doc.heads().expect("heads");
    let pending = fx.store.pending_changes().expect("pending").len();

    // Too many operations: one per character inserted.
    let many = "x".repeat(MAX_CHANGE_OPS + 1);
    let refused = doc.splice_text("notes", 0, 0, &many);
    assert!(
        matches!(
            refused,
            Err(Error::ChangeTooLarge { size, max, unit: "operations" })
                if size > MAX_CHANGE_OPS && max == MAX_CHANGE_OPS
        ),
        "{refused:?}"
    );
    // Too many bytes: one operation carrying a value larger than a frame.
    let refused = doc.put("blob", Value::Bytes(vec![7; MAX_CHANGE_BYTES + 1]));
    assert!(
        matches!(refused, Err(Error::ChangeTooLarge { unit: "bytes", .. })),
        "{refused:?}"
    );
    assert_eq!(doc.heads().expect("heads"), heads, "nothing was kept");
    assert_eq!(
        fx.store.pending_changes().expect("pending").len(),
        pending,
        "nothing waits to be sent"
    );
    doc.splice_text("notes", 4, 0, "!")
        .expect("a smaller write");
    assert_eq!(
        doc.get("notes").expect("get"),
        Some(Value::Text("keep!".into()))
    );

    // A document created too large is refused too.
    let mut huge = std::collections::BTreeMap::new();
    huge.insert(
        "blob".to_owned(),
        Value::Bytes(vec![7; MAX_CHANGE_BYTES + 1]),
    );
    assert!(matches!(
        fx.store.create_at(
            "todos/huge".parse().expect("id"),
            Value::Map(huge),
            Priority::Normal
        ),
        Err(Error::ChangeTooLarge { .. })
    ));

    // And after a reopen, the durable state is the same.
    let id = doc.id().clone();
    drop(doc);
    let fx = fx.reopen();
    let doc = fx.store.document(&id).expect("still there");
    assert_eq!(
        doc.get("notes").expect("get"),
        Some(Value::Text("keep!".into()))
    );
    assert_eq!(doc.get("blob").expect("get"), None);
    assert!(matches!(
        fx.store.document(&"todos/huge".parse().expect("id")),
        Err(Error::NotFound(_))
    ));
}
