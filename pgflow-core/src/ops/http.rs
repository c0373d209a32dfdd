//! The ops HTTP server: `GET /healthz` (the process is alive), `GET /readyz`
//! (ready flag set and the database answers), `GET /metrics` (Prometheus
//! text) and `GET /status` (a service-specific JSON document, 404 until a
//! provider is set). A service may add routes of its own
//! ([`OpsState::set_routes`]); requests no ops route matches go to them.
//! With [`OpsState::set_api_tokens`], `/status` and those routes answer 401
//! unless the request carries an accepted bearer token ([`super::token`]);
//! `/healthz`, `/readyz` and `/metrics` stay open.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::token::ApiTokens;
use crate::client::Pgflow;
use crate::error::{report, Error, Result};

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long `/readyz` waits for the database to answer `SELECT 1`.
pub const READINESS_DB_TIMEOUT: Duration = Duration::from_secs(1);

/// Produces the JSON document served at `/status`.
pub type StatusProvider = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the handlers share. Cheap to clone; clones share the readiness flag
/// and the status provider, so a service keeps a clone and flips them
/// while the server runs.
#[derive(Clone)]
pub struct OpsState {
    ready: Arc<AtomicBool>,
    /// Why the service is not ready yet (e.g. waiting for the database).
    waiting: Arc<RwLock<Option<String>>>,
    pg: Arc<RwLock<Option<Pgflow>>>,
    metrics: PrometheusHandle,
    status: Arc<RwLock<Option<StatusProvider>>>,
    routes: Arc<RwLock<Option<Router>>>,
    tokens: Arc<RwLock<Option<ApiTokens>>>,
}

impl std::fmt::Debug for OpsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsState")
            .field("ready", &self.is_ready())
            .field("database_check", &self.database().is_some())
            .field("status_provider", &self.status_provider().is_some())
            .field("extra_routes", &self.extra_routes().is_some())
            .field("api_tokens", &self.api_tokens().is_some())
            .finish_non_exhaustive()
    }
}

impl OpsState {
    /// A state that renders `metrics`, not ready, without a database check
    /// and without a status provider.
    pub fn new(metrics: PrometheusHandle) -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            waiting: Arc::new(RwLock::new(None)),
            pg: Arc::new(RwLock::new(None)),
            metrics,
            status: Arc::new(RwLock::new(None)),
            routes: Arc::new(RwLock::new(None)),
            tokens: Arc::new(RwLock::new(None)),
        }
    }

    /// Requires one of `tokens` (as `Authorization: Bearer`) on `/status`
    /// and on the extra routes from now on; `None` opens them again. Set it
    /// before the status provider and the routes, so nothing is ever served
    /// unprotected.
    pub fn set_api_tokens(&self, tokens: Option<ApiTokens>) {
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = tokens;
    }

    fn api_tokens(&self) -> Option<ApiTokens> {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `None` when no token is required or `headers` carry an accepted
    /// one, else the 401 answer.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        self.api_tokens()?.refusal(headers)
    }

    /// Makes `/readyz` also require `pg` to answer `SELECT 1` within
    /// [`READINESS_DB_TIMEOUT`].
    pub fn with_database(self, pg: Pgflow) -> Self {
        self.set_database(pg);
        self
    }

    /// Sets (or replaces) the database `/readyz` checks, also while serving
    /// (see [`OpsState::with_database`]).
    pub fn set_database(&self, pg: Pgflow) {
        *self.pg.write().unwrap_or_else(PoisonError::into_inner) = Some(pg);
    }

    fn database(&self) -> Option<Pgflow> {
        self.pg
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets why the service is not ready yet (`/readyz` answers 503 with it
    /// while the readiness flag is false); `None` clears it.
    pub fn set_waiting(&self, reason: Option<String>) {
        *self.waiting.write().unwrap_or_else(PoisonError::into_inner) = reason;
    }

    /// Serves `provider()` at `/status`.
    pub fn with_status(
        self,
        provider: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.set_status_provider(provider);
        self
    }

    /// Sets (or replaces) the `/status` provider, also while serving.
    pub fn set_status_provider(
        &self,
        provider: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) {
        *self.status.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(provider));
    }

    /// Also serves `routes` (a service's own API, with its state and
    /// layers applied): requests that no ops route matches go to them.
    pub fn with_routes(self, routes: Router) -> Self {
        self.set_routes(routes);
        self
    }

    /// Sets (or replaces) the extra routes, also while serving (see
    /// [`OpsState::with_routes`]). The ops routes keep precedence.
    pub fn set_routes(&self, routes: Router) {
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = Some(routes);
    }

    fn extra_routes(&self) -> Option<Router> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the readiness flag (`/readyz` answers 503 while it is false).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The readiness flag.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The metrics handle rendered at `/metrics`.
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.metrics
    }

    fn status_provider(&self) -> Option<StatusProvider> {
        self.status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why the service is not ready, or `None` when it is.
    pub async fn not_ready_reason(&self) -> Option<String> {
        if !self.is_ready() {
            let waiting = self
                .waiting
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            return Some(match waiting {
                Some(why) => format!("not ready: {why}"),
                None => "not ready: starting or shutting down".into(),
            });
        }
        let pg = self.database()?;
        let check = sqlx::query("SELECT 1").execute(pg.pool());
        match tokio::time::timeout(READINESS_DB_TIMEOUT, check).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %report(&e), "readiness check: database query failed");
                Some("not ready: database unavailable".into())
            }
            Err(_) => {
                tracing::warn!(timeout = ?READINESS_DB_TIMEOUT, "readiness check: database did not answer in time");
                Some("not ready: database did not answer in time".into())
            }
        }
    }
}

/// The routes, for embedding in another server (the extra routes of
/// [`OpsState::set_routes`] answer whatever these do not match).
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .fallback(extra)
        .with_state(state)
}

/// Binds `addr` (port 0 picks a free port), then serves [`router`] until
/// `shutdown` is cancelled, letting requests in progress finish. Returns the
/// bound address and the server task. A refused address gives
/// [`Error::HttpBind`], which names the address and the flag to change.
pub async fn serve(
    addr: SocketAddr,
    state: OpsState,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::HttpBind { addr, source })?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        match served {
            Ok(()) => tracing::debug!(addr = %bound, "ops HTTP server stopped"),
            Err(e) => tracing::error!(addr = %bound, error = %e, "ops HTTP server failed"),
        }
    });
    tracing::info!(addr = %bound, "ops HTTP server listening");
    Ok((bound, task))
}

/// Hands a request no ops route matched to the extra routes, if any.
async fn extra(State(state): State<OpsState>, req: Request) -> Response {
    if let Some(denied) = state.refusal(req.headers()) {
        return denied;
    }
    match state.extra_routes() {
        Some(routes) => call(routes, req).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Calls a router as a service (its readiness is always immediate).
async fn call<S>(mut svc: S, req: Request) -> Response
where
    S: axum::ServiceExt<Request, Response = Response, Error = Infallible>,
{
    if let Err(never) = std::future::poll_fn(|cx| svc.poll_ready(cx)).await {
        match never {}
    }
    match svc.call(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<OpsState>) -> (StatusCode, String) {
    match state.not_ready_reason().await {
        None => (StatusCode::OK, "ready".into()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn metrics(State(state): State<OpsState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn status(State(state): State<OpsState>, headers: HeaderMap) -> Response {
    if let Some(denied) = state.refusal(&headers) {
        return denied;
    }
    match state.status_provider() {
        Some(provider) => Json(provider()).into_response(),
        None => (StatusCode::NOT_FOUND, "no status for this process").into_response(),
    }
}
