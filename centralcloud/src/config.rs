//! The command line (every flag with an environment fallback, under the
//! names of seeds 000 and 003) and the [`Settings`] the engine runs with.
//!
//! `centralcloud` without a subcommand runs the service; `centralcloud
//! learn` runs one learning pass and exits; `centralcloud status` prints
//! the state of the `centralcloud` schema. Options go before the
//! subcommand (`centralcloud --database-url URL status --json`).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pgflow_core::service::{ConsumerArgs, DatabaseArgs, HttpArgs};
use pgflow_core::RetryPolicy;

/// Command line of centralcloud.
#[derive(Debug, Parser)]
#[command(
    name = "centralcloud",
    version,
    about = "CentralCloud service of the pgflow three-agent system: consensus engine, \
             guardian, pattern aggregator and learning loop",
    after_help = "Options go before the subcommand (centralcloud --database-url URL status --json); \
                  every option has the environment fallback shown."
)]
pub struct Cli {
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Ops HTTP server and metrics settings.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Workers per consumer.
    #[command(flatten)]
    pub workers: WorkerArgs,
    /// How the consumers poll, retry and time out.
    #[command(flatten)]
    pub consumers: ConsumerArgs,
    /// Consensus and learning settings.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// What to do (default: run the service).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the service (what `centralcloud` alone does).
    Run,
    /// Run one pass of the learning loop against the database and exit.
    Learn,
    /// Print proposals by state, votes, patterns and safety profiles.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// Workers per consumer (seed 003's names and defaults).
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Workers handling proposals_for_consensus_queue.
    #[arg(long, env = "PGFLOW_PROPOSALS_WORKERS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub proposals_workers: u32,
    /// Workers handling metrics_to_guardian_queue.
    #[arg(long, env = "PGFLOW_METRICS_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub metrics_workers: u32,
    /// Workers handling patterns_for_aggregator_queue.
    #[arg(long, env = "PGFLOW_PATTERNS_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub patterns_workers: u32,
    /// Workers handling consensus_votes_queue.
    #[arg(long, env = "PGFLOW_VOTES_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub votes_workers: u32,
}

/// Consensus and learning knobs.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Share of the votes cast that must approve, as a decimal or a
    /// fraction ("0.6667" or "2/3"). Compared to four decimal places, so
    /// 0.6667 means two thirds.
    #[arg(long, env = "CENTRALCLOUD_QUORUM", default_value = "0.6667", value_parser = parse_quorum)]
    pub quorum: f64,
    /// Time instances get to vote, in milliseconds; the proposal is decided
    /// on the votes cast when it passes.
    #[arg(long, env = "CENTRALCLOUD_VOTE_DEADLINE_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub vote_deadline_ms: u64,
    /// How often the decider looks for proposals past their deadline, in milliseconds.
    #[arg(long, env = "CENTRALCLOUD_DECIDER_INTERVAL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub decider_interval_ms: u64,
    /// Interval of the learning loop in milliseconds; 0 turns the periodic
    /// loop off (`centralcloud learn` still runs a pass on demand).
    #[arg(
        long,
        env = "CENTRALCLOUD_LEARNING_INTERVAL_MS",
        default_value_t = 60_000
    )]
    pub learning_interval_ms: u64,
    /// Executions of an agent type a learning pass needs before it moves
    /// that agent type's thresholds.
    #[arg(long, env = "CENTRALCLOUD_LEARNING_MIN_SAMPLES", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub learning_min_samples: u64,
    /// Half-life of an outcome in an agent type's success rate, in
    /// milliseconds: an execution or pattern report this old weighs half as
    /// much as a new one, so an agent type locked out by old failures
    /// regains the instances' trust as they age (default one day).
    #[arg(long, env = "CENTRALCLOUD_LEARNING_HALF_LIFE_MS", default_value_t = 86_400_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub learning_half_life_ms: u64,
}

/// Parses a quorum: a decimal or a fraction `a/b`, in `(0, 1]`.
pub fn parse_quorum(s: &str) -> Result<f64, String> {
    let value = match s.split_once('/') {
        Some((a, b)) => {
            let a: f64 = a.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
            let b: f64 = b.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
            if b == 0.0 {
                return Err(format!("{s:?}: division by zero"));
            }
            a / b
        }
        None => s.trim().parse().map_err(|e| format!("{s:?}: {e}"))?,
    };
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!(
            "quorum must be in (0, 1] (for example 0.6667 or 2/3), got {s:?}"
        ))
    }
}

/// Everything the engine needs besides the database handle.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Share of the votes cast that must approve.
    pub quorum: f64,
    /// Time instances get to vote.
    pub vote_deadline: Duration,
    /// How often the deadline decider runs.
    pub decider_interval: Duration,
    /// Learning-loop interval; `None` = no periodic pass.
    pub learning_interval: Option<Duration>,
    /// Executions needed before a pass moves an agent type's thresholds.
    pub learning_min_samples: u64,
    /// Half-life of an outcome in the success rate.
    pub learning_half_life: Duration,
    /// Workers on proposals_for_consensus_queue.
    pub proposals_workers: usize,
    /// Workers on metrics_to_guardian_queue.
    pub metrics_workers: usize,
    /// Workers on patterns_for_aggregator_queue.
    pub patterns_workers: usize,
    /// Workers on consensus_votes_queue.
    pub votes_workers: usize,
    /// Retry policy written to the consumed queues.
    pub retry: RetryPolicy,
    /// Consumer polling fallback.
    pub poll_interval: Duration,
    /// Largest claim.
    pub batch_size: usize,
    /// Handler timeout.
    pub timeout: Duration,
    /// Messages handled per transaction (every consumer of centralcloud
    /// only writes to the database).
    pub tx_batch: usize,
}

impl Default for Settings {
    /// The defaults of the command line.
    fn default() -> Self {
        Self {
            quorum: 0.6667,
            vote_deadline: Duration::from_millis(5000),
            decider_interval: Duration::from_millis(500),
            learning_interval: Some(Duration::from_millis(60_000)),
            learning_min_samples: 3,
            learning_half_life: Duration::from_millis(86_400_000),
            proposals_workers: 3,
            metrics_workers: 2,
            patterns_workers: 1,
            votes_workers: 2,
            retry: RetryPolicy::default(),
            poll_interval: Duration::from_millis(1000),
            batch_size: 10,
            timeout: Duration::from_millis(30_000),
            tx_batch: 8,
        }
    }
}

impl Settings {
    /// The settings a command line asks for.
    pub fn from_cli(cli: &Cli) -> Self {
        let (c, w, e) = (&cli.consumers, &cli.workers, &cli.engine);
        Self {
            quorum: e.quorum,
            vote_deadline: Duration::from_millis(e.vote_deadline_ms),
            decider_interval: Duration::from_millis(e.decider_interval_ms),
            learning_interval: (e.learning_interval_ms > 0)
                .then(|| Duration::from_millis(e.learning_interval_ms)),
            learning_min_samples: e.learning_min_samples,
            learning_half_life: Duration::from_millis(e.learning_half_life_ms),
            proposals_workers: w.proposals_workers as usize,
            metrics_workers: w.metrics_workers as usize,
            patterns_workers: w.patterns_workers as usize,
            votes_workers: w.votes_workers as usize,
            retry: c.retry(),
            poll_interval: Duration::from_millis(c.poll_interval_ms),
            batch_size: c.batch_size as usize,
            timeout: Duration::from_millis(c.timeout_ms),
            tx_batch: c.tx_batch(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_accepts_decimals_and_fractions() {
        assert_eq!(parse_quorum("0.6667"), Ok(0.6667));
        assert_eq!(parse_quorum("1"), Ok(1.0));
        assert!((parse_quorum("2/3").unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!(parse_quorum("0").is_err());
        assert!(parse_quorum("1.5").is_err());
        assert!(parse_quorum("1/0").is_err());
        assert!(parse_quorum("abc").is_err());
    }

    #[test]
    fn defaults_match_the_command_line() {
        let cli = Cli::parse_from(["centralcloud", "--database-url", "postgres://x/y"]);
        assert_eq!(Settings::from_cli(&cli), Settings::default());
        assert_eq!(cli.command, None);
        let cli = Cli::parse_from([
            "centralcloud",
            "--database-url",
            "postgres://x/y",
            "--learning-interval-ms",
            "0",
            "status",
            "--json",
        ]);
        assert_eq!(Settings::from_cli(&cli).learning_interval, None);
        assert_eq!(cli.command, Some(Command::Status { json: true }));
    }
}
