//! The `pgflow` admin command line: argument parsing and dispatch. The
//! binary's `main` only parses, sets up tracing and calls [`run`].

mod consume;
pub mod dashboard;
mod output;
pub mod roles;
mod up;

pub use consume::EXEC_RETRY_STATUS;

use std::io::Read;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::Pgflow;
use crate::error::{Error, Result};
use crate::message::OutgoingMessage;
use crate::queue_config::{DeliveryKind, QueueConfig, RetryPolicy};
use crate::queue_name::QueueName;

/// Administer pgflow durable PostgreSQL queues.
#[derive(Debug, Parser)]
#[command(name = "pgflow", version, about, long_about = None)]
pub struct Cli {
    /// PostgreSQL URL (falls back to DATABASE_URL).
    #[arg(
        long,
        env = "PGFLOW_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the queue schema and the design's 16 queues.
    Init(InitArgs),
    /// List queues with depth, in flight, delayed, DLQ size and throughput.
    Queues,
    /// Statistics of one queue.
    Stats {
        /// Queue name.
        queue: QueueName,
    },
    /// Live messages of a queue, in claim order.
    Pending {
        /// Queue name.
        queue: QueueName,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Send one message (JSON text, or `-` to read it from stdin).
    Send(SendArgs),
    /// The dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The archive of processed messages.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Queue settings.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Run the whole system locally: a private PostgreSQL when no URL is
    /// given, migrations, centralcloud, genesis and N singularity instances
    /// (binaries next to pgflow), and a live view until Ctrl-C; `--demo`
    /// feeds scenarios.
    Up(up::UpArgs),
    /// Consume a queue: print each handled message as a JSON line (or run
    /// a command per message with `--exec`); stops on Ctrl-C after draining.
    Consume(consume::ConsumeArgs),
    /// Serve the operator dashboard: topology, queue charts, the DLQ with
    /// retry and purge (with --dashboard-token), journeys and alerts.
    Dashboard(dashboard::DashboardArgs),
}

/// Arguments of `pgflow init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// After migrating, set the password of each service role from
    /// PGFLOW_SINGULARITY_PASSWORD, PGFLOW_CENTRALCLOUD_PASSWORD and
    /// PGFLOW_GENESIS_PASSWORD, or from the file named by the same name
    /// with `_FILE` appended (docker secrets). A role whose variables are
    /// unset keeps its password. Passwords are never taken as flags.
    /// Instances's roles get theirs from PGFLOW_<INSTANCE>_PASSWORD
    /// (e.g. PGFLOW_SINGULARITY_2_PASSWORD) the same way.
    #[arg(long)]
    pub role_passwords_from_env: bool,
    /// Create the login role of each instance (comma-separated instance
    /// ids, e.g. singularity_1,singularity_2), a member of `singularity`:
    /// each instance logs in as its own role, so the database records who
    /// sent each message and an instance cannot speak in another's name.
    #[arg(long, env = "PGFLOW_INSTANCES", value_delimiter = ',',
          value_parser = roles::parse_instance_id)]
    pub instances: Vec<String>,
}

/// Arguments of `pgflow send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Queue name.
    pub queue: QueueName,
    /// The payload as JSON, or `-` for stdin.
    #[arg(value_name = "JSON")]
    pub payload: String,
    /// Message type (default: the payload's "type" field, else "message").
    #[arg(long = "type")]
    pub msg_type: Option<String>,
    /// Priority (higher first).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i16,
    /// Delay before the message becomes visible, e.g. `500ms`, `10s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    /// Address the message to one instance.
    #[arg(long)]
    pub target: Option<String>,
    /// Trace id to carry (default: a new one).
    #[arg(long)]
    pub trace_id: Option<Uuid>,
    /// Who the message is from. By default the database records it: your
    /// login role, or `operator:<login>` for an unrestricted login (owner,
    /// superuser), which consumers accept as speaking for any instance. A
    /// restricted login (a service or instance role) may name only itself.
    #[arg(long)]
    pub source: Option<String>,
}

/// `pgflow dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead letters, newest first.
    List {
        /// Only this queue.
        #[arg(long)]
        queue: Option<QueueName>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Put a dead letter back on its queue.
    Retry {
        /// The message id.
        id: Uuid,
    },
    /// Delete dead letters.
    Purge {
        /// Only this queue.
        #[arg(long)]
        queue: Option<QueueName>,
    },
}

/// `pgflow archive ...`
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Delete archived messages older than the retention.
    Prune {
        /// Override every queue's retention, e.g. `7d`, `12h`.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
    },
}

/// `pgflow queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Create a queue (or update its settings).
    Create {
        /// Queue name.
        name: QueueName,
        /// competing, targeted or broadcast.
        #[arg(long, default_value = "competing", value_parser = DeliveryKind::parse)]
        delivery: DeliveryKind,
        /// Retries after the first attempt.
        #[arg(long, default_value_t = 3)]
        max_retries: u32,
        /// Base retry delay in milliseconds.
        #[arg(long, default_value_t = 1000)]
        retry_delay_ms: u32,
        /// Lease length of a claim, e.g. `30s`.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        visibility_timeout: Duration,
        /// How long processed messages are archived (`0s`: not at all).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        retention: Duration,
        /// Store each `send_batch` as one row until it is claimed and acked
        /// whole: for consumers that claim at least a sender's batch at a
        /// time (see `pgflow.batches`).
        #[arg(long)]
        batch_storage: bool,
    },
    /// Show a queue's settings.
    Show {
        /// Queue name.
        name: QueueName,
    },
}

/// Resolves the database URL from the flag / PGFLOW_DATABASE_URL, then DATABASE_URL.
pub fn database_url(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|u| !u.is_empty())
}

fn require_url(url: Option<String>) -> Result<String> {
    url.ok_or_else(|| {
        Error::Usage(
            "no database URL: pass --database-url or set PGFLOW_DATABASE_URL \
             (or run `pgflow up` to start a private PostgreSQL)"
                .into(),
        )
    })
}

/// The message `pgflow send` was asked to send: the payload (read from
/// stdin for `-`) and the flags, checked before anything is sent. A payload
/// that is not JSON or a flag out of range is a usage error.
fn outgoing_message(args: &SendArgs) -> Result<OutgoingMessage> {
    let text = if args.payload == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        args.payload.clone()
    };
    let payload: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("the payload is not valid JSON: {e}")))?;
    let msg_type = args
        .msg_type
        .clone()
        .or_else(|| {
            payload
                .get("type")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "message".into());
    let mut msg = OutgoingMessage::new(msg_type, payload).priority(args.priority);
    if let Some(s) = &args.source {
        msg = msg.source(s.clone());
    }
    if let Some(d) = args.delay {
        msg = msg.delay(d);
    }
    if let Some(t) = &args.target {
        msg = msg.target(t.clone());
    }
    if let Some(t) = args.trace_id {
        msg = msg.trace_id(t);
    }
    match msg.check_fields() {
        Err(Error::InvalidMessage(why)) => Err(Error::Usage(format!("invalid message: {why}"))),
        other => other.map(|()| msg),
    }
}

/// Runs one command. `shutdown` ends long-running commands (`up`).
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<()> {
    let url = database_url(cli.database_url.as_deref());
    match cli.command {
        Command::Up(args) => up::run(url, &args, cli.json, shutdown).await,
        Command::Consume(args) => {
            let pg = Pgflow::connect(&require_url(url)?).await?;
            pg.check_schema().await?;
            let result = consume::run(&pg, args, shutdown).await;
            pg.close().await;
            result
        }
        Command::Dashboard(args) => {
            args.config()?; // usage errors before connecting
            let pg = Pgflow::connect(&require_url(url)?).await?;
            pg.check_schema().await?;
            let result = dashboard::run(&pg, &args, shutdown).await;
            pg.close().await;
            result
        }
        Command::Send(args) => {
            // Usage errors before connecting.
            let msg = outgoing_message(&args)?;
            let pg = Pgflow::connect(&require_url(url)?).await?;
            pg.check_schema().await?;
            let result = pg.send_with_notify(&args.queue, msg).await;
            pg.close().await;
            output::sent(cli.json, result?)
        }
        command => run_admin(&require_url(url)?, command, cli.json).await,
    }
}

async fn run_admin(url: &str, command: Command, json: bool) -> Result<()> {
    let pg = Pgflow::connect(url).await?;
    if !matches!(command, Command::Init(_)) {
        pg.check_schema().await?;
    }
    let result = admin_command(&pg, command, json).await;
    pg.close().await;
    result
}

async fn admin_command(pg: &Pgflow, command: Command, json: bool) -> Result<()> {
    match command {
        Command::Init(args) => {
            pg.migrate().await?;
            let n = pg.list_queue_configs().await?.len();
            let mut message = format!("schema is up to date; {n} queues");
            let created = roles::ensure_instance_roles(pg.pool(), &args.instances).await?;
            if !args.instances.is_empty() {
                message.push_str(&format!(
                    "; instance roles {} ({} created)",
                    args.instances.join(", "),
                    created.len()
                ));
            }
            if args.role_passwords_from_env {
                let set = roles::set_passwords_from_env(pg.pool(), &args.instances).await?;
                message.push_str(&if set.is_empty() {
                    "; no role password variable set, role passwords unchanged".to_string()
                } else {
                    format!("; password set for roles {}", set.join(", "))
                });
            }
            output::done(json, &message, n as u64)
        }
        Command::Queues => output::queues(json, &pg.list_queues().await?),
        Command::Stats { queue } => output::queues(json, &[pg.get_queue_stats(&queue).await?]),
        Command::Pending { queue, limit } => {
            output::pending(json, &pg.list_pending_messages(&queue, limit).await?)
        }
        Command::Dlq(DlqCommand::List { queue, limit }) => {
            output::dlq(json, &pg.list_dlq_messages(queue.as_ref(), limit).await?)
        }
        Command::Dlq(DlqCommand::Retry { id }) => {
            pg.retry_dlq_message(id).await?;
            output::done(json, &format!("message {id} is back on its queue"), 1)
        }
        Command::Dlq(DlqCommand::Purge { queue }) => {
            let n = pg.purge_dlq(queue.as_ref()).await?;
            output::done(json, &format!("purged {n} dead letters"), n)
        }
        Command::Archive(ArchiveCommand::Prune { older_than }) => {
            let n = pg.prune_archive(older_than).await?;
            output::done(json, &format!("pruned {n} archived messages"), n)
        }
        Command::Queue(QueueCommand::Create {
            name,
            delivery,
            max_retries,
            retry_delay_ms,
            visibility_timeout,
            retention,
            batch_storage,
        }) => {
            let cfg = QueueConfig::new(name)
                .delivery(delivery)
                .retry(RetryPolicy {
                    max_retries,
                    base_delay_ms: retry_delay_ms,
                    ..RetryPolicy::default()
                })
                .visibility_timeout(visibility_timeout)
                .archive_retention(retention)
                .batch_storage(batch_storage);
            pg.create_queue(&cfg).await?;
            output::queue_config(json, &cfg)
        }
        Command::Queue(QueueCommand::Show { name }) => {
            let cfg = pg.queue_config(&name).await?;
            output::queue_config(json, &cfg)
        }
        Command::Up(_) | Command::Consume(_) | Command::Dashboard(_) | Command::Send(_) => Err(
            Error::Config("`up`, `consume`, `dashboard` and `send` are not admin commands".into()),
        ),
    }
}
