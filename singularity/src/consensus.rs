//! Consensus results: the consumer of `consensus_results_queue` (targeted
//! at this instance, the proposer). `approved`: the proposal becomes
//! `consensus_reached` and is queued for execution on
//! `proposals_for_execution_queue`, targeted at this same instance, in the
//! transaction that acks the result. `rejected`: `consensus_failed`. Both
//! store the votes, confidence and rationale. A result for a proposal
//! already decided is counted as a duplicate and changes nothing.

use std::sync::Arc;

use pgflow_core::consumer::{async_trait, HandlerError, HandlerResult, TxHandler};
use pgflow_core::protocol::{
    self, CodeChange, ConsensusResult, ConsensusStatus, ProposalForExecution,
};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::{Delivery, MessageType};
use sqlx::PgConnection;

use crate::error::Error;
use crate::instance::Instance;
use crate::store::{self, ProposalState};

/// Consumer of `consensus_results_queue` (transactional).
pub struct ConsensusResults {
    inst: Arc<Instance>,
}

impl ConsensusResults {
    /// The handler for this instance.
    pub fn new(inst: Arc<Instance>) -> Self {
        Self { inst }
    }
}

#[async_trait]
impl TxHandler for ConsensusResults {
    async fn handle(&self, tx: &mut PgConnection, d: &Delivery) -> HandlerResult {
        let inst = &self.inst;
        let result: ConsensusResult = protocol::decode(d)?;
        let Some(p) = store::lock(tx, &inst.id, result.proposal_id).await? else {
            return Err(HandlerError::fatal(format!(
                "consensus result for proposal {}: not a proposal of {}",
                result.proposal_id, inst.id
            )));
        };
        match p.state()? {
            ProposalState::Pending | ProposalState::Submitted => {}
            decided => {
                tracing::info!(proposal_id = %p.id, state = %decided, "consensus result delivered again; already decided");
                inst.counters.duplicate(ConsensusResult::TYPE);
                store::count_duplicate(tx, &inst.id, p.id).await?;
                return Ok(());
            }
        }
        let votes = serde_json::to_value(&result.votes).map_err(Error::from)?;
        let approved = result.status == ConsensusStatus::Approved;
        let mut state = if approved {
            ProposalState::ConsensusReached
        } else {
            ProposalState::ConsensusFailed
        };
        let mut error = None;
        if approved {
            let exec = ProposalForExecution {
                proposal_id: p.id,
                instance_id: inst.id.clone(),
                agent_type: p.agent_type.clone(),
                code_change: CodeChange {
                    file: p.file.clone(),
                    change: p.change.clone(),
                },
            };
            match protocol::encode(&exec) {
                Ok(msg) => {
                    let msg = msg.trace_id(p.trace_id).source(&inst.id).target(&inst.id);
                    if let Err(e) = inst
                        .pg
                        .send_in_tx(tx, &inst.queues.execution, &[msg], true)
                        .await
                    {
                        emit(
                            Event::PublishFailed,
                            &format!("proposal_for_execution of {}: {e}", p.id),
                        );
                        return Err(Error::from(e).into());
                    }
                }
                Err(e) => {
                    // Only a proposal stored around the checks gets here.
                    state = ProposalState::Failed;
                    error = Some(format!("approved but cannot be executed: {e}"));
                }
            }
        }
        sqlx::query(
            "UPDATE singularity.proposals
                SET status = $3, votes = $4, confidence = $5, rationale = $6, error = $7,
                    decided_at = now(), updated_at = now()
              WHERE id = $1 AND instance_id = $2",
        )
        .bind(p.id)
        .bind(&inst.id)
        .bind(state.as_str())
        .bind(votes)
        .bind(result.confidence)
        .bind(&result.decision_rationale)
        .bind(&error)
        .execute(&mut *tx)
        .await
        .map_err(Error::from)?;
        let detail = format!("{} confidence {}", p.id, result.confidence);
        if approved {
            tracing::info!(proposal_id = %p.id, confidence = result.confidence, state = %state, "consensus approved");
            emit(Event::ConsensusApproved, &detail);
        } else {
            tracing::info!(proposal_id = %p.id, confidence = result.confidence, "consensus rejected");
            emit(Event::ConsensusRejected, &detail);
        }
        Ok(())
    }
}
