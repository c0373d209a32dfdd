//! The design's 16 queues (DESIGN.md, "Queue topology"): one constant per
//! name, and the [`Route`] table saying who produces and consumes each queue,
//! how it delivers, which message types it carries and at what priority.
//!
//! The queues themselves are created by
//! `migrations/20261123000002_design_queues.sql`; a test keeps the two in step.

use super::genesis::{
    CodeExecutionRequest, CodeExecutionResult, GenesisLlmConfigUpdate, GenesisRuleUpdate,
    LlmConfigUpdateResult, RuleUpdateResult,
};
use super::guardian::{ExecutionMetrics, RollbackTrigger, SafetyProfileUpdate};
use super::learning::{LearningLoopCompleted, PatternDiscovered};
use super::proposal::{
    ConsensusResult, ConsensusVote, ProposalForConsensus, ProposalForExecution, VoteRequest,
};
use crate::message::{priority, MessageType};
use crate::queue_config::DeliveryKind;
use DeliveryKind::{Broadcast, Competing, Targeted};
use Service::{CentralCloud, Genesis, Singularity};

/// Proposals sent for consensus (singularity -> centralcloud).
pub const PROPOSALS_FOR_CONSENSUS: &str = "proposals_for_consensus_queue";
/// Vote requests (centralcloud -> every singularity).
pub const CONSENSUS_VOTE_REQUESTS: &str = "consensus_vote_requests_queue";
/// Votes (singularity -> centralcloud).
pub const CONSENSUS_VOTES: &str = "consensus_votes_queue";
/// Consensus results (centralcloud -> proposing instance).
pub const CONSENSUS_RESULTS: &str = "consensus_results_queue";
/// Approved proposals to execute (singularity -> same instance).
pub const PROPOSALS_FOR_EXECUTION: &str = "proposals_for_execution_queue";
/// Execution metrics (singularity -> centralcloud guardian).
pub const METRICS_TO_GUARDIAN: &str = "metrics_to_guardian_queue";
/// Discovered patterns (singularity -> centralcloud aggregator).
pub const PATTERNS_FOR_AGGREGATOR: &str = "patterns_for_aggregator_queue";
/// Rollback triggers (centralcloud -> target instance, HIGH priority).
pub const ROLLBACK_TRIGGERS: &str = "rollback_triggers_queue";
/// Safety-profile updates (centralcloud -> every singularity).
pub const GUARDIAN_SAFETY_PROFILES: &str = "guardian_safety_profiles_queue";
/// Learning-loop reports (centralcloud -> genesis).
pub const LEARNING_LOOP_COMPLETED: &str = "learning_loop_completed_queue";
/// Rule updates (singularity -> genesis).
pub const GENESIS_RULE_UPDATES: &str = "genesis_rule_updates";
/// Rule update results (genesis -> requesting instance).
pub const GENESIS_RULE_UPDATES_RESULTS: &str = "genesis_rule_updates_results";
/// LLM-config updates (singularity -> genesis).
pub const GENESIS_LLM_CONFIG_UPDATES: &str = "genesis_llm_config_updates";
/// LLM-config update results (genesis -> requesting instance).
pub const GENESIS_LLM_CONFIG_UPDATES_RESULTS: &str = "genesis_llm_config_updates_results";
/// Code analysis requests (singularity -> genesis).
pub const CODE_EXECUTION_REQUESTS: &str = "code_execution_requests";
/// Code analysis results (genesis -> requesting instance).
pub const CODE_EXECUTION_RESULTS: &str = "code_execution_results";

/// One of the three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// An evolving instance (several may run).
    Singularity,
    /// Consensus, guardian, pattern aggregation, learning loop.
    CentralCloud,
    /// Rules, LLM configuration, code analysis.
    Genesis,
}

impl Service {
    /// The service's name (its binary, schema and role).
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Singularity => "singularity",
            Service::CentralCloud => "centralcloud",
            Service::Genesis => "genesis",
        }
    }
}

/// One queue of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The queue name.
    pub queue: &'static str,
    /// The service that sends to it.
    pub producer: Service,
    /// The service that consumes it (which instance(s) follows from `delivery`).
    pub consumer: Service,
    /// How messages reach consumers.
    pub delivery: DeliveryKind,
    /// The message `type`s it carries.
    pub message_types: &'static [&'static str],
    /// The priority producers send with (see [`crate::message::priority`]).
    pub priority: i16,
}

/// A route at normal priority.
const fn entry(
    queue: &'static str,
    producer: Service,
    consumer: Service,
    delivery: DeliveryKind,
    message_types: &'static [&'static str],
) -> Route {
    Route {
        queue,
        producer,
        consumer,
        delivery,
        message_types,
        priority: priority::NORMAL,
    }
}

/// The topology, in the design's order.
static ROUTES: [Route; 16] = [
    entry(
        PROPOSALS_FOR_CONSENSUS,
        Singularity,
        CentralCloud,
        Competing,
        &[ProposalForConsensus::TYPE],
    ),
    entry(
        CONSENSUS_VOTE_REQUESTS,
        CentralCloud,
        Singularity,
        Broadcast,
        &[VoteRequest::TYPE],
    ),
    entry(
        CONSENSUS_VOTES,
        Singularity,
        CentralCloud,
        Competing,
        &[ConsensusVote::TYPE],
    ),
    entry(
        CONSENSUS_RESULTS,
        CentralCloud,
        Singularity,
        Targeted,
        &[ConsensusResult::TYPE],
    ),
    entry(
        PROPOSALS_FOR_EXECUTION,
        Singularity,
        Singularity,
        Targeted,
        &[ProposalForExecution::TYPE],
    ),
    entry(
        METRICS_TO_GUARDIAN,
        Singularity,
        CentralCloud,
        Competing,
        &[ExecutionMetrics::TYPE],
    ),
    entry(
        PATTERNS_FOR_AGGREGATOR,
        Singularity,
        CentralCloud,
        Competing,
        &[PatternDiscovered::TYPE],
    ),
    Route {
        priority: priority::HIGH,
        ..entry(
            ROLLBACK_TRIGGERS,
            CentralCloud,
            Singularity,
            Targeted,
            &[RollbackTrigger::TYPE],
        )
    },
    entry(
        GUARDIAN_SAFETY_PROFILES,
        CentralCloud,
        Singularity,
        Broadcast,
        &[SafetyProfileUpdate::TYPE],
    ),
    entry(
        LEARNING_LOOP_COMPLETED,
        CentralCloud,
        Genesis,
        Competing,
        &[LearningLoopCompleted::TYPE],
    ),
    entry(
        GENESIS_RULE_UPDATES,
        Singularity,
        Genesis,
        Competing,
        &[GenesisRuleUpdate::TYPE],
    ),
    entry(
        GENESIS_RULE_UPDATES_RESULTS,
        Genesis,
        Singularity,
        Targeted,
        &[RuleUpdateResult::TYPE],
    ),
    entry(
        GENESIS_LLM_CONFIG_UPDATES,
        Singularity,
        Genesis,
        Competing,
        &[GenesisLlmConfigUpdate::TYPE],
    ),
    entry(
        GENESIS_LLM_CONFIG_UPDATES_RESULTS,
        Genesis,
        Singularity,
        Targeted,
        &[LlmConfigUpdateResult::TYPE],
    ),
    entry(
        CODE_EXECUTION_REQUESTS,
        Singularity,
        Genesis,
        Competing,
        &[CodeExecutionRequest::TYPE],
    ),
    entry(
        CODE_EXECUTION_RESULTS,
        Genesis,
        Singularity,
        Targeted,
        &[CodeExecutionResult::TYPE],
    ),
];

/// The 16 queues, in the design's order.
pub fn routes() -> &'static [Route] {
    &ROUTES
}

/// The route of `queue`, if it is one of the design's queues.
pub fn route(queue: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.queue == queue)
}

/// The route that carries messages of type `msg_type` (each type travels on
/// exactly one queue).
pub fn route_for_type(msg_type: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.message_types.contains(&msg_type))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::queue_name::QueueName;

    const MIGRATION: &str = include_str!("../../../migrations/20261123000002_design_queues.sql");

    /// The `('queue', 'delivery', 'description')` rows of the migration.
    fn migration_rows() -> Vec<(&'static str, &'static str, &'static str)> {
        MIGRATION
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("('"))
            .map(|l| {
                let fields: Vec<&str> = l.split('\'').collect();
                (fields[1], fields[3], fields[5])
            })
            .collect()
    }

    #[test]
    fn table_matches_the_migration() {
        let rows = migration_rows();
        assert_eq!(rows.len(), 16, "the migration creates 16 queues");
        assert_eq!(routes().len(), rows.len());
        for r in routes() {
            let (_, delivery, description) = rows
                .iter()
                .find(|(q, _, _)| *q == r.queue)
                .unwrap_or_else(|| panic!("{} is not created by the migration", r.queue));
            assert_eq!(*delivery, r.delivery.as_str(), "delivery of {}", r.queue);
            assert!(
                description.starts_with(&format!("{} -> ", r.producer.as_str())),
                "producer of {}: {description}",
                r.queue
            );
            // "centralcloud -> proposing instance: consensus_result": the
            // consumer, then the carried type (results are named in prose).
            let (flow, carried) = description.split_once(": ").unwrap_or((description, ""));
            let consumer = flow.split_once(" -> ").map_or("", |(_, c)| c);
            let names_consumer = consumer.contains(r.consumer.as_str())
                || (r.consumer == Service::Singularity && consumer.ends_with("instance"));
            assert!(names_consumer, "consumer of {}: {description}", r.queue);
            assert!(
                r.message_types
                    .iter()
                    .any(|t| carried.starts_with(t) || t.ends_with("_result")),
                "types of {}: {description}",
                r.queue
            );
        }
    }

    #[test]
    fn names_are_valid_and_unique() {
        let mut seen = HashSet::new();
        for r in routes() {
            assert!(QueueName::new(r.queue).is_ok(), "{}", r.queue);
            assert!(seen.insert(r.queue), "{} twice", r.queue);
            assert_eq!(route(r.queue), Some(r));
        }
        assert_eq!(route("no_such_queue"), None);
    }

    #[test]
    fn each_type_travels_on_one_queue() {
        let mut seen = HashSet::new();
        for r in routes() {
            assert!(!r.message_types.is_empty(), "{}", r.queue);
            for t in r.message_types {
                assert!(seen.insert(*t), "{t} on two queues");
                assert_eq!(route_for_type(t).map(|r| r.queue), Some(r.queue));
            }
        }
        assert_eq!(seen.len(), 16);
    }

    #[test]
    fn only_rollback_triggers_are_high_priority() {
        for r in routes() {
            let expected = if r.queue == ROLLBACK_TRIGGERS {
                priority::HIGH
            } else {
                priority::NORMAL
            };
            assert_eq!(r.priority, expected, "{}", r.queue);
        }
    }
}
