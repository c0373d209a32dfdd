//! Targeted delivery never accepts a message no one will claim: a send
//! without a target, or for an instance that never consumed the queue, is
//! refused; an instance that is only down still gets its messages later;
//! messages for an instance gone longer than the queue allows move to the
//! DLQ with the reason.

use std::time::Duration;

use pgflow_core::consumer::{handler_fn, ConsumerConfig, Runtime};
use pgflow_core::testing::{wait_for, TestDb};
use pgflow_core::{ClaimOptions, Delivery, Error, QueueName};
use tokio_util::sync::CancellationToken;

use crate::support::msg;

const WAIT: Duration = Duration::from_secs(20);

fn results() -> QueueName {
    QueueName::new("consensus_results_queue").unwrap()
}

async fn live(t: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pgflow.live_messages")
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_send_without_a_target_or_to_an_unknown_instance_is_refused() {
    let t = TestDb::new().await.unwrap();
    let pg = &t.pgflow;
    let err = pg.send(&results(), msg(1)).await.unwrap_err();
    assert!(
        matches!(&err, Error::NoTarget(q) if q == "consensus_results_queue"),
        "{err}"
    );
    assert!(
        err.to_string().contains("give the message a target"),
        "{err}"
    );
    let err = pg
        .send(&results(), msg(2).target("singularity_9"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTarget { target, .. } if target == "singularity_9"),
        "{err}"
    );
    // A batch (also one for batch storage) is refused whole.
    let batch: Vec<_> = (0..5).map(|n| msg(n).target("singularity_9")).collect();
    let err = pg.send_batch(&results(), &batch).await.unwrap_err();
    assert!(matches!(err, Error::UnknownTarget { .. }), "{err}");
    assert_eq!(live(&t).await, 0, "nothing refused was stored");

    // Concurrent sends merged into one statement: only the bad one fails.
    t.register_targets(&["singularity_1"]).await.unwrap();
    let q = results();
    let (good, bad) = tokio::join!(
        pg.send(&q, msg(10).target("singularity_1")),
        pg.send(&q, msg(11).target("singularity_9")),
    );
    good.unwrap();
    assert!(matches!(bad, Err(Error::UnknownTarget { .. })), "{bad:?}");
    assert_eq!(live(&t).await, 1);
}

#[tokio::test]
async fn an_instance_registers_by_consuming_and_gets_what_was_sent_while_it_was_down() {
    let t = TestDb::new().await.unwrap();
    let q = results();
    // The instance runs once: its consumer registers it on the queue.
    let stop = CancellationToken::new();
    let mut rt = Runtime::new(t.pgflow.clone());
    rt.consumer(
        ConsumerConfig::new(q.clone()).instance("singularity_2"),
        handler_fn(|_d: Delivery| async { Ok(()) }),
    );
    let run = tokio::spawn(rt.run(stop.clone()));
    wait_for("singularity_2 registered", WAIT, || async {
        let subs = t.pgflow.list_subscribers(Some(&q)).await.unwrap();
        subs.iter()
            .any(|s| s.subscriber == "singularity_2")
            .then_some(())
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();

    // Down now (restarting): sends to it are accepted and wait for it.
    let id = t
        .pgflow
        .send(&q, msg(1).target("singularity_2"))
        .await
        .unwrap();
    let got = t
        .pgflow
        .claim_with(&q, 10, &ClaimOptions::for_target("singularity_2"))
        .await
        .unwrap();
    assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);
}

#[tokio::test]
async fn messages_for_an_instance_gone_too_long_are_dead_lettered_with_the_reason() {
    let t = TestDb::new().await.unwrap();
    let q = results();
    t.register_targets(&["singularity_1", "singularity_3"])
        .await
        .unwrap();
    let gone = t
        .pgflow
        .send(&q, msg(1).target("singularity_3"))
        .await
        .unwrap();
    let kept = t
        .pgflow
        .send(&q, msg(2).target("singularity_1"))
        .await
        .unwrap();
    // Nothing is gone yet.
    assert_eq!(t.pgflow.expire_gone_targets(&q).await.unwrap(), 0);
    // singularity_3 was last seen 25 hours ago (default limit: 24 hours).
    sqlx::query(
        "UPDATE pgflow.subscribers SET last_seen = now() - interval '25 hours'
          WHERE subscriber = 'singularity_3'",
    )
    .execute(t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(t.pgflow.expire_gone_targets(&q).await.unwrap(), 1);
    let (id, error): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, error FROM pgflow.dlq WHERE queue_name = $1")
            .bind(q.as_str())
            .fetch_one(t.pgflow.pool())
            .await
            .unwrap();
    assert_eq!(id, gone);
    assert!(
        error.contains("target instance singularity_3 gone"),
        "{error}"
    );
    let left: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM pgflow.live_messages")
        .fetch_all(t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(left, vec![kept]);
    // The limit is the queue's.
    sqlx::query(
        "UPDATE pgflow.queues SET target_gone_after_ms = 1000
          WHERE queue_name = 'consensus_results_queue'",
    )
    .execute(t.pgflow.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE pgflow.subscribers SET last_seen = now() - interval '2 seconds'")
        .execute(t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(t.pgflow.expire_gone_targets(&q).await.unwrap(), 1);
}

/// A restricted role dead-letters only what is untargeted or addressed to
/// itself: an instance cannot fabricate a dead letter for another's message.
#[tokio::test]
async fn an_instance_cannot_dead_letter_another_instances_message() {
    let t = TestDb::new().await.unwrap();
    let as_2 = t
        .connect_instance("singularity_2", "singularity")
        .await
        .unwrap();
    let insert = |target: &'static str| {
        sqlx::query(
            "INSERT INTO pgflow.dlq (id, queue_name, target, priority, msg_type, schema_version,
                                     trace_id, source, payload, attempts, error, history, enqueued_at)
             VALUES (gen_random_uuid(), 'proposals_for_execution_queue', $1, 0, 'x', 1,
                     gen_random_uuid(), 'singularity_2', '{}', 1, 'forged', '[]', now())",
        )
        .bind(target)
        .execute(as_2.pool())
    };
    let err = insert("singularity_1").await.unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    insert("singularity_2").await.unwrap();
}
