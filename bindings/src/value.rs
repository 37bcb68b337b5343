//! The values that cross the boundary: [`FfiValue`] (the SDK's `Value`), write operations,
//! change events and their patches, history records. Conversions only; no behaviour.

use std::collections::HashMap;

use syncline::{ChangeEvent, ChangeInfo, Heads, Patch, PatchAction, Segment, Value, WriteOp};

use crate::FfiError;

/// A value read from or written to a document: a scalar, or a whole object tree.
///
/// `Str` is a scalar string (a concurrent write replaces it whole); `Text` is a collaborative
/// text object whose concurrent edits merge character by character.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum FfiValue {
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
        items: Vec<FfiValue>,
    },
    /// A map object (named as in JSON, to clash with no host language's own `Map`).
    Object {
        /// Its entries.
        entries: HashMap<String, FfiValue>,
    },
}

impl From<Value> for FfiValue {
    fn from(value: Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(value) => Self::Bool { value },
            Value::Int(value) => Self::Int { value },
            Value::Uint(value) => Self::Uint { value },
            Value::F64(value) => Self::Float { value },
            Value::Str(value) => Self::Str { value },
            Value::Bytes(value) => Self::Bytes { value },
            Value::Counter(value) => Self::Counter { value },
            Value::Timestamp(value) => Self::Timestamp { value },
            Value::Text(value) => Self::Text { value },
            Value::List(items) => Self::Array {
                items: items.into_iter().map(Self::from).collect(),
            },
            Value::Map(entries) => Self::Object {
                entries: entries.into_iter().map(|(k, v)| (k, v.into())).collect(),
            },
        }
    }
}

impl From<FfiValue> for Value {
    fn from(value: FfiValue) -> Self {
        match value {
            FfiValue::Null => Self::Null,
            FfiValue::Bool { value } => Self::Bool(value),
            FfiValue::Int { value } => Self::Int(value),
            FfiValue::Uint { value } => Self::Uint(value),
            FfiValue::Float { value } => Self::F64(value),
            FfiValue::Str { value } => Self::Str(value),
            FfiValue::Bytes { value } => Self::Bytes(value),
            FfiValue::Counter { value } => Self::Counter(value),
            FfiValue::Timestamp { value } => Self::Timestamp(value),
            FfiValue::Text { value } => Self::Text(value),
            FfiValue::Array { items } => Self::List(items.into_iter().map(Self::from).collect()),
            FfiValue::Object { entries } => {
                Self::Map(entries.into_iter().map(|(k, v)| (k, v.into())).collect())
            }
        }
    }
}

/// One operation of [`crate::FfiDocument::apply`]; paths are JSON Pointers (`/items/0/title`).
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum FfiWriteOp {
    /// Sets the value at `path`.
    Put {
        /// Where.
        path: String,
        /// What.
        value: FfiValue,
    },
    /// Inserts into a list; `path` ends with the index.
    Insert {
        /// Where.
        path: String,
        /// What.
        value: FfiValue,
    },
    /// Appends to the list at `list`.
    Push {
        /// The list.
        list: String,
        /// What.
        value: FfiValue,
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

impl TryFrom<FfiWriteOp> for WriteOp {
    type Error = FfiError;

    fn try_from(op: FfiWriteOp) -> Result<Self, FfiError> {
        let path = |p: String| p.parse::<syncline::Path>().map_err(FfiError::from);
        Ok(match op {
            FfiWriteOp::Put { path: p, value } => Self::Put {
                path: path(p)?,
                value: value.into(),
            },
            FfiWriteOp::Insert { path: p, value } => Self::Insert {
                path: path(p)?,
                value: value.into(),
            },
            FfiWriteOp::Push { list, value } => Self::Push {
                list: path(list)?,
                value: value.into(),
            },
            FfiWriteOp::Delete { path: p } => Self::Delete { path: path(p)? },
            FfiWriteOp::SpliceText {
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
            FfiWriteOp::Increment { path: p, by } => Self::Increment { path: path(p)?, by },
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
pub struct FfiChangeEvent {
    /// The document, as `collection/id`.
    pub doc: String,
    /// True when the change came from another device.
    pub remote: bool,
    /// The document's heads after the change (hex change hashes).
    pub heads: Vec<String>,
    /// True if the document is now deleted.
    pub deleted: bool,
    /// What changed, against the previous state.
    pub patches: Vec<FfiPatch>,
    /// The devices (32 hex digits each) whose changes this event brings: this store's own for
    /// a local write, the authors for a remote merge.
    pub devices: Vec<String>,
    /// The document's conflicts after this change (empty when it has none).
    pub conflicts: Vec<crate::FfiConflict>,
}

impl From<&ChangeEvent> for FfiChangeEvent {
    fn from(event: &ChangeEvent) -> Self {
        Self {
            doc: event.doc_id.to_string(),
            remote: event.origin == syncline::ChangeOrigin::Remote,
            heads: heads_to_strings(&event.heads),
            deleted: event.deleted,
            patches: event.patches.iter().map(FfiPatch::from).collect(),
            devices: event.devices.iter().map(ToString::to_string).collect(),
            conflicts: event.conflicts.iter().map(Into::into).collect(),
        }
    }
}

/// One change to a document's visible state: the object at `path` and what happened to it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FfiPatch {
    /// The object that changed, as a JSON Pointer (`""` for the root).
    pub path: String,
    /// What happened.
    pub action: FfiPatchAction,
}

/// The kinds of [`FfiPatch`]; new objects appear as empty values, then patches fill them.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum FfiPatchAction {
    /// A map key was set.
    PutMap {
        /// The key.
        key: String,
        /// Its new (winning) value.
        value: FfiValue,
        /// True if concurrent values remain.
        conflict: bool,
    },
    /// A list element was replaced.
    PutSeq {
        /// Its index.
        index: u64,
        /// Its new (winning) value.
        value: FfiValue,
        /// True if concurrent values remain.
        conflict: bool,
    },
    /// Elements were inserted into a list.
    Insert {
        /// Where the first one went.
        index: u64,
        /// The inserted values.
        values: Vec<FfiValue>,
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

impl From<&Patch> for FfiPatch {
    fn from(patch: &Patch) -> Self {
        let action = match &patch.action {
            PatchAction::PutMap {
                key,
                value,
                conflict,
            } => FfiPatchAction::PutMap {
                key: key.clone(),
                value: value.clone().into(),
                conflict: *conflict,
            },
            PatchAction::PutSeq {
                index,
                value,
                conflict,
            } => FfiPatchAction::PutSeq {
                index: to_u64(*index),
                value: value.clone().into(),
                conflict: *conflict,
            },
            PatchAction::Insert { index, values } => FfiPatchAction::Insert {
                index: to_u64(*index),
                values: values.iter().cloned().map(FfiValue::from).collect(),
            },
            PatchAction::SpliceText { index, text } => FfiPatchAction::SpliceText {
                index: to_u64(*index),
                text: text.clone(),
            },
            PatchAction::Increment { prop, by } => FfiPatchAction::Increment {
                prop: segment(prop),
                by: *by,
            },
            PatchAction::Conflict { prop } => FfiPatchAction::Conflict {
                prop: segment(prop),
            },
            PatchAction::DeleteMap { key } => FfiPatchAction::DeleteMap { key: key.clone() },
            PatchAction::DeleteSeq { index, length } => FfiPatchAction::DeleteSeq {
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
pub struct FfiChange {
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

impl From<ChangeInfo> for FfiChange {
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
pub struct FfiPendingChange {
    /// The document it belongs to (`collection/id`).
    pub doc: String,
    /// The change.
    pub change: FfiChange,
}

impl From<syncline::PendingChange> for FfiPendingChange {
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
