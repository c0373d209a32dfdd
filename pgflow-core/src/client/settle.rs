//! Settling claimed messages, always fenced by the claim's lease: ack
//! (archive or delete), nack (retry with backoff, or dead-letter), lease
//! extension, and release (give back without counting a failure).

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::deadlock::retry_on_deadlock;
use super::row_sql::{fenced, ACK_ROWS_SQL};
use super::Pgflow;
use crate::delivery::Receipt;
use crate::error::{Error, Result};

/// Longest error text stored with a message.
pub const MAX_ERROR_LEN: usize = 8 * 1024;

/// The ack of rows and batches (`pgflow.ack`, migrations 13 and 15): on
/// the queue pool when a lease is a batch's (else [`ACK_ROWS_SQL`]), and
/// always inside a caller's transaction, on the caller's session, where the
/// function's own settings keep its plan from scanning the table.
const ACK_SQL: &str = "SELECT * FROM pgflow.ack($1, $2, $3)";

/// Turns the live batches of these leases into rows that keep the lease
/// (migration 15): a nack, an extension or a release settles rows.
const UNBATCH_SQL: &str = "SELECT pgflow.unbatch($1)";

const NACK_SQL: &str = r#"
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bool[]) AS r(id, lease, error, fatal)
), t AS (
    SELECT m.id, r.error, (NOT r.fatal AND m.attempts <= q.max_retries) AS retry,
           q.retry_delay_ms, q.retry_max_delay_ms, m.attempts
      FROM pgflow.messages m
      JOIN r ON m.id = r.id AND m.lease = r.lease
      JOIN pgflow.queues q ON q.queue_name = m.queue_name
     WHERE m.id = ANY($1::uuid[]) AND m.visible_at > now()
       FOR UPDATE OF m
), retried AS (
    UPDATE pgflow.messages m
       SET lease = NULL,
           claimed_at = NULL,
           last_error = t.error,
           visible_at = now() + pgflow.retry_delay_ms(t.retry_delay_ms, t.retry_max_delay_ms,
                                                      t.attempts, random())
                              * interval '1 millisecond',
           history = m.history || jsonb_build_array(jsonb_build_object(
               'attempt', t.attempts, 'error', t.error, 'at', now(), 'outcome', 'retry'))
      FROM t
     WHERE m.id = t.id AND t.retry
    RETURNING m.id, m.visible_at
), dead AS (
    DELETE FROM pgflow.messages m USING t
     WHERE m.id = t.id AND NOT t.retry
    RETURNING m.*, t.error AS dlq_error
), ins AS (
    INSERT INTO pgflow.dlq
        (id, queue_name, target, priority, msg_type, schema_version, trace_id, source, payload,
         attempts, error, history, enqueued_at)
    SELECT id, queue_name, target, priority, msg_type, schema_version, trace_id, source, payload,
           attempts, dlq_error,
           history || jsonb_build_array(jsonb_build_object(
               'attempt', attempts, 'error', dlq_error, 'at', now(), 'outcome', 'dead_letter')),
           created_at
      FROM dead
)
SELECT id, visible_at AS retry_at FROM retried
UNION ALL
SELECT id, NULL::timestamptz FROM dead
"#;

const EXTEND_SQL: &str = concat!(
    "UPDATE pgflow.messages m
   SET visible_at = now() + $3 * interval '1 millisecond'
 WHERE ",
    fenced!("$1", "$2"),
    "
RETURNING m.id"
);

const RELEASE_SQL: &str = concat!(
    "UPDATE pgflow.messages m
   SET lease = NULL, claimed_at = NULL, visible_at = now(),
       attempts = greatest(m.attempts - 1, 0)
 WHERE ",
    fenced!("$1", "$2"),
    "
RETURNING m.id"
);

/// Why a message failed, and whether another attempt may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Human-readable reason, kept with the message and in the DLQ.
    pub error: String,
    /// A fatal failure goes to the DLQ at once, whatever retries remain.
    pub fatal: bool,
}

impl Failure {
    /// A failure that may succeed on retry.
    pub fn retryable(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            fatal: false,
        }
    }

    /// A failure no retry can fix (malformed message, unknown type, ...).
    pub fn fatal(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            fatal: true,
        }
    }
}

/// What a nack did to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackOutcome {
    /// Scheduled for another attempt at the given time.
    Retry {
        /// When it becomes visible again.
        at: DateTime<Utc>,
    },
    /// Moved to the dead-letter queue.
    DeadLettered,
}

/// Result of a batch ack: which receipts were settled and which had lost their lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckReport {
    /// Acked message ids.
    pub acked: Vec<Uuid>,
    /// Message ids whose lease had expired or been taken over: nothing changed for them.
    pub lost: Vec<Uuid>,
}

pub(super) fn split(receipts: &[Receipt]) -> (Vec<Uuid>, Vec<Uuid>) {
    receipts.iter().map(|r| (r.id, r.lease)).unzip()
}

/// The batches these leases name (see [`lease_batch`]), each once.
pub(super) fn batches_of(leases: &[Uuid]) -> Vec<i64> {
    let mut ids: Vec<i64> = leases.iter().filter_map(|l| lease_batch(*l)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

pub(super) fn lost(receipts: &[Receipt], done: &[Uuid]) -> Vec<Uuid> {
    receipts
        .iter()
        .map(|r| r.id)
        .filter(|id| !done.contains(id))
        .collect()
}

pub(super) fn truncate_error(e: &str) -> String {
    if e.len() <= MAX_ERROR_LEN {
        return e.to_string();
    }
    let mut end = MAX_ERROR_LEN;
    while !e.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (truncated)", &e[..end])
}

impl Pgflow {
    /// Acks one message: archived (or deleted when the queue keeps no
    /// archive). Fails with [`Error::LeaseLost`] when the lease expired or
    /// the message was claimed again; nothing changes then.
    pub async fn ack(&self, receipt: Receipt) -> Result<()> {
        let report = self.ack_batch(&[receipt]).await?;
        if report.acked.is_empty() {
            return Err(Error::LeaseLost { id: receipt.id });
        }
        Ok(())
    }

    /// Acks many messages in one statement.
    pub async fn ack_batch(&self, receipts: &[Receipt]) -> Result<AckReport> {
        if receipts.is_empty() {
            return Ok(AckReport::default());
        }
        let (ids, leases) = split(receipts);
        let batches = batches_of(&leases);
        let acked: Vec<Uuid> = retry_on_deadlock("ack", || {
            let q = if batches.is_empty() {
                sqlx::query_scalar(ACK_ROWS_SQL).bind(&ids).bind(&leases)
            } else {
                sqlx::query_scalar(ACK_SQL)
                    .bind(&ids)
                    .bind(&leases)
                    .bind(&batches)
            };
            q.fetch_all(&self.queue_pool)
        })
        .await?;
        let lost = lost(receipts, &acked);
        Ok(AckReport { acked, lost })
    }

    /// Acks inside the caller's transaction (transactional handlers): the ack
    /// commits or rolls back with the caller's writes.
    pub async fn ack_in_tx(&self, conn: &mut sqlx::PgConnection, receipt: Receipt) -> Result<()> {
        let report = self.ack_many_in_tx(conn, &[receipt]).await?;
        if report.acked.is_empty() {
            return Err(Error::LeaseLost { id: receipt.id });
        }
        Ok(())
    }

    /// Acks many messages inside the caller's transaction, in one
    /// statement (a message whose lease was lost is reported and left
    /// untouched).
    pub async fn ack_many_in_tx(
        &self,
        conn: &mut sqlx::PgConnection,
        receipts: &[Receipt],
    ) -> Result<AckReport> {
        // Not retried on a deadlock: that aborts the caller's transaction.
        let (ids, leases) = split(receipts);
        let acked: Vec<Uuid> = sqlx::query_scalar(ACK_SQL)
            .bind(&ids)
            .bind(&leases)
            .bind(batches_of(&leases))
            .fetch_all(&mut *conn)
            .await?;
        let lost = lost(receipts, &acked);
        Ok(AckReport { acked, lost })
    }

    /// Reports one failed attempt: retried after an exponential backoff
    /// with jitter while retries remain and the failure is not fatal, else
    /// dead-lettered with its error and history.
    pub async fn nack(&self, receipt: Receipt, failure: Failure) -> Result<NackOutcome> {
        let out = self.nack_batch(&[(receipt, failure)]).await?;
        out.into_iter()
            .next()
            .map(|(_, o)| o)
            .ok_or(Error::LeaseLost { id: receipt.id })
    }

    /// Nacks many messages in one statement. Returns the outcome of each
    /// message whose lease was still held; the others are left untouched.
    pub async fn nack_batch(
        &self,
        items: &[(Receipt, Failure)],
    ) -> Result<Vec<(Uuid, NackOutcome)>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = items.iter().map(|(r, _)| r.id).collect();
        let leases: Vec<Uuid> = items.iter().map(|(r, _)| r.lease).collect();
        let errors: Vec<String> = items
            .iter()
            .map(|(_, f)| truncate_error(&f.error))
            .collect();
        let fatal: Vec<bool> = items.iter().map(|(_, f)| f.fatal).collect();
        self.unbatch(&leases).await?;
        let rows: Vec<(Uuid, Option<DateTime<Utc>>)> = retry_on_deadlock("nack", || {
            sqlx::query_as(NACK_SQL)
                .bind(&ids)
                .bind(&leases)
                .bind(&errors)
                .bind(&fatal)
                .fetch_all(&self.queue_pool)
        })
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, at)| {
                let outcome = match at {
                    Some(at) => NackOutcome::Retry { at },
                    None => NackOutcome::DeadLettered,
                };
                (id, outcome)
            })
            .collect())
    }

    /// Extends the lease of a message still held (long-running handlers).
    pub async fn extend_lease(&self, receipt: Receipt, by: Duration) -> Result<()> {
        let done = self.extend_leases(&[receipt], by).await?;
        if done.is_empty() {
            return Err(Error::LeaseLost { id: receipt.id });
        }
        Ok(())
    }

    /// Extends many leases to `now + by`; returns the ids still held.
    pub async fn extend_leases(&self, receipts: &[Receipt], by: Duration) -> Result<Vec<Uuid>> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, leases) = split(receipts);
        let ms = by.as_millis().clamp(1, i32::MAX as u128) as i64;
        self.unbatch(&leases).await?;
        Ok(retry_on_deadlock("extend", || {
            sqlx::query_scalar(EXTEND_SQL)
                .bind(&ids)
                .bind(&leases)
                .bind(ms)
                .fetch_all(&self.queue_pool)
        })
        .await?)
    }

    /// Gives messages back to the queue at once without counting an attempt
    /// (graceful shutdown); returns the ids released.
    pub async fn release(&self, receipts: &[Receipt]) -> Result<Vec<Uuid>> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, leases) = split(receipts);
        self.unbatch(&leases).await?;
        Ok(retry_on_deadlock("release", || {
            sqlx::query_scalar(RELEASE_SQL)
                .bind(&ids)
                .bind(&leases)
                .fetch_all(&self.queue_pool)
        })
        .await?)
    }

    /// Turns the batches among `leases` into rows (see [`UNBATCH_SQL`]);
    /// nothing to do, and no round trip, when every lease is a row's.
    async fn unbatch(&self, leases: &[Uuid]) -> Result<()> {
        let mut batch: Vec<Uuid> = leases
            .iter()
            .copied()
            .filter(|l| is_batch_lease(*l))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        batch.sort_unstable();
        batch.dedup();
        retry_on_deadlock("unbatch", || {
            sqlx::query_scalar::<_, i64>(UNBATCH_SQL)
                .bind(&batch)
                .fetch_one(&self.queue_pool)
        })
        .await?;
        Ok(())
    }
}

/// Whether a lease is a batch's (`pgflow.batch_lease`: UUID version 8;
/// the client's own leases are version 4).
pub(crate) fn is_batch_lease(lease: Uuid) -> bool {
    lease.get_version_num() == 8
}

/// The batch a batch lease names: its first 48 bits (`pgflow.lease_batch`).
pub(crate) fn lease_batch(lease: Uuid) -> Option<i64> {
    if !is_batch_lease(lease) {
        return None;
    }
    let b = lease.as_bytes();
    Some(
        b[..6]
            .iter()
            .fold(0i64, |id, byte| id << 8 | i64::from(*byte)),
    )
}
