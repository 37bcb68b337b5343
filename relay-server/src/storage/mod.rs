//! Durable storage of the relay: documents, per-collection change sequences, the device
//! registry, cursors and per-device sync state, behind the [`Storage`] trait.
//!
//! Every call is scoped by tenant; no call can reach another tenant's rows. Writes are durable
//! when they return (the relay acknowledges only what a call has returned for). A document is
//! stored as chunks of Automerge data, in order (the first may be a compacted snapshot);
//! every append gives the document a new sequence number in its collection, so a device can
//! ask what changed after its cursor. Sequence numbers are recorded against the **epoch** of
//! the handle that assigned them (a new epoch each time a relay opens its data), so a relay
//! restored from an older backup recognises positions it never reached. The contract every backend must meet is the test suite
//! `relay-server/tests/storage_contract.rs`.

mod codec;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

use syncline_protocol::messages::{CollectionSubscription, DeferReason, Profile};
use syncline_protocol::{Collection, DeviceId, DocId, Heads, Priority};

use crate::tenant::Tenant;

#[cfg(feature = "postgres")]
pub use self::postgres::{
    CHANGES_CHANNEL, Health, POSTGRES_CONNECT_TIMEOUT, POSTGRES_DEAD_PEER, POSTGRES_RETRY_PAUSE,
    PostgresStorage, parse_notification,
};
pub use memory::MemoryStorage;
pub use sqlite::{SqliteStorage, backup as sqlite_backup};

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The backend failed (I/O, a constraint, a lost connection); the source names the
    /// backend's own error, which no caller needs to know the type of.
    #[error("{backend} storage: {source}")]
    Backend {
        /// The backend: `"sqlite"`, `"memory"`, `"postgres"`.
        backend: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The storage is full (the disk, or the operator's `max_database_bytes`): nothing of the
    /// write was stored. Reads still work, and writes succeed again once there is room.
    #[error("{backend} storage is full: writes are refused until there is room")]
    Full {
        /// The backend.
        backend: &'static str,
    },
    /// The database cannot be reached (down, restarting, the network broken): nothing of the
    /// call was done, or, for a write, nothing of it is acknowledged. It may succeed later; the
    /// storage connects again by itself.
    #[error("{backend} storage is unavailable: {reason}")]
    Unavailable {
        /// The backend.
        backend: &'static str,
        /// What failed.
        reason: String,
    },
    /// Documents of an append were changed since the state it was built on (another relay
    /// sharing the storage appended to them): nothing of the batch was stored.
    #[error("{} documents changed since the relay loaded them", docs.len())]
    Conflict {
        /// The documents whose stored sequence was not the append's `base_seq`.
        docs: Vec<DocId>,
    },
    /// A stored row does not decode (names the table and key).
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The database was written by a newer relay.
    #[error("storage schema {found} is newer than this relay supports ({supported})")]
    SchemaTooNew {
        /// The schema found.
        found: i64,
        /// The newest this relay knows.
        supported: i64,
    },
}

impl StorageError {
    /// True for [`StorageError::Full`]: the write may succeed later, and reads still work.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full { .. })
    }

    /// True for [`StorageError::Unavailable`]: the database is away; the same call may succeed
    /// once it is back.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// One document's new chunk, for [`Storage::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The document.
    pub doc: DocId,
    /// Automerge data (changes, or a saved document) to append.
    pub chunk: Vec<u8>,
    /// The document's heads once the chunk is applied.
    pub heads: Heads,
    /// The document's priority as its app set it (none: keep the stored one).
    pub priority: Option<Priority>,
    /// When the relay stores it, milliseconds since the Unix epoch (the document's last
    /// change, for plans).
    pub at_ms: u64,
    /// The sequence number the document must still have for the chunk to be appended (0: it
    /// must not be stored yet): the state the relay's copy in memory was built from. Another
    /// relay sharing the storage may have appended since; then nothing of the batch is stored
    /// and the call fails with [`StorageError::Conflict`]. `None` appends whatever is stored.
    pub base_seq: Option<u64>,
}

/// A document's stored content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    /// The chunks in order; loading them one after the other rebuilds the document.
    pub chunks: Vec<Vec<u8>>,
    /// The heads after the last chunk.
    pub heads: Heads,
    /// The document's sequence number in its collection.
    pub seq: u64,
    /// Its priority as its app set it, if one was ever sent.
    pub priority: Option<Priority>,
}

/// A changed document, as listed by [`Storage::changed_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentSummary {
    /// The document.
    pub doc: DocId,
    /// Its sequence number in its collection.
    pub seq: u64,
    /// Its heads.
    pub heads: Heads,
    /// Bytes stored for it.
    pub stored_bytes: u64,
    /// Its priority as its app set it, if one was ever sent.
    pub priority: Option<Priority>,
    /// When its last change was stored, milliseconds since the Unix epoch, if known.
    pub changed_ms: Option<u64>,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device.
    pub device: DeviceId,
    /// Its user.
    pub user: String,
    /// Its capability profile.
    pub profile: Profile,
    /// Its subscription.
    pub subscriptions: Vec<CollectionSubscription>,
    /// First registration, milliseconds since the Unix epoch.
    pub first_seen_ms: u64,
    /// Last activity, milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
    /// Last completed sync, milliseconds since the Unix epoch.
    pub last_sync_ms: Option<u64>,
    /// What the relay holds back for the device (announced, not sent), as of its last
    /// registration or disconnect.
    pub deferred: Deferred,
}

/// Documents announced to a device and held back (metered network, low priority, on demand).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deferred {
    /// How many.
    pub docs: u64,
    /// Their approximate bytes.
    pub bytes: u64,
    /// Which, highest priority first, at most [`DEFERRED_LISTED`] of them.
    pub list: Vec<DeferredEntry>,
}

/// Most deferred documents the registry lists per device (the totals count them all).
pub const DEFERRED_LISTED: usize = 1000;

/// One document held back for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredEntry {
    /// The document.
    pub doc: DocId,
    /// Its priority for the device.
    pub priority: Priority,
    /// Its approximate bytes.
    pub bytes: u64,
    /// Why it is held back.
    pub reason: DeferReason,
}

/// What the relay needs from a database. Implementations are shared by every connection.
pub trait Storage: Send + Sync + 'static {
    /// Appends chunks to documents (creating them), all in one durable transaction, and
    /// returns each document's new sequence number, in order. Two appends to one collection
    /// never get the same number, and numbers grow in commit order.
    ///
    /// # Errors
    /// A [`StorageError`]; then nothing of the batch is stored.
    fn append(&self, tenant: &Tenant, batch: &[Append]) -> Result<Vec<u64>, StorageError>;

    /// Replaces a document's chunks by one snapshot with the given heads (compaction). The
    /// sequence number does not change. Does nothing if the document does not exist.
    ///
    /// # Errors
    /// A [`StorageError`].
    fn compact(
        &self,
        tenant: &Tenant,
        doc: &DocId,
        snapshot: &[u8],
        heads: &Heads,
    ) -> Result<(), StorageError>;

    /// The epoch this handle stores in: a new one each time a relay opens its data (so a copy
    /// restored from an older backup runs in an epoch no lost copy ran in). Every sequence
    /// number this handle assigns is recorded against it.
    fn epoch(&self) -> &str;

    /// The secret key of the receipts the relay gives devices for the positions it shows them
    /// (made once with the data, carried by its backups).
    fn position_key(&self) -> &[u8; 32];

    /// True if this data holds every change of `collection` that a relay serving it numbered
    /// up to `seq` in `epoch`: false when `epoch` is not one this data ever ran in, or when
    /// `seq` is past every sequence number the collection reached in `epoch` and the epochs
    /// before it. A device showing a position this refuses was served by a copy of the data
    /// that has since been lost (the relay was restored from an older backup).
    ///
    /// # Errors
    /// A [`StorageError`].
    fn holds_position(
        &self,
        tenant: &Tenant,
        collection: &Collection,
        epoch: &str,
        seq: u64,
    ) -> Result<bool, StorageError>;

    /// A document's stored content, if it exists.
    ///
    /// # Errors
    /// A [`StorageError`].
    fn load(&self, tenant: &Tenant, doc: &DocId) -> Result<Option<StoredDocument>, StorageError>;

    /// The documents of `collection` with a sequence number above `after`, lowest first, at
    /// most `limit` of them.
    ///
    /// # Errors
    /// A [`StorageError`].
    fn changed_since(
        &self,
        tenant: &Tenant,
        collection: &Collection,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DocumentSummary>, StorageError>;

    /// Every collection of every tenant with the highest sequence number given in it: where a
    /// relay that shares this storage with others starts following their commits, and what it
    /// compares with after it lost track of them.
    ///
    /// # Errors
    /// A [`StorageError`] (a corrupt name among them).
    fn collection_seqs(&self) -> Result<Vec<(Tenant, Collection, u64)>, StorageError>;

    /// Binds `device` to `user` if it is bound to nobody yet, and returns the user it is bound
    /// to (the first that connected it): a device id cannot be taken over with another user's
    /// token.
    ///
    /// # Errors
    /// A [`StorageError`].
    fn bind_device(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        user: &str,
    ) -> Result<String, StorageError>;

    /// Registers a device or updates its profile, subscription, deferred documents and
    /// `last_seen_ms` (keeping its user, first-seen time and last sync).
    ///
    /// # Errors
    /// A [`StorageError`].
    fn register_device(&self, tenant: &Tenant, record: &DeviceRecord) -> Result<(), StorageError>;

    /// Records activity of a device (and a completed sync, if `synced`).
    ///
    /// # Errors
    /// A [`StorageError`].
    fn touch_device(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        at_ms: u64,
        synced: bool,
    ) -> Result<(), StorageError>;

    /// The devices of `tenant` (or of every tenant, with their tenant, for operators).
    ///
    /// # Errors
    /// A [`StorageError`].
    fn devices(&self, tenant: Option<&Tenant>)
    -> Result<Vec<(Tenant, DeviceRecord)>, StorageError>;

    /// Stores a device's cursor in a collection.
    ///
    /// # Errors
    /// A [`StorageError`].
    fn set_cursor(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        collection: &Collection,
        seq: u64,
    ) -> Result<(), StorageError>;

    /// A device's cursors.
    ///
    /// # Errors
    /// A [`StorageError`].
    fn cursors(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
    ) -> Result<Vec<(Collection, u64)>, StorageError>;

    /// Stores the Automerge sync states of a device, one per document, in one transaction.
    ///
    /// # Errors
    /// A [`StorageError`]; then none of them is stored.
    fn save_sync_states(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        states: &[(DocId, Vec<u8>)],
    ) -> Result<(), StorageError>;

    /// The stored Automerge sync state of a device for a document.
    ///
    /// # Errors
    /// A [`StorageError`].
    fn load_sync_state(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        doc: &DocId,
    ) -> Result<Option<Vec<u8>>, StorageError>;
}
