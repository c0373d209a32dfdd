//! When passes run: the time of the last pass is kept in
//! `centralcloud.learning_schedule` (one row), written in the transaction
//! that stores the pass's results (a `centralcloud learn` pass counts too),
//! so the schedule survives restarts; `centralcloud status` shows it. The
//! periodic loop ([`run_loop`]) runs a pass when one is due (one interval
//! after the last pass, or at once when there never was one): a pass that
//! came due while centralcloud was down runs as soon as it is back, and only
//! once however many intervals were missed, because the next one is counted
//! from it. Times are the database's, so several processes agree.
//!
//! A pass holds the row lock (`FOR UPDATE SKIP LOCKED`) for its whole
//! transaction: a second centralcloud process (or `centralcloud learn`)
//! finds the row locked and skips ([`Tick::Busy`]), and re-checks after the
//! other pass committed, when the pass is no longer due.

use std::time::Duration;

use pgflow_core::error::report;
use pgflow_core::{Pgflow, Result};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use super::pass::{self, LearningReport, Trigger};
use crate::config::Settings;

/// How soon a loop that found another pass running looks again.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

/// What one look at the schedule did.
#[derive(Debug, Clone, PartialEq)]
pub enum Tick {
    /// A pass was due and ran.
    Ran(LearningReport),
    /// No pass is due for this long.
    NotDue(Duration),
    /// Another pass holds the schedule.
    Busy,
}

/// Locks the schedule row for this transaction; `None` when another pass
/// holds it, else how long until a pass `interval` after the last one is
/// due (zero: due now, or no pass ever ran).
pub(crate) async fn lock(conn: &mut PgConnection, interval: Duration) -> Result<Option<Duration>> {
    let due_in: Option<f64> = sqlx::query_scalar(
        "SELECT coalesce(greatest(0, extract(epoch FROM
                    last_pass_at + make_interval(secs => $1) - now()))::float8, 0)
           FROM centralcloud.learning_schedule
            FOR UPDATE SKIP LOCKED",
    )
    .bind(interval.as_secs_f64())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(due_in.map(|s| Duration::try_from_secs_f64(s).unwrap_or(interval)))
}

/// Records that a pass ran now, in the pass's transaction (which holds the
/// lock).
pub(crate) async fn record(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("UPDATE centralcloud.learning_schedule SET last_pass_at = now()")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Runs a pass if one is due (see the module docs).
pub async fn run_if_due(pg: &Pgflow, settings: &Settings, interval: Duration) -> Result<Tick> {
    let mut tx = pg.pool().begin().await?;
    let due_in = match lock(&mut tx, interval).await? {
        None => return Ok(Tick::Busy),
        Some(d) => d,
    };
    if !due_in.is_zero() {
        tx.rollback().await?;
        return Ok(Tick::NotDue(due_in));
    }
    let report = pass::run_locked(pg, &mut tx, settings, Trigger::Interval).await?;
    tx.commit().await?;
    Ok(Tick::Ran(report))
}

/// Runs the passes due every `interval` until `shutdown`. A pass that fails
/// is logged and tried again one interval later.
pub async fn run_loop(
    pg: Pgflow,
    settings: Settings,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let wait = match run_if_due(&pg, &settings, interval).await {
            // Look again: the schedule now says one interval from this pass.
            Ok(Tick::Ran(_)) => Duration::ZERO,
            Ok(Tick::NotDue(d)) => d,
            Ok(Tick::Busy) => {
                tracing::debug!("learning pass skipped: another pass is running");
                BUSY_RETRY.min(interval)
            }
            Err(e) => {
                tracing::warn!(error = %report(&e), "learning pass failed; retrying in one interval");
                interval
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
