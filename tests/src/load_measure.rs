//! One run of `system-load`: submit, wait for every proposal to reach a
//! final state, and collect the figures of the run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};
use pgflow_core::Pgflow;
use uuid::Uuid;

use crate::load_args::Args;
use crate::load_report::{Pct, RunResult};
use crate::load_submit::{pct_from, pct_of, submit_burst, submit_light, Submit};
use crate::load_system::{self, Proc};

/// The queues a proposal's journey passes through.
pub(crate) const JOURNEY_QUEUES: [&str; 6] = [
    "proposals_for_consensus_queue",
    "consensus_vote_requests_queue",
    "consensus_votes_queue",
    "consensus_results_queue",
    "proposals_for_execution_queue",
    "metrics_to_guardian_queue",
];

pub(crate) const FINAL: &str = "('applied', 'consensus_failed', 'rolled_back', 'failed')";

/// Everything running for the benchmark.
pub(crate) struct System {
    pub(crate) admin: Pgflow,
    pub(crate) centralcloud: Proc,
    pub(crate) instances: Vec<Proc>,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) postmaster: Option<u32>,
}

impl System {
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        self.centralcloud.check_alive()?;
        for p in &mut self.instances {
            p.check_alive()?;
        }
        Ok(())
    }

    pub(crate) fn cpu(&self) -> (f64, f64, Option<f64>) {
        let cc = self
            .centralcloud
            .pid()
            .and_then(load_system::cpu_secs)
            .unwrap_or(0.0);
        let sing = self
            .instances
            .iter()
            .filter_map(|p| p.pid().and_then(load_system::cpu_secs))
            .sum();
        (cc, sing, self.postmaster.map(load_system::tree_cpu_secs))
    }

    pub(crate) async fn stop(&mut self) {
        for p in &mut self.instances {
            p.stop(Duration::from_secs(10)).await;
        }
        self.centralcloud.stop(Duration::from_secs(10)).await;
    }
}

pub(crate) async fn measure(
    args: &Args,
    sys: &mut System,
    label: &str,
    n: usize,
    how: Submit,
) -> Result<RunResult> {
    let pool = sys.admin.pool().clone();
    let prefix = format!("load/{label}-{}", Uuid::new_v4().simple());
    let like = format!("{prefix}/%");
    let dlq_before: i64 = sqlx::query_scalar("SELECT count(*) FROM pgflow.dlq")
        .fetch_one(&pool)
        .await?;
    let cpu_before = sys.cpu();
    let t0_db: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&pool)
        .await?;
    let t0 = Instant::now();
    let (submitted, mode) = match how {
        Submit::Light => (
            submit_light(
                &sys.addrs,
                &prefix,
                n,
                Duration::from_millis(args.light_interval_ms),
            )
            .await?,
            format!("light: 1 per {} ms", args.light_interval_ms),
        ),
        Submit::Burst => (
            submit_burst(&sys.addrs, &prefix, n, args.concurrency as usize).await?,
            format!("{} in flight", args.concurrency),
        ),
    };
    let submit_secs = t0.elapsed().as_secs_f64();
    let accepted = submitted.ids.len() as i64;

    // Wait until every accepted proposal is final, then until the journey's queues are empty.
    let deadline = t0 + Duration::from_secs(args.timeout_s);
    let mut timed_out = false;
    let mut last_report = Instant::now();
    loop {
        let finished: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM singularity.proposals WHERE file LIKE $1 AND status IN {FINAL}"
        ))
        .bind(&like)
        .fetch_one(&pool)
        .await?;
        if finished >= accepted {
            break;
        }
        sys.check_alive()?;
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  run {label}: {finished}/{accepted} final after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        // The drain figure comes from the database's timestamps, not from
        // this poll: poll less often as the run goes on, so that the
        // count (a scan of the run's proposals) does not load the server.
        let pause = (t0.elapsed() / 20).clamp(Duration::from_millis(100), Duration::from_secs(1));
        tokio::time::sleep(pause).await;
    }
    let queues: Vec<String> = JOURNEY_QUEUES.iter().map(|q| q.to_string()).collect();
    let mut idle_secs = None;
    while !timed_out {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgflow.live_messages WHERE queue_name = ANY($1)",
        )
        .bind(&queues)
        .fetch_one(&pool)
        .await?;
        if left == 0 {
            idle_secs = Some(t0.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall_secs = t0.elapsed().as_secs_f64();
    let cpu_after = sys.cpu();
    let queued_at_end: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgflow.live_messages WHERE queue_name = ANY($1)")
            .bind(&queues)
            .fetch_one(&pool)
            .await?;

    // The figures, from the instances' own rows.
    type Stats = (
        i64,
        i64,
        i64,
        i64,
        i64,
        Option<f64>,
        Option<Vec<f64>>,
        Option<Vec<f64>>,
        Option<Vec<f64>>,
    );
    let stats: Stats = sqlx::query_as(
        "WITH p AS (
             SELECT status, created_at, decided_at, applied_at,
                    CASE status WHEN 'applied' THEN applied_at
                                WHEN 'rolled_back' THEN rolled_back_at
                                WHEN 'consensus_failed' THEN decided_at
                                ELSE updated_at END AS final_at
               FROM singularity.proposals WHERE file LIKE $1)
         SELECT count(*),
                count(*) FILTER (WHERE status = 'applied'),
                count(*) FILTER (WHERE status = 'consensus_failed'),
                count(*) FILTER (WHERE status = 'rolled_back'),
                count(*) FILTER (WHERE status = 'failed'),
                extract(epoch FROM max(final_at) FILTER (WHERE status IN ('applied', 'consensus_failed', 'rolled_back', 'failed')) - $2)::float8,
                CASE WHEN count(applied_at) > 0 THEN ARRAY[
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - created_at)::float8),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - created_at)::float8),
                  max(extract(epoch FROM applied_at - created_at)::float8)] END,
                CASE WHEN count(decided_at) > 0 THEN ARRAY[
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)::float8),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)::float8),
                  max(extract(epoch FROM decided_at - created_at)::float8)] END,
                CASE WHEN count(applied_at) > 0 THEN ARRAY[
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - decided_at)::float8),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - decided_at)::float8),
                  max(extract(epoch FROM applied_at - decided_at)::float8)] END
           FROM p",
    )
    .bind(&like)
    .bind(t0_db)
    .fetch_one(&pool)
    .await?;
    let decided_by: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(decided_by, status), count(*) FROM centralcloud.proposals
          WHERE proposal_id = ANY($1) GROUP BY 1 ORDER BY 1",
    )
    .bind(&submitted.ids)
    .fetch_all(&pool)
    .await?;
    // Time each hop of these journeys took: sent -> acked.
    let hop_rows: Vec<(String, f64, f64, f64)> = sqlx::query_as(
        "SELECT a.queue_name,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.archived_at - a.created_at)::float8),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM a.archived_at - a.created_at)::float8),
                max(extract(epoch FROM a.archived_at - a.created_at)::float8)
           FROM pgflow.archive a
           JOIN singularity.proposals p ON p.trace_id = a.trace_id
          WHERE p.file LIKE $1 AND a.queue_name = ANY($2)
          GROUP BY 1",
    )
    .bind(&like)
    .bind(&queues)
    .fetch_all(&pool)
    .await?;
    let hops = JOURNEY_QUEUES
        .iter()
        .filter_map(|q| {
            hop_rows.iter().find(|r| r.0 == *q).map(|r| {
                (
                    q.trim_end_matches("_queue").to_string(),
                    Pct {
                        p50: r.1 * 1000.0,
                        p99: r.2 * 1000.0,
                        max: r.3 * 1000.0,
                    },
                )
            })
        })
        .collect();
    let dlq_after: i64 = sqlx::query_scalar("SELECT count(*) FROM pgflow.dlq")
        .fetch_one(&pool)
        .await?;
    let cpu = (
        cpu_after.0 - cpu_before.0,
        cpu_after.1 - cpu_before.1,
        cpu_after.2.zip(cpu_before.2).map(|(a, b)| a - b),
    );
    Ok(RunResult {
        label: label.to_string(),
        mode,
        requested: n,
        accepted: submitted.ids.len(),
        submit_errors: submitted.errors,
        first_error: submitted.first_error,
        submit_secs,
        submit_latency: pct_of(&submitted.latency),
        stored: stats.0,
        applied: stats.1,
        consensus_failed: stats.2,
        rolled_back: stats.3,
        failed: stats.4,
        drain_secs: if timed_out { None } else { stats.5 },
        idle_secs,
        timed_out,
        journey: pct_from(stats.6),
        consensus: pct_from(stats.7),
        execution: pct_from(stats.8),
        decided_by,
        dlq: dlq_after - dlq_before,
        cpu,
        wall_secs,
        hops,
        queued_at_end,
    })
}
