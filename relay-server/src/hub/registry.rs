//! The device registry: each session's device is registered with its capability profile and
//! subscription (`register`, on `Hello` and on changes of either), and its activity (last
//! seen, last sync, what is deferred for it) is written once, when it disconnects, rather than
//! fsynced per round trip. Changes are coalesced: a session's record is written at most once
//! per [`REGISTRY_WRITE_INTERVAL_MS`] (the latest state, on its next action after the interval,
//! and at disconnect), so a client changing its profile thousands of times a second costs
//! one durable write a second.

use super::{Hub, HubError, Peer, SessionId};
use crate::storage::{DEFERRED_LISTED, Deferred, DeferredEntry, DeviceRecord, Storage};

/// Least time between two registry writes of one session.
pub const REGISTRY_WRITE_INTERVAL_MS: u64 = 1_000;

impl<S: Storage> Hub<S> {
    /// Session `id`'s profile or subscription changed: written now, or (within
    /// [`REGISTRY_WRITE_INTERVAL_MS`] of the last write) on a later action or at disconnect.
    pub(super) fn register(&mut self, id: SessionId, now_ms: u64) -> Result<(), HubError> {
        let peer = self.peer_mut(id);
        if peer
            .registered_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < REGISTRY_WRITE_INTERVAL_MS)
        {
            peer.registry_dirty = true;
            return Ok(());
        }
        self.write_registry(id, now_ms)
    }

    /// Writes session `id`'s record if a change of it waits and the interval has passed.
    pub(super) fn flush_registry(&mut self, id: SessionId, now_ms: u64) -> Result<(), HubError> {
        let peer = &self.peers[&id];
        if peer.registry_dirty
            && peer
                .registered_ms
                .is_none_or(|at| now_ms.saturating_sub(at) >= REGISTRY_WRITE_INTERVAL_MS)
        {
            self.write_registry(id, now_ms)?;
        }
        Ok(())
    }

    fn write_registry(&mut self, id: SessionId, now_ms: u64) -> Result<(), HubError> {
        let peer = self.peer_mut(id);
        peer.registered_ms = Some(now_ms);
        peer.registry_dirty = false;
        self.register_peer(&self.peers[&id], now_ms)
    }

    /// Writes a device's registry record: profile, subscription, what is deferred for it.
    fn register_peer(&self, peer: &Peer, now_ms: u64) -> Result<(), HubError> {
        let Some(profile) = peer.profile.clone() else {
            return Ok(());
        };
        let record = DeviceRecord {
            device: peer.identity.device,
            user: peer.identity.user.clone(),
            profile,
            subscriptions: peer.subscriptions.clone(),
            first_seen_ms: peer.first_seen_ms,
            last_seen_ms: now_ms,
            last_sync_ms: None,
            deferred: Deferred {
                docs: peer.deferred.len() as u64,
                bytes: peer.deferred.values().map(|e| e.bytes).sum(),
                list: listed(peer),
            },
        };
        self.spare(
            "registering a device",
            self.storage.register_device(&peer.tenant, &record),
        )
    }

    /// Records a departing device's activity: last seen now, what stays deferred for it, and
    /// its last complete sync.
    pub(super) fn record_activity(&self, peer: &Peer, now_ms: u64) -> Result<(), HubError> {
        self.register_peer(peer, now_ms)?;
        let device = peer.identity.device;
        self.spare(
            "recording activity",
            self.storage
                .touch_device(&peer.tenant, &device, now_ms, false),
        )?;
        if let Some(synced) = peer.last_sync_ms {
            self.spare(
                "recording a sync",
                self.storage
                    .touch_device(&peer.tenant, &device, synced, true),
            )?;
        }
        Ok(())
    }
}

/// What is deferred for a device, for the registry: highest priority first, at most
/// [`DEFERRED_LISTED`]; documents held back for a reason the protocol does not name are left out.
fn listed(peer: &Peer) -> Vec<DeferredEntry> {
    let mut list: Vec<DeferredEntry> = peer
        .deferred
        .values()
        .filter_map(|e| {
            Some(DeferredEntry {
                doc: e.doc.clone(),
                priority: e.priority,
                bytes: e.bytes,
                reason: e.reason?,
            })
        })
        .collect();
    list.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.doc.cmp(&b.doc)));
    list.truncate(DEFERRED_LISTED);
    list
}
