//! `system-load`: the whole system under load (issue "The whole system",
//! Load section).
//!
//! Starts (or uses) a PostgreSQL server, creates and migrates a scratch
//! database, spawns centralcloud and three singularity instances from the
//! release binaries next to this one, each logged in as its own role, and
//! drives proposals through the full loop (submit -> consensus with three
//! voters -> execution in the proposing instance's workspace -> guardian)
//! via `POST /proposals`:
//!
//! * a light-load run: `--light` proposals, one every `--light-interval-ms`;
//! * for each of `--sizes`, N proposals submitted at once with
//!   `--concurrency` requests in flight, round robin over the instances.
//!
//! Per run it reports the submit rate, the time until every proposal is in
//! a final state (applied, consensus_failed, rolled_back, failed), loss,
//! dead letters and the journey latency (singularity.proposals
//! `created_at` -> `applied_at`). `--write BENCHMARKS.md` replaces the
//! `bench-system` block of that file.
//!
//! ```text
//! cargo build --release --workspace
//! target/release/system-load --sizes 100,1000,10000 --write BENCHMARKS.md
//! ```
#![forbid(unsafe_code)]

#[path = "../load_report.rs"]
mod load_report;
#[path = "../load_system.rs"]
mod load_system;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Parser;
use hdrhistogram::Histogram;
use pgflow_core::local_pg::{LocalPostgres, LocalPostgresOptions};
use pgflow_core::testing::{with_database, with_user};
use pgflow_core::{Pgflow, PgflowOptions};
use uuid::Uuid;

use load_report::{Pct, RunResult};
use load_system::{HttpConn, Proc};

/// The queues a proposal's journey passes through.
const JOURNEY_QUEUES: [&str; 6] = [
    "proposals_for_consensus_queue",
    "consensus_vote_requests_queue",
    "consensus_votes_queue",
    "consensus_results_queue",
    "proposals_for_execution_queue",
    "metrics_to_guardian_queue",
];

const FINAL: &str = "('applied', 'consensus_failed', 'rolled_back', 'failed')";

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "system-load",
    about = "Load test of the whole system: centralcloud + 3 singularity instances, proposals \
             through the full loop via POST /proposals; figures for BENCHMARKS.md"
)]
struct Args {
    /// PostgreSQL URL of a superuser on an existing server (a scratch
    /// database is created there and dropped at the end; the service roles
    /// must be able to log in without a password). Default: a private
    /// cluster with fsync on.
    #[arg(long)]
    database_url: Option<String>,
    /// Concurrent runs: proposals submitted at once, one run per size.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    sizes: Vec<usize>,
    /// Submissions in flight at once in the concurrent runs.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Proposals of the light-load run (0: no light-load run).
    #[arg(long, default_value_t = 50)]
    light: usize,
    /// Interval between the light-load run's submissions, in milliseconds.
    #[arg(long, default_value_t = 50)]
    light_interval_ms: u64,
    /// Longest wait for a run to drain, in seconds (the run is then
    /// reported as timed out with what did finish).
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Singularity instances.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    instances: u32,
    /// Workers per consumer in every service (PGFLOW_*_WORKERS).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// Polling fallback of every consumer (PGFLOW_POLL_INTERVAL_MS; the
    /// services' default: wake-ups come by LISTEN/NOTIFY).
    #[arg(long, default_value_t = 1000)]
    poll_interval_ms: u64,
    /// Largest claim per statement (PGFLOW_BATCH_SIZE).
    #[arg(long, default_value_t = 32)]
    batch_size: u32,
    /// Connection pool of each service (default: 4 × workers + 10).
    #[arg(long)]
    pool_size: Option<u32>,
    /// CENTRALCLOUD_VOTE_DEADLINE_MS.
    #[arg(long, default_value_t = 5000)]
    vote_deadline_ms: u64,
    /// RUST_LOG of the services.
    #[arg(long, default_value = "warn")]
    service_log: String,
    /// Write the Markdown block into this file (between the bench-system markers).
    #[arg(long)]
    write: Option<PathBuf>,
}

impl Args {
    fn pool(&self) -> u32 {
        self.pool_size.unwrap_or(4 * u32::from(self.workers) + 10)
    }
}

/// Everything running for the benchmark.
struct System {
    admin: Pgflow,
    centralcloud: Proc,
    instances: Vec<Proc>,
    addrs: Vec<SocketAddr>,
    postmaster: Option<u32>,
}

impl System {
    fn check_alive(&mut self) -> Result<()> {
        self.centralcloud.check_alive()?;
        for p in &mut self.instances {
            p.check_alive()?;
        }
        Ok(())
    }

    fn cpu(&self) -> (f64, f64, Option<f64>) {
        let cc = self
            .centralcloud
            .pid()
            .and_then(load_system::cpu_secs)
            .unwrap_or(0.0);
        let sing = self
            .instances
            .iter()
            .filter_map(|p| p.pid().and_then(load_system::cpu_secs))
            .sum();
        (cc, sing, self.postmaster.map(load_system::tree_cpu_secs))
    }

    async fn stop(&mut self) {
        for p in &mut self.instances {
            p.stop(Duration::from_secs(10)).await;
        }
        self.centralcloud.stop(Duration::from_secs(10)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("system-load: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let cc_bin = load_system::service_bin("centralcloud")?;
    let sing_bin = load_system::service_bin("singularity")?;
    let load_at_start = load_system::loadavg();

    // The server.
    let (admin_url, local) = match &args.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let pg = tokio::task::spawn_blocking(|| {
                LocalPostgres::start_with(LocalPostgresOptions {
                    fsync: true,
                    max_connections: 400,
                })
            })
            .await
            .context("starting PostgreSQL")??;
            eprintln!("private PostgreSQL on port {} (fsync on)", pg.port());
            (pg.url("postgres"), Some(pg))
        }
    };
    let postmaster = local
        .as_ref()
        .and_then(|pg| load_system::postmaster_pid(&pg.dir().join("data")));

    // The scratch database, migrated as the admin.
    let db = format!("pgflow_load_{}", Uuid::new_v4().simple());
    let maint = Pgflow::connect_with(&admin_url, opts(1)).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
        .execute(maint.pool())
        .await?;
    maint.close().await;
    let db_url = with_database(&admin_url, &db);
    let admin = Pgflow::connect_with(&db_url, opts(4)).await?;
    admin.migrate().await.context("migrating")?;

    let commit_ms = commit_latency(&admin).await?;
    let outcome = bench(&args, &admin, &db_url, &cc_bin, &sing_bin, postmaster).await;

    admin.close().await;
    if local.is_none() {
        if let Ok(maint) = Pgflow::connect_with(&admin_url, opts(1)).await {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(maint.pool())
                .await;
            maint.close().await;
        }
    }
    let (runs, system_notes) = outcome?;

    // The report.
    let mut env = environment(&args, &admin_url, local.is_some(), &load_at_start).await;
    env.insert(
        4,
        format!(
            "one-row INSERT commit latency before the runs (fsync cost): p50 {:.1} ms, p99 {:.1} ms (200 commits)",
            commit_ms.p50, commit_ms.p99
        ),
    );
    let mut notes = vec![
        "journey = `singularity.proposals.applied_at − created_at`: both are `now()` of the \
         instance's transactions (the submit transaction, and the execution transaction that \
         marks the proposal applied and sends the metrics to the guardian), so the figure \
         covers submit → consensus (3 votes) → result → execution → applied. consensus = \
         `decided_at − created_at` (the instance has the result), execution = \
         `applied_at − decided_at`."
            .to_string(),
        "drain = first submit → the last proposal's final-state timestamp (database clock); \
         queues idle = first submit → no message left in the journey's six queues (guardian \
         included; polled every 100 ms)."
            .to_string(),
        "lost = proposals accepted (201) but not in a final state when the run ended.".to_string(),
    ];
    notes.extend(system_notes);
    let text = load_report::render(&env, &runs, &notes);
    println!("{text}");
    if let Some(path) = &args.write {
        load_report::write_into(path, &text, load_report::MARKER)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("written into {} ({})", path.display(), load_report::MARKER);
    }
    drop(local);
    Ok(())
}

/// The latency of a small committed write: the floor under every hop.
async fn commit_latency(admin: &Pgflow) -> Result<Pct> {
    let pool = admin.pool();
    sqlx::raw_sql("CREATE TABLE public.system_load_probe (id bigint)")
        .execute(pool)
        .await?;
    let mut h = new_hist()?;
    for i in 0..200i64 {
        let t = Instant::now();
        sqlx::query("INSERT INTO public.system_load_probe VALUES ($1)")
            .bind(i)
            .execute(pool)
            .await?;
        h.record(t.elapsed().as_micros() as u64)?;
    }
    sqlx::raw_sql("DROP TABLE public.system_load_probe")
        .execute(pool)
        .await?;
    pct_of(&h).context("no commit measured")
}

fn opts(max: u32) -> PgflowOptions {
    PgflowOptions {
        max_connections: max,
        acquire_timeout: Duration::from_secs(30),
        ..PgflowOptions::default()
    }
}

async fn bench(
    args: &Args,
    admin: &Pgflow,
    db_url: &str,
    cc_bin: &std::path::Path,
    sing_bin: &std::path::Path,
    postmaster: Option<u32>,
) -> Result<(Vec<RunResult>, Vec<String>)> {
    let scratch = tempfile::Builder::new().prefix("system-load-").tempdir()?;
    let logs = scratch.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut sys = start(
        args,
        admin,
        db_url,
        cc_bin,
        sing_bin,
        scratch.path(),
        postmaster,
    )
    .await?;
    eprintln!(
        "centralcloud and {} singularity instances ready (logs in {})",
        sys.addrs.len(),
        logs.display()
    );
    let mut runs = Vec::new();
    let mut notes = Vec::new();
    let result = async {
        if args.light > 0 {
            let r = measure(args, &mut sys, "light", args.light, Submit::Light).await?;
            eprintln!("{}", summary(&r));
            runs.push(r);
        }
        for &n in &args.sizes {
            let label = format!("{n}");
            let r = measure(args, &mut sys, &label, n, Submit::Burst).await?;
            eprintln!("{}", summary(&r));
            let timed_out = r.timed_out;
            runs.push(r);
            if timed_out {
                notes.push(format!(
                    "the {n}-proposal run did not drain within --timeout-s {}; later sizes were skipped",
                    args.timeout_s
                ));
                break;
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = &result {
        let mut tails = String::new();
        for p in std::iter::once(&sys.centralcloud).chain(&sys.instances) {
            tails.push_str(&format!("\n--- {} ---\n{}", p.name, p.tail(15)));
        }
        eprintln!("run failed: {e:#}{tails}");
    }
    if let Ok(note) = history_cost(admin).await {
        notes.push(note);
    }
    let pattern_errors = count_log_errors(&logs);
    if !pattern_errors.is_empty() {
        notes.push(format!(
            "ERROR lines in the service logs: {}",
            pattern_errors.join(", ")
        ));
    }
    sys.stop().await;
    result?;
    Ok((runs, notes))
}

/// What singularity's per-agent history query (run by every vote and every
/// submit) costs once the runs' proposals are stored.
async fn history_cost(admin: &Pgflow) -> Result<String> {
    let sql = "SELECT count(*) FILTER (WHERE status = 'applied'),
                      count(*) FILTER (WHERE status = 'rolled_back')
                 FROM singularity.proposals
                WHERE instance_id = 'singularity_1' AND agent_type = 'BugFixerAgent'";
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM singularity.proposals
          WHERE instance_id = 'singularity_1' AND agent_type = 'BugFixerAgent'",
    )
    .fetch_one(admin.pool())
    .await?;
    let mut h = new_hist()?;
    for _ in 0..20 {
        let t = Instant::now();
        sqlx::query(sql).fetch_one(admin.pool()).await?;
        h.record(t.elapsed().as_micros() as u64)?;
    }
    let p = pct_of(&h).context("no timing")?;
    Ok(format!(
        "singularity's agent-history query (`store::history`, run in every vote and every submit) \
         counts all of the instance's proposals of the agent type: {rows} rows per instance after \
         the runs, p50 {:.1} ms per call (20 calls after the last run) — its cost grows with every \
         proposal stored",
        p.p50
    ))
}

fn count_log_errors(logs: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(logs) {
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let n = text.lines().filter(|l| l.contains("ERROR")).count();
            if n > 0 {
                out.push(format!("{} {n}", e.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

fn summary(r: &RunResult) -> String {
    format!(
        "run {}: accepted {} (refused {}), submit {:.2} s, drain {}, applied {}, lost {}, dlq {}, journey p50/p99 {}",
        r.label,
        r.accepted,
        r.submit_errors,
        r.submit_secs,
        r.drain_secs
            .map(|d| format!("{d:.2} s"))
            .unwrap_or_else(|| "timed out".into()),
        r.applied,
        r.lost(),
        r.dlq,
        r.journey
            .map(|p| format!("{:.0}/{:.0} ms", p.p50, p.p99))
            .unwrap_or_else(|| "–".into()),
    )
}

async fn start(
    args: &Args,
    admin: &Pgflow,
    db_url: &str,
    cc_bin: &std::path::Path,
    sing_bin: &std::path::Path,
    scratch: &std::path::Path,
    postmaster: Option<u32>,
) -> Result<System> {
    let logs = scratch.join("logs");
    let w = args.workers.to_string();
    let pool = args.pool().to_string();
    let poll = args.poll_interval_ms.to_string();
    let batch = args.batch_size.to_string();
    let common = |url: String| -> Vec<(String, String)> {
        vec![
            ("PGFLOW_DATABASE_URL".into(), url),
            ("PGFLOW_POOL_SIZE".into(), pool.clone()),
            ("PGFLOW_POLL_INTERVAL_MS".into(), poll.clone()),
            ("PGFLOW_BATCH_SIZE".into(), batch.clone()),
            ("PGFLOW_PROPOSALS_WORKERS".into(), w.clone()),
            ("PGFLOW_METRICS_WORKERS".into(), w.clone()),
            ("RUST_LOG".into(), args.service_log.clone()),
        ]
    };
    let mut cc_env = common(with_user(db_url, "centralcloud"));
    cc_env.extend([
        ("PGFLOW_VOTES_WORKERS".into(), w.clone()),
        (
            "CENTRALCLOUD_VOTE_DEADLINE_MS".into(),
            args.vote_deadline_ms.to_string(),
        ),
        ("CENTRALCLOUD_LEARNING_INTERVAL_MS".into(), "0".into()),
    ]);
    let mut centralcloud = Proc::spawn(cc_bin, "centralcloud", &[], &cc_env, &logs)?;
    centralcloud
        .wait_for_line("centralcloud ready", Duration::from_secs(60))
        .await?;
    let mut instances = Vec::new();
    let mut addrs = Vec::new();
    for i in 1..=args.instances {
        let id = format!("singularity_{i}");
        let ws = scratch.join("workspaces").join(&id);
        std::fs::create_dir_all(&ws)?;
        let mut env = common(with_user(db_url, "singularity"));
        env.extend([
            ("INSTANCE_ID".into(), id.clone()),
            (
                "SINGULARITY_WORKSPACE".into(),
                ws.to_string_lossy().into_owned(),
            ),
            ("PGFLOW_CONSENSUS_WORKERS".into(), w.clone()),
        ]);
        let mut p = Proc::spawn(sing_bin, &id, &[], &env, &logs)?;
        let line = p
            .wait_for_line("singularity ready", Duration::from_secs(60))
            .await?;
        addrs.push(load_system::http_addr_of(&line)?);
        instances.push(p);
    }
    let mut sys = System {
        admin: admin.clone(),
        centralcloud,
        instances,
        addrs,
        postmaster,
    };
    // Every instance is a live voter before the first proposal.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgflow_subscribers
              WHERE queue_name = 'consensus_vote_requests_queue' AND live",
        )
        .fetch_one(sys.admin.pool())
        .await?;
        if live == i64::from(args.instances) {
            break;
        }
        sys.check_alive()?;
        if Instant::now() > deadline {
            bail!("{live} live voters after 60 s, expected {}", args.instances);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(sys)
}

/// How a run submits its proposals.
#[derive(Debug, Clone, Copy)]
enum Submit {
    /// One at a time, `--light-interval-ms` apart.
    Light,
    /// All at once, `--concurrency` in flight.
    Burst,
}

fn body(prefix: &str, i: usize) -> String {
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
struct Submitted {
    ids: Vec<Uuid>,
    errors: usize,
    first_error: Option<String>,
    latency: Histogram<u64>,
}

fn new_hist() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

async fn post_one(conn: &mut HttpConn, body: &str) -> std::result::Result<Uuid, String> {
    match conn.post_json("/proposals", body).await {
        Ok((201, text)) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["proposal_id"].as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("201 without a proposal id: {text}")),
        Ok((status, text)) => Err(format!("{status}: {text}")),
        Err(e) => Err(e.to_string()),
    }
}

async fn submit_light(
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

async fn submit_burst(
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

fn pct_of(h: &Histogram<u64>) -> Option<Pct> {
    (!h.is_empty()).then(|| Pct {
        p50: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        max: h.max() as f64 / 1000.0,
    })
}

fn pct_from(v: Option<Vec<f64>>) -> Option<Pct> {
    match v.as_deref() {
        Some([p50, p99, max]) => Some(Pct {
            p50: p50 * 1000.0,
            p99: p99 * 1000.0,
            max: max * 1000.0,
        }),
        _ => None,
    }
}

async fn measure(
    args: &Args,
    sys: &mut System,
    label: &str,
    n: usize,
    how: Submit,
) -> Result<RunResult> {
    let pool = sys.admin.pool().clone();
    let prefix = format!("load/{label}-{}", Uuid::new_v4().simple());
    let like = format!("{prefix}/%");
    let dlq_before: i64 = sqlx::query_scalar("SELECT count(*) FROM pgflow.dlq")
        .fetch_one(&pool)
        .await?;
    let cpu_before = sys.cpu();
    let t0_db: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&pool)
        .await?;
    let t0 = Instant::now();
    let (submitted, mode) = match how {
        Submit::Light => (
            submit_light(
                &sys.addrs,
                &prefix,
                n,
                Duration::from_millis(args.light_interval_ms),
            )
            .await?,
            format!("light: 1 per {} ms", args.light_interval_ms),
        ),
        Submit::Burst => (
            submit_burst(&sys.addrs, &prefix, n, args.concurrency as usize).await?,
            format!("{} in flight", args.concurrency),
        ),
    };
    let submit_secs = t0.elapsed().as_secs_f64();
    let accepted = submitted.ids.len() as i64;

    // Wait until every accepted proposal is final, then until the journey's queues are empty.
    let deadline = t0 + Duration::from_secs(args.timeout_s);
    let mut timed_out = false;
    let mut last_report = Instant::now();
    loop {
        let finished: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM singularity.proposals WHERE file LIKE $1 AND status IN {FINAL}"
        ))
        .bind(&like)
        .fetch_one(&pool)
        .await?;
        if finished >= accepted {
            break;
        }
        sys.check_alive()?;
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  run {label}: {finished}/{accepted} final after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queues: Vec<String> = JOURNEY_QUEUES.iter().map(|q| q.to_string()).collect();
    let mut idle_secs = None;
    while !timed_out {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pgflow.messages WHERE queue_name = ANY($1)")
                .bind(&queues)
                .fetch_one(&pool)
                .await?;
        if left == 0 {
            idle_secs = Some(t0.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall_secs = t0.elapsed().as_secs_f64();
    let cpu_after = sys.cpu();
    let queued_at_end: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgflow.messages WHERE queue_name = ANY($1)")
            .bind(&queues)
            .fetch_one(&pool)
            .await?;

    // The figures, from the instances' own rows.
    type Stats = (
        i64,
        i64,
        i64,
        i64,
        i64,
        Option<f64>,
        Option<Vec<f64>>,
        Option<Vec<f64>>,
        Option<Vec<f64>>,
    );
    let stats: Stats = sqlx::query_as(
        "WITH p AS (
             SELECT status, created_at, decided_at, applied_at,
                    CASE status WHEN 'applied' THEN applied_at
                                WHEN 'rolled_back' THEN rolled_back_at
                                WHEN 'consensus_failed' THEN decided_at
                                ELSE updated_at END AS final_at
               FROM singularity.proposals WHERE file LIKE $1)
         SELECT count(*),
                count(*) FILTER (WHERE status = 'applied'),
                count(*) FILTER (WHERE status = 'consensus_failed'),
                count(*) FILTER (WHERE status = 'rolled_back'),
                count(*) FILTER (WHERE status = 'failed'),
                extract(epoch FROM max(final_at) FILTER (WHERE status IN ('applied', 'consensus_failed', 'rolled_back', 'failed')) - $2)::float8,
                CASE WHEN count(applied_at) > 0 THEN ARRAY[
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - created_at)::float8),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - created_at)::float8),
                  max(extract(epoch FROM applied_at - created_at)::float8)] END,
                CASE WHEN count(decided_at) > 0 THEN ARRAY[
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)::float8),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)::float8),
                  max(extract(epoch FROM decided_at - created_at)::float8)] END,
                CASE WHEN count(applied_at) > 0 THEN ARRAY[
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - decided_at)::float8),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - decided_at)::float8),
                  max(extract(epoch FROM applied_at - decided_at)::float8)] END
           FROM p",
    )
    .bind(&like)
    .bind(t0_db)
    .fetch_one(&pool)
    .await?;
    let decided_by: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(decided_by, status), count(*) FROM centralcloud.proposals
          WHERE proposal_id = ANY($1) GROUP BY 1 ORDER BY 1",
    )
    .bind(&submitted.ids)
    .fetch_all(&pool)
    .await?;
    // Time each hop of these journeys took: sent -> acked.
    let hop_rows: Vec<(String, f64, f64, f64)> = sqlx::query_as(
        "SELECT a.queue_name,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.archived_at - a.created_at)::float8),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM a.archived_at - a.created_at)::float8),
                max(extract(epoch FROM a.archived_at - a.created_at)::float8)
           FROM pgflow.archive a
           JOIN singularity.proposals p ON p.trace_id = a.trace_id
          WHERE p.file LIKE $1 AND a.queue_name = ANY($2)
          GROUP BY 1",
    )
    .bind(&like)
    .bind(&queues)
    .fetch_all(&pool)
    .await?;
    let hops = JOURNEY_QUEUES
        .iter()
        .filter_map(|q| {
            hop_rows.iter().find(|r| r.0 == *q).map(|r| {
                (
                    q.trim_end_matches("_queue").to_string(),
                    Pct {
                        p50: r.1 * 1000.0,
                        p99: r.2 * 1000.0,
                        max: r.3 * 1000.0,
                    },
                )
            })
        })
        .collect();
    let dlq_after: i64 = sqlx::query_scalar("SELECT count(*) FROM pgflow.dlq")
        .fetch_one(&pool)
        .await?;
    let cpu = (
        cpu_after.0 - cpu_before.0,
        cpu_after.1 - cpu_before.1,
        cpu_after.2.zip(cpu_before.2).map(|(a, b)| a - b),
    );
    Ok(RunResult {
        label: label.to_string(),
        mode,
        requested: n,
        accepted: submitted.ids.len(),
        submit_errors: submitted.errors,
        first_error: submitted.first_error,
        submit_secs,
        submit_latency: pct_of(&submitted.latency),
        stored: stats.0,
        applied: stats.1,
        consensus_failed: stats.2,
        rolled_back: stats.3,
        failed: stats.4,
        drain_secs: if timed_out { None } else { stats.5 },
        idle_secs,
        timed_out,
        journey: pct_from(stats.6),
        consensus: pct_from(stats.7),
        execution: pct_from(stats.8),
        decided_by,
        dlq: dlq_after - dlq_before,
        cpu,
        wall_secs,
        hops,
        queued_at_end,
    })
}

async fn environment(
    args: &Args,
    admin_url: &str,
    private: bool,
    load_at_start: &str,
) -> Vec<String> {
    let mut lines = vec![format!("date: {}", Utc::now().format("%Y-%m-%d %H:%M UTC"))];
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    lines.push(format!(
        "machine: {cores} cores, load average at start {load_at_start}; the load tool, the \
         services and PostgreSQL share the host"
    ));
    if let Ok(pg) = Pgflow::connect_with(admin_url, opts(1)).await {
        if let Ok(v) = sqlx::query_scalar::<_, String>("SELECT version()")
            .fetch_one(pg.pool())
            .await
        {
            lines.push(format!("server: {v}"));
        }
        if let Ok(settings) = sqlx::query_as::<_, (String, String)>(
            "SELECT name, setting FROM pg_settings WHERE name IN
               ('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'full_page_writes')
             ORDER BY name",
        )
        .fetch_all(pg.pool())
        .await
        {
            lines.push(format!(
                "server settings: {}{}",
                settings
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if private {
                    " (private cluster started by system-load)"
                } else {
                    " (external server)"
                }
            ));
        }
        pg.close().await;
    }
    lines.push(format!(
        "services: centralcloud + {} singularity instances (release binaries), each logged in \
         as its own role; every consumer {} workers, poll {} ms, batch {}, pool {} connections \
         per process; vote deadline {} ms; learning loop off; no verify command (metrics from \
         /proc); RUST_LOG={}",
        args.instances,
        args.workers,
        args.poll_interval_ms,
        args.batch_size,
        args.pool(),
        args.vote_deadline_ms,
        args.service_log
    ));
    lines.push(format!(
        "client: POST /proposals over keep-alive HTTP/1.1, round robin over the instances; each \
         proposal a distinct file, risk 1.0 (approved by every voter); concurrent runs with {} \
         requests in flight",
        args.concurrency
    ));
    let argv: Vec<String> = std::env::args().skip(1).collect();
    lines.push(format!(
        "command: `cargo build --release --workspace && target/release/system-load {}`",
        argv.join(" ")
    ));
    lines
}
