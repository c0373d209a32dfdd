//! `pgflow up`: run the whole system locally. Starts a private PostgreSQL
//! when no URL is given, applies the migrations, starts centralcloud,
//! genesis and N singularity instances as separate processes (each
//! connected as its own role, talking only through the queues), shows live
//! what flows, and on Ctrl-C / SIGTERM stops everything cleanly.
//!
//! * The service binaries are those next to the running `pgflow`
//!   executable (build the workspace: `cargo build --release --workspace`).
//! * Each service logs in as its role: the URL's user is replaced by
//!   `centralcloud`, `genesis` or the instance's own role (`singularity_2`,
//!   created here, a member of `singularity`) (host, port, database and
//!   options kept). The roles have no password: on a user-supplied server
//!   they need a password (put it in `~/.pgpass` / `PGPASSFILE`) or trust
//!   authentication for them; the private PostgreSQL uses trust.
//! * Everything a run writes lives in its run directory (`--run-dir`,
//!   default a new `pgflow-up-*` directory under the system temp dir, kept
//!   after the run): `logs/<service>.log` (each child's stdout and stderr;
//!   lines with ERROR are also forwarded to stderr) and
//!   `workspaces/<instance>` (where each instance applies changes).
//! * The instances' HTTP API needs a token: `SINGULARITY_API_TOKEN` from
//!   the environment, else a random one for the run, written to
//!   `<run dir>/api-token` (mode 0600) for `curl -H "Authorization: Bearer
//!   $(cat …/api-token)"`.
//! * `--demo` feeds proposals and Genesis requests through singularity
//!   (see [`demo`]), with that token.
//! * A service that dies on its own is reported in the view and restarted
//!   (one-for-one, backoff 1 s doubling to 30 s).

mod backoff;
mod demo;
mod procs;
mod view;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::dashboard::DashboardArgs;
use crate::client::{redact_url, Pgflow};
use crate::error::{Error, Result};
use crate::local_pg::{LocalPostgres, LocalPostgresOptions};
use crate::testing::with_user;

/// The verify command of the instances: fails while a demo's breaching
/// change (`breach_*.txt`) is in the workspace.
pub const VERIFY_CMD: &str = "! ls breach_*.txt >/dev/null 2>&1";

/// Arguments of `pgflow up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// How often to refresh the live view.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// Start everything, print the view once, stop everything and exit
    /// (for scripts and smoke tests).
    #[arg(long)]
    pub once: bool,
    /// Singularity instances to run (INSTANCE_ID singularity_1..N).
    #[arg(long, default_value_t = 3)]
    pub instances: usize,
    /// Feed the seeds' scenarios continuously: proposals (ordinary,
    /// high-risk → rejected, breaching → rolled back), rule and LLM-config
    /// updates and code-analysis jobs, all through singularity (not with
    /// `--once`).
    #[arg(long)]
    pub demo: bool,
    /// Time between two demo proposals.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub demo_interval: Duration,
    /// Run PostgreSQL and the view only, no services (the old `up`).
    #[arg(long, conflicts_with = "demo")]
    pub no_services: bool,
    /// Directory for logs and workspaces (default: a new
    /// `pgflow-up-*` directory under the system temp dir, kept afterwards).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// How long a service may take to print its ready line.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// How long a service gets to stop after SIGTERM before SIGKILL.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub stop_timeout: Duration,
    /// Do not serve the dashboard.
    #[arg(long)]
    pub no_dashboard: bool,
    /// The dashboard (see `pgflow dashboard --help`).
    #[command(flatten)]
    pub dashboard: DashboardArgs,
}

/// Runs `up`.
pub async fn run(
    url: Option<String>,
    args: &UpArgs,
    json: bool,
    shutdown: CancellationToken,
) -> Result<()> {
    // Fail before starting anything when a binary is missing.
    let binaries = if args.no_services {
        None
    } else {
        let mut b = procs::find_binaries(&["centralcloud", "genesis", "singularity"])?;
        let singularity = b.pop().unwrap_or_default();
        let genesis = b.pop().unwrap_or_default();
        let centralcloud = b.pop().unwrap_or_default();
        Some((centralcloud, genesis, singularity))
    };
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
            (pg.socket_url("postgres"), Some(pg))
        }
    };
    let result = run_with_db(&url, binaries, args, json, shutdown).await;
    if let Some(mut local) = local {
        tokio::task::spawn_blocking(move || local.stop(crate::local_pg::StopMode::Fast))
            .await
            .map_err(|e| Error::LocalPostgres(e.to_string()))??;
        eprintln!("private PostgreSQL stopped");
    }
    result
}

/// Starts the dashboard unless `--no-dashboard`; returns its URL. A
/// dashboard that cannot start (its port taken, say) is reported and the
/// system runs without it.
async fn start_dashboard(pg: &Pgflow, args: &UpArgs, stop: CancellationToken) -> Option<String> {
    if args.no_dashboard {
        return None;
    }
    match args.dashboard.start(pg, stop).await {
        Ok(d) => Some(format!("http://{}/", d.addr)),
        Err(e) => {
            eprintln!(
                "warning: no dashboard: {} (choose another address with --dashboard-addr, or --no-dashboard)",
                crate::error::report(&e)
            );
            None
        }
    }
}

fn run_dir(args: &UpArgs) -> Result<PathBuf> {
    let dir = match &args.run_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => tempfile::Builder::new()
            .prefix("pgflow-up-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(dir.join("logs"))?;
    std::fs::create_dir_all(dir.join("workspaces"))?;
    Ok(std::path::absolute(&dir).unwrap_or(dir))
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The id (and login role) of the `i`-th instance, from 1.
fn instance_id(i: usize) -> String {
    format!("singularity_{i}")
}

/// The instances' API token: `SINGULARITY_API_TOKEN` when set, else a
/// random one (two v4 UUIDs: 244 random bits), written to
/// `<dir>/api-token`, readable by the owner only.
fn api_token(dir: &Path) -> Result<String> {
    let token = match std::env::var("SINGULARITY_API_TOKEN") {
        Ok(t) if !t.trim().is_empty() => t,
        _ => format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
    };
    let path = dir.join("api-token");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(token.as_bytes())?;
    }
    Ok(token)
}

fn specs(
    url: &str,
    dir: &Path,
    bins: &(PathBuf, PathBuf, PathBuf),
    n: usize,
    api_token: &str,
) -> Vec<procs::Spec> {
    let common = |role: &str| {
        let mut e = env(&[
            ("PGFLOW_HTTP_ADDR", "127.0.0.1:0"),
            ("PGFLOW_POLL_INTERVAL_MS", "200"),
            // Plain text in the log files.
            ("NO_COLOR", "1"),
        ]);
        e.push(("PGFLOW_DATABASE_URL".into(), with_user(url, role)));
        if std::env::var_os("RUST_LOG").is_none() {
            e.push(("RUST_LOG".into(), "info".into()));
        }
        e
    };
    let log = |name: &str| dir.join("logs").join(format!("{name}.log"));
    let mut specs = vec![
        procs::Spec {
            name: "centralcloud".into(),
            program: bins.0.clone(),
            env: common("centralcloud"),
            ready: "centralcloud ready".into(),
            log: log("centralcloud"),
        },
        procs::Spec {
            name: "genesis".into(),
            program: bins.1.clone(),
            env: [
                common("genesis"),
                env(&[("GENESIS_POLL_INTERVAL_MS", "200")]),
            ]
            .concat(),
            ready: "genesis ready".into(),
            log: log("genesis"),
        },
    ];
    for i in 1..=n {
        let id = instance_id(i);
        let ws = dir
            .join("workspaces")
            .join(&id)
            .to_string_lossy()
            .to_string();
        specs.push(procs::Spec {
            name: id.clone(),
            program: bins.2.clone(),
            env: [
                common(&id),
                env(&[
                    ("INSTANCE_ID", &id),
                    ("SINGULARITY_WORKSPACE", &ws),
                    ("SINGULARITY_VERIFY_CMD", VERIFY_CMD),
                    ("SINGULARITY_PATTERN_INTERVAL_MS", "2000"),
                    ("SINGULARITY_PATTERN_GRACE_MS", "5000"),
                    ("SINGULARITY_API_TOKEN", api_token),
                ]),
            ]
            .concat(),
            ready: "singularity ready".into(),
            log: log(&id),
        });
    }
    specs
}

async fn run_with_db(
    url: &str,
    binaries: Option<(PathBuf, PathBuf, PathBuf)>,
    args: &UpArgs,
    json: bool,
    shutdown: CancellationToken,
) -> Result<()> {
    let pg = Pgflow::connect(url).await?;
    pg.migrate().await?;
    let instance_ids: Vec<String> = (1..=args.instances).map(instance_id).collect();
    super::roles::ensure_instance_roles(pg.pool(), &instance_ids).await?;
    let stop = CancellationToken::new();
    let mut procs: Vec<procs::Supervised> = Vec::new();
    let mut dir = None;
    let mut token = String::new();
    let mut started = Ok(());
    if let Some(bins) = &binaries {
        let d = run_dir(args)?;
        eprintln!("run dir {} (logs in {}/logs)", d.display(), d.display());
        token = api_token(&d)?;
        eprintln!(
            "the instances' API token is in {}",
            d.join("api-token").display()
        );
        let all = specs(url, &d, bins, args.instances, &token);
        // centralcloud and genesis first, then the instances, all in parallel within each step.
        let (core, instances) = all.split_at(2.min(all.len()));
        for group in [core, instances] {
            let results = futures_util::future::join_all(group.iter().cloned().map(|spec| {
                procs::supervise(spec, args.ready_timeout, args.stop_timeout, stop.clone())
            }))
            .await;
            for r in results {
                match r {
                    Ok(p) => {
                        let s = p.status();
                        eprintln!(
                            "started {} pid={} http={} log={}",
                            s.name,
                            s.pid.map(|p| p.to_string()).unwrap_or_default(),
                            s.http.as_deref().unwrap_or("-"),
                            s.log.display()
                        );
                        procs.push(p);
                    }
                    Err(e) if started.is_ok() => started = Err(e),
                    Err(e) => eprintln!("error: {}", crate::error::report(&e)),
                }
            }
            if started.is_err() || shutdown.is_cancelled() {
                break;
            }
        }
        dir = Some(d);
    }
    let result = match started {
        // Ctrl-C while the services were starting: stop them at once.
        Ok(()) if shutdown.is_cancelled() => Ok(()),
        Ok(()) => {
            let pids: Vec<String> = procs
                .iter()
                .filter_map(|p| p.status().pid.map(|p| p.to_string()))
                .collect();
            let board = start_dashboard(&pg, args, stop.clone()).await;
            let ready = format!(
                "pgflow ready: {} services={} dashboard={} pids={} (Ctrl-C to stop)",
                redact_url(url),
                procs.len(),
                board.as_deref().unwrap_or("-"),
                if pids.is_empty() {
                    "-".into()
                } else {
                    pids.join(",")
                }
            );
            // With --json, stdout carries only the JSON snapshots.
            if json {
                eprintln!("{ready}");
            } else {
                println!("{ready}");
            }
            let stats = Arc::new(Mutex::new(demo::DemoStats::default()));
            let feeder = match (&binaries, args.demo && !args.once) {
                (Some(bins), true) => {
                    let feeder = demo::Feeder {
                        targets: procs
                            .iter()
                            .skip(2)
                            .map(|p| demo::Target {
                                id: p.status().name,
                                status: p.status_handle(),
                            })
                            .collect(),
                        admin: pg.clone(),
                        singularity: bins.2.clone(),
                        singularity_url: with_user(url, "singularity"),
                        api_token: token.clone(),
                        tick: args.demo_interval,
                        log: dir
                            .as_ref()
                            .map(|d| d.join("logs").join("demo.log"))
                            .unwrap_or_else(|| PathBuf::from("demo.log")),
                        stats: stats.clone(),
                    };
                    let token = stop.clone();
                    Some(tokio::spawn(feeder.run(token)))
                }
                _ => None,
            };
            let r = view_loop(
                &pg,
                args,
                json,
                &procs,
                feeder.is_some().then_some(&stats),
                &shutdown,
            )
            .await;
            stop.cancel();
            if let Some(f) = feeder {
                let _ = f.await;
            }
            r
        }
        Err(e) => Err(e),
    };
    stop.cancel();
    if !procs.is_empty() {
        eprintln!("stopping {} services …", procs.len());
    }
    futures_util::future::join_all(procs.into_iter().map(|p| p.join())).await;
    pg.close().await;
    if let Some(d) = dir {
        eprintln!("stopped; logs kept in {}/logs", d.display());
    }
    result
}

async fn view_loop(
    pg: &Pgflow,
    args: &UpArgs,
    json: bool,
    procs: &[procs::Supervised],
    demo: Option<&Arc<Mutex<demo::DemoStats>>>,
    shutdown: &CancellationToken,
) -> Result<()> {
    // On a terminal the view redraws in place; piped, it appends.
    let clear = !args.once && std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let statuses = procs.iter().map(|p| p.status()).collect();
        let d = demo.map(|d| procs::lock(d).clone());
        match view::snapshot(pg, statuses, d).await {
            Ok(s) if json => println!("{}", serde_json::to_string(&s)?),
            Ok(s) if clear => println!("\x1b[2J\x1b[H{}", view::render(&s)),
            Ok(s) => println!("{}", view::render(&s)),
            // The database may be briefly unreachable; keep going.
            Err(e) if !args.once => eprintln!("view: {}", crate::error::report(&e)),
            Err(e) => return Err(e),
        }
        if args.once {
            return Ok(());
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(args.refresh) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn up_flags_parse() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "pgflow",
            "up",
            "--demo",
            "--instances",
            "2",
            "--refresh",
            "500ms",
        ])
        .unwrap();
        let Command::Up(args) = cli.command else {
            panic!("not up")
        };
        assert!(args.demo && !args.once);
        assert_eq!(args.instances, 2);
        assert_eq!(args.refresh, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["pgflow", "up", "--demo", "--no-services"]).is_err());
    }

    #[test]
    fn each_service_logs_in_as_its_role_with_its_own_workspace() {
        let bins = (
            PathBuf::from("/b/centralcloud"),
            PathBuf::from("/b/genesis"),
            PathBuf::from("/b/singularity"),
        );
        let url = "postgres://admin:secret@db.example:5433/queues?sslmode=require";
        let specs = specs(url, Path::new("/run"), &bins, 2, "t0123456789abcdef");
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["centralcloud", "genesis", "singularity_1", "singularity_2"]
        );
        let get = |s: &procs::Spec, k: &str| {
            s.env
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get(&specs[0], "PGFLOW_DATABASE_URL").as_deref(),
            Some("postgres://centralcloud@db.example:5433/queues?sslmode=require")
        );
        assert_eq!(
            get(&specs[3], "PGFLOW_DATABASE_URL").as_deref(),
            Some("postgres://singularity_2@db.example:5433/queues?sslmode=require")
        );
        assert_eq!(
            get(&specs[3], "INSTANCE_ID").as_deref(),
            Some("singularity_2")
        );
        assert_eq!(
            get(&specs[3], "SINGULARITY_WORKSPACE").as_deref(),
            Some("/run/workspaces/singularity_2")
        );
        assert_eq!(
            get(&specs[1], "PGFLOW_HTTP_ADDR").as_deref(),
            Some("127.0.0.1:0")
        );
        assert_eq!(specs[2].log, PathBuf::from("/run/logs/singularity_1.log"));
        assert_eq!(
            get(&specs[3], "SINGULARITY_API_TOKEN").as_deref(),
            Some("t0123456789abcdef")
        );
        assert_eq!(get(&specs[0], "SINGULARITY_API_TOKEN"), None);
    }

    #[test]
    fn the_api_token_is_random_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // The generated token, unless the environment sets one.
        let env = std::env::var("SINGULARITY_API_TOKEN").ok();
        let a = api_token(dir.path()).unwrap();
        let written = std::fs::read_to_string(dir.path().join("api-token")).unwrap();
        assert_eq!(a, written);
        let mode = std::fs::metadata(dir.path().join("api-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        if env.is_none() {
            assert_eq!(a.len(), 64);
            assert_ne!(a, api_token(dir.path()).unwrap());
        }
    }

    #[test]
    fn the_verify_command_fails_only_while_a_breach_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let run = || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(VERIFY_CMD)
                .current_dir(dir.path())
                .status()
                .unwrap()
                .success()
        };
        std::fs::write(dir.path().join("demo_1.txt"), "ok").unwrap();
        assert!(run());
        std::fs::write(dir.path().join("breach_7.txt"), "x").unwrap();
        assert!(!run());
        std::fs::remove_file(dir.path().join("breach_7.txt")).unwrap();
        assert!(run());
    }
}
