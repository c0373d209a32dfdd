//! Concurrent claimers never receive the same message under one lease.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Consumers that ack each batch in the statement claiming the next one
/// (`ack_and_claim`), racing while producers keep sending: every message is
/// acked exactly once and no call fails. (Under this load PostgreSQL now
/// and then aborts one statement as a deadlock victim, see
/// `client/deadlock.rs`; `deadlock.rs` provokes that case on purpose.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_acking_with_their_next_claim_ack_each_message_once() {
    let t = db().await;
    let q = queue(&t.pgflow, "pipelined", 3).await;
    const N: i64 = 20_000;
    const BATCH: i64 = 20;
    let mut producers = Vec::new();
    for p in 0..2 {
        let (pg, q) = (t.pgflow.clone(), q.clone());
        producers.push(tokio::spawn(async move {
            for chunk in (0..N / 2 / BATCH).map(|c| p * N / 2 + c * BATCH) {
                let msgs: Vec<_> = (chunk..chunk + BATCH).map(msg).collect();
                pg.send_batch(&q, &msgs).await.unwrap();
            }
        }));
    }
    let acked = Arc::new(Mutex::new(Vec::new()));
    let sent_all = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for _ in 0..12 {
        let (pg, q, acked) = (t.pgflow.clone(), q.clone(), acked.clone());
        let sent_all = sent_all.clone();
        consumers.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            loop {
                // Read before the claim: an empty claim after every send
                // committed means nothing is left for this consumer.
                let done = sent_all.load(Ordering::Acquire);
                let (report, got) = pg
                    .ack_and_claim(&q, &pending, BATCH as usize, &Default::default())
                    .await
                    .expect("ack_and_claim");
                assert!(report.lost.is_empty(), "a lease was lost");
                acked.lock().unwrap().extend(report.acked);
                pending = got.iter().map(|d| d.receipt()).collect();
                if got.is_empty() {
                    if done {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    sent_all.store(true, Ordering::Release);
    for c in consumers {
        c.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let unique: HashSet<_> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "a message was acked twice");
    assert_eq!(acked.len(), N as usize, "every message acked once");
}
