//! The network shell around the sans-IO [`Engine`]: a WebSocket to the relay, the app's token
//! provider, timers, and the status the app observes.
//!
//! [`SyncClient::start`] spawns two things: a **sync thread** that owns the [`Engine`] and runs
//! its store work (synchronous SQLite commits, never on an async worker), and a small tokio
//! runtime whose tasks only move frames: one task per connection opens the WebSocket with a
//! token from the provider (called on a blocking thread, so a provider that blocks for a while
//! stalls nothing else), forwards received frames to the sync thread, writes the frames the
//! engine sends, pings, and refreshes the token before it expires. Every event a task reports
//! carries its connection's number, so a late event from an old connection is ignored.

mod shell;
mod token;
mod transport;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use syncline_protocol::bucket::TokenBucket;
use syncline_protocol::messages::{
    CollectionSubscription, DeviceClass, MAX_EPHEMERAL_BYTES, MAX_EPHEMERALS_PER_S, Profile,
    SyncMode,
};
use syncline_protocol::{Collection, DocId, Priority};
use tokio::sync::mpsc as tokio_mpsc;

use crate::Store;
use crate::engine::{
    Backoff, Disconnect, Engine, EngineConfig, Event, Status, SyncStats, SyncStore,
};
use shell::{Clock, Shell, now_ms};
use transport::sync_url;
#[cfg(test)]
use transport::{Reporter, run_connection};

/// Where the app's tokens come from. Called on one of the SDK's blocking threads when a
/// connection opens, after an authentication failure, and before the current token expires.
pub trait TokenProvider: Send + Sync + 'static {
    /// A token (a JWT) for the relay, or why there is none.
    ///
    /// # Errors
    /// [`TokenError::Denied`] when the app cannot authenticate at all (syncing then reports
    /// `Unauthorized`), [`TokenError::Unavailable`] when it cannot get a token right now (the
    /// connection is retried with backoff).
    fn token(&self) -> std::result::Result<String, TokenError>;
}

impl<F> TokenProvider for F
where
    F: Fn() -> std::result::Result<String, TokenError> + Send + Sync + 'static,
{
    fn token(&self) -> std::result::Result<String, TokenError> {
        self()
    }
}

/// Why a [`TokenProvider`] has no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The app cannot authenticate (signed out, access revoked): the client stops connecting
    /// and reports `Unauthorized`, as for a token the relay refuses.
    #[error("{0}")]
    Denied(String),
    /// No token right now (the app's own auth service is unreachable, say): the client
    /// retries the connection with backoff, as for an unreachable relay.
    #[error("{0}")]
    Unavailable(String),
}

/// How a [`SyncClient`] connects and what it syncs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The relay, as `ws://host:port` or `wss://host` (TLS with the Mozilla root
    /// certificates; the path `/v1/sync` is added when absent).
    pub relay_url: String,
    /// Other relays serving the same data (several relays on one PostgreSQL database), in the
    /// form of `relay_url`. When a connection fails before its relay sent anything (refused,
    /// unreachable, the relay killed), the next connection tries the next of `relay_url` and
    /// these, in turn; a relay that answers is kept. The device keeps one set of cursors and
    /// acknowledgements for all of them (they share the data), under `relay_url`. Empty by
    /// default.
    pub fallback_urls: Vec<String>,
    /// The device's capability profile.
    pub profile: Profile,
    /// The collections to sync.
    pub subscriptions: Vec<CollectionSubscription>,
    /// Reconnect delay bounds.
    pub backoff: Backoff,
    /// Reconnect when the relay has not answered for this long while an answer is due.
    pub stall_timeout: Duration,
    /// The client's name, sent to the relay.
    pub client: String,
    /// For a periodic device (`profile.realtime == false`): how long after a complete sync it
    /// syncs again ([`SyncClient::sync_now`] syncs at once). It disconnects once caught up.
    pub sync_interval: Duration,
    /// On a metered network, hold back uploads of documents whose changes are larger than the
    /// profile's metered threshold (64 KiB by default) until it is unmetered. On by default.
    pub defer_metered_uploads: bool,
}

impl SyncOptions {
    /// Syncs `collections` eagerly at normal priority, as a desktop on an unmetered network.
    pub fn new(relay_url: impl Into<String>, collections: &[Collection]) -> Self {
        Self {
            relay_url: relay_url.into(),
            fallback_urls: Vec::new(),
            profile: Profile::new(DeviceClass::Desktop),
            subscriptions: collections
                .iter()
                .map(|c| CollectionSubscription {
                    collection: c.clone(),
                    priority: Priority::Normal,
                    mode: SyncMode::Eager,
                })
                .collect(),
            backoff: Backoff::default(),
            stall_timeout: Duration::from_secs(30),
            client: format!("syncline/{}", env!("CARGO_PKG_VERSION")),
            sync_interval: Duration::from_secs(15 * 60),
            defer_metered_uploads: true,
        }
    }
}

/// Why a sync call failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The relay refused the token.
    #[error("the relay refused the token: {0}")]
    Unauthorized(String),
    /// The relay could not be reached.
    #[error("the relay is unreachable: {0}")]
    Unreachable(String),
    /// Not synced in time.
    #[error("not synced within {waited:?} (status: {status:?})")]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// The status when it gave up.
        status: Box<Status>,
    },
    /// The sync stopped with an error the app must look at.
    #[error("sync failed: {0}")]
    Failed(String),
    /// The client could not start.
    #[error("could not start the sync client: {0}")]
    Start(String),
    /// An ephemeral payload over [`MAX_EPHEMERAL_BYTES`].
    #[error("an ephemeral payload of {size} bytes is over the limit of {max}")]
    EphemeralTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Over the device's rate of ephemeral messages ([`MAX_EPHEMERALS_PER_S`], kept below the
    /// relay's, so that the relay never has to refuse one).
    #[error(
        "over {MAX_EPHEMERALS_PER_S} ephemeral messages per second: retry in {retry_after_ms} ms"
    )]
    RateLimited {
        /// When one fits again.
        retry_after_ms: u64,
    },
    /// Not connected: an ephemeral message is for the devices there now, so it is not kept.
    #[error("not connected to the relay: the ephemeral message was not sent")]
    NotConnected,
    /// Not connected to the relay, so a document that is not here cannot be fetched now.
    #[error("offline: {doc} is not on this device and the relay is not connected")]
    Offline {
        /// The document.
        doc: DocId,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::Error),
}

enum Command {
    Event(Event),
    /// An event of connection `generation`.
    Transport(u64, TransportEvent),
    Stop,
}

enum TransportEvent {
    Open(tokio_mpsc::UnboundedSender<Vec<u8>>),
    Frame(transport::InboundFrame),
    Closed(Disconnect),
    Token(String),
}

type StatusListener = Arc<dyn Fn(&Status) + Send + Sync>;
type SyncErrorListener = Arc<dyn Fn(&crate::engine::SyncErrorEvent) + Send + Sync>;
type EphemeralListener = Arc<dyn Fn(&crate::engine::EphemeralMessage) + Send + Sync>;

struct Observed {
    status: Status,
    stats: SyncStats,
    last_disconnect: Option<Disconnect>,
    listeners: Vec<(u64, StatusListener)>,
    /// Set once the sync thread has finished.
    stopped: bool,
    /// Local documents whose upload waits for an unmetered network.
    deferred_uploads: Vec<DocId>,
    /// The documents that did not sync, as last published.
    sync_errors: std::collections::BTreeMap<DocId, crate::engine::DocSyncError>,
    error_listeners: Vec<(u64, SyncErrorListener)>,
    /// Ephemeral listeners, each for one document or (`None`) every document.
    ephemeral_listeners: Vec<(u64, Option<DocId>, EphemeralListener)>,
    /// A connection to the relay is open.
    connected: bool,
}

struct Inner {
    commands: Mutex<mpsc::Sender<Command>>,
    observed: Mutex<Observed>,
    changed: Condvar,
    next_listener: AtomicU64,
    /// The device's own limit on ephemeral messages, checked on the app's thread.
    ephemerals: Mutex<TokenBucket>,
}

impl Inner {
    fn send(&self, command: Command) {
        let sender = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // The sync thread is gone only after stop: nothing left to tell.
        let _ = sender.send(command);
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Syncs a [`Store`] with a relay in the background for as long as it is kept; see the module
/// documentation. Dropping it stops syncing (what is pending stays in the store).
pub struct SyncClient {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
    store: Store,
    hook: u64,
    relay: String,
    /// The subscription and profile as last set (for `set_network` and `wait_synced`).
    subscriptions: Mutex<Vec<CollectionSubscription>>,
    profile: Mutex<Profile>,
}

/// Keeps a status (or sync error) listener registered; dropping it unregisters.
pub struct StatusSubscription {
    inner: std::sync::Weak<Inner>,
    id: u64,
}

impl Drop for StatusSubscription {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut observed = inner.observed();
            observed.listeners.retain(|(id, _)| *id != self.id);
            observed.error_listeners.retain(|(id, _)| *id != self.id);
            observed
                .ephemeral_listeners
                .retain(|(id, _, _)| *id != self.id);
        }
    }
}

impl SyncClient {
    /// Starts syncing `store` with the relay of `options`, with tokens from `tokens`.
    ///
    /// # Errors
    /// [`SyncError::Start`] if the runtime or thread cannot be created.
    pub fn start(
        store: &Store,
        options: SyncOptions,
        tokens: impl TokenProvider,
    ) -> Result<Self, SyncError> {
        let urls: Vec<String> = std::iter::once(&options.relay_url)
            .chain(&options.fallback_urls)
            .map(|url| sync_url(url))
            .collect();
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            commands: Mutex::new(tx.clone()),
            observed: Mutex::new(Observed {
                status: Status::Offline,
                stats: SyncStats::default(),
                last_disconnect: None,
                listeners: Vec::new(),
                stopped: false,
                deferred_uploads: Vec::new(),
                sync_errors: std::collections::BTreeMap::new(),
                error_listeners: Vec::new(),
                ephemeral_listeners: Vec::new(),
                connected: false,
            }),
            ephemerals: Mutex::new(TokenBucket::per_second(MAX_EPHEMERALS_PER_S, 0)),
            changed: Condvar::new(),
            next_listener: AtomicU64::new(0),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .thread_name("syncline-net")
            .enable_all()
            .build()
            .map_err(|e| SyncError::Start(e.to_string()))?;
        let config = EngineConfig {
            relay: options.relay_url.clone(),
            profile: options.profile.clone(),
            subscriptions: options.subscriptions.clone(),
            client: options.client.clone(),
            backoff: options.backoff,
            stall_timeout_ms: u64::try_from(options.stall_timeout.as_millis()).unwrap_or(u64::MAX),
            sync_interval_ms: u64::try_from(options.sync_interval.as_millis()).unwrap_or(u64::MAX),
            defer_metered_uploads: options.defer_metered_uploads,
        };
        let seed = u64::from_le_bytes(
            store.device_id().as_bytes()[..8]
                .try_into()
                .expect("a device id has 16 bytes"),
        ) ^ now_ms();
        let engine = Engine::new(store.clone(), config, seed);
        let hook_tx = Mutex::new(tx.clone());
        let hook = store.shared().add_local_hook(Arc::new(move |doc: &DocId| {
            let sender = hook_tx.lock().unwrap_or_else(|e| e.into_inner());
            let _ = sender.send(Command::Event(Event::LocalChanges(vec![doc.clone()])));
        }));
        let shell = Shell {
            // Every line the sync thread and its connections log names the device and relay.
            span: tracing::info_span!(
                "sync",
                device = %store.device_id(),
                relay = %options.relay_url
            ),
            engine,
            runtime: Some(runtime),
            clock: Clock::start(),
            inner: Arc::clone(&inner),
            commands: tx,
            urls,
            current_url: 0,
            answered: false,
            unanswered: 0,
            tokens: Arc::new(tokens),
            generation: 0,
            transport: None,
            wake_at: None,
            handling: None,
        };
        let thread = std::thread::Builder::new()
            .name("syncline-sync".into())
            .spawn(move || shell.run(rx))
            .map_err(|e| SyncError::Start(e.to_string()))?;
        inner.send(Command::Event(Event::Start));
        Ok(Self {
            inner,
            thread: Some(thread),
            store: store.clone(),
            hook,
            relay: options.relay_url.clone(),
            subscriptions: Mutex::new(options.subscriptions.clone()),
            profile: Mutex::new(options.profile.clone()),
        })
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.inner.observed().status.clone()
    }

    /// What has been moved so far.
    pub fn stats(&self) -> SyncStats {
        self.inner.observed().stats
    }

    /// Why the last connection ended, if one did.
    pub fn last_disconnect(&self) -> Option<Disconnect> {
        self.inner.observed().last_disconnect.clone()
    }

    /// Calls `listener` with every new status, on the sync thread; keep the returned
    /// subscription for as long as it should be called.
    pub fn watch_status(
        &self,
        listener: impl Fn(&Status) + Send + Sync + 'static,
    ) -> StatusSubscription {
        self.register(|observed, id| observed.listeners.push((id, Arc::new(listener))))
    }

    /// How many listeners (`watch_status`, `watch_sync_errors`, `watch_ephemeral`) are
    /// registered now: a subscription dropped or cancelled no longer counts. For diagnostics and
    /// for bindings' tests that an abandoned stream unsubscribed.
    pub fn listener_count(&self) -> usize {
        let observed = self.inner.observed();
        observed.listeners.len()
            + observed.error_listeners.len()
            + observed.ephemeral_listeners.len()
    }

    /// Registers a listener with `add`, under a new id the returned subscription removes.
    fn register(&self, add: impl FnOnce(&mut Observed, u64)) -> StatusSubscription {
        let id = self.inner.next_listener.fetch_add(1, Ordering::Relaxed);
        add(&mut self.inner.observed(), id);
        StatusSubscription {
            inner: Arc::downgrade(&self.inner),
            id,
        }
    }

    /// The documents that did not sync, each with why (in document order): the relay refused
    /// them (no grant, too large, invalid, its storage full) while the rest of the sync went
    /// on, or the relay's message for them was refused. Their changes stay pending in the
    /// store; an error clears once the document syncs.
    pub fn sync_errors(&self) -> Vec<crate::engine::DocSyncError> {
        self.inner
            .observed()
            .sync_errors
            .values()
            .cloned()
            .collect()
    }

    /// Calls `listener` on the sync thread each time a document does not sync
    /// ([`crate::engine::SyncErrorEvent::Raised`]) and when one that had an error syncs
    /// (`Cleared`); keep the returned subscription for as long as it should be called.
    pub fn watch_sync_errors(
        &self,
        listener: impl Fn(&crate::engine::SyncErrorEvent) + Send + Sync + 'static,
    ) -> StatusSubscription {
        self.register(|observed, id| observed.error_listeners.push((id, Arc::new(listener))))
    }

    /// Sends an ephemeral payload (presence, a cursor, a "typing" flag) to the other devices
    /// connected on document `doc` now. It is never stored, and not kept for later: offline,
    /// it fails with [`SyncError::NotConnected`]. The device keeps below the relay's rate
    /// ([`MAX_EPHEMERALS_PER_S`] per second, [`SyncError::RateLimited`] past it) and size
    /// ([`MAX_EPHEMERAL_BYTES`], [`SyncError::EphemeralTooLarge`]).
    ///
    /// # Errors
    /// As above.
    pub fn send_ephemeral(&self, doc: &DocId, payload: &[u8]) -> Result<(), SyncError> {
        if payload.len() > MAX_EPHEMERAL_BYTES {
            return Err(SyncError::EphemeralTooLarge {
                size: payload.len(),
                max: MAX_EPHEMERAL_BYTES,
            });
        }
        if !self.inner.observed().connected {
            return Err(SyncError::NotConnected);
        }
        lock(&self.inner.ephemerals)
            .take(1, now_ms())
            .map_err(|retry_after_ms| SyncError::RateLimited { retry_after_ms })?;
        self.inner.send(Command::Event(Event::Ephemeral {
            doc: doc.clone(),
            payload: payload.to_vec(),
        }));
        Ok(())
    }

    /// Calls `listener` on the sync thread with each ephemeral message another device sends
    /// on `doc` (or on any document of the synced collections, with `None`), with the sending
    /// device; keep the returned subscription for as long as it should be called.
    pub fn watch_ephemeral(
        &self,
        doc: Option<&DocId>,
        listener: impl Fn(&crate::engine::EphemeralMessage) + Send + Sync + 'static,
    ) -> StatusSubscription {
        self.register(|observed, id| {
            observed
                .ephemeral_listeners
                .push((id, doc.cloned(), Arc::new(listener)));
        })
    }

    /// Blocks until the status is [`Status::Synced`] and nothing is pending locally, fails at
    /// once when the sync reports an error (a refused token, a refused change, a protocol
    /// error), or gives up after `timeout`. With `fail_unreachable`, a relay that cannot be
    /// reached fails at once instead of being retried.
    ///
    /// # Errors
    /// [`SyncError::Unauthorized`], [`SyncError::Unreachable`], [`SyncError::Failed`],
    /// [`SyncError::Timeout`].
    pub fn wait_synced(
        &self,
        timeout: Duration,
        fail_unreachable: bool,
    ) -> Result<SyncStats, SyncError> {
        self.wait_until(timeout, Duration::from_millis(100), |observed| {
            match (&observed.status, &observed.last_disconnect) {
                (Status::Synced { .. }, _)
                    if self.nothing_unacknowledged(&observed.deferred_uploads) =>
                {
                    Some(Ok(observed.stats))
                }
                (_, Some(Disconnect::Unauthorized(reason))) => {
                    Some(Err(SyncError::Unauthorized(reason.clone())))
                }
                (_, Some(Disconnect::Failed(reason))) if fail_unreachable => {
                    Some(Err(SyncError::Unreachable(reason.clone())))
                }
                (Status::Error { reason }, _) => Some(Err(SyncError::Failed(reason.clone()))),
                _ if observed.stopped => {
                    Some(Err(SyncError::Failed("the sync client was stopped".into())))
                }
                _ => None,
            }
        })
    }

    /// Waits until `check` answers, looking again at every status change and at least every
    /// `poll`; gives up after `timeout` with [`SyncError::Timeout`]. `check` runs with the
    /// observed state locked.
    fn wait_until<T>(
        &self,
        timeout: Duration,
        poll: Duration,
        mut check: impl FnMut(&Observed) -> Option<Result<T, SyncError>>,
    ) -> Result<T, SyncError> {
        let started = Instant::now();
        let mut observed = self.inner.observed();
        loop {
            if let Some(answer) = check(&observed) {
                return answer;
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(SyncError::Timeout {
                    waited,
                    status: Box::new(observed.status.clone()),
                });
            }
            observed = self
                .inner
                .changed
                .wait_timeout(observed, (timeout - waited).min(poll))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// True when this relay has acknowledged every document of the synced collections.
    /// (Uploads deferred on a metered network do not count: they wait by the app's choice.)
    fn nothing_unacknowledged(&self, deferred: &[DocId]) -> bool {
        let subscriptions = lock(&self.subscriptions).clone();
        subscriptions.iter().all(|s| {
            self.store
                .unacknowledged(&self.relay, &s.collection)
                .is_ok_and(|docs| docs.iter().all(|d| deferred.contains(d)))
        })
    }

    /// Local documents whose upload waits for an unmetered network (too large for a metered
    /// one; see [`SyncOptions::defer_metered_uploads`]).
    pub fn deferred_uploads(&self) -> Vec<DocId> {
        self.inner.observed().deferred_uploads.clone()
    }

    /// Disconnects and stays offline until [`SyncClient::resume`].
    pub fn pause(&self) {
        self.inner.send(Command::Event(Event::Pause));
    }

    /// Connects again after [`SyncClient::pause`].
    pub fn resume(&self) {
        self.inner.send(Command::Event(Event::Resume));
    }

    /// Tells the SDK whether the network is available: when it is not, the client stops
    /// retrying; when it comes back, it connects at once.
    pub fn set_network_available(&self, available: bool) {
        self.inner.send(Command::Event(if available {
            Event::NetworkUp
        } else {
            Event::NetworkDown
        }));
    }

    /// Declares a new capability profile (class, storage budget, bandwidth, metered, realtime
    /// or periodic); the relay replans at once on the live connection (mid-transfer included).
    pub fn set_profile(&self, profile: Profile) {
        *lock(&self.profile) = profile.clone();
        self.inner.send(Command::Event(Event::Profile(profile)));
    }

    /// The network changed (the phone left Wi-Fi): metered or not, and its bandwidth in bytes
    /// per second (none: unknown). On a metered network large documents and low-priority
    /// collections are announced and deferred; leaving it sends them on the same connection.
    /// Downloads and uploads are paced to the bandwidths.
    pub fn set_network(
        &self,
        metered: bool,
        download_bytes_per_s: Option<u64>,
        upload_bytes_per_s: Option<u64>,
    ) {
        let profile = {
            let mut profile = lock(&self.profile);
            profile.metered = metered;
            profile.download_bytes_per_s = download_bytes_per_s;
            profile.upload_bytes_per_s = upload_bytes_per_s;
            profile.clone()
        };
        self.inner.send(Command::Event(Event::Profile(profile)));
    }

    /// Replaces the subscription: removed collections stop syncing at once, added ones are
    /// planned at once on the live connection.
    pub fn set_subscriptions(&self, subscriptions: Vec<CollectionSubscription>) {
        *lock(&self.subscriptions) = subscriptions.clone();
        self.inner
            .send(Command::Event(Event::Subscriptions(subscriptions)));
    }

    /// The documents the relay announced and holds back for this device in the collections it
    /// subscribes to now (too large for a metered network, low priority on one, on demand,
    /// evicted), with size and reason; see [`Store::deferred`].
    ///
    /// # Errors
    /// A storage error.
    pub fn deferred(&self) -> Result<Vec<crate::DeferredDoc>, SyncError> {
        let subscriptions = lock(&self.subscriptions).clone();
        Ok(self
            .store
            .deferred()?
            .into_iter()
            .filter(|d| {
                subscriptions
                    .iter()
                    .any(|s| &s.collection == d.doc.collection())
            })
            .collect())
    }

    /// Asks the relay for these documents now, whatever held them back (a metered network,
    /// an on-demand collection, an eviction); returns at once. A fetched on-demand document
    /// stays in sync from then on.
    pub fn fetch(&self, docs: &[DocId]) {
        self.inner.send(Command::Event(Event::Fetch(docs.to_vec())));
    }

    /// Opens a document, fetching its content from the relay first when it is not on this
    /// device (on demand, deferred or evicted), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`SyncError::Offline`] at once when the document is not here and the relay is not
    /// connected; [`SyncError::Timeout`] when it did not arrive in time (the relay may not
    /// hold it); [`SyncError::Store`] when the store fails.
    pub fn open(&self, doc: &DocId, timeout: Duration) -> Result<crate::Document, SyncError> {
        if let Some(document) = here(&self.store, doc)? {
            return Ok(document);
        }
        if !matches!(
            self.status(),
            Status::Syncing { .. } | Status::Synced { .. }
        ) {
            return Err(SyncError::Offline { doc: doc.clone() });
        }
        self.fetch(std::slice::from_ref(doc));
        // Woken by any status change; looks at least every 20 ms.
        self.wait_until(timeout, Duration::from_millis(20), |_| {
            here(&self.store, doc).map_err(SyncError::from).transpose()
        })
    }

    /// Syncs now: a periodic device connects before its next scheduled sync (a no-op while
    /// connected).
    pub fn sync_now(&self) {
        self.inner.send(Command::Event(Event::SyncNow));
    }

    /// Stops syncing and waits for the sync thread to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Asks the sync thread to stop without waiting for it (what `stop` and drop do first);
    /// a `wait_synced` in progress on another thread then returns at once.
    pub fn close(&self) {
        self.store.shared().remove_local_hook(self.hook);
        self.inner.send(Command::Stop);
    }

    fn shutdown(&mut self) {
        self.close();
        if let Some(thread) = self.thread.take() {
            // Stopped from a status listener, which runs on the sync thread: it finishes on
            // its own once the listener returns.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// The document, if its content is on this device.
fn here(store: &Store, doc: &DocId) -> Result<Option<crate::Document>, crate::Error> {
    match store.document(doc) {
        Ok(document) => Ok(Some(document)),
        Err(crate::Error::NotFound(_) | crate::Error::Evicted(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Locks a mutex, taking over a poisoned one (a panicked listener must not stop sync).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for SyncClient {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client counts its listeners: each watch adds one, a subscription dropped removes it
    /// (what bindings' tests check after a status stream is abandoned).
    #[test]
    fn the_listener_count_follows_subscriptions() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::Store::open(dir.path().join("s.db")).expect("store");
        let todos = Collection::new("todos").expect("valid");
        // Nothing listens there: the client stays offline, which is all this needs.
        let options = SyncOptions::new("ws://127.0.0.1:9/v1/sync", &[todos]);
        let tokens = || Ok::<_, crate::net::TokenError>("t".to_owned());
        let client = SyncClient::start(&store, options, tokens).expect("start");
        assert_eq!(client.listener_count(), 0);
        let status = client.watch_status(|_| {});
        let errors = client.watch_sync_errors(|_| {});
        let ephemeral = client.watch_ephemeral(None, |_| {});
        assert_eq!(client.listener_count(), 3);
        drop(status);
        assert_eq!(client.listener_count(), 2);
        drop((errors, ephemeral));
        assert_eq!(client.listener_count(), 0);
    }

    #[test]
    fn wss_urls_go_through_tls() {
        // A plain TCP server: a TLS client fails its handshake (without TLS support the
        // error would be about the URL scheme instead).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            if let Ok((mut socket, _)) = listener.accept() {
                use std::io::Write;
                let _ = socket.write_all(b"HTTP/1.1 400 Not TLS\r\n\r\n");
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let reporter = Arc::new(Reporter {
            commands: Mutex::new(mpsc::channel().0),
            generation: 1,
        });
        let tokens: Arc<dyn TokenProvider> = Arc::new(|| Ok("t".to_owned()));
        let url = format!("wss://{addr}/v1/sync");
        let why = runtime.block_on(run_connection(&url, tokens, &reporter));
        let _ = server.join();
        match why {
            Disconnect::Failed(reason) => {
                let lower = reason.to_lowercase();
                assert!(!lower.contains("scheme"), "{reason}");
                assert!(!lower.contains("not supported"), "{reason}");
                assert!(!lower.contains("not compiled"), "{reason}");
                eprintln!("TLS handshake failed as expected: {reason}");
            }
            other => panic!("expected a failed TLS handshake, got {other:?}"),
        }
    }

    /// Issue 15, class 8: a relay sending faster than the sync thread handles frames fills
    /// the socket, not the device's memory; reading resumes as frames are handled.
    #[test]
    fn frames_the_sync_thread_has_not_handled_are_bounded() {
        use futures_util::SinkExt as _;
        const FRAMES: usize = 120;
        const SIZE: usize = 1 << 20;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        runtime.spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async(socket)
                .await
                .expect("upgrade");
            for n in 0..FRAMES {
                let frame = vec![u8::try_from(n % 251).expect("small"); SIZE];
                if ws
                    .send(tokio_tungstenite::tungstenite::Message::Binary(
                        frame.into(),
                    ))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Hold the connection open until the client is done.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let (tx, rx) = mpsc::channel();
        let reporter = Arc::new(Reporter {
            commands: Mutex::new(tx),
            generation: 1,
        });
        let tokens: Arc<dyn TokenProvider> = Arc::new(|| Ok("t".to_owned()));
        let url = format!("ws://{addr}/v1/sync");
        runtime.spawn(async move {
            run_connection(&url, tokens, &reporter).await;
        });
        // Nothing is handled: frames pile up until the connection stops reading, then no
        // more arrive (quiet for a second; at most 60 s in all).
        let mut held = Vec::new();
        // The sender of frames to the relay: dropping it would close the connection.
        let mut outgoing = None;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Command::Transport(_, TransportEvent::Frame(frame))) => held.push(frame),
                Ok(Command::Transport(_, TransportEvent::Open(frames))) => outgoing = Some(frames),
                Ok(_) => {}
                Err(_) if !held.is_empty() => break,
                Err(_) => {}
            }
        }
        let queued: usize = held.iter().map(|f| f.bytes.len()).sum();
        assert!(
            queued <= transport::INBOUND_QUEUE_BYTES,
            "{queued} bytes queued unhandled"
        );
        assert!(held.len() < FRAMES, "the reader stopped before the end");
        // Handled (dropped), their places free up and the rest arrives.
        let mut received = held.len();
        drop(held);
        while received < FRAMES && started.elapsed() < Duration::from_secs(120) {
            if let Ok(Command::Transport(_, TransportEvent::Frame(_))) =
                rx.recv_timeout(Duration::from_secs(1))
            {
                received += 1;
            }
        }
        assert_eq!(received, FRAMES);
        assert!(outgoing.is_some(), "the connection opened");
        runtime.shutdown_background();
    }

    #[test]
    fn the_sync_path_is_added_only_when_missing() {
        assert_eq!(sync_url("ws://h:1"), "ws://h:1/v1/sync");
        assert_eq!(sync_url("ws://h:1/"), "ws://h:1/v1/sync");
        assert_eq!(sync_url("ws://h:1/custom/sync"), "ws://h:1/custom/sync");
    }
}
