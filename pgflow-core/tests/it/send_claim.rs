//! Sending and claiming: FIFO, priority, delays, batches, transactions, validation.

use std::time::Duration;

use pgflow_core::{priority, Error, OutgoingMessage, QueueName};

use crate::support::{db, msg, n_of, queue};

#[tokio::test]
async fn fifo_within_a_priority() {
    let t = db().await;
    let q = queue(&t.pgflow, "fifo", 3).await;
    for n in 0..5 {
        t.pgflow.send(&q, msg(n)).await.unwrap();
    }
    t.pgflow
        .send_batch(&q, &(5..20).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let got = t.pgflow.claim(&q, 3).await.unwrap();
        if got.is_empty() {
            break;
        }
        seen.extend(got.iter().map(|d| n_of(&d.payload)));
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn higher_priority_first_then_fifo() {
    let t = db().await;
    let q = queue(&t.pgflow, "prio", 3).await;
    let batch = vec![
        msg(1).priority(priority::LOW),
        msg(2),
        msg(3).priority(priority::HIGH),
        msg(4),
        msg(5).priority(priority::HIGH),
        msg(6).priority(priority::LOW),
    ];
    t.pgflow.send_batch(&q, &batch).await.unwrap();
    let got = t.pgflow.claim(&q, 10).await.unwrap();
    let order: Vec<i64> = got.iter().map(|d| n_of(&d.payload)).collect();
    assert_eq!(order, vec![3, 5, 2, 4, 1, 6]);
}

#[tokio::test]
async fn delayed_message_is_invisible_until_due() {
    let t = db().await;
    let q = queue(&t.pgflow, "delayed", 3).await;
    let id = t
        .pgflow
        .send(&q, msg(1).delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(t.pgflow.claim(&q, 10).await.unwrap().is_empty());
    let stats = t.pgflow.get_queue_stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.delayed), (0, 1));
    crate::support::expire_lease(&t.pgflow, id).await; // back-date the delay
    let got = t.pgflow.claim(&q, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
}

#[tokio::test]
async fn envelope_round_trips() {
    let t = db().await;
    let q = queue(&t.pgflow, "envelope", 3).await;
    let trace = uuid::Uuid::now_v7();
    let m = OutgoingMessage::new(
        "proposal_for_consensus",
        serde_json::json!({"proposal_id": "p1"}),
    )
    .trace_id(trace)
    .source("singularity_1")
    .schema_version(2)
    .priority(5);
    let id = t.pgflow.send_with_notify(&q, m).await.unwrap();
    let d = t.pgflow.claim(&q, 1).await.unwrap().pop().unwrap();
    assert_eq!(d.id, id);
    assert_eq!(d.msg_type, "proposal_for_consensus");
    assert_eq!(d.trace_id, trace);
    assert_eq!(d.source.as_deref(), Some("singularity_1"));
    assert_eq!(d.schema_version, 2);
    assert_eq!(d.priority, 5);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.max_retries, 3);
    assert!(d.lease_expires_at > chrono::Utc::now());
    #[derive(serde::Deserialize)]
    struct P {
        proposal_id: String,
    }
    assert_eq!(d.decode::<P>().unwrap().proposal_id, "p1");
}

#[tokio::test]
async fn targeted_messages_reach_only_their_target() {
    let t = db().await;
    let q = queue(&t.pgflow, "targeted", 3).await;
    t.pgflow
        .send(&q, msg(1).target("singularity_2"))
        .await
        .unwrap();
    t.pgflow.send(&q, msg(2)).await.unwrap();
    let opts1 = pgflow_core::ClaimOptions::for_target("singularity_1");
    let opts2 = pgflow_core::ClaimOptions::for_target("singularity_2");
    assert!(t
        .pgflow
        .claim_with(&q, 10, &opts1)
        .await
        .unwrap()
        .is_empty());
    let got = t.pgflow.claim_with(&q, 10, &opts2).await.unwrap();
    assert_eq!(
        got.iter().map(|d| n_of(&d.payload)).collect::<Vec<_>>(),
        vec![1]
    );
    let got = t.pgflow.claim(&q, 10).await.unwrap();
    assert_eq!(
        got.iter().map(|d| n_of(&d.payload)).collect::<Vec<_>>(),
        vec![2]
    );
}

#[tokio::test]
async fn send_in_callers_transaction_is_atomic() {
    let t = db().await;
    let q = queue(&t.pgflow, "txq", 3).await;
    sqlx::query("CREATE TABLE app_rows (n int)")
        .execute(t.pgflow.pool())
        .await
        .unwrap();

    // Rolled back: neither the row nor the message exists.
    let mut tx = t.pgflow.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO app_rows VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    t.pgflow
        .send_in_tx(&mut tx, &q, &[msg(1)], true)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(t.pgflow.claim(&q, 10).await.unwrap().is_empty());

    // Committed: both exist; before the commit the message is invisible.
    let mut tx = t.pgflow.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO app_rows VALUES (2)")
        .execute(&mut *tx)
        .await
        .unwrap();
    t.pgflow
        .send_in_tx(&mut tx, &q, &[msg(2)], true)
        .await
        .unwrap();
    assert!(t.pgflow.claim(&q, 10).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    let got = t.pgflow.claim(&q, 10).await.unwrap();
    assert_eq!(n_of(&got[0].payload), 2);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM app_rows")
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn notify_fires_once_per_batch_on_commit() {
    let t = db().await;
    let q = queue(&t.pgflow, "notified", 3).await;
    let mut listener = sqlx::postgres::PgListener::connect(&t.url).await.unwrap();
    listener.listen(pgflow_core::NOTIFY_CHANNEL).await.unwrap();
    t.pgflow
        .send_batch_with_notify(&q, &(0..50).map(msg).collect::<Vec<_>>())
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.payload(), "notified");
    // No second notification for the same batch.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error() {
    let t = db().await;
    let q = queue(&t.pgflow, "valid", 3).await;
    let unknown = QueueName::new("no_such_queue").unwrap();
    let err = t.pgflow.send(&unknown, msg(1)).await.unwrap_err();
    assert!(
        matches!(err, Error::UnknownQueue(ref n) if n == "no_such_queue"),
        "{err}"
    );

    let big = OutgoingMessage::new("t", serde_json::json!({"x": "a".repeat(2 * 1024 * 1024)}));
    let err = t.pgflow.send(&q, big).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");

    let err = OutgoingMessage::from_json_str("t", "{\"unterminated\": ").unwrap_err();
    assert!(matches!(err, Error::InvalidJson(_)), "{err}");

    // Injection through a queue name never reaches SQL.
    let err = QueueName::new("x'; DROP TABLE pgflow.messages; --").unwrap_err();
    assert!(matches!(err, Error::InvalidQueueName { .. }));
    // The database enforces the same rule.
    let res = sqlx::query("INSERT INTO pgflow.queues (queue_name) VALUES ('Bad Name')")
        .execute(t.pgflow.pool())
        .await;
    assert!(res.is_err());
    // Nothing was written by the refused sends.
    assert!(t.pgflow.claim(&q, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn resending_a_live_message_id_is_idempotent() {
    let t = db().await;
    let q = queue(&t.pgflow, "idem", 3).await;
    let m = msg(7);
    t.pgflow.send(&q, m.clone()).await.unwrap();
    t.pgflow.send(&q, m).await.unwrap();
    assert_eq!(t.pgflow.claim(&q, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_single_sends_are_coalesced_and_each_caller_gets_its_own_outcome() {
    let t = db().await;
    let q = queue(&t.pgflow, "coalesced", 3).await;
    let missing = QueueName::new("not_created").unwrap();
    let mut tasks = Vec::new();
    for n in 0..400i64 {
        let (pg, q, missing) = (t.pgflow.clone(), q.clone(), missing.clone());
        tasks.push(tokio::spawn(async move {
            // Every tenth caller targets a queue that does not exist.
            let target = if n % 10 == 0 { &missing } else { &q };
            (n, pg.send_with_notify(target, msg(n)).await)
        }));
    }
    let mut ok = Vec::new();
    for task in tasks {
        let (n, res) = task.await.unwrap();
        if n % 10 == 0 {
            assert!(matches!(res, Err(Error::UnknownQueue(_))), "{n}: {res:?}");
        } else {
            ok.push((n, res.unwrap()));
        }
    }
    assert_eq!(ok.len(), 360);
    // Each successful send is committed when its call returns.
    let got = t.pgflow.claim(&q, 1000).await.unwrap();
    let mut ids: Vec<_> = got.iter().map(|d| d.id).collect();
    let mut sent: Vec<_> = ok.iter().map(|(_, id)| *id).collect();
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent);
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct RollbackTrigger {
    proposal_id: String,
    instance_id: String,
    reason: String,
}

impl pgflow_core::MessageType for RollbackTrigger {
    const TYPE: &'static str = "rollback_trigger";
    const SCHEMA_VERSION: i32 = 3;
}

#[tokio::test]
async fn typed_payloads_carry_their_type_and_schema_version() {
    let t = db().await;
    let q = queue(&t.pgflow, "typed", 3).await;
    let trigger = RollbackTrigger {
        proposal_id: "p1".into(),
        instance_id: "singularity_1".into(),
        reason: "error_rate_breach".into(),
    };
    let m = OutgoingMessage::typed(&trigger)
        .unwrap()
        .priority(priority::HIGH);
    t.pgflow.send(&q, m).await.unwrap();
    let d = t.pgflow.claim(&q, 1).await.unwrap().pop().unwrap();
    assert!(d.is::<RollbackTrigger>());
    assert_eq!(
        (d.msg_type.as_str(), d.schema_version),
        ("rollback_trigger", 3)
    );
    assert_eq!(d.decode::<RollbackTrigger>().unwrap(), trigger);
    // A payload of the wrong shape is a clear decode error, not a panic.
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Other {
        missing_field: u32,
    }
    let err = d.decode::<Other>().unwrap_err();
    assert!(matches!(err, Error::InvalidJson(_)), "{err}");
}
