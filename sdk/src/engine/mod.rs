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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use automerge::sync::{Message as SyncMessage, State};
use syncline_protocol::messages::{
    Ack, CollectionSubscription, Cursor, DeferReason, Ephemeral, Error as ErrorMessage, ErrorCode,
    Feature, Fetch, Hello, MAX_COLLECTIONS, MAX_EPHEMERAL_BYTES, MAX_EPOCH_BYTES, Plan, Reconcile,
    RefreshToken, Subscribe, Sync, SyncItem, SyncMode, UpdateProfile, Welcome,
};
use syncline_protocol::payload::{self, Budget, PayloadLimits};
use syncline_protocol::{
    Collection, Compression, DocId, Hash, Message, PROTOCOL_VERSION, Pacer, Priority, TokenBucket,
};
use syncline_protocol::{close_code, frame, sync_state};

use crate::{DeferredDoc, Heads, Store, SyncEnd, SyncRecord};
pub use backoff::Backoff;
pub use port::{
    Outgoing, Positions, Received, SyncStore, acknowledgement, holds_their_heads, next_message,
};
pub use vocabulary::{
    Disconnect, DocSyncError, Effect, EngineConfig, EphemeralMessage, Event, Progress, Status,
    SyncErrorEvent, SyncErrorKind, SyncStats, Transfer,
};

/// Most documents per `Sync` frame the engine sends.
pub const SYNC_BATCH: usize = 256;

/// The frame size the engine keeps to before the relay's `Welcome` states its limit.
const DEFAULT_FRAME_BUDGET: usize = 1 << 20;

/// The frame limit the engine assumes before the relay's `Welcome` states it (the relay's
/// default).
const ASSUMED_MAX_FRAME: usize = 16 << 20;

/// The largest frame the engine accepts from a relay.
const MAX_INCOMING_FRAME: usize = 64 << 20;

/// Most documents per `Fetch` (the relay's default limit per request is far above).
const FETCH_BATCH: usize = 1000;

/// The smallest frame paced uploads are split into.
const MIN_PACED_FRAME: usize = 4 << 10;

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

/// The plans the relay announced on this connection, added up.
#[derive(Debug, Default)]
struct PlanState {
    /// Planned documents not arrived yet: their priority and the bytes still expected.
    remaining: HashMap<DocId, (Priority, u64)>,
    cursors: Vec<Cursor>,
    progress: Progress,
    failed: bool,
    /// Planned documents a message arrived for since they were (last) planned, complete or
    /// not: one of a plan closed by its `PlanDone` that got none was dropped by the relay.
    heard: HashSet<DocId>,
    /// Planned documents the relay dropped (no message by their plan's `PlanDone`), until a
    /// plan announces them as deferred (a device turned metered: the relay took them back and
    /// says so after the `PlanDone`). While one is here the cursors are not stored.
    dropped: HashSet<DocId>,
}

/// The uploads of one connection: local-change frames paced to the declared upload rate.
#[derive(Debug, Default)]
struct Uplink {
    pacer: Pacer,
    /// Encoded frames, each with its bytes per priority (split by its documents' messages).
    queue: VecDeque<(Vec<u8>, [u64; 4])>,
    /// The upload per priority, indexed by `Priority::code`.
    by_priority: [Transfer; 4],
    /// The priority each document awaiting an acknowledgement was sent with.
    priorities: HashMap<DocId, Priority>,
    /// Bytes of local-change frames queued on this connection (sent or not).
    bytes_total: u64,
    /// Of which on the wire.
    bytes_done: u64,
    /// Documents sent with changes on this connection, and how many of them were acknowledged.
    docs_total: u64,
    docs_done: u64,
    /// When the pacer last let a frame go: a live relay acknowledges each, so the stall
    /// timeout counts from there too.
    last_sent_ms: u64,
}

/// The start of a connection's record in the history of syncs.
#[derive(Debug)]
struct OpenRecord {
    started_at_ms: u64,
    /// The engine's counters when it opened (the record has the difference).
    base: SyncStats,
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
    /// Collections the relay refused to this device on this connection (the token cannot read
    /// them), with why: the rest of the subscription syncs, and the status says so.
    refused_collections: BTreeMap<Collection, String>,
    /// Documents the relay refused for now (its storage was full, or another device's change
    /// it does not hold yet), with when to send them again.
    retry: BTreeMap<DocId, u64>,
    /// The status error is about documents to send again (cleared once everything went).
    retry_reported: bool,
    received_since_send: bool,
    last_frame_ms: u64,
    synced: bool,
    /// Paces local-change frames below the relay's frame rate (set from `Welcome`).
    pacer: Option<FramePacer>,
    /// When paced local changes are to be sent.
    flush_due: Option<u64>,
    /// The frame compression the relay chose in `Welcome` (none before it).
    compression: Compression,
    /// Answers to `Reconcile` still to come (each is a `Plan` that is not an update).
    reconciles_awaited: u32,
    /// Answers to `Fetch` still to come (each is a `Plan` marked `fetch`).
    fetches_awaited: u32,
    /// The relay numbers its plans and closes each with a `PlanDone` (negotiated in
    /// `Hello`/`Welcome`).
    relay_closes_plans: bool,
    /// Numbered plans whose `PlanDone` has not come, with the documents of their `send` list.
    plans_open: BTreeMap<u64, Vec<DocId>>,
    /// Evicted documents whose kept own changes the relay lost, fetched once on this
    /// connection, each with whether a plan listed it (or it was restored): those no plan
    /// listed once every fetch is answered are ones the relay holds nothing of, restored from
    /// the kept changes alone.
    kept_fetched: BTreeMap<DocId, bool>,
    /// What goes into the history of syncs when this connection ends (none before it opened).
    record: Option<OpenRecord>,
    /// Paced uploads.
    uplink: Uplink,
    /// Documents the relay announced as held back on this connection.
    announced: HashSet<DocId>,
    /// When the connection opened, and the bytes received since (the observed rate).
    opened_ms: u64,
    bytes_received: u64,
}

impl PlanState {
    /// Takes a planned document out of the plan (the relay held it back after all): the
    /// plan's totals no longer count it.
    fn withdraw(&mut self, doc: &DocId) {
        let Some((priority, left)) = self.remaining.remove(doc) else {
            return;
        };
        let by = &mut self.progress.download_by_priority[usize::from(priority.code())];
        self.progress.docs_total = self.progress.docs_total.saturating_sub(1);
        by.docs_total = by.docs_total.saturating_sub(1);
        // What already arrived of it stays counted as done; what did not, as to do.
        self.progress.bytes_total = self.progress.bytes_total.saturating_sub(left);
        by.bytes_total = by.bytes_total.saturating_sub(left);
    }

    /// Counts `bytes` of `doc` that arrived on the wire, and the document itself once
    /// `complete` (its planned bytes are then all counted).
    fn count_arrival(&mut self, doc: &DocId, bytes: u64, complete: bool) {
        let Some((priority, left)) = self.remaining.get_mut(doc) else {
            return;
        };
        let by = &mut self.progress.download_by_priority[usize::from(priority.code())];
        let counted = if complete { *left } else { bytes.min(*left) };
        *left -= counted;
        self.progress.bytes_done += counted;
        by.bytes_done += counted;
        if complete {
            self.progress.docs_done += 1;
            by.docs_done += 1;
            self.remaining.remove(doc);
        }
    }
}

/// Paces the frames the engine sends of its own accord (local changes) at half the relay's
/// frame rate, so that replies and pings always fit: a burst of writes becomes a few frames of
/// many documents instead of a rate-limit error. The shared [`TokenBucket`] counts in half
/// frames (two tokens a frame), so half of an odd rate is kept exactly. (Bytes are paced to
/// the declared upload rate by the [`Uplink`]'s [`Pacer`].)
#[derive(Debug)]
struct FramePacer(TokenBucket);

impl FramePacer {
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
    /// Documents the app asked for, until their content arrives.
    wanted: BTreeSet<DocId>,
    /// Documents this relay holds back for the device, as recorded in the store, with why.
    deferred: BTreeMap<DocId, DeferReason>,
    /// A periodic device that caught up: when, until its next scheduled sync.
    caught_up_at: Option<u64>,
    /// How far the store is over its storage budget after evicting what may be evicted.
    over_budget_bytes: u64,
    /// Local documents whose (large) upload waits for an unmetered network.
    held_uploads: BTreeSet<DocId>,
    /// Documents that did not sync, until they do (across connections).
    doc_errors: BTreeMap<DocId, DocSyncError>,
    /// The time of the event being handled.
    now_ms: u64,
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
            wanted: BTreeSet::new(),
            deferred: BTreeMap::new(),
            caught_up_at: None,
            over_budget_bytes: 0,
            held_uploads: BTreeSet::new(),
            doc_errors: BTreeMap::new(),
            now_ms: 0,
        }
    }

    /// The documents that did not sync, each with why, in document order; see
    /// [`DocSyncError`].
    pub fn sync_errors(&self) -> impl Iterator<Item = &DocSyncError> + Clone {
        self.doc_errors.values()
    }

    /// Records that `doc` did not sync (replacing an earlier error of it).
    fn doc_error(
        &mut self,
        doc: &DocId,
        kind: SyncErrorKind,
        message: String,
        retry_at_ms: Option<u64>,
    ) {
        self.doc_errors.insert(
            doc.clone(),
            DocSyncError {
                doc: doc.clone(),
                kind,
                message,
                at_ms: self.now_ms,
                retry_at_ms,
            },
        );
    }

    /// Keeps the store within the declared storage budget: evicts the content of fully synced
    /// documents of on-demand collections (they become deferred, fetched again when opened).
    ///
    /// Not before the relay answered `Reconcile`: a relay restored from an older backup says
    /// so there, and what it lost must not be evicted (its acknowledgements are forgotten
    /// first).
    fn enforce_budget(&mut self, just_arrived: &[DocId], now_ms: u64) {
        let Some(budget) = self.config.profile.storage_budget_bytes else {
            self.over_budget_bytes = 0;
            return;
        };
        if self.phase != Phase::Open || self.conn.reconciles_awaited > 0 {
            return;
        }
        let evictable: Vec<Collection> = self
            .config
            .subscriptions
            .iter()
            .filter(|s| s.mode == SyncMode::OnDemand)
            .map(|s| s.collection.clone())
            .collect();
        // What the engine waits on or just got stays.
        let mut keep: HashSet<DocId> = self.wanted.iter().cloned().collect();
        keep.extend(self.conn.awaiting_data.iter().cloned());
        keep.extend(self.conn.awaiting_ack.keys().cloned());
        keep.extend(just_arrived.iter().cloned());
        if let Some(plan) = &self.conn.plan {
            keep.extend(plan.remaining.keys().cloned());
        }
        match self
            .store
            .enforce_budget(&self.config.relay, budget, &evictable, &keep, now_ms)
        {
            Ok(outcome) => {
                for d in outcome.evicted {
                    tracing::debug!(doc = %d.doc, bytes = d.bytes, "evicted to stay within the storage budget");
                    // A later fetch starts its sync afresh.
                    self.conn.states.remove(&d.doc);
                    self.deferred.insert(d.doc, d.reason);
                }
                self.over_budget_bytes = outcome.over_budget_bytes;
            }
            Err(e) => tracing::error!(error = %e, "could not enforce the storage budget"),
        }
    }

    fn realtime(&self) -> bool {
        self.config.profile.realtime
    }

    fn metered(&self) -> bool {
        self.config.profile.metered
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
        self.now_ms = now_ms;
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
                self.go_idle(&mut out, SyncEnd::NetworkDown);
            }
            Event::NetworkUp => {
                self.network_down = false;
                self.backoff.reset();
                self.connect_if_allowed(&mut out);
            }
            Event::Pause => {
                self.paused = true;
                self.go_idle(&mut out, SyncEnd::Paused);
            }
            Event::Resume => {
                self.paused = false;
                self.backoff.reset();
                self.connect_if_allowed(&mut out);
            }
            Event::Profile(profile) => self.on_profile(&mut out, profile, now_ms),
            Event::Fetch(docs) => {
                self.wanted.extend(docs.iter().cloned());
                if self.phase == Phase::Open {
                    self.conn.fetches_awaited += send_fetch(&mut out, docs);
                } else if !self.realtime() {
                    // A periodic device connects for what the app asks for.
                    self.sync_now(&mut out);
                }
            }
            Event::Subscriptions(subscriptions) => {
                self.on_subscriptions(&mut out, subscriptions);
            }
            Event::SyncNow => self.sync_now(&mut out),
            Event::Token(token) => {
                if self.phase == Phase::Open {
                    out.send(&Message::RefreshToken(RefreshToken { token }));
                }
            }
            Event::Ephemeral { doc, payload } => {
                // Presence is for who is there now: nothing is kept for a later connection.
                if self.phase == Phase::Open
                    && self.conn.welcome.is_some()
                    && payload.len() <= MAX_EPHEMERAL_BYTES
                {
                    out.send(&Message::Ephemeral(Ephemeral {
                        doc,
                        payload: payload.into(),
                        from: None,
                    }));
                }
            }
        }
        self.update_status(&mut out, now_ms);
        self.finish(out, now_ms)
    }

    /// A new profile: the relay replans on the live connection; leaving a metered network
    /// fetches what was held back for it on earlier connections (the relay releases this
    /// connection's own deferrals itself); the upload pacer takes the new rate.
    fn on_profile(
        &mut self,
        out: &mut Out,
        profile: syncline_protocol::messages::Profile,
        now_ms: u64,
    ) {
        let left_metered = self.metered() && !profile.metered;
        let was_periodic = !self.realtime();
        self.config.profile = profile.clone();
        self.conn
            .uplink
            .pacer
            .set_rate(profile.upload_bytes_per_s, now_ms);
        if self.upload_threshold().is_none() {
            // Off the metered network (or allowed): held uploads go.
            self.dirty.extend(std::mem::take(&mut self.held_uploads));
        }
        if self.phase == Phase::Open {
            out.send(&Message::UpdateProfile(UpdateProfile { profile }));
            self.flush_paced(out, now_ms);
            if left_metered {
                let earlier: Vec<DocId> = self
                    .deferred
                    .iter()
                    .filter(|(doc, reason)| {
                        matches!(reason, DeferReason::Metered | DeferReason::LowPriority)
                            && self.wanted_now(doc, **reason)
                            && !self.conn.announced.contains(*doc)
                    })
                    .map(|(doc, _)| doc.clone())
                    .collect();
                self.conn.fetches_awaited += send_fetch(out, earlier);
            }
        } else if was_periodic && self.realtime() {
            // Now realtime: connect instead of waiting for the schedule.
            self.sync_now(out);
        }
        // A new budget applies now if connected (after the relay's answer to `Reconcile`),
        // else from the next connection; with none, the status is no longer over any.
        self.enforce_budget(&[], now_ms);
    }

    /// A new subscription: removed collections stop (their deferrals are forgotten); added
    /// ones are planned at once on the live connection.
    fn on_subscriptions(&mut self, out: &mut Out, subscriptions: Vec<CollectionSubscription>) {
        let old = std::mem::replace(&mut self.config.subscriptions, subscriptions);
        // A refused collection no longer subscribed no longer makes the status an error.
        let subscribed = &self.config.subscriptions;
        self.conn
            .refused_collections
            .retain(|c, _| subscribed.iter().any(|s| &s.collection == c));
        // What was deferred in a collection unsubscribed now stays recorded (not wanted while
        // unsubscribed): its cursor moved past it, so subscribing again still finds it.
        if self.phase != Phase::Open {
            return;
        }
        out.send(&Message::Subscribe(Subscribe {
            collections: self.config.subscriptions.clone(),
        }));
        // Collections now kept eagerly get what was only listed on earlier connections.
        let listed: Vec<DocId> = self
            .deferred
            .iter()
            .filter(|(doc, reason)| {
                // The relay releases what it listed on this connection itself.
                (**reason == DeferReason::StorageBudget
                    || (**reason == DeferReason::OnDemand && !self.conn.announced.contains(*doc)))
                    && self.wanted_now(doc, **reason)
            })
            .map(|(doc, _)| doc.clone())
            .collect();
        let added: Vec<CollectionSubscription> = self
            .config
            .subscriptions
            .iter()
            .filter(|s| !old.iter().any(|o| o.collection == s.collection))
            .cloned()
            .collect();
        if !added.is_empty() {
            let positions = self.store.positions(&self.config.relay).unwrap_or_default();
            let named = |c: &Cursor| added.iter().any(|s| s.collection == c.collection);
            let cursors = added
                .iter()
                .map(|s| {
                    positions
                        .cursors
                        .iter()
                        .find(|c| c.collection == s.collection)
                        .cloned()
                        .unwrap_or(Cursor {
                            collection: s.collection.clone(),
                            seq: 0,
                            epoch: None,
                            receipt: None,
                        })
                })
                .collect();
            let acked: Vec<Cursor> = positions.acked.into_iter().filter(named).collect();
            let reconcile = Reconcile {
                cursors,
                changed: Vec::new(),
                fetched: self.fetched(&added),
                acked: (!acked.is_empty()).then_some(acked),
            };
            self.conn.reconciles_awaited += 1;
            out.send(&Message::Reconcile(reconcile));
        }
        self.conn.fetches_awaited += send_fetch(out, listed);
    }

    /// True if a document held back for `reason` is wanted now: off a metered network for
    /// what waited for one, in a collection now subscribed eagerly for what was on demand or
    /// evicted.
    fn wanted_now(&self, doc: &DocId, reason: DeferReason) -> bool {
        let Some(sub) = self
            .config
            .subscriptions
            .iter()
            .find(|s| &s.collection == doc.collection())
        else {
            return false;
        };
        match reason {
            DeferReason::Metered | DeferReason::LowPriority => !self.metered(),
            // An eager collection keeps every document local (and is never evicted).
            DeferReason::OnDemand | DeferReason::StorageBudget => sub.mode == SyncMode::Eager,
        }
    }

    /// Connects now if waiting (a periodic device between syncs, or a reconnect delay).
    fn sync_now(&mut self, out: &mut Out) {
        if matches!(self.phase, Phase::Waiting(_)) {
            self.caught_up_at = None;
            self.backoff.reset();
            self.phase = Phase::Idle;
            self.connect_if_allowed(out);
        }
    }

    /// The documents of the on-demand collections among `subscriptions` whose content is here.
    fn fetched(&self, subscriptions: &[CollectionSubscription]) -> Option<Vec<DocId>> {
        let mut held = Vec::new();
        for sub in subscriptions
            .iter()
            .filter(|s| s.mode == SyncMode::OnDemand)
        {
            match self.store.held(&sub.collection) {
                Ok(docs) => held.extend(docs),
                Err(e) => {
                    tracing::error!(collection = %sub.collection, error = %e, "could not list local documents")
                }
            }
        }
        (!held.is_empty()).then_some(held)
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
            // A new attempt: what a periodic sync caught up no longer describes the status.
            self.caught_up_at = None;
            out.effects.push(Effect::Connect);
        }
    }

    fn go_idle(&mut self, out: &mut Out, end: SyncEnd) {
        if matches!(self.phase, Phase::Open | Phase::Connecting) {
            out.effects.push(Effect::Disconnect);
        }
        self.phase = Phase::Idle;
        self.end_connection(end);
    }

    /// The app stops syncing: an open connection ends (and joins the history of syncs).
    pub fn shutdown(&mut self, now_ms: u64) -> Vec<Effect> {
        self.now_ms = now_ms;
        let mut out = Out::default();
        self.go_idle(&mut out, SyncEnd::Stopped);
        out.effects
    }

    /// Forgets the connection; if one was open, its record joins the history of syncs.
    fn end_connection(&mut self, end: SyncEnd) {
        let conn = std::mem::take(&mut self.conn);
        let Some(open) = conn.record else {
            return;
        };
        let mut refused: BTreeSet<&DocId> = conn.refused.keys().collect();
        refused.extend(conn.retry.keys());
        let record = SyncRecord {
            relay: self.config.relay.clone(),
            session: conn.welcome.map(|w| w.session),
            started_at_ms: open.started_at_ms,
            ended_at_ms: self.now_ms,
            docs_sent: self.stats.docs_sent.saturating_sub(open.base.docs_sent),
            docs_received: self
                .stats
                .docs_received
                .saturating_sub(open.base.docs_received),
            bytes_sent: self.stats.bytes_sent.saturating_sub(open.base.bytes_sent),
            bytes_received: self
                .stats
                .bytes_received
                .saturating_sub(open.base.bytes_received),
            round_trips: self.stats.round_trips.saturating_sub(open.base.round_trips),
            refused_count: refused.len() as u64,
            refused: refused
                .into_iter()
                .take(crate::MAX_REFUSED_LISTED)
                .cloned()
                .collect(),
            end,
        };
        if let Err(e) = self.store.record_sync(record) {
            // Only the record is lost: nothing the device holds depends on it.
            tracing::warn!(error = %e, "could not record the sync in the history");
        }
    }

    fn on_connected(&mut self, out: &mut Out, now_ms: u64) {
        if self.phase != Phase::Connecting {
            // Not asked for (paused meanwhile): close it.
            out.effects.push(Effect::Disconnect);
            return;
        }
        self.phase = Phase::Open;
        self.caught_up_at = None;
        self.stats.connections += 1;
        self.conn = Connection {
            last_frame_ms: now_ms,
            opened_ms: now_ms,
            record: Some(OpenRecord {
                started_at_ms: now_ms,
                base: self.stats,
            }),
            ..Connection::default()
        };
        self.conn
            .uplink
            .pacer
            .set_rate(self.config.profile.upload_bytes_per_s, now_ms);
        self.deferred = match self.store.deferred(&self.config.relay) {
            Ok(deferred) => deferred.into_iter().map(|d| (d.doc, d.reason)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "could not read the deferred documents");
                BTreeMap::new()
            }
        };
        out.send(&Message::Hello(Hello {
            versions: vec![PROTOCOL_VERSION],
            // Every compression the SDK implements, preferred first; the relay picks.
            compression: Compression::SUPPORTED.iter().map(|c| c.code()).collect(),
            profile: self.config.profile.clone(),
            client: self.config.client.clone(),
            // Told when each plan's documents are all on their way, the SDK knows a plan is
            // done without guessing (and what the relay dropped from it).
            features: vec![Feature::PlanDone.code()],
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
        self.flush_dirty(out, now_ms);
        let positions = match self.store.positions(&self.config.relay) {
            Ok(positions) => positions,
            Err(e) => {
                tracing::error!(error = %e, "could not read sync cursors; reconciling from the start");
                Positions::default()
            }
        };
        self.conn.reconciles_awaited = 1;
        // The acknowledged positions let the relay check that it still holds what it
        // acknowledged (a relay restored from an older backup does not).
        let acked: Vec<Cursor> = positions
            .acked
            .into_iter()
            .filter(|c| self.subscribed(&c.collection))
            .collect();
        out.send(&Message::Reconcile(Reconcile {
            cursors: positions
                .cursors
                .into_iter()
                .filter(|c| self.subscribed(&c.collection))
                .collect(),
            changed: Vec::new(),
            fetched: self.fetched(&self.config.subscriptions),
            acked: (!acked.is_empty()).then_some(acked),
        }));
        // Evicted documents whose kept changes the relay lost (on an earlier connection).
        self.fetch_kept(out);
        // What the app asked for, and what was held back for reasons that no longer hold.
        let mut fetch: BTreeSet<DocId> = self
            .wanted
            .iter()
            .filter(|doc| !self.conn.kept_fetched.contains_key(*doc))
            .cloned()
            .collect();
        fetch.extend(
            self.deferred
                .iter()
                .filter(|(doc, reason)| {
                    self.wanted_now(doc, **reason) && !self.conn.kept_fetched.contains_key(*doc)
                })
                .map(|(doc, _)| doc.clone()),
        );
        self.conn.fetches_awaited += send_fetch(out, fetch.into_iter().collect());
    }

    fn on_disconnected(&mut self, out: &mut Out, why: Disconnect, now_ms: u64) {
        if !matches!(self.phase, Phase::Open | Phase::Connecting) {
            return;
        }
        self.end_connection(match &why {
            Disconnect::Unauthorized(reason) => SyncEnd::Unauthorized(reason.clone()),
            Disconnect::Failed(reason) => SyncEnd::ConnectionLost(reason.clone()),
            Disconnect::Closed { code, reason } => SyncEnd::ClosedByRelay {
                code: *code,
                reason: reason.clone(),
            },
        });
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
        if self.phase == Phase::Open && !self.conn.retry.is_empty() {
            let due: Vec<DocId> = self
                .conn
                .retry
                .iter()
                .filter(|(_, at)| **at <= now_ms)
                .map(|(doc, _)| doc.clone())
                .collect();
            for doc in &due {
                self.conn.retry.remove(doc);
            }
            if let Some(next) = self.conn.retry.values().min() {
                out.effects.push(Effect::WakeAt(*next));
            }
            if !due.is_empty() {
                self.dirty.extend(due);
                self.flush_dirty(out, now_ms);
            }
        }
        if self.phase == Phase::Open && self.conn.flush_due.is_some_and(|at| at <= now_ms) {
            self.conn.flush_due = None;
            self.flush_paced(out, now_ms);
        }
        match self.phase {
            Phase::Waiting(at) if now_ms >= at => self.connect_if_allowed(out),
            Phase::Open
                if self.outstanding()
                    && now_ms.saturating_sub(self.last_activity_ms())
                        >= self.config.stall_timeout_ms =>
            {
                tracing::warn!(relay = %self.config.relay, "no answer from the relay; reconnecting");
                out.effects.push(Effect::Disconnect);
                self.end_connection(SyncEnd::Stalled);
                self.schedule_reconnect(out, now_ms);
            }
            _ => {}
        }
    }

    /// When the connection last showed life: a frame received, or the end of what the upload
    /// pacer let go (a live relay acknowledges each frame once it has it all).
    fn last_activity_ms(&self) -> u64 {
        let uplink = &self.conn.uplink;
        let sending_until = if uplink.queue.is_empty() {
            uplink.pacer.ready_at().unwrap_or(0)
        } else {
            // Our own frames still wait for the pacer: nothing is due from the relay yet.
            u64::MAX
        };
        self.conn
            .last_frame_ms
            .max(uplink.last_sent_ms)
            .max(sending_until)
    }

    /// True while the engine waits for something from the relay.
    fn outstanding(&self) -> bool {
        self.conn.welcome.is_none()
            || self.conn.reconciles_awaited > 0
            || self.conn.fetches_awaited > 0
            || self
                .conn
                .plan
                .as_ref()
                .is_some_and(|p| !p.remaining.is_empty())
            || !self.conn.awaiting_ack.is_empty()
            || !self.conn.awaiting_data.is_empty()
            || !self.conn.uplink.queue.is_empty()
            || !self.conn.plans_open.is_empty()
    }

    fn on_frame(&mut self, out: &mut Out, bytes: &[u8], now_ms: u64) {
        if self.phase != Phase::Open {
            return;
        }
        self.stats.frames_received += 1;
        self.stats.bytes_received += bytes.len() as u64;
        self.conn.bytes_received += bytes.len() as u64;
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
                self.conn.pacer = Some(FramePacer::new(welcome.limits.max_frames_per_s, now_ms));
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
                if welcome
                    .epoch
                    .as_ref()
                    .is_some_and(|e| e.len() > MAX_EPOCH_BYTES)
                {
                    let reason = format!("the relay named an epoch over {MAX_EPOCH_BYTES} bytes");
                    self.protocol_failure(out, reason, now_ms);
                    return;
                }
                self.conn.relay_closes_plans = Feature::PlanDone.named_in(&welcome.features);
                // Frames after the Welcome (not those already in flight) use it.
                self.conn.compression = compression;
                out.compression = compression;
                self.conn.welcome = Some(welcome);
            }
            Message::Plan(mut plan) => {
                let reconciled: Vec<&Collection> = self
                    .config
                    .subscriptions
                    .iter()
                    .map(|s| &s.collection)
                    .collect();
                match self.sane_positions(std::mem::take(&mut plan.cursors), &reconciled) {
                    Ok(cursors) => {
                        plan.cursors = cursors;
                        self.on_plan(out, plan, now_ms);
                    }
                    Err(reason) => {
                        self.protocol_failure(out, format!("a plan {reason}"), now_ms);
                        return;
                    }
                }
            }
            Message::Sync(sync) => self.on_sync(out, sync, now_ms),
            Message::Ack(mut ack) => {
                let acked: BTreeSet<&Collection> =
                    ack.items.iter().map(|i| i.doc.collection()).collect();
                let acked: Vec<&Collection> = acked.into_iter().collect();
                let positions = ack.positions.take().unwrap_or_default();
                match self.sane_positions(positions, &acked) {
                    Ok(positions) => {
                        ack.positions = Some(positions);
                        self.on_ack(ack);
                    }
                    Err(reason) => {
                        self.protocol_failure(out, format!("an acknowledgement {reason}"), now_ms);
                        return;
                    }
                }
            }
            Message::Error(error) => self.on_error(out, error, now_ms),
            Message::PlanDone(done) => self.on_plan_done(done.plan),
            Message::Ephemeral(e) => self.on_ephemeral(out, e),
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

    /// Adds a plan to the connection's: its documents are on their way, its deferred ones are
    /// recorded (durably, for `Store::deferred`).
    fn on_plan(&mut self, out: &mut Out, plan: Plan, now_ms: u64) {
        let answers_reconcile = !plan.update;
        if answers_reconcile {
            self.conn.reconciles_awaited = self.conn.reconciles_awaited.saturating_sub(1);
        }
        if !plan.reset.is_empty() {
            self.relay_lost(out, &plan.reset, now_ms);
        }
        for entry in plan.send.iter().chain(&plan.deferred) {
            if let Some(listed) = self.conn.kept_fetched.get_mut(&entry.doc) {
                *listed = true;
            }
        }
        if plan.fetch {
            self.conn.fetches_awaited = self.conn.fetches_awaited.saturating_sub(1);
            if self.conn.fetches_awaited == 0 {
                self.restore_kept(out, now_ms);
            }
        }
        if let Some(number) = plan.id.filter(|_| self.conn.relay_closes_plans) {
            let docs = plan.send.iter().map(|e| e.doc.clone()).collect();
            self.conn.plans_open.insert(number, docs);
        }
        let state = self.conn.plan.get_or_insert_with(PlanState::default);
        state.cursors.extend(plan.cursors);
        for entry in plan.send {
            if state.remaining.contains_key(&entry.doc) {
                continue;
            }
            // Planned again (a fetch, a collection reconciled again): heard from now on.
            state.heard.remove(&entry.doc);
            state.dropped.remove(&entry.doc);
            let progress = &mut state.progress;
            progress.docs_total += 1;
            progress.bytes_total += entry.bytes;
            let by = &mut progress.download_by_priority[usize::from(entry.priority.code())];
            by.docs_total += 1;
            by.bytes_total += entry.bytes;
            state
                .remaining
                .insert(entry.doc, (entry.priority, entry.bytes));
        }
        let deferred: Vec<DeferredDoc> = plan
            .deferred
            .into_iter()
            .filter_map(|entry| {
                // A reason from a newer relay this SDK does not know: not listed.
                let reason = entry.reason?;
                Some(DeferredDoc {
                    doc: entry.doc,
                    priority: entry.priority,
                    bytes: entry.bytes,
                    reason,
                    announced_at_ms: now_ms,
                    changed_ms: entry.changed_ms,
                })
            })
            .collect();
        for d in &deferred {
            self.conn.announced.insert(d.doc.clone());
            self.deferred.insert(d.doc.clone(), d.reason);
            // Planned, then held back after all (the device turned metered mid-transfer).
            if let Some(plan) = self.conn.plan.as_mut() {
                plan.withdraw(&d.doc);
                plan.dropped.remove(&d.doc);
            }
            self.conn.awaiting_data.remove(&d.doc);
        }
        if let Err(e) = self.store.defer(&self.config.relay, &deferred) {
            tracing::error!(error = %e, "could not record deferred documents");
        }
        if answers_reconcile && self.conn.reconciles_awaited == 0 {
            // Any loss the relay reported is known now, and its acknowledgements forgotten.
            self.enforce_budget(&[], now_ms);
        }
    }

    /// The relay sent the first message of every document of plan `number`: one that got no
    /// message was dropped from it (its collection unsubscribed, the grants narrowed, or taken
    /// back for a metered network, then announced as deferred). It no longer keeps the plan
    /// from completing, but unless a deferral announces it, the plan's cursors are not stored:
    /// the next connection plans it again.
    fn on_plan_done(&mut self, number: u64) {
        let Some(docs) = self.conn.plans_open.remove(&number) else {
            tracing::warn!(plan = number, "the relay closed a plan it did not open");
            return;
        };
        let dropped: Vec<DocId> = match self.conn.plan.as_ref() {
            Some(plan) => docs
                .into_iter()
                .filter(|doc| plan.remaining.contains_key(doc) && !plan.heard.contains(doc))
                .collect(),
            None => Vec::new(),
        };
        for doc in dropped {
            tracing::info!(%doc, plan = number, "the relay dropped a planned document");
            self.conn.awaiting_data.remove(&doc);
            if let Some(plan) = self.conn.plan.as_mut() {
                plan.withdraw(&doc);
                plan.dropped.insert(doc);
            }
        }
    }

    /// The relay does not hold positions it showed this device in `collections`: it was
    /// restored from an older backup and lost changes it had acknowledged. What it
    /// acknowledged there is forgotten, and every document of them is sent again (with a
    /// fresh sync state, so the relay's answer says what it lacks). The relay planned them
    /// from the start; their new cursors are stored when this plan completes.
    fn relay_lost(&mut self, out: &mut Out, collections: &[Collection], now_ms: u64) {
        tracing::warn!(relay = %self.config.relay, ?collections, "the relay lost changes it had acknowledged (restored from an older backup?); sending them again");
        if let Err(e) = self.store.forget_positions(&self.config.relay, collections) {
            // Nothing is lost: the relay reports it again on the next connection.
            tracing::error!(error = %e, "could not forget the relay's lost acknowledgements");
            self.last_error = Some(format!("could not record that the relay lost changes: {e}"));
            return;
        }
        self.conn
            .states
            .retain(|doc, _| !collections.contains(doc.collection()));
        self.fetch_kept(out);
        let subscribed: Vec<&Collection> =
            collections.iter().filter(|c| self.subscribed(c)).collect();
        for collection in subscribed {
            match self.store.unacknowledged(&self.config.relay, collection) {
                Ok(docs) => self.dirty.extend(docs),
                Err(e) => {
                    tracing::error!(%collection, error = %e, "could not list pending documents");
                    self.last_error = Some(format!("could not list pending documents: {e}"));
                }
            }
        }
        self.flush_dirty(out, now_ms);
    }

    /// Fetches the evicted documents whose own changes this device kept (`store::kept`) and
    /// the relay lost, once per connection: they come back with those changes merged in.
    fn fetch_kept(&mut self, out: &mut Out) {
        let kept = match self.store.kept_unacknowledged(&self.config.relay) {
            Ok(kept) => kept,
            Err(e) => {
                // Nothing is lost: the kept changes stay, and the next connection asks again.
                tracing::error!(error = %e, "could not list the documents with kept changes");
                return;
            }
        };
        let subscribed: Vec<DocId> = kept
            .into_iter()
            .filter(|doc| self.subscribed(doc.collection()))
            .collect();
        let fetch: Vec<DocId> = subscribed
            .into_iter()
            .filter(|doc| !self.conn.kept_fetched.contains_key(doc))
            .collect();
        if fetch.is_empty() {
            return;
        }
        tracing::info!(relay = %self.config.relay, docs = fetch.len(), "fetching evicted documents whose kept changes the relay lost");
        self.conn
            .kept_fetched
            .extend(fetch.iter().map(|doc| (doc.clone(), false)));
        self.conn.fetches_awaited += send_fetch(out, fetch);
    }

    /// Every fetch is answered: the documents with kept changes no plan listed are ones the
    /// relay holds nothing of. Each is made again from its kept changes and sent as pending.
    fn restore_kept(&mut self, out: &mut Out, now_ms: u64) {
        let docs: Vec<DocId> = self
            .conn
            .kept_fetched
            .iter_mut()
            .filter(|(_, listed)| !**listed)
            .map(|(doc, listed)| {
                *listed = true;
                doc.clone()
            })
            .collect();
        let mut restored = Vec::new();
        for doc in docs {
            match self.store.restore_kept(&doc, now_ms) {
                Ok(true) => {
                    self.wanted.remove(&doc);
                    self.deferred.remove(&doc);
                    self.dirty.insert(doc.clone());
                    restored.push(doc);
                }
                // Waits on other devices' changes: asked for again next connection.
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(%doc, error = %e, "could not restore a document from its kept changes");
                }
            }
        }
        if restored.is_empty() {
            return;
        }
        if let Err(e) = self.store.undefer(&self.config.relay, &restored) {
            tracing::error!(error = %e, "could not forget deferrals of restored documents");
        }
        self.flush_dirty(out, now_ms);
    }

    fn on_sync(&mut self, out: &mut Out, sync: Sync, now_ms: u64) {
        let received_before = self.stats.docs_received;
        let Sync {
            items: incoming,
            positions,
        } = sync;
        // The collections a push's positions may speak for, less those of documents that
        // did not arrive whole (refused, or not applied).
        let mut about: BTreeSet<Collection> = incoming
            .iter()
            .map(|i| i.doc.collection().clone())
            .collect();
        let mut failed: BTreeSet<Collection> = BTreeSet::new();
        let mut items = Vec::with_capacity(incoming.len());
        // Bytes per document on the wire, for progress.
        let mut wire: HashMap<DocId, u64> = HashMap::new();
        for item in incoming {
            // A relay's payloads are checked as strictly as the relay checks a device's:
            // before Automerge inflates or walks them. Per document, since a relay's frame
            // batches what several devices' frames brought.
            let mut budget = Budget::new(RELAY_PAYLOAD_LIMITS);
            *wire.entry(item.doc.clone()).or_default() += item.message.len() as u64;
            if let Some(plan) = self.conn.plan.as_mut()
                && plan.remaining.contains_key(&item.doc)
            {
                plan.heard.insert(item.doc.clone());
            }
            // Evicted to stay within the budget: not taken back from a push, only when asked
            // for (by the app, or because its collection is now kept eagerly) or planned.
            if self.deferred.get(&item.doc) == Some(&DeferReason::StorageBudget)
                && !self.wanted.contains(&item.doc)
                && !self.wanted_now(&item.doc, DeferReason::StorageBudget)
                && !self
                    .conn
                    .plan
                    .as_ref()
                    .is_some_and(|p| p.remaining.contains_key(&item.doc))
            {
                self.conn.awaiting_data.remove(&item.doc);
                continue;
            }
            match SyncMessage::decode(&item.message)
                .map_err(|e| e.to_string())
                .and_then(|m| check_relay_message(&m, &mut budget).map(|()| m))
            {
                Ok(message) => items.push((item.doc, message)),
                Err(e) => {
                    // Kept apart like a refused upload: the rest goes on, and the status ends
                    // in an error naming the document instead of "synced".
                    tracing::warn!(doc = %item.doc, error = %e, "the relay sent a sync message refused unread");
                    let reason = format!("the relay sent {} refused unread: {e}", item.doc);
                    failed.insert(item.doc.collection().clone());
                    self.last_error = Some(reason.clone());
                    self.doc_error(
                        &item.doc,
                        SyncErrorKind::InvalidFromRelay,
                        reason.clone(),
                        None,
                    );
                    self.conn.refused.insert(item.doc.clone(), reason);
                    self.fail_planned(&item.doc);
                }
            }
        }
        let results = self
            .store
            .receive(&self.config.relay, items, &mut self.conn.states, now_ms);
        let mut replies = Vec::new();
        let mut arrived = Vec::new();
        for (doc, result) in results {
            match result {
                Ok(received) => {
                    if received.changed {
                        self.stats.docs_received += 1;
                    }
                    if let Some(plan) = self.conn.plan.as_mut() {
                        plan.count_arrival(
                            &doc,
                            wire.get(&doc).copied().unwrap_or(0),
                            received.complete,
                        );
                    }
                    if received.complete {
                        if self
                            .doc_errors
                            .get(&doc)
                            .is_some_and(|e| e.kind == SyncErrorKind::InvalidFromRelay)
                        {
                            self.doc_errors.remove(&doc);
                        }
                        self.conn.awaiting_data.remove(&doc);
                        self.wanted.remove(&doc);
                        if self.deferred.remove(&doc).is_some() {
                            arrived.push(doc.clone());
                        }
                    }
                    if let Some(reply) = received.reply {
                        if reply.changes {
                            let priority = self.store.priority(&doc);
                            self.awaiting_ack(&doc, priority);
                            // The relay asked for it: it goes, held back or not.
                            self.held_uploads.remove(&doc);
                        }
                        if reply.needs {
                            self.conn.awaiting_data.insert(doc.clone());
                        }
                        replies.push(SyncItem {
                            doc,
                            message: reply.bytes,
                            priority: None,
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(doc = %doc, error = %e, "could not apply the relay's changes");
                    failed.insert(doc.collection().clone());
                    let reason = format!("could not apply changes to {doc}: {e}");
                    self.doc_error(&doc, SyncErrorKind::InvalidFromRelay, reason.clone(), None);
                    self.last_error = Some(reason);
                    self.fail_planned(&doc);
                }
            }
        }
        if let Err(e) = self.store.undefer(&self.config.relay, &arrived) {
            tracing::error!(error = %e, "could not forget deferred documents that arrived");
        }
        if self.stats.docs_received > received_before {
            let arrived: Vec<DocId> = wire.keys().cloned().collect();
            self.enforce_budget(&arrived, now_ms);
        }
        if let Some(positions) = positions {
            about.retain(|c| !failed.contains(c));
            let about: Vec<&Collection> = about.iter().collect();
            match self.sane_positions(positions, &about) {
                Ok(positions) => self.record_pushed(&positions),
                Err(reason) => {
                    self.protocol_failure(out, format!("a push {reason}"), now_ms);
                    return;
                }
            }
        }
        self.send_items(out, replies, None);
    }

    /// Keeps the positions a push showed, as those of acknowledgements: the relay holds what
    /// it pushed there durably, and a relay restored from a backup that lost it learns so
    /// from the next `Reconcile.acked` (and lets this device send it back).
    fn record_pushed(&mut self, positions: &[Cursor]) {
        if positions.is_empty() {
            return;
        }
        let positions = self.tagged(positions.to_vec());
        if let Err(e) = self.store.acknowledge(&self.config.relay, &[], &positions) {
            tracing::error!(error = %e, "could not record the positions of a push");
        }
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
        // Per collection, the highest position the relay gave what it acknowledged, with its
        // epoch and receipt (a relay that lists none has none to check).
        let positions = self.tagged(ack.positions.clone().unwrap_or_default());
        for (doc, _) in &acks {
            if let Some(count) = self.conn.awaiting_ack.get_mut(doc) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.upload_done(doc);
                }
            }
        }
        match self
            .store
            .acknowledge(&self.config.relay, &acks, &positions)
        {
            Ok(current) => {
                let current: HashMap<DocId, Heads> = current.into_iter().collect();
                for (doc, _) in &acks {
                    self.doc_errors.remove(doc);
                }
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

    /// Another device's ephemeral message: checked as strictly as the relay checks the
    /// device's (size, a sender, a collection this device syncs), then handed to the app.
    fn on_ephemeral(&mut self, out: &mut Out, e: Ephemeral) {
        let Some(from) = e.from else {
            tracing::warn!(doc = %e.doc, "dropping an ephemeral message without a sender");
            return;
        };
        if e.payload.len() > MAX_EPHEMERAL_BYTES || !self.subscribed(e.doc.collection()) {
            tracing::warn!(doc = %e.doc, bytes = e.payload.len(), "dropping an ephemeral message over the limit or off the subscription");
            return;
        }
        out.effects.push(Effect::Ephemeral(EphemeralMessage {
            doc: e.doc,
            from,
            payload: e.payload.to_vec(),
        }));
    }

    fn on_error(&mut self, out: &mut Out, error: ErrorMessage, now_ms: u64) {
        tracing::warn!(code = error.code.0, message = %error.message, doc = ?error.doc, "the relay reported an error");
        if let Some(doc) = error.doc.clone()
            && (error.code == ErrorCode::STORAGE_FULL || error.retry_after_ms.is_some())
        {
            // Refused for now (a full storage; another device's change the relay may get
            // from its author first): nothing of it was stored, it stays pending and goes
            // again when the relay said, from a fresh sync state; the rest goes on.
            self.upload_done(&doc);
            self.conn.awaiting_data.remove(&doc);
            self.conn.states.remove(&doc);
            self.dirty.remove(&doc);
            let delay = error
                .retry_after_ms
                .unwrap_or(MAX_RETRY_AFTER_MS)
                .min(MAX_RETRY_AFTER_MS);
            let at = now_ms.saturating_add(delay);
            self.conn.retry.insert(doc.clone(), at);
            out.effects.push(Effect::WakeAt(at));
            let why = if error.code == ErrorCode::STORAGE_FULL {
                "the relay's storage is full".to_owned()
            } else {
                format!("the relay refused a change for now ({})", error.message)
            };
            self.last_error = Some(format!(
                "{why}: {doc} is sent again in {} s",
                delay.div_ceil(1000)
            ));
            let kind = SyncErrorKind::of_code(error.code, true);
            self.doc_error(&doc, kind, error.message.clone(), Some(at));
            self.conn.retry_reported = true;
            return;
        }
        if let Some(collection) = error.collection {
            // One collection of a request refused (the token cannot read it); the rest of the
            // request was served, and the connection goes on.
            self.last_error = Some(format!(
                "the relay refused collection {collection}: {}",
                error.message
            ));
            self.conn
                .refused_collections
                .insert(collection, error.message);
            return;
        }
        if let Some(doc) = error.doc {
            // One item refused; the rest of its frame went on.
            self.upload_done(&doc);
            self.conn.awaiting_data.remove(&doc);
            self.fail_planned(&doc);
            self.dirty.remove(&doc);
            let kind = SyncErrorKind::of_code(error.code, false);
            self.doc_error(&doc, kind, error.message.clone(), None);
            self.conn.refused.insert(doc, error.message.clone());
            self.last_error = Some(format!("the relay refused a change: {}", error.message));
            return;
        }
        match error.code {
            // The frame was dropped: start over on a new connection.
            ErrorCode::RATE_LIMITED | ErrorCode::INTERNAL => {
                let reason = format!("the relay asked to retry: {}", error.message);
                out.effects.push(Effect::Disconnect);
                self.end_connection(SyncEnd::RetryRequested(error.message.clone()));
                // A relay's word, capped: a broken relay cannot park the device for ever.
                let delay = error.retry_after_ms.unwrap_or(0).min(MAX_RETRY_AFTER_MS);
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
        self.end_connection(SyncEnd::ProtocolError(reason));
        self.schedule_reconnect(out, now_ms);
    }

    /// Sends the dirty documents now if the frame pacer allows, else at the time it names;
    /// then whatever the upload pacer lets go.
    fn flush_paced(&mut self, out: &mut Out, now_ms: u64) {
        self.release_uplink(out, now_ms);
        if self.phase != Phase::Open || self.dirty.is_empty() || self.conn.flush_due.is_some() {
            return;
        }
        // While paced uploads wait, new changes join the next flush (fewer, fuller frames).
        if !self.conn.uplink.queue.is_empty() {
            return;
        }
        if let Some(pacer) = self.conn.pacer.as_mut()
            && let Err(at) = pacer.take(now_ms)
        {
            self.conn.flush_due = Some(at);
            return;
        }
        self.flush_dirty(out, now_ms);
    }

    /// Sends the messages of every dirty document, highest priority first, through the upload
    /// pacer.
    fn flush_dirty(&mut self, out: &mut Out, now_ms: u64) {
        if self.phase != Phase::Open || self.dirty.is_empty() {
            return;
        }
        let mut docs: Vec<(Priority, DocId)> = self
            .dirty
            .drain()
            .filter(|d| !self.conn.refused.contains_key(d))
            .map(|d| (self.store.priority(&d), d))
            .collect();
        docs.sort_by(|(pa, a), (pb, b)| pb.cmp(pa).then(a.cmp(b)));
        let priorities: HashMap<DocId, Priority> =
            docs.iter().map(|(p, d)| (d.clone(), *p)).collect();
        let docs: Vec<DocId> = docs.into_iter().map(|(_, d)| d).collect();
        // On a metered network, large uploads wait (unless the app allows them): their sync
        // states are kept to be restored if their message is held back.
        let threshold = self.upload_threshold();
        let before: HashMap<DocId, Option<State>> = match threshold {
            Some(_) => docs
                .iter()
                .map(|d| (d.clone(), self.conn.states.get(d).cloned()))
                .collect(),
            None => HashMap::new(),
        };
        let mut items = Vec::new();
        for (doc, result) in self
            .store
            .generate(&self.config.relay, &docs, &mut self.conn.states)
        {
            match result {
                Ok(Some(message))
                    if message.changes
                        && threshold.is_some_and(|t| message.bytes.len() as u64 > t) =>
                {
                    match before.get(&doc).cloned().flatten() {
                        Some(state) => self.conn.states.insert(doc.clone(), state),
                        None => self.conn.states.remove(&doc),
                    };
                    tracing::debug!(doc = %doc, bytes = message.bytes.len(), "upload deferred on a metered network");
                    self.held_uploads.insert(doc);
                }
                Ok(Some(message)) => {
                    if message.changes {
                        let priority = priorities.get(&doc).copied().unwrap_or_default();
                        self.awaiting_ack(&doc, priority);
                    }
                    if message.needs {
                        self.conn.awaiting_data.insert(doc.clone());
                    }
                    // The app's priority travels with the changes it wrote.
                    let priority = message
                        .changes
                        .then(|| priorities.get(&doc).copied())
                        .flatten();
                    items.push(SyncItem {
                        doc,
                        message: message.bytes,
                        priority,
                    });
                }
                Ok(None) => {}
                Err(crate::Error::NotFound(_) | crate::Error::Evicted(_)) => {}
                Err(e) => {
                    tracing::error!(doc = %doc, error = %e, "could not prepare a sync message");
                    self.last_error = Some(format!("could not sync {doc}: {e}"));
                }
            }
        }
        self.send_items(out, items, Some(now_ms));
    }

    /// The size above which uploads wait for an unmetered network, if they do now.
    fn upload_threshold(&self) -> Option<u64> {
        (self.metered() && self.config.defer_metered_uploads).then(|| {
            self.config
                .profile
                .metered_max_doc_bytes
                .unwrap_or(syncline_protocol::messages::Profile::DEFAULT_METERED_MAX_DOC_BYTES)
        })
    }

    /// Local documents whose upload waits for an unmetered network.
    pub fn deferred_uploads(&self) -> Vec<DocId> {
        self.held_uploads.iter().cloned().collect()
    }

    /// A document sent with changes at `priority`: the relay will acknowledge it.
    fn awaiting_ack(&mut self, doc: &DocId, priority: Priority) {
        let count = self.conn.awaiting_ack.entry(doc.clone()).or_default();
        if *count == 0 {
            let uplink = &mut self.conn.uplink;
            uplink.docs_total += 1;
            uplink.by_priority[usize::from(priority.code())].docs_total += 1;
            uplink.priorities.insert(doc.clone(), priority);
        }
        *count += 1;
        self.stats.docs_sent += 1;
    }

    /// A document awaiting an acknowledgement is done with: acknowledged, or refused.
    fn upload_done(&mut self, doc: &DocId) {
        if self.conn.awaiting_ack.remove(doc).is_some() {
            let uplink = &mut self.conn.uplink;
            uplink.docs_done += 1;
            if let Some(priority) = uplink.priorities.remove(doc) {
                uplink.by_priority[usize::from(priority.code())].docs_done += 1;
            }
        }
    }

    /// Sends what the upload pacer lets go now, and asks to be woken for the rest.
    fn release_uplink(&mut self, out: &mut Out, now_ms: u64) {
        if self.phase != Phase::Open {
            return;
        }
        let uplink = &mut self.conn.uplink;
        while !uplink.queue.is_empty() && uplink.pacer.ready(now_ms) {
            let (bytes, per_priority) = uplink.queue.pop_front().expect("not empty");
            uplink.pacer.spend(bytes.len() as u64, now_ms);
            uplink.bytes_done += bytes.len() as u64;
            for (by, sent) in uplink.by_priority.iter_mut().zip(per_priority) {
                by.bytes_done += sent;
            }
            uplink.last_sent_ms = now_ms;
            out.push_frame(bytes);
        }
        if !uplink.queue.is_empty() {
            let at = uplink.pacer.ready_at().unwrap_or(now_ms).max(now_ms + 1);
            self.conn.flush_due = Some(self.conn.flush_due.map_or(at, |due| due.min(at)));
        }
    }

    /// Sends items in frames of at most [`SYNC_BATCH`] items and the frame budget. Local
    /// changes (`paced_at`) are queued for the upload pacer, in frames of about an eighth of a
    /// second at the declared rate; replies go at once.
    fn send_items(&mut self, out: &mut Out, items: Vec<SyncItem>, paced_at: Option<u64>) {
        let mut budget = self
            .conn
            .welcome
            .as_ref()
            .map_or(DEFAULT_FRAME_BUDGET, |w| {
                usize::try_from(w.limits.max_frame_bytes / 2).unwrap_or(DEFAULT_FRAME_BUDGET)
            });
        let rate = self.conn.uplink.pacer.rate();
        if let (Some(_), Some(rate)) = (paced_at, rate) {
            let eighth = usize::try_from(rate / 8).unwrap_or(usize::MAX);
            budget = budget.min(eighth.max(MIN_PACED_FRAME));
        }
        let limit = self.conn.welcome.as_ref().map_or(ASSUMED_MAX_FRAME, |w| {
            usize::try_from(w.limits.max_frame_bytes).unwrap_or(usize::MAX)
        });
        let mut frames: Vec<Sync> = Vec::new();
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
                self.upload_done(&item.doc);
                self.conn.awaiting_data.remove(&item.doc);
                self.doc_error(&item.doc, SyncErrorKind::TooLarge, reason.clone(), None);
                self.conn.refused.insert(item.doc, reason.clone());
                self.last_error = Some(format!("the relay refused a change: {reason}"));
                continue;
            }
            if !batch.is_empty() && (batch.len() >= SYNC_BATCH || size + item_size > budget) {
                frames.push(Sync {
                    items: std::mem::take(&mut batch),
                    positions: None,
                });
                size = 0;
            }
            size += item_size;
            batch.push(item);
        }
        if !batch.is_empty() {
            frames.push(Sync {
                items: batch,
                positions: None,
            });
        }
        match paced_at {
            Some(now_ms) => {
                for sync in frames {
                    let weights = priority_weights(&sync);
                    let bytes = frame::encode_with(&Message::Sync(sync), self.conn.compression);
                    let per_priority = split_by(bytes.len() as u64, weights);
                    let uplink = &mut self.conn.uplink;
                    uplink.bytes_total += bytes.len() as u64;
                    for (by, share) in uplink.by_priority.iter_mut().zip(per_priority) {
                        by.bytes_total += share;
                    }
                    uplink.queue.push_back((bytes, per_priority));
                }
                self.release_uplink(out, now_ms);
            }
            None => {
                for sync in frames {
                    out.send(&Message::Sync(sync));
                }
            }
        }
    }

    fn finish_plan_if_done(&mut self) {
        let Some(plan) = self.conn.plan.as_mut() else {
            return;
        };
        // A dropped document waits for its deferral (or keeps the cursors for good).
        if !plan.remaining.is_empty() || plan.cursors.is_empty() || !plan.dropped.is_empty() {
            return;
        }
        // A document of these collections whose exchange is still under way (this device
        // asked the relay for changes it showed) may be what the cursors cover, without being
        // in the plan (the relay was syncing it already): the cursors wait for it, or a cut
        // now would leave it behind them for good.
        if self.conn.awaiting_data.iter().any(|doc| {
            plan.cursors
                .iter()
                .any(|c| &c.collection == doc.collection())
        }) {
            return;
        }
        let cursors = std::mem::take(&mut plan.cursors);
        if plan.failed {
            return;
        }
        let cursors = self.tagged(cursors);
        if let Err(e) = self.store.set_cursors(&self.config.relay, &cursors) {
            // The next connection plans from the older cursors: more work, nothing lost.
            tracing::error!(error = %e, "could not store sync cursors");
        }
    }

    /// Checks the positions (cursors, acknowledged sequence numbers) a relay's message shows
    /// before any is kept: too many, or an epoch or receipt over [`MAX_EPOCH_BYTES`], is a
    /// protocol error (`Err` says what). Of the rest, only positions in `about` (the
    /// collections the message concerns: those reconciled, or those of the acknowledged
    /// documents) in the epoch the relay's `Welcome` named are kept, the lowest where one is
    /// named twice: a broken relay cannot move a cursor of a collection it was not asked
    /// about, nor one of another copy of its data, past changes this device never saw.
    fn sane_positions(
        &self,
        positions: Vec<Cursor>,
        about: &[&Collection],
    ) -> Result<Vec<Cursor>, String> {
        if positions.len() > MAX_COLLECTIONS {
            return Err(format!(
                "named {} positions, over {MAX_COLLECTIONS}",
                positions.len()
            ));
        }
        let too_long =
            |field: &Option<String>| field.as_ref().is_some_and(|f| f.len() > MAX_EPOCH_BYTES);
        if positions
            .iter()
            .any(|p| too_long(&p.epoch) || too_long(&p.receipt))
        {
            return Err(format!(
                "named an epoch or receipt over {MAX_EPOCH_BYTES} bytes"
            ));
        }
        let epoch = self.conn.welcome.as_ref().and_then(|w| w.epoch.as_deref());
        let mut kept: Vec<Cursor> = Vec::with_capacity(positions.len());
        for position in positions {
            let foreign_epoch = matches!(
                (position.epoch.as_deref(), epoch),
                (Some(named), Some(current)) if named != current
            ) || (position.epoch.is_some() && epoch.is_none());
            if foreign_epoch || !about.contains(&&position.collection) {
                tracing::warn!(collection = %position.collection, seq = position.seq, epoch = ?position.epoch, "ignoring a position the relay showed out of place");
                continue;
            }
            match kept
                .iter_mut()
                .find(|k| k.collection == position.collection)
            {
                Some(k) if k.seq > position.seq => *k = position,
                Some(_) => {}
                None => kept.push(position),
            }
        }
        Ok(kept)
    }

    /// Positions the relay showed, each with the epoch of the relay's data: the one it named,
    /// or its `Welcome`'s (relays that name none in positions).
    fn tagged(&self, mut positions: Vec<Cursor>) -> Vec<Cursor> {
        let epoch = self.conn.welcome.as_ref().and_then(|w| w.epoch.as_deref());
        for p in &mut positions {
            if p.epoch.is_none() {
                p.epoch = epoch.map(str::to_owned);
            }
        }
        positions
    }

    fn update_status(&mut self, out: &mut Out, now_ms: u64) {
        let status = match self.phase {
            Phase::Waiting(_)
                if self.caught_up_at.is_some()
                    && self.last_error.is_none()
                    && self.dirty.is_empty() =>
            {
                Status::Synced {
                    at_ms: self.caught_up_at.unwrap_or(now_ms),
                    over_budget_bytes: self.over_budget_bytes,
                }
            }
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
                if done && !self.conn.retry.is_empty() {
                    let reason = self
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "the relay's storage is full".into());
                    Status::Error { reason }
                } else if done && !self.conn.refused_collections.is_empty() {
                    let reason = self
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "the relay refused a collection".into());
                    Status::Error { reason }
                } else if done && !self.conn.refused.is_empty() {
                    let reason = self
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "the relay refused a change".into());
                    Status::Error { reason }
                } else if done {
                    if std::mem::take(&mut self.conn.retry_reported) {
                        self.last_error = None;
                    }
                    if !self.conn.synced {
                        self.conn.synced = true;
                        self.backoff.reset();
                        self.last_error = None;
                    }
                    if !self.realtime() {
                        // A periodic device caught up: close, to save radio time and battery,
                        // and come back on schedule.
                        tracing::info!(relay = %self.config.relay, "caught up; closing until the next periodic sync");
                        out.effects.push(Effect::Disconnect);
                        self.end_connection(SyncEnd::CaughtUp);
                        let at = now_ms.saturating_add(self.config.sync_interval_ms);
                        self.phase = Phase::Waiting(at);
                        self.caught_up_at = Some(now_ms);
                    }
                    let at_ms = match self.status {
                        Status::Synced { at_ms, .. } => at_ms,
                        _ => now_ms,
                    };
                    Status::Synced {
                        at_ms,
                        over_budget_bytes: self.over_budget_bytes,
                    }
                } else {
                    Status::Syncing {
                        progress: Box::new(self.progress(now_ms)),
                    }
                }
            }
        };
        if status != self.status {
            self.status = status.clone();
            out.effects.push(Effect::Status(status));
        }
    }

    /// The progress of the current connection.
    fn progress(&self, now_ms: u64) -> Progress {
        let mut progress = self
            .conn
            .plan
            .as_ref()
            .map(|p| p.progress)
            .unwrap_or_default();
        progress.docs_unacknowledged = self.conn.awaiting_ack.len() as u64;
        let uplink = &self.conn.uplink;
        progress.upload = Transfer {
            docs_done: uplink.docs_done,
            docs_total: uplink.docs_total,
            bytes_done: uplink.bytes_done,
            bytes_total: uplink.bytes_total,
        };
        progress.upload_by_priority = uplink.by_priority;
        progress.deferred = self
            .deferred
            .keys()
            .filter(|d| self.subscribed(d.collection()))
            .count() as u64;
        progress.uploads_deferred = self.held_uploads.len() as u64;
        progress.over_budget_bytes = self.over_budget_bytes;
        let elapsed = now_ms.saturating_sub(self.conn.opened_ms);
        // The declared rate, else the one observed on this connection (after a moment).
        let rate = |declared: Option<u64>, moved: u64| {
            declared
                .filter(|r| *r > 0)
                .or_else(|| (elapsed >= 200 && moved > 0).then(|| moved * 1000 / elapsed))
        };
        let down_left = progress.bytes_total.saturating_sub(progress.bytes_done);
        let up_left = uplink.bytes_total.saturating_sub(uplink.bytes_done);
        let eta = |left: u64, rate: Option<u64>| match (left, rate) {
            (0, _) => Some(0),
            (left, Some(rate)) if rate > 0 => Some(left.saturating_mul(1000) / rate),
            _ => None,
        };
        let down = eta(
            down_left,
            rate(
                self.config.profile.download_bytes_per_s,
                self.conn.bytes_received,
            ),
        );
        let up = eta(
            up_left,
            rate(self.config.profile.upload_bytes_per_s, uplink.bytes_done),
        );
        progress.eta_ms = down.zip(up).map(|(d, u)| d.max(u));
        progress
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
                if !f.paced {
                    // Answers go at once, but their bytes count against the upload rate.
                    self.conn.uplink.pacer.spend(f.bytes.len() as u64, now_ms);
                }
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
    /// Already charged to the upload pacer (a paced local-change frame).
    paced: bool,
}

impl Out {
    fn send(&mut self, message: &Message) {
        self.frames.push(OutFrame {
            bytes: frame::encode_with(message, self.compression),
            first_of_connection: matches!(message, Message::Hello(_)),
            paced: false,
        });
    }

    /// A frame the upload pacer let go.
    fn push_frame(&mut self, bytes: Vec<u8>) {
        self.frames.push(OutFrame {
            bytes,
            first_of_connection: false,
            paced: true,
        });
    }
}

/// The bytes of a frame's messages per priority (local changes carry theirs; `normal` for
/// the rest).
fn priority_weights(sync: &Sync) -> [u64; 4] {
    let mut weights = [0u64; 4];
    for item in &sync.items {
        let priority = item.priority.unwrap_or_default();
        weights[usize::from(priority.code())] += item.message.len() as u64;
    }
    weights
}

/// Splits `total` bytes in proportion to `weights` (the remainder to the heaviest).
fn split_by(total: u64, weights: [u64; 4]) -> [u64; 4] {
    let sum: u64 = weights.iter().sum();
    if sum == 0 {
        return [0, total, 0, 0];
    }
    let mut shares = weights
        .map(|w| u64::try_from(u128::from(total) * u128::from(w) / u128::from(sum)).unwrap_or(0));
    let heaviest = (0..4).max_by_key(|i| weights[*i]).unwrap_or(1);
    shares[heaviest] += total - shares.iter().sum::<u64>();
    shares
}

/// Asks the relay for `docs` now, in requests of at most [`FETCH_BATCH`]; returns how many
/// requests went (each is answered by one `Plan` marked `fetch`).
fn send_fetch(out: &mut Out, docs: Vec<DocId>) -> u32 {
    if !docs.is_empty() {
        tracing::debug!(?docs, "fetching");
    }
    let mut sent = 0;
    for chunk in docs.chunks(FETCH_BATCH) {
        out.send(&Message::Fetch(Fetch {
            docs: chunk.to_vec(),
        }));
        sent += 1;
    }
    sent
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

/// The longest delay a relay's `retry_after_ms` can impose before the device reconnects.
pub const MAX_RETRY_AFTER_MS: u64 = 5 * 60 * 1000;

/// What one document's sync message from the relay may cost to decode: well over what a relay
/// accepts from a device per frame ([`PayloadLimits::DEFAULT`]), since a relay's message can
/// carry several devices' changes at once.
const RELAY_PAYLOAD_LIMITS: PayloadLimits = PayloadLimits {
    max_inflated_bytes: 128 << 20,
    max_ops: 16_000_000,
};

/// Checks a relay's sync message before Automerge receives it: its own fields, then its
/// changes against `budget`.
fn check_relay_message(message: &SyncMessage, budget: &mut Budget) -> Result<(), String> {
    payload::check_sync_message(message).map_err(|e| e.to_string())?;
    for chunk in message.changes.iter() {
        budget.check(chunk).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
