//! The guardian: records the execution metrics instances report
//! (`metrics_to_guardian_queue`) and compares the measurement after a
//! change with the one before, against the current safety profile of the
//! agent type (or [`crate::profiles::default_profile`]). A breach sends one
//! HIGH-priority rollback trigger to the executing instance
//! (`rollback_triggers_queue`, targeted) with the reason and
//! `{threshold, actual}`, in the transaction that records the metrics.
//!
//! The rule ([`evaluate`]), checked in the order error rate, latency, cost:
//! a metric breaches when its value after the change is above the
//! profile's threshold and worse than before the change (a value that was
//! already above the threshold before is not the change's doing, and
//! rolling back would not cure it). Metrics an instance does not measure
//! (absent after the change) are not checked. Metrics of a proposal that is
//! already rolled back are recorded only, and a proposal gets at most one
//! rollback trigger.

use std::sync::Arc;

use chrono::Utc;
use pgflow_core::consumer::{async_trait, HandlerError, HandlerResult, TxHandler};
use pgflow_core::protocol::{
    self, queues, Breach, ExecutionMetrics, MetricsSnapshot, ProposalStatus, RollbackReason,
    RollbackTrigger, SafetyProfile,
};
use pgflow_core::telemetry::{emit, Event};
use pgflow_core::Delivery;
use sqlx::PgConnection;

use crate::engine::Ctx;
use crate::{profiles, queue, SOURCE};

/// A breached threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Which threshold.
    pub reason: RollbackReason,
    /// The profile's threshold and the measured value.
    pub breach: Breach,
}

/// The stored name of a rollback reason.
pub fn reason_str(r: RollbackReason) -> &'static str {
    match r {
        RollbackReason::ErrorRateBreach => "error_rate_breach",
        RollbackReason::LatencyBreach => "latency_breach",
        RollbackReason::CostBreach => "cost_breach",
    }
}

/// The first threshold of `profile` that the change from `before` to
/// `after` breaches (see the module docs), if any.
pub fn evaluate(
    profile: &SafetyProfile,
    before: &MetricsSnapshot,
    after: &MetricsSnapshot,
) -> Option<Finding> {
    let checks = [
        (
            RollbackReason::ErrorRateBreach,
            profile.error_threshold,
            before.error_rate,
            after.error_rate,
        ),
        (
            RollbackReason::LatencyBreach,
            profile.latency_threshold,
            before.latency_ms,
            after.latency_ms,
        ),
        (
            RollbackReason::CostBreach,
            profile.cost_threshold,
            before.cost,
            after.cost,
        ),
    ];
    checks
        .into_iter()
        .find_map(|(reason, threshold, before, after)| {
            let actual = after?;
            let worse = before.is_none_or(|b| actual > b);
            (actual > threshold && worse).then_some(Finding {
                reason,
                breach: Breach { threshold, actual },
            })
        })
}

/// Consumer of `metrics_to_guardian_queue`.
pub struct MetricsHandler(pub(crate) Arc<Ctx>);

#[async_trait]
impl TxHandler for MetricsHandler {
    async fn handle(&self, tx: &mut PgConnection, msg: &Delivery) -> HandlerResult {
        let m: ExecutionMetrics = protocol::decode(msg)?;
        emit(
            Event::MetricsReceived,
            &format!(
                "proposal_id={} instance_id={} agent_type={} trace_id={}",
                m.proposal_id, m.instance_id, m.agent_type, msg.trace_id
            ),
        );
        guard(&self.0, tx, &m, msg)
            .await
            .map_err(HandlerError::from)
    }
}

async fn guard(
    ctx: &Ctx,
    tx: &mut PgConnection,
    m: &ExecutionMetrics,
    msg: &Delivery,
) -> pgflow_core::Result<()> {
    let current = profiles::current(tx, &m.agent_type).await?;
    let finding = if m.status == ProposalStatus::RolledBack {
        None
    } else {
        evaluate(&current.profile, &m.metrics_before, &m.metrics_after)
    };
    let already_triggered = match finding {
        Some(_) => {
            // Serialise the breaches of one proposal (several metrics
            // workers), so that only one of them sends a trigger.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("centralcloud.rollback/{}", m.proposal_id))
                .execute(&mut *tx)
                .await?;
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM centralcloud.metrics
                             WHERE proposal_id = $1 AND rollback_message_id IS NOT NULL)",
            )
            .bind(m.proposal_id)
            .fetch_one(&mut *tx)
            .await?
        }
        None => false,
    };
    let trigger = match &finding {
        Some(f) if !already_triggered => {
            let t = RollbackTrigger {
                proposal_id: m.proposal_id,
                instance_id: m.instance_id.clone(),
                reason: f.reason,
                threshold: f.breach.clone(),
                timestamp: Utc::now(),
            };
            Some(
                protocol::encode(&t)?
                    .target(&m.instance_id)
                    .trace_id(msg.trace_id)
                    .source(SOURCE),
            )
        }
        _ => None,
    };
    let status = serde_json::to_value(m.status)?;
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO centralcloud.metrics
             (message_id, proposal_id, instance_id, agent_type, status, metrics_before,
              metrics_after, profile_version, breach, threshold, actual, rollback_message_id,
              trace_id, measured_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (message_id) DO NOTHING
         RETURNING id",
    )
    .bind(msg.id)
    .bind(m.proposal_id)
    .bind(&m.instance_id)
    .bind(&m.agent_type)
    .bind(status.as_str().unwrap_or("unknown"))
    .bind(serde_json::to_value(&m.metrics_before)?)
    .bind(serde_json::to_value(&m.metrics_after)?)
    .bind(current.version)
    .bind(finding.as_ref().map(|f| reason_str(f.reason)))
    .bind(finding.as_ref().map(|f| f.breach.threshold))
    .bind(finding.as_ref().map(|f| f.breach.actual))
    .bind(trigger.as_ref().map(|t| t.message_id()))
    .bind(msg.trace_id)
    .bind(m.timestamp)
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        tracing::info!(proposal_id = %m.proposal_id, "metrics already recorded; duplicate ignored");
        return Ok(());
    }
    match (&finding, trigger) {
        (Some(f), Some(t)) => send_trigger(ctx, tx, m, f, t).await?,
        (Some(f), None) => tracing::info!(
            proposal_id = %m.proposal_id,
            reason = reason_str(f.reason),
            "breach again; a rollback trigger was already sent for this proposal"
        ),
        (None, _) => tracing::info!(
            proposal_id = %m.proposal_id,
            agent_type = %m.agent_type,
            profile_version = current.version,
            "metrics within the safety profile"
        ),
    }
    Ok(())
}

async fn send_trigger(
    ctx: &Ctx,
    tx: &mut PgConnection,
    m: &ExecutionMetrics,
    f: &Finding,
    t: pgflow_core::OutgoingMessage,
) -> pgflow_core::Result<()> {
    ctx.pg
        .send_in_tx(tx, &queue(queues::ROLLBACK_TRIGGERS)?, &[t], true)
        .await?;
    tracing::warn!(
        proposal_id = %m.proposal_id,
        instance_id = %m.instance_id,
        reason = reason_str(f.reason),
        threshold = f.breach.threshold,
        actual = f.breach.actual,
        "safety profile breached; rollback triggered"
    );
    emit(
        Event::RollbackTriggerPublished,
        &format!(
            "proposal_id={} instance_id={} reason={} threshold={} actual={}",
            m.proposal_id,
            m.instance_id,
            reason_str(f.reason),
            f.breach.threshold,
            f.breach.actual
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::default_profile;

    fn snap(
        error_rate: Option<f64>,
        latency_ms: Option<f64>,
        cost: Option<f64>,
    ) -> MetricsSnapshot {
        MetricsSnapshot {
            cpu_usage: 40.0,
            memory: 512.0,
            error_count: 1,
            error_rate,
            latency_ms,
            cost,
        }
    }

    #[test]
    fn error_rate_above_threshold_and_worse_breaches() {
        let f = evaluate(
            &default_profile(),
            &snap(Some(0.02), Some(100.0), None),
            &snap(Some(0.15), Some(100.0), None),
        )
        .unwrap();
        assert_eq!(f.reason, RollbackReason::ErrorRateBreach);
        assert_eq!((f.breach.threshold, f.breach.actual), (0.10, 0.15));
    }

    #[test]
    fn within_thresholds_or_not_worse_is_fine() {
        let p = default_profile();
        assert_eq!(
            evaluate(
                &p,
                &snap(Some(0.01), Some(100.0), Some(0.01)),
                &snap(Some(0.05), Some(200.0), Some(0.05))
            ),
            None
        );
        // Already above before the change, and not worse: not the change's doing.
        assert_eq!(
            evaluate(
                &p,
                &snap(Some(0.2), None, None),
                &snap(Some(0.2), None, None)
            ),
            None
        );
        // Seed-style metrics without rates are not checked.
        assert_eq!(
            evaluate(&p, &snap(None, None, None), &snap(None, None, None)),
            None
        );
    }

    #[test]
    fn latency_then_cost_are_checked() {
        let p = default_profile();
        let f = evaluate(
            &p,
            &snap(None, Some(100.0), None),
            &snap(None, Some(5000.0), Some(1.0)),
        )
        .unwrap();
        assert_eq!(f.reason, RollbackReason::LatencyBreach);
        let f = evaluate(&p, &snap(None, None, None), &snap(None, None, Some(0.5))).unwrap();
        assert_eq!(f.reason, RollbackReason::CostBreach);
    }
}
