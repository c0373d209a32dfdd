//! The operator dashboard, served by `pgflow dashboard` and `pgflow up`: a
//! web page with the live topology (the services and their instances as
//! nodes, the design's 16 queues as edges with depth and rate), per-queue
//! charts of depth, throughput and latency over time, the dead-letter queue
//! with each message's error and history (retry and purge need the token;
//! without one the page is read-only), a proposal's journey across the
//! services, and the alerts of [`alerts`].
//!
//! * The page is three static files compiled into the binary (no build
//!   step, no CDN): it polls the JSON API below every second.
//! * A [`sampler`] reads the queue statistics every `sample_every` and keeps
//!   a window of them in memory for the charts; the dashboard's own
//!   `/healthz`, `/readyz` and `/metrics` come from [`crate::ops`].
//! * Write endpoints require `Authorization: Bearer <token>`; the token is
//!   compared in constant time ([`auth`]).
//! * The page and the API answer only requests whose `Host` is a loopback
//!   name, the bound address or an allowed host, and refuse cross-origin
//!   requests without the token (DNS rebinding, [`origin`]).
//!
//! API: `GET /api/overview`, `GET /api/series[?queue=Q]`,
//! `GET /api/dlq[?queue=Q&limit=N]`, `POST /api/dlq/{id}/retry`,
//! `POST /api/dlq/purge[?queue=Q]`, `GET /api/journey?id=UUID`,
//! `GET /api/alerts`.

pub mod alerts;
mod api;
pub mod auth;
pub mod journey;
pub mod origin;
pub mod sampler;
pub mod topology;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use alerts::{Alert, AlertThresholds};
pub use sampler::{History, QueuePoint, Sample};

use crate::client::Pgflow;
use crate::error::Result;
use crate::ops::{self, OpsState};

/// The default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8700";

/// How the dashboard runs.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// Write access (DLQ retry and purge) for requests bearing this token;
    /// `None`: read-only.
    pub token: Option<String>,
    /// Time between two samples of the queue statistics.
    pub sample_every: Duration,
    /// How much history the charts keep.
    pub window: Duration,
    /// When an alert fires.
    pub thresholds: AlertThresholds,
    /// Host names (besides loopback names and the bound address) that
    /// requests may name in their `Host` header (see [`origin`]).
    pub allowed_hosts: Vec<String>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            token: None,
            sample_every: Duration::from_secs(1),
            window: Duration::from_secs(30 * 60),
            thresholds: AlertThresholds::default(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// What the API handlers share.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) pg: Pgflow,
    pub(crate) config: Arc<DashboardConfig>,
    pub(crate) history: Arc<std::sync::RwLock<History>>,
}

/// A running dashboard.
#[derive(Debug)]
pub struct Dashboard {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The HTTP server (ends when the shutdown token is cancelled).
    pub server: JoinHandle<()>,
    /// The sampler (ends with the server).
    pub sampler: JoinHandle<()>,
}

/// Starts the sampler and the HTTP server on `addr` (port 0 picks a free
/// one); both stop when `shutdown` is cancelled. `ops_state` supplies the
/// Prometheus handle for `/metrics`; it is marked ready once serving.
pub async fn serve(
    pg: Pgflow,
    config: DashboardConfig,
    addr: SocketAddr,
    ops_state: OpsState,
    shutdown: CancellationToken,
) -> Result<Dashboard> {
    let history = Arc::new(std::sync::RwLock::new(History::new(
        config.sample_every,
        config.window,
    )));
    let shared = Shared {
        pg: pg.clone(),
        config: Arc::new(config),
        history: history.clone(),
    };
    let sampler = sampler::spawn(pg.clone(), history, shared.config.clone(), shutdown.clone());
    let guard = origin::OriginGuard::new(
        addr,
        &shared.config.allowed_hosts,
        shared.config.token.as_deref(),
    );
    let routes = api::router(shared).layer(axum::middleware::from_fn_with_state(
        Arc::new(guard),
        origin::guard,
    ));
    let state = ops_state.with_database(pg).with_routes(routes);
    let (addr, server) = ops::serve(addr, state.clone(), shutdown).await?;
    state.set_ready(true);
    Ok(Dashboard {
        addr,
        server,
        sampler,
    })
}
