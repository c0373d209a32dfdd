//! Cancelling live messages: moving them to the dead-letter queue with a
//! reason, whatever their state (ready, waiting for a retry, or leased).
//!
//! This is how a consumer's owner overrides work it decided must not
//! happen (a proposal resolved as failed, say): a message waiting for its
//! next attempt is never delivered again, and the holder of a lease on one
//! finds it gone, so its fenced ack or nack fails with
//! [`crate::Error::LeaseLost`] and its transaction rolls back.

use sqlx::PgConnection;
use uuid::Uuid;

use super::settle::truncate_error;
use super::Pgflow;
use crate::error::Result;
use crate::queue_name::QueueName;

/// Moves the matching rows of `pgflow.messages` to `pgflow.dlq`, each with
/// the reason and a `cancelled` entry in its history.
const CANCEL_SQL: &str = r#"
WITH dead AS (
    DELETE FROM pgflow.messages m
     WHERE m.queue_name = $1 AND m.target = $2 AND m.payload @> $3
    RETURNING m.*
), ins AS (
    INSERT INTO pgflow.dlq
        (id, queue_name, target, priority, msg_type, schema_version, trace_id, source, payload,
         attempts, error, history, enqueued_at)
    SELECT id, queue_name, target, priority, msg_type, schema_version, trace_id, source, payload,
           attempts, $4,
           history || jsonb_build_array(jsonb_build_object(
               'attempt', attempts, 'error', $4::text, 'at', now(), 'outcome', 'cancelled')),
           created_at
      FROM dead
)
SELECT id FROM dead
"#;

impl Pgflow {
    /// Dead-letters, on the caller's connection (typically inside its
    /// transaction, so the cancellation commits with the caller's own
    /// writes), every live message of `queue` for `target` (`""` for
    /// competing delivery) whose payload contains `payload` (JSON
    /// containment, `@>`), with `reason` as its error. Returns their ids.
    ///
    /// Leases are ignored on purpose: this is the override. The rows are
    /// locked while they are moved, so a concurrent ack either settles a
    /// message first (it is then not cancelled) or finds it gone. Messages
    /// still stored as one row of a `send_batch` (queues with batch
    /// storage) are not matched.
    pub async fn cancel_matching_in_tx(
        &self,
        conn: &mut PgConnection,
        queue: &QueueName,
        target: &str,
        payload: &serde_json::Value,
        reason: &str,
    ) -> Result<Vec<Uuid>> {
        let ids = sqlx::query_scalar(CANCEL_SQL)
            .bind(queue.as_str())
            .bind(target)
            .bind(payload)
            .bind(truncate_error(reason))
            .fetch_all(conn)
            .await?;
        if !ids.is_empty() {
            tracing::warn!(queue = %queue, target, ?ids, reason, "live messages cancelled: moved to the dead-letter queue");
        }
        Ok(ids)
    }
}
