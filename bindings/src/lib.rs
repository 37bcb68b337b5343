//! The foreign-language facade over the `syncline` SDK, exported with uniffi 0.32
//! (proc-macros) to Kotlin, Swift and Python: small wrappers that own their data, are
//! `Send + Sync`, and report one flat error enum. No logic lives here that the Rust SDK lacks.
//!
//! Objects: [`FfiStore`], [`FfiDocument`] and [`FfiDocumentView`] (values as the typed
//! [`Value`] or as JSON text), and [`FfiSyncClient`] (a `SyncClient` with a foreign
//! [`FfiTokenProvider`] and [`FfiStatusListener`]); [`FfiSubscription`] keeps a listener.
//! Modules: `value` (what crosses), `store`, `sync`, `subscription`.
//! The in-workspace `uniffi-bindgen` binary (feature `cli`) generates the bindings:
//! `cargo xtask bindings`.

mod conflicts;
mod store;
mod subscription;
mod sync;
mod value;

pub use conflicts::{
    Conflict, ConflictStrategy, ConflictValue, FfiConflictListener, FfiConflictResolver,
};
pub use store::{
    DocumentInfo, Durability, FfiDocument, FfiDocumentView, FfiStore, Priority, StoreOptions,
};
pub use subscription::FfiSubscription;
pub use sync::{
    CollectionSync, DeferReason, DeferredDoc, DeviceClass, Disconnect, DocSyncError, Ephemeral,
    FfiSyncClient, Profile, Progress, SyncEnd, SyncErrorEvent, SyncErrorKind, SyncOptions,
    SyncRecord, SyncStats, SyncStatus, Transfer,
};
pub use value::{Change, ChangeEvent, Patch, PatchAction, PendingChange, Value, WriteOp};

uniffi::setup_scaffolding!();

/// The one error type foreign callers see: the SDK error's kind, with its message. Arrives as
/// an exception (Kotlin, Python) or a thrown error (Swift) of that variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum FfiError {
    /// Not found, or deleted.
    #[error("not found: {0}")]
    NotFound(String),
    /// The document's content was evicted to stay within the storage budget (its metadata is
    /// still listed); the sync client's `open` fetches it again.
    #[error("evicted: {0}")]
    Evicted(String),
    /// An id, path, JSON text or value of the wrong shape or type.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A store that cannot be opened, or a corrupt document.
    #[error("storage: {0}")]
    Storage(String),
    /// The relay refused the token.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The relay could not be reached.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Not synced in the time given.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The sync reported an error (a refused change, a protocol error).
    #[error("sync: {0}")]
    Sync(String),
    /// Over a rate the device keeps to (ephemeral messages); retry a little later.
    #[error("rate limited: {0}")]
    RateLimited(String),
}

impl From<syncline::SyncError> for FfiError {
    fn from(e: syncline::SyncError) -> Self {
        use syncline::SyncError as E;
        let message = e.to_string();
        match e {
            E::Unauthorized(_) => Self::Unauthorized(message),
            E::Unreachable(_) => Self::Unreachable(message),
            E::Timeout { .. } => Self::Timeout(message),
            E::Offline { .. } | E::NotConnected => Self::Unreachable(message),
            E::EphemeralTooLarge { .. } => Self::InvalidInput(message),
            E::RateLimited { .. } => Self::RateLimited(message),
            E::Store(e) => e.into(),
            E::Failed(_) | E::Start(_) => Self::Sync(message),
        }
    }
}

impl From<syncline::Error> for FfiError {
    fn from(e: syncline::Error) -> Self {
        use syncline::Error as E;
        let message = e.to_string();
        match e {
            E::NotFound(_) | E::Deleted(_) => Self::NotFound(message),
            // Not all of it is here yet (this device's own earlier changes wait to go back).
            E::Evicted(_) | E::AwaitingOwnChanges(_) => Self::Evicted(message),
            E::InvalidId(_)
            | E::InvalidPath { .. }
            | E::TypeMismatch { .. }
            | E::InvalidHeads(_)
            | E::InvalidChange(_)
            | E::ChangeTooLarge { .. }
            | E::Json(_)
            | E::AlreadyExists(_) => Self::InvalidInput(message),
            _ => Self::Storage(message),
        }
    }
}

impl From<syncline::IdError> for FfiError {
    fn from(e: syncline::IdError) -> Self {
        Self::InvalidInput(e.to_string())
    }
}

/// Calls a foreign callback that returns nothing. A foreign exception surfaces as a panic
/// here: it is contained and reported (`what` says whose), so it can neither fail a committed
/// write nor stop the sync thread.
pub(crate) fn call_foreign(what: &str, call: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).is_err() {
        eprintln!("syncline: {what} threw");
    }
}

/// Told of document changes; see [`FfiStore::watch_collection`] and [`FfiDocument::watch`].
#[uniffi::export(with_foreign)]
pub trait FfiChangeListener: Send + Sync {
    /// One durable change, local or remote, with its patches.
    fn on_change(&self, event: ChangeEvent);
}

/// Where the app's tokens come from; called on one of the SDK's threads (never the caller's),
/// so it may block for a while.
#[uniffi::export(with_foreign)]
pub trait FfiTokenProvider: Send + Sync {
    /// A JWT for the relay.
    ///
    /// # Errors
    /// [`FfiTokenError::SignedOut`] when the app cannot authenticate at all: the client stops
    /// and reports `Unauthorized`. [`FfiTokenError::Unavailable`] (or any other exception the
    /// host throws) when there is no token right now: the client retries with backoff, and a
    /// `wait_synced` in progress fails with [`FfiError::Unreachable`].
    fn token(&self) -> Result<String, FfiTokenError>;
}

/// Why a [`FfiTokenProvider`] has no token: what the host's provider throws.
///
/// Not flat, unlike [`FfiError`]: uniffi lifts only non-flat errors back from foreign code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum FfiTokenError {
    /// The app cannot authenticate (signed out, access revoked): the client stops connecting
    /// and reports `Unauthorized`, as for a token the relay refuses.
    #[error("signed out: {reason}")]
    SignedOut {
        /// Why, for the status and the logs.
        reason: String,
    },
    /// No token right now (the app's own auth service is unreachable, say): the client retries
    /// with backoff, as for an unreachable relay.
    #[error("no token now: {reason}")]
    Unavailable {
        /// Why, for the status and the logs.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for FfiTokenError {
    /// Any other exception the host's provider throws means no token right now: retried,
    /// never fatal, never a panic on the SDK's thread.
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Unavailable { reason: e.reason }
    }
}

impl From<FfiTokenError> for syncline::TokenError {
    fn from(e: FfiTokenError) -> Self {
        match e {
            FfiTokenError::SignedOut { reason } => Self::Denied(reason),
            FfiTokenError::Unavailable { reason } => Self::Unavailable(reason),
        }
    }
}

/// Told when a document does not sync, and when one that did not syncs after all
/// ([`FfiSyncClient::watch_sync_errors`]).
#[uniffi::export(with_foreign)]
pub trait FfiSyncErrorListener: Send + Sync {
    /// A document's error was raised or cleared.
    fn on_sync_error(&self, event: SyncErrorEvent);
}

/// Told of each ephemeral message (presence) another device sends
/// ([`FfiSyncClient::watch_ephemeral`]).
#[uniffi::export(with_foreign)]
pub trait FfiEphemeralListener: Send + Sync {
    /// One message, with its document and sender.
    fn on_ephemeral(&self, message: Ephemeral);
}

/// Told of every status change of a [`FfiSyncClient`].
#[uniffi::export(with_foreign)]
pub trait FfiStatusListener: Send + Sync {
    /// The new status.
    fn on_status(&self, status: SyncStatus);
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn assert_send_sync<T: Send + Sync>() {}
    const _: () = assert_send_sync::<FfiStore>();

    #[test]
    fn round_trips_json_and_maps_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.db").to_string_lossy().into_owned();
        let store = FfiStore::open(path).expect("open");
        let id = store
            .create_json("todos".into(), r#"{"title":"x"}"#.into())
            .expect("create");
        store
            .put_json(id.clone(), "done".into(), "true".into())
            .expect("put");
        let json: serde_json::Value =
            serde_json::from_str(&store.get_json(id.clone()).expect("get")).expect("json");
        assert_eq!(json, serde_json::json!({"title": "x", "done": true}));
        assert_eq!(store.list("todos".into()).expect("list"), vec![id]);
        assert!(matches!(
            store.get_json("todos/none".into()),
            Err(FfiError::NotFound(_))
        ));
        assert!(matches!(
            store.list("Bad".into()),
            Err(FfiError::InvalidInput(_))
        ));
        assert!(matches!(
            store.create_json("todos".into(), "[1]".into()),
            Err(FfiError::InvalidInput(_))
        ));
    }

    #[test]
    fn documents_carry_typed_values_history_and_views() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            FfiStore::open(dir.path().join("s.db").to_string_lossy().into_owned()).expect("open");
        let initial = Value::Object {
            entries: [("title".to_owned(), Value::Str { value: "a".into() })].into(),
        };
        let doc = store.create("notes".into(), initial).expect("create");
        let first = doc.heads().expect("heads");
        doc.apply(
            vec![
                WriteOp::Put {
                    path: "/body".into(),
                    value: Value::Text {
                        value: "hello".into(),
                    },
                },
                WriteOp::Put {
                    path: "/tags".into(),
                    value: Value::Array {
                        items: vec![Value::Bytes {
                            value: vec![0, 255],
                        }],
                    },
                },
                WriteOp::Put {
                    path: "/n".into(),
                    value: Value::Counter { value: 1 },
                },
            ],
            Some("fill".into()),
        )
        .expect("apply");
        doc.splice_text("/body".into(), 5, 0, " world".into())
            .expect("splice");
        doc.increment("/n".into(), 41).expect("increment");
        assert_eq!(
            doc.get("/body".into()).expect("get"),
            Some(Value::Text {
                value: "hello world".into()
            })
        );
        assert_eq!(
            doc.get("/n".into()).expect("get"),
            Some(Value::Counter { value: 42 })
        );
        assert_eq!(
            doc.get("/tags/0".into()).expect("get"),
            Some(Value::Bytes {
                value: vec![0, 255]
            })
        );
        assert_eq!(doc.get("/missing".into()).expect("get"), None);
        let history = doc.history().expect("history");
        assert_eq!(history.len(), 4);
        assert_eq!(history[1].message.as_deref(), Some("fill"));
        assert_eq!(
            history[1].device.as_deref(),
            Some(store.device_id().as_str())
        );
        let view = doc.view_at(first.clone()).expect("view");
        assert_eq!(view.get("/body".into()).expect("get"), None);
        assert_eq!(view.heads(), first);
        let patches = doc.diff(first, doc.heads().expect("heads")).expect("diff");
        assert!(patches.iter().any(|p| matches!(
            &p.action,
            PatchAction::PutMap { key, .. } if key == "body"
        )));
        assert!(matches!(
            doc.get("/title/x".into()),
            Err(FfiError::InvalidInput(_))
        ));
        assert!(matches!(
            doc.view_at(vec!["zz".into()]),
            Err(FfiError::InvalidInput(_))
        ));
        store.delete(doc.id()).expect("delete");
        assert!(matches!(
            store.document(doc.id()),
            Err(FfiError::NotFound(_))
        ));
    }
}
