//! The harness: genesis's consumers in-process against a fresh database,
//! logged in as role `genesis`; the test plays `singularity_1` (and
//! centralcloud) through the queues with their own roles.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use genesis::status::StatusHandle;
use genesis::{Genesis, WorkflowConfig};
use pgflow_core::protocol::{self, AnalysisType, CodeExecutionRequest, Validate};
use pgflow_core::testing::{wait_for, TestDb};
use pgflow_core::{
    ClaimOptions, Delivery, DlqMessage, MessageType, OutgoingMessage, Pgflow, PgflowOptions,
    QueueName,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The instance the test plays.
pub const ME: &str = "singularity_1";
/// How long a test waits for anything.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn q(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

/// Genesis running against its own database.
pub struct Harness {
    pub t: TestDb,
    pub singularity: Pgflow,
    status: Option<StatusHandle>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<genesis::Result<()>>>,
}

/// A workflow row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Workflow {
    pub status: String,
    pub error: Option<String>,
    pub request_id: Option<String>,
    pub instance: Option<String>,
    pub trace_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Harness {
    /// A fresh database and genesis running on it with `config`.
    pub async fn start(config: WorkflowConfig) -> Self {
        let mut h = Self::without_genesis().await;
        let pg = Pgflow::connect_with(
            &h.t.url_as("genesis"),
            PgflowOptions {
                max_connections: Genesis::connections_needed(&config),
                application_name: "genesis".into(),
                ..PgflowOptions::default()
            },
        )
        .await
        .unwrap();
        let g = Genesis::new(pg, config).unwrap();
        h.status = Some(g.status());
        h.task = Some(tokio::spawn(g.run(h.shutdown.clone())));
        h
    }

    /// A fresh database, nobody consuming.
    pub async fn without_genesis() -> Self {
        let t = TestDb::new().await.unwrap();
        t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
            .await
            .unwrap();
        // Requests speak for ME: they are sent as ME's own role.
        let singularity = t.connect_instance(ME, "singularity").await.unwrap();
        Self {
            t,
            singularity,
            status: None,
            shutdown: CancellationToken::new(),
            task: None,
        }
    }

    /// The in-process genesis's live status.
    pub fn status(&self) -> &StatusHandle {
        self.status.as_ref().expect("genesis runs in-process")
    }

    /// Sends `payload` to `queue` as `singularity_1`, with a fresh trace id;
    /// returns `(message id, trace id)`.
    pub async fn send<T: MessageType + Validate>(&self, queue: &str, payload: &T) -> (Uuid, Uuid) {
        let trace = Uuid::now_v7();
        let msg = protocol::encode(payload)
            .unwrap()
            .trace_id(trace)
            .source(ME);
        let id = self
            .singularity
            .send_with_notify(&q(queue), msg)
            .await
            .unwrap();
        (id, trace)
    }

    /// Sends many messages in one statement as `singularity_1`.
    pub async fn send_batch(&self, queue: &str, msgs: Vec<OutgoingMessage>) -> Vec<Uuid> {
        let msgs: Vec<_> = msgs.into_iter().map(|m| m.source(ME)).collect();
        self.singularity
            .send_batch_with_notify(&q(queue), &msgs)
            .await
            .unwrap()
    }

    /// Claims (and acks) `n` results addressed to `singularity_1` from `queue`.
    pub async fn results<T: MessageType>(&self, queue: &str, n: usize) -> Vec<(Delivery, T)> {
        let deadline = Instant::now() + PATIENCE;
        let opts = ClaimOptions::for_target(ME);
        let mut got = Vec::new();
        loop {
            let want = n - got.len();
            for d in self
                .singularity
                .claim_with(&q(queue), want, &opts)
                .await
                .unwrap()
            {
                self.singularity.ack(d.receipt()).await.unwrap();
                assert_eq!(d.msg_type, T::TYPE);
                let payload: T = d.decode().unwrap();
                got.push((d, payload));
            }
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PATIENCE:?} waiting for {n} results on {queue}: got {}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The workflow of request message `id` (read as the admin).
    pub async fn workflow(&self, id: Uuid) -> Option<Workflow> {
        sqlx::query_as(
            "SELECT status, error, request_id, instance, trace_id, created_at, started_at, finished_at
               FROM genesis.workflows WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.t.pgflow.pool())
        .await
        .unwrap()
    }

    /// Waits until the workflow of `id` has `status`.
    pub async fn wait_workflow(&self, id: Uuid, status: &str) -> Workflow {
        wait_for(
            &format!("workflow {id} {status}"),
            PATIENCE,
            || async move { self.workflow(id).await.filter(|w| w.status == status) },
        )
        .await
    }

    /// The states workflow `id` went through, in order.
    pub async fn events(&self, id: Uuid) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT status FROM genesis.workflow_events WHERE workflow_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(self.t.pgflow.pool())
        .await
        .unwrap()
    }

    /// Whether request `id` was acked (moved to the archive).
    pub async fn archived(&self, id: Uuid) -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pgflow.archive WHERE id = $1)")
            .bind(id)
            .fetch_one(self.t.pgflow.pool())
            .await
            .unwrap()
    }

    /// Waits for dead letter `id`.
    pub async fn dead_letter(&self, id: Uuid) -> DlqMessage {
        wait_for(&format!("dead letter {id}"), PATIENCE, || async move {
            self.t
                .pgflow
                .list_dlq_messages(None, 100)
                .await
                .unwrap()
                .into_iter()
                .find(|d| d.id == id)
        })
        .await
    }

    /// Stops genesis and waits for its consumers to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A code analysis request as seed 000 sends it (no instance_id: the
/// result goes to the envelope's source).
pub fn job(id: &str, language: &str, code: &str, kind: AnalysisType) -> CodeExecutionRequest {
    CodeExecutionRequest {
        id: id.into(),
        code: code.into(),
        language: language.into(),
        analysis_type: kind,
        instance_id: None,
    }
}

/// `job` as a message.
pub fn job_msg(j: &CodeExecutionRequest) -> OutgoingMessage {
    protocol::encode(j).unwrap()
}
