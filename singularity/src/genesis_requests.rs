//! The `singularity.genesis_requests` table: every request this instance
//! sent to Genesis (a learned rule, an LLM configuration, a code analysis
//! job), stored in the transaction that sends it (status `sent`) and
//! finished by Genesis's result (`completed` or `failed`, with the result
//! payload) in the transaction that acks the result.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pgflow_core::protocol::ResultStatus;
use pgflow_core::{OutgoingMessage, QueueName};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::instance::Queues;

/// What a request asks Genesis for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// A learned rule (`genesis_rule_updates`).
    RuleUpdate,
    /// An LLM configuration (`genesis_llm_config_updates`).
    LlmConfigUpdate,
    /// A code analysis job (`code_execution_requests`).
    CodeExecution,
}

impl RequestKind {
    /// Every kind.
    pub const ALL: [RequestKind; 3] = [
        RequestKind::RuleUpdate,
        RequestKind::LlmConfigUpdate,
        RequestKind::CodeExecution,
    ];

    /// The name stored in `singularity.genesis_requests.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::RuleUpdate => "rule_update",
            RequestKind::LlmConfigUpdate => "llm_config_update",
            RequestKind::CodeExecution => "code_execution",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown genesis request kind {s:?} in the database"
                ))
            })
    }

    /// The queue requests of this kind are sent to.
    pub fn queue(self, queues: &Queues) -> &QueueName {
        match self {
            RequestKind::RuleUpdate => &queues.genesis_rules,
            RequestKind::LlmConfigUpdate => &queues.genesis_llm_configs,
            RequestKind::CodeExecution => &queues.code_execution,
        }
    }
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Sent; no result yet.
    Sent,
    /// Genesis finished it.
    Completed,
    /// Genesis could not do it (the reason is stored).
    Failed,
}

impl RequestState {
    /// Every state, in life order.
    pub const ALL: [RequestState; 3] = [
        RequestState::Sent,
        RequestState::Completed,
        RequestState::Failed,
    ];

    /// The name stored in `singularity.genesis_requests.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Sent => "sent",
            RequestState::Completed => "completed",
            RequestState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown genesis request status {s:?} in the database"
                ))
            })
    }
}

impl From<ResultStatus> for RequestState {
    fn from(s: ResultStatus) -> Self {
        match s {
            ResultStatus::Completed => RequestState::Completed,
            ResultStatus::Failed => RequestState::Failed,
        }
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `singularity.genesis_requests`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GenesisRequest {
    /// The requesting instance.
    pub instance_id: String,
    /// The stored kind name (see [`RequestKind`]).
    pub kind: String,
    /// The request id the result echoes.
    pub request_id: String,
    /// The queue it was sent to.
    pub queue_name: String,
    /// The message that carried it.
    pub message_id: Uuid,
    /// The trace id it was sent under (the result carries it back).
    pub trace_id: Uuid,
    /// The request payload as sent.
    pub payload: serde_json::Value,
    /// The stored state name (see [`RequestState`]).
    pub status: String,
    /// The result payload.
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// The message that carried the result.
    pub result_message_id: Option<Uuid>,
    /// Results delivered again after the first.
    pub duplicate_results: i32,
    /// When sent.
    pub sent_at: DateTime<Utc>,
    /// When the result arrived.
    pub finished_at: Option<DateTime<Utc>>,
}

impl GenesisRequest {
    /// The state.
    pub fn state(&self) -> Result<RequestState> {
        RequestState::parse(&self.status)
    }
}

/// A request about to be sent: its id and the message carrying it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The request id the result will echo.
    pub request_id: String,
    /// The message (type, payload, trace id, source already set).
    pub message: OutgoingMessage,
}

/// Stores `requests` of `kind` for `instance` as `sent`, in one statement,
/// on `conn` (the transaction that sends them). A request id this instance
/// already used for this kind is refused with [`Error::InvalidRequest`].
pub(crate) async fn insert(
    conn: &mut PgConnection,
    instance: &str,
    kind: RequestKind,
    queue: &QueueName,
    requests: &[Outgoing],
) -> Result<()> {
    let ids: Vec<&str> = requests.iter().map(|r| r.request_id.as_str()).collect();
    let messages: Vec<Uuid> = requests.iter().map(|r| r.message.message_id()).collect();
    let traces: Vec<Uuid> = requests.iter().map(|r| r.message.trace()).collect();
    let payloads: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| r.message.payload().clone())
        .collect();
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO singularity.genesis_requests
             (instance_id, kind, request_id, queue_name, message_id, trace_id, payload)
         SELECT $1, $2, u.request_id, $3, u.message_id, u.trace_id, u.payload
           FROM unnest($4::text[], $5::uuid[], $6::uuid[], $7::jsonb[])
                AS u(request_id, message_id, trace_id, payload)
         ON CONFLICT (instance_id, kind, request_id) DO NOTHING
         RETURNING request_id",
    )
    .bind(instance)
    .bind(kind.as_str())
    .bind(queue.as_str())
    .bind(&ids)
    .bind(&messages)
    .bind(&traces)
    .bind(&payloads)
    .fetch_all(&mut *conn)
    .await?;
    if inserted.len() < requests.len() {
        let taken: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !inserted.iter().any(|i| i == id))
            .collect();
        return Err(Error::InvalidRequest(format!(
            "{kind} request id(s) already used by {instance}: {}",
            taken.join(", ")
        )));
    }
    Ok(())
}

/// The request `request_id` of `kind` sent by `instance`, if any.
pub async fn get(
    conn: &mut PgConnection,
    instance: &str,
    kind: RequestKind,
    request_id: &str,
) -> Result<Option<GenesisRequest>> {
    Ok(sqlx::query_as(
        "SELECT instance_id, kind, request_id, queue_name, message_id, trace_id, payload, status,
                result, error, result_message_id, duplicate_results, sent_at, finished_at
           FROM singularity.genesis_requests
          WHERE instance_id = $1 AND kind = $2 AND request_id = $3",
    )
    .bind(instance)
    .bind(kind.as_str())
    .bind(request_id)
    .fetch_optional(conn)
    .await?)
}

/// The state of a request, locked until the transaction ends.
pub(crate) async fn lock_state(
    conn: &mut PgConnection,
    instance: &str,
    kind: RequestKind,
    request_id: &str,
) -> Result<Option<RequestState>> {
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM singularity.genesis_requests
          WHERE instance_id = $1 AND kind = $2 AND request_id = $3
            FOR UPDATE",
    )
    .bind(instance)
    .bind(kind.as_str())
    .bind(request_id)
    .fetch_optional(conn)
    .await?;
    status.as_deref().map(RequestState::parse).transpose()
}

/// What a result says about its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished<'a> {
    /// `completed` or `failed`.
    pub state: RequestState,
    /// The result payload.
    pub result: &'a pgflow_core::Payload,
    /// Why it failed.
    pub error: Option<&'a str>,
    /// The message that carried the result.
    pub message_id: Uuid,
}

/// Records the result of a request that is `sent`; false when it is not
/// (already finished, or unknown).
pub(crate) async fn finish(
    conn: &mut PgConnection,
    instance: &str,
    kind: RequestKind,
    request_id: &str,
    f: Finished<'_>,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE singularity.genesis_requests
            SET status = $4, result = $5, error = $6, result_message_id = $7,
                finished_at = now(), updated_at = now()
          WHERE instance_id = $1 AND kind = $2 AND request_id = $3 AND status = 'sent'",
    )
    .bind(instance)
    .bind(kind.as_str())
    .bind(request_id)
    .bind(f.state.as_str())
    .bind(f.result)
    .bind(f.error)
    .bind(f.message_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Counts a result that arrived for a request already finished.
pub(crate) async fn count_duplicate(
    conn: &mut PgConnection,
    instance: &str,
    kind: RequestKind,
    request_id: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE singularity.genesis_requests
            SET duplicate_results = duplicate_results + 1, updated_at = now()
          WHERE instance_id = $1 AND kind = $2 AND request_id = $3",
    )
    .bind(instance)
    .bind(kind.as_str())
    .bind(request_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// An instance's Genesis requests by state, overall and per kind (every
/// kind and state present, 0 when none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    /// All kinds together.
    pub by_state: BTreeMap<RequestState, i64>,
    /// Per kind.
    pub by_kind: BTreeMap<RequestKind, BTreeMap<RequestState, i64>>,
}

fn zeros() -> BTreeMap<RequestState, i64> {
    RequestState::ALL.into_iter().map(|s| (s, 0)).collect()
}

/// The Genesis requests of `instance` by kind and state.
pub async fn counts(conn: &mut PgConnection, instance: &str) -> Result<RequestCounts> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, status, count(*) FROM singularity.genesis_requests
          WHERE instance_id = $1 GROUP BY kind, status",
    )
    .bind(instance)
    .fetch_all(conn)
    .await?;
    let mut counts = RequestCounts {
        by_state: zeros(),
        by_kind: RequestKind::ALL.into_iter().map(|k| (k, zeros())).collect(),
    };
    for (kind, status, n) in rows {
        let (kind, state) = (RequestKind::parse(&kind)?, RequestState::parse(&status)?);
        *counts.by_state.entry(state).or_default() += n;
        *counts
            .by_kind
            .entry(kind)
            .or_insert_with(zeros)
            .entry(state)
            .or_default() += n;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in RequestKind::ALL {
            assert_eq!(RequestKind::parse(k.as_str()).unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for s in RequestState::ALL {
            assert_eq!(RequestState::parse(s.as_str()).unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(RequestKind::parse("x").is_err());
        assert!(RequestState::parse("x").is_err());
        assert_eq!(
            RequestState::from(ResultStatus::Failed),
            RequestState::Failed
        );
    }

    #[test]
    fn kinds_name_their_queues() {
        let q = Queues::new().unwrap();
        assert_eq!(
            RequestKind::RuleUpdate.queue(&q).as_str(),
            "genesis_rule_updates"
        );
        assert_eq!(
            RequestKind::LlmConfigUpdate.queue(&q).as_str(),
            "genesis_llm_config_updates"
        );
        assert_eq!(
            RequestKind::CodeExecution.queue(&q).as_str(),
            "code_execution_requests"
        );
    }
}
