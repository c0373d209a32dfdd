//! The typed protocol the three services share: the design's queues and
//! their routes ([`queues`]), one payload type per message `type` (seeds 000
//! and 001), the checks a payload must pass ([`Validate`]), and the two ends
//! of the wire: [`encode`] for producers, [`decode`] / [`handler`] for
//! consumers.
//!
//! | module | message types |
//! |---|---|
//! | [`proposal`] | `proposal_for_consensus`, `vote_request`, `consensus_vote`, `consensus_result`, `proposal_for_execution` |
//! | [`guardian`] | `execution_metrics`, `rollback_trigger`, `safety_profile_update` |
//! | [`learning`] | `pattern_discovered`, `learning_loop_completed` |
//! | [`genesis`] | `genesis_rule_update`, `genesis_rule_update_result`, `genesis_llm_config_update`, `genesis_llm_config_update_result`, `code_execution_request`, `code_execution_result` |
//!
//! Every type is at schema version 1. Decoding ignores fields it does not
//! know (a newer producer may add some) but refuses a payload that lacks a
//! required field or has one of the wrong type. The message `type` lives in
//! the envelope, not in the payload (a `"type"` key in a payload, as in the
//! seeds' examples, is ignored).

use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;

use crate::consumer::{Handler, HandlerError, HandlerResult};
use crate::delivery::Delivery;
use crate::message::{MessageType, OutgoingMessage};

pub mod genesis;
pub mod guardian;
pub mod learning;
pub mod proposal;
pub mod queues;
pub mod sender;
pub mod validate;

#[cfg(test)]
mod tests;

pub use genesis::{
    AnalysisType, CodeExecutionRequest, CodeExecutionResult, Complexity, Finding,
    GenesisLlmConfigUpdate, GenesisRuleUpdate, JobMetrics, JobOutput, LlmConfigUpdateResult,
    ResultStatus, RuleUpdateResult, Severity,
};
pub use guardian::{
    Breach, ExecutionMetrics, MetricsSnapshot, RollbackReason, RollbackTrigger, SafetyProfile,
    SafetyProfileUpdate,
};
pub use learning::{CodePattern, LearningLoopCompleted, PatternDiscovered, PatternType};
pub use proposal::{
    CodeChange, ConsensusResult, ConsensusStatus, ConsensusVote, ProposalForConsensus,
    ProposalForExecution, ProposalSafety, ProposalStatus, Vote, VoteRequest,
};
pub use queues::{route, route_for_type, routes, Route, Service};
pub use validate::{Validate, ValidationError};

/// Decodes and validates a delivery as `T`.
///
/// Every failure is fatal (no retry can fix the payload), with the reason:
/// a message of another `type`, a schema version newer than `T`'s, a payload
/// that does not decode (missing field, wrong type), or one that fails
/// [`Validate`], or one that speaks for an instance
/// ([`Validate::speaker`]) that did not send it ([`sender::verify`]).
pub fn decode<T: MessageType + Validate>(d: &Delivery) -> Result<T, HandlerError> {
    let payload = crate::consumer::decode_as::<T>(d)?;
    payload
        .validate()
        .map_err(|e| HandlerError::fatal(format!("invalid {:?} payload: {e}", T::TYPE)))?;
    if let Some(speaker) = payload.speaker() {
        sender::verify(d, speaker)?;
    }
    Ok(payload)
}

/// Validates `payload` and makes it a message with its `type`, schema
/// version and its route's priority (HIGH for rollback triggers). The caller
/// adds the target, source and trace id, and picks the queue
/// ([`route_for_type`] names it).
pub fn encode<T: MessageType + Validate>(payload: &T) -> crate::Result<OutgoingMessage> {
    payload
        .validate()
        .map_err(|e| crate::Error::InvalidMessage(format!("invalid {:?} payload: {e}", T::TYPE)))?;
    let msg = OutgoingMessage::typed(payload)?;
    Ok(match route_for_type(T::TYPE) {
        Some(r) => msg.priority(r.priority),
        None => msg,
    })
}

/// A [`Handler`] for messages of type `T` that only sees payloads [`decode`]
/// accepted; everything else is a fatal failure with the reason (the
/// message goes to the DLQ, the consumer keeps going).
pub fn handler<T, F, Fut>(f: F) -> impl Handler
where
    T: MessageType + Validate + Send + Sync + 'static,
    F: Fn(T, Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Validated(f, PhantomData::<fn() -> T>)
}

struct Validated<F, T>(F, PhantomData<fn() -> T>);

#[async_trait]
impl<T, F, Fut> Handler for Validated<F, T>
where
    T: MessageType + Validate + Send + Sync + 'static,
    F: Fn(T, Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    async fn handle(&self, msg: &Delivery) -> HandlerResult {
        let payload = decode::<T>(msg)?;
        (self.0)(payload, msg.clone()).await
    }
}
