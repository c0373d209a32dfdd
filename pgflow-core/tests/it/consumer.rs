//! The consumer runtime: handlers, outcomes, parallelism, shutdown,
//! supervision, wake-ups and transactional mode.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgflow_core::consumer::{
    handler_fn, typed, ConsumerConfig, ConsumerState, HandlerError, HandlerResult, Runtime,
    TxHandler,
};
use pgflow_core::testing::wait_for;
use pgflow_core::{Delivery, MessageType, OutgoingMessage, Pgflow, QueueName};
use sqlx::PgConnection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{db, msg, n_of, queue};

const WAIT: Duration = Duration::from_secs(20);

/// A running runtime and the token that stops it.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<pgflow_core::Result<()>>,
}

impl Running {
    fn start(rt: Runtime) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(rt.run(stop.clone()));
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("runtime stops in time")
            .expect("runtime task")
            .expect("runtime result");
    }
}

async fn count(pg: &Pgflow, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pg.pool()).await.unwrap()
}

async fn wait_state(
    s: &ConsumerState,
    what: &str,
    f: impl Fn(&pgflow_core::consumer::StateSnapshot) -> bool,
) {
    wait_for(what, WAIT, || async {
        let snap = s.snapshot();
        f(&snap).then_some(())
    })
    .await;
}

#[tokio::test]
async fn every_message_is_handled_once_and_acked() {
    let t = db().await;
    let q = queue(&t.pgflow, "work", 3).await;
    let msgs: Vec<_> = (0..200).map(msg).collect();
    t.pgflow.send_batch(&q, &msgs).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut rt = Runtime::new(t.pgflow.clone());
    let s = seen.clone();
    let state = rt.consumer(
        ConsumerConfig::new(q.clone()).workers(8).batch_size(20),
        handler_fn(move |d: Delivery| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(n_of(&d.payload));
                Ok(())
            }
        }),
    );
    let run = Running::start(rt);
    wait_state(&state, "200 acked", |s| s.succeeded == 200).await;
    run.stop().await;
    let mut got = seen.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    let snap = state.snapshot();
    assert_eq!((snap.processed, snap.failed, snap.in_flight), (200, 0, 0));
    assert!(snap.last_poll.is_some());
    assert_eq!(
        count(&t.pgflow, "SELECT count(*) FROM pgflow.live_messages").await,
        0
    );
    assert_eq!(
        count(&t.pgflow, "SELECT count(*) FROM pgflow.archived_messages").await,
        200
    );
}

#[tokio::test]
async fn fetch_never_exceeds_free_worker_slots() {
    let t = db().await;
    let q = queue(&t.pgflow, "slots", 3).await;
    let msgs: Vec<_> = (0..60).map(msg).collect();
    t.pgflow.send_batch(&q, &msgs).await.unwrap();
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let leased_max = Arc::new(AtomicUsize::new(0));
    let mut rt = Runtime::new(t.pgflow.clone());
    let (n2, m2, l2, pg) = (
        now.clone(),
        max.clone(),
        leased_max.clone(),
        t.pgflow.clone(),
    );
    let state = rt.consumer(
        ConsumerConfig::new(q.clone()).workers(3).batch_size(50),
        handler_fn(move |d: Delivery| {
            let (n, m, l, pg) = (n2.clone(), m2.clone(), l2.clone(), pg.clone());
            async move {
                let c = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(c, Ordering::SeqCst);
                let leased: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pgflow.live_messages WHERE lease = $1",
                )
                .bind(d.lease)
                .fetch_one(pg.pool())
                .await
                .unwrap();
                l.fetch_max(leased as usize, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }),
    );
    let run = Running::start(rt);
    wait_state(&state, "60 acked", |s| s.succeeded == 60).await;
    run.stop().await;
    assert!(
        max.load(Ordering::SeqCst) <= 3,
        "more handlers than workers"
    );
    // One claim = one lease token: no claim took more than the 3 slots,
    // although batch_size allowed 50 and 60 messages were waiting.
    let biggest = leased_max.load(Ordering::SeqCst);
    assert!(biggest >= 1);
    assert!(
        biggest <= 3,
        "claimed beyond free slots: {}",
        leased_max.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn sequential_mode_handles_one_at_a_time_in_queue_order() {
    let t = db().await;
    let q = queue(&t.pgflow, "seq", 3).await;
    let msgs: Vec<_> = (0..30).map(msg).collect();
    t.pgflow.send_batch(&q, &msgs).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(AtomicUsize::new(0));
    let mut rt = Runtime::new(t.pgflow.clone());
    let (s, r) = (seen.clone(), running.clone());
    let state = rt.consumer(
        ConsumerConfig::new(q.clone()).workers(8).parallel(false),
        handler_fn(move |d: Delivery| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                assert_eq!(r.fetch_add(1, Ordering::SeqCst), 0, "two handlers at once");
                tokio::task::yield_now().await;
                s.lock().unwrap().push(n_of(&d.payload));
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }),
    );
    let run = Running::start(rt);
    wait_state(&state, "30 acked", |s| s.succeeded == 30).await;
    run.stop().await;
    assert_eq!(*seen.lock().unwrap(), (0..30).collect::<Vec<_>>());
}

#[tokio::test]
async fn panics_timeouts_and_fatal_errors_never_stop_the_consumer() {
    let t = db().await;
    let q = queue(&t.pgflow, "faulty", 0).await; // no retries: failures land in the DLQ
    for (i, kind) in ["panic", "hang", "fatal", "ok", "ok"].iter().enumerate() {
        let m = OutgoingMessage::new(*kind, serde_json::json!({ "n": i }));
        t.pgflow.send(&q, m).await.unwrap();
    }
    let mut rt = Runtime::new(t.pgflow.clone());
    let state = rt.consumer(
        ConsumerConfig::new(q.clone())
            .workers(5)
            .timeout(Duration::from_millis(300)),
        handler_fn(|d: Delivery| async move {
            match d.msg_type.as_str() {
                "panic" => panic!("boom in handler"),
                "hang" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                }
                "fatal" => Err(HandlerError::fatal("cannot ever work")),
                _ => Ok(()),
            }
        }),
    );
    let run = Running::start(rt);
    wait_state(&state, "2 ok, 3 dead-lettered", |s| {
        s.succeeded == 2 && s.dead_lettered == 3
    })
    .await;
    run.stop().await;
    let errors: Vec<(String, String)> =
        sqlx::query_as("SELECT msg_type, error FROM pgflow.dlq ORDER BY msg_type")
            .fetch_all(t.pgflow.pool())
            .await
            .unwrap();
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[0].0, "fatal");
    assert!(errors[0].1.contains("cannot ever work"));
    assert_eq!(errors[1].0, "hang");
    assert!(
        errors[1].1.contains("timed out after 300 ms"),
        "{}",
        errors[1].1
    );
    assert_eq!(errors[2].0, "panic");
    assert!(
        errors[2].1.contains("panicked: boom in handler"),
        "{}",
        errors[2].1
    );
    assert_eq!(state.snapshot().failed, 3);
}

#[tokio::test]
async fn a_fatal_failure_skips_remaining_retries() {
    let t = db().await;
    let q = queue(&t.pgflow, "fatal_q", 5).await;
    let id = t.pgflow.send(&q, msg(1)).await.unwrap();
    let mut rt = Runtime::new(t.pgflow.clone());
    let state = rt.consumer(
        ConsumerConfig::new(q.clone()),
        handler_fn(|_d| async { Err(HandlerError::fatal("invalid proposal")) }),
    );
    let run = Running::start(rt);
    wait_state(&state, "dead-lettered", |s| s.dead_lettered == 1).await;
    run.stop().await;
    let (attempts, error): (i32, String) =
        sqlx::query_as("SELECT attempts, error FROM pgflow.dlq WHERE id = $1")
            .bind(id)
            .fetch_one(t.pgflow.pool())
            .await
            .unwrap();
    assert_eq!((attempts, error.as_str()), (1, "invalid proposal"));
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Ping {
    n: i64,
}

impl MessageType for Ping {
    const TYPE: &'static str = "ping";
}

#[tokio::test]
async fn typed_handlers_dead_letter_unknown_and_malformed_messages_with_the_reason() {
    let t = db().await;
    let q = queue(&t.pgflow, "typed", 3).await;
    t.pgflow
        .send(&q, OutgoingMessage::typed(&Ping { n: 7 }).unwrap())
        .await
        .unwrap();
    t.pgflow
        .send(
            &q,
            OutgoingMessage::new("pong", serde_json::json!({ "n": 1 })),
        )
        .await
        .unwrap();
    t.pgflow
        .send(
            &q,
            OutgoingMessage::new("ping", serde_json::json!({ "n": "seven" })),
        )
        .await
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let mut rt = Runtime::new(t.pgflow.clone());
    let state = rt.consumer(
        ConsumerConfig::new(q.clone()),
        typed(move |p: Ping, _d| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push(p.n);
                Ok(())
            }
        }),
    );
    let run = Running::start(rt);
    wait_state(&state, "1 ok, 2 dead", |s| {
        s.succeeded == 1 && s.dead_lettered == 2
    })
    .await;
    run.stop().await;
    assert_eq!(*got.lock().unwrap(), vec![7]);
    let errors: Vec<String> = sqlx::query_scalar("SELECT error FROM pgflow.dlq ORDER BY error")
        .fetch_all(t.pgflow.pool())
        .await
        .unwrap();
    assert!(
        errors[0].starts_with("malformed \"ping\" payload"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("unknown message type \"pong\""),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_retryable_failure_is_retried_with_backoff_and_then_succeeds() {
    let t = db().await;
    let q = queue(&t.pgflow, "flaky", 3).await;
    let id = t.pgflow.send(&q, msg(1)).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let mut rt = Runtime::new(t.pgflow.clone());
    let state = rt.consumer(
        ConsumerConfig::new(q.clone()).poll_interval(Duration::from_millis(50)),
        handler_fn(move |_d| {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(HandlerError::retryable("database busy"))
                } else {
                    Ok(())
                }
            }
        }),
    );
    let run = Running::start(rt);
    wait_state(&state, "retry scheduled", |s| s.retried == 1).await;
    // Back-date the backoff instead of waiting for it.
    crate::support::skip_backoff(&t.pgflow, id).await;
    wait_state(&state, "succeeded", |s| s.succeeded == 1).await;
    run.stop().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_work_then_releases_what_did_not_finish() {
    let t = db().await;
    let q = queue(&t.pgflow, "drain", 3).await;
    t.pgflow.send(&q, msg(1)).await.unwrap(); // quick
    t.pgflow
        .send(
            &q,
            OutgoingMessage::new("hang", serde_json::json!({ "n": 2 })),
        )
        .await
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s2 = started.clone();
    let mut rt = Runtime::new(t.pgflow.clone());
    let state = rt.consumer(
        ConsumerConfig::new(q.clone())
            .workers(2)
            .shutdown_timeout(Duration::from_millis(500)),
        handler_fn(move |d: Delivery| {
            let s = s2.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                if d.msg_type == "hang" {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(())
            }
        }),
    );
    let run = Running::start(rt);
    wait_for("both started", WAIT, || async {
        (started.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    run.stop().await;
    // The quick one finished during the drain and was acked...
    assert_eq!(state.snapshot().succeeded, 1);
    // ...the hanging one was released: visible now, no lease.
    let (leased, visible): (bool, bool) = sqlx::query_as(
        "SELECT lease IS NOT NULL, visible_at <= now() FROM pgflow.messages WHERE msg_type = 'hang'",
    )
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!((leased, visible), (false, true));
    assert_eq!(state.snapshot().in_flight, 0);
}

#[tokio::test]
async fn the_supervisor_restarts_a_failed_consumer_loop() {
    let t = db().await;
    let q = queue(&t.pgflow, "supervised", 3).await;
    let mut rt = Runtime::new(t.pgflow.clone());
    let state = rt.consumer(
        ConsumerConfig::new(q.clone()).poll_interval(Duration::from_millis(20)),
        handler_fn(|_d| async { Ok(()) }),
    );
    let run = Running::start(rt);
    wait_state(&state, "first poll", |s| s.last_poll.is_some()).await;
    // Break every claim (a non-connection error): the loop fails and is restarted.
    sqlx::query("ALTER TABLE pgflow.messages RENAME TO messages_away")
        .execute(t.pgflow.pool())
        .await
        .unwrap();
    wait_state(&state, "a restart", |s| s.restarts >= 1).await;
    sqlx::query("ALTER TABLE pgflow.messages_away RENAME TO messages")
        .execute(t.pgflow.pool())
        .await
        .unwrap();
    t.pgflow.send(&q, msg(1)).await.unwrap();
    wait_state(&state, "processing resumed", |s| s.succeeded == 1).await;
    run.stop().await;
}

#[tokio::test]
async fn delivery_continues_after_the_listen_connection_is_terminated() {
    let t = db().await;
    let q = queue(&t.pgflow, "listened", 3).await;
    let (wakeups, listener) =
        pgflow_core::consumer::Wakeups::start(&t.pgflow, CancellationToken::new());
    let mut rt = Runtime::new(t.pgflow.clone()).with_wakeups(wakeups.clone());
    // Polling is effectively off: only NOTIFY can deliver quickly.
    let state = rt.consumer(
        ConsumerConfig::new(q.clone()).poll_interval(Duration::from_secs(3600)),
        handler_fn(|_d| async { Ok(()) }),
    );
    let run = Running::start(rt);
    wait_for("listening", WAIT, || async {
        wakeups.is_listening().then_some(())
    })
    .await;
    wait_state(&state, "first poll", |s| s.last_poll.is_some()).await;
    t.pgflow.send_with_notify(&q, msg(1)).await.unwrap();
    wait_state(&state, "first message", |s| s.succeeded == 1).await;

    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()) k",
    )
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(killed, 1, "one listening backend");
    wait_for("re-listening", WAIT, || async {
        (wakeups.connects() >= 2 && wakeups.is_listening()).then_some(())
    })
    .await;
    t.pgflow.send_with_notify(&q, msg(2)).await.unwrap();
    wait_state(&state, "second message after reconnect", |s| {
        s.succeeded == 2
    })
    .await;
    run.stop().await;
    listener.abort();
}

/// Records each message's effect in the same transaction as its ack.
struct RecordEffect {
    hang_first: Arc<std::sync::atomic::AtomicI64>,
}

#[async_trait::async_trait]
impl TxHandler for RecordEffect {
    async fn handle(&self, tx: &mut PgConnection, d: &Delivery) -> HandlerResult {
        sqlx::query("INSERT INTO effects (message_id) VALUES ($1)")
            .bind(d.id)
            .execute(&mut *tx)
            .await
            .map_err(HandlerError::retryable)?;
        if self.hang_first.fetch_sub(1, Ordering::SeqCst) > 0 {
            // "Crash" after the handler's write, before the ack commits.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn transactional_mode_leaves_no_duplicate_effect_after_a_crash_before_the_ack() {
    let t = db().await;
    let q = queue(&t.pgflow, "txq", 3).await;
    sqlx::query("CREATE TABLE effects (message_id uuid PRIMARY KEY, at timestamptz DEFAULT now())")
        .execute(t.pgflow.pool())
        .await
        .unwrap();
    let msgs: Vec<_> = (0..5).map(msg).collect();
    t.pgflow.send_batch(&q, &msgs).await.unwrap();

    // First run: every handler writes its effect, then "crashes" (is aborted at shutdown).
    let mut rt = Runtime::new(t.pgflow.clone());
    let started = rt.tx_consumer(
        ConsumerConfig::new(q.clone())
            .workers(5)
            .shutdown_timeout(Duration::from_millis(100)),
        RecordEffect {
            hang_first: Arc::new(5.into()),
        },
    );
    let run = Running::start(rt);
    wait_state(&started, "5 in flight", |s| s.in_flight == 5).await;
    run.stop().await;
    assert_eq!(
        count(&t.pgflow, "SELECT count(*) FROM effects").await,
        0,
        "rolled back"
    );

    // Second run: everything is processed exactly once.
    let mut rt = Runtime::new(t.pgflow.clone());
    let state = rt.tx_consumer(
        ConsumerConfig::new(q.clone()).workers(5),
        RecordEffect {
            hang_first: Arc::new(0.into()),
        },
    );
    let run = Running::start(rt);
    wait_state(&state, "5 acked", |s| s.succeeded == 5).await;
    run.stop().await;
    assert_eq!(count(&t.pgflow, "SELECT count(*) FROM effects").await, 5);
    assert_eq!(
        count(&t.pgflow, "SELECT count(*) FROM pgflow.live_messages").await,
        0
    );
    assert_eq!(
        count(&t.pgflow, "SELECT count(*) FROM pgflow.archived_messages").await,
        5
    );
}

#[tokio::test]
async fn configuration_errors_are_reported_before_anything_runs() {
    let t = db().await;
    let unknown = QueueName::new("nope").unwrap();
    let mut rt = Runtime::new(t.pgflow.clone());
    rt.consumer(
        ConsumerConfig::new(unknown),
        handler_fn(|_d| async { Ok(()) }),
    );
    let err = rt.run(CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("unknown queue \"nope\""), "{err}");

    let targeted = QueueName::new("consensus_results_queue").unwrap();
    let mut rt = Runtime::new(t.pgflow.clone());
    rt.consumer(
        ConsumerConfig::new(targeted),
        handler_fn(|_d| async { Ok(()) }),
    );
    let err = rt.run(CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("needs an instance name"), "{err}");
}
