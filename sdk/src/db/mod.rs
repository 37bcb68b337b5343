//! The SQLite layer: the only module that knows SQL.
//!
//! One file per account, in WAL mode. Each document is a row in `documents` (metadata, current
//! heads, sizes), an optional compacted Automerge snapshot in `snapshots`, and the incremental
//! change chunks written since that snapshot in `chunks`. `acks` holds, per relay, the heads that
//! relay has durably acknowledged; a document is pending while no relay has acknowledged its
//! current heads, which SQL can answer without loading any document.
//!
//! Reads go through a read-only connection; every write goes through the group-commit
//! [`writer`], and returns only once its transaction is committed with the configured
//! [`Durability`].

mod schema;
mod sync_history;
mod writer;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use syncline_protocol::messages::{Cursor, DeferReason};
use syncline_protocol::{Collection, DeviceId, DocId, Priority};

use crate::{Error, Heads, Result};
pub use sync_history::{KEPT_SYNC_RECORDS, MAX_REFUSED_LISTED, SyncEnd, SyncRecord};
pub(crate) use writer::CommitCounts;
use writer::{Announcement, Writer};

#[cfg(test)]
mod tests;

/// How hard a commit works to survive a power cut. Either way, a write whose call returned
/// survives the process being killed: the commit is in the WAL, in the operating system's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`: every group commit fsyncs the WAL before the writes return, so a
    /// power cut or kernel crash loses nothing whose call returned. The default.
    #[default]
    Full,
    /// `synchronous = NORMAL`: the WAL is fsynced only at checkpoints. A power cut can lose the
    /// writes of the last moments (never corrupting the file); a killed process loses nothing.
    Normal,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// A document's row id in `documents`.
pub(crate) type DocKey = i64;

/// Which side a change came from, for the `*_change_at` timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Local,
    Remote,
}

/// A document's metadata row.
#[derive(Debug, Clone)]
pub(crate) struct DocRow {
    pub key: DocKey,
    pub id: DocId,
    pub priority: Priority,
    pub deleted: bool,
    pub snapshot_bytes: u64,
    pub chunk_count: u64,
    pub chunk_bytes: u64,
    pub created_at: i64,
    pub local_change_at: Option<i64>,
    pub remote_change_at: Option<i64>,
    /// Its content was evicted (the row stays; the content is fetched again when opened).
    pub evicted: bool,
    /// Bytes of this device's own changes kept apart ([`crate::store::kept`]): while its
    /// content is evicted, and afterwards for those that did not apply yet; 0 if none.
    pub kept_bytes: u64,
}

/// A document's stored content: the snapshot, then the chunks in the order written.
pub(crate) struct DocContent {
    pub snapshot: Option<Vec<u8>>,
    pub chunks: Vec<Vec<u8>>,
}

/// How a write changes a document's stored content.
pub(crate) enum ContentWrite {
    /// Append one incremental chunk.
    Append(Vec<u8>),
    /// Replace the snapshot and drop every chunk (compaction).
    Compact(Vec<u8>),
}

/// One durable change to an existing document.
pub(crate) struct DocUpdate {
    pub content: ContentWrite,
    pub heads: Heads,
    pub deleted: bool,
    pub origin: Origin,
    pub at: i64,
}

/// A document to insert, with its first chunk.
pub(crate) struct NewDoc {
    pub id: DocId,
    pub priority: Priority,
    pub chunk: Vec<u8>,
    pub heads: Heads,
    pub deleted: bool,
    pub origin: Origin,
    pub at: i64,
}

/// The document a [`BatchWrite::Ack`] is for.
pub(crate) enum AckTarget {
    /// A stored document.
    Key(DocKey),
    /// The document of the latest [`BatchWrite::Insert`] before it in the same batch.
    LastInserted,
}

/// One write of a [`Database::commit_batch`].
pub(crate) enum BatchWrite {
    /// A new document.
    Insert(NewDoc),
    /// New content for an existing document.
    Update(DocKey, DocUpdate),
    /// The heads a relay has acknowledged for a document.
    Ack(AckTarget, String, Heads),
    /// The change sequence a relay's collection has been synced to (never moves back), with
    /// the epoch of the relay's data it is one of and the relay's receipt.
    Cursor(String, Cursor),
    /// The sequence number a relay gave this device's acknowledged changes in a collection
    /// (the highest is kept), with its epoch and receipt.
    AckedPosition(String, Cursor),
    /// A relay announced a document and held it back (replaces an earlier announcement).
    Defer(String, DeferredDoc),
    /// A relay's held back document arrived, or is no longer wanted.
    Undefer(String, DocId),
    /// Drops a document's content, keeping its row and acknowledgements, and keeps this
    /// device's own changes to it apart (encoded by [`crate::store::kept`]).
    Evict(DocKey, Vec<u8>),
    /// The kept changes of a document that did not apply yet (`None`: all did).
    Kept(DocKey, Option<Vec<u8>>),
    /// A connection ended: its record joins the history of syncs.
    SyncRecord(Box<SyncRecord>),
    /// Whether a document has conflicts now.
    Conflicted(DocKey, bool),
}

/// A document a relay announced and held back; see [`crate::Store::deferred`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredDoc {
    /// The document.
    pub doc: DocId,
    /// Its sync priority on the relay's plan.
    pub priority: Priority,
    /// Its approximate size on the wire.
    pub bytes: u64,
    /// Why it was held back.
    pub reason: DeferReason,
    /// When it was (last) announced, on the store's clock.
    pub announced_at_ms: u64,
    /// When the relay last stored a change to it (the relay's clock), if it said.
    pub changed_ms: Option<u64>,
}

/// Options for [`Database::open`].
pub(crate) struct DbOptions {
    pub durability: Durability,
    /// The device id for a store this open creates (random when `None`).
    pub device_id: Option<DeviceId>,
    /// When this open happens (the store's clock), stamped on a new device row.
    pub now_ms: i64,
}

/// An open store file: a read connection, the group-commit writer, the lock and the device
/// identity.
pub(crate) struct Database {
    reader: Mutex<Connection>,
    writer: Writer,
    device_id: DeviceId,
    // Held for the lifetime of the store: the advisory lock that keeps a second process out.
    _lock: File,
}

const DOC_COLUMNS: &str = "doc_key, collection, doc_id, priority, deleted, snapshot_bytes, \
                           chunk_count, chunk_bytes, created_at, local_change_at, remote_change_at, \
                           evicted, kept_bytes";

impl Database {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// [`Error::Locked`] if another process has it open, [`Error::NotAStore`],
    /// [`Error::SchemaTooNew`], or the underlying SQLite or I/O error.
    pub(crate) fn open(path: &Path, options: &DbOptions) -> Result<Self> {
        let lock = lock_store(path)?;
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        schema::prepare(&mut conn, path)?;
        configure(&conn, options)?;
        let device_id = load_or_create_device(&conn, options.device_id, options.now_ms)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(Duration::from_secs(10))?;
        stable_plans(&reader)?;
        Ok(Self {
            reader: Mutex::new(reader),
            writer: Writer::new(conn),
            device_id,
            _lock: lock,
        })
    }

    /// Announces a write about to be prepared, so that a concurrent group commit waits for it
    /// (briefly) instead of committing without it. Take it once nothing but preparing the
    /// write stands between the caller and [`Database::update_document`] (in particular, with
    /// the document's lock held), and hold it until the write returns.
    pub(crate) fn announce_write(&self) -> Announcement<'_> {
        self.writer.announce()
    }

    /// What has been committed since the store was opened.
    pub(crate) fn commit_counts(&self) -> CommitCounts {
        self.writer.commit_counts()
    }

    /// This device's identity, created on first open.
    pub(crate) fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The metadata row of `id`, if the document exists (deleted or not).
    pub(crate) fn lookup(&self, id: &DocId) -> Result<Option<DocRow>> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DOC_COLUMNS} FROM documents WHERE collection = ?1 AND doc_id = ?2"
        ))?;
        stmt.query_row(params![id.collection().as_str(), id.id()], read_doc_row)
            .optional()?
            .transpose()
    }

    /// The stored heads of a document.
    pub(crate) fn heads(&self, key: DocKey) -> Result<Heads> {
        let conn = self.reader.lock();
        let bytes: Vec<u8> = conn
            .prepare_cached("SELECT heads FROM documents WHERE doc_key = ?1")?
            .query_row([key], |r| r.get(0))?;
        Heads::from_bytes(&bytes)
    }

    /// The snapshot and chunks of a document.
    pub(crate) fn load_content(&self, key: DocKey) -> Result<DocContent> {
        let conn = self.reader.lock();
        let snapshot = conn
            .prepare_cached("SELECT data FROM snapshots WHERE doc_key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        let chunks = conn
            .prepare_cached("SELECT data FROM chunks WHERE doc_key = ?1 ORDER BY seq")?
            .query_map([key], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<Vec<u8>>>>()?;
        Ok(DocContent { snapshot, chunks })
    }

    /// Every document of `collection`, deleted ones included, ordered by creation. A row whose
    /// identifiers do not validate is skipped with a warning, so one bad row never hides the
    /// rest.
    pub(crate) fn list(&self, collection: &Collection) -> Result<Vec<DocRow>> {
        self.query_docs(
            &format!(
                "SELECT {DOC_COLUMNS} FROM documents WHERE collection = ?1 \
                 ORDER BY created_at, doc_key"
            ),
            params![collection.as_str()],
        )
    }

    /// Every document whose current heads no relay has acknowledged, but evicted ones that
    /// kept no changes of this device (there is nothing of them to send).
    pub(crate) fn pending(&self) -> Result<Vec<DocRow>> {
        self.query_docs(
            &format!(
                "SELECT {DOC_COLUMNS} FROM documents d WHERE NOT EXISTS \
                 (SELECT 1 FROM acks a WHERE a.doc_key = d.doc_key AND a.heads = d.heads) \
                 AND (d.evicted = 0 OR d.kept_bytes > 0) \
                 ORDER BY priority DESC, doc_key"
            ),
            [],
        )
    }

    /// The heads each relay has acknowledged for a document.
    pub(crate) fn acked_heads(&self, key: DocKey) -> Result<Vec<(String, Heads)>> {
        let conn = self.reader.lock();
        let rows = conn
            .prepare_cached("SELECT relay, heads FROM acks WHERE doc_key = ?1 ORDER BY relay")?
            .query_map([key], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(relay, bytes)| Ok((relay, Heads::from_bytes(&bytes)?)))
            .collect()
    }

    /// Inserts a new document with its first chunk; returns its key.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if the id is taken.
    pub(crate) fn insert_document(&self, doc: NewDoc) -> Result<DocKey> {
        self.writer.run(move |conn| insert_document(conn, doc))
    }

    pub(crate) fn update_document(&self, key: DocKey, update: DocUpdate) -> Result<()> {
        self.writer
            .run(move |conn| update_document(conn, key, &update))
    }

    /// Commits several writes in one transaction (the sync engine's batches): every write
    /// lands, or none. Returns the new key of each [`BatchWrite::Insert`], in order.
    pub(crate) fn commit_batch(&self, writes: Vec<BatchWrite>) -> Result<Vec<DocKey>> {
        self.writer.run(move |conn| {
            let mut keys = Vec::new();
            for write in writes {
                match write {
                    BatchWrite::Insert(doc) => keys.push(insert_document(conn, doc)?),
                    BatchWrite::Update(key, update) => update_document(conn, key, &update)?,
                    BatchWrite::Ack(target, relay, heads) => {
                        let key = match target {
                            AckTarget::Key(key) => key,
                            AckTarget::LastInserted => *keys.last().ok_or_else(|| {
                                Error::CommitFailed(
                                    "an ack for an insert that is not in the batch".into(),
                                )
                            })?,
                        };
                        record_ack(conn, key, &relay, &heads)?;
                    }
                    BatchWrite::Defer(relay, d) => {
                        conn.prepare_cached(
                            "INSERT INTO deferred (relay, doc_id, priority, bytes, reason, \
                             announced_at, changed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                             ON CONFLICT (relay, doc_id) DO UPDATE SET priority = \
                             excluded.priority, bytes = excluded.bytes, reason = excluded.reason, \
                             announced_at = excluded.announced_at, \
                             changed_ms = coalesce(excluded.changed_ms, changed_ms)",
                        )?
                        .execute(params![
                            relay,
                            d.doc.to_string(),
                            d.priority.code(),
                            i64::try_from(d.bytes).unwrap_or(i64::MAX),
                            i64::from(d.reason.code()),
                            i64::try_from(d.announced_at_ms).unwrap_or(i64::MAX),
                            d.changed_ms.map(|c| i64::try_from(c).unwrap_or(i64::MAX)),
                        ])?;
                    }
                    BatchWrite::Evict(key, kept) => {
                        // Acknowledgements stay: what relays hold of it is unchanged.
                        for sql in [
                            "DELETE FROM snapshots WHERE doc_key = ?1",
                            "DELETE FROM chunks WHERE doc_key = ?1",
                            "UPDATE documents SET evicted = 1, snapshot_bytes = 0, \
                             chunk_count = 0, chunk_bytes = 0 WHERE doc_key = ?1",
                        ] {
                            conn.prepare_cached(sql)?.execute([key])?;
                        }
                        write_kept(conn, key, (!kept.is_empty()).then_some(kept))?;
                    }
                    BatchWrite::Kept(key, kept) => write_kept(conn, key, kept)?,
                    BatchWrite::Undefer(relay, doc) => {
                        conn.prepare_cached(
                            "DELETE FROM deferred WHERE relay = ?1 AND doc_id = ?2",
                        )?
                        .execute(params![relay, doc.to_string()])?;
                    }
                    BatchWrite::Cursor(relay, position) => {
                        advance_position(conn, "sync_cursors", &relay, &position)?;
                    }
                    BatchWrite::AckedPosition(relay, position) => {
                        advance_position(conn, "acked_positions", &relay, &position)?;
                    }
                    BatchWrite::SyncRecord(record) => sync_history::append(conn, &record)?,
                    BatchWrite::Conflicted(key, true) => {
                        conn.prepare_cached(
                            "INSERT INTO conflicted (doc_key) VALUES (?1) ON CONFLICT DO NOTHING",
                        )?
                        .execute([key])?;
                    }
                    BatchWrite::Conflicted(key, false) => {
                        conn.prepare_cached("DELETE FROM conflicted WHERE doc_key = ?1")?
                            .execute([key])?;
                    }
                }
            }
            Ok(keys)
        })
    }

    /// The kept changes of a document ([`crate::store::kept`]), if it has any.
    pub(crate) fn kept_changes(&self, key: DocKey) -> Result<Option<Vec<u8>>> {
        let conn = self.reader.lock();
        Ok(conn
            .prepare_cached("SELECT changes FROM kept_changes WHERE doc_key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    /// Evicted documents of `collections` with kept changes whose current heads `relay` has
    /// acknowledged, least recently changed first: what the storage budget drops last.
    pub(crate) fn kept_acknowledged(
        &self,
        relay: &str,
        collections: &[Collection],
    ) -> Result<Vec<DocRow>> {
        self.acknowledged_docs(relay, collections, "d.evicted = 1 AND d.kept_bytes > 0")
    }

    /// Evicted documents with kept changes whose current heads `relay` has not acknowledged
    /// (it lost them, restored from an older backup), in id order.
    pub(crate) fn kept_unacknowledged(&self, relay: &str) -> Result<Vec<DocRow>> {
        self.query_docs(
            &format!(
                "SELECT {} FROM documents d \
                 LEFT JOIN acks a ON a.doc_key = d.doc_key AND a.relay = ?1 \
                 WHERE d.evicted = 1 AND d.kept_bytes > 0 \
                 AND (a.heads IS NULL OR a.heads != d.heads) \
                 ORDER BY d.collection, d.doc_id",
                prefixed_doc_columns()
            ),
            params![relay],
        )
    }

    /// The documents recorded as conflicted, in id order (a corrupt row is skipped).
    pub(crate) fn conflicted_documents(&self) -> Result<Vec<DocId>> {
        let conn = self.reader.lock();
        let rows = conn
            .prepare_cached(
                "SELECT d.collection, d.doc_id FROM conflicted c \
                 JOIN documents d ON d.doc_key = c.doc_key ORDER BY d.collection, d.doc_id",
            )?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(collection, id)| {
                Collection::new(collection)
                    .and_then(|c| DocId::new(c, id))
                    .map_err(|e| tracing::warn!(error = %e, "skipping a corrupt conflicted row"))
                    .ok()
            })
            .collect())
    }

    /// The documents relays announced and held back (`relay`'s, or every relay's), highest
    /// priority first, then the most recently announced. A corrupt row is skipped and logged.
    pub(crate) fn deferred(&self, relay: Option<&str>) -> Result<Vec<DeferredDoc>> {
        let conn = self.reader.lock();
        let rows = conn
            .prepare_cached(
                "SELECT doc_id, priority, bytes, reason, announced_at, changed_ms FROM deferred \
                 WHERE ?1 IS NULL OR relay = ?1 ORDER BY priority DESC, announced_at DESC, doc_id",
            )?
            .query_map([relay], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (doc, priority, bytes, reason, at, changed) in rows {
            let parsed = doc.parse::<DocId>().ok().zip(
                u8::try_from(priority)
                    .ok()
                    .and_then(Priority::from_code)
                    .zip(u8::try_from(reason).ok().and_then(DeferReason::from_code)),
            );
            match parsed {
                Some((doc, (priority, reason))) => {
                    // One document announced by several relays is listed once.
                    if out.iter().any(|d: &DeferredDoc| d.doc == doc) {
                        continue;
                    }
                    out.push(DeferredDoc {
                        doc,
                        priority,
                        bytes: u64::try_from(bytes).unwrap_or(0),
                        reason,
                        announced_at_ms: u64::try_from(at).unwrap_or(0),
                        changed_ms: changed.and_then(|c| u64::try_from(c).ok()),
                    });
                }
                None => tracing::warn!(%doc, "skipping a corrupt deferred row"),
            }
        }
        Ok(out)
    }

    /// Documents of `collections` whose content may be evicted: present, with their current
    /// heads acknowledged by `relay`, and no kept changes still to apply; least recently
    /// changed first.
    pub(crate) fn evictable(&self, relay: &str, collections: &[Collection]) -> Result<Vec<DocRow>> {
        self.acknowledged_docs(relay, collections, "d.evicted = 0 AND d.kept_bytes = 0")
    }

    /// Documents of `collections` whose current heads `relay` has acknowledged and that match
    /// `filter` (SQL over `documents d`), least recently changed first.
    fn acknowledged_docs(
        &self,
        relay: &str,
        collections: &[Collection],
        filter: &str,
    ) -> Result<Vec<DocRow>> {
        let mut rows = Vec::new();
        for collection in collections {
            rows.extend(self.query_docs(
                &format!(
                    "SELECT {} FROM documents d JOIN acks a ON a.doc_key = d.doc_key \
                     AND a.relay = ?2 AND a.heads = d.heads \
                     WHERE d.collection = ?1 AND {filter}",
                    prefixed_doc_columns()
                ),
                params![collection.as_str(), relay],
            )?);
        }
        rows.sort_by_key(|r| {
            r.created_at
                .max(r.local_change_at.unwrap_or(0))
                .max(r.remote_change_at.unwrap_or(0))
        });
        Ok(rows)
    }

    /// Bytes of document content in the store (snapshots plus chunks), and per collection.
    pub(crate) fn content_bytes(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.reader.lock();
        let rows = conn
            .prepare_cached(
                "SELECT collection, sum(snapshot_bytes + chunk_bytes + kept_bytes) FROM documents \
                 GROUP BY collection",
            )?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .map(|(c, b)| (c, u64::try_from(b).unwrap_or(0)))
            .collect())
    }

    /// The cursors recorded for `relay`, with their epochs and receipts.
    pub(crate) fn cursors(&self, relay: &str) -> Result<Vec<Cursor>> {
        self.positions(
            "SELECT collection, seq, epoch, receipt FROM sync_cursors WHERE relay = ?1",
            relay,
        )
    }

    /// The highest sequence number `relay` gave this device's acknowledged changes, per
    /// collection, with its epoch.
    pub(crate) fn acked_positions(&self, relay: &str) -> Result<Vec<Cursor>> {
        self.positions(
            "SELECT collection, seq, epoch, receipt FROM acked_positions WHERE relay = ?1",
            relay,
        )
    }

    fn positions(&self, sql: &str, relay: &str) -> Result<Vec<Cursor>> {
        let conn = self.reader.lock();
        let rows = conn
            .prepare_cached(sql)?
            .query_map([relay], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut positions = Vec::with_capacity(rows.len());
        for (collection, seq, epoch, receipt) in rows {
            match Collection::new(collection) {
                Ok(collection) => positions.push(Cursor {
                    collection,
                    seq: u64::try_from(seq).unwrap_or(0),
                    epoch,
                    receipt,
                }),
                Err(e) => tracing::warn!(error = %e, "skipping a corrupt position row"),
            }
        }
        Ok(positions)
    }

    /// Forgets what `relay` acknowledged in `collections` (the acknowledgements of their
    /// documents, the cursors, the acknowledged positions), in one transaction: the relay lost
    /// it, and every document of them is pending for it again.
    pub(crate) fn forget_relay_positions(
        &self,
        relay: &str,
        collections: &[Collection],
    ) -> Result<()> {
        let relay = relay.to_owned();
        let collections = collections.to_vec();
        self.writer.run(move |conn| {
            for collection in &collections {
                for sql in [
                    "DELETE FROM acks WHERE relay = ?1 AND doc_key IN \
                     (SELECT doc_key FROM documents WHERE collection = ?2)",
                    "DELETE FROM sync_cursors WHERE relay = ?1 AND collection = ?2",
                    "DELETE FROM acked_positions WHERE relay = ?1 AND collection = ?2",
                ] {
                    conn.prepare_cached(sql)?
                        .execute(params![relay, collection.as_str()])?;
                }
            }
            Ok(())
        })
    }

    /// Documents of `collection` whose current heads `relay` has not acknowledged, with the
    /// heads it has (empty if none), highest priority first.
    pub(crate) fn unacknowledged(
        &self,
        relay: &str,
        collection: &Collection,
    ) -> Result<Vec<(DocId, Heads)>> {
        let conn = self.reader.lock();
        let rows = conn
            .prepare_cached(
                "SELECT d.collection, d.doc_id, a.heads FROM documents d \
                 LEFT JOIN acks a ON a.doc_key = d.doc_key AND a.relay = ?1 \
                 WHERE d.collection = ?2 AND (a.heads IS NULL OR a.heads != d.heads) \
                 ORDER BY d.priority DESC, d.doc_key",
            )?
            .query_map(params![relay, collection.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut docs = Vec::with_capacity(rows.len());
        for (collection, id, heads) in rows {
            let parsed = Collection::new(collection)
                .and_then(|c| DocId::new(c, id))
                .map_err(Error::from)
                .and_then(|doc| {
                    let heads = heads.map_or(Ok(Heads::default()), |b| Heads::from_bytes(&b))?;
                    Ok((doc, heads))
                });
            match parsed {
                Ok(row) => docs.push(row),
                Err(e) => tracing::warn!(error = %e, "skipping a corrupt document row"),
            }
        }
        Ok(docs)
    }

    pub(crate) fn set_priority(&self, key: DocKey, priority: Priority) -> Result<()> {
        self.writer.run(move |conn| {
            conn.prepare_cached("UPDATE documents SET priority = ?2 WHERE doc_key = ?1")?
                .execute(params![key, priority.code()])?;
            Ok(())
        })
    }

    /// Records the heads `relay` has durably acknowledged for a document.
    pub(crate) fn record_ack(&self, key: DocKey, relay: String, heads: Heads) -> Result<()> {
        self.writer
            .run(move |conn| record_ack(conn, key, &relay, &heads))
    }

    fn query_docs(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<DocRow>> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, read_doc_row)?;
        let mut docs = Vec::new();
        for row in rows {
            match row? {
                Ok(doc) => docs.push(doc),
                Err(e) => tracing::warn!(error = %e, "skipping a corrupt document row"),
            }
        }
        Ok(docs)
    }
}

/// Reads a `documents` row. The outer result is SQLite's; the inner one says whether the
/// row's contents validate.
fn insert_document(conn: &Connection, doc: NewDoc) -> Result<DocKey> {
    let (local_at, remote_at) = stamps(doc.origin, doc.at);
    let inserted = conn
        .prepare_cached(
            "INSERT INTO documents (collection, doc_id, priority, deleted, heads, \
             chunk_count, chunk_bytes, created_at, local_change_at, remote_change_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?9) \
             ON CONFLICT (collection, doc_id) DO NOTHING",
        )?
        .execute(params![
            doc.id.collection().as_str(),
            doc.id.id(),
            doc.priority.code(),
            doc.deleted,
            doc.heads.to_bytes(),
            byte_len(&doc.chunk),
            doc.at,
            local_at,
            remote_at,
        ])?;
    if inserted == 0 {
        return Err(Error::AlreadyExists(doc.id));
    }
    let key = conn.last_insert_rowid();
    conn.prepare_cached("INSERT INTO chunks (doc_key, seq, data) VALUES (?1, 0, ?2)")?
        .execute(params![key, doc.chunk])?;
    Ok(key)
}

fn update_document(conn: &Connection, key: DocKey, update: &DocUpdate) -> Result<()> {
    let (local_at, remote_at) = stamps(update.origin, update.at);
    match &update.content {
        ContentWrite::Append(chunk) => {
            // The chunk's sequence number is the count of chunks before it.
            conn.prepare_cached(
                "INSERT INTO chunks (doc_key, seq, data) \
                 SELECT doc_key, chunk_count, ?2 FROM documents WHERE doc_key = ?1",
            )?
            .execute(params![key, chunk])?;
            conn.prepare_cached(
                "UPDATE documents SET heads = ?2, deleted = ?3, \
                 chunk_count = chunk_count + 1, chunk_bytes = chunk_bytes + ?4, \
                 local_change_at = coalesce(?5, local_change_at), \
                 remote_change_at = coalesce(?6, remote_change_at) WHERE doc_key = ?1",
            )?
            .execute(params![
                key,
                update.heads.to_bytes(),
                update.deleted,
                byte_len(chunk),
                local_at,
                remote_at
            ])?;
        }
        ContentWrite::Compact(snapshot) => {
            conn.prepare_cached("DELETE FROM chunks WHERE doc_key = ?1")?
                .execute([key])?;
            conn.prepare_cached(
                "INSERT INTO snapshots (doc_key, data) VALUES (?1, ?2) \
                 ON CONFLICT (doc_key) DO UPDATE SET data = excluded.data",
            )?
            .execute(params![key, snapshot])?;
            // A whole snapshot also restores an evicted document's content.
            conn.prepare_cached(
                "UPDATE documents SET heads = ?2, deleted = ?3, snapshot_bytes = ?4, \
                 chunk_count = 0, chunk_bytes = 0, evicted = 0, \
                 local_change_at = coalesce(?5, local_change_at), \
                 remote_change_at = coalesce(?6, remote_change_at) WHERE doc_key = ?1",
            )?
            .execute(params![
                key,
                update.heads.to_bytes(),
                update.deleted,
                byte_len(snapshot),
                local_at,
                remote_at
            ])?;
        }
    }
    Ok(())
}

fn record_ack(conn: &Connection, key: DocKey, relay: &str, heads: &Heads) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO acks (doc_key, relay, heads) VALUES (?1, ?2, ?3) \
         ON CONFLICT (doc_key, relay) DO UPDATE SET heads = excluded.heads",
    )?
    .execute(params![key, relay, heads.to_bytes()])?;
    Ok(())
}

fn read_doc_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<DocRow>> {
    let key: DocKey = r.get(0)?;
    let collection: String = r.get(1)?;
    let doc_id: String = r.get(2)?;
    let priority: i64 = r.get(3)?;
    let id = match Collection::new(collection).and_then(|c| DocId::new(c, doc_id)) {
        Ok(id) => id,
        Err(e) => return Ok(Err(e.into())),
    };
    let Some(priority) = u8::try_from(priority).ok().and_then(Priority::from_code) else {
        return Ok(Err(Error::CorruptDocument {
            doc: id,
            reason: format!("priority code {priority}"),
        }));
    };
    Ok(Ok(DocRow {
        key,
        id,
        priority,
        deleted: r.get(4)?,
        snapshot_bytes: get_count(r, 5)?,
        chunk_count: get_count(r, 6)?,
        chunk_bytes: get_count(r, 7)?,
        created_at: r.get(8)?,
        local_change_at: r.get(9)?,
        remote_change_at: r.get(10)?,
        evicted: r.get(11)?,
        kept_bytes: get_count(r, 12)?,
    }))
}

/// [`DOC_COLUMNS`], each prefixed `d.` (for queries that join `documents d`).
fn prefixed_doc_columns() -> String {
    DOC_COLUMNS
        .split(", ")
        .map(|c| format!("d.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replaces a document's kept changes (`None` or empty: it has none).
fn write_kept(conn: &Connection, key: DocKey, kept: Option<Vec<u8>>) -> rusqlite::Result<()> {
    match kept.filter(|k| !k.is_empty()) {
        Some(changes) => {
            conn.prepare_cached(
                "INSERT INTO kept_changes (doc_key, changes) VALUES (?1, ?2) \
                 ON CONFLICT (doc_key) DO UPDATE SET changes = excluded.changes",
            )?
            .execute(params![key, changes])?;
            conn.prepare_cached("UPDATE documents SET kept_bytes = ?2 WHERE doc_key = ?1")?
                .execute(params![key, byte_len(&changes)])?;
        }
        None => {
            conn.prepare_cached("DELETE FROM kept_changes WHERE doc_key = ?1")?
                .execute([key])?;
            conn.prepare_cached("UPDATE documents SET kept_bytes = 0 WHERE doc_key = ?1")?
                .execute([key])?;
        }
    }
    Ok(())
}

/// Reads a non-negative count; SQLite integers are signed, and a negative one reads as 0.
fn get_count(r: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(r.get::<_, i64>(index)?).unwrap_or(0))
}

fn stamps(origin: Origin, at: i64) -> (Option<i64>, Option<i64>) {
    match origin {
        Origin::Local => (Some(at), None),
        Origin::Remote => (None, Some(at)),
    }
}

fn byte_len(bytes: &[u8]) -> i64 {
    i64::try_from(bytes.len()).expect("a chunk is far smaller than i64::MAX bytes")
}

fn configure(conn: &Connection, options: &DbOptions) -> Result<()> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            mode,
            "WAL journal mode is unavailable; using the reported mode"
        );
    }
    conn.pragma_update(None, "synchronous", options.durability.pragma())?;
    conn.pragma_update(None, "foreign_keys", true)?;
    stable_plans(conn)?;
    Ok(())
}

/// Keeps each cached statement's query plan (SQLite's query planner stability guarantee).
/// Without it, SQLite marks statements whose plan depends on a bound value (`col = ?`,
/// `LIMIT ?`) to be prepared again whenever they are bound anew, and the statement cache
/// clears bindings on every return: a quarter of a statement's cost went to parsing it again.
pub(crate) fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

fn load_or_create_device(
    conn: &Connection,
    requested: Option<DeviceId>,
    now_ms: i64,
) -> Result<DeviceId> {
    let existing: Option<Vec<u8>> = conn
        .query_row(
            "SELECT device_id FROM device WHERE singleton = 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(bytes) = existing {
        let stored = DeviceId::try_from_slice(&bytes)?;
        return match requested {
            Some(requested) if requested != stored => {
                Err(Error::DeviceMismatch { stored, requested })
            }
            _ => Ok(stored),
        };
    }
    let id = requested.unwrap_or_else(|| DeviceId::from_bytes(*uuid::Uuid::new_v4().as_bytes()));
    conn.execute(
        "INSERT INTO device (singleton, device_id, created_at) VALUES (1, ?1, ?2)",
        params![id.as_bytes().as_slice(), now_ms],
    )?;
    tracing::info!(device = %id, "created device identity");
    Ok(id)
}

/// Takes the advisory lock that keeps two processes from writing with the same actor id.
fn lock_store(path: &Path) -> Result<File> {
    let mut lock_path = PathBuf::from(path).into_os_string();
    lock_path.push(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: path.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Moves a relay's position in a collection forward (never back) in `table`: the epoch and
/// receipt go with the highest sequence number (SET reads the old row's values).
fn advance_position(
    conn: &Connection,
    table: &str,
    relay: &str,
    position: &Cursor,
) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO {table} (relay, collection, seq, epoch, receipt) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (relay, collection) DO UPDATE SET \
         epoch = CASE WHEN excluded.seq >= seq THEN excluded.epoch ELSE epoch END, \
         receipt = CASE WHEN excluded.seq >= seq THEN excluded.receipt ELSE receipt END, \
         seq = max(seq, excluded.seq)"
    ))?
    .execute(params![
        relay,
        position.collection.as_str(),
        i64::try_from(position.seq).unwrap_or(i64::MAX),
        position.epoch,
        position.receipt
    ])?;
    Ok(())
}
