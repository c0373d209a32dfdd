//! Administration: queue settings, statistics, pending messages, archive pruning.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::Pgflow;
use crate::error::{Error, Result};
use crate::queue_config::{DeliveryKind, QueueConfig, RetryPolicy};
use crate::queue_name::QueueName;

/// Depth and flow of one queue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct QueueStats {
    /// The queue.
    pub queue_name: String,
    /// Delivery kind.
    pub delivery: String,
    /// Ready to be claimed now (depth).
    pub pending: i64,
    /// Claimed, lease running.
    pub in_flight: i64,
    /// Waiting for a delay or a retry backoff.
    pub delayed: i64,
    /// Dead letters.
    pub dlq: i64,
    /// Messages acked in the last 60 s (queues that keep an archive).
    pub processed_last_minute: i64,
    /// Age in seconds of the oldest ready message.
    pub oldest_pending_age_secs: Option<f64>,
}

/// One live message, as `pgflow pending` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MessageSummary {
    /// Message id.
    pub id: Uuid,
    /// Queue position.
    pub seq: i64,
    /// pending, delayed or processing.
    pub status: String,
    /// Priority.
    pub priority: i16,
    /// The envelope `type`.
    pub msg_type: String,
    /// Target instance ('' for none).
    pub target: String,
    /// Deliveries so far.
    pub attempts: i32,
    /// Trace id.
    pub trace_id: Uuid,
    /// When sent.
    pub created_at: DateTime<Utc>,
    /// When it becomes (or became) claimable.
    pub visible_at: DateTime<Utc>,
    /// Last error, if a previous attempt failed.
    pub last_error: Option<String>,
    /// The payload.
    pub payload: serde_json::Value,
}

const STATS_SQL: &str = r#"
SELECT q.queue_name, q.delivery,
       coalesce(m.pending, 0) AS pending,
       coalesce(m.in_flight, 0) AS in_flight,
       coalesce(m.delayed, 0) AS delayed,
       coalesce(d.dlq, 0) AS dlq,
       coalesce(a.done, 0) AS processed_last_minute,
       extract(epoch FROM now() - m.oldest)::float8 AS oldest_pending_age_secs
  FROM pgflow.queues q
  LEFT JOIN (
        SELECT queue_name,
               sum(n) FILTER (WHERE visible_at <= now()) AS pending,
               sum(n) FILTER (WHERE visible_at > now() AND lease IS NOT NULL) AS in_flight,
               sum(n) FILTER (WHERE visible_at > now() AND lease IS NULL) AS delayed,
               min(created_at) FILTER (WHERE visible_at <= now()) AS oldest
          FROM (SELECT queue_name, 1 AS n, visible_at, lease, created_at FROM pgflow.messages
                 WHERE ($1::text IS NULL OR queue_name = $1)
                UNION ALL
                SELECT queue_name, n, visible_at, lease, created_at FROM pgflow.batches
                 WHERE ($1::text IS NULL OR queue_name = $1)) live
         GROUP BY queue_name) m USING (queue_name)
  LEFT JOIN (
        SELECT queue_name, count(*) AS dlq FROM pgflow.dlq
         WHERE ($1::text IS NULL OR queue_name = $1)
         GROUP BY queue_name) d USING (queue_name)
  LEFT JOIN (
        SELECT queue_name, sum(n) AS done
          FROM (SELECT queue_name, 1 AS n FROM pgflow.archive
                 WHERE archived_at > now() - interval '60 seconds'
                   AND ($1::text IS NULL OR queue_name = $1)
                UNION ALL
                SELECT queue_name, n FROM pgflow.archive_batches
                 WHERE archived_at > now() - interval '60 seconds'
                   AND ($1::text IS NULL OR queue_name = $1)) done
         GROUP BY queue_name) a USING (queue_name)
 WHERE ($1::text IS NULL OR q.queue_name = $1)
 ORDER BY q.queue_name
"#;

type QueueRow = (String, String, i32, i32, i32, i32, f64, String, bool);

impl Pgflow {
    /// Creates a queue, or updates the settings of an existing one.
    pub async fn create_queue(&self, cfg: &QueueConfig) -> Result<()> {
        cfg.validate()?;
        sqlx::query(
            "INSERT INTO pgflow.queues
                 (queue_name, delivery, max_retries, retry_delay_ms, retry_max_delay_ms,
                  visibility_timeout_ms, archive_retention, description, batch_storage)
             VALUES ($1, $2, $3, $4, $5, $6, $7 * interval '1 second', $8, $9)
             ON CONFLICT (queue_name) DO UPDATE SET
                 delivery = EXCLUDED.delivery, max_retries = EXCLUDED.max_retries,
                 retry_delay_ms = EXCLUDED.retry_delay_ms,
                 retry_max_delay_ms = EXCLUDED.retry_max_delay_ms,
                 visibility_timeout_ms = EXCLUDED.visibility_timeout_ms,
                 archive_retention = EXCLUDED.archive_retention,
                 description = EXCLUDED.description,
                 batch_storage = EXCLUDED.batch_storage",
        )
        .bind(cfg.name.as_str())
        .bind(cfg.delivery.as_str())
        .bind(cfg.retry.max_retries as i32)
        .bind(cfg.retry.base_delay_ms as i32)
        .bind(cfg.retry.max_delay_ms as i32)
        .bind(cfg.visibility_timeout.as_millis() as i32)
        .bind(cfg.archive_retention.as_secs_f64())
        .bind(&cfg.description)
        .bind(cfg.batch_storage)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets the retry policy of an existing queue (a consumer configured
    /// with `max_retries` / `retry_delay_ms` applies its settings this way).
    pub async fn set_retry_policy(&self, queue: &QueueName, retry: &RetryPolicy) -> Result<()> {
        let n = sqlx::query(
            "UPDATE pgflow.queues
                SET max_retries = $2, retry_delay_ms = $3, retry_max_delay_ms = $4
              WHERE queue_name = $1",
        )
        .bind(queue.as_str())
        .bind(retry.max_retries.min(1000) as i32)
        .bind(retry.base_delay_ms.min(i32::MAX as u32) as i32)
        .bind(retry.max_delay_ms.min(i32::MAX as u32) as i32)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(Error::UnknownQueue(queue.to_string()));
        }
        Ok(())
    }

    /// The settings of one queue; [`Error::UnknownQueue`] if it does not exist.
    pub async fn queue_config(&self, queue: &QueueName) -> Result<QueueConfig> {
        let row: Option<QueueRow> = sqlx::query_as(
            "SELECT queue_name, delivery, max_retries, retry_delay_ms, retry_max_delay_ms,
                    visibility_timeout_ms, extract(epoch FROM archive_retention)::float8, description,
                    batch_storage
               FROM pgflow.queues WHERE queue_name = $1",
        )
        .bind(queue.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or_else(|| Error::UnknownQueue(queue.to_string()))?;
        queue_config_from_row(row)
    }

    /// The settings of every queue.
    pub async fn list_queue_configs(&self) -> Result<Vec<QueueConfig>> {
        let rows: Vec<QueueRow> = sqlx::query_as(
            "SELECT queue_name, delivery, max_retries, retry_delay_ms, retry_max_delay_ms,
                    visibility_timeout_ms, extract(epoch FROM archive_retention)::float8, description,
                    batch_storage
               FROM pgflow.queues ORDER BY queue_name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(queue_config_from_row).collect()
    }

    /// Every queue with its statistics.
    pub async fn list_queues(&self) -> Result<Vec<QueueStats>> {
        Ok(sqlx::query_as(STATS_SQL)
            .bind(None::<String>)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Statistics of one queue: depth, in flight, delayed, DLQ size, age of
    /// the oldest ready message, messages processed in the last minute.
    pub async fn get_queue_stats(&self, queue: &QueueName) -> Result<QueueStats> {
        let row: Option<QueueStats> = sqlx::query_as(STATS_SQL)
            .bind(queue.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or_else(|| Error::UnknownQueue(queue.to_string()))
    }

    /// The live messages of a queue in claim order (ready first).
    pub async fn list_pending_messages(
        &self,
        queue: &QueueName,
        limit: i64,
    ) -> Result<Vec<MessageSummary>> {
        self.queue_config(queue).await?;
        Ok(sqlx::query_as(
            "SELECT id, seq,
                    CASE WHEN visible_at <= now() THEN 'pending'
                         WHEN lease IS NOT NULL THEN 'processing'
                         ELSE 'delayed' END AS status,
                    priority, msg_type, target, attempts, trace_id, created_at, visible_at,
                    last_error, payload
               FROM pgflow.live_messages
              WHERE queue_name = $1
              ORDER BY (visible_at <= now()) DESC, priority DESC, seq
              LIMIT $2",
        )
        .bind(queue.as_str())
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes archived messages older than `older_than`, or, when `None`,
    /// older than each queue's own retention. Returns how many.
    pub async fn prune_archive(&self, older_than: Option<Duration>) -> Result<u64> {
        // Rows and archived batches (counted by their messages).
        let n: i64 = match older_than {
            Some(d) => {
                sqlx::query_scalar(
                    "WITH r AS (
                     DELETE FROM pgflow.archive
                      WHERE archived_at < now() - $1 * interval '1 second' RETURNING 1
                 ), b AS (
                     DELETE FROM pgflow.archive_batches
                      WHERE archived_at < now() - $1 * interval '1 second' RETURNING n
                 )
                 SELECT (SELECT count(*) FROM r) + (SELECT coalesce(sum(n), 0) FROM b)",
                )
                .bind(d.as_secs_f64())
                .fetch_one(&self.pool)
                .await?
            }
            None => {
                sqlx::query_scalar(
                    "WITH r AS (
                     DELETE FROM pgflow.archive a USING pgflow.queues q
                      WHERE q.queue_name = a.queue_name
                        AND a.archived_at < now() - q.archive_retention RETURNING 1
                 ), b AS (
                     DELETE FROM pgflow.archive_batches a USING pgflow.queues q
                      WHERE q.queue_name = a.queue_name
                        AND a.archived_at < now() - q.archive_retention RETURNING a.n
                 )
                 SELECT (SELECT count(*) FROM r) + (SELECT coalesce(sum(n), 0) FROM b)",
                )
                .fetch_one(&self.pool)
                .await?
            }
        };
        let n = n.max(0) as u64;
        Ok(n)
    }
}

fn queue_config_from_row(r: QueueRow) -> Result<QueueConfig> {
    let (name, delivery, max_retries, base, max, vt, retention, description, batch_storage) = r;
    Ok(QueueConfig {
        name: QueueName::new(name)?,
        delivery: DeliveryKind::parse(&delivery)?,
        retry: RetryPolicy {
            max_retries: max_retries.max(0) as u32,
            base_delay_ms: base.max(0) as u32,
            max_delay_ms: max.max(0) as u32,
        },
        visibility_timeout: Duration::from_millis(vt.max(1) as u64),
        archive_retention: Duration::from_secs_f64(retention.max(0.0)),
        description,
        batch_storage,
    })
}
