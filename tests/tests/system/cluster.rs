//! The running system for tests that span the services: centralcloud and
//! three singularity instances, each connected as its own role, talking
//! only through the queues of one test database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgflow_core::testing::{wait_for, TestDb};
use system_tests::Service;
use uuid::Uuid;

/// How long any wait of these tests may take.
pub const WAIT: Duration = Duration::from_secs(60);
/// The instances of the design.
pub const INSTANCES: [&str; 3] = ["singularity_1", "singularity_2", "singularity_3"];
/// Fails once the change under test has created `broken.txt`: the
/// instances' verify command, so that change breaches the error threshold.
const VERIFY: &str = "test ! -f broken.txt";

/// The running system of one test.
pub struct System {
    /// The database.
    pub t: TestDb,
    workspaces: tempfile::TempDir,
    _centralcloud: Service,
    _instances: Vec<Service>,
}

impl System {
    /// centralcloud (no periodic learning) and three instances.
    pub async fn start() -> Self {
        Self::start_with(&[], &[]).await
    }

    /// The same with extra environment for centralcloud and for each
    /// instance (overriding the defaults).
    pub async fn start_with(cc_env: &[(&str, &str)], instance_env: &[(&str, &str)]) -> Self {
        let t = TestDb::new().await.unwrap();
        let cc_url = t.url_as("centralcloud");
        let mut env = vec![
            ("PGFLOW_DATABASE_URL", cc_url.as_str()),
            ("PGFLOW_POLL_INTERVAL_MS", "200"),
            ("CENTRALCLOUD_VOTE_DEADLINE_MS", "20000"),
            ("CENTRALCLOUD_LEARNING_INTERVAL_MS", "0"),
        ];
        env.extend_from_slice(cc_env);
        let mut centralcloud = Service::spawn("centralcloud", &[], &env);
        centralcloud.wait_for_line("centralcloud ready", WAIT).await;
        let workspaces = tempfile::tempdir().unwrap();
        let mut instances = Vec::new();
        for id in INSTANCES {
            // Each instance logs in as its own role.
            let sing_url = t.instance_url(id, "singularity").await.unwrap();
            let ws = workspaces.path().join(id);
            std::fs::create_dir_all(&ws).unwrap();
            let ws = ws.to_string_lossy().to_string();
            let mut env = vec![
                ("PGFLOW_DATABASE_URL", sing_url.as_str()),
                ("INSTANCE_ID", id),
                ("SINGULARITY_WORKSPACE", ws.as_str()),
                ("SINGULARITY_VERIFY_CMD", VERIFY),
                ("SINGULARITY_PATTERN_INTERVAL_MS", "200"),
                ("SINGULARITY_PATTERN_GRACE_MS", "1000"),
                ("PGFLOW_POLL_INTERVAL_MS", "200"),
            ];
            env.extend_from_slice(instance_env);
            let mut s = Service::spawn("singularity", &[], &env);
            s.wait_for_line("singularity ready", WAIT).await;
            instances.push(s);
        }
        let sys = Self {
            t,
            workspaces,
            _centralcloud: centralcloud,
            _instances: instances,
        };
        // Every instance is a live subscriber of the broadcast queues.
        wait_for("3 live voters", WAIT, || async {
            (sys.scalar_i64(
                "SELECT count(*) FROM pgflow_subscribers
                  WHERE queue_name = 'consensus_vote_requests_queue' AND live",
            )
            .await
                == 3)
                .then_some(())
        })
        .await;
        sys
    }

    /// The workspace of `instance`.
    pub fn workspace(&self, instance: &str) -> PathBuf {
        self.workspaces.path().join(instance)
    }

    /// One admin query returning a count.
    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.t.pgflow.pool())
            .await
            .unwrap()
    }

    /// `singularity propose` as `instance`; returns (proposal id, trace id).
    pub async fn propose(
        &self,
        instance: &str,
        file: &str,
        change: &str,
        risk: f64,
    ) -> (Uuid, Uuid) {
        let url = self.t.instance_url(instance, "singularity").await.unwrap();
        let risk = risk.to_string();
        // The instance's own workspace (and spool): never a directory
        // under the test's working directory.
        let ws = self.workspace(instance).to_string_lossy().to_string();
        let mut p = Service::spawn(
            "singularity",
            &[
                "propose",
                "--agent-type",
                "BugFixerAgent",
                "--file",
                file,
                "--change",
                change,
                "--risk",
                &risk,
                "--json",
            ],
            &[
                ("PGFLOW_DATABASE_URL", url.as_str()),
                ("INSTANCE_ID", instance),
                ("SINGULARITY_WORKSPACE", ws.as_str()),
            ],
        );
        let line = p.wait_for_line("\"proposal_id\":", WAIT).await;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let id = v["proposal_id"].as_str().unwrap().parse().unwrap();
        let trace = v["trace_id"].as_str().unwrap().parse().unwrap();
        (id, trace)
    }

    /// The proposal's status at its instance.
    pub async fn status_of(&self, id: Uuid) -> String {
        sqlx::query_scalar("SELECT status FROM singularity.proposals WHERE id = $1")
            .bind(id)
            .fetch_one(self.t.pgflow.pool())
            .await
            .unwrap()
    }

    /// Waits until the proposal reaches `want`.
    pub async fn wait_status(&self, id: Uuid, want: &str) {
        wait_for(&format!("proposal {id} {want}"), WAIT, || async {
            (self.status_of(id).await == want).then_some(())
        })
        .await;
    }
}

/// The content of a file, if it exists.
pub fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}
