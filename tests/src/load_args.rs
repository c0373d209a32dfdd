//! The command line of `system-load`.

use std::path::PathBuf;

use clap::Parser;

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "system-load",
    about = "Load test of the whole system: centralcloud + 3 singularity instances, proposals \
             through the full loop via POST /proposals; figures for BENCHMARKS.md"
)]
pub(crate) struct Args {
    /// PostgreSQL URL of a superuser on an existing server (a scratch
    /// database is created there and dropped at the end; the service roles
    /// must be able to log in without a password). Default: a private
    /// cluster with fsync on.
    #[arg(long)]
    pub(crate) database_url: Option<String>,
    /// Concurrent runs: proposals submitted at once, one run per size.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub(crate) sizes: Vec<usize>,
    /// Submissions in flight at once in the concurrent runs.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) concurrency: u32,
    /// Proposals of the light-load run (0: no light-load run).
    #[arg(long, default_value_t = 50)]
    pub(crate) light: usize,
    /// Interval between the light-load run's submissions, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub(crate) light_interval_ms: u64,
    /// Longest wait for a run to drain, in seconds (the run is then
    /// reported as timed out with what did finish).
    #[arg(long, default_value_t = 300)]
    pub(crate) timeout_s: u64,
    /// Singularity instances.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub(crate) instances: u32,
    /// Workers per consumer in every service (PGFLOW_*_WORKERS).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) workers: u16,
    /// Polling fallback of every consumer (PGFLOW_POLL_INTERVAL_MS; the
    /// services' default: wake-ups come by LISTEN/NOTIFY).
    #[arg(long, default_value_t = 1000)]
    pub(crate) poll_interval_ms: u64,
    /// Largest claim per statement (PGFLOW_BATCH_SIZE).
    #[arg(long, default_value_t = 32)]
    pub(crate) batch_size: u32,
    /// Messages per transaction of the database-only transactional
    /// consumers (PGFLOW_TX_BATCH; 1: each message in its own).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) tx_batch: u32,
    /// Connection pool of each service (default: 4 × workers + 10).
    #[arg(long)]
    pub(crate) pool_size: Option<u32>,
    /// CENTRALCLOUD_VOTE_DEADLINE_MS.
    #[arg(long, default_value_t = 5000)]
    pub(crate) vote_deadline_ms: u64,
    /// RUST_LOG of the services.
    #[arg(long, default_value = "warn")]
    pub(crate) service_log: String,
    /// Write the Markdown block into this file (between the bench-system markers).
    #[arg(long)]
    pub(crate) write: Option<PathBuf>,
}

impl Args {
    pub(crate) fn pool(&self) -> u32 {
        self.pool_size.unwrap_or(4 * u32::from(self.workers) + 10)
    }
}
