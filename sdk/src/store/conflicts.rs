//! Conflicts: concurrent values a merge left at one path of a document, found by walking the
//! document's maps and lists, and the strategies that resolve them the same way on every
//! device (see [`crate::Store::set_conflict_strategy`]).
//!
//! Concurrent values that are all equal are not a conflict: two devices that resolve one
//! conflict the same way at once write equal values, and that is the end of it. This is what
//! makes a deterministic strategy converge.

use std::collections::HashMap;
use std::sync::Arc;

use automerge::{
    ActorId, Automerge, ChangeHash, ObjId, ObjType, Prop, ROOT, ReadDoc, Value as AmValue,
};
use syncline_protocol::{DeviceId, DocId};

use super::model::{TOMBSTONE_KEY, hydrate};
use crate::{Path, Value};

/// Most conflicts one document reports (the walk stops there).
pub const MAX_CONFLICTS_LISTED: usize = 1000;

/// Concurrent values at one path of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The document.
    pub doc_id: DocId,
    /// Where.
    pub path: Path,
    /// The values, in Automerge's order (the same on every device): the last is the one reads
    /// return.
    pub values: Vec<ConflictValue>,
}

/// One of a conflict's values, with who wrote it and when.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictValue {
    /// The value (objects read in full).
    pub value: Value,
    /// The device that wrote it, when its actor is a Syncline device.
    pub device: Option<DeviceId>,
    /// When, by its author's clock (seconds since the Unix epoch, as Automerge stamps changes).
    pub time: i64,
    /// True if the value is an object (a map, list or text) rather than a scalar.
    pub object: bool,
}

/// How a collection's conflicts are resolved as soon as a merge leaves them; every device
/// must run the same strategy for a collection. A resolution is an ordinary local change
/// (message `resolve conflict (STRATEGY)`), so it syncs and shows in history. Strategies
/// resolve conflicts between scalar values; a conflict involving an object (two devices
/// created a map at the same key) is reported, and left to the app.
#[derive(Clone)]
pub enum ConflictStrategy {
    /// The value whose change is the latest by its author's clock wins (ties: Automerge's
    /// order).
    LastWriterWins,
    /// The value written by the device listed first wins; devices not listed rank after every
    /// listed one; ties by [`ConflictStrategy::LastWriterWins`].
    DevicePriority(Vec<DeviceId>),
    /// The app's function picks the value to keep. It must be deterministic (a function of the
    /// conflict alone), or devices could resolve one conflict differently for ever.
    Custom(Arc<dyn Fn(&Conflict) -> Value + Send + Sync>),
}

impl std::fmt::Debug for ConflictStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl ConflictStrategy {
    /// Its name, as resolution messages carry it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::LastWriterWins => "last writer wins",
            Self::DevicePriority(_) => "device priority",
            Self::Custom(_) => "custom",
        }
    }

    /// The value to keep.
    pub(crate) fn choose(&self, conflict: &Conflict) -> Value {
        let latest = |values: &[(usize, &ConflictValue)]| {
            values
                .iter()
                .max_by_key(|(i, v)| (v.time, *i))
                .map(|(_, v)| v.value.clone())
                .unwrap_or(Value::Null)
        };
        let indexed: Vec<(usize, &ConflictValue)> = conflict.values.iter().enumerate().collect();
        match self {
            Self::LastWriterWins => latest(&indexed),
            Self::DevicePriority(order) => {
                let rank = |v: &ConflictValue| {
                    v.device
                        .and_then(|d| order.iter().position(|o| *o == d))
                        .unwrap_or(order.len())
                };
                let best = indexed.iter().map(|(_, v)| rank(v)).min().unwrap_or(0);
                let first: Vec<(usize, &ConflictValue)> = indexed
                    .into_iter()
                    .filter(|(_, v)| rank(v) == best)
                    .collect();
                latest(&first)
            }
            Self::Custom(f) => f(conflict),
        }
    }
}

/// Whether the changes after `before` could have left a conflict: only a merge can, so a
/// document whose history since `before` is one line ending in one head cannot have a new one.
pub(crate) fn may_have_new(doc: &Automerge, before: &[ChangeHash]) -> bool {
    doc.get_heads().len() > 1
        || doc
            .get_changes_meta(before)
            .iter()
            .any(|m| m.deps.len() > 1)
}

/// The document's conflicts (at most [`MAX_CONFLICTS_LISTED`]), in path order.
pub(crate) fn find(doc: &Automerge, doc_id: &DocId) -> Vec<Conflict> {
    let mut walk = Walk {
        doc,
        doc_id,
        found: Vec::new(),
        times: None,
    };
    walk.object(&ROOT, ObjType::Map, &Path::root());
    walk.found
}

/// Per actor, each change's op range and time (first op, last op, seconds).
type ChangeTimes = HashMap<ActorId, Vec<(u64, u64, i64)>>;

struct Walk<'a> {
    doc: &'a Automerge,
    doc_id: &'a DocId,
    found: Vec<Conflict>,
    /// Per actor, each change's op range and time (built at the first conflict).
    times: Option<ChangeTimes>,
}

impl Walk<'_> {
    fn object(&mut self, obj: &ObjId, kind: ObjType, path: &Path) {
        match kind {
            ObjType::Map | ObjType::Table => {
                let keys: Vec<String> = self.doc.keys(obj).collect();
                for key in keys {
                    if *obj == ROOT && key == TOMBSTONE_KEY {
                        continue;
                    }
                    let at = path.clone().key(key.clone());
                    self.prop(obj, Prop::Map(key), at);
                }
            }
            ObjType::List => {
                for index in 0..self.doc.length(obj) {
                    let at = path.clone().index(index);
                    self.prop(obj, Prop::Seq(index), at);
                }
            }
            // Concurrent edits of text merge character by character: nothing to resolve.
            ObjType::Text => {}
        }
    }

    fn prop(&mut self, obj: &ObjId, prop: Prop, path: Path) {
        if self.found.len() >= MAX_CONFLICTS_LISTED {
            return;
        }
        let Ok(all) = self.doc.get_all(obj, prop) else {
            return;
        };
        if all.len() > 1 {
            let values: Vec<ConflictValue> = all
                .iter()
                .map(|(value, id)| ConflictValue {
                    value: hydrate(self.doc, None, value.clone(), id),
                    device: match id {
                        ObjId::Id(_, actor, _) => DeviceId::try_from_slice(actor.to_bytes()).ok(),
                        ObjId::Root => None,
                    },
                    time: self.time_of(id),
                    object: matches!(value, AmValue::Object(_)),
                })
                .collect();
            if values.iter().any(|v| v.value != values[0].value) {
                self.found.push(Conflict {
                    doc_id: self.doc_id.clone(),
                    path: path.clone(),
                    values,
                });
            }
        }
        // Below the value reads return: the one the app sees and edits.
        if let Some((AmValue::Object(kind), id)) = all.last().cloned() {
            self.object(&id, kind, &path);
        }
    }

    /// The time of the change that made op `id`.
    fn time_of(&mut self, id: &ObjId) -> i64 {
        let ObjId::Id(counter, actor, _) = id else {
            return 0;
        };
        let doc = self.doc;
        let times = self.times.get_or_insert_with(|| {
            let mut times = ChangeTimes::new();
            for meta in doc.get_changes_meta(&[]) {
                times
                    .entry(meta.actor.clone().into_owned())
                    .or_default()
                    .push((meta.start_op, meta.max_op, meta.timestamp));
            }
            times
        });
        times
            .get(actor)
            .and_then(|changes| {
                changes
                    .iter()
                    .find(|(start, max, _)| (*start..=*max).contains(counter))
            })
            .map_or(0, |(_, _, time)| *time)
    }
}
