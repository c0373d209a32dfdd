//! The queue-depth sampler: every tick it reads [`Pgflow::list_queues`] and
//! sets the per-queue gauges (`pgflow_queue_depth`, `pgflow_queue_in_flight`,
//! `pgflow_queue_delayed`, `pgflow_dlq_messages`,
//! `pgflow_queue_oldest_age_seconds`). A failed sample is logged and tried
//! again on the next tick (and counted in `pgflow_depth_sample_errors_total`);
//! the gauges keep their last values meanwhile.

use std::collections::BTreeSet;
use std::time::Duration;

use metrics::{counter, gauge};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::prometheus::{
    DEPTH_SAMPLE_ERRORS_TOTAL, DLQ_MESSAGES, QUEUE_DELAYED, QUEUE_DEPTH, QUEUE_IN_FLIGHT,
    QUEUE_OLDEST_AGE_SECONDS,
};
use crate::client::{Pgflow, QueueStats};
use crate::error::report;

/// The services' default sampling interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Shortest interval accepted (shorter values are raised to it).
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Spawns the sampler: samples at once, then every `every`, until
/// `shutdown` is cancelled (an in-progress query is abandoned). Never panics;
/// database errors are logged at `warn` and retried on the next tick.
pub fn spawn_depth_sampler(
    pg: Pgflow,
    every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(MIN_INTERVAL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut known = BTreeSet::new();
        let mut failing = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let sample = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = pg.list_queues() => r,
            };
            match sample {
                Ok(stats) => {
                    if failing {
                        tracing::info!("queue depth sampling recovered");
                        failing = false;
                    }
                    known = record(&stats, &known);
                }
                Err(e) => {
                    failing = true;
                    counter!(DEPTH_SAMPLE_ERRORS_TOTAL).increment(1);
                    tracing::warn!(
                        error = %report(&e),
                        "queue depth sample failed; retrying in {:?}",
                        every.max(MIN_INTERVAL)
                    );
                }
            }
        }
        tracing::debug!("queue depth sampler stopped");
    })
}

/// Sets the gauges from one sample and zeroes those of queues that were in
/// `previous` but are gone now. Returns the names of the queues sampled.
pub fn record(stats: &[QueueStats], previous: &BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for s in stats {
        let queue = s.queue_name.clone();
        gauge!(QUEUE_DEPTH, "queue" => queue.clone()).set(s.pending as f64);
        gauge!(QUEUE_IN_FLIGHT, "queue" => queue.clone()).set(s.in_flight as f64);
        gauge!(QUEUE_DELAYED, "queue" => queue.clone()).set(s.delayed as f64);
        gauge!(DLQ_MESSAGES, "queue" => queue.clone()).set(s.dlq as f64);
        gauge!(QUEUE_OLDEST_AGE_SECONDS, "queue" => queue.clone())
            .set(s.oldest_pending_age_secs.unwrap_or(0.0).max(0.0));
        seen.insert(queue);
    }
    for gone in previous.difference(&seen) {
        for name in [
            QUEUE_DEPTH,
            QUEUE_IN_FLIGHT,
            QUEUE_DELAYED,
            DLQ_MESSAGES,
            QUEUE_OLDEST_AGE_SECONDS,
        ] {
            gauge!(name, "queue" => gone.clone()).set(0.0);
        }
    }
    seen
}
