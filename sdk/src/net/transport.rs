//! One connection to the relay, as tokio tasks: the token from the app's provider, the
//! WebSocket upgrade (`Authorization: Bearer`), then frames both ways until it ends, a writer
//! task with pings, and a refresher task that asks for a new token before expiry. Each event
//! goes to the sync thread tagged with the connection's number ([`Reporter`]).

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use syncline_protocol::messages::Sync;
use syncline_protocol::{Message, close_code, frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc as tokio_mpsc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tracing::Instrument;

use super::shell::now_ms;
use super::{Command, TokenError, TokenProvider, TransportEvent, token};
use crate::engine::Disconnect;

/// How often the client sends the relay a keepalive (well inside the relay's idle timeout,
/// for which only protocol frames count): an empty `Sync` frame.
pub(super) const PING_EVERY: Duration = Duration::from_secs(15);

/// How long opening a connection (token, TCP, TLS, upgrade) may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest frame accepted from the relay.
pub(super) const MAX_FRAME: usize = 64 << 20;

/// The most frame bytes read from the relay and not yet handled by the sync thread (one
/// largest frame and 16 MiB more): past it the connection stops reading its socket, so a relay
/// sending faster than the device applies fills TCP's window, not the device's memory.
pub(super) const INBOUND_QUEUE_BYTES: usize = MAX_FRAME + (16 << 20);

/// A frame read from the relay, holding its share of [`INBOUND_QUEUE_BYTES`] until the sync
/// thread has handled it (dropped).
pub(super) struct InboundFrame {
    pub(super) bytes: Vec<u8>,
    pub(super) queued: OwnedSemaphorePermit,
}

/// Reports a connection's events to the sync thread, tagged with its number.
pub(super) struct Reporter {
    pub(super) commands: Mutex<mpsc::Sender<Command>>,
    pub(super) generation: u64,
}

impl Reporter {
    pub(super) fn report(&self, event: TransportEvent) {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        // The sync thread is gone only after stop: nothing left to tell.
        let _ = commands.send(Command::Transport(self.generation, event));
    }
}

/// One connection: token, upgrade, then frames both ways until it ends; returns why it ended.
///
/// Reading never waits on writing: a writer task owns the socket's sending half (frames and
/// pings) and a refresher task fetches new tokens, so a large flight in both directions cannot
/// fill both TCP windows and stall.
pub(super) async fn run_connection(
    url: &str,
    tokens: Arc<dyn TokenProvider>,
    reporter: &Arc<Reporter>,
) -> Disconnect {
    let token = match tokio::time::timeout(CONNECT_TIMEOUT, fetch_token(&tokens)).await {
        Ok(Ok(token)) => token,
        Ok(Err(TokenError::Denied(reason))) => {
            return Disconnect::Unauthorized(format!("no token: {reason}"));
        }
        Ok(Err(TokenError::Unavailable(reason))) => {
            return Disconnect::Failed(format!("no token yet: {reason}"));
        }
        Err(_) => {
            return Disconnect::Failed(format!(
                "the token provider did not answer within {CONNECT_TIMEOUT:?}"
            ));
        }
    };
    let mut request = match url.into_client_request() {
        Ok(request) => request,
        Err(e) => return Disconnect::Failed(format!("bad relay URL {url}: {e}")),
    };
    match format!("Bearer {token}").parse() {
        Ok(value) => {
            request.headers_mut().insert("Authorization", value);
        }
        Err(_) => return Disconnect::Unauthorized("the token is not a valid header value".into()),
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let upgrade = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let socket = match tokio::time::timeout(CONNECT_TIMEOUT, upgrade).await {
        Err(_) => return Disconnect::Failed(format!("no answer within {CONNECT_TIMEOUT:?}")),
        Ok(Ok((socket, _))) => socket,
        Ok(Err(tungstenite::Error::Http(response))) if response.status().as_u16() == 401 => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .unwrap_or_default();
            return Disconnect::Unauthorized(if body.is_empty() {
                "HTTP 401".into()
            } else {
                body
            });
        }
        Ok(Err(e)) => return Disconnect::Failed(e.to_string()),
    };
    let (sink, mut stream) = socket.split();
    let inbound = Arc::new(Semaphore::new(INBOUND_QUEUE_BYTES));
    let (frames_tx, frames_rx) = tokio_mpsc::unbounded_channel::<Vec<u8>>();
    reporter.report(TransportEvent::Open(frames_tx));
    let mut writer = tokio::spawn(write_frames(sink, frames_rx).in_current_span());
    let refresher =
        tokio::spawn(refresh_tokens(token, tokens, Arc::clone(reporter)).in_current_span());
    let why = loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    // Frames are at most MAX_FRAME, within the queue's bound and a u32.
                    let cost = u32::try_from(bytes.len().min(INBOUND_QUEUE_BYTES))
                        .unwrap_or(u32::MAX);
                    let queued = tokio::select! {
                        queued = Arc::clone(&inbound).acquire_many_owned(cost) => queued,
                        written = &mut writer => {
                            break written.unwrap_or_else(|e| Disconnect::Failed(format!("writer: {e}")));
                        }
                    };
                    let Ok(queued) = queued else {
                        break Disconnect::Failed("the inbound queue closed".into());
                    };
                    reporter.report(TransportEvent::Frame(InboundFrame {
                        bytes: bytes.to_vec(),
                        queued,
                    }));
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((close_code::NO_STATUS, String::new()));
                    break if code == close_code::TOKEN_EXPIRED {
                        Disconnect::Unauthorized(reason)
                    } else {
                        Disconnect::Closed { code, reason }
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Disconnect::Failed(e.to_string()),
                None => break Disconnect::Failed("the relay closed the connection".into()),
            },
            written = &mut writer => {
                break written.unwrap_or_else(|e| Disconnect::Failed(format!("writer: {e}")));
            }
        }
    };
    writer.abort();
    refresher.abort();
    why
}

pub(super) type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    WsMessage,
>;

/// Writes the engine's frames and a keepalive every [`PING_EVERY`]; returns why it stopped.
pub(super) async fn write_frames(
    mut sink: Sink,
    mut frames: tokio_mpsc::UnboundedReceiver<Vec<u8>>,
) -> Disconnect {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            outgoing = frames.recv() => match outgoing {
                Some(bytes) => {
                    if let Err(e) = sink.send(WsMessage::Binary(bytes.into())).await {
                        return Disconnect::Failed(e.to_string());
                    }
                }
                None => {
                    let _ = sink.close().await;
                    return Disconnect::Closed {
                        code: 1000,
                        reason: "closed by the client".into(),
                    };
                }
            },
            _ = ping.tick() => {
                let keepalive = frame::encode(&Message::Sync(Sync { items: Vec::new() , positions: None }));
                if let Err(e) = sink.send(WsMessage::Binary(keepalive.into())).await {
                    return Disconnect::Failed(e.to_string());
                }
            }
        }
    }
}

/// Asks the provider for a new token before the current one expires, for as long as the
/// connection lives.
pub(super) async fn refresh_tokens(
    mut token: String,
    tokens: Arc<dyn TokenProvider>,
    reporter: Arc<Reporter>,
) {
    loop {
        tokio::time::sleep(token::refresh_in(&token, now_ms())).await;
        match fetch_token(&tokens).await {
            Ok(fresh) => {
                token.clone_from(&fresh);
                reporter.report(TransportEvent::Token(fresh));
            }
            Err(reason) => {
                tracing::warn!(%reason, "the token provider failed; retrying in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}

pub(super) async fn fetch_token(tokens: &Arc<dyn TokenProvider>) -> Result<String, TokenError> {
    let tokens = Arc::clone(tokens);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| tokens.token()))
        .await
        // A panic is the provider's bug; retrying with backoff is the least surprising answer.
        .map_err(|e| TokenError::Unavailable(format!("the token provider panicked: {e}")))?
}

/// The relay's sync endpoint: `/v1/sync` unless the URL names a path.
pub(super) fn sync_url(relay: &str) -> String {
    let trimmed = relay.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.contains('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/sync")
    }
}
