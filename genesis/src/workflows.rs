//! The workflow consumer (seed 000's `Genesis.PgFlowWorkflowConsumer`):
//! one transactional handler for the four consumed queues that routes each
//! request on its `type` and runs it as a workflow:
//!
//! 1. decode; a request that cannot be decoded (unknown type, malformed or
//!    invalid payload) or answered (no instance to address) is dead-lettered
//!    with the reason and recorded as a failed workflow;
//! 2. `pending`: recorded (visible at once) while it waits for one of the
//!    shared workers (`max_parallel_workers`, or 1 when parallel processing
//!    is off; shared by all four queues);
//! 3. `running`: recorded, then the workflow runs until its deadline
//!    (`timeout_ms`); past it the workflow fails: a code analysis is
//!    cancelled, a database statement is cancelled by the server (its
//!    statement timeout is the time left) and the writes rolled back;
//! 4. `completed` / `failed`: the final state and the result message are
//!    written in the transaction that acks the request, so all three
//!    commit together or not at all.
//!
//! Database failures are retryable: the request is delivered again (the
//! workflow goes back to `pending`) until the queue's retries run out.

mod request;

use std::sync::Arc;
use std::time::Instant;

use pgflow_core::consumer::{async_trait, HandlerError, HandlerResult, TxHandler};
use pgflow_core::{Delivery, Pgflow};
use sqlx::PgConnection;
use tokio::sync::Semaphore;

use crate::config::WorkflowConfig;
use crate::status::WorkflowCounters;
use crate::store::{self, WorkflowMeta};
use request::{Ctx, Request};

/// What every handler of the four queues shares.
#[derive(Debug)]
pub(crate) struct Engine {
    pg: Pgflow,
    config: WorkflowConfig,
    workers: Arc<Semaphore>,
    counters: Arc<WorkflowCounters>,
}

fn db(e: sqlx::Error) -> HandlerError {
    HandlerError::retryable(format!("database error: {e}"))
}

impl Engine {
    /// An engine on `pg` with `config.workers()` workers.
    pub(crate) fn new(pg: Pgflow, config: WorkflowConfig, counters: Arc<WorkflowCounters>) -> Self {
        Self {
            workers: Arc::new(Semaphore::new(config.workers())),
            pg,
            config,
            counters,
        }
    }

    async fn handle(&self, tx: &mut PgConnection, msg: &Delivery) -> HandlerResult {
        let mut meta = WorkflowMeta {
            id: msg.id,
            queue: msg.queue_name.clone(),
            msg_type: msg.msg_type.clone(),
            request_id: None,
            instance: msg.source.clone(),
            trace_id: msg.trace_id,
        };
        let request = match Request::decode(msg) {
            Ok(r) => r,
            Err(e) => return Err(self.failed_without_result(msg, &meta, e).await),
        };
        meta.request_id = request.request_id();
        meta.instance = request.instance(msg);
        if request.has_result() && meta.instance.is_none() {
            let e = HandlerError::fatal(
                "no instance to send the result to: the payload has no instance_id and the envelope no source",
            );
            return Err(self.failed_without_result(msg, &meta, e).await);
        }
        match self.run(tx, msg, &request, &meta).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed_without_result(msg, &meta, e).await),
        }
    }

    async fn run(
        &self,
        tx: &mut PgConnection,
        msg: &Delivery,
        request: &Request,
        meta: &WorkflowMeta,
    ) -> HandlerResult {
        let pool = self.pg.pool();
        let detail = format!("attempt {}", msg.attempts);
        if store::mark_pending(pool, meta, &detail)
            .await
            .map_err(db)?
            .is_none()
        {
            tracing::info!(workflow_id = %meta.id, "workflow already completed; acknowledging the copy of its request");
            return Ok(());
        }
        // Held until the final state is written: at most `workers()`
        // workflows are ever running.
        let _permit = self
            .workers
            .acquire()
            .await
            .map_err(|_| HandlerError::retryable("the worker pool is closed"))?;
        store::mark_running(pool, meta.id).await.map_err(db)?;
        tracing::info!(workflow_id = %meta.id, msg_type = %meta.msg_type, "processing workflow");
        let started = Instant::now();
        let limit = self.config.timeout;
        let ctx = Ctx {
            msg,
            instance: meta.instance.as_deref(),
            min_job: self.config.min_job,
            deadline: started + limit,
        };
        let (outcome, timed_out) = match request.execute(tx, ctx).await? {
            Some(outcome) => (outcome, false),
            None => {
                let reason = format!("workflow timed out after {} ms", limit.as_millis());
                (request.failed(ctx, reason, started.elapsed())?, true)
            }
        };
        let took = started.elapsed();
        let ms = i64::try_from(took.as_millis()).unwrap_or(i64::MAX);
        store::finish(
            tx,
            meta.id,
            outcome.status,
            outcome.error.as_deref(),
            &outcome.record,
            ms,
        )
        .await
        .map_err(db)?;
        if let Some((queue, reply)) = outcome.reply {
            self.pg.send_in_tx(tx, &queue, &[reply], true).await?;
            tracing::debug!(queue = %queue, "published workflow result");
        }
        let status = store::status_name(outcome.status);
        self.counters.record(&meta.queue, outcome.status, timed_out);
        metrics::counter!("genesis_workflows_total", "queue" => meta.queue.clone(), "status" => status)
            .increment(1);
        metrics::histogram!("genesis_workflow_duration_seconds", "queue" => meta.queue.clone())
            .record(took.as_secs_f64());
        match &outcome.error {
            None => {
                tracing::info!(workflow_id = %meta.id, execution_time_ms = ms, "workflow completed")
            }
            Some(error) => {
                tracing::warn!(workflow_id = %meta.id, execution_time_ms = ms, %error, timed_out, "workflow failed")
            }
        }
        Ok(())
    }

    /// Records what a failed handler run means for the workflow (best
    /// effort: the queue settles the request either way): a fatal failure,
    /// or the last attempt's, is final (the request is dead-lettered); else
    /// the workflow is pending again until the retry.
    async fn failed_without_result(
        &self,
        msg: &Delivery,
        meta: &WorkflowMeta,
        e: HandlerError,
    ) -> HandlerError {
        let pool = self.pg.pool();
        let error = e.to_string();
        let recorded = if e.is_fatal() || msg.is_last_attempt() {
            tracing::warn!(workflow_id = %meta.id, %error, "workflow failed without a result; the request goes to the dead-letter queue");
            self.counters.record(
                &meta.queue,
                pgflow_core::protocol::ResultStatus::Failed,
                false,
            );
            metrics::counter!("genesis_workflows_total", "queue" => meta.queue.clone(), "status" => "failed")
                .increment(1);
            store::mark_failed(pool, meta, &error).await
        } else {
            let note = format!("attempt {} failed: {error}", msg.attempts);
            store::mark_retrying(pool, meta.id, &note).await
        };
        if let Err(db) = recorded {
            tracing::warn!(workflow_id = %meta.id, error = %db, "could not record the workflow's failure");
        }
        e
    }
}

/// The [`TxHandler`] of every consumed queue.
pub(crate) struct WorkflowHandler(pub(crate) Arc<Engine>);

#[async_trait]
impl TxHandler for WorkflowHandler {
    async fn handle(&self, tx: &mut PgConnection, msg: &Delivery) -> HandlerResult {
        self.0.handle(tx, msg).await
    }
}
