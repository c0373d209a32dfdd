//! The dashboard's sampler: every tick it reads every queue's statistics
//! ([`Pgflow::list_queues`]) and what was acked since the previous tick
//! (from the archive, rows and batches: count and mean send-to-ack
//! latency) and the
//! services' state for the topology, and appends
//! a [`Sample`] to the [`History`] the charts are drawn from. A failed tick
//! is logged and retried on the next one; the history keeps what it had.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::topology::{self, Node};
use super::DashboardConfig;
use crate::client::Pgflow;
use crate::error::{report, Result};

/// One queue at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueuePoint {
    /// Ready to be claimed.
    pub pending: i64,
    /// Claimed, lease running.
    pub in_flight: i64,
    /// Waiting for a delay or a retry backoff.
    pub delayed: i64,
    /// Dead letters.
    pub dlq: i64,
    /// Age of the oldest ready message, seconds (0 when none).
    pub oldest_age_s: f64,
    /// Acked since the previous sample.
    pub processed: i64,
    /// Acked per second since the previous sample.
    pub rate: f64,
    /// Mean send-to-ack time of those, milliseconds.
    pub latency_ms: Option<f64>,
}

/// Every queue at one instant (the database's clock).
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// When (database clock).
    pub at: DateTime<Utc>,
    /// By queue name.
    pub queues: BTreeMap<String, QueuePoint>,
    /// The services and instances (for the topology).
    #[serde(skip)]
    pub nodes: Vec<Node>,
}

impl Sample {
    /// A sample without queues.
    pub fn empty(at: DateTime<Utc>) -> Self {
        Self {
            at,
            queues: BTreeMap::new(),
            nodes: Vec::new(),
        }
    }
}

/// The samples of the last `window`, oldest first.
#[derive(Debug)]
pub struct History {
    samples: VecDeque<Arc<Sample>>,
    capacity: usize,
    /// The last sampling error, cleared by the next good sample.
    pub last_error: Option<String>,
}

impl History {
    /// Room for `window / every` samples (at least 2).
    pub fn new(every: Duration, window: Duration) -> Self {
        let every = every.max(Duration::from_millis(100));
        let capacity = (window.as_millis() / every.as_millis()).clamp(2, 100_000) as usize;
        Self {
            samples: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            last_error: None,
        }
    }

    /// Appends a sample, dropping the oldest beyond the capacity.
    pub fn push(&mut self, s: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(Arc::new(s));
        self.last_error = None;
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<Arc<Sample>> {
        self.samples.back().cloned()
    }

    /// All samples, oldest first.
    pub fn all(&self) -> Vec<Arc<Sample>> {
        self.samples.iter().cloned().collect()
    }
}

type Acked = (String, i64, Option<f64>);

/// How far behind `now` the acked-messages window closes (see [`take`]).
const ACK_LAG: chrono::Duration = chrono::Duration::milliseconds(500);

/// Takes one sample; `since` is the previous sample's instant.
pub async fn take(pg: &Pgflow, since: Option<DateTime<Utc>>) -> Result<Sample> {
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(pg.pool())
        .await?;
    let stats = pg.list_queues().await?;
    let since = since.unwrap_or(now - chrono::Duration::seconds(1));
    let acked: Vec<Acked> = sqlx::query_as(
        "SELECT queue_name, sum(n)::int8,
                (sum(n * extract(epoch FROM archived_at - created_at)) / sum(n) * 1000)::float8
           FROM (SELECT queue_name, 1 AS n, archived_at, created_at FROM pgflow.archive
                  WHERE archived_at > $1 AND archived_at <= $2
                 UNION ALL
                 SELECT queue_name, n, archived_at, created_at FROM pgflow.archive_batches
                  WHERE archived_at > $1 AND archived_at <= $2) done
          GROUP BY queue_name",
    )
    // The window lags by ACK_LAG: an ack's archived_at is its transaction's
    // start, and a window closed at `now` would never count an ack that
    // started before `now` and committed after this read.
    .bind(since - ACK_LAG)
    .bind(now - ACK_LAG)
    .fetch_all(pg.pool())
    .await?;
    let secs = ((now - since).num_milliseconds() as f64 / 1000.0).max(0.001);
    let mut sample = Sample::empty(now);
    sample.nodes = topology::read_nodes(pg).await?;
    for s in stats {
        sample.queues.insert(
            s.queue_name.clone(),
            QueuePoint {
                pending: s.pending,
                in_flight: s.in_flight,
                delayed: s.delayed,
                dlq: s.dlq,
                oldest_age_s: s.oldest_pending_age_secs.unwrap_or(0.0).max(0.0),
                ..QueuePoint::default()
            },
        );
    }
    for (queue, n, latency) in acked {
        if let Some(p) = sample.queues.get_mut(&queue) {
            p.processed = n;
            p.rate = n as f64 / secs;
            p.latency_ms = latency;
        }
    }
    Ok(sample)
}

/// Spawns the sampling loop (stops when `shutdown` is cancelled).
pub fn spawn(
    pg: Pgflow,
    history: Arc<RwLock<History>>,
    config: Arc<DashboardConfig>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = config.sample_every.max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut since = None;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let taken = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = take(&pg, since) => r,
            };
            let mut h = history.write().unwrap_or_else(PoisonError::into_inner);
            match taken {
                Ok(s) => {
                    since = Some(s.at);
                    h.push(s);
                }
                Err(e) => {
                    let msg = report(&e);
                    if h.last_error.is_none() {
                        tracing::warn!(error = %msg, "dashboard sample failed; retrying every {every:?}");
                    }
                    h.last_error = Some(msg);
                }
            }
        }
        tracing::debug!("dashboard sampler stopped");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_window() {
        let mut h = History::new(Duration::from_secs(1), Duration::from_secs(3));
        for _ in 0..5 {
            h.push(Sample::empty(Utc::now()));
        }
        assert_eq!(h.all().len(), 3);
        assert!(h.latest().is_some());
    }
}
