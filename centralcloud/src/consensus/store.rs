//! SQL on `centralcloud.proposals` and `centralcloud.votes`, always on the
//! caller's connection (the transaction of the message being handled or of
//! the decider), and [`finalize`]: the one place a proposal is decided and
//! its result sent, together.

use chrono::{DateTime, Utc};
use pgflow_core::protocol::{self, queues, ConsensusResult, ConsensusVote, ProposalForConsensus};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::{Delivery, Pgflow, Result};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{decide, status_str, vote_str, CastVote, DecidedBy, Decision};
use crate::{queue, SOURCE};

/// A proposal as the engine needs it to count and decide.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProposalRow {
    /// The proposal.
    pub proposal_id: Uuid,
    /// The proposing instance.
    pub instance_id: String,
    /// `collecting`, `approved` or `rejected`.
    pub status: String,
    /// The instances asked to vote.
    pub expected_voters: Vec<String>,
    /// The quorum in force when it arrived.
    pub quorum: f64,
    /// Votes sent after this are not counted.
    pub deadline: DateTime<Utc>,
    /// The journey's trace id.
    pub trace_id: Uuid,
    /// Whether the database clock has passed the deadline.
    pub past_deadline: bool,
}

impl ProposalRow {
    /// Still waiting for votes.
    pub fn is_collecting(&self) -> bool {
        self.status == "collecting"
    }
}

const ROW_COLUMNS: &str = "proposal_id, instance_id, status, expected_voters, quorum, deadline, \
                           trace_id, deadline <= now() AS past_deadline";

/// A proposal just recorded: its deadline and the instances asked to vote.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recorded {
    /// Votes sent after this are not counted.
    pub deadline: DateTime<Utc>,
    /// The live subscribers of the vote-request queue when it was recorded
    /// (who get a copy of a vote request sent in this transaction).
    pub expected_voters: Vec<String>,
}

/// Records a proposal with its deadline `vote_deadline_ms` from now and the
/// live instances as its expected voters, in one statement; `None` when the
/// proposal was already recorded.
pub async fn insert_proposal(
    conn: &mut PgConnection,
    p: &ProposalForConsensus,
    msg: &Delivery,
    quorum: f64,
    vote_deadline_ms: i64,
) -> Result<Option<Recorded>> {
    let code_change = serde_json::to_value(&p.code_change)?;
    let safety = serde_json::to_value(&p.safety_profile)?;
    Ok(sqlx::query_as(
        "INSERT INTO centralcloud.proposals
             (proposal_id, instance_id, agent_type, code_change, impact_score, risk_score,
              proposer_safety, quorum, deadline, trace_id, message_id, proposed_at,
              expected_voters)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, now() + $9 * interval '1 millisecond', $10, $11, $12,
                ARRAY(SELECT subscriber FROM public.pgflow_subscribers
                       WHERE queue_name = $13 AND live ORDER BY subscriber)
         ON CONFLICT (proposal_id) DO NOTHING
         RETURNING deadline, expected_voters",
    )
    .bind(p.proposal_id)
    .bind(&p.instance_id)
    .bind(&p.agent_type)
    .bind(code_change)
    .bind(p.impact_score)
    .bind(p.risk_score)
    .bind(safety)
    .bind(quorum)
    .bind(vote_deadline_ms)
    .bind(msg.trace_id)
    .bind(msg.id)
    .bind(p.timestamp)
    .bind(queues::CONSENSUS_VOTE_REQUESTS)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Locks the proposal's row for the rest of the transaction (votes on one
/// proposal are counted one transaction at a time).
pub async fn lock_proposal(conn: &mut PgConnection, id: Uuid) -> Result<Option<ProposalRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM centralcloud.proposals WHERE proposal_id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Proposals [`lock_due`] examines per call, oldest deadline first.
pub const DUE_WINDOW: i64 = 300;

/// Locks up to `limit` proposals still collecting past their deadline,
/// skipping those another transaction holds and those with a vote sent in
/// time still waiting in the votes queue (it is counted when handled; its
/// handler then decides). Only the [`DUE_WINDOW`] oldest due proposals
/// are examined, so a deep votes queue (thousands due, all with votes
/// queued) costs a bounded scan per call; as the queue drains, their last
/// votes decide them and the window moves on.
pub async fn lock_due(conn: &mut PgConnection, limit: i64) -> Result<Vec<ProposalRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM centralcloud.proposals p
          WHERE p.proposal_id IN (
                SELECT proposal_id FROM centralcloud.proposals
                 WHERE status = 'collecting' AND deadline <= now()
                 ORDER BY deadline LIMIT $2)
            AND p.status = 'collecting' AND p.deadline <= now()
            AND NOT centralcloud.votes_queued(p.proposal_id, p.deadline, NULL)
          ORDER BY p.deadline
          LIMIT $1
          FOR UPDATE OF p SKIP LOCKED"
    ))
    .bind(limit)
    .bind(DUE_WINDOW)
    .fetch_all(&mut *conn)
    .await?)
}

/// Whether votes on `p` sent before its deadline, other than message
/// `except`, still wait in the votes queue (queued while centralcloud was
/// down, or being handled now): the deadline decision waits for the last.
pub async fn votes_pending(conn: &mut PgConnection, p: &ProposalRow, except: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT centralcloud.votes_queued($1, $2, $3)")
            .bind(p.proposal_id)
            .bind(p.deadline)
            .bind(except)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// A vote as recorded: whether it was new, and the proposal's counted
/// votes with it.
#[derive(Debug, Clone)]
pub struct VoteRecorded {
    /// False when this voter had already voted (the first vote stands).
    pub inserted: bool,
    /// The counted votes of the proposal, this one included when counted.
    pub counted: Vec<CastVote>,
}

/// Records a vote and reads the proposal's counted votes, in one statement
/// (run after [`lock_proposal`], so that every vote committed before the
/// lock was granted is in its snapshot). A `flag` (why the vote is kept but
/// never counted) implies `counted` false.
pub async fn insert_vote(
    conn: &mut PgConnection,
    v: &ConsensusVote,
    msg: &Delivery,
    counted: bool,
    flag: Option<&str>,
) -> Result<VoteRecorded> {
    let (inserted, voters, votes, reasons): (bool, Vec<String>, Vec<String>, Vec<String>) =
        sqlx::query_as(
            "WITH ins AS (
                 INSERT INTO centralcloud.votes
                     (proposal_id, voter, vote, reason, counted, trace_id, message_id, sent_at,
                      flag)
                 VALUES ($1, $2, $3, $4, $5 AND $9::text IS NULL, $6, $7, $8, $9)
                 ON CONFLICT (proposal_id, voter) DO NOTHING
                 RETURNING voter, vote, reason, counted)
             SELECT EXISTS (SELECT 1 FROM ins),
                    coalesce(array_agg(c.voter ORDER BY c.voter), '{}'),
                    coalesce(array_agg(c.vote ORDER BY c.voter), '{}'),
                    coalesce(array_agg(c.reason ORDER BY c.voter), '{}')
               FROM (SELECT voter, vote, reason FROM centralcloud.votes
                      WHERE proposal_id = $1 AND counted
                     UNION ALL
                     SELECT voter, vote, reason FROM ins WHERE counted) c",
        )
        .bind(v.proposal_id)
        .bind(&v.instance_id)
        .bind(vote_str(v.vote))
        .bind(&v.reason)
        .bind(counted)
        .bind(msg.trace_id)
        .bind(msg.id)
        .bind(msg.created_at)
        .bind(flag)
        .fetch_one(&mut *conn)
        .await?;
    let counted = voters
        .into_iter()
        .zip(votes)
        .zip(reasons)
        .map(|((voter, vote), reason)| cast_vote(voter, &vote, reason))
        .collect();
    Ok(VoteRecorded { inserted, counted })
}

fn cast_vote(voter: String, vote: &str, reason: String) -> CastVote {
    CastVote {
        voter,
        vote: if vote == "approve" {
            protocol::Vote::Approve
        } else {
            protocol::Vote::Reject
        },
        reason,
    }
}

/// The counted votes of a proposal, by voter.
pub async fn counted_votes(conn: &mut PgConnection, id: Uuid) -> Result<Vec<CastVote>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT voter, vote, reason FROM centralcloud.votes
          WHERE proposal_id = $1 AND counted ORDER BY voter",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(voter, vote, reason)| cast_vote(voter, &vote, reason))
        .collect())
}

/// The voters of `id` whose votes were kept but flagged (never counted).
pub async fn flagged_voters(conn: &mut PgConnection, id: Uuid) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT voter FROM centralcloud.votes
          WHERE proposal_id = $1 AND flag IS NOT NULL ORDER BY voter",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?)
}

/// Decides `p` (whose row the caller holds locked) on its counted votes
/// (read here) and sends the result to the proposing instance, in the
/// caller's transaction. Returns `None` when the proposal was already
/// decided (by another worker or process).
pub async fn finalize(
    pg: &Pgflow,
    conn: &mut PgConnection,
    p: &ProposalRow,
    by: DecidedBy,
) -> Result<Option<Decision>> {
    let votes = counted_votes(conn, p.proposal_id).await?;
    finalize_on(pg, conn, p, by, &votes).await
}

/// [`finalize`] on `votes`, the proposal's counted votes the caller has
/// just read under the row lock.
pub async fn finalize_on(
    pg: &Pgflow,
    conn: &mut PgConnection,
    p: &ProposalRow,
    by: DecidedBy,
    votes: &[CastVote],
) -> Result<Option<Decision>> {
    let mut decision = decide(votes, &p.expected_voters, p.quorum, by);
    let flagged = flagged_voters(conn, p.proposal_id).await?;
    decision.rationale = super::note_flagged(std::mem::take(&mut decision.rationale), &flagged);
    let result = ConsensusResult {
        proposal_id: p.proposal_id,
        instance_id: p.instance_id.clone(),
        status: decision.status,
        votes: decision.votes.clone(),
        confidence: decision.confidence,
        decision_rationale: decision.rationale.clone(),
        timestamp: Utc::now(),
    };
    let msg = protocol::encode(&result)?
        .target(&p.instance_id)
        .trace_id(p.trace_id)
        .source(SOURCE);
    let updated = sqlx::query(
        "UPDATE centralcloud.proposals
            SET status = $2, confidence = $3, rationale = $4, decided_by = $5,
                decided_at = now(), result_message_id = $6
          WHERE proposal_id = $1 AND status = 'collecting'",
    )
    .bind(p.proposal_id)
    .bind(status_str(decision.status))
    .bind(decision.confidence)
    .bind(&decision.rationale)
    .bind(by.as_str())
    .bind(msg.message_id())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(None);
    }
    match pg
        .send_in_tx(conn, &queue(queues::CONSENSUS_RESULTS)?, &[msg], true)
        .await
    {
        Ok(_) => {}
        // A proposer that never consumed its results (it never ran, or an
        // operator proposed in its name): the decision stands, nobody can
        // receive it, and other proposals are decided as usual. (The send
        // stored nothing and aborted nothing: the transaction goes on.)
        Err(e @ (pgflow_core::Error::UnknownTarget { .. } | pgflow_core::Error::NoTarget(_))) => {
            metrics::counter!("centralcloud_results_undeliverable_total").increment(1);
            tracing::warn!(proposal_id = %p.proposal_id, instance_id = %p.instance_id, error = %e, "consensus decided, but the proposer cannot receive the result");
        }
        Err(e) => return Err(e),
    }
    tracing::info!(
        proposal_id = %p.proposal_id,
        trace_id = %p.trace_id,
        instance_id = %p.instance_id,
        status = status_str(decision.status),
        confidence = decision.confidence,
        decided_by = by.as_str(),
        votes = decision.votes.len(),
        "consensus decided"
    );
    emit(
        Event::ConsensusResultPublished,
        &format!(
            "proposal_id={} instance_id={} status={} confidence={:.4} trace_id={}",
            p.proposal_id,
            p.instance_id,
            status_str(decision.status),
            decision.confidence,
            p.trace_id
        ),
    );
    Ok(Some(decision))
}
