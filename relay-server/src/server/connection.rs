//! One connection's task: frames between the WebSocket and its [`Session`], the session's
//! actions to the hub thread, the hub's messages (filtered again by the session's current
//! grants) back to the socket, and a `Leave` guard that tells the hub the connection is gone
//! however the task ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use syncline_protocol::frame;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{
    AppState, HUB_IN_FLIGHT_PER_CONNECTION, HubCommand, Metrics, OUTBOX, SEND_TIMEOUT, now_ms,
};
use crate::auth::Verified;
use crate::hub::SessionId;
use crate::relay_core::{self};
use crate::session::{Action, Close, Frame, Output, Session, close_code};

/// The session's name on the wire (`Welcome.session`) and in the logs.
pub(super) fn session_name(id: SessionId) -> String {
    format!("s-{id}")
}

/// One connection: socket ⇄ session ⇄ hub, until either side closes. Runs inside its
/// connection span (`Instrument`), never holding a span guard across an `.await`.
pub(super) async fn connection(
    socket: WebSocket,
    state: AppState,
    verified: Verified,
    id: SessionId,
) {
    let (outbox, mut inbox) = mpsc::channel(OUTBOX);
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut session = Session::new(
        session_name(id),
        verified.clone(),
        state.limits.clone(),
        now_ms(),
    );
    session.accept_compressions(state.compressions);
    session.set_metered_threshold(state.metered_max_doc_bytes);
    session.set_payload_limits(state.payload);
    session.set_epoch(state.epoch.clone());
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
    // This connection's places in the hub's queue.
    let places = Arc::new(tokio::sync::Semaphore::new(HUB_IN_FLIGHT_PER_CONNECTION));
    let close = loop {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(session.deadline_ms().saturating_sub(now_ms()));
        let (output, frames) = tokio::select! {
            () = state.shutdown.cancelled() => {
                break Some(Close { code: close_code::GOING_AWAY, reason: "relay shutting down".into() });
            }
            received = stream.next() => match received {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    state.metrics.frames_in.inc();
                    state.metrics.bytes_in.inc_by(bytes.len() as u64);
                    (session.handle_frame(&bytes, now_ms()), Vec::new())
                }
                // Text messages are not part of the protocol: refused as malformed.
                Some(Ok(WsMessage::Text(_))) => (session.handle_text(now_ms()), Vec::new()),
                // Not activity for the idle timeout: only protocol frames are.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break None,
            },
            delivered = inbox.recv() => match delivered {
                // The hub may have queued this before it learned of narrower grants.
                Some((message, counted, lane)) => {
                    match relay_core::visible(message, session.grants()) {
                        Some(message) => {
                            let delivered = session.deliver(message, lane, counted, now_ms());
                            let output = Output { actions: delivered.actions, ..Output::default() };
                            (output, delivered.frames)
                        }
                        None => {
                            queued.fetch_sub(counted, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
                None => break Some(Close { code: close_code::SLOW_CONSUMER, reason: "too slow: reconnect to resync".into() }),
            },
            () = tokio::time::sleep_until(deadline) => {
                let now = now_ms();
                (session.handle_tick(now), session.release(now))
            }
        };
        // Paced frames first: they were routed before anything this input produced.
        if send_frames(&state, &queued, frames, &mut sink)
            .await
            .is_err()
        {
            break None;
        }
        match apply(&state, &places, &mut session, id, output, &mut sink).await {
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

/// Sends the downlink's frames, giving their counted bytes back to the backlog.
async fn send_frames<W>(
    state: &AppState,
    queued: &std::sync::atomic::AtomicUsize,
    frames: Vec<Frame>,
    sink: &mut W,
) -> Result<(), ()>
where
    W: futures_util::Sink<WsMessage> + Unpin,
{
    for frame in frames {
        queued.fetch_sub(frame.counted, Ordering::Relaxed);
        // A frame with no bytes only gives its counted bytes back.
        if !frame.bytes.is_empty() {
            send(state, frame.bytes, sink).await?;
        }
    }
    Ok(())
}

/// Sends one frame; a client that stops reading must not pin the task: gives up after
/// `SEND_TIMEOUT`.
async fn send<W>(state: &AppState, bytes: Vec<u8>, sink: &mut W) -> Result<(), ()>
where
    W: futures_util::Sink<WsMessage> + Unpin,
{
    state.metrics.frames_out.inc();
    state.metrics.bytes_out.inc_by(bytes.len() as u64);
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(WsMessage::Binary(bytes.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(()),
    }
}

/// Sends a session output's messages, runs its actions, and reports a close.
pub(super) async fn apply<W>(
    state: &AppState,
    places: &Arc<tokio::sync::Semaphore>,
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
            send(
                state,
                frame::encode_with(&message, session.compression()),
                sink,
            )
            .await?;
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
                    // Never closed: waiting can only end with a place.
                    let place = Arc::clone(places).acquire_owned().await.map_err(drop)?;
                    let command = HubCommand::Action {
                        id,
                        action,
                        now_ms: now_ms(),
                        _place: place,
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
pub(super) struct Leave {
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
