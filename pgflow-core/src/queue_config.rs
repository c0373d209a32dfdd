//! Per-queue settings: delivery kind, retry policy, lease length, archive retention.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::queue_name::QueueName;

/// How a queue's messages reach consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// Any one consumer gets each message.
    Competing,
    /// Each message names one instance; only that instance's consumer gets it.
    Targeted,
    /// Every live subscriber gets its own copy, once.
    Broadcast,
}

impl DeliveryKind {
    /// The name stored in `pgflow.queues.delivery`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Competing => "competing",
            DeliveryKind::Targeted => "targeted",
            DeliveryKind::Broadcast => "broadcast",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "competing" => Ok(DeliveryKind::Competing),
            "targeted" => Ok(DeliveryKind::Targeted),
            "broadcast" => Ok(DeliveryKind::Broadcast),
            other => Err(Error::Config(format!(
                "unknown delivery kind {other:?} (competing, targeted or broadcast)"
            ))),
        }
    }
}

/// Exponential backoff with equal jitter. The delay before retry `n`
/// (1-based) is drawn uniformly from `[d/2, d]`, `d = min(base * 2^(n-1), max)`.
/// The database applies it (`pgflow.retry_delay_ms`); this type documents and
/// checks the same formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (seeds: 3). A message is delivered at
    /// most `max_retries + 1` times, then dead-lettered.
    pub max_retries: u32,
    /// Base delay in milliseconds (seeds: 1000).
    pub base_delay_ms: u32,
    /// Cap on the delay in milliseconds.
    pub max_delay_ms: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay_ms: 1000,
            max_delay_ms: 300_000,
        }
    }
}

impl RetryPolicy {
    /// The `[min, max]` bounds of the delay before retry `retry` (1-based).
    pub fn delay_bounds(&self, retry: u32) -> (Duration, Duration) {
        let exp = retry.saturating_sub(1).min(40);
        let d = (f64::from(self.base_delay_ms) * 2f64.powi(exp as i32))
            .min(f64::from(self.max_delay_ms));
        (
            Duration::from_secs_f64(d / 2.0 / 1000.0),
            Duration::from_secs_f64(d / 1000.0),
        )
    }
}

/// The settings of one queue (a row of `pgflow.queues`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// The queue.
    pub name: QueueName,
    /// Delivery kind.
    pub delivery: DeliveryKind,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Default lease length of a claim.
    pub visibility_timeout: Duration,
    /// How long processed messages stay in the archive; zero keeps none.
    pub archive_retention: Duration,
    /// Free text.
    pub description: String,
    /// Whether a `send_batch` is stored as one row until it is claimed and
    /// acked whole (migration 15). It pays off when consumers claim at
    /// least a sender's batch at a time; a consumer that claims fewer turns
    /// each batch into rows, which costs more than rows from the start
    /// (the runtime benchmark, claiming 16 of sends of 100, is about a
    /// quarter slower with it).
    #[serde(default)]
    pub batch_storage: bool,
}

impl QueueConfig {
    /// A competing-consumers queue with the seeds' defaults.
    pub fn new(name: QueueName) -> Self {
        Self {
            name,
            delivery: DeliveryKind::Competing,
            retry: RetryPolicy::default(),
            visibility_timeout: Duration::from_secs(30),
            archive_retention: Duration::from_secs(7 * 24 * 3600),
            description: String::new(),
            batch_storage: false,
        }
    }

    /// Stores each `send_batch` as one row until it is claimed and acked
    /// whole (see [`QueueConfig::batch_storage`]).
    pub fn batch_storage(mut self, on: bool) -> Self {
        self.batch_storage = on;
        self
    }

    /// Sets the delivery kind.
    pub fn delivery(mut self, kind: DeliveryKind) -> Self {
        self.delivery = kind;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the default lease length.
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility_timeout = d;
        self
    }

    /// Sets the archive retention (zero: processed messages are deleted).
    pub fn archive_retention(mut self, d: Duration) -> Self {
        self.archive_retention = d;
        self
    }

    /// Checks value ranges before they reach the database.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.retry.max_retries > 1000 {
            return Err(Error::Config("max_retries must be at most 1000".into()));
        }
        if self.retry.base_delay_ms > i32::MAX as u32 || self.retry.max_delay_ms > i32::MAX as u32 {
            return Err(Error::Config(
                "retry delays must fit in 31 bits of milliseconds".into(),
            ));
        }
        let vt = self.visibility_timeout.as_millis();
        if vt == 0 || vt > i32::MAX as u128 {
            return Err(Error::Config(
                "visibility timeout must be between 1 ms and 24 days".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay_bounds(1),
            (Duration::from_millis(500), Duration::from_millis(1000))
        );
        assert_eq!(
            p.delay_bounds(2),
            (Duration::from_millis(1000), Duration::from_millis(2000))
        );
        assert_eq!(
            p.delay_bounds(3),
            (Duration::from_millis(2000), Duration::from_millis(4000))
        );
        assert_eq!(p.delay_bounds(30).1, Duration::from_millis(300_000));
    }

    #[test]
    fn delivery_kind_round_trips() {
        for k in [
            DeliveryKind::Competing,
            DeliveryKind::Targeted,
            DeliveryKind::Broadcast,
        ] {
            assert_eq!(DeliveryKind::parse(k.as_str()).unwrap(), k);
        }
        assert!(DeliveryKind::parse("fanout").is_err());
    }
}
