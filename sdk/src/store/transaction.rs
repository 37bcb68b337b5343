//! `Transaction`: the write operations available inside [`crate::Document::transact`], and
//! `WriteOp`, the same operations as data for callers that cannot pass a closure (bindings).

use automerge::transaction::{Transactable, Transaction as AmTransaction};
use automerge::{ObjType, Prop, ReadDoc};

use super::model::{self, invalid};
use crate::path::IntoPath;
use crate::{Error, Path, Result, Value};

/// The operations of one atomic change to a document. Nothing is visible to other readers, and
/// nothing is stored, until the closure passed to [`crate::Document::transact`] returns `Ok`;
/// an `Err` discards every operation of the transaction.
pub struct Transaction<'a> {
    tx: AmTransaction<'a>,
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(tx: AmTransaction<'a>) -> Self {
        Self { tx }
    }

    pub(crate) fn inner(&mut self) -> &mut AmTransaction<'a> {
        &mut self.tx
    }

    pub(crate) fn into_inner(self) -> AmTransaction<'a> {
        self.tx
    }

    /// Reads the value at `path`, including this transaction's own writes.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] or [`Error::TypeMismatch`] if the path cannot be followed.
    pub fn get(&self, path: impl IntoPath) -> Result<Option<Value>> {
        model::read(&self.tx, None, &path.into_path()?)
    }

    /// Sets the value at `path` (a map key, or an existing list index). Missing intermediate
    /// maps are created. Writing a [`Value::Map`], [`Value::List`] or [`Value::Text`] creates a
    /// new object holding the given contents.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for the root, a reserved key or a list index out of range,
    /// [`Error::TypeMismatch`] if an intermediate value is not an object.
    pub fn put(&mut self, path: impl IntoPath, value: impl Into<Value>) -> Result<()> {
        let path = path.into_path()?;
        let (obj, prop) = model::locate_for_write(&mut self.tx, &path)?;
        if let Prop::Seq(index) = prop {
            let len = model::length(&self.tx, &obj);
            if index >= len {
                return Err(invalid(
                    &path,
                    &format!("index {index} is past the end ({len}); insert instead"),
                ));
            }
        }
        model::write_value(&mut self.tx, &obj, prop, &value.into(), false)
    }

    /// Sets the value at `path` from JSON text (objects become maps, arrays lists).
    ///
    /// # Errors
    /// [`Error::Json`] for malformed JSON, otherwise as [`Transaction::put`].
    pub fn put_json(&mut self, path: impl IntoPath, json: &str) -> Result<()> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        self.put(path, Value::from_json(&value))
    }

    /// Inserts `value` into a list before the index that ends `path` (an index equal to the
    /// length appends).
    ///
    /// # Errors
    /// [`Error::InvalidPath`] if the parent is not a list or the index is past the end.
    pub fn insert(&mut self, path: impl IntoPath, value: impl Into<Value>) -> Result<()> {
        let path = path.into_path()?;
        let (obj, prop) = model::locate_for_write(&mut self.tx, &path)?;
        let Prop::Seq(index) = prop else {
            return Err(invalid(&path, "insert needs a list index"));
        };
        self.expect_type(&obj, &path, ObjType::List)?;
        let len = model::length(&self.tx, &obj);
        if index > len {
            return Err(invalid(
                &path,
                &format!("index {index} is past the end ({len})"),
            ));
        }
        model::write_value(&mut self.tx, &obj, Prop::Seq(index), &value.into(), true)
    }

    /// Appends `value` to the list at `path`.
    ///
    /// # Errors
    /// [`Error::TypeMismatch`] if there is no list at `path`.
    pub fn push(&mut self, list: impl IntoPath, value: impl Into<Value>) -> Result<()> {
        let list = list.into_path()?;
        let obj = self.object_at(&list, ObjType::List)?;
        let len = model::length(&self.tx, &obj);
        model::write_value(&mut self.tx, &obj, Prop::Seq(len), &value.into(), true)
    }

    /// Removes the map key or list element at `path`. Removing a missing key does nothing.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for the root or a list index out of range.
    pub fn delete(&mut self, path: impl IntoPath) -> Result<()> {
        let path = path.into_path()?;
        let (obj, prop) = model::locate_for_write(&mut self.tx, &path)?;
        match prop {
            Prop::Seq(index) if index >= model::length(&self.tx, &obj) => {
                Err(invalid(&path, &format!("no list element at index {index}")))
            }
            Prop::Map(ref key) if self.tx.get(&obj, key.as_str())?.is_none() => Ok(()),
            prop => Ok(self.tx.delete(&obj, prop)?),
        }
    }

    /// Edits the text object at `path`: removes `delete` characters at `index` (in Unicode
    /// code points) and inserts `insert` there.
    ///
    /// # Errors
    /// [`Error::TypeMismatch`] if there is no text at `path`, [`Error::InvalidPath`] if the
    /// range is out of bounds.
    pub fn splice_text(
        &mut self,
        path: impl IntoPath,
        index: usize,
        delete: usize,
        insert: &str,
    ) -> Result<()> {
        let path = path.into_path()?;
        let obj = self.object_at(&path, ObjType::Text)?;
        let len = model::length(&self.tx, &obj);
        if index.checked_add(delete).is_none_or(|end| end > len) {
            return Err(invalid(
                &path,
                &format!("range {index}+{delete} is past the end ({len})"),
            ));
        }
        let delete =
            isize::try_from(delete).map_err(|_| invalid(&path, "delete count too large"))?;
        Ok(self.tx.splice_text(&obj, index, delete, insert)?)
    }

    /// Adds `by` (which may be negative) to the counter at `path`.
    ///
    /// # Errors
    /// [`Error::TypeMismatch`] if the value there is not a counter.
    pub fn increment(&mut self, path: impl IntoPath, by: i64) -> Result<()> {
        let path = path.into_path()?;
        let (obj, prop) = model::locate_for_write(&mut self.tx, &path)?;
        match model::read(&self.tx, None, &path)? {
            Some(Value::Counter(_)) => Ok(self.tx.increment(&obj, prop, by)?),
            other => Err(Error::TypeMismatch {
                path: path.to_string(),
                expected: "counter",
                found: other.as_ref().map_or("nothing", Value::type_name),
            }),
        }
    }

    /// Applies one [`WriteOp`].
    ///
    /// # Errors
    /// As the operation's method.
    pub fn apply(&mut self, op: &WriteOp) -> Result<()> {
        match op {
            WriteOp::Put { path, value } => self.put(path, value.clone()),
            WriteOp::Insert { path, value } => self.insert(path, value.clone()),
            WriteOp::Push { list, value } => self.push(list, value.clone()),
            WriteOp::Delete { path } => self.delete(path),
            WriteOp::SpliceText {
                path,
                index,
                delete,
                insert,
            } => self.splice_text(path, *index, *delete, insert),
            WriteOp::Increment { path, by } => self.increment(path, *by),
        }
    }

    fn object_at(&mut self, path: &Path, expected: ObjType) -> Result<automerge::ObjId> {
        let (obj, prop) = model::locate_for_write(&mut self.tx, path)?;
        match self.tx.get(&obj, prop)? {
            Some((automerge::Value::Object(t), id)) if t == expected => Ok(id),
            found => Err(Error::TypeMismatch {
                path: path.to_string(),
                expected: obj_type_name(expected),
                found: match found {
                    None => "nothing",
                    Some((automerge::Value::Object(t), _)) => obj_type_name(t),
                    Some((automerge::Value::Scalar(s), _)) => {
                        model::scalar_to_value(s.as_ref()).type_name()
                    }
                },
            }),
        }
    }

    fn expect_type(&self, obj: &automerge::ObjId, path: &Path, expected: ObjType) -> Result<()> {
        let found = self.tx.object_type(obj)?;
        if found == expected {
            Ok(())
        } else {
            Err(Error::TypeMismatch {
                path: path.to_string(),
                expected: obj_type_name(expected),
                found: obj_type_name(found),
            })
        }
    }
}

fn obj_type_name(t: ObjType) -> &'static str {
    match t {
        ObjType::Map | ObjType::Table => "map",
        ObjType::List => "list",
        ObjType::Text => "text",
    }
}

/// One write operation as data; see the [`Transaction`] method of the same name.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// [`Transaction::put`].
    Put {
        /// Where.
        path: Path,
        /// What.
        value: Value,
    },
    /// [`Transaction::insert`].
    Insert {
        /// Where (ends with the index).
        path: Path,
        /// What.
        value: Value,
    },
    /// [`Transaction::push`].
    Push {
        /// The list.
        list: Path,
        /// What.
        value: Value,
    },
    /// [`Transaction::delete`].
    Delete {
        /// Where.
        path: Path,
    },
    /// [`Transaction::splice_text`].
    SpliceText {
        /// The text object.
        path: Path,
        /// Where, in code points.
        index: usize,
        /// How many code points to remove.
        delete: usize,
        /// What to insert.
        insert: String,
    },
    /// [`Transaction::increment`].
    Increment {
        /// The counter.
        path: Path,
        /// By how much.
        by: i64,
    },
}
