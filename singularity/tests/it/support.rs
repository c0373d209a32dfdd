//! Helpers: a singularity instance running in-process against its own test
//! database (logged in as role `singularity`, with a temporary workspace),
//! CentralCloud played by a handle logged in as role `centralcloud`, and
//! waiting / HTTP helpers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pgflow_core::protocol::{
    self, ConsensusResult, ConsensusStatus, ProposalForConsensus, Vote, VoteRequest,
};
use pgflow_core::service::{DatabaseArgs, HttpArgs};
use pgflow_core::testing::{wait_for, TestDb};
use pgflow_core::{ClaimOptions, Delivery, MessageType, OutgoingMessage, Pgflow, QueueName};
use singularity::store::Proposal;
use singularity::{Instance, NewProposal, ServiceArgs, Singularity, Submitted};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Longest wait for anything asynchronous.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A queue of the design.
pub fn q(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

/// A running instance and the test's other ends.
pub struct Env {
    /// The database (admin handle in `t.pgflow`).
    pub t: TestDb,
    /// CentralCloud's handle (role `centralcloud`).
    pub cc: Pgflow,
    /// A handle as the instance's own role (a member of `singularity`).
    pub sing: Pgflow,
    /// The workspace directory's parent (the workspace is `dir/ws`).
    pub dir: tempfile::TempDir,
    /// The instance id.
    pub id: String,
    /// The running instance.
    pub inst: Arc<Instance>,
    /// Its HTTP server.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<singularity::Result<()>>>,
}

/// Settings for tests: fast polling and retries, no verify command, the
/// pattern miner effectively idle unless a test changes it.
pub fn test_args(id: &str, workspace: &Path) -> ServiceArgs {
    let mut a = ServiceArgs::for_instance(id);
    a.workspace_dir = Some(workspace.to_path_buf());
    a.consumers.poll_interval_ms = 200;
    a.consumers.retry_delay_ms = 20;
    a.pattern_interval_ms = 3_600_000;
    a.pattern_grace_ms = 3_600_000;
    a
}

impl Env {
    /// Starts instance `singularity_1` with the test settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts an instance with the test settings changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut ServiceArgs)) -> Self {
        let t = TestDb::new().await.unwrap();
        t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
            .await
            .unwrap();
        t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut args = test_args("singularity_1", &dir.path().join("ws"));
        tweak(&mut args);
        let db = DatabaseArgs {
            // The instance logs in as its own role.
            database_url: t
                .instance_url("singularity_1", "singularity")
                .await
                .unwrap(),
            pool_size: 10,
        };
        let http = HttpArgs {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            ..HttpArgs::default()
        };
        let shutdown = CancellationToken::new();
        let service = Singularity::start(&db, &http, &args, shutdown.clone())
            .await
            .unwrap()
            .expect("started (no shutdown requested)");
        service.announce_ready();
        let inst = service.instance().clone();
        let addr = service.http_addr();
        let task = tokio::spawn(service.run_until_shutdown());
        let cc = t.connect_as("centralcloud").await.unwrap();
        // What the test sends in the instance's name, it sends as the instance's role.
        let sing = t.connect_instance(&inst.id, "singularity").await.unwrap();
        Self {
            cc,
            sing,
            dir,
            id: inst.id.clone(),
            inst,
            addr,
            shutdown,
            task: Some(task),
            t,
        }
    }

    /// The workspace directory.
    pub fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    /// Stops the instance (consumers drain) and checks it stopped cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("instance stops")
                .unwrap()
                .unwrap();
        }
    }

    /// Submits a proposal through the library.
    pub async fn propose(&self, file: &str, change: &str, risk: f64) -> Submitted {
        singularity::submit(
            &self.sing,
            &self.id,
            NewProposal {
                agent_type: "BugFixerAgent".into(),
                file: file.into(),
                change: change.into(),
                impact_score: 8.0,
                risk_score: risk,
                cost_factor: 1.0,
                idempotency_key: None,
            },
        )
        .await
        .unwrap()
    }

    /// The status of proposal `id`, read as admin.
    pub async fn status_of(&self, id: Uuid) -> String {
        sqlx::query_scalar("SELECT status FROM singularity.proposals WHERE id = $1")
            .bind(id)
            .fetch_one(self.t.pgflow.pool())
            .await
            .unwrap()
    }

    /// Waits until proposal `id` is in `status`.
    pub async fn wait_status(&self, id: Uuid, status: &str) {
        let mut last = String::new();
        let found = tokio::time::timeout(DEADLINE, async {
            loop {
                last = self.status_of(id).await;
                if last == status {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "proposal {id} never became {status} (last: {last})"
        );
    }

    /// Proposal `id` as stored, read as admin.
    pub async fn proposal(&self, id: Uuid) -> Proposal {
        let mut conn = self.t.pgflow.pool().acquire().await.unwrap();
        singularity::store::get(&mut conn, &self.id, id)
            .await
            .unwrap()
            .expect("proposal stored")
    }

    /// CentralCloud claims the next message of a competing queue.
    pub async fn cc_claim(&self, queue: &str) -> Delivery {
        claim(&self.cc, queue, None).await
    }

    /// CentralCloud takes the proposal sent for consensus.
    pub async fn cc_take_proposal(&self) -> (Delivery, ProposalForConsensus) {
        let d = self
            .cc_claim(protocol::queues::PROPOSALS_FOR_CONSENSUS)
            .await;
        let p: ProposalForConsensus = protocol::decode(&d).unwrap();
        (d, p)
    }

    /// CentralCloud answers the proposer.
    pub async fn cc_decide(&self, s: &Submitted, status: ConsensusStatus) {
        let votes = [
            ("singularity_1".to_string(), Vote::Approve),
            (
                "singularity_2".to_string(),
                if status == ConsensusStatus::Approved {
                    Vote::Approve
                } else {
                    Vote::Reject
                },
            ),
        ]
        .into_iter()
        .collect();
        let result = ConsensusResult {
            proposal_id: s.proposal_id,
            instance_id: self.id.clone(),
            status,
            votes,
            confidence: if status == ConsensusStatus::Approved {
                1.0
            } else {
                0.5
            },
            decision_rationale: "test quorum".into(),
            timestamp: Utc::now(),
        };
        let msg = protocol::encode(&result)
            .unwrap()
            .trace_id(s.trace_id)
            .target(&self.id)
            .source("centralcloud");
        self.cc
            .send_with_notify(&q(protocol::queues::CONSENSUS_RESULTS), msg)
            .await
            .unwrap();
    }

    /// Proposes, has it approved, and waits until it is applied.
    pub async fn apply(&self, file: &str, change: &str) -> Submitted {
        let s = self.propose(file, change, 1.0).await;
        self.cc_decide(&s, ConsensusStatus::Approved).await;
        self.wait_status(s.proposal_id, "applied").await;
        s
    }

    /// CentralCloud broadcasts a vote request; returns its trace id.
    pub async fn cc_request_vote(&self, proposal_id: Uuid, risk: f64) -> Uuid {
        let req = VoteRequest {
            proposal_id,
            instance_id: "singularity_2".into(),
            agent_type: "BugFixerAgent".into(),
            code_change: protocol::CodeChange {
                file: "src/a.rs".into(),
                change: "fn a() {}".into(),
            },
            impact_score: 5.0,
            risk_score: risk,
            deadline: Utc::now() + chrono::Duration::minutes(5),
        };
        let trace = Uuid::now_v7();
        let msg = protocol::encode(&req).unwrap().trace_id(trace);
        self.cc
            .send_with_notify(&q(protocol::queues::CONSENSUS_VOTE_REQUESTS), msg)
            .await
            .unwrap();
        trace
    }

    /// Dead letters of `queue`, as admin.
    pub async fn dlq(&self, queue: &str) -> Vec<pgflow_core::DlqMessage> {
        self.t
            .pgflow
            .list_dlq_messages(Some(&q(queue)), 100)
            .await
            .unwrap()
    }
}

/// Stores a proposal as admin, bypassing every check of `submit`.
pub async fn store_raw(env: &Env, file: &str, status: &str) -> (Uuid, Uuid) {
    let (id, trace) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO singularity.proposals
             (id, instance_id, agent_type, file, change, impact_score, risk_score, status, trace_id)
         VALUES ($1, $2, 'BugFixerAgent', $3, 'pwned', 1, 1, $4, $5)",
    )
    .bind(id)
    .bind(&env.id)
    .bind(file)
    .bind(status)
    .bind(trace)
    .execute(env.t.pgflow.pool())
    .await
    .unwrap();
    (id, trace)
}

/// Sends an execution message without the protocol's checks.
pub async fn send_raw_execution(env: &Env, id: Uuid, trace: Uuid, file: &str) {
    let msg = OutgoingMessage::new(
        "proposal_for_execution",
        serde_json::json!({
            "proposal_id": id,
            "instance_id": env.id,
            "agent_type": "BugFixerAgent",
            "code_change": {"file": file, "change": "pwned"},
        }),
    )
    .trace_id(trace)
    .target(&env.id);
    env.sing
        .send_with_notify(&q(protocol::queues::PROPOSALS_FOR_EXECUTION), msg)
        .await
        .unwrap();
}

/// Claims (and acks) the next message of `queue` for `target`, waiting for one.
pub async fn claim(pg: &Pgflow, queue: &str, target: Option<&str>) -> Delivery {
    let queue = q(queue);
    let opts = ClaimOptions {
        visibility_timeout: None,
        target: target.map(str::to_string),
    };
    let d = wait_for(&format!("a message on {queue}"), DEADLINE, || async {
        pg.claim_with(&queue, 1, &opts).await.unwrap().pop()
    })
    .await;
    pg.ack(d.receipt()).await.unwrap();
    d
}

/// Messages of `queue` waiting, as admin.
pub async fn waiting(t: &TestDb, queue: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pgflow.messages WHERE queue_name = $1")
        .bind(queue)
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap()
}

/// Checks that `d` is a `T`.
pub fn is<T: MessageType>(d: &Delivery) -> bool {
    d.msg_type == T::TYPE
}

/// A raw HTTP/1.1 request (Connection: close): (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with(addr, method, path, &[], body).await
}

/// As [`http`], with extra `headers`.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
