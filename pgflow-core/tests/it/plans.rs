//! The plans of the queue's key lookups are generic (planned once per
//! session): an ack planned while the queue table was small must still find
//! its rows by key when the queue is deep. (On a plain session the planner
//! may pick a sequential scan for a small table, depending on its
//! statistics, and keep it: in the runtime benchmark some sessions then
//! read the whole table on every ack.)

use pgflow_core::{Pgflow, QueueName};
use sqlx::PgConnection;

use crate::support::{db, msg, queue};

/// The shape of the row ack in `pgflow.ack` (migrations 13 and 15), as a
/// prepared statement on `conn`.
const PREPARE_ACK: &str = "PREPARE ack_plan(uuid[], uuid[]) AS
     DELETE FROM pgflow.messages m
      WHERE m.id = ANY($1::uuid[])
        AND m.lease = ($2::uuid[])[array_position($1::uuid[], m.id)]
        AND m.visible_at > now()
     RETURNING m.id";

/// A small queue table with fresh statistics (a few pages, as after a
/// vacuum of a quiet queue).
async fn small_queue(pg: &Pgflow, name: &str) -> QueueName {
    let q = queue(pg, name, 3).await;
    pg.send_batch(&q, &(0..40).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    sqlx::query("ANALYZE pgflow.messages")
        .execute(pg.pool())
        .await
        .unwrap();
    q
}

/// Plans the ack on `conn` now (generic plan, first execution), fills the
/// queue, and returns the plan the session then uses.
async fn plan_after_growth(pg: &Pgflow, q: &QueueName, conn: &mut PgConnection) -> String {
    sqlx::query(PREPARE_ACK).execute(&mut *conn).await.unwrap();
    sqlx::query("EXECUTE ack_plan('{}', '{}')")
        .execute(&mut *conn)
        .await
        .unwrap();
    let msgs: Vec<_> = (0..3000).map(msg).collect();
    pg.send_batch(q, &msgs).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE ack_plan('{}', '{}')")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    sqlx::query("DEALLOCATE ack_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    plan.join("\n")
}

#[tokio::test]
async fn the_queue_sessions_keep_key_lookups_planned_on_a_small_table() {
    let t = db().await;
    let q = small_queue(&t.pgflow, "plans").await;
    let mut conn = t.pgflow.queue_pool().acquire().await.unwrap();
    // No sequential scan, and no JIT: with sequential scans priced out, a
    // statement whose row-level security policy reads a small table has a
    // huge estimated cost, and JIT would compile it on every execution.
    let settings: (String, String, String) = sqlx::query_as(
        "SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan'),
                current_setting('jit')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        settings,
        ("force_generic_plan".into(), "off".into(), "off".into())
    );
    let plan = plan_after_growth(&t.pgflow, &q, &mut conn).await;
    assert!(plan.contains("messages_pkey"), "{plan}");
    assert!(!plan.contains("Seq Scan on messages"), "{plan}");
}

/// Sequential scans of the queue table counted by this session and not yet
/// flushed to the statistics (a difference of two readings is exact).
async fn seq_scans(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relid = 'pgflow.messages'::regclass",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_ack_inside_a_callers_transaction_reads_no_table_scan() {
    let t = db().await;
    let pg = &t.pgflow;
    let q = small_queue(pg, "plans_tx").await;
    let mut conn = pg.pool().acquire().await.unwrap();
    // The session plans `pgflow.ack` while the table is small...
    let first = pg.claim(&q, 1).await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    pg.ack_many_in_tx(&mut tx, &[first[0].receipt()])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // ...and uses that plan once the queue is deep.
    pg.send_batch(&q, &(0..3000).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let batch = pg.claim(&q, 5).await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let before = seq_scans(&mut tx).await;
    let report = pg
        .ack_many_in_tx(
            &mut tx,
            &batch.iter().map(|d| d.receipt()).collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(report.acked.len(), 5);
    assert_eq!(
        seq_scans(&mut tx).await,
        before,
        "the ack scanned the queue table"
    );
    tx.commit().await.unwrap();
}
