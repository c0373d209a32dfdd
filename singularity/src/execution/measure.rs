//! Measuring the instance before and after a change: real process metrics
//! from `/proc/self` (CPU usage, resident memory) and, when configured, a
//! verify command run with `sh -c` in the workspace, whose exit status
//! counts as errors (`error_count`, `error_rate`) and whose duration as
//! `latency_ms`. At most `PGFLOW_METRICS_WORKERS` measurements run at once.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgflow_core::protocol::MetricsSnapshot;
use tokio::sync::Semaphore;

/// Takes [`MetricsSnapshot`]s.
#[derive(Debug)]
pub struct Measurer {
    verify_cmd: Option<String>,
    verify_timeout: Duration,
    permits: Semaphore,
}

/// The outcome of one run of the verify command.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    /// Exited with status 0 within the timeout.
    pub passed: bool,
    /// Wall time in milliseconds.
    pub latency_ms: f64,
    /// Why it failed (exit status, timeout, spawn error, last output line).
    pub failure: Option<String>,
}

impl Measurer {
    /// A measurer running `verify_cmd` (if any) with `verify_timeout`,
    /// `concurrency` measurements at a time.
    pub fn new(verify_cmd: Option<String>, verify_timeout: Duration, concurrency: usize) -> Self {
        Self {
            verify_cmd,
            verify_timeout,
            permits: Semaphore::new(concurrency.max(1)),
        }
    }

    /// The verify command, if configured.
    pub fn verify_cmd(&self) -> Option<&str> {
        self.verify_cmd.as_deref()
    }

    /// Measures now: the verify command (in `workspace`) first, then the
    /// process sample, so CPU time of the command is included.
    pub async fn measure(&self, workspace: &Path) -> MetricsSnapshot {
        let _permit = self.permits.acquire().await;
        let verification = match &self.verify_cmd {
            Some(cmd) => Some(verify(cmd, workspace, self.verify_timeout).await),
            None => None,
        };
        let sample = match ProcSample::read() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /proc/self; reporting zero CPU and memory");
                ProcSample::default()
            }
        };
        let errors = u64::from(verification.as_ref().is_some_and(|v| !v.passed));
        MetricsSnapshot {
            cpu_usage: sample.cpu_percent,
            memory: sample.memory_mb,
            error_count: errors,
            error_rate: verification.as_ref().map(|_| errors as f64),
            latency_ms: verification.as_ref().map(|v| v.latency_ms),
            cost: None,
        }
    }
}

/// Runs `cmd` with `sh -c` in `dir` (stdin closed, output captured), killed
/// after `timeout`.
pub async fn verify(cmd: &str, dir: &Path, timeout: Duration) -> Verification {
    let started = Instant::now();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let outcome = match child {
        Err(e) => Err(format!("cannot start `sh -c {cmd}`: {e}")),
        Ok(child) => match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Err(_) => Err(format!(
                "timed out after {} ms (killed)",
                timeout.as_millis()
            )),
            Ok(Err(e)) => Err(format!("waiting for the verify command: {e}")),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
                Err(match last {
                    Some(line) => format!("{}: {}", out.status, line.trim()),
                    None => out.status.to_string(),
                })
            }
        },
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Err(why) = &outcome {
        tracing::info!(cmd, failure = %why, "verify command failed");
    }
    Verification {
        passed: outcome.is_ok(),
        latency_ms,
        failure: outcome.err(),
    }
}

/// CPU and memory of this process, from `/proc/self`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// CPU time of the process and its waited-for children since it
    /// started, as a percentage of the wall time since it started.
    pub cpu_percent: f64,
    /// Resident memory (VmRSS) in MB.
    pub memory_mb: f64,
}

impl ProcSample {
    /// Reads `/proc/self/stat`, `/proc/self/status` and `/proc/uptime`.
    pub fn read() -> std::io::Result<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        let status = std::fs::read_to_string("/proc/self/status")?;
        let uptime = std::fs::read_to_string("/proc/uptime")?;
        Self::parse(&stat, &status, &uptime, clock_ticks()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected /proc format")
        })
    }

    /// Computes a sample from the files' contents (`hz` = clock ticks per second).
    pub fn parse(stat: &str, status: &str, uptime: &str, hz: f64) -> Option<Self> {
        // Fields after the command name (which may contain spaces) start at field 3.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        let cpu_ticks = field(14)? + field(15)? + field(16)? + field(17)?;
        let start_ticks = field(22)?;
        let uptime_secs: f64 = uptime.split_whitespace().next()?.parse().ok()?;
        let alive = (uptime_secs - start_ticks / hz).max(0.001);
        let cpu_percent = (cpu_ticks / hz / alive * 100.0).max(0.0);
        let rss_kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Some(Self {
            cpu_percent: if cpu_percent.is_finite() {
                cpu_percent
            } else {
                0.0
            },
            memory_mb: rss_kb / 1024.0,
        })
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 when unknown).
fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat =
            "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 4 0 1000 0 0";
        let status = "Name:\tx\nVmRSS:\t  2048 kB\n";
        let s = ProcSample::parse(stat, status, "30.00 10.00", 100.0).unwrap();
        // 200 ticks = 2 s of CPU over 30 - 10 = 20 s alive.
        assert!((s.cpu_percent - 10.0).abs() < 1e-9, "{s:?}");
        assert!((s.memory_mb - 2.0).abs() < 1e-9, "{s:?}");
        assert!(ProcSample::parse("garbage", "", "", 100.0).is_none());
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = ProcSample::read().unwrap();
        assert!(s.memory_mb > 0.0 && s.cpu_percent >= 0.0, "{s:?}");
    }

    #[tokio::test]
    async fn verify_command_outcomes_count_as_errors_and_latency() {
        let dir = tempfile::tempdir().unwrap();
        let m = Measurer::new(Some("test -f ok".into()), Duration::from_secs(10), 1);
        let failed = m.measure(dir.path()).await;
        assert_eq!((failed.error_count, failed.error_rate), (1, Some(1.0)));
        std::fs::write(dir.path().join("ok"), "").unwrap();
        let passed = m.measure(dir.path()).await;
        assert_eq!((passed.error_count, passed.error_rate), (0, Some(0.0)));
        assert!(passed.latency_ms.is_some_and(|l| l >= 0.0));

        let slow = verify("sleep 5", dir.path(), Duration::from_millis(100)).await;
        assert!(!slow.passed);
        assert!(slow.failure.unwrap().contains("timed out"));
        let none = Measurer::new(None, Duration::from_secs(1), 1)
            .measure(dir.path())
            .await;
        assert_eq!((none.error_rate, none.latency_ms), (None, None));
    }
}
