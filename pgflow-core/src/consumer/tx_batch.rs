//! Transactional batches, for consumers whose
//! [`ConsumerConfig::tx_batch`](super::ConsumerConfig::tx_batch) is above 1:
//! several messages of one claim are handled one after the other in a
//! single transaction that acks them all, so one BEGIN, one ack statement
//! and one commit serve the lot instead of one of each per message.
//!
//! A batch is all or nothing. When a handler fails (error, panic, timeout),
//! the ack finds a lease lost, or the commit fails, the transaction rolls
//! back and every message of the batch is handled again alone, in its own
//! transaction ([`handle_one`]): a failure settles only its own message,
//! exactly as without batches. The messages of a claim are ordered by trace
//! id before they are cut into batches, so that messages of one journey
//! (the votes on one proposal, say) share a batch, and batches that touch
//! the same rows take their locks in the same order.
//!
//! The lease keeper extends the leases of a batch's messages while its
//! transaction runs, as for any message being handled; if one is lost the
//! batch stops and is handled alone (the lost one is not settled).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::handler::TxHandler;
use super::lease::{lost_token, set_settling};
use super::state::Count;
use super::worker::{finished, guarded, handle_one, message_span, started, unless_lost, WorkerCtx};
use crate::delivery::{Delivery, Receipt};
use crate::error::report;

/// Orders `batch` (one claim) by trace id, then queue order, cuts it into
/// batches of up to `size` and spawns each on `tasks` with one of
/// `permits` per message.
pub(crate) fn spawn(
    tasks: &mut JoinSet<()>,
    ctx: &WorkerCtx,
    handler: &Arc<dyn TxHandler>,
    mut batch: Vec<Delivery>,
    permits: &mut OwnedSemaphorePermit,
    size: usize,
) {
    batch.sort_by_key(|d| (d.trace_id, d.seq));
    let mut rest = batch.into_iter().peekable();
    while rest.peek().is_some() {
        let chunk: Vec<Delivery> = rest.by_ref().take(size).collect();
        let Some(permit) = permits.split(chunk.len()) else {
            break;
        };
        tasks.spawn(execute_batch(ctx.clone(), handler.clone(), chunk, permit));
    }
}

/// Handles `batch` in one transaction, holding `permit` (one worker slot
/// per message) until every outcome is queued.
async fn execute_batch(
    ctx: WorkerCtx,
    handler: Arc<dyn TxHandler>,
    batch: Vec<Delivery>,
    permit: OwnedSemaphorePermit,
) {
    for d in &batch {
        started(&ctx, d);
    }
    match run_batch(&ctx, handler.as_ref(), &batch).await {
        Ok(took) => {
            ctx.state.add(Count::Succeeded, batch.len() as u64);
            metrics::counter!("pgflow_tx_batches_total", "queue" => batch[0].queue_name.clone())
                .increment(1);
            for (d, t) in batch.iter().zip(took) {
                let _span = message_span(d).entered();
                finished(&ctx, d, Ok(()), t);
            }
        }
        Err(why) => {
            tracing::info!(
                queue = %batch[0].queue_name,
                messages = batch.len(),
                reason = %why,
                "transactional batch rolled back; handling its messages one by one"
            );
            metrics::counter!("pgflow_tx_batch_fallbacks_total", "queue" => batch[0].queue_name.clone())
                .increment(1);
            let ctx = &ctx;
            let alone = batch.iter().map(|d| {
                async move {
                    let (result, took) = handle_one(ctx, d).await;
                    finished(ctx, d, result, took);
                }
                .instrument(message_span(d))
            });
            futures_util::future::join_all(alone).await;
        }
    }
    drop(permit);
}

/// One transaction: every handler, one ack for all, commit. Returns each
/// handler's time, or why the batch was rolled back. The whole batch gets
/// the time one message may take.
async fn run_batch(
    ctx: &WorkerCtx,
    h: &dyn TxHandler,
    batch: &[Delivery],
) -> Result<Vec<Duration>, String> {
    let mut tx = ctx
        .pg
        .pool()
        .begin()
        .await
        .map_err(|e| format!("cannot begin transaction: {e}"))?;
    let deadline = Instant::now() + ctx.timeout;
    let mut took = Vec::with_capacity(batch.len());
    for d in batch {
        let start = Instant::now();
        let left = deadline.saturating_duration_since(start);
        let lost = lost_token(&ctx.in_flight, d.id);
        unless_lost(&lost, guarded(left, h.handle(&mut tx, d)))
            .instrument(message_span(d))
            .await
            .map_err(|e| format!("message {}: {e}", d.id))?;
        took.push(start.elapsed());
    }
    for d in batch {
        set_settling(&ctx.in_flight, d.id, true);
    }
    let receipts: Vec<Receipt> = batch.iter().map(Delivery::receipt).collect();
    let acks = ctx
        .pg
        .ack_many_in_tx(&mut tx, &receipts)
        .await
        .map_err(|e| format!("ack failed: {}", report(&e)))?;
    if !acks.lost.is_empty() {
        return Err(format!(
            "the lease of {} message(s) was lost",
            acks.lost.len()
        ));
    }
    tx.commit()
        .await
        .map_err(|e| format!("commit failed: {e}"))?;
    Ok(took)
}
