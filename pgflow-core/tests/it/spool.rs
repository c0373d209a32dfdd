//! The outage spool: publishing while PostgreSQL is unreachable loses
//! nothing, keeps order, is bounded, and survives a crash of the publisher.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgflow_core::local_pg::StopMode;
use pgflow_core::testing::wait_for;
use pgflow_core::{
    Error, OutgoingMessage, Pgflow, PgflowOptions, Published, Publisher, QueueName, SpoolConfig,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{db, msg, n_of, queue};

/// A handle on a port nobody listens on: every send fails with a pool
/// timeout after `acquire_timeout`, like a database that is down.
fn unreachable(options: PgflowOptions) -> Pgflow {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let connect: PgConnectOptions = format!("postgres://postgres@127.0.0.1:{port}/none")
        .parse()
        .unwrap();
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy_with(connect);
    Pgflow::from_pool(pool, options)
}

/// Ids of the messages of `q`, in queue order (`seq`).
async fn ids_in_queue(pg: &Pgflow, q: &QueueName) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT id FROM pgflow.messages WHERE queue_name = $1 ORDER BY seq")
        .bind(q.as_str())
        .fetch_all(pg.pool())
        .await
        .unwrap()
}

/// Spools `msgs` to `q` through a publisher whose database is unreachable,
/// then drops it (as a crash would); returns the ids.
async fn spool_offline(
    dir: &std::path::Path,
    q: &QueueName,
    msgs: Vec<OutgoingMessage>,
) -> Vec<Uuid> {
    let offline = Publisher::open(unreachable(PgflowOptions::default()), SpoolConfig::new(dir))
        .await
        .unwrap();
    let before = offline.spooled();
    let mut ids = Vec::new();
    for m in msgs {
        let published = offline.publish(q, m).await.unwrap();
        assert!(published.is_spooled(), "{published:?}");
        ids.push(published.id());
    }
    assert_eq!(offline.spooled(), before + ids.len());
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_through_a_postgres_restart_loses_nothing_and_keeps_order() {
    // A cluster of this test's own: it is stopped and started.
    let (mut pg, flow) = crate::support::own_cluster().await;
    let queues = Arc::new(vec![
        queue(&flow, "spool_a", 3).await,
        queue(&flow, "spool_b", 3).await,
        queue(&flow, "spool_c", 3).await,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let publisher = Publisher::open(flow.clone(), SpoolConfig::new(dir.path()))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let replayer = publisher.spawn_replayer(shutdown.clone());

    const PRODUCERS: usize = 4;
    let stop = CancellationToken::new();
    let sent = Arc::new(AtomicUsize::new(0));
    let spooled = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (publisher, queues, stop) = (publisher.clone(), queues.clone(), stop.clone());
            let (sent, spooled) = (sent.clone(), spooled.clone());
            tokio::spawn(async move {
                // (queue, i) in publish order.
                let mut log = Vec::new();
                let mut i = 0usize;
                while !stop.is_cancelled() {
                    let q = &queues[(p + i) % queues.len()];
                    let m = OutgoingMessage::new("test", serde_json::json!({ "p": p, "i": i }));
                    let published = if p % 2 == 0 {
                        publisher.publish(q, m).await
                    } else {
                        publisher.publish_with_notify(q, m).await
                    };
                    match published {
                        Ok(Published::Sent(_)) => sent.fetch_add(1, Ordering::SeqCst),
                        Ok(Published::Spooled(_)) => spooled.fetch_add(1, Ordering::SeqCst),
                        Err(e) => panic!("producer {p}, message {i}: {e}"),
                    };
                    log.push((q.clone(), i));
                    i += 1;
                }
                log
            })
        })
        .collect();

    let at_least = |counter: &Arc<AtomicUsize>, n: usize| {
        let counter = counter.clone();
        move || {
            let counter = counter.clone();
            async move { (counter.load(Ordering::SeqCst) >= n).then_some(()) }
        }
    };
    wait_for(
        "direct sends",
        Duration::from_secs(30),
        at_least(&sent, 200),
    )
    .await;

    // The server goes away mid-stream: publishes now return Spooled.
    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop(StopMode::Immediate).unwrap();
        pg
    })
    .await
    .unwrap();
    wait_for(
        "spooled publishes",
        Duration::from_secs(30),
        at_least(&spooled, 300),
    )
    .await;
    assert!(publisher.spooled() > 0);

    // Back again: the replayer drains the spool and publishes go direct again.
    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again().unwrap();
        pg
    })
    .await
    .unwrap();
    let sent_before = sent.load(Ordering::SeqCst);
    wait_for(
        "direct sends after the restart",
        Duration::from_secs(60),
        at_least(&sent, sent_before + 200),
    )
    .await;
    stop.cancel();
    let mut logs = Vec::new();
    for p in producers {
        logs.push(p.await.unwrap());
    }
    let drained = publisher.clone();
    wait_for("the spool to drain", Duration::from_secs(30), move || {
        let drained = drained.clone();
        async move { (drained.spooled() == 0).then_some(()) }
    })
    .await;
    shutdown.cancel();
    replayer.await.unwrap();

    // Every message exactly once, and per producer (so per queue too) in
    // publish order.
    let rows: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT queue_name, payload FROM pgflow.messages ORDER BY seq")
            .fetch_all(flow.pool())
            .await
            .unwrap();
    let total: usize = logs.iter().map(Vec::len).sum();
    assert_eq!(rows.len(), total, "every published message is queued once");
    let mut per_producer: HashMap<usize, Vec<(String, usize)>> = HashMap::new();
    for (q, payload) in rows {
        let p = payload["p"].as_u64().unwrap() as usize;
        let i = payload["i"].as_u64().unwrap() as usize;
        per_producer.entry(p).or_default().push((q, i));
    }
    for (p, log) in logs.iter().enumerate() {
        let expected: Vec<(String, usize)> = log.iter().map(|(q, i)| (q.to_string(), *i)).collect();
        assert_eq!(
            per_producer.remove(&p).unwrap_or_default(),
            expected,
            "producer {p}: queue order differs from publish order"
        );
    }
    let (sent, spooled) = (sent.load(Ordering::SeqCst), spooled.load(Ordering::SeqCst));
    assert!(
        sent >= 400 && spooled >= 300,
        "sent {sent}, spooled {spooled}"
    );
    flow.close().await;
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

#[tokio::test]
async fn a_full_spool_refuses_with_a_clear_error_and_keeps_what_it_has() {
    let t = db().await;
    let q = queue(&t.pgflow, "spool_full", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let offline = Publisher::open(
        unreachable(PgflowOptions::default()),
        SpoolConfig {
            max_messages: 5,
            ..SpoolConfig::new(dir.path())
        },
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        let published = offline.publish(&q, msg(n)).await.unwrap();
        assert!(published.is_spooled());
        ids.push(published.id());
    }
    let err = offline.publish(&q, msg(5)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SpoolFull {
                messages: 5,
                max_messages: 5,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("is full") && text.contains("5 messages") && text.contains("max_messages"),
        "the error names the limit and the fix: {text}"
    );
    assert_eq!(offline.spooled(), 5, "nothing spooled was dropped");
    drop(offline);

    // The byte limit too.
    let small = tempfile::tempdir().unwrap();
    let tiny = Publisher::open(
        unreachable(PgflowOptions::default()),
        SpoolConfig {
            max_bytes: 2_000,
            ..SpoolConfig::new(small.path())
        },
    )
    .await
    .unwrap();
    let big = OutgoingMessage::new("test", serde_json::json!({ "pad": "x".repeat(3_000) }));
    let err = tiny.publish(&q, big).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SpoolFull {
                max_bytes: 2_000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(tiny.spooled(), 0);

    // The full spool, reopened on a reachable database, delivers all five.
    let online = Publisher::open(t.pgflow.clone(), SpoolConfig::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(online.spooled(), 5);
    assert_eq!(online.flush().await.unwrap(), 5);
    assert_eq!(online.spooled(), 0);
    assert_eq!(ids_in_queue(&t.pgflow, &q).await, ids);
}

#[tokio::test]
async fn a_spool_left_by_a_crash_is_delivered_on_reopen_and_a_torn_line_is_skipped() {
    let t = db().await;
    let q = queue(&t.pgflow, "spool_crash", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ids = spool_offline(dir.path(), &q, (0..10).map(msg).collect()).await;
    // The crash cut the last append short.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("spool.jsonl"))
        .unwrap();
    file.write_all(br#"{"n":11,"queue":"spool_crash","notify":false,"id":"0190"#)
        .unwrap();
    drop(file);

    let publisher = Publisher::open(t.pgflow.clone(), SpoolConfig::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(publisher.spooled(), 10, "the torn line is skipped");
    // A new publish queues up behind the earlier run's messages.
    let published = publisher.publish(&q, msg(10)).await.unwrap();
    assert!(published.is_spooled());
    ids.push(published.id());

    let shutdown = CancellationToken::new();
    let replayer = publisher.spawn_replayer(shutdown.clone());
    let drained = publisher.clone();
    wait_for("the spool to drain", Duration::from_secs(30), move || {
        let drained = drained.clone();
        async move { (drained.spooled() == 0).then_some(()) }
    })
    .await;
    shutdown.cancel();
    replayer.await.unwrap();
    assert_eq!(ids_in_queue(&t.pgflow, &q).await, ids);
    let got = t.pgflow.claim(&q, 20).await.unwrap();
    let ns: Vec<i64> = got.iter().map(|d| n_of(&d.payload)).collect();
    assert_eq!(ns, (0..=10).collect::<Vec<_>>());

    // Drained: publishing is direct again, and a reopen finds nothing left.
    assert!(matches!(
        publisher.publish(&q, msg(11)).await.unwrap(),
        Published::Sent(_)
    ));
    drop(publisher);
    let reopened = Publisher::open(t.pgflow.clone(), SpoolConfig::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(reopened.spooled(), 0);
}

#[tokio::test]
async fn errors_other_than_connection_errors_are_not_spooled() {
    let t = db().await;
    let q = queue(&t.pgflow, "spool_errors", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let publisher = Publisher::open(t.pgflow.clone(), SpoolConfig::new(dir.path()))
        .await
        .unwrap();
    let missing = QueueName::new("spool_no_such_queue").unwrap();
    let err = publisher.publish(&missing, msg(1)).await.unwrap_err();
    assert!(matches!(err, Error::UnknownQueue(_)), "{err}");
    assert_eq!(publisher.spooled(), 0);
    assert!(matches!(
        publisher.publish(&q, msg(2)).await.unwrap(),
        Published::Sent(_)
    ));

    // Invalid messages are refused at once even while the database is down.
    let offline_dir = tempfile::tempdir().unwrap();
    let offline = Publisher::open(
        unreachable(PgflowOptions {
            max_payload_bytes: 100,
            ..PgflowOptions::default()
        }),
        SpoolConfig::new(offline_dir.path()),
    )
    .await
    .unwrap();
    let err = offline
        .publish(&q, OutgoingMessage::new("", serde_json::json!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMessage(_)), "{err}");
    let big = OutgoingMessage::new("test", serde_json::json!({ "pad": "x".repeat(200) }));
    let err = offline.publish(&q, big).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");
    assert_eq!(offline.spooled(), 0);
    assert!(offline.publish(&q, msg(3)).await.unwrap().is_spooled());
    assert_eq!(offline.spooled(), 1);
}

#[tokio::test]
async fn replay_is_idempotent_and_sets_aside_messages_of_a_missing_queue() {
    let t = db().await;
    let q = queue(&t.pgflow, "spool_replay", 3).await;
    let gone = QueueName::new("spool_gone").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = msg(0);
    let mut ids = spool_offline(dir.path(), &q, vec![first.clone(), msg(1)]).await;
    // Spooled while the database was down, so its queue could not be checked.
    spool_offline(dir.path(), &gone, vec![msg(99)]).await;
    ids.extend(spool_offline(dir.path(), &q, vec![msg(2)]).await);
    // The first message already reached the queue (as after a commit whose
    // acknowledgement was lost): the replay must not queue it twice.
    t.pgflow.send_batch(&q, &[first]).await.unwrap();

    let publisher = Publisher::open(t.pgflow.clone(), SpoolConfig::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(publisher.spooled(), 4);
    assert_eq!(publisher.flush().await.unwrap(), 3);
    assert_eq!(publisher.spooled(), 0);
    assert_eq!(ids_in_queue(&t.pgflow, &q).await, ids);
    let rejected = std::fs::read_to_string(dir.path().join("rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count(), 1, "{rejected}");
    assert!(rejected.contains("unknown queue"), "{rejected}");
}
