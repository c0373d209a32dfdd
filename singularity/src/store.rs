//! The `singularity.proposals` table: a proposal's state and the queries
//! the flows share (look up, lock, count by state, an agent type's history,
//! duplicate deliveries, failures).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pgflow_core::protocol::ProposalStatus;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Where a proposal is. The protocol's [`ProposalStatus`] plus `failed`:
/// approved, but the change could not be applied (the reason is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Created, not yet sent for consensus.
    Pending,
    /// Sent for consensus.
    Submitted,
    /// Approved; queued for execution.
    ConsensusReached,
    /// Rejected.
    ConsensusFailed,
    /// Being applied (the backup is recorded).
    Executing,
    /// Applied.
    Applied,
    /// Applied, then restored after a rollback trigger.
    RolledBack,
    /// Approved but not applicable (for example a path leaving the workspace).
    Failed,
}

impl ProposalState {
    /// Every state, in life order.
    pub const ALL: [ProposalState; 8] = [
        ProposalState::Pending,
        ProposalState::Submitted,
        ProposalState::ConsensusReached,
        ProposalState::ConsensusFailed,
        ProposalState::Executing,
        ProposalState::Applied,
        ProposalState::RolledBack,
        ProposalState::Failed,
    ];

    /// The states a proposal may still leave: pending, submitted,
    /// consensus_reached, executing. The others are final. (The SQL of
    /// `singularity.fail_proposal`, migration 30, names the same four.)
    pub const NOT_FINAL: [ProposalState; 4] = [
        ProposalState::Pending,
        ProposalState::Submitted,
        ProposalState::ConsensusReached,
        ProposalState::Executing,
    ];

    /// Whether the proposal's life is over (nothing more happens to it
    /// except a rollback of an applied change).
    pub fn is_final(self) -> bool {
        !Self::NOT_FINAL.contains(&self)
    }

    /// The name stored in `singularity.proposals.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Pending => "pending",
            ProposalState::Submitted => "submitted",
            ProposalState::ConsensusReached => "consensus_reached",
            ProposalState::ConsensusFailed => "consensus_failed",
            ProposalState::Executing => "executing",
            ProposalState::Applied => "applied",
            ProposalState::RolledBack => "rolled_back",
            ProposalState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::Config(format!("unknown proposal status {s:?} in the database")))
    }

    /// The protocol's status, where there is one (`failed` has none).
    pub fn to_protocol(self) -> Option<ProposalStatus> {
        Some(match self {
            ProposalState::Pending => ProposalStatus::Pending,
            ProposalState::Submitted => ProposalStatus::Submitted,
            ProposalState::ConsensusReached => ProposalStatus::ConsensusReached,
            ProposalState::ConsensusFailed => ProposalStatus::ConsensusFailed,
            ProposalState::Executing => ProposalStatus::Executing,
            ProposalState::Applied => ProposalStatus::Applied,
            ProposalState::RolledBack => ProposalStatus::RolledBack,
            ProposalState::Failed => return None,
        })
    }
}

impl std::fmt::Display for ProposalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `singularity.proposals`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Proposal {
    /// The proposal id.
    pub id: Uuid,
    /// The proposing (and executing) instance.
    pub instance_id: String,
    /// The agent that made the change.
    pub agent_type: String,
    /// File relative to the workspace.
    pub file: String,
    /// The file's complete new content.
    pub change: String,
    /// Expected benefit.
    pub impact_score: f64,
    /// Expected risk.
    pub risk_score: f64,
    /// Relative cost of the change.
    pub cost_factor: f64,
    /// The stored state name (see [`Proposal::state`]).
    pub status: String,
    /// The journey's trace id.
    pub trace_id: Uuid,
    /// Votes of the consensus decision, by instance.
    pub votes: Option<serde_json::Value>,
    /// Approvals / votes.
    pub confidence: Option<f64>,
    /// Why consensus decided so.
    pub rationale: Option<String>,
    /// Whether the file existed before the change (None: not executed yet).
    pub backup_existed: Option<bool>,
    /// The file's content before the change.
    pub backup_content: Option<Vec<u8>>,
    /// Metrics measured before the change.
    pub metrics_before: Option<serde_json::Value>,
    /// Metrics measured after the change.
    pub metrics_after: Option<serde_json::Value>,
    /// Why execution failed.
    pub error: Option<String>,
    /// Why it was rolled back.
    pub rollback_reason: Option<String>,
    /// Deliveries that found the work already done.
    pub duplicate_deliveries: i32,
    /// When the pattern miner reported it.
    pub pattern_reported_at: Option<DateTime<Utc>>,
    /// When stored.
    pub created_at: DateTime<Utc>,
    /// When applied.
    pub applied_at: Option<DateTime<Utc>>,
    /// When rolled back.
    pub rolled_back_at: Option<DateTime<Utc>>,
}

impl Proposal {
    /// The state.
    pub fn state(&self) -> Result<ProposalState> {
        ProposalState::parse(&self.status)
    }
}

/// The columns of [`Proposal`], for `SELECT` (a literal, so the statements
/// stay constant text).
macro_rules! proposal_columns {
    () => {
        "id, instance_id, agent_type, file, change, impact_score, risk_score, cost_factor, \
         status, trace_id, votes, confidence, rationale, backup_existed, backup_content, \
         metrics_before, metrics_after, error, rollback_reason, duplicate_deliveries, \
         pattern_reported_at, created_at, applied_at, rolled_back_at"
    };
}

/// The proposal `id` of `instance`, if any.
pub async fn get(conn: &mut PgConnection, instance: &str, id: Uuid) -> Result<Option<Proposal>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        proposal_columns!(),
        " FROM singularity.proposals WHERE id = $1 AND instance_id = $2"
    ))
    .bind(id)
    .bind(instance)
    .fetch_optional(conn)
    .await?)
}

/// The proposal `id` of `instance`, locked until the transaction ends.
pub async fn lock(conn: &mut PgConnection, instance: &str, id: Uuid) -> Result<Option<Proposal>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        proposal_columns!(),
        " FROM singularity.proposals WHERE id = $1 AND instance_id = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(instance)
    .fetch_optional(conn)
    .await?)
}

/// Counts a delivery that found the work already done.
pub async fn count_duplicate(conn: &mut PgConnection, instance: &str, id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE singularity.proposals
            SET duplicate_deliveries = duplicate_deliveries + 1, updated_at = now()
          WHERE id = $1 AND instance_id = $2",
    )
    .bind(id)
    .bind(instance)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a proposal that is not final yet failed with `reason` (the SQL
/// function `singularity.fail_proposal`, migration 30, which the trigger
/// on dead-lettered executions shares); false when it is final already
/// (or unknown).
pub async fn mark_failed(
    conn: &mut PgConnection,
    instance: &str,
    id: Uuid,
    reason: &str,
) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT singularity.fail_proposal($1, $2, $3)")
            .bind(id)
            .bind(instance)
            .bind(reason)
            .fetch_one(conn)
            .await?,
    )
}

/// An agent type's recent record at one instance: changes kept vs rolled
/// back, each weighted by its age (halving every
/// `singularity.history_half_life()`, one day by default; migration 51), so
/// that old failures stop deciding votes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct History {
    /// Applied and still in place (weighted by age).
    pub applied: f64,
    /// Applied, then rolled back (weighted by age).
    pub rolled_back: f64,
}

impl History {
    /// Recent outcomes (weighted by age).
    pub fn outcomes(&self) -> f64 {
        self.applied + self.rolled_back
    }

    /// Share of recent outcomes that were kept; `None` without outcomes.
    pub fn success_rate(&self) -> Option<f64> {
        let n = self.outcomes();
        (n > 0.0).then(|| self.applied / n)
    }
}

/// The statement reading an instance's recent history with an agent type
/// (`$1` instance, `$2` agent type): the age-weighted counters of migration
/// 51, one row per slot (migration 11), however many proposals. A macro so
/// that other statements can embed it with `concat!`.
macro_rules! history_sql {
    () => {
        "SELECT coalesce(sum(applied_w * singularity.history_decay(as_of)), 0)::float8 AS applied,
            coalesce(sum(rolled_back_w * singularity.history_decay(as_of)), 0)::float8 AS rolled_back
       FROM singularity.agent_history
      WHERE instance_id = $1 AND agent_type = $2"
    };
}
pub(crate) use history_sql;

/// The recent history of `agent_type` at `instance`.
pub async fn history(conn: &mut PgConnection, instance: &str, agent_type: &str) -> Result<History> {
    let (applied, rolled_back): (f64, f64) = sqlx::query_as(history_sql!())
        .bind(instance)
        .bind(agent_type)
        .fetch_one(conn)
        .await?;
    Ok(History {
        applied,
        rolled_back,
    })
}

/// Proposals of `instance` by state; every state is present (0 when none).
pub async fn counts_by_state(
    conn: &mut PgConnection,
    instance: &str,
) -> Result<BTreeMap<ProposalState, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM singularity.proposals
          WHERE instance_id = $1 GROUP BY status",
    )
    .bind(instance)
    .fetch_all(conn)
    .await?;
    let mut counts: BTreeMap<_, _> = ProposalState::ALL.into_iter().map(|s| (s, 0)).collect();
    for (status, n) in rows {
        counts.insert(ProposalState::parse(&status)?, n);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_map_to_the_protocol() {
        for s in ProposalState::ALL {
            assert_eq!(ProposalState::parse(s.as_str()).unwrap(), s);
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, s.as_str());
        }
        assert!(ProposalState::parse("nope").is_err());
        assert_eq!(
            ProposalState::Applied.to_protocol(),
            Some(ProposalStatus::Applied)
        );
        assert_eq!(ProposalState::Failed.to_protocol(), None);
        let open: Vec<_> = ProposalState::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .collect();
        assert_eq!(open, ProposalState::NOT_FINAL);
    }

    #[test]
    fn history_success_rate() {
        assert_eq!(History::default().success_rate(), None);
        let h = History {
            applied: 3.0,
            rolled_back: 1.0,
        };
        assert_eq!(h.outcomes(), 4.0);
        assert_eq!(h.success_rate(), Some(0.75));
    }
}
