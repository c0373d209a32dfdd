//! The singularity service. So far it connects to the queue database, checks
//! the schema, serves the ops endpoints (`/healthz`, `/readyz`, `/metrics`),
//! reports ready and waits for shutdown. Later issues add its
//! consumers and producers.
#![forbid(unsafe_code)]

use clap::Parser;
use pgflow_core::service::{DatabaseArgs, HttpArgs, ServiceRuntime};
use tokio_util::sync::CancellationToken;

/// Command-line configuration of singularity (every flag has an environment fallback).
#[derive(Debug, Parser)]
#[command(
    name = "singularity",
    version,
    about = "Singularity service of the pgflow three-agent system"
)]
pub struct Config {
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Ops HTTP server and metrics settings.
    #[command(flatten)]
    pub http: HttpArgs,
    /// This instance's id (targeted messages name it).
    #[arg(long, env = "INSTANCE_ID", default_value = "singularity_1")]
    pub instance_id: String,
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> pgflow_core::Result<()> {
    let rt = ServiceRuntime::start("singularity", &config.db, &config.http, shutdown).await?;
    rt.announce_ready(&format!("instance={}", config.instance_id));
    rt.run_until_shutdown().await;
    tracing::info!("singularity stopped");
    Ok(())
}
