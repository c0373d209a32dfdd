//! The execution flow: the consumer of `proposals_for_execution_queue`
//! (targeted at this instance) applies an approved change to its file in
//! the workspace, with a backup, measures before and after, reports the
//! metrics to the guardian (`metrics_to_guardian_queue`) and marks the
//! proposal applied.
//!
//! The file cannot join a transaction, so the steps are ordered to make a
//! redelivery safe:
//!
//! 1. the path is resolved inside the workspace (refused: the proposal is
//!    marked `failed` with the reason, the message acked);
//! 2. the backup (previous content, or "did not exist") and the metrics
//!    before are recorded and committed, status `executing`, before the
//!    file is touched; a redelivery of an `executing` proposal reuses them;
//! 3. the proposal row is locked in the handler's transaction and must
//!    still be `executing`: the fence against the sweeper
//!    ([`crate::sweeper`]), which takes the same lock before it fails a
//!    stuck proposal and cancels its message. Either the sweeper comes
//!    first (nothing is written) or this execution commits first (the
//!    proposal is final, the sweeper leaves it alone);
//! 4. the file is written atomically (same content on every attempt);
//! 5. in the transaction that acks the message: status `applied`, metrics
//!    after, and the metrics message (the handler publishes and returns:
//!    the guardian's verdict arrives later as a rollback trigger, or not).
//!
//! A redelivered execution of a proposal already `applied`, `rolled_back`
//! or `failed` changes nothing and is counted as a duplicate.
//!
//! **The final word.** An execution that cannot succeed ends with its
//! proposal `failed` and the reason, whichever way it ends:
//!
//! * a refused path or payload: marked here, the message acked;
//! * a retryable failure (I/O on the workspace, the database) on every
//!   attempt, a handler that times out each time, a lease that keeps
//!   expiring (the holder crashed or stalled), a fatal failure: the message
//!   is dead-lettered by the queue, and a trigger on `pgflow.dlq`
//!   (migration 30) fails the proposal in that same transaction with the
//!   dead letter's error. This covers the paths where no handler code runs
//!   (a timeout, a lost lease, a crash) with one mechanism;
//! * anything else that leaves a proposal short of a final state (an
//!   outage, a lost message): the sweeper resolves it.

pub mod measure;
pub mod workspace;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use pgflow_core::consumer::{async_trait, HandlerError, HandlerResult, TxHandler};
use pgflow_core::protocol::{
    self, ExecutionMetrics, MetricsSnapshot, ProposalForExecution, ProposalStatus,
};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::{Delivery, MessageType};
use sqlx::PgConnection;

use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::store::{self, Proposal, ProposalState};
use workspace::{read_backup, write_atomic, PathError};

/// Consumer of `proposals_for_execution_queue` (transactional).
pub struct Executions {
    inst: Arc<Instance>,
}

impl Executions {
    /// The handler for this instance.
    pub fn new(inst: Arc<Instance>) -> Self {
        Self { inst }
    }
}

#[async_trait]
impl TxHandler for Executions {
    async fn handle(&self, tx: &mut PgConnection, d: &Delivery) -> HandlerResult {
        let inst = &self.inst;
        let exec: ProposalForExecution = match protocol::decode(d) {
            Ok(e) => e,
            Err(invalid) => return refuse_invalid(inst, tx, d, invalid).await,
        };
        let mut conn = inst.pg.pool().acquire().await.map_err(Error::from)?;
        let Some(p) = store::get(&mut conn, &inst.id, exec.proposal_id).await? else {
            return Err(HandlerError::fatal(format!(
                "proposal {} is not a proposal of {}",
                exec.proposal_id, inst.id
            )));
        };
        drop(conn);
        match p.state()? {
            ProposalState::ConsensusReached | ProposalState::Executing => {}
            done if done.is_final() => return already_done(inst, tx, &p, done).await,
            other => {
                return Err(HandlerError::fatal(format!(
                    "proposal {} is {other}: only approved proposals are executed",
                    p.id
                )))
            }
        }
        if exec.code_change.file != p.file || exec.code_change.change != p.change {
            tracing::warn!(proposal_id = %p.id, "execution message differs from the stored proposal; applying the stored change");
        }
        let path = match resolve(inst, &p.file).await {
            Ok(path) => path,
            Err(PathError::Refused { file, reason }) => {
                let why = format!("refused path {file:?}: {reason}");
                tracing::warn!(proposal_id = %p.id, reason = %why, "change not applied");
                store::mark_failed(tx, &inst.id, p.id, &why).await?;
                return Ok(());
            }
            Err(e @ PathError::Io { .. }) => return Err(HandlerError::retryable(e)),
        };
        let _guard = inst.workspace.lock(&path).await;
        let Some(before) = begin(inst, &p, &path).await? else {
            return Ok(());
        };
        // The fence: the proposal stays locked until the ack commits, and
        // is still `executing` (the sweeper may have failed it meanwhile).
        match store::lock(tx, &inst.id, p.id).await?.map(|l| l.state()) {
            Some(Ok(ProposalState::Executing)) => {}
            other => {
                tracing::info!(proposal_id = %p.id, state = ?other, "proposal left the executing state; nothing written");
                return Ok(());
            }
        }
        if let Err(e) = write(&path, p.change.clone().into_bytes()).await {
            // Retried; the last failure dead-letters the message, and with
            // it the proposal is failed (migration 30).
            return Err(HandlerError::retryable(format!(
                "cannot write {}: {e}",
                p.file
            )));
        }
        let after = inst.measurer.measure(inst.workspace.root()).await;
        finish(inst, tx, &p, before, after).await?;
        inst.applied.notify_one();
        Ok(())
    }
}

/// A redelivered execution of a proposal already applied, rolled back or
/// failed: counted as a duplicate, nothing else.
async fn already_done(
    inst: &Instance,
    tx: &mut PgConnection,
    p: &Proposal,
    state: ProposalState,
) -> HandlerResult {
    tracing::info!(proposal_id = %p.id, state = %state, "execution delivered again; already done, nothing to do");
    inst.counters.duplicate(ProposalForExecution::TYPE);
    store::count_duplicate(tx, &inst.id, p.id).await?;
    Ok(())
}

/// A payload that fails the protocol's checks. When it still names one of
/// this instance's approved proposals (a path that leaves the workspace,
/// say), that proposal is marked failed with the reason and the message is
/// acked; anything else goes to the DLQ with the reason.
async fn refuse_invalid(
    inst: &Instance,
    tx: &mut PgConnection,
    d: &Delivery,
    invalid: HandlerError,
) -> HandlerResult {
    if d.msg_type == ProposalForExecution::TYPE {
        if let Ok(raw) = d.decode::<ProposalForExecution>() {
            let why = format!("refused: {invalid}");
            if store::mark_failed(tx, &inst.id, raw.proposal_id, &why).await? {
                tracing::warn!(proposal_id = %raw.proposal_id, reason = %why, "change not applied");
                return Ok(());
            }
        }
    }
    Err(invalid)
}

async fn resolve(inst: &Instance, file: &str) -> Result<PathBuf, PathError> {
    let (ws, file) = (inst.workspace.clone(), file.to_string());
    tokio::task::spawn_blocking(move || ws.resolve(&file))
        .await
        .unwrap_or_else(|e| {
            Err(PathError::Io {
                file: String::new(),
                source: std::io::Error::other(e),
            })
        })
}

async fn write(path: &std::path::Path, content: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_atomic(&path, &content))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Step 2: records the backup and the metrics before, committed on their
/// own (status `executing`); on a redelivery returns those recorded then.
/// `None` when the proposal left the states it is executed in meanwhile
/// (the sweeper failed it): nothing is to be done.
async fn begin(
    inst: &Instance,
    p: &Proposal,
    path: &std::path::Path,
) -> Result<Option<MetricsSnapshot>> {
    if p.backup_existed.is_some() {
        if let Some(before) = &p.metrics_before {
            tracing::info!(proposal_id = %p.id, "resuming an interrupted execution with its recorded backup");
            return Ok(Some(serde_json::from_value(before.clone())?));
        }
    }
    let backup = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || read_backup(&path))
            .await
            .map_err(std::io::Error::other)??
    };
    let before = inst.measurer.measure(inst.workspace.root()).await;
    let n = sqlx::query(
        "UPDATE singularity.proposals
            SET status = 'executing', backup_existed = $3, backup_content = $4,
                metrics_before = $5, updated_at = now()
          WHERE id = $1 AND instance_id = $2
            AND (status = 'consensus_reached' OR (status = 'executing' AND backup_existed IS NULL))",
    )
    .bind(p.id)
    .bind(&inst.id)
    .bind(backup.is_some())
    .bind(backup.as_deref())
    .bind(serde_json::to_value(&before)?)
    .execute(inst.pg.pool())
    .await?
    .rows_affected();
    if n == 0 {
        // Another delivery recorded the backup meanwhile: use its record.
        let mut conn = inst.pg.pool().acquire().await?;
        let fresh = store::get(&mut conn, &inst.id, p.id)
            .await?
            .ok_or(Error::NotFound(p.id))?;
        return match (fresh.state()?, fresh.metrics_before) {
            (ProposalState::Executing, Some(b)) => Ok(Some(serde_json::from_value(b)?)),
            (state, _) if state.is_final() => {
                tracing::info!(proposal_id = %p.id, state = %state, "proposal became final during execution; nothing written");
                Ok(None)
            }
            (state, _) => Err(Error::Io(std::io::Error::other(format!(
                "proposal {} changed to {state} during execution",
                p.id
            )))),
        };
    }
    Ok(Some(before))
}

/// Step 4, in the ack's transaction: `applied`, the metrics after, and the
/// metrics message for the guardian.
async fn finish(
    inst: &Instance,
    tx: &mut PgConnection,
    p: &Proposal,
    before: MetricsSnapshot,
    after: MetricsSnapshot,
) -> Result<()> {
    let n = sqlx::query(
        "UPDATE singularity.proposals
            SET status = 'applied', metrics_after = $3, applied_at = now(), error = NULL,
                updated_at = now()
          WHERE id = $1 AND instance_id = $2 AND status = 'executing'",
    )
    .bind(p.id)
    .bind(&inst.id)
    .bind(serde_json::to_value(&after)?)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::Io(std::io::Error::other(format!(
            "proposal {} left the executing state during execution",
            p.id
        ))));
    }
    let metrics = ExecutionMetrics {
        proposal_id: p.id,
        instance_id: inst.id.clone(),
        agent_type: p.agent_type.clone(),
        metrics_before: before,
        metrics_after: after,
        status: ProposalStatus::Applied,
        timestamp: Utc::now(),
    };
    let msg = protocol::encode(&metrics)?
        .trace_id(p.trace_id)
        .source(&inst.id);
    if let Err(e) = inst
        .pg
        .send_in_tx(tx, &inst.queues.metrics, &[msg], true)
        .await
    {
        emit(
            Event::PublishFailed,
            &format!("execution_metrics of {}: {e}", p.id),
        );
        return Err(e.into());
    }
    tracing::info!(proposal_id = %p.id, file = %p.file, "change applied; metrics sent to the guardian");
    emit(Event::MetricsPublished, &p.id.to_string());
    Ok(())
}
