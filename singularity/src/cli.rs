//! The command line: `singularity` (no subcommand) runs the service;
//! `singularity propose` submits a proposal and exits, printing its id and
//! trace id; `singularity status` shows this instance's proposals and
//! Genesis requests by state and the depth of the queues it consumes (a
//! table, or `--json`); `singularity genesis ...` sends requests to Genesis
//! ([`genesis`]).

pub mod genesis;

use std::io::Read;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pgflow_core::service::{self, DatabaseArgs, HttpArgs};
use uuid::Uuid;

use crate::config::{self, InstanceArgs, ServiceArgs, SpoolArgs};
use crate::error::{Error, Result};
use crate::instance::check_instance_id;
use crate::proposals::{self, NewProposal};
use crate::status;
use crate::submission_spool::SubmissionSpool;

/// Command-line configuration of singularity (every flag has an environment fallback).
#[derive(Debug, Parser)]
#[command(
    name = "singularity",
    version,
    about = "Singularity service of the pgflow three-agent system",
    long_about = "Singularity service of the pgflow three-agent system. Without a \
                  subcommand it runs the service (proposal queue, votes, execution \
                  flow, rollbacks, safety profiles, pattern miner).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A one-shot command instead of running the service.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Database settings (required to run the service).
    #[command(flatten)]
    pub db: Option<DatabaseArgs>,
    /// Ops HTTP server and metrics settings.
    #[command(flatten)]
    pub http: HttpArgs,
    /// The service's own settings.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// The one-shot commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a proposal: store it and send it for consensus, then print its
    /// proposal id and trace id.
    Propose(ProposeArgs),
    /// Show this instance's proposals and Genesis requests by state and the
    /// depth of the queues it consumes.
    Status(StatusArgs),
    /// Send requests to Genesis (learned rules, LLM configuration, code
    /// analysis), then print their request ids.
    Genesis(genesis::GenesisArgs),
}

/// `singularity propose`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProposeArgs {
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// The proposing instance.
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// The agent that made the change (for example BugFixerAgent).
    #[arg(long)]
    pub agent_type: String,
    /// The file to change, relative to the instance's workspace.
    #[arg(long)]
    pub file: String,
    /// The file's new content; `@path` reads it from a file, `@-` from stdin.
    #[arg(long)]
    pub change: String,
    /// Expected benefit, 0-10.
    #[arg(long, default_value_t = 5.0)]
    pub impact: f64,
    /// Expected risk, 0-10.
    #[arg(long, default_value_t = 1.0)]
    pub risk: f64,
    /// Relative cost of the change (1.0 is an ordinary change).
    #[arg(long, default_value_t = 1.0)]
    pub cost_factor: f64,
    /// A key for this submission: running the command again with the same
    /// key (after a timeout, say) prints the first proposal instead of
    /// submitting the change twice.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Print `{"proposal_id", "trace_id", "status"}` (and `"repeat": true`
    /// for a repeat) as JSON.
    #[arg(long)]
    pub json: bool,
    /// The instance's workspace (locates its submission spool, as the
    /// service does).
    #[arg(long, env = "SINGULARITY_WORKSPACE")]
    pub workspace_dir: Option<PathBuf>,
    /// Where the proposal waits while PostgreSQL is unreachable; the running
    /// instance with the same settings submits it when the database is back.
    #[command(flatten)]
    pub spool: SpoolArgs,
}

/// `singularity status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// The instance to show.
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The content named by `--change`: the text itself, `@path`, or `@-` (stdin).
pub fn read_change(arg: &str) -> Result<String> {
    read_arg("--change", arg)
}

/// The content named by the value `arg` of `flag`: the text itself,
/// `@path`, or `@-` (stdin).
pub fn read_arg(flag: &str, arg: &str) -> Result<String> {
    match arg.strip_prefix('@') {
        None => Ok(arg.to_string()),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            Ok(s)
        }
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("reading {flag} @{path}: {e}"),
            ))
        }),
    }
}

/// `singularity propose`: submits, and returns the text to print. While
/// PostgreSQL is unreachable a valid proposal is spooled (status
/// `spooled`) in the instance's spool, which the running instance submits
/// when the database is back.
pub async fn propose(a: ProposeArgs) -> Result<String> {
    let id = &a.instance.instance_id;
    check_instance_id(id)?;
    let p = NewProposal {
        agent_type: a.agent_type.clone(),
        file: a.file.clone(),
        change: read_change(&a.change)?,
        impact_score: a.impact,
        risk_score: a.risk,
        cost_factor: a.cost_factor,
        idempotency_key: a.idempotency_key.clone(),
    };
    proposals::check(id, &p)?;
    let workspace = config::workspace_dir(a.workspace_dir.as_deref(), id)?;
    let spool = SubmissionSpool::open(
        config::spool_dir(a.spool.spool_dir.as_deref(), &workspace)?,
        a.spool.spool_max as usize,
    )?;
    let submitted = match service::connect("singularity", &a.db).await {
        Ok(pg) => {
            let s = proposals::submit_or_spool(&pg, &spool, id, p).await;
            pg.close().await;
            s
        }
        Err(e) if e.is_connection() => {
            tracing::warn!(error = %pgflow_core::error::report(&e), "PostgreSQL unreachable");
            spool.put(Uuid::now_v7(), Uuid::now_v7(), p).await
        }
        Err(e) => Err(e.into()),
    };
    let s = submitted?;
    Ok(if a.json {
        serde_json::to_string(&s)?
    } else {
        format!(
            "proposal_id={} trace_id={} status={}{}",
            s.proposal_id,
            s.trace_id,
            s.status,
            if s.repeat { " repeat=true" } else { "" }
        )
    })
}

/// `singularity status`: gathers, and returns the text to print.
pub async fn status(a: StatusArgs) -> Result<String> {
    check_instance_id(&a.instance.instance_id)?;
    let pg = service::connect("singularity", &a.db).await?;
    let report = async {
        let mut conn = pg.pool().acquire().await?;
        status::gather(&mut conn, &a.instance.instance_id).await
    }
    .await;
    pg.close().await;
    let report = report?;
    Ok(if a.json {
        serde_json::to_string_pretty(&report)?
    } else {
        report.render()
    })
}
