//! The service's own HTTP API, served on the ops server next to
//! `/healthz`, `/readyz`, `/metrics` and `/status`:
//!
//! * `POST /proposals` with a JSON [`NewProposal`] body submits a proposal
//!   (201 with `{proposal_id, trace_id, status}`; 202 with status
//!   `spooled` while PostgreSQL is unreachable: it is kept on local disk and
//!   submitted when the database is back, see [`crate::submission_spool`];
//!   400 with `{error}` for a body that is not valid JSON, has unknown or
//!   missing fields, or breaks the protocol's rules; 413 past
//!   [`MAX_BODY_BYTES`]; 503 when it can be neither stored nor spooled).
//!   An idempotency key (the `Idempotency-Key` header or the
//!   `idempotency_key` field) makes a retry safe: a repeat is answered 200
//!   (202 while spooled) with the first proposal and `"repeat": true`, and
//!   submits nothing; the same key with a different change is refused 422;
//! * `GET /proposals/{id}` shows one proposal of this instance.
//!
//! With `SINGULARITY_API_TOKEN` set (required beyond loopback) these
//! routes and `/status` answer 401 without `Authorization: Bearer <token>`
//! (see [`pgflow_core::ops::token`]).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use uuid::Uuid;

use crate::error::Error;
use crate::instance::Instance;
use crate::proposals::{self, NewProposal};
use crate::store;

/// Largest request body: the protocol's largest change (1 MiB) plus room
/// for the other fields and JSON escaping.
pub const MAX_BODY_BYTES: usize = pgflow_core::protocol::validate::MAX_CODE_LEN + 64 * 1024;

/// The header that carries an idempotency key (as the `idempotency_key` field may).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The routes, with their state and body limit applied.
pub fn router(inst: Arc<Instance>) -> Router {
    Router::new()
        .route("/proposals", post(create))
        .route("/proposals/{id}", get(show))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(inst)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn create(
    State(inst): State<Arc<Instance>>,
    headers: HeaderMap,
    body: Result<Json<NewProposal>, JsonRejection>,
) -> Response {
    let Json(mut p) = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(status, rejection.body_text());
        }
    };
    if let Err(why) = take_key_header(&headers, &mut p) {
        return error(StatusCode::BAD_REQUEST, why);
    }
    match proposals::submit_or_spool(&inst.pg, &inst.spool, &inst.id, p).await {
        Ok(s) if s.status == "spooled" => (StatusCode::ACCEPTED, Json(s)).into_response(),
        Ok(s) if s.repeat => (StatusCode::OK, Json(s)).into_response(),
        Ok(s) => (StatusCode::CREATED, Json(s)).into_response(),
        Err(Error::InvalidProposal(why)) => error(StatusCode::BAD_REQUEST, why),
        Err(e @ Error::IdempotencyConflict(_)) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        Err(e) => {
            let why = pgflow_core::error::report(&e);
            tracing::error!(error = %why, "POST /proposals failed");
            error(StatusCode::SERVICE_UNAVAILABLE, why)
        }
    }
}

/// Moves the `Idempotency-Key` header, if any, into `p` (refused when it
/// is not text, or the body names a different key).
fn take_key_header(headers: &HeaderMap, p: &mut NewProposal) -> Result<(), String> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(());
    };
    let key = v
        .to_str()
        .map_err(|_| "the Idempotency-Key header is not printable ASCII".to_string())?;
    match &p.idempotency_key {
        Some(field) if field != key => Err(format!(
            "the Idempotency-Key header {key:?} and the idempotency_key field {field:?} differ"
        )),
        _ => {
            p.idempotency_key = Some(key.to_string());
            Ok(())
        }
    }
}

async fn show(State(inst): State<Arc<Instance>>, Path(id): Path<String>) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a proposal id"),
        );
    };
    let found = async {
        let mut conn = inst.pg.pool().acquire().await?;
        store::get(&mut conn, &inst.id, id).await
    }
    .await;
    match found {
        Ok(Some(p)) => Json(json!({
            "proposal_id": p.id,
            "instance_id": p.instance_id,
            "agent_type": p.agent_type,
            "file": p.file,
            "status": p.status,
            "trace_id": p.trace_id,
            "impact_score": p.impact_score,
            "risk_score": p.risk_score,
            "votes": p.votes,
            "confidence": p.confidence,
            "rationale": p.rationale,
            "backup_existed": p.backup_existed,
            "metrics_before": p.metrics_before,
            "metrics_after": p.metrics_after,
            "error": p.error,
            "rollback_reason": p.rollback_reason,
            "duplicate_deliveries": p.duplicate_deliveries,
            "pattern_reported_at": p.pattern_reported_at,
            "created_at": p.created_at,
            "applied_at": p.applied_at,
            "rolled_back_at": p.rolled_back_at,
        }))
        .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no proposal {id} at {}", inst.id),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            pgflow_core::error::report(&e),
        ),
    }
}
