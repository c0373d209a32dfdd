//! Genesis's answers: the consumers of the three `*_results` queues
//! (targeted at this instance). Each result finishes the request it echoes
//! in `singularity.genesis_requests` (`completed` or `failed`, with the
//! result payload and the error) in the transaction that acks it.
//!
//! | queue | result type | request kind |
//! |---|---|---|
//! | genesis_rule_updates_results | `genesis_rule_update_result` | `rule_update` |
//! | genesis_llm_config_updates_results | `genesis_llm_config_update_result` | `llm_config_update` |
//! | code_execution_results | `code_execution_result` | `code_execution` |
//!
//! A message of another type, a malformed payload, a result naming another
//! instance or a request this instance never sent goes to the dead-letter
//! queue with the reason. A result for a request already finished changes
//! nothing and is counted as a duplicate.

use std::marker::PhantomData;
use std::sync::Arc;

use pgflow_core::consumer::{async_trait, HandlerError, HandlerResult, TxHandler};
use pgflow_core::protocol::{
    self, CodeExecutionResult, LlmConfigUpdateResult, ResultStatus, RuleUpdateResult, Validate,
};
use pgflow_core::{Delivery, MessageType, QueueName};
use sqlx::PgConnection;
use tracing::Instrument;

use crate::genesis_requests::{self, Finished, RequestKind, RequestState};
use crate::instance::{Instance, Queues};

/// A result type of one of Genesis's workflows.
pub trait GenesisResult: MessageType + Validate + Send + Sync + 'static {
    /// The kind of request it answers.
    const KIND: RequestKind;
    /// The queue it arrives on.
    fn queue(queues: &Queues) -> &QueueName;
    /// The request id it echoes.
    fn request_id(&self) -> String;
    /// The requesting instance it names.
    fn instance_id(&self) -> &str;
    /// How the workflow ended.
    fn status(&self) -> ResultStatus;
    /// Why it failed.
    fn error(&self) -> Option<&str>;
    /// A short description for the log.
    fn describe(&self) -> String;
}

/// The accessors every result type implements the same way (the fields
/// `instance_id`, `status` and `error` of the protocol's result messages).
macro_rules! echoed_fields {
    () => {
        fn instance_id(&self) -> &str {
            &self.instance_id
        }
        fn status(&self) -> ResultStatus {
            self.status
        }
        fn error(&self) -> Option<&str> {
            self.error.as_deref()
        }
    };
}

impl GenesisResult for RuleUpdateResult {
    const KIND: RequestKind = RequestKind::RuleUpdate;
    fn queue(queues: &Queues) -> &QueueName {
        &queues.genesis_rule_results
    }
    fn request_id(&self) -> String {
        self.request_id.to_string()
    }
    echoed_fields!();
    fn describe(&self) -> String {
        format!("rule {} confidence {}", self.namespace, self.confidence)
    }
}

impl GenesisResult for LlmConfigUpdateResult {
    const KIND: RequestKind = RequestKind::LlmConfigUpdate;
    fn queue(queues: &Queues) -> &QueueName {
        &queues.genesis_llm_config_results
    }
    fn request_id(&self) -> String {
        self.request_id.to_string()
    }
    echoed_fields!();
    fn describe(&self) -> String {
        format!(
            "LLM config {} / {} ({} models)",
            self.provider,
            crate::genesis_publisher::llm_config::complexity_name(self.complexity),
            self.models_count
        )
    }
}

impl GenesisResult for CodeExecutionResult {
    const KIND: RequestKind = RequestKind::CodeExecution;
    fn queue(queues: &Queues) -> &QueueName {
        &queues.code_execution_results
    }
    fn request_id(&self) -> String {
        self.request_id.clone()
    }
    echoed_fields!();
    fn describe(&self) -> String {
        format!(
            "analysis: quality {}, {} issues, {} ms",
            self.metrics.quality_score, self.metrics.issues_count, self.metrics.execution_ms
        )
    }
}

/// Consumer of one `*_results` queue (targeted, transactional).
pub struct GenesisResults<T> {
    inst: Arc<Instance>,
    _result: PhantomData<fn() -> T>,
}

/// Consumer of `genesis_rule_updates_results`.
pub type RuleResults = GenesisResults<RuleUpdateResult>;
/// Consumer of `genesis_llm_config_updates_results`.
pub type LlmConfigResults = GenesisResults<LlmConfigUpdateResult>;
/// Consumer of `code_execution_results`.
pub type CodeExecutionResults = GenesisResults<CodeExecutionResult>;

impl<T: GenesisResult> GenesisResults<T> {
    /// The handler for this instance.
    pub fn new(inst: Arc<Instance>) -> Self {
        Self {
            inst,
            _result: PhantomData,
        }
    }

    /// The queue it consumes.
    pub fn queue(&self) -> QueueName {
        T::queue(&self.inst.queues).clone()
    }
}

#[async_trait]
impl<T: GenesisResult> TxHandler for GenesisResults<T> {
    async fn handle(&self, tx: &mut PgConnection, d: &Delivery) -> HandlerResult {
        let result: T = protocol::decode(d)?;
        if result.instance_id() != self.inst.id {
            return Err(HandlerError::fatal(format!(
                "{} for instance {:?} delivered to {}",
                T::TYPE,
                result.instance_id(),
                self.inst.id
            )));
        }
        let span = tracing::info_span!("genesis_result", kind = %T::KIND, request_id = %result.request_id(), trace_id = %d.trace_id);
        self.record(tx, d, result).instrument(span).await
    }
}

impl<T: GenesisResult> GenesisResults<T> {
    /// Finishes the request `result` answers (or counts a duplicate).
    async fn record(&self, tx: &mut PgConnection, d: &Delivery, result: T) -> HandlerResult {
        let inst = &self.inst;
        let (kind, request_id) = (T::KIND, result.request_id());
        let Some(state) = genesis_requests::lock_state(tx, &inst.id, kind, &request_id).await?
        else {
            return Err(HandlerError::fatal(format!(
                "{} for request {request_id}: {} sent no such {kind} request",
                T::TYPE,
                inst.id
            )));
        };
        if state != RequestState::Sent {
            tracing::info!(state = %state, "genesis result delivered again; the request is already finished");
            inst.counters.duplicate(T::TYPE);
            genesis_requests::count_duplicate(tx, &inst.id, kind, &request_id).await?;
            return Ok(());
        }
        let new = RequestState::from(result.status());
        genesis_requests::finish(
            tx,
            &inst.id,
            kind,
            &request_id,
            Finished {
                state: new,
                result: &d.payload,
                error: result.error(),
                message_id: d.id,
            },
        )
        .await?;
        match new {
            RequestState::Failed => tracing::warn!(
                error = result.error().unwrap_or_default(),
                "genesis request failed: {}",
                result.describe()
            ),
            _ => tracing::info!("genesis request completed: {}", result.describe()),
        }
        Ok(())
    }
}
