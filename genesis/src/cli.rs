//! The `genesis` command line: without a subcommand (or with `serve`) it
//! runs the service; `genesis status` prints the workflows per queue from
//! the database.

use std::time::Duration;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use pgflow_core::service::{DatabaseArgs, HttpArgs};
use pgflow_core::{Pgflow, PgflowOptions};
use tokio_util::sync::CancellationToken;

use crate::config::{WorkflowArgs, WorkflowConfig};
use crate::error::Result;
use crate::{service, status, store};

/// The service's flags (what `genesis` without a subcommand runs).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Ops HTTP server and metrics settings.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Workflow settings (seed 000's consumer configuration).
    #[command(flatten)]
    pub workflow: WorkflowArgs,
}

/// The flags of `genesis status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What to do.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the service (what `genesis` without a subcommand does).
    Serve(ServeArgs),
    /// Workflows per consumed queue from the database: processed,
    /// succeeded, failed, in flight, last activity. (A running genesis
    /// serves the live state at `GET /status`.)
    Status(StatusArgs),
}

/// The `genesis` command line: the service's flags, or a subcommand with
/// its own. (Hand-assembled from the derived parts: a derived struct with
/// an optional subcommand would require the service's `--database-url`
/// before any subcommand.)
#[derive(Debug, Clone)]
pub struct Cli {
    /// What to do.
    pub command: Command,
}

const ABOUT: &str = "Genesis service of the pgflow three-agent system: rule engine, LLM-config \
                     manager and code analysis jobs (runs the service unless a subcommand is given)";

impl FromArgMatches for Cli {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let command = if m.subcommand_name().is_some() {
            Command::from_arg_matches(m)?
        } else {
            Command::Serve(ServeArgs::from_arg_matches(m)?)
        };
        Ok(Self { command })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for Cli {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Command::augment_subcommands(ServeArgs::augment_args(cmd))
            .args_conflicts_with_subcommands(true)
            .subcommand_negates_reqs(true)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl CommandFactory for Cli {
    fn command() -> clap::Command {
        // After the parts: the subcommand enum's doc would be the about.
        Self::augment_args(clap::Command::new("genesis").version(env!("CARGO_PKG_VERSION")))
            .about(ABOUT)
            .long_about(None)
    }

    fn command_for_update() -> clap::Command {
        Self::command()
    }
}

impl Parser for Cli {}

/// Runs what the command line asks until it is done or `shutdown` is cancelled.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<()> {
    match cli.command {
        Command::Serve(a) => {
            let config = WorkflowConfig::from(&a.workflow);
            service::serve(&a.db, &a.http, config, shutdown).await
        }
        Command::Status(a) => print_status(&a.db, a.json).await,
    }
}

async fn print_status(db: &DatabaseArgs, json: bool) -> Result<()> {
    let pg = Pgflow::connect_with(
        &db.database_url,
        PgflowOptions {
            max_connections: 1,
            application_name: "genesis status".into(),
            acquire_timeout: Duration::from_secs(10),
            ..PgflowOptions::default()
        },
    )
    .await?;
    pg.check_schema().await?;
    let rows = store::summary(pg.pool()).await;
    pg.close().await;
    let report = status::from_summary(&rows?);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", status::table(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let mut argv = vec!["genesis", "--database-url", "postgres://x@h/db"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_subcommand_runs_the_service_with_seed_000_defaults() {
        let c = WorkflowConfig::from(&serve(&[]).workflow);
        assert_eq!(c, WorkflowConfig::default());
    }

    #[test]
    fn flags_set_the_knobs() {
        let a = serve(&[
            "--max-parallel-workers",
            "8",
            "--enable-parallel-processing",
            "no",
            "--batch-size",
            "20",
            "--poll-interval-ms",
            "250",
            "--timeout-ms",
            "5000",
            "--max-retries",
            "5",
        ]);
        let c = WorkflowConfig::from(&a.workflow);
        assert_eq!(
            (c.max_parallel_workers, c.parallel, c.workers()),
            (8, false, 1)
        );
        assert_eq!((c.batch_size, c.poll_interval.as_millis()), (20, 250));
        assert_eq!(c.timeout, std::time::Duration::from_secs(5));
        let retry = c.retry.unwrap();
        assert_eq!((retry.max_retries, retry.base_delay_ms), (5, 1000));
    }

    #[test]
    fn status_takes_its_own_database_url() {
        let cli = Cli::try_parse_from(["genesis", "status", "--json", "--database-url", "u"]);
        match cli.unwrap().command {
            Command::Status(a) => assert_eq!((a.db.database_url.as_str(), a.json), ("u", true)),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["genesis", "--timeout-ms", "5", "status"]).is_err());
    }
}
