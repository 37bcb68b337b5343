//! Frames: how a [`Message`] travels in one binary WebSocket message.
//!
//! ```text
//! frame = flags:u8  cbor-array(2)[ type:uint, body:map ]
//! ```
//! `flags` is 0 in protocol version 1 (its bits are reserved for negotiated compression).
//! Decoding is total: any byte string gives a message or a [`FrameError`], never a panic; a
//! frame longer than the caller's limit is refused before any of it is parsed, and nothing is
//! allocated from a length the input claims but does not contain.

use minicbor::{Decoder, Encoder};

use crate::messages::*;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Longer than the receiver's limit; nothing was parsed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Empty input.
    #[error("empty frame")]
    Empty,
    /// Reserved flag bits set.
    #[error("unsupported frame flags {0:#04x}")]
    Flags(u8),
    /// A message type this receiver does not know (from a newer peer).
    #[error("unknown message type {0}")]
    UnknownType(u64),
    /// The CBOR does not decode as the message its type names.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encodes `message` as a frame.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut out = vec![0u8];
    let mut e = Encoder::new(&mut out);
    let body = e.array(2).and_then(|e| e.u32(message.type_code()));
    let body = body.and_then(|e| match message {
        Message::Hello(m) => e.encode(m),
        Message::Welcome(m) => e.encode(m),
        Message::Subscribe(m) => e.encode(m),
        Message::Reconcile(m) => e.encode(m),
        Message::Plan(m) => e.encode(m),
        Message::Sync(m) => e.encode(m),
        Message::Ack(m) => e.encode(m),
        Message::UpdateProfile(m) => e.encode(m),
        Message::RefreshToken(m) => e.encode(m),
        Message::Fetch(m) => e.encode(m),
        Message::Ephemeral(m) => e.encode(m),
        Message::Error(m) => e.encode(m),
    });
    // Writing to a Vec cannot fail and every message type encodes without error.
    body.expect("encoding into a Vec is infallible");
    out
}

/// Decodes one frame of at most `max_len` bytes.
///
/// # Errors
/// A [`FrameError`] saying what is wrong; never panics, whatever the input.
pub fn decode(bytes: &[u8], max_len: usize) -> Result<Message, FrameError> {
    if bytes.len() > max_len {
        return Err(FrameError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let (&flags, cbor) = bytes.split_first().ok_or(FrameError::Empty)?;
    if flags != 0 {
        return Err(FrameError::Flags(flags));
    }
    let malformed = |e: minicbor::decode::Error| FrameError::Malformed(e.to_string());
    let mut d = Decoder::new(cbor);
    if d.array().map_err(malformed)? != Some(2) {
        return Err(FrameError::Malformed("expected a 2-element array".into()));
    }
    let message = match d.u64().map_err(malformed)? {
        1 => Message::Hello(d.decode().map_err(malformed)?),
        2 => Message::Welcome(d.decode().map_err(malformed)?),
        3 => Message::Subscribe(d.decode().map_err(malformed)?),
        4 => Message::Reconcile(d.decode().map_err(malformed)?),
        5 => Message::Plan(d.decode().map_err(malformed)?),
        6 => Message::Sync(d.decode().map_err(malformed)?),
        7 => Message::Ack(d.decode().map_err(malformed)?),
        8 => Message::UpdateProfile(d.decode().map_err(malformed)?),
        9 => Message::RefreshToken(d.decode().map_err(malformed)?),
        10 => Message::Fetch(d.decode().map_err(malformed)?),
        11 => Message::Ephemeral(d.decode().map_err(malformed)?),
        12 => Message::Error(d.decode().map_err(malformed)?),
        other => return Err(FrameError::UnknownType(other)),
    };
    if d.position() != cbor.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            cbor.len() - d.position()
        )));
    }
    Ok(message)
}
