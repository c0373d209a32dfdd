//! The plans the pool's sessions make are generic (planned once per
//! connection): an ack prepared while the queue was empty must still find
//! its rows by key when the queue is deep.

use crate::support::{db, msg, queue};

#[tokio::test]
async fn an_ack_planned_on_an_empty_queue_finds_rows_by_key() {
    let t = db().await;
    let q = queue(&t.pgflow, "plans", 3).await;
    let mut conn = t.pgflow.pool().acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("SELECT current_setting('plan_cache_mode')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(mode, "force_generic_plan");
    // The ack's shape (`ack_ctes!`), prepared while the table is empty.
    sqlx::query(
        "PREPARE ack_plan(uuid[], uuid[]) AS
         DELETE FROM pgflow.messages m
          WHERE m.id = ANY($1::uuid[])
            AND m.lease = ($2::uuid[])[array_position($1::uuid[], m.id)]
            AND m.visible_at > now()
         RETURNING m.id",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    // Its generic plan is made at the first execution, on the empty table.
    sqlx::query("EXECUTE ack_plan('{}', '{}')")
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
