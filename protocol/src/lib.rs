//! Syncline's shared vocabulary: the identifiers and enums that the SDK and the relay exchange.
//!
//! This crate has no I/O and no async runtime; it is the one place that defines what a valid
//! [`Collection`], [`DocId`] or [`DeviceId`] is, so that both sides parse input once and then
//! carry the validated type around ("parse, don't re-check"), and the wire protocol of
//! `docs/PROTOCOL.md`: the [`messages`] and their CBOR [`frame`]s.
//!
//! A client opens a session with `Hello`; the relay answers `Welcome`. Each frame is one
//! binary WebSocket message:
//!
//! ```
//! use syncline_protocol::messages::{DeviceClass, Feature, Hello, Limits, Profile, Welcome};
//! use syncline_protocol::{frame, DocId, Message, PROTOCOL_VERSION};
//!
//! // The client declares what it speaks and what it is.
//! let profile = Profile {
//!     class: DeviceClass::Phone,
//!     storage_budget_bytes: Some(1 << 30),
//!     download_bytes_per_s: None,
//!     upload_bytes_per_s: None,
//!     metered: true,
//!     realtime: true,
//!     metered_max_doc_bytes: None,
//! };
//! let hello = Message::Hello(Hello {
//!     versions: vec![PROTOCOL_VERSION],
//!     compression: vec![0],
//!     profile,
//!     client: "syncline/0.1.0".into(),
//!     features: vec![Feature::PlanDone.code()],
//! });
//! let on_the_wire = frame::encode(&hello);
//!
//! // The relay decodes it, refusing anything over its frame limit before parsing.
//! let Message::Hello(received) = frame::decode(&on_the_wire, 16 << 20)? else { unreachable!() };
//! assert!(received.profile.metered);
//!
//! // ... and answers with the version both speak and its limits.
//! let welcome = Message::Welcome(Welcome {
//!     version: PROTOCOL_VERSION,
//!     compression: 0,
//!     session: "s-1".into(),
//!     server_time_ms: 0,
//!     limits: Limits {
//!         max_frame_bytes: 16 << 20,
//!         max_frames_per_s: 1000,
//!         max_bytes_per_s: 64 << 20,
//!         max_docs_per_subscription: 100_000,
//!         idle_timeout_ms: 60_000,
//!     },
//!     epoch: Some("5f2c0e9a41b7d3c8".into()),
//!     features: vec![Feature::PlanDone.code()],
//! });
//! assert_eq!(frame::decode(&frame::encode(&welcome), 16 << 20)?, welcome);
//!
//! // Identifiers are validated once, when parsed.
//! let id: DocId = "todos/0193b2f4".parse()?;
//! assert_eq!(id.collection().as_str(), "todos");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bucket;
mod cbor_ids;
pub mod close_code;
pub mod frame;
mod heads;
mod ids;
pub mod messages;
pub mod payload;
mod priority;
#[cfg(feature = "automerge")]
pub mod sync_state;

pub use bucket::{Pacer, TokenBucket};
pub use frame::{Compression, FrameError};
pub use heads::{Hash, Heads};
pub use ids::{Collection, DeviceId, DocId, IdError};
pub use messages::{Message, PROTOCOL_VERSION};
pub use payload::{PayloadError, PayloadLimits};
pub use priority::{ParsePriorityError, Priority};
