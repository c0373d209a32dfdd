//! The centralcloud service: the consensus engine ([`consensus`]), the
//! guardian ([`guardian`]), the pattern aggregator ([`aggregator`]) and the
//! learning loop ([`learning`]), talking to the singularity instances and
//! to Genesis only through the queues, and keeping its own state in the
//! `centralcloud` schema (`migrations/20261125000004_centralcloud.sql`).
//!
//! Every consumer is transactional: a handler's writes, the messages they
//! cause and the ack of the message handled commit together, so a crash
//! never leaves a decision without its result message or the reverse.
//! Every message sent carries the trace id of the message that caused it
//! (one trace per proposal journey). A message that does not decode, or of
//! an unknown type, goes to the dead-letter queue with the reason and the
//! consumer carries on.
//!
//! [`run`] dispatches the command line: the service (default),
//! `learn` (one learning pass) or `status` (the schema's state).
#![forbid(unsafe_code)]

use pgflow_core::service::{self, ServiceRuntime};
use pgflow_core::{QueueName, Result};
use tokio_util::sync::CancellationToken;

pub mod aggregator;
pub mod config;
pub mod consensus;
pub mod engine;
pub mod guardian;
pub mod learning;
pub mod profiles;
pub mod status;

pub use config::{Cli, Command, Settings};
pub use engine::Engine;

/// The service's name: its role, schema, and the `source` of its messages.
pub const SOURCE: &str = "centralcloud";

/// The [`QueueName`] of one of the design's queues.
pub(crate) fn queue(name: &str) -> Result<QueueName> {
    QueueName::new(name)
}

/// Runs what the command line asks for; the service runs until `shutdown`.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<()> {
    let settings = Settings::from_cli(&cli);
    match cli.command.clone().unwrap_or(Command::Run) {
        Command::Run => run_service(cli, settings, shutdown).await,
        Command::Learn => {
            let pg = service::connect(SOURCE, &cli.db).await?;
            let report = learning::run_pass(&pg, &settings, learning::Trigger::Cli).await;
            pg.close().await;
            let report = report?;
            println!("{}", learn_summary(&report));
            Ok(())
        }
        Command::Status { json } => {
            let pg = service::connect(SOURCE, &cli.db).await?;
            let overview = status::overview(pg.pool()).await;
            pg.close().await;
            let overview = overview?;
            if json {
                println!("{}", serde_json::to_string_pretty(&overview)?);
            } else {
                println!("{}", status::render(&overview));
            }
            Ok(())
        }
    }
}

/// One line saying what a learning pass did.
pub fn learn_summary(r: &learning::LearningReport) -> String {
    match r.run_id {
        _ if r.busy => "learning pass skipped: another pass is running".to_string(),
        None => "learning pass: no new evidence since the last pass and no profile moved; nothing sent".to_string(),
        Some(id) => format!(
            "learning pass {id}: patterns_processed={} rules_generated={} thresholds_updated={} profiles_updated={} (proposals={} metrics={} pattern_reports={})",
            r.patterns_processed,
            r.rules_generated,
            r.thresholds_updated,
            r.profiles.len(),
            r.proposals_seen,
            r.metrics_seen,
            r.pattern_reports_seen
        ),
    }
}

/// The service: ops server, engine, ready line, graceful shutdown.
async fn run_service(cli: Cli, settings: Settings, shutdown: CancellationToken) -> Result<()> {
    let Some(rt) = ServiceRuntime::start(SOURCE, &cli.db, &cli.http, shutdown.clone()).await?
    else {
        tracing::info!("shutdown requested while waiting for the database; centralcloud stopped");
        return Ok(());
    };
    let engine = Engine::new(rt.pgflow().clone(), settings)?;
    let board = engine.status_board();
    rt.ops().set_status_provider(move || board.to_json());
    let mut work = tokio::spawn(engine.run(shutdown.clone()));
    rt.announce_ready("instance=centralcloud");
    let result = tokio::select! {
        _ = shutdown.cancelled() => match (&mut work).await {
            Ok(r) => r,
            Err(e) => Err(pgflow_core::Error::Config(format!("engine task failed: {e}"))),
        },
        r = &mut work => {
            shutdown.cancel();
            match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(pgflow_core::Error::Config(format!("engine task failed: {e}"))),
            }
        }
    };
    rt.stop().await;
    tracing::info!("centralcloud stopped");
    result
}
