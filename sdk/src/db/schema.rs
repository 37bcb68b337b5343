//! The store's schema: identification, migrations keyed on `user_version`.
//!
//! A Syncline store is an SQLite file whose `application_id` is [`APPLICATION_ID`]. Migration
//! `n` (1-based) in [`MIGRATIONS`] takes the schema from version `n - 1` to `n`; each runs in its
//! own transaction together with the `user_version` bump, so a crash mid-migration leaves the
//! previous version intact.

use std::path::Path;

use rusqlite::{Connection, ErrorCode};

use crate::{Error, Result};

/// `PRAGMA application_id` of a Syncline store: "SYNC" in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x5359_4E43;

/// The migrations, oldest first. Never edit one that has shipped: append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: device identity, documents with snapshot + incremental chunks, relay acknowledgements.
    r#"
    CREATE TABLE device (
        singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
        device_id   BLOB    NOT NULL CHECK (length(device_id) = 16),
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE documents (
        doc_key          INTEGER PRIMARY KEY,
        collection       TEXT    NOT NULL,
        doc_id           TEXT    NOT NULL,
        priority         INTEGER NOT NULL DEFAULT 1,
        deleted          INTEGER NOT NULL DEFAULT 0,
        heads            BLOB    NOT NULL,
        snapshot_bytes   INTEGER NOT NULL DEFAULT 0,
        chunk_count      INTEGER NOT NULL DEFAULT 0,
        chunk_bytes      INTEGER NOT NULL DEFAULT 0,
        created_at       INTEGER NOT NULL,
        local_change_at  INTEGER,
        remote_change_at INTEGER,
        UNIQUE (collection, doc_id)
    );
    CREATE TABLE snapshots (
        doc_key INTEGER PRIMARY KEY REFERENCES documents (doc_key) ON DELETE CASCADE,
        data    BLOB NOT NULL
    );
    CREATE TABLE chunks (
        doc_key INTEGER NOT NULL REFERENCES documents (doc_key) ON DELETE CASCADE,
        seq     INTEGER NOT NULL,
        data    BLOB    NOT NULL,
        PRIMARY KEY (doc_key, seq)
    ) WITHOUT ROWID;
    CREATE TABLE acks (
        doc_key INTEGER NOT NULL REFERENCES documents (doc_key) ON DELETE CASCADE,
        relay   TEXT    NOT NULL,
        heads   BLOB    NOT NULL,
        PRIMARY KEY (doc_key, relay)
    ) WITHOUT ROWID;
    "#,
    // 2: per relay and collection, the change sequence number the device has caught up to.
    r#"
    CREATE TABLE sync_cursors (
        relay      TEXT    NOT NULL,
        collection TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        PRIMARY KEY (relay, collection)
    ) WITHOUT ROWID;
    "#,
    // 3: per relay, the documents it announced and held back (metered network, low priority,
    // on demand), with their size and reason: the app lists and fetches them.
    r#"
    CREATE TABLE deferred (
        relay      TEXT    NOT NULL,
        doc_id     TEXT    NOT NULL,
        priority   INTEGER NOT NULL,
        bytes      INTEGER NOT NULL,
        reason     INTEGER NOT NULL,
        announced_at INTEGER NOT NULL,
        changed_ms INTEGER,
        PRIMARY KEY (relay, doc_id)
    ) WITHOUT ROWID;
    "#,
    // 4: a document whose content was evicted to keep the store within its budget keeps its
    // metadata row; its content is fetched again when opened.
    r#"
    ALTER TABLE documents ADD COLUMN evicted INTEGER NOT NULL DEFAULT 0;
    "#,
    // 5: the relay's data epoch (and its receipt) of each cursor, and per relay and collection
    // the highest sequence number the relay acknowledged for this device's changes, with its
    // epoch and receipt: a relay restored from an older backup recognises them as positions
    // it lost.
    r#"
    ALTER TABLE sync_cursors ADD COLUMN epoch TEXT;
    ALTER TABLE sync_cursors ADD COLUMN receipt TEXT;
    CREATE TABLE acked_positions (
        relay      TEXT    NOT NULL,
        collection TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        epoch      TEXT,
        receipt    TEXT,
        PRIMARY KEY (relay, collection)
    ) WITHOUT ROWID;
    "#,
    // 6: the history of syncs, one row per connection (the last 200 are kept).
    r#"
    CREATE TABLE sync_history (
        id             INTEGER PRIMARY KEY,
        relay          TEXT    NOT NULL,
        session        TEXT,
        started_ms     INTEGER NOT NULL,
        ended_ms       INTEGER NOT NULL,
        docs_sent      INTEGER NOT NULL,
        docs_received  INTEGER NOT NULL,
        bytes_sent     INTEGER NOT NULL,
        bytes_received INTEGER NOT NULL,
        round_trips    INTEGER NOT NULL,
        refused_count  INTEGER NOT NULL,
        refused        TEXT    NOT NULL,
        end_kind       TEXT    NOT NULL,
        end_code       INTEGER,
        end_reason     TEXT
    );
    "#,
    // 7: the documents a merge left with concurrent values (`Store::conflicted_documents`).
    r#"
    CREATE TABLE conflicted (
        doc_key INTEGER PRIMARY KEY REFERENCES documents (doc_key) ON DELETE CASCADE
    );
    "#,
    // 8: the device's own changes to a document whose content it evicted
    // (`store::kept`): a relay restored from an older backup gets them back.
    r#"
    ALTER TABLE documents ADD COLUMN kept_bytes INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE kept_changes (
        doc_key INTEGER PRIMARY KEY REFERENCES documents (doc_key) ON DELETE CASCADE,
        changes BLOB    NOT NULL
    );
    "#,
];

/// The schema version this code writes.
pub(crate) fn latest_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).expect("a handful of migrations")
}

/// Checks that `conn` is a Syncline store (or an empty file that becomes one) and migrates it
/// to the latest schema.
///
/// # Errors
/// [`Error::NotAStore`] for any other file, [`Error::SchemaTooNew`] for a store from a newer
/// SDK, [`Error::Database`] if a migration fails (the file keeps its previous version).
pub(crate) fn prepare(conn: &mut Connection, path: &Path) -> Result<()> {
    let not_a_store = || Error::NotAStore {
        path: path.to_owned(),
    };
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => not_a_store(),
            _ => Error::Database(e),
        })?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if app_id == 0 {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 || version != 0 {
            return Err(not_a_store());
        }
    } else if app_id != APPLICATION_ID {
        return Err(not_a_store());
    }
    if version > latest_version() {
        return Err(Error::SchemaTooNew {
            found: version,
            supported: latest_version(),
        });
    }
    migrate(conn, latest_version())
}

/// Applies the migrations after the file's current version up to `target`, in one
/// transaction: a store is at its old version or at `target`, never in between (and a new
/// store is created with one commit, not one per migration).
pub(crate) fn migrate(conn: &mut Connection, target: i64) -> Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current >= target {
        return Ok(());
    }
    let tx = conn.transaction()?;
    for version in current + 1..=target {
        let index = usize::try_from(version - 1).expect("versions start at 1");
        tx.execute_batch(MIGRATIONS[index])?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", target)?;
    tx.commit()?;
    tracing::info!(from = current, to = target, "migrated store schema");
    Ok(())
}
