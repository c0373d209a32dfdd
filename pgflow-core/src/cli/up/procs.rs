//! Child processes of `pgflow up`: spawning a service, waiting for its
//! ready line, supervising it (one-for-one restart with backoff when it
//! dies on its own) and stopping it (SIGTERM, then SIGKILL after a grace
//! period).
//!
//! Every line a child prints (stdout and stderr) is appended to
//! `<run dir>/logs/<name>.log`; lines with `ERROR` are also forwarded to
//! this process's stderr, prefixed with `[<name>]`. The last lines are kept
//! in memory for error messages.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

use super::backoff::RestartBackoff;

/// Lines of a child's output kept for error messages.
const TAIL_LINES: usize = 20;

/// How to run one service.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its name in the view and the log file (`singularity_2`).
    pub name: String,
    /// The binary.
    pub program: PathBuf,
    /// Environment set on top of this process's own.
    pub env: Vec<(String, String)>,
    /// What its ready line starts with (`singularity ready`).
    pub ready: String,
    /// Its log file.
    pub log: PathBuf,
}

/// What the view shows about one child.
#[derive(Debug, Clone, Serialize)]
pub struct ProcStatus {
    /// Its name.
    pub name: String,
    /// `starting`, `running`, `restarting`, `stopping`, `stopped` or `failed`.
    pub state: String,
    /// The running process's id.
    pub pid: Option<u32>,
    /// Its ops HTTP address (from the ready line).
    pub http: Option<String>,
    /// Restarts after unexpected exits.
    pub restarts: u32,
    /// How it last ended, when it ended on its own.
    pub last_exit: Option<String>,
    /// Its log file.
    pub log: PathBuf,
}

/// Finds the service binaries `names` next to the running `pgflow`
/// executable; the error names every one that is missing and how to build it.
pub fn find_binaries(names: &[&str]) -> Result<Vec<PathBuf>> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    let missing: Vec<&str> = names
        .iter()
        .zip(&paths)
        .filter(|(_, p)| !p.is_file())
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        return Ok(paths);
    }
    Err(Error::Config(format!(
        "service binar{} {} not found next to pgflow in {}: `pgflow up` runs the binaries \
         of its own build; build the whole workspace first with \
         `cargo build --release --workspace` and run `target/release/pgflow up` \
         (`cargo run -p pgflow-core --bin pgflow` builds only pgflow); \
         `pgflow up --no-services` runs PostgreSQL and the view alone",
        if missing.len() == 1 { "y" } else { "ies" },
        missing
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", "),
        dir.display()
    )))
}

type Tail = Arc<Mutex<VecDeque<String>>>;

/// Locks `m`, ignoring poisoning.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One spawned process with its output plumbing.
struct Running {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    tail: Tail,
}

async fn spawn(spec: &Spec) -> Result<Running> {
    let mut cmd = Command::new(&spec.program);
    cmd.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Own process group: Ctrl-C in the terminal reaches `pgflow up`
        // only, which then stops its children in order.
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("starting {} ({}): {e}", spec.name, spec.program.display()),
        ))
    })?;
    if let Some(pid) = child.id() {
        spawn_watchdog(pid);
    }
    let log = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .await?;
    let log = Arc::new(tokio::sync::Mutex::new(log));
    let tail: Tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let (tx, lines) = mpsc::unbounded_channel();
    let readers: [Box<dyn tokio::io::AsyncRead + Unpin + Send>; 2] = [
        Box::new(child.stdout.take().ok_or_else(|| no_pipe(spec))?),
        Box::new(child.stderr.take().ok_or_else(|| no_pipe(spec))?),
    ];
    for reader in readers {
        let (tx, log, tail, name) = (tx.clone(), log.clone(), tail.clone(), spec.name.clone());
        tokio::spawn(async move {
            let mut r = BufReader::new(reader).lines();
            while let Ok(Some(line)) = r.next_line().await {
                {
                    let mut f = log.lock().await;
                    let _ = f.write_all(line.as_bytes()).await;
                    let _ = f.write_all(b"\n").await;
                }
                if line.contains("ERROR") {
                    eprintln!("[{name}] {line}");
                }
                {
                    let mut t = lock(&tail);
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line.clone());
                }
                let _ = tx.send(line);
            }
        });
    }
    Ok(Running { child, lines, tail })
}

fn no_pipe(spec: &Spec) -> Error {
    Error::Io(std::io::Error::other(format!(
        "{}: no output pipe",
        spec.name
    )))
}

/// A detached shell that sends SIGTERM to `pid` if this process dies first
/// (even by SIGKILL), so no service outlives `pgflow up`.
fn spawn_watchdog(pid: u32) {
    let script = r#"while [ -d "/proc/$1" ] && [ -d "/proc/$2" ]; do sleep 1; done; [ -d "/proc/$2" ] && kill -TERM "$2" 2>/dev/null; exit 0"#;
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("pgflow-up-watchdog")
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        .spawn()
        .map(|mut c| {
            // Reap it in the background so it never lingers as a zombie.
            std::thread::spawn(move || c.wait());
        });
}

fn tail_text(tail: &Tail) -> String {
    let t = lock(tail);
    if t.is_empty() {
        "(no output)".into()
    } else {
        t.iter().cloned().collect::<Vec<_>>().join("\n  ")
    }
}

/// Spawns `spec` and waits for its ready line; returns the process and the
/// ops HTTP address the line announces.
async fn start(spec: &Spec, timeout: Duration) -> Result<(Running, Option<String>)> {
    let mut run = spawn(spec).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let outcome = loop {
        tokio::select! {
            line = tokio::time::timeout_at(deadline, run.lines.recv()) => match line {
                Ok(Some(l)) if l.contains(&spec.ready) => {
                    let http = l
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("http="))
                        .map(str::to_string);
                    break Ok(http);
                }
                Ok(Some(_)) => {}
                Ok(None) => break Err("its output ended".to_string()),
                Err(_) => break Err(format!("no ready line within {}", humantime::format_duration(timeout))),
            },
            status = run.child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                break Err(format!("it exited ({status})"));
            }
        }
    };
    match outcome {
        Ok(http) => Ok((run, http)),
        Err(why) => {
            stop_child(&mut run.child, Duration::from_secs(2)).await;
            // Let the readers catch the last lines.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(Error::Io(std::io::Error::other(format!(
                "service {} did not become ready: {why}; log {}; last output:\n  {}",
                spec.name,
                spec.log.display(),
                tail_text(&run.tail)
            ))))
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Returns true when it stopped
/// within the grace period.
async fn stop_child(child: &mut Child, grace: Duration) -> bool {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(_) => true,
        Err(_) => {
            let _ = child.kill().await;
            false
        }
    }
}

/// A supervised service.
pub struct Supervised {
    status: Arc<Mutex<ProcStatus>>,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Its current status.
    pub fn status(&self) -> ProcStatus {
        lock(&self.status).clone()
    }

    /// A shared handle on its status (follows restarts).
    pub fn status_handle(&self) -> Arc<Mutex<ProcStatus>> {
        self.status.clone()
    }

    /// Waits until its supervisor has stopped it (after the stop token fired).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Starts `spec`, waits for its ready line (`ready_timeout`), then keeps
/// it running until `stop` fires: an unexpected exit is recorded and the
/// service restarted after a backoff ([`RestartBackoff`]: 1 s, doubling up
/// to 30 s, back to 1 s after 30 s of healthy running). On `stop`
/// the child gets SIGTERM, then SIGKILL after `grace`.
pub async fn supervise(
    spec: Spec,
    ready_timeout: Duration,
    grace: Duration,
    stop: CancellationToken,
) -> Result<Supervised> {
    let (run, http) = start(&spec, ready_timeout).await?;
    let status = Arc::new(Mutex::new(ProcStatus {
        name: spec.name.clone(),
        state: "running".into(),
        pid: run.child.id(),
        http,
        restarts: 0,
        last_exit: None,
        log: spec.log.clone(),
    }));
    let st = status.clone();
    let task = tokio::spawn(async move {
        let mut run = Some(run);
        let mut backoff = RestartBackoff::new();
        backoff.ready(std::time::Instant::now());
        let mut pause = Duration::ZERO;
        loop {
            if let Some(r) = run.as_mut() {
                tokio::select! {
                    _ = stop.cancelled() => {
                        lock(&st).state = "stopping".into();
                        let clean = stop_child(&mut r.child, grace).await;
                        let mut s = lock(&st);
                        s.state = if clean { "stopped" } else { "killed" }.into();
                        s.pid = None;
                        return;
                    }
                    exit = r.child.wait() => {
                        let exit = exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                        pause = backoff.exited(std::time::Instant::now());
                        eprintln!(
                            "pgflow up: {} exited unexpectedly ({exit}); restarting in {}; log {}",
                            spec.name,
                            humantime::format_duration(pause),
                            spec.log.display()
                        );
                        let mut s = lock(&st);
                        s.state = "restarting".into();
                        s.pid = None;
                        s.http = None;
                        s.last_exit = Some(exit);
                    }
                }
                run = None;
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    lock(&st).state = "stopped".into();
                    return;
                }
                _ = tokio::time::sleep(pause) => {}
            }
            lock(&st).state = "starting".into();
            let started = tokio::select! {
                // Dropping a half-started child kills it (kill_on_drop).
                _ = stop.cancelled() => {
                    lock(&st).state = "stopped".into();
                    return;
                }
                started = start(&spec, ready_timeout) => started,
            };
            match started {
                Ok((r, http)) => {
                    backoff.ready(std::time::Instant::now());
                    let mut s = lock(&st);
                    s.state = "running".into();
                    s.pid = r.child.id();
                    s.http = http;
                    s.restarts += 1;
                    run = Some(r);
                }
                Err(e) => {
                    pause = backoff.exited(std::time::Instant::now());
                    eprintln!(
                        "pgflow up: restarting {} in {}: {e}",
                        spec.name,
                        humantime::format_duration(pause)
                    );
                    let mut s = lock(&st);
                    s.state = "restarting".into();
                    s.restarts += 1;
                    s.last_exit = e.to_string().lines().next().map(str::to_string);
                }
            }
        }
    });
    Ok(Supervised { status, task })
}
