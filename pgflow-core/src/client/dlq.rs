//! The dead-letter queue: list, retry one message, purge.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Pgflow, NOTIFY_CHANNEL};
use crate::error::{Error, Result};
use crate::queue_name::QueueName;

/// A dead-lettered message with its error, attempts and history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DlqMessage {
    /// Message id (kept when retried).
    pub id: Uuid,
    /// Queue it came from.
    pub queue_name: String,
    /// Target instance ('' for none).
    pub target: String,
    /// The envelope `type`.
    pub msg_type: String,
    /// Trace id.
    pub trace_id: Uuid,
    /// The final error.
    pub error: String,
    /// Deliveries made.
    pub attempts: i32,
    /// Every failed attempt: `[{attempt, error, at, outcome}]`.
    pub history: serde_json::Value,
    /// The payload.
    pub payload: serde_json::Value,
    /// When it was first sent.
    pub enqueued_at: DateTime<Utc>,
    /// When it was dead-lettered.
    pub created_at: DateTime<Utc>,
}

const RETRY_SQL: &str = r#"
WITH d AS (DELETE FROM pgflow.dlq WHERE id = $1 RETURNING *),
ins AS (
    INSERT INTO pgflow.messages
        (id, queue_name, target, priority, msg_type, schema_version, trace_id, source, payload,
         attempts, created_at, history, last_error)
    SELECT id, queue_name, target, priority, msg_type, schema_version, trace_id, source, payload,
           0, enqueued_at,
           history || jsonb_build_array(jsonb_build_object('outcome', 'retried_from_dlq', 'at', now())),
           error
      FROM d
    RETURNING id, queue_name
)
SELECT id, pg_notify($2, queue_name)::text FROM ins
"#;

impl Pgflow {
    /// Lists dead letters, newest first, optionally of one queue.
    pub async fn list_dlq_messages(
        &self,
        queue: Option<&QueueName>,
        limit: i64,
    ) -> Result<Vec<DlqMessage>> {
        Ok(sqlx::query_as(
            "SELECT id, queue_name, target, msg_type, trace_id, error, attempts, history, payload,
                    enqueued_at, created_at
               FROM pgflow.dlq
              WHERE ($1::text IS NULL OR queue_name = $1)
              ORDER BY created_at DESC, id
              LIMIT $2",
        )
        .bind(queue.map(QueueName::as_str))
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Puts a dead letter back on its queue with a fresh attempt count
    /// (its history is kept and notes the retry).
    pub async fn retry_dlq_message(&self, id: Uuid) -> Result<()> {
        let row: Option<(Uuid, String)> = sqlx::query_as(RETRY_SQL)
            .bind(id)
            .bind(NOTIFY_CHANNEL)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(_) => Ok(()),
            None => Err(Error::NotFound {
                what: "DLQ message",
                id,
            }),
        }
    }

    /// Deletes dead letters (of one queue, or all); returns how many.
    pub async fn purge_dlq(&self, queue: Option<&QueueName>) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM pgflow.dlq WHERE ($1::text IS NULL OR queue_name = $1)")
                .bind(queue.map(QueueName::as_str))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
