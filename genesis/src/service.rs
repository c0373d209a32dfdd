//! Genesis as a service: [`Genesis`] (the four consumers on one worker
//! pool) and [`serve`] (connect, ops endpoints with `GET /status`, run
//! until shutdown, drain).

use std::sync::Arc;

use pgflow_core::consumer::{ConsumerConfig, Runtime};
use pgflow_core::service::{DatabaseArgs, HttpArgs, ServiceRuntime};
use pgflow_core::{Pgflow, QueueName};
use tokio_util::sync::CancellationToken;

use crate::config::{WorkflowConfig, CONSUMED_QUEUES};
use crate::error::{Error, Result};
use crate::status::{StatusHandle, WorkflowCounters};
use crate::workflows::{Engine, WorkflowHandler};

/// Genesis's consumers, ready to run.
pub struct Genesis {
    runtime: Runtime,
    status: StatusHandle,
}

impl std::fmt::Debug for Genesis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Genesis")
            .field("config", &self.status.config)
            .finish_non_exhaustive()
    }
}

impl Genesis {
    /// One transactional consumer per consumed queue, all sharing one pool
    /// of `config.workers()` workers. `pg` should allow
    /// [`Genesis::connections_needed`] connections.
    pub fn new(pg: Pgflow, config: WorkflowConfig) -> Result<Self> {
        config.validate()?;
        let counters = Arc::new(WorkflowCounters::default());
        let engine = Arc::new(Engine::new(pg.clone(), config.clone(), counters.clone()));
        let mut runtime = Runtime::new(pg);
        for queue in CONSUMED_QUEUES {
            let mut cc = ConsumerConfig::new(QueueName::new(queue)?)
                .workers(config.max_parallel_workers)
                .parallel(config.parallel)
                .batch_size(config.batch_size)
                .poll_interval(config.poll_interval)
                .timeout(config.handler_timeout());
            if let Some(retry) = config.retry {
                cc = cc.retry(retry);
            }
            runtime.tx_consumer(cc, WorkflowHandler(engine.clone()));
        }
        let status = StatusHandle {
            consumers: runtime.states(),
            counters,
            config,
        };
        Ok(Self { runtime, status })
    }

    /// Database connections the consumers may hold at once: one
    /// transaction per claimed request (each queue claims up to its worker
    /// slots), one more per running workflow for its state writes, and a
    /// few for the ops endpoints.
    pub fn connections_needed(config: &WorkflowConfig) -> u32 {
        let workers = config.workers();
        let held = workers * CONSUMED_QUEUES.len() + workers + 4;
        u32::try_from(held).unwrap_or(u32::MAX)
    }

    /// A handle on the consumers' state.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Runs the consumers until `shutdown`, then drains them. Fails at
    /// once on a configuration error (a consumed queue does not exist).
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        self.runtime.run(shutdown).await?;
        Ok(())
    }
}

/// Runs the service: connects as `genesis`, serves the ops endpoints with
/// the live state at `GET /status`, consumes until `shutdown`, drains the
/// workflows in flight, stops.
pub async fn serve(
    db: &DatabaseArgs,
    http: &HttpArgs,
    config: WorkflowConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    config.validate()?;
    let db = DatabaseArgs {
        pool_size: db.pool_size.max(Genesis::connections_needed(&config)),
        ..db.clone()
    };
    let Some(rt) = ServiceRuntime::start("genesis", &db, http, shutdown.clone()).await? else {
        tracing::info!("shutdown requested while waiting for the database; genesis stopped");
        return Ok(());
    };
    let detail = format!(
        "instance=genesis workers={} parallel={} timeout_ms={}",
        config.workers(),
        config.parallel,
        config.timeout.as_millis()
    );
    let genesis = Genesis::new(rt.pgflow().clone(), config)?;
    let status = genesis.status();
    rt.ops().set_status_provider(move || status.json());
    let mut consumers = tokio::spawn(genesis.run(shutdown.clone()));
    rt.announce_ready(&detail);
    let result = tokio::select! {
        _ = shutdown.cancelled() => consumers.await,
        early = &mut consumers => early,
    };
    rt.stop().await;
    tracing::info!("genesis stopped");
    result.map_err(|e| Error::Task(format!("the consumers stopped abnormally: {e}")))?
}
