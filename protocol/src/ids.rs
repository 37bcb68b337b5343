//! Validated identifiers: collections, documents and devices.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A collection name must be 1 to 64 characters of `a-z`, `0-9`, `_` and `-`, starting with a
    /// letter.
    #[error("invalid collection name {0:?}: use 1-64 of a-z 0-9 _ - starting with a letter")]
    Collection(String),
    /// A document id must be 1 to 128 characters of `A-Z a-z 0-9 _ - . :`.
    #[error("invalid document id {0:?}: use 1-128 of A-Z a-z 0-9 _ - . :")]
    Document(String),
    /// A document address must be `collection/id`.
    #[error("invalid document address {0:?}: expected COLLECTION/ID")]
    Address(String),
    /// A device id is 16 bytes, written as 32 lowercase hex digits.
    #[error("invalid device id {0:?}: expected 32 hex digits")]
    Device(String),
}

/// The name of a collection: the unit of selective sync and of authorization.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Collection(String);

impl Collection {
    /// Longest accepted collection name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates `name` as a collection name.
    ///
    /// # Errors
    /// [`IdError::Collection`] unless `name` is 1-64 of `a-z 0-9 _ -` starting with a letter.
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        let valid = (1..=Self::MAX_LEN).contains(&name.len())
            && name.as_bytes()[0].is_ascii_lowercase()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(name))
        } else {
            Err(IdError::Collection(name))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Collection {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

/// The address of one entity: a collection plus an id unique within it. Written
/// `collection/id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocId {
    collection: Collection,
    id: String,
}

impl DocId {
    /// Longest accepted id (the part after the collection), in bytes.
    pub const MAX_ID_LEN: usize = 128;

    /// Validates `id` and pairs it with `collection`.
    ///
    /// # Errors
    /// [`IdError::Document`] unless `id` is 1-128 of `A-Z a-z 0-9 _ - . :`.
    pub fn new(collection: Collection, id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        let valid = (1..=Self::MAX_ID_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if valid {
            Ok(Self { collection, id })
        } else {
            Err(IdError::Document(id))
        }
    }

    /// The collection this document belongs to.
    pub fn collection(&self) -> &Collection {
        &self.collection
    }

    /// The id within the collection.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.collection, self.id)
    }
}

impl FromStr for DocId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (collection, id) = s
            .split_once('/')
            .ok_or_else(|| IdError::Address(s.to_owned()))?;
        Self::new(Collection::new(collection)?, id)
    }
}

/// A device's identity: 16 random bytes created when its store is first opened. The same bytes
/// are the device's Automerge actor id, so a document's history says which device wrote what.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId([u8; 16]);

impl DeviceId {
    /// Wraps 16 bytes as a device id.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Reads a device id from a byte slice.
    ///
    /// # Errors
    /// [`IdError::Device`] unless `bytes` is exactly 16 bytes long.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self, IdError> {
        <[u8; 16]>::try_from(bytes)
            .map(Self)
            .map_err(|_| IdError::Device(format!("{} bytes", bytes.len())))
    }

    /// The 16 bytes of the id.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

impl FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let err = || IdError::Device(s.to_owned());
        if s.len() != 32 || !s.is_ascii() {
            return Err(err());
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn collection_names_are_checked() {
        assert!(Collection::new("todos").is_ok());
        assert!(Collection::new("a-b_c9").is_ok());
        for bad in ["", "Todos", "9lives", "to/dos", "t odos", &"x".repeat(65)] {
            assert_eq!(
                Collection::new(bad),
                Err(IdError::Collection(bad.to_owned()))
            );
        }
    }

    #[test]
    fn doc_addresses_parse_and_print() {
        let id: DocId = "todos/Ab-1.2:3_".parse().expect("valid address");
        assert_eq!(id.collection().as_str(), "todos");
        assert_eq!(id.id(), "Ab-1.2:3_");
        assert_eq!(id.to_string(), "todos/Ab-1.2:3_");
        assert!(matches!("todos".parse::<DocId>(), Err(IdError::Address(_))));
        assert!(matches!(
            "todos/".parse::<DocId>(),
            Err(IdError::Document(_))
        ));
        assert!(matches!(
            "todos/a/b".parse::<DocId>(),
            Err(IdError::Document(_))
        ));
        assert!(matches!(
            "Bad/a".parse::<DocId>(),
            Err(IdError::Collection(_))
        ));
    }

    proptest! {
        #[test]
        fn device_ids_round_trip_through_hex(bytes in any::<[u8; 16]>()) {
            let id = DeviceId::from_bytes(bytes);
            prop_assert_eq!(id.to_string().parse::<DeviceId>(), Ok(id));
        }

        #[test]
        fn parsing_never_panics(s in ".*") {
            let _ = s.parse::<DocId>();
            let _ = s.parse::<DeviceId>();
            let _ = s.parse::<Collection>();
        }
    }
}
