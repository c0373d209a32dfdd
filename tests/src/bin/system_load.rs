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

#[path = "../load_args.rs"]
mod load_args;
#[path = "../load_measure.rs"]
mod load_measure;
#[path = "../load_report.rs"]
mod load_report;
#[path = "../load_submit.rs"]
mod load_submit;
#[path = "../load_system.rs"]
mod load_system;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::Parser;
use pgflow_core::local_pg::{LocalPostgres, LocalPostgresOptions};
use pgflow_core::testing::{commit_latencies, with_database, with_user};
use pgflow_core::{Pgflow, PgflowOptions};
use uuid::Uuid;

use load_args::Args;
use load_measure::{measure, System};
use load_report::{Pct, RunResult};
use load_submit::{new_hist, pct_of, Submit};
use load_system::Proc;

/// mimalloc instead of glibc malloc: in the batched benchmark glibc's
/// malloc and free took ~11% of the machine's CPU (many small allocations
/// freed on other threads); mimalloc gave 3-9% more throughput.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            (pg.socket_url("postgres"), Some(pg))
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
    let mut h = new_hist()?;
    for t in commit_latencies(admin.pool(), 200).await? {
        h.record(t.as_micros() as u64)?;
    }
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

/// What singularity's per-agent history read (run by every vote and every
/// submit) costs once the runs' proposals are stored, and whether its
/// trigger-kept counters agree with a full count.
async fn history_cost(admin: &Pgflow) -> Result<String> {
    let sql = "SELECT coalesce(sum(applied), 0)::int8, coalesce(sum(rolled_back), 0)::int8
                 FROM singularity.agent_history
                WHERE instance_id = 'singularity_1' AND agent_type = 'BugFixerAgent'";
    let (rows, applied, rolled_back): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'applied'),
                count(*) FILTER (WHERE status = 'rolled_back')
           FROM singularity.proposals
          WHERE instance_id = 'singularity_1' AND agent_type = 'BugFixerAgent'",
    )
    .fetch_one(admin.pool())
    .await?;
    let counters: (i64, i64) = sqlx::query_as(sql).fetch_one(admin.pool()).await?;
    let agree = counters == (applied, rolled_back);
    let mut h = new_hist()?;
    for _ in 0..20 {
        let t = Instant::now();
        sqlx::query(sql).fetch_optional(admin.pool()).await?;
        h.record(t.elapsed().as_micros() as u64)?;
    }
    let p = pct_of(&h).context("no timing")?;
    Ok(format!(
        "singularity's agent history (read in every vote and every submit) is 8 counter rows kept \
         by a trigger: {rows} proposals per instance after the runs, p50 {:.2} ms per read (20 \
         reads after the last run); counters {} a full count ({applied} applied, {rolled_back} \
         rolled back)",
        p.p50,
        if agree { "agree with" } else { "DISAGREE with" }
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
    let tx_batch = args.tx_batch.to_string();
    let common = |url: String| -> Vec<(String, String)> {
        vec![
            ("PGFLOW_DATABASE_URL".into(), url),
            ("PGFLOW_POOL_SIZE".into(), pool.clone()),
            ("PGFLOW_POLL_INTERVAL_MS".into(), poll.clone()),
            ("PGFLOW_BATCH_SIZE".into(), batch.clone()),
            ("PGFLOW_TX_BATCH".into(), tx_batch.clone()),
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
        // Each instance logs in as its own role (a member of `singularity`).
        sqlx::query("SELECT pgflow.ensure_member_role($1, 'singularity')")
            .bind(&id)
            .execute(admin.pool())
            .await
            .context("creating the instance's role")?;
        let mut env = common(with_user(db_url, &id));
        env.extend([
            ("INSTANCE_ID".into(), id.clone()),
            (
                "SINGULARITY_WORKSPACE".into(),
                ws.to_string_lossy().into_owned(),
            ),
            ("PGFLOW_CONSENSUS_WORKERS".into(), w.clone()),
            (
                "SINGULARITY_API_TOKEN".into(),
                load_system::API_TOKEN.into(),
            ),
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
               ('autovacuum', 'fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'full_page_writes')
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
                    " (private cluster started by system-load; the services and the tool connect over its Unix socket, as on one host)"
                } else {
                    " (external server)"
                }
            ));
        }
        pg.close().await;
    }
    lines.push(format!(
        "services: centralcloud + {} singularity instances (release binaries), each logged in \
         as its own role; every consumer {} workers, poll {} ms, batch {}, up to {} messages per \
         transaction (PGFLOW_TX_BATCH), pool {} connections per process; vote deadline {} ms; learning loop off; no verify command (metrics from \
         /proc); RUST_LOG={}",
        args.instances,
        args.workers,
        args.poll_interval_ms,
        args.batch_size,
        args.tx_batch,
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
