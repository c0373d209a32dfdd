//! The plans the pool's sessions make: generic (planned once per
//! connection) and never a sequential scan where an index serves, so that
//! an ack prepared while the queue was empty still finds its rows by key
//! when the queue is deep.

use crate::support::{db, msg, queue};

#[tokio::test]
async fn an_ack_planned_on_an_empty_queue_finds_rows_by_key() {
    let t = db().await;
    let q = queue(&t.pgflow, "plans", 3).await;
    let mut conn = t.pgflow.pool().acquire().await.unwrap();
    let settings: (String, String) = sqlx::query_as(
        "SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(settings, ("force_generic_plan".into(), "off".into()));
    // The ack's shape, prepared while the table is empty.
    sqlx::query(
        "PREPARE ack_plan(uuid[], uuid[]) AS
         DELETE FROM pgflow.messages m USING unnest($1::uuid[], $2::uuid[]) AS r(id, lease)
          WHERE m.id = r.id AND m.lease = r.lease AND m.visible_at > now() RETURNING m.id",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let msgs: Vec<_> = (0..2000).map(msg).collect();
    t.pgflow.send_batch(&q, &msgs).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE ack_plan('{}', '{}')")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("messages_pkey"), "{plan}");
    assert!(!plan.contains("Seq Scan on messages"), "{plan}");
    sqlx::query("DEALLOCATE ack_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
}
