//! The claim floor (migration 12): claims start past the dead entries of
//! acked messages, and the floor never hides a message, whether it is a
//! retry, an expired lease, a delayed message, a higher priority sent
//! later, or an insert that commits while the floor moves.

use std::collections::HashSet;
use std::time::Duration;

use pgflow_core::{priority, Failure, OutgoingMessage, Pgflow, QueueName};
use uuid::Uuid;

use crate::support::{db, expire_lease, msg, n_of, queue, skip_backoff};

/// The floor of `q` for competing consumers, as stored.
async fn floor(pg: &Pgflow, q: &QueueName) -> i64 {
    sqlx::query_scalar("SELECT floor FROM pgflow.heads WHERE queue_name = $1 AND target = ''")
        .bind(q.as_str())
        .fetch_one(pg.pool())
        .await
        .unwrap()
}

/// The smallest claim position of the rows still in `q`.
async fn min_ord(pg: &Pgflow, q: &QueueName) -> Option<i64> {
    sqlx::query_scalar("SELECT min(ord) FROM pgflow.live_messages WHERE queue_name = $1")
        .bind(q.as_str())
        .fetch_one(pg.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_floor_passes_acked_messages_and_stops_at_every_live_one() {
    let t = db().await;
    let pg = &t.pgflow;
    let q = queue(pg, "floor_live", 3).await;
    pg.send_batch(&q, &(1..=10).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let first = pg.claim(&q, 5).await.unwrap();
    pg.ack_batch(&first.iter().map(|d| d.receipt()).collect::<Vec<_>>())
        .await
        .unwrap();
    let advanced = pg.advance_floor(&q, "").await.unwrap().unwrap();
    assert_eq!(
        Some(advanced),
        min_ord(pg, &q).await,
        "floor = oldest live message"
    );
    assert_eq!(advanced, floor(pg, &q).await);

    // 6 loses its lease, 7 fails and waits for a retry, 8 is acked: the
    // floor may pass 8 but neither 6 nor 7.
    let next = pg.claim(&q, 3).await.unwrap();
    let ns: Vec<i64> = next.iter().map(|d| n_of(&d.payload)).collect();
    assert_eq!(ns, vec![6, 7, 8]);
    expire_lease(pg, next[0].id).await;
    pg.nack(next[1].receipt(), Failure::retryable("try again"))
        .await
        .unwrap();
    pg.ack(next[2].receipt()).await.unwrap();
    pg.advance_floor(&q, "").await.unwrap();
    assert_eq!(Some(floor(pg, &q).await), min_ord(pg, &q).await);
    skip_backoff(pg, next[1].id).await;

    // A higher priority sent now sorts below the floor: the send lowers it.
    pg.send(&q, msg(100).priority(priority::HIGH))
        .await
        .unwrap();
    let rest = pg.claim(&q, 10).await.unwrap();
    let ns: Vec<i64> = rest.iter().map(|d| n_of(&d.payload)).collect();
    assert_eq!(ns, vec![100, 6, 7, 9, 10], "priority first, then FIFO");
    pg.ack_batch(&rest.iter().map(|d| d.receipt()).collect::<Vec<_>>())
        .await
        .unwrap();

    // Empty: the floor moves to the end, and the next send is still seen.
    pg.advance_floor(&q, "").await.unwrap();
    assert_eq!(min_ord(pg, &q).await, None);
    pg.send(&q, msg(11)).await.unwrap();
    pg.send(&q, msg(12).priority(priority::LOW)).await.unwrap();
    let last = pg.claim(&q, 10).await.unwrap();
    let ns: Vec<i64> = last.iter().map(|d| n_of(&d.payload)).collect();
    assert_eq!(ns, vec![11, 12]);
}

#[tokio::test]
async fn a_delayed_message_holds_the_floor_until_it_is_delivered() {
    let t = db().await;
    let pg = &t.pgflow;
    let q = queue(pg, "floor_delayed", 3).await;
    let delayed = pg
        .send(&q, msg(0).delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    pg.send_batch(&q, &(1..=5).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let got = pg.claim(&q, 10).await.unwrap();
    assert_eq!(got.len(), 5, "the delayed message is not due");
    pg.ack_batch(&got.iter().map(|d| d.receipt()).collect::<Vec<_>>())
        .await
        .unwrap();
    pg.advance_floor(&q, "").await.unwrap();
    assert_eq!(Some(floor(pg, &q).await), min_ord(pg, &q).await);
    // Due now (back-dated, no sleeping).
    expire_lease(pg, delayed).await;
    let got = pg.claim(&q, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, delayed);
}

#[tokio::test]
async fn concurrent_sends_advances_and_claims_lose_no_message() {
    let t = db().await;
    let pg = t.pgflow.clone();
    let q = queue(&pg, "floor_race", 3).await;
    const PRODUCERS: i64 = 4;
    const EACH: i64 = 250;
    let mut senders = Vec::new();
    for p in 0..PRODUCERS {
        let (pg, q) = (pg.clone(), q.clone());
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                let n = p * EACH + i;
                // Mixed priorities and single sends and small batches, so
                // inserts land below and above the floor while it moves.
                let m = msg(n).priority(if n % 7 == 0 {
                    priority::HIGH
                } else {
                    priority::NORMAL
                });
                if i % 5 == 0 {
                    let extra = msg(n + 1_000_000);
                    ids.extend(pg.send_batch(&q, &[m, extra]).await.unwrap());
                } else {
                    ids.push(pg.send(&q, m).await.unwrap());
                }
            }
            ids
        }));
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let advancer = {
        let (pg, q, stop) = (pg.clone(), q.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                pg.advance_floor(&q, "").await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut claimers = Vec::new();
    for _ in 0..2 {
        let (pg, q, stop) = (pg.clone(), q.clone(), stop.clone());
        claimers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while !stop.is_cancelled() {
                let batch = pg.claim(&q, 7).await.unwrap();
                if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let report = pg
                    .ack_batch(&batch.iter().map(|d| d.receipt()).collect::<Vec<_>>())
                    .await
                    .unwrap();
                assert!(report.lost.is_empty());
                got.extend(batch.iter().map(|d| d.id));
            }
            got
        }));
    }
    let mut sent = HashSet::new();
    for s in senders {
        sent.extend(s.await.unwrap());
    }
    let total = sent.len();
    assert_eq!(total as i64, PRODUCERS * EACH + PRODUCERS * EACH / 5);
    // Wait (with a deadline) until every sent message was acked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pgflow.live_messages WHERE queue_name = $1")
                .bind(q.as_str())
                .fetch_one(pg.pool())
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} messages never claimed (floor at {}, oldest at {:?})",
            floor(&pg, &q).await,
            min_ord(&pg, &q).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    advancer.await.unwrap();
    let mut received: Vec<Uuid> = Vec::new();
    for c in claimers {
        received.extend(c.await.unwrap());
    }
    let unique: HashSet<Uuid> = received.iter().copied().collect();
    assert_eq!(
        unique.len(),
        received.len(),
        "a message was delivered twice"
    );
    assert_eq!(unique, sent);
}

#[tokio::test]
async fn a_send_in_a_repeatable_read_transaction_is_never_hidden() {
    let t = db().await;
    let pg = &t.pgflow;
    let q = queue(pg, "floor_rr", 3).await;
    pg.send_batch(&q, &(1..=3).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut tx = pg.pool().begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .unwrap();
    // The snapshot is taken here, before the floor moves.
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM pgflow.heads")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let got = pg.claim(&q, 3).await.unwrap();
    pg.ack_batch(&got.iter().map(|d| d.receipt()).collect::<Vec<_>>())
        .await
        .unwrap();
    pg.advance_floor(&q, "").await.unwrap();
    // A priority above the moved floor's, sent with the old snapshot: it
    // either goes in and lowers the floor, or fails as a serialization
    // error (retry the transaction); it is never stored below the floor.
    let sent = pg
        .send_in_tx(&mut tx, &q, &[msg(4).priority(priority::HIGH)], false)
        .await;
    match sent {
        Ok(_) => {
            tx.commit().await.unwrap();
            let got = pg.claim(&q, 10).await.unwrap();
            assert_eq!(
                got.len(),
                1,
                "the message sent in the transaction is claimable"
            );
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("could not serialize"), "{text}");
            tx.rollback().await.unwrap();
        }
    }
    let floor_now = floor(pg, &q).await;
    if let Some(m) = min_ord(pg, &q).await {
        assert!(m >= floor_now);
    }
    // And a retry of the transaction goes through.
    let mut tx = pg.pool().begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .unwrap();
    pg.send_in_tx(
        &mut tx,
        &q,
        &[OutgoingMessage::new("test", serde_json::json!({"n": 5}))],
        false,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let got = pg.claim(&q, 10).await.unwrap();
    assert!(got.iter().any(|d| n_of(&d.payload) == 5));
}
