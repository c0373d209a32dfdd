//! The completer: settles finished messages in batches. Whatever finished
//! within a couple of milliseconds, or while the previous statement ran, leaves together, one `ack_batch` and one
//! `nack_batch`, so under load settling costs one statement per batch while
//! at low load a message is settled at once.
//!
//! A settlement that fails on a database error is retried with backoff for
//! a while; if it still fails the messages are logged and counted, and
//! their leases expire so they are delivered again (at-least-once).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::state::{ConsumerState, Count};
use crate::client::{Failure, NackOutcome, Pgflow};
use crate::delivery::Receipt;
use crate::error::{report, Result};

/// Largest batch settled in one statement.
const MAX_SETTLE: usize = 1000;
/// Time completions gather before a settlement.
const SETTLE_DELAY: Duration = Duration::from_millis(2);
/// Attempts at one settlement before giving up on it.
const SETTLE_ATTEMPTS: u32 = 6;

/// One finished message: `failure` is `None` on success.
#[derive(Debug)]
pub(crate) struct Completion {
    pub receipt: Receipt,
    pub failure: Option<Failure>,
}

/// Runs until every sender is dropped and the last batch is settled.
pub(crate) async fn run(
    pg: Pgflow,
    mut rx: mpsc::UnboundedReceiver<Completion>,
    state: Arc<ConsumerState>,
) {
    while let Some(first) = rx.recv().await {
        // Let the completions of a burst gather: one statement settles
        // them all. Handlers never wait for this; only lease release does.
        tokio::time::sleep(SETTLE_DELAY).await;
        let mut batch = vec![first];
        while batch.len() < MAX_SETTLE {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        let mut nacks = Vec::new();
        for c in batch {
            match c.failure {
                None => acks.push(c.receipt),
                Some(f) => nacks.push((c.receipt, f)),
            }
        }
        if !acks.is_empty() {
            settle_acks(&pg, &acks, &state).await;
        }
        if !nacks.is_empty() {
            settle_nacks(&pg, &nacks, &state).await;
        }
    }
}

async fn with_retries<T, F, Fut>(what: &str, n: usize, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=SETTLE_ATTEMPTS {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) if attempt < SETTLE_ATTEMPTS => {
                tracing::warn!(error = %report(&e), messages = n, attempt, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::error!(error = %report(&e), messages = n, "{what} failed; the messages will be delivered again when their leases expire");
                metrics::counter!("pgflow_settle_failures_total").increment(n as u64);
            }
        }
    }
    None
}

async fn settle_acks(pg: &Pgflow, acks: &[Receipt], state: &ConsumerState) {
    let Some(report) = with_retries("ack", acks.len(), || pg.ack_batch(acks)).await else {
        return;
    };
    state.add(Count::Succeeded, report.acked.len() as u64);
    if !report.lost.is_empty() {
        state.add(Count::LeaseLost, report.lost.len() as u64);
        tracing::warn!(ids = ?report.lost, "ack refused: lease expired or taken over; the messages will be (or were) delivered again");
    }
}

async fn settle_nacks(pg: &Pgflow, nacks: &[(Receipt, Failure)], state: &ConsumerState) {
    let Some(out) = with_retries("nack", nacks.len(), || pg.nack_batch(nacks)).await else {
        return;
    };
    for (id, o) in &out {
        match o {
            NackOutcome::Retry { at } => {
                state.add(Count::Retried, 1);
                tracing::info!(message_id = %id, retry_at = %at, "retry scheduled");
            }
            NackOutcome::DeadLettered => {
                state.add(Count::DeadLettered, 1);
                tracing::warn!(message_id = %id, "moved to the dead-letter queue");
            }
        }
    }
    let lost = nacks.len().saturating_sub(out.len());
    if lost > 0 {
        state.add(Count::LeaseLost, lost as u64);
    }
}
