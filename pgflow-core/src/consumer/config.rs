//! How one consumer runs: the knobs of seeds 000 and 003
//! (`workers`, `batch_size`, `poll_interval_ms`, `timeout_ms`,
//! `max_retries`, `retry_delay_ms`, `enable_parallel_processing`,
//! `max_parallel_workers`) plus the instance identity for targeted and
//! broadcast queues.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::queue_config::RetryPolicy;
use crate::queue_name::QueueName;

/// Shortest lease a consumer may ask for: the keeper extends it four times
/// per period, and each extension is a round trip.
const MIN_LEASE: Duration = Duration::from_millis(100);

/// Settings of one consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerConfig {
    /// Queue consumed.
    pub queue: QueueName,
    /// Handlers running at once when `parallel` is on (`max_parallel_workers`,
    /// the seeds' `workers`). Default 4.
    pub workers: usize,
    /// `enable_parallel_processing`: off means strictly one message at a
    /// time, in queue order. Default on.
    pub parallel: bool,
    /// Largest claim (`batch_size`); a claim never exceeds the free worker
    /// slots either. Default 10.
    pub batch_size: usize,
    /// Polling fallback when no NOTIFY arrives (`poll_interval_ms`). Default 1 s.
    pub poll_interval: Duration,
    /// Pause after a claim that emptied the queue, so that under a steady
    /// stream the next claim carries a batch rather than one message (each
    /// claim is a commit). Adds at most this much latency. Default 2 ms;
    /// zero turns it off.
    pub fetch_cooldown: Duration,
    /// Time a handler may run for one message (`timeout_ms`); past it the
    /// attempt counts as a retryable failure. Default 30 s.
    pub timeout: Duration,
    /// The lease of a claim. `None` (the default) takes the queue's
    /// visibility timeout. The lease is extended every
    /// 1/[`EXTENSIONS_PER_LEASE`](super::EXTENSIONS_PER_LEASE) of it while
    /// the handler runs, so it bounds how long a crashed consumer's
    /// messages stay invisible, not how long a handler may run.
    pub lease: Option<Duration>,
    /// This instance's name: targeted queues deliver the messages addressed
    /// to it; broadcast queues register it as a subscriber.
    pub instance: Option<String>,
    /// Time in-flight handlers get to finish at shutdown before their
    /// leases are released. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Retry policy (`max_retries`, `retry_delay_ms`) written to the queue at
    /// start; `None` keeps the queue's own.
    pub retry: Option<RetryPolicy>,
    /// Transactional handlers only: up to this many messages of one claim
    /// are handled one after the other in a single transaction that acks
    /// them all (one BEGIN, one ack statement, one commit for the lot). If
    /// any of them fails, the transaction is rolled back and each message
    /// is handled again in its own transaction, so a failure still settles
    /// only its own message; handlers must therefore be safe to run again
    /// (their database writes roll back with the batch). Default 1 (every
    /// message in its own transaction).
    pub tx_batch: usize,
    /// Claims in flight at once (fetch loops sharing the worker slots).
    /// While one claim's statement runs, another can feed the workers that
    /// are already free, so a busy consumer is not bound by one round trip
    /// per batch. 0 (the default) picks one per 16 worker slots, from 1 to
    /// 4; sequential consumers always use one.
    pub fetchers: usize,
}

impl ConsumerConfig {
    /// The defaults of seed 000 for `queue`.
    pub fn new(queue: QueueName) -> Self {
        Self {
            queue,
            workers: 4,
            parallel: true,
            batch_size: 10,
            poll_interval: Duration::from_millis(1000),
            fetch_cooldown: Duration::from_millis(2),
            timeout: Duration::from_millis(30_000),
            lease: None,
            instance: None,
            shutdown_timeout: Duration::from_secs(10),
            retry: None,
            tx_batch: 1,
            fetchers: 0,
        }
    }

    /// Sets `max_parallel_workers`.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Sets `enable_parallel_processing`.
    pub fn parallel(mut self, on: bool) -> Self {
        self.parallel = on;
        self
    }

    /// Sets `batch_size`.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Sets `poll_interval_ms`.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// Sets the fetch cooldown (see [`ConsumerConfig::fetch_cooldown`]).
    pub fn fetch_cooldown(mut self, d: Duration) -> Self {
        self.fetch_cooldown = d;
        self
    }

    /// Sets `timeout_ms`.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Sets the instance name (targeted / broadcast queues).
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// Sets the shutdown timeout.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// Sets `max_retries` / `retry_delay_ms` for the queue.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Sets [`ConsumerConfig::tx_batch`].
    pub fn tx_batch(mut self, n: usize) -> Self {
        self.tx_batch = n;
        self
    }

    /// Worker slots actually used: `workers`, or 1 when parallel is off.
    pub fn slots(&self) -> usize {
        if self.parallel {
            self.workers
        } else {
            1
        }
    }

    /// Fetch loops actually run (see [`ConsumerConfig::fetchers`]).
    pub fn fetch_loops(&self) -> usize {
        let slots = self.slots();
        if slots <= 1 {
            1
        } else if self.fetchers > 0 {
            self.fetchers.min(slots)
        } else {
            (slots / 16).clamp(1, 4)
        }
    }

    /// Sets [`ConsumerConfig::fetchers`].
    pub fn fetchers(mut self, n: usize) -> Self {
        self.fetchers = n;
        self
    }

    /// Sets the lease of a claim (see [`ConsumerConfig::lease`]).
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = Some(d);
        self
    }

    /// Checks the settings; the error names the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| {
            Err(Error::Config(format!(
                "consumer of {}: {what}",
                self.queue.as_str()
            )))
        };
        if self.workers == 0 || self.workers > 10_000 {
            return bad("workers must be 1-10000");
        }
        if self.batch_size == 0 || self.batch_size > crate::client::MAX_CLAIM_BATCH {
            return bad("batch_size must be 1-10000");
        }
        if self.tx_batch == 0 || self.tx_batch > crate::client::MAX_CLAIM_BATCH {
            return bad("tx_batch must be 1-10000");
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval must be > 0");
        }
        if self.timeout.is_zero() {
            return bad("timeout must be > 0");
        }
        if self.lease.is_some_and(|l| l < MIN_LEASE) {
            return bad("lease must be at least 100 ms");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_seed_000() {
        let c = ConsumerConfig::new(QueueName::new("q").unwrap());
        assert_eq!((c.workers, c.batch_size, c.parallel), (4, 10, true));
        assert_eq!(c.poll_interval, Duration::from_millis(1000));
        assert_eq!(c.timeout, Duration::from_millis(30_000));
        assert_eq!(c.slots(), 4);
        assert_eq!(c.clone().parallel(false).slots(), 1);
        assert!(c.validate().is_ok());
        assert!(c.clone().workers(0).validate().is_err());
        assert_eq!(c.tx_batch, 1);
        assert!(c.clone().tx_batch(0).validate().is_err());
        assert!(c.batch_size(0).validate().is_err());
    }

    #[test]
    fn one_fetch_loop_per_sixteen_slots_and_one_when_sequential() {
        let c = ConsumerConfig::new(QueueName::new("q").unwrap());
        assert_eq!(c.fetch_loops(), 1);
        assert_eq!(c.clone().workers(32).fetch_loops(), 2);
        assert_eq!(c.clone().workers(1000).fetch_loops(), 4);
        assert_eq!(c.clone().workers(32).parallel(false).fetch_loops(), 1);
        assert_eq!(c.clone().workers(32).fetchers(3).fetch_loops(), 3);
        assert_eq!(c.workers(2).fetchers(8).fetch_loops(), 2);
    }
}
