//! Reading and writing Automerge documents by [`Path`] and [`Value`], and converting
//! Automerge patches into the SDK's [`Patch`].
//!
//! Every document's root map may hold one reserved key, [`TOMBSTONE_KEY`]: set to `true` by
//! [`crate::Store::delete`], it is how a deletion travels to other devices as an ordinary
//! Automerge change. Reads hide it and writes refuse it.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{ChangeHash, ObjId, ObjType, Prop, ROOT, ReadDoc, ScalarValue, Value as AmValue};

use crate::{Error, Path, Result, Segment, Value};

/// The root key whose value `true` marks a deleted document.
pub(crate) const TOMBSTONE_KEY: &str = "_syncline_deleted";

/// Where a path leads in a document.
pub(crate) enum Located {
    /// The path is the root.
    Root,
    /// An intermediate object does not exist.
    Missing,
    /// The value (if any) lives at `prop` of `obj`.
    At { obj: ObjId, prop: Prop },
}

/// True when the document carries a deletion tombstone.
pub(crate) fn is_tombstoned(doc: &impl ReadDoc) -> bool {
    matches!(
        doc.get(ROOT, TOMBSTONE_KEY),
        Ok(Some((AmValue::Scalar(s), _))) if matches!(s.as_ref(), ScalarValue::Boolean(true))
    )
}

/// Resolves `path` for reading, at `heads` or at the current state.
pub(crate) fn locate(
    doc: &impl ReadDoc,
    heads: Option<&[ChangeHash]>,
    path: &Path,
) -> Result<Located> {
    let Some((parent, last)) = path.split_last() else {
        return Ok(Located::Root);
    };
    let mut obj = ROOT;
    for seg in parent.segments() {
        let prop = prop_for(doc, &obj, seg, path)?;
        match get(doc, heads, &obj, prop)? {
            Some((AmValue::Object(_), child)) => obj = child,
            Some((AmValue::Scalar(s), _)) => {
                return Err(Error::TypeMismatch {
                    path: path.to_string(),
                    expected: "map or list",
                    found: scalar_to_value(s.as_ref()).type_name(),
                });
            }
            None => return Ok(Located::Missing),
        }
    }
    let prop = prop_for(doc, &obj, last, path)?;
    Ok(Located::At { obj, prop })
}

/// Resolves `path` for writing: missing intermediate map entries are created as maps, and the
/// reserved tombstone key is refused.
pub(crate) fn locate_for_write(tx: &mut impl Transactable, path: &Path) -> Result<(ObjId, Prop)> {
    let Some((parent, last)) = path.split_last() else {
        return Err(invalid(
            path,
            "the document root cannot be replaced; write to a key",
        ));
    };
    if parent.is_root() && last.as_key() == TOMBSTONE_KEY {
        return Err(invalid(path, "this key is reserved by Syncline"));
    }
    let mut obj = ROOT;
    for seg in parent.segments() {
        let prop = prop_for(tx, &obj, seg, path)?;
        obj = match tx.get(&obj, prop.clone())? {
            Some((AmValue::Object(_), child)) => child,
            Some((AmValue::Scalar(s), _)) => {
                return Err(Error::TypeMismatch {
                    path: path.to_string(),
                    expected: "map or list",
                    found: scalar_to_value(s.as_ref()).type_name(),
                });
            }
            None => match prop {
                Prop::Map(key) => tx.put_object(&obj, key, ObjType::Map)?,
                Prop::Seq(index) => {
                    return Err(invalid(path, &format!("no list element at index {index}")));
                }
            },
        };
    }
    let prop = prop_for(tx, &obj, last, path)?;
    Ok((obj, prop))
}

/// The value at `path`, hydrated (objects read in full), or `None` if nothing is there.
pub(crate) fn read(
    doc: &impl ReadDoc,
    heads: Option<&[ChangeHash]>,
    path: &Path,
) -> Result<Option<Value>> {
    match locate(doc, heads, path)? {
        Located::Root => Ok(Some(hydrate(
            doc,
            heads,
            AmValue::Object(ObjType::Map),
            &ROOT,
        ))),
        Located::Missing => Ok(None),
        Located::At { obj, prop } => {
            Ok(get(doc, heads, &obj, prop)?.map(|(value, id)| hydrate(doc, heads, value, &id)))
        }
    }
}

/// Every concurrent value at `path` (more than one means a conflict), winner first.
pub(crate) fn read_all(doc: &impl ReadDoc, path: &Path) -> Result<Vec<Value>> {
    match locate(doc, None, path)? {
        Located::Root => Ok(vec![hydrate(
            doc,
            None,
            AmValue::Object(ObjType::Map),
            &ROOT,
        )]),
        Located::Missing => Ok(Vec::new()),
        Located::At { obj, prop } => {
            let mut all: Vec<Value> = doc
                .get_all(&obj, prop.clone())?
                .into_iter()
                .map(|(value, id)| hydrate(doc, None, value, &id))
                .collect();
            // get_all lists values in op order; put the value reads return first.
            if let Some((winner, id)) = doc.get(&obj, prop)? {
                let winner = hydrate(doc, None, winner, &id);
                if let Some(pos) = all.iter().position(|v| *v == winner) {
                    all.swap(0, pos);
                }
            }
            Ok(all)
        }
    }
}

/// Writes `value` at `prop` of `obj`: a put, or an insert when `insert` is set (lists only).
pub(crate) fn write_value(
    tx: &mut impl Transactable,
    obj: &ObjId,
    prop: Prop,
    value: &Value,
    insert: bool,
) -> Result<()> {
    let object = match value {
        Value::Map(_) => Some(ObjType::Map),
        Value::List(_) => Some(ObjType::List),
        Value::Text(_) => Some(ObjType::Text),
        _ => None,
    };
    let Some(object) = object else {
        let scalar = value_to_scalar(value);
        match (insert, prop) {
            (true, Prop::Seq(index)) => tx.insert(obj, index, scalar)?,
            (_, prop) => tx.put(obj, prop, scalar)?,
        }
        return Ok(());
    };
    let child = match (insert, prop) {
        (true, Prop::Seq(index)) => tx.insert_object(obj, index, object)?,
        (_, prop) => tx.put_object(obj, prop, object)?,
    };
    match value {
        Value::Map(entries) => {
            for (key, v) in entries {
                write_value(tx, &child, Prop::Map(key.clone()), v, false)?;
            }
        }
        Value::List(items) => {
            for (index, v) in items.iter().enumerate() {
                write_value(tx, &child, Prop::Seq(index), v, true)?;
            }
        }
        Value::Text(text) => tx.splice_text(&child, 0, 0, text)?,
        _ => unreachable!("only objects reach here"),
    }
    Ok(())
}

/// The length of the list or text at `obj`, for index checks.
pub(crate) fn length(doc: &impl ReadDoc, obj: &ObjId) -> usize {
    doc.length(obj)
}

pub(crate) fn invalid(path: &Path, reason: &str) -> Error {
    Error::InvalidPath {
        path: path.to_string(),
        reason: reason.to_owned(),
    }
}

fn prop_for(doc: &impl ReadDoc, obj: &ObjId, seg: &Segment, path: &Path) -> Result<Prop> {
    match doc.object_type(obj)? {
        ObjType::Map | ObjType::Table => Ok(Prop::Map(seg.as_key().into_owned())),
        ObjType::List | ObjType::Text => seg
            .as_index()
            .map(Prop::Seq)
            .ok_or_else(|| invalid(path, &format!("{:?} is not a list index", seg.as_key()))),
    }
}

fn get<'a>(
    doc: &'a impl ReadDoc,
    heads: Option<&[ChangeHash]>,
    obj: &ObjId,
    prop: Prop,
) -> Result<Option<(AmValue<'a>, ObjId)>> {
    Ok(match heads {
        Some(heads) => doc.get_at(obj, prop, heads)?,
        None => doc.get(obj, prop)?,
    })
}

/// Reads a value and, for objects, everything below it.
pub(crate) fn hydrate(
    doc: &impl ReadDoc,
    heads: Option<&[ChangeHash]>,
    value: AmValue<'_>,
    id: &ObjId,
) -> Value {
    match value {
        AmValue::Scalar(s) => scalar_to_value(s.as_ref()),
        AmValue::Object(ObjType::Text) => Value::Text(
            match heads {
                Some(h) => doc.text_at(id, h),
                None => doc.text(id),
            }
            .unwrap_or_default(),
        ),
        AmValue::Object(ObjType::List) => {
            let len = match heads {
                Some(h) => doc.length_at(id, h),
                None => doc.length(id),
            };
            Value::List(
                (0..len)
                    .filter_map(|i| get(doc, heads, id, Prop::Seq(i)).ok().flatten())
                    .map(|(v, child)| hydrate(doc, heads, v, &child))
                    .collect(),
            )
        }
        AmValue::Object(ObjType::Map | ObjType::Table) => {
            let keys: Vec<String> = match heads {
                Some(h) => doc.keys_at(id, h).collect(),
                None => doc.keys(id).collect(),
            };
            let mut map = BTreeMap::new();
            for key in keys {
                if *id == ROOT && key == TOMBSTONE_KEY {
                    continue;
                }
                if let Ok(Some((v, child))) = get(doc, heads, id, Prop::Map(key.clone())) {
                    map.insert(key, hydrate(doc, heads, v, &child));
                }
            }
            Value::Map(map)
        }
    }
}

/// Converts an Automerge scalar into a [`Value`].
pub(crate) fn scalar_to_value(s: &ScalarValue) -> Value {
    match s {
        ScalarValue::Bytes(b) => Value::Bytes(b.clone()),
        ScalarValue::Str(s) => Value::Str(s.to_string()),
        ScalarValue::Int(n) => Value::Int(*n),
        ScalarValue::Uint(n) => Value::Uint(*n),
        ScalarValue::F64(f) => Value::F64(*f),
        ScalarValue::Counter(c) => Value::Counter(i64::from(c)),
        ScalarValue::Timestamp(t) => Value::Timestamp(*t),
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Unknown { bytes, .. } => Value::Bytes(bytes.clone()),
        ScalarValue::Null => Value::Null,
    }
}

fn value_to_scalar(v: &Value) -> ScalarValue {
    match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::Int(n) => ScalarValue::Int(*n),
        Value::Uint(n) => ScalarValue::Uint(*n),
        Value::F64(f) => ScalarValue::F64(*f),
        Value::Str(s) => ScalarValue::Str(s.as_str().into()),
        Value::Bytes(b) => ScalarValue::Bytes(b.clone()),
        Value::Counter(n) => ScalarValue::counter(*n),
        Value::Timestamp(t) => ScalarValue::Timestamp(*t),
        Value::Text(_) | Value::List(_) | Value::Map(_) => {
            unreachable!("objects are written with write_value")
        }
    }
}
