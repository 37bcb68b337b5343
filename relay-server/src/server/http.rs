//! The relay's HTTP surface: the axum router (`/v1/sync`, `/healthz`, `/readyz`, `/metrics`),
//! authentication of the WebSocket upgrade (`Authorization: Bearer` or the subprotocol
//! `bearer.<token>`; HTTP 401 otherwise), and [`serve`] with its graceful drain.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tracing::Instrument;

use super::connection::{connection, session_name};
use super::{AppState, SUBPROTOCOL, now_ms};

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
/// Its own accept loop (rather than `axum::serve`), for what a relay facing the internet needs
/// before any byte is read: a cap on open sockets (past it, a new socket is closed at once)
/// and a timeout on reading the request headers, so that idle or trickling sockets cannot pile
/// up. WebSockets then hold a per-device and per-tenant place (`sync_endpoint`).
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
    let admission = state.admission.clone();
    let metrics = Arc::clone(&state.metrics);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.header_timeout);
    let router = app(state);
    let http_tasks = tokio_util::task::TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match admission.socket() {
            Ok(slot) => slot,
            Err(refused) => {
                metrics.refused(refused);
                drop(tcp);
                continue;
            }
        };
        // Without TCP_NODELAY, Nagle's algorithm holds each small frame after the first until
        // the client's delayed ACK (~40 ms on Linux): every reply of a sync would wait for it.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let connection = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let stopping = stop.clone();
        http_tasks.spawn(async move {
            // The socket's place is held while HTTP runs; an upgraded WebSocket holds its own.
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
    }
    stop.cancel();
    drop(listener);
    // In-flight HTTP requests end (upgraded WebSockets are drained below, with a close code).
    http_tasks.close();
    let _ = tokio::time::timeout(grace, http_tasks.wait()).await;
    drain_state.drain(grace).await;
    Ok(())
}

async fn readyz(State(state): State<AppState>) -> Response {
    if !state.ready.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !(state.storage_ready)() {
        (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n").into_response()
    } else {
        "ready\n".into_response()
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
            // The error can quote the token (its key id): escaped and bounded.
            let why = crate::session::loggable(&e.to_string());
            tracing::info!(reason = e.reason(), "refused a connection: {why}");
            return (StatusCode::UNAUTHORIZED, "invalid or missing token\n").into_response();
        }
    };
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if !(state.storage_ready)() {
        // A device given other relays (or behind a load balancer) goes to one that can serve.
        return (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n").into_response();
    }
    let identity = &verified.identity;
    let slot = match state
        .admission
        .session(&identity.tenant, identity.device, now_ms())
    {
        Ok(slot) => slot,
        Err(refused) => {
            state.metrics.refused(refused);
            tracing::info!(cap = refused.label(), "refused a connection: {refused}");
            return (StatusCode::TOO_MANY_REQUESTS, format!("{refused}\n")).into_response();
        }
    };
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    // The WebSocket layer refuses a message (however fragmented) over the frame limit before
    // buffering more of it, closing with 1009; the session's typed FRAME_TOO_LARGE covers a
    // frame that inflates past the limit.
    let max = usize::try_from(state.limits.max_frame_bytes).unwrap_or(usize::MAX);
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
            let connection = async move {
                let _slot = slot;
                connection(socket, state, verified, id).await;
            };
            tracker.track_future(connection.instrument(span))
        })
}
