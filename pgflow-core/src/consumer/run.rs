//! The fetch loop of one consumer: claim at most the free worker slots,
//! hand each message to a worker, sleep until woken, polled or cancelled;
//! meanwhile the lease keeper extends the leases of the messages being
//! handled; at shutdown drain in-flight work within the timeout and release
//! the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::completer::{self, PendingAcks};
use super::config::ConsumerConfig;
use super::lease::{self, Held, InFlight};
use super::state::ConsumerState;
use super::tx_batch;
use super::worker::{execute, HandlerKind, WorkerCtx};
use crate::client::{ClaimOptions, Pgflow};
use crate::error::{report, Error, Result};
use crate::queue_config::DeliveryKind;

/// Consecutive failed claims after which the loop gives up and lets the
/// supervisor restart it (connection errors never count: they only back off).
const MAX_CLAIM_ERRORS: u32 = 5;
/// Longest wait for a fuller batch of worker slots while the queue has a backlog.
const FETCH_COOLDOWN: Duration = Duration::from_millis(5);
/// How often a broadcast subscriber refreshes its liveness.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// What the supervisor hands to one run of the loop.
pub(crate) struct Consumer {
    pub pg: Pgflow,
    pub cfg: Arc<ConsumerConfig>,
    pub handler: HandlerKind,
    pub state: Arc<ConsumerState>,
    pub wake: Arc<Notify>,
    pub delivery: DeliveryKind,
    /// The lease of a claim: the queue's visibility timeout unless the
    /// config sets one; extended while the handler runs.
    pub lease: Duration,
}

/// The claim target for a queue of `kind` consumed as `instance`.
pub(crate) fn claim_target(cfg: &ConsumerConfig, kind: DeliveryKind) -> Result<Option<String>> {
    match kind {
        DeliveryKind::Competing => Ok(None),
        DeliveryKind::Targeted | DeliveryKind::Broadcast => match &cfg.instance {
            Some(i) => Ok(Some(i.clone())),
            None => Err(Error::Config(format!(
                "queue {} uses {} delivery: the consumer needs an instance name (set INSTANCE_ID / ConsumerConfig::instance)",
                cfg.queue.as_str(),
                kind.as_str()
            ))),
        },
    }
}

async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

impl Consumer {
    /// Runs until `shutdown`; an `Err` asks the supervisor for a restart.
    pub(crate) async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let cfg = self.cfg.clone();
        let target = claim_target(&cfg, self.delivery)?;
        if let Some(retry) = &cfg.retry {
            self.pg.set_retry_policy(&cfg.queue, retry).await?;
        }
        // An instance consuming a broadcast or targeted queue registers
        // there: broadcasts are copied to it, and sends to it are accepted.
        let heartbeat = match (self.delivery, &target) {
            (DeliveryKind::Broadcast | DeliveryKind::Targeted, Some(me)) => {
                self.pg.register_subscriber(&cfg.queue, me).await?;
                Some(tokio::spawn(heartbeat(
                    self.pg.clone(),
                    cfg.clone(),
                    me.clone(),
                    shutdown.child_token(),
                )))
            }
            _ => None,
        };
        let opts = ClaimOptions {
            visibility_timeout: Some(self.lease),
            target,
        };
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let acks = Arc::new(PendingAcks::default());
        let completer = tokio::spawn(completer::run(
            self.pg.clone(),
            done_rx,
            acks.clone(),
            self.state.clone(),
        ));
        let in_flight: InFlight = Arc::new(Mutex::new(HashMap::new()));
        // The keeper outlives the fetch loops: draining handlers keep their leases.
        let keeper_stop = CancellationToken::new();
        let keeper = tokio::spawn(lease::keep(
            self.pg.clone(),
            cfg.queue.clone(),
            self.lease,
            in_flight.clone(),
            self.state.clone(),
            keeper_stop.clone(),
        ));
        let ctx = WorkerCtx {
            pg: self.pg.clone(),
            handler: self.handler.clone(),
            timeout: cfg.timeout,
            state: self.state.clone(),
            done: done_tx,
            acks,
            in_flight: in_flight.clone(),
        };
        let slots = Arc::new(Semaphore::new(cfg.slots()));
        // Claims in flight at once: while one claim's statement runs, the
        // workers it is not waiting for can be fed by the other. A loop that
        // fails stops the others (they give back the acks they hold), so
        // the supervisor restarts the consumer as with a single loop.
        let fetchers = cfg.fetch_loops();
        let mut task_sets: Vec<JoinSet<()>> = (0..fetchers).map(|_| JoinSet::new()).collect();
        let stop = shutdown.child_token();
        let (this, opts_ref, ctx_ref, slots_ref, stop_ref) = (&self, &opts, &ctx, &slots, &stop);
        let result = futures_util::future::join_all(task_sets.iter_mut().map(|tasks| async move {
            let r = this
                .fetch_loop(opts_ref, ctx_ref, slots_ref, tasks, stop_ref)
                .await;
            if r.is_err() {
                stop_ref.cancel();
            }
            r
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .map(|_| ());

        // Drain: let running handlers finish within the timeout.
        let drained = tokio::time::timeout(cfg.shutdown_timeout, async {
            for tasks in &mut task_sets {
                while tasks.join_next().await.is_some() {}
            }
        })
        .await
        .is_ok();
        if !drained {
            for tasks in &mut task_sets {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
            let left: Vec<_> = in_flight
                .lock()
                .map(|m| m.values().map(|h| h.receipt).collect())
                .unwrap_or_default();
            self.state.in_flight_delta(-(left.len() as i64));
            match self.pg.release(&left).await {
                Ok(ids) => tracing::warn!(
                    queue = %cfg.queue, released = ids.len(),
                    "shutdown timeout: unfinished messages released for redelivery"
                ),
                Err(e) => tracing::error!(
                    queue = %cfg.queue, error = %report(&e),
                    "shutdown timeout: could not release unfinished messages; they are delivered again when their leases expire"
                ),
            }
        }
        keeper_stop.cancel();
        let _ = keeper.await;
        drop(ctx);
        let _ = completer.await;
        if let Some(h) = heartbeat {
            h.abort();
        }
        result
    }

    async fn fetch_loop(
        &self,
        opts: &ClaimOptions,
        ctx: &WorkerCtx,
        slots: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let max_take = cfg.batch_size.min(cfg.slots());
        let mut backoff = Duration::from_millis(100);
        let mut errors = 0u32;
        let mut backlog = false;
        loop {
            while tasks.try_join_next().is_some() {}
            let mut permits = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                p = take_slots(slots, max_take, backlog) => p?,
            };
            while permits.num_permits() < max_take {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.merge(p),
                    Err(_) => break,
                }
            }
            self.state.polled();
            let want = permits.num_permits();
            // Acks of finished messages ride along with the claim.
            let acks = ctx.acks.take();
            let claimed = tokio::select! {
                _ = shutdown.cancelled() => {
                    ctx.acks.put_back(acks);
                    return Ok(());
                }
                r = self.pg.ack_and_claim(&cfg.queue, &acks, want, opts) => r,
            };
            let claimed = match claimed {
                Ok((report, batch)) => {
                    completer::account_acks(&report, &self.state);
                    Ok(batch)
                }
                Err(e) => {
                    ctx.acks.put_back(acks);
                    Err(e)
                }
            };
            let batch = match claimed {
                Ok(b) => b,
                Err(e) => {
                    drop(permits);
                    if !e.is_connection() {
                        errors += 1;
                        if errors >= MAX_CLAIM_ERRORS {
                            return Err(e);
                        }
                    }
                    tracing::warn!(queue = %cfg.queue, error = %report(&e), retry_in = ?backoff, "claim failed");
                    if !sleep_or_cancel(backoff, shutdown).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            errors = 0;
            let got = batch.len();
            let full = got == want;
            backlog = full;
            if !batch.is_empty() {
                metrics::counter!("pgflow_claimed_total", "queue" => cfg.queue.to_string())
                    .increment(batch.len() as u64);
            }
            if let Ok(mut m) = ctx.in_flight.lock() {
                for d in &batch {
                    m.insert(d.id, Held::new(d.receipt()));
                }
            }
            match &ctx.handler {
                HandlerKind::Tx(h) if cfg.tx_batch > 1 && batch.len() > 1 => {
                    tx_batch::spawn(tasks, ctx, h, batch, &mut permits, cfg.tx_batch);
                }
                _ => {
                    for d in batch {
                        let Some(permit) = permits.split(1) else {
                            break;
                        };
                        tasks.spawn(execute(ctx.clone(), d, permit));
                    }
                }
            }
            drop(permits);
            if got > 1 && !full && !cfg.fetch_cooldown.is_zero() {
                // Work streams in faster than one claim per message: let a
                // little accumulate so the next claim (and its commit)
                // carries a batch. A lone message is claimed at once.
                if !sleep_or_cancel(cfg.fetch_cooldown, shutdown).await {
                    return Ok(());
                }
            }
            if !full {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(cfg.poll_interval) => {}
                }
            }
        }
    }
}

/// Waits for worker slots. After a full claim (the queue has a backlog) it
/// waits up to [`FETCH_COOLDOWN`] for half a batch of slots, so that a busy
/// consumer claims in batches instead of a few messages per statement; else
/// one free slot is enough.
async fn take_slots(
    slots: &Arc<Semaphore>,
    max_take: usize,
    backlog: bool,
) -> Result<OwnedSemaphorePermit> {
    let closed = |_| Error::Config("worker slots closed".into());
    if backlog && max_take > 1 {
        let half = u32::try_from(max_take / 2).unwrap_or(u32::MAX);
        if let Ok(p) =
            tokio::time::timeout(FETCH_COOLDOWN, slots.clone().acquire_many_owned(half)).await
        {
            return p.map_err(closed);
        }
    }
    slots.clone().acquire_owned().await.map_err(closed)
}

/// Keeps a subscriber live; on a targeted queue it also dead-letters the
/// messages of instances gone for longer than the queue allows
/// ([`Pgflow::expire_gone_targets`]).
async fn heartbeat(pg: Pgflow, cfg: Arc<ConsumerConfig>, me: String, stop: CancellationToken) {
    while sleep_or_cancel(HEARTBEAT, &stop).await {
        if let Err(e) = pg.register_subscriber(&cfg.queue, &me).await {
            tracing::warn!(queue = %cfg.queue, subscriber = %me, error = %report(&e), "subscriber heartbeat failed; retrying");
        }
        match pg.expire_gone_targets(&cfg.queue).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(queue = %cfg.queue, messages = n, "dead-lettered messages for instances gone too long");
            }
            Err(e) => {
                tracing::warn!(queue = %cfg.queue, error = %report(&e), "expiring messages of gone instances failed; retrying");
            }
        }
    }
}
