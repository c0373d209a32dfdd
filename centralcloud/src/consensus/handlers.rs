//! The transactional consumers of the consensus engine. Each runs inside
//! the transaction that acks its message, so a proposal is never recorded
//! without its vote request, nor a decision without its result message.

use std::sync::Arc;

use pgflow_core::consumer::{async_trait, HandlerError, HandlerResult, TxHandler};
use pgflow_core::protocol::{self, queues, ConsensusVote, ProposalForConsensus, VoteRequest};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::Delivery;
use sqlx::PgConnection;

use super::store;
use super::DecidedBy;
use crate::engine::Ctx;
use crate::{queue, SOURCE};

/// Records a proposal and asks every live instance for a vote.
pub struct ProposalHandler(pub(crate) Arc<Ctx>);

#[async_trait]
impl TxHandler for ProposalHandler {
    async fn handle(&self, tx: &mut PgConnection, msg: &Delivery) -> HandlerResult {
        let p: ProposalForConsensus = protocol::decode(msg)?;
        emit(
            Event::ProposalReceived,
            &format!(
                "proposal_id={} instance_id={} agent_type={} trace_id={}",
                p.proposal_id, p.instance_id, p.agent_type, msg.trace_id
            ),
        );
        record_proposal(&self.0, tx, &p, msg)
            .await
            .map_err(HandlerError::from)
    }
}

async fn record_proposal(
    ctx: &Ctx,
    tx: &mut PgConnection,
    p: &ProposalForConsensus,
    msg: &Delivery,
) -> pgflow_core::Result<()> {
    let deadline_ms = i64::try_from(ctx.settings.vote_deadline.as_millis()).unwrap_or(i64::MAX);
    let Some(store::Recorded {
        deadline,
        expected_voters: voters,
    }) = store::insert_proposal(tx, p, msg, ctx.settings.quorum, deadline_ms).await?
    else {
        tracing::info!(proposal_id = %p.proposal_id, "proposal already recorded; duplicate ignored");
        return Ok(());
    };
    if voters.is_empty() {
        tracing::warn!(proposal_id = %p.proposal_id, "no live instance to vote; rejecting");
        if let Some(row) = store::lock_proposal(tx, p.proposal_id).await? {
            store::finalize(&ctx.pg, tx, &row, DecidedBy::NoVoters).await?;
        }
        return Ok(());
    }
    let request = VoteRequest {
        proposal_id: p.proposal_id,
        instance_id: p.instance_id.clone(),
        agent_type: p.agent_type.clone(),
        code_change: p.code_change.clone(),
        impact_score: p.impact_score,
        risk_score: p.risk_score,
        deadline,
    };
    let out = protocol::encode(&request)?
        .trace_id(msg.trace_id)
        .source(SOURCE);
    ctx.pg
        .send_in_tx(tx, &queue(queues::CONSENSUS_VOTE_REQUESTS)?, &[out], true)
        .await?;
    tracing::info!(
        proposal_id = %p.proposal_id,
        instance_id = %p.instance_id,
        voters = ?voters,
        %deadline,
        "proposal recorded; vote requested"
    );
    Ok(())
}

/// The flag of a vote from an instance that is not among the proposal's
/// expected voters: kept, never counted.
pub const NOT_ASKED: &str = "not an expected voter";

/// Records a vote and decides the proposal when the vote completes it (or
/// arrives past the deadline).
pub struct VoteHandler(pub(crate) Arc<Ctx>);

#[async_trait]
impl TxHandler for VoteHandler {
    async fn handle(&self, tx: &mut PgConnection, msg: &Delivery) -> HandlerResult {
        let v: ConsensusVote = protocol::decode(msg)?;
        let Some(p) = store::lock_proposal(tx, v.proposal_id).await? else {
            return Err(HandlerError::fatal(format!(
                "vote of {} for unknown proposal {}",
                v.instance_id, v.proposal_id
            )));
        };
        count_vote(&self.0, tx, &v, &p, msg)
            .await
            .map_err(HandlerError::from)
    }
}

async fn count_vote(
    ctx: &Ctx,
    tx: &mut PgConnection,
    v: &ConsensusVote,
    p: &store::ProposalRow,
    msg: &Delivery,
) -> pgflow_core::Result<()> {
    if msg.trace_id != p.trace_id {
        tracing::debug!(proposal_trace_id = %p.trace_id, "vote carries another trace id than its proposal");
    }
    let in_time = msg.created_at <= p.deadline;
    let expected = p.expected_voters.contains(&v.instance_id);
    let flag = (!expected).then_some(NOT_ASKED);
    let counted = p.is_collecting() && in_time && expected;
    let store::VoteRecorded {
        inserted,
        counted: voted,
    } = store::insert_vote(tx, v, msg, counted, flag).await?;
    let vote = crate::consensus::vote_str(v.vote);
    if !inserted {
        tracing::info!(proposal_id = %p.proposal_id, voter = %v.instance_id, "voter already voted; vote ignored");
    } else if !expected {
        metrics::counter!("centralcloud_votes_flagged_total").increment(1);
        tracing::warn!(proposal_id = %p.proposal_id, voter = %v.instance_id, vote, expected = ?p.expected_voters, "vote from an instance not asked to vote; recorded and flagged, not counted");
        return Ok(());
    } else if !p.is_collecting() {
        tracing::info!(proposal_id = %p.proposal_id, voter = %v.instance_id, vote, status = %p.status, "vote after the decision; recorded, not counted");
        return Ok(());
    } else if !in_time {
        tracing::info!(proposal_id = %p.proposal_id, voter = %v.instance_id, vote, "vote sent after the deadline; recorded, not counted");
    } else {
        tracing::info!(proposal_id = %p.proposal_id, voter = %v.instance_id, vote, "vote recorded");
    }
    if !p.is_collecting() {
        return Ok(());
    }
    // Every expected voter has a counted vote: decided, whatever the clock
    // says (this also spares the queue scan below for the last vote).
    let all_voted = p
        .expected_voters
        .iter()
        .all(|e| voted.iter().any(|c| &c.voter == e));
    if all_voted {
        store::finalize_on(&ctx.pg, tx, p, DecidedBy::AllVoted, &voted).await?;
    } else if p.past_deadline {
        if store::votes_pending(tx, p, msg.id).await? {
            tracing::info!(proposal_id = %p.proposal_id, "past the deadline; more votes sent in time are queued, the last one decides");
        } else {
            store::finalize_on(&ctx.pg, tx, p, DecidedBy::Deadline, &voted).await?;
        }
    }
    Ok(())
}
