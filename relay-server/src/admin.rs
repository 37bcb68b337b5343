//! Operator commands on a relay's data directory (or, for `devices` and `doc`, any storage):
//! issue development tokens, list devices, print a document. The binary's subcommands are thin
//! wrappers over these.

use std::path::{Path, PathBuf};

use automerge::Automerge;
use syncline_protocol::DocId;

use crate::auth::{self, Claims, dev_key};
use crate::storage::{DeviceRecord, SqliteStorage, Storage, StorageError};
use crate::tenant::Tenant;

/// The embedded database's file name inside the data directory.
pub const DATABASE_FILE: &str = "relay.db";

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The data directory or its key could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The claims are invalid.
    #[error("invalid token request: {0}")]
    Claims(String),
    /// No such document.
    #[error("document {0} not found in tenant {1}")]
    NotFound(DocId, Tenant),
    /// The stored document does not load.
    #[error("document {doc} does not load: {reason}")]
    Corrupt {
        /// The document.
        doc: DocId,
        /// What failed.
        reason: String,
    },
}

/// Opens the embedded database of a data directory.
///
/// # Errors
/// [`AdminError::Storage`].
pub fn open_storage(data_dir: &Path) -> Result<SqliteStorage, AdminError> {
    std::fs::create_dir_all(data_dir).map_err(|source| AdminError::Io {
        path: data_dir.into(),
        source,
    })?;
    Ok(SqliteStorage::open(&data_dir.join(DATABASE_FILE))?)
}

/// Writes a consistent copy of a data directory's embedded database to `to` (which must not
/// exist), while a relay may be running on it: SQLite's `VACUUM INTO` over a read-only
/// connection, one snapshot of the last committed state.
///
/// # Errors
/// [`AdminError::Io`] if `to` exists or there is no database; [`AdminError::Storage`] if
/// the copy fails.
pub fn backup(data_dir: &Path, to: &Path) -> Result<(), AdminError> {
    let database = data_dir.join(DATABASE_FILE);
    for (path, exists, message) in [
        (&database, false, "no relay database here"),
        (&to.to_path_buf(), true, "the backup file already exists"),
    ] {
        if path.exists() == exists {
            return Err(AdminError::Io {
                path: path.clone(),
                source: std::io::Error::other(message),
            });
        }
    }
    Ok(crate::storage::sqlite_backup(&database, to)?)
}

/// Signs a development token with the data directory's key (created if missing), after
/// checking that the claims would be accepted.
///
/// # Errors
/// [`AdminError::Claims`] for claims the relay would refuse, [`AdminError::Io`] for the key.
pub fn issue_token(data_dir: &Path, claims: Claims) -> Result<String, AdminError> {
    claims.clone().validate().map_err(AdminError::Claims)?;
    let (secret, created) = dev_key::load_or_create(data_dir).map_err(|source| AdminError::Io {
        path: dev_key::path(data_dir),
        source,
    })?;
    if created {
        tracing::warn!(path = %dev_key::path(data_dir).display(), "created a DEVELOPMENT signing key");
    }
    Ok(auth::issue_dev_token(&secret, &claims))
}

/// The registered devices (of one tenant, or all), with their tenant.
///
/// # Errors
/// [`AdminError::Storage`].
pub fn devices(
    data_dir: &Path,
    tenant: Option<&Tenant>,
) -> Result<Vec<(Tenant, DeviceRecord)>, AdminError> {
    Ok(open_storage(data_dir)?.devices(tenant)?)
}

/// A stored document as JSON, from any storage (PostgreSQL's through
/// `PostgresStorage::open_read_only`).
///
/// # Errors
/// [`AdminError::NotFound`], [`AdminError::Corrupt`], or [`AdminError::Storage`].
pub fn document_json_in(
    storage: &impl Storage,
    tenant: &Tenant,
    doc: &DocId,
) -> Result<serde_json::Value, AdminError> {
    let stored = storage
        .load(tenant, doc)?
        .ok_or_else(|| AdminError::NotFound(doc.clone(), tenant.clone()))?;
    let corrupt = |reason: String| AdminError::Corrupt {
        doc: doc.clone(),
        reason,
    };
    let mut automerge = Automerge::new();
    for chunk in &stored.chunks {
        automerge
            .load_incremental(chunk)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    serde_json::to_value(automerge::AutoSerde::from(&automerge)).map_err(|e| corrupt(e.to_string()))
}

/// A stored document as JSON.
///
/// # Errors
/// [`AdminError::NotFound`], [`AdminError::Corrupt`], or [`AdminError::Storage`].
pub fn document_json(
    data_dir: &Path,
    tenant: &Tenant,
    doc: &DocId,
) -> Result<serde_json::Value, AdminError> {
    document_json_in(&open_storage(data_dir)?, tenant, doc)
}

/// A device as JSON, for `devices --json`.
pub fn device_json(tenant: &Tenant, d: &DeviceRecord) -> serde_json::Value {
    let p = &d.profile;
    serde_json::json!({
        "tenant": tenant.as_str(),
        "device": d.device.to_string(),
        "user": d.user,
        "profile": {
            "class": format!("{:?}", p.class).to_lowercase(),
            "storage_budget_bytes": p.storage_budget_bytes,
            "download_bytes_per_s": p.download_bytes_per_s,
            "upload_bytes_per_s": p.upload_bytes_per_s,
            "metered": p.metered,
            "realtime": p.realtime,
            "metered_max_doc_bytes": p.metered_max_doc_bytes,
        },
        "subscriptions": d.subscriptions.iter().map(|s| serde_json::json!({
            "collection": s.collection.as_str(),
            "priority": s.priority.as_str(),
            "mode": format!("{:?}", s.mode).to_lowercase(),
        })).collect::<Vec<_>>(),
        "first_seen_ms": d.first_seen_ms,
        "last_seen_ms": d.last_seen_ms,
        "last_sync_ms": d.last_sync_ms,
        "deferred": {
            "docs": d.deferred.docs,
            "bytes": d.deferred.bytes,
            "list": d.deferred.list.iter().map(|e| serde_json::json!({
                "doc": e.doc.to_string(),
                "priority": e.priority.as_str(),
                "bytes": e.bytes,
                "reason": format!("{:?}", e.reason).to_lowercase(),
            })).collect::<Vec<_>>(),
        },
    })
}
