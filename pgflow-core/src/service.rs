//! What every service binary does around its own work: connect to the
//! queue database, check that the schema is migrated, announce readiness
//! with one line on stdout, and run until shutdown is requested.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::client::{redact_url, Pgflow, PgflowOptions};
use crate::error::Result;

/// Connection settings shared by the services (flags with env fallbacks).
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL of the queue database.
    #[arg(long, env = "PGFLOW_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Largest connection pool.
    #[arg(long, env = "PGFLOW_POOL_SIZE", default_value_t = 10)]
    pub pool_size: u32,
}

/// Connects as `service` and checks the schema.
pub async fn connect(service: &str, db: &DatabaseArgs) -> Result<Pgflow> {
    let pg = Pgflow::connect_with(
        &db.database_url,
        PgflowOptions {
            max_connections: db.pool_size,
            application_name: service.to_string(),
            acquire_timeout: Duration::from_secs(10),
            ..PgflowOptions::default()
        },
    )
    .await?;
    pg.check_schema().await?;
    tracing::info!(service, url = %redact_url(&db.database_url), "connected, schema is current");
    Ok(pg)
}

/// Prints the ready line that supervisors and tests wait for.
pub fn announce_ready(service: &str, detail: &str) {
    println!("{service} ready {detail}");
}

/// Waits for shutdown, then closes the pool.
pub async fn run_until_shutdown(pg: Pgflow, shutdown: CancellationToken) {
    shutdown.cancelled().await;
    pg.close().await;
}
