//! The foreign-language facade over the `syncline` SDK, exported with uniffi 0.32
//! (proc-macros) to Kotlin, Swift and Python: small wrappers that own their data, are
//! `Send + Sync`, and report one flat error enum. No logic lives here that the Rust SDK lacks.
//!
//! Objects: [`FfiStore`] (documents as JSON text) and [`FfiSyncClient`] (a `SyncClient` with a
//! foreign [`FfiTokenProvider`] and [`FfiStatusListener`]); [`FfiSubscription`] keeps a listener.
//! The in-workspace `uniffi-bindgen` binary (feature `cli`) generates the bindings:
//! `cargo xtask bindings`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use syncline::{Collection, DocId, Store, SyncClient, SyncOptions};

uniffi::setup_scaffolding!();

/// The one error type foreign callers see: the SDK error's kind, with its message. Arrives as
/// an exception (Kotlin, Python) or a thrown error (Swift) of that variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum FfiError {
    /// Not found, or deleted.
    #[error("not found: {0}")]
    NotFound(String),
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
}

impl From<syncline::SyncError> for FfiError {
    fn from(e: syncline::SyncError) -> Self {
        use syncline::SyncError as E;
        let message = e.to_string();
        match e {
            E::Unauthorized(_) => Self::Unauthorized(message),
            E::Unreachable(_) => Self::Unreachable(message),
            E::Timeout { .. } => Self::Timeout(message),
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
            E::InvalidId(_)
            | E::InvalidPath { .. }
            | E::TypeMismatch { .. }
            | E::InvalidHeads(_)
            | E::InvalidChange(_)
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

/// A store, as foreign code holds it.
#[derive(uniffi::Object)]
pub struct FfiStore {
    store: Store,
}

#[uniffi::export]
impl FfiStore {
    /// Opens (or creates) the store file at `path`.
    ///
    /// # Errors
    /// [`FfiError::Storage`] when the file cannot be opened as a store.
    #[uniffi::constructor]
    pub fn open(path: String) -> Result<Arc<Self>, FfiError> {
        Ok(Arc::new(Self {
            store: Store::open(path)?,
        }))
    }

    /// This device's id, in hex.
    pub fn device_id(&self) -> String {
        self.store.device_id().to_string()
    }

    /// Creates a document in `collection` from a JSON object; returns its `collection/id`.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection or JSON that is not an object.
    pub fn create_json(&self, collection: String, json: String) -> Result<String, FfiError> {
        let collection = Collection::new(collection)?;
        let value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| FfiError::InvalidInput(format!("invalid JSON: {e}")))?;
        let doc = self.store.create_with(
            &collection,
            syncline::Value::from_json(&value),
            Default::default(),
        )?;
        Ok(doc.id().to_string())
    }

    /// Sets the value at `path` of document `doc_id` from JSON text, durably.
    ///
    /// # Errors
    /// [`FfiError::NotFound`] or [`FfiError::InvalidInput`].
    pub fn put_json(&self, doc_id: String, path: String, json: String) -> Result<(), FfiError> {
        let id: DocId = doc_id.parse()?;
        self.store
            .document(&id)?
            .transact(None, |tx| tx.put_json(path.as_str(), &json))?;
        Ok(())
    }

    /// The whole document as JSON text.
    ///
    /// # Errors
    /// [`FfiError::NotFound`] or [`FfiError::Storage`].
    pub fn get_json(&self, doc_id: String) -> Result<String, FfiError> {
        let id: DocId = doc_id.parse()?;
        Ok(self.store.document(&id)?.to_json()?.to_string())
    }

    /// The `collection/id` of every live document in `collection`.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection name.
    pub fn list(&self, collection: String) -> Result<Vec<String>, FfiError> {
        let collection = Collection::new(collection)?;
        Ok(self
            .store
            .list(&collection)?
            .into_iter()
            .map(|i| i.id.to_string())
            .collect())
    }

    /// The `collection/id` of every document the relay has not acknowledged yet.
    ///
    /// # Errors
    /// [`FfiError::Storage`].
    pub fn pending_documents(&self) -> Result<Vec<String>, FfiError> {
        Ok(self
            .store
            .pending_documents()?
            .into_iter()
            .map(|id| id.to_string())
            .collect())
    }

    /// The concurrent values at `path` (JSON text each), when devices wrote it concurrently.
    ///
    /// # Errors
    /// [`FfiError::NotFound`] or [`FfiError::InvalidInput`].
    pub fn conflicts_json(&self, doc_id: String, path: String) -> Result<Vec<String>, FfiError> {
        let id: DocId = doc_id.parse()?;
        Ok(self
            .store
            .document(&id)?
            .conflicts(path.as_str())?
            .iter()
            .map(|v| v.to_json().to_string())
            .collect())
    }

    /// Settles the value at `path` (JSON text), ending a conflict there.
    ///
    /// # Errors
    /// [`FfiError::NotFound`] or [`FfiError::InvalidInput`].
    pub fn resolve_json(&self, doc_id: String, path: String, json: String) -> Result<(), FfiError> {
        let id: DocId = doc_id.parse()?;
        let value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| FfiError::InvalidInput(format!("invalid JSON: {e}")))?;
        self.store
            .document(&id)?
            .resolve(path.as_str(), syncline::Value::from_json(&value))?;
        Ok(())
    }

    /// Calls `listener` with every change to a document of `collection`, local or remote,
    /// for as long as the returned subscription is kept.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection name.
    pub fn watch_collection(
        &self,
        collection: String,
        listener: Arc<dyn FfiChangeListener>,
    ) -> Result<Arc<FfiSubscription>, FfiError> {
        let collection = Collection::new(collection)?;
        let subscription = self.store.watch_collection(&collection, move |event| {
            // A foreign exception in the listener surfaces as a panic here: contain it, so it
            // can neither fail a committed write nor stop the sync thread.
            let call = std::panic::AssertUnwindSafe(|| {
                listener.on_change(
                    event.doc_id.to_string(),
                    event.origin == syncline::ChangeOrigin::Remote,
                );
            });
            if std::panic::catch_unwind(call).is_err() {
                eprintln!("syncline: a change listener threw; the change is committed");
            }
        });
        Ok(FfiSubscription::new(Box::new(subscription)))
    }
}

/// Told of document changes; see [`FfiStore::watch_collection`].
#[uniffi::export(with_foreign)]
pub trait FfiChangeListener: Send + Sync {
    /// `doc` (`collection/id`) changed; `remote` when the change came from another device.
    fn on_change(&self, doc: String, remote: bool);
}

/// Where the app's tokens come from; called on one of the SDK's threads (never the caller's),
/// so it may block for a while.
#[uniffi::export(with_foreign)]
pub trait FfiTokenProvider: Send + Sync {
    /// A JWT for the relay.
    ///
    /// # Errors
    /// Any [`FfiError`]: the connection attempt then fails with its message.
    fn token(&self) -> Result<String, FfiError>;
}

/// Told of every status change of a [`FfiSyncClient`].
#[uniffi::export(with_foreign)]
pub trait FfiStatusListener: Send + Sync {
    /// The new status.
    fn on_status(&self, status: FfiStatus);
}

/// The sync status (the SDK's `Status`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum FfiStatus {
    /// Not connected.
    Offline,
    /// Opening a connection.
    Connecting,
    /// Exchanging changes.
    Syncing {
        /// Planned documents arrived.
        docs_done: u64,
        /// Planned documents.
        docs_total: u64,
        /// Planned bytes arrived (approximate).
        bytes_done: u64,
        /// Planned bytes (approximate).
        bytes_total: u64,
    },
    /// Both sides have everything, since this time (milliseconds since the Unix epoch).
    Synced {
        /// When.
        at_ms: u64,
    },
    /// Something is wrong.
    Error {
        /// What.
        reason: String,
    },
}

impl From<syncline::Status> for FfiStatus {
    fn from(status: syncline::Status) -> Self {
        match status {
            syncline::Status::Offline => Self::Offline,
            syncline::Status::Connecting => Self::Connecting,
            syncline::Status::Syncing { progress } => Self::Syncing {
                docs_done: progress.docs_done,
                docs_total: progress.docs_total,
                bytes_done: progress.bytes_done,
                bytes_total: progress.bytes_total,
            },
            syncline::Status::Synced { at_ms } => Self::Synced { at_ms },
            syncline::Status::Error { reason } => Self::Error { reason },
        }
    }
}

/// What a sync moved (the SDK's `SyncStats`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiSyncStats {
    /// Documents sent with changes.
    pub docs_sent: u64,
    /// Documents changed by what was received.
    pub docs_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Flights of frames sent.
    pub round_trips: u64,
}

/// Keeps a listener registered; `cancel` (or dropping it on the foreign side) unregisters.
#[derive(uniffi::Object)]
pub struct FfiSubscription {
    inner: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl FfiSubscription {
    fn new(inner: Box<dyn std::any::Any + Send>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Some(inner)),
        })
    }
}

#[uniffi::export]
impl FfiSubscription {
    /// Stops the listener now.
    pub fn cancel(&self) {
        let taken = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(taken);
    }
}

/// Syncs a store with a relay in the background for as long as it is kept.
#[derive(uniffi::Object)]
pub struct FfiSyncClient {
    /// Shared with a `wait_synced` in progress, so that waiting never blocks `status`,
    /// `pause` or `stop` from other threads.
    client: Mutex<Option<Arc<SyncClient>>>,
}

#[uniffi::export]
impl FfiSyncClient {
    /// Starts syncing `store`'s `collections` with the relay at `relay_url`, with tokens from
    /// `tokens`.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection, [`FfiError::Sync`] if it cannot start.
    #[uniffi::constructor]
    pub fn start(
        store: Arc<FfiStore>,
        relay_url: String,
        collections: Vec<String>,
        tokens: Arc<dyn FfiTokenProvider>,
    ) -> Result<Arc<Self>, FfiError> {
        let collections = collections
            .into_iter()
            .map(Collection::new)
            .collect::<Result<Vec<_>, _>>()?;
        let options = SyncOptions::new(relay_url, &collections);
        let client = SyncClient::start(&store.store, options, move || {
            tokens.token().map_err(|e| e.to_string())
        })?;
        Ok(Arc::new(Self {
            client: Mutex::new(Some(Arc::new(client))),
        }))
    }

    /// The current status.
    pub fn status(&self) -> FfiStatus {
        self.with(|c| c.status().into())
            .unwrap_or(FfiStatus::Offline)
    }

    /// Calls `listener` with every new status, for as long as the subscription is kept.
    pub fn watch_status(&self, listener: Arc<dyn FfiStatusListener>) -> Arc<FfiSubscription> {
        let subscription =
            self.with(|c| c.watch_status(move |s| listener.on_status(s.clone().into())));
        FfiSubscription::new(Box::new(subscription))
    }

    /// Waits until synced with nothing pending (or fails: refused token, unreachable relay,
    /// refused change, timeout). Suspends the caller's coroutine / task, never a thread of
    /// the host: the wait runs on a thread of its own.
    ///
    /// # Errors
    /// [`FfiError::Unauthorized`], [`FfiError::Unreachable`], [`FfiError::Sync`],
    /// [`FfiError::Timeout`].
    pub async fn wait_synced(&self, timeout_ms: u64) -> Result<FfiSyncStats, FfiError> {
        let client = self.current();
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let outcome = match client {
                Some(c) => c
                    .wait_synced(Duration::from_millis(timeout_ms), true)
                    .map_err(FfiError::from),
                None => Err(FfiError::Sync("the client was stopped".into())),
            };
            let _ = done.send(outcome.map(|s| FfiSyncStats {
                docs_sent: s.docs_sent,
                docs_received: s.docs_received,
                bytes_sent: s.bytes_sent,
                bytes_received: s.bytes_received,
                round_trips: s.round_trips,
            }));
        });
        result
            .await
            .map_err(|_| FfiError::Sync("the wait ended unexpectedly".into()))?
    }

    /// Disconnects and stays offline until `resume`.
    pub fn pause(&self) {
        self.with(SyncClient::pause);
    }

    /// Connects again after `pause`.
    pub fn resume(&self) {
        self.with(SyncClient::resume);
    }

    /// The network is (un)available: stop retrying, or connect at once.
    pub fn set_network_available(&self, available: bool) {
        self.with(|c| c.set_network_available(available));
    }

    /// Stops syncing (also on drop); what is pending stays in the store. A `wait_synced` in
    /// progress returns at once with an error.
    pub fn stop(&self) {
        let taken = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(client) = taken {
            client.close();
            // The sync thread is joined when the last holder (maybe a waiting thread) lets go.
            drop(client);
        }
    }
}

impl Drop for FfiSyncClient {
    /// Dropped on the foreign side: stop syncing, and end a wait in progress.
    fn drop(&mut self) {
        self.stop();
    }
}

impl FfiSyncClient {
    fn current(&self) -> Option<Arc<SyncClient>> {
        self.client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn with<R>(&self, f: impl FnOnce(&SyncClient) -> R) -> Option<R> {
        self.current().map(|c| f(&c))
    }
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
}
