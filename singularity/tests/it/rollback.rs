//! Rollback triggers restore the file from the backup (or delete a file the
//! change created) and mark the proposal rolled_back; a repeated trigger
//! does nothing.

use chrono::Utc;
use pgflow_core::protocol::{self, queues, Breach, RollbackReason, RollbackTrigger};
use uuid::Uuid;

use crate::execution::wait_duplicates;
use crate::support::{q, Env};

async fn trigger(env: &Env, proposal_id: Uuid, trace: Uuid) {
    let t = RollbackTrigger {
        proposal_id,
        instance_id: env.id.clone(),
        reason: RollbackReason::ErrorRateBreach,
        threshold: Breach {
            threshold: 0.10,
            actual: 0.15,
        },
        timestamp: Utc::now(),
    };
    let msg = protocol::encode(&t)
        .unwrap()
        .trace_id(trace)
        .target(&env.id)
        .source("centralcloud");
    env.cc
        .send_with_notify(&q(queues::ROLLBACK_TRIGGERS), msg)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rollback_restores_the_file_and_marks_the_proposal() {
    let env = Env::start().await;
    std::fs::create_dir_all(env.ws()).unwrap();
    std::fs::write(env.ws().join("a.txt"), "before").unwrap();
    let s = env.apply("a.txt", "after").await;
    assert_eq!(
        std::fs::read_to_string(env.ws().join("a.txt")).unwrap(),
        "after"
    );

    trigger(&env, s.proposal_id, s.trace_id).await;
    env.wait_status(s.proposal_id, "rolled_back").await;
    assert_eq!(
        std::fs::read_to_string(env.ws().join("a.txt")).unwrap(),
        "before"
    );
    let p = env.proposal(s.proposal_id).await;
    assert!(
        p.rollback_reason
            .as_deref()
            .unwrap()
            .contains("error_rate_breach"),
        "{:?}",
        p.rollback_reason
    );
    assert!(p.rolled_back_at.is_some());
    // The seeds' telemetry events of the journey were emitted.
    let metrics = pgflow_core::testing::http_get(env.addr, "/metrics")
        .await
        .unwrap()
        .body;
    for event in [
        "proposal_published",
        "consensus_approved",
        "metrics_published",
        "rollback_completed",
    ] {
        assert!(
            metrics.contains(&format!("pgflow_events_total{{event=\"{event}\"}}")),
            "{event} missing from:\n{metrics}"
        );
    }

    // Again: nothing happens, the duplicate is counted.
    std::fs::write(env.ws().join("a.txt"), "later edit").unwrap();
    trigger(&env, s.proposal_id, s.trace_id).await;
    wait_duplicates(&env, s.proposal_id, 1).await;
    assert_eq!(
        std::fs::read_to_string(env.ws().join("a.txt")).unwrap(),
        "later edit"
    );
    env.stop().await;
}

#[tokio::test]
async fn rolling_back_a_created_file_deletes_it() {
    let env = Env::start().await;
    let s = env.apply("made/here.txt", "new").await;
    trigger(&env, s.proposal_id, s.trace_id).await;
    env.wait_status(s.proposal_id, "rolled_back").await;
    assert!(!env.ws().join("made/here.txt").exists());
    env.stop().await;
}
