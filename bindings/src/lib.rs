//! The foreign-language facade over the `syncline` SDK: small wrappers that own their data,
//! are `Send + Sync`, and report one flat error enum, the shape uniffi exports to Kotlin,
//! Swift and Python. The uniffi annotations, generated bindings and their test suites arrive
//! with the bindings issue; no logic lives here that the Rust SDK lacks.

use std::sync::Arc;

use syncline::{Collection, DocId, Store};

/// The one error type foreign callers see: the SDK error's kind, with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
pub struct FfiStore {
    store: Store,
}

impl FfiStore {
    /// Opens (or creates) the store file at `path`.
    ///
    /// # Errors
    /// [`FfiError::Storage`] when the file cannot be opened as a store.
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
