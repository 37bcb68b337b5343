//! The tokio shell of the relay: it moves bytes between sockets and the sans-IO [`Session`](crate::session::Session)s
//! and [`RelayCore`], and makes no protocol decision of its own.
//!
//! - `http` ([`app`], [`serve`]): the axum router (`/v1/sync`, authenticated on the upgrade:
//!   `Authorization: Bearer` or the subprotocol `bearer.<token>`, HTTP 401 otherwise;
//!   `/healthz`, `/readyz`, `/metrics`) and the graceful drain: on shutdown it stops
//!   accepting, closes every connection with 1001 and waits (bounded) for them to finish.
//! - `connection`: one task per connection moves frames between the socket and its `Session`,
//!   forwards the session's actions to the hub thread and the queued messages to the socket.
//! - `hub_thread`: the [`RelayCore`] on its own thread (storage blocks), fed by a bounded
//!   channel; it carries out the core's outputs into per-connection outboxes and reports
//!   their backlog to the core, which closes a client that cannot keep up with
//!   `SLOW_CONSUMER` (it resyncs from storage when it reconnects).
//! - This module: [`AppState`] (what the handlers share; it starts the hub thread), the
//!   limits and options.

pub mod admission;
#[cfg(feature = "postgres")]
mod change_feed;
mod connection;
mod http;
mod hub_thread;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use syncline_protocol::messages::Limits;
use syncline_protocol::{Compression, Message, PayloadLimits};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, Verified};
use crate::hub::{Hub, SessionId};
use crate::relay_core::{OutboxLimits, RelayCore};
use crate::session::Action;
use crate::storage::Storage;
pub use admission::{ConnectionCaps, Refused};
pub use http::{app, serve};
use hub_thread::run_hub;
pub use metrics::Metrics;

use admission::Admission;

/// Messages buffered for one connection before it counts as a slow consumer.
pub const OUTBOX: usize = 1024;

/// Bytes (approximately) a connection's outbox may hold by default; see
/// `RelayConfig::outbox_bytes`. A message larger than this is still queued when the outbox is
/// empty.
pub const OUTBOX_BYTES: usize = 64 << 20;

/// How the server runs, beyond storage, keys and limits.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// See `RelayConfig::allow_foreign_changes`.
    pub allow_foreign_changes: bool,
    /// Bytes a connection's outbox may hold before the connection is closed as a slow consumer.
    pub outbox_bytes: usize,
    /// See `RelayConfig::compression`.
    pub compression: bool,
    /// See `RelayConfig::metered_max_doc_bytes`.
    pub metered_max_doc_bytes: u64,
    /// See `RelayConfig::max_inflated_bytes` and `RelayConfig::max_ops_per_frame`.
    pub payload: PayloadLimits,
    /// See `RelayConfig::max_connections` and its per-device and per-tenant caps.
    pub caps: ConnectionCaps,
    /// See `RelayConfig::header_timeout_secs`.
    pub header_timeout: Duration,
    /// Other relays write to the same storage (PostgreSQL): the hub follows their commits from
    /// the start ([`crate::hub::Hub::follow_remote`]), fed by a change feed
    /// ([`AppState::follow_postgres`]).
    pub shared_storage: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self::from(&crate::config::RelayConfig::default())
    }
}

impl From<&crate::config::RelayConfig> for ServerOptions {
    fn from(cfg: &crate::config::RelayConfig) -> Self {
        Self {
            allow_foreign_changes: cfg.allow_foreign_changes,
            outbox_bytes: cfg.outbox_bytes,
            compression: cfg.compression,
            metered_max_doc_bytes: cfg.metered_max_doc_bytes,
            payload: cfg.payload_limits(),
            caps: ConnectionCaps {
                total: cfg.max_connections,
                per_device: cfg.max_connections_per_device,
                per_tenant: cfg.max_connections_per_tenant,
            },
            header_timeout: Duration::from_secs(cfg.header_timeout_secs),
            shared_storage: cfg.storage.is_some(),
        }
    }
}

/// Commands buffered for the hub before connections wait.
pub const HUB_QUEUE: usize = 4096;

/// Commands one connection may have waiting for the hub: past them its task waits (and stops
/// reading its socket), so what waits for the hub is bounded by the connections, whatever one
/// of them sends. Which waiting command goes next is fair between tenants and sessions
/// ([`crate::relay_core::FairQueue`]).
pub const HUB_IN_FLIGHT_PER_CONNECTION: usize = 16;
/// How long one write to a client may take before the connection is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The WebSocket subprotocol of version 1.
pub const SUBPROTOCOL: &str = "syncline.v1";

enum HubCommand {
    Connect {
        id: SessionId,
        verified: Verified,
        outbox: mpsc::Sender<(Message, usize, crate::hub::Lane)>,
        queued: Arc<std::sync::atomic::AtomicUsize>,
        span: tracing::Span,
        now_ms: u64,
    },
    Action {
        id: SessionId,
        action: Action,
        now_ms: u64,
        /// One of the connection's [`HUB_IN_FLIGHT_PER_CONNECTION`] places in the hub's queue,
        /// held while the command waits for its turn and given back when the core takes it.
        _place: tokio::sync::OwnedSemaphorePermit,
    },
    Disconnect {
        id: SessionId,
        now_ms: u64,
    },
    /// Other relays sharing the storage committed in these collections (up to these
    /// sequences): from the storage's change feed (only PostgreSQL has one).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    RemoteChanges(Vec<(crate::tenant::Tenant, syncline_protocol::Collection, u64)>),
    /// The change feed (re)connected, or checks now and then: compare every collection, then
    /// say whether that worked (the feed asks again if not).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    RemoteResync(tokio::sync::oneshot::Sender<bool>),
    /// Finish the queued commands, then stop.
    Shutdown,
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    auth: Arc<Authenticator>,
    hub: mpsc::Sender<HubCommand>,
    metrics: Arc<Metrics>,
    limits: Limits,
    /// The frame compressions connections may negotiate.
    compressions: &'static [Compression],
    /// See `RelayConfig::metered_max_doc_bytes`.
    metered_max_doc_bytes: u64,
    /// See `ServerOptions::payload`.
    payload: PayloadLimits,
    /// The epoch of the storage's data, named in every `Welcome`.
    epoch: String,
    /// The open connections, under `ServerOptions::caps`.
    admission: Admission,
    /// See `ServerOptions::header_timeout`.
    header_timeout: Duration,
    next_id: Arc<AtomicU64>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    ready: Arc<AtomicBool>,
    /// Whether the storage can serve (its database reachable, its change feed connected).
    storage_ready: Arc<dyn Fn() -> bool + Send + Sync>,
    hub_thread: Arc<parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl AppState {
    /// Starts the hub thread over `storage` and returns the shared state.
    ///
    /// # Errors
    /// The error of spawning the hub thread.
    pub fn start<S: Storage>(
        storage: Arc<S>,
        auth: Authenticator,
        limits: Limits,
        metrics: Arc<Metrics>,
        options: ServerOptions,
    ) -> std::io::Result<Self> {
        let (hub, commands) = mpsc::channel(HUB_QUEUE);
        let hub_metrics = Arc::clone(&metrics);
        let compressions: &'static [Compression] = if options.compression {
            &Compression::SUPPORTED
        } else {
            &[Compression::None]
        };
        let metered_max_doc_bytes = options.metered_max_doc_bytes;
        let payload = options.payload;
        let epoch = storage.epoch().to_owned();
        tracing::info!(%epoch, "storage opened in a new epoch");
        let admission = Admission::new(options.caps);
        let header_timeout = options.header_timeout;
        let hub_thread = std::thread::Builder::new()
            .name("syncline-hub".into())
            .spawn(move || {
                let mut hub = Hub::new(storage)
                    .allow_foreign_changes(options.allow_foreign_changes)
                    .metered_threshold(options.metered_max_doc_bytes)
                    .payload_limits(options.payload);
                if options.shared_storage
                    && let Err(e) = hub.follow_remote()
                {
                    // The change feed's first resync starts following instead.
                    tracing::warn!(error = %e, "could not read the collections' sequences at start");
                }
                let limits = OutboxLimits {
                    messages: OUTBOX,
                    bytes: options.outbox_bytes,
                };
                run_hub(RelayCore::new(hub, limits), commands, &hub_metrics);
            })?;
        Ok(Self {
            auth: Arc::new(auth),
            hub,
            metrics,
            limits,
            compressions,
            metered_max_doc_bytes,
            payload,
            epoch,
            admission,
            header_timeout,
            next_id: Arc::new(AtomicU64::new(1)),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            ready: Arc::new(AtomicBool::new(true)),
            storage_ready: Arc::new(|| true),
            hub_thread: Arc::new(parking_lot::Mutex::new(Some(hub_thread))),
        })
    }

    /// Follows other relays' commits to the PostgreSQL storage at `url` (whose `health` it
    /// reports into, and `/readyz` reads): spawns the change feed on the current runtime, until
    /// the relay drains. Start the state with [`ServerOptions::shared_storage`].
    #[cfg(feature = "postgres")]
    #[must_use]
    pub fn follow_postgres(mut self, url: &str, health: Arc<crate::storage::Health>) -> Self {
        health.set_feed_up(false);
        tokio::spawn(change_feed::follow(
            url.to_owned(),
            Arc::clone(&health),
            self.hub.clone(),
            self.shutdown.clone(),
        ));
        self.storage_ready = Arc::new(move || health.ready());
        self
    }

    /// Stops accepting work and closes every connection with 1001; resolves when they are all
    /// closed or `grace` has passed.
    pub async fn drain(&self, grace: Duration) {
        self.ready.store(false, Ordering::SeqCst);
        self.shutdown.cancel();
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the drain grace period");
        }
        // Let the hub save what the closed connections left (sync states, last sync), then
        // stop it.
        if self.hub.send(HubCommand::Shutdown).await.is_ok() {
            let thread = self.hub_thread.lock().take();
            if let Some(thread) = thread {
                let joined = tokio::task::spawn_blocking(move || thread.join());
                if tokio::time::timeout(grace, joined).await.is_err() {
                    tracing::warn!("the hub did not finish within the drain grace period");
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The address the relay is listening on, formatted for its start-up line.
pub fn listening_line(addr: SocketAddr) -> String {
    format!("syncline-relay listening on {addr}")
}
