//! [`FfiStore`], [`FfiDocument`] and [`FfiDocumentView`]: the SDK's `Store`, `Document` and
//! `DocumentView`, with values as [`Value`] or JSON text and ids as `collection/id` strings.

use std::sync::Arc;

use syncline::{Collection, DocId, Document, DocumentView, Store};

use crate::subscription::FfiSubscription;
use crate::value::{Change, ChangeEvent, Patch, PendingChange, Value, WriteOp};
use crate::value::{heads_from_strings, heads_to_strings, to_usize};
use crate::{FfiChangeListener, FfiError};

/// A document's sync priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Priority {
    /// Synced last; deferred on metered networks.
    Low,
    /// The default.
    Normal,
    /// Synced before normal documents.
    High,
    /// Synced before everything else.
    Critical,
}

impl From<syncline::Priority> for Priority {
    fn from(p: syncline::Priority) -> Self {
        match p {
            syncline::Priority::Low => Self::Low,
            syncline::Priority::Normal => Self::Normal,
            syncline::Priority::High => Self::High,
            syncline::Priority::Critical => Self::Critical,
        }
    }
}

impl From<Priority> for syncline::Priority {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Low => Self::Low,
            Priority::Normal => Self::Normal,
            Priority::High => Self::High,
            Priority::Critical => Self::Critical,
        }
    }
}

/// How hard a commit works to survive a power cut (the SDK's `syncline::Durability`). Either way a write
/// whose call returned survives the app being killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Durability {
    /// Every commit reaches the disk before the write returns (also survives a power cut).
    Full,
    /// Commits reach the disk at checkpoints: a power cut can lose the last moments' writes.
    Normal,
}

/// Tuning for [`FfiStore::open_with`] (the SDK's `syncline::StoreOptions`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct StoreOptions {
    /// Upper bound, in estimated bytes, of the documents kept loaded in memory.
    pub cache_bytes: u64,
    /// How commits survive power loss.
    pub durability: Durability,
}

impl From<StoreOptions> for syncline::StoreOptions {
    fn from(o: StoreOptions) -> Self {
        Self {
            cache_bytes: usize::try_from(o.cache_bytes).unwrap_or(usize::MAX),
            durability: match o.durability {
                Durability::Full => syncline::Durability::Full,
                Durability::Normal => syncline::Durability::Normal,
            },
            ..Self::default()
        }
    }
}

/// What the store knows of a document without loading it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DocumentInfo {
    /// `collection/id`.
    pub id: String,
    /// Its sync priority.
    pub priority: Priority,
    /// True once deleted (the tombstone syncs).
    pub deleted: bool,
    /// Bytes stored for it.
    pub stored_bytes: u64,
    /// Created here at, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last local change, in milliseconds since the Unix epoch.
    pub local_change_at_ms: Option<i64>,
    /// Last change received from elsewhere, in milliseconds since the Unix epoch.
    pub remote_change_at_ms: Option<i64>,
    /// Its content was evicted to stay within the storage budget (the sync client's `open`
    /// fetches it again).
    pub evicted: bool,
    /// Bytes of this device's own changes to it kept apart while its content is evicted
    /// (what a relay restored from an older backup gets back); 0 with none.
    pub kept_bytes: u64,
}

impl From<syncline::DocumentInfo> for DocumentInfo {
    fn from(info: syncline::DocumentInfo) -> Self {
        Self {
            id: info.id.to_string(),
            priority: info.priority.into(),
            deleted: info.deleted,
            stored_bytes: info.stored_bytes,
            created_at_ms: info.created_at,
            local_change_at_ms: info.local_change_at,
            remote_change_at_ms: info.remote_change_at,
            evicted: info.evicted,
            kept_bytes: info.kept_bytes,
        }
    }
}

/// Hands SDK change events to a foreign listener (see [`crate::call_foreign`]).
pub(crate) fn forward_events(
    listener: Arc<dyn FfiChangeListener>,
) -> impl Fn(&syncline::ChangeEvent) + Send + Sync + 'static {
    move |event| {
        crate::call_foreign("a change listener (the change is committed)", || {
            listener.on_change(ChangeEvent::from(event));
        });
    }
}

fn parse_json(json: &str) -> Result<syncline::Value, FfiError> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| FfiError::InvalidInput(format!("invalid JSON: {e}")))?;
    Ok(syncline::Value::from_json(&value))
}

/// A store, as foreign code holds it. Safe to share between threads; the file is closed when
/// the last reference (including documents and sync clients made from it) is dropped.
#[derive(uniffi::Object)]
pub struct FfiStore {
    pub(crate) store: Store,
}

#[uniffi::export]
impl FfiStore {
    /// Opens (or creates) the store file at `path`.
    ///
    /// # Errors
    /// [`FfiError::Storage`] when the file cannot be opened as a store (or another process
    /// has it open).
    #[uniffi::constructor]
    pub fn open(path: String) -> Result<Arc<Self>, FfiError> {
        Ok(Arc::new(Self {
            store: Store::open(path)?,
        }))
    }

    /// Opens (or creates) the store file at `path` with `options`.
    ///
    /// # Errors
    /// As [`FfiStore::open`].
    #[uniffi::constructor]
    pub fn open_with(path: String, options: StoreOptions) -> Result<Arc<Self>, FfiError> {
        Ok(Arc::new(Self {
            store: Store::open_with(path, options.into())?,
        }))
    }

    /// This device's id, in hex.
    pub fn device_id(&self) -> String {
        self.store.device_id().to_string()
    }

    /// Creates a document in `collection` with `initial` (a map) as its content.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection or an `initial` that is not a map.
    pub fn create(&self, collection: String, initial: Value) -> Result<Arc<FfiDocument>, FfiError> {
        let collection = Collection::new(collection)?;
        let doc =
            self.store
                .create_with(&collection, initial.into(), syncline::Priority::Normal)?;
        Ok(FfiDocument::wrap(doc))
    }

    /// Creates the document `doc_id` (`collection/id`, an id the app chooses) with `initial` (a
    /// map) as its content and the given priority.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad id, an `initial` that is not a map, or an id
    /// already taken (even by a deleted document).
    pub fn create_at(
        &self,
        doc_id: String,
        initial: Value,
        priority: Priority,
    ) -> Result<Arc<FfiDocument>, FfiError> {
        let id: DocId = doc_id.parse()?;
        let doc = self.store.create_at(id, initial.into(), priority.into())?;
        Ok(FfiDocument::wrap(doc))
    }

    /// Creates a document in `collection` from a JSON object; returns its `collection/id`.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection or JSON that is not an object.
    pub fn create_json(&self, collection: String, json: String) -> Result<String, FfiError> {
        let collection = Collection::new(collection)?;
        let doc =
            self.store
                .create_with(&collection, parse_json(&json)?, syncline::Priority::Normal)?;
        Ok(doc.id().to_string())
    }

    /// The document `doc_id` (`collection/id`).
    ///
    /// # Errors
    /// [`FfiError::NotFound`] if there is none (or it is deleted), [`FfiError::InvalidInput`].
    pub fn document(&self, doc_id: String) -> Result<Arc<FfiDocument>, FfiError> {
        let id: DocId = doc_id.parse()?;
        Ok(FfiDocument::wrap(self.store.document(&id)?))
    }

    /// What the store knows of document `doc_id` without loading it (also once deleted).
    ///
    /// # Errors
    /// [`FfiError::NotFound`] if there is none, [`FfiError::InvalidInput`] for a bad id.
    pub fn info(&self, doc_id: String) -> Result<DocumentInfo, FfiError> {
        let id: DocId = doc_id.parse()?;
        Ok(self.store.info(&id)?.into())
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

    /// Deletes the document: a tombstone that syncs to other devices.
    ///
    /// # Errors
    /// [`FfiError::NotFound`] or [`FfiError::InvalidInput`].
    pub fn delete(&self, doc_id: String) -> Result<(), FfiError> {
        let id: DocId = doc_id.parse()?;
        Ok(self.store.delete(&id)?)
    }

    /// The `collection/id` of every live document in `collection`, oldest first.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection name.
    pub fn list(&self, collection: String) -> Result<Vec<String>, FfiError> {
        Ok(self
            .list_info(collection)?
            .into_iter()
            .map(|i| i.id)
            .collect())
    }

    /// Every live document of `collection` with its metadata, oldest first; loads none.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection name.
    pub fn list_info(&self, collection: String) -> Result<Vec<DocumentInfo>, FfiError> {
        let collection = Collection::new(collection)?;
        Ok(self
            .store
            .list(&collection)?
            .into_iter()
            .map(DocumentInfo::from)
            .collect())
    }

    /// The `collection/id` of every document the relay has not acknowledged yet, highest
    /// priority first.
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

    /// Every change no relay has acknowledged yet, with the document it belongs to.
    ///
    /// # Errors
    /// [`FfiError::Storage`], also for a pending document that cannot load.
    pub fn pending_changes(&self) -> Result<Vec<PendingChange>, FfiError> {
        Ok(self
            .store
            .pending_changes()?
            .into_iter()
            .map(PendingChange::from)
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
        self.store
            .document(&id)?
            .resolve(path.as_str(), parse_json(&json)?)?;
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
        let subscription = self
            .store
            .watch_collection(&collection, forward_events(listener));
        Ok(FfiSubscription::new(Box::new(subscription)))
    }

    /// The last `limit` connections to any relay, newest first (the store keeps the last
    /// 200).
    ///
    /// # Errors
    /// [`FfiError::Storage`] if the store cannot be read.
    pub fn sync_history(&self, limit: u32) -> Result<Vec<crate::SyncRecord>, FfiError> {
        Ok(self
            .store
            .sync_history(limit as usize)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The documents a merge left with concurrent values no write has resolved yet.
    ///
    /// # Errors
    /// [`FfiError::Storage`] if the store cannot be read.
    pub fn conflicted_documents(&self) -> Result<Vec<String>, FfiError> {
        Ok(self
            .store
            .conflicted_documents()?
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    /// Resolves `collection`'s conflicts with `strategy` from now on (none: no longer), and
    /// those already there now. Every device must run the same strategy.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection or device id; storage errors.
    pub fn set_conflict_strategy(
        &self,
        collection: String,
        strategy: Option<crate::ConflictStrategy>,
    ) -> Result<(), FfiError> {
        let collection = Collection::new(collection)?;
        let strategy = strategy.map(TryInto::try_into).transpose()?;
        Ok(self.store.set_conflict_strategy(&collection, strategy)?)
    }

    /// Resolves `collection`'s conflicts with the app's own `resolver` (deterministic, the
    /// same on every device), from now on and now.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection; storage errors.
    pub fn set_conflict_resolver(
        &self,
        collection: String,
        resolver: Arc<dyn crate::FfiConflictResolver>,
    ) -> Result<(), FfiError> {
        let collection = Collection::new(collection)?;
        Ok(self
            .store
            .set_conflict_strategy(&collection, Some(crate::conflicts::custom(resolver)))?)
    }

    /// Calls `listener` with each conflict a change leaves in any document of the store.
    pub fn watch_conflicts(
        &self,
        listener: Arc<dyn crate::FfiConflictListener>,
    ) -> Arc<FfiSubscription> {
        FfiSubscription::new(Box::new(
            self.store
                .watch_conflicts(crate::conflicts::forward_conflicts(listener)),
        ))
    }

    /// Calls `listener` with each conflict a change leaves in a document of `collection`.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection name.
    pub fn watch_collection_conflicts(
        &self,
        collection: String,
        listener: Arc<dyn crate::FfiConflictListener>,
    ) -> Result<Arc<FfiSubscription>, FfiError> {
        let collection = Collection::new(collection)?;
        Ok(FfiSubscription::new(Box::new(
            self.store.watch_collection_conflicts(
                &collection,
                crate::conflicts::forward_conflicts(listener),
            ),
        )))
    }

    /// Calls `listener` after every durable change to any document of the store (every
    /// collection), local or remote, for as long as the returned subscription is kept. Each
    /// event says which devices its changes came from.
    pub fn watch_all(&self, listener: Arc<dyn FfiChangeListener>) -> Arc<FfiSubscription> {
        FfiSubscription::new(Box::new(self.store.watch_all(forward_events(listener))))
    }

    /// How many change and conflict listeners are registered now (a cancelled or dropped
    /// subscription no longer counts): what a binding's test checks after a stream is
    /// abandoned.
    pub fn subscription_count(&self) -> u64 {
        self.store.listener_count() as u64
    }
}

/// One document of a store. Every write is durable when the call returns.
#[derive(uniffi::Object)]
pub struct FfiDocument {
    doc: Document,
}

impl FfiDocument {
    pub(crate) fn wrap(doc: Document) -> Arc<Self> {
        Arc::new(Self { doc })
    }
}

#[uniffi::export]
impl FfiDocument {
    /// The document's `collection/id`.
    pub fn id(&self) -> String {
        self.doc.id().to_string()
    }

    /// The value at `path` (a JSON Pointer; `""` for the whole document), or null if nothing
    /// is there.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] if the path cannot be followed, [`FfiError::NotFound`].
    pub fn get(&self, path: String) -> Result<Option<Value>, FfiError> {
        Ok(self.doc.get(path.as_str())?.map(Value::from))
    }

    /// The whole document as JSON text.
    ///
    /// # Errors
    /// [`FfiError::NotFound`] or [`FfiError::Storage`].
    pub fn to_json(&self) -> Result<String, FfiError> {
        Ok(self.doc.to_json()?.to_string())
    }

    /// Sets the value at `path`.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] or [`FfiError::NotFound`].
    pub fn put(&self, path: String, value: Value) -> Result<(), FfiError> {
        Ok(self.doc.put(path.as_str(), syncline::Value::from(value))?)
    }

    /// Sets the value at `path` from JSON text.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] or [`FfiError::NotFound`].
    pub fn put_json(&self, path: String, json: String) -> Result<(), FfiError> {
        Ok(self.doc.put(path.as_str(), parse_json(&json)?)?)
    }

    /// Removes the value at `path`.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] or [`FfiError::NotFound`].
    pub fn delete(&self, path: String) -> Result<(), FfiError> {
        Ok(self.doc.delete(path.as_str())?)
    }

    /// Edits the text object at `path`: removes `delete` code points at `index`, then inserts
    /// `insert` there.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] or [`FfiError::NotFound`].
    pub fn splice_text(
        &self,
        path: String,
        index: u64,
        delete: u64,
        insert: String,
    ) -> Result<(), FfiError> {
        Ok(self
            .doc
            .splice_text(path.as_str(), to_usize(index)?, to_usize(delete)?, &insert)?)
    }

    /// Adds `by` to the counter at `path`.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] or [`FfiError::NotFound`].
    pub fn increment(&self, path: String, by: i64) -> Result<(), FfiError> {
        Ok(self.doc.increment(path.as_str(), by)?)
    }

    /// Applies `ops` as one change, with an optional commit message: all of them, or (on an
    /// error) none.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] or [`FfiError::NotFound`].
    pub fn apply(&self, ops: Vec<WriteOp>, message: Option<String>) -> Result<(), FfiError> {
        let ops = ops
            .into_iter()
            .map(syncline::WriteOp::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.doc.apply(&ops, message.as_deref())?)
    }

    /// The current heads (hex change hashes).
    ///
    /// # Errors
    /// [`FfiError::NotFound`] or [`FfiError::Storage`].
    pub fn heads(&self) -> Result<Vec<String>, FfiError> {
        Ok(heads_to_strings(&self.doc.heads()?))
    }

    /// Every change, oldest first: who (which device) wrote what, when, with which message.
    ///
    /// # Errors
    /// [`FfiError::NotFound`] or [`FfiError::Storage`].
    pub fn history(&self) -> Result<Vec<Change>, FfiError> {
        Ok(self.doc.history()?.into_iter().map(Change::from).collect())
    }

    /// A read-only view of the document as it was at `heads`.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for heads that are not hashes or not in the document.
    pub fn view_at(&self, heads: Vec<String>) -> Result<Arc<FfiDocumentView>, FfiError> {
        let view = self.doc.view_at(&heads_from_strings(&heads)?)?;
        Ok(Arc::new(FfiDocumentView { view }))
    }

    /// The patches that turn the document at `from` into the document at `to`.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for heads that are not hashes or not in the document.
    pub fn diff(&self, from: Vec<String>, to: Vec<String>) -> Result<Vec<Patch>, FfiError> {
        let patches = self
            .doc
            .diff(&heads_from_strings(&from)?, &heads_from_strings(&to)?)?;
        Ok(patches.iter().map(Patch::from).collect())
    }

    /// The concurrent values at `path` (more than one while devices' writes conflict).
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] or [`FfiError::NotFound`].
    pub fn conflicts(&self, path: String) -> Result<Vec<Value>, FfiError> {
        Ok(self
            .doc
            .conflicts(path.as_str())?
            .into_iter()
            .map(Value::from)
            .collect())
    }

    /// Settles the value at `path`, ending a conflict there.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] or [`FfiError::NotFound`].
    pub fn resolve(&self, path: String, value: Value) -> Result<(), FfiError> {
        Ok(self
            .doc
            .resolve(path.as_str(), syncline::Value::from(value))?)
    }

    /// The document's sync priority.
    ///
    /// # Errors
    /// [`FfiError::NotFound`] or [`FfiError::Storage`].
    pub fn priority(&self) -> Result<Priority, FfiError> {
        Ok(self.doc.priority()?.into())
    }

    /// Sets the document's sync priority.
    ///
    /// # Errors
    /// [`FfiError::NotFound`] or [`FfiError::Storage`].
    pub fn set_priority(&self, priority: Priority) -> Result<(), FfiError> {
        Ok(self.doc.set_priority(priority.into())?)
    }

    /// Every conflict in the document: each path a merge left with concurrent values.
    ///
    /// # Errors
    /// [`FfiError::NotFound`] or a storage error.
    pub fn all_conflicts(&self) -> Result<Vec<crate::Conflict>, FfiError> {
        Ok(self.doc.all_conflicts()?.iter().map(Into::into).collect())
    }

    /// Calls `listener` with each conflict a change leaves in this document.
    pub fn watch_conflicts(
        &self,
        listener: Arc<dyn crate::FfiConflictListener>,
    ) -> Arc<FfiSubscription> {
        FfiSubscription::new(Box::new(
            self.doc
                .watch_conflicts(crate::conflicts::forward_conflicts(listener)),
        ))
    }

    /// Calls `listener` after every durable change to this document, local or remote, for as
    /// long as the returned subscription is kept.
    pub fn watch(&self, listener: Arc<dyn FfiChangeListener>) -> Arc<FfiSubscription> {
        FfiSubscription::new(Box::new(self.doc.watch(forward_events(listener))))
    }
}

/// A read-only view of a document at given heads.
#[derive(uniffi::Object)]
pub struct FfiDocumentView {
    view: DocumentView,
}

#[uniffi::export]
impl FfiDocumentView {
    /// The heads this view shows.
    pub fn heads(&self) -> Vec<String> {
        heads_to_strings(self.view.heads())
    }

    /// The value at `path` then, or null.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] if the path cannot be followed.
    pub fn get(&self, path: String) -> Result<Option<Value>, FfiError> {
        Ok(self.view.get(path.as_str())?.map(Value::from))
    }

    /// The whole document then, as JSON text.
    ///
    /// # Errors
    /// [`FfiError::Storage`].
    pub fn to_json(&self) -> Result<String, FfiError> {
        Ok(self.view.to_json()?.to_string())
    }
}
