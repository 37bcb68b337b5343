//! The engine's public vocabulary: how it is set up ([`EngineConfig`]), what the shell tells it
//! ([`Event`], [`Disconnect`]), what it asks of the shell ([`Effect`]) and what the app
//! observes ([`Status`], [`Progress`], [`SyncStats`]).

use syncline_protocol::DocId;
use syncline_protocol::messages::{CollectionSubscription, Profile};

use super::Backoff;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The relay's name in the store: acknowledgements and cursors are kept per relay (the
    /// shell uses the relay's URL).
    pub relay: String,
    /// The device's capability profile, sent in `Hello`.
    pub profile: Profile,
    /// The collections to sync, with their priority and mode.
    pub subscriptions: Vec<CollectionSubscription>,
    /// The client's name and version, sent in `Hello`.
    pub client: String,
    /// Reconnect delays: capped exponential backoff with full jitter.
    pub backoff: Backoff,
    /// With something outstanding and no frame for this long, the connection is presumed dead
    /// and replaced.
    pub stall_timeout_ms: u64,
    /// For a periodic device (`profile.realtime == false`): how long after a complete sync it
    /// connects again. It closes the connection as soon as it is caught up.
    pub sync_interval_ms: u64,
    /// On a metered network, hold back uploads of documents whose changes are larger than the
    /// profile's metered threshold (64 KiB by default) until the network is unmetered.
    pub defer_metered_uploads: bool,
}

/// Why a transport closed, as the shell saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The relay refused the token (HTTP 401, or closed with "token expired").
    Unauthorized(String),
    /// The relay could not be reached or the connection broke.
    Failed(String),
    /// The relay closed the connection with this WebSocket close code.
    Closed {
        /// The close code.
        code: u16,
        /// The reason the relay gave.
        reason: String,
    },
}

/// Something that happened, for [`Engine::handle`](super::Engine::handle).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Start syncing (connect as soon as allowed).
    Start,
    /// The transport the engine asked for is open and authenticated.
    Connected,
    /// A binary frame arrived.
    Frame(Vec<u8>),
    /// The transport closed or could not be opened.
    Disconnected(Disconnect),
    /// These documents changed locally.
    LocalChanges(Vec<DocId>),
    /// A timer the engine asked for ([`Effect::WakeAt`]) fired.
    Tick,
    /// The app says the network is down: disconnect and stop retrying.
    NetworkDown,
    /// The app says the network is up: connect now.
    NetworkUp,
    /// The app pauses sync: disconnect, stay offline.
    Pause,
    /// The app resumes sync: connect now.
    Resume,
    /// The device's profile changed (class, metered, bandwidth, ...): the relay replans on the
    /// live connection, and leaving a metered network fetches what was held back for it.
    Profile(Profile),
    /// The app asks for these documents now (deferred, on demand, or evicted).
    Fetch(Vec<DocId>),
    /// The subscription changed: removed collections stop, added ones are planned at once.
    Subscriptions(Vec<CollectionSubscription>),
    /// Sync now (a periodic device between its scheduled syncs; a no-op while connected).
    SyncNow,
    /// A new token for the live connection.
    Token(String),
    /// The app sends an ephemeral payload (presence, a cursor) to the other devices on a
    /// document: sent now if connected, else dropped (never stored or queued).
    Ephemeral {
        /// The document.
        doc: DocId,
        /// The payload, at most [`syncline_protocol::messages::MAX_EPHEMERAL_BYTES`].
        payload: Vec<u8>,
    },
}

/// Something the shell must do, returned by [`Engine::handle`](super::Engine::handle).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Open a transport to the relay (with a fresh token from the app's provider), then
    /// report [`Event::Connected`] or [`Event::Disconnected`].
    Connect,
    /// Send this binary frame.
    Send(Vec<u8>),
    /// Close the transport (no [`Event::Disconnected`] is expected after it).
    Disconnect,
    /// The status changed.
    Status(Status),
    /// Call [`Event::Tick`] at this time (milliseconds); a later `WakeAt` replaces it.
    WakeAt(u64),
    /// Another device's ephemeral message arrived: hand it to the app's listeners.
    Ephemeral(EphemeralMessage),
}

/// An ephemeral message (presence, a cursor) another device sent on a document: never
/// stored, delivered only to the devices connected at the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EphemeralMessage {
    /// The document.
    pub doc: DocId,
    /// The device that sent it (as the relay authenticated it).
    pub from: syncline_protocol::DeviceId,
    /// The app's payload.
    pub payload: Vec<u8>,
}

/// Documents and bytes of one part of a sync (a direction, or a priority of the download).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transfer {
    /// Documents done.
    pub docs_done: u64,
    /// Documents to do.
    pub docs_total: u64,
    /// Bytes done, counted on the wire.
    pub bytes_done: u64,
    /// Bytes to do: for the download, the relay's plan (its messages' sizes); for the upload,
    /// the frames queued.
    pub bytes_total: u64,
}

/// Progress of a sync on the current connection, in documents and bytes, per direction and
/// per priority, with an estimate of the time left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Downloaded documents the relay planned to send that have arrived.
    pub docs_done: u64,
    /// Documents the relay planned to send.
    pub docs_total: u64,
    /// Bytes of planned documents that have arrived, counted on the wire.
    pub bytes_done: u64,
    /// Bytes the relay planned to send.
    pub bytes_total: u64,
    /// Local documents sent and not yet acknowledged.
    pub docs_unacknowledged: u64,
    /// The download per priority, indexed by [`syncline_protocol::Priority::code`] (low
    /// first).
    pub download_by_priority: [Transfer; 4],
    /// The upload: local documents with changes sent on this connection (done once
    /// acknowledged), and the bytes of their frames (done once on the wire).
    pub upload: Transfer,
    /// The upload per priority, indexed like `download_by_priority` (a frame's bytes split
    /// in proportion to its documents' messages).
    pub upload_by_priority: [Transfer; 4],
    /// Documents the relay announced and holds back (see `Store::deferred`).
    pub deferred: u64,
    /// Milliseconds until both directions are done, from the declared bandwidth (or the rate
    /// observed on this connection when none is declared); none before anything can be said.
    pub eta_ms: Option<u64>,
    /// How far the store's content is over the declared storage budget (see
    /// [`Status::Synced`]).
    pub over_budget_bytes: u64,
    /// Local documents whose upload waits for an unmetered network (too large for a metered
    /// one; see `EngineConfig::defer_metered_uploads`).
    pub uploads_deferred: u64,
}

/// The sync status the app observes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not connected (not started, paused, network down, or waiting to reconnect).
    Offline,
    /// Opening a connection.
    Connecting,
    /// Connected and exchanging changes.
    Syncing {
        /// How far along (boxed: it is the largest status by far).
        progress: Box<Progress>,
    },
    /// Connected, and both sides have everything (milliseconds since the Unix epoch); for a
    /// periodic device, also between its syncs after a complete one.
    Synced {
        /// When the device became synced.
        at_ms: u64,
        /// How far the store's content is over the declared storage budget once everything
        /// evictable was evicted (eager collections and unacknowledged changes are never
        /// evicted); 0 within it.
        over_budget_bytes: u64,
    },
    /// Something is wrong; the engine retries where retrying can help.
    Error {
        /// What, for people.
        reason: String,
    },
}

/// Counters of what the engine moved, since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Bytes sent (whole frames).
    pub bytes_sent: u64,
    /// Bytes received (whole frames).
    pub bytes_received: u64,
    /// Documents sent with changes.
    pub docs_sent: u64,
    /// Documents changed by what was received.
    pub docs_received: u64,
    /// Flights of frames sent: the first of a connection, and each sent after receiving.
    pub round_trips: u64,
    /// Connections opened.
    pub connections: u64,
}

/// Why a document did not sync (see [`DocSyncError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncErrorKind {
    /// The token grants no write on the document's collection (the relay's `FORBIDDEN`).
    NotPermitted,
    /// Larger than the relay accepts: over its frame limit, or over another of its limits.
    TooLarge,
    /// The relay found the document's changes invalid (`BAD_DOCUMENT`).
    Invalid,
    /// The relay sent this document a message the device refused unread (malformed, or over
    /// the device's bounds); cleared when the document next arrives whole.
    InvalidFromRelay,
    /// The relay's storage is full (or the tenant over its quota): nothing of it was stored,
    /// and it is sent again at `retry_at_ms`.
    StorageFull,
    /// Refused for now (for example, another device's change the relay does not hold yet);
    /// sent again at `retry_at_ms`.
    RetryLater,
    /// Another refusal, with the relay's error code.
    Other(u16),
}

impl SyncErrorKind {
    /// The kind of a relay's per-document error code.
    pub(crate) fn of_code(code: syncline_protocol::messages::ErrorCode, retry: bool) -> Self {
        use syncline_protocol::messages::ErrorCode;
        match code {
            ErrorCode::FORBIDDEN => Self::NotPermitted,
            ErrorCode::FRAME_TOO_LARGE | ErrorCode::LIMIT_EXCEEDED => Self::TooLarge,
            ErrorCode::BAD_DOCUMENT => Self::Invalid,
            ErrorCode::STORAGE_FULL => Self::StorageFull,
            _ if retry => Self::RetryLater,
            other => Self::Other(other.0),
        }
    }
}

/// One document the relay refused (or that could not be sent, or received): the rest of the
/// sync went on without it. Its changes stay pending in the store; the error clears once the
/// relay acknowledges the document (or, for [`SyncErrorKind::InvalidFromRelay`], once it
/// arrives whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocSyncError {
    /// The document.
    pub doc: DocId,
    /// Why, for programs.
    pub kind: SyncErrorKind,
    /// Why, for people (the relay's words where it gave some).
    pub message: String,
    /// When it happened, in the engine's clock (milliseconds since the Unix epoch in
    /// [`crate::SyncClient`]).
    pub at_ms: u64,
    /// When the document is sent again on this connection, if it is (otherwise on the next
    /// connection).
    pub retry_at_ms: Option<u64>,
}

/// A change to the set of [`DocSyncError`]s, for [`crate::SyncClient::watch_sync_errors`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncErrorEvent {
    /// A document did not sync (again, if it already had an error: the new one replaces it).
    Raised(DocSyncError),
    /// A document that had an error synced.
    Cleared(DocId),
}
