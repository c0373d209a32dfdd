//! Messages survive a PostgreSQL crash and restart.

use pgflow_core::local_pg::{LocalPostgres, StopMode};
use pgflow_core::Pgflow;

use crate::support::{expire_lease, msg, n_of, queue};

#[tokio::test]
async fn messages_survive_a_postgres_restart() {
    // A cluster of this test's own: it is stopped and started.
    let mut pg = tokio::task::spawn_blocking(LocalPostgres::start)
        .await
        .unwrap()
        .unwrap();
    let url = pg.url("postgres");
    let flow = Pgflow::connect(&url).await.unwrap();
    flow.migrate().await.unwrap();
    let q = queue(&flow, "durable", 3).await;
    flow.send_batch(&q, &(0..100).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let in_flight = flow.claim(&q, 10).await.unwrap();
    flow.close().await;

    // Crash (no checkpoint) and start again.
    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop(StopMode::Immediate).unwrap();
        pg.start_again().unwrap();
        pg
    })
    .await
    .unwrap();
    let flow = Pgflow::connect(&url).await.unwrap();
    let stats = flow.get_queue_stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (90, 10));
    // The messages in flight at the crash are delivered again once their lease ends.
    for d in &in_flight {
        expire_lease(&flow, d.id).await;
    }
    let mut all = Vec::new();
    loop {
        let got = flow.claim(&q, 50).await.unwrap();
        if got.is_empty() {
            break;
        }
        all.extend(got.iter().map(|d| n_of(&d.payload)));
        flow.ack_batch(&got.iter().map(|d| d.receipt()).collect::<Vec<_>>())
            .await
            .unwrap();
    }
    all.sort();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    flow.close().await;
    tokio::task::spawn_blocking(move || pg.stop(StopMode::Fast))
        .await
        .unwrap()
        .unwrap();
}
