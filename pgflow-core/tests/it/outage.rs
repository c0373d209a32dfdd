//! A consumer outlives a database outage: it backs off while PostgreSQL is
//! down and resumes by itself (claims, acks and wake-ups) when it is back.

use std::time::Duration;

use pgflow_core::consumer::{handler_fn, ConsumerConfig, Runtime};
use pgflow_core::local_pg::StopMode;
use pgflow_core::testing::wait_for;
use tokio_util::sync::CancellationToken;

use crate::support::{msg, queue};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_back_off_during_an_outage_and_resume_by_themselves() {
    let (mut pg, flow) = crate::support::own_cluster().await;
    let q = queue(&flow, "outage_q", 3).await;
    let stop = CancellationToken::new();
    let mut rt = Runtime::new(flow.clone());
    let state = rt.consumer(
        ConsumerConfig::new(q.clone()).poll_interval(Duration::from_millis(100)),
        handler_fn(|_d| async { Ok(()) }),
    );
    let run = tokio::spawn(rt.run(stop.clone()));
    for n in 0..10 {
        flow.send_with_notify(&q, msg(n)).await.unwrap();
    }
    wait_for("10 handled", Duration::from_secs(20), || async {
        (state.snapshot().succeeded == 10).then_some(())
    })
    .await;

    pg = tokio::task::spawn_blocking(move || {
        pg.stop(StopMode::Immediate).unwrap();
        pg
    })
    .await
    .unwrap();
    // While it is down the consumer keeps polling (and failing) without dying.
    let polled = state.snapshot().last_poll;
    wait_for(
        "polls during the outage",
        Duration::from_secs(20),
        || async { (state.snapshot().last_poll > polled).then_some(()) },
    )
    .await;
    assert!(!run.is_finished());

    pg = tokio::task::spawn_blocking(move || {
        pg.start_again().unwrap();
        pg
    })
    .await
    .unwrap();
    wait_for("the database back", Duration::from_secs(30), || async {
        flow.send_with_notify(&q, msg(100)).await.ok()
    })
    .await;
    for n in 101..110 {
        flow.send_with_notify(&q, msg(n)).await.unwrap();
    }
    wait_for(
        "20 handled after the outage",
        Duration::from_secs(30),
        || async { (state.snapshot().succeeded == 20).then_some(()) },
    )
    .await;
    assert_eq!(
        state.snapshot().restarts,
        0,
        "connection errors back off, no restart"
    );
    stop.cancel();
    run.await.unwrap().unwrap();
    drop(pg);
}

/// Sessions the server ends while their connections sit in the pool
/// (`pg_terminate_backend`, as a failover or restart would). With
/// `ping_idle_after = 0` every use pings first, so the next call reconnects
/// unseen. With the default (1 s), a call on a connection used just before
/// skips the ping and may fail with a connection error; the pool then
/// drops that connection and the call after it succeeds.
#[tokio::test]
async fn sessions_ended_while_pooled_are_replaced() {
    let t = crate::support::db().await;
    for (ping_idle_after, always_pinged) in [
        (Duration::ZERO, true),
        (pgflow_core::client::PING_IDLE_AFTER, false),
    ] {
        let name = format!("pool_ping_{}", ping_idle_after.as_millis());
        let pg = pgflow_core::Pgflow::connect_with(
            &t.url,
            pgflow_core::PgflowOptions {
                max_connections: 1,
                application_name: name.clone(),
                ping_idle_after,
                ..pgflow_core::PgflowOptions::default()
            },
        )
        .await
        .unwrap();
        let q = queue(&pg, &name, 3).await;
        pg.send(&q, msg(0)).await.unwrap();

        let sessions = || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(&name)
            .fetch_one(t.pgflow.pool())
            .await
            .unwrap();
            n
        };
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_all(t.pgflow.pool())
        .await
        .unwrap();
        assert!(!ended.is_empty() && ended.iter().all(|e| *e), "{ended:?}");
        wait_for("the sessions to end", Duration::from_secs(10), || async {
            (sessions().await == 0).then_some(())
        })
        .await;

        match pg.send(&q, msg(1)).await {
            Ok(_) => {}
            Err(e) => {
                assert!(!always_pinged, "a pinged connection was used: {e}");
                assert!(e.is_connection(), "not a connection error: {e}");
            }
        }
        pg.send(&q, msg(2))
            .await
            .expect("the next call gets a new connection");
        assert!(sessions().await >= 1);
    }
}
