//! The centralcloud service. So far it connects to the queue database, checks
//! the schema, reports ready and waits for shutdown. Later issues add its
//! consumers and producers.
#![forbid(unsafe_code)]

use clap::Parser;
use pgflow_core::service::{self, DatabaseArgs};
use tokio_util::sync::CancellationToken;

/// Command-line configuration of centralcloud (every flag has an environment fallback).
#[derive(Debug, Parser)]
#[command(
    name = "centralcloud",
    version,
    about = "CentralCloud service of the pgflow three-agent system"
)]
pub struct Config {
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> pgflow_core::Result<()> {
    let pg = service::connect("centralcloud", &config.db).await?;
    service::announce_ready("centralcloud", "instance=centralcloud");
    service::run_until_shutdown(pg, shutdown).await;
    tracing::info!("centralcloud stopped");
    Ok(())
}
