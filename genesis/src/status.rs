//! What an operator asks genesis (the seeds' `get_state`: processed,
//! succeeded, failed, last poll, plus in flight), per consumed queue and in
//! total: live from the consumers while genesis serves (`GET /status`),
//! or from the workflow table (`genesis status`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use pgflow_core::consumer::{ConsumerState, StateSnapshot};
use pgflow_core::protocol::ResultStatus;
use serde::Serialize;

use crate::config::{WorkflowConfig, CONSUMED_QUEUES};
use crate::store::QueueSummary;

#[derive(Debug, Default)]
struct QueueCounters {
    completed: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
}

/// Workflow outcomes per consumed queue since start.
#[derive(Debug)]
pub struct WorkflowCounters {
    queues: HashMap<&'static str, QueueCounters>,
}

impl Default for WorkflowCounters {
    fn default() -> Self {
        Self {
            queues: CONSUMED_QUEUES
                .iter()
                .map(|q| (*q, QueueCounters::default()))
                .collect(),
        }
    }
}

impl WorkflowCounters {
    /// Counts a finished workflow of `queue`.
    pub fn record(&self, queue: &str, status: ResultStatus, timed_out: bool) {
        let Some(c) = self.queues.get(queue) else {
            return;
        };
        match status {
            ResultStatus::Completed => c.completed.fetch_add(1, Ordering::Relaxed),
            ResultStatus::Failed => c.failed.fetch_add(1, Ordering::Relaxed),
        };
        if timed_out {
            c.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(completed, failed, timed_out)` of `queue`.
    pub fn get(&self, queue: &str) -> (u64, u64, u64) {
        self.queues.get(queue).map_or((0, 0, 0), |c| {
            (
                c.completed.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed),
                c.timed_out.load(Ordering::Relaxed),
            )
        })
    }
}

/// The state of one queue's workflows (or of all of them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStatus {
    /// The queue (`all` for the totals).
    pub queue: String,
    /// Workflows finished (completed + failed).
    pub processed: u64,
    /// Workflows completed.
    pub succeeded: u64,
    /// Workflows failed (failed results, timeouts, dead-lettered requests).
    pub failed: u64,
    /// Of the failed, those that timed out (live only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<u64>,
    /// Requests claimed and not finished (pending or running).
    pub in_flight: u64,
    /// When the consumer last asked for work (live only).
    pub last_poll: Option<DateTime<Utc>>,
    /// When a workflow last changed state (database only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<DateTime<Utc>>,
    /// The consumer's own counters (handler runs, retries, DLQ; live only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<StateSnapshot>,
}

/// The report: totals (`metrics`, as the seeds' `get_state`) and per queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// `live` (from the running consumers) or `database` (from the workflow table).
    pub source: &'static str,
    /// The totals over every queue.
    pub metrics: QueueStatus,
    /// One entry per consumed queue.
    pub queues: Vec<QueueStatus>,
}

fn totals(queues: &[QueueStatus]) -> QueueStatus {
    let sum = |f: fn(&QueueStatus) -> u64| queues.iter().map(f).sum();
    QueueStatus {
        queue: "all".into(),
        processed: sum(|q| q.processed),
        succeeded: sum(|q| q.succeeded),
        failed: sum(|q| q.failed),
        timed_out: queues.iter().map(|q| q.timed_out).sum::<Option<u64>>(),
        in_flight: sum(|q| q.in_flight),
        last_poll: queues.iter().filter_map(|q| q.last_poll).max(),
        last_activity: queues.iter().filter_map(|q| q.last_activity).max(),
        consumer: None,
    }
}

/// A handle on a running genesis's consumers (cheap to clone).
#[derive(Debug, Clone)]
pub struct StatusHandle {
    pub(crate) consumers: Vec<Arc<ConsumerState>>,
    pub(crate) counters: Arc<WorkflowCounters>,
    pub(crate) config: WorkflowConfig,
}

impl StatusHandle {
    /// The live report.
    pub fn report(&self) -> StatusReport {
        let queues: Vec<QueueStatus> = self
            .consumers
            .iter()
            .map(|c| {
                let snap = c.snapshot();
                let (completed, failed, timed_out) = self.counters.get(&snap.queue);
                QueueStatus {
                    queue: snap.queue.clone(),
                    processed: completed + failed,
                    succeeded: completed,
                    failed,
                    timed_out: Some(timed_out),
                    in_flight: u64::try_from(snap.in_flight).unwrap_or(0),
                    last_poll: snap.last_poll,
                    last_activity: None,
                    consumer: Some(snap),
                }
            })
            .collect();
        StatusReport {
            source: "live",
            metrics: totals(&queues),
            queues,
        }
    }

    /// The document served at `GET /status`: the live report and the settings.
    pub fn json(&self) -> serde_json::Value {
        let c = &self.config;
        serde_json::json!({
            "service": "genesis",
            "config": {
                "max_parallel_workers": c.max_parallel_workers,
                "enable_parallel_processing": c.parallel,
                "batch_size": c.batch_size,
                "poll_interval_ms": c.poll_interval.as_millis() as u64,
                "timeout_ms": c.timeout.as_millis() as u64,
                "min_job_ms": c.min_job.as_millis() as u64,
            },
            "state": self.report(),
        })
    }
}

/// The report from the workflow table's per-queue summary.
pub fn from_summary(rows: &[QueueSummary]) -> StatusReport {
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    let queues: Vec<QueueStatus> = rows
        .iter()
        .map(|r| QueueStatus {
            queue: r.queue.clone(),
            processed: count(r.processed),
            succeeded: count(r.succeeded),
            failed: count(r.failed),
            timed_out: None,
            in_flight: count(r.in_flight),
            last_poll: None,
            last_activity: r.last_activity,
            consumer: None,
        })
        .collect();
    StatusReport {
        source: "database",
        metrics: totals(&queues),
        queues,
    }
}

/// The report as a table for people.
pub fn table(report: &StatusReport) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "queue",
        "processed",
        "succeeded",
        "failed",
        "in flight",
        "last activity",
    ]);
    for q in report.queues.iter().chain(std::iter::once(&report.metrics)) {
        let when = q.last_activity.or(q.last_poll).map_or_else(
            || "-".to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        );
        t.add_row(vec![
            q.queue.clone(),
            q.processed.to_string(),
            q.succeeded.to_string(),
            q.failed.to_string(),
            q.in_flight.to_string(),
            when,
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_report_sums_the_queues() {
        let rows: Vec<QueueSummary> = CONSUMED_QUEUES
            .iter()
            .enumerate()
            .map(|(i, q)| QueueSummary {
                queue: q.to_string(),
                processed: i as i64 * 2,
                succeeded: i as i64,
                failed: i as i64,
                in_flight: 1,
                last_activity: None,
            })
            .collect();
        let r = from_summary(&rows);
        assert_eq!(r.queues.len(), 4);
        assert_eq!(
            (r.metrics.processed, r.metrics.failed, r.metrics.in_flight),
            (12, 6, 4)
        );
        let text = table(&r).to_string();
        assert!(
            text.contains("code_execution_requests") && text.contains("all"),
            "{text}"
        );
    }

    #[test]
    fn counters_count_per_queue() {
        let c = WorkflowCounters::default();
        c.record(CONSUMED_QUEUES[0], ResultStatus::Completed, false);
        c.record(CONSUMED_QUEUES[0], ResultStatus::Failed, true);
        c.record("elsewhere", ResultStatus::Failed, false);
        assert_eq!(c.get(CONSUMED_QUEUES[0]), (1, 1, 1));
        assert_eq!(c.get(CONSUMED_QUEUES[1]), (0, 0, 0));
    }
}
