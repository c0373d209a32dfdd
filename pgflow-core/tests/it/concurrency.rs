//! Concurrent claimers never receive the same message under one lease.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::support::{db, msg, queue};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_get_each_message_once() {
    let t = db().await;
    let q = queue(&t.pgflow, "contended", 3).await;
    const N: i64 = 3000;
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        t.pgflow
            .send_batch(&q, &chunk.iter().map(|n| msg(*n)).collect::<Vec<_>>())
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for worker in 0..12 {
        let pg = t.pgflow.clone();
        let q = q.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let got = pg.claim(&q, 1 + worker % 7).await.unwrap();
                if got.is_empty() {
                    break;
                }
                let receipts: Vec<_> = got.iter().map(|d| d.receipt()).collect();
                seen.lock().unwrap().extend(got.iter().map(|d| d.id));
                let report = pg.ack_batch(&receipts).await.unwrap();
                assert!(report.lost.is_empty());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(
        seen.len(),
        N as usize,
        "every message delivered exactly once"
    );
    assert_eq!(unique.len(), N as usize, "no message delivered twice");
    let stats = t.pgflow.get_queue_stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 0));
}
