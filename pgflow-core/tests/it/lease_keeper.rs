//! The lease keeper: a consumer leases for the queue's visibility timeout
//! and extends the leases of the messages it is handling, so a long handler
//! keeps its message, a dead process's message is claimable again within
//! seconds, and a lost lease stops the handler without settling it.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use pgflow_core::consumer::{
    handler_fn, ConsumerConfig, ConsumerState, HandlerError, HandlerResult, Runtime, TxHandler,
};
use pgflow_core::testing::wait_for;
use pgflow_core::{Delivery, Pgflow, QueueConfig, QueueName};
use sqlx::PgConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{db, expire_lease, msg};

const WAIT: Duration = Duration::from_secs(20);
/// The lease of the test queues.
const LEASE: Duration = Duration::from_millis(400);

async fn short_lease_queue(pg: &Pgflow, name: &str) -> QueueName {
    let q = QueueName::new(name).unwrap();
    pg.create_queue(&QueueConfig::new(q.clone()).visibility_timeout(LEASE))
        .await
        .unwrap();
    q
}

/// Lease token, lease left (ms) and time since the claim (ms) of message `id`.
async fn lease_of(pg: &Pgflow, id: Uuid) -> Option<(Uuid, f64, f64)> {
    sqlx::query_as(
        "SELECT lease,
                (extract(epoch FROM visible_at - now()) * 1000)::float8,
                (extract(epoch FROM now() - claimed_at) * 1000)::float8
           FROM pgflow.messages WHERE id = $1 AND lease IS NOT NULL",
    )
    .bind(id)
    .fetch_optional(pg.pool())
    .await
    .unwrap()
}

/// Waits until `ids` have been held for five leases, checking at every poll
/// that each is still held under its first lease token, that the lease runs
/// for no more than the queue's visibility timeout (it follows the queue,
/// not the handler timeout), and that no rival claimer gets any of them.
async fn held_for_five_leases(pg: &Pgflow, q: &QueueName, ids: &[Uuid]) {
    let mut tokens = Vec::new();
    for id in ids {
        let (token, _, _) = wait_for("the claim", WAIT, || lease_of(pg, *id)).await;
        tokens.push(token);
    }
    let lease_ms = LEASE.as_millis() as f64;
    wait_for("five leases of handling", WAIT, || async {
        let mut held_ms = f64::MAX;
        for (id, token) in ids.iter().zip(&tokens) {
            let (now_token, left_ms, since_claim_ms) =
                lease_of(pg, *id).await.expect("the message stays claimed");
            assert_eq!(now_token, *token, "the message was claimed again");
            assert!(left_ms > 0.0, "the lease lapsed ({left_ms} ms)");
            assert!(
                left_ms <= lease_ms + 50.0,
                "the lease ({left_ms} ms left) is longer than the queue's visibility timeout"
            );
            held_ms = held_ms.min(since_claim_ms);
        }
        assert!(
            pg.claim(q, 10).await.unwrap().is_empty(),
            "a rival claimed it"
        );
        (held_ms > 5.0 * lease_ms).then_some(())
    })
    .await;
}

async fn archived_attempts(pg: &Pgflow, id: Uuid) -> Option<i32> {
    sqlx::query_scalar("SELECT attempts FROM pgflow.archived_messages WHERE id = $1")
        .bind(id)
        .fetch_optional(pg.pool())
        .await
        .unwrap()
}

async fn wait_state(
    s: &ConsumerState,
    what: &str,
    f: impl Fn(&pgflow_core::consumer::StateSnapshot) -> bool,
) {
    wait_for(what, WAIT, || async { f(&s.snapshot()).then_some(()) }).await;
}

#[tokio::test]
async fn a_handler_running_past_its_lease_keeps_the_message_and_acks_it() {
    let t = db().await;
    let pg = t.pgflow.clone();
    let q = short_lease_queue(&pg, "slow").await;
    let id = pg.send(&q, msg(1)).await.unwrap();
    let release = Arc::new(Notify::new());
    let mut rt = Runtime::new(pg.clone());
    let r = release.clone();
    let state = rt.consumer(
        ConsumerConfig::new(q.clone()).workers(1),
        handler_fn(move |_d: Delivery| {
            let r = r.clone();
            async move {
                r.notified().await;
                Ok(())
            }
        }),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(rt.run(stop.clone()));

    held_for_five_leases(&pg, &q, &[id]).await;
    release.notify_one();
    wait_state(&state, "the ack", |s| s.succeeded == 1).await;
    assert_eq!(
        wait_for("the archive", WAIT, || archived_attempts(&pg, id)).await,
        1,
        "delivered once"
    );
    assert_eq!(state.snapshot().lease_lost, 0);
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// Writes its effect, then waits for `release` before the first message's commit.
struct SlowEffect {
    release: Arc<Notify>,
}

#[async_trait::async_trait]
impl TxHandler for SlowEffect {
    async fn handle(&self, tx: &mut PgConnection, d: &Delivery) -> HandlerResult {
        sqlx::query("INSERT INTO effects (message_id) VALUES ($1)")
            .bind(d.id)
            .execute(&mut *tx)
            .await
            .map_err(HandlerError::retryable)?;
        self.release.notified().await;
        Ok(())
    }
}

#[tokio::test]
async fn a_transactional_batch_keeps_its_leases_while_its_transaction_runs() {
    let t = db().await;
    let pg = t.pgflow.clone();
    let q = short_lease_queue(&pg, "slow_tx").await;
    sqlx::query("CREATE TABLE effects (message_id uuid PRIMARY KEY)")
        .execute(pg.pool())
        .await
        .unwrap();
    let ids = pg.send_batch(&q, &[msg(1), msg(2)]).await.unwrap();
    let release = Arc::new(Notify::new());
    let mut rt = Runtime::new(pg.clone());
    let state = rt.tx_consumer(
        ConsumerConfig::new(q.clone())
            .workers(2)
            .batch_size(2)
            .tx_batch(2),
        SlowEffect {
            release: release.clone(),
        },
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(rt.run(stop.clone()));

    wait_state(&state, "both in one batch", |s| s.in_flight == 2).await;
    held_for_five_leases(&pg, &q, &ids).await;
    // The batch's handlers run one after the other: release each in turn.
    wait_for("both acked", WAIT, || {
        release.notify_one();
        async { (state.snapshot().succeeded == 2).then_some(()) }
    })
    .await;
    for id in &ids {
        assert_eq!(archived_attempts(&pg, *id).await, Some(1), "delivered once");
    }
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(pg.pool())
        .await
        .unwrap();
    assert_eq!(effects, 2);
    assert_eq!(state.snapshot().lease_lost, 0);
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_lost_lease_stops_the_handler_and_nothing_is_settled_under_it() {
    let t = db().await;
    let pg = t.pgflow.clone();
    let q = short_lease_queue(&pg, "fenced").await;
    let id = pg.send(&q, msg(1)).await.unwrap();
    let finished = Arc::new(Notify::new());
    let mut rt = Runtime::new(pg.clone());
    let f = finished.clone();
    let state = rt.consumer(
        ConsumerConfig::new(q.clone()).workers(1),
        handler_fn(move |_d: Delivery| {
            let f = f.clone();
            async move {
                // Would ack once released: it never is, the lease is lost first.
                f.notified().await;
                Ok(())
            }
        }),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(rt.run(stop.clone()));
    let (first, _, _) = wait_for("the claim", WAIT, || lease_of(&pg, id)).await;
    wait_state(&state, "the handler runs", |s| s.in_flight == 1).await;

    // The lease expires (back-dated) and another consumer claims the message.
    expire_lease(&pg, id).await;
    let rival = pg
        .claim(&q, 1)
        .await
        .unwrap()
        .pop()
        .expect("the rival claims it");
    assert_ne!(rival.lease, first);

    // The keeper's next extension is refused: the handler is stopped.
    wait_state(&state, "the lease loss", |s| {
        s.lease_lost == 1 && s.in_flight == 0
    })
    .await;
    finished.notify_one(); // too late: the handler is gone
    let snap = state.snapshot();
    assert_eq!((snap.succeeded, snap.lease_lost), (0, 1), "{snap:?}");
    // Nothing was settled under the old lease: the rival still holds the
    // message, with no failure recorded, and its own ack goes through.
    let (token, _, _) = lease_of(&pg, id).await.expect("still claimed");
    assert_eq!(token, rival.lease);
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM pgflow.messages WHERE id = $1")
            .bind(id)
            .fetch_one(pg.pool())
            .await
            .unwrap();
    assert_eq!(last_error, None);
    pg.ack(rival.receipt()).await.unwrap();
    assert_eq!(archived_attempts(&pg, id).await, Some(2));
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_design_queues_lease_for_three_seconds() {
    let t = db().await;
    for q in ["proposals_for_execution_queue", "code_execution_requests"] {
        let cfg = t
            .pgflow
            .queue_config(&QueueName::new(q).unwrap())
            .await
            .unwrap();
        assert_eq!(cfg.visibility_timeout, Duration::from_secs(3), "{q}");
    }
}

/// With the default settings (the design queue's own lease, the CLI
/// consumer's defaults) a consumer killed mid-handler leaves its message
/// claimable again within 5 s: one lease after its last extension.
#[tokio::test]
async fn a_killed_consumers_message_is_claimed_again_within_five_seconds() {
    let t = db().await;
    let pg = t.pgflow.clone();
    let q = QueueName::new("code_execution_requests").unwrap();
    let id = pg.send(&q, msg(1)).await.unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgflow"))
        .args(["consume", q.as_str(), "--exec", "sleep 600"])
        .env("PGFLOW_DATABASE_URL", &t.url)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pgid = Pid::from_raw(child.id().unwrap() as i32);
    // Claimed, and extended at least once (the heartbeat runs).
    let (_, first_left, _) = wait_for("the claim", WAIT, || lease_of(&pg, id)).await;
    let extended_until = |pg: Pgflow| async move {
        let until: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT visible_at FROM pgflow.messages WHERE id = $1")
                .bind(id)
                .fetch_one(pg.pool())
                .await
                .unwrap();
        until
    };
    let claimed_until = extended_until(pg.clone()).await;
    wait_for("an extension", WAIT, || {
        let pg = pg.clone();
        async move { (extended_until(pg).await > claimed_until).then_some(()) }
    })
    .await;
    assert!(first_left <= 3_050.0, "lease of {first_left} ms");

    // SIGKILL the consumer (and its handler's shell): nothing is released.
    killpg(pgid, Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    child.wait().await.unwrap();
    let d = wait_for("the message again", WAIT, || async {
        pg.claim(&q, 1).await.unwrap().pop()
    })
    .await;
    let took = killed.elapsed();
    assert_eq!((d.id, d.attempts), (id, 2));
    assert!(
        took < Duration::from_secs(5),
        "claimable again after {took:?}"
    );
}
