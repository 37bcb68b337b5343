//! Syncline's shared vocabulary: the identifiers and enums that the SDK and the relay exchange.
//!
//! This crate has no I/O and no async runtime; it is the one place that defines what a valid
//! [`Collection`], [`DocId`] or [`DeviceId`] is, so that both sides parse input once and then
//! carry the validated type around ("parse, don't re-check"). The CBOR wire messages of
//! `docs/PROTOCOL.md` will live here too when the relay lands.
//!
//! ```
//! use syncline_protocol::{Collection, DocId, Priority};
//!
//! let id: DocId = "todos/0193b2f4".parse()?;
//! assert_eq!(id.collection(), &Collection::new("todos")?);
//! assert_eq!(id.to_string(), "todos/0193b2f4");
//! assert!(Priority::Critical > Priority::Low);
//! # Ok::<(), syncline_protocol::IdError>(())
//! ```

mod ids;
mod priority;

pub use ids::{Collection, DeviceId, DocId, IdError};
pub use priority::{ParsePriorityError, Priority};
