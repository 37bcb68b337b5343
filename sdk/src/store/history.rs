//! History records: one change's metadata, and a change still waiting for a relay.

use automerge::{ChangeHash, ChangeMetadata};
use syncline_protocol::{DeviceId, DocId};

/// One change in a document's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeInfo {
    /// The change's hash.
    pub hash: ChangeHash,
    /// The device that made it, when its actor id is a Syncline device id (16 bytes).
    pub device: Option<DeviceId>,
    /// The Automerge actor id, in hex.
    pub actor: String,
    /// The change's sequence number among its actor's changes.
    pub seq: u64,
    /// When it was made, in seconds since the Unix epoch (the author's clock).
    pub time: i64,
    /// The commit message, if any.
    pub message: Option<String>,
    /// The changes it depends on.
    pub deps: Vec<ChangeHash>,
}

impl ChangeInfo {
    pub(crate) fn from_meta(meta: &ChangeMetadata<'_>) -> Self {
        Self {
            hash: meta.hash,
            device: DeviceId::try_from_slice(meta.actor.to_bytes()).ok(),
            actor: meta.actor.to_hex_string(),
            seq: meta.seq,
            time: meta.timestamp,
            message: meta.message.as_ref().map(|m| m.to_string()),
            deps: meta.deps.clone(),
        }
    }

    pub(crate) fn from_change(change: &automerge::Change) -> Self {
        Self {
            hash: change.hash(),
            device: DeviceId::try_from_slice(change.actor_id().to_bytes()).ok(),
            actor: change.actor_id().to_hex_string(),
            seq: change.seq(),
            time: change.timestamp(),
            message: change.message().map(str::to_owned),
            deps: change.deps().to_vec(),
        }
    }
}

/// A change no relay has acknowledged yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    /// The document it belongs to.
    pub doc_id: DocId,
    /// The change.
    pub change: ChangeInfo,
}
