//! What every service binary does around its own work: serve the ops
//! endpoints (`/healthz`, `/readyz`, `/metrics`, `/status`), connect to the
//! queue database (waiting for it while it is unavailable, see
//! [`wait_db`]), check that the schema is migrated, sample queue depths
//! into gauges, announce readiness with one line on stdout, and run until
//! shutdown is requested.
//!
//! A service's `run` is, in short:
//!
//! ```no_run
//! # async fn run(db: pgflow_core::service::DatabaseArgs, http: pgflow_core::service::HttpArgs,
//! #              shutdown: tokio_util::sync::CancellationToken) -> pgflow_core::Result<()> {
//! use pgflow_core::service::ServiceRuntime;
//! let Some(rt) = ServiceRuntime::start("genesis", &db, &http, shutdown).await? else {
//!     return Ok(()); // shutdown requested while waiting for the database
//! };
//! rt.announce_ready("instance=genesis"); // prints `genesis ready instance=genesis http=127.0.0.1:40123`
//! rt.run_until_shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{redact_url, Pgflow, PgflowOptions};
use crate::error::Result;
use crate::ops::{self, OpsState};

pub mod wait_db;

/// How long [`ServiceRuntime::stop`] waits for its background tasks (the
/// ops server lets requests in progress finish) before aborting them.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How a service's consumers poll, retry and time out (seeds 000 and 003:
/// `PGFLOW_MAX_RETRIES`, `PGFLOW_RETRY_DELAY_MS`, poll interval, batch size,
/// timeout), shared by the services' command lines.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ConsumerArgs {
    /// Retries of a failed message before it goes to the dead-letter queue.
    #[arg(long, env = "PGFLOW_MAX_RETRIES", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub max_retries: u32,
    /// Base delay of the exponential retry backoff, in milliseconds.
    #[arg(long, env = "PGFLOW_RETRY_DELAY_MS", default_value_t = 1000)]
    pub retry_delay_ms: u32,
    /// Polling fallback when no NOTIFY arrives, in milliseconds.
    #[arg(long, env = "PGFLOW_POLL_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_interval_ms: u64,
    /// Largest claim per statement.
    #[arg(long, env = "PGFLOW_BATCH_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,
    /// Time a handler may take for one message, in milliseconds.
    #[arg(long, env = "PGFLOW_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// Messages of one claim handled in one transaction by the consumers
    /// whose handlers are database-only (1: each message in its own).
    #[arg(long, env = "PGFLOW_TX_BATCH", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub tx_batch: u64,
}

impl Default for ConsumerArgs {
    fn default() -> Self {
        Self {
            max_retries: 3,
            retry_delay_ms: 1000,
            poll_interval_ms: 1000,
            batch_size: 10,
            timeout_ms: 30_000,
            tx_batch: 8,
        }
    }
}

impl ConsumerArgs {
    /// The retry policy these settings ask for.
    pub fn retry(&self) -> crate::queue_config::RetryPolicy {
        crate::queue_config::RetryPolicy {
            max_retries: self.max_retries,
            base_delay_ms: self.retry_delay_ms,
            ..crate::queue_config::RetryPolicy::default()
        }
    }

    /// [`ConsumerArgs::tx_batch`] as a size.
    pub fn tx_batch(&self) -> usize {
        usize::try_from(self.tx_batch).unwrap_or(1)
    }

    /// A consumer of `queue` with these settings and `workers` slots (each
    /// message in its own transaction; a consumer whose handler only
    /// writes to the database adds `.tx_batch(args.tx_batch())`).
    pub fn consumer(
        &self,
        queue: crate::QueueName,
        workers: impl Into<usize>,
    ) -> crate::consumer::ConsumerConfig {
        crate::consumer::ConsumerConfig::new(queue)
            .workers(workers.into())
            .batch_size(usize::try_from(self.batch_size).unwrap_or(10))
            .poll_interval(Duration::from_millis(self.poll_interval_ms))
            .timeout(Duration::from_millis(self.timeout_ms))
            .retry(self.retry())
    }
}

/// Connection settings shared by the services (flags with env fallbacks).
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL of the queue database.
    #[arg(long, env = "PGFLOW_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Largest connection pool.
    #[arg(long, env = "PGFLOW_POOL_SIZE", default_value_t = 10)]
    pub pool_size: u32,
}

/// Settings of the ops HTTP server and the metrics it serves.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Address of the ops HTTP server (/healthz, /readyz, /metrics, /status).
    /// Loopback unless configured; port 0 picks a free port (the ready line
    /// shows the bound address). In containers use 0.0.0.0:8080.
    #[arg(long, env = "PGFLOW_HTTP_ADDR", default_value = "127.0.0.1:0")]
    pub http_addr: SocketAddr,
    /// How often queue depths are sampled into the pgflow_queue_* gauges, in milliseconds.
    #[arg(
        long,
        env = "PGFLOW_DEPTH_SAMPLE_MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(10..)
    )]
    pub depth_sample_interval_ms: u64,
}

impl Default for HttpArgs {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            depth_sample_interval_ms: ops::depth::DEFAULT_INTERVAL.as_millis() as u64,
        }
    }
}

/// Connects as `service` and checks the schema.
pub async fn connect(service: &str, db: &DatabaseArgs) -> Result<Pgflow> {
    let pg = Pgflow::connect_with(
        &db.database_url,
        PgflowOptions {
            max_connections: db.pool_size,
            application_name: service.to_string(),
            acquire_timeout: Duration::from_secs(10),
            ..PgflowOptions::default()
        },
    )
    .await?;
    pg.check_schema().await?;
    tracing::info!(service, url = %redact_url(&db.database_url), "connected, schema is current");
    Ok(pg)
}

/// Prints the ready line that supervisors and tests wait for.
pub fn announce_ready(service: &str, detail: &str) {
    println!("{service} ready {detail}");
}

/// Prints `<service> <what> http=<addr>`: a state line with the ops address.
fn announce_ready_line(service: &str, what: &str, http_addr: SocketAddr) {
    println!("{service} {what} http={http_addr}");
}

/// Waits for shutdown, then closes the pool.
pub async fn run_until_shutdown(pg: Pgflow, shutdown: CancellationToken) {
    shutdown.cancelled().await;
    pg.close().await;
}

/// A connected service with its ops server, depth sampler and metrics
/// upkeep running. Built by [`ServiceRuntime::start`]; dropping it stops the
/// background tasks (without waiting for them).
#[derive(Debug)]
pub struct ServiceRuntime {
    service: String,
    pg: Pgflow,
    ops: OpsState,
    http_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks_stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl ServiceRuntime {
    /// Installs the metrics recorder, starts the ops server on
    /// `http.http_addr` and the recorder's upkeep, connects as `service`
    /// (waiting while the database is unavailable: `/readyz` answers 503
    /// with the reason meanwhile, see [`wait_db`]) and checks the schema,
    /// then starts the queue depth sampler. The service is not ready until
    /// [`ServiceRuntime::announce_ready`] (or [`ServiceRuntime::set_ready`]).
    /// `None` when `shutdown` fired before the database answered (the
    /// service should exit 0).
    pub async fn start(
        service: &str,
        db: &DatabaseArgs,
        http: &HttpArgs,
        shutdown: CancellationToken,
    ) -> Result<Option<Self>> {
        let metrics = ops::install_recorder()?;
        let ops = OpsState::new(metrics.clone());
        let tasks_stop = shutdown.child_token();
        let (http_addr, server) =
            ops::serve(http.http_addr, ops.clone(), tasks_stop.clone()).await?;
        let upkeep = ops::prometheus::spawn_upkeep(
            metrics,
            ops::prometheus::DEFAULT_UPKEEP_INTERVAL,
            tasks_stop.clone(),
        );
        let connected = wait_db::connect_waiting(service, db, &ops, http_addr, &shutdown).await;
        let pg = match connected {
            Ok(Some(pg)) => pg,
            Ok(None) | Err(_) => {
                tasks_stop.cancel();
                let _ = tokio::time::timeout(STOP_GRACE, server).await;
                return connected.map(|_| None);
            }
        };
        ops.set_database(pg.clone());
        let sampler = ops::spawn_depth_sampler(
            pg.clone(),
            Duration::from_millis(http.depth_sample_interval_ms),
            tasks_stop.clone(),
        );
        Ok(Some(Self {
            service: service.to_string(),
            pg,
            ops,
            http_addr,
            shutdown,
            tasks_stop,
            tasks: vec![server, sampler, upkeep],
        }))
    }

    /// The database handle.
    pub fn pgflow(&self) -> &Pgflow {
        &self.pg
    }

    /// The ops state (readiness flag, `/status` provider).
    pub fn ops(&self) -> &OpsState {
        &self.ops
    }

    /// The address the ops server is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The process's shutdown token.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Sets the readiness flag behind `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ops.set_ready(ready);
    }

    /// Marks the service ready and prints `<service> ready <detail> http=<addr>`.
    pub fn announce_ready(&self, detail: &str) {
        self.set_ready(true);
        let detail = if detail.is_empty() {
            format!("http={}", self.http_addr)
        } else {
            format!("{detail} http={}", self.http_addr)
        };
        announce_ready(&self.service, &detail);
    }

    /// Waits for shutdown, then [`ServiceRuntime::stop`]s.
    pub async fn run_until_shutdown(self) {
        self.shutdown.cancelled().await;
        self.stop().await;
    }

    /// Marks the service not ready, stops the ops server, the sampler and
    /// the upkeep (waiting up to 5 s for requests in progress), then closes
    /// the pool.
    pub async fn stop(mut self) {
        self.set_ready(false);
        self.tasks_stop.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let joined = tokio::time::timeout(STOP_GRACE, futures_util::future::join_all(tasks)).await;
        if joined.is_err() {
            tracing::warn!(grace = ?STOP_GRACE, "ops tasks did not stop in time; aborting them");
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        self.pg.close().await;
    }
}

impl Drop for ServiceRuntime {
    fn drop(&mut self) {
        self.tasks_stop.cancel();
    }
}
