//! Frames: how a [`Message`] travels in one binary WebSocket message.
//!
//! ```text
//! frame = flags:u8  cbor-array(2)[ type:uint, body:map ]
//! ```
//! `flags` bit 0 ([`FLAG_ZSTD`]) set means everything after the flags byte is one zstd frame
//! holding the CBOR; the other bits are reserved and must be 0. A sender compresses only after
//! `Hello` → `Welcome` chose [`Compression::Zstd`], never `Hello` or `Welcome` themselves, only
//! bodies of at least [`COMPRESS_FROM`] bytes, and only when that saves bytes.
//!
//! Decoding is total: any byte string gives a message or a [`FrameError`], never a panic; a
//! frame longer than the caller's limit is refused before any of it is parsed, a compressed
//! body is inflated only up to that same limit (no decompression bomb gets further), and
//! nothing is allocated from a length the input claims but does not contain.

use std::cell::RefCell;
use std::io::Read;

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
    /// A compressed body that does not inflate.
    #[error("corrupt compressed frame: {0}")]
    Compression(String),
    /// A message type this receiver does not know (from a newer peer).
    #[error("unknown message type {0}")]
    UnknownType(u64),
    /// The CBOR does not decode as the message its type names.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Flag bit: the body is compressed with zstd.
pub const FLAG_ZSTD: u8 = 0x01;

/// Bodies shorter than this are sent as they are: compressing them saves too little.
pub const COMPRESS_FROM: usize = 256;

/// zstd's level for frames: fast, and most of the ratio on this kind of data.
const ZSTD_LEVEL: i32 = 3;

/// A frame compression, with its code in `Hello.compression` and `Welcome.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Code 0: bodies as they are.
    #[default]
    None,
    /// Code 1: zstd, for bodies where it saves bytes.
    Zstd,
}

impl Compression {
    /// Every compression this crate implements, preferred first.
    pub const SUPPORTED: [Compression; 2] = [Self::Zstd, Self::None];

    /// The code on the wire.
    pub fn code(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Zstd => 1,
        }
    }

    /// The compression of a code, if this crate implements it.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::None),
            1 => Some(Self::Zstd),
            _ => None,
        }
    }

    /// What a receiver of `offered` (codes, preferred first) picks: the first it implements
    /// among those it `accepts`, else none.
    pub fn negotiate(offered: &[u32], accepts: &[Compression]) -> Self {
        offered
            .iter()
            .filter_map(|&code| Self::from_code(code))
            .find(|c| accepts.contains(c))
            .unwrap_or(Self::None)
    }
}

/// Encodes `message` as an uncompressed frame.
pub fn encode(message: &Message) -> Vec<u8> {
    encode_with(message, Compression::None)
}

/// Encodes `message` as a frame compressed with `compression` where that applies: not for
/// `Hello` or `Welcome`, not for bodies under [`COMPRESS_FROM`] bytes, and not when the
/// compressed body would be no smaller.
pub fn encode_with(message: &Message, compression: Compression) -> Vec<u8> {
    let plain = encode_plain(message);
    // The body is everything after the flags byte.
    let eligible =
        !matches!(message, Message::Hello(_) | Message::Welcome(_)) && plain.len() > COMPRESS_FROM;
    if compression == Compression::Zstd
        && eligible
        && let Some(body) = compress(&plain[1..])
        && body.len() + 1 < plain.len()
    {
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(FLAG_ZSTD);
        out.extend_from_slice(&body);
        return out;
    }
    plain
}

fn encode_plain(message: &Message) -> Vec<u8> {
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
        Message::PlanDone(m) => e.encode(m),
    });
    // Writing to a Vec cannot fail and every message type encodes without error.
    body.expect("encoding into a Vec is infallible");
    out
}

/// The largest zstd window a frame may ask its reader to hold (16 MiB, the default frame limit):
/// a bigger one is refused before it is allocated. Frames this crate compresses use far less
/// (level 3 windows are at most 2 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

thread_local! {
    /// Each thread's zstd contexts, reused from frame to frame: making one costs more than
    /// compressing a small frame (its tables are allocated and the CPU probed each time).
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

/// Compresses a frame body at [`ZSTD_LEVEL`] with this thread's context; `None` if zstd
/// failed (the frame then goes uncompressed).
fn compress(body: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.try_borrow_mut().ok()?;
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        slot.as_mut()?.compress(body).ok()
    })
}

/// Inflates a zstd body with this thread's context, refusing to produce more than `max_len`
/// bytes or to hold a window over 2^[`ZSTD_WINDOW_LOG_MAX`] bytes.
fn inflate(body: &[u8], max_len: usize) -> Result<Vec<u8>, FrameError> {
    DECOMPRESSOR.with(|slot| {
        let mut slot = slot
            .try_borrow_mut()
            .map_err(|_| FrameError::Compression("the decompressor is busy".into()))?;
        let context = slot.get_or_insert_with(|| {
            let mut context = zstd::zstd_safe::DCtx::create();
            // Setting a valid parameter on a fresh context cannot fail.
            let _ = context.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(
                ZSTD_WINDOW_LOG_MAX,
            ));
            context
        });
        inflate_with(context, body, max_len)
    })
}

fn inflate_with(
    context: &mut zstd::zstd_safe::DCtx<'static>,
    body: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, FrameError> {
    let corrupt = |e: std::io::Error| FrameError::Compression(e.to_string());
    let decoder = zstd::stream::read::Decoder::with_context(body, context);
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    decoder.take(limit).read_to_end(&mut out).map_err(corrupt)?;
    if out.len() > max_len {
        return Err(FrameError::TooLarge {
            len: out.len(),
            max: max_len,
        });
    }
    Ok(out)
}

/// What a malformed message's error adds: the encoding rules a second implementation most
/// often misses (`docs/PROTOCOL.md`, "Encoding").
const ENCODING_HINT: &str = " (messages are CBOR maps with unsigned integer keys, byte strings \
     are untagged, and every field not marked optional is present, even an empty list)";

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
    let (&flags, body) = bytes.split_first().ok_or(FrameError::Empty)?;
    let inflated;
    let cbor = match flags {
        0 => body,
        FLAG_ZSTD => {
            inflated = inflate(body, max_len)?;
            &inflated[..]
        }
        other => return Err(FrameError::Flags(other)),
    };
    let outer = |e: minicbor::decode::Error| {
        FrameError::Malformed(format!("{e} (a frame's body is the array [type, message])"))
    };
    let mut d = Decoder::new(cbor);
    if d.array().map_err(outer)? != Some(2) {
        return Err(FrameError::Malformed(
            "expected the 2-element array [type, message]".into(),
        ));
    }
    let kind = d.u64().map_err(outer)?;
    let malformed = |e: minicbor::decode::Error| {
        FrameError::Malformed(format!(
            "{} message: {e}{ENCODING_HINT}",
            type_name(kind).unwrap_or("unknown")
        ))
    };
    let message = match kind {
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
        13 => Message::PlanDone(d.decode().map_err(malformed)?),
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
