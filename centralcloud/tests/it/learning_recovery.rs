//! The success rate the learning loop broadcasts counts outcomes of applied
//! changes only, and forgets them with age: rejecting risky proposals does
//! not lock an agent type out, and an agent type locked out by real
//! failures regains the instances' trust as those failures age.

use std::time::Duration;

use centralcloud::learning::{self, Trigger};
use centralcloud::profiles::DEFAULT_SUCCESS_RATE;
use centralcloud::Settings;
use pgflow_core::protocol::{self, queues, SafetyProfileUpdate, Vote};
use pgflow_core::testing::wait_for;

use crate::guardian::{metrics, report as report_metrics};
use crate::support::{proposal, settings, take, Harness, INSTANCES, TIMEOUT};

/// The instances' default floor (`SINGULARITY_MIN_SUCCESS_RATE`).
const FLOOR: f64 = 0.8;
const AGENT: &str = "BugFixerAgent";

/// The success rate of `AGENT` in the update each instance receives next.
async fn broadcast_rate(h: &Harness) -> f64 {
    let mut rates = Vec::new();
    for instance in INSTANCES {
        let got = take(&h.sing, queues::GUARDIAN_SAFETY_PROFILES, Some(instance), 1).await;
        let u: SafetyProfileUpdate = protocol::decode(&got[0]).unwrap();
        assert_eq!(u.agent_type, AGENT);
        rates.push(u.safety_profile.success_rate);
    }
    assert!(rates.windows(2).all(|w| w[0] == w[1]), "{rates:?}");
    rates[0]
}

async fn stored_rate(h: &Harness) -> f64 {
    sqlx::query_scalar(
        "SELECT success_rate FROM centralcloud.safety_profiles
          WHERE agent_type = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(AGENT)
    .fetch_one(h.t.pgflow.pool())
    .await
    .unwrap()
}

async fn count(h: &Harness, sql: &str) -> i64 {
    h.scalar(sql).await
}

#[tokio::test]
async fn thirty_consensus_rejections_leave_the_success_rate_alone() {
    let h = Harness::start(settings()).await;
    h.subscribe(queues::CONSENSUS_VOTE_REQUESTS, &INSTANCES)
        .await;
    h.subscribe(queues::GUARDIAN_SAFETY_PROFILES, &INSTANCES)
        .await;
    let mut sent = Vec::new();
    for _ in 0..30 {
        let mut p = proposal("singularity_1", AGENT);
        p.risk_score = 9.0;
        let trace = h.propose(&p).await;
        sent.push((p.proposal_id, trace));
    }
    wait_for("30 proposals collecting votes", TIMEOUT, || async {
        let n = count(&h, "SELECT count(*) FROM centralcloud.proposals").await;
        (n == 30).then_some(())
    })
    .await;
    // Every instance rejects the risky change, as it should.
    for (id, trace) in &sent {
        for voter in INSTANCES {
            h.vote(*id, voter, Vote::Reject, *trace).await;
        }
    }
    wait_for("30 rejections", TIMEOUT, || async {
        let n = count(
            &h,
            "SELECT count(*) FROM centralcloud.proposals WHERE status = 'rejected'",
        )
        .await;
        (n == 30).then_some(())
    })
    .await;

    let r = learning::run_pass(&h.cc, &settings(), Trigger::Cli)
        .await
        .unwrap();
    assert_eq!(r.proposals_seen, 30, "{r:?}");
    // Nothing was applied, so nothing failed: the rate is still the prior,
    // well above the floor, and risk-1 proposals keep being approved.
    assert_eq!(broadcast_rate(&h).await, DEFAULT_SUCCESS_RATE);
    assert_eq!(stored_rate(&h).await, DEFAULT_SUCCESS_RATE);
    let recorded: serde_json::Value = h
        .scalar("SELECT evidence FROM centralcloud.safety_profiles")
        .await;
    assert_eq!(recorded["rejected"], 30, "{recorded}");
    h.stop().await;
}

/// Makes every outcome `AGENT` has look `hours` older.
async fn age_outcomes(h: &Harness, hours: f64) {
    sqlx::query(
        "UPDATE centralcloud.metrics SET received_at = received_at - make_interval(secs => $1)",
    )
    .bind(hours * 3600.0)
    .execute(h.t.pgflow.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn a_locked_out_agent_type_recovers_as_its_failures_age() {
    let s = Settings {
        learning_half_life: Duration::from_secs(3600),
        ..settings()
    };
    let h = Harness::start(s.clone()).await;
    h.subscribe(queues::GUARDIAN_SAFETY_PROFILES, &INSTANCES)
        .await;
    // Five applied changes breach the error threshold.
    for i in 0..5 {
        let instance = INSTANCES[i % INSTANCES.len()];
        report_metrics(&h, &metrics(instance, AGENT, 0.5)).await;
    }
    wait_for("5 breaches recorded", TIMEOUT, || async {
        let n = count(
            &h,
            "SELECT count(*) FROM centralcloud.metrics WHERE breach IS NOT NULL",
        )
        .await;
        (n == 5).then_some(())
    })
    .await;
    learning::run_pass(&h.cc, &s, Trigger::Cli).await.unwrap();
    // 9.5 / (10 + 5): locked out.
    let locked = broadcast_rate(&h).await;
    assert_eq!(locked, 0.6333);
    assert!(locked < FLOOR);

    // Nothing new, nothing aged: nothing moves.
    let idle = learning::run_pass(&h.cc, &s, Trigger::Cli).await.unwrap();
    assert_eq!(idle.run_id, None, "{idle:?}");

    // One half-life later: 9.5 / (10 + 2.5), still below the floor, but
    // on the way back (and broadcast: it moved by more than the step).
    age_outcomes(&h, 1.0).await;
    let r = learning::run_pass(&h.cc, &s, Trigger::Interval)
        .await
        .unwrap();
    assert_eq!((r.metrics_seen, r.profiles.len()), (0, 1), "{r:?}");
    assert_eq!(broadcast_rate(&h).await, 0.76);

    // Three half-lives: 9.5 / (10 + 0.625), above the floor again.
    age_outcomes(&h, 2.0).await;
    learning::run_pass(&h.cc, &s, Trigger::Interval)
        .await
        .unwrap();
    let back = broadcast_rate(&h).await;
    assert_eq!(back, 0.8941);
    assert!(back >= FLOOR);
    assert_eq!(stored_rate(&h).await, back);

    // A fresh failure counts in full again.
    report_metrics(&h, &metrics("singularity_1", AGENT, 0.5)).await;
    wait_for("the new breach recorded", TIMEOUT, || async {
        let n = count(&h, "SELECT count(*) FROM centralcloud.metrics").await;
        (n == 6).then_some(())
    })
    .await;
    learning::run_pass(&h.cc, &s, Trigger::Cli).await.unwrap();
    assert!(broadcast_rate(&h).await < back);
    h.stop().await;
}
