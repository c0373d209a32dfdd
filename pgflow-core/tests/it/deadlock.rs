//! A queue statement that PostgreSQL aborts as a deadlock victim is run
//! again: the caller sees its result, not the error.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::{db, msg, queue, send_rows};

/// Waits until a session of this test's database runs `pattern` while
/// waiting for a lock.
async fn wait_for_lock_wait(conn: &mut PgConnection, pattern: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND query LIKE $1",
        )
        .bind(pattern)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no session waits on a lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_ack_chosen_as_deadlock_victim_is_run_again() {
    let t = db().await;
    let q = queue(&t.pgflow, "deadlocked", 3).await;
    // Ids in insertion order: the ack reaches the rows in the same order
    // whether it reads them by key or by position.
    let ids = [Uuid::from_u128(1), Uuid::from_u128(2)];
    send_rows(&t.pgflow, &q, &[msg(1).id(ids[0]), msg(2).id(ids[1])]).await;
    let got = t.pgflow.claim(&q, 2).await.unwrap();
    assert_eq!(got.len(), 2);
    let (first, second) = (ids[0], ids[1]);
    let in_order: bool = sqlx::query_scalar(
        "SELECT (SELECT ctid FROM pgflow.messages WHERE id = $1)
              < (SELECT ctid FROM pgflow.messages WHERE id = $2)",
    )
    .bind(first)
    .bind(second)
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert!(in_order, "the rows are stored in insertion order");

    // Another session holds `second`, and detects deadlocks only after the
    // queue's session does (so the queue's statement is the victim).
    let mut other = PgConnection::connect(&t.url).await.unwrap();
    sqlx::query("SET deadlock_timeout = '30s'")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT 1 FROM pgflow.messages WHERE id = $1 FOR UPDATE")
        .bind(second)
        .execute(&mut other)
        .await
        .unwrap();

    // The ack deletes `first`, then waits for `second`...
    let receipts: Vec<_> = got.iter().map(|d| d.receipt()).collect();
    let pg = t.pgflow.clone();
    let ack = tokio::spawn(async move { pg.ack_batch(&receipts).await });
    let mut watcher = PgConnection::connect(&t.url).await.unwrap();
    wait_for_lock_wait(&mut watcher, "%DELETE FROM pgflow.messages%").await;

    // ...while the other session now waits for `first`: a cycle. After the
    // queue session's deadlock_timeout PostgreSQL aborts the ack, which
    // releases `first`; the other session gets it and commits, and the ack
    // runs again and takes both rows.
    sqlx::query("SELECT 1 FROM pgflow.messages WHERE id = $1 FOR UPDATE")
        .bind(first)
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();

    let report = tokio::time::timeout(Duration::from_secs(30), ack)
        .await
        .expect("the ack finishes")
        .unwrap()
        .expect("the ack succeeds after the deadlock");
    assert!(report.lost.is_empty(), "leases lost: {:?}", report.lost);
    assert_eq!(report.acked.len(), 2);

    // The cycle did form: PostgreSQL counted a deadlock in this database
    // (a session reports it when it ends: end the queue's sessions).
    t.pgflow.queue_pool().close().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let deadlocks: i64 = sqlx::query_scalar(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if deadlocks >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no deadlock was counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pgflow.messages")
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "both messages acked");
}
