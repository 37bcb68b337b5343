//! `Value`: the SDK's owned view of what a document holds, and its JSON mapping.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// A value read from or written to a document: a scalar, or a whole object tree.
///
/// Writing `Str` stores a scalar string (last writer wins as a whole); writing `Text` creates a
/// collaborative text object whose concurrent edits merge character by character.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer (only produced for integers above `i64::MAX`).
    Uint(u64),
    /// A 64-bit float.
    F64(f64),
    /// A scalar string.
    Str(String),
    /// Raw bytes (JSON: base64).
    Bytes(Vec<u8>),
    /// A counter: concurrent increments add up.
    Counter(i64),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    /// A collaborative text object.
    Text(String),
    /// A list object.
    List(Vec<Value>),
    /// A map object.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// The name of this value's type, as used in [`crate::Error::TypeMismatch`].
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Uint(_) => "uint",
            Self::F64(_) => "float",
            Self::Str(_) => "string",
            Self::Bytes(_) => "bytes",
            Self::Counter(_) => "counter",
            Self::Timestamp(_) => "timestamp",
            Self::Text(_) => "text",
            Self::List(_) => "list",
            Self::Map(_) => "map",
        }
    }

    /// Converts to JSON: text and strings become strings, counters and timestamps numbers,
    /// bytes base64 strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Self::Null => J::Null,
            Self::Bool(b) => J::Bool(*b),
            Self::Int(n) | Self::Counter(n) | Self::Timestamp(n) => J::from(*n),
            Self::Uint(n) => J::from(*n),
            Self::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Self::Str(s) | Self::Text(s) => J::String(s.clone()),
            Self::Bytes(b) => J::String(BASE64.encode(b)),
            Self::List(items) => J::Array(items.iter().map(Self::to_json).collect()),
            Self::Map(map) => {
                J::Object(map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// Converts from JSON: objects become maps, arrays lists, strings scalar strings, numbers
    /// `Int`, `Uint` or `F64`.
    pub fn from_json(json: &serde_json::Value) -> Self {
        use serde_json::Value as J;
        match json {
            J::Null => Self::Null,
            J::Bool(b) => Self::Bool(*b),
            J::Number(n) => n
                .as_i64()
                .map(Self::Int)
                .or_else(|| n.as_u64().map(Self::Uint))
                .unwrap_or_else(|| Self::F64(n.as_f64().unwrap_or(f64::NAN))),
            J::String(s) => Self::Str(s.clone()),
            J::Array(items) => Self::List(items.iter().map(Self::from_json).collect()),
            J::Object(map) => Self::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), Self::from_json(v)))
                    .collect(),
            ),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Self::$variant(v.into())
            }
        })*
    };
}

value_from!(bool => Bool, i64 => Int, i32 => Int, u32 => Int, f64 => F64, String => Str, &str => Str, Vec<u8> => Bytes);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_plain_values() {
        let json = serde_json::json!({"a": [1, -2, 1.5, "x", null, true], "b": {"c": u64::MAX}});
        assert_eq!(Value::from_json(&json).to_json(), json);
    }

    #[test]
    fn special_values_map_to_json() {
        assert_eq!(
            Value::Bytes(vec![1, 2, 3]).to_json(),
            serde_json::json!("AQID")
        );
        assert_eq!(Value::Counter(3).to_json(), serde_json::json!(3));
        assert_eq!(Value::Text("hi".into()).to_json(), serde_json::json!("hi"));
        assert_eq!(Value::F64(f64::NAN).to_json(), serde_json::Value::Null);
    }
}
