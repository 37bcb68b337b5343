//! Syncline's device-side SDK: an offline-first store of Automerge documents.
//!
//! Every entity is one Automerge document addressed by a [`DocId`] (collection + id). Writes
//! are durable before they return and work with no network; what no relay has acknowledged
//! stays pending ([`Store::pending_documents`]). History, time travel and conflicts come from
//! Automerge itself.
//!
//! ```
//! use syncline::{Collection, Store, Value};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("account.db"))?;
//! let todos = Collection::new("todos")?;
//!
//! let todo = store.create(&todos)?;
//! todo.transact(Some("add"), |tx| {
//!     tx.put("title", "Buy milk")?;
//!     tx.put("done", false)
//! })?;
//!
//! assert_eq!(todo.get_str("title")?.as_deref(), Some("Buy milk"));
//! assert_eq!(store.list(&todos)?.len(), 1);
//! assert_eq!(store.pending_documents()?, vec![todo.id().clone()]); // no relay yet
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Module map: `db` is the SQLite layer (`Database`, the group-commit writer, the schema: the
//! only code that knows SQL); `store` holds [`Store`] and [`Document`] on top of it, with the
//! document cache, listeners and the Automerge model; [`engine`] is the sans-IO sync engine
//! and [`net`] its tokio shell; [`clock`] is the wall-clock port; [`Value`], [`Path`] and
//! [`Heads`] are the vocabulary.

pub mod clock;
mod db;
pub mod engine;
mod error;
mod heads;
pub mod net;
mod path;
mod store;
mod value;

pub use clock::{Clock, SystemClock};
pub use db::{DeferredDoc, Durability, KEPT_SYNC_RECORDS, MAX_REFUSED_LISTED, SyncEnd, SyncRecord};
pub use engine::{
    DocSyncError, EphemeralMessage, Progress, Status, SyncErrorEvent, SyncErrorKind, SyncStats,
};
pub use error::{Error, Result};
pub use heads::{ChangeHash, Heads};
pub use net::{SyncClient, SyncError, SyncOptions, TokenError, TokenProvider};
pub use path::{IntoPath, Path, Segment};
pub use store::{
    BudgetOutcome, ChangeEvent, ChangeInfo, ChangeOrigin, Conflict, ConflictStrategy,
    ConflictValue, Document, DocumentInfo, DocumentView, MAX_CONFLICTS_LISTED, Patch, PatchAction,
    PendingChange, Store, StoreOptions, Subscription, Transaction, WriteOp, WriteStats,
};
pub use syncline_protocol::messages::{
    CollectionSubscription, DeferReason, DeviceClass, MAX_CHANGE_BYTES, MAX_CHANGE_OPS,
    MAX_EPHEMERAL_BYTES, MAX_EPHEMERALS_PER_S, Profile, SyncMode,
};
pub use syncline_protocol::{Collection, DeviceId, DocId, IdError, Priority};
pub use value::Value;

/// The handles apps share between threads must stay shareable.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Store>();
    shareable::<Document>();
    shareable::<Subscription>();
    shareable::<Error>();
};
