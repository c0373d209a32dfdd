//! # singularity
//!
//! One evolving instance of the three-agent system (one process per
//! `INSTANCE_ID`). It talks to CentralCloud and Genesis only through
//! Postgres queues:
//!
//! * **proposal queue** ([`proposals`]): a proposal is stored in the
//!   `singularity` schema and sent for consensus in one transaction, under a
//!   new trace id that every message of its journey carries (CLI
//!   `singularity propose`, HTTP `POST /proposals`);
//! * **votes** ([`voting`]): every vote request is answered from the safety
//!   profile of the agent type and this instance's own history, with a reason;
//! * **consensus results** ([`consensus`]): approved proposals are queued for
//!   execution on this same instance, rejected ones marked with their votes;
//! * **execution flow** ([`execution`]): the change is applied to its file
//!   in the instance's workspace (with a backup; paths leaving the workspace
//!   are refused), measured before and after, reported to the guardian;
//! * **rollbacks** ([`rollback`]): a HIGH-priority trigger restores the file;
//! * **safety profiles** ([`profiles`]): broadcast updates are stored and
//!   used by votes from then on;
//! * **pattern miner** ([`patterns`]): changes that stayed applied are
//!   reported to the aggregator, once each;
//! * **genesis publisher** ([`genesis_publisher`]): rules learned from the
//!   instance's own record, an LLM configuration and code analysis jobs are
//!   sent to Genesis (CLI `singularity genesis ...`), each stored in
//!   `singularity.genesis_requests` in the transaction that sends it;
//!   Genesis's results ([`genesis_results`]) mark them completed or failed.
//!
//! Life of a proposal: pending -> submitted -> consensus_reached |
//! consensus_failed -> executing -> applied -> rolled_back (or `failed` when
//! an approved change cannot be applied). Every state change commits with
//! the messages it causes and the ack of the message that caused it.
//! Every proposal reaches a final state: an execution that is
//! dead-lettered fails its proposal ([`execution`]), and the sweeper
//! ([`sweeper`]) resolves any proposal stuck past its time.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod consensus;
pub mod error;
pub mod execution;
pub mod genesis_publisher;
pub mod genesis_requests;
pub mod genesis_results;
pub mod http;
pub mod instance;
pub mod patterns;
pub mod profiles;
pub mod proposals;
pub mod rollback;
pub mod service;
pub mod status;
pub mod store;
pub mod submission_spool;
pub mod sweeper;
pub mod voting;

use tokio_util::sync::CancellationToken;

pub use cli::{Cli, Command};
pub use config::ServiceArgs;
pub use error::{Error, Result};
pub use genesis_publisher::{CodeAnalysis, GenesisPublisher, LlmConfig, Published};
pub use instance::Instance;
pub use proposals::{submit, NewProposal, Submitted};
pub use service::Singularity;
pub use store::ProposalState;

/// Runs what `cli` asks for: the service until `shutdown` is cancelled, or
/// one command (its output goes to stdout).
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<()> {
    match cli.command {
        Some(Command::Propose(args)) => {
            println!("{}", cli::propose(args).await?);
            Ok(())
        }
        Some(Command::Status(args)) => {
            print!("{}", with_newline(cli::status(args).await?));
            Ok(())
        }
        Some(Command::Genesis(args)) => {
            print!("{}", with_newline(cli::genesis::run(args).await?));
            Ok(())
        }
        None => {
            let db = cli.db.ok_or_else(|| {
                Error::Config("the service needs --database-url / PGFLOW_DATABASE_URL".into())
            })?;
            let Some(service) = Singularity::start(&db, &cli.http, &cli.service, shutdown).await?
            else {
                tracing::info!(
                    "shutdown requested while waiting for the database; singularity stopped"
                );
                return Ok(());
            };
            service.announce_ready();
            service.run_until_shutdown().await
        }
    }
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}
