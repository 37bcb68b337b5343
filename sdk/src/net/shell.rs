//! The sync thread: it owns the [`Engine`], feeds it the app's commands and the connection
//! tasks' events with the time, carries out its effects (open or close a connection, send a
//! frame, publish a status, arm the timer) and delivers the store's change listeners after each
//! `handle` returns. Its clock is a monotonic clock anchored to the wall clock (`Clock`).

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc as tokio_mpsc;
use tracing::Instrument;

use super::transport::{Reporter, run_connection};
use super::{
    Command, EphemeralListener, Inner, StatusListener, SyncErrorListener, TokenProvider,
    TransportEvent,
};
use crate::engine::{Disconnect, DocSyncError, Effect, Engine, Event, Status, SyncErrorEvent};
use syncline_protocol::DocId;

/// The sync thread: the engine and the connection tasks' runtime.
pub(super) struct Shell {
    pub(super) span: tracing::Span,
    pub(super) engine: Engine,
    pub(super) runtime: Option<tokio::runtime::Runtime>,
    pub(super) clock: Clock,
    pub(super) inner: Arc<Inner>,
    pub(super) commands: mpsc::Sender<Command>,
    /// The relay's URL and its fallbacks ([`super::SyncOptions::fallback_urls`]), the one in use,
    /// and whether its current connection has had a frame from it.
    pub(super) urls: Vec<String>,
    pub(super) current_url: usize,
    pub(super) answered: bool,
    /// Connections in a row that ended before their relay answered.
    pub(super) unanswered: usize,
    pub(super) tokens: Arc<dyn TokenProvider>,
    pub(super) generation: u64,
    pub(super) transport: Option<Transport>,
    pub(super) wake_at: Option<u64>,
    /// The inbound queue place of the frame being handled ([`super::transport::InboundFrame`]).
    pub(super) handling: Option<tokio::sync::OwnedSemaphorePermit>,
}

pub(super) struct Transport {
    pub(super) frames: Option<tokio_mpsc::UnboundedSender<Vec<u8>>>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Shell {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Command>) {
        // A plain thread that never awaits: holding the guard for its whole life is sound.
        let _in_span = self.span.clone().entered();
        // However the loop ends (even by a panic in a listener), waiters learn it.
        let _stopped = Stopped(Arc::clone(&self.inner));
        // A command taken off the channel while coalescing local changes, handled next.
        let mut held: Option<Command> = None;
        loop {
            // A due timer goes first, so that a steady stream of commands cannot starve it.
            let due = self.wake_at.is_some_and(|at| at <= self.clock.now_ms());
            let command = if due {
                None
            } else if let Some(command) = held.take() {
                Some(command)
            } else {
                match self.wake_at {
                    Some(at) => {
                        let wait = at.saturating_sub(self.clock.now_ms());
                        match rx.recv_timeout(Duration::from_millis(wait)) {
                            Ok(command) => Some(command),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    None => match rx.recv() {
                        Ok(command) => Some(command),
                        Err(_) => break,
                    },
                }
            };
            let event = match command {
                None => {
                    self.wake_at = None;
                    Some(Event::Tick)
                }
                Some(Command::Stop) => break,
                Some(Command::Event(Event::LocalChanges(mut docs))) => {
                    // Coalesce a burst of local writes into one batch; any other command
                    // met on the way is kept for the next turn.
                    while let Ok(next) = rx.try_recv() {
                        match next {
                            Command::Event(Event::LocalChanges(more)) => docs.extend(more),
                            other => {
                                held = Some(other);
                                break;
                            }
                        }
                    }
                    Some(Event::LocalChanges(docs))
                }
                Some(Command::Event(event)) => Some(event),
                Some(Command::Transport(generation, event)) => {
                    self.transport_event(generation, event)
                }
            };
            if let Some(event) = event {
                let effects = self.engine.handle(event, self.clock.now_ms());
                // App listeners run here, after the engine returned and holds nothing: a slow
                // callback delays the next event, never a commit or a reconnect decision.
                self.engine.store().deliver_events();
                self.apply(effects);
                self.handling = None;
            }
        }
        // The open connection, if any, joins the history of syncs as stopped.
        let _closing = self.engine.shutdown(self.clock.now_ms());
        self.close_transport();
        self.publish_stats();
        self.inner.observed().stopped = true;
        self.inner.changed.notify_all();
        // Never wait for a connection task or a token provider still running: the app may
        // be stopping sync from the very thread such a provider waits on.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    fn transport_event(&mut self, generation: u64, event: TransportEvent) -> Option<Event> {
        if generation != self.generation || self.transport.is_none() {
            return None;
        }
        match event {
            TransportEvent::Open(frames) => {
                if let Some(t) = self.transport.as_mut() {
                    t.frames = Some(frames);
                }
                Some(Event::Connected)
            }
            TransportEvent::Frame(frame) => {
                self.answered = true;
                // Its place in the connection's inbound queue is given back once the engine
                // has handled it.
                self.handling = Some(frame.queued);
                Some(Event::Frame(frame.bytes))
            }
            TransportEvent::Token(token) => Some(Event::Token(token)),
            TransportEvent::Closed(why) => {
                self.unanswered = if self.answered {
                    0
                } else {
                    self.unanswered + 1
                };
                // A relay that could not be reached while others remain to be tried in this
                // round is not yet the client's state (`wait_synced` fails on it).
                let others_left = self.unanswered < self.urls.len();
                if !(matches!(why, Disconnect::Failed(_)) && !self.answered && others_left) {
                    self.inner.observed().last_disconnect = Some(why.clone());
                }
                self.close_transport();
                Some(Event::Disconnected(why))
            }
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Connect => self.connect(),
                Effect::Send(bytes) => {
                    if let Some(frames) = self.transport.as_ref().and_then(|t| t.frames.as_ref()) {
                        let _ = frames.send(bytes);
                    }
                }
                Effect::Disconnect => self.close_transport(),
                Effect::Status(status) => {
                    let listeners: Vec<StatusListener> = {
                        let mut observed = self.inner.observed();
                        observed.status = status.clone();
                        observed.stats = self.engine.stats();
                        if matches!(status, Status::Synced { .. } | Status::Syncing { .. }) {
                            observed.last_disconnect = None;
                        }
                        observed
                            .listeners
                            .iter()
                            .map(|(_, l)| Arc::clone(l))
                            .collect()
                    };
                    self.inner.changed.notify_all();
                    call_each(&listeners, &status, "status");
                }
                Effect::WakeAt(at) => self.wake_at = Some(at),
                Effect::Ephemeral(message) => {
                    let listeners: Vec<EphemeralListener> = self
                        .inner
                        .observed()
                        .ephemeral_listeners
                        .iter()
                        .filter(|(_, doc, _)| doc.as_ref().is_none_or(|d| *d == message.doc))
                        .map(|(_, _, l)| Arc::clone(l))
                        .collect();
                    call_each(&listeners, &message, "ephemeral");
                }
            }
        }
        self.publish_stats();
    }

    fn publish_stats(&self) {
        let mut observed = self.inner.observed();
        observed.stats = self.engine.stats();
        observed.deferred_uploads = self.engine.deferred_uploads();
        observed.connected = self.engine.is_connected();
        let events = sync_error_events(&mut observed.sync_errors, self.engine.sync_errors());
        let listeners: Vec<SyncErrorListener> = if events.is_empty() {
            Vec::new()
        } else {
            observed
                .error_listeners
                .iter()
                .map(|(_, l)| Arc::clone(l))
                .collect()
        };
        drop(observed);
        self.inner.changed.notify_all();
        for event in &events {
            call_each(&listeners, event, "sync error");
        }
    }

    fn close_transport(&mut self) {
        if let Some(transport) = self.transport.take() {
            transport.task.abort();
        }
    }

    fn connect(&mut self) {
        // A connection that ended before its relay sent anything (refused, unreachable, killed)
        // moves the next one to the next relay; one that answered keeps its relay.
        if self.generation > 0 && !self.answered {
            self.current_url = (self.current_url + 1) % self.urls.len();
        }
        self.answered = false;
        self.close_transport();
        self.generation += 1;
        let reporter = Reporter {
            commands: Mutex::new(self.commands.clone()),
            generation: self.generation,
        };
        let url = self.urls[self.current_url].clone();
        let tokens = Arc::clone(&self.tokens);
        let Some(runtime) = self.runtime.as_ref() else {
            return;
        };
        let span = tracing::info_span!(parent: &self.span, "connection", conn = self.generation);
        let task = runtime.spawn(
            async move {
                let reporter = Arc::new(reporter);
                let why = run_connection(&url, tokens, &reporter).await;
                reporter.report(TransportEvent::Closed(why));
            }
            .instrument(span),
        );
        self.transport = Some(Transport { frames: None, task });
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Marks the client stopped when the sync thread ends, normally or by unwinding.
pub(super) struct Stopped(Arc<Inner>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.observed().stopped = true;
        self.0.changed.notify_all();
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Never wait for a connection task or a token provider still running (also when
        // the thread unwinds).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The engine's time, in milliseconds since the Unix epoch: a monotonic clock anchored to the
/// wall clock. A wall clock stepped back (NTP, the user) cannot strand a timer: the engine's
/// time keeps advancing with the monotonic clock. A wall clock ahead of it (after a suspend,
/// which the monotonic clock does not count on Linux and macOS, or a step forward)
/// re-anchors it, so the metadata the engine stamps stays close to the wall clock. It never
/// goes back.
pub(super) struct Clock {
    origin_ms: std::cell::Cell<u64>,
    started: Instant,
}

impl Clock {
    pub(super) fn start() -> Self {
        Self {
            origin_ms: std::cell::Cell::new(now_ms()),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        reanchored(&self.origin_ms, elapsed, now_ms())
    }
}

/// The time `elapsed` ms after `origin`, moved forward to `wall` (and `origin` with it) when
/// the wall clock is ahead.
fn reanchored(origin: &std::cell::Cell<u64>, elapsed: u64, wall: u64) -> u64 {
    let monotonic = origin.get().saturating_add(elapsed);
    if wall > monotonic {
        origin.set(wall.saturating_sub(elapsed));
        wall
    } else {
        monotonic
    }
}

/// An app listener the sync thread calls.
type Listener<T> = Arc<dyn Fn(&T) + Send + Sync>;

/// Calls each app listener with `value`, on this (the sync) thread; one that panics is logged
/// and the others still run.
fn call_each<T: ?Sized>(listeners: &[Listener<T>], value: &T, what: &str) {
    for listener in listeners {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(value))).is_err() {
            tracing::error!("a {what} listener panicked");
        }
    }
}

/// Brings `published` up to `current` and says what changed: each error that is new or
/// different is raised, each that is gone is cleared.
fn sync_error_events<'a>(
    published: &mut BTreeMap<DocId, DocSyncError>,
    current: impl Iterator<Item = &'a DocSyncError> + Clone,
) -> Vec<SyncErrorEvent> {
    // The common case, nothing changed, without copying anything.
    if published.values().eq(current.clone()) {
        return Vec::new();
    }
    let current: BTreeMap<DocId, DocSyncError> =
        current.map(|e| (e.doc.clone(), e.clone())).collect();
    let mut events: Vec<SyncErrorEvent> = published
        .keys()
        .filter(|doc| !current.contains_key(*doc))
        .map(|doc| SyncErrorEvent::Cleared(doc.clone()))
        .collect();
    events.extend(
        current
            .values()
            .filter(|e| published.get(&e.doc) != Some(*e))
            .map(|e| SyncErrorEvent::Raised(e.clone())),
    );
    *published = current;
    events
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::reanchored;

    #[test]
    fn the_engine_clock_follows_a_suspend_and_ignores_a_step_back() {
        let origin = Cell::new(1_000_000);
        assert_eq!(
            reanchored(&origin, 500, 1_000_400),
            1_000_500,
            "wall slightly behind"
        );
        // A suspend: the monotonic clock says 1 s passed, the wall clock an hour.
        assert_eq!(reanchored(&origin, 1_000, 4_601_000), 4_601_000);
        // Then the wall clock steps back a minute: time keeps going with the monotonic clock.
        assert_eq!(reanchored(&origin, 2_000, 4_542_000), 4_602_000);
        assert_eq!(
            reanchored(&origin, 3_000, 4_543_000),
            4_603_000,
            "never back"
        );
    }
}
