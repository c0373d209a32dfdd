//! A private, throw-away PostgreSQL cluster built from the system's
//! `initdb` / `pg_ctl`: used by `pgflow up` and by the test harness when no
//! reachable database URL is given.
//!
//! The binaries are found on `PATH` or under `/usr/lib/postgresql/*/bin`
//! (newest version first). PostgreSQL refuses to run as root, so when this
//! process is root the cluster runs as the `postgres` system user. A small
//! watchdog process stops and removes the cluster when the owning process
//! exits, even if it is killed, so nothing is left behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::unistd::{Gid, Uid, User};

use crate::error::{Error, Result};

/// How to stop a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, checkpoint, exit.
    Fast,
    /// Exit at once (as in a crash); recovery runs at the next start.
    Immediate,
}

/// Options of a private cluster.
#[derive(Debug, Clone)]
pub struct LocalPostgresOptions {
    /// Keep `fsync` on (off by default: a throw-away cluster does not need
    /// to survive an operating-system crash, only a server crash).
    pub fsync: bool,
    /// `max_connections` of the server.
    pub max_connections: u32,
}

impl Default for LocalPostgresOptions {
    fn default() -> Self {
        Self {
            fsync: false,
            max_connections: 300,
        }
    }
}

/// A running private cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct LocalPostgres {
    dir: Option<tempfile::TempDir>,
    bin_dir: PathBuf,
    port: u16,
    run_as: Option<(Uid, Gid)>,
    options: LocalPostgresOptions,
    running: bool,
}

/// Finds the directory holding `initdb` and `pg_ctl`.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, p)| p).ok_or_else(|| {
        Error::LocalPostgres(
            "no initdb/pg_ctl found on PATH or under /usr/lib/postgresql/*/bin; install PostgreSQL \
             (e.g. `apt-get install postgresql`) or pass a database URL"
                .into(),
        )
    })
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl LocalPostgres {
    /// Creates and starts a cluster with default options. Blocking (initdb
    /// takes about a second); call it from `spawn_blocking` in async code.
    pub fn start() -> Result<Self> {
        Self::start_with(LocalPostgresOptions::default())
    }

    /// Creates and starts a cluster.
    pub fn start_with(options: LocalPostgresOptions) -> Result<Self> {
        let bin_dir = find_bin_dir()?;
        let dir = tempfile::Builder::new().prefix("pgflow-pg-").tempdir()?;
        let run_as = if Uid::effective().is_root() {
            let user = User::from_name("postgres")
                .map_err(|e| Error::LocalPostgres(format!("looking up user postgres: {e}")))?
                .ok_or_else(|| {
                    Error::LocalPostgres(
                        "running as root and there is no `postgres` user to run the server as; \
                         create one or pass a database URL"
                            .into(),
                    )
                })?;
            std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
            Some((user.uid, user.gid))
        } else {
            None
        };
        let mut pg = Self {
            dir: Some(dir),
            bin_dir,
            port: 0,
            run_as,
            options,
            running: false,
        };
        pg.initdb()?;
        pg.spawn_watchdog()?;
        let mut last_err = None;
        for _ in 0..5 {
            pg.port = free_port()?;
            match pg.pg_ctl_start() {
                Ok(()) => {
                    pg.running = true;
                    tracing::info!(port = pg.port, dir = %pg.dir().display(), "private PostgreSQL started");
                    return Ok(pg);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::LocalPostgres("could not start".into())))
    }

    /// The cluster's directory (data, log, socket).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/"))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for database `db` (user `postgres`, trust auth).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The same over the cluster's Unix socket (in [`Self::dir`]): what
    /// processes on this host use, as a same-host deployment would; it
    /// spares the TCP loopback path on every statement.
    pub fn socket_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{db}?host={}",
            self.port,
            self.dir().display()
        )
    }

    /// True while the server runs.
    pub fn is_running(&self) -> bool {
        self.running
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd.current_dir(self.dir());
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<()> {
        let out = cmd
            .output()
            .map_err(|e| Error::LocalPostgres(format!("{what}: cannot run: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::LocalPostgres(format!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    fn initdb(&self) -> Result<()> {
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(self.data_dir()).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        self.run(cmd, "initdb")
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections={} \
             -c fsync={} -c full_page_writes={} -c shared_buffers=128MB",
            self.port,
            self.dir().display(),
            self.options.max_connections,
            if self.options.fsync { "on" } else { "off" },
            if self.options.fsync { "on" } else { "off" },
        );
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir().join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .stdout(Stdio::null());
        self.run(cmd, "pg_ctl start")
    }

    /// Stops the server (the data stays; see [`Self::start_again`]).
    pub fn stop(&mut self, mode: StopMode) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "60", "-m"])
            .arg(match mode {
                StopMode::Fast => "fast",
                StopMode::Immediate => "immediate",
            })
            .arg("stop")
            .stdout(Stdio::null());
        self.run(cmd, "pg_ctl stop")?;
        self.running = false;
        Ok(())
    }

    /// Starts a stopped server again on the same port and data.
    pub fn start_again(&mut self) -> Result<()> {
        if self.running {
            return Ok(());
        }
        self.pg_ctl_start()?;
        self.running = true;
        Ok(())
    }

    /// The server log so far (for diagnostics).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("postgres.log")).unwrap_or_default()
    }

    /// Starts a detached shell that waits for this process to exit, then
    /// stops the server and deletes the directory.
    fn spawn_watchdog(&self) -> Result<()> {
        let script = r#"while [ -d "/proc/$1" ]; do sleep 1; done; "$2/pg_ctl" -D "$3/data" -m immediate stop >/dev/null 2>&1; rm -rf "$3""#;
        let mut cmd = Command::new("sh");
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        {
            use std::os::unix::process::CommandExt;
            // Own process group: a Ctrl-C aimed at the parent does not stop it early.
            cmd.process_group(0);
        }
        cmd.arg("-c")
            .arg(script)
            .arg("pgflow-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.bin_dir)
            .arg(self.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .spawn()?;
        Ok(())
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop(StopMode::Immediate) {
            tracing::warn!(error = %e, "stopping private PostgreSQL");
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir.path());
            drop(dir);
        }
    }
}

/// Waits until a TCP connection to `port` succeeds or `timeout` passes.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
