//! The sweeper resolves a proposal stuck past its time as failed with the
//! reason, and fences its execution: a retry waiting for its turn is
//! cancelled (dead-lettered with the reason), a late delivery applies
//! nothing, and a handler in flight writes nothing and loses its ack.
//! Fresh and final proposals are left alone.

use std::time::Duration;

use pgflow_core::protocol::{queues, ConsensusStatus};
use pgflow_core::service::ConsumerArgs;
use pgflow_core::testing::wait_for;
use singularity::sweeper::Sweeper;
use uuid::Uuid;

use crate::execution::wait_duplicates;
use crate::support::{http, send_raw_execution, store_raw, Env, DEADLINE};

/// Retries wait minutes: an execution that failed once sits between retries.
const RETRY_DELAY_MS: u32 = 600_000;

/// Back-dates the last state change of proposal `id` by a day.
async fn back_date(env: &Env, id: Uuid) {
    sqlx::query(
        "UPDATE singularity.proposals SET updated_at = now() - interval '1 day' WHERE id = $1",
    )
    .bind(id)
    .execute(env.t.pgflow.pool())
    .await
    .unwrap();
}

/// A sweeper for `env`'s instance with `consumers`' retry settings.
fn sweeper(env: &Env, consumers: &ConsumerArgs) -> Sweeper {
    Sweeper::new(
        env.inst.clone(),
        Duration::from_millis(1),
        consumers,
        Duration::from_secs(3600),
    )
}

/// Settlements of the execution consumer refused for a lost lease (/status).
async fn execution_leases_lost(env: &Env) -> u64 {
    let (code, body) = http(env.addr, "GET", "/status", "").await;
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    doc["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["queue"] == queues::PROPOSALS_FOR_EXECUTION)
        .and_then(|c| c["lease_lost"].as_u64())
        .unwrap()
}

#[tokio::test]
async fn the_sweeper_fails_a_stuck_proposal_and_fences_its_waiting_retry() {
    let env = Env::start_with(|a| a.consumers.retry_delay_ms = RETRY_DELAY_MS).await;
    std::fs::create_dir_all(env.ws()).unwrap();
    let link = env.ws().join("later");
    std::os::unix::fs::symlink(env.dir.path().join("nowhere"), &link).unwrap();
    let s = env.propose("later/f.txt", "late change", 1.0).await;
    env.cc_decide(&s, ConsensusStatus::Approved).await;

    // The first attempt fails (the directory cannot be inspected); the
    // retry waits its backoff.
    let msg_id: Uuid = wait_for("the execution waiting for its retry", DEADLINE, || async {
        sqlx::query_scalar(
            "SELECT id FROM pgflow.messages
              WHERE queue_name = $1 AND attempts = 1 AND lease IS NULL
                AND visible_at > now() + interval '1 minute'",
        )
        .bind(queues::PROPOSALS_FOR_EXECUTION)
        .fetch_optional(env.t.pgflow.pool())
        .await
        .unwrap()
    })
    .await;
    // The cause is gone: the retry would now apply the change.
    std::fs::remove_file(&link).unwrap();

    // Stuck for a day; a fresh proposal and a final one that old are not stuck.
    back_date(&env, s.proposal_id).await;
    let fresh = env.propose("fresh.txt", "x", 1.0).await;
    let (done, _) = store_raw(&env, "done.txt", "applied").await;
    back_date(&env, done).await;

    let consumers = ConsumerArgs {
        retry_delay_ms: RETRY_DELAY_MS,
        ..ConsumerArgs::default()
    };
    let sweeper = sweeper(&env, &consumers);
    // Never sooner than an execution may legitimately take.
    assert!(sweeper.stuck_after() > Duration::from_secs(15 * 60));
    let swept = sweeper.sweep().await.unwrap();
    assert_eq!(swept.failed, [s.proposal_id]);
    assert_eq!(swept.cancelled, [msg_id]);
    assert_eq!(swept.still_stuck, 0);

    let p = env.proposal(s.proposal_id).await;
    assert_eq!(p.status, "failed");
    let why = p.error.unwrap();
    assert!(
        why.contains("stuck: still consensus_reached") && why.contains("sweeper"),
        "{why}"
    );
    let dlq = env.dlq(queues::PROPOSALS_FOR_EXECUTION).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].id, msg_id);
    assert!(
        dlq[0].error.starts_with("cancelled: stuck"),
        "{}",
        dlq[0].error
    );
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pgflow.live_messages
          WHERE queue_name = $1 AND payload ->> 'proposal_id' = $2",
    )
    .bind(queues::PROPOSALS_FOR_EXECUTION)
    .bind(s.proposal_id.to_string())
    .fetch_one(env.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(live, 0, "no retry is left to apply the change");
    assert_eq!(env.status_of(fresh.proposal_id).await, "submitted");
    assert_eq!(env.status_of(done).await, "applied");

    // A late delivery of the same execution (one that was in flight) finds
    // the proposal failed and applies nothing.
    send_raw_execution(&env, s.proposal_id, s.trace_id, "later/f.txt").await;
    wait_duplicates(&env, s.proposal_id, 1).await;
    assert!(!env.ws().join("later/f.txt").exists());
    assert_eq!(env.status_of(s.proposal_id).await, "failed");

    // Nothing left to resolve.
    assert_eq!(sweeper.sweep().await.unwrap(), Default::default());
    env.stop().await;
}

#[tokio::test]
async fn the_sweeper_fences_an_execution_in_flight() {
    let env = Env::start().await;
    // The handler will hold the lease while it waits for the file's lock.
    let path = env.inst.workspace.resolve("inflight.txt").unwrap();
    let guard = env.inst.workspace.lock(&path).await;
    let s = env.propose("inflight.txt", "too late", 1.0).await;
    env.cc_decide(&s, ConsensusStatus::Approved).await;
    let msg_id: Uuid = wait_for("the execution in flight", DEADLINE, || async {
        sqlx::query_scalar(
            "SELECT id FROM pgflow.messages
              WHERE queue_name = $1 AND lease IS NOT NULL AND visible_at > now()",
        )
        .bind(queues::PROPOSALS_FOR_EXECUTION)
        .fetch_optional(env.t.pgflow.pool())
        .await
        .unwrap()
    })
    .await;
    back_date(&env, s.proposal_id).await;
    let swept = sweeper(&env, &ConsumerArgs::default())
        .sweep()
        .await
        .unwrap();
    assert_eq!(swept.failed, [s.proposal_id]);
    assert_eq!(swept.cancelled, [msg_id]);
    assert_eq!(execution_leases_lost(&env).await, 0);

    // The handler goes on: it finds the proposal failed, writes nothing,
    // and its fenced ack is refused.
    drop(guard);
    wait_for("the in-flight ack refused", DEADLINE, || async {
        (execution_leases_lost(&env).await == 1).then_some(())
    })
    .await;
    assert!(!path.exists());
    let p = env.proposal(s.proposal_id).await;
    assert_eq!(p.status, "failed");
    assert!(p.error.unwrap().contains("sweeper"));
    assert_eq!(
        p.backup_existed, None,
        "no backup recorded: never executing"
    );
    env.stop().await;
}
