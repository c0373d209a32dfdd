//! The test harness: a fresh database per test, the engine running
//! in-process as role `centralcloud`, and the singularity side played
//! through the queues: each instance sends as its own role (so the
//! database records it as the sender), claims as role `singularity`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use centralcloud::status::StatusBoard;
use centralcloud::{Engine, Settings};
use chrono::Utc;
use pgflow_core::protocol::{
    self, queues, CodeChange, ConsensusVote, ProposalForConsensus, ProposalSafety, Vote,
};
use pgflow_core::testing::TestDb;
use pgflow_core::{ClaimOptions, Delivery, Pgflow, PgflowOptions, QueueName, RetryPolicy};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long any wait in these tests may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The three instances of the design.
pub const INSTANCES: [&str; 3] = ["singularity_1", "singularity_2", "singularity_3"];

/// A queue name.
pub fn q(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

/// Settings for tests: quick polling, a vote deadline far enough away that
/// only tests that back-date it see it pass, no periodic learning.
pub fn settings() -> Settings {
    Settings {
        vote_deadline: Duration::from_secs(600),
        decider_interval: Duration::from_millis(50),
        learning_interval: None,
        learning_min_samples: 3,
        poll_interval: Duration::from_millis(100),
        retry: RetryPolicy {
            max_retries: 3,
            base_delay_ms: 10,
            max_delay_ms: 100,
        },
        ..Settings::default()
    }
}

/// A handle on `t` logged in as `role`, with room for an engine's workers.
pub async fn connect_as(t: &TestDb, role: &str) -> Pgflow {
    Pgflow::connect_with(
        &t.url_as(role),
        PgflowOptions {
            max_connections: 20,
            application_name: role.to_string(),
            ..PgflowOptions::default()
        },
    )
    .await
    .unwrap()
}

/// A test database with centralcloud engines running on it.
pub struct Harness {
    /// The database (its `pgflow` handle is the unrestricted admin).
    pub t: TestDb,
    /// Logged in as `centralcloud`.
    pub cc: Pgflow,
    /// Logged in as `singularity`.
    pub sing: Pgflow,
    /// Logged in as each instance's own role, by instance id.
    instances: tokio::sync::Mutex<std::collections::HashMap<String, Pgflow>>,
    /// The engines' `/status` boards.
    pub boards: Vec<Arc<StatusBoard>>,
    settings: Settings,
    stop: CancellationToken,
    engines: Vec<JoinHandle<pgflow_core::Result<()>>>,
}

impl Harness {
    /// One engine with `settings`.
    pub async fn start(settings: Settings) -> Self {
        Self::start_n(settings, 1).await
    }

    /// `n` engines (as several centralcloud processes would run), each
    /// with its own connection pool.
    pub async fn start_n(settings: Settings, n: usize) -> Self {
        let t = TestDb::new().await.unwrap();
        t.register_targets(&INSTANCES).await.unwrap();
        let cc = connect_as(&t, "centralcloud").await;
        let sing = connect_as(&t, "singularity").await;
        let mut h = Self {
            t,
            cc,
            sing,
            instances: Default::default(),
            boards: Vec::new(),
            settings,
            stop: CancellationToken::new(),
            engines: Vec::new(),
        };
        for _ in 0..n {
            h.spawn_engine().await;
        }
        h
    }

    /// Starts one more engine on a pool of its own.
    pub async fn spawn_engine(&mut self) {
        let pg = connect_as(&self.t, "centralcloud").await;
        let engine = Engine::new(pg, self.settings.clone()).unwrap();
        self.boards.push(engine.status_board());
        self.engines
            .push(tokio::spawn(engine.run(self.stop.clone())));
    }

    /// Starts one more engine with `settings` (and uses them for the
    /// engines started after it): a restart with a new configuration.
    pub async fn spawn_engine_with(&mut self, settings: Settings) {
        self.settings = settings;
        self.spawn_engine().await;
    }

    /// Stops every engine (centralcloud is down) until the next
    /// [`Harness::spawn_engine`].
    pub async fn pause(&mut self) {
        self.stop.cancel();
        for e in self.engines.drain(..) {
            e.await.unwrap().unwrap();
        }
        self.boards.clear();
        self.stop = CancellationToken::new();
    }

    /// Registers `names` as live subscribers of a broadcast queue.
    pub async fn subscribe(&self, queue: &str, names: &[&str]) {
        for n in names {
            self.sing.register_subscriber(&q(queue), n).await.unwrap();
        }
    }

    /// Stops the engines; they must stop cleanly.
    pub async fn stop(self) {
        self.stop.cancel();
        for e in self.engines {
            e.await.unwrap().unwrap();
        }
    }

    /// A handle logged in as instance `id`'s own role: what it sends is
    /// recorded as sent by `id` (migration 17).
    pub async fn instance(&self, id: &str) -> Pgflow {
        let mut known = self.instances.lock().await;
        if let Some(pg) = known.get(id) {
            return pg.clone();
        }
        let url = self.t.instance_url(id, "singularity").await.unwrap();
        let opts = PgflowOptions {
            max_connections: 2,
            application_name: id.to_string(),
            ..PgflowOptions::default()
        };
        let pg = Pgflow::connect_with(&url, opts).await.unwrap();
        known.insert(id.to_string(), pg.clone());
        pg
    }

    /// Sends `p` for consensus as its instance would; returns the trace id.
    pub async fn propose(&self, p: &ProposalForConsensus) -> Uuid {
        let trace = Uuid::now_v7();
        let msg = protocol::encode(p)
            .unwrap()
            .trace_id(trace)
            .source(&p.instance_id);
        self.instance(&p.instance_id)
            .await
            .send_with_notify(&q(queues::PROPOSALS_FOR_CONSENSUS), msg)
            .await
            .unwrap();
        trace
    }

    /// Sends `voter`'s vote on `proposal_id`.
    pub async fn vote(&self, proposal_id: Uuid, voter: &str, vote: Vote, trace: Uuid) {
        let v = ConsensusVote {
            proposal_id,
            instance_id: voter.to_string(),
            vote,
            reason: format!("{voter} checked the change"),
        };
        let msg = protocol::encode(&v).unwrap().trace_id(trace).source(voter);
        self.instance(voter)
            .await
            .send_with_notify(&q(queues::CONSENSUS_VOTES), msg)
            .await
            .unwrap();
    }

    /// One admin query returning a single value.
    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        sqlx::query_scalar(sql)
            .fetch_one(self.t.pgflow.pool())
            .await
            .unwrap()
    }

    /// Every message ever sent to `queue` (live or archived): (target, type, priority, trace).
    pub async fn sent(&self, queue: &str) -> Vec<(String, String, i16, Uuid)> {
        sqlx::query_as(
            "SELECT target, msg_type, priority, trace_id FROM pgflow.messages WHERE queue_name = $1
             UNION ALL
             SELECT target, msg_type, priority, trace_id FROM pgflow.archive WHERE queue_name = $1
             ORDER BY 1",
        )
        .bind(queue)
        .fetch_all(self.t.pgflow.pool())
        .await
        .unwrap()
    }
}

/// A valid proposal from `instance` for `agent`.
pub fn proposal(instance: &str, agent: &str) -> ProposalForConsensus {
    ProposalForConsensus {
        proposal_id: Uuid::now_v7(),
        instance_id: instance.to_string(),
        agent_type: agent.to_string(),
        code_change: CodeChange {
            file: "src/lib.rs".into(),
            change: "pub fn answer() -> u32 { 42 }\n".into(),
        },
        impact_score: 8.0,
        risk_score: 1.0,
        safety_profile: ProposalSafety {
            success_rate: 0.95,
            cost_factor: 2.0,
        },
        timestamp: Utc::now(),
        retry_count: 0,
        max_retries: 3,
    }
}

/// Claims (and acks) `n` messages of `queue` for `target` (`None`:
/// untargeted), waiting for them up to [`TIMEOUT`].
pub async fn take(pg: &Pgflow, queue: &str, target: Option<&str>, n: usize) -> Vec<Delivery> {
    let opts = match target {
        Some(t) => ClaimOptions::for_target(t),
        None => ClaimOptions::default(),
    };
    let deadline = Instant::now() + TIMEOUT;
    let mut got: Vec<Delivery> = Vec::new();
    while got.len() < n {
        let batch = pg
            .claim_with(&q(queue), n - got.len(), &opts)
            .await
            .unwrap();
        for d in &batch {
            pg.ack(d.receipt()).await.unwrap();
        }
        got.extend(batch);
        if got.len() < n {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} message(s) on {queue} for {target:?}; got {}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    got
}

/// Claims whatever is there for `target` now (nothing is expected).
pub async fn nothing_for(pg: &Pgflow, queue: &str, target: &str) {
    let got = pg
        .claim_with(&q(queue), 10, &ClaimOptions::for_target(target))
        .await
        .unwrap();
    assert!(
        got.is_empty(),
        "{target} received {} unexpected message(s) on {queue}: {:?}",
        got.len(),
        got.iter().map(|d| &d.payload).collect::<Vec<_>>()
    );
}
