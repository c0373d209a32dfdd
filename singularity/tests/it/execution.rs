//! The execution flow: an approved proposal is applied in the workspace
//! with a backup, measured before and after, reported to the guardian with
//! its trace id, and marked applied; a redelivery does not apply it again.

use pgflow_core::protocol::{
    self, queues, ConsensusStatus, ExecutionMetrics, ProposalForExecution, ProposalStatus,
};
use uuid::Uuid;

use crate::support::{is, q, Env, DEADLINE};

/// Waits until proposal `id` counted `n` duplicate deliveries.
pub async fn wait_duplicates(env: &Env, id: Uuid, n: i32) {
    pgflow_core::testing::wait_for("duplicate counted", DEADLINE, || async {
        (env.proposal(id).await.duplicate_deliveries == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_approved_proposal_is_applied_measured_and_reported() {
    let env = Env::start_with(|a| a.verify_cmd = Some("grep -q fixed src/lib.rs".into())).await;
    std::fs::create_dir_all(env.ws().join("src")).unwrap();
    std::fs::write(env.ws().join("src/lib.rs"), "pub fn broken() {}").unwrap();

    let s = env.propose("src/lib.rs", "pub fn fixed() {}", 1.0).await;
    env.cc_decide(&s, ConsensusStatus::Approved).await;
    env.wait_status(s.proposal_id, "applied").await;
    assert_eq!(
        std::fs::read_to_string(env.ws().join("src/lib.rs")).unwrap(),
        "pub fn fixed() {}"
    );
    let p = env.proposal(s.proposal_id).await;
    assert_eq!(p.backup_existed, Some(true));
    assert_eq!(
        p.backup_content.as_deref(),
        Some(&b"pub fn broken() {}"[..])
    );
    assert_eq!(p.votes.unwrap()["singularity_2"], "approve");
    assert_eq!(p.confidence, Some(1.0));

    // The guardian gets the metrics with the journey's trace id.
    let d = env.cc_claim(queues::METRICS_TO_GUARDIAN).await;
    assert!(is::<ExecutionMetrics>(&d));
    assert_eq!(d.trace_id, s.trace_id);
    let m: ExecutionMetrics = protocol::decode(&d).unwrap();
    assert_eq!(m.proposal_id, s.proposal_id);
    assert_eq!(m.status, ProposalStatus::Applied);
    assert_eq!(m.agent_type, "BugFixerAgent");
    assert!(m.metrics_before.memory > 0.0 && m.metrics_after.memory > 0.0);
    // The verify command failed before the change and passes after it.
    assert_eq!(
        (m.metrics_before.error_count, m.metrics_before.error_rate),
        (1, Some(1.0))
    );
    assert_eq!(
        (m.metrics_after.error_count, m.metrics_after.error_rate),
        (0, Some(0.0))
    );
    assert!(m.metrics_after.latency_ms.is_some());

    // The execution message is delivered again: nothing is applied twice.
    std::fs::write(env.ws().join("src/lib.rs"), "edited since").unwrap();
    let again = protocol::encode(&ProposalForExecution {
        proposal_id: s.proposal_id,
        instance_id: env.id.clone(),
        agent_type: "BugFixerAgent".into(),
        code_change: protocol::CodeChange {
            file: "src/lib.rs".into(),
            change: "pub fn fixed() {}".into(),
        },
    })
    .unwrap()
    .trace_id(s.trace_id)
    .target(&env.id);
    env.sing
        .send_with_notify(&q(queues::PROPOSALS_FOR_EXECUTION), again)
        .await
        .unwrap();
    wait_duplicates(&env, s.proposal_id, 1).await;
    assert_eq!(
        std::fs::read_to_string(env.ws().join("src/lib.rs")).unwrap(),
        "edited since"
    );
    assert_eq!(env.status_of(s.proposal_id).await, "applied");
    assert_eq!(env.inst.counters.total(), 1);
    env.stop().await;
}

#[tokio::test]
async fn a_new_file_is_created_and_its_absence_recorded() {
    let env = Env::start().await;
    let s = env.apply("deep/new/dir/file.txt", "hello").await;
    assert_eq!(
        std::fs::read_to_string(env.ws().join("deep/new/dir/file.txt")).unwrap(),
        "hello"
    );
    let p = env.proposal(s.proposal_id).await;
    assert_eq!((p.backup_existed, p.backup_content), (Some(false), None));
    // Without a verify command no error rate or latency is claimed.
    let m: ExecutionMetrics =
        protocol::decode(&env.cc_claim(queues::METRICS_TO_GUARDIAN).await).unwrap();
    assert_eq!(
        (m.metrics_after.error_rate, m.metrics_after.latency_ms),
        (None, None)
    );
    env.stop().await;
}

#[tokio::test]
async fn an_interrupted_execution_resumes_with_its_recorded_backup() {
    let env = Env::start().await;
    std::fs::create_dir_all(env.ws()).unwrap();
    std::fs::write(env.ws().join("f.txt"), "new content").unwrap();
    let s = env.propose("f.txt", "new content", 1.0).await;
    // A crash after the backup was recorded and the file written, before
    // the ack: the proposal is `executing` with the original content saved.
    sqlx::query(
        "UPDATE singularity.proposals
            SET status = 'executing', backup_existed = true, backup_content = $2,
                metrics_before = $3
          WHERE id = $1",
    )
    .bind(s.proposal_id)
    .bind(&b"original"[..])
    .bind(serde_json::json!({"cpu_usage": 1.0, "memory": 10.0, "error_count": 0}))
    .execute(env.t.pgflow.pool())
    .await
    .unwrap();
    let msg = protocol::encode(&ProposalForExecution {
        proposal_id: s.proposal_id,
        instance_id: env.id.clone(),
        agent_type: "BugFixerAgent".into(),
        code_change: protocol::CodeChange {
            file: "f.txt".into(),
            change: "new content".into(),
        },
    })
    .unwrap()
    .trace_id(s.trace_id)
    .target(&env.id);
    env.sing
        .send_with_notify(&q(queues::PROPOSALS_FOR_EXECUTION), msg)
        .await
        .unwrap();
    env.wait_status(s.proposal_id, "applied").await;
    // The backup is the original, not the content found on disk.
    let p = env.proposal(s.proposal_id).await;
    assert_eq!(p.backup_content.as_deref(), Some(&b"original"[..]));
    let m: ExecutionMetrics =
        protocol::decode(&env.cc_claim(queues::METRICS_TO_GUARDIAN).await).unwrap();
    assert_eq!(m.metrics_before.memory, 10.0);
    env.stop().await;
}
