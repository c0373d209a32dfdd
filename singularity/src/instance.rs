//! This instance: its id, database handle, queues, workspace, measuring and
//! voting settings, and the counters its flows share. One [`Instance`] is
//! built at start and shared (`Arc`) by every consumer, the pattern miner
//! and the HTTP API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pgflow_core::protocol::queues;
use pgflow_core::{Pgflow, QueueName};
use tokio::sync::Notify;

use crate::config::ServiceArgs;
use crate::error::{Error, Result};
use crate::execution::measure::Measurer;
use crate::execution::workspace::Workspace;
use crate::submission_spool::SubmissionSpool;
use crate::voting::VotePolicy;

/// The queues singularity uses, checked once.
#[derive(Debug, Clone)]
pub struct Queues {
    /// Produced: proposals sent for consensus.
    pub proposals_for_consensus: QueueName,
    /// Consumed (broadcast): vote requests.
    pub vote_requests: QueueName,
    /// Produced: votes.
    pub votes: QueueName,
    /// Consumed (targeted): consensus results.
    pub results: QueueName,
    /// Produced and consumed (targeted at itself): approved proposals.
    pub execution: QueueName,
    /// Produced: execution metrics.
    pub metrics: QueueName,
    /// Produced: patterns.
    pub patterns: QueueName,
    /// Consumed (targeted, HIGH priority): rollback triggers.
    pub rollbacks: QueueName,
    /// Consumed (broadcast): safety-profile updates.
    pub profiles: QueueName,
    /// Produced: learned rules for Genesis.
    pub genesis_rules: QueueName,
    /// Consumed (targeted): Genesis's rule update results.
    pub genesis_rule_results: QueueName,
    /// Produced: LLM configurations for Genesis.
    pub genesis_llm_configs: QueueName,
    /// Consumed (targeted): Genesis's LLM-config update results.
    pub genesis_llm_config_results: QueueName,
    /// Produced: code analysis jobs for Genesis.
    pub code_execution: QueueName,
    /// Consumed (targeted): Genesis's code analysis results.
    pub code_execution_results: QueueName,
}

impl Queues {
    /// The design's queue names.
    pub fn new() -> Result<Self> {
        let q = |name: &str| QueueName::new(name).map_err(Error::from);
        Ok(Self {
            proposals_for_consensus: q(queues::PROPOSALS_FOR_CONSENSUS)?,
            vote_requests: q(queues::CONSENSUS_VOTE_REQUESTS)?,
            votes: q(queues::CONSENSUS_VOTES)?,
            results: q(queues::CONSENSUS_RESULTS)?,
            execution: q(queues::PROPOSALS_FOR_EXECUTION)?,
            metrics: q(queues::METRICS_TO_GUARDIAN)?,
            patterns: q(queues::PATTERNS_FOR_AGGREGATOR)?,
            rollbacks: q(queues::ROLLBACK_TRIGGERS)?,
            profiles: q(queues::GUARDIAN_SAFETY_PROFILES)?,
            genesis_rules: q(queues::GENESIS_RULE_UPDATES)?,
            genesis_rule_results: q(queues::GENESIS_RULE_UPDATES_RESULTS)?,
            genesis_llm_configs: q(queues::GENESIS_LLM_CONFIG_UPDATES)?,
            genesis_llm_config_results: q(queues::GENESIS_LLM_CONFIG_UPDATES_RESULTS)?,
            code_execution: q(queues::CODE_EXECUTION_REQUESTS)?,
            code_execution_results: q(queues::CODE_EXECUTION_RESULTS)?,
        })
    }

    /// The queues this instance consumes, in the order `status` shows them.
    pub fn consumed(&self) -> [&QueueName; 8] {
        [
            &self.vote_requests,
            &self.results,
            &self.execution,
            &self.rollbacks,
            &self.profiles,
            &self.genesis_rule_results,
            &self.genesis_llm_config_results,
            &self.code_execution_results,
        ]
    }
}

/// Deliveries that found their work already done, by kind (also exported
/// as `singularity_duplicate_deliveries_total{kind}`).
#[derive(Debug, Default)]
pub struct Counters {
    by_kind: Mutex<HashMap<&'static str, u64>>,
    total: AtomicU64,
}

impl Counters {
    /// Counts one duplicate of `kind` (a message type).
    pub fn duplicate(&self, kind: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        *self
            .by_kind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
        metrics::counter!("singularity_duplicate_deliveries_total", "kind" => kind).increment(1);
    }

    /// Duplicates so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Duplicates so far by kind.
    pub fn by_kind(&self) -> HashMap<&'static str, u64> {
        self.by_kind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Everything the flows of one instance share.
#[derive(Debug)]
pub struct Instance {
    /// The queue database (as role `singularity` in deployments).
    pub pg: Pgflow,
    /// The instance id.
    pub id: String,
    /// The queues.
    pub queues: Queues,
    /// Where changes are applied.
    pub workspace: Workspace,
    /// Before / after measurements.
    pub measurer: Measurer,
    /// How votes are decided.
    pub policy: VotePolicy,
    /// Duplicate deliveries.
    pub counters: Counters,
    /// Woken after each applied change (the pattern miner schedules a pass).
    pub applied: Notify,
    /// How long a change must stay applied before it is a pattern.
    pub pattern_grace: Duration,
    /// Submissions waiting for PostgreSQL.
    pub spool: Arc<SubmissionSpool>,
}

impl Instance {
    /// Builds the instance described by `args` on `pg`.
    pub fn new(pg: Pgflow, args: &ServiceArgs) -> Result<Self> {
        let id = args.instance.instance_id.clone();
        check_instance_id(&id)?;
        let workspace = args
            .workspace()
            .map_err(|e| Error::Config(format!("cannot resolve the workspace directory: {e}")))?;
        // The verify command runs twice within one handler's time.
        let budget = Duration::from_millis(args.consumers.timeout_ms) / 3;
        let mut verify_timeout = Duration::from_millis(args.verify_timeout_ms);
        if verify_timeout > budget {
            tracing::warn!(
                verify_timeout_ms = args.verify_timeout_ms,
                handler_timeout_ms = args.consumers.timeout_ms,
                "SINGULARITY_VERIFY_TIMEOUT_MS exceeds a third of PGFLOW_TIMEOUT_MS; using {} ms",
                budget.as_millis()
            );
            verify_timeout = budget;
        }
        let spool_dir = args
            .spool_path()
            .map_err(|e| Error::Config(format!("cannot resolve the spool directory: {e}")))?;
        let spool = Arc::new(SubmissionSpool::open(
            spool_dir,
            args.spool.spool_max as usize,
        )?);
        Ok(Self {
            spool,
            pg,
            queues: Queues::new()?,
            workspace: Workspace::new(workspace),
            measurer: Measurer::new(
                args.verify_cmd.clone().filter(|c| !c.trim().is_empty()),
                verify_timeout,
                usize::from(args.workers.metrics_workers),
            ),
            policy: VotePolicy {
                min_success_rate: args.min_success_rate,
                min_history: i64::from(args.min_history),
            },
            counters: Counters::default(),
            applied: Notify::new(),
            pattern_grace: Duration::from_millis(args.pattern_grace_ms),
            id,
        })
    }
}

/// An instance id names queue targets, rows and the default workspace
/// directory: 1-100 characters from letters, digits, `_`, `-` and `.`,
/// not `.` or `..`.
pub fn check_instance_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= pgflow_core::message::MAX_INSTANCE_LEN
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "instance id {id:?}: use 1-100 letters, digits, '_', '-' or '.' (INSTANCE_ID / --instance-id)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_checked() {
        for ok in ["singularity_1", "a", "node-2.eu"] {
            assert!(check_instance_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(101)] {
            assert!(check_instance_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicates_are_counted_by_kind() {
        let c = Counters::default();
        c.duplicate("a");
        c.duplicate("a");
        c.duplicate("b");
        assert_eq!(c.total(), 3);
        assert_eq!(c.by_kind()["a"], 2);
    }
}
