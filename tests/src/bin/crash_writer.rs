//! Writes to a store as fast as it can and prints `ok <doc> <n>` after each write returns, so
//! a test can SIGKILL it at any moment and check that every reported write survived.
//!
//! Usage: `crash-writer STORE_FILE THREADS`. Each thread owns one document (created on first
//! run, found by its id `crash/t<thread>` afterwards) and keeps putting `n = <next>` into it,
//! plus one item per write into a shared document, exercising group commit.

use std::io::Write;
use std::sync::Mutex;

use anyhow::Context;
use syncline::{DocId, Error, Priority, Store, Value};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .context("usage: crash-writer STORE_FILE THREADS")?;
    let threads: usize = args.next().context("missing THREADS")?.parse()?;
    let store = Store::open(&path)?;
    let shared_id: DocId = "crash/shared".parse()?;
    ensure(&store, &shared_id)?;
    let out = Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (store, shared_id, out) = (&store, &shared_id, &out);
            s.spawn(move || -> anyhow::Result<()> {
                let id: DocId = format!("crash/t{t}").parse()?;
                ensure(store, &id)?;
                let doc = store.document(&id)?;
                let shared = store.document(shared_id)?;
                let mut n = doc.get_i64("n")?.unwrap_or(0);
                loop {
                    n += 1;
                    doc.put("n", n)?;
                    shared.put(format!("t{t}-{n}").as_str(), n)?;
                    let mut out = out.lock().expect("stdout lock");
                    writeln!(out, "ok {id} {n}")?;
                    out.flush()?;
                }
            });
        }
    });
    Ok(())
}

fn ensure(store: &Store, id: &DocId) -> anyhow::Result<()> {
    match store.create_at(id.clone(), Value::Map(Default::default()), Priority::Normal) {
        Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
