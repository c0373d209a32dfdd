//! Batch storage (migration 15): on a queue that keeps batches, a
//! `send_batch` is one row until it is claimed whole and acked whole; every
//! other path turns it into rows without changing what consumers see.

use pgflow_core::{
    priority, Delivery, Failure, NackOutcome, Pgflow, QueueConfig, QueueName, RetryPolicy,
};
use uuid::Uuid;

use crate::support::{db, expire_lease, msg, n_of, send_rows};

/// A competing queue with batch storage and `max_retries`.
async fn queue(pg: &Pgflow, name: &str, max_retries: u32) -> QueueName {
    let q = QueueName::new(name).unwrap();
    pg.create_queue(
        &QueueConfig::new(q.clone())
            .retry(RetryPolicy {
                max_retries,
                ..RetryPolicy::default()
            })
            .batch_storage(true),
    )
    .await
    .unwrap();
    q
}

/// (batches, rows) stored for `q`.
async fn forms(pg: &Pgflow, q: &QueueName) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM pgflow.batches WHERE queue_name = $1),
                (SELECT count(*) FROM pgflow.messages WHERE queue_name = $1)",
    )
    .bind(q.as_str())
    .fetch_one(pg.pool())
    .await
    .unwrap()
}

fn ns(got: &[Delivery]) -> Vec<i64> {
    got.iter().map(|d| n_of(&d.payload)).collect()
}

#[tokio::test]
async fn a_batch_is_one_row_claimed_and_acked_whole_and_seen_as_messages() {
    let t = db().await;
    let q = queue(&t.pgflow, "whole", 3).await;
    let ids = t
        .pgflow
        .send_batch(&q, &(0..5).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(forms(&t.pgflow, &q).await, (1, 0));

    // Every reader sees five messages.
    let stats = t.pgflow.get_queue_stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (5, 0));
    let pending = t.pgflow.list_pending_messages(&q, 10).await.unwrap();
    assert_eq!(pending.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    let view: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pgflow_messages WHERE queue_name = $1 AND status = 'pending'",
    )
    .bind(q.as_str())
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(view, 5);

    let got = t.pgflow.claim(&q, 10).await.unwrap();
    assert_eq!(ns(&got), vec![0, 1, 2, 3, 4]);
    assert!(got
        .iter()
        .all(|d| d.lease == got[0].lease && d.attempts == 1));
    assert_eq!(forms(&t.pgflow, &q).await, (1, 0), "claimed whole");
    let stats = t.pgflow.get_queue_stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 5));

    let receipts: Vec<_> = got.iter().map(|d| d.receipt()).collect();
    let report = t.pgflow.ack_batch(&receipts).await.unwrap();
    assert_eq!(report.acked.len(), 5);
    assert!(report.lost.is_empty());
    assert_eq!(forms(&t.pgflow, &q).await, (0, 0));
    let archived: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgflow.archived_messages WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(t.pgflow.pool())
            .await
            .unwrap();
    assert_eq!(archived, 5);

    // The floor passes the acked batch and stops at the next one.
    t.pgflow
        .send_batch(&q, &(5..8).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    t.pgflow.advance_floor(&q, "").await.unwrap();
    assert_eq!(ns(&t.pgflow.claim(&q, 10).await.unwrap()), vec![5, 6, 7]);
}

#[tokio::test]
async fn rows_and_batches_are_claimed_in_priority_then_fifo_order() {
    let t = db().await;
    let q = queue(&t.pgflow, "merge", 3).await;
    let send = |msgs: Vec<_>| {
        let pg = t.pgflow.clone();
        let q = q.clone();
        async move { pg.send_batch(&q, &msgs).await.unwrap() }
    };
    t.pgflow.send(&q, msg(2)).await.unwrap();
    send(vec![msg(3), msg(4), msg(5)]).await;
    t.pgflow.send(&q, msg(6)).await.unwrap();
    send(vec![
        msg(0).priority(priority::HIGH),
        msg(1).priority(priority::HIGH),
    ])
    .await;
    send(vec![msg(7), msg(8)]).await;
    assert_eq!(forms(&t.pgflow, &q).await, (3, 2));

    // One at a time: each claim splits the batch at the head.
    let mut order = Vec::new();
    for _ in 0..4 {
        let got = t.pgflow.claim(&q, 1).await.unwrap();
        order.extend(ns(&got));
    }
    // The rest in one claim, rows and batches merged.
    order.extend(ns(&t.pgflow.claim(&q, 100).await.unwrap()));
    assert_eq!(order, (0..9).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_claim_smaller_than_a_batch_takes_its_head_and_leaves_the_rest_ready() {
    let t = db().await;
    let q = queue(&t.pgflow, "split", 3).await;
    t.pgflow
        .send_batch(&q, &(0..5).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let head = t.pgflow.claim(&q, 2).await.unwrap();
    assert_eq!(ns(&head), vec![0, 1]);
    assert_eq!(forms(&t.pgflow, &q).await, (0, 5), "split into rows");
    let stats = t.pgflow.get_queue_stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (3, 2));

    let rest = t.pgflow.claim(&q, 10).await.unwrap();
    assert_eq!(ns(&rest), vec![2, 3, 4]);
    assert!(
        rest.iter().all(|d| d.attempts == 1),
        "no attempt counted twice"
    );
    let all: Vec<_> = head.iter().chain(&rest).map(|d| d.receipt()).collect();
    assert_eq!(t.pgflow.ack_batch(&all).await.unwrap().acked.len(), 5);
    assert_eq!(forms(&t.pgflow, &q).await, (0, 0));
}

#[tokio::test]
async fn a_partial_ack_keeps_the_others_leased_under_the_same_lease() {
    let t = db().await;
    let q = queue(&t.pgflow, "partial", 3).await;
    t.pgflow
        .send_batch(&q, &(0..4).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let got = t.pgflow.claim(&q, 4).await.unwrap();
    let (first, second) = got.split_at(2);
    let r1: Vec<_> = first.iter().map(|d| d.receipt()).collect();
    let report = t.pgflow.ack_batch(&r1).await.unwrap();
    assert_eq!(report.acked.len(), 2);
    assert_eq!(forms(&t.pgflow, &q).await, (0, 2));
    let stats = t.pgflow.get_queue_stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 2));
    // Acking the same receipts again changes nothing.
    assert_eq!(t.pgflow.ack_batch(&r1).await.unwrap().lost.len(), 2);

    let r2: Vec<_> = second.iter().map(|d| d.receipt()).collect();
    assert_eq!(t.pgflow.ack_batch(&r2).await.unwrap().acked.len(), 2);
    assert_eq!(forms(&t.pgflow, &q).await, (0, 0));
}

#[tokio::test]
async fn nack_extend_and_release_of_batch_messages_act_on_each_message() {
    let t = db().await;
    let q = queue(&t.pgflow, "settle", 3).await;
    t.pgflow
        .send_batch(&q, &(0..4).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let got = t.pgflow.claim(&q, 4).await.unwrap();

    let retry = t
        .pgflow
        .nack(got[0].receipt(), Failure::retryable("flaky"))
        .await
        .unwrap();
    assert!(matches!(retry, NackOutcome::Retry { .. }));
    let dead = t
        .pgflow
        .nack(got[1].receipt(), Failure::fatal("malformed"))
        .await
        .unwrap();
    assert_eq!(dead, NackOutcome::DeadLettered);
    t.pgflow
        .extend_lease(got[2].receipt(), std::time::Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(
        t.pgflow.release(&[got[3].receipt()]).await.unwrap(),
        vec![got[3].id]
    );

    assert_eq!(forms(&t.pgflow, &q).await, (0, 3));
    let stats = t.pgflow.get_queue_stats(&q).await.unwrap();
    assert_eq!(
        (stats.pending, stats.in_flight, stats.delayed, stats.dlq),
        (1, 1, 1, 1)
    );
    let dlq = t.pgflow.list_dlq_messages(Some(&q), 10).await.unwrap();
    assert_eq!((dlq[0].id, dlq[0].error.as_str()), (got[1].id, "malformed"));
    // The extended message is still held: its ack works.
    t.pgflow.ack(got[2].receipt()).await.unwrap();
    // The released one comes back without an attempt counted.
    let again = t.pgflow.claim(&q, 10).await.unwrap();
    assert_eq!(
        (again.len(), again[0].id, again[0].attempts),
        (1, got[3].id, 1)
    );
}

#[tokio::test]
async fn a_late_ack_after_the_batch_lease_expired_and_was_reclaimed_fails() {
    let t = db().await;
    let q = queue(&t.pgflow, "late", 1).await;
    t.pgflow
        .send_batch(&q, &(0..3).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let first = t.pgflow.claim(&q, 3).await.unwrap();
    expire_lease(&t.pgflow, first[0].id).await;
    let second = t.pgflow.claim(&q, 3).await.unwrap();
    assert_eq!(ns(&second), vec![0, 1, 2]);
    assert!(second.iter().all(|d| d.attempts == 2));
    assert_ne!(second[0].lease, first[0].lease);

    let stale: Vec<_> = first.iter().map(|d| d.receipt()).collect();
    let report = t.pgflow.ack_batch(&stale).await.unwrap();
    assert!(report.acked.is_empty());
    assert_eq!(report.lost.len(), 3);
    assert_eq!(forms(&t.pgflow, &q).await, (1, 0), "nothing changed");

    // Expired again with its one retry used: dead-lettered whole.
    expire_lease(&t.pgflow, first[0].id).await;
    assert!(t.pgflow.claim(&q, 3).await.unwrap().is_empty());
    let dlq = t.pgflow.list_dlq_messages(Some(&q), 10).await.unwrap();
    assert_eq!(dlq.len(), 3);
    assert!(dlq[0].error.contains("delivery attempts exhausted"));
    assert_eq!(forms(&t.pgflow, &q).await, (0, 0));
}

#[tokio::test]
async fn a_resent_batch_is_not_queued_twice() {
    let t = db().await;
    let q = queue(&t.pgflow, "resend", 3).await;
    let msgs: Vec<_> = (0..3).map(msg).collect();
    let ids = t.pgflow.send_batch(&q, &msgs).await.unwrap();
    assert_eq!(t.pgflow.send_batch(&q, &msgs).await.unwrap(), ids);
    assert_eq!(forms(&t.pgflow, &q).await, (1, 0));
    // Split into rows, then re-sent: still once.
    let head = t.pgflow.claim(&q, 1).await.unwrap();
    t.pgflow.send_batch(&q, &msgs).await.unwrap();
    assert_eq!(forms(&t.pgflow, &q).await, (0, 3));
    t.pgflow.ack(head[0].receipt()).await.unwrap();
    t.pgflow.send_batch(&q, &msgs).await.unwrap();
    assert_eq!(forms(&t.pgflow, &q).await, (0, 2));
    let rest = t.pgflow.claim(&q, 10).await.unwrap();
    assert_eq!(rest.len(), 2);
    let mut seen: Vec<Uuid> = head.iter().chain(&rest).map(|d| d.id).collect();
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn mixed_or_broadcast_sends_are_stored_as_rows() {
    let t = db().await;
    let q = queue(&t.pgflow, "mixed", 3).await;
    // Two priorities, or a delay: rows.
    t.pgflow
        .send_batch(&q, &[msg(0), msg(1).priority(priority::HIGH)])
        .await
        .unwrap();
    t.pgflow
        .send_batch(
            &q,
            &[msg(2), msg(3).delay(std::time::Duration::from_secs(60))],
        )
        .await
        .unwrap();
    send_rows(&t.pgflow, &q, &[msg(4), msg(5)]).await;
    assert_eq!(forms(&t.pgflow, &q).await, (0, 6));
    // A queue without batch storage (the default): rows.
    let plain = crate::support::queue(&t.pgflow, "plain", 3).await;
    assert!(!t.pgflow.queue_config(&plain).await.unwrap().batch_storage);
    t.pgflow
        .send_batch(&plain, &(0..3).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(forms(&t.pgflow, &plain).await, (0, 3));
    assert!(t.pgflow.queue_config(&q).await.unwrap().batch_storage);
}

#[tokio::test]
async fn a_consumer_role_settles_batches_a_producer_role_sent() {
    let t = db().await;
    let q = QueueName::new("proposals_for_consensus_queue").unwrap();
    let cfg = t.pgflow.queue_config(&q).await.unwrap().batch_storage(true);
    t.pgflow.create_queue(&cfg).await.unwrap();
    let producer = t.connect_as("singularity").await.unwrap();
    let consumer = t.connect_as("centralcloud").await.unwrap();
    producer
        .send_batch(&q, &(0..6).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    // A split, a partial ack and a nack all write rows the consumer role
    // may not send itself.
    let head = consumer.claim(&q, 2).await.unwrap();
    assert_eq!(ns(&head), vec![0, 1]);
    consumer.ack(head[0].receipt()).await.unwrap();
    consumer
        .nack(head[1].receipt(), Failure::fatal("bad"))
        .await
        .unwrap();
    let rest = consumer.claim(&q, 10).await.unwrap();
    assert_eq!(ns(&rest), vec![2, 3, 4, 5]);
    let receipts: Vec<_> = rest.iter().map(|d| d.receipt()).collect();
    assert_eq!(consumer.ack_batch(&receipts).await.unwrap().acked.len(), 4);

    producer
        .send_batch(&q, &(6..9).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let whole = consumer.claim(&q, 10).await.unwrap();
    consumer.ack(whole[0].receipt()).await.unwrap();
    let others: Vec<_> = whole[1..].iter().map(|d| d.receipt()).collect();
    assert_eq!(consumer.ack_batch(&others).await.unwrap().acked.len(), 2);
    assert_eq!(forms(&t.pgflow, &q).await, (0, 0));
}

#[tokio::test]
async fn an_archived_batch_is_seen_by_every_archive_reader_and_pruned() {
    let t = db().await;
    let q = queue(&t.pgflow, "archived", 3).await;
    let trace = Uuid::new_v4();
    let proposal = Uuid::new_v4();
    let msgs: Vec<_> = (0..4)
        .map(|n| {
            pgflow_core::OutgoingMessage::new(
                "test",
                serde_json::json!({ "n": n, "proposal_id": proposal }),
            )
            .trace_id(trace)
        })
        .collect();
    let ids = t.pgflow.send_batch(&q, &msgs).await.unwrap();
    let got = t.pgflow.claim(&q, 10).await.unwrap();
    let receipts: Vec<_> = got.iter().map(|d| d.receipt()).collect();
    assert_eq!(t.pgflow.ack_batch(&receipts).await.unwrap().acked.len(), 4);
    let (rows, batches): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pgflow.archive), (SELECT count(*) FROM pgflow.archive_batches)",
    )
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!((rows, batches), (0, 1), "archived as one row");

    let stats = t.pgflow.get_queue_stats(&q).await.unwrap();
    assert_eq!(stats.processed_last_minute, 4);
    let archived: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pgflow_messages WHERE queue_name = $1 AND status = 'archived'",
    )
    .bind(q.as_str())
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(archived, 4);
    for id in [trace, proposal] {
        let j = pgflow_core::dashboard::journey::find(&t.pgflow, id)
            .await
            .unwrap();
        let mut hops: Vec<Uuid> = j.hops.iter().map(|h| h.id).collect();
        hops.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(hops, want, "journey by {id}");
        assert!(j.hops.iter().all(|h| h.state == "done"));
    }

    // Pruned by the queue's retention (7 days), counted by messages.
    assert_eq!(t.pgflow.prune_archive(None).await.unwrap(), 0);
    sqlx::query("UPDATE pgflow.archive_batches SET archived_at = now() - interval '8 days'")
        .execute(t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(t.pgflow.prune_archive(None).await.unwrap(), 4);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pgflow.archived_messages")
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn an_ack_of_rows_then_claims_the_batches_behind_them() {
    let t = db().await;
    let q = queue(&t.pgflow, "behind", 3).await;
    send_rows(&t.pgflow, &q, &[msg(0), msg(1)]).await;
    t.pgflow
        .send_batch(&q, &(2..5).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let rows = t.pgflow.claim(&q, 2).await.unwrap();
    assert_eq!(ns(&rows), vec![0, 1]);
    // Row receipts: the ack is the single statement, which sees the batch
    // waiting and leaves the claim to pgflow.claim.
    let receipts: Vec<_> = rows.iter().map(|d| d.receipt()).collect();
    let (report, next) = t
        .pgflow
        .ack_and_claim(&q, &receipts, 10, &pgflow_core::ClaimOptions::default())
        .await
        .unwrap();
    assert_eq!(report.acked.len(), 2);
    assert_eq!(ns(&next), vec![2, 3, 4]);
    // Batch receipts: through pgflow.claim, which acks the batch whole.
    let receipts: Vec<_> = next.iter().map(|d| d.receipt()).collect();
    let (report, rest) = t
        .pgflow
        .ack_and_claim(&q, &receipts, 10, &pgflow_core::ClaimOptions::default())
        .await
        .unwrap();
    assert_eq!((report.acked.len(), rest.len()), (3, 0));
    assert_eq!(forms(&t.pgflow, &q).await, (0, 0));
}

/// The compression set on `table`'s `payloads` column: "l" for LZ4, ""
/// for the server's default.
async fn payloads_compression(pg: &Pgflow, table: &str) -> String {
    sqlx::query_scalar(
        "SELECT attcompression::text FROM pg_attribute
          WHERE attrelid = $1::regclass AND attname = 'payloads'",
    )
    .bind(table)
    .fetch_one(pg.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_batch_keeps_its_payloads_lz4_compressed_live_and_archived() {
    let t = db().await;
    let lz4: bool = sqlx::query_scalar(
        "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
    )
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    // Migration 16 sets LZ4 on both tables, or (a server without LZ4)
    // leaves both as migration 15 made them.
    let want = if lz4 { "l" } else { "" };
    for table in ["pgflow.batches", "pgflow.archive_batches"] {
        assert_eq!(
            payloads_compression(&t.pgflow, table).await,
            want,
            "{table}"
        );
    }

    let q = queue(&t.pgflow, "compressed", 3).await;
    let msgs: Vec<_> = (0..100)
        .map(|n| {
            pgflow_core::OutgoingMessage::new(
                "test",
                serde_json::json!({ "n": n, "proposal_id": Uuid::new_v4(),
                                    "agent_type": "BugFixerAgent", "risk_score": 1.0,
                                    "code_change": {"file": "lib/foo.ex", "change": "x"} }),
            )
        })
        .collect();
    t.pgflow.send_batch(&q, &msgs).await.unwrap();
    let (method, stored, raw): (Option<String>, i32, i32) = sqlx::query_as(
        "SELECT pg_column_compression(payloads), pg_column_size(payloads),
                octet_length(array_to_string(payloads, ''))
           FROM pgflow.batches",
    )
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    if lz4 {
        assert_eq!(method.as_deref(), Some("lz4"));
        assert!(stored * 2 < raw, "{stored} bytes stored for {raw}");
    }

    let got = t.pgflow.claim(&q, 100).await.unwrap();
    assert_eq!(ns(&got), (0..100).collect::<Vec<_>>());
    assert!(got
        .iter()
        .zip(&msgs)
        .all(|(d, m)| &d.payload == m.payload()));
    let receipts: Vec<_> = got.iter().map(|d| d.receipt()).collect();
    assert_eq!(
        t.pgflow.ack_batch(&receipts).await.unwrap().acked.len(),
        100
    );
    let archived: i64 = sqlx::query_scalar("SELECT sum(n) FROM pgflow.archive_batches")
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(archived, 100);
}
