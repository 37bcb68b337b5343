//! Token claims, and the identity and grants they become once validated.

use std::collections::BTreeSet;

use syncline_protocol::{Collection, DeviceId};

use crate::tenant::Tenant;

/// The claims of a Syncline token, as JSON.
///
/// ```json
/// {"sub": "alice", "dev": "00112233445566778899aabbccddeeff", "ten": "acme",
///  "read": ["todos", "notes"], "write": ["todos"], "exp": 1764000000}
/// ```
/// `"*"` in `read` or `write` grants every collection. `ten` defaults to `default`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The device id, 32 hex digits.
    pub dev: String,
    /// The tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ten: Option<String>,
    /// Collections the device may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Collections the device may write.
    #[serde(default)]
    pub write: Vec<String>,
    /// Expiry, seconds since the Unix epoch (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience: one, or several (RFC 7519 allows both forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// A token's `aud` claim: one audience or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "syncline"`.
    One(String),
    /// `"aud": ["syncline", "api"]`.
    Many(Vec<String>),
}

impl From<&str> for Audience {
    fn from(aud: &str) -> Self {
        Self::One(aud.to_owned())
    }
}

/// Who is connected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The user (`sub`).
    pub user: String,
    /// The device (`dev`).
    pub device: DeviceId,
    /// The tenant (`ten`); tenants never see each other's data.
    pub tenant: Tenant,
}

/// A set of collections, or all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectionSet {
    /// Every collection (`"*"`).
    All,
    /// These collections.
    Only(BTreeSet<Collection>),
}

impl CollectionSet {
    /// True if `collection` is in the set.
    pub fn contains(&self, collection: &Collection) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(collection),
        }
    }

    fn parse(names: &[String]) -> Result<Self, String> {
        if names.iter().any(|n| n == "*") {
            return Ok(Self::All);
        }
        names
            .iter()
            .map(|n| Collection::new(n.as_str()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()
            .map(Self::Only)
    }
}

/// What a device may do, per collection. Every frame is checked against these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// Collections it may read (subscribe to, receive, learn the existence of documents in).
    pub read: CollectionSet,
    /// Collections it may write.
    pub write: CollectionSet,
}

impl Grants {
    /// True if the device may read `collection`.
    pub fn can_read(&self, collection: &Collection) -> bool {
        self.read.contains(collection)
    }

    /// True if the device may write `collection`.
    pub fn can_write(&self, collection: &Collection) -> bool {
        self.write.contains(collection)
    }
}

/// Longest accepted user name, in bytes.
const MAX_NAME: usize = 128;

impl Claims {
    /// Checks the identity fields and grants.
    ///
    /// # Errors
    /// A description of the first invalid claim.
    pub fn validate(self) -> Result<(Identity, Grants), String> {
        if self.sub.is_empty() || self.sub.len() > MAX_NAME {
            return Err("sub must be 1-128 bytes".into());
        }
        let device: DeviceId = self.dev.parse().map_err(|e| format!("dev: {e}"))?;
        let tenant = match self.ten {
            Some(ten) => Tenant::new(ten).map_err(|e| format!("ten: {e}"))?,
            None => Tenant::default_tenant(),
        };
        let grants = Grants {
            read: CollectionSet::parse(&self.read).map_err(|e| format!("read: {e}"))?,
            write: CollectionSet::parse(&self.write).map_err(|e| format!("write: {e}"))?,
        };
        Ok((
            Identity {
                user: self.sub,
                device,
                tenant,
            },
            grants,
        ))
    }
}
