//! Running the handler for one message: under a timeout, with panics caught,
//! inside a tracing span with the queue, message id, type, trace id and
//! attempt. The outcome goes to the completer; in transactional mode the
//! ack is written here, in the handler's own transaction. A handler whose
//! lease the keeper found lost ([`lease`](super::lease)) is stopped and its
//! outcome is not settled.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::completer::{Completion, PendingAcks};
use super::handler::{Handler, HandlerError, HandlerResult, TxHandler};
use super::lease::{lost_token, set_settling, InFlight};
use super::state::{ConsumerState, Count};
use crate::client::Pgflow;
use crate::delivery::Delivery;
use crate::error::{report, Error};

/// The two kinds of handler a consumer can run.
#[derive(Clone)]
pub(crate) enum HandlerKind {
    Plain(Arc<dyn Handler>),
    Tx(Arc<dyn TxHandler>),
}

/// Everything a worker needs besides its message.
#[derive(Clone)]
pub(crate) struct WorkerCtx {
    pub pg: Pgflow,
    pub handler: HandlerKind,
    pub timeout: Duration,
    pub state: Arc<ConsumerState>,
    pub done: mpsc::UnboundedSender<Completion>,
    pub acks: Arc<PendingAcks>,
    pub in_flight: InFlight,
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `fut` with a timeout, turning a panic or a timeout into a retryable failure.
pub(crate) async fn guarded(
    timeout: Duration,
    fut: impl Future<Output = HandlerResult>,
) -> HandlerResult {
    match tokio::time::timeout(timeout, AssertUnwindSafe(fut).catch_unwind()).await {
        Err(_) => Err(HandlerError::Retryable(format!(
            "handler timed out after {} ms",
            timeout.as_millis()
        ))),
        Ok(Err(p)) => Err(HandlerError::Retryable(format!(
            "handler panicked: {}",
            panic_message(p.as_ref())
        ))),
        Ok(Ok(r)) => r,
    }
}

/// Runs `fut` unless or until `lost` fires (the lease keeper found the
/// message's lease lost): then the handler is dropped mid-way and the
/// outcome is a retryable failure that [`finished`] does not settle.
pub(crate) async fn unless_lost(
    lost: &CancellationToken,
    fut: impl Future<Output = HandlerResult>,
) -> HandlerResult {
    let lost_err = || HandlerError::Retryable("lease lost while the handler ran".into());
    if lost.is_cancelled() {
        return Err(lost_err());
    }
    tokio::select! {
        biased;
        _ = lost.cancelled() => Err(lost_err()),
        r = fut => r,
    }
}

/// The span every handler call for `d` runs in.
pub(crate) fn message_span(d: &Delivery) -> tracing::Span {
    tracing::info_span!(
        "message",
        queue = %d.queue_name,
        message_id = %d.id,
        msg_type = %d.msg_type,
        trace_id = %d.trace_id,
        attempt = d.attempts,
    )
}

/// Handles `d`, holding `permit` (one worker slot) until the outcome is queued.
pub(crate) async fn execute(ctx: WorkerCtx, d: Delivery, permit: OwnedSemaphorePermit) {
    let span = message_span(&d);
    async move {
        started(&ctx, &d);
        let (result, took) = handle_one(&ctx, &d).await;
        finished(&ctx, &d, result, took);
        drop(permit);
    }
    .instrument(span)
    .await
}

/// Accounts for a message whose handling starts.
pub(crate) fn started(ctx: &WorkerCtx, d: &Delivery) {
    let waited = (chrono::Utc::now() - d.created_at)
        .to_std()
        .unwrap_or_default();
    metrics::histogram!("pgflow_publish_to_start_seconds", "queue" => d.queue_name.clone())
        .record(waited.as_secs_f64());
    ctx.state.in_flight_delta(1);
}

/// Runs the handler for `d` alone (in its own transaction in
/// transactional mode); returns the outcome and the time it took.
pub(crate) async fn handle_one(ctx: &WorkerCtx, d: &Delivery) -> (HandlerResult, Duration) {
    let start = Instant::now();
    let lost = lost_token(&ctx.in_flight, d.id);
    let result = match &ctx.handler {
        HandlerKind::Plain(h) => unless_lost(&lost, guarded(ctx.timeout, h.handle(d))).await,
        HandlerKind::Tx(h) => run_in_tx(ctx, h.as_ref(), d, &lost).await,
    };
    (result, start.elapsed())
}

/// Accounts for the outcome of `d` and queues its settlement (transactional
/// successes are already acked; a message whose lease was lost is not
/// settled: its new holder owns it).
pub(crate) fn finished(ctx: &WorkerCtx, d: &Delivery, result: HandlerResult, took: Duration) {
    let receipt = d.receipt();
    let lost = lost_token(&ctx.in_flight, d.id).is_cancelled();
    metrics::histogram!("pgflow_handler_duration_seconds", "queue" => d.queue_name.clone())
        .record(took.as_secs_f64());
    ctx.state.add(Count::Processed, 1);
    match &result {
        Ok(()) => tracing::debug!(ms = took.as_millis() as u64, "handled"),
        Err(e) => {
            ctx.state.add(Count::Failed, 1);
            tracing::warn!(error = %e, fatal = e.is_fatal(), ms = took.as_millis() as u64, "handler failed");
        }
    }
    match result {
        // Transactional handlers acked in their own transaction (fenced:
        // an Ok here committed while the lease was held).
        Ok(()) if matches!(ctx.handler, HandlerKind::Tx(_)) => {}
        _ if lost => {
            tracing::warn!("lease lost: the outcome is not settled; the message is delivered again")
        }
        Err(e) => {
            let _ = ctx.done.send(Completion {
                receipt,
                failure: e.into_failure(),
            });
        }
        Ok(()) => ctx.acks.push(receipt),
    }
    if let Ok(mut m) = ctx.in_flight.lock() {
        m.remove(&receipt.id);
    }
    ctx.state.in_flight_delta(-1);
}

/// Transactional mode: begin, run the handler on the transaction, ack in
/// it, commit. A failed handler rolls back (the nack goes to the completer);
/// a lost lease rolls back the handler's writes too.
async fn run_in_tx(
    ctx: &WorkerCtx,
    h: &dyn TxHandler,
    d: &Delivery,
    lost: &CancellationToken,
) -> HandlerResult {
    let mut tx = ctx
        .pg
        .pool()
        .begin()
        .await
        .map_err(|e| HandlerError::retryable(format!("cannot begin transaction: {e}")))?;
    set_settling(&ctx.in_flight, d.id, false);
    unless_lost(lost, guarded(ctx.timeout, h.handle(&mut tx, d))).await?;
    set_settling(&ctx.in_flight, d.id, true);
    match ctx.pg.ack_in_tx(&mut tx, d.receipt()).await {
        Ok(()) => {}
        Err(Error::LeaseLost { .. }) => {
            ctx.state.add(Count::LeaseLost, 1);
            tracing::warn!("lease lost before commit; the handler's writes are rolled back and the message will be delivered again");
            return Ok(()); // nothing to settle: the new holder owns it
        }
        Err(e) => return Err(HandlerError::retryable(report(&e))),
    }
    tx.commit()
        .await
        .map_err(|e| HandlerError::retryable(format!("commit failed: {e}")))?;
    ctx.state.add(Count::Succeeded, 1);
    Ok(())
}
