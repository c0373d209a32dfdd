//! The process-wide Prometheus recorder and the names of the runtime's
//! metrics.
//!
//! [`install_recorder`] installs the global `metrics` recorder once and
//! returns a [`PrometheusHandle`] that renders the scrape text. Histograms
//! whose name ends in `_seconds` get buckets from 0.5 ms to 30 s.
//!
//! The metric names are constants here so that the modules that emit them
//! (consumer runtime, spool, depth sampler) and [`describe_metrics`] agree.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Counter `{queue}`: messages sent.
pub const PUBLISHED_TOTAL: &str = "pgflow_published_total";
/// Counter `{queue}`: messages claimed by a consumer.
pub const CLAIMED_TOTAL: &str = "pgflow_claimed_total";
/// Counter `{queue}`: messages handled and acked.
pub const SUCCEEDED_TOTAL: &str = "pgflow_succeeded_total";
/// Counter `{queue}`: handler failures (retried or dead-lettered).
pub const FAILED_TOTAL: &str = "pgflow_failed_total";
/// Counter `{queue}`: failures scheduled for another attempt.
pub const RETRIED_TOTAL: &str = "pgflow_retried_total";
/// Counter `{queue}`: messages moved to the dead-letter queue.
pub const DEAD_LETTERED_TOTAL: &str = "pgflow_dead_lettered_total";
/// Counter `{queue}`: sends written to the local spool because the database was unavailable.
pub const SPOOLED_TOTAL: &str = "pgflow_spooled_total";
/// Counter `{queue}`: consumer loops restarted after an error.
pub const CONSUMER_RESTARTS_TOTAL: &str = "pgflow_consumer_restarts_total";
/// Counter `{queue}`: message leases extended by the consumer's lease keeper
/// (one per message per round).
pub const LEASE_EXTENSIONS_TOTAL: &str = "pgflow_lease_extensions_total";
/// Counter `{queue}`: lease-extension statements that failed (tried again
/// on the keeper's next round).
pub const LEASE_EXTENSION_ERRORS_TOTAL: &str = "pgflow_lease_extension_errors_total";
/// Counter `{queue}`: leases lost by a consumer: an extension or a
/// settlement found the lease expired or taken over (the message is
/// delivered again).
pub const LEASE_LOST_TOTAL: &str = "pgflow_lease_lost_total";
/// Histogram `{queue}`: handler run time in seconds.
pub const HANDLER_DURATION_SECONDS: &str = "pgflow_handler_duration_seconds";
/// Histogram `{queue}`: time from send to the start of the handler, in seconds.
pub const PUBLISH_TO_START_SECONDS: &str = "pgflow_publish_to_start_seconds";
/// Gauge `{queue}`: messages this process is handling now.
pub const IN_FLIGHT: &str = "pgflow_in_flight";
/// Gauge: messages waiting in the local spool.
pub const SPOOL_MESSAGES: &str = "pgflow_spool_messages";
/// Gauge `{queue}`: messages ready to be claimed (sampled from the database).
pub const QUEUE_DEPTH: &str = "pgflow_queue_depth";
/// Gauge `{queue}`: messages claimed by any consumer, lease running (sampled).
pub const QUEUE_IN_FLIGHT: &str = "pgflow_queue_in_flight";
/// Gauge `{queue}`: messages waiting for a delay or a retry backoff (sampled).
pub const QUEUE_DELAYED: &str = "pgflow_queue_delayed";
/// Gauge `{queue}`: dead letters (sampled).
pub const DLQ_MESSAGES: &str = "pgflow_dlq_messages";
/// Gauge `{queue}`: age in seconds of the oldest ready message, 0 when none (sampled).
pub const QUEUE_OLDEST_AGE_SECONDS: &str = "pgflow_queue_oldest_age_seconds";

/// Counter: failed queue-depth samples (the sampler retries on its next tick).
pub const DEPTH_SAMPLE_ERRORS_TOTAL: &str = "pgflow_depth_sample_errors_total";
/// Counter `{statement}`: queue statements run again after PostgreSQL
/// aborted them as deadlock victims.
pub const DEADLOCK_RETRIES_TOTAL: &str = "pgflow_deadlock_retries_total";

/// Histogram buckets (upper bounds, seconds) of every `*_seconds` histogram.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often [`spawn_upkeep`] runs the recorder's maintenance by default.
pub const DEFAULT_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<std::result::Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the Prometheus recorder as the global `metrics` recorder and
/// describes the runtime's metrics. Idempotent: later calls return the same
/// handle. Fails with [`Error::Metrics`] when another global recorder was
/// installed first (by something other than this function).
pub fn install_recorder() -> Result<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|e| e.to_string())?;
            describe_metrics();
            Ok(handle)
        })
        .clone()
        .map_err(Error::Metrics)
}

/// Describes (help text and unit) every metric the runtime emits. Emitting
/// is left to the modules that own the numbers; a described metric shows up
/// in the scrape once it has a value. Safe to call more than once.
pub fn describe_metrics() {
    let counters = [
        (PUBLISHED_TOTAL, "Messages sent, by queue."),
        (CLAIMED_TOTAL, "Messages claimed by this process, by queue."),
        (SUCCEEDED_TOTAL, "Messages handled and acked, by queue."),
        (FAILED_TOTAL, "Handler failures, by queue."),
        (
            RETRIED_TOTAL,
            "Failures scheduled for another attempt, by queue.",
        ),
        (
            DEAD_LETTERED_TOTAL,
            "Messages moved to the dead-letter queue, by queue.",
        ),
        (
            SPOOLED_TOTAL,
            "Sends written to the local spool while the database was unavailable, by queue.",
        ),
        (
            CONSUMER_RESTARTS_TOTAL,
            "Consumer loops restarted after an error, by queue.",
        ),
        (
            LEASE_EXTENSIONS_TOTAL,
            "Message leases extended while their handler ran, by queue.",
        ),
        (
            LEASE_EXTENSION_ERRORS_TOTAL,
            "Lease-extension statements that failed (tried again), by queue.",
        ),
        (
            LEASE_LOST_TOTAL,
            "Leases lost (expired or taken over) while handling or settling, by queue.",
        ),
        (
            DEPTH_SAMPLE_ERRORS_TOTAL,
            "Failed queue-depth samples (retried on the next tick).",
        ),
        (
            DEADLOCK_RETRIES_TOTAL,
            "Queue statements run again after being a deadlock victim.",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    describe_histogram!(
        HANDLER_DURATION_SECONDS,
        Unit::Seconds,
        "Handler run time, by queue."
    );
    describe_histogram!(
        PUBLISH_TO_START_SECONDS,
        Unit::Seconds,
        "Time from send to the start of the handler, by queue."
    );
    let gauges = [
        (
            IN_FLIGHT,
            "Messages this process is handling now, by queue.",
        ),
        (SPOOL_MESSAGES, "Messages waiting in the local spool."),
        (
            QUEUE_DEPTH,
            "Messages ready to be claimed, by queue (sampled from the database).",
        ),
        (
            QUEUE_IN_FLIGHT,
            "Messages claimed with a running lease, by queue (sampled).",
        ),
        (
            QUEUE_DELAYED,
            "Messages waiting for a delay or retry backoff, by queue (sampled).",
        ),
        (DLQ_MESSAGES, "Dead letters, by queue (sampled)."),
    ];
    for (name, help) in gauges {
        describe_gauge!(name, Unit::Count, help);
    }
    describe_gauge!(
        QUEUE_OLDEST_AGE_SECONDS,
        Unit::Seconds,
        "Age of the oldest ready message, by queue; 0 when the queue is empty (sampled)."
    );
}

/// Runs the recorder's maintenance (draining histogram samples) every
/// `every` until `shutdown` is cancelled. `install_recorder` does not spawn
/// this itself because it may be called outside a tokio runtime.
pub fn spawn_upkeep(
    handle: PrometheusHandle,
    every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => handle.run_upkeep(),
            }
        }
    })
}
