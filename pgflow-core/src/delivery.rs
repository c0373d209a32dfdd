//! Messages as they are claimed: [`Delivery`] (envelope + payload) and the
//! [`Receipt`] that fences every ack, nack and lease extension.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::Result;
use crate::message::MessageType;
use crate::payload::Payload;

/// Proof of one claim of one message: the message id plus the lease token
/// of the claim. Settling a message requires a receipt whose lease is still
/// current and unexpired, so a late holder can never ack work that has been
/// handed to someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The message id.
    pub id: Uuid,
    /// The lease token of the claim.
    pub lease: Uuid,
}

/// A claimed message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    /// Message id.
    pub id: Uuid,
    /// Position in the queue (FIFO order within a priority).
    pub seq: i64,
    /// Queue it was claimed from.
    pub queue_name: String,
    /// Target instance ('' for competing delivery).
    pub target: String,
    /// Priority.
    pub priority: i16,
    /// The envelope `type`.
    pub msg_type: String,
    /// Payload schema version.
    pub schema_version: i32,
    /// Trace id of the journey this message belongs to.
    pub trace_id: Uuid,
    /// Sending instance, if any.
    pub source: Option<String>,
    /// The JSON payload (parsed on demand: [`Delivery::decode`]).
    pub payload: Payload,
    /// Number of times this message has been claimed, this claim included.
    pub attempts: i32,
    /// Retries allowed by the queue (attempts beyond `max_retries + 1` dead-letter).
    pub max_retries: i32,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
    /// When the lease of this claim expires.
    pub lease_expires_at: DateTime<Utc>,
    /// The lease token.
    pub lease: Uuid,
    /// The last error recorded for this message, if it failed before.
    pub last_error: Option<String>,
}

impl Delivery {
    /// The receipt for settling this delivery.
    pub fn receipt(&self) -> Receipt {
        Receipt {
            id: self.id,
            lease: self.lease,
        }
    }

    /// Decodes the payload as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        self.payload.decode()
    }

    /// True when the envelope `type` is `T`'s.
    pub fn is<T: MessageType>(&self) -> bool {
        self.msg_type == T::TYPE
    }

    /// True when this is the last attempt the queue allows.
    pub fn is_last_attempt(&self) -> bool {
        self.attempts > self.max_retries
    }
}
