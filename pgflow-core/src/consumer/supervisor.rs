//! [`Runtime`]: registers consumers, starts the shared wake-up hub, and
//! supervises each consumer loop one-for-one: a loop that fails or panics is
//! restarted with backoff while the others keep running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::ConsumerConfig;
use super::handler::{Handler, TxHandler};
use super::run::{claim_target, Consumer};
use super::state::{ConsumerState, Count, StateSnapshot};
use super::wakeup::Wakeups;
use super::worker::HandlerKind;
use crate::client::Pgflow;
use crate::error::{report, Result};

struct Registered {
    cfg: Arc<ConsumerConfig>,
    handler: HandlerKind,
    state: Arc<ConsumerState>,
}

/// A set of consumers run and supervised together.
pub struct Runtime {
    pg: Pgflow,
    consumers: Vec<Registered>,
    wakeups: Option<Wakeups>,
}

impl Runtime {
    /// A runtime on `pg` with no consumers yet.
    pub fn new(pg: Pgflow) -> Self {
        Self {
            pg,
            consumers: Vec::new(),
            wakeups: None,
        }
    }

    /// Uses an existing wake-up hub instead of starting one (tests, or
    /// several runtimes in one process).
    pub fn with_wakeups(mut self, w: Wakeups) -> Self {
        self.wakeups = Some(w);
        self
    }

    fn add(&mut self, cfg: ConsumerConfig, handler: HandlerKind) -> Arc<ConsumerState> {
        let target = cfg.instance.clone().unwrap_or_default();
        let state = Arc::new(ConsumerState::new(cfg.queue.as_str(), &target));
        self.consumers.push(Registered {
            cfg: Arc::new(cfg),
            handler,
            state: state.clone(),
        });
        state
    }

    /// Adds a consumer; the returned handle reads its state while it runs.
    pub fn consumer(&mut self, cfg: ConsumerConfig, h: impl Handler) -> Arc<ConsumerState> {
        self.add(cfg, HandlerKind::Plain(Arc::new(h)))
    }

    /// Adds a consumer in transactional mode (see [`TxHandler`]).
    pub fn tx_consumer(&mut self, cfg: ConsumerConfig, h: impl TxHandler) -> Arc<ConsumerState> {
        self.add(cfg, HandlerKind::Tx(Arc::new(h)))
    }

    /// The state of every consumer.
    pub fn states(&self) -> Vec<Arc<ConsumerState>> {
        self.consumers.iter().map(|c| c.state.clone()).collect()
    }

    /// Snapshots of every consumer's state.
    pub fn snapshot(states: &[Arc<ConsumerState>]) -> Vec<StateSnapshot> {
        states.iter().map(|s| s.snapshot()).collect()
    }

    /// Checks every consumer's settings and queue, then runs them all until
    /// `shutdown`; returns when every consumer has drained. Configuration
    /// errors (unknown queue, missing instance name) are returned at once.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let mut plans = Vec::with_capacity(self.consumers.len());
        for c in self.consumers {
            c.cfg.validate()?;
            let qc = self.pg.queue_config(&c.cfg.queue).await?;
            claim_target(&c.cfg, qc.delivery)?;
            let lease = c.cfg.lease.unwrap_or(qc.visibility_timeout);
            plans.push((c, qc.delivery, lease));
        }
        let (wakeups, listener) = match self.wakeups {
            Some(w) => (w, None),
            None => {
                let (w, t) = Wakeups::start(&self.pg, shutdown.clone());
                (w, Some(t))
            }
        };
        let mut set = JoinSet::new();
        for (c, delivery, lease) in plans {
            let (pg, wakeups, shutdown) = (self.pg.clone(), wakeups.clone(), shutdown.clone());
            set.spawn(async move {
                let wake = wakeups.subscribe(c.cfg.queue.as_str());
                supervise(shutdown, || Consumer {
                    pg: pg.clone(),
                    cfg: c.cfg.clone(),
                    handler: c.handler.clone(),
                    state: c.state.clone(),
                    wake: wake.clone(),
                    delivery,
                    lease,
                })
                .await
            });
        }
        while set.join_next().await.is_some() {}
        if let Some(t) = listener {
            let _ = t.await;
        }
        Ok(())
    }
}

/// Runs consumers made by `make` until `shutdown`, restarting after failures.
async fn supervise(shutdown: CancellationToken, make: impl Fn() -> Consumer) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let consumer = make();
        let (queue, state) = (consumer.cfg.queue.clone(), consumer.state.clone());
        let started = Instant::now();
        tracing::info!(queue = %queue, slots = consumer.cfg.slots(), "consumer started");
        let outcome = tokio::spawn(consumer.run(shutdown.clone())).await;
        if shutdown.is_cancelled() {
            match outcome {
                Ok(Ok(())) => tracing::info!(queue = %queue, "consumer stopped"),
                Ok(Err(e)) => {
                    tracing::warn!(queue = %queue, error = %report(&e), "consumer stopped with an error")
                }
                Err(e) => {
                    tracing::error!(queue = %queue, error = %e, "consumer panicked while stopping")
                }
            }
            return;
        }
        match outcome {
            Ok(Ok(())) => {
                tracing::error!(queue = %queue, "consumer loop ended on its own; restarting")
            }
            Ok(Err(e)) => {
                tracing::error!(queue = %queue, error = %report(&e), "consumer loop failed; restarting")
            }
            Err(e) => {
                tracing::error!(queue = %queue, error = %e, "consumer loop panicked; restarting")
            }
        }
        state.add(Count::Restarts, 1);
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(200);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
