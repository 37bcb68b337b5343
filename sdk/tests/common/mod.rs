//! Shared fixtures for the store tests.
#![allow(dead_code, missing_docs)]

use syncline::{Collection, Store};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path().join("store.db")).expect("open store");
        Self { dir, store }
    }

    /// A second, independent store (another device) in the same temp dir.
    pub fn other_device(&self, name: &str) -> Store {
        Store::open(self.dir.path().join(format!("{name}.db"))).expect("open second store")
    }

    pub fn reopen(self) -> Self {
        let Self { dir, store } = self;
        drop(store);
        let store = Store::open(dir.path().join("store.db")).expect("reopen store");
        Self { dir, store }
    }
}

pub fn todos() -> Collection {
    Collection::new("todos").expect("valid collection")
}
