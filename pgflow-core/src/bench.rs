//! `pgflow-bench`: throughput and latency of the queue, side by side with
//! the `pgmq` crate's client (`PGMQueue`, no extension needed) doing the
//! same work on the same PostgreSQL in the same run. Built only with
//! `--features bench`.

mod backend;
mod probe;
mod report;
mod runtime;
mod scenarios;

use std::path::PathBuf;

use clap::Parser;
use sqlx::Executor;

use crate::client::{Pgflow, PgflowOptions};
use crate::error::{Error, Result};
use crate::local_pg::{LocalPostgres, LocalPostgresOptions};
use crate::testing::with_database;

pub use report::Figures;

/// Benchmark options.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pgflow-bench",
    about = "Benchmark pgflow against pgmq on the same PostgreSQL"
)]
pub struct BenchArgs {
    /// Server to benchmark on (a scratch database is created and dropped).
    /// Without it a private cluster with fsync on is started.
    #[arg(long, env = "PGFLOW_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Messages in the batched end-to-end run.
    #[arg(long, default_value_t = 200_000)]
    pub messages: usize,
    /// Messages per send / claim / ack call in batched runs.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Concurrent producers in batched runs.
    #[arg(long, default_value_t = 2)]
    pub producers: usize,
    /// Concurrent consumers in batched runs.
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,
    /// Messages in the one-message-per-send run.
    #[arg(long, default_value_t = 50_000)]
    pub single_messages: usize,
    /// Concurrent producers in the one-message-per-send run.
    #[arg(long, default_value_t = 16)]
    pub single_producers: usize,
    /// Queue depth for the depth run.
    #[arg(long, default_value_t = 1_000_000)]
    pub depth: usize,
    /// Messages drained (claim + ack) in each depth measurement.
    #[arg(long, default_value_t = 100_000)]
    pub depth_sample: usize,
    /// Skip the depth run.
    #[arg(long)]
    pub skip_depth: bool,
    /// Skip the run with a REPEATABLE READ transaction held open.
    #[arg(long)]
    pub skip_rr: bool,
    /// Skip the one-message-per-send run.
    #[arg(long)]
    pub skip_single: bool,
    /// Skip pgmq.
    #[arg(long)]
    pub skip_pgmq: bool,
    /// Write the results into this Markdown file (between bench markers).
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Which benchmarks: the queue against pgmq, the consumer runtime, or both.
    #[arg(long, value_enum, default_value_t = Suite::All)]
    pub suite: Suite,
    /// Messages in the runtime end-to-end run.
    #[arg(long, default_value_t = 100_000)]
    pub runtime_messages: u64,
    /// Workers of the runtime end-to-end run.
    #[arg(long, default_value_t = 32)]
    pub runtime_workers: usize,
    /// Claims in flight at once in the runtime end-to-end run
    /// (`ConsumerConfig::fetchers`; 0: the runtime's default).
    #[arg(long, default_value_t = 0)]
    pub runtime_fetchers: usize,
    /// Internal: run as the consumer process of the runtime run.
    #[arg(long, hide = true)]
    pub child_consume: Option<u64>,
}

/// Which benchmarks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Both.
    All,
    /// The queue against pgmq.
    Queue,
    /// The consumer runtime.
    Runtime,
}

/// Runs every scenario and reports.
pub async fn run(args: BenchArgs) -> Result<()> {
    if let Some(n) = args.child_consume {
        let url = args
            .database_url
            .as_deref()
            .ok_or_else(|| Error::Config("--child-consume needs --database-url".into()))?;
        let pg = Pgflow::connect(url).await?;
        let r = runtime::child_consume(&pg, n, args.runtime_workers, args.runtime_fetchers).await;
        pg.close().await;
        return r;
    }
    let (server_url, local) = match &args.database_url {
        Some(u) => (u.clone(), None),
        None => {
            eprintln!("starting a private PostgreSQL (fsync on) …");
            let pg = tokio::task::spawn_blocking(|| {
                LocalPostgres::start_with(LocalPostgresOptions {
                    fsync: true,
                    ..LocalPostgresOptions::default()
                })
            })
            .await
            .map_err(|e| Error::LocalPostgres(e.to_string()))??;
            (pg.socket_url("postgres"), Some(pg))
        }
    };
    let db = format!("pgflow_bench_{}", uuid::Uuid::new_v4().simple());
    let admin = Pgflow::connect(&server_url).await?;
    // The name is generated above: no user input reaches this statement.
    admin
        .pool()
        .execute(format!("CREATE DATABASE {db}").as_str())
        .await?;
    let url = with_database(&server_url, &db);
    let pg = Pgflow::connect_with(
        &url,
        PgflowOptions {
            max_connections: (args.single_producers + args.producers + args.consumers + 4) as u32,
            application_name: "pgflow-bench".into(),
            ..PgflowOptions::default()
        },
    )
    .await?;
    pg.migrate().await?;
    let mut env = report::Environment::read(&pg, &args, local.is_some()).await?;
    let before = probe::Probe::run(&pg).await?;
    let figures = async {
        let mut f = if args.suite == Suite::Runtime {
            report::Figures::default()
        } else {
            scenarios::run_all(&pg, &args).await?
        };
        let runtime = if args.suite == Suite::Queue {
            Vec::new()
        } else {
            runtime::run_all(&pg, &url, &args).await?
        };
        f.runtime = runtime;
        Ok::<_, Error>(f)
    }
    .await;
    let after = probe::Probe::run(&pg).await.ok();
    env.lines.push(probe::line(&before, after.as_ref()));
    pg.close().await;
    admin
        .pool()
        .execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
        .await?;
    admin.close().await;
    drop(local);
    let figures = figures?;
    for (rows_present, text, marker) in [
        (
            !figures.rows.is_empty(),
            report::render(&env, &figures),
            "bench",
        ),
        (
            !figures.runtime.is_empty(),
            report::render_runtime(&env, &figures.runtime),
            "bench-runtime",
        ),
    ] {
        if !rows_present {
            continue;
        }
        println!("{text}");
        if let Some(path) = &args.write {
            report::write_into(path, &text, marker)?;
            eprintln!("results written to {}", path.display());
        }
    }
    Ok(())
}
