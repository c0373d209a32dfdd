//! The four requests genesis handles, routed on the envelope's `type`, and
//! how each one runs: what it writes, which result it sends where.

use std::time::{Duration, Instant};

use pgflow_core::consumer::HandlerError;
use pgflow_core::protocol::{
    self, queues, CodeExecutionRequest, GenesisLlmConfigUpdate, GenesisRuleUpdate,
    LearningLoopCompleted, ResultStatus, Validate,
};
use pgflow_core::{Delivery, MessageType, OutgoingMessage, QueueName};
use sqlx::{PgConnection, Postgres, Transaction};

use crate::{jobs, learning, llm_config, rules};

/// The name results are sent under (`source`).
pub(crate) const SOURCE: &str = "genesis";
/// SQLSTATE of a statement cancelled by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";

/// A decoded request.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    /// `genesis_rule_update`.
    Rule(GenesisRuleUpdate),
    /// `genesis_llm_config_update`.
    LlmConfig(GenesisLlmConfigUpdate),
    /// `code_execution_request`.
    Job(CodeExecutionRequest),
    /// `learning_loop_completed`.
    Learning(LearningLoopCompleted),
}

/// How a workflow ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Completed or failed.
    pub status: ResultStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// What is stored as the workflow's result.
    pub record: serde_json::Value,
    /// The result message and its queue (none for learning-loop reports).
    pub reply: Option<(QueueName, OutgoingMessage)>,
}

/// What a workflow knows besides its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The request message.
    pub msg: &'a Delivery,
    /// The instance the result goes to.
    pub instance: Option<&'a str>,
    /// Simulated extra work per code analysis job.
    pub min_job: Duration,
    /// When the workflow must be done.
    pub deadline: Instant,
}

impl Ctx<'_> {
    /// Time left until the deadline (at least a millisecond).
    fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    }
}

fn db(e: sqlx::Error) -> HandlerError {
    HandlerError::retryable(format!("database error: {e}"))
}

/// Opens a savepoint for a workflow's writes whose statements the server
/// cancels at the workflow's deadline (a statement blocked on a lock, say).
/// The timeout is enforced in-band, not by dropping a statement in flight,
/// so the connection stays usable for the workflow's final state.
async fn savepoint<'c>(
    conn: &'c mut PgConnection,
    ctx: &Ctx<'_>,
) -> Result<Transaction<'c, Postgres>, HandlerError> {
    let mut sp = sqlx::Connection::begin(conn).await.map_err(db)?;
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(format!("{}ms", ctx.remaining().as_millis()))
        .execute(&mut *sp)
        .await
        .map_err(db)?;
    Ok(sp)
}

/// Ends a workflow's savepoint: kept (statement timeout restored) when the
/// work succeeded, rolled back when a statement was cancelled at the
/// deadline (`None`: timed out). Other database errors are retryable.
async fn settle<T>(
    mut sp: Transaction<'_, Postgres>,
    result: Result<T, sqlx::Error>,
) -> Result<Option<T>, HandlerError> {
    match result {
        Ok(v) => {
            sqlx::query("SET LOCAL statement_timeout TO DEFAULT")
                .execute(&mut *sp)
                .await
                .map_err(db)?;
            sp.commit().await.map_err(db)?;
            Ok(Some(v))
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(QUERY_CANCELED) => {
            sp.rollback().await.map_err(db)?;
            Ok(None)
        }
        Err(e) => Err(db(e)),
    }
}

impl Request {
    /// Decodes `msg` by its `type`. A type genesis does not handle, a newer
    /// schema version, a malformed payload or one the protocol refuses is a
    /// fatal failure with the reason (the request goes to the DLQ).
    pub(crate) fn decode(msg: &Delivery) -> Result<Self, HandlerError> {
        match msg.msg_type.as_str() {
            GenesisRuleUpdate::TYPE => protocol::decode(msg).map(Self::Rule),
            GenesisLlmConfigUpdate::TYPE => protocol::decode(msg).map(Self::LlmConfig),
            CodeExecutionRequest::TYPE => protocol::decode(msg).map(Self::Job),
            LearningLoopCompleted::TYPE => protocol::decode(msg).map(Self::Learning),
            other => Err(HandlerError::fatal(format!(
                "unknown message type {other:?} on queue {} (genesis handles {}, {}, {} and {})",
                msg.queue_name,
                GenesisRuleUpdate::TYPE,
                GenesisLlmConfigUpdate::TYPE,
                CodeExecutionRequest::TYPE,
                LearningLoopCompleted::TYPE
            ))),
        }
    }

    /// The request's own id.
    pub(crate) fn request_id(&self) -> Option<String> {
        match self {
            Self::Rule(r) => Some(r.request_id.to_string()),
            Self::LlmConfig(r) => Some(r.request_id.to_string()),
            Self::Job(j) => Some(j.id.clone()),
            Self::Learning(_) => None,
        }
    }

    /// The instance the result goes to: the payload's `instance_id`, else
    /// the envelope's `source`.
    pub(crate) fn instance(&self, msg: &Delivery) -> Option<String> {
        let from_payload = match self {
            Self::Rule(r) => Some(r.instance_id.as_str()),
            Self::LlmConfig(r) => Some(r.instance_id.as_str()),
            Self::Job(j) => j.instance_id.as_deref(),
            Self::Learning(_) => None,
        };
        from_payload
            .map(str::to_string)
            .or_else(|| msg.source.clone())
    }

    /// Whether the request is answered with a result.
    pub(crate) fn has_result(&self) -> bool {
        !matches!(self, Self::Learning(_))
    }

    /// Runs the workflow until `ctx.deadline`; `None` when it timed out.
    /// Its writes go to a savepoint of `conn`, rolled back if it times out;
    /// an analysis past the deadline is cancelled. Only infrastructure
    /// failures are errors: a refused request is a failed outcome.
    pub(crate) async fn execute(
        &self,
        conn: &mut PgConnection,
        ctx: Ctx<'_>,
    ) -> Result<Option<Outcome>, HandlerError> {
        let trace = ctx.msg.trace_id;
        let outcome = match self {
            Self::Rule(u) => {
                let mut sp = savepoint(conn, &ctx).await?;
                let r = rules::run(&mut sp, u, trace).await;
                let Some(result) = settle(sp, r).await? else {
                    return Ok(None);
                };
                let queue = queues::GENESIS_RULE_UPDATES_RESULTS;
                outcome(queue, &result, result.status, result.error.clone(), ctx)?
            }
            Self::LlmConfig(u) => {
                let mut sp = savepoint(conn, &ctx).await?;
                let r = llm_config::run(&mut sp, u, trace).await;
                let Some(result) = settle(sp, r).await? else {
                    return Ok(None);
                };
                let queue = queues::GENESIS_LLM_CONFIG_UPDATES_RESULTS;
                outcome(queue, &result, result.status, result.error.clone(), ctx)?
            }
            Self::Job(j) => {
                let started = Instant::now();
                let job = jobs::run(&j.language, &j.code, j.analysis_type, ctx.min_job);
                let Ok(analysis) = tokio::time::timeout(ctx.remaining(), job).await else {
                    return Ok(None); // dropping the job cancels its analysis
                };
                let analysis = analysis.map_err(|e| e.to_string());
                let execution = analysis
                    .as_ref()
                    .map_or_else(|_| started.elapsed(), |a| a.execution);
                let result = jobs::result(j, instance(ctx)?, analysis, execution);
                let queue = queues::CODE_EXECUTION_RESULTS;
                outcome(queue, &result, result.status, result.error.clone(), ctx)?
            }
            Self::Learning(report) => {
                let origin = learning::Origin {
                    message_id: ctx.msg.id,
                    source: ctx.msg.source.as_deref(),
                    trace_id: trace,
                };
                let mut sp = savepoint(conn, &ctx).await?;
                let r = learning::record(&mut sp, report, origin).await;
                let Some(recorded) = settle(sp, r).await? else {
                    return Ok(None);
                };
                let record = serde_json::to_value(report).map_err(HandlerError::fatal)?;
                let (status, error) = match recorded {
                    Ok(()) => (ResultStatus::Completed, None),
                    Err(reason) => (ResultStatus::Failed, Some(reason)),
                };
                Outcome {
                    status,
                    error,
                    record,
                    reply: None,
                }
            }
        };
        Ok(Some(outcome))
    }

    /// The failed outcome of this request for `reason` (a timeout).
    pub(crate) fn failed(
        &self,
        ctx: Ctx<'_>,
        reason: String,
        spent: Duration,
    ) -> Result<Outcome, HandlerError> {
        let error = Some(reason.clone());
        let failed = ResultStatus::Failed;
        match self {
            Self::Rule(u) => {
                let result = rules::result(u, error.clone());
                outcome(
                    queues::GENESIS_RULE_UPDATES_RESULTS,
                    &result,
                    failed,
                    error,
                    ctx,
                )
            }
            Self::LlmConfig(u) => {
                let result = llm_config::result(u, error.clone());
                outcome(
                    queues::GENESIS_LLM_CONFIG_UPDATES_RESULTS,
                    &result,
                    failed,
                    error,
                    ctx,
                )
            }
            Self::Job(j) => {
                let result = jobs::result(j, instance(ctx)?, Err(reason), spent);
                outcome(queues::CODE_EXECUTION_RESULTS, &result, failed, error, ctx)
            }
            Self::Learning(report) => Ok(Outcome {
                status: failed,
                error,
                record: serde_json::to_value(report).map_err(HandlerError::fatal)?,
                reply: None,
            }),
        }
    }
}

fn instance<'a>(ctx: Ctx<'a>) -> Result<&'a str, HandlerError> {
    ctx.instance.ok_or_else(|| {
        HandlerError::fatal("no instance to send the result to: the payload has no instance_id and the envelope no source")
    })
}

/// The outcome that sends `result` to `queue`, addressed to the requesting
/// instance and carrying the request's trace id.
fn outcome<T: MessageType + Validate>(
    queue: &'static str,
    result: &T,
    status: ResultStatus,
    error: Option<String>,
    ctx: Ctx<'_>,
) -> Result<Outcome, HandlerError> {
    let target = instance(ctx)?;
    let msg = protocol::encode(result)
        .map_err(|e| HandlerError::fatal(format!("cannot build the {:?} result: {e}", T::TYPE)))?
        .trace_id(ctx.msg.trace_id)
        .target(target)
        .source(SOURCE);
    let queue = QueueName::new(queue).map_err(HandlerError::fatal)?;
    Ok(Outcome {
        status,
        error,
        record: msg.payload().clone(),
        reply: Some((queue, msg)),
    })
}
