//! Messages that cannot be handled go to the dead-letter queue with the
//! reason, and the consumers carry on.

use pgflow_core::protocol::{queues, Vote};
use pgflow_core::testing::wait_for;
use pgflow_core::OutgoingMessage;
use serde_json::json;
use uuid::Uuid;

use crate::support::{proposal, q, settings, take, Harness, TIMEOUT};

#[tokio::test]
async fn malformed_and_unknown_messages_are_dead_lettered_and_work_goes_on() {
    let h = Harness::start(settings()).await;
    h.subscribe(queues::CONSENSUS_VOTE_REQUESTS, &["singularity_1"])
        .await;
    let proposals = q(queues::PROPOSALS_FOR_CONSENSUS);
    let malformed = OutgoingMessage::new(
        "proposal_for_consensus",
        json!({"proposal_id": "not-a-uuid", "instance_id": "singularity_1"}),
    );
    let malformed_id = h
        .sing
        .send_with_notify(&proposals, malformed)
        .await
        .unwrap();
    let unknown = OutgoingMessage::new("mystery_message", json!({"x": 1}));
    let unknown_id = h.sing.send_with_notify(&proposals, unknown).await.unwrap();
    h.vote(
        Uuid::now_v7(),
        "singularity_1",
        Vote::Approve,
        Uuid::now_v7(),
    )
    .await;

    let p = proposal("singularity_1", "BugFixerAgent");
    h.propose(&p).await;
    let got = take(
        &h.sing,
        queues::CONSENSUS_VOTE_REQUESTS,
        Some("singularity_1"),
        1,
    )
    .await;
    assert_eq!(
        got[0].payload.to_value().unwrap()["proposal_id"],
        json!(p.proposal_id)
    );

    let dead = wait_for("three dead letters", TIMEOUT, || async {
        let d = h.t.pgflow.list_dlq_messages(None, 10).await.unwrap();
        (d.len() == 3).then_some(d)
    })
    .await;
    let reason = |id: Uuid| {
        dead.iter()
            .find(|d| d.id == id)
            .map(|d| d.error.clone())
            .unwrap_or_default()
    };
    assert!(reason(malformed_id).contains("malformed"), "{dead:?}");
    assert!(
        reason(unknown_id).contains("unknown message type"),
        "{dead:?}"
    );
    let vote = dead
        .iter()
        .find(|d| d.queue_name == queues::CONSENSUS_VOTES)
        .unwrap();
    assert!(vote.error.contains("unknown proposal"), "{}", vote.error);
    let recorded: i64 = h
        .scalar("SELECT count(*) FROM centralcloud.proposals")
        .await;
    assert_eq!(recorded, 1);
    h.stop().await;
}
