//! Votes answer every vote request with a reason, from the safety profile
//! of the agent type (updated by broadcasts) and the instance's history.

use chrono::Utc;
use pgflow_core::protocol::{
    self, queues, ConsensusVote, SafetyProfile, SafetyProfileUpdate, Vote,
};
use pgflow_core::testing::wait_for;
use uuid::Uuid;

use crate::support::{q, Env, DEADLINE};

async fn next_vote(env: &Env) -> (pgflow_core::Delivery, ConsensusVote) {
    let d = env.cc_claim(queues::CONSENSUS_VOTES).await;
    let v = protocol::decode(&d).unwrap();
    (d, v)
}

async fn broadcast_profile(env: &Env, success_rate: f64, at: chrono::DateTime<Utc>) {
    let update = SafetyProfileUpdate {
        instance_id: None,
        agent_type: "BugFixerAgent".into(),
        safety_profile: SafetyProfile {
            success_rate,
            error_threshold: 0.10,
            latency_threshold: 3000.0,
            cost_threshold: 0.10,
        },
        source: "genesis_learning_loop".into(),
        timestamp: at,
    };
    env.cc
        .send_with_notify(
            &q(queues::GUARDIAN_SAFETY_PROFILES),
            protocol::encode(&update).unwrap(),
        )
        .await
        .unwrap();
}

async fn profile_version(env: &Env) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT version FROM singularity.safety_profiles
          WHERE instance_id = $1 AND agent_type = 'BugFixerAgent'",
    )
    .bind(&env.id)
    .fetch_optional(env.t.pgflow.pool())
    .await
    .unwrap()
}

async fn wait_version(env: &Env, v: i32) {
    wait_for(&format!("profile version {v}"), DEADLINE, || async {
        (profile_version(env).await == Some(v)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn vote_requests_get_a_vote_with_a_reason_and_risky_ones_are_rejected() {
    let env = Env::start().await;
    let safe = Uuid::now_v7();
    let trace = env.cc_request_vote(safe, 1.0).await;
    let (d, v) = next_vote(&env).await;
    assert_eq!(d.trace_id, trace, "the vote carries the request's trace id");
    assert_eq!(
        (v.proposal_id, v.instance_id.as_str()),
        (safe, "singularity_1")
    );
    assert_eq!(v.vote, Vote::Approve, "{}", v.reason);
    assert!(v.reason.contains("within the 5"), "{}", v.reason);

    let risky = Uuid::now_v7();
    env.cc_request_vote(risky, 8.0).await;
    let (_, v) = next_vote(&env).await;
    assert_eq!((v.proposal_id, v.vote), (risky, Vote::Reject));
    assert!(v.reason.contains("risk 8 exceeds the 5"), "{}", v.reason);

    // The votes are recorded; a request delivered again is answered once.
    let cast: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT proposal_id, vote FROM singularity.votes_cast WHERE instance_id = $1 ORDER BY cast_at",
    )
    .bind(&env.id)
    .fetch_all(env.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(
        cast,
        vec![(safe, "approve".into()), (risky, "reject".into())]
    );
    env.cc_request_vote(safe, 1.0).await;
    wait_for("duplicate vote request counted", DEADLINE, || async {
        (env.inst.counters.total() == 1).then_some(())
    })
    .await;
    assert_eq!(
        crate::support::waiting(&env.t, queues::CONSENSUS_VOTES).await,
        0
    );
    env.stop().await;
}

#[tokio::test]
async fn a_profile_update_is_stored_and_changes_the_next_vote() {
    let env = Env::start().await;
    let t0 = Utc::now();
    broadcast_profile(&env, 0.5, t0).await;
    wait_version(&env, 1).await;

    env.cc_request_vote(Uuid::now_v7(), 1.0).await;
    let (_, v) = next_vote(&env).await;
    assert_eq!(v.vote, Vote::Reject);
    assert!(
        v.reason.contains("success rate 0.5") && v.reason.contains("v1 from genesis_learning_loop"),
        "{}",
        v.reason
    );

    // A newer profile restores trust; an older one arriving late is ignored.
    broadcast_profile(&env, 0.99, t0 + chrono::Duration::seconds(1)).await;
    wait_version(&env, 2).await;
    broadcast_profile(&env, 0.1, t0 - chrono::Duration::seconds(1)).await;
    wait_for("stale update ignored", DEADLINE, || async {
        (env.inst.counters.total() == 1).then_some(())
    })
    .await;
    assert_eq!(profile_version(&env).await, Some(2));

    env.cc_request_vote(Uuid::now_v7(), 1.0).await;
    let (_, v) = next_vote(&env).await;
    assert_eq!(v.vote, Vote::Approve, "{}", v.reason);
    assert!(v.reason.contains("v2"), "{}", v.reason);
    env.stop().await;
}

#[tokio::test]
async fn the_instances_own_history_counts_in_its_votes() {
    let env = Env::start_with(|a| a.min_history = 2).await;
    // Two changes applied, both rolled back by the guardian.
    for f in ["h1.txt", "h2.txt"] {
        let s = env.apply(f, "x").await;
        sqlx::query("UPDATE singularity.proposals SET status = 'rolled_back' WHERE id = $1")
            .bind(s.proposal_id)
            .execute(env.t.pgflow.pool())
            .await
            .unwrap();
    }
    env.cc_request_vote(Uuid::now_v7(), 1.0).await;
    let (_, v) = next_vote(&env).await;
    assert_eq!(v.vote, Vote::Reject);
    assert!(
        v.reason.contains("rolled back 2.0 of 2.0 recent"),
        "{}",
        v.reason
    );
    env.stop().await;
}

/// The own-history rule does not lock an agent type out for good: its
/// outcomes weigh less as they age (half-life one day by default), so once
/// the failures are old the history no longer holds enough recent outcomes
/// to decide, and the profile alone decides again (issue 16, point 11).
#[tokio::test]
async fn old_rollbacks_age_out_of_the_own_history() {
    let env = Env::start_with(|a| a.min_history = 2).await;
    for f in ["o1.txt", "o2.txt", "o3.txt"] {
        let s = env.apply(f, "x").await;
        sqlx::query("UPDATE singularity.proposals SET status = 'rolled_back' WHERE id = $1")
            .bind(s.proposal_id)
            .execute(env.t.pgflow.pool())
            .await
            .unwrap();
    }
    env.cc_request_vote(Uuid::now_v7(), 1.0).await;
    let (_, v) = next_vote(&env).await;
    assert_eq!(v.vote, Vote::Reject, "{}", v.reason);

    // One day later (back-dated): 3 rollbacks weigh 1.5, under the minimum of 2.
    sqlx::query("UPDATE singularity.agent_history SET as_of = as_of - interval '1 day'")
        .execute(env.t.pgflow.pool())
        .await
        .unwrap();
    env.cc_request_vote(Uuid::now_v7(), 1.0).await;
    let (_, v) = next_vote(&env).await;
    assert_eq!(v.vote, Vote::Approve, "{}", v.reason);
    assert!(
        v.reason
            .contains("1.5 recent outcomes of BugFixerAgent, too few to judge"),
        "{}",
        v.reason
    );

    // A new rollback now counts in full, the old ones at their age.
    let s = env.apply("o4.txt", "x").await;
    sqlx::query("UPDATE singularity.proposals SET status = 'rolled_back' WHERE id = $1")
        .bind(s.proposal_id)
        .execute(env.t.pgflow.pool())
        .await
        .unwrap();
    let (applied, rolled_back): (f64, f64) = sqlx::query_as(
        "SELECT sum(applied_w * singularity.history_decay(as_of)),
                sum(rolled_back_w * singularity.history_decay(as_of))
           FROM singularity.agent_history WHERE instance_id = $1",
    )
    .bind(&env.inst.id)
    .fetch_one(env.t.pgflow.pool())
    .await
    .unwrap();
    assert!(applied.abs() < 0.01, "{applied}");
    assert!((rolled_back - 2.5).abs() < 0.01, "{rolled_back}");
    env.stop().await;
}

#[tokio::test]
async fn history_counters_follow_every_status_change() {
    let env = Env::start().await;
    let pool = env.t.pgflow.pool();
    let mut ids = Vec::new();
    for f in ["c1.txt", "c2.txt", "c3.txt"] {
        ids.push(env.apply(f, "x").await.proposal_id);
    }
    let set = |id: Uuid, status: &'static str| async move {
        sqlx::query("UPDATE singularity.proposals SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status)
            .execute(pool)
            .await
            .unwrap();
    };
    set(ids[0], "rolled_back").await;
    set(ids[1], "rolled_back").await;
    set(ids[1], "applied").await; // corrected by hand: back to applied
    sqlx::query("DELETE FROM singularity.proposals WHERE id = $1")
        .bind(ids[2])
        .execute(pool)
        .await
        .unwrap();
    let counters: (i64, i64) = sqlx::query_as(
        "SELECT sum(applied)::int8, sum(rolled_back)::int8 FROM singularity.agent_history
          WHERE instance_id = $1 AND agent_type = 'BugFixerAgent'",
    )
    .bind(&env.inst.id)
    .fetch_one(pool)
    .await
    .unwrap();
    let counted: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'applied'),
                count(*) FILTER (WHERE status = 'rolled_back')
           FROM singularity.proposals WHERE instance_id = $1 AND agent_type = 'BugFixerAgent'",
    )
    .bind(&env.inst.id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(counters, (1, 1));
    assert_eq!(counters, counted);
    let mut conn = pool.acquire().await.unwrap();
    let h = singularity::store::history(&mut conn, &env.inst.id, "BugFixerAgent")
        .await
        .unwrap();
    // Recent outcomes: the same counts, weighted by their (here, no) age.
    assert!(
        (h.applied - 1.0).abs() < 0.01 && (h.rolled_back - 1.0).abs() < 0.01,
        "{h:?}"
    );
    env.stop().await;
}

/// An instance's role sees and changes only its own rows: another
/// instance's proposal (whose stored change the executor applies) is out of
/// its reach (migration 52).
#[tokio::test]
async fn an_instance_cannot_touch_another_instances_rows() {
    let env = Env::start().await;
    let mine = env.propose("mine.txt", "x", 1.0).await;
    let other = env
        .t
        .connect_instance("singularity_2", "singularity")
        .await
        .unwrap();
    let changed = sqlx::query("UPDATE singularity.proposals SET change = 'evil' WHERE id = $1")
        .bind(mine.proposal_id)
        .execute(other.pool())
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 0);
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM singularity.proposals")
        .fetch_one(other.pool())
        .await
        .unwrap();
    assert_eq!(seen, 0);
    let err = sqlx::query(
        "INSERT INTO singularity.votes_cast
             (proposal_id, instance_id, agent_type, vote, reason, trace_id)
         VALUES (gen_random_uuid(), 'singularity_1', 'A', 'approve', 'forged', gen_random_uuid())",
    )
    .execute(other.pool())
    .await
    .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    // Its own instance still reads its proposal.
    let own: i64 = sqlx::query_scalar("SELECT count(*) FROM singularity.proposals")
        .fetch_one(env.sing.pool())
        .await
        .unwrap();
    assert_eq!(own, 1);
    env.stop().await;
}
