//! Which sessions may want a document's changes, indexed so that fanning a change out costs in
//! proportion to its receivers, not to every connected session.
//!
//! Per tenant: the sessions subscribed to each collection, and the sessions holding a sync
//! state for each document (a device gets a document it fetched or wrote even outside its
//! subscriptions). The index may name more sessions than receive (grants narrowed by a refreshed
//! token, say): the hub's own check of each candidate decides. It never names fewer.

use std::collections::HashMap;

use syncline_protocol::messages::CollectionSubscription;
use syncline_protocol::{Collection, DocId};

use super::SessionId;
use crate::tenant::Tenant;

/// The index; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct Watchers {
    tenants: HashMap<Tenant, TenantWatchers>,
}

#[derive(Debug, Default)]
struct TenantWatchers {
    by_collection: HashMap<Collection, Vec<SessionId>>,
    by_doc: HashMap<DocId, Vec<SessionId>>,
    /// Per collection, the documents of it in `by_doc`.
    docs_in: HashMap<Collection, usize>,
}

impl TenantWatchers {
    fn watch_doc(&mut self, doc: &DocId, id: SessionId) {
        if !self.by_doc.contains_key(doc) {
            *self.docs_in.entry(doc.collection().clone()).or_insert(0) += 1;
        }
        add(&mut self.by_doc, doc, id);
    }

    fn unwatch_doc(&mut self, doc: &DocId, id: SessionId) {
        let had = self.by_doc.contains_key(doc);
        remove(&mut self.by_doc, doc, id);
        if had && !self.by_doc.contains_key(doc) {
            let collection = doc.collection();
            if let Some(n) = self.docs_in.get_mut(collection) {
                *n -= 1;
                if *n == 0 {
                    self.docs_in.remove(collection);
                }
            }
        }
    }
}

impl Watchers {
    /// Session `id` replaced its subscriptions `old` by `new`.
    pub(super) fn subscribe(
        &mut self,
        tenant: &Tenant,
        id: SessionId,
        old: &[CollectionSubscription],
        new: &[CollectionSubscription],
    ) {
        let entry = self.tenants.entry(tenant.clone()).or_default();
        for sub in old {
            remove(&mut entry.by_collection, &sub.collection, id);
        }
        for sub in new {
            add(&mut entry.by_collection, &sub.collection, id);
        }
    }

    /// Session `id` now holds a sync state for `doc`.
    pub(super) fn watch_doc(&mut self, tenant: &Tenant, id: SessionId, doc: &DocId) {
        self.tenants
            .entry(tenant.clone())
            .or_default()
            .watch_doc(doc, id);
    }

    /// Session `id` no longer holds a sync state for `doc`.
    pub(super) fn unwatch_doc(&mut self, tenant: &Tenant, id: SessionId, doc: &DocId) {
        if let Some(entry) = self.tenants.get_mut(tenant) {
            entry.unwatch_doc(doc, id);
        }
    }

    /// Session `id` ended: forget it under its subscriptions and documents.
    pub(super) fn forget<'a>(
        &mut self,
        tenant: &Tenant,
        id: SessionId,
        subscriptions: &[CollectionSubscription],
        docs: impl Iterator<Item = &'a DocId>,
    ) {
        let Some(entry) = self.tenants.get_mut(tenant) else {
            return;
        };
        for sub in subscriptions {
            remove(&mut entry.by_collection, &sub.collection, id);
        }
        for doc in docs {
            entry.unwatch_doc(doc, id);
        }
        if entry.by_collection.is_empty() && entry.by_doc.is_empty() {
            self.tenants.remove(tenant);
        }
    }

    /// Whether any session may want changes in `collection` (subscribed to it, or holding a
    /// sync state for one of its documents).
    pub(super) fn watch_collection(&self, tenant: &Tenant, collection: &Collection) -> bool {
        self.tenants.get(tenant).is_some_and(|e| {
            e.by_collection.contains_key(collection) || e.docs_in.contains_key(collection)
        })
    }

    /// The sessions that may want `doc`'s changes (each once at most per source: a session
    /// both subscribed and holding a state appears twice).
    pub(super) fn candidates<'a>(
        &'a self,
        tenant: &Tenant,
        doc: &DocId,
    ) -> impl Iterator<Item = SessionId> + 'a {
        let entry = self.tenants.get(tenant);
        let subscribed = entry.and_then(|e| e.by_collection.get(doc.collection()));
        let holding = entry.and_then(|e| e.by_doc.get(doc));
        subscribed
            .into_iter()
            .flatten()
            .chain(holding.into_iter().flatten())
            .copied()
    }
}

fn add<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, Vec<SessionId>>,
    key: &K,
    id: SessionId,
) {
    let ids = map.entry(key.clone()).or_default();
    if !ids.contains(&id) {
        ids.push(id);
    }
}

fn remove<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<SessionId>>, key: &K, id: SessionId) {
    if let Some(ids) = map.get_mut(key) {
        ids.retain(|&other| other != id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}
