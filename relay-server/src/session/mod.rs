//! The per-connection protocol logic, sans I/O: frames and the current time in; messages to
//! send, actions for the document layer, and a close decision out.
//!
//! A [`Session`] starts authenticated (the token was checked on the upgrade) and waits for
//! `Hello`. It enforces the order of messages, authorizes every message against the grants
//! (a device can neither read, write, subscribe to nor learn of documents outside them),
//! applies the frame-size, rate and idle limits, tracks the token's expiry, and turns valid
//! requests into [`Action`]s. Every breach is answered with a typed `Error` frame; repeated
//! breaches ([`MAX_STRIKES`]) close the connection. It never panics on what a client sends.

use automerge::sync::Message as SyncMessage;
use syncline_protocol::frame::{self, FrameError};
use syncline_protocol::messages::{
    CollectionSubscription, DeferReason, Ephemeral, Error, ErrorCode, Feature, Limits,
    MAX_COLLECTIONS, MAX_EPHEMERAL_BYTES, MAX_EPOCH_BYTES, MAX_SYNC_ITEMS, Profile, Reconcile,
    SyncItem, Welcome,
};
use syncline_protocol::payload::Budget;
use syncline_protocol::{
    Collection, Compression, DocId, Message, PROTOCOL_VERSION, PayloadLimits, TokenBucket,
};

use crate::auth::{AuthError, Grants, Identity, Verified};
use crate::hub::{GraphError, Lane};

mod downlink;

pub use downlink::{Downlink, Frame};

/// Protocol violations tolerated before the session is closed.
pub const MAX_STRIKES: u32 = 8;

/// The WebSocket close codes (defined by the protocol, shared with the SDK).
pub use syncline_protocol::close_code;

/// Why and how the connection must close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The WebSocket close code ([`close_code`]).
    pub code: u16,
    /// A short human-readable reason.
    pub reason: String,
}

/// Work for the document layer, produced from an authorized request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Register the device with this profile (after `Hello`).
    Register(Profile),
    /// Number this session's plans and close each with a `PlanDone` ([`Feature::PlanDone`],
    /// which the device offered in its `Hello`). Follows [`Action::Register`].
    ClosePlans,
    /// The profile changed.
    UpdateProfile(Profile),
    /// Replace the subscription.
    Subscribe(Vec<CollectionSubscription>),
    /// Plan the sync of a reconnecting device.
    Reconcile(Reconcile),
    /// Apply these Automerge sync messages (each decoded, each within the grants).
    Sync(Vec<SyncItem>),
    /// Send these documents now, and answer the device's `Fetch` (a `Plan` marked `fetch`).
    Fetch(Vec<DocId>),
    /// Send these documents now, as part of a `Fetch` too large for one hub turn: the
    /// [`Action::Fetch`] that follows carries the rest and the answer.
    FetchPart(Vec<DocId>),
    /// These documents' queued messages (with their sizes) were taken back before they were
    /// sent, the device having turned metered: forget what was assumed sent, and defer them
    /// for the reason given.
    Unsent(Vec<(DocId, u64, DeferReason)>),
    /// Forward this presence message to the other devices on the document.
    Ephemeral(Ephemeral),
    /// Verify this refreshed token, then call [`Session::handle_token_verified`].
    VerifyToken(String),
    /// The grants changed (a refreshed token): stop sending what is no longer readable.
    GrantsChanged(Grants),
    /// The client reported an error; log it.
    ClientError(Error),
}

/// What [`Session::deliver`] produced: frames for the socket, work for the hub.
#[derive(Debug, Default, PartialEq)]
pub struct Delivered {
    /// Frames to send, in order.
    pub frames: Vec<Frame>,
    /// Work for the document layer.
    pub actions: Vec<Action>,
}

/// What one input produced.
#[derive(Debug, Default, PartialEq)]
pub struct Output {
    /// Messages to send to the client, in order.
    pub send: Vec<Message>,
    /// Work for the document layer, in order.
    pub actions: Vec<Action>,
    /// Set when the connection must close (after sending `send`).
    pub close: Option<Close>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingHello,
    Open,
    Closed,
}

/// One client connection's protocol state.
#[derive(Debug)]
pub struct Session {
    id: String,
    identity: Identity,
    grants: Grants,
    expires_at_ms: u64,
    limits: Limits,
    phase: Phase,
    frames: TokenBucket,
    bytes: TokenBucket,
    last_activity_ms: u64,
    strikes: u32,
    /// The compressions this relay lets the client choose from.
    accepts: &'static [Compression],
    /// The compression `Hello` → `Welcome` settled on (none until then).
    compression: Compression,
    /// What the relay sends this device, paced to its declared download rate.
    downlink: Downlink,
    /// The device's current profile (after `Hello`).
    profile: Option<Profile>,
    /// The device's current subscription.
    subscriptions: Vec<CollectionSubscription>,
    /// Documents the device said it holds in `Reconcile.fetched`, over the connection
    /// (bounded by `max_docs_per_subscription`).
    fetched_ids: u64,
    /// The relay's metered-network threshold (for devices that set none).
    metered_threshold: u64,
    /// What one frame's Automerge payloads may cost to decode.
    payload_limits: PayloadLimits,
    /// Ephemeral messages the device may send (each is fanned out to every reader).
    ephemerals: TokenBucket,
    /// The epoch of the relay's data, for `Welcome`.
    epoch: Option<String>,
    /// Bytes the device's compressed payloads may inflate to per second (as many as the byte
    /// rate, in an allowance of its own).
    inflation: TokenBucket,
    /// Operations the device's payloads may declare per second (a frame's budget).
    ops: TokenBucket,
    /// When the connection opened (the `Hello` deadline counts from it).
    opened_ms: u64,
}

/// A connection's allowance for inflating its payloads: the byte rate per second, holding at
/// least two frames' budgets (so a frame's budget is always reachable).
fn inflation_bucket(limits: &Limits, payload: &PayloadLimits, now_ms: u64) -> TokenBucket {
    let budget = payload.max_inflated_bytes as u64;
    TokenBucket::with_burst(
        limits.max_bytes_per_s,
        limits.max_bytes_per_s.max(2 * budget),
        now_ms,
    )
}

/// A connection's allowance for declared operations: a frame's budget per second, holding two.
fn ops_bucket(payload: &PayloadLimits, now_ms: u64) -> TokenBucket {
    TokenBucket::with_burst(payload.max_ops, 2 * payload.max_ops, now_ms)
}

/// The most collections one request gets a refusal each for (`Error.collection`).
pub const MAX_REFUSED_COLLECTIONS: usize = 16;

/// Milliseconds a connection may stay open after its upgrade without sending `Hello`.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;

/// Ephemeral messages per second one connection may send (with a burst of twice as many).
pub const EPHEMERALS_PER_S: u64 = syncline_protocol::messages::MAX_EPHEMERALS_PER_S;

/// The documents one hub turn loads and sends for a `Fetch`; a longer fetch goes to the hub
/// in parts ([`Action::FetchPart`]), so a device asking for many documents the cache does not
/// hold cannot keep the hub thread, shared by every tenant, for the whole of it.
pub const FETCH_TURN_DOCS: usize = 16;

impl Session {
    /// A session for an authenticated connection, opened at `now_ms`.
    pub fn new(id: String, verified: Verified, limits: Limits, now_ms: u64) -> Self {
        Self {
            id,
            identity: verified.identity,
            grants: verified.grants,
            expires_at_ms: verified.valid_until.saturating_mul(1000),
            frames: TokenBucket::per_second(u64::from(limits.max_frames_per_s), now_ms),
            bytes: TokenBucket::per_second(limits.max_bytes_per_s, now_ms),
            inflation: inflation_bucket(&limits, &PayloadLimits::DEFAULT, now_ms),
            ops: ops_bucket(&PayloadLimits::DEFAULT, now_ms),
            opened_ms: now_ms,
            limits,
            phase: Phase::AwaitingHello,
            last_activity_ms: now_ms,
            strikes: 0,
            accepts: &Compression::SUPPORTED,
            compression: Compression::None,
            downlink: Downlink::default(),
            profile: None,
            subscriptions: Vec::new(),
            fetched_ids: 0,
            metered_threshold: Profile::DEFAULT_METERED_MAX_DOC_BYTES,
            payload_limits: PayloadLimits::DEFAULT,
            ephemerals: TokenBucket::with_burst(EPHEMERALS_PER_S, 2 * EPHEMERALS_PER_S, now_ms),
            epoch: None,
        }
    }

    /// What one frame's Automerge payloads may cost to decode (the relay's configuration;
    /// [`PayloadLimits::DEFAULT`] unless set).
    pub fn set_payload_limits(&mut self, limits: PayloadLimits) {
        self.payload_limits = limits;
        let now_ms = self.last_activity_ms;
        self.inflation = inflation_bucket(&self.limits, &limits, now_ms);
        self.ops = ops_bucket(&limits, now_ms);
    }

    /// The epoch of the relay's data ([`crate::storage::Storage::epoch`]), named in `Welcome`
    /// so the device can tag the positions it is shown. Call before the client's `Hello`;
    /// without it, the relay names none and positions are not checked.
    pub fn set_epoch(&mut self, epoch: String) {
        self.epoch = Some(epoch);
    }

    /// The relay's metered-network threshold (`RelayConfig::metered_max_doc_bytes`), for what
    /// is already queued when a device turns metered.
    pub fn set_metered_threshold(&mut self, bytes: u64) {
        self.metered_threshold = bytes;
    }

    /// Limits the frame compressions the client may choose (every one this relay implements
    /// by default). Call before the client's `Hello`.
    pub fn accept_compressions(&mut self, accepts: &'static [Compression]) {
        self.accepts = accepts;
    }

    /// The compression to encode this session's frames with (see [`frame::encode_with`]).
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Who is connected.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// What they may do now.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// The latest time at which [`Session::handle_tick`] (and [`Session::release`], when
    /// paced frames wait) must be called.
    pub fn deadline_ms(&self) -> u64 {
        let limits = self.expires_at_ms.min(self.idle_deadline_ms());
        self.downlink
            .next_release_ms()
            .map_or(limits, |at| at.min(limits))
    }

    /// When the session counts as idle: [`HELLO_TIMEOUT_MS`] after opening without a
    /// `Hello`, else the idle timeout after the last complete frame. Only protocol frames count
    /// as activity: WebSocket pings (and a fragmented message kept unfinished) do not, so a
    /// client cannot hold a connection and its buffers open without sending messages.
    fn idle_deadline_ms(&self) -> u64 {
        if self.phase == Phase::AwaitingHello {
            // From the opening: frames other than Hello do not stretch it.
            return self
                .opened_ms
                .saturating_add(HELLO_TIMEOUT_MS.min(self.limits.idle_timeout_ms));
        }
        self.last_activity_ms
            .saturating_add(self.limits.idle_timeout_ms)
    }

    /// How long until a whole frame's payload budget (inflation and operations) is there to
    /// spend, if it is not now.
    fn payload_wait(&mut self, now_ms: u64) -> Option<u64> {
        let inflation = self
            .inflation
            .holds(self.payload_limits.max_inflated_bytes as u64, now_ms)
            .err();
        let ops = self.ops.holds(self.payload_limits.max_ops, now_ms).err();
        inflation.max(ops)
    }

    /// Takes a message the relay core routed to this connection at `now_ms`: paced in `lane`
    /// to the device's declared download rate, encoded with the negotiated compression and
    /// filtered by the grants then current when it goes. Returns the frames that may go now
    /// (the rest come from [`Session::release`] at [`Session::deadline_ms`]), and, for catch-up
    /// the device's profile no longer allows (it turned metered since the hub planned it),
    /// an [`Action::Unsent`] for the hub. `counted` backlog bytes come back with the
    /// message's (last) frame.
    pub fn deliver(
        &mut self,
        message: Message,
        lane: Lane,
        counted: usize,
        now_ms: u64,
    ) -> Delivered {
        let mut delivered = Delivered::default();
        if self.phase == Phase::Closed {
            return delivered;
        }
        self.downlink
            .queue(message, lane, counted, self.compression);
        if lane == Lane::Bulk {
            let unsent = self.take_back();
            if !unsent.is_empty() {
                delivered.actions.push(Action::Unsent(unsent));
            }
        }
        delivered.frames = self.release(now_ms);
        delivered
    }

    /// The paced frames that may go at `now_ms`, filtered by the current grants.
    pub fn release(&mut self, now_ms: u64) -> Vec<Frame> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        let grants = &self.grants;
        self.downlink.release(now_ms, |message| {
            crate::relay_core::visible(message, grants)
        })
    }

    /// Takes back the queued catch-up the device's profile holds back now (too large for a
    /// metered network, or a low-priority collection on one), for an [`Action::Unsent`].
    fn take_back(&mut self) -> Vec<(DocId, u64, DeferReason)> {
        let Some(profile) = self.profile.as_ref().filter(|p| p.metered) else {
            return Vec::new();
        };
        let device = crate::hub::policy::Device {
            profile: Some(profile),
            relay_threshold: self.metered_threshold,
        };
        let subscriptions = &self.subscriptions;
        let reason = |item: &SyncItem| {
            let sub = subscriptions
                .iter()
                .find(|s| &s.collection == item.doc.collection());
            // On demand does not apply here: what is queued, the device holds or asked for.
            device
                .hold_back(sub, true)
                .or_else(|| device.hold_back_bytes(item.message.len() as u64))
        };
        self.downlink
            .prune(|item| reason(item).is_none())
            .into_iter()
            .map(|item| {
                let why = reason(&item).unwrap_or(DeferReason::Metered);
                (item.doc, item.message.len() as u64, why)
            })
            .collect()
    }

    /// The paced downlink (its rate and what it has sent, for inspection).
    pub fn downlink(&self) -> &Downlink {
        &self.downlink
    }

    /// Handles one binary frame received at `now_ms`.
    pub fn handle_frame(&mut self, bytes: &[u8], now_ms: u64) -> Output {
        let mut out = Output::default();
        if self.phase == Phase::Closed {
            return out;
        }
        self.last_activity_ms = now_ms;
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let over_rate = self
            .frames
            .take(1, now_ms)
            .err()
            .or_else(|| self.bytes.take(len, now_ms).err());
        if let Some(retry_after_ms) = over_rate {
            self.refuse(
                &mut out,
                ErrorCode::RATE_LIMITED,
                "rate limit exceeded",
                Some(retry_after_ms),
            );
            return out;
        }
        let max = usize::try_from(self.limits.max_frame_bytes).unwrap_or(usize::MAX);
        let message = match frame::decode(bytes, max) {
            Ok(message) => message,
            Err(FrameError::TooLarge { len, max }) => {
                let msg = format!("frame of {len} bytes exceeds {max}");
                self.refuse(&mut out, ErrorCode::FRAME_TOO_LARGE, &msg, None);
                return out;
            }
            Err(FrameError::UnknownType(t)) => {
                // A newer client's message: tell it, but it is no violation.
                out.send.push(error(
                    ErrorCode::UNKNOWN_MESSAGE,
                    &format!("unknown message type {t}"),
                    None,
                ));
                return out;
            }
            Err(e) => {
                self.refuse(&mut out, ErrorCode::BAD_FRAME, &e.to_string(), None);
                return out;
            }
        };
        match (self.phase, message) {
            (Phase::AwaitingHello, Message::Hello(hello)) => {
                if !hello.versions.contains(&PROTOCOL_VERSION) {
                    out.send.push(error(
                        ErrorCode::UNSUPPORTED_VERSION,
                        &format!("this relay speaks protocol version {PROTOCOL_VERSION}"),
                        None,
                    ));
                    self.close(
                        &mut out,
                        close_code::PROTOCOL_ERROR,
                        "no common protocol version",
                    );
                    return out;
                }
                self.phase = Phase::Open;
                self.compression = Compression::negotiate(&hello.compression, self.accepts);
                // The features this relay implements among those offered, in its order.
                let features: Vec<Feature> = Feature::ALL
                    .into_iter()
                    .filter(|f| f.named_in(&hello.features))
                    .collect();
                out.send.push(Message::Welcome(Welcome {
                    version: PROTOCOL_VERSION,
                    compression: self.compression.code(),
                    session: self.id.clone(),
                    server_time_ms: now_ms,
                    limits: self.limits.clone(),
                    epoch: self.epoch.clone(),
                    features: features.iter().map(|f| f.code()).collect(),
                }));
                self.downlink
                    .set_rate(hello.profile.download_bytes_per_s, now_ms);
                self.profile = Some(hello.profile.clone());
                out.actions.push(Action::Register(hello.profile));
                if features.contains(&Feature::PlanDone) {
                    out.actions.push(Action::ClosePlans);
                }
            }
            (Phase::AwaitingHello, other) => {
                let msg = format!("{} before hello", other.name());
                self.refuse(&mut out, ErrorCode::OUT_OF_ORDER, &msg, None);
            }
            (_, Message::Hello(_)) => {
                self.refuse(&mut out, ErrorCode::OUT_OF_ORDER, "second hello", None)
            }
            (_, message) => self.handle_open(message, &mut out, now_ms),
        }
        out
    }

    /// Handles a text WebSocket message received at `now_ms`: not a frame (frames travel in
    /// binary messages only), refused as malformed, like any other frame that does not decode.
    pub fn handle_text(&mut self, now_ms: u64) -> Output {
        let mut out = Output::default();
        if self.phase == Phase::Closed {
            return out;
        }
        self.last_activity_ms = now_ms;
        self.refuse(
            &mut out,
            ErrorCode::BAD_FRAME,
            "a text WebSocket message is not a frame: send every frame as a binary message",
            None,
        );
        out
    }

    /// Handles the verification of a token the client sent with `RefreshToken`.
    pub fn handle_token_verified(&mut self, result: Result<Verified, AuthError>) -> Output {
        let mut out = Output::default();
        if self.phase == Phase::Closed {
            return out;
        }
        match result {
            Ok(verified) if verified.identity != self.identity => {
                out.send.push(error(
                    ErrorCode::UNAUTHORIZED,
                    "the new token is for another identity",
                    None,
                ));
                self.close(
                    &mut out,
                    close_code::IDENTITY_CHANGED,
                    "token identity changed",
                );
            }
            Ok(verified) => {
                self.expires_at_ms = verified.valid_until.saturating_mul(1000);
                if verified.grants != self.grants {
                    self.grants = verified.grants;
                    out.actions.push(Action::GrantsChanged(self.grants.clone()));
                }
            }
            Err(e) => {
                // The current token stays valid until it expires. The client learns the kind
                // of refusal only (not which keys or algorithms the relay holds), and a refused
                // token is a strike: guessing costs the connection.
                let msg = format!("refresh refused: {}", e.reason());
                self.refuse(&mut out, ErrorCode::UNAUTHORIZED, &msg, None);
            }
        }
        out
    }

    /// Checks the clock: closes an idle session or one whose token expired.
    pub fn handle_tick(&mut self, now_ms: u64) -> Output {
        let mut out = Output::default();
        if self.phase == Phase::Closed {
            return out;
        }
        if now_ms >= self.expires_at_ms {
            out.send
                .push(error(ErrorCode::UNAUTHORIZED, "token expired", None));
            self.close(&mut out, close_code::TOKEN_EXPIRED, "token expired");
        } else if self.phase == Phase::AwaitingHello && now_ms >= self.idle_deadline_ms() {
            self.close(&mut out, close_code::IDLE, "no Hello in time");
        } else if now_ms >= self.idle_deadline_ms() {
            self.close(&mut out, close_code::IDLE, "idle timeout");
        }
        out
    }

    fn handle_open(&mut self, message: Message, out: &mut Output, now_ms: u64) {
        match message {
            Message::Subscribe(s) if s.collections.len() > MAX_COLLECTIONS => {
                let msg = format!("at most {MAX_COLLECTIONS} collections per subscription");
                self.refuse(out, ErrorCode::LIMIT_EXCEEDED, &msg, None);
            }
            Message::Reconcile(r)
                if r.cursors.len() > MAX_COLLECTIONS
                    || r.acked.as_ref().is_some_and(|a| a.len() > MAX_COLLECTIONS) =>
            {
                let msg = format!("at most {MAX_COLLECTIONS} cursors per reconcile");
                self.refuse(out, ErrorCode::LIMIT_EXCEEDED, &msg, None);
            }
            Message::Reconcile(r)
                if r.cursors.iter().chain(r.acked.iter().flatten()).any(|c| {
                    c.epoch.as_ref().is_some_and(|e| e.len() > MAX_EPOCH_BYTES)
                        || c.receipt
                            .as_ref()
                            .is_some_and(|r| r.len() > MAX_EPOCH_BYTES)
                }) =>
            {
                let msg = format!("an epoch or a receipt is at most {MAX_EPOCH_BYTES} bytes");
                self.refuse(out, ErrorCode::LIMIT_EXCEEDED, &msg, None);
            }
            Message::Subscribe(mut s) => {
                // A collection named twice counts once: the hub never scans one twice.
                let mut seen = std::collections::HashSet::new();
                s.collections.retain(|c| seen.insert(c.collection.clone()));
                // A collection the token cannot read is refused alone; the rest is subscribed.
                let unreadable: Vec<Collection> = s
                    .collections
                    .iter()
                    .map(|c| c.collection.clone())
                    .filter(|c| !self.grants.can_read(c))
                    .collect();
                self.refuse_collections(out, unreadable);
                s.collections
                    .retain(|c| self.grants.can_read(&c.collection));
                // What is queued for a collection unsubscribed now stops here.
                let removed: Vec<Collection> = self
                    .subscriptions
                    .iter()
                    .map(|c| c.collection.clone())
                    .filter(|c| !s.collections.iter().any(|n| &n.collection == c))
                    .collect();
                if !removed.is_empty() {
                    self.downlink
                        .prune(|item| !removed.contains(item.doc.collection()));
                }
                self.subscriptions.clone_from(&s.collections);
                out.actions.push(Action::Subscribe(s.collections));
            }
            Message::Reconcile(mut r) => {
                let mut seen = std::collections::HashSet::new();
                r.cursors.retain(|c| seen.insert(c.collection.clone()));
                // What the relay acknowledged in a collection no longer readable is not
                // checked (nor refused: the device only reports it).
                if let Some(acked) = r.acked.as_mut() {
                    let mut seen = std::collections::HashSet::new();
                    acked.retain(|c| {
                        self.grants.can_read(&c.collection) && seen.insert(c.collection.clone())
                    });
                }
                let collections = r
                    .cursors
                    .iter()
                    .map(|c| &c.collection)
                    .chain(r.changed.iter().map(|d| d.doc.collection()));
                let fetched = r.fetched.as_ref().map_or(0, Vec::len) as u64;
                let limit = u64::from(self.limits.max_docs_per_subscription);
                if r.changed.len() as u64 > limit || self.fetched_ids + fetched > limit {
                    let msg = format!(
                        "at most {limit} documents changed, and held on demand, per connection"
                    );
                    self.refuse(out, ErrorCode::LIMIT_EXCEEDED, &msg, None);
                    return;
                }
                // Collections the token cannot read are refused alone; the rest is planned.
                let mut unreadable: Vec<Collection> = collections
                    .chain(r.fetched.iter().flatten().map(|d| d.collection()))
                    .filter(|c| !self.grants.can_read(c))
                    .cloned()
                    .collect();
                unreadable.sort();
                unreadable.dedup();
                if !unreadable.is_empty() {
                    let readable = |c: &Collection| !unreadable.contains(c);
                    r.cursors.retain(|c| readable(&c.collection));
                    r.changed.retain(|d| readable(d.doc.collection()));
                    if let Some(fetched) = r.fetched.as_mut() {
                        fetched.retain(|d| readable(d.collection()));
                    }
                    self.refuse_collections(out, unreadable);
                }
                // Counted once the unreadable ones are out: those are not held.
                self.fetched_ids += r.fetched.as_ref().map_or(0, Vec::len) as u64;
                out.actions.push(Action::Reconcile(r));
            }
            Message::Sync(s) if s.items.len() > MAX_SYNC_ITEMS => {
                let msg = format!("at most {MAX_SYNC_ITEMS} items per Sync frame");
                self.refuse(out, ErrorCode::LIMIT_EXCEEDED, &msg, None);
            }
            Message::Sync(s)
                if s.items.iter().any(|i| !i.message.is_empty())
                    && self.payload_wait(now_ms).is_some() =>
            {
                // Inflating and walking operations cost CPU that the wire bytes do not show:
                // each has an allowance per connection, and a frame is checked only when a
                // whole frame's budget of both is there to spend.
                let wait = self.payload_wait(now_ms);
                self.refuse(
                    out,
                    ErrorCode::RATE_LIMITED,
                    "inflation rate exceeded",
                    wait,
                );
            }
            Message::Sync(s) => {
                let mut accepted = Vec::with_capacity(s.items.len());
                // The frame's payloads share one budget: checked here, before Automerge
                // decodes them (here, and again in the hub).
                let mut budget = Budget::new(self.payload_limits);
                for item in s.items {
                    let collection = item.doc.collection();
                    let refusal = if !self.grants.can_read(collection) {
                        Some((
                            ErrorCode::FORBIDDEN,
                            format!("no read grant for collection {collection}"),
                        ))
                    } else {
                        match SyncMessage::decode(&item.message) {
                            Err(e) => Some((
                                ErrorCode::BAD_DOCUMENT,
                                format!("{}: not an Automerge sync message: {e}", item.doc),
                            )),
                            Ok(m)
                                if !m.changes.is_empty() && !self.grants.can_write(collection) =>
                            {
                                Some((
                                    ErrorCode::FORBIDDEN,
                                    format!("no write grant for collection {collection}"),
                                ))
                            }
                            Ok(m) => check_sync(&m, &mut budget)
                                .err()
                                .map(|(code, why)| (code, format!("{}: {why}", item.doc))),
                        }
                    };
                    match refusal {
                        Some((code, msg)) => self.refuse_item(out, code, &msg, item.doc),
                        None => accepted.push(item),
                    }
                }
                self.inflation.charge(budget.inflated() as u64, now_ms);
                self.ops.charge(budget.ops(), now_ms);
                if !accepted.is_empty() {
                    out.actions.push(Action::Sync(accepted));
                }
            }
            Message::Fetch(f)
                if f.docs.len()
                    > usize::try_from(self.limits.max_docs_per_subscription)
                        .unwrap_or(usize::MAX) =>
            {
                let msg = format!(
                    "at most {} documents per fetch",
                    self.limits.max_docs_per_subscription
                );
                self.refuse(out, ErrorCode::LIMIT_EXCEEDED, &msg, None);
            }
            Message::Fetch(mut f) => {
                // Collections the token cannot read are refused alone; the rest is fetched.
                let mut unreadable: Vec<Collection> = f
                    .docs
                    .iter()
                    .map(|d| d.collection().clone())
                    .filter(|c| !self.grants.can_read(c))
                    .collect();
                unreadable.sort();
                unreadable.dedup();
                f.docs.retain(|d| self.grants.can_read(d.collection()));
                self.refuse_collections(out, unreadable);
                // A document already on its way is not queued twice.
                let docs: Vec<DocId> = f
                    .docs
                    .into_iter()
                    .filter(|d| !self.downlink.has_queued(d))
                    .collect();
                // In parts of at most FETCH_TURN_DOCS: each part is one hub turn, so
                // other sessions and tenants get turns between the parts of a large
                // fetch. Answered once, by the last part, even when empty: the device
                // counts the answers.
                let mut parts: Vec<Vec<DocId>> = docs
                    .chunks(FETCH_TURN_DOCS)
                    .map(<[DocId]>::to_vec)
                    .collect();
                let last = parts.pop().unwrap_or_default();
                out.actions.extend(parts.into_iter().map(Action::FetchPart));
                out.actions.push(Action::Fetch(last));
            }
            Message::Ephemeral(e) if !self.grants.can_read(e.doc.collection()) => {
                self.refuse_collections(out, vec![e.doc.collection().clone()]);
            }
            Message::Ephemeral(e) if e.payload.len() > MAX_EPHEMERAL_BYTES => {
                let msg = format!("ephemeral payloads are at most {MAX_EPHEMERAL_BYTES} bytes");
                self.refuse(out, ErrorCode::LIMIT_EXCEEDED, &msg, None);
            }
            Message::Ephemeral(mut e) => {
                // Fanned out to every device of the document: its rate is bounded per sender,
                // below the frame rate (presence and cursors need a few per second).
                match self.ephemerals.take(1, now_ms) {
                    Ok(()) => {
                        e.from = Some(self.identity.device);
                        out.actions.push(Action::Ephemeral(e));
                    }
                    Err(retry_after_ms) => self.refuse(
                        out,
                        ErrorCode::RATE_LIMITED,
                        "ephemeral rate limit exceeded",
                        Some(retry_after_ms),
                    ),
                }
            }
            Message::UpdateProfile(p) => {
                // A new bandwidth takes effect with the next frame, before the hub replans.
                self.downlink
                    .set_rate(p.profile.download_bytes_per_s, now_ms);
                self.profile = Some(p.profile.clone());
                out.actions.push(Action::UpdateProfile(p.profile));
                // Turned metered mid-transfer: what is queued and now held back stays here.
                let unsent = self.take_back();
                if !unsent.is_empty() {
                    out.actions.push(Action::Unsent(unsent));
                }
            }
            Message::RefreshToken(t) => out.actions.push(Action::VerifyToken(t.token)),
            Message::Error(mut e) => {
                // Logged, so bounded and escaped (no forged lines), and a strike: a client has
                // few reasons to report errors, and none to flood the log with them.
                e.message = loggable(&e.message);
                out.actions.push(Action::ClientError(e));
                self.strike(out, close_code::LIMITS);
            }
            Message::Hello(_)
            | Message::Welcome(_)
            | Message::Plan(_)
            | Message::Ack(_)
            | Message::PlanDone(_) => {
                let msg = "this message is sent by the relay, not to it";
                self.refuse(out, ErrorCode::OUT_OF_ORDER, msg, None);
            }
        }
    }

    /// Refuses each of `collections` (named by a request, outside the read grant) alone: one
    /// `FORBIDDEN` naming it, saying only what the client itself named. No strike: a device
    /// whose grants narrowed keeps naming what it used to read, and the rest of its request is
    /// served. One request gets at most [`MAX_REFUSED_COLLECTIONS`] such errors: past them
    /// (a request naming thousands of unreadable collections, which no honest device sends)
    /// the rest are left out unanswered, and that counts a strike.
    fn refuse_collections(&mut self, out: &mut Output, collections: Vec<Collection>) {
        if collections.len() > MAX_REFUSED_COLLECTIONS {
            self.strike(out, close_code::LIMITS);
        }
        for collection in collections.into_iter().take(MAX_REFUSED_COLLECTIONS) {
            let mut error = error(
                ErrorCode::FORBIDDEN,
                &format!("no read grant for collection {collection}"),
                None,
            );
            if let Message::Error(e) = &mut error {
                e.collection = Some(collection);
            }
            out.send.push(error);
        }
    }

    /// Refuses one `Sync` item: the error names the document, so the client stops waiting
    /// for its acknowledgement; the rest of the frame goes on. No strike: a device whose write
    /// grant was revoked resends its pending documents on every connection, and must not be
    /// disconnected for it (rates bound what it can send).
    fn refuse_item(&mut self, out: &mut Output, code: ErrorCode, message: &str, doc: DocId) {
        let mut error = error(code, message, None);
        if let Message::Error(e) = &mut error {
            e.doc = Some(doc);
        }
        out.send.push(error);
    }

    /// Answers a violation with an error frame, and closes after too many.
    fn refuse(
        &mut self,
        out: &mut Output,
        code: ErrorCode,
        message: &str,
        retry_after_ms: Option<u64>,
    ) {
        out.send.push(error(code, message, retry_after_ms));
        let close = if code == ErrorCode::BAD_FRAME || code == ErrorCode::OUT_OF_ORDER {
            close_code::PROTOCOL_ERROR
        } else {
            close_code::LIMITS
        };
        self.strike(out, close);
    }

    /// Counts a strike; at [`MAX_STRIKES`] the session closes with `code`.
    fn strike(&mut self, out: &mut Output, code: u16) {
        self.strikes += 1;
        if self.strikes >= MAX_STRIKES && out.close.is_none() {
            self.close(out, code, "too many errors");
        }
    }

    fn close(&mut self, out: &mut Output, code: u16, reason: &str) {
        self.phase = Phase::Closed;
        out.close = Some(Close {
            code,
            reason: reason.to_owned(),
        });
    }
}

/// Longest client-supplied text the relay logs, in characters.
pub const MAX_LOGGED_CHARS: usize = 256;

/// Client-supplied text made safe to log: control characters (newlines, escapes) escaped, so
/// that it cannot forge log lines or terminal output, and cut after [`MAX_LOGGED_CHARS`] (of
/// the escaped text).
pub fn loggable(text: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for c in text.chars() {
        if chars >= MAX_LOGGED_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\\' {
            for escaped in c.escape_default() {
                out.push(escaped);
                chars += 1;
            }
        } else {
            out.push(c);
            chars += 1;
        }
    }
    out
}

/// Refuses a sync message the hub would refuse for what it is (not for how it fits the
/// document): a Bloom filter or need list out of bounds, a payload over `budget`, a change that
/// does not decode.
fn check_sync(message: &SyncMessage, budget: &mut Budget) -> Result<(), (ErrorCode, String)> {
    crate::hub::check_message(message).map_err(|e| (ErrorCode::BAD_DOCUMENT, e.to_string()))?;
    let typed = |e: GraphError| match e {
        GraphError::OverLimit(why) => (ErrorCode::LIMIT_EXCEEDED, why),
        other => (ErrorCode::BAD_DOCUMENT, other.to_string()),
    };
    for chunk in message.changes.iter() {
        crate::hub::check_payload(chunk, budget).map_err(typed)?;
    }
    for chunk in message.changes.iter() {
        crate::hub::parse_checked(chunk).map_err(typed)?;
    }
    Ok(())
}

fn error(code: ErrorCode, message: &str, retry_after_ms: Option<u64>) -> Message {
    Message::Error(Error {
        code,
        message: message.to_owned(),
        retry_after_ms,
        doc: None,
        collection: None,
    })
}
