//! Validated queue names: the only strings that name a queue anywhere.

use std::fmt;

use crate::error::{Error, Result};

/// Longest queue name accepted (PostgreSQL's identifier limit).
pub const MAX_QUEUE_NAME_LEN: usize = 63;

/// A queue name: 1-63 characters, lowercase ASCII letters, digits and `_`,
/// starting with a letter. The same rule is a `CHECK` on `pgflow.queues`.
///
/// Names are always passed to SQL as bind parameters; the validation keeps
/// them safe for logs, metrics labels and NOTIFY channels too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct QueueName(String);

impl QueueName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > MAX_QUEUE_NAME_LEN {
            Some("it is longer than 63 characters")
        } else if !name.as_bytes()[0].is_ascii_lowercase() {
            Some("it must start with a lowercase letter")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            Some("it contains a character other than a-z, 0-9 and '_'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidQueueName { name, reason }),
            None => Ok(Self(name)),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for QueueName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for QueueName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for QueueName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_design_names() {
        for n in [
            "proposals_for_consensus_queue",
            "genesis_rule_updates",
            "q1",
            "a",
        ] {
            assert!(QueueName::new(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refuses_injection_and_odd_names() {
        for n in [
            "",
            "Upper",
            "1abc",
            "_x",
            "a-b",
            "a b",
            "q; DROP TABLE pgflow.messages; --",
            "q'",
            "q\"",
            "ünïcode",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(QueueName::new(n), Err(Error::InvalidQueueName { .. })),
                "{n:?} must be refused"
            );
        }
        assert!(QueueName::new("a".repeat(63)).is_ok());
    }
}
