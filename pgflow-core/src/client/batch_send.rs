//! Batch storage at send (migration 15): on a queue with `batch_storage`, a
//! `send_batch` whose messages share target and priority and have no delay
//! is written as one row of `pgflow.batches` instead of one row per message.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgConnection;
use uuid::Uuid;

use super::NOTIFY_CHANNEL;
use crate::error::{Error, Result};
use crate::message::OutgoingMessage;
use crate::queue_name::QueueName;

/// Fewest messages a send stores as one batch.
pub const MIN_BATCH: usize = 2;

/// How long a handle trusts what it learnt of a queue's `batch_storage`
/// (a change of the setting reaches senders within this time).
const MODE_TTL: Duration = Duration::from_secs(5);

/// Per queue, whether it keeps batches, as the last batch send learnt it:
/// a send to a queue known to keep none goes straight to rows.
#[derive(Debug, Default)]
pub(crate) struct BatchModes {
    known: Mutex<HashMap<String, (bool, Instant)>>,
}

impl BatchModes {
    /// Whether a batch send to `queue` is worth trying.
    pub(crate) fn may_batch(&self, queue: &QueueName) -> bool {
        let Ok(known) = self.known.lock() else {
            return true;
        };
        match known.get(queue.as_str()) {
            Some((on, at)) if at.elapsed() < MODE_TTL => *on,
            _ => true,
        }
    }

    fn learn(&self, queue: &QueueName, on: bool) {
        if let Ok(mut known) = self.known.lock() {
            known.insert(queue.to_string(), (on, Instant::now()));
        }
    }
}

/// One batch row. Each message draws its own seq (in slice order) from the
/// messages' sequence, so batches and rows share one FIFO order. Skipped
/// when the queue does not keep batches (`batch_storage` off, or a
/// broadcast queue, whose messages fan out to subscribers as rows: the
/// caller then sends rows), and reported as not inserted when the same ids are
/// already queued: as this batch (`batch_key`, a replay) or as rows (a
/// replay after the batch was split). `$10` is the batch key ([`batch_key`]),
/// `$11` the NOTIFY channel. A targeted queue refuses a batch without a
/// target or for one never registered (`refused`; migration 19). (notified only when the batch was inserted: a
/// send that falls back to rows notifies there).
macro_rules! batch_sql {
    ($tail:literal) => {
        concat!(
            r#"
WITH q AS (
    SELECT queue_name, delivery = 'broadcast' OR NOT batch_storage AS as_rows,
           pgflow.default_source() AS default_source,
           delivery = 'targeted'
               AND NOT EXISTS (SELECT 1 FROM pgflow.subscribers s
                                WHERE s.queue_name = $1 AND s.subscriber = $2) AS refused
      FROM pgflow.queues WHERE queue_name = $1
), live AS (
    SELECT EXISTS (SELECT 1 FROM pgflow.messages m WHERE m.id = ANY($3::uuid[])) AS yes
), s AS (
    SELECT array_agg(v ORDER BY v) AS seqs
      FROM (SELECT nextval('pgflow.messages_seq_seq') AS v
              FROM generate_series(1, cardinality($3::uuid[]))) g
), ins AS (
    INSERT INTO pgflow.batches
        (batch_key, queue_name, target, priority, ord, n, ids, seqs, msg_types, schema_versions,
         trace_ids, sources, payloads)
    SELECT $10, q.queue_name, $2, $4,
           ((32767 - $4::int2)::bigint << 47) | s.seqs[1], cardinality($3::uuid[]), $3, s.seqs,
           $5, $6, $7,
           ARRAY(SELECT coalesce(x.source, q.default_source)
                   FROM unnest($8::text[]) WITH ORDINALITY AS x(source, k) ORDER BY x.k),
           $9::text[]::json[]
      FROM q, s, live
     WHERE NOT q.as_rows AND NOT q.refused AND NOT live.yes
    ON CONFLICT (batch_key) DO NOTHING
    RETURNING n
)
SELECT (SELECT count(*) FROM q) AS queue_exists,
       coalesce((SELECT bool_or(as_rows) FROM q), false) AS as_rows,
       coalesce((SELECT bool_or(refused) FROM q), false) AS refused,
       coalesce((SELECT sum(n) FROM ins), 0)::int8 AS inserted"#,
            $tail
        )
    };
}

/// `[plain, notify]`.
const BATCH_SQL: [&str; 2] = [
    batch_sql!(""),
    batch_sql!(",\n       CASE WHEN EXISTS (SELECT 1 FROM ins) THEN pg_notify($11, $1)::text END AS notified"),
];

/// Whether `msgs` can be one batch: enough of them, one target and one
/// priority, no delay, no id twice.
pub(crate) fn batchable(msgs: &[OutgoingMessage]) -> bool {
    let Some(first) = msgs.first() else {
        return false;
    };
    if msgs.len() < MIN_BATCH {
        return false;
    }
    let uniform = msgs
        .iter()
        .all(|m| m.target == first.target && m.priority == first.priority && m.delay.is_zero());
    if !uniform {
        return false;
    }
    let mut seen = HashSet::with_capacity(msgs.len());
    msgs.iter().all(|m| seen.insert(m.id))
}

/// The key of a batch of these (distinct) ids: their XOR, the same for a
/// re-send of the same messages, in any order.
fn batch_key(ids: &[Uuid]) -> Uuid {
    Uuid::from_u128(ids.iter().fold(0, |k, id| k ^ id.as_u128()))
}

/// Inserts `msgs` (see [`batchable`]) as one batch. `Ok(None)` when the
/// queue keeps no batches: send them as rows instead.
pub(crate) async fn insert_batch(
    modes: &BatchModes,
    conn: &mut PgConnection,
    queue: &QueueName,
    msgs: &[OutgoingMessage],
    notify: bool,
    max_payload_bytes: usize,
) -> Result<Option<Vec<Uuid>>> {
    let n = msgs.len();
    let mut encoded = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut traces = Vec::with_capacity(n);
    let mut sources = Vec::with_capacity(n);
    for m in msgs {
        encoded.push(m.encode_payload(max_payload_bytes)?);
        ids.push(m.id);
        types.push(m.msg_type.as_str());
        versions.push(m.schema_version);
        traces.push(m.trace_id);
        sources.push(m.source.as_deref());
    }
    // JSON text, stored as `json` (checked, not converted: see migration 15).
    let payloads: Vec<&str> = encoded.iter().map(|p| p.get()).collect();
    let first = &msgs[0];
    let mut q = sqlx::query_as::<_, (i64, bool, bool, i64)>(BATCH_SQL[usize::from(notify)])
        .bind(queue.as_str())
        .bind(first.target.as_deref().unwrap_or(""))
        .bind(&ids)
        .bind(first.priority)
        .bind(&types)
        .bind(&versions)
        .bind(&traces)
        .bind(&sources)
        .bind(&payloads)
        .bind(batch_key(&ids));
    if notify {
        q = q.bind(NOTIFY_CHANNEL);
    }
    let (queue_exists, as_rows, refused, inserted) = q.fetch_one(&mut *conn).await?;
    if queue_exists == 0 {
        return Err(Error::UnknownQueue(queue.to_string()));
    }
    if refused {
        let target = first.target.clone().unwrap_or_default();
        return Err(super::send::refused_target(queue, target));
    }
    modes.learn(queue, !as_rows);
    if as_rows {
        return Ok(None);
    }
    metrics::counter!("pgflow_published_total", "queue" => queue.to_string())
        .increment(inserted.max(0) as u64);
    if inserted == 0 {
        tracing::debug!(queue = %queue, messages = n, "send skipped a batch that is already queued");
    }
    Ok(Some(ids))
}
