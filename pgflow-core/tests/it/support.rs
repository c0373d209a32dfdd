//! Helpers shared by the tests.

use pgflow_core::testing::TestDb;
use pgflow_core::{OutgoingMessage, Pgflow, QueueConfig, QueueName, RetryPolicy};
use uuid::Uuid;

/// A fresh migrated database.
pub async fn db() -> TestDb {
    TestDb::new().await.expect("test database")
}

/// Creates a competing queue `name` with `max_retries` and a 1000 ms base delay.
pub async fn queue(pg: &Pgflow, name: &str, max_retries: u32) -> QueueName {
    let q = QueueName::new(name).expect("queue name");
    pg.create_queue(&QueueConfig::new(q.clone()).retry(RetryPolicy {
        max_retries,
        ..RetryPolicy::default()
    }))
    .await
    .expect("create queue");
    q
}

/// A message `{"n": n}` of type `test`.
pub fn msg(n: i64) -> OutgoingMessage {
    OutgoingMessage::new("test", serde_json::json!({ "n": n }))
}

/// The `n` field of a payload (a delivery's or a dead letter's).
pub fn n_of(p: &impl serde::Serialize) -> i64 {
    serde_json::to_value(p).expect("JSON")["n"]
        .as_i64()
        .expect("n")
}

/// Expires the lease of message `id` by back-dating it (no sleeping). A
/// message stored in a batch shares the batch's lease: that expires it for
/// every message of the batch.
pub async fn expire_lease(pg: &Pgflow, id: Uuid) {
    let mut n = 0;
    for sql in [
        "UPDATE pgflow.messages SET visible_at = now() - interval '1 millisecond' WHERE id = $1",
        "UPDATE pgflow.batches SET visible_at = now() - interval '1 millisecond'
          WHERE $1 = ANY(ids)",
    ] {
        n += sqlx::query(sql)
            .bind(id)
            .execute(pg.pool())
            .await
            .expect("back-date")
            .rows_affected();
    }
    assert_eq!(n, 1, "message {id} not found to back-date");
}

/// Sends `msgs` as rows, one per message, whatever their number: for the
/// tests of row storage (`send_batch` stores two or more as one batch).
pub async fn send_rows(pg: &Pgflow, q: &QueueName, msgs: &[OutgoingMessage]) -> Vec<Uuid> {
    let mut conn = pg.pool().acquire().await.expect("connection");
    pg.send_in_tx(&mut conn, q, msgs, false)
        .await
        .expect("send rows")
}

/// Makes a message waiting for a retry visible now (back-dating the backoff).
pub async fn skip_backoff(pg: &Pgflow, id: Uuid) {
    expire_lease(pg, id).await;
}

/// A private cluster of the calling test's own (it may stop and restart
/// it), migrated, with a handle that gives up quickly while it is down.
pub async fn own_cluster() -> (pgflow_core::local_pg::LocalPostgres, Pgflow) {
    let pg = tokio::task::spawn_blocking(pgflow_core::local_pg::LocalPostgres::start)
        .await
        .expect("start task")
        .expect("private cluster");
    let flow = Pgflow::connect_with(
        &pg.url("postgres"),
        pgflow_core::PgflowOptions {
            acquire_timeout: std::time::Duration::from_millis(500),
            ..pgflow_core::PgflowOptions::default()
        },
    )
    .await
    .expect("connect");
    flow.migrate().await.expect("migrate");
    (pg, flow)
}
