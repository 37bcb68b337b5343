//! The messages of protocol version 1 (`docs/PROTOCOL.md` is the normative text).
//!
//! Every message body is a CBOR map with small integer keys (`#[n(k)]`). A decoder ignores
//! keys it does not know, so a newer peer may add optional fields; a field added later must be
//! an `Option` (or `#[cbor(default)]`) so that older peers may leave it out.

use minicbor::{Decode, Encode};

use crate::{Collection, DeviceId, DocId, Heads, Priority};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Most items one `Sync` frame may carry (both ends batch at most 256): a frame of many tiny
/// items cannot make its receiver keep state for each without bound.
pub const MAX_SYNC_ITEMS: usize = 1024;

/// Most collections one `Subscribe` (or one `Reconcile`'s cursors) may name; a collection named
/// twice counts once (the first wins).
pub const MAX_COLLECTIONS: usize = 1024;

/// Largest ephemeral payload (presence, cursors) a relay forwards.
pub const MAX_EPHEMERAL_BYTES: usize = 4096;

/// Ephemeral messages per second one connection may send: a relay allows bursts of twice as
/// many, a device sends bursts of at most this many, so that it never meets the relay's limit.
pub const MAX_EPHEMERALS_PER_S: u64 = 30;

/// Bytes of changes one Automerge sync message carries at most, either way (a single larger
/// change goes alone): a document's history larger than a frame goes in parts, oldest first,
/// one per exchange.
pub const MAX_MESSAGE_CHANGE_BYTES: usize = 4 << 20;

/// The largest single change a device makes, in operations: half the operations a frame's
/// payloads may declare by default (`PayloadLimits::DEFAULT`, which counts predecessors and
/// the like too), so that a relay with default limits accepts it. A change cannot be split, so
/// the SDK refuses a larger write when it is made, rather than keep a change no relay takes.
pub const MAX_CHANGE_OPS: usize = 1_000_000;

/// The largest single change a device makes, in bytes before compression: a default relay
/// frame (16 MiB) less [`CHANGE_ENVELOPE_BYTES`] for the sync message and frame around it, so
/// that a relay with default limits takes it whatever its content; and half the bytes a
/// frame's payloads may inflate to by default.
pub const MAX_CHANGE_BYTES: usize = (16 << 20) - CHANGE_ENVELOPE_BYTES;

/// Room kept in a frame around a change of [`MAX_CHANGE_BYTES`]: the sync message's heads,
/// needs and Bloom filter, the item and the frame. A relay needs a frame limit of at least
/// `MAX_CHANGE_BYTES + CHANGE_ENVELOPE_BYTES` (16 MiB, its default) to take every change.
pub const CHANGE_ENVELOPE_BYTES: usize = 256 << 10;

/// Longest data epoch (`Welcome.epoch`, `Cursor.epoch`) or position receipt
/// (`Cursor.receipt`) a peer accepts, in bytes.
pub const MAX_EPOCH_BYTES: usize = 64;

/// What kind of device a client is; the relay plans its sync from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(index_only)]
pub enum DeviceClass {
    /// A phone.
    #[n(0)]
    Phone,
    /// A tablet.
    #[n(1)]
    Tablet,
    /// A desktop or laptop.
    #[n(2)]
    Desktop,
    /// A server taking part as a device.
    #[n(3)]
    Server,
}

/// How a subscribed collection is kept on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(index_only)]
pub enum SyncMode {
    /// Keep every document of the collection local.
    #[n(0)]
    Eager,
    /// Keep the list and metadata; fetch a document's content when the app opens it.
    #[n(1)]
    OnDemand,
}

/// A device's declared capabilities (DESIGN §3). Absent bandwidths mean "unknown".
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Profile {
    /// The device class.
    #[n(0)]
    pub class: DeviceClass,
    /// Bytes the device may use for local content.
    #[n(1)]
    pub storage_budget_bytes: Option<u64>,
    /// Download bandwidth, bytes per second.
    #[n(2)]
    pub download_bytes_per_s: Option<u64>,
    /// Upload bandwidth, bytes per second.
    #[n(3)]
    pub upload_bytes_per_s: Option<u64>,
    /// True on a metered network.
    #[n(4)]
    pub metered: bool,
    /// True for realtime push, false for periodic sync.
    #[n(5)]
    pub realtime: bool,
    /// On a metered network, documents whose transfer is larger than this are announced and
    /// deferred (absent: the relay's threshold, 64 KiB unless configured).
    #[n(6)]
    pub metered_max_doc_bytes: Option<u64>,
}

impl Profile {
    /// A device of `class` on an unmetered network, realtime, declaring no storage budget,
    /// bandwidth or metered threshold: the profile to start from.
    pub fn new(class: DeviceClass) -> Self {
        Self {
            class,
            storage_budget_bytes: None,
            download_bytes_per_s: None,
            upload_bytes_per_s: None,
            metered: false,
            realtime: true,
            metered_max_doc_bytes: None,
        }
    }

    /// The metered-network size threshold when neither the device nor the relay sets one.
    pub const DEFAULT_METERED_MAX_DOC_BYTES: u64 = 64 << 10;
}

/// One collection a device subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct CollectionSubscription {
    /// The collection.
    #[n(0)]
    pub collection: Collection,
    /// Its sync priority.
    #[n(1)]
    pub priority: Priority,
    /// Eager or on demand.
    #[n(2)]
    pub mode: SyncMode,
}

/// Client → relay, first frame: the versions and compressions the client speaks, and its
/// capability profile.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Hello {
    /// Protocol versions the client speaks, preferred first.
    #[n(0)]
    pub versions: Vec<u32>,
    /// Compression codes the client accepts, preferred first (0 = none).
    #[n(1)]
    pub compression: Vec<u32>,
    /// The device's capability profile.
    #[n(2)]
    pub profile: Profile,
    /// Client name and version, for logs (`syncline/0.1.0`).
    #[n(3)]
    pub client: String,
    /// Optional protocol features the client understands ([`Feature`] codes); the relay
    /// names in `Welcome.features` those it uses on this connection. Absent: none.
    #[cbor(n(4), default, skip_if = "Vec::is_empty")]
    pub features: Vec<u32>,
}

/// An optional protocol feature, negotiated in `Hello.features` / `Welcome.features`: a relay
/// uses one only with a client that offered it, so older peers on either side keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Code 1: every `Plan` carries an `id`, and a [`PlanDone`] naming it follows once the first
    /// message of every document of its `send` list has been sent.
    PlanDone,
}

impl Feature {
    /// Every feature this crate implements.
    pub const ALL: [Feature; 1] = [Feature::PlanDone];

    /// The code on the wire.
    pub fn code(self) -> u32 {
        match self {
            Self::PlanDone => 1,
        }
    }

    /// The feature of a code, if this crate implements it.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.code() == code)
    }

    /// Whether `codes` (a `Hello.features` or `Welcome.features`) names this feature.
    pub fn named_in(self, codes: &[u32]) -> bool {
        codes.contains(&self.code())
    }
}

/// The relay's limits for this connection.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Limits {
    /// Largest frame accepted, in bytes.
    #[n(0)]
    pub max_frame_bytes: u64,
    /// Frames per second accepted before `RATE_LIMITED`.
    #[n(1)]
    pub max_frames_per_s: u32,
    /// Bytes per second accepted before `RATE_LIMITED`.
    #[n(2)]
    pub max_bytes_per_s: u64,
    /// Documents one subscription may cover.
    #[n(3)]
    pub max_docs_per_subscription: u32,
    /// Milliseconds of silence before the relay closes the connection.
    #[n(4)]
    pub idle_timeout_ms: u64,
}

/// Relay → client, answer to [`Hello`]: the chosen version and compression, and the limits.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Welcome {
    /// The protocol version both will speak.
    #[n(0)]
    pub version: u32,
    /// The compression code both will use (0 = none).
    #[n(1)]
    pub compression: u32,
    /// The relay's id for this session, for logs.
    #[n(2)]
    pub session: String,
    /// The relay's clock, milliseconds since the Unix epoch.
    #[n(3)]
    pub server_time_ms: u64,
    /// This connection's limits.
    #[n(4)]
    pub limits: Limits,
    /// The epoch of the relay's data: every sequence number the relay shows on this connection
    /// (plan cursors, acknowledgements) is one of this epoch. A relay starts a new epoch each
    /// time it opens its data, so a copy restored from an older backup can tell the positions
    /// it gave from those a lost copy gave (`docs/PROTOCOL.md`, "Epochs"). Absent: the relay
    /// does not keep epochs, and positions are not checked.
    #[n(5)]
    pub epoch: Option<String>,
    /// The optional features ([`Feature`] codes) the relay uses on this connection: those of
    /// `Hello.features` it implements. Absent: none.
    #[cbor(n(6), default, skip_if = "Vec::is_empty")]
    pub features: Vec<u32>,
}

/// Client → relay: the collections to sync (replaces the previous subscription).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Subscribe {
    /// The collections, each with priority and mode.
    #[n(0)]
    pub collections: Vec<CollectionSubscription>,
}

/// A position in a collection's change sequence.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Cursor {
    /// The collection.
    #[n(0)]
    pub collection: Collection,
    /// The last sequence number seen.
    #[n(1)]
    pub seq: u64,
    /// The epoch of the relay's data in which the relay showed `seq`: set by the relay in
    /// its plans and acknowledgements, returned by the device in `Reconcile`; absent from
    /// relays before epochs (a device then records its `Welcome.epoch`, if any).
    #[n(2)]
    pub epoch: Option<String>,
    /// The relay's receipt for this position (an opaque string it gives with the position
    /// and the device returns as is): proof that the relay showed this device this position,
    /// which a relay restored from an older backup checks before it lets the device send
    /// back changes by other devices that it lost (`docs/PROTOCOL.md`, "Epochs").
    #[n(3)]
    pub receipt: Option<String>,
}

/// A document and its heads.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct DocHeads {
    /// The document.
    #[n(0)]
    pub doc: DocId,
    /// Its heads on the sender.
    #[n(1)]
    pub heads: Heads,
}

/// Client → relay: where the client's view of each collection ends, and which documents it
/// changed since it last synced.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Reconcile {
    /// Per-collection cursors.
    #[n(0)]
    pub cursors: Vec<Cursor>,
    /// Documents changed locally, with their heads.
    #[n(1)]
    pub changed: Vec<DocHeads>,
    /// Documents of on-demand collections whose content the device holds: the relay keeps
    /// them in sync like eager ones. Absent or empty: none.
    #[n(2)]
    pub fetched: Option<Vec<DocId>>,
    /// Per collection, the highest sequence number the relay acknowledged for this device's
    /// own changes (`AckItem.seq`), with its epoch: the relay checks that it still holds it.
    /// Absent or empty: none.
    #[n(3)]
    pub acked: Option<Vec<Cursor>>,
}

/// Why the relay defers a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(index_only)]
pub enum DeferReason {
    /// Too large for a metered network.
    #[n(0)]
    Metered,
    /// A low-priority collection on a metered network.
    #[n(1)]
    LowPriority,
    /// An on-demand collection: fetched when the app opens it.
    #[n(2)]
    OnDemand,
    /// Over the device's storage budget.
    #[n(3)]
    StorageBudget,
}

impl DeferReason {
    /// The stable numeric code used on the wire and in storage (0 metered, 1 low priority,
    /// 2 on demand, 3 storage budget).
    pub const fn code(self) -> u8 {
        match self {
            Self::Metered => 0,
            Self::LowPriority => 1,
            Self::OnDemand => 2,
            Self::StorageBudget => 3,
        }
    }

    /// The reason for a numeric code, if it is one.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Metered),
            1 => Some(Self::LowPriority),
            2 => Some(Self::OnDemand),
            3 => Some(Self::StorageBudget),
            _ => None,
        }
    }
}

/// One document in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PlanEntry {
    /// The document.
    #[n(0)]
    pub doc: DocId,
    /// Its priority.
    #[n(1)]
    pub priority: Priority,
    /// Approximate bytes to transfer.
    #[n(2)]
    pub bytes: u64,
    /// For a deferred document, why (absent for unknown reasons from newer relays: a receiver
    /// decodes a reason code it does not know as absent).
    #[cbor(n(3), with = "crate::cbor_ids::lenient_reason")]
    pub reason: Option<DeferReason>,
    /// When the relay last stored a change to it, milliseconds since the Unix epoch (the
    /// relay's clock), if known.
    #[n(4)]
    pub changed_ms: Option<u64>,
}

/// Relay → client: what will be sent, in order, and what is deferred. The answer to each
/// [`Reconcile`] (with the cursors reached), and sent again, without cursors, whenever the
/// relay's plan for the device changes on the live connection (a profile or subscription
/// change, a fetch, a deferred change pushed). Plans add up: `send` entries are on their way
/// (and no longer deferred), `deferred` entries are announced and held back.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Plan {
    /// Documents that will be synced, in the order they will come.
    #[n(0)]
    pub send: Vec<PlanEntry>,
    /// Documents announced but not sent now.
    #[n(1)]
    pub deferred: Vec<PlanEntry>,
    /// The cursors the client reaches once the plan is done.
    #[n(2)]
    pub cursors: Vec<Cursor>,
    /// True for a plan the relay sent of its own accord on the live connection (its plan for
    /// the device changed); false for the answer to a `Reconcile`, of which there is exactly
    /// one per `Reconcile`, in order.
    #[cbor(n(3), default, skip_if = "is_false")]
    pub update: bool,
    /// True for the answer to a `Fetch`: exactly one per `Fetch`, in order, listing in `send`
    /// the requested documents the relay holds (the others it does not).
    #[cbor(n(4), default, skip_if = "is_false")]
    pub fetch: bool,
    /// In the answer to a `Reconcile`: collections in which the device showed a position
    /// (cursor or acknowledgement) this relay's data does not hold: the relay was restored
    /// from an older backup and lost changes it had acknowledged. The relay planned them from
    /// the start; the device forgets what this relay acknowledged in them and sends every
    /// document of them again (`docs/PROTOCOL.md`, "Epochs").
    #[cbor(n(5), default, skip_if = "Vec::is_empty")]
    pub reset: Vec<Collection>,
    /// With [`Feature::PlanDone`] in use: the plan's number on this connection (1, 2, ... in
    /// the order the relay sends its plans), named by the [`PlanDone`] that closes it.
    #[n(6)]
    pub id: Option<u64>,
}

/// Relay → client, with [`Feature::PlanDone`] in use: every document of the `send` list of the
/// plan numbered `plan` has had its first message sent (on this connection, before this
/// frame). A planned document that got no message by then was dropped (its collection was
/// unsubscribed, the grants narrowed, or it was taken back for a metered network and is
/// announced as deferred): it is not synced by this plan.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PlanDone {
    /// The `Plan.id` of the plan done.
    #[n(0)]
    pub plan: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One document's Automerge sync message.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SyncItem {
    /// The document.
    #[n(0)]
    pub doc: DocId,
    /// An encoded Automerge sync message.
    #[cbor(n(1), with = "minicbor::bytes")]
    pub message: Vec<u8>,
    /// The document's priority as its app set it, sent by a device with the changes it
    /// writes; the relay keeps it and plans by it (absent: unchanged, `normal` for a new
    /// document). A relay sends none.
    #[n(2)]
    pub priority: Option<Priority>,
}

/// Either way: a batch of Automerge sync messages, many documents per frame.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Sync {
    /// The messages.
    #[n(0)]
    pub items: Vec<SyncItem>,
    /// Relay → client, on a push (other devices' changes sent of the relay's own accord):
    /// per collection of `items`, the position the relay holds them at durably, with its
    /// receipt for this device, as in [`Ack::positions`]. The device keeps the highest per
    /// collection and shows it in its next `Reconcile.acked`, so that after a restore from an
    /// older backup it may send those changes back although it did not write them. Absent on
    /// answers; a relay ignores it from a client.
    #[n(1)]
    pub positions: Option<Vec<Cursor>>,
}

/// One durable acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct AckItem {
    /// The document.
    #[n(0)]
    pub doc: DocId,
    /// The heads the relay has made durable.
    #[n(1)]
    pub heads: Heads,
    /// The document's sequence number in its collection (of the connection's epoch) once
    /// these heads are stored; absent from relays that send it only when it advanced.
    #[n(2)]
    pub seq: Option<u64>,
}

/// Relay → client: these documents are durable up to these heads.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Ack {
    /// The acknowledgements.
    #[n(0)]
    pub items: Vec<AckItem>,
    /// Per collection of `items`, the highest sequence number among them, with the relay's
    /// receipt: the device keeps it, and shows it in its next `Reconcile.acked`.
    #[n(1)]
    pub positions: Option<Vec<Cursor>>,
}

/// Client → relay: the profile changed (the phone left Wi-Fi).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct UpdateProfile {
    /// The new profile.
    #[n(0)]
    pub profile: Profile,
}

/// Client → relay: a fresh token for the live connection.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct RefreshToken {
    /// The token (a JWT).
    #[n(0)]
    pub token: String,
}

/// Client → relay: send these (deferred or on-demand) documents now.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Fetch {
    /// The documents.
    #[n(0)]
    pub docs: Vec<DocId>,
}

/// Either way: a message for the devices currently on a document (presence); never stored.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Ephemeral {
    /// The document it concerns.
    #[n(0)]
    pub doc: DocId,
    /// The app's payload (at most [`MAX_EPHEMERAL_BYTES`]), shared by every copy of the
    /// message a relay fans out.
    #[cbor(n(1), with = "crate::cbor_ids::shared_bytes")]
    pub payload: std::sync::Arc<[u8]>,
    /// The sending device (set by the relay when it forwards).
    #[n(2)]
    pub from: Option<DeviceId>,
}

/// A machine-readable error code. Unknown codes are kept, so a newer relay's codes reach an
/// older client intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(transparent)]
pub struct ErrorCode(#[n(0)] pub u16);

impl ErrorCode {
    /// The frame did not decode.
    pub const BAD_FRAME: Self = Self(1);
    /// The frame's message type is unknown to the receiver.
    pub const UNKNOWN_MESSAGE: Self = Self(2);
    /// No protocol version in common.
    pub const UNSUPPORTED_VERSION: Self = Self(3);
    /// The token is missing, invalid or expired.
    pub const UNAUTHORIZED: Self = Self(4);
    /// The grants do not allow this.
    pub const FORBIDDEN: Self = Self(5);
    /// A frame over the size limit.
    pub const FRAME_TOO_LARGE: Self = Self(6);
    /// Over the frame or byte rate; retry after `retry_after_ms`.
    pub const RATE_LIMITED: Self = Self(7);
    /// Over another limit (documents per subscription, ...).
    pub const LIMIT_EXCEEDED: Self = Self(8);
    /// An Automerge message that does not apply to the document.
    pub const BAD_DOCUMENT: Self = Self(9);
    /// A message that is not valid in the session's current state (`Sync` before `Hello`).
    pub const OUT_OF_ORDER: Self = Self(10);
    /// The relay failed; retry after `retry_after_ms`.
    pub const INTERNAL: Self = Self(11);
    /// The relay cannot store this `Sync` item's changes now (its storage is full); nothing of
    /// them was stored. The sender keeps them and sends them again after `retry_after_ms`; the
    /// connection, and everything that only reads, goes on.
    pub const STORAGE_FULL: Self = Self(12);
}

/// Either way: something went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Error {
    /// What went wrong, for programs.
    #[n(0)]
    pub code: ErrorCode,
    /// What went wrong, for people.
    #[n(1)]
    pub message: String,
    /// When to try again, if retrying can help.
    #[n(2)]
    pub retry_after_ms: Option<u64>,
    /// The document the error is about, when it is about one `Sync` item: the rest of the
    /// frame was handled, and the sender stops waiting for this document's acknowledgement.
    #[n(3)]
    pub doc: Option<DocId>,
    /// The collection the error is about, when a request (`Subscribe`, `Reconcile`, `Fetch`,
    /// `Ephemeral`) named one the token cannot read: refused for that collection only, the rest
    /// of the request was served.
    #[n(4)]
    pub collection: Option<Collection>,
}

/// Every message of protocol version 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Subscribe`].
    Subscribe(Subscribe),
    /// See [`Reconcile`].
    Reconcile(Reconcile),
    /// See [`Plan`].
    Plan(Plan),
    /// See [`Sync`].
    Sync(Sync),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`UpdateProfile`].
    UpdateProfile(UpdateProfile),
    /// See [`RefreshToken`].
    RefreshToken(RefreshToken),
    /// See [`Fetch`].
    Fetch(Fetch),
    /// See [`Ephemeral`].
    Ephemeral(Ephemeral),
    /// See [`Error`].
    Error(Error),
    /// See [`PlanDone`].
    PlanDone(PlanDone),
}

impl Message {
    /// The message's type code on the wire.
    pub fn type_code(&self) -> u32 {
        match self {
            Self::Hello(_) => 1,
            Self::Welcome(_) => 2,
            Self::Subscribe(_) => 3,
            Self::Reconcile(_) => 4,
            Self::Plan(_) => 5,
            Self::Sync(_) => 6,
            Self::Ack(_) => 7,
            Self::UpdateProfile(_) => 8,
            Self::RefreshToken(_) => 9,
            Self::Fetch(_) => 10,
            Self::Ephemeral(_) => 11,
            Self::Error(_) => 12,
            Self::PlanDone(_) => 13,
        }
    }

    /// The message's name, for logs and metrics labels.
    pub fn name(&self) -> &'static str {
        type_name(u64::from(self.type_code())).unwrap_or("unknown")
    }
}

/// The name of message type `code`, for logs, metrics and errors (`None`: not a type of this
/// protocol revision).
pub fn type_name(code: u64) -> Option<&'static str> {
    Some(match code {
        1 => "hello",
        2 => "welcome",
        3 => "subscribe",
        4 => "reconcile",
        5 => "plan",
        6 => "sync",
        7 => "ack",
        8 => "update_profile",
        9 => "refresh_token",
        10 => "fetch",
        11 => "ephemeral",
        12 => "error",
        13 => "plan_done",
        _ => return None,
    })
}
