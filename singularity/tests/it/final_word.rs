//! Every execution ends with its proposal in a final state, whichever way
//! it fails: a name no file system takes (refused at submission and at
//! execution), an I/O error on every attempt, a handler that times out
//! every time, a lease that keeps expiring. A verify command that fails or
//! times out is a measurement, not a failure: the change is applied and
//! the proposal final. Each error class is driven to its last attempt.

use std::time::Duration;

use pgflow_core::protocol::{queues, ConsensusStatus};
use pgflow_core::testing::{wait_for, TestDb};
use singularity::store::{self, ProposalState};
use singularity::{Error, NewProposal};
use uuid::Uuid;

use crate::support::{send_raw_execution, store_raw, Env, DEADLINE};

/// Proposes `file` and has it approved: its execution is queued.
async fn approve(env: &Env, file: &str, change: &str) -> Uuid {
    let s = env.propose(file, change, 1.0).await;
    env.cc_decide(&s, ConsensusStatus::Approved).await;
    s.proposal_id
}

/// Waits until `id` is failed; returns its reason.
async fn failed_with(env: &Env, id: Uuid) -> String {
    env.wait_status(id, "failed").await;
    env.proposal(id)
        .await
        .error
        .expect("a failed proposal has a reason")
}

#[tokio::test]
async fn a_file_name_over_255_bytes_is_refused_at_submission_and_at_execution() {
    let env = Env::start().await;
    let file = format!("src/{}.rs", "n".repeat(253));
    let refused = singularity::submit(
        &env.sing,
        &env.id,
        NewProposal {
            agent_type: "BugFixerAgent".into(),
            file: file.clone(),
            change: "x".into(),
            impact_score: 5.0,
            risk_score: 1.0,
            cost_factor: 1.0,
            idempotency_key: None,
        },
    )
    .await;
    assert!(
        matches!(&refused, Err(Error::InvalidProposal(why)) if why.contains("component of 256 bytes")),
        "{refused:?}"
    );
    // Stored around the checks (an older version accepted it): the
    // execution refuses it at once, the proposal fails with the reason.
    let (id, trace) = store_raw(&env, &file, "consensus_reached").await;
    send_raw_execution(&env, id, trace, &file).await;
    let why = failed_with(&env, id).await;
    assert!(
        why.contains("256 bytes") && why.contains("refused"),
        "{why}"
    );
    assert!(env.dlq(queues::PROPOSALS_FOR_EXECUTION).await.is_empty());
    env.stop().await;
}

#[tokio::test]
async fn an_io_error_on_every_attempt_fails_the_proposal_with_the_reason() {
    let env = Env::start().await;
    std::fs::create_dir_all(env.ws()).unwrap();
    // A directory that cannot be inspected: a dangling symlink.
    std::os::unix::fs::symlink(env.dir.path().join("nowhere"), env.ws().join("broken")).unwrap();
    let id = approve(&env, "broken/f.txt", "x").await;
    let why = failed_with(&env, id).await;
    assert!(
        why.contains("dead-lettered after 4 attempt(s)")
            && why.contains("cannot inspect the workspace"),
        "{why}"
    );
    let dlq = env.dlq(queues::PROPOSALS_FOR_EXECUTION).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].payload["proposal_id"], id.to_string());
    env.stop().await;
}

#[tokio::test]
async fn a_handler_that_times_out_on_every_attempt_fails_the_proposal() {
    let env = Env::start_with(|a| a.consumers.timeout_ms = 300).await;
    // The file stays locked (as by a change that never finishes): every
    // attempt runs into the handler timeout.
    let path = env.inst.workspace.resolve("held.txt").unwrap();
    let guard = env.inst.workspace.lock(&path).await;
    let id = approve(&env, "held.txt", "x").await;
    let why = failed_with(&env, id).await;
    assert!(
        why.contains("dead-lettered after 4 attempt(s)") && why.contains("timed out"),
        "{why}"
    );
    drop(guard);
    assert!(!path.exists());
    env.stop().await;
}

#[tokio::test]
async fn an_execution_whose_lease_keeps_expiring_fails_the_proposal() {
    let env = Env::start().await;
    let (id, trace) = store_raw(&env, "lease.txt", "consensus_reached").await;
    // The execution message as it is after its last allowed attempt's
    // holder crashed: leased, the lease expired (back-dated, no waiting).
    let msg = pgflow_core::OutgoingMessage::new(
        "proposal_for_execution",
        serde_json::json!({
            "proposal_id": id,
            "instance_id": env.id,
            "agent_type": "BugFixerAgent",
            "code_change": {"file": "lease.txt", "change": "pwned"},
        }),
    )
    .trace_id(trace)
    .target(&env.id)
    .delay(Duration::from_secs(3600));
    let msg_id = env
        .sing
        .send(&crate::support::q(queues::PROPOSALS_FOR_EXECUTION), msg)
        .await
        .unwrap();
    let n = sqlx::query(
        "UPDATE pgflow.messages
            SET attempts = 4, lease = gen_random_uuid(), claimed_at = now() - interval '1 minute',
                visible_at = now() - interval '1 millisecond'
          WHERE id = $1",
    )
    .bind(msg_id)
    .execute(env.t.pgflow.pool())
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1);
    let why = failed_with(&env, id).await;
    assert!(why.contains("attempts exhausted"), "{why}");
    assert!(!env.ws().join("lease.txt").exists());
    env.stop().await;
}

#[tokio::test]
async fn a_verify_command_that_fails_or_times_out_still_ends_in_a_final_state() {
    let env = Env::start_with(|a| {
        a.verify_cmd = Some("if grep -q slow f.txt; then sleep 10; else exit 1; fi".into());
        a.verify_timeout_ms = 200;
    })
    .await;
    for change in ["fails", "slow"] {
        let id = approve(&env, "f.txt", change).await;
        env.wait_status(id, "applied").await;
        let after = env.proposal(id).await.metrics_after.unwrap();
        assert_eq!(after["error_count"], 1, "{change}: {after}");
    }
    env.stop().await;
}

#[tokio::test]
async fn a_dead_lettered_execution_of_an_unapproved_proposal_leaves_it_to_consensus() {
    let env = Env::start().await;
    let (id, trace) = store_raw(&env, "early.txt", "submitted").await;
    send_raw_execution(&env, id, trace, "early.txt").await;
    let dlq = wait_for("the execution dead-lettered", DEADLINE, || async {
        let d = env.dlq(queues::PROPOSALS_FOR_EXECUTION).await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert!(
        dlq[0].error.contains("only approved proposals"),
        "{}",
        dlq[0].error
    );
    assert_eq!(env.status_of(id).await, "submitted");
    env.stop().await;
}

#[tokio::test]
async fn marking_failed_and_is_final_agree_on_every_state() {
    let t = TestDb::new().await.unwrap();
    t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
        .await
        .unwrap();
    // As the instance's own role: it sees its own rows only (migration 52).
    let sing = t
        .connect_instance("singularity_1", "singularity")
        .await
        .unwrap();
    let mut conn = sing.pool().acquire().await.unwrap();
    for state in ProposalState::ALL {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO singularity.proposals
                 (id, instance_id, agent_type, file, change, impact_score, risk_score, status, trace_id)
             VALUES ($1, 'singularity_1', 'A', 'a.rs', 'x', 1, 1, $2, $1)",
        )
        .bind(id)
        .bind(state.as_str())
        .execute(t.pgflow.pool())
        .await
        .unwrap();
        let failed = store::mark_failed(&mut conn, "singularity_1", id, "because")
            .await
            .unwrap();
        assert_eq!(failed, !state.is_final(), "{state}");
    }
}
