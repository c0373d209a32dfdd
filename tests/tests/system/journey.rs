//! The proposal life cycle across processes: centralcloud and three
//! singularity instances, each connected as its own role, talking only
//! through the queues of one database.

use pgflow_core::testing::wait_for;
use system_tests::Service;
use uuid::Uuid;

use crate::cluster::{read, System, INSTANCES, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proposal_life_cycle_across_the_services() {
    let sys = System::start().await;

    // 1. Approved: applied on the proposing instance only, with one trace id at every hop.
    let (ok_id, ok_trace) = sys
        .propose("singularity_2", "hello.txt", "fixed = true\n", 1.0)
        .await;
    sys.wait_status(ok_id, "applied").await;
    assert_eq!(
        read(&sys.workspace("singularity_2").join("hello.txt")).as_deref(),
        Some("fixed = true\n")
    );
    for other in ["singularity_1", "singularity_3"] {
        assert!(
            read(&sys.workspace(other).join("hello.txt")).is_none(),
            "{other}"
        );
    }
    let (decision, confidence): (String, f64) = sqlx::query_as(
        "SELECT status, confidence FROM centralcloud.proposals WHERE proposal_id = $1",
    )
    .bind(ok_id)
    .fetch_one(sys.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!((decision.as_str(), confidence), ("approved", 1.0));
    // Every hop of the journey carries the proposal's trace id (the guardian's
    // message is archived once centralcloud has handled it).
    wait_for("metrics archived", WAIT, || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgflow.archive WHERE trace_id = $1 AND queue_name = 'metrics_to_guardian_queue'",
        )
        .bind(ok_trace)
        .fetch_one(sys.t.pgflow.pool())
        .await
        .unwrap();
        (n == 1).then_some(())
    })
    .await;
    let hops: Vec<(String, i64)> = sqlx::query_as(
        "SELECT queue_name, count(*) FROM pgflow_messages WHERE trace_id = $1
          GROUP BY queue_name ORDER BY queue_name",
    )
    .bind(ok_trace)
    .fetch_all(sys.t.pgflow.pool())
    .await
    .unwrap();
    let hops: std::collections::BTreeMap<_, _> = hops.into_iter().collect();
    for (queue, n) in [
        ("proposals_for_consensus_queue", 1),
        ("consensus_vote_requests_queue", 3),
        ("consensus_votes_queue", 3),
        ("consensus_results_queue", 1),
        ("proposals_for_execution_queue", 1),
        ("metrics_to_guardian_queue", 1),
    ] {
        assert_eq!(hops.get(queue), Some(&n), "{queue}: {hops:?}");
    }
    let cc_trace: Uuid =
        sqlx::query_scalar("SELECT trace_id FROM centralcloud.proposals WHERE proposal_id = $1")
            .bind(ok_id)
            .fetch_one(sys.t.pgflow.pool())
            .await
            .unwrap();
    assert_eq!(cc_trace, ok_trace);

    // 2. Rejected: every instance votes against a risky change; the votes are recorded.
    let (bad_id, _) = sys
        .propose("singularity_1", "risky.txt", "rm -rf\n", 9.0)
        .await;
    sys.wait_status(bad_id, "consensus_failed").await;
    let votes: serde_json::Value =
        sqlx::query_scalar("SELECT votes FROM singularity.proposals WHERE id = $1")
            .bind(bad_id)
            .fetch_one(sys.t.pgflow.pool())
            .await
            .unwrap();
    for id in INSTANCES {
        assert_eq!(votes[id], "reject", "{votes}");
    }
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM centralcloud.votes WHERE proposal_id = $1 AND vote = 'reject'",
    )
    .bind(bad_id)
    .fetch_one(sys.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(recorded, 3);
    assert!(read(&sys.workspace("singularity_1").join("risky.txt")).is_none());

    // 3. A metrics breach is rolled back: the change makes the verify command fail.
    let (breach_id, _) = sys
        .propose("singularity_3", "broken.txt", "oops\n", 1.0)
        .await;
    sys.wait_status(breach_id, "rolled_back").await;
    assert!(read(&sys.workspace("singularity_3").join("broken.txt")).is_none());
    let breach: String =
        sqlx::query_scalar("SELECT breach FROM centralcloud.metrics WHERE proposal_id = $1")
            .bind(breach_id)
            .fetch_one(sys.t.pgflow.pool())
            .await
            .unwrap();
    assert_eq!(breach, "error_rate_breach");

    // 4. Patterns: the same change applied by two instances is merged.
    let (p1, _) = sys
        .propose("singularity_1", "shared.txt", "pattern\n", 1.0)
        .await;
    let (p3, _) = sys
        .propose("singularity_3", "shared.txt", "pattern\n", 1.0)
        .await;
    sys.wait_status(p1, "applied").await;
    sys.wait_status(p3, "applied").await;
    wait_for("a pattern seen by two instances", WAIT, || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM centralcloud.patterns
              WHERE instances @> ARRAY['singularity_1', 'singularity_3'] AND occurrences >= 2",
        )
        .fetch_one(sys.t.pgflow.pool())
        .await
        .unwrap();
        (n == 1).then_some(())
    })
    .await;

    // 5. The learning loop's safety-profile update reaches every instance once.
    let cc_url = sys.t.url_as("centralcloud");
    let mut learn = Service::spawn(
        "centralcloud",
        &["learn"],
        &[
            ("PGFLOW_DATABASE_URL", cc_url.as_str()),
            ("CENTRALCLOUD_LEARNING_MIN_SAMPLES", "1"),
        ],
    );
    let status = tokio::time::timeout(WAIT, learn.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{:?}", learn.seen);
    let sent = sys
        .scalar_i64(
            "SELECT count(*) FROM pgflow_messages WHERE queue_name = 'guardian_safety_profiles_queue'",
        )
        .await;
    assert!(sent >= 3 && sent % 3 == 0, "{sent} copies");
    let per_instance = sent / 3;
    wait_for("every instance stored the update", WAIT, || async {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT instance_id, count(*) FROM singularity.safety_profiles GROUP BY instance_id ORDER BY 1",
        )
        .fetch_all(sys.t.pgflow.pool())
        .await
        .unwrap();
        (rows.len() == 3 && rows.iter().all(|(_, n)| *n == per_instance)).then_some(())
    })
    .await;
    let copies: Vec<(String, i64)> = sqlx::query_as(
        "SELECT target, count(*) FROM pgflow_messages
          WHERE queue_name = 'guardian_safety_profiles_queue' GROUP BY target ORDER BY 1",
    )
    .fetch_all(sys.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(
        copies,
        INSTANCES
            .iter()
            .map(|i| (i.to_string(), per_instance))
            .collect::<Vec<_>>()
    );
    let completed = sys
        .scalar_i64(
            "SELECT count(*) FROM pgflow_messages WHERE queue_name = 'learning_loop_completed_queue'",
        )
        .await;
    assert_eq!(completed, 1);
    // Nothing went to a dead-letter queue along the way.
    assert_eq!(sys.scalar_i64("SELECT count(*) FROM pgflow.dlq").await, 0);
}
