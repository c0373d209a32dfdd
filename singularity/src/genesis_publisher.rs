//! The genesis publisher (seed 000's `Singularity.Evolution.GenesisPublisher`):
//! what this instance asks Genesis to do.
//!
//! * [`GenesisPublisher::publish_rules`]: the rules it learned from its own
//!   record ([`rules`]) whose confidence reaches a floor, one
//!   `genesis_rule_update` each on `genesis_rule_updates`;
//! * [`GenesisPublisher::publish_llm_config_rules`]: an LLM configuration
//!   ([`llm_config`]), one `genesis_llm_config_update` per (provider,
//!   complexity) on `genesis_llm_config_updates`;
//! * [`GenesisPublisher::send_code_execution_request`]: a code analysis
//!   job, a `code_execution_request` on `code_execution_requests`.
//!
//! Every request names this instance (Genesis addresses its result to it)
//! and has its own request id; the requests of one call share a new trace
//! id, which the results carry back. Each request is stored in
//! `singularity.genesis_requests` as `sent` ([`crate::genesis_requests`]) in
//! the transaction that sends it: either both happen or neither.
//! [`crate::genesis_results`] records the results.

pub mod llm_config;
pub mod rules;

use chrono::Utc;
use pgflow_core::protocol::{
    self, AnalysisType, CodeExecutionRequest, GenesisLlmConfigUpdate, GenesisRuleUpdate,
};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::{OutgoingMessage, Pgflow};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::genesis_requests::{self, Outgoing, RequestKind, RequestState};
use crate::instance::{check_instance_id, Queues};
pub use llm_config::{LlmConfig, LlmConfigEntry, Overrides};
pub use rules::LearnedRule;

/// A code analysis job to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeAnalysis {
    /// The job id; a new `job_<uuid>` when `None`.
    pub id: Option<String>,
    /// The code (never run, only analysed).
    pub code: String,
    /// Its language (Genesis analyses elixir, rust and python; it answers
    /// other languages with a failed result).
    pub language: String,
    /// What to analyse.
    pub analysis_type: AnalysisType,
}

/// One request sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentRequest {
    /// The id the result will echo.
    pub request_id: String,
    /// What it asks for.
    pub kind: RequestKind,
    /// Its state (`sent`).
    pub status: RequestState,
    /// The message that carries it.
    pub message_id: Uuid,
    /// Its main fields (rule: namespace, confidence; LLM config: provider,
    /// complexity, models; job: language, analysis_type).
    pub detail: serde_json::Value,
}

/// What one publishing call sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Published {
    /// The trace id the requests share (their results carry it back).
    pub trace_id: Uuid,
    /// The requests, in the order sent (empty when nothing qualified).
    pub requests: Vec<SentRequest>,
}

/// Sends this instance's requests to Genesis.
#[derive(Debug, Clone)]
pub struct GenesisPublisher {
    pg: Pgflow,
    instance: String,
    queues: Queues,
}

/// A request before it is sent: its id, message and detail.
struct Draft {
    request_id: String,
    message: OutgoingMessage,
    detail: serde_json::Value,
}

impl GenesisPublisher {
    /// A publisher for `instance` on `pg` (as role `singularity` in deployments).
    pub fn new(pg: Pgflow, instance: impl Into<String>) -> Result<Self> {
        let instance = instance.into();
        check_instance_id(&instance)?;
        Ok(Self {
            pg,
            instance,
            queues: Queues::new()?,
        })
    }

    /// The instance the requests come from.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The rules this instance has learned (see [`rules`]), without sending anything.
    pub async fn learned_rules(&self) -> Result<Vec<LearnedRule>> {
        let mut conn = self.pg.pool().acquire().await?;
        rules::learned(&mut conn, &self.instance).await
    }

    /// Sends every learned rule whose confidence is at least
    /// `min_confidence` (in `[0, 1]`, else [`Error::InvalidRequest`]).
    /// Nothing qualifying is not an error: the result lists no requests.
    pub async fn publish_rules(&self, min_confidence: f64) -> Result<Published> {
        if !(0.0..=1.0).contains(&min_confidence) {
            return Err(Error::InvalidRequest(format!(
                "min confidence must be in [0, 1], got {min_confidence}"
            )));
        }
        let trace_id = Uuid::now_v7();
        let mut tx = self.pg.pool().begin().await?;
        let learned = rules::learned(&mut tx, &self.instance).await?;
        let total = learned.len();
        let mut drafts = Vec::new();
        for r in learned
            .into_iter()
            .filter(|r| r.confidence >= min_confidence)
        {
            let update = GenesisRuleUpdate {
                request_id: Uuid::now_v7(),
                instance_id: self.instance.clone(),
                namespace: r.namespace.clone(),
                rule: r.rule,
                confidence: r.confidence,
                timestamp: Utc::now(),
            };
            drafts.push(Draft {
                request_id: update.request_id.to_string(),
                message: encode(&update)?,
                detail: json!({
                    "namespace": r.namespace,
                    "agent_type": r.agent_type,
                    "confidence": r.confidence,
                }),
            });
        }
        let requests = self
            .send(&mut tx, RequestKind::RuleUpdate, trace_id, drafts)
            .await?;
        tx.commit().await.inspect_err(|e| {
            emit(Event::PublishFailed, &format!("genesis_rule_update: {e}"));
        })?;
        tracing::info!(%trace_id, learned = total, sent = requests.len(), min_confidence, "rules published to genesis");
        Ok(Published { trace_id, requests })
    }

    /// Sends `config`, one `genesis_llm_config_update` per entry.
    pub async fn publish_llm_config_rules(&self, config: &LlmConfig) -> Result<Published> {
        config.check()?;
        let trace_id = Uuid::now_v7();
        let drafts = config
            .entries
            .iter()
            .map(|e| {
                let update = GenesisLlmConfigUpdate {
                    request_id: Uuid::now_v7(),
                    instance_id: self.instance.clone(),
                    provider: e.provider.clone(),
                    complexity: e.complexity,
                    models: e.models.clone(),
                    timestamp: Utc::now(),
                };
                Ok(Draft {
                    request_id: update.request_id.to_string(),
                    message: encode(&update)?,
                    detail: json!({
                        "provider": e.provider,
                        "complexity": e.complexity,
                        "models": e.models,
                    }),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let requests = self
            .send_alone(RequestKind::LlmConfigUpdate, trace_id, drafts)
            .await?;
        tracing::info!(%trace_id, sent = requests.len(), "LLM configuration published to genesis");
        Ok(Published { trace_id, requests })
    }

    /// Sends one code analysis job. Refused with [`Error::InvalidRequest`]
    /// (nothing stored, nothing sent) when the protocol refuses a field
    /// (empty code, code over 1 MiB, empty language or id) or this
    /// instance already used the job id.
    pub async fn send_code_execution_request(&self, job: CodeAnalysis) -> Result<Published> {
        let trace_id = Uuid::now_v7();
        let req = CodeExecutionRequest {
            id: job
                .id
                .unwrap_or_else(|| format!("job_{}", Uuid::now_v7().simple())),
            code: job.code,
            language: job.language,
            analysis_type: job.analysis_type,
            instance_id: Some(self.instance.clone()),
        };
        let draft = Draft {
            request_id: req.id.clone(),
            message: encode(&req)?,
            detail: json!({
                "language": req.language,
                "analysis_type": req.analysis_type,
                "code_bytes": req.code.len(),
            }),
        };
        let requests = self
            .send_alone(RequestKind::CodeExecution, trace_id, vec![draft])
            .await?;
        tracing::info!(%trace_id, job = %req.id, "code analysis requested from genesis");
        Ok(Published { trace_id, requests })
    }

    /// Stores and sends `drafts` in a transaction of their own.
    async fn send_alone(
        &self,
        kind: RequestKind,
        trace_id: Uuid,
        drafts: Vec<Draft>,
    ) -> Result<Vec<SentRequest>> {
        let mut tx = self.pg.pool().begin().await?;
        let sent = self.send(&mut tx, kind, trace_id, drafts).await?;
        tx.commit().await.inspect_err(|e| {
            emit(Event::PublishFailed, &format!("genesis {kind}: {e}"));
        })?;
        Ok(sent)
    }

    /// Stores `drafts` as `sent` and sends them on `conn` (a transaction):
    /// one INSERT, one send statement, one NOTIFY at commit.
    async fn send(
        &self,
        conn: &mut PgConnection,
        kind: RequestKind,
        trace_id: Uuid,
        drafts: Vec<Draft>,
    ) -> Result<Vec<SentRequest>> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        let queue = kind.queue(&self.queues);
        let outgoing: Vec<Outgoing> = drafts
            .iter()
            .map(|d| Outgoing {
                request_id: d.request_id.clone(),
                message: d.message.clone().trace_id(trace_id).source(&self.instance),
            })
            .collect();
        genesis_requests::insert(conn, &self.instance, kind, queue, &outgoing).await?;
        let messages: Vec<OutgoingMessage> = outgoing.into_iter().map(|o| o.message).collect();
        if let Err(e) = self.pg.send_in_tx(conn, queue, &messages, true).await {
            emit(Event::PublishFailed, &format!("genesis {kind}: {e}"));
            return Err(invalid_if_refused(e));
        }
        Ok(drafts
            .into_iter()
            .zip(messages)
            .map(|(d, m)| SentRequest {
                request_id: d.request_id,
                kind,
                status: RequestState::Sent,
                message_id: m.message_id(),
                detail: d.detail,
            })
            .collect())
    }
}

/// Validates and encodes a request; a refused field is the request's fault.
fn encode<T: pgflow_core::MessageType + protocol::Validate>(
    payload: &T,
) -> Result<OutgoingMessage> {
    protocol::encode(payload).map_err(invalid_if_refused)
}

/// A payload the queue refuses (invalid, too large) is the request's fault.
fn invalid_if_refused(e: pgflow_core::Error) -> Error {
    match e {
        pgflow_core::Error::PayloadTooLarge { .. } | pgflow_core::Error::InvalidMessage(_) => {
            Error::InvalidRequest(e.to_string())
        }
        other => Error::Queue(other),
    }
}
