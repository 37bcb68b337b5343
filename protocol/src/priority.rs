//! Document and collection priority, which orders what syncs first.

use std::fmt;
use std::str::FromStr;

/// How urgently a document (or a subscribed collection) should sync. Ordered: `Low < Normal <
/// High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Sync last; deferred on metered networks.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Sync before normal documents.
    High,
    /// Sync before everything else.
    Critical,
}

impl Priority {
    /// All priorities, lowest first.
    pub const ALL: [Priority; 4] = [Self::Low, Self::Normal, Self::High, Self::Critical];

    /// The stable numeric code used in storage and on the wire (0 = low ... 3 = critical).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The priority for a numeric code, if it is one.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Low),
            1 => Some(Self::Normal),
            2 => Some(Self::High),
            3 => Some(Self::Critical),
            _ => None,
        }
    }

    /// The lowercase name (`low`, `normal`, `high`, `critical`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The input was not one of `low`, `normal`, `high`, `critical`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid priority {0:?}: expected low, normal, high or critical")]
pub struct ParsePriorityError(String);

impl FromStr for Priority {
    type Err = ParsePriorityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ParsePriorityError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for p in Priority::ALL {
            assert_eq!(Priority::from_code(p.code()), Some(p));
            assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
        }
        assert_eq!(Priority::from_code(4), None);
        assert!("urgent".parse::<Priority>().is_err());
    }
}
