//! The sync engine, sans I/O: events and the current time in, effects out.
//!
//! An [`Engine`] syncs one [`Store`] with one relay. The shell (`crate::net`, or a test's
//! simulated network) feeds it [`Event`]s (the transport opened, a frame arrived, the transport
//! closed, local changes, a timer, the network went down or up, pause and resume, a new profile
//! or token) with the time, and carries out the [`Effect`]s it returns (open a transport, send a
//! frame, close the transport, report a [`Status`], wake it at a time). The engine owns the wire
//! codec, the Automerge sync states of the connection, the reconnect schedule and the status;
//! it reads and writes the store through the crate's batch operations, which are synchronous
//! and local. It never sleeps, spawns, or reads a clock.
//!
//! One connection runs in this order (`docs/PROTOCOL.md`, "Session flow"): `Hello`,
//! `Subscribe`, the local changes the relay has not acknowledged (as `Sync` frames whose
//! messages already carry the changes), then `Reconcile` with the collection cursors, all in
//! the first flight. The relay answers with `Ack`s, a `Plan` and the documents changed on its
//! side since the cursors; the device applies them in batches (one commit per frame) and
//! replies once. It is [`Status::Synced`] when the plan is done, every change it sent is
//! acknowledged and no answer is outstanding; the cursors are stored only then.

mod backoff;
mod port;
mod vocabulary;

use std::collections::{HashMap, HashSet};

use automerge::sync::{Message as SyncMessage, State};
use syncline_protocol::messages::{
    Ack, Cursor, Error as ErrorMessage, ErrorCode, Hello, Plan, Reconcile, RefreshToken, Subscribe,
    Sync, SyncItem, UpdateProfile, Welcome,
};
use syncline_protocol::{
    Collection, Compression, DocId, Hash, Message, PROTOCOL_VERSION, TokenBucket,
};
use syncline_protocol::{close_code, frame, sync_state};

use crate::{Heads, Store};
pub use backoff::Backoff;
pub use port::{Outgoing, Received, SyncStore, acknowledgement, holds_their_heads, next_message};
pub use vocabulary::{Disconnect, Effect, EngineConfig, Event, Progress, Status, SyncStats};

/// Most documents per `Sync` frame the engine sends.
pub const SYNC_BATCH: usize = 256;

/// The frame size the engine keeps to before the relay's `Welcome` states its limit.
const DEFAULT_FRAME_BUDGET: usize = 1 << 20;

/// The frame limit the engine assumes before the relay's `Welcome` states it (the relay's
/// default).
const ASSUMED_MAX_FRAME: usize = 16 << 20;

/// The largest frame the engine accepts from a relay.
const MAX_INCOMING_FRAME: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started, paused or network down: no connection, no retry.
    Idle,
    /// Waiting to reconnect at this time.
    Waiting(u64),
    /// A transport was requested.
    Connecting,
    /// Connected.
    Open,
}

/// The plan the relay announced on this connection.
#[derive(Debug, Default)]
struct PlanState {
    remaining: HashMap<DocId, u64>,
    cursors: Vec<Cursor>,
    progress: Progress,
    failed: bool,
}

/// What the engine knows of the current connection.
#[derive(Debug, Default)]
struct Connection {
    welcome: Option<Welcome>,
    plan: Option<PlanState>,
    states: HashMap<DocId, State>,
    /// Documents sent with changes and not yet acknowledged (nor refused), with how many of
    /// their items await an `Ack` (the relay acknowledges each item that carried changes).
    awaiting_ack: HashMap<DocId, u32>,
    /// Documents whose last message asked the relay for changes.
    awaiting_data: HashSet<DocId>,
    /// Documents the relay refused on this connection; not sent again until reconnect.
    refused: HashMap<DocId, String>,
    received_since_send: bool,
    last_frame_ms: u64,
    synced: bool,
    /// Paces local-change frames below the relay's frame rate (set from `Welcome`).
    pacer: Option<Pacer>,
    /// When paced local changes are to be sent.
    flush_due: Option<u64>,
    /// The frame compression the relay chose in `Welcome` (none before it).
    compression: Compression,
}

/// Paces the frames the engine sends of its own accord (local changes) at half the relay's
/// frame rate, so that replies and pings always fit: a burst of writes becomes a few frames of
/// many documents instead of a rate-limit error. The shared [`TokenBucket`] counts in half
/// frames (two tokens a frame), so half of an odd rate is kept exactly.
#[derive(Debug)]
struct Pacer(TokenBucket);

impl Pacer {
    fn new(frames_per_s: u32, now_ms: u64) -> Self {
        let half_frames_per_s = u64::from(frames_per_s.max(2));
        // A burst of one second's frames at the paced rate, between 1 and 32 frames.
        let burst = half_frames_per_s.clamp(2, 64);
        Self(TokenBucket::with_burst(half_frames_per_s, burst, now_ms))
    }

    /// Takes one frame's tokens, or says when they will be there.
    fn take(&mut self, now_ms: u64) -> Result<(), u64> {
        self.0.take(2, now_ms).map_err(|wait| now_ms + wait)
    }
}

/// The sans-IO sync engine of one store and one relay; see the module documentation.
pub struct Engine<S: SyncStore = Store> {
    store: S,
    config: EngineConfig,
    phase: Phase,
    paused: bool,
    network_down: bool,
    started: bool,
    backoff: backoff::Schedule,
    conn: Connection,
    status: Status,
    stats: SyncStats,
    /// Local changes not yet sent.
    dirty: HashSet<DocId>,
    last_error: Option<String>,
}

impl<S: SyncStore> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("relay", &self.config.relay)
            .field("phase", &self.phase)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl<S: SyncStore> Engine<S> {
    /// An engine for `store`, idle until [`Event::Start`]. `seed` drives the reconnect jitter
    /// (give each device its own).
    pub fn new(store: S, config: EngineConfig, seed: u64) -> Self {
        let backoff = backoff::Schedule::new(config.backoff, seed);
        Self {
            store,
            config,
            phase: Phase::Idle,
            paused: false,
            network_down: false,
            started: false,
            backoff,
            conn: Connection::default(),
            status: Status::Offline,
            stats: SyncStats::default(),
            dirty: HashSet::new(),
            last_error: None,
        }
    }

    /// The current status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// What the engine has moved so far.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// True while a transport is open.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Open
    }

    /// The store this engine syncs.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Handles one event at `now_ms` (milliseconds since the Unix epoch, or any monotonic
    /// origin the caller keeps) and returns what to do.
    pub fn handle(&mut self, event: Event, now_ms: u64) -> Vec<Effect> {
        let mut out = Out {
            compression: self.conn.compression,
            ..Out::default()
        };
        match event {
            Event::Start => {
                self.started = true;
                self.connect_if_allowed(&mut out);
            }
            Event::Connected => self.on_connected(&mut out, now_ms),
            Event::Frame(bytes) => self.on_frame(&mut out, &bytes, now_ms),
            Event::Disconnected(why) => self.on_disconnected(&mut out, why, now_ms),
            Event::LocalChanges(docs) => {
                let docs: Vec<DocId> = docs
                    .into_iter()
                    .filter(|d| self.subscribed(d.collection()))
                    .collect();
                self.dirty.extend(docs);
                if self.phase == Phase::Open {
                    self.flush_paced(&mut out, now_ms);
                }
            }
            Event::Tick => self.on_tick(&mut out, now_ms),
            Event::NetworkDown => {
                self.network_down = true;
                self.go_idle(&mut out);
            }
            Event::NetworkUp => {
                self.network_down = false;
                self.backoff.reset();
                self.connect_if_allowed(&mut out);
            }
            Event::Pause => {
                self.paused = true;
                self.go_idle(&mut out);
            }
            Event::Resume => {
                self.paused = false;
                self.backoff.reset();
                self.connect_if_allowed(&mut out);
            }
            Event::Profile(profile) => {
                self.config.profile = profile.clone();
                if self.phase == Phase::Open {
                    out.send(&Message::UpdateProfile(UpdateProfile { profile }));
                }
            }
            Event::Token(token) => {
                if self.phase == Phase::Open {
                    out.send(&Message::RefreshToken(RefreshToken { token }));
                }
            }
        }
        self.update_status(&mut out, now_ms);
        self.finish(out, now_ms)
    }

    fn subscribed(&self, collection: &Collection) -> bool {
        self.config
            .subscriptions
            .iter()
            .any(|s| &s.collection == collection)
    }

    fn connect_if_allowed(&mut self, out: &mut Out) {
        if !self.started || self.paused || self.network_down {
            return;
        }
        if matches!(self.phase, Phase::Idle | Phase::Waiting(_)) {
            self.phase = Phase::Connecting;
            out.effects.push(Effect::Connect);
        }
    }

    fn go_idle(&mut self, out: &mut Out) {
        if matches!(self.phase, Phase::Open | Phase::Connecting) {
            out.effects.push(Effect::Disconnect);
        }
        self.phase = Phase::Idle;
        self.conn = Connection::default();
    }

    fn on_connected(&mut self, out: &mut Out, now_ms: u64) {
        if self.phase != Phase::Connecting {
            // Not asked for (paused meanwhile): close it.
            out.effects.push(Effect::Disconnect);
            return;
        }
        self.phase = Phase::Open;
        self.stats.connections += 1;
        self.conn = Connection {
            last_frame_ms: now_ms,
            ..Connection::default()
        };
        out.send(&Message::Hello(Hello {
            versions: vec![PROTOCOL_VERSION],
            // Every compression the SDK implements, preferred first; the relay picks.
            compression: Compression::SUPPORTED.iter().map(|c| c.code()).collect(),
            profile: self.config.profile.clone(),
            client: self.config.client.clone(),
        }));
        out.send(&Message::Subscribe(Subscribe {
            collections: self.config.subscriptions.clone(),
        }));
        // Everything the relay has not acknowledged, before Reconcile: the relay applies it
        // first, so its plan does not send it back.
        for sub in &self.config.subscriptions {
            match self
                .store
                .unacknowledged(&self.config.relay, &sub.collection)
            {
                Ok(docs) => self.dirty.extend(docs),
                Err(e) => {
                    tracing::error!(collection = %sub.collection, error = %e, "could not list pending documents");
                    self.last_error = Some(format!("could not list pending documents: {e}"));
                }
            }
        }
        self.flush_dirty(out);
        let cursors = match self.store.cursors(&self.config.relay) {
            Ok(cursors) => cursors,
            Err(e) => {
                tracing::error!(error = %e, "could not read sync cursors; reconciling from the start");
                Vec::new()
            }
        };
        out.send(&Message::Reconcile(Reconcile {
            cursors: cursors
                .into_iter()
                .filter(|(c, _)| self.subscribed(c))
                .map(|(collection, seq)| Cursor { collection, seq })
                .collect(),
            changed: Vec::new(),
            fetched: None,
        }));
    }

    fn on_disconnected(&mut self, out: &mut Out, why: Disconnect, now_ms: u64) {
        if !matches!(self.phase, Phase::Open | Phase::Connecting) {
            return;
        }
        self.conn = Connection::default();
        let reason = match &why {
            Disconnect::Unauthorized(reason) => format!("unauthorized: {reason}"),
            Disconnect::Failed(reason) => format!("connection failed: {reason}"),
            Disconnect::Closed { code, reason } => {
                format!("the relay closed the connection ({code}): {reason}")
            }
        };
        tracing::info!(relay = %self.config.relay, %reason, "disconnected");
        // A refused token is an error the app must see; a broken connection is being offline.
        if matches!(why, Disconnect::Unauthorized(_))
            || matches!(why, Disconnect::Closed { code, .. } if close_code::needs_attention(code))
        {
            self.last_error = Some(reason);
        } else if !matches!(
            why,
            Disconnect::Closed {
                code: close_code::GOING_AWAY | close_code::NORMAL,
                ..
            }
        ) {
            self.last_error = None;
        }
        self.schedule_reconnect(out, now_ms);
    }

    fn schedule_reconnect(&mut self, out: &mut Out, now_ms: u64) {
        if self.paused || self.network_down || !self.started {
            self.phase = Phase::Idle;
            return;
        }
        let at = now_ms.saturating_add(self.backoff.next_delay_ms());
        self.phase = Phase::Waiting(at);
        out.effects.push(Effect::WakeAt(at));
    }

    fn on_tick(&mut self, out: &mut Out, now_ms: u64) {
        if self.phase == Phase::Open && self.conn.flush_due.is_some_and(|at| at <= now_ms) {
            self.conn.flush_due = None;
            self.flush_paced(out, now_ms);
        }
        match self.phase {
            Phase::Waiting(at) if now_ms >= at => self.connect_if_allowed(out),
            Phase::Open
                if self.outstanding()
                    && now_ms.saturating_sub(self.conn.last_frame_ms)
                        >= self.config.stall_timeout_ms =>
            {
                tracing::warn!(relay = %self.config.relay, "no answer from the relay; reconnecting");
                out.effects.push(Effect::Disconnect);
                self.conn = Connection::default();
                self.schedule_reconnect(out, now_ms);
            }
            _ => {}
        }
    }

    /// True while the engine waits for something from the relay.
    fn outstanding(&self) -> bool {
        self.conn.welcome.is_none()
            || self
                .conn
                .plan
                .as_ref()
                .is_none_or(|p| !p.remaining.is_empty())
            || !self.conn.awaiting_ack.is_empty()
            || !self.conn.awaiting_data.is_empty()
    }

    fn on_frame(&mut self, out: &mut Out, bytes: &[u8], now_ms: u64) {
        if self.phase != Phase::Open {
            return;
        }
        self.stats.frames_received += 1;
        self.stats.bytes_received += bytes.len() as u64;
        self.conn.last_frame_ms = now_ms;
        self.conn.received_since_send = true;
        let message = match frame::decode(bytes, MAX_INCOMING_FRAME) {
            Ok(message) => message,
            Err(frame::FrameError::UnknownType(t)) => {
                tracing::debug!(message_type = t, "ignoring an unknown message type");
                return;
            }
            Err(e) => {
                self.protocol_failure(out, format!("the relay sent a bad frame: {e}"), now_ms);
                return;
            }
        };
        match message {
            Message::Welcome(welcome) => {
                // The relay's name for this session: its logs carry the same `session`.
                tracing::info!(session = %welcome.session, compression = ?welcome.compression, "welcomed");
                self.conn.pacer = Some(Pacer::new(welcome.limits.max_frames_per_s, now_ms));
                if welcome.version != PROTOCOL_VERSION {
                    self.protocol_failure(
                        out,
                        format!("the relay chose protocol version {}", welcome.version),
                        now_ms,
                    );
                    return;
                }
                let Some(compression) = Compression::from_code(welcome.compression) else {
                    let reason = format!("the relay chose compression {}", welcome.compression);
                    self.protocol_failure(out, reason, now_ms);
                    return;
                };
                // Frames after the Welcome (not those already in flight) use it.
                self.conn.compression = compression;
                out.compression = compression;
                self.conn.welcome = Some(welcome);
            }
            Message::Plan(plan) => self.on_plan(plan),
            Message::Sync(sync) => self.on_sync(out, sync, now_ms),
            Message::Ack(ack) => self.on_ack(ack),
            Message::Error(error) => self.on_error(out, error, now_ms),
            Message::Ephemeral(_) => {}
            other => {
                tracing::warn!(
                    message = other.name(),
                    "ignoring a message a relay does not send"
                );
            }
        }
        self.flush_paced(out, now_ms);
        self.finish_plan_if_done();
    }

    fn on_plan(&mut self, plan: Plan) {
        let mut state = PlanState {
            cursors: plan.cursors,
            ..PlanState::default()
        };
        for entry in plan.send {
            state.progress.docs_total += 1;
            state.progress.bytes_total += entry.bytes;
            state.remaining.insert(entry.doc, entry.bytes);
        }
        self.conn.plan = Some(state);
    }

    fn on_sync(&mut self, out: &mut Out, sync: Sync, now_ms: u64) {
        let mut items = Vec::with_capacity(sync.items.len());
        for item in sync.items {
            match SyncMessage::decode(&item.message) {
                Ok(message) => items.push((item.doc, message)),
                Err(e) => {
                    tracing::warn!(doc = %item.doc, error = %e, "the relay sent an undecodable sync message");
                    self.fail_planned(&item.doc);
                }
            }
        }
        let results = self
            .store
            .receive(&self.config.relay, items, &mut self.conn.states, now_ms);
        let mut replies = Vec::new();
        for (doc, result) in results {
            match result {
                Ok(received) => {
                    if received.changed {
                        self.stats.docs_received += 1;
                    }
                    if received.complete {
                        self.conn.awaiting_data.remove(&doc);
                        if let Some(plan) = self.conn.plan.as_mut()
                            && let Some(bytes) = plan.remaining.remove(&doc)
                        {
                            plan.progress.docs_done += 1;
                            plan.progress.bytes_done += bytes;
                        }
                    }
                    if let Some(reply) = received.reply {
                        if reply.changes {
                            *self.conn.awaiting_ack.entry(doc.clone()).or_default() += 1;
                            self.stats.docs_sent += 1;
                        }
                        if reply.needs {
                            self.conn.awaiting_data.insert(doc.clone());
                        }
                        replies.push(SyncItem {
                            doc,
                            message: reply.bytes,
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(doc = %doc, error = %e, "could not apply the relay's changes");
                    self.last_error = Some(format!("could not apply changes to {doc}: {e}"));
                    self.fail_planned(&doc);
                }
            }
        }
        self.send_items(out, replies);
    }

    /// A planned document that cannot complete: the plan finishes without it and its cursors
    /// are not stored, so the next connection plans it again.
    fn fail_planned(&mut self, doc: &DocId) {
        self.conn.awaiting_data.remove(doc);
        if let Some(plan) = self.conn.plan.as_mut()
            && plan.remaining.remove(doc).is_some()
        {
            plan.failed = true;
        }
    }

    fn on_ack(&mut self, ack: Ack) {
        let acks: Vec<(DocId, Heads)> = ack
            .items
            .iter()
            .map(|item| (item.doc.clone(), to_heads(&item.heads)))
            .collect();
        for (doc, _) in &acks {
            if let Some(count) = self.conn.awaiting_ack.get_mut(doc) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.conn.awaiting_ack.remove(doc);
                }
            }
        }
        match self.store.acknowledge(&self.config.relay, &acks) {
            Ok(current) => {
                let current: HashMap<DocId, Heads> = current.into_iter().collect();
                for (doc, acked) in &acks {
                    // The relay holds exactly what we hold: start the next exchange from there.
                    if current.get(doc) == Some(acked)
                        && !self.conn.awaiting_ack.contains_key(doc)
                        && let Some(state) = self.conn.states.get_mut(doc)
                    {
                        acknowledged(state, acked);
                    }
                }
            }
            Err(e) => {
                // Not fatal: the documents stay pending and are acknowledged next time.
                tracing::error!(error = %e, "could not record acknowledgements");
            }
        }
    }

    fn on_error(&mut self, out: &mut Out, error: ErrorMessage, now_ms: u64) {
        tracing::warn!(code = error.code.0, message = %error.message, doc = ?error.doc, "the relay reported an error");
        if let Some(doc) = error.doc {
            // One item refused; the rest of its frame went on.
            self.conn.awaiting_ack.remove(&doc);
            self.conn.awaiting_data.remove(&doc);
            self.fail_planned(&doc);
            self.dirty.remove(&doc);
            self.conn.refused.insert(doc, error.message.clone());
            self.last_error = Some(format!("the relay refused a change: {}", error.message));
            return;
        }
        match error.code {
            // The frame was dropped: start over on a new connection.
            ErrorCode::RATE_LIMITED | ErrorCode::INTERNAL => {
                let reason = format!("the relay asked to retry: {}", error.message);
                out.effects.push(Effect::Disconnect);
                self.conn = Connection::default();
                let delay = error.retry_after_ms.unwrap_or(0);
                if self.paused || self.network_down {
                    self.phase = Phase::Idle;
                } else {
                    let at = now_ms.saturating_add(delay.max(self.backoff.next_delay_ms()));
                    self.phase = Phase::Waiting(at);
                    out.effects.push(Effect::WakeAt(at));
                }
                tracing::info!(%reason, "reconnecting");
            }
            ErrorCode::UNAUTHORIZED => {
                self.last_error = Some(format!("unauthorized: {}", error.message));
            }
            _ => self.protocol_failure(out, error.message, now_ms),
        }
    }

    fn protocol_failure(&mut self, out: &mut Out, reason: String, now_ms: u64) {
        tracing::error!(relay = %self.config.relay, %reason, "protocol error");
        self.last_error = Some(format!("protocol error: {reason}"));
        out.effects.push(Effect::Disconnect);
        self.conn = Connection::default();
        self.schedule_reconnect(out, now_ms);
    }

    /// Sends the dirty documents now if the pacer allows, else at the time it names.
    fn flush_paced(&mut self, out: &mut Out, now_ms: u64) {
        if self.phase != Phase::Open || self.dirty.is_empty() || self.conn.flush_due.is_some() {
            return;
        }
        if let Some(pacer) = self.conn.pacer.as_mut()
            && let Err(at) = pacer.take(now_ms)
        {
            self.conn.flush_due = Some(at);
            return;
        }
        self.flush_dirty(out);
    }

    /// Sends the messages of every dirty document.
    fn flush_dirty(&mut self, out: &mut Out) {
        if self.phase != Phase::Open || self.dirty.is_empty() {
            return;
        }
        let mut docs: Vec<DocId> = self
            .dirty
            .drain()
            .filter(|d| !self.conn.refused.contains_key(d))
            .collect();
        docs.sort();
        let mut items = Vec::new();
        for (doc, result) in self
            .store
            .generate(&self.config.relay, &docs, &mut self.conn.states)
        {
            match result {
                Ok(Some(message)) => {
                    if message.changes {
                        *self.conn.awaiting_ack.entry(doc.clone()).or_default() += 1;
                        self.stats.docs_sent += 1;
                    }
                    if message.needs {
                        self.conn.awaiting_data.insert(doc.clone());
                    }
                    items.push(SyncItem {
                        doc,
                        message: message.bytes,
                    });
                }
                Ok(None) => {}
                Err(crate::Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::error!(doc = %doc, error = %e, "could not prepare a sync message");
                    self.last_error = Some(format!("could not sync {doc}: {e}"));
                }
            }
        }
        self.send_items(out, items);
    }

    /// Sends items in frames of at most [`SYNC_BATCH`] items and the frame budget.
    fn send_items(&mut self, out: &mut Out, items: Vec<SyncItem>) {
        let budget = self
            .conn
            .welcome
            .as_ref()
            .map_or(DEFAULT_FRAME_BUDGET, |w| {
                usize::try_from(w.limits.max_frame_bytes / 2).unwrap_or(DEFAULT_FRAME_BUDGET)
            });
        let limit = self.conn.welcome.as_ref().map_or(ASSUMED_MAX_FRAME, |w| {
            usize::try_from(w.limits.max_frame_bytes).unwrap_or(usize::MAX)
        });
        let mut batch = Vec::new();
        let mut size = 0;
        for item in items {
            let item_size = item.message.len() + 160;
            if item_size > limit {
                // The relay would refuse the whole frame, again on every connection: keep the
                // document pending here and say why, instead of looping.
                let reason = format!(
                    "{} needs a {item_size}-byte message, over the relay's frame limit of {limit}",
                    item.doc
                );
                tracing::error!(%reason, "not sending a document");
                self.conn.awaiting_ack.remove(&item.doc);
                self.conn.awaiting_data.remove(&item.doc);
                self.conn.refused.insert(item.doc, reason.clone());
                self.last_error = Some(format!("the relay refused a change: {reason}"));
                continue;
            }
            if !batch.is_empty() && (batch.len() >= SYNC_BATCH || size + item_size > budget) {
                out.send(&Message::Sync(Sync {
                    items: std::mem::take(&mut batch),
                }));
                size = 0;
            }
            size += item_size;
            batch.push(item);
        }
        if !batch.is_empty() {
            out.send(&Message::Sync(Sync { items: batch }));
        }
    }

    fn finish_plan_if_done(&mut self) {
        let Some(plan) = self.conn.plan.as_mut() else {
            return;
        };
        if !plan.remaining.is_empty() || plan.cursors.is_empty() {
            return;
        }
        let cursors: Vec<(Collection, u64)> = std::mem::take(&mut plan.cursors)
            .into_iter()
            .map(|c| (c.collection, c.seq))
            .collect();
        if plan.failed {
            return;
        }
        if let Err(e) = self.store.set_cursors(&self.config.relay, &cursors) {
            // The next connection plans from the older cursors: more work, nothing lost.
            tracing::error!(error = %e, "could not store sync cursors");
        }
    }

    fn update_status(&mut self, out: &mut Out, now_ms: u64) {
        let status = match self.phase {
            Phase::Idle | Phase::Waiting(_) => match &self.last_error {
                Some(reason) if self.started => Status::Error {
                    reason: reason.clone(),
                },
                _ => Status::Offline,
            },
            Phase::Connecting => match &self.last_error {
                Some(reason) => Status::Error {
                    reason: reason.clone(),
                },
                None => Status::Connecting,
            },
            Phase::Open => {
                let done = !self.outstanding() && self.dirty.is_empty();
                if done && !self.conn.refused.is_empty() {
                    let reason = self
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "the relay refused a change".into());
                    Status::Error { reason }
                } else if done {
                    if !self.conn.synced {
                        self.conn.synced = true;
                        self.backoff.reset();
                        self.last_error = None;
                    }
                    match self.status {
                        Status::Synced { at_ms } => Status::Synced { at_ms },
                        _ => Status::Synced { at_ms: now_ms },
                    }
                } else {
                    let mut progress = self
                        .conn
                        .plan
                        .as_ref()
                        .map(|p| p.progress)
                        .unwrap_or_default();
                    progress.docs_unacknowledged = self.conn.awaiting_ack.len() as u64;
                    Status::Syncing { progress }
                }
            }
        };
        if status != self.status {
            self.status = status.clone();
            out.effects.push(Effect::Status(status));
        }
    }

    fn finish(&mut self, out: Out, now_ms: u64) -> Vec<Effect> {
        let Out {
            mut effects,
            frames,
            ..
        } = out;
        if !frames.is_empty() {
            if self.conn.received_since_send
                || self.stats.round_trips == 0
                || frames.iter().any(|f| f.first_of_connection)
            {
                self.stats.round_trips += 1;
            }
            self.conn.received_since_send = false;
            for f in frames {
                self.stats.frames_sent += 1;
                self.stats.bytes_sent += f.bytes.len() as u64;
                effects.push(Effect::Send(f.bytes));
            }
        }
        if let Phase::Waiting(at) = self.phase {
            // Re-armed on every turn: a timer the shell lost (or that fired early) never
            // strands the reconnect.
            effects.push(Effect::WakeAt(at));
        }
        if self.phase == Phase::Open {
            let stall = self
                .outstanding()
                .then(|| self.conn.last_frame_ms.max(now_ms) + self.config.stall_timeout_ms);
            if let Some(at) = [stall, self.conn.flush_due].into_iter().flatten().min() {
                effects.push(Effect::WakeAt(at));
            }
        }
        // Sends belong to the connection: keep them before a disconnect in the same batch.
        effects.sort_by_key(|e| match e {
            Effect::Send(_) => 0,
            Effect::Disconnect => 1,
            _ => 2,
        });
        effects
    }
}

/// Frames and effects collected while handling one event.
#[derive(Default)]
struct Out {
    effects: Vec<Effect>,
    frames: Vec<OutFrame>,
    /// How frames are encoded: the connection's negotiated compression.
    compression: Compression,
}

struct OutFrame {
    bytes: Vec<u8>,
    first_of_connection: bool,
}

impl Out {
    fn send(&mut self, message: &Message) {
        self.frames.push(OutFrame {
            bytes: frame::encode_with(message, self.compression),
            first_of_connection: matches!(message, Message::Hello(_)),
        });
    }
}

/// After the relay acknowledged exactly our heads: it holds them, and nothing sent is in
/// flight any more.
fn acknowledged(state: &mut State, heads: &Heads) {
    sync_state::acknowledged(state, heads.as_slice().to_vec());
}

fn to_heads(heads: &syncline_protocol::Heads) -> Heads {
    Heads::new(
        heads
            .as_slice()
            .iter()
            .map(|Hash(bytes)| automerge::ChangeHash(*bytes))
            .collect(),
    )
}

#[cfg(test)]
mod tests;
