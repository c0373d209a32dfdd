//! The completer: settles finished messages in batches. Whatever finished
//! within a couple of milliseconds, or while the previous statement ran, leaves together, one `ack_batch` and one
//! `nack_batch`, so under load settling costs one statement per batch while
//! at low load a message is settled at once.
//!
//! A settlement that fails on a database error is retried with backoff for
//! a while; if it still fails the messages are logged and counted, and
//! their leases expire so they are delivered again (at-least-once).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::state::{ConsumerState, Count};
use crate::client::{AckReport, Failure, NackOutcome, Pgflow};
use crate::delivery::Receipt;
use crate::error::{report, Result};

/// Largest batch settled in one statement.
const MAX_SETTLE: usize = 1000;
/// Time completions gather before a settlement.
const SETTLE_DELAY: Duration = Duration::from_millis(2);
/// Attempts at one settlement before giving up on it.
const SETTLE_ATTEMPTS: u32 = 6;

/// One failed message, to be nacked.
#[derive(Debug)]
pub(crate) struct Completion {
    pub receipt: Receipt,
    pub failure: Failure,
}

/// Successful messages waiting for their ack. Whoever settles next takes
/// them: the completer, or the fetch loop, which acks them in the same
/// statement as its next claim ([`Pgflow::ack_and_claim`]).
#[derive(Debug, Default)]
pub(crate) struct PendingAcks {
    buf: Mutex<Vec<Receipt>>,
    added: Notify,
}

impl PendingAcks {
    /// Adds a receipt to ack.
    pub(crate) fn push(&self, r: Receipt) {
        if let Ok(mut b) = self.buf.lock() {
            b.push(r);
        }
        self.added.notify_one();
    }

    /// Takes up to [`MAX_SETTLE`] receipts.
    pub(crate) fn take(&self) -> Vec<Receipt> {
        match self.buf.lock() {
            Ok(mut b) if b.len() > MAX_SETTLE => b.drain(..MAX_SETTLE).collect(),
            Ok(mut b) => std::mem::take(&mut *b),
            Err(_) => Vec::new(),
        }
    }

    /// Gives back receipts whose ack did not happen.
    pub(crate) fn put_back(&self, rs: Vec<Receipt>) {
        if rs.is_empty() {
            return;
        }
        if let Ok(mut b) = self.buf.lock() {
            b.extend(rs);
        }
        self.added.notify_one();
    }
}

/// Runs until every failure sender is dropped and everything is settled.
pub(crate) async fn run(
    pg: Pgflow,
    mut rx: mpsc::UnboundedReceiver<Completion>,
    acks: Arc<PendingAcks>,
    state: Arc<ConsumerState>,
) {
    loop {
        let mut nacks = Vec::new();
        let open = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => {
                    nacks.push((c.receipt, c.failure));
                    true
                }
                None => false,
            },
            _ = acks.added.notified() => true,
        };
        if open {
            // Let the completions of a burst gather: one statement settles
            // them all (unless the fetch loop's next claim takes the acks
            // first). Handlers never wait for this; only lease release does.
            tokio::time::sleep(SETTLE_DELAY).await;
        }
        while nacks.len() < MAX_SETTLE {
            match rx.try_recv() {
                Ok(c) => nacks.push((c.receipt, c.failure)),
                Err(_) => break,
            }
        }
        loop {
            let batch = acks.take();
            if batch.is_empty() {
                break;
            }
            settle_acks(&pg, &batch, &state).await;
        }
        if !nacks.is_empty() {
            settle_nacks(&pg, &nacks, &state).await;
        }
        if !open {
            return;
        }
    }
}

/// Counts what an ack did.
pub(crate) fn account_acks(report: &AckReport, state: &ConsumerState) {
    state.add(Count::Succeeded, report.acked.len() as u64);
    if !report.lost.is_empty() {
        state.add(Count::LeaseLost, report.lost.len() as u64);
        tracing::warn!(ids = ?report.lost, "ack refused: lease expired or taken over; the messages will be (or were) delivered again");
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
    if let Some(report) = with_retries("ack", acks.len(), || pg.ack_batch(acks)).await {
        account_acks(&report, state);
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
