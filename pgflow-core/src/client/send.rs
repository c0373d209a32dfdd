//! Sending: one message, a batch in one statement, with or without a
//! NOTIFY, and inside the caller's own transaction.

use sqlx::PgConnection;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::batch_send::{batchable, insert_batch};
use super::coalesce::SendRequest;
use super::{Pgflow, NOTIFY_CHANNEL};
use crate::error::{Error, Result};
use crate::message::OutgoingMessage;
use crate::queue_name::QueueName;

/// The shared body of the send statements: one multi-row INSERT from
/// parallel arrays, ending in `$conflict`. With `ON CONFLICT DO NOTHING`,
/// re-sending a message id (a spool replay) is idempotent while it is live;
/// that clause makes every row a speculative insertion (a fifth more work
/// per row), so a send on a connection of its own first goes without it
/// and only a key collision sends the batch again with it. On a broadcast
/// queue a message without a target becomes one copy per live subscriber,
/// addressed to it, with an id derived from the message id and the
/// subscriber (so a replay stays idempotent there too). A message without a
/// source gets `pgflow.default_source()` (the login role; migration 17).
/// On a targeted queue, a message without a target or for a target never
/// registered on the queue refuses the whole statement (`refused` names the
/// first; migration 19).
macro_rules! insert_cte {
    ($conflict:literal) => {
        concat!(
            r#"
WITH q AS (
    SELECT queue_name, delivery = 'broadcast' AS fan_out, delivery = 'targeted' AS targeted,
           subscriber_ttl_ms, pgflow.default_source() AS default_source
      FROM pgflow.queues WHERE queue_name = $1
), u AS (
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::int2[], $5::text[], $6::int4[], $7::uuid[],
                         $8::text[], $9::jsonb[], $10::float8[])
        WITH ORDINALITY AS u(id, target, priority, msg_type, schema_version, trace_id,
                             source, payload, delay_ms, ord)
), refused AS (
    SELECT u.target FROM u, q
     WHERE q.targeted
       AND (u.target = ''
            OR NOT EXISTS (SELECT 1 FROM pgflow.subscribers s
                            WHERE s.queue_name = q.queue_name AND s.subscriber = u.target))
     ORDER BY u.ord LIMIT 1
), subs AS (
    SELECT s.subscriber
      FROM pgflow.subscribers s JOIN q ON s.queue_name = q.queue_name
     WHERE q.fan_out AND s.last_seen > now() - q.subscriber_ttl_ms * interval '1 millisecond'
), r AS (
    SELECT u.*, u.id AS row_id, u.target AS row_target
      FROM u, q WHERE NOT (q.fan_out AND u.target = '')
    UNION ALL
    SELECT u.*, md5(u.id::text || '/' || subs.subscriber)::uuid, subs.subscriber
      FROM u, q, subs WHERE q.fan_out AND u.target = ''
), ins AS (
    INSERT INTO pgflow.messages
        (id, queue_name, target, priority, msg_type, schema_version, trace_id, source, payload, visible_at)
    SELECT r.row_id, q.queue_name, r.row_target, r.priority, r.msg_type, r.schema_version,
           r.trace_id, coalesce(r.source, q.default_source), r.payload,
           CASE WHEN r.delay_ms > 0 THEN now() + r.delay_ms * interval '1 millisecond' ELSE now() END
      FROM r, q
     WHERE NOT EXISTS (SELECT 1 FROM refused)
     ORDER BY r.ord, r.row_target
    "#,
            $conflict,
            r#"
    RETURNING 1
)
"#
        )
    };
}

/// The statement's last part: counts, without or with one NOTIFY for the
/// whole batch (delivered at commit).
macro_rules! insert_result {
    (plain) => {
        "SELECT (SELECT count(*) FROM q) AS queue_exists, (SELECT count(*) FROM ins) AS inserted,
       (SELECT target FROM refused) AS refused"
    };
    (notify) => {
        "SELECT (SELECT count(*) FROM q) AS queue_exists, (SELECT count(*) FROM ins) AS inserted,
       (SELECT target FROM refused) AS refused, pg_notify($11, $1)::text AS notified"
    };
}

/// `[plain, notify]`, each `[without, with]` `ON CONFLICT DO NOTHING`.
const INSERT_SQL: [[&str; 2]; 2] = [
    [
        concat!(insert_cte!(""), insert_result!(plain)),
        concat!(
            insert_cte!("ON CONFLICT (id) DO NOTHING"),
            insert_result!(plain)
        ),
    ],
    [
        concat!(insert_cte!(""), insert_result!(notify)),
        concat!(
            insert_cte!("ON CONFLICT (id) DO NOTHING"),
            insert_result!(notify)
        ),
    ],
];

impl Pgflow {
    /// Sends one message; returns its id. Concurrent calls on this handle
    /// share INSERT statements (see `coalesce`); the call returns once the
    /// message is committed.
    pub async fn send(&self, queue: &QueueName, msg: OutgoingMessage) -> Result<Uuid> {
        self.send_one(queue, msg, false).await
    }

    /// Sends one message and wakes listening consumers (one NOTIFY per statement).
    pub async fn send_with_notify(&self, queue: &QueueName, msg: OutgoingMessage) -> Result<Uuid> {
        self.send_one(queue, msg, true).await
    }

    async fn send_one(
        &self,
        queue: &QueueName,
        msg: OutgoingMessage,
        notify: bool,
    ) -> Result<Uuid> {
        msg.validate(self.options.max_payload_bytes)?;
        let id = msg.message_id();
        let coalescer = self.coalescer.get_or_init(|| {
            super::coalesce::Coalescer::start(self.pool.clone(), self.options.max_payload_bytes)
        });
        let (reply, rx) = oneshot::channel();
        let fallback = msg.clone();
        let req = SendRequest {
            queue: queue.clone(),
            msg,
            notify,
            reply,
        };
        if coalescer.submit(req) {
            if let Ok(res) = rx.await {
                return res.map(|()| id);
            }
        }
        // The flushers are gone (their runtime ended): send directly.
        // Re-sending the same id is idempotent.
        self.send_batch_inner(queue, std::slice::from_ref(&fallback), notify)
            .await?;
        Ok(id)
    }

    /// Sends many messages in one statement (FIFO in slice order). On a
    /// queue with [`QueueConfig::batch_storage`](crate::QueueConfig), two or
    /// more messages with one target and priority and no delay are stored as
    /// one batch row until they are claimed (see `pgflow.batches`, migration
    /// 15); delivery is the same.
    pub async fn send_batch(
        &self,
        queue: &QueueName,
        msgs: &[OutgoingMessage],
    ) -> Result<Vec<Uuid>> {
        self.send_batch_inner(queue, msgs, false).await
    }

    /// Sends many messages in one statement and issues one NOTIFY.
    pub async fn send_batch_with_notify(
        &self,
        queue: &QueueName,
        msgs: &[OutgoingMessage],
    ) -> Result<Vec<Uuid>> {
        self.send_batch_inner(queue, msgs, true).await
    }

    async fn send_batch_inner(
        &self,
        queue: &QueueName,
        msgs: &[OutgoingMessage],
        notify: bool,
    ) -> Result<Vec<Uuid>> {
        let mut conn = self.pool.acquire().await?;
        if batchable(msgs) && self.batch_modes.may_batch(queue) {
            let sent = insert_batch(
                &self.batch_modes,
                &mut conn,
                queue,
                msgs,
                notify,
                self.options.max_payload_bytes,
            )
            .await?;
            if let Some(ids) = sent {
                return Ok(ids);
            }
        }
        insert_messages(
            &mut conn,
            queue,
            msgs,
            notify,
            self.options.max_payload_bytes,
            Insert::Optimistic,
        )
        .await
    }

    /// Sends on the caller's connection, typically inside its transaction
    /// (`&mut *tx`): the messages become visible, and the NOTIFY fires, only
    /// when that transaction commits, together with the caller's own writes.
    pub async fn send_in_tx(
        &self,
        conn: &mut PgConnection,
        queue: &QueueName,
        msgs: &[OutgoingMessage],
        notify: bool,
    ) -> Result<Vec<Uuid>> {
        insert_messages(
            conn,
            queue,
            msgs,
            notify,
            self.options.max_payload_bytes,
            Insert::Idempotent,
        )
        .await
    }
}

/// How a send treats a message id that is already queued (a re-send): it
/// is skipped either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Insert without `ON CONFLICT`; on a key collision send the batch again
    /// with it. Only on a connection of the send's own (autocommit): the
    /// failed statement must not abort a caller's transaction.
    Optimistic,
    /// `ON CONFLICT DO NOTHING` from the start (inside a caller's transaction).
    Idempotent,
}

/// One multi-row INSERT of `msgs` into `queue` on `conn`.
pub(crate) async fn insert_messages(
    conn: &mut PgConnection,
    queue: &QueueName,
    msgs: &[OutgoingMessage],
    notify: bool,
    max_payload_bytes: usize,
    mode: Insert,
) -> Result<Vec<Uuid>> {
    {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let n = msgs.len();
        let mut ids = Vec::with_capacity(n);
        let mut targets = Vec::with_capacity(n);
        let mut priorities = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut traces = Vec::with_capacity(n);
        let mut sources = Vec::with_capacity(n);
        let mut delays = Vec::with_capacity(n);
        let mut encoded = Vec::with_capacity(n);
        for m in msgs {
            encoded.push(m.encode_payload(max_payload_bytes)?);
            ids.push(m.id);
            targets.push(m.target.clone().unwrap_or_default());
            priorities.push(m.priority);
            types.push(m.msg_type.clone());
            versions.push(m.schema_version);
            traces.push(m.trace_id);
            sources.push(m.source.clone());
            delays.push(m.delay.as_secs_f64() * 1000.0);
        }
        // Serialized once, by the check above; sent as they are.
        let payloads: Vec<_> = encoded.iter().map(|p| sqlx::types::Json(&**p)).collect();
        let run = |idempotent: bool| {
            let mut q = sqlx::query_as::<_, (i64, i64, Option<String>)>(
                INSERT_SQL[usize::from(notify)][usize::from(idempotent)],
            )
            .bind(queue.as_str())
            .bind(&ids)
            .bind(&targets)
            .bind(&priorities)
            .bind(&types)
            .bind(&versions)
            .bind(&traces)
            .bind(&sources)
            .bind(&payloads)
            .bind(&delays);
            if notify {
                q = q.bind(NOTIFY_CHANNEL);
            }
            q
        };
        let (queue_exists, inserted, refused) = match mode {
            Insert::Idempotent => run(true).fetch_one(&mut *conn).await?,
            Insert::Optimistic => match run(false).fetch_one(&mut *conn).await {
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                    run(true).fetch_one(&mut *conn).await?
                }
                r => r?,
            },
        };
        if queue_exists == 0 {
            return Err(Error::UnknownQueue(queue.to_string()));
        }
        if let Some(target) = refused {
            return Err(refused_target(queue, target));
        }
        metrics::counter!("pgflow_published_total", "queue" => queue.to_string())
            .increment(inserted.max(0) as u64);
        if (inserted as usize) < n {
            tracing::debug!(queue = %queue, duplicates = n - inserted as usize, "send skipped message ids that are already queued");
        }
        Ok(ids)
    }
}

/// The error for a message the targeted `queue` refused: no target, or one
/// that never registered on the queue.
pub(crate) fn refused_target(queue: &QueueName, target: String) -> Error {
    if target.is_empty() {
        Error::NoTarget(queue.to_string())
    } else {
        Error::UnknownTarget {
            queue: queue.to_string(),
            target,
        }
    }
}
