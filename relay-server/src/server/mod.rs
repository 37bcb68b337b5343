//! The tokio shell of the relay: HTTP and WebSocket I/O around the sans-IO [`Session`] and
//! the [`Hub`].
//!
//! - [`app`] builds the axum router: `/v1/sync` (the WebSocket, authenticated on the upgrade:
//!   `Authorization: Bearer` or the subprotocol `bearer.<token>`; HTTP 401 otherwise),
//!   `/healthz`, `/readyz`, `/metrics`.
//! - One task per connection moves frames between the socket and its `Session`, forwards the
//!   session's actions to the hub and the hub's messages to the socket. Its outbox is bounded:
//!   a client that cannot keep up is closed with [`close_code::SLOW_CONSUMER`] and resyncs from storage
//!   when it reconnects, instead of being buffered without bound.
//! - The hub runs on its own thread (it calls storage, which blocks), fed by a bounded
//!   channel; a panic while handling one action is caught, logged and answered with an
//!   `INTERNAL` error to that session only.
//! - [`serve`] binds, logs the address, and on shutdown stops accepting, closes every
//!   connection with 1001 and waits (bounded) for them to finish.

pub mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use syncline_protocol::messages::Limits;
use syncline_protocol::{Compression, Message, frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::{Authenticator, Verified};
use crate::hub::{Hub, SessionId};
use crate::relay_core::{
    self, Backlog, Input, OutboxLimits, Output as CoreOutput, Queued, RelayCore,
};
use crate::session::{Action, Close, Output, Session, close_code};
use crate::storage::Storage;
pub use metrics::Metrics;

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
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            allow_foreign_changes: false,
            outbox_bytes: OUTBOX_BYTES,
            compression: true,
        }
    }
}

/// A connection's outbox as the hub thread sees it: bounded in messages by the channel and in
/// bytes by `queued`, which the connection lowers as it takes messages out.
struct Route {
    /// Each message with the bytes it counts against the bound (0 for an answer to the
    /// session's own request), which the connection gives back when it takes it.
    sender: mpsc::Sender<(Message, usize)>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// The connection's span (session, device, tenant): the hub thread logs under it.
    span: tracing::Span,
    /// Its `Disconnect` arrived: removed once the turn's outputs are carried out.
    gone: bool,
}

/// The span of session `id`'s connection, for what the hub thread logs about it.
fn span_of(routes: &HashMap<SessionId, Route>, id: SessionId) -> tracing::Span {
    routes
        .get(&id)
        .map_or_else(tracing::Span::none, |r| r.span.clone())
}

/// Commands buffered for the hub before connections wait.
pub const HUB_QUEUE: usize = 4096;
/// How long one write to a client may take before the connection is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The WebSocket subprotocol of version 1.
pub const SUBPROTOCOL: &str = "syncline.v1";

enum HubCommand {
    Connect {
        id: SessionId,
        verified: Verified,
        outbox: mpsc::Sender<(Message, usize)>,
        queued: Arc<std::sync::atomic::AtomicUsize>,
        span: tracing::Span,
        now_ms: u64,
    },
    Action {
        id: SessionId,
        action: Action,
        now_ms: u64,
    },
    Disconnect {
        id: SessionId,
        now_ms: u64,
    },
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
    next_id: Arc<AtomicU64>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    ready: Arc<AtomicBool>,
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
        let hub_thread = std::thread::Builder::new()
            .name("syncline-hub".into())
            .spawn(move || {
                let hub = Hub::new(storage).allow_foreign_changes(options.allow_foreign_changes);
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
            next_id: Arc::new(AtomicU64::new(1)),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            ready: Arc::new(AtomicBool::new(true)),
            hub_thread: Arc::new(parking_lot::Mutex::new(Some(hub_thread))),
        })
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

/// The relay's HTTP routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/sync", get(sync_endpoint))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains connections.
///
/// # Errors
/// The error of the HTTP server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let drain_state = state.clone();
    let stop = state.shutdown.clone();
    let router = app(state);
    // Without TCP_NODELAY, Nagle's algorithm holds each small frame after the first until the
    // client's delayed ACK (~40 ms on Linux): every reply of a sync would wait for it.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        stop.cancel();
    });
    server.await?;
    drain_state.drain(grace).await;
    Ok(())
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    }
}

async fn metrics_endpoint(State(state): State<AppState>) -> Response {
    let headers = [(
        header::CONTENT_TYPE,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )];
    (headers, state.metrics.encode()).into_response()
}

/// The token from `Authorization: Bearer` or from the subprotocol list (`bearer.<token>`).
fn bearer(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())?
        .split(',')
        .find_map(|p| p.trim().strip_prefix("bearer.").map(str::to_owned))
}

async fn sync_endpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    // Authenticate before looking at the upgrade, so a bad token is a plain 401.
    let token = bearer(&headers).unwrap_or_default();
    let verified = match state.auth.verify(&token, now_ms() / 1000) {
        Ok(v) => v,
        Err(e) => {
            state.metrics.auth_failed(&e);
            tracing::info!(reason = e.reason(), "refused a connection: {e}");
            return (StatusCode::UNAUTHORIZED, "invalid or missing token\n").into_response();
        }
    };
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    // The WebSocket layer refuses messages over twice the frame limit before buffering them;
    // between the two limits the session answers with a typed FRAME_TOO_LARGE error.
    let max = usize::try_from(state.limits.max_frame_bytes.saturating_mul(2)).unwrap_or(usize::MAX);
    let tracker = state.connections.clone();
    upgrade
        // Small starting buffers: an idle connection should cost kilobytes, not the 128 KiB
        // each that tungstenite reserves by default. They grow when a large frame arrives.
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .protocols([SUBPROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let id = state.next_id.fetch_add(1, Ordering::Relaxed);
            // Every line the connection logs, on whichever worker polls it, carries the session
            // (as the device sees it in `Welcome`), the device and the tenant.
            let span = tracing::info_span!(
                "connection",
                session = %session_name(id),
                device = %verified.identity.device,
                tenant = %verified.identity.tenant
            );
            tracker.track_future(connection(socket, state, verified, id).instrument(span))
        })
}

/// The session's name on the wire (`Welcome.session`) and in the logs.
fn session_name(id: SessionId) -> String {
    format!("s-{id}")
}

/// One connection: socket ⇄ session ⇄ hub, until either side closes. Runs inside its
/// connection span (`Instrument`), never holding a span guard across an `.await`.
async fn connection(socket: WebSocket, state: AppState, verified: Verified, id: SessionId) {
    let (outbox, mut inbox) = mpsc::channel(OUTBOX);
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut session = Session::new(
        session_name(id),
        verified.clone(),
        state.limits.clone(),
        now_ms(),
    );
    session.accept_compressions(state.compressions);
    if state
        .hub
        .send(HubCommand::Connect {
            id,
            verified,
            outbox,
            queued: Arc::clone(&queued),
            span: tracing::Span::current(),
            now_ms: now_ms(),
        })
        .await
        .is_err()
    {
        return;
    }
    state.metrics.connections.inc();
    let _leave = Leave {
        id,
        hub: state.hub.clone(),
        metrics: Arc::clone(&state.metrics),
    };
    let (mut sink, mut stream) = socket.split();
    let close = loop {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(session.deadline_ms().saturating_sub(now_ms()));
        let output = tokio::select! {
            () = state.shutdown.cancelled() => {
                break Some(Close { code: close_code::GOING_AWAY, reason: "relay shutting down".into() });
            }
            received = stream.next() => match received {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    state.metrics.frames_in.inc();
                    state.metrics.bytes_in.inc_by(bytes.len() as u64);
                    session.handle_frame(&bytes, now_ms())
                }
                // Text frames are not part of the protocol: an empty frame is a bad frame.
                Some(Ok(WsMessage::Text(_))) => session.handle_frame(&[], now_ms()),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {
                    session.handle_heartbeat(now_ms());
                    continue;
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break None,
            },
            delivered = inbox.recv() => match delivered {
                // The hub may have queued this before it learned of narrower grants.
                Some((message, counted)) => {
                    queued.fetch_sub(counted, Ordering::Relaxed);
                    Output {
                        send: relay_core::visible(message, session.grants())
                            .into_iter()
                            .collect(),
                        ..Output::default()
                    }
                }
                None => break Some(Close { code: close_code::SLOW_CONSUMER, reason: "too slow: reconnect to resync".into() }),
            },
            () = tokio::time::sleep_until(deadline) => session.handle_tick(now_ms()),
        };
        match apply(&state, &mut session, id, output, &mut sink).await {
            Ok(Some(close)) => break Some(close),
            Ok(None) => {}
            Err(()) => break None,
        }
    };
    if let Some(close) = close {
        tracing::info!(code = close.code, reason = %close.reason, "closing");
        let frame = CloseFrame {
            code: close.code,
            reason: close.reason.into(),
        };
        let _ = sink.send(WsMessage::Close(Some(frame))).await;
    }
}

/// Sends a session output's messages, runs its actions, and reports a close.
async fn apply<W>(
    state: &AppState,
    session: &mut Session,
    id: SessionId,
    mut output: Output,
    sink: &mut W,
) -> Result<Option<Close>, ()>
where
    W: futures_util::Sink<WsMessage> + Unpin,
{
    loop {
        for message in output.send.drain(..) {
            let bytes = frame::encode_with(&message, session.compression());
            state.metrics.frames_out.inc();
            state.metrics.bytes_out.inc_by(bytes.len() as u64);
            // A client that stops reading must not pin this task: give up after SEND_TIMEOUT.
            match tokio::time::timeout(SEND_TIMEOUT, sink.send(WsMessage::Binary(bytes.into())))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(()),
            }
        }
        let mut follow_up = None;
        for action in output.actions.drain(..) {
            match action {
                Action::VerifyToken(token) => {
                    let result = state.auth.verify(&token, now_ms() / 1000);
                    if let Err(e) = &result {
                        state.metrics.auth_failed(e);
                    }
                    follow_up = Some(session.handle_token_verified(result));
                }
                Action::ClientError(e) => {
                    tracing::info!(code = e.code.0, message = %e.message, "client reported an error")
                }
                action => {
                    let command = HubCommand::Action {
                        id,
                        action,
                        now_ms: now_ms(),
                    };
                    state.hub.send(command).await.map_err(drop)?;
                }
            }
        }
        if output.close.is_some() {
            return Ok(output.close);
        }
        match follow_up {
            Some(next) => output = next,
            None => return Ok(None),
        }
    }
}

/// Tells the hub a connection is gone, however its task ended (even by a panic).
struct Leave {
    id: SessionId,
    hub: mpsc::Sender<HubCommand>,
    metrics: Arc<Metrics>,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.metrics.connections.dec();
        if self
            .hub
            .try_send(HubCommand::Disconnect {
                id: self.id,
                now_ms: now_ms(),
            })
            .is_err()
        {
            tracing::warn!(
                session = self.id,
                "hub queue full: disconnect sent from a task"
            );
            let hub = self.hub.clone();
            let id = self.id;
            tokio::spawn(
                async move {
                    let _ = hub
                        .send(HubCommand::Disconnect {
                            id,
                            now_ms: now_ms(),
                        })
                        .await;
                }
                .in_current_span(),
            );
        }
    }
}

/// The hub thread: moves commands from the connections into the [`RelayCore`] and its outputs
/// into the connections' outboxes. Every command already queued joins one `poll`, so the core
/// can commit concurrent `Sync` frames together; the decisions (grouping, routing, grant
/// filtering, slow consumers) are the core's.
fn run_hub<S: Storage>(
    mut core: RelayCore<S>,
    mut commands: mpsc::Receiver<HubCommand>,
    metrics: &Metrics,
) {
    let mut routes: HashMap<SessionId, Route> = HashMap::new();
    let mut stopping = false;
    while !stopping {
        let Some(first) = commands.blocking_recv() else {
            break;
        };
        let mut carries_sync = false;
        let mut next = Some(first);
        // A turn takes what is queued, at most what a full queue holds.
        let mut taken = 0;
        while let Some(command) = next.take() {
            taken += 1;
            match command {
                HubCommand::Shutdown => {
                    stopping = true;
                    break;
                }
                HubCommand::Connect {
                    id,
                    verified,
                    outbox,
                    queued,
                    span,
                    now_ms,
                } => {
                    routes.insert(
                        id,
                        Route {
                            sender: outbox,
                            queued,
                            span,
                            gone: false,
                        },
                    );
                    core.push(
                        Input::Connect {
                            id,
                            identity: verified.identity,
                            grants: verified.grants,
                        },
                        now_ms,
                    );
                }
                HubCommand::Disconnect { id, now_ms } => {
                    // Its span stays for the log of what the core reports of it.
                    if let Some(route) = routes.get_mut(&id) {
                        route.gone = true;
                    }
                    core.push(Input::Disconnect { id }, now_ms);
                }
                HubCommand::Action { id, action, now_ms } => {
                    carries_sync |= matches!(action, Action::Sync(_));
                    core.push(Input::Action { id, action }, now_ms);
                }
            }
            if taken < HUB_QUEUE {
                next = commands.try_recv().ok();
            }
        }
        let started = Instant::now();
        let outputs = core.poll(&Outboxes(&routes));
        if carries_sync {
            metrics
                .sync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        apply_outputs(&mut routes, outputs, metrics);
        routes.retain(|_, route| !route.gone);
    }
}

/// The connections' backlogs as the core reads them: messages in each outbox channel, and the
/// bytes counted for them that the connection has not taken yet.
struct Outboxes<'a>(&'a HashMap<SessionId, Route>);

impl Backlog for Outboxes<'_> {
    fn queued(&self, id: SessionId) -> Queued {
        self.0
            .get(&id)
            .map_or_else(Queued::default, |route| Queued {
                messages: route.sender.max_capacity() - route.sender.capacity(),
                bytes: route.queued.load(Ordering::Relaxed),
            })
    }
}

/// Carries out the core's outputs: queue messages, close slow consumers (dropping the sender
/// ends the connection's inbox, which closes it with `SLOW_CONSUMER`), log failures under the
/// session's span.
fn apply_outputs(
    routes: &mut HashMap<SessionId, Route>,
    outputs: Vec<CoreOutput>,
    metrics: &Metrics,
) {
    for output in outputs {
        match output {
            CoreOutput::Send {
                to,
                message,
                counted,
            } => {
                if let Message::Ack(ack) = &message {
                    metrics
                        .changes_stored
                        .inc_by(ack.items.iter().filter(|i| i.seq.is_some()).count() as u64);
                }
                let Some(route) = routes.get(&to) else {
                    continue;
                };
                match route.sender.try_send((message, counted)) {
                    Ok(()) => {
                        route.queued.fetch_add(counted, Ordering::Relaxed);
                    }
                    // The core admits a message only with room for it; a gone connection
                    // needs nothing more.
                    Err(_) => {
                        routes.remove(&to);
                    }
                }
            }
            CoreOutput::Close { to, .. } => {
                if let Some(route) = routes.remove(&to) {
                    tracing::warn!(
                        parent: &route.span,
                        queued_bytes = route.queued.load(Ordering::Relaxed),
                        "slow consumer: closing it so it resyncs from storage"
                    );
                }
            }
            CoreOutput::Failed { session, reason } => {
                tracing::error!(parent: &span_of(routes, session), %reason, "hub failure");
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
