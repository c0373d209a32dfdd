//! The binary: `--help`, usage errors, `singularity propose` and
//! `singularity status [--json]` against a real database.

use std::process::Command as StdCommand;

use pgflow_core::protocol::queues;
use pgflow_core::testing::TestDb;
use serde_json::Value;
use tokio::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_singularity");

/// Runs the binary as instance `singularity_3` on `db_url`: (exit code, stdout, stderr).
pub async fn run(args: &[&str], db_url: &str) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGFLOW_DATABASE_URL", db_url)
        .env("INSTANCE_ID", "singularity_3")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of `key=` in `line`.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn help_names_the_configuration() {
    let out = StdCommand::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "PGFLOW_DATABASE_URL",
        "INSTANCE_ID",
        "PGFLOW_PROPOSALS_WORKERS",
        "PGFLOW_METRICS_WORKERS",
        "PGFLOW_PATTERNS_WORKERS",
        "PGFLOW_CONSENSUS_WORKERS",
        "PGFLOW_ROLLBACK_WORKERS",
        "PGFLOW_SAFETY_WORKERS",
        "PGFLOW_GENESIS_WORKERS",
        "PGFLOW_MAX_RETRIES",
        "PGFLOW_RETRY_DELAY_MS",
        "PGFLOW_POLL_INTERVAL_MS",
        "SINGULARITY_WORKSPACE",
        "SINGULARITY_VERIFY_CMD",
        "SINGULARITY_PATTERN_INTERVAL_MS",
        "propose",
        "status",
        "genesis",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[test]
fn missing_database_url_is_a_usage_error() {
    let out = StdCommand::new(BIN)
        .env_remove("PGFLOW_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--database-url"));
}

#[tokio::test]
async fn propose_prints_the_ids_and_status_shows_the_proposal() {
    let t = TestDb::new().await.unwrap();
    t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
        .await
        .unwrap();
    let url = t
        .instance_url("singularity_3", "singularity")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("change.rs");
    std::fs::write(&content, "fn from_file() {}\n").unwrap();
    let content_arg = format!("@{}", content.display());

    let (code, out, err) = run(
        &[
            "propose",
            "--agent-type",
            "BugFixerAgent",
            "--file",
            "src/lib.rs",
            "--change",
            &content_arg,
            "--impact",
            "7",
            "--risk",
            "2",
        ],
        &url,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let line = out.trim();
    let id: uuid::Uuid = field(line, "proposal_id").parse().unwrap();
    let trace: uuid::Uuid = field(line, "trace_id").parse().unwrap();

    let (status, instance, change, stored_trace): (String, String, String, uuid::Uuid) =
        sqlx::query_as(
            "SELECT status, instance_id, change, trace_id FROM singularity.proposals WHERE id = $1",
        )
        .bind(id)
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(
        (
            status.as_str(),
            instance.as_str(),
            change.as_str(),
            stored_trace
        ),
        ("submitted", "singularity_3", "fn from_file() {}\n", trace)
    );
    let cc = t.connect_as("centralcloud").await.unwrap();
    let d = cc
        .claim(&crate::support::q(queues::PROPOSALS_FOR_CONSENSUS), 1)
        .await
        .unwrap()
        .pop()
        .expect("published with the proposal");
    assert_eq!(d.trace_id, trace);
    assert_eq!(d.payload.to_value().unwrap()["proposal_id"], id.to_string());

    // A refused proposal: exit 1 with the reason, nothing stored.
    let (code, _, err) = run(
        &[
            "propose",
            "--agent-type",
            "A",
            "--file",
            "../x",
            "--change",
            "y",
        ],
        &url,
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("invalid proposal") && err.contains("'..'"),
        "{err}"
    );

    let (code, out, err) = run(&["status", "--json"], &url).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["instance_id"], "singularity_3");
    assert_eq!(v["proposals"]["submitted"], 1);
    assert_eq!(v["proposals"]["applied"], 0);
    let queues_shown: Vec<&str> = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(queues_shown.len(), 8);
    assert!(queues_shown.contains(&queues::ROLLBACK_TRIGGERS));
    assert!(queues_shown.contains(&queues::CODE_EXECUTION_RESULTS));
    assert!(!queues_shown.contains(&queues::PROPOSALS_FOR_CONSENSUS));

    let (code, out, _) = run(&["status"], &url).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("submitted") && out.contains("consensus_results_queue"),
        "{out}"
    );
}
