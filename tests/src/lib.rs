//! Harness for tests that span the binaries: find the built service
//! binaries, spawn them against a test database, wait for their ready
//! line, talk to their ops HTTP server, and stop them with a signal
//! (zero-to-production's `spawn_app`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The directory holding the workspace's binaries: the parent of the test
/// executable's `deps/` directory (`target/<profile>/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// Path of a workspace binary; panics with the fix when it was not built.
pub fn bin_path(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: build the workspace first (`cargo test --workspace` builds every binary)",
        p.display()
    );
    p
}

pub use pgflow_core::testing::{http_get, HttpResponse};

/// The ops server address a ready line announces (`... http=127.0.0.1:40123`);
/// panics with the line when there is none.
pub fn http_addr_of(ready_line: &str) -> SocketAddr {
    ready_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no http=<addr> in ready line {ready_line:?}"))
}

/// `GET path` from a service's ops server; panics when the request fails.
pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// A running service process with its output lines.
pub struct Service {
    /// The child process.
    pub child: Child,
    /// Every stdout and stderr line, as they come.
    pub lines: mpsc::UnboundedReceiver<String>,
    /// Lines seen so far.
    pub seen: Vec<String>,
}

impl Service {
    /// Spawns `name` with `args` and `env` (nothing inherited but PATH/HOME).
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin_path(name));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn service");
        let (tx, lines) = mpsc::unbounded_channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for reader in [
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(reader).lines();
                while let Ok(Some(l)) = r.next_line().await {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; panics with the output so far after `timeout`.
    pub async fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Ok(None) => panic!("output ended before {needle:?}:\n{}", self.seen.join("\n")),
                Err(_) => panic!(
                    "no {needle:?} within {timeout:?}:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("running child") as i32;
        kill(Pid::from_raw(pid), signal).expect("send signal");
    }

    /// Sends SIGTERM and returns the exit code, failing after `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.signal(Signal::SIGTERM);
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .expect("service did not exit after SIGTERM")
            .expect("wait for service");
        status.code()
    }
}
