//! `Tenant`: the validated name of a tenant, the scope of every storage call and of fan-out.

use std::fmt;
use std::sync::Arc;

/// Longest accepted tenant name, in bytes.
pub const MAX_TENANT_LEN: usize = 128;

/// A tenant: 1 to [`MAX_TENANT_LEN`] bytes of `A-Z a-z 0-9 _ - .`. Tenants never see each
/// other's data; every storage call and every fan-out is scoped by one. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(Arc<str>);

/// Why a tenant name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tenant must be 1-{MAX_TENANT_LEN} bytes of A-Z a-z 0-9 _ - . (got {0:?})")]
pub struct TenantError(String);

impl Tenant {
    /// The tenant a token without `ten` belongs to.
    pub const DEFAULT: &'static str = "default";

    /// Validates `name`.
    ///
    /// # Errors
    /// [`TenantError`] for an empty, too long or ill-formed name.
    pub fn new(name: impl AsRef<str>) -> Result<Self, TenantError> {
        let name = name.as_ref();
        let ok = (1..=MAX_TENANT_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(Self(name.into()))
        } else {
            Err(TenantError(name.chars().take(MAX_TENANT_LEN + 1).collect()))
        }
    }

    /// The tenant of tokens without `ten`.
    pub fn default_tenant() -> Self {
        Self(Self::DEFAULT.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tenant({:?})", &*self.0)
    }
}

impl PartialEq<str> for Tenant {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Tenant {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl std::str::FromStr for Tenant {
    type Err = TenantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert_eq!(
            Tenant::new("acme-1.eu_west").expect("valid").as_str(),
            "acme-1.eu_west"
        );
        assert!(Tenant::new("").is_err());
        assert!(Tenant::new("a b").is_err());
        assert!(Tenant::new("é").is_err());
        assert!(Tenant::new("x".repeat(MAX_TENANT_LEN)).is_ok());
        assert!(Tenant::new("x".repeat(MAX_TENANT_LEN + 1)).is_err());
        assert_eq!(Tenant::default_tenant().as_str(), "default");
    }
}
