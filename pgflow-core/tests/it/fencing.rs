//! Leases: fenced acks and nacks, extension, release, archive.

use std::time::Duration;

use pgflow_core::{ClaimOptions, Error, Failure, QueueConfig};

use crate::support::{db, expire_lease, msg, queue, send_rows};

#[tokio::test]
async fn late_ack_after_expiry_and_reclaim_fails_and_changes_nothing() {
    let t = db().await;
    let q = queue(&t.pgflow, "fenced", 3).await;
    let id = t.pgflow.send(&q, msg(1)).await.unwrap();
    let first = t.pgflow.claim(&q, 1).await.unwrap().pop().unwrap();
    expire_lease(&t.pgflow, id).await;
    let second = t.pgflow.claim(&q, 1).await.unwrap().pop().unwrap();
    assert_eq!(second.id, id);
    assert_eq!(second.attempts, 2);
    assert_ne!(first.lease, second.lease);

    let err = t.pgflow.ack(first.receipt()).await.unwrap_err();
    assert!(
        matches!(err, Error::LeaseLost { id: e } if e == id),
        "{err}"
    );
    let err = t
        .pgflow
        .nack(first.receipt(), Failure::fatal("late"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    let err = t
        .pgflow
        .extend_lease(first.receipt(), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    // The current holder is unaffected.
    let stats = t.pgflow.get_queue_stats(&q).await.unwrap();
    assert_eq!((stats.in_flight, stats.dlq), (1, 0));
    t.pgflow.ack(second.receipt()).await.unwrap();
    let stats = t.pgflow.get_queue_stats(&q).await.unwrap();
    assert_eq!(
        (stats.pending, stats.in_flight, stats.processed_last_minute),
        (0, 0, 1)
    );
}

#[tokio::test]
async fn ack_after_expiry_without_reclaim_also_fails() {
    let t = db().await;
    let q = queue(&t.pgflow, "expired", 3).await;
    let id = t.pgflow.send(&q, msg(1)).await.unwrap();
    let d = t.pgflow.claim(&q, 1).await.unwrap().pop().unwrap();
    expire_lease(&t.pgflow, id).await;
    assert!(matches!(
        t.pgflow.ack(d.receipt()).await,
        Err(Error::LeaseLost { .. })
    ));
    // Still there, claimable again.
    assert_eq!(t.pgflow.claim(&q, 1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn batch_ack_reports_lost_receipts() {
    let t = db().await;
    let q = queue(&t.pgflow, "batchack", 3).await;
    send_rows(&t.pgflow, &q, &(0..10).map(msg).collect::<Vec<_>>()).await;
    let got = t.pgflow.claim(&q, 10).await.unwrap();
    expire_lease(&t.pgflow, got[0].id).await;
    let receipts: Vec<_> = got.iter().map(|d| d.receipt()).collect();
    let report = t.pgflow.ack_batch(&receipts).await.unwrap();
    assert_eq!(report.acked.len(), 9);
    assert_eq!(report.lost, vec![got[0].id]);
}

#[tokio::test]
async fn extend_lease_keeps_the_message_leased() {
    let t = db().await;
    let q = queue(&t.pgflow, "extend", 3).await;
    t.pgflow.send(&q, msg(1)).await.unwrap();
    let opts = ClaimOptions::default().visibility_timeout(Duration::from_secs(1));
    let d = t
        .pgflow
        .claim_with(&q, 1, &opts)
        .await
        .unwrap()
        .pop()
        .unwrap();
    t.pgflow
        .extend_lease(d.receipt(), Duration::from_secs(3600))
        .await
        .unwrap();
    let left: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM visible_at - now())::float8 FROM pgflow.messages WHERE id = $1",
    )
    .bind(d.id)
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert!(left > 3500.0, "lease left {left}");
    assert!(t.pgflow.claim(&q, 1).await.unwrap().is_empty());
    t.pgflow.ack(d.receipt()).await.unwrap();
}

#[tokio::test]
async fn release_returns_the_message_without_counting_an_attempt() {
    let t = db().await;
    let q = queue(&t.pgflow, "release", 3).await;
    t.pgflow.send(&q, msg(1)).await.unwrap();
    let d = t.pgflow.claim(&q, 1).await.unwrap().pop().unwrap();
    assert_eq!(t.pgflow.release(&[d.receipt()]).await.unwrap(), vec![d.id]);
    let again = t.pgflow.claim(&q, 1).await.unwrap().pop().unwrap();
    assert_eq!(again.attempts, 1);
    // The released receipt is dead.
    assert!(matches!(
        t.pgflow.ack(d.receipt()).await,
        Err(Error::LeaseLost { .. })
    ));
}

#[tokio::test]
async fn ack_archives_or_deletes_by_retention_and_prune_removes_old() {
    let t = db().await;
    let kept = queue(&t.pgflow, "kept", 3).await;
    let gone = crate::support::queue(&t.pgflow, "gone", 3).await;
    t.pgflow
        .create_queue(&QueueConfig::new(gone.clone()).archive_retention(Duration::ZERO))
        .await
        .unwrap();
    for q in [&kept, &gone] {
        send_rows(&t.pgflow, q, &(0..3).map(msg).collect::<Vec<_>>()).await;
        let got = t.pgflow.claim(q, 10).await.unwrap();
        t.pgflow
            .ack_batch(&got.iter().map(|d| d.receipt()).collect::<Vec<_>>())
            .await
            .unwrap();
    }
    let archived: Vec<(String, i64)> =
        sqlx::query_as("SELECT queue_name, count(*) FROM pgflow.archive GROUP BY 1")
            .fetch_all(t.pgflow.pool())
            .await
            .unwrap();
    assert_eq!(archived, vec![("kept".to_string(), 3)]);
    // Retention: nothing is old enough yet; back-date one and prune by age.
    assert_eq!(t.pgflow.prune_archive(None).await.unwrap(), 0);
    sqlx::query("UPDATE pgflow.archive SET archived_at = now() - interval '8 days' WHERE seq = (SELECT min(seq) FROM pgflow.archive)")
        .execute(t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(t.pgflow.prune_archive(None).await.unwrap(), 1);
    assert_eq!(
        t.pgflow.prune_archive(Some(Duration::ZERO)).await.unwrap(),
        2
    );
}

#[tokio::test]
async fn ack_and_claim_acks_fenced_and_claims_in_one_statement() {
    let t = crate::support::db().await;
    let q = crate::support::queue(&t.pgflow, "ack_claim", 3).await;
    let msgs: Vec<_> = (0..5).map(crate::support::msg).collect();
    t.pgflow.send_batch(&q, &msgs).await.unwrap();
    let opts = pgflow_core::ClaimOptions::default();
    let first = t.pgflow.claim(&q, 2).await.unwrap();
    // One of the two leases expires and is taken over before the ack.
    crate::support::expire_lease(&t.pgflow, first[1].id).await;
    let receipts: Vec<_> = first.iter().map(|d| d.receipt()).collect();
    let (report, next) = t
        .pgflow
        .ack_and_claim(&q, &receipts, 10, &opts)
        .await
        .unwrap();
    assert_eq!(report.acked, vec![first[0].id]);
    assert_eq!(report.lost, vec![first[1].id]);
    // The expired one is claimable again, with the three never claimed.
    assert_eq!(next.len(), 4);
    assert!(next.iter().any(|d| d.id == first[1].id && d.attempts == 2));
    // Nothing left to claim: the acks still happen.
    let receipts: Vec<_> = next.iter().map(|d| d.receipt()).collect();
    let (report, none) = t
        .pgflow
        .ack_and_claim(&q, &receipts, 10, &opts)
        .await
        .unwrap();
    assert_eq!(report.acked.len(), 4);
    assert!(report.lost.is_empty() && none.is_empty());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pgflow.messages")
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn cancelled_messages_are_dead_lettered_and_their_holder_loses_the_lease() {
    let t = db().await;
    let q = queue(&t.pgflow, "cancel", 3).await;
    let ids = send_rows(&t.pgflow, &q, &[msg(1), msg(2), msg(3)]).await;
    // Message 1 is leased (in flight), 2 waits for a retry, 3 is ready.
    let held = t.pgflow.claim(&q, 1).await.unwrap().pop().unwrap();
    assert_eq!(held.id, ids[0]);
    let second = t.pgflow.claim(&q, 1).await.unwrap().pop().unwrap();
    t.pgflow
        .nack(second.receipt(), Failure::retryable("try later"))
        .await
        .unwrap();

    let mut tx = t.pgflow.pool().begin().await.unwrap();
    let mut cancelled = Vec::new();
    for n in [1, 2] {
        cancelled.extend(
            t.pgflow
                .cancel_matching_in_tx(
                    &mut tx,
                    &q,
                    "",
                    &serde_json::json!({ "n": n }),
                    "overridden",
                )
                .await
                .unwrap(),
        );
    }
    tx.commit().await.unwrap();
    assert_eq!(cancelled, ids[..2]);

    // The holder's fenced ack fails; the cancelled ones are in the DLQ
    // with the reason; the third is untouched.
    let err = t.pgflow.ack(held.receipt()).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    let dlq = t.pgflow.list_dlq_messages(Some(&q), 10).await.unwrap();
    assert_eq!(dlq.len(), 2);
    for d in &dlq {
        assert_eq!(d.error, "overridden");
        let last = d.history.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["outcome"], "cancelled");
    }
    let rest = t.pgflow.claim(&q, 10).await.unwrap();
    assert_eq!(rest.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[2]]);
}
