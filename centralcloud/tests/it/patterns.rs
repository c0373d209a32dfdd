//! The pattern aggregator merges the same pattern seen by several instances.

use chrono::Utc;
use pgflow_core::protocol::{self, queues, CodePattern, PatternDiscovered, PatternType};
use pgflow_core::testing::wait_for;
use uuid::Uuid;

use crate::support::{q, settings, Harness, TIMEOUT};

/// The "extract function" pattern as `instance` reports it.
pub fn pattern(instance: &str, success_rate: f64, after: &str) -> PatternDiscovered {
    PatternDiscovered {
        instance_id: instance.to_string(),
        pattern_type: PatternType::Refactoring,
        code_pattern: CodePattern {
            before: "fn f() { let x = a + b; x * 2 }".into(),
            after: after.into(),
            description: format!("Extract function for readability ({instance})"),
        },
        success_rate,
        agent_type: "RefactoringAgent".into(),
        timestamp: Utc::now(),
    }
}

/// Reports `p` to the aggregator.
pub async fn report(h: &Harness, p: &PatternDiscovered) {
    let msg = protocol::encode(p)
        .unwrap()
        .trace_id(Uuid::now_v7())
        .source(&p.instance_id);
    h.instance(&p.instance_id)
        .await
        .send_with_notify(&q(queues::PATTERNS_FOR_AGGREGATOR), msg)
        .await
        .unwrap();
}

#[tokio::test]
async fn identical_patterns_of_two_instances_merge() {
    let h = Harness::start(settings()).await;
    report(
        &h,
        &pattern(
            "singularity_1",
            0.95,
            "fn sum(a: i32, b: i32) -> i32 { a + b }",
        ),
    )
    .await;
    // Same code, other whitespace and description: the same pattern.
    report(
        &h,
        &pattern(
            "singularity_2",
            0.97,
            "fn sum(a: i32, b: i32) -> i32 {\n    a + b\n}",
        ),
    )
    .await;
    report(&h, &pattern("singularity_1", 0.50, "fn other() {}")).await;

    let rows: Vec<(i64, Vec<String>, f64)> = wait_for("three reports merged", TIMEOUT, || async {
        let rows: Vec<(i64, Vec<String>, f64)> = sqlx::query_as(
            "SELECT occurrences, instances, success_rate FROM centralcloud.patterns
              ORDER BY occurrences DESC",
        )
        .fetch_all(h.t.pgflow.pool())
        .await
        .unwrap();
        let total: i64 = rows.iter().map(|r| r.0).sum();
        (total == 3).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (count, instances, rate) = &rows[0];
    assert_eq!(*count, 2);
    assert_eq!(instances, &["singularity_1", "singularity_2"]);
    assert!((rate - 0.96).abs() < 1e-9, "{rate}");
    assert_eq!(rows[1].0, 1);
    let reports: i64 = h
        .scalar("SELECT count(*) FROM centralcloud.pattern_reports")
        .await;
    assert_eq!(reports, 3);
    h.stop().await;
}
