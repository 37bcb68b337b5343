//! [`FfiSyncClient`]: the SDK's `SyncClient` with a foreign token provider and status listener,
//! its options ([`SyncOptions`], [`Profile`]) and what it reports ([`SyncStatus`],
//! [`SyncStats`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use syncline::{
    Collection, CollectionSubscription, DocId, EphemeralMessage, SyncClient, SyncMode, TokenError,
};

use crate::store::{FfiStore, Priority};
use crate::subscription::FfiSubscription;
use crate::{
    FfiEphemeralListener, FfiError, FfiStatusListener, FfiSyncErrorListener, FfiTokenProvider,
};

/// The sync status (the SDK's `Status`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SyncStatus {
    /// Not connected.
    Offline,
    /// Opening a connection.
    Connecting,
    /// Exchanging changes.
    Syncing {
        /// How far along, per direction and priority.
        progress: Progress,
    },
    /// Both sides have everything, since this time (milliseconds since the Unix epoch).
    Synced {
        /// When.
        at_ms: u64,
        /// How far the store is over its storage budget with everything evictable evicted.
        over_budget_bytes: u64,
    },
    /// Something is wrong.
    Error {
        /// What.
        reason: String,
    },
}

impl From<syncline::Status> for SyncStatus {
    fn from(status: syncline::Status) -> Self {
        match status {
            syncline::Status::Offline => Self::Offline,
            syncline::Status::Connecting => Self::Connecting,
            syncline::Status::Syncing { progress } => Self::Syncing {
                progress: (*progress).into(),
            },
            syncline::Status::Synced {
                at_ms,
                over_budget_bytes,
            } => Self::Synced {
                at_ms,
                over_budget_bytes,
            },
            syncline::Status::Error { reason } => Self::Error { reason },
        }
    }
}

/// Documents and bytes of one part of a sync (the SDK's `Transfer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct Transfer {
    /// Documents done.
    pub docs_done: u64,
    /// Documents to do.
    pub docs_total: u64,
    /// Bytes done, counted on the wire.
    pub bytes_done: u64,
    /// Bytes to do.
    pub bytes_total: u64,
}

impl From<syncline::engine::Transfer> for Transfer {
    fn from(t: syncline::engine::Transfer) -> Self {
        Self {
            docs_done: t.docs_done,
            docs_total: t.docs_total,
            bytes_done: t.bytes_done,
            bytes_total: t.bytes_total,
        }
    }
}

/// Progress of a sync (the SDK's `Progress`): the download, per priority too, the upload, what
/// is deferred, and the time left.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Progress {
    /// The planned download.
    pub download: Transfer,
    /// The download per priority: low, normal, high, critical.
    pub download_by_priority: Vec<Transfer>,
    /// The upload.
    pub upload: Transfer,
    /// The upload per priority: low, normal, high, critical.
    pub upload_by_priority: Vec<Transfer>,
    /// Local documents sent and not yet acknowledged.
    pub docs_unacknowledged: u64,
    /// Documents the relay announced and holds back.
    pub deferred: u64,
    /// Milliseconds until done, if it can be told.
    pub eta_ms: Option<u64>,
    /// How far the store is over its storage budget.
    pub over_budget_bytes: u64,
    /// Local documents whose upload waits for an unmetered network.
    pub uploads_deferred: u64,
}

impl From<syncline::Progress> for Progress {
    fn from(p: syncline::Progress) -> Self {
        Self {
            download: Transfer {
                docs_done: p.docs_done,
                docs_total: p.docs_total,
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
            },
            download_by_priority: p.download_by_priority.iter().map(|t| (*t).into()).collect(),
            upload: p.upload.into(),
            upload_by_priority: p.upload_by_priority.iter().map(|t| (*t).into()).collect(),
            docs_unacknowledged: p.docs_unacknowledged,
            deferred: p.deferred,
            eta_ms: p.eta_ms,
            over_budget_bytes: p.over_budget_bytes,
            uploads_deferred: p.uploads_deferred,
        }
    }
}

/// Why a document is held back (the SDK's `DeferReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DeferReason {
    /// Too large for a metered network.
    Metered,
    /// A low-priority collection on a metered network.
    LowPriority,
    /// An on-demand collection: fetched when opened.
    OnDemand,
    /// Over the device's storage budget.
    StorageBudget,
}

/// A document the relay announced and holds back (the SDK's `DeferredDoc`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DeferredDoc {
    /// The document id (`collection/id`).
    pub doc_id: String,
    /// Its priority.
    pub priority: Priority,
    /// Its approximate size on the wire.
    pub bytes: u64,
    /// Why it is held back.
    pub reason: DeferReason,
    /// When the relay last stored a change to it, milliseconds since the Unix epoch.
    pub changed_ms: Option<u64>,
}

impl From<syncline::DeferredDoc> for DeferredDoc {
    fn from(d: syncline::DeferredDoc) -> Self {
        Self {
            doc_id: d.doc.to_string(),
            priority: d.priority.into(),
            bytes: d.bytes,
            reason: match d.reason {
                syncline::DeferReason::Metered => DeferReason::Metered,
                syncline::DeferReason::LowPriority => DeferReason::LowPriority,
                syncline::DeferReason::OnDemand => DeferReason::OnDemand,
                syncline::DeferReason::StorageBudget => DeferReason::StorageBudget,
            },
            changed_ms: d.changed_ms,
        }
    }
}

/// Why a connection ended (the SDK's `syncline::engine::Disconnect`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Disconnect {
    /// The relay refused the token, or the token provider said the app is signed out.
    Unauthorized {
        /// Why.
        reason: String,
    },
    /// The relay could not be reached, the connection broke, or there was no token yet.
    Failed {
        /// Why.
        reason: String,
    },
    /// The relay closed the connection with this WebSocket close code.
    Closed {
        /// The close code.
        code: u16,
        /// The reason the relay gave.
        reason: String,
    },
}

impl From<syncline::engine::Disconnect> for Disconnect {
    fn from(d: syncline::engine::Disconnect) -> Self {
        match d {
            syncline::engine::Disconnect::Unauthorized(reason) => Self::Unauthorized { reason },
            syncline::engine::Disconnect::Failed(reason) => Self::Failed { reason },
            syncline::engine::Disconnect::Closed { code, reason } => Self::Closed { code, reason },
        }
    }
}

/// What a sync moved (the SDK's `SyncStats`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStats {
    /// Documents sent with changes.
    pub docs_sent: u64,
    /// Documents changed by what was received.
    pub docs_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Flights of frames sent.
    pub round_trips: u64,
}

impl From<syncline::SyncStats> for SyncStats {
    fn from(s: syncline::SyncStats) -> Self {
        Self {
            docs_sent: s.docs_sent,
            docs_received: s.docs_received,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            round_trips: s.round_trips,
        }
    }
}

/// The kind of device (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DeviceClass {
    /// A phone.
    Phone,
    /// A tablet.
    Tablet,
    /// A desktop or laptop.
    Desktop,
    /// A server taking part as a device.
    Server,
}

impl From<DeviceClass> for syncline::DeviceClass {
    fn from(class: DeviceClass) -> Self {
        match class {
            DeviceClass::Phone => Self::Phone,
            DeviceClass::Tablet => Self::Tablet,
            DeviceClass::Desktop => Self::Desktop,
            DeviceClass::Server => Self::Server,
        }
    }
}

/// The device's declared capabilities; the relay plans what and how fast to sync from them.
/// Absent bandwidths mean unknown. Every field but `class` has a default in the generated
/// constructors: the SDK's `Profile::new(class)` (unmetered, realtime, nothing declared).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Profile {
    /// The device class.
    pub class: DeviceClass,
    /// Bytes the device may use for synced content.
    #[uniffi(default = None)]
    pub storage_budget_bytes: Option<u64>,
    /// Download bandwidth, bytes per second.
    #[uniffi(default = None)]
    pub download_bytes_per_s: Option<u64>,
    /// Upload bandwidth, bytes per second.
    #[uniffi(default = None)]
    pub upload_bytes_per_s: Option<u64>,
    /// True on a metered network.
    #[uniffi(default = false)]
    pub metered: bool,
    /// True to receive changes as they happen, false for periodic sync.
    #[uniffi(default = true)]
    pub realtime: bool,
    /// On a metered network, documents whose transfer is larger than this are deferred (none:
    /// the relay's threshold, 64 KiB by default).
    #[uniffi(default = None)]
    pub metered_max_doc_bytes: Option<u64>,
}

impl From<Profile> for syncline::Profile {
    fn from(p: Profile) -> Self {
        Self {
            class: p.class.into(),
            storage_budget_bytes: p.storage_budget_bytes,
            download_bytes_per_s: p.download_bytes_per_s,
            upload_bytes_per_s: p.upload_bytes_per_s,
            metered: p.metered,
            realtime: p.realtime,
            metered_max_doc_bytes: p.metered_max_doc_bytes,
        }
    }
}

/// One collection to sync, with its priority and whether its documents' content is kept
/// local eagerly or fetched when opened.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CollectionSync {
    /// The collection.
    pub collection: String,
    /// Its sync priority.
    pub priority: Priority,
    /// True to keep only the list and metadata local (content fetched on demand).
    #[uniffi(default = false)]
    pub on_demand: bool,
}

/// Everything [`FfiSyncClient::start_with`] needs besides the store and the token provider.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncOptions {
    /// The relay, as `ws://host:port` or `wss://host`.
    pub relay_url: String,
    /// The collections to sync.
    pub collections: Vec<CollectionSync>,
    /// The device's capability profile.
    pub profile: Profile,
    /// For a periodic device (`profile.realtime == false`), milliseconds between syncs (null:
    /// 15 minutes).
    #[uniffi(default = None)]
    pub sync_interval_ms: Option<u64>,
    /// On a metered network, hold back large uploads until it is unmetered (null: yes).
    #[uniffi(default = None)]
    pub defer_metered_uploads: Option<bool>,
    /// Other relays serving the same data (several relays on one PostgreSQL), tried in turn
    /// when a connection fails before its relay answered (empty by default).
    #[uniffi(default = [])]
    pub fallback_urls: Vec<String>,
}

impl CollectionSync {
    fn into_subscription(self) -> Result<CollectionSubscription, FfiError> {
        Ok(CollectionSubscription {
            collection: Collection::new(self.collection)?,
            priority: self.priority.into(),
            mode: if self.on_demand {
                SyncMode::OnDemand
            } else {
                SyncMode::Eager
            },
        })
    }
}

impl TryFrom<SyncOptions> for syncline::SyncOptions {
    type Error = FfiError;

    fn try_from(o: SyncOptions) -> Result<Self, FfiError> {
        let mut options = syncline::SyncOptions::new(o.relay_url, &[]);
        options.fallback_urls = o.fallback_urls;
        options.profile = o.profile.into();
        if let Some(ms) = o.sync_interval_ms {
            options.sync_interval = Duration::from_millis(ms);
        }
        if let Some(defer) = o.defer_metered_uploads {
            options.defer_metered_uploads = defer;
        }
        options.subscriptions = o
            .collections
            .into_iter()
            .map(CollectionSync::into_subscription)
            .collect::<Result<Vec<_>, FfiError>>()?;
        Ok(options)
    }
}

/// Why a document did not sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SyncErrorKind {
    /// The token grants no write on the document's collection.
    NotPermitted,
    /// Larger than the relay accepts.
    TooLarge,
    /// The relay found the document's changes invalid.
    Invalid,
    /// The relay's message for the document was refused unread.
    InvalidFromRelay,
    /// The relay's storage is full; sent again at `retry_at_ms`.
    StorageFull,
    /// Refused for now; sent again at `retry_at_ms`.
    RetryLater,
    /// Another refusal, with the relay's error code.
    Other {
        /// The relay's error code.
        code: u16,
    },
}

impl From<syncline::SyncErrorKind> for SyncErrorKind {
    fn from(kind: syncline::SyncErrorKind) -> Self {
        match kind {
            syncline::SyncErrorKind::NotPermitted => Self::NotPermitted,
            syncline::SyncErrorKind::TooLarge => Self::TooLarge,
            syncline::SyncErrorKind::Invalid => Self::Invalid,
            syncline::SyncErrorKind::InvalidFromRelay => Self::InvalidFromRelay,
            syncline::SyncErrorKind::StorageFull => Self::StorageFull,
            syncline::SyncErrorKind::RetryLater => Self::RetryLater,
            syncline::SyncErrorKind::Other(code) => Self::Other { code },
        }
    }
}

/// One document that did not sync while the rest went on.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DocSyncError {
    /// The document, as `collection/id`.
    pub doc: String,
    /// Why, for programs.
    pub kind: SyncErrorKind,
    /// Why, for people.
    pub message: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// When it is sent again on this connection, if it is.
    pub retry_at_ms: Option<u64>,
}

impl From<syncline::DocSyncError> for DocSyncError {
    fn from(e: syncline::DocSyncError) -> Self {
        Self {
            doc: e.doc.to_string(),
            kind: e.kind.into(),
            message: e.message,
            at_ms: e.at_ms,
            retry_at_ms: e.retry_at_ms,
        }
    }
}

/// A document's sync error raised or cleared.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SyncErrorEvent {
    /// The document did not sync.
    Raised {
        /// Why.
        error: DocSyncError,
    },
    /// The document, which had an error, synced.
    Cleared {
        /// The document, as `collection/id`.
        doc: String,
    },
}

impl From<syncline::SyncErrorEvent> for SyncErrorEvent {
    fn from(e: syncline::SyncErrorEvent) -> Self {
        match e {
            syncline::SyncErrorEvent::Raised(error) => Self::Raised {
                error: error.into(),
            },
            syncline::SyncErrorEvent::Cleared(doc) => Self::Cleared {
                doc: doc.to_string(),
            },
        }
    }
}

/// An ephemeral message another device sent: never stored.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Ephemeral {
    /// The document, as `collection/id`.
    pub doc: String,
    /// The sending device (32 hex digits).
    pub sender: String,
    /// The app's payload.
    pub payload: Vec<u8>,
}

impl From<EphemeralMessage> for Ephemeral {
    fn from(m: EphemeralMessage) -> Self {
        Self {
            doc: m.doc.to_string(),
            sender: m.from.to_string(),
            payload: m.payload,
        }
    }
}

/// How a connection ended (see `SyncRecord`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SyncEnd {
    /// The app stopped the sync client.
    Stopped,
    /// The app paused sync.
    Paused,
    /// The app said the network is down.
    NetworkDown,
    /// A periodic device caught up and closed until its next sync.
    CaughtUp,
    /// The relay stopped answering.
    Stalled,
    /// The relay refused the token.
    Unauthorized {
        /// Why.
        reason: String,
    },
    /// The connection broke.
    ConnectionLost {
        /// Why.
        reason: String,
    },
    /// The relay closed the connection.
    ClosedByRelay {
        /// The WebSocket close code.
        code: u16,
        /// The relay's reason.
        reason: String,
    },
    /// The relay asked the device to come back later.
    RetryRequested {
        /// Why.
        reason: String,
    },
    /// The relay broke the protocol.
    ProtocolError {
        /// What.
        reason: String,
    },
}

impl From<syncline::SyncEnd> for SyncEnd {
    fn from(end: syncline::SyncEnd) -> Self {
        match end {
            syncline::SyncEnd::Stopped => Self::Stopped,
            syncline::SyncEnd::Paused => Self::Paused,
            syncline::SyncEnd::NetworkDown => Self::NetworkDown,
            syncline::SyncEnd::CaughtUp => Self::CaughtUp,
            syncline::SyncEnd::Stalled => Self::Stalled,
            syncline::SyncEnd::Unauthorized(reason) => Self::Unauthorized { reason },
            syncline::SyncEnd::ConnectionLost(reason) => Self::ConnectionLost { reason },
            syncline::SyncEnd::ClosedByRelay { code, reason } => {
                Self::ClosedByRelay { code, reason }
            }
            syncline::SyncEnd::RetryRequested(reason) => Self::RetryRequested { reason },
            syncline::SyncEnd::ProtocolError(reason) => Self::ProtocolError { reason },
        }
    }
}

/// One connection to a relay, from the store's history of syncs.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncRecord {
    /// The relay's URL.
    pub relay: String,
    /// The relay's id for the session (as in its logs), once it said.
    pub session: Option<String>,
    /// When the connection opened, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When it ended.
    pub ended_at_ms: u64,
    /// Documents sent with changes.
    pub docs_sent: u64,
    /// Documents changed by what was received.
    pub docs_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Flights of frames sent.
    pub round_trips: u64,
    /// How many documents did not sync on this connection.
    pub refused_count: u64,
    /// The first 100 of them, as `collection/id`.
    pub refused: Vec<String>,
    /// How the connection ended.
    pub end: SyncEnd,
}

impl From<syncline::SyncRecord> for SyncRecord {
    fn from(r: syncline::SyncRecord) -> Self {
        Self {
            relay: r.relay,
            session: r.session,
            started_at_ms: r.started_at_ms,
            ended_at_ms: r.ended_at_ms,
            docs_sent: r.docs_sent,
            docs_received: r.docs_received,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            round_trips: r.round_trips,
            refused_count: r.refused_count,
            refused: r.refused.iter().map(ToString::to_string).collect(),
            end: r.end.into(),
        }
    }
}

/// Syncs a store with a relay in the background for as long as it is kept. No call blocks on
/// the network: waiting is `wait_synced`, which suspends (a coroutine, a task) instead.
#[derive(uniffi::Object)]
pub struct FfiSyncClient {
    /// Shared with a `wait_synced` in progress, so that waiting never blocks `status`,
    /// `pause` or `stop` from other threads.
    client: Mutex<Option<Arc<SyncClient>>>,
}

#[uniffi::export]
impl FfiSyncClient {
    /// Starts syncing `store`'s `collections` with the relay at `relay_url` (eagerly, normal
    /// priority, as a desktop on an unmetered network), with tokens from `tokens`.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection, [`FfiError::Sync`] if it cannot start.
    #[uniffi::constructor]
    pub fn start(
        store: Arc<FfiStore>,
        relay_url: String,
        collections: Vec<String>,
        tokens: Arc<dyn FfiTokenProvider>,
    ) -> Result<Arc<Self>, FfiError> {
        let collections = collections
            .into_iter()
            .map(Collection::new)
            .collect::<Result<Vec<_>, _>>()?;
        Self::start_options(
            &store,
            syncline::SyncOptions::new(relay_url, &collections),
            tokens,
        )
    }

    /// Starts syncing with every option given: per-collection priority and mode, and the
    /// device's profile.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection, [`FfiError::Sync`] if it cannot start.
    #[uniffi::constructor]
    pub fn start_with(
        store: Arc<FfiStore>,
        options: SyncOptions,
        tokens: Arc<dyn FfiTokenProvider>,
    ) -> Result<Arc<Self>, FfiError> {
        Self::start_options(&store, options.try_into()?, tokens)
    }

    /// The current status.
    pub fn status(&self) -> SyncStatus {
        self.with(|c| c.status().into())
            .unwrap_or(SyncStatus::Offline)
    }

    /// What the current (or last) sync moved.
    pub fn stats(&self) -> SyncStats {
        self.with(|c| c.stats().into()).unwrap_or(SyncStats {
            docs_sent: 0,
            docs_received: 0,
            bytes_sent: 0,
            bytes_received: 0,
            round_trips: 0,
        })
    }

    /// Why the last connection ended, if one did (and the client is not stopped).
    pub fn last_disconnect(&self) -> Option<Disconnect> {
        self.with(|c| c.last_disconnect().map(Disconnect::from))
            .flatten()
    }

    /// How many status, sync-error and ephemeral listeners are registered now (a cancelled or
    /// dropped subscription no longer counts; 0 once the client is closed): what a binding's
    /// test checks after a stream is abandoned.
    pub fn subscription_count(&self) -> u64 {
        self.with(|c| c.listener_count() as u64).unwrap_or(0)
    }

    /// Calls `listener` with every new status, for as long as the subscription is kept.
    pub fn watch_status(&self, listener: Arc<dyn FfiStatusListener>) -> Arc<FfiSubscription> {
        let subscription = self.with(|c| {
            c.watch_status(move |s| {
                crate::call_foreign("a status listener", || listener.on_status(s.clone().into()));
            })
        });
        FfiSubscription::new(Box::new(subscription))
    }

    /// The documents that did not sync, each with why; their changes stay pending in the
    /// store, and an error clears once the document syncs.
    pub fn sync_errors(&self) -> Vec<DocSyncError> {
        self.with(|c| {
            c.sync_errors()
                .into_iter()
                .map(DocSyncError::from)
                .collect()
        })
        .unwrap_or_default()
    }

    /// Calls `listener` each time a document does not sync and when one that did not syncs,
    /// for as long as the subscription is kept.
    pub fn watch_sync_errors(
        &self,
        listener: Arc<dyn FfiSyncErrorListener>,
    ) -> Arc<FfiSubscription> {
        let subscription = self.with(|c| {
            c.watch_sync_errors(move |e| {
                crate::call_foreign("a sync error listener", || {
                    listener.on_sync_error(e.clone().into());
                });
            })
        });
        FfiSubscription::new(Box::new(subscription))
    }

    /// Sends an ephemeral payload (presence, a cursor) to the other devices connected on
    /// `doc_id` now; never stored, and not kept while offline.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad id or a payload over 4 KiB,
    /// [`FfiError::RateLimited`] past 30 per second, [`FfiError::Unreachable`] while not
    /// connected.
    pub fn send_ephemeral(&self, doc_id: String, payload: Vec<u8>) -> Result<(), FfiError> {
        let doc = doc_id.parse::<DocId>()?;
        self.with(|c| c.send_ephemeral(&doc, &payload))
            .unwrap_or(Err(syncline::SyncError::NotConnected))?;
        Ok(())
    }

    /// Calls `listener` with each ephemeral message another device sends on `doc_id` (or on
    /// any document, with none), for as long as the subscription is kept.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad id.
    pub fn watch_ephemeral(
        &self,
        doc_id: Option<String>,
        listener: Arc<dyn FfiEphemeralListener>,
    ) -> Result<Arc<FfiSubscription>, FfiError> {
        let doc = doc_id.map(|d| d.parse::<DocId>()).transpose()?;
        let subscription = self.with(|c| {
            c.watch_ephemeral(doc.as_ref(), move |m| {
                crate::call_foreign("an ephemeral listener", || {
                    listener.on_ephemeral(m.clone().into());
                });
            })
        });
        Ok(FfiSubscription::new(Box::new(subscription)))
    }

    /// Waits until synced with nothing pending (or fails: refused token, unreachable relay,
    /// refused change, timeout). Suspends the caller's coroutine / task, never a thread of
    /// the host: the wait runs on a thread of its own.
    ///
    /// # Errors
    /// [`FfiError::Unauthorized`], [`FfiError::Unreachable`], [`FfiError::Sync`],
    /// [`FfiError::Timeout`].
    pub async fn wait_synced(&self, timeout_ms: u64) -> Result<SyncStats, FfiError> {
        let client = self.current();
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let outcome = match client {
                Some(c) => c
                    .wait_synced(Duration::from_millis(timeout_ms), true)
                    .map(SyncStats::from)
                    .map_err(FfiError::from),
                None => Err(FfiError::Sync("the client was stopped".into())),
            };
            let _ = done.send(outcome);
        });
        result
            .await
            .map_err(|_| FfiError::Sync("the wait ended unexpectedly".into()))?
    }

    /// Declares a new capability profile (say, the network became metered) on the live
    /// connection.
    pub fn set_profile(&self, profile: Profile) {
        self.with(|c| c.set_profile(profile.into()));
    }

    /// The network changed: metered or not, and its bandwidths in bytes per second (null:
    /// unknown). The relay replans on the live connection.
    pub fn set_network(
        &self,
        metered: bool,
        download_bytes_per_s: Option<u64>,
        upload_bytes_per_s: Option<u64>,
    ) {
        self.with(|c| c.set_network(metered, download_bytes_per_s, upload_bytes_per_s));
    }

    /// Replaces the subscription: removed collections stop, added ones sync at once.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad collection name.
    pub fn set_subscriptions(&self, collections: Vec<CollectionSync>) -> Result<(), FfiError> {
        let subscriptions = collections
            .into_iter()
            .map(CollectionSync::into_subscription)
            .collect::<Result<Vec<_>, FfiError>>()?;
        self.with(|c| c.set_subscriptions(subscriptions));
        Ok(())
    }

    /// The documents the relay announced and holds back, highest priority first.
    ///
    /// # Errors
    /// [`FfiError::Storage`] when the store fails.
    pub fn deferred(&self) -> Result<Vec<DeferredDoc>, FfiError> {
        match self.current() {
            Some(c) => Ok(c.deferred()?.into_iter().map(Into::into).collect()),
            None => Err(FfiError::Sync("the client was stopped".into())),
        }
    }

    /// Asks the relay for these documents now (deferred or on demand); returns at once.
    ///
    /// # Errors
    /// [`FfiError::InvalidInput`] for a bad document id.
    pub fn fetch(&self, doc_ids: Vec<String>) -> Result<(), FfiError> {
        let docs = doc_ids
            .iter()
            .map(|d| d.parse::<syncline::DocId>())
            .collect::<Result<Vec<_>, _>>()?;
        self.with(|c| c.fetch(&docs));
        Ok(())
    }

    /// Local documents whose upload waits for an unmetered network (ids `collection/id`).
    pub fn deferred_uploads(&self) -> Vec<String> {
        self.with(|c| {
            c.deferred_uploads()
                .iter()
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default()
    }

    /// Opens a document, fetching its content from the relay first when it is not here (on
    /// demand, deferred or evicted), waiting at most `timeout_ms`. Suspends the caller's
    /// coroutine / task, never a host thread.
    ///
    /// # Errors
    /// [`FfiError::Unreachable`] at once when it is not here and the relay is not connected,
    /// [`FfiError::Timeout`], [`FfiError::InvalidInput`] for a bad id.
    pub async fn open(
        &self,
        doc_id: String,
        timeout_ms: u64,
    ) -> Result<Arc<crate::store::FfiDocument>, FfiError> {
        let doc: syncline::DocId = doc_id.parse()?;
        let client = self.current();
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let outcome = match client {
                Some(c) => c
                    .open(&doc, Duration::from_millis(timeout_ms))
                    .map(crate::store::FfiDocument::wrap)
                    .map_err(FfiError::from),
                None => Err(FfiError::Sync("the client was stopped".into())),
            };
            let _ = done.send(outcome);
        });
        result
            .await
            .map_err(|_| FfiError::Sync("the wait ended unexpectedly".into()))?
    }

    /// Syncs now (a periodic device between its scheduled syncs).
    pub fn sync_now(&self) {
        self.with(SyncClient::sync_now);
    }

    /// Disconnects and stays offline until `resume`.
    pub fn pause(&self) {
        self.with(SyncClient::pause);
    }

    /// Connects again after `pause`.
    pub fn resume(&self) {
        self.with(SyncClient::resume);
    }

    /// The network is (un)available: stop retrying, or connect at once.
    pub fn set_network_available(&self, available: bool) {
        self.with(|c| c.set_network_available(available));
    }

    /// Stops syncing (also on drop); what is pending stays in the store. A `wait_synced` in
    /// progress returns at once with an error.
    pub fn stop(&self) {
        let taken = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(client) = taken {
            client.close();
            // The sync thread is joined when the last holder (maybe a waiting thread) lets go.
            drop(client);
        }
    }
}

impl Drop for FfiSyncClient {
    /// Dropped on the foreign side: stop syncing, and end a wait in progress.
    fn drop(&mut self) {
        self.stop();
    }
}

impl FfiSyncClient {
    fn start_options(
        store: &FfiStore,
        options: syncline::SyncOptions,
        tokens: Arc<dyn FfiTokenProvider>,
    ) -> Result<Arc<Self>, FfiError> {
        // The SDK calls the provider on a blocking thread of its own runtime, so the host may
        // block in it (a network refresh, a UI prompt) without stalling anything else.
        let client = SyncClient::start(&store.store, options, move || {
            tokens.token().map_err(TokenError::from)
        })?;
        Ok(Arc::new(Self {
            client: Mutex::new(Some(Arc::new(client))),
        }))
    }

    fn current(&self) -> Option<Arc<SyncClient>> {
        self.client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn with<R>(&self, f: impl FnOnce(&SyncClient) -> R) -> Option<R> {
        self.current().map(|c| f(&c))
    }
}
