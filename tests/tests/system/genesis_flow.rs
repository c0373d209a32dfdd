//! Seed 000's three scenarios through the real binaries: a singularity
//! instance publishes a learned rule, LLM configs and eight code-analysis
//! jobs; genesis processes them (in parallel) and answers the instance,
//! which stores the results. centralcloud takes part so that the rule is
//! learned from a proposal that really went through consensus.

use std::time::Duration;

use pgflow_core::testing::{wait_for, TestDb};
use system_tests::Service;

const WAIT: Duration = Duration::from_secs(60);

/// Runs a one-shot command to completion; panics with its output if it fails.
async fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut p = Service::spawn(bin, args, env);
    let status = tokio::time::timeout(WAIT, p.child.wait())
        .await
        .expect("command finished")
        .expect("wait");
    while let Some(l) = p.lines.recv().await {
        p.seen.push(l);
    }
    assert!(
        status.success(),
        "{bin} {args:?}: {status}\n{}",
        p.seen.join("\n")
    );
    p.seen
}

async fn count(t: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(t.pgflow.pool())
        .await
        .unwrap()
}

const JOBS: [(&str, &str, &str); 8] = [
    (
        "python",
        "security",
        "import os\n\ndef run(cmd):\n    os.system(cmd)\n",
    ),
    (
        "python",
        "quality",
        "def f(x):\n    # TODO: handle None\n    return x\n",
    ),
    (
        "python",
        "testing",
        "def test_add():\n    assert 1 + 1 == 2\n",
    ),
    (
        "rust",
        "security",
        "fn main() {\n    let v: Option<u8> = None;\n    v.unwrap();\n}\n",
    ),
    ("rust", "linting", "fn BadName() {}\n"),
    (
        "rust",
        "testing",
        "#[test]\nfn works() {\n    assert_eq!(2, 1 + 1);\n}\n",
    ),
    (
        "elixir",
        "security",
        "defmodule M do\n  def run(c), do: System.cmd(c, [])\nend\n",
    ),
    (
        "elixir",
        "quality",
        "defmodule M do\n  def f(x) do\n    x\n  end\nend\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_scenarios_through_the_binaries() {
    let t = TestDb::new().await.unwrap();
    let (cc_url, gen_url, sing_url) = (
        t.url_as("centralcloud"),
        t.url_as("genesis"),
        t.instance_url("singularity_1", "singularity")
            .await
            .unwrap(),
    );
    let ws = tempfile::tempdir().unwrap();
    let ws_path = ws.path().to_string_lossy().to_string();
    let mut cc = Service::spawn(
        "centralcloud",
        &[],
        &[
            ("PGFLOW_DATABASE_URL", cc_url.as_str()),
            ("PGFLOW_POLL_INTERVAL_MS", "200"),
        ],
    );
    cc.wait_for_line("centralcloud ready", WAIT).await;
    let mut genesis = Service::spawn(
        "genesis",
        &[],
        &[
            ("PGFLOW_DATABASE_URL", gen_url.as_str()),
            ("GENESIS_POLL_INTERVAL_MS", "200"),
        ],
    );
    genesis.wait_for_line("genesis ready", WAIT).await;
    let sing_env = [
        ("PGFLOW_DATABASE_URL", sing_url.as_str()),
        ("INSTANCE_ID", "singularity_1"),
        ("SINGULARITY_WORKSPACE", ws_path.as_str()),
        ("PGFLOW_POLL_INTERVAL_MS", "200"),
    ];
    let mut sing = Service::spawn("singularity", &[], &sing_env);
    sing.wait_for_line("singularity ready", WAIT).await;
    wait_for("singularity_1 votes", WAIT, || async {
        (count(&t, "SELECT count(*) FROM pgflow_subscribers WHERE live").await >= 1).then_some(())
    })
    .await;

    // Something learned: an applied change of BugFixerAgent.
    run(
        "singularity",
        &[
            "propose",
            "--agent-type",
            "BugFixerAgent",
            "--file",
            "fix.txt",
            "--change",
            "ok\n",
        ],
        &sing_env,
    )
    .await;
    wait_for("the change applied", WAIT, || async {
        (count(
            &t,
            "SELECT count(*) FROM singularity.proposals WHERE status = 'applied'",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;

    // Scenario 1: rule update. Scenario 2: LLM config update.
    run(
        "singularity",
        &["genesis", "publish-rules", "--min-confidence", "0.8"],
        &sing_env,
    )
    .await;
    run("singularity", &["genesis", "publish-llm-config"], &sing_env).await;
    // Scenario 3: eight code-analysis jobs, processed in parallel.
    for (i, (lang, kind, code)) in JOBS.iter().enumerate() {
        let id = format!("job_{i}");
        run(
            "singularity",
            &[
                "genesis",
                "analyze",
                "--id",
                &id,
                "--language",
                lang,
                "--analysis-type",
                kind,
                "--code",
                code,
            ],
            &sing_env,
        )
        .await;
    }
    let sent = count(&t, "SELECT count(*) FROM singularity.genesis_requests").await;
    assert!(sent >= 1 + 1 + 8, "{sent} requests");
    wait_for("every result stored", WAIT, || async {
        (count(
            &t,
            "SELECT count(*) FROM singularity.genesis_requests WHERE status = 'completed'",
        )
        .await
            == sent)
            .then_some(())
    })
    .await;

    let rule: serde_json::Value = sqlx::query_scalar(
        "SELECT result FROM singularity.genesis_requests WHERE kind = 'rule_update'",
    )
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(rule["status"], "completed", "{rule}");
    assert_eq!(rule["namespace"], "singularity.BugFixerAgent", "{rule}");
    let configs: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT result FROM singularity.genesis_requests WHERE kind = 'llm_config_update'",
    )
    .fetch_all(t.pgflow.pool())
    .await
    .unwrap();
    assert!(
        configs
            .iter()
            .all(|c| c["models_count"].as_u64().unwrap_or(0) > 0),
        "{configs:?}"
    );
    let jobs: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT request_id, result FROM singularity.genesis_requests
          WHERE kind = 'code_execution' ORDER BY request_id",
    )
    .fetch_all(t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(jobs.len(), 8);
    for (id, r) in &jobs {
        assert!(r["metrics"]["quality_score"].is_number(), "{id}: {r}");
        assert!(r["metrics"]["execution_ms"].is_number(), "{id}: {r}");
    }
    // The security jobs found their dangerous call, on its line.
    let finding_line = |id: &str| {
        jobs.iter()
            .find(|(j, _)| j == id)
            .and_then(|(_, r)| r["output"]["findings"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|f| f["line"].as_u64())
            .collect::<Vec<_>>()
    };
    assert!(
        finding_line("job_0").contains(&4),
        "os.system on line 4: {jobs:?}"
    );
    assert!(
        finding_line("job_3").contains(&3),
        "unwrap on line 3: {jobs:?}"
    );
    assert!(
        finding_line("job_6").contains(&2),
        "System.cmd on line 2: {jobs:?}"
    );
    // Genesis ran every workflow to completion, and nothing was dead-lettered.
    assert_eq!(
        count(
            &t,
            "SELECT count(*) FROM genesis.workflows WHERE status = 'completed'"
        )
        .await,
        sent
    );
    assert_eq!(count(&t, "SELECT count(*) FROM pgflow.dlq").await, 0);
    for s in [&mut sing, &mut genesis, &mut cc] {
        assert_eq!(s.terminate(WAIT).await, Some(0));
    }
}
