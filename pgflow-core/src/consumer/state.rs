//! The state an operator asks a consumer for (the seeds' `get_state`):
//! counters since start, messages in flight and the time of the last poll.
//! Every counter is also exported as a Prometheus metric by the runtime.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

/// Live counters of one consumer, shared with whoever holds the handle.
#[derive(Debug, Default)]
pub struct ConsumerState {
    queue: String,
    target: String,
    processed: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    lease_lost: AtomicU64,
    restarts: AtomicU64,
    in_flight: AtomicI64,
    /// Milliseconds since the epoch; 0 = never.
    last_poll_ms: AtomicI64,
}

/// A point-in-time copy of [`ConsumerState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateSnapshot {
    /// Queue consumed.
    pub queue: String,
    /// Instance the consumer claims for ('' for competing consumers).
    pub target: String,
    /// Handler runs finished, whatever their outcome.
    pub processed: u64,
    /// Handler runs that succeeded and were acked.
    pub succeeded: u64,
    /// Handler runs that failed (error, panic or timeout).
    pub failed: u64,
    /// Failures scheduled for another attempt.
    pub retried: u64,
    /// Messages moved to the DLQ.
    pub dead_lettered: u64,
    /// Leases lost: an extension or a settlement found the lease expired
    /// or taken over (the message is delivered again).
    pub lease_lost: u64,
    /// Times the supervisor restarted the consumer loop.
    pub restarts: u64,
    /// Handlers running now.
    pub in_flight: i64,
    /// When the consumer last asked the queue for work.
    pub last_poll: Option<DateTime<Utc>>,
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Processed,
    Succeeded,
    Failed,
    Retried,
    DeadLettered,
    LeaseLost,
    Restarts,
}

impl ConsumerState {
    pub(crate) fn new(queue: &str, target: &str) -> Self {
        Self {
            queue: queue.to_string(),
            target: target.to_string(),
            ..Self::default()
        }
    }

    /// The queue this consumer reads.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub(crate) fn add(&self, what: Count, n: u64) {
        let (c, name) = match what {
            Count::Processed => (&self.processed, None),
            Count::Succeeded => (&self.succeeded, Some("pgflow_succeeded_total")),
            Count::Failed => (&self.failed, Some("pgflow_failed_total")),
            Count::Retried => (&self.retried, Some("pgflow_retried_total")),
            Count::DeadLettered => (&self.dead_lettered, Some("pgflow_dead_lettered_total")),
            Count::LeaseLost => (
                &self.lease_lost,
                Some(crate::ops::prometheus::LEASE_LOST_TOTAL),
            ),
            Count::Restarts => (&self.restarts, Some("pgflow_consumer_restarts_total")),
        };
        c.fetch_add(n, Ordering::Relaxed);
        if let Some(name) = name {
            metrics::counter!(name, "queue" => self.queue.clone()).increment(n);
        }
    }

    pub(crate) fn in_flight_delta(&self, d: i64) {
        let now = self.in_flight.fetch_add(d, Ordering::Relaxed) + d;
        metrics::gauge!("pgflow_in_flight", "queue" => self.queue.clone()).set(now as f64);
    }

    pub(crate) fn polled(&self) {
        self.last_poll_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> StateSnapshot {
        let ms = self.last_poll_ms.load(Ordering::Relaxed);
        StateSnapshot {
            queue: self.queue.clone(),
            target: self.target.clone(),
            processed: self.processed.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            lease_lost: self.lease_lost.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            last_poll: (ms > 0)
                .then(|| Utc.timestamp_millis_opt(ms).single())
                .flatten(),
        }
    }
}
