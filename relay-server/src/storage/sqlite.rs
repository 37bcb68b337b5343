//! [`Storage`] on an embedded SQLite file: the relay's default, needing no setup.
//!
//! One connection in WAL mode with `synchronous = FULL`, so a returned write survives a power
//! cut; every batch is one transaction (one fsync for a whole `Sync` frame). Schema versions are
//! keyed on `user_version`, as in the SDK's store.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use syncline_protocol::messages::{CollectionSubscription, DeferReason, Profile, SyncMode};
use syncline_protocol::{Collection, DeviceId, DocId, Heads, Priority};

use crate::tenant::Tenant;

use super::codec::{
    class_code, class_from, collection_row, corrupt, heads_from_bytes, heads_to_bytes,
    new_epoch_id, now_ms, priority_from, random_key, to_i64, to_u64,
};
use super::{
    Append, DEFERRED_LISTED, Deferred, DeferredEntry, DeviceRecord, DocumentSummary, Storage,
    StorageError, StoredDocument,
};

/// `PRAGMA application_id` of a relay database: "SYNR".
const APPLICATION_ID: i32 = 0x5359_4E52;

const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE collections (
        tenant TEXT NOT NULL, collection TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (tenant, collection)
    ) WITHOUT ROWID;
    CREATE TABLE documents (
        tenant TEXT NOT NULL, collection TEXT NOT NULL, doc_id TEXT NOT NULL,
        seq INTEGER NOT NULL, heads BLOB NOT NULL,
        stored_bytes INTEGER NOT NULL, chunk_count INTEGER NOT NULL,
        PRIMARY KEY (tenant, collection, doc_id)
    ) WITHOUT ROWID;
    CREATE INDEX documents_by_seq ON documents (tenant, collection, seq);
    CREATE TABLE chunks (
        tenant TEXT NOT NULL, collection TEXT NOT NULL, doc_id TEXT NOT NULL,
        n INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (tenant, collection, doc_id, n)
    ) WITHOUT ROWID;
    CREATE TABLE devices (
        tenant TEXT NOT NULL, device_id BLOB NOT NULL, user TEXT NOT NULL,
        class INTEGER NOT NULL, storage_budget INTEGER, download INTEGER, upload INTEGER,
        metered INTEGER NOT NULL, realtime INTEGER NOT NULL,
        first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, last_sync INTEGER,
        PRIMARY KEY (tenant, device_id)
    ) WITHOUT ROWID;
    CREATE TABLE device_subscriptions (
        tenant TEXT NOT NULL, device_id BLOB NOT NULL, position INTEGER NOT NULL,
        collection TEXT NOT NULL, priority INTEGER NOT NULL, mode INTEGER NOT NULL,
        PRIMARY KEY (tenant, device_id, position)
    ) WITHOUT ROWID;
    CREATE TABLE cursors (
        tenant TEXT NOT NULL, device_id BLOB NOT NULL, collection TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (tenant, device_id, collection)
    ) WITHOUT ROWID;
    CREATE TABLE sync_states (
        tenant TEXT NOT NULL, device_id BLOB NOT NULL, collection TEXT NOT NULL,
        doc_id TEXT NOT NULL, state BLOB NOT NULL,
        PRIMARY KEY (tenant, device_id, collection, doc_id)
    ) WITHOUT ROWID;
"#,
    r#"
    ALTER TABLE devices ADD COLUMN metered_max_doc_bytes INTEGER;
    ALTER TABLE devices ADD COLUMN deferred_docs INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN deferred_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE documents ADD COLUMN priority INTEGER;
    ALTER TABLE documents ADD COLUMN changed_ms INTEGER;
    CREATE TABLE device_deferred (
        tenant TEXT NOT NULL, device_id BLOB NOT NULL, doc_id TEXT NOT NULL,
        priority INTEGER NOT NULL, bytes INTEGER NOT NULL, reason INTEGER NOT NULL,
        PRIMARY KEY (tenant, device_id, doc_id)
    ) WITHOUT ROWID;
"#,
    r#"
    CREATE TABLE device_owners (
        tenant TEXT NOT NULL, device_id BLOB NOT NULL, user TEXT NOT NULL,
        PRIMARY KEY (tenant, device_id)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO device_owners (tenant, device_id, user)
        SELECT tenant, device_id, user FROM devices;
"#,
    // 4: epochs. Every opening of the data starts one; per collection, the highest sequence
    // number each epoch assigned. What was assigned before epochs existed belongs to epoch 1.
    // The key of the receipts for positions shown to devices lives with the data (a backup
    // carries it, so a restored copy checks what its lost original gave).
    r#"
    CREATE TABLE epochs (
        ordinal INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        started_ms INTEGER NOT NULL
    );
    CREATE TABLE collection_epochs (
        tenant TEXT NOT NULL, collection TEXT NOT NULL, epoch INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (tenant, collection, epoch)
    ) WITHOUT ROWID;
    CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    INSERT INTO epochs (ordinal, id, started_ms) VALUES (1, 'before-epochs', 0);
    INSERT INTO collection_epochs (tenant, collection, epoch, seq)
        SELECT tenant, collection, 1, seq FROM collections;
"#,
];

/// The relay's embedded SQLite storage.
pub struct SqliteStorage {
    conn: Mutex<Connection>,
    /// The operator's cap in pages ([`SqliteStorage::set_max_bytes`]), if any.
    cap_pages: Mutex<Option<i64>>,
    /// The epoch this handle opened (its id, and its ordinal in `epochs`).
    epoch: String,
    epoch_ordinal: i64,
    position_key: [u8; 32],
}

/// How far device bindings may take the database past the operator's cap
/// (`max_database_bytes`): about 10,000 bindings. Past it (or on a full disk) a new device's
/// binding waits in the hub's memory.
pub const BINDING_RESERVE_BYTES: u64 = 1 << 20;

impl SqliteStorage {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    ///
    /// # Errors
    /// [`StorageError::SchemaTooNew`], [`StorageError::Corrupt`] for a file that is not a relay
    /// database, or the SQLite error.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if (app == 0 && tables > 0) || (app != 0 && app != APPLICATION_ID) {
            return Err(StorageError::Corrupt {
                table: "sqlite_master",
                reason: format!("{} is not a Syncline relay database", path.display()),
            });
        }
        let latest = i64::try_from(MIGRATIONS.len()).expect("few migrations");
        if version > latest {
            return Err(StorageError::SchemaTooNew {
                found: version,
                supported: latest,
            });
        }
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Cached statements keep their query plans: without the planner's stability
        // guarantee, one whose plan depends on a bound value (`seq > ?`, `LIMIT ?`) is parsed
        // again every time it is bound.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        for v in version + 1..=latest {
            let tx = conn.transaction()?;
            tx.execute_batch(MIGRATIONS[usize::try_from(v - 1).expect("positive")])?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", v)?;
            tx.commit()?;
        }
        conn.execute(
            "INSERT OR IGNORE INTO secrets (name, value) VALUES ('positions', ?1)",
            [random_key().to_vec()],
        )?;
        let stored: Vec<u8> = conn.query_row(
            "SELECT value FROM secrets WHERE name = 'positions'",
            [],
            |r| r.get(0),
        )?;
        let position_key: [u8; 32] = stored
            .try_into()
            .map_err(|_| corrupt("secrets", "the position key is not 32 bytes".into()))?;
        let epoch = new_epoch_id();
        let epoch_ordinal = conn
            .prepare("INSERT INTO epochs (id, started_ms) VALUES (?1, ?2) RETURNING ordinal")?
            .query_row(params![epoch, to_i64(now_ms())], |r| r.get(0))?;
        Ok(Self {
            conn: Mutex::new(conn),
            cap_pages: Mutex::new(None),
            epoch,
            epoch_ordinal,
            position_key,
        })
    }
}

impl SqliteStorage {
    /// Caps the database at about `bytes` (SQLite's `max_page_count`; `None`: no cap beyond
    /// the disk). Past it, writes fail with [`StorageError::Full`] and reads go on; raising
    /// the cap (or freeing the disk) lets writes through again at once. A cap below the
    /// current size holds the database where it is.
    ///
    /// # Errors
    /// The SQLite error.
    pub fn set_max_bytes(&self, bytes: Option<u64>) -> Result<(), StorageError> {
        let conn = self.conn.lock();
        let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        // SQLite's own ceiling when uncapped.
        let cap = bytes.map(|b| (to_i64(b) / page.max(1)).max(1));
        conn.pragma_update(None, "max_page_count", cap.unwrap_or(4_294_967_294))?;
        *self.cap_pages.lock() = cap;
        Ok(())
    }
}

/// Writes a consistent copy of the relay database at `database` to `to`, safe while a relay
/// runs on it (`VACUUM INTO` over a read-only connection: one snapshot of the last committed
/// state, compacted). A relay opened on the copy starts a new epoch.
///
/// # Errors
/// The SQLite error (no database, `to` exists, the disk is full).
pub fn backup(database: &Path, to: &Path) -> Result<(), StorageError> {
    let conn = Connection::open_with_flags(
        database,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    if app != APPLICATION_ID {
        return Err(corrupt(
            "sqlite_master",
            format!("{} is not a Syncline relay database", database.display()),
        ));
    }
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
    Ok(())
}

/// Every SQLite failure becomes the backend-neutral [`StorageError::Backend`], so no caller
/// (nor the trait) sees a `rusqlite` type.
impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return StorageError::Full { backend: "sqlite" };
        }
        StorageError::Backend {
            backend: "sqlite",
            source: Box::new(e),
        }
    }
}

impl Storage for SqliteStorage {
    fn append(&self, tenant: &Tenant, batch: &[Append]) -> Result<Vec<u64>, StorageError> {
        let tenant = tenant.as_str();
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut seqs = Vec::with_capacity(batch.len());
        let mut conflicts = Vec::new();
        // Per collection, the highest sequence number the batch assigned (for the epoch).
        let mut reached: Vec<(&str, i64)> = Vec::new();
        for a in batch {
            let (collection, id) = (a.doc.collection().as_str(), a.doc.id());
            let seq: i64 = tx
                .prepare_cached(
                    "INSERT INTO collections (tenant, collection, seq) VALUES (?1, ?2, 1) \
                     ON CONFLICT (tenant, collection) DO UPDATE SET seq = seq + 1 RETURNING seq",
                )?
                .query_row(params![tenant, collection], |r| r.get(0))?;
            let count: Option<i64> = tx
                .prepare_cached(
                    "INSERT INTO documents (tenant, collection, doc_id, seq, heads, stored_bytes, \
                     chunk_count, priority, changed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8) \
                     ON CONFLICT (tenant, collection, doc_id) DO UPDATE SET seq = excluded.seq, \
                     heads = excluded.heads, stored_bytes = stored_bytes + excluded.stored_bytes, \
                     chunk_count = chunk_count + 1, \
                     priority = coalesce(excluded.priority, priority), \
                     changed_ms = excluded.changed_ms WHERE ?9 IS NULL OR seq = ?9 \
                     RETURNING chunk_count",
                )?
                .query_row(
                    params![
                        tenant,
                        collection,
                        id,
                        seq,
                        heads_to_bytes(&a.heads),
                        to_i64(a.chunk.len() as u64),
                        a.priority.map(Priority::code),
                        to_i64(a.at_ms),
                        a.base_seq.map(to_i64),
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            // A new document has no row to conflict with: it must be new to the append too.
            let count = match count {
                Some(count) if !(count == 1 && a.base_seq.is_some_and(|b| b != 0)) => count,
                _ => {
                    conflicts.push(a.doc.clone());
                    continue;
                }
            };
            tx.prepare_cached(
                "INSERT INTO chunks (tenant, collection, doc_id, n, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![tenant, collection, id, count - 1, a.chunk])?;
            seqs.push(to_u64(seq));
            match reached.iter_mut().find(|(c, _)| *c == collection) {
                Some((_, max)) => *max = (*max).max(seq),
                None => reached.push((collection, seq)),
            }
        }
        if !conflicts.is_empty() {
            // Dropping the transaction rolls it back: nothing of the batch is stored.
            return Err(StorageError::Conflict { docs: conflicts });
        }
        for (collection, seq) in reached {
            tx.prepare_cached(
                "INSERT INTO collection_epochs (tenant, collection, epoch, seq) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tenant, collection, epoch) \
                 DO UPDATE SET seq = max(seq, excluded.seq)",
            )?
            .execute(params![tenant, collection, self.epoch_ordinal, seq])?;
        }
        tx.commit()?;
        Ok(seqs)
    }

    fn compact(
        &self,
        tenant: &Tenant,
        doc: &DocId,
        snapshot: &[u8],
        heads: &Heads,
    ) -> Result<(), StorageError> {
        let tenant = tenant.as_str();
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (collection, id) = (doc.collection().as_str(), doc.id());
        let updated = tx
            .prepare_cached(
                "UPDATE documents SET heads = ?4, stored_bytes = ?5, chunk_count = 1 \
                 WHERE tenant = ?1 AND collection = ?2 AND doc_id = ?3",
            )?
            .execute(params![
                tenant,
                collection,
                id,
                heads_to_bytes(heads),
                to_i64(snapshot.len() as u64)
            ])?;
        if updated == 1 {
            tx.prepare_cached(
                "DELETE FROM chunks WHERE tenant = ?1 AND collection = ?2 AND doc_id = ?3",
            )?
            .execute(params![tenant, collection, id])?;
            tx.prepare_cached(
                "INSERT INTO chunks (tenant, collection, doc_id, n, data) VALUES (?1, ?2, ?3, 0, ?4)",
            )?
            .execute(params![tenant, collection, id, snapshot])?;
        }
        tx.commit()?;
        Ok(())
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
        let conn = self.conn.lock();
        let Some(ordinal) = conn
            .prepare_cached("SELECT ordinal FROM epochs WHERE id = ?1")?
            .query_row([epoch], |r| r.get::<_, i64>(0))
            .optional()?
        else {
            return Ok(false);
        };
        let reached: i64 = conn
            .prepare_cached(
                "SELECT coalesce(max(seq), 0) FROM collection_epochs \
                 WHERE tenant = ?1 AND collection = ?2 AND epoch <= ?3",
            )?
            .query_row(
                params![tenant.as_str(), collection.as_str(), ordinal],
                |r| r.get(0),
            )?;
        Ok(seq <= to_u64(reached))
    }

    fn load(&self, tenant: &Tenant, doc: &DocId) -> Result<Option<StoredDocument>, StorageError> {
        let tenant = tenant.as_str();
        let conn = self.conn.lock();
        let (collection, id) = (doc.collection().as_str(), doc.id());
        let Some((seq, heads, priority)) = conn
            .prepare_cached(
                "SELECT seq, heads, priority FROM documents \
                 WHERE tenant = ?1 AND collection = ?2 AND doc_id = ?3",
            )?
            .query_row(params![tenant, collection, id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })
            .optional()?
        else {
            return Ok(None);
        };
        let chunks = conn
            .prepare_cached(
                "SELECT data FROM chunks WHERE tenant = ?1 AND collection = ?2 AND doc_id = ?3 ORDER BY n",
            )?
            .query_map(params![tenant, collection, id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<Vec<u8>>>>()?;
        Ok(Some(StoredDocument {
            chunks,
            heads: heads_from_bytes(&heads)?,
            seq: to_u64(seq),
            priority: priority_from("documents", priority)?,
        }))
    }

    fn collection_seqs(&self) -> Result<Vec<(Tenant, Collection, u64)>, StorageError> {
        let conn = self.conn.lock();
        let rows = conn
            .prepare_cached(
                "SELECT tenant, collection, seq FROM collections ORDER BY tenant, collection",
            )?
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(tenant, collection, seq)| collection_row(&tenant, collection, seq))
            .collect()
    }

    fn changed_since(
        &self,
        tenant: &Tenant,
        collection: &Collection,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DocumentSummary>, StorageError> {
        let tenant = tenant.as_str();
        let conn = self.conn.lock();
        let rows = conn
            .prepare_cached(
                "SELECT doc_id, seq, heads, stored_bytes, priority, changed_ms FROM documents \
                 WHERE tenant = ?1 AND collection = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
            )?
            .query_map(
                params![
                    tenant,
                    collection.as_str(),
                    to_i64(after),
                    to_i64(limit as u64)
                ],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, seq, heads, bytes, priority, changed)| {
                Ok(DocumentSummary {
                    doc: DocId::new(collection.clone(), id)
                        .map_err(|e| corrupt("documents", e.to_string()))?,
                    seq: to_u64(seq),
                    heads: heads_from_bytes(&heads)?,
                    stored_bytes: to_u64(bytes),
                    priority: priority_from("documents", priority)?,
                    changed_ms: changed.map(to_u64),
                })
            })
            .collect()
    }

    fn bind_device(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        user: &str,
    ) -> Result<String, StorageError> {
        let conn = self.conn.lock();
        let (tenant, device) = (tenant.as_str(), device.as_bytes().as_slice());
        let owner = |conn: &Connection| -> Result<Option<String>, StorageError> {
            Ok(conn
                .prepare_cached(
                    "SELECT user FROM device_owners WHERE tenant = ?1 AND device_id = ?2",
                )?
                .query_row(params![tenant, device], |r| r.get(0))
                .optional()?)
        };
        // A known device costs no write (and is admitted while the storage is full).
        if let Some(user) = owner(&conn)? {
            return Ok(user);
        }
        let bind = |conn: &Connection| -> Result<usize, StorageError> {
            Ok(conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO device_owners (tenant, device_id, user) \
                     VALUES (?1, ?2, ?3)",
                )?
                .execute(params![tenant, device, user])?)
        };
        match bind(&conn) {
            // Past the operator's cap, a binding may take the reserve above it: a device's
            // owner must survive a restart, and bindings are a few dozen bytes each.
            Err(e) if e.is_full() => {
                let Some(cap) = *self.cap_pages.lock() else {
                    return Err(e);
                };
                let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
                let reserve = cap + to_i64(BINDING_RESERVE_BYTES) / page.max(1);
                conn.pragma_update(None, "max_page_count", reserve)?;
                let bound = bind(&conn);
                conn.pragma_update(None, "max_page_count", cap)?;
                bound?;
            }
            other => {
                other?;
            }
        }
        owner(&conn)?.ok_or_else(|| {
            corrupt(
                "device_owners",
                "the binding just written is missing".into(),
            )
        })
    }

    fn register_device(&self, tenant: &Tenant, record: &DeviceRecord) -> Result<(), StorageError> {
        let tenant = tenant.as_str();
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let device = record.device.as_bytes().as_slice();
        let p = &record.profile;
        tx.prepare_cached(
            "INSERT INTO devices (tenant, device_id, user, class, storage_budget, download, upload, \
             metered, realtime, first_seen, last_seen, last_sync, metered_max_doc_bytes, \
             deferred_docs, deferred_bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
             ON CONFLICT (tenant, device_id) DO UPDATE SET class = excluded.class, storage_budget = excluded.storage_budget, \
             download = excluded.download, upload = excluded.upload, metered = excluded.metered, \
             realtime = excluded.realtime, last_seen = excluded.last_seen, \
             metered_max_doc_bytes = excluded.metered_max_doc_bytes, \
             deferred_docs = excluded.deferred_docs, deferred_bytes = excluded.deferred_bytes",
        )?
        .execute(params![
            tenant,
            device,
            record.user,
            class_code(p.class),
            p.storage_budget_bytes.map(to_i64),
            p.download_bytes_per_s.map(to_i64),
            p.upload_bytes_per_s.map(to_i64),
            p.metered,
            p.realtime,
            to_i64(record.first_seen_ms),
            to_i64(record.last_seen_ms),
            record.last_sync_ms.map(to_i64),
            p.metered_max_doc_bytes.map(to_i64),
            to_i64(record.deferred.docs),
            to_i64(record.deferred.bytes),
        ])?;
        tx.prepare_cached("DELETE FROM device_subscriptions WHERE tenant = ?1 AND device_id = ?2")?
            .execute(params![tenant, device])?;
        for (position, sub) in record.subscriptions.iter().enumerate() {
            tx.prepare_cached(
                "INSERT INTO device_subscriptions (tenant, device_id, position, collection, \
                 priority, mode) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                tenant,
                device,
                to_i64(position as u64),
                sub.collection.as_str(),
                sub.priority.code(),
                i64::from(sub.mode == SyncMode::OnDemand),
            ])?;
        }
        tx.prepare_cached("DELETE FROM device_deferred WHERE tenant = ?1 AND device_id = ?2")?
            .execute(params![tenant, device])?;
        for entry in record.deferred.list.iter().take(DEFERRED_LISTED) {
            tx.prepare_cached(
                "INSERT INTO device_deferred (tenant, device_id, doc_id, priority, bytes, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                tenant,
                device,
                entry.doc.to_string(),
                entry.priority.code(),
                to_i64(entry.bytes),
                i64::from(entry.reason.code()),
            ])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn touch_device(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        at_ms: u64,
        synced: bool,
    ) -> Result<(), StorageError> {
        let tenant = tenant.as_str();
        self.conn
            .lock()
            .prepare_cached(
                "UPDATE devices SET last_seen = max(last_seen, ?3), \
                 last_sync = CASE WHEN ?4 THEN ?3 ELSE last_sync END \
                 WHERE tenant = ?1 AND device_id = ?2",
            )?
            .execute(params![
                tenant,
                device.as_bytes().as_slice(),
                to_i64(at_ms),
                synced
            ])?;
        Ok(())
    }

    fn devices(
        &self,
        tenant: Option<&Tenant>,
    ) -> Result<Vec<(Tenant, DeviceRecord)>, StorageError> {
        let tenant = tenant.map(Tenant::as_str);
        let conn = self.conn.lock();
        type Row = (
            String,
            Vec<u8>,
            String,
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            bool,
            bool,
            i64,
            i64,
            Option<i64>,
            Option<i64>,
            i64,
            i64,
        );
        let rows: Vec<Row> = conn
            .prepare_cached(
                "SELECT tenant, device_id, user, class, storage_budget, download, upload, metered, \
                 realtime, first_seen, last_seen, last_sync, metered_max_doc_bytes, deferred_docs, \
                 deferred_bytes FROM devices \
                 WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, last_seen DESC",
            )?
            .query_map(params![tenant], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                    r.get(12)?,
                    r.get(13)?,
                    r.get(14)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (ten, dev, user, class, budget, down, up, metered, realtime, first, last, sync) = (
                row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10,
                row.11,
            );
            let (threshold, deferred_docs, deferred_bytes) = (row.12, row.13, row.14);
            let device =
                DeviceId::try_from_slice(&dev).map_err(|e| corrupt("devices", e.to_string()))?;
            let subs = conn
                .prepare_cached(
                    "SELECT collection, priority, mode FROM device_subscriptions \
                     WHERE tenant = ?1 AND device_id = ?2 ORDER BY position",
                )?
                .query_map(params![ten, dev], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .map(|(collection, priority, mode)| {
                    Ok(CollectionSubscription {
                        collection: Collection::new(collection)
                            .map_err(|e| corrupt("device_subscriptions", e.to_string()))?,
                        priority: u8::try_from(priority)
                            .ok()
                            .and_then(Priority::from_code)
                            .ok_or_else(|| {
                                corrupt("device_subscriptions", format!("priority {priority}"))
                            })?,
                        mode: if mode == 1 {
                            SyncMode::OnDemand
                        } else {
                            SyncMode::Eager
                        },
                    })
                })
                .collect::<Result<Vec<_>, StorageError>>()?;
            let list = conn
                .prepare_cached(
                    "SELECT doc_id, priority, bytes, reason FROM device_deferred \
                     WHERE tenant = ?1 AND device_id = ?2 ORDER BY priority DESC, doc_id",
                )?
                .query_map(params![ten, dev], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .map(|(doc, priority, bytes, reason)| {
                    let bad = |what: String| corrupt("device_deferred", what);
                    Ok(DeferredEntry {
                        doc: doc
                            .parse()
                            .map_err(|e: syncline_protocol::IdError| bad(e.to_string()))?,
                        priority: u8::try_from(priority)
                            .ok()
                            .and_then(Priority::from_code)
                            .ok_or_else(|| bad(format!("priority {priority}")))?,
                        bytes: to_u64(bytes),
                        reason: u8::try_from(reason)
                            .ok()
                            .and_then(DeferReason::from_code)
                            .ok_or_else(|| bad(format!("reason {reason}")))?,
                    })
                })
                .collect::<Result<Vec<_>, StorageError>>()?;
            out.push((
                Tenant::new(&ten).map_err(|e| corrupt("devices", e.to_string()))?,
                DeviceRecord {
                    device,
                    user,
                    profile: Profile {
                        class: class_from(class)?,
                        storage_budget_bytes: budget.map(to_u64),
                        download_bytes_per_s: down.map(to_u64),
                        upload_bytes_per_s: up.map(to_u64),
                        metered,
                        realtime,
                        metered_max_doc_bytes: threshold.map(to_u64),
                    },
                    subscriptions: subs,
                    deferred: Deferred {
                        docs: to_u64(deferred_docs),
                        bytes: to_u64(deferred_bytes),
                        list,
                    },
                    first_seen_ms: to_u64(first),
                    last_seen_ms: to_u64(last),
                    last_sync_ms: sync.map(to_u64),
                },
            ));
        }
        Ok(out)
    }

    fn set_cursor(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        collection: &Collection,
        seq: u64,
    ) -> Result<(), StorageError> {
        let tenant = tenant.as_str();
        self.conn
            .lock()
            .prepare_cached(
                "INSERT INTO cursors (tenant, device_id, collection, seq) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (tenant, device_id, collection) DO UPDATE SET seq = excluded.seq",
            )?
            .execute(params![
                tenant,
                device.as_bytes().as_slice(),
                collection.as_str(),
                to_i64(seq)
            ])?;
        Ok(())
    }

    fn cursors(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
    ) -> Result<Vec<(Collection, u64)>, StorageError> {
        let tenant = tenant.as_str();
        let conn = self.conn.lock();
        let rows = conn
            .prepare_cached(
                "SELECT collection, seq FROM cursors WHERE tenant = ?1 AND device_id = ?2 ORDER BY collection",
            )?
            .query_map(params![tenant, device.as_bytes().as_slice()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(c, seq)| {
                Ok((
                    Collection::new(c).map_err(|e| corrupt("cursors", e.to_string()))?,
                    to_u64(seq),
                ))
            })
            .collect()
    }

    fn save_sync_states(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        states: &[(DocId, Vec<u8>)],
    ) -> Result<(), StorageError> {
        let tenant = tenant.as_str();
        if states.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO sync_states (tenant, device_id, collection, doc_id, state) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant, device_id, collection, doc_id) \
                 DO UPDATE SET state = excluded.state",
            )?;
            for (doc, state) in states {
                stmt.execute(params![
                    tenant,
                    device.as_bytes().as_slice(),
                    doc.collection().as_str(),
                    doc.id(),
                    state
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn load_sync_state(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        doc: &DocId,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let tenant = tenant.as_str();
        Ok(self
            .conn
            .lock()
            .prepare_cached(
                "SELECT state FROM sync_states WHERE tenant = ?1 AND device_id = ?2 \
                 AND collection = ?3 AND doc_id = ?4",
            )?
            .query_row(
                params![
                    tenant,
                    device.as_bytes().as_slice(),
                    doc.collection().as_str(),
                    doc.id()
                ],
                |r| r.get(0),
            )
            .optional()?)
    }
}
