//! The system under load for `system-load`: the service processes (spawned
//! from the release binaries next to the load tool, their output in log
//! files), a small keep-alive HTTP/1.1 client for `POST /proposals`, and
//! CPU accounting from `/proc`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The directory holding the workspace's binaries: the directory of this
/// executable (`target/<profile>/`), or its parent when run from `deps/`.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the system-load executable")?;
    let dir = exe
        .parent()
        .context("the executable has no parent directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        return Ok(dir.parent().unwrap_or(dir).to_path_buf());
    }
    Ok(dir.to_path_buf())
}

/// Path of the service binary `name` next to this executable, or an error
/// telling how to build it.
pub fn service_bin(name: &str) -> Result<PathBuf> {
    let p = bin_dir()?.join(name);
    if !p.is_file() {
        bail!(
            "{} not found: build the services in the same profile as system-load first \
             (`cargo build --release --workspace`)",
            p.display()
        );
    }
    Ok(p)
}

/// A running service process; its stdout and stderr go to a log file.
pub struct Proc {
    /// Label (e.g. `singularity_2`).
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `bin` with `args` and `env` (nothing inherited but PATH),
    /// logging to `<log_dir>/<name>.log`.
    pub fn spawn(
        bin: &Path,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last `n` lines of the log.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Fails (with the log's tail) when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last log lines ({}):\n{}",
                self.name,
                self.log.display(),
                self.tail(30)
            );
        }
        Ok(())
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.contains(needle)) {
                return Ok(l.to_string());
            }
            self.check_alive()?;
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{}: no {needle:?} within {timeout:?}; last log lines:\n{}",
                    self.name,
                    self.tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The ops server address a ready line announces (`... http=127.0.0.1:40123`).
pub fn http_addr_of(ready_line: &str) -> Result<SocketAddr> {
    ready_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no http=<addr> in ready line {ready_line:?}"))
}

/// The singularity instances' API token in a load run (loopback only; the
/// instances get it as `SINGULARITY_API_TOKEN`, [`HttpConn`] sends it).
pub const API_TOKEN: &str = "system-load-api-token-local-only";

/// One keep-alive HTTP/1.1 connection (reconnected when the server closed
/// it). Enough for `POST /proposals`: JSON bodies with a Content-Length.
pub struct HttpConn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl HttpConn {
    /// A connection to `addr` (opened on first use).
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, stream: None }
    }

    /// `POST path` with a JSON `body` and [`API_TOKEN`]; returns (status, body). A request on
    /// a reused connection that the server had closed before answering
    /// (no byte of response) is sent once more on a new connection.
    pub async fn post_json(&mut self, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {API_TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        for attempt in 0..2 {
            let reused = self.stream.is_some();
            let stream = match &mut self.stream {
                Some(s) => s,
                None => {
                    let s = TcpStream::connect(self.addr).await?;
                    s.set_nodelay(true)?;
                    self.stream.insert(BufReader::new(s))
                }
            };
            match exchange(stream, request.as_bytes()).await {
                Ok((status, body, keep)) => {
                    if !keep {
                        self.stream = None;
                    }
                    return Ok((status, body));
                }
                Err(Exchange::NoResponse(e)) if reused && attempt == 0 => {
                    self.stream = None;
                    let _ = e;
                }
                Err(Exchange::NoResponse(e) | Exchange::Broken(e)) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
        Err(std::io::Error::other("unreachable: retry loop ended"))
    }
}

enum Exchange {
    /// Failed before the first byte of the response.
    NoResponse(std::io::Error),
    /// Failed after the response started.
    Broken(std::io::Error),
}

async fn exchange(
    stream: &mut BufReader<TcpStream>,
    request: &[u8],
) -> Result<(u16, String, bool), Exchange> {
    use std::io::{Error, ErrorKind};
    stream
        .get_mut()
        .write_all(request)
        .await
        .map_err(Exchange::NoResponse)?;
    let mut line = String::new();
    let n = stream
        .read_line(&mut line)
        .await
        .map_err(Exchange::NoResponse)?;
    if n == 0 {
        return Err(Exchange::NoResponse(Error::new(
            ErrorKind::UnexpectedEof,
            "connection closed before the response",
        )));
    }
    let broken =
        |what: &str| Exchange::Broken(Error::new(ErrorKind::InvalidData, what.to_string()));
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| broken("no status line"))?;
    let mut length: Option<usize> = None;
    let mut keep = true;
    loop {
        line.clear();
        let n = stream
            .read_line(&mut line)
            .await
            .map_err(Exchange::Broken)?;
        if n == 0 {
            return Err(broken("connection closed in the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse().ok();
            } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                keep = false;
            } else if k == "transfer-encoding" {
                return Err(broken("chunked responses are not supported"));
            }
        }
    }
    let mut body = Vec::new();
    match length {
        Some(len) => {
            body.resize(len, 0);
            stream
                .read_exact(&mut body)
                .await
                .map_err(Exchange::Broken)?;
        }
        None => {
            stream
                .read_to_end(&mut body)
                .await
                .map_err(Exchange::Broken)?;
            keep = false;
        }
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned(), keep))
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name).
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// `USER_HZ`: 100 on every Linux architecture the tool runs on.
fn clock_ticks() -> f64 {
    100.0
}

/// CPU seconds used so far by the children of `ppid` (a postmaster's
/// backends and auxiliary processes) plus `ppid` itself.
pub fn tree_cpu_secs(ppid: u32) -> f64 {
    let mut total = cpu_secs(ppid).unwrap_or(0.0);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return total;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent = stat
            .rfind(')')
            .and_then(|i| stat.get(i + 2..))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(ppid) {
            total += cpu_secs(pid).unwrap_or(0.0);
        }
    }
    total
}

/// The postmaster's pid of a cluster whose data directory is `data_dir`.
pub fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
