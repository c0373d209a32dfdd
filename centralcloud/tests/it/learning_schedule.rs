//! The learning loop's schedule survives restarts: a pass that came due
//! while centralcloud was down runs when it is back (once, however many
//! intervals were missed), and one pass at a time runs across processes.

use std::time::Duration;

use centralcloud::learning::{self, Tick, Trigger};
use centralcloud::Settings;
use chrono::{DateTime, Utc};
use pgflow_core::testing::wait_for;

use crate::patterns::{pattern, report as report_pattern};
use crate::support::{settings, Harness, TIMEOUT};

/// Far longer than any test runs: only a schedule kept across the restart
/// can make a pass happen within [`TIMEOUT`].
const INTERVAL: Duration = Duration::from_secs(600);

fn periodic() -> Settings {
    Settings {
        learning_interval: Some(INTERVAL),
        ..settings()
    }
}

async fn last_pass(h: &Harness) -> Option<DateTime<Utc>> {
    h.scalar("SELECT last_pass_at FROM centralcloud.learning_schedule")
        .await
}

/// Stores the last pass as `ago_secs` before now; returns that time.
async fn last_pass_was(h: &Harness, ago_secs: f64) -> DateTime<Utc> {
    sqlx::query_scalar(
        "UPDATE centralcloud.learning_schedule
            SET last_pass_at = now() - make_interval(secs => $1)
         RETURNING last_pass_at",
    )
    .bind(ago_secs)
    .fetch_one(h.t.pgflow.pool())
    .await
    .unwrap()
}

async fn interval_runs(h: &Harness) -> i64 {
    h.scalar("SELECT count(*) FROM centralcloud.learning_runs WHERE trigger = 'interval'")
        .await
}

/// The next pass is a whole interval away (so none more runs now).
async fn next_pass_a_full_interval_away(h: &Harness) {
    match learning::run_if_due(&h.cc, &periodic(), INTERVAL)
        .await
        .unwrap()
    {
        Tick::NotDue(d) => assert!(d > INTERVAL - Duration::from_secs(60), "next pass in {d:?}"),
        other => panic!("a pass was due again right after one: {other:?}"),
    }
}

#[tokio::test]
async fn a_pass_due_soon_runs_on_time_after_a_restart() {
    let mut h = Harness::start_n(periodic(), 0).await;
    // The previous process ran a pass almost an interval ago, then stopped.
    let previous = last_pass_was(&h, INTERVAL.as_secs_f64() - 2.0).await;
    h.spawn_engine().await;
    let ran = wait_for("the pass that was due", TIMEOUT, || async {
        last_pass(&h).await.filter(|t| *t > previous)
    })
    .await;
    let due = previous + chrono::Duration::from_std(INTERVAL).unwrap();
    assert!(ran >= due, "ran at {ran}, before it was due at {due}");
    next_pass_a_full_interval_away(&h).await;
    h.stop().await;
}

#[tokio::test]
async fn a_pass_missed_several_times_runs_once() {
    let mut h = Harness::start(settings()).await;
    report_pattern(&h, &pattern("singularity_1", 0.9, "fn x() {}")).await;
    wait_for("the report recorded", TIMEOUT, || async {
        let n: i64 = h
            .scalar("SELECT count(*) FROM centralcloud.pattern_reports")
            .await;
        (n == 1).then_some(())
    })
    .await;
    h.pause().await;
    // Down for five intervals since the last pass.
    last_pass_was(&h, 5.0 * INTERVAL.as_secs_f64()).await;
    h.spawn_engine_with(periodic()).await;
    wait_for("the overdue pass", TIMEOUT, || async {
        (interval_runs(&h).await == 1).then_some(())
    })
    .await;
    next_pass_a_full_interval_away(&h).await;
    assert_eq!(interval_runs(&h).await, 1);
    let age: f64 = h
        .scalar("SELECT extract(epoch FROM now() - last_pass_at)::float8 FROM centralcloud.learning_schedule")
        .await;
    assert!(age < TIMEOUT.as_secs_f64(), "last pass {age} s ago");
    h.stop().await;
}

#[tokio::test]
async fn a_pass_in_progress_makes_the_others_skip() {
    let h = Harness::start_n(periodic(), 0).await;
    // Another process's pass holds the schedule.
    let mut other = h.t.pgflow.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM centralcloud.learning_schedule FOR UPDATE")
        .execute(&mut *other)
        .await
        .unwrap();
    let tick = learning::run_if_due(&h.cc, &periodic(), INTERVAL)
        .await
        .unwrap();
    assert_eq!(tick, Tick::Busy);
    let cli = learning::run_pass(&h.cc, &periodic(), Trigger::Cli)
        .await
        .unwrap();
    assert!(cli.busy, "{cli:?}");
    other.rollback().await.unwrap();
    // Free again: the pass (never run before) is due and runs.
    let tick = learning::run_if_due(&h.cc, &periodic(), INTERVAL)
        .await
        .unwrap();
    assert!(matches!(tick, Tick::Ran(_)), "{tick:?}");
    let at = last_pass(&h).await;
    assert!(at.is_some());
    let overview = centralcloud::status::overview(h.cc.pool()).await.unwrap();
    assert_eq!(overview.last_pass_at, at);
    next_pass_a_full_interval_away(&h).await;
    h.stop().await;
}
