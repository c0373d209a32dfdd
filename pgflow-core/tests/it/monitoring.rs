//! The operator SQL of seeds 002 and 003, run verbatim, and the stats API.

use pgflow_core::Failure;

use crate::support::{db, msg, queue};

/// Every monitoring query the seeds print, character for character.
const SEED_QUERIES: &[&str] = &[
    "SELECT id, queue_name, payload, retry_count\nFROM pgflow_messages\nWHERE status = 'pending'\nORDER BY priority DESC;",
    "SELECT id, queue_name, error FROM pgflow_dlq;",
    "SELECT queue_name, COUNT(*) as pending\nFROM pgflow_messages\nWHERE status = 'pending'\nGROUP BY queue_name;",
    "SELECT id, queue_name, payload, created_at, retry_count\nFROM pgflow_messages\nWHERE status = 'pending'\nORDER BY priority DESC, created_at ASC;",
    "SELECT id, queue_name, error, created_at\nFROM pgflow_dlq\nORDER BY created_at DESC;",
    "SELECT queue_name, COUNT(*) as pending_count, MAX(created_at) as oldest\nFROM pgflow_messages\nWHERE status = 'pending'\nGROUP BY queue_name;",
    "SELECT * FROM pgflow_messages WHERE status='processing'",
];

#[tokio::test]
async fn seed_monitoring_sql_returns_the_right_counts() {
    let t = db().await;
    let pg = &t.pgflow;
    let a = queue(pg, "mon_a", 3).await;
    let b = queue(pg, "mon_b", 0).await;
    // mon_a: 6 sent; 1 acked (archived), 1 in flight, 1 nacked (retry wait), 3 pending.
    pg.send_batch(&a, &(0..6).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let got = pg.claim(&a, 3).await.unwrap();
    pg.ack(got[0].receipt()).await.unwrap();
    pg.nack(got[2].receipt(), Failure::retryable("flaky"))
        .await
        .unwrap();
    // mon_b: 2 sent; 1 dead-lettered, 1 pending.
    pg.send_batch(&b, &(0..2).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let got_b = pg.claim(&b, 1).await.unwrap();
    pg.nack(got_b[0].receipt(), Failure::retryable("broken"))
        .await
        .unwrap();

    for sql in SEED_QUERIES {
        sqlx::raw_sql(sql)
            .execute(pg.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let pending: Vec<(String, i64)> = sqlx::query_as(
        "SELECT queue_name, COUNT(*) as pending\nFROM pgflow_messages\nWHERE status = 'pending'\nGROUP BY queue_name ORDER BY 1",
    )
    .fetch_all(pg.pool())
    .await
    .unwrap();
    assert_eq!(pending, vec![("mon_a".into(), 3), ("mon_b".into(), 1)]);
    let processing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgflow_messages WHERE status='processing'")
            .fetch_one(pg.pool())
            .await
            .unwrap();
    assert_eq!(processing, 1);
    let retry_counts: Vec<i32> = sqlx::query_scalar(
        "SELECT retry_count FROM pgflow_messages WHERE queue_name = 'mon_a' AND status <> 'archived' ORDER BY retry_count DESC",
    )
    .fetch_all(pg.pool())
    .await
    .unwrap();
    assert_eq!(retry_counts, vec![1, 0, 0, 0, 0]);
    let dlq: Vec<(String, String)> = sqlx::query_as("SELECT queue_name, error FROM pgflow_dlq")
        .fetch_all(pg.pool())
        .await
        .unwrap();
    assert_eq!(dlq, vec![("mon_b".into(), "broken".into())]);
    let archived: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgflow_messages WHERE status = 'archived'")
            .fetch_one(pg.pool())
            .await
            .unwrap();
    assert_eq!(archived, 1);

    let stats = pg.get_queue_stats(&a).await.unwrap();
    assert_eq!(
        (
            stats.pending,
            stats.in_flight,
            stats.delayed,
            stats.dlq,
            stats.processed_last_minute
        ),
        (3, 1, 1, 0, 1)
    );
    assert!(stats.oldest_pending_age_secs.unwrap() >= 0.0);
    let all = pg.list_queues().await.unwrap();
    assert_eq!(
        all.len(),
        16 + 2,
        "the design's 16 queues plus the two test queues"
    );
    let b_stats = all.iter().find(|s| s.queue_name == "mon_b").unwrap();
    assert_eq!((b_stats.pending, b_stats.dlq), (1, 1));
    let pending = pg.list_pending_messages(&a, 100).await.unwrap();
    assert_eq!(pending.len(), 5);
    assert_eq!(pending[0].status, "pending");
}

#[tokio::test]
async fn migrations_create_the_design_queues_and_are_idempotent() {
    let t = db().await;
    t.pgflow.migrate().await.unwrap();
    t.pgflow.check_schema().await.unwrap();
    let cfgs = t.pgflow.list_queue_configs().await.unwrap();
    assert_eq!(cfgs.len(), 16);
    let kind = |n: &str| cfgs.iter().find(|c| c.name.as_str() == n).unwrap().delivery;
    use pgflow_core::DeliveryKind::*;
    assert_eq!(kind("consensus_vote_requests_queue"), Broadcast);
    assert_eq!(kind("consensus_results_queue"), Targeted);
    assert_eq!(kind("proposals_for_consensus_queue"), Competing);
    assert!(cfgs
        .iter()
        .all(|c| c.retry.max_retries == 3 && c.retry.base_delay_ms == 1000));
}

#[tokio::test]
async fn unmigrated_database_is_reported() {
    let t = pgflow_core::testing::TestDb::empty().await.unwrap();
    let err = t.pgflow.check_schema().await.unwrap_err();
    assert!(matches!(err, pgflow_core::Error::SchemaMissing(_)), "{err}");
}
