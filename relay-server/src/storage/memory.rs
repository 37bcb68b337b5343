//! [`MemoryStorage`]: the storage contract kept in memory. For deterministic simulations and
//! tests that model a relay restart by keeping the storage and dropping everything else; it
//! meets the same contract tests as SQLite (durability means "survives the hub", not a
//! power cut).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use syncline_protocol::{Collection, DeviceId, DocId, Heads, Priority};

use crate::tenant::Tenant;

use super::{Append, DeviceRecord, DocumentSummary, Storage, StorageError, StoredDocument};

#[derive(Default, Clone)]
struct Doc {
    chunks: Vec<Vec<u8>>,
    heads: Heads,
    seq: u64,
    stored_bytes: u64,
    priority: Option<Priority>,
    changed_ms: Option<u64>,
}

#[derive(Default, Clone)]
struct TenantData {
    seqs: HashMap<Collection, u64>,
    docs: HashMap<DocId, Doc>,
    /// Per collection, sequence number to document.
    by_seq: HashMap<Collection, BTreeMap<u64, DocId>>,
    devices: HashMap<DeviceId, DeviceRecord>,
    cursors: BTreeMap<(DeviceId, Collection), u64>,
    states: HashMap<(DeviceId, DocId), Vec<u8>>,
    /// Each device's user, from its first connection.
    owners: HashMap<DeviceId, String>,
    /// Per collection and generation of epochs (see [`MemoryStorage::share`]), the highest
    /// sequence number assigned in it.
    epoch_seqs: HashMap<(Collection, usize), u64>,
}

#[derive(Clone)]
struct Data {
    tenants: HashMap<Tenant, TenantData>,
    /// Every epoch the data ran in, oldest first.
    epochs: Vec<(String, usize)>,
    /// The key of position receipts, made with the data (from its seed: memory storage is for
    /// tests and simulations, which must replay exactly).
    position_key: [u8; 32],
    /// Which copy this is: `0` for the original, `0.1` for its first backup, and so on, so
    /// every copy names its epochs apart.
    lineage: String,
    /// Backups taken of this copy so far.
    backups: u32,
}

/// Storage in memory; see the module documentation. Clones share the same data and epoch (a
/// relay "restarted" over a clone finds everything its predecessor stored); [`Self::reopen`]
/// and [`Self::backup`] start new epochs of new generations, [`Self::share`] a new epoch in the
/// same generation (a second relay on the data).
#[derive(Clone)]
pub struct MemoryStorage {
    data: Arc<Mutex<Data>>,
    epoch: String,
    /// The epoch's generation: relays sharing the data at the same time share one
    /// ([`MemoryStorage::share`]); every other opening starts a new one.
    generation: usize,
    position_key: [u8; 32],
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::seeded(0)
    }
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty storage whose epoch ids and receipt key derive from `seed` (deterministic, so a
    /// simulation replays exactly; nothing here is secret).
    pub fn seeded(seed: u64) -> Self {
        let mut position_key = [0u8; 32];
        for (i, chunk) in position_key.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(
                &(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes(),
            );
        }
        Self::over(
            Arc::new(Mutex::new(Data {
                tenants: HashMap::new(),
                epochs: Vec::new(),
                position_key,
                lineage: format!("{seed:x}"),
                backups: 0,
            })),
            None,
        )
    }

    /// A handle on `data` in a new epoch, of a new generation unless `generation` is given.
    fn over(data: Arc<Mutex<Data>>, generation: Option<usize>) -> Self {
        let (epoch, generation, position_key) = {
            let mut d = data.lock();
            let index = d.epochs.len();
            let epoch = format!("memory-{}-{index}", d.lineage);
            // A new generation is numbered past every earlier one (each is at most the index
            // of the epoch that started it).
            let generation = generation.unwrap_or(index);
            d.epochs.push((epoch.clone(), generation));
            (epoch, generation, d.position_key)
        };
        Self {
            data,
            epoch,
            generation,
            position_key,
        }
    }

    /// Another relay on the same data while this one runs (several relays on one database): a
    /// new epoch in this one's generation, so a position either relay shows holds on both.
    #[must_use]
    pub fn share(&self) -> Self {
        Self::over(Arc::clone(&self.data), Some(self.generation))
    }

    /// The same data opened again (a relay restarted over it), in a new epoch.
    #[must_use]
    pub fn reopen(&self) -> Self {
        Self::over(Arc::clone(&self.data), None)
    }

    /// A copy of the data as it is now, detached from this one, opened in a new epoch: what a
    /// relay restored from a backup taken now would serve.
    #[must_use]
    pub fn backup(&self) -> Self {
        let mut copy = {
            let mut original = self.data.lock();
            original.backups += 1;
            original.clone()
        };
        copy.lineage = format!("{}.{}", copy.lineage, copy.backups);
        copy.backups = 0;
        Self::over(Arc::new(Mutex::new(copy)), None)
    }
}

impl Storage for MemoryStorage {
    fn append(&self, tenant: &Tenant, batch: &[Append]) -> Result<Vec<u64>, StorageError> {
        let mut data = self.data.lock();
        let tenants = &mut data.tenants;
        let t = tenants.entry(tenant.clone()).or_default();
        let conflicts: Vec<DocId> = batch
            .iter()
            .filter(|a| {
                a.base_seq
                    .is_some_and(|base| t.docs.get(&a.doc).map_or(0, |d| d.seq) != base)
            })
            .map(|a| a.doc.clone())
            .collect();
        if !conflicts.is_empty() {
            return Err(StorageError::Conflict { docs: conflicts });
        }
        let mut seqs = Vec::with_capacity(batch.len());
        for a in batch {
            let collection = a.doc.collection().clone();
            let seq = t.seqs.entry(collection.clone()).or_insert(0);
            *seq += 1;
            let seq = *seq;
            let doc = t.docs.entry(a.doc.clone()).or_default();
            let by_seq = t.by_seq.entry(collection).or_default();
            by_seq.remove(&doc.seq);
            by_seq.insert(seq, a.doc.clone());
            doc.chunks.push(a.chunk.clone());
            doc.heads = a.heads.clone();
            doc.seq = seq;
            doc.stored_bytes += a.chunk.len() as u64;
            doc.priority = a.priority.or(doc.priority);
            doc.changed_ms = Some(a.at_ms);
            let reached = t
                .epoch_seqs
                .entry((a.doc.collection().clone(), self.generation))
                .or_default();
            *reached = (*reached).max(seq);
            seqs.push(seq);
        }
        Ok(seqs)
    }

    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn position_key(&self) -> &[u8; 32] {
        &self.position_key
    }

    fn holds_position(
        &self,
        tenant: &Tenant,
        collection: &Collection,
        epoch: &str,
        seq: u64,
    ) -> Result<bool, StorageError> {
        if seq == 0 {
            return Ok(true);
        }
        let data = self.data.lock();
        let Some(&(_, generation)) = data.epochs.iter().find(|(e, _)| e == epoch) else {
            return Ok(false);
        };
        let reached = data.tenants.get(tenant).map_or(0, |t| {
            t.epoch_seqs
                .iter()
                .filter(|((c, g), _)| c == collection && *g <= generation)
                .map(|(_, seq)| *seq)
                .max()
                .unwrap_or(0)
        });
        Ok(seq <= reached)
    }

    fn compact(
        &self,
        tenant: &Tenant,
        doc: &DocId,
        snapshot: &[u8],
        heads: &Heads,
    ) -> Result<(), StorageError> {
        let mut data = self.data.lock();
        let tenants = &mut data.tenants;
        if let Some(d) = tenants.get_mut(tenant).and_then(|t| t.docs.get_mut(doc)) {
            d.chunks = vec![snapshot.to_vec()];
            d.heads = heads.clone();
            d.stored_bytes = snapshot.len() as u64;
        }
        Ok(())
    }

    fn load(&self, tenant: &Tenant, doc: &DocId) -> Result<Option<StoredDocument>, StorageError> {
        let data = self.data.lock();
        let tenants = &data.tenants;
        Ok(tenants
            .get(tenant)
            .and_then(|t| t.docs.get(doc))
            .map(|d| StoredDocument {
                chunks: d.chunks.clone(),
                heads: d.heads.clone(),
                seq: d.seq,
                priority: d.priority,
            }))
    }

    fn collection_seqs(&self) -> Result<Vec<(Tenant, Collection, u64)>, StorageError> {
        let data = self.data.lock();
        let mut all: Vec<(Tenant, Collection, u64)> = data
            .tenants
            .iter()
            .flat_map(|(tenant, t)| {
                t.seqs
                    .iter()
                    .map(move |(collection, seq)| (tenant.clone(), collection.clone(), *seq))
            })
            .collect();
        // In a fixed order: a simulation replays exactly.
        all.sort();
        Ok(all)
    }

    fn changed_since(
        &self,
        tenant: &Tenant,
        collection: &Collection,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DocumentSummary>, StorageError> {
        let data = self.data.lock();
        let tenants = &data.tenants;
        let Some(t) = tenants.get(tenant) else {
            return Ok(Vec::new());
        };
        let Some(by_seq) = t.by_seq.get(collection) else {
            return Ok(Vec::new());
        };
        Ok(by_seq
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(seq, id)| {
                let d = &t.docs[id];
                DocumentSummary {
                    doc: id.clone(),
                    seq: *seq,
                    heads: d.heads.clone(),
                    stored_bytes: d.stored_bytes,
                    priority: d.priority,
                    changed_ms: d.changed_ms,
                }
            })
            .collect())
    }

    fn bind_device(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        user: &str,
    ) -> Result<String, StorageError> {
        let mut data = self.data.lock();
        let tenants = &mut data.tenants;
        let t = tenants.entry(tenant.clone()).or_default();
        Ok(t.owners
            .entry(*device)
            .or_insert_with(|| user.to_owned())
            .clone())
    }

    fn register_device(&self, tenant: &Tenant, record: &DeviceRecord) -> Result<(), StorageError> {
        let mut record = record.clone();
        // As every backend lists them: highest priority first, at most DEFERRED_LISTED.
        record
            .deferred
            .list
            .sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.doc.cmp(&b.doc)));
        record.deferred.list.truncate(super::DEFERRED_LISTED);
        let mut data = self.data.lock();
        let tenants = &mut data.tenants;
        let t = tenants.entry(tenant.clone()).or_default();
        match t.devices.get_mut(&record.device) {
            Some(existing) => {
                existing.profile = record.profile.clone();
                existing.subscriptions = record.subscriptions.clone();
                existing.last_seen_ms = record.last_seen_ms;
                existing.deferred.clone_from(&record.deferred);
            }
            None => {
                t.devices.insert(record.device, record);
            }
        }
        Ok(())
    }

    fn touch_device(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        at_ms: u64,
        synced: bool,
    ) -> Result<(), StorageError> {
        let mut data = self.data.lock();
        let tenants = &mut data.tenants;
        if let Some(d) = tenants
            .get_mut(tenant)
            .and_then(|t| t.devices.get_mut(device))
        {
            d.last_seen_ms = d.last_seen_ms.max(at_ms);
            if synced {
                d.last_sync_ms = Some(at_ms);
            }
        }
        Ok(())
    }

    fn devices(
        &self,
        tenant: Option<&Tenant>,
    ) -> Result<Vec<(Tenant, DeviceRecord)>, StorageError> {
        let data = self.data.lock();
        let tenants = &data.tenants;
        let mut out: Vec<(Tenant, DeviceRecord)> = tenants
            .iter()
            .filter(|(name, _)| tenant.is_none_or(|t| t == *name))
            .flat_map(|(name, t)| t.devices.values().map(|d| (name.clone(), d.clone())))
            .collect();
        out.sort_by(|(ta, a), (tb, b)| ta.cmp(tb).then(b.last_seen_ms.cmp(&a.last_seen_ms)));
        Ok(out)
    }

    fn set_cursor(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        collection: &Collection,
        seq: u64,
    ) -> Result<(), StorageError> {
        let mut data = self.data.lock();
        let tenants = &mut data.tenants;
        let t = tenants.entry(tenant.clone()).or_default();
        t.cursors.insert((*device, collection.clone()), seq);
        Ok(())
    }

    fn cursors(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
    ) -> Result<Vec<(Collection, u64)>, StorageError> {
        let data = self.data.lock();
        let tenants = &data.tenants;
        Ok(tenants
            .get(tenant)
            .map(|t| {
                t.cursors
                    .iter()
                    .filter(|((d, _), _)| d == device)
                    .map(|((_, c), seq)| (c.clone(), *seq))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn save_sync_states(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        states: &[(DocId, Vec<u8>)],
    ) -> Result<(), StorageError> {
        let mut data = self.data.lock();
        let tenants = &mut data.tenants;
        let t = tenants.entry(tenant.clone()).or_default();
        for (doc, state) in states {
            t.states.insert((*device, doc.clone()), state.clone());
        }
        Ok(())
    }

    fn load_sync_state(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        doc: &DocId,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let data = self.data.lock();
        let tenants = &data.tenants;
        Ok(tenants
            .get(tenant)
            .and_then(|t| t.states.get(&(*device, doc.clone())).cloned()))
    }
}
