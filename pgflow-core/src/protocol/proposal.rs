//! The proposal journey up to execution: a proposal goes to consensus
//! ([`ProposalForConsensus`]), CentralCloud asks every instance for a vote
//! ([`VoteRequest`], [`ConsensusVote`]), answers the proposing instance
//! ([`ConsensusResult`]), which then queues the change for its own execution
//! ([`ProposalForExecution`]).
//!
//! Fields follow seed 001 ("Message Types"); the vote and execution messages,
//! which the seeds do not define, follow DESIGN.md ("Life of a proposal").

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::validate::{self, Check, Validate};
use crate::message::MessageType;

/// Where a proposal is in its life (DESIGN.md: pending -> submitted ->
/// consensus_reached | consensus_failed -> executing -> applied -> rolled_back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    /// Created, not yet sent for consensus.
    Pending,
    /// Sent for consensus.
    Submitted,
    /// Consensus approved it.
    ConsensusReached,
    /// Consensus rejected it (or the deadline passed without quorum).
    ConsensusFailed,
    /// Being applied in the instance's workspace.
    Executing,
    /// Applied.
    Applied,
    /// Applied, then restored after a rollback trigger.
    RolledBack,
}

/// One code change: the new content of one file of the instance's workspace.
///
/// The seeds give only `%{file: "...", change: "..."}`. Here `change` is the
/// complete new content of `file` (the instance backs up the current content
/// before writing, so no `original` is carried). `file` is relative to the
/// workspace and may not leave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeChange {
    /// Path of the file, relative to the workspace (no `..`, not absolute).
    pub file: String,
    /// The new content of the file (at most [`validate::MAX_CODE_LEN`] bytes).
    pub change: String,
}

impl Validate for CodeChange {
    fn validate(&self) -> Check {
        validate::relative_path("file", &self.file)?;
        validate::code("change", &self.change)
    }
}

/// The proposer's view of the agent's record, sent with a proposal
/// (seed 001: `%{success_rate: 0.95, cost_factor: 2.0}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalSafety {
    /// Share of this agent's past changes that succeeded, in `[0, 1]`.
    pub success_rate: f64,
    /// Relative cost of the change (>= 0; 1.0 is an ordinary change).
    pub cost_factor: f64,
}

impl Validate for ProposalSafety {
    fn validate(&self) -> Check {
        validate::unit_interval("success_rate", self.success_rate)?;
        validate::non_negative("cost_factor", self.cost_factor)
    }
}

fn default_max_retries() -> u32 {
    3
}

/// A proposal sent for consensus (`proposals_for_consensus_queue`,
/// singularity -> centralcloud).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalForConsensus {
    /// The proposal.
    pub proposal_id: Uuid,
    /// The proposing instance (the consensus result goes back to it).
    pub instance_id: String,
    /// The agent that made the change (for example `BugFixerAgent`).
    pub agent_type: String,
    /// The change.
    pub code_change: CodeChange,
    /// Expected benefit (finite, >= 0; the seeds use a 0-10 scale).
    pub impact_score: f64,
    /// Expected risk (finite, >= 0; the seeds use a 0-10 scale).
    pub risk_score: f64,
    /// The agent's record as the proposer sees it.
    pub safety_profile: ProposalSafety,
    /// When the proposal was sent.
    pub timestamp: DateTime<Utc>,
    /// Informational: how often the proposer re-sent it (default 0). The
    /// queue's own attempt count is in the envelope.
    #[serde(default)]
    pub retry_count: u32,
    /// Informational: the proposer's retry limit (default 3).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

impl MessageType for ProposalForConsensus {
    const TYPE: &'static str = "proposal_for_consensus";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for ProposalForConsensus {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        validate::name("agent_type", &self.agent_type)?;
        self.code_change
            .validate()
            .map_err(|e| e.within("code_change"))?;
        validate::non_negative("impact_score", self.impact_score)?;
        validate::non_negative("risk_score", self.risk_score)?;
        self.safety_profile
            .validate()
            .map_err(|e| e.within("safety_profile"))
    }

    fn speaker(&self) -> Option<&str> {
        Some(&self.instance_id)
    }
}

/// CentralCloud asks every live instance to vote on a proposal
/// (`consensus_vote_requests_queue`, broadcast).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// The proposal.
    pub proposal_id: Uuid,
    /// The proposing instance.
    pub instance_id: String,
    /// The agent that made the change (votes use that agent's safety profile).
    pub agent_type: String,
    /// The change.
    pub code_change: CodeChange,
    /// Expected benefit (finite, >= 0).
    pub impact_score: f64,
    /// Expected risk (finite, >= 0).
    pub risk_score: f64,
    /// Votes arriving after this instant are not counted.
    pub deadline: DateTime<Utc>,
}

impl MessageType for VoteRequest {
    const TYPE: &'static str = "vote_request";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for VoteRequest {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        validate::name("agent_type", &self.agent_type)?;
        self.code_change
            .validate()
            .map_err(|e| e.within("code_change"))?;
        validate::non_negative("impact_score", self.impact_score)?;
        validate::non_negative("risk_score", self.risk_score)
    }
}

/// One instance's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vote {
    /// For the change.
    Approve,
    /// Against the change.
    Reject,
}

/// An instance's vote on a proposal (`consensus_votes_queue`,
/// singularity -> centralcloud).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusVote {
    /// The proposal voted on.
    pub proposal_id: Uuid,
    /// The voting instance.
    pub instance_id: String,
    /// The vote.
    pub vote: Vote,
    /// Why (for example "error rate of BugFixerAgent above 10%").
    pub reason: String,
}

impl MessageType for ConsensusVote {
    const TYPE: &'static str = "consensus_vote";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for ConsensusVote {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        validate::text("reason", &self.reason)
    }

    fn speaker(&self) -> Option<&str> {
        Some(&self.instance_id)
    }
}

/// The outcome of consensus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsensusStatus {
    /// Quorum approved the change.
    Approved,
    /// Quorum rejected it, or the deadline passed without quorum.
    Rejected,
}

/// The decision on a proposal, for the proposing instance
/// (`consensus_results_queue`, targeted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsensusResult {
    /// The proposal.
    pub proposal_id: Uuid,
    /// The proposing instance.
    pub instance_id: String,
    /// The decision.
    pub status: ConsensusStatus,
    /// The votes cast, by instance id.
    pub votes: BTreeMap<String, Vote>,
    /// Approvals / votes cast, in `[0, 1]`.
    pub confidence: f64,
    /// Why (seed 002's example omits it: defaults to empty).
    #[serde(default)]
    pub decision_rationale: String,
    /// When the decision was taken.
    pub timestamp: DateTime<Utc>,
}

impl MessageType for ConsensusResult {
    const TYPE: &'static str = "consensus_result";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for ConsensusResult {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        validate::items("votes", self.votes.len())?;
        for voter in self.votes.keys() {
            validate::name("votes", voter)?;
        }
        validate::unit_interval("confidence", self.confidence)?;
        validate::bounded(
            "decision_rationale",
            &self.decision_rationale,
            validate::MAX_TEXT_LEN,
        )
    }
}

/// An approved proposal queued for execution by the instance that proposed
/// it (`proposals_for_execution_queue`, targeted at that same instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalForExecution {
    /// The proposal.
    pub proposal_id: Uuid,
    /// The instance that executes it (the proposer).
    pub instance_id: String,
    /// The agent that made the change.
    pub agent_type: String,
    /// The change to apply.
    pub code_change: CodeChange,
}

impl MessageType for ProposalForExecution {
    const TYPE: &'static str = "proposal_for_execution";
    const SCHEMA_VERSION: i32 = 1;
}

impl Validate for ProposalForExecution {
    fn validate(&self) -> Check {
        validate::name("instance_id", &self.instance_id)?;
        validate::name("agent_type", &self.agent_type)?;
        self.code_change
            .validate()
            .map_err(|e| e.within("code_change"))
    }

    fn speaker(&self) -> Option<&str> {
        Some(&self.instance_id)
    }
}
