//! The learning loop: evidence in, safety-profile updates broadcast to
//! every instance and `learning_loop_completed` to Genesis, each piece of
//! evidence learned from once; the guardian then enforces the learned profile.

use centralcloud::learning::{self, Trigger};
use pgflow_core::protocol::{
    self, queues, LearningLoopCompleted, RollbackTrigger, SafetyProfileUpdate,
};
use pgflow_core::testing::wait_for;

use crate::guardian::{metrics, report as report_metrics};
use crate::patterns::{pattern, report as report_pattern};
use crate::support::{connect_as, settings, take, Harness, INSTANCES, TIMEOUT};

async fn recorded(h: &Harness, metrics: i64, reports: i64) {
    wait_for("the evidence recorded", TIMEOUT, || async {
        let m: i64 = h.scalar("SELECT count(*) FROM centralcloud.metrics").await;
        let r: i64 = h
            .scalar("SELECT count(*) FROM centralcloud.pattern_reports")
            .await;
        (m == metrics && r == reports).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_pass_broadcasts_profiles_and_reports_to_genesis() {
    let s = settings();
    let h = Harness::start(s.clone()).await;
    h.subscribe(queues::GUARDIAN_SAFETY_PROFILES, &INSTANCES)
        .await;
    // BugFixerAgent: three executions, two of them breaching the error rate.
    for (instance, after) in [
        ("singularity_1", 0.15),
        ("singularity_2", 0.2),
        ("singularity_3", 0.05),
    ] {
        report_metrics(&h, &metrics(instance, "BugFixerAgent", after)).await;
    }
    // RefactoringAgent: the same pattern from two instances.
    let code = "fn sum(a: i32, b: i32) -> i32 { a + b }";
    report_pattern(&h, &pattern("singularity_1", 0.95, code)).await;
    report_pattern(&h, &pattern("singularity_2", 0.97, code)).await;
    recorded(&h, 3, 2).await;

    let r = learning::run_pass(&h.cc, &s, Trigger::Cli).await.unwrap();
    assert!(r.run_id.is_some(), "{r:?}");
    assert_eq!(
        (
            r.patterns_processed,
            r.rules_generated,
            r.thresholds_updated
        ),
        (1, 1, 1),
        "{r:?}"
    );
    assert_eq!(r.profiles.len(), 2, "{r:?}");
    let trace = r.trace_id.unwrap();

    for instance in INSTANCES {
        let got = take(&h.sing, queues::GUARDIAN_SAFETY_PROFILES, Some(instance), 2).await;
        let mut updates: Vec<SafetyProfileUpdate> =
            got.iter().map(|d| protocol::decode(d).unwrap()).collect();
        assert!(got.iter().all(|d| d.trace_id == trace));
        updates.sort_by(|a, b| a.agent_type.cmp(&b.agent_type));
        assert_eq!(updates[0].agent_type, "BugFixerAgent");
        assert_eq!(updates[0].safety_profile.error_threshold, 0.09, "tightened");
        assert_eq!(updates[0].safety_profile.latency_threshold, 3000.0);
        assert!(updates[0].safety_profile.success_rate < 0.95);
        assert_eq!(updates[1].agent_type, "RefactoringAgent");
        assert_eq!(
            updates[1].safety_profile.error_threshold, 0.10,
            "too few executions to move"
        );
    }
    let genesis = connect_as(&h.t, "genesis").await;
    let got = take(&genesis, queues::LEARNING_LOOP_COMPLETED, None, 1).await;
    assert_eq!(got[0].trace_id, trace);
    let done: LearningLoopCompleted = protocol::decode(&got[0]).unwrap();
    assert_eq!(
        (
            done.patterns_processed,
            done.rules_generated,
            done.thresholds_updated
        ),
        (1, 1, 1)
    );

    // Nothing new: the next pass learns nothing and sends nothing.
    let again = learning::run_pass(&h.cc, &s, Trigger::Cli).await.unwrap();
    assert_eq!(again.run_id, None, "{again:?}");
    assert_eq!(h.sent(queues::LEARNING_LOOP_COMPLETED).await.len(), 1);
    let runs: i64 = h
        .scalar("SELECT count(*) FROM centralcloud.learning_runs")
        .await;
    assert_eq!(runs, 1);

    // The guardian now holds BugFixerAgent to the learned 0.09.
    let m = metrics("singularity_3", "BugFixerAgent", 0.095);
    report_metrics(&h, &m).await;
    let got = take(&h.sing, queues::ROLLBACK_TRIGGERS, Some("singularity_3"), 1).await;
    let t: RollbackTrigger = protocol::decode(&got[0]).unwrap();
    assert_eq!(t.proposal_id, m.proposal_id);
    assert_eq!((t.threshold.threshold, t.threshold.actual), (0.09, 0.095));
    h.stop().await;
}

#[tokio::test]
async fn the_periodic_loop_runs_in_the_service() {
    let mut s = settings();
    s.learning_interval = Some(std::time::Duration::from_millis(100));
    let h = Harness::start(s).await;
    report_pattern(&h, &pattern("singularity_1", 0.9, "fn x() {}")).await;
    let genesis = connect_as(&h.t, "genesis").await;
    let got = take(&genesis, queues::LEARNING_LOOP_COMPLETED, None, 1).await;
    let done: LearningLoopCompleted = protocol::decode(&got[0]).unwrap();
    assert_eq!(done.patterns_processed, 1);
    let trigger: String = h
        .scalar("SELECT trigger FROM centralcloud.learning_runs")
        .await;
    assert_eq!(trigger, "interval");
    h.stop().await;
}
