//! The two queues under test behind one interface, doing the same work:
//! send a batch, send one, claim a batch and ack it.

use std::future::Future;

use chrono::Utc;
use sqlx::Executor;

use crate::client::{ClaimOptions, Pgflow};
use crate::delivery::Receipt;
use crate::error::{Error, Result};
use crate::message::OutgoingMessage;
use crate::queue_config::QueueConfig;
use crate::queue_name::QueueName;

/// The payload every scenario sends: the shape of a seed proposal (~230 bytes).
pub fn payload(n: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "proposal_for_consensus",
        "proposal_id": format!("123e4567-e89b-12d3-a456-{n:012}"),
        "instance_id": "singularity_1",
        "agent_type": "BugFixerAgent",
        "code_change": {"file": "lib/foo.ex", "change": "x"},
        "impact_score": 8.0,
        "risk_score": 1.0,
        "safety_profile": {"success_rate": 0.95, "cost_factor": 2.0}
    })
}

/// One queue implementation.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Name in reports.
    fn name(&self) -> String;
    /// Empties the queue.
    fn reset(&self) -> impl Future<Output = Result<()>> + Send;
    /// Sends `n` messages in one call.
    fn send_batch(&self, n: usize) -> impl Future<Output = Result<()>> + Send;
    /// Sends one message.
    fn send_one(&self) -> impl Future<Output = Result<()>> + Send;
    /// What a consumer claimed and has not acked yet, carried to its next
    /// [`Backend::consume`] call.
    type Pending: Default + Send + 'static;
    /// Acks what `pending` holds and claims up to `n` more, acking them in
    /// this call or (for a backend that can ack and claim in one statement)
    /// leaving them in `pending` for the next one. `n = 0` only acks.
    fn consume(
        &self,
        pending: &mut Self::Pending,
        n: usize,
    ) -> impl Future<Output = Result<Consumed>> + Send;
}

/// What one [`Backend::consume`] call did.
#[derive(Debug, Default)]
pub struct Consumed {
    /// Messages acked by this call.
    pub acked: usize,
    /// Each message claimed by this call: its age at the claim (µs).
    pub claimed_ages: Vec<u64>,
}

/// pgflow, acking into the archive or deleting.
#[derive(Clone)]
pub struct PgflowBackend {
    pg: Pgflow,
    queue: QueueName,
    archive: bool,
}

impl PgflowBackend {
    /// Creates the queue.
    pub async fn new(pg: &Pgflow, archive: bool) -> Result<Self> {
        let queue = QueueName::new(if archive {
            "bench_archive"
        } else {
            "bench_delete"
        })?;
        let retention = if archive {
            std::time::Duration::from_secs(86_400)
        } else {
            std::time::Duration::ZERO
        };
        // Its consumers claim what a producer sends in one call: batch storage.
        pg.create_queue(
            &QueueConfig::new(queue.clone())
                .archive_retention(retention)
                .batch_storage(true),
        )
        .await?;
        Ok(Self {
            pg: pg.clone(),
            queue,
            archive,
        })
    }
}

fn age_us(created: chrono::DateTime<Utc>) -> u64 {
    (Utc::now() - created)
        .num_microseconds()
        .unwrap_or(0)
        .max(0) as u64
}

impl Backend for PgflowBackend {
    fn name(&self) -> String {
        format!(
            "pgflow ({})",
            if self.archive {
                "ack = archive"
            } else {
                "ack = delete"
            }
        )
    }

    async fn reset(&self) -> Result<()> {
        self.pg
            .pool()
            .execute("TRUNCATE pgflow.messages, pgflow.batches, pgflow.archive, pgflow.dlq")
            .await?;
        Ok(())
    }

    async fn send_batch(&self, n: usize) -> Result<()> {
        let msgs: Vec<_> = (0..n)
            .map(|i| OutgoingMessage::new("proposal_for_consensus", payload(i)))
            .collect();
        self.pg.send_batch(&self.queue, &msgs).await?;
        Ok(())
    }

    async fn send_one(&self) -> Result<()> {
        self.pg
            .send(
                &self.queue,
                OutgoingMessage::new("proposal_for_consensus", payload(0)),
            )
            .await?;
        Ok(())
    }

    /// The receipts of the last claim: a busy consumer acks them together
    /// with its next claim, in one statement (as the consumer runtime does).
    type Pending = Vec<Receipt>;

    async fn consume(&self, pending: &mut Vec<Receipt>, n: usize) -> Result<Consumed> {
        let (report, got) = self
            .pg
            .ack_and_claim(&self.queue, pending, n, &ClaimOptions::default())
            .await?;
        if let Some(id) = report.lost.first() {
            return Err(Error::LeaseLost { id: *id });
        }
        *pending = got.iter().map(|d| d.receipt()).collect();
        Ok(Consumed {
            acked: report.acked.len(),
            claimed_ages: got.iter().map(|d| age_us(d.created_at)).collect(),
        })
    }
}

/// The `pgmq` crate's `PGMQueue`, acking with `archive_batch` or `delete_batch`.
#[derive(Clone)]
#[allow(deprecated)]
pub struct PgmqBackend {
    q: pgmq::PGMQueue,
    archive: bool,
}

fn pgmq_err(e: pgmq::errors::PgmqError) -> Error {
    Error::Config(format!("pgmq: {e}"))
}

#[allow(deprecated)]
impl PgmqBackend {
    /// Creates the queue (client-side DDL, no extension).
    pub async fn new(pg: &Pgflow, archive: bool) -> Result<Self> {
        let q = pgmq::PGMQueue::new_with_pool(pg.pool().clone()).await;
        q.create("bench").await.map_err(pgmq_err)?;
        Ok(Self { q, archive })
    }
}

#[allow(deprecated)]
impl Backend for PgmqBackend {
    fn name(&self) -> String {
        format!(
            "pgmq crate ({})",
            if self.archive {
                "ack = archive_batch"
            } else {
                "ack = delete_batch"
            }
        )
    }

    async fn reset(&self) -> Result<()> {
        self.q
            .connection
            .execute("TRUNCATE pgmq.q_bench, pgmq.a_bench")
            .await?;
        Ok(())
    }

    async fn send_batch(&self, n: usize) -> Result<()> {
        let msgs: Vec<_> = (0..n).map(payload).collect();
        self.q.send_batch("bench", &msgs).await.map_err(pgmq_err)?;
        Ok(())
    }

    async fn send_one(&self) -> Result<()> {
        self.q.send("bench", &payload(0)).await.map_err(pgmq_err)?;
        Ok(())
    }

    /// Claims are acked in the same call.
    type Pending = ();

    async fn consume(&self, _pending: &mut (), n: usize) -> Result<Consumed> {
        if n == 0 {
            return Ok(Consumed::default());
        }
        let got = self
            .q
            .read_batch::<serde_json::Value>("bench", Some(30), n as i32)
            .await
            .map_err(pgmq_err)?
            .unwrap_or_default();
        if got.is_empty() {
            return Ok(Consumed::default());
        }
        let ages: Vec<u64> = got.iter().map(|m| age_us(m.enqueued_at)).collect();
        let ids: Vec<i64> = got.iter().map(|m| m.msg_id).collect();
        if self.archive {
            self.q
                .archive_batch("bench", &ids)
                .await
                .map_err(pgmq_err)?;
        } else {
            self.q.delete_batch("bench", &ids).await.map_err(pgmq_err)?;
        }
        Ok(Consumed {
            acked: ages.len(),
            claimed_ages: ages,
        })
    }
}
