//! The history of syncs: one row per connection to a relay (`sync_history`), written when the
//! connection ends and kept to the last [`KEPT_SYNC_RECORDS`]; see [`crate::Store::sync_history`].

use rusqlite::{Connection, params};
use syncline_protocol::DocId;

use super::Database;
use crate::Result;

/// How many connections the store remembers (the oldest are dropped first).
pub const KEPT_SYNC_RECORDS: usize = 200;

/// How many refused documents one record lists (the count is always whole).
pub const MAX_REFUSED_LISTED: usize = 100;

/// One connection to a relay, from open to close: what went each way, what was refused, and
/// how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    /// The relay's URL.
    pub relay: String,
    /// The relay's id for the session (its logs carry the same `session`), once it said.
    pub session: Option<String>,
    /// When the connection opened, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When it ended.
    pub ended_at_ms: u64,
    /// Documents sent with changes.
    pub docs_sent: u64,
    /// Documents changed by what was received.
    pub docs_received: u64,
    /// Bytes sent (whole frames).
    pub bytes_sent: u64,
    /// Bytes received (whole frames).
    pub bytes_received: u64,
    /// Flights of frames sent: the first, and each sent after receiving.
    pub round_trips: u64,
    /// How many documents did not sync on this connection (see [`crate::DocSyncError`]).
    pub refused_count: u64,
    /// The first [`MAX_REFUSED_LISTED`] of them, in document order.
    pub refused: Vec<DocId>,
    /// How the connection ended.
    pub end: SyncEnd,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEnd {
    /// The app stopped the sync client.
    Stopped,
    /// The app paused sync.
    Paused,
    /// The app said the network is down.
    NetworkDown,
    /// A periodic device caught up and closed until its next sync.
    CaughtUp,
    /// The relay stopped answering (the stall timeout).
    Stalled,
    /// The relay refused the token.
    Unauthorized(String),
    /// The connection broke (or could not be kept).
    ConnectionLost(String),
    /// The relay closed the connection with this WebSocket close code.
    ClosedByRelay {
        /// The close code (`syncline_protocol::close_code`).
        code: u16,
        /// The relay's reason.
        reason: String,
    },
    /// The relay asked the device to come back later (rate limited, or failed).
    RetryRequested(String),
    /// The relay broke the protocol; the device closed.
    ProtocolError(String),
}

impl SyncEnd {
    /// Its row: a kind, a close code, a reason.
    fn to_row(&self) -> (&'static str, Option<u16>, Option<&str>) {
        match self {
            Self::Stopped => ("stopped", None, None),
            Self::Paused => ("paused", None, None),
            Self::NetworkDown => ("network_down", None, None),
            Self::CaughtUp => ("caught_up", None, None),
            Self::Stalled => ("stalled", None, None),
            Self::Unauthorized(r) => ("unauthorized", None, Some(r)),
            Self::ConnectionLost(r) => ("connection_lost", None, Some(r)),
            Self::ClosedByRelay { code, reason } => ("closed_by_relay", Some(*code), Some(reason)),
            Self::RetryRequested(r) => ("retry_requested", None, Some(r)),
            Self::ProtocolError(r) => ("protocol_error", None, Some(r)),
        }
    }

    /// Back from a row; `None` for a kind this version does not know.
    fn from_row(kind: &str, code: Option<u16>, reason: Option<String>) -> Option<Self> {
        let reason = reason.unwrap_or_default();
        Some(match kind {
            "stopped" => Self::Stopped,
            "paused" => Self::Paused,
            "network_down" => Self::NetworkDown,
            "caught_up" => Self::CaughtUp,
            "stalled" => Self::Stalled,
            "unauthorized" => Self::Unauthorized(reason),
            "connection_lost" => Self::ConnectionLost(reason),
            "closed_by_relay" => Self::ClosedByRelay {
                code: code?,
                reason,
            },
            "retry_requested" => Self::RetryRequested(reason),
            "protocol_error" => Self::ProtocolError(reason),
            _ => return None,
        })
    }
}

impl std::fmt::Display for SyncEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stopped => f.write_str("stopped by the app"),
            Self::Paused => f.write_str("paused by the app"),
            Self::NetworkDown => f.write_str("the network went down"),
            Self::CaughtUp => f.write_str("caught up (periodic)"),
            Self::Stalled => f.write_str("the relay stopped answering"),
            Self::Unauthorized(r) => write!(f, "unauthorized: {r}"),
            Self::ConnectionLost(r) => write!(f, "connection lost: {r}"),
            Self::ClosedByRelay { code, reason } => {
                write!(f, "closed by the relay ({code}): {reason}")
            }
            Self::RetryRequested(r) => write!(f, "the relay asked to retry: {r}"),
            Self::ProtocolError(r) => write!(f, "protocol error: {r}"),
        }
    }
}

/// Appends `record` and drops what is older than the last [`KEPT_SYNC_RECORDS`].
pub(super) fn append(conn: &Connection, record: &SyncRecord) -> Result<()> {
    let (kind, code, reason) = record.end.to_row();
    let refused: Vec<String> = record.refused.iter().map(ToString::to_string).collect();
    conn.prepare_cached(
        "INSERT INTO sync_history (relay, session, started_ms, ended_ms, docs_sent, \
         docs_received, bytes_sent, bytes_received, round_trips, refused_count, refused, \
         end_kind, end_code, end_reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        record.relay,
        record.session,
        to_i64(record.started_at_ms),
        to_i64(record.ended_at_ms),
        to_i64(record.docs_sent),
        to_i64(record.docs_received),
        to_i64(record.bytes_sent),
        to_i64(record.bytes_received),
        to_i64(record.round_trips),
        to_i64(record.refused_count),
        refused.join("\n"),
        kind,
        code,
        reason,
    ])?;
    let kept = i64::try_from(KEPT_SYNC_RECORDS).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "DELETE FROM sync_history WHERE id <= (SELECT max(id) FROM sync_history) - ?1",
    )?
    .execute([kept])?;
    Ok(())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Database {
    /// The last `limit` connections, newest first. A row this version cannot read (a corrupt
    /// one, or a kind of end it does not know) is skipped with a warning.
    pub(crate) fn sync_history(&self, limit: usize) -> Result<Vec<SyncRecord>> {
        let conn = self.reader.lock();
        let mut statement = conn.prepare_cached(
            "SELECT relay, session, started_ms, ended_ms, docs_sent, docs_received, bytes_sent, \
             bytes_received, round_trips, refused_count, refused, end_kind, end_code, end_reason \
             FROM sync_history ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = statement.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            let end = SyncEnd::from_row(
                &r.get::<_, String>(11)?,
                r.get::<_, Option<u16>>(12)?,
                r.get::<_, Option<String>>(13)?,
            );
            let refused = r.get::<_, String>(10)?;
            let Some(end) = end else {
                return Ok(None);
            };
            Ok(Some(SyncRecord {
                relay: r.get(0)?,
                session: r.get(1)?,
                started_at_ms: to_u64(r.get(2)?),
                ended_at_ms: to_u64(r.get(3)?),
                docs_sent: to_u64(r.get(4)?),
                docs_received: to_u64(r.get(5)?),
                bytes_sent: to_u64(r.get(6)?),
                bytes_received: to_u64(r.get(7)?),
                round_trips: to_u64(r.get(8)?),
                refused_count: to_u64(r.get(9)?),
                refused: refused
                    .split('\n')
                    .filter_map(|d| d.parse::<DocId>().ok())
                    .collect(),
                end,
            }))
        })?;
        let mut records = Vec::new();
        for row in rows {
            match row {
                Ok(Some(record)) => records.push(record),
                Ok(None) => tracing::warn!("skipping a sync record with an unknown end"),
                Err(e) => tracing::warn!(error = %e, "skipping a corrupt sync record"),
            }
        }
        Ok(records)
    }
}
