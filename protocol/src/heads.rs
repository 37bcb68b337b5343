//! `Hash` and `Heads` as they cross the wire: 32-byte Automerge change hashes, independent of
//! the automerge crate so that this crate stays a small, I/O-free vocabulary.

use std::fmt;

use minicbor::decode::{self, Decoder};
use minicbor::encode::{self, Encoder, Write};
use minicbor::{Decode, Encode};

/// One Automerge change hash (SHA-256, 32 bytes). Encoded as a 32-byte CBOR byte string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash(pub [u8; 32]);

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl<C> Encode<C> for Hash {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        _: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        e.bytes(&self.0)?.ok()
    }
}

impl<'b, C> Decode<'b, C> for Hash {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, decode::Error> {
        let at = d.position();
        let bytes = d.bytes()?;
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| decode::Error::message("a change hash is 32 bytes").at(at))
    }
}

/// A document state: the hashes of the changes nothing else depends on yet. Kept sorted and
/// free of duplicates, so equal states encode to equal bytes. Encoded as an array of [`Hash`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Heads(Vec<Hash>);

impl Heads {
    /// Builds heads from any hashes, sorting and de-duplicating them.
    pub fn new(mut hashes: Vec<Hash>) -> Self {
        hashes.sort_unstable();
        hashes.dedup();
        Self(hashes)
    }

    /// The hashes, sorted.
    pub fn as_slice(&self) -> &[Hash] {
        &self.0
    }
}

impl<C> Encode<C> for Heads {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        ctx: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        self.0.encode(e, ctx)
    }
}

impl<'b, C> Decode<'b, C> for Heads {
    fn decode(d: &mut Decoder<'b>, ctx: &mut C) -> Result<Self, decode::Error> {
        Vec::<Hash>::decode(d, ctx).map(Self::new)
    }
}
