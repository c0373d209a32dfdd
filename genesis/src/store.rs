//! The workflow table (`genesis.workflows` and its state log
//! `genesis.workflow_events`): each request's way through pending ->
//! running -> completed | failed, and the per-queue summary `genesis
//! status` prints.
//!
//! `pending` and `running` are written on their own (autocommit), so they
//! are visible while the workflow runs; the final state is written in the
//! handler's transaction, together with the result message and the ack.

use chrono::{DateTime, Utc};
use pgflow_core::protocol::ResultStatus;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::config::CONSUMED_QUEUES;

/// What identifies a workflow: its request message and who asked.
#[derive(Debug, Clone)]
pub(crate) struct WorkflowMeta {
    /// The request's message id (the workflow's id).
    pub id: Uuid,
    /// The queue it came from.
    pub queue: String,
    /// The message type.
    pub msg_type: String,
    /// The request's own id, if it has one.
    pub request_id: Option<String>,
    /// The instance the result goes to.
    pub instance: Option<String>,
    /// The request's trace id.
    pub trace_id: Uuid,
}

const PENDING_SQL: &str = r#"
WITH w AS (
    INSERT INTO genesis.workflows (id, queue, msg_type, request_id, instance, trace_id, status)
    VALUES ($1, $2, $3, $4, $5, $6, 'pending')
    ON CONFLICT (id) DO UPDATE
       SET status = 'pending', attempts = genesis.workflows.attempts + 1, error = NULL,
           result = NULL, duration_ms = NULL, started_at = NULL, finished_at = NULL,
           updated_at = now()
     WHERE genesis.workflows.status <> 'completed'
    RETURNING id
)
INSERT INTO genesis.workflow_events (workflow_id, status, detail)
SELECT id, 'pending', $7 FROM w
RETURNING workflow_id
"#;

/// Records that the request was claimed and waits for a worker (again,
/// for a redelivery, or a dead letter an operator sent back). `None` when
/// the workflow already completed: its result was sent and its request
/// acked, so a copy of the request changes nothing.
pub(crate) async fn mark_pending(
    pool: &PgPool,
    meta: &WorkflowMeta,
    detail: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(PENDING_SQL)
        .bind(meta.id)
        .bind(&meta.queue)
        .bind(&meta.msg_type)
        .bind(&meta.request_id)
        .bind(&meta.instance)
        .bind(meta.trace_id)
        .bind(detail)
        .fetch_optional(pool)
        .await
}

const RUNNING_SQL: &str = r#"
WITH w AS (
    UPDATE genesis.workflows SET status = 'running', started_at = now(), updated_at = now()
     WHERE id = $1 AND status = 'pending'
    RETURNING id
)
INSERT INTO genesis.workflow_events (workflow_id, status) SELECT id, 'running' FROM w
"#;

/// Records that a worker started the workflow.
pub(crate) async fn mark_running(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(RUNNING_SQL).bind(id).execute(pool).await?;
    Ok(())
}

// In the handler's transaction, which began before the workflow waited for
// a worker: `now()` would be that start, so the wall clock is used.
const FINISH_SQL: &str = r#"
WITH w AS (
    UPDATE genesis.workflows
       SET status = $2, error = $3, result = $4, duration_ms = $5,
           finished_at = clock_timestamp(), updated_at = clock_timestamp()
     WHERE id = $1 AND status IN ('pending', 'running')
    RETURNING id
)
INSERT INTO genesis.workflow_events (workflow_id, status, detail) SELECT id, $2, $3 FROM w
"#;

/// The text of a final status.
pub(crate) fn status_name(s: ResultStatus) -> &'static str {
    match s {
        ResultStatus::Completed => "completed",
        ResultStatus::Failed => "failed",
    }
}

/// Records the final state on `conn` (the handler's transaction).
pub(crate) async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    status: ResultStatus,
    error: Option<&str>,
    result: &serde_json::Value,
    duration_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(FINISH_SQL)
        .bind(id)
        .bind(status_name(status))
        .bind(error)
        .bind(result)
        .bind(duration_ms)
        .execute(conn)
        .await?;
    Ok(())
}

const FAILED_OUTSIDE_SQL: &str = r#"
WITH w AS (
    INSERT INTO genesis.workflows
        (id, queue, msg_type, request_id, instance, trace_id, status, error, finished_at)
    VALUES ($1, $2, $3, $4, $5, $6, 'failed', $7, now())
    ON CONFLICT (id) DO UPDATE
       SET status = 'failed', error = EXCLUDED.error, finished_at = now(), updated_at = now()
     WHERE genesis.workflows.status IN ('pending', 'running')
    RETURNING id
)
INSERT INTO genesis.workflow_events (workflow_id, status, detail) SELECT id, 'failed', $7 FROM w
"#;

/// Records, on its own, a workflow that failed without a result: its
/// request goes to the dead-letter queue (malformed, or out of retries).
pub(crate) async fn mark_failed(
    pool: &PgPool,
    meta: &WorkflowMeta,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(FAILED_OUTSIDE_SQL)
        .bind(meta.id)
        .bind(&meta.queue)
        .bind(&meta.msg_type)
        .bind(&meta.request_id)
        .bind(&meta.instance)
        .bind(meta.trace_id)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

const RETRY_SQL: &str = r#"
WITH w AS (
    UPDATE genesis.workflows SET status = 'pending', error = $2, started_at = NULL, updated_at = now()
     WHERE id = $1 AND status IN ('pending', 'running')
    RETURNING id
)
INSERT INTO genesis.workflow_events (workflow_id, status, detail) SELECT id, 'pending', $2 FROM w
"#;

/// Records that an attempt failed and the request will be delivered again.
pub(crate) async fn mark_retrying(pool: &PgPool, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(RETRY_SQL)
        .bind(id)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// One queue's workflows, as `genesis status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct QueueSummary {
    /// The queue.
    pub queue: String,
    /// Workflows that finished (completed + failed).
    pub processed: i64,
    /// Workflows that completed.
    pub succeeded: i64,
    /// Workflows that failed.
    pub failed: i64,
    /// Workflows pending or running now.
    pub in_flight: i64,
    /// When a workflow of this queue last changed state.
    pub last_activity: Option<DateTime<Utc>>,
}

const SUMMARY_SQL: &str = r#"
SELECT q.queue,
       count(w.id) FILTER (WHERE w.status IN ('completed', 'failed')) AS processed,
       count(w.id) FILTER (WHERE w.status = 'completed') AS succeeded,
       count(w.id) FILTER (WHERE w.status = 'failed') AS failed,
       count(w.id) FILTER (WHERE w.status IN ('pending', 'running')) AS in_flight,
       max(w.updated_at) AS last_activity
  FROM unnest($1::text[]) WITH ORDINALITY AS q(queue, ord)
  LEFT JOIN genesis.workflows w ON w.queue = q.queue
 GROUP BY q.queue, q.ord
 ORDER BY q.ord
"#;

/// Per consumed queue: processed, succeeded, failed, in flight, last activity.
pub async fn summary(pool: &PgPool) -> Result<Vec<QueueSummary>, sqlx::Error> {
    let queues: Vec<&str> = CONSUMED_QUEUES.to_vec();
    sqlx::query_as(SUMMARY_SQL)
        .bind(&queues)
        .fetch_all(pool)
        .await
}
