//! Property test: random operation sequences survive close and reopen unchanged.

mod common;

use proptest::prelude::*;
use syncline::{Collection, Store, StoreOptions, Value};

#[derive(Debug, Clone)]
enum Op {
    Put {
        doc: usize,
        key: u8,
        value: i64,
    },
    PutText {
        doc: usize,
        key: u8,
        text: String,
    },
    Splice {
        doc: usize,
        key: u8,
        at: usize,
        del: usize,
        text: String,
    },
    Push {
        doc: usize,
        value: i64,
    },
    Insert {
        doc: usize,
        at: usize,
        value: i64,
    },
    Increment {
        doc: usize,
        by: i64,
    },
    DeleteKey {
        doc: usize,
        key: u8,
    },
    DeleteDoc {
        doc: usize,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let doc = 0..3usize;
    prop_oneof![
        (doc.clone(), 0..4u8, any::<i64>()).prop_map(|(doc, key, value)| Op::Put {
            doc,
            key,
            value
        }),
        (doc.clone(), 0..4u8, "[a-z]{0,6}").prop_map(|(doc, key, text)| Op::PutText {
            doc,
            key,
            text
        }),
        (doc.clone(), 0..4u8, 0..8usize, 0..3usize, "[a-zé]{0,4}").prop_map(
            |(doc, key, at, del, text)| Op::Splice {
                doc,
                key,
                at,
                del,
                text
            }
        ),
        (doc.clone(), any::<i64>()).prop_map(|(doc, value)| Op::Push { doc, value }),
        (doc.clone(), 0..6usize, any::<i64>()).prop_map(|(doc, at, value)| Op::Insert {
            doc,
            at,
            value
        }),
        (doc.clone(), -5..5i64).prop_map(|(doc, by)| Op::Increment { doc, by }),
        (doc.clone(), 0..4u8).prop_map(|(doc, key)| Op::DeleteKey { doc, key }),
        doc.prop_map(|doc| Op::DeleteDoc { doc }),
        Just(Op::Reopen),
    ]
}

fn snapshot(store: &Store, ids: &[syncline::DocId]) -> Vec<String> {
    ids.iter()
        .map(|id| match store.document(id) {
            Ok(doc) => format!(
                "{} {} {}",
                doc.heads().expect("heads"),
                doc.to_json().expect("json"),
                doc.history().expect("history").len()
            ),
            Err(e) => format!("{e}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn documents_and_heads_survive_reopen(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("p.db");
        // A small compaction threshold so that sequences cross it.
        let options = StoreOptions { compact_after_chunks: 5, cache_bytes: 16 << 10, ..Default::default() };
        let mut store = Store::open_with(&path, options.clone()).expect("open");
        let todos = Collection::new("todos").expect("valid");
        let ids: Vec<_> = (0..3).map(|_| {
            let d = store.create(&todos).expect("create");
            d.transact(None, |tx| { tx.put("list", Value::List(vec![]))?; tx.put("count", Value::Counter(0)) }).expect("init");
            d.id().clone()
        }).collect();
        for op in ops {
            // Errors (out of range, deleted, wrong type) are fine; they must change nothing.
            let _ = match op {
                Op::Put { doc, key, value } => store.document(&ids[doc]).and_then(|d| d.put(format!("k{key}").as_str(), value)),
                Op::PutText { doc, key, text } => store.document(&ids[doc]).and_then(|d| d.put(format!("t{key}").as_str(), Value::Text(text))),
                Op::Splice { doc, key, at, del, text } => store.document(&ids[doc]).and_then(|d| d.splice_text(format!("t{key}").as_str(), at, del, &text)),
                Op::Push { doc, value } => store.document(&ids[doc]).and_then(|d| d.transact(None, |tx| tx.push("list", value))),
                Op::Insert { doc, at, value } => store.document(&ids[doc]).and_then(|d| d.transact(None, |tx| tx.insert(format!("list/{at}").as_str(), value))),
                Op::Increment { doc, by } => store.document(&ids[doc]).and_then(|d| d.increment("count", by)),
                Op::DeleteKey { doc, key } => store.document(&ids[doc]).and_then(|d| d.delete(format!("k{key}").as_str())),
                Op::DeleteDoc { doc } => store.delete(&ids[doc]),
                Op::Reopen => {
                    let before = snapshot(&store, &ids);
                    drop(store);
                    store = Store::open_with(&path, options.clone()).expect("reopen");
                    prop_assert_eq!(snapshot(&store, &ids), before);
                    Ok(())
                }
            };
        }
        let before = snapshot(&store, &ids);
        let pending = store.pending_documents().expect("pending");
        drop(store);
        let store = Store::open_with(&path, options).expect("final reopen");
        prop_assert_eq!(snapshot(&store, &ids), before);
        prop_assert_eq!(store.pending_documents().expect("pending"), pending);
    }
}
