//! `pgflow up`: run the system locally. Starts a private PostgreSQL when no
//! URL is given, applies the migrations, and shows the queues live until
//! Ctrl-C, then stops everything cleanly.

use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::output;
use crate::client::{redact_url, Pgflow};
use crate::error::{Error, Result};
use crate::local_pg::{LocalPostgres, LocalPostgresOptions};

/// Arguments of `pgflow up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// How often to refresh the live view.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// Print the view once and exit (for scripts and smoke tests).
    #[arg(long)]
    pub once: bool,
}

/// Runs `up`.
pub async fn run(
    url: Option<String>,
    args: &UpArgs,
    json: bool,
    shutdown: CancellationToken,
) -> Result<()> {
    let (url, local) = match url {
        Some(u) => (u, None),
        None => {
            eprintln!("no database URL given: starting a private PostgreSQL …");
            let pg = tokio::task::spawn_blocking(|| {
                LocalPostgres::start_with(LocalPostgresOptions {
                    fsync: true,
                    ..LocalPostgresOptions::default()
                })
            })
            .await
            .map_err(|e| Error::LocalPostgres(e.to_string()))??;
            (pg.url("postgres"), Some(pg))
        }
    };
    let pg = Pgflow::connect(&url).await?;
    pg.migrate().await?;
    println!("pgflow ready: {} (Ctrl-C to stop)", redact_url(&url));
    loop {
        let stats = pg.list_queues().await?;
        if json {
            println!("{}", serde_json::to_string(&stats)?);
        } else {
            println!("{}", output::queues_table(&stats));
        }
        if args.once {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(args.refresh) => {}
        }
    }
    pg.close().await;
    if let Some(mut local) = local {
        tokio::task::spawn_blocking(move || local.stop(crate::local_pg::StopMode::Fast))
            .await
            .map_err(|e| Error::LocalPostgres(e.to_string()))??;
        eprintln!("private PostgreSQL stopped");
    }
    Ok(())
}
