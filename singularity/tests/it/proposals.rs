//! Submitting proposals: stored and published in one transaction, with a
//! trace id carried by the message; consensus results decide them.

use pgflow_core::protocol::{queues, ConsensusStatus};
use singularity::{submit, Error, NewProposal};

use crate::support::{waiting, Env};

#[tokio::test]
async fn a_proposal_is_stored_and_published_with_its_trace_id() {
    let env = Env::start().await;
    let s = env.propose("src/lib.rs", "pub fn fixed() {}", 1.0).await;
    assert_eq!(s.status, "submitted");
    let p = env.proposal(s.proposal_id).await;
    assert_eq!(
        (p.status.as_str(), p.trace_id, p.file.as_str()),
        ("submitted", s.trace_id, "src/lib.rs")
    );

    let (d, msg) = env.cc_take_proposal().await;
    assert_eq!(d.trace_id, s.trace_id);
    assert_eq!(d.source.as_deref(), Some("singularity_1"));
    assert_eq!(msg.proposal_id, s.proposal_id);
    assert_eq!(msg.instance_id, "singularity_1");
    assert_eq!(msg.agent_type, "BugFixerAgent");
    assert_eq!(msg.code_change.change, "pub fn fixed() {}");
    assert_eq!((msg.impact_score, msg.risk_score), (8.0, 1.0));
    // No history yet: the default profile's success rate.
    assert_eq!(msg.safety_profile.success_rate, 0.95);
    env.stop().await;
}

#[tokio::test]
async fn a_proposal_that_cannot_be_published_is_not_stored() {
    let env = Env::start().await;
    // Take away singularity's right to produce to the consensus queue: the
    // send fails after the insert, inside the same transaction.
    sqlx::query(
        "UPDATE pgflow.queue_access SET produce = false
          WHERE role_name = 'singularity' AND queue_name = $1",
    )
    .bind(queues::PROPOSALS_FOR_CONSENSUS)
    .execute(env.t.pgflow.pool())
    .await
    .unwrap();
    let err = submit(
        &env.sing,
        &env.id,
        NewProposal {
            agent_type: "BugFixerAgent".into(),
            file: "a.txt".into(),
            change: "x".into(),
            impact_score: 1.0,
            risk_score: 1.0,
            cost_factor: 1.0,
            idempotency_key: None,
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM singularity.proposals")
        .fetch_one(env.t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);
    assert_eq!(waiting(&env.t, queues::PROPOSALS_FOR_CONSENSUS).await, 0);
    env.stop().await;
}

#[tokio::test]
async fn invalid_proposals_are_refused_with_the_reason() {
    let env = Env::start().await;
    for (file, risk, why) in [
        ("../x", 1.0, "'..'"),
        ("/etc/passwd", 1.0, "absolute"),
        ("a.txt", -1.0, "risk_score"),
        ("a.txt", f64::NAN, "risk_score"),
    ] {
        let err = submit(
            &env.sing,
            &env.id,
            NewProposal {
                agent_type: "BugFixerAgent".into(),
                file: file.into(),
                change: "x".into(),
                impact_score: 1.0,
                risk_score: risk,
                cost_factor: 1.0,
                idempotency_key: None,
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::InvalidProposal(_)), "{err}");
        assert!(err.to_string().contains(why), "{file}: {err}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM singularity.proposals")
        .fetch_one(env.t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);
    assert_eq!(waiting(&env.t, queues::PROPOSALS_FOR_CONSENSUS).await, 0);
    env.stop().await;
}

#[tokio::test]
async fn a_rejected_proposal_fails_consensus_with_its_votes() {
    let env = Env::start().await;
    std::fs::create_dir_all(env.ws()).unwrap();
    std::fs::write(env.ws().join("a.txt"), "old").unwrap();
    let s = env.propose("a.txt", "new", 1.0).await;
    env.cc_decide(&s, ConsensusStatus::Rejected).await;
    env.wait_status(s.proposal_id, "consensus_failed").await;
    let p = env.proposal(s.proposal_id).await;
    let votes = p.votes.unwrap();
    assert_eq!(votes["singularity_1"], "approve");
    assert_eq!(votes["singularity_2"], "reject");
    assert_eq!(p.confidence, Some(0.5));
    assert_eq!(p.rationale.as_deref(), Some("test quorum"));
    assert_eq!(waiting(&env.t, queues::PROPOSALS_FOR_EXECUTION).await, 0);
    assert_eq!(
        std::fs::read_to_string(env.ws().join("a.txt")).unwrap(),
        "old"
    );

    // The same result again changes nothing and is counted.
    env.cc_decide(&s, ConsensusStatus::Approved).await;
    crate::execution::wait_duplicates(&env, s.proposal_id, 1).await;
    assert_eq!(env.status_of(s.proposal_id).await, "consensus_failed");
    env.stop().await;
}
