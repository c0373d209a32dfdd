//! [`Engine`]: the whole of centralcloud's work on one database handle:
//! the four transactional consumers (proposals, votes, metrics, patterns),
//! the deadline decider, the periodic learning loop and the refresher of
//! the `/status` board. The service runs it next to its ops server; tests
//! run it in-process against a test database.

use std::sync::Arc;
use std::time::Duration;

use pgflow_core::consumer::{ConsumerConfig, Runtime};
use pgflow_core::protocol::queues;
use pgflow_core::{Pgflow, Result};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::aggregator::PatternHandler;
use crate::config::Settings;
use crate::consensus::decider;
use crate::consensus::handlers::{ProposalHandler, VoteHandler};
use crate::guardian::MetricsHandler;
use crate::learning;
use crate::queue;
use crate::status::StatusBoard;

/// How often the `/status` proposal counts are refreshed.
pub const STATUS_REFRESH: Duration = Duration::from_secs(2);

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub pg: Pgflow,
    pub settings: Settings,
}

/// centralcloud's consumers and periodic tasks, ready to run.
pub struct Engine {
    ctx: Arc<Ctx>,
    runtime: Runtime,
    board: Arc<StatusBoard>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.ctx.settings)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Registers the consumers on `pg` with `settings`.
    pub fn new(pg: Pgflow, settings: Settings) -> Result<Self> {
        let ctx = Arc::new(Ctx {
            pg: pg.clone(),
            settings,
        });
        let s = &ctx.settings;
        let cfg = |name: &str, workers: usize| -> Result<ConsumerConfig> {
            Ok(ConsumerConfig::new(queue(name)?)
                .workers(workers)
                .batch_size(s.batch_size)
                .poll_interval(s.poll_interval)
                .timeout(s.timeout)
                .retry(s.retry)
                .tx_batch(s.tx_batch))
        };
        let mut runtime = Runtime::new(pg);
        runtime.tx_consumer(
            cfg(queues::PROPOSALS_FOR_CONSENSUS, s.proposals_workers)?,
            ProposalHandler(ctx.clone()),
        );
        runtime.tx_consumer(
            cfg(queues::CONSENSUS_VOTES, s.votes_workers)?,
            VoteHandler(ctx.clone()),
        );
        runtime.tx_consumer(
            cfg(queues::METRICS_TO_GUARDIAN, s.metrics_workers)?,
            MetricsHandler(ctx.clone()),
        );
        runtime.tx_consumer(
            cfg(queues::PATTERNS_FOR_AGGREGATOR, s.patterns_workers)?,
            PatternHandler,
        );
        let board = Arc::new(StatusBoard::new(runtime.states()));
        Ok(Self {
            ctx,
            runtime,
            board,
        })
    }

    /// The board behind `GET /status` (live while the engine runs).
    pub fn status_board(&self) -> Arc<StatusBoard> {
        self.board.clone()
    }

    /// Runs everything until `shutdown`; returns once the consumers have
    /// drained. A configuration error (a queue missing, a bad setting)
    /// stops everything and is returned.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let stop = shutdown.child_token();
        let pg = self.ctx.pg.clone();
        let settings = self.ctx.settings.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(decider::run(
            pg.clone(),
            settings.decider_interval,
            stop.clone(),
        ));
        if let Some(interval) = settings.learning_interval {
            tasks.spawn(learning::run_loop(
                pg.clone(),
                settings.clone(),
                interval,
                stop.clone(),
            ));
        }
        tasks.spawn(self.board.clone().run(pg, STATUS_REFRESH, stop.clone()));
        tracing::info!(
            quorum = settings.quorum,
            vote_deadline_ms = settings.vote_deadline.as_millis() as u64,
            learning_interval_ms = settings.learning_interval.map(|d| d.as_millis() as u64),
            "centralcloud engine started"
        );
        let result = self.runtime.run(stop.clone()).await;
        stop.cancel();
        while tasks.join_next().await.is_some() {}
        result
    }
}
