//! The `genesis` binary: its command line, `genesis status`, and the
//! service's `GET /status`.

use std::process::{Command, Stdio};
use std::time::Duration;

use genesis::WorkflowConfig;
use pgflow_core::protocol::{queues, AnalysisType, CodeExecutionResult};
use pgflow_core::testing::{http_get, wait_for};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{job, Harness, PATIENCE};

#[test]
fn help_names_the_configuration() {
    let out = Command::new(env!("CARGO_BIN_EXE_genesis"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "PGFLOW_DATABASE_URL",
        "GENESIS_MAX_PARALLEL_WORKERS",
        "GENESIS_ENABLE_PARALLEL_PROCESSING",
        "GENESIS_BATCH_SIZE",
        "GENESIS_POLL_INTERVAL_MS",
        "GENESIS_TIMEOUT_MS",
        "PGFLOW_MAX_RETRIES",
        "PGFLOW_RETRY_DELAY_MS",
        "status",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[test]
fn missing_database_url_is_a_usage_error() {
    for args in [&[][..], &["status"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_genesis"))
            .args(args)
            .env_remove("PGFLOW_DATABASE_URL")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--database-url"));
    }
}

#[test]
fn a_bad_setting_is_a_usage_error_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_genesis"))
        .args(["--database-url", "postgres://x@127.0.0.1:1/db"])
        .env("GENESIS_MAX_PARALLEL_WORKERS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-parallel-workers"));
}

/// One job through genesis, then `genesis status` reads the table.
#[tokio::test]
async fn status_subcommand_prints_workflows_per_queue() {
    let h = Harness::start(WorkflowConfig::default()).await;
    let j = job("job_1", "elixir", "def foo, do: 42", AnalysisType::Quality);
    h.send(queues::CODE_EXECUTION_REQUESTS, &j).await;
    h.results::<CodeExecutionResult>(queues::CODE_EXECUTION_RESULTS, 1)
        .await;
    let url = h.t.url_as("genesis");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_genesis"))
        .args(["status", "--json", "--database-url", &url])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["source"], "database");
    assert_eq!(report["metrics"]["processed"], 1, "{report}");
    assert_eq!(report["metrics"]["succeeded"], 1, "{report}");
    let jobs = report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == queues::CODE_EXECUTION_REQUESTS)
        .unwrap();
    assert_eq!(
        (jobs["processed"].as_u64(), jobs["in_flight"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(jobs["last_activity"].is_string(), "{jobs}");

    let table = tokio::process::Command::new(env!("CARGO_BIN_EXE_genesis"))
        .args(["status"])
        .env("PGFLOW_DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("code_execution_requests") && text.contains("genesis_rule_updates"),
        "{text}"
    );
    h.stop().await;
}

/// The binary, logged in as `genesis`, serves its live state at `/status`.
#[tokio::test]
async fn the_service_serves_its_state_at_status() {
    let h = Harness::without_genesis().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_genesis"))
        .env("PGFLOW_DATABASE_URL", h.t.url_as("genesis"))
        .env("GENESIS_MAX_PARALLEL_WORKERS", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("genesis exited");
            if line.starts_with("genesis ready") {
                return line;
            }
        }
    })
    .await
    .unwrap();
    let addr: std::net::SocketAddr = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap()
        .parse()
        .unwrap();
    let r = http_get(addr, "/status").await.unwrap();
    assert_eq!(r.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(doc["config"]["max_parallel_workers"], 3, "{doc}");
    assert_eq!(doc["state"]["queues"].as_array().unwrap().len(), 4, "{doc}");

    let j = job("job_s", "python", "x = 1\n", AnalysisType::Linting);
    h.send(queues::CODE_EXECUTION_REQUESTS, &j).await;
    h.results::<CodeExecutionResult>(queues::CODE_EXECUTION_RESULTS, 1)
        .await;
    wait_for("the job in /status", Duration::from_secs(10), || async {
        let r = http_get(addr, "/status").await.ok()?;
        let doc: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        let m = &doc["state"]["metrics"];
        (m["last_poll"].is_string()
            && m["processed"] == 1
            && m["succeeded"] == 1
            && m["in_flight"] == 0)
            .then_some(())
    })
    .await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    h.stop().await;
}
