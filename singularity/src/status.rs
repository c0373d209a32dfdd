//! What `singularity status` and `GET /status` show: this instance's
//! proposals by state, its Genesis requests by kind and state, and the
//! depth of the queues it consumes (counting
//! only the messages it can claim: those addressed to it on targeted and
//! broadcast queues).

use std::collections::BTreeMap;

use comfy_table::Table;
use serde::Serialize;
use sqlx::PgConnection;

use crate::error::Result;
use crate::genesis_requests::{self, RequestCounts, RequestState};
use crate::instance::Queues;
use crate::store::{self, ProposalState};

/// Depth of one consumed queue, for this instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct QueueDepth {
    /// The queue.
    pub queue: String,
    /// competing, targeted or broadcast.
    pub delivery: String,
    /// Ready to be claimed now.
    pub pending: i64,
    /// Claimed, lease running.
    pub in_flight: i64,
    /// Waiting for a delay or a retry backoff.
    pub delayed: i64,
    /// Dead letters.
    pub dlq: i64,
}

/// The status of one instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// The instance.
    pub instance_id: String,
    /// Its proposals by state (every state listed).
    pub proposals: BTreeMap<ProposalState, i64>,
    /// Its requests to Genesis by state (sent, completed, failed), overall and per kind.
    pub genesis_requests: RequestCounts,
    /// The queues it consumes.
    pub queues: Vec<QueueDepth>,
}

const DEPTH_SQL: &str = r#"
SELECT u.queue AS queue, q.delivery,
       coalesce(m.pending, 0) AS pending,
       coalesce(m.in_flight, 0) AS in_flight,
       coalesce(m.delayed, 0) AS delayed,
       coalesce(d.dlq, 0) AS dlq
  FROM unnest($1::text[]) WITH ORDINALITY AS u(queue, ord)
  JOIN pgflow.queues q ON q.queue_name = u.queue
  CROSS JOIN LATERAL (
        SELECT CASE WHEN q.delivery = 'competing' THEN '' ELSE $2 END AS target) t
  LEFT JOIN LATERAL (
        SELECT coalesce(sum(n) FILTER (WHERE visible_at <= now()), 0)::int8 AS pending,
               coalesce(sum(n) FILTER (WHERE visible_at > now() AND lease IS NOT NULL), 0)::int8
                   AS in_flight,
               coalesce(sum(n) FILTER (WHERE visible_at > now() AND lease IS NULL), 0)::int8
                   AS delayed
          FROM (SELECT 1 AS n, visible_at, lease FROM pgflow.messages
                 WHERE queue_name = u.queue AND target = t.target
                UNION ALL
                SELECT n, visible_at, lease FROM pgflow.batches
                 WHERE queue_name = u.queue AND target = t.target) live) m ON true
  LEFT JOIN LATERAL (
        SELECT count(*) AS dlq FROM pgflow.dlq
         WHERE queue_name = u.queue AND target = t.target) d ON true
 ORDER BY u.ord
"#;

/// Gathers the status of `instance`.
pub async fn gather(conn: &mut PgConnection, instance: &str) -> Result<StatusReport> {
    let queues = Queues::new()?;
    let names: Vec<String> = queues
        .consumed()
        .iter()
        .map(|q| q.as_str().to_string())
        .collect();
    let depths: Vec<QueueDepth> = sqlx::query_as(DEPTH_SQL)
        .bind(&names)
        .bind(instance)
        .fetch_all(&mut *conn)
        .await?;
    Ok(StatusReport {
        instance_id: instance.to_string(),
        proposals: store::counts_by_state(&mut *conn, instance).await?,
        genesis_requests: genesis_requests::counts(&mut *conn, instance).await?,
        queues: depths,
    })
}

impl StatusReport {
    /// Three tables: proposals by state, Genesis requests by kind and
    /// state, then the consumed queues.
    pub fn render(&self) -> String {
        let mut proposals = Table::new();
        proposals.set_header(["status", "proposals"]);
        for (state, n) in &self.proposals {
            proposals.add_row([state.as_str().to_string(), n.to_string()]);
        }
        let mut genesis = Table::new();
        let mut header = vec!["genesis request".to_string()];
        header.extend(RequestState::ALL.iter().map(|s| s.as_str().to_string()));
        genesis.set_header(header);
        let rows = self
            .genesis_requests
            .by_kind
            .iter()
            .map(|(k, m)| (k.as_str(), m))
            .chain(std::iter::once(("total", &self.genesis_requests.by_state)));
        for (kind, by_state) in rows {
            let mut row = vec![kind.to_string()];
            row.extend(
                RequestState::ALL
                    .iter()
                    .map(|s| by_state.get(s).copied().unwrap_or(0).to_string()),
            );
            genesis.add_row(row);
        }
        let mut queues = Table::new();
        queues.set_header([
            "queue",
            "delivery",
            "pending",
            "in flight",
            "delayed",
            "dlq",
        ]);
        for q in &self.queues {
            queues.add_row([
                q.queue.clone(),
                q.delivery.clone(),
                q.pending.to_string(),
                q.in_flight.to_string(),
                q.delayed.to_string(),
                q.dlq.to_string(),
            ]);
        }
        format!(
            "instance {}\n{proposals}\n{genesis}\n{queues}\n",
            self.instance_id
        )
    }
}
