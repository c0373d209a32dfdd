//! The `centralcloud` binary: its command line, the `learn` and `status`
//! subcommands against a database, and `GET /status` of the running service.

use std::process::{Command, Stdio};
use std::time::Duration;

use pgflow_core::protocol::queues;
use pgflow_core::testing::{http_get, wait_for};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{proposal, settings, take, Harness, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_centralcloud");

#[test]
fn help_names_the_configuration() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "PGFLOW_DATABASE_URL",
        "PGFLOW_HTTP_ADDR",
        "PGFLOW_PROPOSALS_WORKERS",
        "PGFLOW_METRICS_WORKERS",
        "PGFLOW_PATTERNS_WORKERS",
        "PGFLOW_VOTES_WORKERS",
        "PGFLOW_MAX_RETRIES",
        "PGFLOW_RETRY_DELAY_MS",
        "PGFLOW_POLL_INTERVAL_MS",
        "PGFLOW_BATCH_SIZE",
        "PGFLOW_TIMEOUT_MS",
        "PGFLOW_TX_BATCH",
        "CENTRALCLOUD_QUORUM",
        "CENTRALCLOUD_VOTE_DEADLINE_MS",
        "CENTRALCLOUD_DECIDER_INTERVAL_MS",
        "CENTRALCLOUD_LEARNING_INTERVAL_MS",
        "CENTRALCLOUD_LEARNING_MIN_SAMPLES",
        "learn",
        "status",
    ] {
        assert!(text.contains(name), "--help lacks {name}:\n{text}");
    }
}

#[test]
fn missing_database_url_is_a_usage_error() {
    let out = Command::new(BIN)
        .env_remove("PGFLOW_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--database-url"));
}

#[test]
fn a_bad_quorum_is_a_usage_error() {
    let out = Command::new(BIN)
        .args([
            "--database-url",
            "postgres://x/y",
            "--quorum",
            "1.5",
            "status",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("quorum must be in (0, 1]"));
}

async fn run_cli(url: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("PGFLOW_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "centralcloud {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn learn_and_status_run_against_the_database() {
    let h = Harness::start(settings()).await;
    // No live voter: rejected at once, which is evidence for the next pass.
    let p = proposal("singularity_1", "BugFixerAgent");
    h.propose(&p).await;
    take(&h.sing, queues::CONSENSUS_RESULTS, Some("singularity_1"), 1).await;
    let url = h.t.url_as("centralcloud");

    let out = run_cli(&url, &["learn"]).await;
    assert!(
        out.contains("learning pass 1:") && out.contains("profiles_updated=1"),
        "{out}"
    );
    let out = run_cli(&url, &["learn"]).await;
    assert!(out.contains("no new evidence"), "{out}");

    let json: serde_json::Value =
        serde_json::from_str(&run_cli(&url, &["status", "--json"]).await).unwrap();
    assert_eq!(json["proposals"]["rejected"], 1, "{json}");
    assert_eq!(json["proposals"]["collecting"], 0, "{json}");
    assert_eq!(json["profiles"][0]["agent_type"], "BugFixerAgent", "{json}");
    assert_eq!(json["last_learning_run"]["trigger"], "cli", "{json}");
    let table = run_cli(&url, &["status"]).await;
    assert!(
        table.contains("rejected") && table.contains("BugFixerAgent"),
        "{table}"
    );
    h.stop().await;
}

#[tokio::test]
async fn the_service_serves_consumer_states_and_proposal_counts() {
    let h = Harness::start(settings()).await;
    h.propose(&proposal("singularity_2", "BugFixerAgent")).await;
    take(&h.sing, queues::CONSENSUS_RESULTS, Some("singularity_2"), 1).await;

    let mut child = tokio::process::Command::new(BIN)
        .env("PGFLOW_DATABASE_URL", h.t.url_as("centralcloud"))
        .env("PGFLOW_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("centralcloud ready") {
                return line;
            }
        }
        panic!("centralcloud exited before its ready line")
    })
    .await
    .unwrap();
    let addr: std::net::SocketAddr = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap()
        .parse()
        .unwrap();

    let status = wait_for("/status with counts", Duration::from_secs(20), || async {
        let r = http_get(addr, "/status").await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        (r.status == 200 && v["proposals"]["rejected"] == 1).then_some(v)
    })
    .await;
    let consumers = status["consumers"].as_array().unwrap();
    let mut queues_seen: Vec<&str> = consumers
        .iter()
        .map(|c| c["queue"].as_str().unwrap())
        .collect();
    queues_seen.sort_unstable();
    assert_eq!(
        queues_seen,
        [
            queues::CONSENSUS_VOTES,
            queues::METRICS_TO_GUARDIAN,
            queues::PATTERNS_FOR_AGGREGATOR,
            queues::PROPOSALS_FOR_CONSENSUS,
        ]
    );
    for c in consumers {
        for field in ["processed", "succeeded", "failed", "in_flight", "last_poll"] {
            assert!(c.get(field).is_some(), "{field} missing in {c}");
        }
    }
    assert_eq!(status["proposals"]["approved"], 0);
    child.kill().await.unwrap();
    h.stop().await;
}
