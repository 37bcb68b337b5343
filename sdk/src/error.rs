//! The SDK's error type: one enum, each variant a cause the app can act on.

use std::path::PathBuf;

use syncline_protocol::{DeviceId, DocId, IdError};

/// Everything that can go wrong in the SDK. Causes from dependencies are wrapped, not
/// flattened into strings, except where one failure must be reported to several callers (a
/// failed group commit), which cannot share a non-`Clone` error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file exists but is not a Syncline store (another SQLite database, or not SQLite).
    #[error("{path} is not a Syncline store")]
    NotAStore {
        /// The file that was opened.
        path: PathBuf,
    },
    /// The store was written by a newer SDK; this one must not touch it.
    #[error(
        "store schema version {found} is newer than this SDK supports ({supported}); upgrade the SDK"
    )]
    SchemaTooNew {
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this SDK knows.
        supported: i64,
    },
    /// Another process (or another `Store` in this one) has the store open.
    #[error("the store {path} is already open elsewhere")]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The store was opened with [`crate::StoreOptions::device_id`] naming another device
    /// than the one it belongs to.
    #[error("the store belongs to device {stored}, not {requested}")]
    DeviceMismatch {
        /// The device id the store holds.
        stored: DeviceId,
        /// The device id the options asked for.
        requested: DeviceId,
    },
    /// No document with this id exists in the store.
    #[error("document {0} not found")]
    NotFound(DocId),
    /// The document exists but has been deleted (its tombstone will sync).
    #[error("document {0} has been deleted")]
    Deleted(DocId),
    /// The document's content was evicted to keep the store within its storage budget; its
    /// metadata is still listed. `SyncClient::open` fetches it again.
    #[error("document {0} was evicted to stay within the storage budget; fetch it to open it")]
    Evicted(DocId),
    /// The document waits for this device's own earlier changes to it, kept when its content
    /// was evicted, which need other devices' changes a relay restored from an older backup
    /// lost. It can be read; a write now would reuse those changes' sequence numbers, so
    /// writes resume once they are back in it (when the missing changes arrive).
    #[error(
        "document {0} waits for this device's earlier changes to it (they need changes the relay lost); it can be read, and written once they are back"
    )]
    AwaitingOwnChanges(DocId),
    /// A document with this id already exists.
    #[error("document {0} already exists")]
    AlreadyExists(DocId),
    /// The document's stored bytes cannot be decoded. Only this document is affected; its rows
    /// are kept untouched so that nothing is lost.
    #[error("document {doc} is corrupt in the store: {reason}")]
    CorruptDocument {
        /// The document whose rows failed to decode.
        doc: DocId,
        /// What failed.
        reason: String,
    },
    /// A path does not lead where the operation needs it to.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path, as written.
        path: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The value at a path is not of the requested type.
    #[error("type mismatch at {path:?}: expected {expected}, found {found}")]
    TypeMismatch {
        /// The path, as written.
        path: String,
        /// The type the caller asked for.
        expected: &'static str,
        /// The type that is there.
        found: &'static str,
    },
    /// An identifier failed validation.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// Heads that do not belong to this document, or malformed head bytes.
    #[error("invalid heads: {0}")]
    InvalidHeads(String),
    /// Change bytes received from elsewhere that do not decode.
    #[error("invalid change data: {0}")]
    InvalidChange(String),
    /// A write made one change larger than a relay accepts (a change cannot be split); nothing
    /// was written. Split the write into several transactions.
    #[error(
        "the change is too large to sync: {size} {unit}, at most {max} (split the write into several transactions)"
    )]
    ChangeTooLarge {
        /// The change's size.
        size: usize,
        /// Its bound ([`crate::MAX_CHANGE_OPS`] or [`crate::MAX_CHANGE_BYTES`]).
        max: usize,
        /// `"operations"` or `"bytes"`.
        unit: &'static str,
    },
    /// JSON that does not parse.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// An Automerge operation failed.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// SQLite failed.
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// A document was used from inside a transaction (or another document operation) on the
    /// same thread. Finish the transaction first: waiting for the other document there could
    /// deadlock.
    #[error("a document cannot be used from inside another document operation; finish it first")]
    NestedAccess,
    /// A group commit failed; every write in the group reports it and none was applied.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// The file system failed (creating the store's lock file, for instance).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
