//! `Heads`: the set of change hashes that identifies one state of a document.

use std::fmt;
use std::str::FromStr;

pub use automerge::ChangeHash;

use crate::{Error, Result};

/// The heads of a document: the hashes of the changes nothing else depends on yet. Two
/// replicas with equal heads hold identical documents. Always sorted and free of duplicates, so
/// equal sets compare (and encode) equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Heads(Vec<ChangeHash>);

impl Heads {
    /// Builds heads from any hashes, sorting and de-duplicating them.
    pub fn new(mut hashes: Vec<ChangeHash>) -> Self {
        hashes.sort_unstable();
        hashes.dedup();
        Self(hashes)
    }

    /// The hashes, sorted.
    pub fn as_slice(&self) -> &[ChangeHash] {
        &self.0
    }

    /// True for the heads of a document with no changes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The storage encoding: the 32-byte hashes concatenated in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|h| h.0).collect()
    }

    /// Decodes [`Heads::to_bytes`] output.
    ///
    /// # Errors
    /// [`Error::InvalidHeads`] when the length is not a multiple of 32.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if !bytes.len().is_multiple_of(32) {
            return Err(Error::InvalidHeads(format!(
                "{} bytes is not a whole number of hashes",
                bytes.len()
            )));
        }
        let hashes = bytes
            .chunks_exact(32)
            .map(|c| ChangeHash(c.try_into().expect("chunks_exact yields 32 bytes")))
            .collect();
        Ok(Self::new(hashes))
    }
}

impl From<Vec<ChangeHash>> for Heads {
    fn from(hashes: Vec<ChangeHash>) -> Self {
        Self::new(hashes)
    }
}

/// Written as comma-separated hex hashes.
impl fmt::Display for Heads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, h) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{h}")?;
        }
        Ok(())
    }
}

impl FromStr for Heads {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Ok(Self::default());
        }
        s.split(',')
            .map(|h| h.trim().parse::<ChangeHash>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Self::new)
            .map_err(|e| Error::InvalidHeads(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_canonical_and_round_trip() {
        let a = ChangeHash([1; 32]);
        let b = ChangeHash([2; 32]);
        let heads = Heads::new(vec![b, a, b]);
        assert_eq!(heads.as_slice(), &[a, b]);
        assert_eq!(
            Heads::from_bytes(&heads.to_bytes()).expect("decodes"),
            heads
        );
        assert_eq!(heads.to_string().parse::<Heads>().expect("parses"), heads);
        assert!(Heads::from_bytes(&[0; 31]).is_err());
        assert!("zz".parse::<Heads>().is_err());
    }
}
