//! Submitting proposals for `system-load`: the light-load run (one at a
//! time) and the bursts (`--concurrency` in flight, round robin over the
//! instances), with the latency of each `POST /proposals`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use uuid::Uuid;

use crate::load_report::Pct;
use crate::load_system::HttpConn;

/// How a run submits its proposals.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Submit {
    /// One at a time, `--light-interval-ms` apart.
    Light,
    /// All at once, `--concurrency` in flight.
    Burst,
}

pub(crate) fn body(prefix: &str, i: usize) -> String {
    serde_json::json!({
        "agent_type": "BugFixerAgent",
        "file": format!("{prefix}/p{i}.txt"),
        "change": format!("proposal {i} of {prefix}\n"),
        "impact_score": 5.0,
        "risk_score": 1.0,
    })
    .to_string()
}

/// Outcome of the submissions.
pub(crate) struct Submitted {
    pub(crate) ids: Vec<Uuid>,
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) latency: Histogram<u64>,
}

pub(crate) fn new_hist() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

pub(crate) async fn post_one(conn: &mut HttpConn, body: &str) -> std::result::Result<Uuid, String> {
    match conn.post_json("/proposals", body).await {
        Ok((201, text)) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["proposal_id"].as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("201 without a proposal id: {text}")),
        Ok((status, text)) => Err(format!("{status}: {text}")),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) async fn submit_light(
    addrs: &[SocketAddr],
    prefix: &str,
    n: usize,
    every: Duration,
) -> Result<Submitted> {
    let mut conns: Vec<HttpConn> = addrs.iter().map(|a| HttpConn::new(*a)).collect();
    let mut out = Submitted {
        ids: Vec::with_capacity(n),
        errors: 0,
        first_error: None,
        latency: new_hist()?,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..n {
        tick.tick().await;
        let t = Instant::now();
        let conn = &mut conns[i % addrs.len()];
        match post_one(conn, &body(prefix, i)).await {
            Ok(id) => {
                out.latency.record(t.elapsed().as_micros() as u64)?;
                out.ids.push(id);
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
        }
    }
    Ok(out)
}

pub(crate) async fn submit_burst(
    addrs: &[SocketAddr],
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> Result<Submitted> {
    let next = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(Mutex::new(Submitted {
        ids: Vec::with_capacity(n),
        errors: 0,
        first_error: None,
        latency: new_hist()?,
    }));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(n.max(1)) {
        let next = next.clone();
        let shared = shared.clone();
        let addrs = addrs.to_vec();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conns: Vec<HttpConn> = addrs.iter().map(|a| HttpConn::new(*a)).collect();
            let mut local = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let b = body(&prefix, i);
                let t = Instant::now();
                let r = post_one(&mut conns[i % addrs.len()], &b).await;
                local.push((r, t.elapsed().as_micros() as u64));
            }
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            for (r, us) in local {
                match r {
                    Ok(id) => {
                        let _ = s.latency.record(us);
                        s.ids.push(id);
                    }
                    Err(e) => {
                        s.errors += 1;
                        s.first_error.get_or_insert(e);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("a submitting task panicked")?;
    }
    let s = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("submitters still running"))?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    Ok(s)
}

pub(crate) fn pct_of(h: &Histogram<u64>) -> Option<Pct> {
    (!h.is_empty()).then(|| Pct {
        p50: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        max: h.max() as f64 / 1000.0,
    })
}

pub(crate) fn pct_from(v: Option<Vec<f64>>) -> Option<Pct> {
    match v.as_deref() {
        Some([p50, p99, max]) => Some(Pct {
            p50: p50 * 1000.0,
            p99: p99 * 1000.0,
            max: max * 1000.0,
        }),
        _ => None,
    }
}
