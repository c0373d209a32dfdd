//! Claiming: up to N messages in one `FOR UPDATE SKIP LOCKED` statement,
//! each leased for a visibility timeout under one fresh lease token.

use std::time::Duration;

use uuid::Uuid;

use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};

use super::deadlock::retry_on_deadlock;
use super::row_sql::{ACK_CLAIM_ROWS_SQL, CLAIM_ROWS_SQL};
use super::settle::{batches_of, is_batch_lease, lost, split, AckReport, Failure};
use super::Pgflow;
use crate::delivery::{Delivery, Receipt};
use crate::error::Result;
use crate::queue_name::QueueName;

/// Largest batch one claim may take.
pub const MAX_CLAIM_BATCH: usize = 10_000;

/// The claim (`pgflow.claim`, migration 15): rows and batches merged in
/// claim order, locked skipping what other claimers hold, leased; `$3` is
/// the most to take.
const CLAIM_SQL: &str = "SELECT * FROM pgflow.claim($1, $2, $3, $4, $5)";

/// An ack of earlier messages and the next claim in one call (one round
/// trip, one commit): what a busy consumer does between batches. `$6`/`$7`
/// are the receipts to ack, `$8` the batches their leases name; the rest is
/// [`CLAIM_SQL`]. The first result row
/// carries the acked ids and no message; the claimed rows follow.
const ACK_CLAIM_SQL: &str = "SELECT * FROM pgflow.claim($1, $2, $3, $4, $5, $6, $7, $8)";

/// How to claim.
#[derive(Debug, Clone, Default)]
pub struct ClaimOptions {
    /// Lease length; `None` uses the queue's visibility timeout.
    pub visibility_timeout: Option<Duration>,
    /// Claim the messages addressed to this instance (targeted / broadcast
    /// delivery); `None` claims the untargeted ones (competing consumers).
    pub target: Option<String>,
}

impl ClaimOptions {
    /// Claims messages addressed to `target`.
    pub fn for_target(target: impl Into<String>) -> Self {
        Self {
            target: Some(target.into()),
            ..Self::default()
        }
    }

    /// Sets the lease length.
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility_timeout = Some(d);
        self
    }
}

impl Pgflow {
    /// Claims up to `max` ready messages with the queue's default lease.
    pub async fn claim(&self, queue: &QueueName, max: usize) -> Result<Vec<Delivery>> {
        self.claim_with(queue, max, &ClaimOptions::default()).await
    }

    /// Claims up to `max` ready messages: highest priority first, FIFO within
    /// a priority, skipping rows other claimers hold. Messages whose lease
    /// already expired more often than the queue's retries allow (their
    /// consumer crashed or hung every time) are dead-lettered instead of
    /// being delivered again.
    pub async fn claim_with(
        &self,
        queue: &QueueName,
        max: usize,
        opts: &ClaimOptions,
    ) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let max = max.min(MAX_CLAIM_BATCH) as i32;
        let vt_ms = opts
            .visibility_timeout
            .map(|d| d.as_millis().clamp(1, i32::MAX as u128) as i64);
        let target = opts.target.as_deref().unwrap_or("");
        self.advance_floor_if_due(queue, target).await?;
        let lease = Uuid::new_v4();
        let rows = retry_on_deadlock("claim", || {
            sqlx::query(CLAIM_ROWS_SQL)
                .bind(queue.as_str())
                .bind(target)
                .bind(i64::from(max))
                .bind(lease)
                .bind(vt_ms)
                .fetch_all(&self.queue_pool)
        })
        .await?;
        let read = Claimed::read(&rows)?;
        let got = if read.batches_waiting {
            self.claim_fn(queue, target, max, lease, vt_ms).await?
        } else {
            read.messages
        };
        self.after_claim(queue, got).await
    }

    /// The claim through `pgflow.claim` (rows and batches).
    async fn claim_fn(
        &self,
        queue: &QueueName,
        target: &str,
        max: i32,
        lease: Uuid,
        vt_ms: Option<i64>,
    ) -> Result<Vec<Delivery>> {
        let rows = retry_on_deadlock("claim", || {
            sqlx::query(CLAIM_SQL)
                .bind(queue.as_str())
                .bind(target)
                .bind(max)
                .bind(lease)
                .bind(vt_ms)
                .fetch_all(&self.queue_pool)
        })
        .await?;
        Ok(Claimed::read(&rows)?.messages)
    }

    /// Acks `acks` and claims up to `max` more in one statement (one round
    /// trip and one commit). The ack is fenced exactly like
    /// [`Pgflow::ack_batch`]; both parts commit or neither does. (When the
    /// queue holds batches and none of `acks` is from one, the ack commits
    /// first and the claim follows in a second call.)
    pub async fn ack_and_claim(
        &self,
        queue: &QueueName,
        acks: &[Receipt],
        max: usize,
        opts: &ClaimOptions,
    ) -> Result<(AckReport, Vec<Delivery>)> {
        if acks.is_empty() {
            return Ok((
                AckReport::default(),
                self.claim_with(queue, max, opts).await?,
            ));
        }
        if max == 0 {
            return Ok((self.ack_batch(acks).await?, Vec::new()));
        }
        let max = max.min(MAX_CLAIM_BATCH) as i32;
        let vt_ms = opts
            .visibility_timeout
            .map(|d| d.as_millis().clamp(1, i32::MAX as u128) as i64);
        let target = opts.target.as_deref().unwrap_or("");
        self.advance_floor_if_due(queue, target).await?;
        let (ids, leases) = split(acks);
        let lease = Uuid::new_v4();
        let (acked, claimed) = if leases.iter().any(|l| is_batch_lease(*l)) {
            let batches = batches_of(&leases);
            let rows = retry_on_deadlock("ack_and_claim", || {
                sqlx::query(ACK_CLAIM_SQL)
                    .bind(queue.as_str())
                    .bind(target)
                    .bind(max)
                    .bind(lease)
                    .bind(vt_ms)
                    .bind(&ids)
                    .bind(&leases)
                    .bind(&batches)
                    .fetch_all(&self.queue_pool)
            })
            .await?;
            let read = Claimed::read(&rows)?;
            (read.acked, read.messages)
        } else {
            let rows = retry_on_deadlock("ack_and_claim", || {
                sqlx::query(ACK_CLAIM_ROWS_SQL)
                    .bind(queue.as_str())
                    .bind(target)
                    .bind(i64::from(max))
                    .bind(lease)
                    .bind(vt_ms)
                    .bind(&ids)
                    .bind(&leases)
                    .fetch_all(&self.queue_pool)
            })
            .await?;
            let read = Claimed::read(&rows)?;
            let claimed = if read.batches_waiting {
                self.claim_fn(queue, target, max, lease, vt_ms).await?
            } else {
                read.messages
            };
            (read.acked, claimed)
        };
        let lost = lost(acks, &acked);
        let claimed = self.after_claim(queue, claimed).await?;
        Ok((AckReport { acked, lost }, claimed))
    }

    /// Orders a claim's rows and dead-letters those delivered too often.
    async fn after_claim(
        &self,
        queue: &QueueName,
        mut rows: Vec<Delivery>,
    ) -> Result<Vec<Delivery>> {
        rows.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.seq.cmp(&b.seq)));

        if rows.iter().any(|d| d.attempts > d.max_retries + 1) {
            let (exhausted, ok): (Vec<_>, Vec<_>) = rows
                .into_iter()
                .partition(|d| d.attempts > d.max_retries + 1);
            let failures: Vec<_> = exhausted
                .iter()
                .map(|d| {
                    let error = format!(
                        "delivery attempts exhausted: the lease expired {} times without an ack (consumer crashed or timed out); last error: {}",
                        d.attempts - 1,
                        d.last_error.as_deref().unwrap_or("none")
                    );
                    tracing::warn!(queue = %queue, message_id = %d.id, trace_id = %d.trace_id, attempts = d.attempts, "dead-lettering a message whose lease kept expiring");
                    (d.receipt(), Failure::fatal(error))
                })
                .collect();
            self.nack_batch(&failures).await?;
            rows = ok;
        }
        Ok(rows)
    }
}

/// What a claim statement returned: the acked ids (an ack and claim),
/// whether batches wait (the row statements), the claimed messages.
#[derive(Debug, Default)]
struct Claimed {
    acked: Vec<Uuid>,
    batches_waiting: bool,
    messages: Vec<Delivery>,
}

impl Claimed {
    fn read(rows: &[PgRow]) -> Result<Self> {
        let mut out = Claimed {
            messages: Vec::with_capacity(rows.len()),
            ..Claimed::default()
        };
        for row in rows {
            if let Some(ids) = optional::<Vec<Uuid>>(row, "acked")? {
                out.acked = ids;
            }
            if let Some(waiting) = optional::<bool>(row, "batches_waiting")? {
                out.batches_waiting |= waiting;
            }
            if row.try_get::<Option<Uuid>, _>("id")?.is_some() {
                out.messages.push(Delivery::from_row(row)?);
            }
        }
        Ok(out)
    }
}

/// A column that only some of the statements return, or NULL.
fn optional<T>(row: &PgRow, column: &str) -> Result<Option<T>>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    match row.try_get::<Option<T>, _>(column) {
        Err(sqlx::Error::ColumnNotFound(_)) => Ok(None),
        r => Ok(r?),
    }
}
