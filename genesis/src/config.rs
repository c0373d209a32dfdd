//! Genesis's knobs (seed 000's `pgflow_consumer` config, seed 003's retry
//! settings): the flags with their environment fallbacks ([`WorkflowArgs`])
//! and the checked settings the workflow engine runs with
//! ([`WorkflowConfig`]).
//!
//! | flag | environment | default | meaning |
//! |---|---|---|---|
//! | `--max-parallel-workers` | `GENESIS_MAX_PARALLEL_WORKERS` | 4 | workflows running at once, over all four queues |
//! | `--enable-parallel-processing` | `GENESIS_ENABLE_PARALLEL_PROCESSING` | true | `false`: strictly one workflow at a time |
//! | `--batch-size` | `GENESIS_BATCH_SIZE` | 10 | largest claim per queue |
//! | `--poll-interval-ms` | `GENESIS_POLL_INTERVAL_MS` | 1000 | polling fallback when no NOTIFY arrives |
//! | `--timeout-ms` | `GENESIS_TIMEOUT_MS` | 30000 | time one workflow may run; past it, it fails |
//! | `--max-retries` | `PGFLOW_MAX_RETRIES` | queue's own (3) | retries of a request after an infrastructure failure |
//! | `--retry-delay-ms` | `PGFLOW_RETRY_DELAY_MS` | queue's own (1000) | base backoff delay of those retries |
//! | `--min-job-ms` | `GENESIS_MIN_JOB_MS` | 0 | simulated extra work: least time a code analysis job takes (tests, demos) |

use std::time::Duration;

use clap::builder::BoolishValueParser;
use pgflow_core::RetryPolicy;

use crate::error::{Error, Result};

/// Extra time the queue runtime gives a handler beyond the waits it may
/// legitimately make (see [`WorkflowConfig::handler_timeout`]): database
/// writes before and after the workflow itself.
pub const HANDLER_MARGIN: Duration = Duration::from_secs(10);

/// The queues genesis consumes; also the number of consumers sharing the
/// worker pool.
pub const CONSUMED_QUEUES: [&str; 4] = [
    pgflow_core::protocol::queues::GENESIS_RULE_UPDATES,
    pgflow_core::protocol::queues::GENESIS_LLM_CONFIG_UPDATES,
    pgflow_core::protocol::queues::CODE_EXECUTION_REQUESTS,
    pgflow_core::protocol::queues::LEARNING_LOOP_COMPLETED,
];

/// The workflow flags of the `genesis` command line.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkflowArgs {
    /// Workflows processed at once, over all consumed queues (`max_parallel_workers`).
    #[arg(
        long,
        env = "GENESIS_MAX_PARALLEL_WORKERS",
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    pub max_parallel_workers: u32,
    /// Process workflows in parallel (`enable_parallel_processing`); `false`
    /// processes strictly one at a time.
    #[arg(
        long,
        env = "GENESIS_ENABLE_PARALLEL_PROCESSING",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub enable_parallel_processing: bool,
    /// Largest claim per queue (`batch_size`).
    #[arg(
        long,
        env = "GENESIS_BATCH_SIZE",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub batch_size: u32,
    /// Polling fallback when no NOTIFY arrives, in milliseconds (`poll_interval_ms`).
    #[arg(
        long,
        env = "GENESIS_POLL_INTERVAL_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub poll_interval_ms: u64,
    /// Time one workflow may run, in milliseconds (`timeout_ms`); past it the
    /// workflow fails and a failed result says so.
    #[arg(
        long,
        env = "GENESIS_TIMEOUT_MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub timeout_ms: u64,
    /// Retries of a request whose workflow could not be carried out (database
    /// errors); default: the queue's own setting.
    #[arg(long, env = "PGFLOW_MAX_RETRIES")]
    pub max_retries: Option<u32>,
    /// Base delay of those retries in milliseconds (exponential backoff);
    /// default: the queue's own setting.
    #[arg(long, env = "PGFLOW_RETRY_DELAY_MS")]
    pub retry_delay_ms: Option<u32>,
    /// Simulated extra work: the least time a code analysis job takes, in
    /// milliseconds (for tests and demos; 0 in production).
    #[arg(
        long,
        env = "GENESIS_MIN_JOB_MS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=3_600_000)
    )]
    pub min_job_ms: u64,
}

/// The settings the workflow engine runs with. [`Default`] is seed 000's
/// configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowConfig {
    /// Workflows running at once over all queues when parallel processing is on.
    pub max_parallel_workers: usize,
    /// `enable_parallel_processing`.
    pub parallel: bool,
    /// Largest claim per queue.
    pub batch_size: usize,
    /// Polling fallback.
    pub poll_interval: Duration,
    /// Time one workflow may run.
    pub timeout: Duration,
    /// Retry policy written to the consumed queues; `None` keeps theirs.
    pub retry: Option<RetryPolicy>,
    /// Simulated extra work: the least time a code analysis job takes.
    pub min_job: Duration,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        Self {
            max_parallel_workers: 4,
            parallel: true,
            batch_size: 10,
            poll_interval: Duration::from_millis(1000),
            timeout: Duration::from_millis(30_000),
            retry: None,
            min_job: Duration::ZERO,
        }
    }
}

impl WorkflowConfig {
    /// Workflows that may run at once: `max_parallel_workers`, or 1 when
    /// parallel processing is off.
    pub fn workers(&self) -> usize {
        if self.parallel {
            self.max_parallel_workers
        } else {
            1
        }
    }

    /// The timeout the queue runtime enforces on one handler run. A handler
    /// first waits for one of the shared workers: at most
    /// `workers() * CONSUMED_QUEUES.len()` requests are claimed at once, so
    /// at most `CONSUMED_QUEUES.len() - 1` rounds of other workflows run
    /// before it, each bounded by [`WorkflowConfig::timeout`]. Then its own
    /// workflow runs (bounded by the same timeout, which genesis enforces
    /// itself and reports as a failed result), then its writes. Hence
    /// `timeout * CONSUMED_QUEUES.len() + HANDLER_MARGIN`: the runtime's
    /// timeout (a retryable failure) never fires before genesis's own.
    pub fn handler_timeout(&self) -> Duration {
        self.timeout
            .saturating_mul(CONSUMED_QUEUES.len() as u32)
            .saturating_add(HANDLER_MARGIN)
    }

    /// Checks the settings; the error names the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(what.to_string()));
        if self.max_parallel_workers == 0 || self.max_parallel_workers > 1024 {
            return bad("max_parallel_workers must be 1-1024");
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return bad("batch_size must be 1-10000");
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval_ms must be > 0");
        }
        if self.timeout.is_zero() {
            return bad("timeout_ms must be > 0");
        }
        Ok(())
    }
}

impl From<&WorkflowArgs> for WorkflowConfig {
    fn from(a: &WorkflowArgs) -> Self {
        let retry = (a.max_retries.is_some() || a.retry_delay_ms.is_some()).then(|| {
            let default = RetryPolicy::default();
            RetryPolicy {
                max_retries: a.max_retries.unwrap_or(default.max_retries),
                base_delay_ms: a.retry_delay_ms.unwrap_or(default.base_delay_ms),
                max_delay_ms: default.max_delay_ms,
            }
        });
        Self {
            max_parallel_workers: a.max_parallel_workers as usize,
            parallel: a.enable_parallel_processing,
            batch_size: a.batch_size as usize,
            poll_interval: Duration::from_millis(a.poll_interval_ms),
            timeout: Duration::from_millis(a.timeout_ms),
            retry,
            min_job: Duration::from_millis(a.min_job_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_seed_000() {
        let c = WorkflowConfig::default();
        assert_eq!(
            (c.max_parallel_workers, c.parallel, c.batch_size),
            (4, true, 10)
        );
        assert_eq!(c.poll_interval, Duration::from_millis(1000));
        assert_eq!(c.timeout, Duration::from_millis(30_000));
        assert_eq!(c.workers(), 4);
        assert!(c.validate().is_ok());
        let sequential = WorkflowConfig {
            parallel: false,
            ..c.clone()
        };
        assert_eq!(sequential.workers(), 1);
    }

    #[test]
    fn the_runtime_timeout_leaves_room_for_waiting_and_writing() {
        let c = WorkflowConfig {
            timeout: Duration::from_millis(300),
            ..WorkflowConfig::default()
        };
        assert_eq!(
            c.handler_timeout(),
            Duration::from_millis(1200) + HANDLER_MARGIN
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let c = WorkflowConfig {
            batch_size: 0,
            ..WorkflowConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("batch_size"));
    }
}
