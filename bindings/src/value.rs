//! The values that cross the boundary: [`Value`] (the SDK's `syncline::Value`), write operations,
//! change events and their patches, history records. Conversions only; no behaviour.

use std::collections::HashMap;

use syncline::{ChangeInfo, Heads, Segment};

use crate::FfiError;

/// A value read from or written to a document: a scalar, or a whole object tree.
///
/// `Str` is a scalar string (a concurrent write replaces it whole); `Text` is a collaborative
/// text object whose concurrent edits merge character by character.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Value {
    /// Null.
    Null,
    /// A boolean.
    Bool {
        /// The value.
        value: bool,
    },
    /// A signed integer.
    Int {
        /// The value.
        value: i64,
    },
    /// An unsigned integer above the signed range (only ever read, from other writers).
    Uint {
        /// The value.
        value: u64,
    },
    /// A 64-bit float.
    Float {
        /// The value.
        value: f64,
    },
    /// A scalar string.
    Str {
        /// The value.
        value: String,
    },
    /// Raw bytes.
    Bytes {
        /// The value.
        value: Vec<u8>,
    },
    /// A counter: concurrent increments add up.
    Counter {
        /// The current total.
        value: i64,
    },
    /// Milliseconds since the Unix epoch.
    Timestamp {
        /// The value.
        value: i64,
    },
    /// A collaborative text object.
    Text {
        /// Its content.
        value: String,
    },
    /// A list object (named as in JSON, to clash with no host language's own `List`).
    Array {
        /// Its elements.
        items: Vec<Value>,
    },
    /// A map object (named as in JSON, to clash with no host language's own `Map`).
    Object {
        /// Its entries.
        entries: HashMap<String, Value>,
    },
}

impl From<syncline::Value> for Value {
    fn from(value: syncline::Value) -> Self {
        match value {
            syncline::Value::Null => Self::Null,
            syncline::Value::Bool(value) => Self::Bool { value },
            syncline::Value::Int(value) => Self::Int { value },
            syncline::Value::Uint(value) => Self::Uint { value },
            syncline::Value::F64(value) => Self::Float { value },
            syncline::Value::Str(value) => Self::Str { value },
            syncline::Value::Bytes(value) => Self::Bytes { value },
            syncline::Value::Counter(value) => Self::Counter { value },
            syncline::Value::Timestamp(value) => Self::Timestamp { value },
            syncline::Value::Text(value) => Self::Text { value },
            syncline::Value::List(items) => Self::Array {
                items: items.into_iter().map(Self::from).collect(),
            },
            syncline::Value::Map(entries) => Self::Object {
                entries: entries.into_iter().map(|(k, v)| (k, v.into())).collect(),
            },
        }
    }
}

impl From<Value> for syncline::Value {
    fn from(value: Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool { value } => Self::Bool(value),
            Value::Int { value } => Self::Int(value),
            Value::Uint { value } => Self::Uint(value),
            Value::Float { value } => Self::F64(value),
            Value::Str { value } => Self::Str(value),
            Value::Bytes { value } => Self::Bytes(value),
            Value::Counter { value } => Self::Counter(value),
            Value::Timestamp { value } => Self::Timestamp(value),
            Value::Text { value } => Self::Text(value),
            Value::Array { items } => Self::List(items.into_iter().map(Self::from).collect()),
            Value::Object { entries } => {
                Self::Map(entries.into_iter().map(|(k, v)| (k, v.into())).collect())
            }
        }
    }
}

/// One operation of [`crate::FfiDocument::apply`]; paths are JSON Pointers (`/items/0/title`).
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum WriteOp {
    /// Sets the value at `path`.
    Put {
        /// Where.
        path: String,
        /// What.
        value: Value,
    },
    /// Inserts into a list; `path` ends with the index.
    Insert {
        /// Where.
        path: String,
        /// What.
        value: Value,
    },
    /// Appends to the list at `list`.
    Push {
        /// The list.
        list: String,
        /// What.
        value: Value,
    },
    /// Removes the value at `path`.
    Delete {
        /// Where.
        path: String,
    },
    /// Edits the text object at `path`.
    SpliceText {
        /// The text object.
        path: String,
        /// Where, in Unicode code points.
        index: u64,
        /// How many code points to remove.
        delete: u64,
        /// What to insert.
        insert: String,
    },
    /// Adds `by` to the counter at `path`.
    Increment {
        /// The counter.
        path: String,
        /// By how much (may be negative).
        by: i64,
    },
}

impl TryFrom<WriteOp> for syncline::WriteOp {
    type Error = FfiError;

    fn try_from(op: WriteOp) -> Result<Self, FfiError> {
        let path = |p: String| p.parse::<syncline::Path>().map_err(FfiError::from);
        Ok(match op {
            WriteOp::Put { path: p, value } => Self::Put {
                path: path(p)?,
                value: value.into(),
            },
            WriteOp::Insert { path: p, value } => Self::Insert {
                path: path(p)?,
                value: value.into(),
            },
            WriteOp::Push { list, value } => Self::Push {
                list: path(list)?,
                value: value.into(),
            },
            WriteOp::Delete { path: p } => Self::Delete { path: path(p)? },
            WriteOp::SpliceText {
                path: p,
                index,
                delete,
                insert,
            } => Self::SpliceText {
                path: path(p)?,
                index: to_usize(index)?,
                delete: to_usize(delete)?,
                insert,
            },
            WriteOp::Increment { path: p, by } => Self::Increment { path: path(p)?, by },
        })
    }
}

/// A position that must fit the platform's `usize`.
pub(crate) fn to_usize(n: u64) -> Result<usize, FfiError> {
    usize::try_from(n).map_err(|_| FfiError::InvalidInput(format!("{n} is out of range")))
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// One durable change to one document, as listeners receive it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ChangeEvent {
    /// The document, as `collection/id`.
    pub doc: String,
    /// True when the change came from another device.
    pub remote: bool,
    /// The document's heads after the change (hex change hashes).
    pub heads: Vec<String>,
    /// True if the document is now deleted.
    pub deleted: bool,
    /// What changed, against the previous state.
    pub patches: Vec<Patch>,
    /// The devices (32 hex digits each) whose changes this event brings: this store's own for
    /// a local write, the authors for a remote merge.
    pub devices: Vec<String>,
    /// The document's conflicts after this change (empty when it has none).
    pub conflicts: Vec<crate::Conflict>,
}

impl From<&syncline::ChangeEvent> for ChangeEvent {
    fn from(event: &syncline::ChangeEvent) -> Self {
        Self {
            doc: event.doc_id.to_string(),
            remote: event.origin == syncline::ChangeOrigin::Remote,
            heads: heads_to_strings(&event.heads),
            deleted: event.deleted,
            patches: event.patches.iter().map(Patch::from).collect(),
            devices: event.devices.iter().map(ToString::to_string).collect(),
            conflicts: event.conflicts.iter().map(Into::into).collect(),
        }
    }
}

/// One change to a document's visible state: the object at `path` and what happened to it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Patch {
    /// The object that changed, as a JSON Pointer (`""` for the root).
    pub path: String,
    /// What happened.
    pub action: PatchAction,
}

/// The kinds of [`Patch`]; new objects appear as empty values, then patches fill them.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum PatchAction {
    /// A map key was set.
    PutMap {
        /// The key.
        key: String,
        /// Its new (winning) value.
        value: Value,
        /// True if concurrent values remain.
        conflict: bool,
    },
    /// A list element was replaced.
    PutSeq {
        /// Its index.
        index: u64,
        /// Its new (winning) value.
        value: Value,
        /// True if concurrent values remain.
        conflict: bool,
    },
    /// Elements were inserted into a list.
    Insert {
        /// Where the first one went.
        index: u64,
        /// The inserted values.
        values: Vec<Value>,
    },
    /// Text was inserted into a text object.
    SpliceText {
        /// Where, in code points.
        index: u64,
        /// The inserted text.
        text: String,
    },
    /// A counter changed.
    Increment {
        /// The counter's key or index.
        prop: String,
        /// By how much.
        by: i64,
    },
    /// A concurrent value appeared at a key or index.
    Conflict {
        /// The key or index.
        prop: String,
    },
    /// A map key was removed.
    DeleteMap {
        /// The key.
        key: String,
    },
    /// Elements were removed from a list or text.
    DeleteSeq {
        /// The first removed index.
        index: u64,
        /// How many.
        length: u64,
    },
}

fn segment(prop: &Segment) -> String {
    match prop {
        Segment::Key(key) => key.clone(),
        Segment::Index(index) => index.to_string(),
    }
}

impl From<&syncline::Patch> for Patch {
    fn from(patch: &syncline::Patch) -> Self {
        let action = match &patch.action {
            syncline::PatchAction::PutMap {
                key,
                value,
                conflict,
            } => PatchAction::PutMap {
                key: key.clone(),
                value: value.clone().into(),
                conflict: *conflict,
            },
            syncline::PatchAction::PutSeq {
                index,
                value,
                conflict,
            } => PatchAction::PutSeq {
                index: to_u64(*index),
                value: value.clone().into(),
                conflict: *conflict,
            },
            syncline::PatchAction::Insert { index, values } => PatchAction::Insert {
                index: to_u64(*index),
                values: values.iter().cloned().map(Value::from).collect(),
            },
            syncline::PatchAction::SpliceText { index, text } => PatchAction::SpliceText {
                index: to_u64(*index),
                text: text.clone(),
            },
            syncline::PatchAction::Increment { prop, by } => PatchAction::Increment {
                prop: segment(prop),
                by: *by,
            },
            syncline::PatchAction::Conflict { prop } => PatchAction::Conflict {
                prop: segment(prop),
            },
            syncline::PatchAction::DeleteMap { key } => PatchAction::DeleteMap { key: key.clone() },
            syncline::PatchAction::DeleteSeq { index, length } => PatchAction::DeleteSeq {
                index: to_u64(*index),
                length: to_u64(*length),
            },
        };
        Self {
            path: patch.path.to_string(),
            action,
        }
    }
}

/// One change in a document's history.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Change {
    /// The change's hash (hex).
    pub hash: String,
    /// The device that made it (hex), when its author is a Syncline device.
    pub device: Option<String>,
    /// The Automerge actor id (hex).
    pub actor: String,
    /// Its sequence number among the actor's changes.
    pub seq: u64,
    /// When it was made, in seconds since the Unix epoch (the author's clock).
    pub time: i64,
    /// The commit message, if any.
    pub message: Option<String>,
    /// The hashes of the changes it depends on.
    pub deps: Vec<String>,
}

impl From<ChangeInfo> for Change {
    fn from(info: ChangeInfo) -> Self {
        Self {
            hash: info.hash.to_string(),
            device: info.device.map(|d| d.to_string()),
            actor: info.actor,
            seq: info.seq,
            time: info.time,
            message: info.message,
            deps: info.deps.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A change no relay has acknowledged yet (the SDK's `PendingChange`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PendingChange {
    /// The document it belongs to (`collection/id`).
    pub doc: String,
    /// The change.
    pub change: Change,
}

impl From<syncline::PendingChange> for PendingChange {
    fn from(p: syncline::PendingChange) -> Self {
        Self {
            doc: p.doc_id.to_string(),
            change: p.change.into(),
        }
    }
}

/// Heads as hex strings, in the SDK's canonical order.
pub(crate) fn heads_to_strings(heads: &Heads) -> Vec<String> {
    heads.as_slice().iter().map(ToString::to_string).collect()
}

/// Heads from hex strings.
pub(crate) fn heads_from_strings(heads: &[String]) -> Result<Heads, FfiError> {
    Ok(heads.join(",").parse::<Heads>()?)
}
