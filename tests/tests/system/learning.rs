//! The learning loop across the services (issue 16, point 11): instances
//! that reject risky proposals do not lock their agent type out, and an
//! agent type locked out by real failures is trusted again once they have
//! aged, all through the real binaries: `singularity propose`, the votes,
//! the guardian, the periodic learning pass, the profile broadcast.

use pgflow_core::testing::wait_for;
use uuid::Uuid;

use crate::cluster::{System, INSTANCES, WAIT};

/// The instances' default floor (`SINGULARITY_MIN_SUCCESS_RATE`).
const FLOOR: f64 = 0.8;

async fn start() -> System {
    System::start_with(
        &[
            ("CENTRALCLOUD_LEARNING_INTERVAL_MS", "300"),
            ("CENTRALCLOUD_LEARNING_HALF_LIFE_MS", "3600000"),
        ],
        // Only the profile decides here: an instance's own record of
        // rollbacks (a separate rule) stays out of the way.
        &[("SINGULARITY_MIN_HISTORY", "1000")],
    )
    .await
}

/// Waits until the proposal is applied, rolled back (after being applied)
/// or turned down; returns that status.
async fn settled_status(sys: &System, id: Uuid) -> String {
    wait_for(&format!("proposal {id} settled"), WAIT, || async {
        let s = sys.status_of(id).await;
        ["applied", "rolled_back", "consensus_failed", "failed"]
            .contains(&s.as_str())
            .then_some(s)
    })
    .await
}

/// Waits until a learning pass has used every decided proposal and metric.
async fn all_learned(sys: &System) {
    wait_for("a pass used all evidence", WAIT, || async {
        let n = sys
            .scalar_i64(
                "SELECT (SELECT count(*) FROM centralcloud.proposals
                          WHERE status <> 'collecting' AND learning_run_id IS NULL)
                      + (SELECT count(*) FROM centralcloud.metrics WHERE learning_run_id IS NULL)",
            )
            .await;
        (n == 0).then_some(())
    })
    .await;
}

/// Waits until every instance stored a BugFixerAgent profile whose success
/// rate satisfies `ok`; returns the rates.
async fn instance_rates(sys: &System, what: &str, ok: impl Fn(f64) -> bool) -> Vec<f64> {
    wait_for(what, WAIT, || async {
        let rates: Vec<f64> = sqlx::query_scalar(
            "SELECT (profile ->> 'success_rate')::float8 FROM singularity.safety_profiles
              WHERE agent_type = 'BugFixerAgent' ORDER BY instance_id",
        )
        .fetch_all(sys.t.pgflow.pool())
        .await
        .unwrap();
        (rates.len() == INSTANCES.len() && rates.iter().all(|r| ok(*r))).then_some(rates)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_do_not_lock_out_and_failures_age_away() {
    let sys = start().await;

    // 1. Thirty risky proposals, each rightly rejected by every instance.
    let mut risky = Vec::new();
    for i in 0..30 {
        let instance = INSTANCES[i % INSTANCES.len()];
        let (id, _) = sys
            .propose(instance, &format!("risky_{i}.txt"), "rm -rf\n", 9.0)
            .await;
        risky.push(id);
    }
    for id in &risky {
        assert_eq!(settled_status(&sys, *id).await, "consensus_failed");
    }
    all_learned(&sys).await;
    // The rate every instance holds is still the prior, not 9.5 / 40.
    let rates = instance_rates(&sys, "the profile at every instance", |_| true).await;
    assert_eq!(rates, vec![0.95; 3]);
    let (ok, _) = sys
        .propose("singularity_1", "fine.txt", "ok = true\n", 1.0)
        .await;
    assert_eq!(settled_status(&sys, ok).await, "applied");

    // 2. Real failures: applied changes that breach the error threshold
    //    (the verify command fails), until the instances hold the agent
    //    type below their floor.
    let mut locked = false;
    for i in 0..8 {
        let instance = INSTANCES[i % INSTANCES.len()];
        let (id, _) = sys.propose(instance, "broken.txt", "oops\n", 1.0).await;
        if settled_status(&sys, id).await == "consensus_failed" {
            break;
        }
        // Applied; the guardian finds the breach and has it rolled back.
        sys.wait_status(id, "rolled_back").await;
        all_learned(&sys).await;
        let below: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM centralcloud.safety_profiles p
              WHERE agent_type = 'BugFixerAgent' AND success_rate < $1
                AND version = (SELECT max(version) FROM centralcloud.safety_profiles
                                WHERE agent_type = 'BugFixerAgent')",
        )
        .bind(FLOOR)
        .fetch_one(sys.t.pgflow.pool())
        .await
        .unwrap();
        if below == 1 {
            locked = true;
            break;
        }
    }
    assert!(locked, "the failures never pushed the rate below {FLOOR}");
    instance_rates(&sys, "every instance below the floor", |r| r < FLOOR).await;
    let (shut_out, _) = sys
        .propose("singularity_2", "small.txt", "small = 1\n", 1.0)
        .await;
    assert_eq!(settled_status(&sys, shut_out).await, "consensus_failed");
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM singularity.votes_cast WHERE proposal_id = $1")
            .bind(shut_out)
            .fetch_all(sys.t.pgflow.pool())
            .await
            .unwrap();
    assert_eq!(reasons.len(), 3);
    assert!(
        reasons.iter().all(|r| r.contains("below the floor")),
        "{reasons:?}"
    );

    // 3. The way back: the failures age (back-dated by 40 half-lives); the
    //    next periodic pass recomputes the rate, broadcasts it, and a small
    //    change is approved and applied again.
    for sql in [
        "UPDATE centralcloud.metrics SET received_at = received_at - interval '40 hours'",
        "UPDATE centralcloud.pattern_reports SET received_at = received_at - interval '40 hours'",
    ] {
        sqlx::query(sql).execute(sys.t.pgflow.pool()).await.unwrap();
    }
    instance_rates(&sys, "every instance back above the floor", |r| r >= FLOOR).await;
    let (welcome, _) = sys
        .propose("singularity_2", "small.txt", "small = 2\n", 1.0)
        .await;
    assert_eq!(settled_status(&sys, welcome).await, "applied");
}
