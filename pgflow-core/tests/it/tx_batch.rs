//! Transactional batches (`ConsumerConfig::tx_batch`): several messages of
//! a claim share one transaction and one ack; a failure rolls the batch
//! back and settles only its own message.

use std::time::Duration;

use pgflow_core::consumer::{ConsumerConfig, HandlerError, HandlerResult, Runtime, TxHandler};
use pgflow_core::testing::{wait_for, TestDb};
use pgflow_core::{Delivery, Pgflow};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::support::{db, msg, n_of, queue};

const WAIT: Duration = Duration::from_secs(20);

/// Writes its effect (message, payload's n, the transaction id), then fails
/// fatally for the message whose n is `fail_n`.
struct Effect {
    fail_n: Option<i64>,
}

#[async_trait::async_trait]
impl TxHandler for Effect {
    async fn handle(&self, tx: &mut PgConnection, d: &Delivery) -> HandlerResult {
        sqlx::query("INSERT INTO effects (message_id, n, txid) VALUES ($1, $2, txid_current())")
            .bind(d.id)
            .bind(n_of(&d.payload))
            .execute(&mut *tx)
            .await
            .map_err(HandlerError::retryable)?;
        if self.fail_n == Some(n_of(&d.payload)) {
            return Err(HandlerError::fatal("message 3 is poison"));
        }
        Ok(())
    }
}

async fn scalar(pg: &Pgflow, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pg.pool()).await.unwrap()
}

/// Sends `n` messages, then runs a consumer (8 slots, claims of 8,
/// batches of 4) until `done` returns `want`; returns the database.
async fn run_batches(n: i64, fail_n: Option<i64>, done: &str, want: i64) -> TestDb {
    let t = db().await;
    let pg = t.pgflow.clone();
    let q = queue(&pg, "batched", 3).await;
    sqlx::query("CREATE TABLE effects (message_id uuid, n bigint, txid bigint)")
        .execute(pg.pool())
        .await
        .unwrap();
    let msgs: Vec<_> = (0..n).map(msg).collect();
    pg.send_batch(&q, &msgs).await.unwrap();
    let mut rt = Runtime::new(pg.clone());
    rt.tx_consumer(
        ConsumerConfig::new(q).workers(8).batch_size(8).tx_batch(4),
        Effect { fail_n },
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(rt.run(stop.clone()));
    wait_for(done, WAIT, || async {
        (scalar(&pg, done).await == want).then_some(())
    })
    .await;
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("runtime stops in time")
        .unwrap()
        .unwrap();
    t
}

#[tokio::test]
async fn messages_of_a_claim_share_one_transaction_and_one_ack() {
    let t = run_batches(
        12,
        None,
        "SELECT count(*) FROM pgflow.archived_messages",
        12,
    )
    .await;
    let pg = &t.pgflow;
    assert_eq!(scalar(pg, "SELECT count(*) FROM effects").await, 12);
    assert_eq!(
        scalar(pg, "SELECT count(DISTINCT message_id) FROM effects").await,
        12,
        "each message's effect once"
    );
    assert_eq!(
        scalar(pg, "SELECT count(*) FROM pgflow.live_messages").await,
        0
    );
    let transactions = scalar(pg, "SELECT count(DISTINCT txid) FROM effects").await;
    let largest = scalar(
        pg,
        "SELECT max(c) FROM (SELECT count(*) c FROM effects GROUP BY txid) x",
    )
    .await;
    assert!(
        (3..12).contains(&transactions) && largest <= 4,
        "12 messages in {transactions} transactions (largest {largest}): batches of at most 4"
    );
}

#[tokio::test]
async fn a_failure_rolls_the_batch_back_and_settles_only_its_own_message() {
    let t = run_batches(
        8,
        Some(3),
        "SELECT count(*) FROM pgflow.archived_messages",
        7,
    )
    .await;
    let pg = &t.pgflow;
    // Every other message's effect committed exactly once, the poison
    // message's never; it alone is dead-lettered, with its error.
    assert_eq!(
        scalar(pg, "SELECT count(*) FROM effects").await,
        7,
        "rolled-back effects are gone, the redone ones are there once"
    );
    assert_eq!(
        scalar(pg, "SELECT count(DISTINCT message_id) FROM effects").await,
        7
    );
    assert_eq!(
        scalar(pg, "SELECT count(*) FROM effects WHERE n = 3").await,
        0
    );
    let dlq = pg.list_dlq_messages(None, 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(n_of(&dlq[0].payload), 3);
    assert!(dlq[0].error.contains("poison"), "{}", dlq[0].error);
    assert_eq!(
        scalar(pg, "SELECT count(*) FROM pgflow.live_messages").await,
        0
    );
}
