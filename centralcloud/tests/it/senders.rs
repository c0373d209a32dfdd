//! Who may vote and speak for an instance: votes from instances the
//! proposal did not ask are kept, flagged and never counted; a message
//! that speaks for an instance but was sent by another role is refused.

use pgflow_core::protocol::{self, queues, ConsensusResult, ConsensusStatus, ConsensusVote, Vote};
use pgflow_core::testing::wait_for;
use uuid::Uuid;

use crate::support::{proposal, q, settings, take, Harness, INSTANCES, TIMEOUT};

const GHOSTS: [&str; 5] = ["ghost_1", "ghost_2", "ghost_3", "ghost_4", "ghost_5"];

/// The reproduction of the forged-votes defect: one voter silent, two
/// rejections, five approvals from instances nobody asked. Before, the
/// deadline approved it 5/7 and the change was applied.
#[tokio::test]
async fn votes_from_instances_not_asked_are_flagged_and_not_counted() {
    let h = Harness::start(settings()).await;
    h.subscribe(queues::CONSENSUS_VOTE_REQUESTS, &INSTANCES)
        .await;
    let mut p = proposal("singularity_1", "BugFixerAgent");
    p.risk_score = 9.0;
    let trace = h.propose(&p).await;
    for instance in INSTANCES {
        take(&h.sing, queues::CONSENSUS_VOTE_REQUESTS, Some(instance), 1).await;
    }
    for voter in ["singularity_2", "singularity_3"] {
        h.vote(p.proposal_id, voter, Vote::Reject, trace).await;
    }
    for ghost in GHOSTS {
        h.vote(p.proposal_id, ghost, Vote::Approve, trace).await;
    }
    wait_for("all seven votes recorded", TIMEOUT, || async {
        let n: i64 = h.scalar("SELECT count(*) FROM centralcloud.votes").await;
        (n == 7).then_some(())
    })
    .await;
    let flagged: Vec<(String, bool, Option<String>)> = sqlx::query_as(
        "SELECT voter, counted, flag FROM centralcloud.votes
          WHERE flag IS NOT NULL ORDER BY voter",
    )
    .fetch_all(h.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(
        flagged,
        GHOSTS
            .iter()
            .map(|g| (
                g.to_string(),
                false,
                Some("not an expected voter".to_string())
            ))
            .collect::<Vec<_>>()
    );

    // The deadline passes (back-dated): decided on the two real votes.
    sqlx::query("UPDATE centralcloud.proposals SET deadline = now() - interval '1 second'")
        .execute(h.t.pgflow.pool())
        .await
        .unwrap();
    let got = take(&h.sing, queues::CONSENSUS_RESULTS, Some("singularity_1"), 1).await;
    let r: ConsensusResult = protocol::decode(&got[0]).unwrap();
    assert_eq!((r.status, r.confidence), (ConsensusStatus::Rejected, 0.0));
    assert_eq!(r.votes.len(), 2, "{:?}", r.votes);
    assert!(
        r.decision_rationale
            .contains("not counted: 5 vote(s) from instances not asked to vote (ghost_1"),
        "{}",
        r.decision_rationale
    );

    // The status board counts them.
    let overview = centralcloud::status::overview(h.t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(overview.votes.flagged, 5);
    h.stop().await;
}

/// A vote naming one instance but sent by another instance's role is
/// refused: the database records the real sender, the engine compares.
#[tokio::test]
async fn a_vote_sent_in_another_instances_name_is_dead_lettered() {
    let h = Harness::start(settings()).await;
    h.subscribe(queues::CONSENSUS_VOTE_REQUESTS, &INSTANCES)
        .await;
    let p = proposal("singularity_1", "BugFixerAgent");
    let trace = h.propose(&p).await;
    let forged = ConsensusVote {
        proposal_id: p.proposal_id,
        instance_id: "singularity_3".into(),
        vote: Vote::Approve,
        reason: "forged".into(),
    };
    // singularity_2 cannot even claim singularity_3's name as the source...
    let as_2 = h.instance("singularity_2").await;
    let named = protocol::encode(&forged)
        .unwrap()
        .trace_id(trace)
        .source("singularity_3");
    let err = as_2
        .send(&q(queues::CONSENSUS_VOTES), named)
        .await
        .expect_err("a restricted role cannot send under another source");
    assert!(
        err.to_string().contains("row-level security"),
        "unexpected error: {err}"
    );
    // ...and without one the database records it as the sender.
    let id = as_2
        .send(
            &q(queues::CONSENSUS_VOTES),
            protocol::encode(&forged).unwrap().trace_id(trace),
        )
        .await
        .unwrap();
    let source: Option<String> =
        sqlx::query_scalar("SELECT source FROM pgflow.live_messages WHERE id = $1")
            .bind(id)
            .fetch_one(h.t.pgflow.pool())
            .await
            .unwrap();
    assert_eq!(source.as_deref(), Some("singularity_2"));

    let error: String = wait_for("the forged vote in the DLQ", TIMEOUT, || async {
        sqlx::query_scalar("SELECT error FROM pgflow.dlq WHERE id = $1")
            .bind(id)
            .fetch_optional(h.t.pgflow.pool())
            .await
            .unwrap()
    })
    .await;
    assert!(
        error.contains("sender mismatch")
            && error.contains("\"singularity_3\"")
            && error.contains("\"singularity_2\""),
        "{error}"
    );
    let votes: i64 = h.scalar("SELECT count(*) FROM centralcloud.votes").await;
    assert_eq!(votes, 0);
    h.stop().await;
}

/// The shared `singularity` role speaks only as itself: it can no longer
/// send a message in an instance's name.
#[tokio::test]
async fn the_shared_role_cannot_speak_for_an_instance() {
    let h = Harness::start(settings()).await;
    let p = proposal("singularity_1", "BugFixerAgent");
    let msg = protocol::encode(&p)
        .unwrap()
        .trace_id(Uuid::now_v7())
        .source("singularity_1");
    let err = h
        .sing
        .send(&q(queues::PROPOSALS_FOR_CONSENSUS), msg)
        .await
        .expect_err("the shared role cannot send as singularity_1");
    assert!(err.to_string().contains("row-level security"), "{err}");
    // Nor change the source of a queued message.
    let ok = h.propose(&p).await;
    let err =
        sqlx::query("UPDATE pgflow.messages SET source = 'singularity_2' WHERE trace_id = $1")
            .bind(ok)
            .execute(h.sing.pool())
            .await
            .expect_err("no UPDATE privilege on source");
    assert!(err.to_string().contains("permission denied"), "{err}");
    // Nor what a message says (a consumer could rewrite a result addressed
    // to another instance before).
    let err = sqlx::query("UPDATE pgflow.messages SET payload = '{}' WHERE trace_id = $1")
        .bind(ok)
        .execute(h.cc.pool())
        .await
        .expect_err("no UPDATE privilege on payload");
    assert!(err.to_string().contains("permission denied"), "{err}");
    h.stop().await;
}
