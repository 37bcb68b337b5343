//! Conflicts across the FFI: what a merge left ([`Conflict`]), the listener that hears
//! them, and the strategies that resolve them ([`ConflictStrategy`], or the app's own
//! [`FfiConflictResolver`]).

use std::sync::Arc;

use syncline::DeviceId;

use crate::{FfiError, Value};

/// Concurrent values a merge left at one path of a document.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Conflict {
    /// The document, as `collection/id`.
    pub doc: String,
    /// The path, as `/a/0/b`.
    pub path: String,
    /// The values, in the same order on every device (the last is the one reads return).
    pub values: Vec<ConflictValue>,
}

/// One of a conflict's values, with who wrote it and when.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ConflictValue {
    /// The value.
    pub value: Value,
    /// The device that wrote it (32 hex digits), when known.
    pub device: Option<String>,
    /// When, by its author's clock (seconds since the Unix epoch).
    pub time: i64,
    /// True for an object (map, list, text): strategies leave those to the app.
    pub object: bool,
}

impl From<&syncline::Conflict> for Conflict {
    fn from(c: &syncline::Conflict) -> Self {
        Self {
            doc: c.doc_id.to_string(),
            path: c.path.to_string(),
            values: c
                .values
                .iter()
                .map(|v| ConflictValue {
                    value: v.value.clone().into(),
                    device: v.device.map(|d| d.to_string()),
                    time: v.time,
                    object: v.object,
                })
                .collect(),
        }
    }
}

/// How a collection's conflicts are resolved (every device must run the same).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ConflictStrategy {
    /// The value written last by its author's clock wins.
    LastWriterWins,
    /// The value written by the device listed first wins (32 hex digits each); ties and
    /// unlisted devices by last writer.
    DevicePriority {
        /// Devices, highest priority first.
        devices: Vec<String>,
    },
}

impl TryFrom<ConflictStrategy> for syncline::ConflictStrategy {
    type Error = FfiError;

    fn try_from(s: ConflictStrategy) -> Result<Self, FfiError> {
        Ok(match s {
            ConflictStrategy::LastWriterWins => Self::LastWriterWins,
            ConflictStrategy::DevicePriority { devices } => Self::DevicePriority(
                devices
                    .iter()
                    .map(|d| {
                        d.parse::<DeviceId>()
                            .map_err(|e| FfiError::InvalidInput(format!("device {d:?}: {e}")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// The app's own resolution: called on the thread that merged, it returns the value to keep.
/// It must be deterministic (a function of the conflict alone), or devices could resolve one
/// conflict differently for ever.
#[uniffi::export(with_foreign)]
pub trait FfiConflictResolver: Send + Sync {
    /// The value to keep at the conflict's path.
    fn resolve(&self, conflict: Conflict) -> Value;
}

/// Told of each conflict a change leaves.
#[uniffi::export(with_foreign)]
pub trait FfiConflictListener: Send + Sync {
    /// One conflict (after every change to a conflicted document, each of its conflicts).
    fn on_conflict(&self, conflict: Conflict);
}

/// The app's resolver as a strategy. A resolver that throws keeps the value reads return.
pub(crate) fn custom(resolver: Arc<dyn FfiConflictResolver>) -> syncline::ConflictStrategy {
    syncline::ConflictStrategy::Custom(Arc::new(move |conflict: &syncline::Conflict| {
        let call = std::panic::AssertUnwindSafe(|| resolver.resolve(conflict.into()));
        match std::panic::catch_unwind(call) {
            Ok(value) => value.into(),
            Err(_) => {
                eprintln!("syncline: a conflict resolver threw; keeping the visible value");
                conflict
                    .values
                    .last()
                    .map(|v| v.value.clone())
                    .unwrap_or(syncline::Value::Null)
            }
        }
    }))
}

/// Forwards conflicts to a foreign listener.
pub(crate) fn forward_conflicts(
    listener: Arc<dyn FfiConflictListener>,
) -> impl Fn(&syncline::Conflict) + Send + Sync + 'static {
    move |conflict| {
        crate::call_foreign("a conflict listener", || {
            listener.on_conflict(conflict.into())
        });
    }
}
