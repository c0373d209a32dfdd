//! `pgflow consume QUEUE`: an operator's consumer. Each message is handled
//! by the consumer runtime and, once handled, printed as one JSON line on
//! stdout; with `--exec` a shell command gets the message on stdin and its
//! exit status decides: 0 acks, 75 (EX_TEMPFAIL) retries, anything else is
//! fatal (dead letter). Stops on Ctrl-C/SIGTERM after draining, or after
//! `--max` messages.

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::client::Pgflow;
use crate::consumer::{handler_fn, ConsumerConfig, HandlerError, Runtime};
use crate::delivery::Delivery;
use crate::error::Result;
use crate::queue_name::QueueName;

/// Exit status of an `--exec` command that asks for a retry (sysexits EX_TEMPFAIL).
pub const EXEC_RETRY_STATUS: i32 = 75;

/// Arguments of `pgflow consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Queue name.
    pub queue: QueueName,
    /// Handlers running at once.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Largest claim.
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,
    /// Strictly one message at a time, in queue order.
    #[arg(long)]
    pub sequential: bool,
    /// Instance name (needed for targeted and broadcast queues).
    #[arg(long, env = "INSTANCE_ID")]
    pub instance: Option<String>,
    /// Polling fallback when no NOTIFY arrives.
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// Time a handler may take per message.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Shell command run per message with the message JSON on stdin
    /// (exit 0 = ack, 75 = retry later, other = dead-letter).
    #[arg(long)]
    pub exec: Option<String>,
    /// Stop after this many messages were handled.
    #[arg(long)]
    pub max: Option<u64>,
}

fn as_json(d: &Delivery) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "queue": d.queue_name,
        "type": d.msg_type,
        "schema_version": d.schema_version,
        "trace_id": d.trace_id,
        "source": d.source,
        "target": d.target,
        "priority": d.priority,
        "attempt": d.attempts,
        "created_at": d.created_at,
        "payload": d.payload,
    })
}

async fn exec(cmd: &str, input: String) -> std::result::Result<(), HandlerError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HandlerError::retryable(format!("cannot run {cmd:?}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that ignores its input is fine.
        let _ = stdin.write_all(input.as_bytes()).await;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| HandlerError::retryable(format!("waiting for {cmd:?}: {e}")))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(EXEC_RETRY_STATUS) => Err(HandlerError::retryable(format!(
            "command exited with {EXEC_RETRY_STATUS} (retry)"
        ))),
        Some(c) => Err(HandlerError::fatal(format!("command exited with {c}"))),
        None => Err(HandlerError::retryable("command killed by a signal")),
    }
}

/// Runs the consumer until `shutdown` or `--max`.
pub async fn run(pg: &Pgflow, args: ConsumeArgs, shutdown: CancellationToken) -> Result<()> {
    let queue = args.queue.clone();
    let mut cfg = ConsumerConfig::new(queue.clone())
        .workers(args.workers)
        .batch_size(args.batch_size)
        .parallel(!args.sequential)
        .poll_interval(Duration::from_millis(args.poll_interval_ms))
        .timeout(Duration::from_millis(args.timeout_ms));
    if let Some(i) = &args.instance {
        cfg = cfg.instance(i);
    }
    let stop = shutdown.child_token();
    let handled = Arc::new(AtomicU64::new(0));
    let (h, s, max, cmd) = (handled.clone(), stop.clone(), args.max, args.exec.clone());
    let mut rt = Runtime::new(pg.clone());
    let state = rt.consumer(
        cfg,
        handler_fn(move |d: Delivery| {
            let (h, s, cmd) = (h.clone(), s.clone(), cmd.clone());
            async move {
                let line = as_json(&d).to_string();
                if let Some(cmd) = &cmd {
                    exec(cmd, line.clone()).await?;
                }
                {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{line}")
                        .and_then(|()| out.flush())
                        .map_err(|e| HandlerError::retryable(format!("stdout: {e}")))?;
                }
                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                if max.is_some_and(|m| n >= m) {
                    s.cancel();
                }
                Ok(())
            }
        }),
    );
    eprintln!("pgflow consume ready queue={queue}");
    rt.run(stop).await?;
    let snap = state.snapshot();
    eprintln!(
        "pgflow consume stopped: processed={} succeeded={} failed={} retried={} dead_lettered={}",
        snap.processed, snap.succeeded, snap.failed, snap.retried, snap.dead_lettered
    );
    Ok(())
}
