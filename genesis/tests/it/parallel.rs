//! `enable_parallel_processing` / `max_parallel_workers`: eight jobs of
//! about 150 ms (the test-only knob `min_job`: simulated extra work per
//! job) take about a quarter of the sequential time with four workers, and
//! never more than four (or, sequentially, one) run at once.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use genesis::WorkflowConfig;
use pgflow_core::protocol::{queues, AnalysisType, CodeExecutionResult, ResultStatus};

use crate::support::{job, job_msg, Harness};

const JOBS: usize = 8;
const JOB_TIME: Duration = Duration::from_millis(150);

/// Runs eight ~150 ms jobs; returns the time until all eight results
/// arrived and the most workflows that ran at once.
async fn eight_jobs(parallel: bool) -> (Duration, usize) {
    let h = Harness::start(WorkflowConfig {
        parallel,
        min_job: JOB_TIME,
        ..WorkflowConfig::default()
    })
    .await;
    let msgs = (0..JOBS)
        .map(|i| {
            job_msg(&job(
                &format!("job_{i}"),
                "elixir",
                "def foo, do: 42",
                AnalysisType::Quality,
            ))
        })
        .collect();
    let started = Instant::now();
    let ids = h.send_batch(queues::CODE_EXECUTION_REQUESTS, msgs).await;
    let results = h
        .results::<CodeExecutionResult>(queues::CODE_EXECUTION_RESULTS, JOBS)
        .await;
    let took = started.elapsed();
    assert!(results
        .iter()
        .all(|(_, r)| r.status == ResultStatus::Completed && r.metrics.execution_ms >= 150));

    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for id in ids {
        let w = h.wait_workflow(id, "completed").await;
        spans.push((w.started_at.unwrap(), w.finished_at.unwrap()));
    }
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, f)| s <= start && start < f)
                .count()
        })
        .max()
        .unwrap();
    h.stop().await;
    (took, most)
}

#[tokio::test]
async fn parallel_processing_takes_about_a_quarter_of_the_sequential_time() {
    let (sequential, seq_most) = eight_jobs(false).await;
    let (parallel, par_most) = eight_jobs(true).await;
    eprintln!("8 jobs of 150 ms: sequential {sequential:?}, parallel {parallel:?}");
    assert_eq!(
        seq_most, 1,
        "sequential processing runs one workflow at a time"
    );
    assert!(
        (2..=4).contains(&par_most),
        "at most 4 at once, got {par_most}"
    );
    assert!(sequential >= JOB_TIME * JOBS as u32, "{sequential:?}");
    assert!(parallel >= JOB_TIME * 2, "{parallel:?}");
    assert!(
        parallel.as_secs_f64() < 0.5 * sequential.as_secs_f64(),
        "parallel {parallel:?} vs sequential {sequential:?}"
    );
}
