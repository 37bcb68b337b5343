//! CBOR encodings of the identifier types: collections and document ids as text (validated on
//! decode), device ids as 16-byte strings, priorities as their numeric code.

use minicbor::decode::{self, Decoder};
use minicbor::encode::{self, Encoder, Write};
use minicbor::{Decode, Encode};

use crate::{Collection, DeviceId, DocId, Priority};

impl<C> Encode<C> for Collection {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        _: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        e.str(self.as_str())?.ok()
    }
}

impl<'b, C> Decode<'b, C> for Collection {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, decode::Error> {
        let at = d.position();
        Collection::new(d.str()?).map_err(|e| decode::Error::message(e).at(at))
    }
}

impl<C> Encode<C> for DocId {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        _: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        e.str(&self.to_string())?.ok()
    }
}

impl<'b, C> Decode<'b, C> for DocId {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, decode::Error> {
        let at = d.position();
        d.str()?
            .parse()
            .map_err(|e: crate::IdError| decode::Error::message(e).at(at))
    }
}

impl<C> Encode<C> for DeviceId {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        _: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        e.bytes(self.as_bytes())?.ok()
    }
}

impl<'b, C> Decode<'b, C> for DeviceId {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, decode::Error> {
        let at = d.position();
        DeviceId::try_from_slice(d.bytes()?).map_err(|e| decode::Error::message(e).at(at))
    }
}

impl<C> Encode<C> for Priority {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        _: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        e.u8(self.code())?.ok()
    }
}

impl<'b, C> Decode<'b, C> for Priority {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, decode::Error> {
        let at = d.position();
        Priority::from_code(d.u8()?)
            .ok_or_else(|| decode::Error::message("unknown priority").at(at))
    }
}

/// A CBOR byte string shared, not copied, by every clone of its message (an ephemeral payload
/// fanned out to many devices): `#[cbor(with = "crate::cbor_ids::shared_bytes")]`.
pub(crate) mod shared_bytes {
    use std::sync::Arc;

    use minicbor::decode::{self, Decoder};
    use minicbor::encode::{self, Encoder, Write};

    pub(crate) fn encode<C, W: Write>(
        bytes: &Arc<[u8]>,
        e: &mut Encoder<W>,
        _: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        e.bytes(bytes)?.ok()
    }

    pub(crate) fn decode<C>(d: &mut Decoder<'_>, _: &mut C) -> Result<Arc<[u8]>, decode::Error> {
        Ok(Arc::from(d.bytes()?))
    }
}

/// `PlanEntry.reason`: a code this revision does not know (a newer relay's) decodes as absent,
/// so that a new reason never makes an older client refuse the whole plan.
pub(crate) mod lenient_reason {
    use minicbor::data::Type;
    use minicbor::decode::{self, Decoder};
    use minicbor::encode::{self, Encoder, Write};

    use crate::messages::DeferReason;

    pub fn encode<C, W: Write>(
        reason: &Option<DeferReason>,
        e: &mut Encoder<W>,
        _: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        match reason {
            Some(reason) => e.u8(reason.code())?.ok(),
            None => e.null()?.ok(),
        }
    }

    pub fn decode<C>(d: &mut Decoder<'_>, _: &mut C) -> Result<Option<DeferReason>, decode::Error> {
        match d.datatype()? {
            Type::Null | Type::Undefined => {
                d.skip()?;
                Ok(None)
            }
            _ => {
                let code = d.u64()?;
                Ok(u8::try_from(code).ok().and_then(DeferReason::from_code))
            }
        }
    }
}
