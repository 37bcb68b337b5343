//! `syncline-bench read`: the per-call cost of one document read, `get("/title")`, in Rust:
//! through the SDK (`Document::get`), through the FFI facade's own Rust function
//! (`FfiDocument::get`, what every binding calls, without the foreign crossing), and the
//! floor, the same read on a bare Automerge document. The Python and Kotlin benchmarks
//! (`bench/bindings`) run the same read through their native APIs and print these figures in
//! the same run, so the overhead of a binding reads as a ratio.

use std::hint::black_box;
use std::time::Instant;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT, ReadDoc};
use syncline::{Collection, Store, Value};

/// Nanoseconds per call of `read`, the best of five rounds of `reads` calls.
fn per_call(reads: usize, mut read: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reads {
                read();
            }
            start.elapsed().as_secs_f64() * 1e9 / reads as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// The three figures, in nanoseconds per read.
pub fn read(reads: usize) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    let store = Store::open(&path)?;
    let content = serde_json::json!({"title": "Buy milk", "done": false});
    let doc = store.create_with(
        &Collection::new("todos")?,
        Value::from_json(&content),
        Default::default(),
    )?;
    let sdk = per_call(reads, || {
        black_box(doc.get("/title").expect("read"));
    });
    let ffi_store =
        syncline_ffi::FfiStore::open(path.with_extension("ffi.db").display().to_string())?;
    let ffi_doc = ffi_store.create_json("todos".into(), content.to_string())?;
    let ffi_doc = ffi_store.document(ffi_doc)?;
    let facade = per_call(reads, || {
        black_box(ffi_doc.get("/title".into()).expect("read"));
    });
    let mut raw = AutoCommit::new();
    raw.put(ROOT, "title", "Buy milk")?;
    raw.put(ROOT, "done", false)?;
    let floor = per_call(reads, || {
        black_box(raw.get(ROOT, "title").expect("read"));
    });
    Ok(serde_json::json!({
        "scenario": "read",
        "reads": reads,
        "sdk_ns": round(sdk),
        "facade_ns": round(facade),
        "floor_automerge_ns": round(floor),
    }))
}

fn round(ns: f64) -> f64 {
    (ns * 10.0).round() / 10.0
}
