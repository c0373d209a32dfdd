//! `pgflow up --demo`: feeds the seeds' scenarios into the running system,
//! always through singularity (never onto a queue directly):
//!
//! * proposals via the instances' `POST /proposals`, round-robin, one per
//!   tick (default 500 ms). Per instance, a cycle of eight: five ordinary
//!   `ExperimentalAgent` changes, one ordinary `BugFixerAgent` /
//!   `RefactorAgent` change (all applied), one high-risk `SecurityAgent`
//!   change (risk 9: every instance votes reject → `consensus_failed`) and
//!   one `ExperimentalAgent` change that creates `breach_<n>.txt`, which the
//!   instances' verify command (`! ls breach_*.txt`) fails on: an error-rate
//!   breach, so the guardian rolls it back (`rolled_back`). Five kept
//!   changes per rolled-back one keep the agent's record (5/6) above the
//!   votes' success-rate floor (0.8), so the loop keeps going. A breaching
//!   change is sent only when its instance has no open proposal, and
//!   nothing else is sent to that instance until it is settled, so the
//!   breach never fails another change's verification;
//! * Genesis requests via `singularity genesis analyze | publish-llm-config
//!   | publish-rules` (every eighth tick, in turn), as the instance whose
//!   turn it is.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::procs::{lock, ProcStatus};
use crate::client::Pgflow;

/// What the feeder has sent so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoStats {
    /// Ordinary proposals accepted by an instance.
    pub ordinary: u64,
    /// High-risk proposals (to be rejected).
    pub high_risk: u64,
    /// Breaching proposals (to be rolled back).
    pub breaching: u64,
    /// Genesis requests sent through `singularity genesis`.
    pub genesis_requests: u64,
    /// Submissions that failed (instance down, non-2xx answer).
    pub errors: u64,
}

/// One singularity instance as the feeder sees it.
pub struct Target {
    /// Its id (`singularity_1`).
    pub id: String,
    /// Its live status (the HTTP address changes on restart).
    pub status: Arc<Mutex<ProcStatus>>,
}

/// The feeder's settings.
pub struct Feeder {
    /// The instances.
    pub targets: Vec<Target>,
    /// The admin connection (to see whether an instance has open proposals).
    pub admin: Pgflow,
    /// The singularity binary (for `singularity genesis ...`).
    pub singularity: PathBuf,
    /// Database URL with the `singularity` role.
    pub singularity_url: String,
    /// The instances' API token (sent as a bearer token).
    pub api_token: String,
    /// Time between two submissions.
    pub tick: Duration,
    /// Where the `singularity genesis` commands' output goes.
    pub log: PathBuf,
    /// Counters shown in the view.
    pub stats: Arc<Mutex<DemoStats>>,
}

enum Kind {
    Ordinary(&'static str),
    HighRisk,
    Breach,
}

fn kind_of(step: u64) -> Kind {
    match step % 8 {
        2 => Kind::HighRisk,
        6 => Kind::Breach,
        7 if (step / 8) % 2 == 0 => Kind::Ordinary("BugFixerAgent"),
        7 => Kind::Ordinary("RefactorAgent"),
        _ => Kind::Ordinary("ExperimentalAgent"),
    }
}

const OPEN_SQL: &str = "SELECT count(*) FROM singularity.proposals
     WHERE instance_id = $1
       AND status NOT IN ('applied', 'rolled_back', 'consensus_failed', 'failed')";

impl Feeder {
    /// Runs until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let n = self.targets.len();
        if n == 0 {
            return;
        }
        let mut steps = vec![0u64; n];
        let mut tick: u64 = 0;
        let mut next = 0usize;
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            tick += 1;
            if tick % 8 == 4 {
                self.genesis_request(tick / 8, &self.targets[(tick as usize / 8) % n].id);
            }
            // The next instance that may take a proposal now.
            for _ in 0..n {
                let i = next;
                next = (next + 1) % n;
                if self.submit(i, steps[i], tick).await {
                    steps[i] += 1;
                    break;
                }
            }
        }
    }

    /// Submits step `step` of instance `i`; false when the instance cannot
    /// take it now (down, or settling a breach).
    async fn submit(&self, i: usize, step: u64, tick: u64) -> bool {
        let t = &self.targets[i];
        let Some(addr) = lock(&t.status).http.clone() else {
            return false;
        };
        let open: i64 = sqlx::query_scalar(OPEN_SQL)
            .bind(&t.id)
            .fetch_one(self.admin.pool())
            .await
            .unwrap_or(1);
        let kind = kind_of(step);
        // Settle the instance before and after a breaching change.
        if open > 0 && (matches!(kind, Kind::Breach) || step % 8 == 7) {
            return false;
        }
        let (agent, file, change, risk) = match kind {
            Kind::Ordinary(agent) => (
                agent,
                format!("demo_{tick}.txt"),
                format!("change {tick} by {agent}\n"),
                0.4,
            ),
            Kind::HighRisk => (
                "SecurityAgent",
                format!("risky_{tick}.txt"),
                "rm -rf /\n".to_string(),
                9.0,
            ),
            Kind::Breach => (
                "ExperimentalAgent",
                format!("breach_{tick}.txt"),
                "this change breaks the verify command\n".to_string(),
                0.4,
            ),
        };
        let body = json!({
            "agent_type": agent,
            "file": file,
            "change": change,
            "impact_score": 5.0,
            "risk_score": risk,
        });
        let ok = matches!(
            post_json(&addr, "/proposals", &self.api_token, &body.to_string()).await,
            Ok(201)
        );
        let mut s = lock(&self.stats);
        if !ok {
            s.errors += 1;
            return false;
        }
        match kind {
            Kind::Ordinary(_) => s.ordinary += 1,
            Kind::HighRisk => s.high_risk += 1,
            Kind::Breach => s.breaching += 1,
        }
        true
    }

    /// Sends one Genesis request through `singularity genesis`, in the background.
    fn genesis_request(&self, n: u64, instance: &str) {
        let args: Vec<String> = match n % 3 {
            0 => vec![
                "analyze".into(),
                "--language".into(),
                "python".into(),
                "--analysis-type".into(),
                if n % 2 == 0 { "security" } else { "quality" }.into(),
                "--code".into(),
                format!("def handler_{n}(x):\n    return eval(x)\n"),
            ],
            1 => vec![
                "publish-llm-config".into(),
                "--provider".into(),
                "claude".into(),
            ],
            _ => vec!["publish-rules".into()],
        };
        let mut cmd = tokio::process::Command::new(&self.singularity);
        cmd.arg("genesis")
            .args(&args)
            .env("PGFLOW_DATABASE_URL", &self.singularity_url)
            .env("INSTANCE_ID", instance)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let log = self.log.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await;
            let ok = matches!(&out, Ok(Ok(o)) if o.status.success());
            if let Ok(Ok(o)) = &out {
                if let Ok(mut f) = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .await
                {
                    let _ = f.write_all(&o.stdout).await;
                    let _ = f.write_all(&o.stderr).await;
                }
            }
            let mut s = lock(&stats);
            if ok {
                s.genesis_requests += 1;
            } else {
                s.errors += 1;
            }
        });
    }
}

/// `POST path` with a JSON body and `token` as bearer token over a plain
/// HTTP/1.1 connection (`Connection: close`) to a local ops server; returns
/// the status code. Enough for the loopback demo feeder, not a general
/// HTTP client.
async fn post_json(addr: &str, path: &str, token: &str, body: &str) -> std::io::Result<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {token}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "POST timed out"))??;
    String::from_utf8_lossy(&raw)
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix of an instance's sequence keeps the breaching agent's
    /// record at or above 5 kept of 6 (the votes' floor is 0.8).
    #[test]
    fn breaches_stay_rare_enough_for_the_votes() {
        let (mut kept, mut rolled_back) = (0u32, 0u32);
        for step in 0..80 {
            match kind_of(step) {
                Kind::Ordinary("ExperimentalAgent") => kept += 1,
                Kind::Breach => {
                    rolled_back += 1;
                    assert!(f64::from(kept) / f64::from(kept + rolled_back) >= 5.0 / 6.0);
                }
                _ => {}
            }
        }
        assert_eq!(rolled_back, 10);
    }
}
