//! Retries with backoff, the dead-letter queue and its management.

use pgflow_core::{Error, Failure, NackOutcome, RetryPolicy};

use crate::support::{db, expire_lease, msg, queue, skip_backoff};

async fn delay_ms(t: &pgflow_core::testing::TestDb, id: uuid::Uuid) -> f64 {
    sqlx::query_scalar("SELECT extract(epoch FROM visible_at - now())::float8 * 1000 FROM pgflow.messages WHERE id = $1")
        .bind(id)
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn backoff_is_exponential_with_jitter() {
    let t = db().await;
    let q = queue(&t.pgflow, "backoff", 5).await;
    let policy = RetryPolicy {
        max_retries: 5,
        ..RetryPolicy::default()
    };
    let id = t.pgflow.send(&q, msg(1)).await.unwrap();
    for retry in 1..=4u32 {
        let d = t
            .pgflow
            .claim(&q, 1)
            .await
            .unwrap()
            .pop()
            .expect("message is visible");
        assert_eq!(d.attempts, retry as i32);
        let out = t
            .pgflow
            .nack(d.receipt(), Failure::retryable(format!("boom {retry}")))
            .await
            .unwrap();
        assert!(matches!(out, NackOutcome::Retry { .. }));
        let (lo, hi) = policy.delay_bounds(retry);
        let ms = delay_ms(&t, id).await;
        // Allow for the statement's own run time.
        assert!(
            ms <= hi.as_millis() as f64 + 5.0 && ms >= lo.as_millis() as f64 - 250.0,
            "retry {retry}: delay {ms} ms not in [{lo:?}, {hi:?}]"
        );
        // Not claimable during the backoff; back-date instead of sleeping.
        assert!(t.pgflow.claim(&q, 1).await.unwrap().is_empty());
        skip_backoff(&t.pgflow, id).await;
    }
}

#[tokio::test]
async fn jitter_spreads_retry_times() {
    let t = db().await;
    let q = queue(&t.pgflow, "jitter", 3).await;
    t.pgflow
        .send_batch(&q, &(0..40).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let got = t.pgflow.claim(&q, 40).await.unwrap();
    let items: Vec<_> = got
        .iter()
        .map(|d| (d.receipt(), Failure::retryable("x")))
        .collect();
    t.pgflow.nack_batch(&items).await.unwrap();
    let (min, max): (f64, f64) = sqlx::query_as(
        "SELECT min(extract(epoch FROM visible_at - now()))::float8, max(extract(epoch FROM visible_at - now()))::float8 FROM pgflow.messages",
    )
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert!(
        max - min > 0.1,
        "40 retries spread over only {} s",
        max - min
    );
    assert!(
        min >= 0.25 && max <= 1.0,
        "[{min}, {max}] outside [0.5, 1] s"
    );
}

#[tokio::test]
async fn dead_letter_after_max_retries_keeps_error_attempts_and_history() {
    let t = db().await;
    let q = queue(&t.pgflow, "exhaust", 2).await;
    let id = t.pgflow.send(&q, msg(1)).await.unwrap();
    for attempt in 1..=3 {
        let d = t.pgflow.claim(&q, 1).await.unwrap().pop().expect("visible");
        let out = t
            .pgflow
            .nack(
                d.receipt(),
                Failure::retryable(format!("failure {attempt}")),
            )
            .await
            .unwrap();
        if attempt < 3 {
            assert!(
                matches!(out, NackOutcome::Retry { .. }),
                "attempt {attempt}: {out:?}"
            );
            skip_backoff(&t.pgflow, id).await;
        } else {
            assert_eq!(out, NackOutcome::DeadLettered);
        }
    }
    assert!(t.pgflow.claim(&q, 1).await.unwrap().is_empty());
    let dlq = t.pgflow.list_dlq_messages(Some(&q), 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    let d = &dlq[0];
    assert_eq!((d.id, d.attempts, d.error.as_str()), (id, 3, "failure 3"));
    let history = d.history.as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0]["error"], "failure 1");
    assert_eq!(history[2]["outcome"], "dead_letter");
    assert_eq!(d.payload["n"], 1);
}

#[tokio::test]
async fn fatal_failure_dead_letters_at_once() {
    let t = db().await;
    let q = queue(&t.pgflow, "fatal", 3).await;
    let id = t.pgflow.send(&q, msg(1)).await.unwrap();
    let d = t.pgflow.claim(&q, 1).await.unwrap().pop().unwrap();
    let out = t
        .pgflow
        .nack(d.receipt(), Failure::fatal("unknown message type"))
        .await
        .unwrap();
    assert_eq!(out, NackOutcome::DeadLettered);
    let dlq = t.pgflow.list_dlq_messages(None, 10).await.unwrap();
    assert_eq!((dlq[0].id, dlq[0].attempts), (id, 1));
    assert_eq!(dlq[0].error, "unknown message type");
}

#[tokio::test]
async fn lease_expiring_every_time_ends_in_the_dlq() {
    let t = db().await;
    let q = queue(&t.pgflow, "crashy", 1).await;
    let id = t.pgflow.send(&q, msg(1)).await.unwrap();
    // Two deliveries allowed (1 retry); the consumer "crashes" each time.
    for _ in 0..2 {
        let d = t.pgflow.claim(&q, 1).await.unwrap().pop().unwrap();
        assert_eq!(d.id, id);
        expire_lease(&t.pgflow, id).await;
    }
    assert!(t.pgflow.claim(&q, 1).await.unwrap().is_empty());
    let dlq = t.pgflow.list_dlq_messages(Some(&q), 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].error.contains("lease expired"), "{}", dlq[0].error);
}

#[tokio::test]
async fn dlq_retry_and_purge() {
    let t = db().await;
    let q = queue(&t.pgflow, "dlqops", 0).await;
    t.pgflow
        .send_batch(&q, &(0..3).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let got = t.pgflow.claim(&q, 3).await.unwrap();
    let items: Vec<_> = got
        .iter()
        .map(|d| (d.receipt(), Failure::retryable("down")))
        .collect();
    t.pgflow.nack_batch(&items).await.unwrap();
    assert_eq!(t.pgflow.get_queue_stats(&q).await.unwrap().dlq, 3);

    t.pgflow.retry_dlq_message(got[1].id).await.unwrap();
    let again = t.pgflow.claim(&q, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (got[1].id, 1));
    assert_eq!(again[0].last_error.as_deref(), Some("down"));
    t.pgflow.ack(again[0].receipt()).await.unwrap();

    let err = t.pgflow.retry_dlq_message(got[1].id).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(t.pgflow.purge_dlq(Some(&q)).await.unwrap(), 2);
    assert!(t
        .pgflow
        .list_dlq_messages(None, 10)
        .await
        .unwrap()
        .is_empty());
}
