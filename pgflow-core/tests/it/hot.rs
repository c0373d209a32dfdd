//! Claims rewrite rows in place: every claim is a heap-only (HOT) update,
//! adding no index entries, even when one claim takes every row of the
//! pages at the head of the queue (migration 14's fillfactor).

use std::time::{Duration, Instant};

use pgflow_core::{ClaimOptions, OutgoingMessage};

use crate::support::{db, queue, send_rows};

/// A message the size of a seed proposal (~250 bytes of JSON).
fn proposal_sized(n: i64) -> OutgoingMessage {
    OutgoingMessage::new(
        "test",
        serde_json::json!({ "n": n, "text": "x".repeat(220) }),
    )
}

#[tokio::test]
async fn batch_claims_are_heap_only_updates() {
    let t = db().await;
    let q = queue(&t.pgflow, "hot", 3).await;
    let total = 600;
    for chunk in 0..total / 100 {
        let msgs: Vec<_> = (0..100).map(|i| proposal_sized(chunk * 100 + i)).collect();
        send_rows(&t.pgflow, &q, &msgs).await;
    }
    // Claims of 100 (whole pages), half of them acking the previous batch
    // in the same statement, as a busy consumer does.
    let mut claimed = t.pgflow.claim(&q, 100).await.unwrap().len();
    let mut pending = Vec::new();
    while claimed < total as usize {
        let (_, got) = t
            .pgflow
            .ack_and_claim(&q, &pending, 100, &ClaimOptions::default())
            .await
            .unwrap();
        assert!(!got.is_empty(), "the queue ran dry after {claimed}");
        claimed += got.len();
        pending = got.iter().map(|d| d.receipt()).collect();
    }

    // A session reports its statistics when it ends (an idle one only
    // every ten seconds): end the claiming sessions, then wait for all the
    // updates to show.
    t.pgflow.queue_pool().close().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (updates, hot) = loop {
        let (updates, hot): (i64, i64) = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
              WHERE schemaname = 'pgflow' AND relname = 'messages'",
        )
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap();
        if updates >= total || Instant::now() > deadline {
            break (updates, hot);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(updates >= total, "only {updates} claim updates counted");
    assert_eq!(
        hot,
        updates,
        "{} of {updates} claims were not HOT",
        updates - hot
    );
}
