//! The benchmark scenarios: batched end to end, one message per send with
//! many producers, cost against queue depth, and a run with a long
//! REPEATABLE READ transaction open.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sqlx::Executor;

use super::backend::{Backend, PgflowBackend, PgmqBackend};
use super::report::{Figures, Row};
use super::BenchArgs;
use crate::client::Pgflow;
use crate::error::{Error, Result};

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::Config(format!("benchmark task failed: {e}"))
}

/// Producers and consumers at once; the clock stops when all `n` are acked.
async fn batched<B: Backend>(b: &B, n: usize, args: &BenchArgs, label: &str) -> Result<Row> {
    b.reset().await?;
    eprintln!("  {label}: {} …", b.name());
    let sent = Arc::new(AtomicUsize::new(0));
    let consumed = Arc::new(AtomicUsize::new(0));
    let batch = args.batch;
    let start = Instant::now();
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        let (b, sent) = (b.clone(), sent.clone());
        producers.push(tokio::spawn(async move {
            loop {
                let k = sent.fetch_add(batch, Ordering::Relaxed);
                if k >= n {
                    return Ok::<_, Error>(());
                }
                b.send_batch(batch.min(n - k)).await?;
            }
        }));
    }
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        let (b, consumed) = (b.clone(), consumed.clone());
        consumers.push(tokio::spawn(async move {
            let (mut ages, mut calls) = (hist(), hist());
            let mut pending = B::Pending::default();
            while consumed.load(Ordering::Relaxed) < n {
                let t0 = Instant::now();
                let got = b.consume(&mut pending, batch).await?;
                if got.acked == 0 && got.claimed_ages.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                calls.saturating_record(t0.elapsed().as_micros() as u64);
                consumed.fetch_add(got.acked, Ordering::Relaxed);
                for a in got.claimed_ages {
                    ages.saturating_record(a.max(1));
                }
            }
            // Nothing is left unacked once all n are: this only guards
            // against a miscount.
            consumed.fetch_add(b.consume(&mut pending, 0).await?.acked, Ordering::Relaxed);
            Ok::<_, Error>((ages, calls))
        }));
    }
    for p in producers {
        p.await.map_err(join_err)??;
    }
    let (mut ages, mut calls) = (hist(), hist());
    for c in consumers {
        let (a, k) = c.await.map_err(join_err)??;
        ages.add(a).ok();
        calls.add(k).ok();
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(
        Row::new(label, &b.name(), consumed.load(Ordering::Relaxed), secs)
            .latency("send→claim", &ages)
            .calls("claim+ack call", &calls),
    )
}

/// `producers` tasks each sending one message per call.
async fn single_sends<B: Backend>(b: &B, n: usize, producers: usize) -> Result<Row> {
    b.reset().await?;
    eprintln!("  single sends: {} …", b.name());
    let sent = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (b, sent) = (b.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut calls = hist();
            while sent.fetch_add(1, Ordering::Relaxed) < n {
                let t0 = Instant::now();
                b.send_one().await?;
                calls.saturating_record(t0.elapsed().as_micros() as u64);
            }
            Ok::<_, Error>(calls)
        }));
    }
    let mut calls = hist();
    for t in tasks {
        calls.add(t.await.map_err(join_err)??).ok();
    }
    let secs = start.elapsed().as_secs_f64();
    let label = format!("1 msg per send, {producers} producers");
    Ok(Row::new(&label, &b.name(), n, secs).calls("send call", &calls))
}

async fn prefill<B: Backend>(b: &B, n: usize) -> Result<()> {
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (b, sent) = (b.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let k = sent.fetch_add(1000, Ordering::Relaxed);
                if k >= n {
                    return Ok::<_, Error>(());
                }
                b.send_batch(1000.min(n - k)).await?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(join_err)??;
    }
    Ok(())
}

/// Claim + ack `sample` messages from a queue holding `depth` messages.
async fn drain<B: Backend>(
    pg: &Pgflow,
    b: &B,
    depth: usize,
    sample: usize,
    args: &BenchArgs,
) -> Result<Row> {
    b.reset().await?;
    eprintln!("  depth {depth}: {} (prefilling) …", b.name());
    prefill(b, depth).await?;
    pg.pool().execute("ANALYZE").await?;
    let consumed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.consumers {
        let (b, consumed) = (b.clone(), consumed.clone());
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut calls = hist();
            let mut pending = B::Pending::default();
            while consumed.load(Ordering::Relaxed) < sample {
                let t0 = Instant::now();
                let got = b.consume(&mut pending, batch).await?;
                calls.saturating_record(t0.elapsed().as_micros() as u64);
                consumed.fetch_add(got.acked, Ordering::Relaxed);
            }
            // The last claim's messages: acked and counted too.
            consumed.fetch_add(b.consume(&mut pending, 0).await?.acked, Ordering::Relaxed);
            Ok::<_, Error>(calls)
        }));
    }
    let mut calls = hist();
    for t in tasks {
        calls.add(t.await.map_err(join_err)??).ok();
    }
    let secs = start.elapsed().as_secs_f64();
    let label = format!("claim+ack {sample} at depth {depth}");
    Ok(
        Row::new(&label, &b.name(), consumed.load(Ordering::Relaxed), secs)
            .calls("claim+ack call", &calls),
    )
}

/// Runs every scenario.
pub async fn run_all(pg: &Pgflow, args: &BenchArgs) -> Result<Figures> {
    let mut f = Figures::default();
    let flow_del = PgflowBackend::new(pg, false).await?;
    let flow_arc = PgflowBackend::new(pg, true).await?;
    let (mq_del, mq_arc) = if args.skip_pgmq {
        (None, None)
    } else {
        (
            Some(PgmqBackend::new(pg, false).await?),
            Some(PgmqBackend::new(pg, true).await?),
        )
    };
    let label = format!(
        "batched e2e ({} per call, {}P/{}C)",
        args.batch, args.producers, args.consumers
    );
    eprintln!("batched end to end");
    f.rows
        .push(batched(&flow_del, args.messages, args, &label).await?);
    if let Some(m) = &mq_del {
        f.rows.push(batched(m, args.messages, args, &label).await?);
    }
    f.rows
        .push(batched(&flow_arc, args.messages, args, &label).await?);
    if let Some(m) = &mq_arc {
        f.rows.push(batched(m, args.messages, args, &label).await?);
    }

    if !args.skip_single {
        eprintln!("one message per send");
        f.rows
            .push(single_sends(&flow_arc, args.single_messages, args.single_producers).await?);
        if let Some(m) = &mq_arc {
            f.rows
                .push(single_sends(m, args.single_messages, args.single_producers).await?);
        }
    }
    if !args.skip_rr {
        eprintln!("REPEATABLE READ transaction held open elsewhere");
        let mut holder = pg.pool().acquire().await?;
        holder
            .execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .await?;
        holder.execute("SELECT count(*) FROM pgflow.queues").await?;
        let rr_label = format!("{label}, RR txn open");
        let r = batched(&flow_del, args.messages, args, &rr_label).await;
        holder.execute("ROLLBACK").await?;
        f.rows.push(r?);
        if let Some(m) = &mq_del {
            holder
                .execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                .await?;
            holder.execute("SELECT count(*) FROM pgflow.queues").await?;
            let r = batched(m, args.messages, args, &rr_label).await;
            holder.execute("ROLLBACK").await?;
            f.rows.push(r?);
        }
    }

    if !args.skip_depth {
        eprintln!("cost against depth");
        let sample = args.depth_sample.min(args.depth);
        f.rows
            .push(drain(pg, &flow_del, sample, sample, args).await?);
        f.rows
            .push(drain(pg, &flow_del, args.depth, sample, args).await?);
        if let Some(m) = &mq_del {
            f.rows.push(drain(pg, m, sample, sample, args).await?);
            f.rows.push(drain(pg, m, args.depth, sample, args).await?);
        }
        flow_del.reset().await?;
        if let Some(m) = &mq_del {
            m.reset().await?;
        }
    }
    Ok(f)
}
