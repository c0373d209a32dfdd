//! Delivering the spool: [`Publisher::flush`] and the replayer task of
//! [`Publisher::spawn_replayer`].
//!
//! A flush takes up to [`REPLAY_BATCH`] of the oldest records, split into
//! runs of consecutive records of one queue, and inserts the runs in one
//! transaction (one INSERT per run, ids kept), so the queue order (`seq`)
//! follows the spool order. Only after the commit are the records removed
//! from the spool; a lost commit acknowledgement means a re-send, which the
//! INSERT's `ON CONFLICT (id) DO NOTHING` absorbs while the message is queued.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::store::{Batch, REJECTED_FILE};
use super::{with_store, Publisher, REPLAY_BATCH};
use crate::error::{Error, Result};

/// First retry delay of the replayer after a failed flush.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay of the replayer.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Publisher {
    /// Delivers the spool now, oldest first, until it is empty; returns how
    /// many messages were delivered. Fails with the connection error while
    /// the database is still unreachable (messages delivered before that
    /// stay delivered; the rest wait for the next flush). Messages the
    /// database refuses for good (their queue no longer exists) are moved
    /// to `rejected.jsonl` in the spool directory, logged, and not counted.
    pub async fn flush(&self) -> Result<usize> {
        let _one_at_a_time = self.inner.flushing.lock().await;
        let mut delivered = 0;
        // After a batch was refused for good: how many records to try one by
        // one, to set aside only the refused one.
        let mut one_by_one = 0usize;
        loop {
            let limit = if one_by_one > 0 { 1 } else { REPLAY_BATCH };
            let Some(batch) = with_store(&self.inner, move |s| Ok(s.front_batch(limit))).await?
            else {
                break;
            };
            match self.insert(&batch).await {
                Ok(()) => {
                    self.inner.online.store(true, Ordering::SeqCst);
                    let last = batch.last_n;
                    with_store(&self.inner, move |s| s.commit(last)).await?;
                    for run in &batch.runs {
                        metrics::counter!("pgflow_spool_replayed_total", "queue" => run.queue.to_string())
                            .increment(run.msgs.len() as u64);
                    }
                    delivered += batch.len;
                    one_by_one = one_by_one.saturating_sub(1);
                }
                Err(e) if is_permanent(&e) && batch.len > 1 => one_by_one = batch.len,
                Err(e) if is_permanent(&e) => {
                    self.reject(batch, &e).await?;
                    one_by_one = one_by_one.saturating_sub(1);
                }
                Err(e) => {
                    if e.is_connection() {
                        self.inner.online.store(false, Ordering::SeqCst);
                    }
                    return Err(e);
                }
            }
        }
        if delivered > 0 {
            tracing::warn!(dir = %self.inner.dir.display(), delivered,
                "outage spool drained: PostgreSQL is back, publishing directly again");
        }
        Ok(delivered)
    }

    /// Inserts the runs of `batch` in one transaction.
    async fn insert(&self, batch: &Batch) -> Result<()> {
        let mut tx = self.pg.pool().begin().await?;
        for run in &batch.runs {
            self.pg
                .send_in_tx(&mut tx, &run.queue, &run.msgs, run.notify)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Moves the one record of `batch` to the rejected file.
    async fn reject(&self, batch: Batch, e: &Error) -> Result<()> {
        let text = crate::error::report(e);
        for run in &batch.runs {
            for m in &run.msgs {
                tracing::error!(queue = %run.queue, id = %m.message_id(), error = %text,
                    file = %self.inner.dir.join(REJECTED_FILE).display(),
                    "the database refused a spooled message for good; it was set aside");
            }
            metrics::counter!("pgflow_spool_rejected_total", "queue" => run.queue.to_string())
                .increment(run.msgs.len() as u64);
        }
        let last = batch.last_n;
        with_store(&self.inner, move |s| s.reject(last, &text)).await?;
        Ok(())
    }

    /// Starts a task that delivers the spool whenever it holds messages:
    /// it wakes when a message is spooled, retries a failed flush with
    /// backoff (100 ms doubling to 5 s), and ends when `shutdown` is
    /// cancelled. The task holds a clone of this publisher.
    pub fn spawn_replayer(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.replay_loop(shutdown).await })
    }

    async fn replay_loop(self, shutdown: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            if self.spooled() == 0 {
                // A message spooled after this check leaves a permit: no lost wake-up.
                let woken = self.inner.wake.notified();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = woken => continue,
                }
            }
            let flushed = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.flush() => r,
            };
            match flushed {
                Ok(_) => backoff = MIN_BACKOFF,
                Err(e) => {
                    tracing::warn!(error = %crate::error::report(&e), waiting = self.spooled(),
                        retry_in = ?backoff, "delivering the outage spool failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// True for errors that retrying the same message cannot fix.
fn is_permanent(e: &Error) -> bool {
    matches!(
        e,
        Error::UnknownQueue(_)
            | Error::InvalidMessage(_)
            | Error::PayloadTooLarge { .. }
            | Error::InvalidJson(_)
    )
}
