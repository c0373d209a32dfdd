//! Messages as they are sent: the envelope fields a producer sets, and the
//! [`MessageType`] trait that ties a Rust type to its `type` string and schema version.

use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Well-known priorities. Higher is claimed first; FIFO within one priority.
pub mod priority {
    /// Bulk work that may wait.
    pub const LOW: i16 = -10;
    /// The default.
    pub const NORMAL: i16 = 0;
    /// Urgent work (the design's rollback triggers).
    pub const HIGH: i16 = 10;
}

/// Longest accepted `type` string.
pub const MAX_TYPE_LEN: usize = 100;
/// Longest accepted source / target instance name.
pub const MAX_INSTANCE_LEN: usize = 100;
/// Default payload limit (serialized JSON), see [`crate::PgflowOptions`].
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// A Rust type that is the payload of one message `type` of the protocol.
pub trait MessageType: Serialize + DeserializeOwned {
    /// The envelope's `type` (for example `"proposal_for_consensus"`).
    const TYPE: &'static str;
    /// The schema version of this payload shape.
    const SCHEMA_VERSION: i32 = 1;
}

/// A message to send: payload plus the envelope fields the producer chooses.
/// The queue assigns the rest (sequence, timestamps, attempts).
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub(crate) id: Uuid,
    pub(crate) msg_type: String,
    pub(crate) schema_version: i32,
    pub(crate) trace_id: Uuid,
    pub(crate) source: Option<String>,
    pub(crate) target: Option<String>,
    pub(crate) priority: i16,
    pub(crate) delay: Duration,
    pub(crate) payload: serde_json::Value,
}

impl OutgoingMessage {
    /// A message of type `msg_type` with a JSON payload. A fresh id and a
    /// fresh trace id are assigned; use [`Self::trace_id`] to continue a journey.
    pub fn new(msg_type: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            msg_type: msg_type.into(),
            schema_version: 1,
            trace_id: Uuid::now_v7(),
            source: None,
            target: None,
            priority: priority::NORMAL,
            delay: Duration::ZERO,
            payload,
        }
    }

    /// A message from a typed payload, with its type and schema version.
    pub fn typed<T: MessageType>(payload: &T) -> Result<Self> {
        let value = serde_json::to_value(payload)?;
        Ok(Self::new(T::TYPE, value).schema_version(T::SCHEMA_VERSION))
    }

    /// A message from raw JSON text; malformed JSON is refused here, before
    /// anything reaches the database.
    pub fn from_json_str(msg_type: impl Into<String>, json: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        Ok(Self::new(msg_type, value))
    }

    /// Sets the message id (for idempotent re-sends, e.g. from a spool).
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Carries an existing trace id (one per proposal journey).
    pub fn trace_id(mut self, trace_id: Uuid) -> Self {
        self.trace_id = trace_id;
        self
    }

    /// Sets the schema version.
    pub fn schema_version(mut self, v: i32) -> Self {
        self.schema_version = v;
        self
    }

    /// Names the sending instance.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Addresses the message to one instance (targeted delivery): only a
    /// consumer claiming for that target receives it.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Sets the priority (see [`priority`]).
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Makes the message visible only after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The message id.
    pub fn message_id(&self) -> Uuid {
        self.id
    }

    /// The trace id.
    pub fn trace(&self) -> Uuid {
        self.trace_id
    }

    /// The `type`.
    pub fn msg_type(&self) -> &str {
        &self.msg_type
    }

    /// The payload.
    pub fn payload(&self) -> &serde_json::Value {
        &self.payload
    }

    /// Checks the envelope fields and returns the serialized payload size.
    pub(crate) fn validate(&self, max_payload_bytes: usize) -> Result<usize> {
        Ok(self.encode_payload(max_payload_bytes)?.get().len())
    }

    /// Checks the envelope fields and returns the payload serialized once,
    /// as it is sent (its size checked against `max_payload_bytes`).
    pub(crate) fn encode_payload(
        &self,
        max_payload_bytes: usize,
    ) -> Result<Box<serde_json::value::RawValue>> {
        self.check_fields()?;
        let encoded = serde_json::value::to_raw_value(&self.payload)?;
        let size = encoded.get().len();
        if size > max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                size,
                limit: max_payload_bytes,
            });
        }
        Ok(encoded)
    }

    /// Checks the envelope fields (type, source, target, delay) without
    /// serializing the payload: [`Error::InvalidMessage`] names the field.
    pub fn check_fields(&self) -> Result<()> {
        if self.msg_type.is_empty() || self.msg_type.len() > MAX_TYPE_LEN {
            return Err(Error::InvalidMessage(format!(
                "type must be 1-{MAX_TYPE_LEN} characters, got {} characters",
                self.msg_type.len()
            )));
        }
        for (what, v) in [("source", &self.source), ("target", &self.target)] {
            if let Some(v) = v {
                if v.is_empty() || v.len() > MAX_INSTANCE_LEN {
                    return Err(Error::InvalidMessage(format!(
                        "{what} must be 1-{MAX_INSTANCE_LEN} characters"
                    )));
                }
            }
        }
        if self.delay > Duration::from_secs(365 * 24 * 3600) {
            return Err(Error::InvalidMessage("delay longer than a year".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_is_refused() {
        let err = OutgoingMessage::from_json_str("t", "{not json").unwrap_err();
        assert!(matches!(err, Error::InvalidJson(_)), "{err}");
    }

    #[test]
    fn oversize_payload_is_refused() {
        let m = OutgoingMessage::new("t", serde_json::json!({"x": "a".repeat(100)}));
        assert!(matches!(
            m.validate(50),
            Err(Error::PayloadTooLarge { limit: 50, .. })
        ));
        assert!(m.validate(1000).is_ok());
    }

    #[test]
    fn envelope_fields_are_bounded() {
        let m = OutgoingMessage::new("", serde_json::json!({}));
        assert!(matches!(m.validate(100), Err(Error::InvalidMessage(_))));
        let m = OutgoingMessage::new("t", serde_json::json!({})).target("");
        assert!(matches!(m.validate(100), Err(Error::InvalidMessage(_))));
    }
}
