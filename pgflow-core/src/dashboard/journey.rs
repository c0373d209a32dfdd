//! A journey: every message of one trace across the services, in order.
//! The id searched for is a trace id or a proposal id; a proposal id is
//! resolved to the trace id of the first message whose payload carries it
//! (live messages, dead letters, then the archive of the last
//! [`PROPOSAL_LOOKBACK_DAYS`] days).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::client::Pgflow;
use crate::error::Result;
use crate::protocol::route;

/// How far back the archive is searched for a proposal id.
pub const PROPOSAL_LOOKBACK_DAYS: i32 = 7;

/// Most hops returned for one trace.
pub const MAX_HOPS: i64 = 500;

/// One message of a journey.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Hop {
    /// Message id.
    pub id: Uuid,
    /// The queue it travelled on.
    pub queue_name: String,
    /// The envelope `type`.
    pub msg_type: String,
    /// Who sent it (the envelope's source).
    pub source: Option<String>,
    /// The instance it was addressed to ('' for none).
    pub target: String,
    /// `done` (acked, in the archive), `pending`, `in_flight`, `delayed` or
    /// `dead` (in the DLQ).
    pub state: String,
    /// Deliveries so far.
    pub attempts: i32,
    /// When sent.
    pub sent_at: DateTime<Utc>,
    /// When acked or dead-lettered.
    pub done_at: Option<DateTime<Utc>>,
    /// The DLQ error, or the last failed attempt's.
    pub error: Option<String>,
    /// The producing service of the queue (from the design's routes).
    #[sqlx(skip)]
    pub producer: Option<&'static str>,
    /// The consuming service of the queue.
    #[sqlx(skip)]
    pub consumer: Option<&'static str>,
}

/// The journey of one id.
#[derive(Debug, Clone, Serialize)]
pub struct Journey {
    /// The id searched for.
    pub query: Uuid,
    /// The trace it resolved to (`None`: nothing found).
    pub trace_id: Option<Uuid>,
    /// Whether the id was a proposal id (resolved through a payload).
    pub by_proposal: bool,
    /// The hops, by send time.
    pub hops: Vec<Hop>,
}

const HOPS_SQL: &str = r#"
SELECT * FROM (
    SELECT id, queue_name, msg_type, source, target, 'done' AS state, attempts,
           created_at AS sent_at, archived_at AS done_at, NULL::text AS error
      FROM pgflow.archive WHERE trace_id = $1
    UNION ALL
    SELECT x.id, b.queue_name, x.msg_type, x.source, b.target, 'done', b.attempts,
           b.created_at, b.archived_at, NULL
      FROM pgflow.archive_batches b,
           unnest(b.ids, b.msg_types, b.sources, b.trace_ids) AS x(id, msg_type, source, trace_id)
     WHERE b.trace_ids @> ARRAY[$1::uuid] AND x.trace_id = $1
    UNION ALL
    SELECT id, queue_name, msg_type, source, target,
           CASE WHEN visible_at <= now() THEN 'pending'
                WHEN lease IS NOT NULL THEN 'in_flight' ELSE 'delayed' END,
           attempts, created_at, NULL, last_error
      FROM pgflow.live_messages WHERE trace_id = $1
    UNION ALL
    SELECT id, queue_name, msg_type, source, target, 'dead', attempts,
           enqueued_at, created_at, error
      FROM pgflow.dlq WHERE trace_id = $1
) h
ORDER BY sent_at, done_at NULLS LAST, id
LIMIT $2
"#;

const PROPOSAL_TRACE_SQL: &str = r#"
SELECT trace_id FROM (
    (SELECT trace_id, created_at FROM pgflow.live_messages
      WHERE payload ->> 'proposal_id' = $1 ORDER BY created_at LIMIT 1)
    UNION ALL
    (SELECT trace_id, enqueued_at FROM pgflow.dlq
      WHERE payload ->> 'proposal_id' = $1 ORDER BY enqueued_at LIMIT 1)
    UNION ALL
    (SELECT trace_id, created_at FROM pgflow.archived_messages
      WHERE archived_at > now() - $2 * interval '1 day'
        AND payload ->> 'proposal_id' = $1 ORDER BY created_at LIMIT 1)
) t ORDER BY created_at LIMIT 1
"#;

/// The journey of `id` (a trace id or a proposal id).
pub async fn find(pg: &Pgflow, id: Uuid) -> Result<Journey> {
    let mut hops = hops(pg, id).await?;
    let mut journey = Journey {
        query: id,
        trace_id: None,
        by_proposal: false,
        hops: Vec::new(),
    };
    if hops.is_empty() {
        let trace: Option<Uuid> = sqlx::query_scalar(PROPOSAL_TRACE_SQL)
            .bind(id.to_string())
            .bind(PROPOSAL_LOOKBACK_DAYS)
            .fetch_optional(pg.pool())
            .await?;
        let Some(trace) = trace else {
            return Ok(journey);
        };
        journey.by_proposal = true;
        hops = self::hops(pg, trace).await?;
        journey.trace_id = Some(trace);
    } else {
        journey.trace_id = Some(id);
    }
    journey.hops = hops;
    Ok(journey)
}

async fn hops(pg: &Pgflow, trace: Uuid) -> Result<Vec<Hop>> {
    let mut hops: Vec<Hop> = sqlx::query_as(HOPS_SQL)
        .bind(trace)
        .bind(MAX_HOPS)
        .fetch_all(pg.pool())
        .await?;
    for h in &mut hops {
        if let Some(r) = route(&h.queue_name) {
            h.producer = Some(r.producer.as_str());
            h.consumer = Some(r.consumer.as_str());
        }
    }
    Ok(hops)
}
