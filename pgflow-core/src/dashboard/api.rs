//! The dashboard's HTTP routes: the page and its assets, and the JSON API
//! the page polls (see the module docs of [`super`]). Errors answer with a
//! status and a plain-text reason; nothing a client sends can panic.

use std::sync::PoisonError;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{alerts, auth, journey, topology, Shared};
use crate::error::{report, Error};
use crate::queue_name::QueueName;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/dashboard.js");
const STYLE_CSS: &str = include_str!("assets/dashboard.css");

/// Most dead letters one request lists.
const MAX_DLQ_LIMIT: i64 = 500;

pub(crate) fn router(shared: Shared) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/overview", get(overview))
        .route("/api/series", get(series))
        .route("/api/alerts", get(alerts_now))
        .route("/api/dlq", get(dlq_list))
        .route("/api/dlq/purge", post(dlq_purge))
        .route("/api/dlq/{id}/retry", post(dlq_retry))
        .route("/api/journey", get(journey_of))
        .with_state(shared)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// An error for the client: 400 for bad input, 404 for unknown ids, 503
/// when the database cannot answer.
fn failure(e: &Error) -> Response {
    let status = match e {
        Error::InvalidQueueName { .. } | Error::UnknownQueue(_) => StatusCode::BAD_REQUEST,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(error = %report(e), "dashboard request failed");
    }
    (status, report(e)).into_response()
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, msg).into_response()
}

fn queue_param(q: Option<&str>) -> Result<Option<QueueName>, Error> {
    match q {
        None | Some("") => Ok(None),
        Some(q) => QueueName::new(q).map(Some),
    }
}

async fn overview(State(s): State<Shared>) -> Response {
    let (latest, last_error) = {
        let h = s.history.read().unwrap_or_else(PoisonError::into_inner);
        (h.latest(), h.last_error.clone())
    };
    let topo = topology::assemble(latest.as_deref());
    let firing = latest
        .as_deref()
        .map(|l| alerts::evaluate(l, &s.config.thresholds))
        .unwrap_or_default();
    Json(json!({
        "at": latest.as_ref().map(|l| l.at),
        "read_only": s.config.token.is_none(),
        "sample_every_ms": s.config.sample_every.as_millis() as u64,
        "thresholds": s.config.thresholds,
        "sampling_error": last_error,
        "topology": topo,
        "queues": latest.as_ref().map(|l| &l.queues),
        "alerts": firing,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct SeriesQuery {
    queue: Option<String>,
}

async fn series(State(s): State<Shared>, Query(q): Query<SeriesQuery>) -> Response {
    let queue = match queue_param(q.queue.as_deref()) {
        Ok(q) => q,
        Err(e) => return failure(&e),
    };
    let all = s
        .history
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .all();
    let points: Vec<_> = all
        .iter()
        .map(|sample| match &queue {
            Some(q) => {
                json!({ "at": sample.at, "queues": { q.as_str(): sample.queues.get(q.as_str()) } })
            }
            None => json!({ "at": sample.at, "queues": &sample.queues }),
        })
        .collect();
    Json(json!({
        "sample_every_ms": s.config.sample_every.as_millis() as u64,
        "points": points,
    }))
    .into_response()
}

async fn alerts_now(State(s): State<Shared>) -> Response {
    let latest = s
        .history
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .latest();
    let firing = latest
        .as_deref()
        .map(|l| alerts::evaluate(l, &s.config.thresholds))
        .unwrap_or_default();
    Json(json!({ "thresholds": s.config.thresholds, "alerts": firing })).into_response()
}

#[derive(Debug, Deserialize)]
struct DlqQuery {
    queue: Option<String>,
    limit: Option<i64>,
}

async fn dlq_list(State(s): State<Shared>, Query(q): Query<DlqQuery>) -> Response {
    let queue = match queue_param(q.queue.as_deref()) {
        Ok(q) => q,
        Err(e) => return failure(&e),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_DLQ_LIMIT).contains(&limit) {
        return bad_request(format!("limit must be 1..={MAX_DLQ_LIMIT}, got {limit}"));
    }
    match s.pg.list_dlq_messages(queue.as_ref(), limit).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => failure(&e),
    }
}

async fn dlq_retry(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(d) = auth::check(s.config.token.as_deref(), &headers) {
        return d.response().into_response();
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return bad_request(format!("{id:?} is not a message id (a UUID)"));
    };
    match s.pg.retry_dlq_message(id).await {
        Ok(()) => {
            tracing::info!(message_id = %id, "dead letter retried from the dashboard");
            Json(json!({ "retried": id })).into_response()
        }
        Err(e) => failure(&e),
    }
}

#[derive(Debug, Deserialize)]
struct PurgeQuery {
    queue: Option<String>,
}

async fn dlq_purge(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<PurgeQuery>,
) -> Response {
    if let Err(d) = auth::check(s.config.token.as_deref(), &headers) {
        return d.response().into_response();
    }
    let queue = match queue_param(q.queue.as_deref()) {
        Ok(q) => q,
        Err(e) => return failure(&e),
    };
    match s.pg.purge_dlq(queue.as_ref()).await {
        Ok(n) => {
            tracing::info!(queue = ?queue.as_ref().map(QueueName::as_str), purged = n, "dead letters purged from the dashboard");
            Json(json!({ "purged": n })).into_response()
        }
        Err(e) => failure(&e),
    }
}

#[derive(Debug, Deserialize)]
struct JourneyQuery {
    id: Option<String>,
}

async fn journey_of(State(s): State<Shared>, Query(q): Query<JourneyQuery>) -> Response {
    let raw = q.id.unwrap_or_default();
    let Ok(id) = Uuid::parse_str(raw.trim()) else {
        return bad_request(format!(
            "{raw:?} is not an id: give a proposal id or a trace id (a UUID)"
        ));
    };
    match journey::find(&s.pg, id).await {
        Ok(j) => Json(j).into_response(),
        Err(e) => failure(&e),
    }
}
