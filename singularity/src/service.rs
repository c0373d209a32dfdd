//! The running service: the ops server (with `POST /proposals` and a
//! `/status` of consumer states, proposals and Genesis requests by state,
//! and queue depths; both behind `SINGULARITY_API_TOKEN`, which a server
//! listening beyond loopback refuses to start without), the eight
//! consumers, the pattern miner, the sweeper of stuck proposals
//! ([`crate::sweeper`]), and an
//! orderly shutdown (consumers drain, then the server stops and the pool
//! closes).
//!
//! | queue | delivery | handler | workers |
//! |---|---|---|---|
//! | consensus_vote_requests_queue | broadcast | [`VoteRequests`] | `PGFLOW_CONSENSUS_WORKERS` |
//! | consensus_results_queue | targeted | [`ConsensusResults`] | `PGFLOW_CONSENSUS_WORKERS` |
//! | proposals_for_execution_queue | targeted | [`Executions`] | `PGFLOW_PROPOSALS_WORKERS` |
//! | rollback_triggers_queue | targeted | [`Rollbacks`] | `PGFLOW_ROLLBACK_WORKERS` |
//! | guardian_safety_profiles_queue | broadcast | [`ProfileUpdates`] | `PGFLOW_SAFETY_WORKERS` |
//! | genesis_rule_updates_results | targeted | [`RuleResults`] | `PGFLOW_GENESIS_WORKERS` |
//! | genesis_llm_config_updates_results | targeted | [`LlmConfigResults`] | `PGFLOW_GENESIS_WORKERS` |
//! | code_execution_results | targeted | [`CodeExecutionResults`] | `PGFLOW_GENESIS_WORKERS` |
//!
//! Every handler is transactional: its state change and the messages it
//! causes commit with the ack.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use pgflow_core::consumer::{ConsumerState, Runtime};
use pgflow_core::service::{DatabaseArgs, HttpArgs, ServiceRuntime};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceArgs;
use crate::consensus::ConsensusResults;
use crate::error::Result;
use crate::execution::Executions;
use crate::genesis_results::{CodeExecutionResults, LlmConfigResults, RuleResults};
use crate::instance::Instance;
use crate::patterns::PatternMiner;
use crate::profiles::ProfileUpdates;
use crate::rollback::Rollbacks;
use crate::status;
use crate::sweeper::Sweeper;
use crate::voting::VoteRequests;

/// The service, started and running until its shutdown token is cancelled.
pub struct Singularity {
    rt: ServiceRuntime,
    inst: Arc<Instance>,
    consumers: JoinHandle<pgflow_core::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Singularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Singularity")
            .field("instance", &self.inst.id)
            .field("http_addr", &self.rt.http_addr())
            .finish_non_exhaustive()
    }
}

impl Singularity {
    /// Connects, registers this instance on the broadcast queues (so every
    /// broadcast sent from now on reaches it), starts the consumers, the
    /// pattern miner and the status refresher, and serves the HTTP API.
    /// Not ready until [`Singularity::announce_ready`]. `None` when
    /// `shutdown` fired while it waited for the database.
    pub async fn start(
        db: &DatabaseArgs,
        http: &HttpArgs,
        args: &ServiceArgs,
        shutdown: CancellationToken,
    ) -> Result<Option<Self>> {
        // Before anything else: an API beyond loopback needs a token.
        let tokens = args.api.tokens(http.http_addr)?;
        let needed = connections_needed(args);
        let mut db = db.clone();
        if db.pool_size < needed {
            tracing::info!(
                pool_size = db.pool_size,
                needed,
                "raising the connection pool to fit the configured workers"
            );
            db.pool_size = needed;
        }
        let Some(rt) = ServiceRuntime::start("singularity", &db, http, shutdown.clone()).await?
        else {
            return Ok(None);
        };
        // Before the status provider and the routes exist: never served open.
        rt.ops().set_api_tokens(tokens);
        let pg = rt.pgflow().clone();
        let inst = Arc::new(Instance::new(pg.clone(), args)?);
        check_login(&pg, &inst.id).await?;
        for q in [&inst.queues.vote_requests, &inst.queues.profiles] {
            pg.register_subscriber(q, &inst.id).await?;
        }
        let (w, c) = (&args.workers, &args.consumers);
        let mut runtime = Runtime::new(pg.clone());
        let states = vec![
            runtime.tx_consumer(
                c.consumer(inst.queues.vote_requests.clone(), w.consensus_workers)
                    .instance(&inst.id)
                    .tx_batch(c.tx_batch()),
                VoteRequests::new(inst.clone()),
            ),
            runtime.tx_consumer(
                c.consumer(inst.queues.results.clone(), w.consensus_workers)
                    .instance(&inst.id)
                    .tx_batch(c.tx_batch()),
                ConsensusResults::new(inst.clone()),
            ),
            runtime.tx_consumer(
                c.consumer(inst.queues.execution.clone(), w.proposals_workers)
                    .instance(&inst.id),
                Executions::new(inst.clone()),
            ),
            runtime.tx_consumer(
                c.consumer(inst.queues.rollbacks.clone(), w.rollback_workers)
                    .instance(&inst.id),
                Rollbacks::new(inst.clone()),
            ),
            runtime.tx_consumer(
                c.consumer(inst.queues.profiles.clone(), w.safety_workers)
                    .instance(&inst.id)
                    .tx_batch(c.tx_batch()),
                ProfileUpdates::new(inst.clone()),
            ),
            runtime.tx_consumer(
                c.consumer(inst.queues.genesis_rule_results.clone(), w.genesis_workers)
                    .instance(&inst.id),
                RuleResults::new(inst.clone()),
            ),
            runtime.tx_consumer(
                c.consumer(
                    inst.queues.genesis_llm_config_results.clone(),
                    w.genesis_workers,
                )
                .instance(&inst.id),
                LlmConfigResults::new(inst.clone()),
            ),
            runtime.tx_consumer(
                c.consumer(
                    inst.queues.code_execution_results.clone(),
                    w.genesis_workers,
                )
                .instance(&inst.id),
                CodeExecutionResults::new(inst.clone()),
            ),
        ];
        let consumers = tokio::spawn(runtime.run(shutdown.clone()));

        let mut tasks = Vec::new();
        let miner = PatternMiner::new(
            inst.clone(),
            Duration::from_millis(args.pattern_interval_ms),
        );
        for _ in 0..args.workers.patterns_workers {
            tasks.push(tokio::spawn(miner.clone().run(shutdown.clone())));
        }
        let sweeper = Sweeper::new(
            inst.clone(),
            Duration::from_millis(args.stuck_after_ms),
            &args.consumers,
            Duration::from_millis(args.sweep_interval_ms),
        );
        tasks.push(tokio::spawn(sweeper.run(shutdown.clone())));
        tasks.push(inst.spool.clone().spawn_replayer(
            inst.pg.clone(),
            inst.id.clone(),
            shutdown.clone(),
        ));
        let cache = Arc::new(RwLock::new(serde_json::Value::Null));
        tasks.push(tokio::spawn(refresh_status(
            inst.clone(),
            cache.clone(),
            Duration::from_millis(c.poll_interval_ms.clamp(100, 5000)),
            shutdown.clone(),
        )));
        rt.ops().set_status_provider({
            let inst = inst.clone();
            move || status_document(&inst, &states, &cache)
        });
        rt.ops().set_routes(crate::http::router(inst.clone()));
        tracing::info!(
            instance = %inst.id,
            workspace = %inst.workspace.root().display(),
            verify_cmd = inst.measurer.verify_cmd().unwrap_or("-"),
            "singularity started"
        );
        Ok(Some(Self {
            rt,
            inst,
            consumers,
            tasks,
        }))
    }

    /// The address of the HTTP server.
    pub fn http_addr(&self) -> SocketAddr {
        self.rt.http_addr()
    }

    /// The instance (for library calls such as [`crate::proposals::submit`]).
    pub fn instance(&self) -> &Arc<Instance> {
        &self.inst
    }

    /// Marks the service ready and prints the ready line.
    pub fn announce_ready(&self) {
        self.rt
            .announce_ready(&format!("instance={}", self.inst.id));
    }

    /// Runs until the shutdown token is cancelled: the consumers drain, the
    /// miner stops, then the HTTP server and the pool. Consumers that stop
    /// on their own (a configuration error) end the service with that error.
    pub async fn run_until_shutdown(mut self) -> Result<()> {
        let shutdown = self.rt.shutdown().clone();
        let early = tokio::select! {
            _ = shutdown.cancelled() => None,
            r = &mut self.consumers => Some(r),
        };
        let outcome = match early {
            Some(r) => {
                shutdown.cancel();
                r
            }
            None => (&mut self.consumers).await,
        };
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.rt.stop().await;
        tracing::info!("singularity stopped");
        match outcome {
            Ok(r) => Ok(r?),
            Err(e) => Err(crate::error::Error::Io(std::io::Error::other(format!(
                "consumers panicked: {e}"
            )))),
        }
    }
}

/// Refuses to start an instance whose database login cannot speak for it:
/// the database records what it sends as sent by its login role, and the
/// other services refuse messages in its name from anyone else (only an
/// operator's unrestricted login may run any instance).
async fn check_login(pg: &pgflow_core::Pgflow, instance: &str) -> Result<()> {
    let sender = pg.default_source().await?;
    if sender == instance || sender.starts_with(pgflow_core::protocol::sender::OPERATOR_PREFIX) {
        return Ok(());
    }
    Err(crate::error::Error::Config(format!(
        "instance {instance} logs in to the database as role {sender:?}: each instance logs in \
         as its own role, named by its instance id (create it with `pgflow init --instances \
         {instance}`, and put its user in PGFLOW_DATABASE_URL)"
    )))
}

/// Connections the workers can hold at once: one transaction per handler
/// (an execution also reads and records on a second connection; each of the
/// three Genesis results consumers has its own workers), one per miner, plus the status refresher, the depth sampler, the sweeper and HTTP requests.
fn connections_needed(args: &ServiceArgs) -> u32 {
    let w = &args.workers;
    let n = 2 * u32::from(w.consensus_workers)
        + 2 * u32::from(w.proposals_workers)
        + u32::from(w.rollback_workers)
        + u32::from(w.safety_workers)
        + u32::from(w.patterns_workers)
        + 3 * u32::from(w.genesis_workers)
        + 4;
    n.max(4)
}

/// Refreshes the database part of `/status` (proposals and Genesis
/// requests by state, queue depths) every `every` (the provider itself
/// cannot query), or less often when the counts are slow (deep queues): a
/// pause of at least [`STATUS_PAUSE_FACTOR`] times the last refresh, so the
/// refresh never takes more than 2% of one server connection's time.
async fn refresh_status(
    inst: Arc<Instance>,
    cache: Arc<RwLock<serde_json::Value>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let started = std::time::Instant::now();
        let gathered = async {
            let mut conn = inst.pg.pool().acquire().await?;
            status::gather(&mut conn, &inst.id).await
        }
        .await;
        let pause = every.max(started.elapsed() * STATUS_PAUSE_FACTOR);
        match gathered.and_then(|r| Ok(serde_json::to_value(r)?)) {
            Ok(v) => *cache.write().unwrap_or_else(PoisonError::into_inner) = v,
            Err(e) => tracing::debug!(error = %e, "status refresh failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// See [`refresh_status`].
const STATUS_PAUSE_FACTOR: u32 = 50;

/// The `/status` document.
fn status_document(
    inst: &Instance,
    states: &[Arc<ConsumerState>],
    cache: &RwLock<serde_json::Value>,
) -> serde_json::Value {
    let db = cache.read().unwrap_or_else(PoisonError::into_inner).clone();
    json!({
        "service": "singularity",
        "instance_id": inst.id,
        "workspace": inst.workspace.root(),
        "consumers": Runtime::snapshot(states),
        "proposals": db.get("proposals"),
        "genesis_requests": db.get("genesis_requests"),
        "queues": db.get("queues"),
        "duplicates": {
            "total": inst.counters.total(),
            "by_kind": inst.counters.by_kind(),
        },
    })
}
