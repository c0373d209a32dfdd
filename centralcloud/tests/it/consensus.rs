//! The consensus engine end to end: vote requests to every live instance,
//! votes, decisions (all voted, rejected, at the deadline, no voters), the
//! result to the proposer only, and exactly one decision per proposal with
//! several engines racing.

use std::collections::BTreeSet;

use pgflow_core::protocol::{self, queues, ConsensusResult, ConsensusStatus, Vote, VoteRequest};
use pgflow_core::testing::wait_for;
use uuid::Uuid;

use crate::support::{nothing_for, proposal, settings, take, Harness, INSTANCES, TIMEOUT};

/// Each of the three instances takes its vote request for the proposal.
async fn requests_reach_everyone(h: &Harness, proposal_id: Uuid, trace: Uuid) {
    for instance in INSTANCES {
        let got = take(&h.sing, queues::CONSENSUS_VOTE_REQUESTS, Some(instance), 1).await;
        let req: VoteRequest = protocol::decode(&got[0]).unwrap();
        assert_eq!(req.proposal_id, proposal_id);
        assert_eq!(req.instance_id, "singularity_1");
        assert_eq!(
            got[0].trace_id, trace,
            "the vote request carries the proposal's trace"
        );
        assert_eq!(got[0].source.as_deref(), Some("centralcloud"));
        assert!(req.deadline > chrono::Utc::now());
    }
}

async fn result_for(h: &Harness, instance: &str) -> (ConsensusResult, pgflow_core::Delivery) {
    let got = take(&h.sing, queues::CONSENSUS_RESULTS, Some(instance), 1).await;
    let d = got.into_iter().next().unwrap();
    (protocol::decode(&d).unwrap(), d)
}

#[tokio::test]
async fn three_approvals_answer_the_proposer_only() {
    let h = Harness::start(settings()).await;
    h.subscribe(queues::CONSENSUS_VOTE_REQUESTS, &INSTANCES)
        .await;
    let p = proposal("singularity_1", "BugFixerAgent");
    let trace = h.propose(&p).await;
    requests_reach_everyone(&h, p.proposal_id, trace).await;
    for voter in INSTANCES {
        h.vote(p.proposal_id, voter, Vote::Approve, trace).await;
    }

    let (r, d) = result_for(&h, "singularity_1").await;
    assert_eq!(r.proposal_id, p.proposal_id);
    assert_eq!(r.status, ConsensusStatus::Approved);
    assert_eq!(r.confidence, 1.0);
    assert_eq!(r.votes.len(), 3);
    assert!(r.votes.values().all(|v| *v == Vote::Approve));
    assert!(
        r.decision_rationale.contains("3 of 3 votes approve")
            && r.decision_rationale.contains("all 3 expected voters voted"),
        "{}",
        r.decision_rationale
    );
    assert_eq!(d.trace_id, trace, "one trace per proposal journey");
    assert_eq!(d.target, "singularity_1");

    // Nobody else got a result, and exactly one was ever sent.
    nothing_for(&h.sing, queues::CONSENSUS_RESULTS, "singularity_2").await;
    nothing_for(&h.sing, queues::CONSENSUS_RESULTS, "singularity_3").await;
    let sent = h.sent(queues::CONSENSUS_RESULTS).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "singularity_1");

    let (status, voters, by): (String, Vec<String>, String) = sqlx::query_as(
        "SELECT status, expected_voters, decided_by FROM centralcloud.proposals WHERE proposal_id = $1",
    )
    .bind(p.proposal_id)
    .fetch_one(h.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!((status.as_str(), by.as_str()), ("approved", "all_voted"));
    assert_eq!(voters, INSTANCES.map(String::from).to_vec());

    // The engine's /status board shows the decision and the consumers' work.
    let board = wait_for("the board's counts", TIMEOUT, || async {
        let v = h.boards[0].to_json();
        (v["proposals"]["approved"] == 1).then_some(v)
    })
    .await;
    let proposals = board["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["queue"] == queues::PROPOSALS_FOR_CONSENSUS)
        .unwrap();
    assert_eq!(proposals["succeeded"], 1, "{board}");
    h.stop().await;
}

#[tokio::test]
async fn a_rejected_proposal_keeps_its_votes() {
    let h = Harness::start(settings()).await;
    h.subscribe(queues::CONSENSUS_VOTE_REQUESTS, &INSTANCES)
        .await;
    let p = proposal("singularity_1", "BugFixerAgent");
    let trace = h.propose(&p).await;
    requests_reach_everyone(&h, p.proposal_id, trace).await;
    h.vote(p.proposal_id, "singularity_1", Vote::Approve, trace)
        .await;
    h.vote(p.proposal_id, "singularity_2", Vote::Reject, trace)
        .await;
    h.vote(p.proposal_id, "singularity_3", Vote::Reject, trace)
        .await;

    let (r, _) = result_for(&h, "singularity_1").await;
    assert_eq!(r.status, ConsensusStatus::Rejected);
    assert!((r.confidence - 1.0 / 3.0).abs() < 1e-9, "{}", r.confidence);
    assert!(
        r.decision_rationale.contains("1 of 3 votes approve")
            && r.decision_rationale.contains("against: singularity_2"),
        "{}",
        r.decision_rationale
    );
    let votes: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT voter, vote, counted FROM centralcloud.votes WHERE proposal_id = $1 ORDER BY voter",
    )
    .bind(p.proposal_id)
    .fetch_all(h.t.pgflow.pool())
    .await
    .unwrap();
    let expect = |v: &str, vote: &str| (v.to_string(), vote.to_string(), true);
    assert_eq!(
        votes,
        vec![
            expect("singularity_1", "approve"),
            expect("singularity_2", "reject"),
            expect("singularity_3", "reject"),
        ]
    );
    let rationale: String = h
        .scalar("SELECT rationale FROM centralcloud.proposals")
        .await;
    assert_eq!(rationale, r.decision_rationale);
    h.stop().await;
}

#[tokio::test]
async fn the_deadline_decides_on_the_votes_cast() {
    let h = Harness::start(settings()).await;
    h.subscribe(queues::CONSENSUS_VOTE_REQUESTS, &INSTANCES)
        .await;
    let partial = proposal("singularity_2", "BugFixerAgent");
    let silent = proposal("singularity_3", "BugFixerAgent");
    let t1 = h.propose(&partial).await;
    let t2 = h.propose(&silent).await;
    for instance in INSTANCES {
        take(&h.sing, queues::CONSENSUS_VOTE_REQUESTS, Some(instance), 2).await;
    }
    h.vote(partial.proposal_id, "singularity_1", Vote::Approve, t1)
        .await;
    h.vote(partial.proposal_id, "singularity_2", Vote::Approve, t1)
        .await;

    // Both votes counted, one voter missing: still collecting.
    wait_for("the two votes", TIMEOUT, || async {
        let n: i64 = h
            .scalar("SELECT count(*) FROM centralcloud.votes WHERE counted")
            .await;
        (n == 2).then_some(())
    })
    .await;
    let collecting: i64 = h
        .scalar("SELECT count(*) FROM centralcloud.proposals WHERE status = 'collecting'")
        .await;
    assert_eq!(collecting, 2);
    nothing_for(&h.sing, queues::CONSENSUS_RESULTS, "singularity_2").await;

    // The deadline passes (back-dated rather than waited for).
    sqlx::query("UPDATE centralcloud.proposals SET deadline = now() - interval '1 second'")
        .execute(h.t.pgflow.pool())
        .await
        .unwrap();

    let got = take(&h.sing, queues::CONSENSUS_RESULTS, Some("singularity_2"), 1).await;
    let r: ConsensusResult = protocol::decode(&got[0]).unwrap();
    assert_eq!(got[0].trace_id, t1);
    assert_eq!((r.status, r.confidence), (ConsensusStatus::Approved, 1.0));
    assert!(
        r.decision_rationale.contains("at the deadline")
            && r.decision_rationale
                .contains("did not vote (singularity_3)"),
        "{}",
        r.decision_rationale
    );

    let got = take(&h.sing, queues::CONSENSUS_RESULTS, Some("singularity_3"), 1).await;
    let r: ConsensusResult = protocol::decode(&got[0]).unwrap();
    assert_eq!(got[0].trace_id, t2);
    assert_eq!((r.status, r.confidence), (ConsensusStatus::Rejected, 0.0));
    assert!(r.votes.is_empty());
    assert!(
        r.decision_rationale
            .contains("no votes were cast before the deadline"),
        "{}",
        r.decision_rationale
    );

    // A vote arriving now is recorded but changes nothing.
    h.vote(silent.proposal_id, "singularity_1", Vote::Approve, t2)
        .await;
    wait_for("the late vote", TIMEOUT, || async {
        let n: i64 = h
            .scalar("SELECT count(*) FROM centralcloud.votes WHERE NOT counted")
            .await;
        (n == 1).then_some(())
    })
    .await;
    assert_eq!(h.sent(queues::CONSENSUS_RESULTS).await.len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn votes_sent_in_time_count_when_centralcloud_comes_back_late() {
    let mut h = Harness::start(settings()).await;
    h.subscribe(queues::CONSENSUS_VOTE_REQUESTS, &INSTANCES)
        .await;
    let p = proposal("singularity_1", "BugFixerAgent");
    let trace = h.propose(&p).await;
    requests_reach_everyone(&h, p.proposal_id, trace).await;

    // CentralCloud goes down; the votes wait in the queue; the deadline
    // passes (back-dated to just after the votes were sent).
    h.pause().await;
    h.vote(p.proposal_id, "singularity_1", Vote::Approve, trace)
        .await;
    h.vote(p.proposal_id, "singularity_2", Vote::Approve, trace)
        .await;
    h.vote(p.proposal_id, "singularity_3", Vote::Reject, trace)
        .await;
    sqlx::query("UPDATE centralcloud.proposals SET deadline = now()")
        .execute(h.t.pgflow.pool())
        .await
        .unwrap();

    h.spawn_engine().await;
    let (r, _) = result_for(&h, "singularity_1").await;
    assert_eq!(r.votes.len(), 3, "every vote sent in time counts: {r:?}");
    assert_eq!(r.status, ConsensusStatus::Approved);
    assert!(
        r.decision_rationale.contains("2 of 3 votes approve"),
        "{}",
        r.decision_rationale
    );
    assert_eq!(h.sent(queues::CONSENSUS_RESULTS).await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn without_live_instances_a_proposal_is_rejected_at_once() {
    let h = Harness::start(settings()).await;
    let p = proposal("singularity_1", "BugFixerAgent");
    h.propose(&p).await;
    let got = take(&h.sing, queues::CONSENSUS_RESULTS, Some("singularity_1"), 1).await;
    let r: ConsensusResult = protocol::decode(&got[0]).unwrap();
    assert_eq!(r.status, ConsensusStatus::Rejected);
    assert!(
        r.decision_rationale.contains("no live instance"),
        "{}",
        r.decision_rationale
    );
    assert!(h.sent(queues::CONSENSUS_VOTE_REQUESTS).await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn racing_engines_decide_each_proposal_exactly_once() {
    let h = Harness::start_n(settings(), 2).await;
    h.subscribe(queues::CONSENSUS_VOTE_REQUESTS, &INSTANCES)
        .await;
    let mut proposals = Vec::new();
    for i in 0..12 {
        let p = proposal(INSTANCES[i % 3], "BugFixerAgent");
        let trace = h.propose(&p).await;
        proposals.push((p, trace));
    }
    wait_for("every vote request", TIMEOUT, || async {
        let n = h.sent(queues::CONSENSUS_VOTE_REQUESTS).await.len();
        (n == 36).then_some(())
    })
    .await;
    // Half the proposals get every vote; the other half two votes and a
    // deadline that passes while their votes are in flight.
    for (i, (p, trace)) in proposals.iter().enumerate() {
        let voters = if i % 2 == 0 {
            &INSTANCES[..]
        } else {
            &INSTANCES[..2]
        };
        for v in voters {
            h.vote(p.proposal_id, v, Vote::Approve, *trace).await;
        }
    }
    let odd: Vec<Uuid> = proposals
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, (p, _))| p.proposal_id)
        .collect();
    sqlx::query("UPDATE centralcloud.proposals SET deadline = now() WHERE proposal_id = ANY($1)")
        .bind(&odd)
        .execute(h.t.pgflow.pool())
        .await
        .unwrap();

    wait_for("every decision", TIMEOUT, || async {
        let n: i64 = h
            .scalar("SELECT count(*) FROM centralcloud.proposals WHERE status <> 'collecting'")
            .await;
        (n == 12).then_some(())
    })
    .await;
    // A decision and its result commit together: counting now is exact.
    let sent = h.sent(queues::CONSENSUS_RESULTS).await;
    assert_eq!(sent.len(), 12, "one result per proposal: {sent:?}");
    let traces: BTreeSet<Uuid> = sent.iter().map(|s| s.3).collect();
    let expected: BTreeSet<Uuid> = proposals.iter().map(|(_, t)| *t).collect();
    assert_eq!(traces, expected);
    for instance in INSTANCES {
        let got = take(&h.sing, queues::CONSENSUS_RESULTS, Some(instance), 4).await;
        for d in got {
            let r: ConsensusResult = protocol::decode(&d).unwrap();
            assert_eq!(r.instance_id, instance);
            assert_eq!(r.status, ConsensusStatus::Approved);
        }
    }
    h.stop().await;
}

/// A proposer that never consumed its results cannot receive the decision:
/// the proposal is decided all the same, and it blocks no other decision.
#[tokio::test]
async fn a_proposer_that_cannot_receive_its_result_blocks_no_decision() {
    let h = Harness::start(settings()).await;
    h.subscribe(queues::CONSENSUS_VOTE_REQUESTS, &INSTANCES)
        .await;
    // singularity_9 never ran: an operator proposes in its name.
    let ghost = proposal("singularity_9", "BugFixerAgent");
    let msg = protocol::encode(&ghost).unwrap().source("singularity_9");
    h.t.pgflow
        .send(
            &pgflow_core::QueueName::new(queues::PROPOSALS_FOR_CONSENSUS).unwrap(),
            msg,
        )
        .await
        .unwrap();
    let real = proposal("singularity_1", "BugFixerAgent");
    h.propose(&real).await;
    wait_for("both recorded", TIMEOUT, || async {
        let n: i64 = h
            .scalar("SELECT count(*) FROM centralcloud.proposals")
            .await;
        (n == 2).then_some(())
    })
    .await;
    sqlx::query("UPDATE centralcloud.proposals SET deadline = now() - interval '1 second'")
        .execute(h.t.pgflow.pool())
        .await
        .unwrap();
    wait_for("both decided", TIMEOUT, || async {
        let n: i64 = h
            .scalar("SELECT count(*) FROM centralcloud.proposals WHERE status <> 'collecting'")
            .await;
        (n == 2).then_some(())
    })
    .await;
    take(&h.sing, queues::CONSENSUS_RESULTS, Some("singularity_1"), 1).await;
    h.stop().await;
}
