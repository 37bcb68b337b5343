//! Criterion benchmarks of the store's CPU-only hot paths, each beside its floor: the same
//! read done directly on an in-memory Automerge document (no cache, no paths, no conversion).
//!
//! `cargo bench -p syncline-bench --bench hot_paths`

#![allow(missing_docs)]

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT, ReadDoc};
use criterion::{Criterion, criterion_group, criterion_main};
use syncline::{Collection, Path, Store, Value};

fn fixture() -> (tempfile::TempDir, Store, syncline::Document, AutoCommit) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path().join("bench.db")).expect("open");
    let json = serde_json::json!({
        "title": "Buy milk", "done": false,
        "items": (0..100).map(|i| serde_json::json!({"n": i, "label": format!("item {i}")})).collect::<Vec<_>>(),
    });
    let doc = store
        .create_with(
            &Collection::new("todos").expect("valid"),
            Value::from_json(&json),
            Default::default(),
        )
        .expect("create");
    let mut raw = AutoCommit::new();
    raw.put(ROOT, "title", "Buy milk").expect("put");
    raw.put(ROOT, "done", false).expect("put");
    let items = raw.put_object(ROOT, "items", ObjType::List).expect("list");
    for i in 0..100_i64 {
        let item = raw
            .insert_object(&items, usize::try_from(i).expect("small"), ObjType::Map)
            .expect("map");
        raw.put(&item, "n", i).expect("put");
        raw.put(&item, "label", format!("item {i}")).expect("put");
    }
    (dir, store, doc, raw)
}

fn reads(c: &mut Criterion) {
    let (_dir, _store, doc, raw) = fixture();
    let mut group = c.benchmark_group("read scalar");
    group.bench_function("syncline get_str(/title)", |b| {
        b.iter(|| doc.get_str("title").expect("read"));
    });
    group.bench_function("floor: automerge get(ROOT, title)", |b| {
        b.iter(|| raw.get(ROOT, "title").expect("read"));
    });
    group.finish();

    let mut group = c.benchmark_group("read nested");
    group.bench_function("syncline get(/items/50/label)", |b| {
        b.iter(|| doc.get("items/50/label").expect("read"));
    });
    group.bench_function("floor: automerge three gets", |b| {
        b.iter(|| {
            let (_, items) = raw.get(ROOT, "items").expect("read").expect("items");
            let (_, item) = raw.get(&items, 50).expect("read").expect("item");
            raw.get(&item, "label").expect("read")
        });
    });
    group.finish();

    let mut group = c.benchmark_group("whole document as JSON (100 items)");
    group.bench_function("syncline to_json", |b| {
        b.iter(|| doc.to_json().expect("json"))
    });
    group.bench_function("floor: automerge AutoSerde to serde_json", |b| {
        b.iter(|| serde_json::to_value(automerge::AutoSerde::from(&raw)).expect("json"));
    });
    group.finish();
}

fn paths(c: &mut Criterion) {
    c.bench_function("Path::parse(/items/50/label)", |b| {
        b.iter(|| Path::parse(std::hint::black_box("/items/50/label")).expect("valid"));
    });
}

criterion_group!(benches, reads, paths);
criterion_main!(benches);
