//! The relay's HTTP surface: the axum router (`/v1/sync`, `/healthz`, `/readyz`, `/metrics`),
//! authentication of the WebSocket upgrade (`Authorization: Bearer` or the subprotocol
//! `bearer.<token>`; HTTP 401 otherwise), and [`serve`] with its graceful drain.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
