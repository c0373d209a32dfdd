//! The sweeper: the final word on every proposal. "No proposal stays
//! stuck" is an invariant the instance checks, not a hope: whatever the
//! cause (an outage, a lost message, a bug), a proposal of this instance
//! that stays pending, submitted, approved or executing longer than
//! `SINGULARITY_STUCK_AFTER_MS` after its last state change is reported
//! and resolved: marked `failed` with the reason.
//!
//! * **Fenced.** One transaction locks the stuck proposals (`FOR UPDATE
//!   SKIP LOCKED`: one being executed right now holds its lock and is left
//!   for the next pass), marks them failed and cancels every live execution
//!   message of each ([`Pgflow::cancel_matching_in_tx`]: moved to the DLQ
//!   with the reason). A message waiting for its next attempt is never
//!   delivered again; a handler holding a lease on one finds the proposal
//!   failed when it takes the same lock, and its fenced ack fails. So a late
//!   retry cannot apply the change after the proposal was marked failed.
//!   Locks are taken proposal first, then message, as the execution
//!   handler does; only a nack dead-lettering that same message at that
//!   same moment takes them the other way (its trigger fails the
//!   proposal): PostgreSQL then aborts one of the two, the nack is retried
//!   by the consumer and the pass by the next one.
//! * **Never too early.** The threshold is at least the execution budget
//!   ([`execution_budget`]): every attempt the queue allows running to its
//!   timeout, plus the longest backoffs between them. A legitimate
//!   execution is never overridden; a larger setting leaves room for the
//!   consensus deadline (CentralCloud's, 5 s by default) and outages.
//! * **Reported.** `singularity_proposals_swept_total` (by the state the
//!   proposal was stuck in) counts resolved proposals; the gauge
//!   `singularity_proposals_stuck` is how many were past the threshold and
//!   still not final after the last pass (0 unless the sweeper cannot
//!   resolve them). `deploy/prometheus/pgflow-alerts.yml` alerts on both.
//!
//! It runs every `SINGULARITY_SWEEP_INTERVAL_MS` over this instance's own
//! proposals; [`Sweeper::sweep`] is one pass (the tests call it directly).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgflow_core::service::ConsumerArgs;
use pgflow_core::{Pgflow, QueueName};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::Result;
use crate::instance::Instance;
use crate::store::{self, ProposalState};

/// Counter of proposals the sweeper marked failed, labelled by `state`.
pub const SWEPT_TOTAL: &str = "singularity_proposals_swept_total";
/// Gauge of proposals past the threshold and still not final after a pass.
pub const STUCK: &str = "singularity_proposals_stuck";
/// Proposals resolved per transaction.
const BATCH: i64 = 100;
/// Slack added to the execution budget (scheduling, commit, clock).
const MARGIN: Duration = Duration::from_secs(30);
/// The lease counted per attempt when the consumer follows the queue's
/// visibility timeout (3 s on the design queues since migration 40; the
/// seeds' 30 s bounds it for queues left at that).
pub const LEASE_FALLBACK: Duration = Duration::from_secs(30);

/// The longest a legitimate execution can take with these consumer
/// settings: `max_retries + 1` attempts each running to its handler
/// timeout and then to the end of a lease it no longer extends (the
/// consumer's lease, or [`LEASE_FALLBACK`] when it follows the queue's
/// visibility timeout), plus the longest backoff before each retry, plus a
/// margin of 30 s (scheduling, commit, clock). (`execution` is the
/// execution queue, whose consumer these settings make.)
pub fn execution_budget(consumers: &ConsumerArgs, execution: &QueueName) -> Duration {
    let retry = consumers.retry();
    let cfg = consumers.consumer(execution.clone(), 1usize);
    let attempt = cfg
        .timeout
        .saturating_add(cfg.lease.unwrap_or(LEASE_FALLBACK));
    let attempts = attempt.saturating_mul(retry.max_retries.saturating_add(1));
    let backoffs = (1..=retry.max_retries)
        .map(|n| retry.delay_bounds(n).1)
        .fold(Duration::ZERO, Duration::saturating_add);
    attempts.saturating_add(backoffs).saturating_add(MARGIN)
}

/// A proposal past the threshold, as locked by a pass.
#[derive(Debug, sqlx::FromRow)]
struct Stuck {
    id: Uuid,
    status: String,
    updated_at: DateTime<Utc>,
    trace_id: Uuid,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// The proposals marked failed.
    pub failed: Vec<Uuid>,
    /// Live execution messages cancelled with them.
    pub cancelled: Vec<Uuid>,
    /// Proposals past the threshold still not final after the pass
    /// (locked by an execution right now, or beyond this pass's batch).
    pub still_stuck: i64,
}

/// Resolves this instance's stuck proposals.
#[derive(Debug, Clone)]
pub struct Sweeper {
    inst: Arc<Instance>,
    stuck_after: Duration,
    interval: Duration,
}

impl Sweeper {
    /// A sweeper for `inst` resolving proposals unchanged for `stuck_after`
    /// (raised to [`execution_budget`] when below it), every `interval`.
    pub fn new(
        inst: Arc<Instance>,
        stuck_after: Duration,
        consumers: &ConsumerArgs,
        interval: Duration,
    ) -> Self {
        let budget = execution_budget(consumers, &inst.queues.execution);
        if stuck_after < budget {
            tracing::warn!(
                stuck_after_ms = stuck_after.as_millis() as u64,
                execution_budget_ms = budget.as_millis() as u64,
                "SINGULARITY_STUCK_AFTER_MS is shorter than an execution may legitimately take \
                 with these retry and timeout settings; using the execution budget"
            );
        }
        Self {
            inst,
            stuck_after: stuck_after.max(budget),
            interval,
        }
    }

    /// How long a proposal may stay in one non-final state.
    pub fn stuck_after(&self) -> Duration {
        self.stuck_after
    }

    /// One pass: marks failed every proposal of this instance not final
    /// and unchanged for [`Sweeper::stuck_after`], cancelling its
    /// execution messages in the same transaction (see the module docs).
    pub async fn sweep(&self) -> Result<Swept> {
        let mut swept = Swept::default();
        loop {
            let taken = self.sweep_batch(&mut swept).await?;
            if taken < BATCH as usize {
                break;
            }
        }
        swept.still_stuck = self.count_stuck().await?;
        metrics::gauge!(STUCK).set(swept.still_stuck as f64);
        Ok(swept)
    }

    /// One transaction of [`Sweeper::sweep`]; returns how many it took.
    async fn sweep_batch(&self, swept: &mut Swept) -> Result<usize> {
        let inst = &self.inst;
        let mut tx = inst.pg.pool().begin().await?;
        let stuck: Vec<Stuck> = sqlx::query_as(
            "SELECT id, status, updated_at, trace_id FROM singularity.proposals
              WHERE instance_id = $1 AND status = ANY($2)
                AND updated_at <= now() - $3 * interval '1 millisecond'
              ORDER BY updated_at
              LIMIT $4
                FOR UPDATE SKIP LOCKED",
        )
        .bind(&inst.id)
        .bind(not_final())
        .bind(self.stuck_after.as_millis() as f64)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut resolved = Vec::with_capacity(stuck.len());
        for s in &stuck {
            let reason = format!(
                "stuck: still {} since {} (no final state within {} s); marked failed by the sweeper",
                s.status,
                s.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                self.stuck_after.as_secs()
            );
            if !store::mark_failed(&mut tx, &inst.id, s.id, &reason).await? {
                continue;
            }
            let cancelled = cancel_executions(&inst.pg, &mut tx, inst, s.id, &reason).await?;
            resolved.push((s, reason, cancelled));
        }
        tx.commit().await?;
        for (s, reason, cancelled) in resolved {
            let span = tracing::warn_span!("sweep", proposal_id = %s.id, trace_id = %s.trace_id);
            span.in_scope(|| {
                tracing::warn!(state = %s.status, cancelled = cancelled.len(), %reason, "stuck proposal resolved");
            });
            metrics::counter!(SWEPT_TOTAL, "state" => s.status.clone()).increment(1);
            swept.failed.push(s.id);
            swept.cancelled.extend(cancelled);
        }
        Ok(stuck.len())
    }

    /// Proposals past the threshold and not final (locked ones included).
    async fn count_stuck(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM singularity.proposals
              WHERE instance_id = $1 AND status = ANY($2)
                AND updated_at <= now() - $3 * interval '1 millisecond'",
        )
        .bind(&self.inst.id)
        .bind(not_final())
        .bind(self.stuck_after.as_millis() as f64)
        .fetch_one(self.inst.pg.pool())
        .await?)
    }

    /// Passes every interval until `shutdown`; a failed pass is logged and
    /// the next one tries again.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(
            stuck_after_ms = self.stuck_after.as_millis() as u64,
            interval_ms = self.interval.as_millis() as u64,
            "proposal sweeper started"
        );
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let pass = async {
                match self.sweep().await {
                    Ok(s) if s.failed.is_empty() && s.still_stuck == 0 => {}
                    Ok(s) => tracing::warn!(
                        failed = s.failed.len(),
                        cancelled = s.cancelled.len(),
                        still_stuck = s.still_stuck,
                        "sweeper pass resolved stuck proposals"
                    ),
                    Err(e) => tracing::warn!(
                        error = %pgflow_core::error::report(&e),
                        "sweeper pass failed; retrying at the next one"
                    ),
                }
            };
            pass.instrument(tracing::info_span!("proposal_sweeper"))
                .await;
        }
    }
}

/// The stored names of the non-final states.
fn not_final() -> Vec<&'static str> {
    ProposalState::NOT_FINAL.map(ProposalState::as_str).to_vec()
}

/// Cancels the live execution messages of proposal `id` (targeted at this
/// instance) in `tx`.
async fn cancel_executions(
    pg: &Pgflow,
    tx: &mut sqlx::PgConnection,
    inst: &Instance,
    id: Uuid,
    reason: &str,
) -> Result<Vec<Uuid>> {
    Ok(pg
        .cancel_matching_in_tx(
            tx,
            &inst.queues.execution,
            &inst.id,
            &serde_json::json!({ "proposal_id": id }),
            &format!("cancelled: {reason}"),
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_covers_every_attempt_and_backoff() {
        let q = QueueName::new(pgflow_core::protocol::queues::PROPOSALS_FOR_EXECUTION).unwrap();
        let c = ConsumerArgs::default();
        // 4 attempts of a 30 s handler timeout and a lease no longer
        // extended (LEASE_FALLBACK), backoffs of at most 1 + 2 + 4 s.
        assert_eq!(
            execution_budget(&c, &q),
            (Duration::from_secs(30) + LEASE_FALLBACK) * 4 + Duration::from_secs(7) + MARGIN
        );
        let none = ConsumerArgs {
            max_retries: 0,
            ..ConsumerArgs::default()
        };
        assert_eq!(
            execution_budget(&none, &q),
            Duration::from_secs(30) + LEASE_FALLBACK + MARGIN
        );
    }

    #[test]
    fn the_alert_rules_watch_the_sweepers_metrics() {
        let rules = include_str!("../../deploy/prometheus/pgflow-alerts.yml");
        for metric in [SWEPT_TOTAL, STUCK] {
            assert!(rules.contains(metric), "no alert on {metric}");
        }
    }
}
