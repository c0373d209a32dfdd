//! Rollback triggers: the consumer of `rollback_triggers_queue` (targeted
//! at this instance, HIGH priority). The guardian found that an applied
//! change breached its safety profile; the instance restores the file from
//! the backup (or deletes it if it did not exist before), marks the
//! proposal `rolled_back` and emits `rollback_completed`.
//!
//! The proposal row is locked in the transaction that acks the trigger;
//! restoring is idempotent (the same backup every time), so a trigger
//! delivered again after a crash restores again, and a trigger for a
//! proposal already rolled back does nothing (counted as a duplicate).

use std::sync::Arc;

use pgflow_core::consumer::{async_trait, HandlerError, HandlerResult, TxHandler};
use pgflow_core::protocol::{self, RollbackReason, RollbackTrigger};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::{Delivery, MessageType};
use sqlx::PgConnection;

use crate::error::Error;
use crate::execution::workspace::{self, PathError};
use crate::instance::Instance;
use crate::store::{self, ProposalState};

/// Consumer of `rollback_triggers_queue` (transactional).
pub struct Rollbacks {
    inst: Arc<Instance>,
}

impl Rollbacks {
    /// The handler for this instance.
    pub fn new(inst: Arc<Instance>) -> Self {
        Self { inst }
    }
}

/// "error_rate_breach (threshold 0.1, actual 0.15)".
pub fn describe(t: &RollbackTrigger) -> String {
    let reason = match t.reason {
        RollbackReason::ErrorRateBreach => "error_rate_breach",
        RollbackReason::LatencyBreach => "latency_breach",
        RollbackReason::CostBreach => "cost_breach",
    };
    format!(
        "{reason} (threshold {}, actual {})",
        t.threshold.threshold, t.threshold.actual
    )
}

#[async_trait]
impl TxHandler for Rollbacks {
    async fn handle(&self, tx: &mut PgConnection, d: &Delivery) -> HandlerResult {
        let inst = &self.inst;
        let trigger: RollbackTrigger = protocol::decode(d)?;
        let Some(p) = store::lock(tx, &inst.id, trigger.proposal_id).await? else {
            return Err(HandlerError::fatal(format!(
                "rollback of proposal {}: not a proposal of {}",
                trigger.proposal_id, inst.id
            )));
        };
        match p.state()? {
            ProposalState::Applied => {}
            ProposalState::RolledBack => {
                tracing::info!(proposal_id = %p.id, "rollback delivered again; already rolled back, nothing to do");
                inst.counters.duplicate(RollbackTrigger::TYPE);
                store::count_duplicate(tx, &inst.id, p.id).await?;
                return Ok(());
            }
            ProposalState::ConsensusReached | ProposalState::Executing => {
                return Err(HandlerError::retryable(format!(
                    "proposal {} is still being applied; rolling back once it is",
                    p.id
                )))
            }
            other => {
                return Err(HandlerError::fatal(format!(
                    "rollback of proposal {}: it is {other}, nothing was applied",
                    p.id
                )))
            }
        }
        let path = {
            let (ws, file) = (inst.workspace.clone(), p.file.clone());
            tokio::task::spawn_blocking(move || ws.resolve(&file))
                .await
                .map_err(HandlerError::retryable)?
        };
        let path = match path {
            Ok(path) => path,
            Err(e @ PathError::Refused { .. }) => return Err(HandlerError::fatal(e)),
            Err(e @ PathError::Io { .. }) => return Err(HandlerError::retryable(e)),
        };
        let _guard = inst.workspace.lock(&path).await;
        let backup = match (p.backup_existed, p.backup_content) {
            (Some(true), Some(content)) => Some(content),
            (Some(false), _) => None,
            _ => {
                return Err(HandlerError::fatal(format!(
                    "rollback of proposal {}: no backup was recorded",
                    p.id
                )))
            }
        };
        let existed = backup.is_some();
        let restore_path = path.clone();
        tokio::task::spawn_blocking(move || match backup {
            Some(content) => workspace::write_atomic(&restore_path, &content),
            None => workspace::remove(&restore_path),
        })
        .await
        .map_err(HandlerError::retryable)?
        .map_err(|e| HandlerError::retryable(format!("restoring {}: {e}", p.file)))?;
        let reason = describe(&trigger);
        sqlx::query(
            "UPDATE singularity.proposals
                SET status = 'rolled_back', rollback_reason = $3, rolled_back_at = now(),
                    updated_at = now()
              WHERE id = $1 AND instance_id = $2",
        )
        .bind(p.id)
        .bind(&inst.id)
        .bind(&reason)
        .execute(&mut *tx)
        .await
        .map_err(Error::from)?;
        tracing::warn!(proposal_id = %p.id, file = %p.file, restored = existed, reason = %reason, "change rolled back");
        emit(
            Event::RollbackCompleted,
            &format!("{} {}: {reason}", p.id, p.file),
        );
        Ok(())
    }
}
