//! The running system of one failure test: centralcloud and singularity
//! instances that can be stopped, killed and started again, plus the SQL
//! and HTTP probes the scenarios check with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgflow_core::testing::{wait_for, TestDb};
use system_tests::{http_addr_of, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(90);
/// The states a proposal does not leave on its own.
pub const FINAL: [&str; 4] = ["applied", "rolled_back", "consensus_failed", "failed"];
/// The queues centralcloud consumes (competing).
pub const CC_QUEUES: &str = "('proposals_for_consensus_queue', 'consensus_votes_queue',
    'metrics_to_guardian_queue', 'patterns_for_aggregator_queue')";

pub struct Sys {
    pub t: TestDb,
    ws: tempfile::TempDir,
    vote_deadline_ms: String,
    pub cc: Option<Service>,
    pub inst: BTreeMap<String, Service>,
    pub http: BTreeMap<String, SocketAddr>,
}

impl Sys {
    /// Centralcloud and `n` instances (`singularity_1`..) on `t`.
    pub async fn start(t: TestDb, n: usize, vote_deadline_ms: u64) -> Self {
        // Poison messages are sent to instances before they consume.
        t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
            .await
            .unwrap();
        let mut sys = Self {
            t,
            ws: tempfile::tempdir().unwrap(),
            vote_deadline_ms: vote_deadline_ms.to_string(),
            cc: None,
            inst: BTreeMap::new(),
            http: BTreeMap::new(),
        };
        sys.start_cc().await;
        for i in 1..=n {
            sys.start_instance(&format!("singularity_{i}")).await;
        }
        let n = n as i64;
        wait_for("every instance a live voter", WAIT, || async {
            (sys.scalar(
                "SELECT count(*) FROM pgflow_subscribers
                  WHERE queue_name = 'consensus_vote_requests_queue' AND live",
            )
            .await
                == n)
                .then_some(())
        })
        .await;
        sys
    }

    fn common_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGFLOW_POLL_INTERVAL_MS", "200".into()),
            ("PGFLOW_RETRY_DELAY_MS", "100".into()),
            ("PGFLOW_TIMEOUT_MS", "15000".into()),
        ]
    }

    pub async fn start_cc(&mut self) {
        let mut env = self.common_env();
        env.push(("PGFLOW_DATABASE_URL", self.t.url_as("centralcloud")));
        env.push((
            "CENTRALCLOUD_VOTE_DEADLINE_MS",
            self.vote_deadline_ms.clone(),
        ));
        env.push(("CENTRALCLOUD_DECIDER_INTERVAL_MS", "200".into()));
        env.push(("CENTRALCLOUD_LEARNING_INTERVAL_MS", "0".into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut s = Service::spawn("centralcloud", &[], &env);
        s.wait_for_line("centralcloud ready", WAIT).await;
        self.cc = Some(s);
    }

    pub fn workspace(&self, id: &str) -> PathBuf {
        self.ws.path().join(id)
    }

    pub async fn start_instance(&mut self, id: &str) {
        let ws = self.workspace(id);
        std::fs::create_dir_all(&ws).unwrap();
        let mut env = self.common_env();
        let url = self.t.instance_url(id, "singularity").await.unwrap();
        env.push(("PGFLOW_DATABASE_URL", url));
        env.push(("INSTANCE_ID", id.into()));
        env.push(("SINGULARITY_WORKSPACE", ws.to_string_lossy().into()));
        // No pattern reports during a test: the queues must drain.
        env.push(("SINGULARITY_PATTERN_INTERVAL_MS", "3600000".into()));
        env.push(("SINGULARITY_PATTERN_GRACE_MS", "3600000".into()));
        env.push(("SINGULARITY_API_TOKEN", API_TOKEN.into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut s = Service::spawn("singularity", &[], &env);
        let line = s.wait_for_line("singularity ready", WAIT).await;
        self.http.insert(id.to_string(), http_addr_of(&line));
        self.inst.insert(id.to_string(), s);
    }

    /// SIGTERM to centralcloud; it exits cleanly.
    pub async fn stop_cc(&mut self) {
        let mut s = self.cc.take().unwrap();
        assert_eq!(s.terminate(WAIT).await, Some(0), "{:?}", s.seen);
    }

    pub async fn stop_instance(&mut self, id: &str) {
        let mut s = self.inst.remove(id).unwrap();
        assert_eq!(s.terminate(WAIT).await, Some(0), "{:?}", s.seen);
    }

    /// SIGKILL to centralcloud, and its leases expire at once.
    pub async fn kill_cc(&mut self) {
        let mut s = self.cc.take().unwrap();
        s.signal(Signal::SIGKILL);
        let _ = s.child.wait().await;
        self.expire(&format!("queue_name IN {CC_QUEUES}")).await;
    }

    /// SIGKILL to an instance, and its leases expire at once.
    pub async fn kill_instance(&mut self, id: &str) {
        let mut s = self.inst.remove(id).unwrap();
        s.signal(Signal::SIGKILL);
        let _ = s.child.wait().await;
        self.expire(&format!("target = '{id}'")).await;
    }

    /// Gives the traffic up to a few seconds to put a message matching
    /// `filter` in flight (so a kill lands mid-work), without failing.
    pub async fn await_in_flight(&self, filter: &str) -> bool {
        let sql =
            format!("SELECT count(*) FROM pgflow.messages WHERE lease IS NOT NULL AND {filter}");
        let busy = wait_for("a message in flight", WAIT, || async {
            (self.scalar(&sql).await > 0).then_some(())
        });
        tokio::time::timeout(Duration::from_secs(3), busy)
            .await
            .is_ok()
    }

    /// Back-dates the leases of messages matching `filter` (instead of
    /// waiting for the lease timeout of a dead holder).
    pub async fn expire(&self, filter: &str) {
        sqlx::query(&format!(
            "UPDATE pgflow.messages SET visible_at = now() WHERE lease IS NOT NULL AND {filter}"
        ))
        .execute(self.t.pgflow.pool())
        .await
        .unwrap();
    }

    /// Every service process is still running.
    pub fn assert_all_running(&mut self) {
        let cc = self.cc.iter_mut();
        for s in cc.chain(self.inst.values_mut()) {
            assert!(
                s.child.try_wait().unwrap().is_none(),
                "exited: {:?}",
                s.seen
            );
        }
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.t.pgflow.pool())
            .await
            .unwrap()
    }

    /// `singularity propose` as `instance` (its workspace and spool as the
    /// running instance's): the proposal id, or the CLI's output.
    pub async fn propose(&self, instance: &str, file: &str, change: &str) -> Result<Uuid, String> {
        // The instance's role exists since `start_instance` (the database may be down now).
        let url = self.t.url_as(instance);
        let args = [
            "propose",
            "--agent-type",
            "BugFixerAgent",
            "--file",
            file,
            "--change",
            change,
            "--json",
        ];
        // The instance's workspace locates its submission spool (used while
        // PostgreSQL is down).
        let ws = self.workspace(instance).to_string_lossy().to_string();
        let env = [
            ("PGFLOW_DATABASE_URL", url.as_str()),
            ("INSTANCE_ID", instance),
            ("SINGULARITY_WORKSPACE", ws.as_str()),
        ];
        let (ok, lines) = run(Service::spawn("singularity", &args, &env)).await;
        let line = lines.iter().find(|l| l.contains("\"proposal_id\":"));
        match (ok, line) {
            (true, Some(l)) => {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                Ok(v["proposal_id"].as_str().unwrap().parse().unwrap())
            }
            _ => Err(lines.join("\n")),
        }
    }

    pub async fn status_of(&self, id: Uuid) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM singularity.proposals WHERE id = $1")
            .bind(id)
            .fetch_optional(self.t.pgflow.pool())
            .await
            .ok()
            .flatten()
    }

    pub async fn wait_status(&self, id: Uuid, want: &str) {
        wait_for(&format!("proposal {id} {want}"), WAIT, || async {
            (self.status_of(id).await.as_deref() == Some(want)).then_some(())
        })
        .await;
    }

    /// Waits until every proposal of `ids` is in a final state.
    pub async fn wait_final(&self, ids: &[Uuid]) {
        wait_for("every proposal in a final state", WAIT, || async {
            for id in ids {
                let s = self.status_of(*id).await?;
                if !FINAL.contains(&s.as_str()) {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// Waits until no message is left in any queue.
    pub async fn wait_drained(&self) {
        wait_for("every queue drained", WAIT, || async {
            (self.scalar("SELECT count(*) FROM pgflow.messages").await == 0).then_some(())
        })
        .await;
    }

    /// Each proposal followed centralcloud's decision: approved ones were
    /// applied, rejected ones are consensus_failed.
    pub async fn assert_decisions_followed(&self, ids: &[Uuid]) {
        for id in ids {
            let (cc, sing): (String, String) = sqlx::query_as(
                "SELECT c.status, s.status FROM centralcloud.proposals c
                   JOIN singularity.proposals s ON s.id = c.proposal_id WHERE c.proposal_id = $1",
            )
            .bind(id)
            .fetch_one(self.t.pgflow.pool())
            .await
            .unwrap();
            let expected = if cc == "approved" {
                "applied"
            } else {
                "consensus_failed"
            };
            assert_eq!(sing, expected, "{id}: centralcloud {cc}");
        }
    }

    /// For each proposal of `ids`: applied means its file holds the change,
    /// was backed up as absent, and the guardian got one metrics report;
    /// anything else means the file was not written (checked once the
    /// queues are drained).
    pub async fn assert_effects(&self, ids: &[(Uuid, String, String, String)]) {
        self.wait_drained().await;
        for (id, inst, file, change) in ids {
            let status = self.status_of(*id).await.unwrap();
            let content = std::fs::read_to_string(self.workspace(inst).join(file)).ok();
            let (backup, metrics): (Option<bool>, i64) = sqlx::query_as(
                "SELECT backup_existed,
                        (SELECT count(*) FROM centralcloud.metrics m WHERE m.proposal_id = p.id)
                   FROM singularity.proposals p WHERE id = $1",
            )
            .bind(id)
            .fetch_one(self.t.pgflow.pool())
            .await
            .unwrap();
            if status == "applied" {
                assert_eq!(content.as_deref(), Some(change.as_str()), "{id}");
                assert_eq!((backup, metrics), (Some(false), 1), "{id}");
            } else {
                assert_eq!(content, None, "{id} {status}");
                assert_eq!(metrics, 0, "{id} {status}");
            }
        }
    }
}

/// Waits for a short-lived process to exit: (success, its output lines).
pub async fn run(mut p: Service) -> (bool, Vec<String>) {
    let status = tokio::time::timeout(WAIT, p.child.wait())
        .await
        .expect("process did not exit")
        .unwrap();
    while let Ok(Some(l)) = tokio::time::timeout(WAIT, p.lines.recv()).await {
        p.seen.push(l);
    }
    (status.success(), p.seen)
}

/// The instances' API token (`SINGULARITY_API_TOKEN`).
pub const API_TOKEN: &str = "failures-test-api-token-0123";

/// `POST path` with a JSON body and [`API_TOKEN`]: (status, body).
pub async fn post_json(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {API_TOKEN}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

/// A small seeded generator (xorshift64*), for reproducible kill points.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}
