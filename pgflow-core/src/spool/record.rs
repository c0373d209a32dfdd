//! The on-disk form of one spooled message: a JSON line holding the
//! record number, the queue, the NOTIFY wish, the time it was spooled and
//! the whole envelope (id included, so a replay is idempotent).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::OutgoingMessage;
use crate::queue_name::QueueName;

/// One spooled message as stored on disk (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    /// Record number: increasing in append order, never reused.
    pub(super) n: u64,
    pub(super) queue: QueueName,
    /// Whether the sender asked for a NOTIFY.
    pub(super) notify: bool,
    /// When it was spooled (Unix milliseconds); a delay counts from here.
    spooled_at_ms: u64,
    id: Uuid,
    #[serde(rename = "type")]
    msg_type: String,
    schema_version: i32,
    trace_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    priority: i16,
    delay_us: u64,
    payload: serde_json::Value,
}

impl Record {
    pub(super) fn new(
        n: u64,
        queue: &QueueName,
        notify: bool,
        msg: &OutgoingMessage,
        now_ms: u64,
    ) -> Self {
        Self {
            n,
            queue: queue.clone(),
            notify,
            spooled_at_ms: now_ms,
            id: msg.id,
            msg_type: msg.msg_type.clone(),
            schema_version: msg.schema_version,
            trace_id: msg.trace_id,
            source: msg.source.clone(),
            target: msg.target.clone(),
            priority: msg.priority,
            delay_us: u64::try_from(msg.delay.as_micros()).unwrap_or(u64::MAX),
            payload: msg.payload.clone(),
        }
    }

    /// The message to send at `now_ms`: same id and envelope; a delay is
    /// shortened by the time already spent in the spool.
    pub(super) fn to_message(&self, now_ms: u64) -> OutgoingMessage {
        let waited = Duration::from_millis(now_ms.saturating_sub(self.spooled_at_ms));
        OutgoingMessage {
            id: self.id,
            msg_type: self.msg_type.clone(),
            schema_version: self.schema_version,
            trace_id: self.trace_id,
            source: self.source.clone(),
            target: self.target.clone(),
            priority: self.priority,
            delay: Duration::from_micros(self.delay_us).saturating_sub(waited),
            payload: self.payload.clone(),
        }
    }
}

/// Now, in Unix milliseconds.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_its_delay_counts_from_the_publish() {
        let q = QueueName::new("q").unwrap();
        let msg = OutgoingMessage::new("t", serde_json::json!({"k": [1, "x"]}))
            .source("a")
            .priority(7)
            .delay(Duration::from_secs(10));
        let rec = Record::new(3, &q, true, &msg, 1_000);
        let line = serde_json::to_string(&rec).unwrap();
        assert!(!line.contains('\n'));
        let back: Record = serde_json::from_str(&line).unwrap();
        let out = back.to_message(4_000);
        assert_eq!((back.n, back.notify), (3, true));
        assert_eq!((out.id, out.trace_id), (msg.id, msg.trace_id));
        assert_eq!((out.source, out.target), (Some("a".into()), None));
        assert_eq!((out.priority, out.payload), (7, msg.payload));
        assert_eq!(out.delay, Duration::from_secs(7));
        assert_eq!(back.to_message(60_000).delay, Duration::ZERO);
    }
}
