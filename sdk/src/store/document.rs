//! `Document`: a handle to one document of a [`Store`], with reads, writes, history and
//! conflicts; `DocumentView`: a read-only copy of a document at given heads.

use automerge::Automerge;
use syncline_protocol::{DocId, Priority};

use super::model;
use super::{ChangeEvent, ChangeInfo, Patch, Store, Subscription, Transaction, WriteOp};
use crate::path::IntoPath;
use crate::store::listeners::convert_patches;
use crate::{Error, Heads, Path, Result, Value};

/// A handle to one document. Cheap to clone; every call reads or writes the store's single
/// in-memory copy, loading it if it is not cached.
#[derive(Clone, Debug)]
pub struct Document {
    store: Store,
    id: DocId,
}

macro_rules! typed_getter {
    ($(#[$doc:meta])* $name:ident -> $t:ty, $expected:literal, $pat:pat => $out:expr) => {
        $(#[$doc])*
        ///
        /// # Errors
        /// [`Error::TypeMismatch`] if a value of another type is there; as [`Document::get`]
        /// otherwise.
        pub fn $name(&self, path: impl IntoPath) -> Result<Option<$t>> {
            let path = path.into_path()?;
            match self.get(&path)? {
                None => Ok(None),
                Some($pat) => Ok(Some($out)),
                Some(other) => Err(Error::TypeMismatch {
                    path: path.to_string(),
                    expected: $expected,
                    found: other.type_name(),
                }),
            }
        }
    };
}

impl Document {
    pub(crate) fn new(store: Store, id: DocId) -> Self {
        Self { store, id }
    }

    /// The document's address.
    pub fn id(&self) -> &DocId {
        &self.id
    }

    /// The value at `path` (`""` or `"/"` for the whole document), or `None` if nothing is
    /// there.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] or [`Error::TypeMismatch`] if the path cannot be followed,
    /// [`Error::Deleted`], [`Error::NotFound`], [`Error::CorruptDocument`], or a storage error.
    pub fn get(&self, path: impl IntoPath) -> Result<Option<Value>> {
        let path = path.into_path()?;
        self.read(|doc| model::read(doc, None, &path))
    }

    typed_getter!(
        /// The scalar string at `path`; a text object is read as its string too.
        get_str -> String, "string", Value::Str(s) | Value::Text(s) => s);
    typed_getter!(
        /// The integer at `path` (a counter reads as its value).
        get_i64 -> i64, "int", Value::Int(n) | Value::Counter(n) => n);
    typed_getter!(
        /// The float at `path`; integers are widened.
        get_f64 -> f64, "float", Value::F64(f) => f);
    typed_getter!(
        /// The boolean at `path`.
        get_bool -> bool, "bool", Value::Bool(b) => b);
    typed_getter!(
        /// The bytes at `path`.
        get_bytes -> Vec<u8>, "bytes", Value::Bytes(b) => b);

    /// The whole document as JSON (see [`Value::to_json`]).
    ///
    /// # Errors
    /// As [`Document::get`].
    pub fn to_json(&self) -> Result<serde_json::Value> {
        Ok(self
            .get(Path::root())?
            .map_or(serde_json::Value::Null, |v| v.to_json()))
    }

    /// Runs `f` as one atomic change, with an optional commit message, and returns once the
    /// change is durable: a process killed right after this returns still has it. If `f`
    /// returns `Err` (or makes no change) nothing is written. Works offline; the change stays
    /// pending until a relay acknowledges it.
    ///
    /// # Errors
    /// `f`'s error, [`Error::Deleted`], [`Error::NotFound`], [`Error::CorruptDocument`], or a
    /// storage error (then the change is not kept, in memory or on disk).
    pub fn transact<R>(
        &self,
        message: Option<&str>,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R>,
    ) -> Result<R> {
        self.store.shared().write_local(&self.id, message, f)
    }

    /// Applies `ops` as one atomic, durable change (the data form of [`Document::transact`]).
    ///
    /// # Errors
    /// As [`Document::transact`].
    pub fn apply(&self, ops: &[WriteOp], message: Option<&str>) -> Result<()> {
        self.transact(message, |tx| ops.iter().try_for_each(|op| tx.apply(op)))
    }

    /// [`Transaction::put`] as its own durable change.
    ///
    /// # Errors
    /// As [`Document::transact`].
    pub fn put(&self, path: impl IntoPath, value: impl Into<Value>) -> Result<()> {
        self.transact(None, |tx| tx.put(path, value))
    }

    /// [`Transaction::delete`] as its own durable change.
    ///
    /// # Errors
    /// As [`Document::transact`].
    pub fn delete(&self, path: impl IntoPath) -> Result<()> {
        self.transact(None, |tx| tx.delete(path))
    }

    /// [`Transaction::splice_text`] as its own durable change.
    ///
    /// # Errors
    /// As [`Document::transact`].
    pub fn splice_text(
        &self,
        path: impl IntoPath,
        index: usize,
        delete: usize,
        insert: &str,
    ) -> Result<()> {
        self.transact(None, |tx| tx.splice_text(path, index, delete, insert))
    }

    /// [`Transaction::increment`] as its own durable change.
    ///
    /// # Errors
    /// As [`Document::transact`].
    pub fn increment(&self, path: impl IntoPath, by: i64) -> Result<()> {
        self.transact(None, |tx| tx.increment(path, by))
    }

    /// The document's current heads.
    ///
    /// # Errors
    /// As [`Document::get`].
    pub fn heads(&self) -> Result<Heads> {
        self.read(|doc| Ok(Heads::new(doc.get_heads())))
    }

    /// Every change in the document's history, each after the changes it depends on.
    ///
    /// # Errors
    /// As [`Document::get`].
    pub fn history(&self) -> Result<Vec<ChangeInfo>> {
        self.read(|doc| {
            Ok(doc
                .get_changes_meta(&[])
                .iter()
                .map(ChangeInfo::from_meta)
                .collect())
        })
    }

    /// A read-only copy of the document as it was at `heads`.
    ///
    /// # Errors
    /// [`Error::InvalidHeads`] if a hash is not in this document's history; as
    /// [`Document::get`] otherwise.
    pub fn view_at(&self, heads: &Heads) -> Result<DocumentView> {
        self.read(|doc| {
            check_known(doc, heads)?;
            Ok(DocumentView {
                doc: doc.fork_at(heads.as_slice())?,
                heads: heads.clone(),
            })
        })
    }

    /// The patches that turn the document at `from` into the document at `to`.
    ///
    /// # Errors
    /// [`Error::InvalidHeads`] if a hash is not in this document's history.
    pub fn diff(&self, from: &Heads, to: &Heads) -> Result<Vec<Patch>> {
        self.read(|doc| {
            check_known(doc, from)?;
            check_known(doc, to)?;
            Ok(convert_patches(doc.diff(from.as_slice(), to.as_slice())))
        })
    }

    /// Every concurrent value at `path`, the one [`Document::get`] returns first. More than
    /// one value means devices wrote there concurrently and Automerge picked a winner; show
    /// them, or settle the matter with [`Document::resolve`].
    ///
    /// # Errors
    /// As [`Document::get`].
    pub fn conflicts(&self, path: impl IntoPath) -> Result<Vec<Value>> {
        let path = path.into_path()?;
        self.read(|doc| model::read_all(doc, &path))
    }

    /// Every conflict in the document (at most [`crate::MAX_CONFLICTS_LISTED`]): each path a
    /// merge left with concurrent values that differ, with the values and who wrote each.
    ///
    /// # Errors
    /// [`Error::NotFound`] or a storage error.
    pub fn all_conflicts(&self) -> Result<Vec<crate::Conflict>> {
        self.read(|doc| Ok(super::conflicts::find(doc, &self.id)))
    }

    /// Calls `listener` with each conflict a change leaves in this document, until the
    /// returned [`Subscription`] is dropped.
    pub fn watch_conflicts(
        &self,
        listener: impl Fn(&crate::Conflict) + Send + Sync + 'static,
    ) -> Subscription {
        self.watch(move |event: &ChangeEvent| event.conflicts.iter().for_each(&listener))
    }

    /// Replaces every concurrent value at `path` with `value`, as one durable change.
    ///
    /// # Errors
    /// As [`Document::transact`].
    pub fn resolve(&self, path: impl IntoPath, value: impl Into<Value>) -> Result<()> {
        self.transact(Some("resolve conflict"), |tx| tx.put(path, value))
    }

    /// The document's sync priority.
    ///
    /// # Errors
    /// [`Error::NotFound`] or a storage error.
    pub fn priority(&self) -> Result<Priority> {
        Ok(self.store.info(&self.id)?.priority)
    }

    /// Sets the document's sync priority.
    ///
    /// # Errors
    /// [`Error::NotFound`] or a storage error.
    pub fn set_priority(&self, priority: Priority) -> Result<()> {
        self.store.set_priority(&self.id, priority)
    }

    /// Calls `listener` after every durable change to this document; see
    /// [`Store::watch_document`].
    pub fn watch(&self, listener: impl Fn(&ChangeEvent) + Send + Sync + 'static) -> Subscription {
        self.store.watch_document(&self.id, listener)
    }

    fn read<R>(&self, f: impl FnOnce(&Automerge) -> Result<R>) -> Result<R> {
        self.store.shared().with_doc(&self.id, |loaded| {
            if loaded.row.deleted {
                return Err(Error::Deleted(self.id.clone()));
            }
            f(&loaded.doc)
        })
    }
}

fn check_known(doc: &Automerge, heads: &Heads) -> Result<()> {
    match heads
        .as_slice()
        .iter()
        .find(|h| doc.get_change_meta_by_hash(h).is_none())
    {
        Some(unknown) => Err(Error::InvalidHeads(format!(
            "{unknown} is not in this document"
        ))),
        None => Ok(()),
    }
}

/// A read-only copy of a document at given heads ("time travel"). Independent of the store:
/// later writes do not change it.
#[derive(Debug)]
pub struct DocumentView {
    doc: Automerge,
    heads: Heads,
}

impl DocumentView {
    /// The heads this view shows.
    pub fn heads(&self) -> &Heads {
        &self.heads
    }

    /// The value at `path` as it was at these heads.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] or [`Error::TypeMismatch`] if the path cannot be followed.
    pub fn get(&self, path: impl IntoPath) -> Result<Option<Value>> {
        model::read(&self.doc, None, &path.into_path()?)
    }

    /// The whole document as JSON, as it was at these heads.
    ///
    /// # Errors
    /// As [`DocumentView::get`].
    pub fn to_json(&self) -> Result<serde_json::Value> {
        Ok(self
            .get(Path::root())?
            .map_or(serde_json::Value::Null, |v| v.to_json()))
    }
}
