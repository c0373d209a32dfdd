//! Malformed and unknown messages go to the dead-letter queue with the
//! reason; the consumer keeps going.

use pgflow_core::protocol::{queues, ConsensusStatus};
use pgflow_core::testing::wait_for;
use pgflow_core::OutgoingMessage;

use crate::support::{q, Env, DEADLINE};

#[tokio::test]
async fn malformed_messages_are_dead_lettered_and_the_next_one_is_processed() {
    let env = Env::start().await;
    let results = q(queues::CONSENSUS_RESULTS);
    let malformed =
        OutgoingMessage::new("consensus_result", serde_json::json!({"garbage": 1})).target(&env.id);
    let unknown = OutgoingMessage::new("surprise", serde_json::json!({})).target(&env.id);
    env.cc.send_with_notify(&results, malformed).await.unwrap();
    env.cc.send_with_notify(&results, unknown).await.unwrap();

    let s = env.propose("a.txt", "x", 1.0).await;
    env.cc_decide(&s, ConsensusStatus::Rejected).await;
    env.wait_status(s.proposal_id, "consensus_failed").await;

    let dead = wait_for("two dead letters", DEADLINE, || async {
        let d = env.dlq(queues::CONSENSUS_RESULTS).await;
        (d.len() == 2).then_some(d)
    })
    .await;
    let errors: Vec<&str> = dead.iter().map(|d| d.error.as_str()).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("malformed \"consensus_result\" payload")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unknown message type \"surprise\"")),
        "{errors:?}"
    );
    // A result for a proposal this instance does not have is dead-lettered too.
    let stranger = singularity::Submitted {
        proposal_id: uuid::Uuid::now_v7(),
        trace_id: uuid::Uuid::now_v7(),
        status: "submitted".into(),
        repeat: false,
    };
    env.cc_decide(&stranger, ConsensusStatus::Approved).await;
    wait_for("unknown proposal dead-lettered", DEADLINE, || async {
        env.dlq(queues::CONSENSUS_RESULTS)
            .await
            .iter()
            .any(|d| d.error.contains("not a proposal of singularity_1"))
            .then_some(())
    })
    .await;
    env.stop().await;
}
