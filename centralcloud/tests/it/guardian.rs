//! The guardian: a breach of the agent type's thresholds sends one
//! HIGH-priority rollback trigger to the executing instance; metrics within
//! the thresholds send nothing.

use chrono::Utc;
use pgflow_core::priority;
use pgflow_core::protocol::{
    self, queues, ExecutionMetrics, MetricsSnapshot, ProposalStatus, RollbackReason,
    RollbackTrigger,
};
use pgflow_core::testing::wait_for;
use uuid::Uuid;

use crate::support::{nothing_for, q, settings, take, Harness, TIMEOUT};

fn snapshot(error_rate: f64, latency_ms: f64) -> MetricsSnapshot {
    MetricsSnapshot {
        cpu_usage: 45.2,
        memory: 512.0,
        error_count: 2,
        error_rate: Some(error_rate),
        latency_ms: Some(latency_ms),
        cost: Some(0.02),
    }
}

/// Execution metrics of a fresh proposal of `instance`, error rate going
/// from 0.02 to `error_after`.
pub fn metrics(instance: &str, agent: &str, error_after: f64) -> ExecutionMetrics {
    ExecutionMetrics {
        proposal_id: Uuid::now_v7(),
        instance_id: instance.to_string(),
        agent_type: agent.to_string(),
        metrics_before: snapshot(0.02, 120.0),
        metrics_after: snapshot(error_after, 130.0),
        status: ProposalStatus::Executing,
        timestamp: Utc::now(),
    }
}

/// Reports `m` to the guardian as its instance; returns the trace id.
pub async fn report(h: &Harness, m: &ExecutionMetrics) -> Uuid {
    let trace = Uuid::now_v7();
    let msg = protocol::encode(m)
        .unwrap()
        .trace_id(trace)
        .source(&m.instance_id);
    h.instance(&m.instance_id)
        .await
        .send_with_notify(&q(queues::METRICS_TO_GUARDIAN), msg)
        .await
        .unwrap();
    trace
}

#[tokio::test]
async fn a_breach_triggers_a_high_priority_rollback_and_health_does_not() {
    let h = Harness::start(settings()).await;
    let healthy = metrics("singularity_1", "BugFixerAgent", 0.05);
    let breaching = metrics("singularity_2", "BugFixerAgent", 0.15);
    report(&h, &healthy).await;
    let trace = report(&h, &breaching).await;

    let got = take(&h.sing, queues::ROLLBACK_TRIGGERS, Some("singularity_2"), 1).await;
    let d = &got[0];
    assert_eq!(d.priority, priority::HIGH);
    assert_eq!(d.trace_id, trace);
    let t: RollbackTrigger = protocol::decode(d).unwrap();
    assert_eq!(t.proposal_id, breaching.proposal_id);
    assert_eq!(t.instance_id, "singularity_2");
    assert_eq!(t.reason, RollbackReason::ErrorRateBreach);
    assert_eq!((t.threshold.threshold, t.threshold.actual), (0.10, 0.15));
    assert_eq!(
        d.payload.to_value().unwrap()["threshold"],
        serde_json::json!({"threshold": 0.10, "actual": 0.15})
    );

    wait_for("both metrics recorded", TIMEOUT, || async {
        let n: i64 = h.scalar("SELECT count(*) FROM centralcloud.metrics").await;
        (n == 2).then_some(())
    })
    .await;
    nothing_for(&h.sing, queues::ROLLBACK_TRIGGERS, "singularity_1").await;
    let sent = h.sent(queues::ROLLBACK_TRIGGERS).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (breach, version): (Option<String>, i32) = sqlx::query_as(
        "SELECT breach, profile_version FROM centralcloud.metrics WHERE proposal_id = $1",
    )
    .bind(healthy.proposal_id)
    .fetch_one(h.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!((breach, version), (None, 0), "checked against the defaults");

    // The same proposal breaching again gets no second trigger.
    let mut again = breaching.clone();
    again.metrics_after.error_rate = Some(0.3);
    report(&h, &again).await;
    wait_for("the third metrics", TIMEOUT, || async {
        let n: i64 = h.scalar("SELECT count(*) FROM centralcloud.metrics").await;
        (n == 3).then_some(())
    })
    .await;
    assert_eq!(h.sent(queues::ROLLBACK_TRIGGERS).await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn thresholds_come_from_the_current_safety_profile() {
    let h = Harness::start(settings()).await;
    sqlx::query(
        "INSERT INTO centralcloud.safety_profiles
             (agent_type, version, success_rate, error_threshold, latency_threshold, cost_threshold)
         VALUES ('StrictAgent', 1, 0.99, 0.03, 3000, 0.1)",
    )
    .execute(h.t.pgflow.pool())
    .await
    .unwrap();
    let strict = metrics("singularity_3", "StrictAgent", 0.05);
    report(&h, &strict).await;
    let got = take(&h.sing, queues::ROLLBACK_TRIGGERS, Some("singularity_3"), 1).await;
    let t: RollbackTrigger = protocol::decode(&got[0]).unwrap();
    assert_eq!((t.threshold.threshold, t.threshold.actual), (0.03, 0.05));
    h.stop().await;
}
