//! Benchmarks of the consumer runtime (issue: "the consumer runtime"):
//!
//! * end to end through the runtime, one message per handler call, a no-op
//!   handler and 32 workers, the consumer in a process of its own (this
//!   binary re-executed with `--child-consume`) so its peak RSS is its own;
//! * `send_with_notify` to handler start at a steady offered load;
//! * the seeds' scenario: 100 workflows of 150 ms with 4 and with 100 workers.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::report::Row;
use super::BenchArgs;
use crate::client::Pgflow;
use crate::consumer::{handler_fn, ConsumerConfig, Runtime};
use crate::error::{Error, Result};
use crate::message::OutgoingMessage;
use crate::queue_config::QueueConfig;
use crate::queue_name::QueueName;

fn queue(name: &str) -> Result<QueueName> {
    QueueName::new(name)
}

async fn fresh_queue(pg: &Pgflow, name: &str) -> Result<QueueName> {
    let q = queue(name)?;
    // No archive: an ack deletes, as in the queue benchmark's delete mode.
    pg.create_queue(&QueueConfig::new(q.clone()).archive_retention(Duration::ZERO))
        .await?;
    for table in [
        "DELETE FROM pgflow.messages WHERE queue_name = $1",
        "DELETE FROM pgflow.batches WHERE queue_name = $1",
    ] {
        sqlx::query(table)
            .bind(q.as_str())
            .execute(pg.pool())
            .await?;
    }
    Ok(q)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Peak resident set size of this process in kB (`VmHWM`), if known.
pub fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system) of this process in milliseconds, if known.
pub fn cpu_ms() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = s.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 12 and 13 after the command name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10) // USER_HZ = 100 on Linux
}

/// The child side of the end-to-end run: consume `n` messages with a no-op
/// handler, then print `done secs=… peak_rss_kb=…` and return.
pub async fn child_consume(pg: &Pgflow, n: u64, workers: usize, fetchers: usize) -> Result<()> {
    let q = queue("bench_runtime")?;
    let stop = CancellationToken::new();
    let done = Arc::new(AtomicU64::new(0));
    let first = Arc::new(Mutex::new(None::<Instant>));
    let (d, f, s) = (done.clone(), first.clone(), stop.clone());
    let mut rt = Runtime::new(pg.clone());
    rt.consumer(
        ConsumerConfig::new(q)
            .workers(workers)
            .batch_size(workers)
            .fetchers(fetchers),
        handler_fn(move |_m| {
            let (d, f, s) = (d.clone(), f.clone(), s.clone());
            async move {
                if let Ok(mut f) = f.lock() {
                    f.get_or_insert_with(Instant::now);
                }
                if d.fetch_add(1, Ordering::Relaxed) + 1 >= n {
                    s.cancel();
                }
                Ok(())
            }
        }),
    );
    eprintln!("child ready");
    rt.run(stop).await?;
    let secs = first
        .lock()
        .ok()
        .and_then(|f| *f)
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or_default();
    println!(
        "done secs={secs:.3} peak_rss_kb={} cpu_ms={}",
        peak_rss_kb().unwrap_or_default(),
        cpu_ms().unwrap_or_default()
    );
    Ok(())
}

/// End to end through a consumer process of its own.
async fn end_to_end(pg: &Pgflow, url: &str, args: &BenchArgs) -> Result<(Row, u64)> {
    let n = args.runtime_messages;
    let q = fresh_queue(pg, "bench_runtime").await?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["--database-url", url])
        .args(["--child-consume", &n.to_string()])
        .args(["--runtime-workers", &args.runtime_workers.to_string()])
        .args(["--runtime-fetchers", &args.runtime_fetchers.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut err = BufReader::new(
        child
            .stderr
            .take()
            .ok_or_else(|| Error::Config("child stderr".into()))?,
    )
    .lines();
    while let Some(l) = err.next_line().await? {
        if l.contains("child ready") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
    let start = Instant::now();
    let producers = 4;
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (pg, q) = (pg.clone(), q.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = p * 100;
            while k < n {
                let msgs: Vec<_> = (k..(k + 100).min(n))
                    .map(|i| OutgoingMessage::new("bench", serde_json::json!({ "n": i })))
                    .collect();
                pg.send_batch_with_notify(&q, &msgs).await?;
                k += producers * 100;
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::Config(e.to_string()))??;
    }
    let mut out = BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| Error::Config("child stdout".into()))?,
    )
    .lines();
    let mut rss = 0;
    while let Some(l) = out.next_line().await? {
        if let Some(rest) = l.strip_prefix("done ") {
            eprintln!(
                "  consumer process: {rest}; producer process cpu_ms={}",
                cpu_ms().unwrap_or_default()
            );
            rss = rest
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("peak_rss_kb="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let status = child.wait().await?;
    if !status.success() {
        return Err(Error::Config(format!("consumer child failed: {status}")));
    }
    let label = format!(
        "runtime e2e, 1 msg per handler call, no-op handler, {} workers (consumer process peak RSS {:.1} MB)",
        args.runtime_workers,
        rss as f64 / 1024.0
    );
    Ok((Row::new(&label, "pgflow runtime", n as usize, secs), rss))
}

/// What the notify-latency handler reads of its payload.
#[derive(serde::Deserialize)]
struct Sent {
    sent_us: u64,
}

/// `send_with_notify` → handler start, at `rate` messages per second.
async fn notify_latency(pg: &Pgflow, rate: u64, secs: u64) -> Result<Row> {
    let q = fresh_queue(pg, "bench_notify").await?;
    let n = rate * secs;
    let lat = Arc::new(Mutex::new(hist()));
    let done = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (l, d) = (lat.clone(), done.clone());
    let mut rt = Runtime::new(pg.clone());
    rt.consumer(
        ConsumerConfig::new(q.clone()).workers(32).batch_size(32),
        handler_fn(move |m| {
            let (l, d) = (l.clone(), d.clone());
            async move {
                let sent = m.decode::<Sent>().map(|s| s.sent_us).unwrap_or_default();
                if let Ok(mut h) = l.lock() {
                    h.saturating_record(now_us().saturating_sub(sent).max(1));
                }
                d.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }),
    );
    let run = tokio::spawn(rt.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await; // let it connect and listen
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..n {
        tick.tick().await;
        let (pg, q) = (pg.clone(), q.clone());
        sends.spawn(async move {
            let m =
                OutgoingMessage::new("bench", serde_json::json!({ "n": i, "sent_us": now_us() }));
            pg.send_with_notify(&q, m).await
        });
    }
    while let Some(r) = sends.join_next().await {
        r.map_err(|e| Error::Config(e.to_string()))??;
    }
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.cancel();
    run.await.map_err(|e| Error::Config(e.to_string()))??;
    let h = lat.lock().map(|h| h.clone()).unwrap_or_else(|_| hist());
    Ok(Row::new(
        &format!(
            "send_with_notify → handler start at {rate} msg/s offered (poll interval 1000 ms)"
        ),
        "pgflow runtime",
        n as usize,
        secs,
    )
    .latency("send→handler", &h))
}

/// The seeds' scenario: 100 workflows of 150 ms each with `workers`.
async fn seeds_scenario(pg: &Pgflow, workers: usize) -> Result<Row> {
    let q = fresh_queue(pg, "bench_workflows").await?;
    let msgs: Vec<_> = (0..100)
        .map(|i| OutgoingMessage::new("workflow", serde_json::json!({ "n": i })))
        .collect();
    pg.send_batch(&q, &msgs).await?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (d, s) = (done.clone(), stop.clone());
    let mut rt = Runtime::new(pg.clone());
    rt.consumer(
        ConsumerConfig::new(q)
            .workers(workers)
            .batch_size(workers.max(10)),
        handler_fn(move |_m| {
            let (d, s) = (d.clone(), s.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if d.fetch_add(1, Ordering::Relaxed) + 1 >= 100 {
                    s.cancel();
                }
                Ok(())
            }
        }),
    );
    let start = Instant::now();
    rt.run(stop).await?;
    Ok(Row::new(
        &format!(
            "seeds' scenario: 100 workflows × 150 ms, {workers} workers (seeds: 3.75 s with 4)"
        ),
        "pgflow runtime",
        100,
        start.elapsed().as_secs_f64(),
    ))
}

/// Runs the runtime benchmarks.
pub async fn run_all(pg: &Pgflow, url: &str, args: &BenchArgs) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    eprintln!("runtime: end to end through a consumer process …");
    rows.push(end_to_end(pg, url, args).await?.0);
    eprintln!("runtime: notify latency …");
    rows.push(notify_latency(pg, 500, 10).await?);
    for w in [4, 100] {
        eprintln!("runtime: seeds' scenario with {w} workers …");
        rows.push(seeds_scenario(pg, w).await?);
    }
    Ok(rows)
}
