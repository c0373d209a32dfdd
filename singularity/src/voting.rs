//! Votes: the consumer of `consensus_vote_requests_queue` (broadcast: every
//! live instance gets its own copy) answers on `consensus_votes_queue` with
//! a vote and its reason, decided by [`decide`] from the safety profile of
//! the proposal's agent type and this instance's own history with it. The
//! vote is recorded in `singularity.votes_cast` and sent in the
//! transaction that acks the request; a request delivered twice is answered
//! once.
//!
//! The policy, in order (the first rule that rejects decides):
//!
//! 1. **risk**: the profile tolerates a risk score (0-10 scale) of up to
//!    `50 × error_threshold`, at most 10 (seed 001's error threshold 0.10
//!    tolerates risk 5);
//! 2. **profile success rate**: at least the floor
//!    (`SINGULARITY_MIN_SUCCESS_RATE`, default 0.8); centralcloud's learning
//!    loop computes that rate from applied changes only (rejections are not
//!    failures) and lets old outcomes age, so an agent type below the floor
//!    is trusted again once its failures are old enough;
//! 3. **own history**: while the instance holds `SINGULARITY_MIN_HISTORY`
//!    recent outcomes of the agent type (applied or rolled back, each
//!    weighted by its age: halved every `singularity.history_half_life`,
//!    one day by default, migration 51), the share it kept must reach the
//!    same floor. Old failures age out of the count, so an agent type this
//!    rule locked out is judged by its profile again.

use std::sync::Arc;

use chrono::Utc;
use pgflow_core::consumer::{async_trait, HandlerResult, TxHandler};
use pgflow_core::protocol::{self, ConsensusVote, Vote, VoteRequest};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::{Delivery, MessageType};
use sqlx::PgConnection;

use crate::error::Error;
use crate::instance::Instance;
use crate::profiles::{self, ActiveProfile};
use crate::store::History;

/// Highest risk score of the seeds' scale.
pub const MAX_RISK: f64 = 10.0;
/// Risk tolerated per unit of error threshold.
pub const RISK_PER_ERROR_THRESHOLD: f64 = 50.0;

/// The floors votes apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VotePolicy {
    /// Lowest acceptable success rate (profile and own history).
    pub min_success_rate: f64,
    /// Outcomes needed before the own history counts.
    pub min_history: i64,
}

/// The risk score a profile tolerates.
pub fn tolerated_risk(profile: &ActiveProfile) -> f64 {
    (profile.profile.error_threshold * RISK_PER_ERROR_THRESHOLD).min(MAX_RISK)
}

/// Whether `recent` age-weighted outcomes reach `min`: compared to two
/// decimals, so that outcomes minutes old (weighing 0.999...) still count
/// as whole ones.
fn enough(recent: f64, min: i64) -> bool {
    (recent * 100.0).round() >= (min as f64) * 100.0
}

/// The vote on `req`, with its reason.
pub fn decide(
    req: &VoteRequest,
    profile: &ActiveProfile,
    history: History,
    policy: &VotePolicy,
) -> (Vote, String) {
    let agent = &req.agent_type;
    let tolerance = tolerated_risk(profile);
    let floor = policy.min_success_rate;
    if req.risk_score > tolerance {
        return (
            Vote::Reject,
            format!(
                "risk {} exceeds the {tolerance} that the {} safety profile of {agent} tolerates (error threshold {})",
                req.risk_score,
                profile.describe(),
                profile.profile.error_threshold
            ),
        );
    }
    if profile.profile.success_rate < floor {
        return (
            Vote::Reject,
            format!(
                "success rate {} in the {} safety profile of {agent} is below the floor {floor}",
                profile.profile.success_rate,
                profile.describe()
            ),
        );
    }
    let own = match history.success_rate() {
        Some(rate) if enough(history.outcomes(), policy.min_history) => {
            if rate < floor {
                return (
                    Vote::Reject,
                    format!(
                        "this instance rolled back {:.1} of {:.1} recent changes of {agent} (weighted by age; kept {rate:.2}), below the floor {floor}",
                        history.rolled_back,
                        history.outcomes()
                    ),
                );
            }
            format!(
                "{:.1} of {:.1} recent changes kept",
                history.applied,
                history.outcomes()
            )
        }
        _ => format!(
            "{:.1} recent outcomes of {agent}, too few to judge",
            history.outcomes()
        ),
    };
    (
        Vote::Approve,
        format!(
            "risk {} within the {tolerance} tolerated by the {} profile of {agent}; success rate {} >= {floor}; own history: {own}",
            req.risk_score,
            profile.describe(),
            profile.profile.success_rate
        ),
    )
}

/// Consumer of `consensus_vote_requests_queue` (broadcast, transactional).
pub struct VoteRequests {
    inst: Arc<Instance>,
}

impl VoteRequests {
    /// The handler for this instance.
    pub fn new(inst: Arc<Instance>) -> Self {
        Self { inst }
    }
}

#[async_trait]
impl TxHandler for VoteRequests {
    async fn handle(&self, tx: &mut PgConnection, d: &Delivery) -> HandlerResult {
        let inst = &self.inst;
        let req: VoteRequest = protocol::decode(d)?;
        if req.deadline < Utc::now() {
            tracing::info!(proposal_id = %req.proposal_id, deadline = %req.deadline, "vote request past its deadline; not voting");
            return Ok(());
        }
        let (profile, history) =
            profiles::active_with_history(tx, &inst.id, &req.agent_type).await?;
        let (vote, reason) = decide(&req, &profile, history, &inst.policy);
        let recorded: Option<i32> = sqlx::query_scalar(
            "INSERT INTO singularity.votes_cast
                 (instance_id, proposal_id, agent_type, vote, reason, profile_version, trace_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (instance_id, proposal_id) DO NOTHING
             RETURNING 1",
        )
        .bind(&inst.id)
        .bind(req.proposal_id)
        .bind(&req.agent_type)
        .bind(vote_name(vote))
        .bind(&reason)
        .bind(profile.version)
        .bind(d.trace_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::from)?;
        if recorded.is_none() {
            tracing::info!(proposal_id = %req.proposal_id, "vote request delivered again; already voted");
            inst.counters.duplicate(VoteRequest::TYPE);
            return Ok(());
        }
        let answer = ConsensusVote {
            proposal_id: req.proposal_id,
            instance_id: inst.id.clone(),
            vote,
            reason: reason.clone(),
        };
        let msg = protocol::encode(&answer)
            .map_err(Error::from)?
            .trace_id(d.trace_id)
            .source(&inst.id);
        if let Err(e) = inst
            .pg
            .send_in_tx(tx, &inst.queues.votes, &[msg], true)
            .await
        {
            emit(
                Event::PublishFailed,
                &format!("consensus_vote on {}: {e}", req.proposal_id),
            );
            return Err(Error::from(e).into());
        }
        tracing::info!(proposal_id = %req.proposal_id, vote = vote_name(vote), %reason, "voted");
        Ok(())
    }
}

/// The stored name of a vote.
pub fn vote_name(v: Vote) -> &'static str {
    match v {
        Vote::Approve => "approve",
        Vote::Reject => "reject",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgflow_core::protocol::{CodeChange, SafetyProfile};

    fn request(risk: f64) -> VoteRequest {
        VoteRequest {
            proposal_id: uuid::Uuid::nil(),
            instance_id: "s1".into(),
            agent_type: "BugFixerAgent".into(),
            code_change: CodeChange {
                file: "a.rs".into(),
                change: "x".into(),
            },
            impact_score: 8.0,
            risk_score: risk,
            deadline: Utc::now(),
        }
    }

    fn profile(success_rate: f64, error_threshold: f64) -> ActiveProfile {
        ActiveProfile {
            profile: SafetyProfile {
                success_rate,
                error_threshold,
                latency_threshold: 3000.0,
                cost_threshold: 0.1,
            },
            version: Some(2),
            source: "test".into(),
        }
    }

    const POLICY: VotePolicy = VotePolicy {
        min_success_rate: 0.8,
        min_history: 3,
    };

    #[test]
    fn risk_beyond_the_profile_is_rejected() {
        let p = profile(0.95, 0.10);
        let (v, why) = decide(&request(1.0), &p, History::default(), &POLICY);
        assert_eq!(v, Vote::Approve, "{why}");
        assert!(why.contains("within the 5"), "{why}");
        let (v, why) = decide(&request(8.0), &p, History::default(), &POLICY);
        assert_eq!(v, Vote::Reject);
        assert!(why.contains("risk 8 exceeds the 5"), "{why}");
        // A more tolerant profile accepts it.
        let (v, _) = decide(
            &request(8.0),
            &profile(0.95, 0.2),
            History::default(),
            &POLICY,
        );
        assert_eq!(v, Vote::Approve);
    }

    #[test]
    fn low_success_rates_are_rejected() {
        let (v, why) = decide(
            &request(1.0),
            &profile(0.5, 0.1),
            History::default(),
            &POLICY,
        );
        assert_eq!(v, Vote::Reject);
        assert!(why.contains("success rate 0.5"), "{why}");
        let poor = History {
            applied: 1.0,
            rolled_back: 2.0,
        };
        let (v, why) = decide(&request(1.0), &profile(0.95, 0.1), poor, &POLICY);
        assert_eq!(v, Vote::Reject);
        assert!(why.contains("rolled back 2.0 of 3.0 recent"), "{why}");
        // Too little history does not count.
        let short = History {
            applied: 0.0,
            rolled_back: 2.0,
        };
        let (v, _) = decide(&request(1.0), &profile(0.95, 0.1), short, &POLICY);
        assert_eq!(v, Vote::Approve);
    }
}
