//! The deadline decider: a periodic task deciding every proposal still
//! collecting past its deadline on the votes cast so far (none: rejected,
//! with a rationale saying so). Several deciders may run (one per
//! centralcloud process): each locks the due rows it takes with
//! `FOR UPDATE SKIP LOCKED`, and a decision only lands on a row still
//! `collecting`.

use std::time::Duration;

use pgflow_core::error::report;
use pgflow_core::{Pgflow, Result};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{store, DecidedBy};

/// Most proposals decided per transaction.
pub const BATCH: i64 = 100;

/// Decides the proposals past their deadline, [`BATCH`] per transaction,
/// until none is left; returns how many were decided.
pub async fn decide_due(pg: &Pgflow) -> Result<usize> {
    let mut total = 0;
    loop {
        let mut tx = pg.pool().begin().await?;
        let due = store::lock_due(&mut tx, BATCH).await?;
        let mut decided = 0;
        for p in &due {
            let span =
                tracing::info_span!("decide", proposal_id = %p.proposal_id, trace_id = %p.trace_id);
            if store::finalize(pg, &mut tx, p, DecidedBy::Deadline)
                .instrument(span)
                .await?
                .is_some()
            {
                decided += 1;
            }
        }
        tx.commit().await?;
        total += decided;
        if (due.len() as i64) < BATCH {
            return Ok(total);
        }
    }
}

/// Runs [`decide_due`] every `interval` until `shutdown`.
pub async fn run(pg: Pgflow, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match decide_due(&pg).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(decided = n, "deadline decider ran"),
            Err(e) => {
                tracing::warn!(error = %report(&e), "deadline decider failed; retrying next tick")
            }
        }
    }
}
