//! Seed 000's three test scenarios (rule update, LLM-config update, eight
//! parallel code analysis jobs) and the learning-loop report.

use chrono::Utc;
use genesis::WorkflowConfig;
use pgflow_core::protocol::{
    self, queues, AnalysisType, CodeExecutionResult, Complexity, GenesisLlmConfigUpdate,
    GenesisRuleUpdate, LearningLoopCompleted, LlmConfigUpdateResult, ResultStatus,
    RuleUpdateResult,
};
use uuid::Uuid;

use crate::support::{job, job_msg, q, Harness, ME};

fn rule_update(namespace: &str, rule: serde_json::Value, confidence: f64) -> GenesisRuleUpdate {
    GenesisRuleUpdate {
        request_id: Uuid::now_v7(),
        instance_id: ME.into(),
        namespace: namespace.into(),
        rule,
        confidence,
        timestamp: Utc::now(),
    }
}

/// Test 1: `publish_rules(min_confidence: 0.85)` -> the rule is applied,
/// the result (status, namespace, confidence, timestamp) reaches the
/// requesting instance with the trace id, the request is archived, and the
/// workflow went pending -> running -> completed.
#[tokio::test]
async fn rule_update_is_applied_and_answered() {
    let h = Harness::start(WorkflowConfig::default()).await;
    let rule = serde_json::json!({
        "name": "no_unwrap",
        "condition": "function contains .unwrap()",
        "action": {"suggest": "use ? instead"}
    });
    let u = rule_update("code_quality", rule.clone(), 0.92);
    let before = Utc::now();
    let (id, trace) = h.send(queues::GENESIS_RULE_UPDATES, &u).await;
    let results = h
        .results::<RuleUpdateResult>(queues::GENESIS_RULE_UPDATES_RESULTS, 1)
        .await;
    let (d, r) = &results[0];
    assert_eq!(r.status, ResultStatus::Completed, "{r:?}");
    assert_eq!((r.request_id, r.instance_id.as_str()), (u.request_id, ME));
    assert_eq!((r.namespace.as_str(), r.confidence), ("code_quality", 0.92));
    assert!(r.timestamp >= before && r.error.is_none());
    assert_eq!((d.trace_id, d.target.as_str()), (trace, ME));
    assert_eq!(d.source.as_deref(), Some("genesis"));

    assert!(h.archived(id).await, "the request is acked");
    let w = h.wait_workflow(id, "completed").await;
    assert_eq!((w.trace_id, w.instance.as_deref()), (trace, Some(ME)));
    assert_eq!(w.request_id, Some(u.request_id.to_string()));
    assert!(w.created_at <= w.started_at.unwrap() && w.started_at <= w.finished_at);
    assert_eq!(h.events(id).await, ["pending", "running", "completed"]);

    // A second version of the same rule; history keeps both.
    let u2 = rule_update("code_quality", rule, 0.95);
    h.send(queues::GENESIS_RULE_UPDATES, &u2).await;
    h.results::<RuleUpdateResult>(queues::GENESIS_RULE_UPDATES_RESULTS, 1)
        .await;
    let (version, confidence): (i32, f64) = sqlx::query_as(
        "SELECT version, confidence FROM genesis.rules WHERE namespace = 'code_quality' AND name = 'no_unwrap'",
    )
    .fetch_one(h.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!((version, confidence), (2, 0.95));
    let history: Vec<i32> = sqlx::query_scalar(
        "SELECT version FROM genesis.rule_versions WHERE namespace = 'code_quality' ORDER BY version",
    )
    .fetch_all(h.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(history, [1, 2]);
    h.stop().await;
}

/// Test 2: `publish_llm_config_rules()` -> the configuration is active and
/// the result carries status, provider, complexity, models_count.
#[tokio::test]
async fn llm_config_update_is_applied_and_answered() {
    let h = Harness::start(WorkflowConfig::default()).await;
    let u = GenesisLlmConfigUpdate {
        request_id: Uuid::now_v7(),
        instance_id: ME.into(),
        provider: "claude".into(),
        complexity: Complexity::Complex,
        models: vec![
            "claude-3-5-sonnet".into(),
            "claude-3-opus".into(),
            "claude-3-haiku".into(),
        ],
        timestamp: Utc::now(),
    };
    let (id, trace) = h.send(queues::GENESIS_LLM_CONFIG_UPDATES, &u).await;
    let results = h
        .results::<LlmConfigUpdateResult>(queues::GENESIS_LLM_CONFIG_UPDATES_RESULTS, 1)
        .await;
    let (d, r) = &results[0];
    assert_eq!(r.status, ResultStatus::Completed, "{r:?}");
    assert_eq!(
        (r.provider.as_str(), r.complexity, r.models_count),
        ("claude", Complexity::Complex, 3)
    );
    assert_eq!((r.request_id, d.trace_id), (u.request_id, trace));
    assert!(h.archived(id).await);
    let (models, version): (Vec<String>, i32) = sqlx::query_as(
        "SELECT models, version FROM genesis.llm_configs WHERE provider = 'anthropic' AND complexity = 'complex'",
    )
    .fetch_one(h.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!((models, version), (u.models.clone(), 1));
    assert_eq!(h.events(id).await, ["pending", "running", "completed"]);
    h.stop().await;
}

/// Test 3: eight code analysis jobs, sent at once, are processed (four at a
/// time) and each answered with its findings and their line numbers.
#[tokio::test]
async fn eight_code_analysis_jobs_are_all_answered_with_findings() {
    let h = Harness::start(WorkflowConfig::default()).await;
    // (language, code, analysis, expected (line, check))
    let cases: [(&str, &str, AnalysisType, (u32, &str)); 8] = [
        (
            "elixir",
            "def foo, do: 42\n# TODO: more\n",
            AnalysisType::Quality,
            (2, "todo_comment"),
        ),
        (
            "elixir",
            "def run(s) do\n  System.cmd(s, [])\nend\n",
            AnalysisType::Security,
            (2, "shell_command"),
        ),
        (
            "elixir",
            "def foo, do: 42",
            AnalysisType::Testing,
            (1, "no_tests"),
        ),
        (
            "rust",
            "fn f(x: Option<u8>) -> u8 {\n    x.unwrap()\n}\n",
            AnalysisType::Security,
            (2, "unwrap"),
        ),
        (
            "rust",
            "fn ok() {}\nfn NotSnake() {}\n",
            AnalysisType::Linting,
            (2, "naming_function"),
        ),
        (
            "python",
            "import os\n\nos.system('rm -rf /')\n",
            AnalysisType::Security,
            (3, "shell_command"),
        ),
        (
            "python",
            "def f():\n    return eval(\n",
            AnalysisType::Quality,
            (2, "syntax_error"),
        ),
        (
            "python",
            "def test_nothing():\n    pass\n",
            AnalysisType::Testing,
            (1, "test_without_assertion"),
        ),
    ];
    let msgs: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (lang, code, kind, _))| {
            job_msg(&job(&format!("job_{}", i + 1), lang, code, *kind))
        })
        .collect();
    let ids = h.send_batch(queues::CODE_EXECUTION_REQUESTS, msgs).await;
    let results = h
        .results::<CodeExecutionResult>(queues::CODE_EXECUTION_RESULTS, 8)
        .await;
    for (i, (lang, _, kind, (line, check))) in cases.iter().enumerate() {
        let job_id = format!("job_{}", i + 1);
        let (d, r) = results
            .iter()
            .find(|(_, r)| r.request_id == job_id)
            .unwrap_or_else(|| panic!("no result for {job_id}"));
        assert_eq!(d.target, ME, "addressed to the envelope's source");
        assert_eq!(r.status, ResultStatus::Completed, "{job_id}: {r:?}");
        assert_eq!(r.analysis_type, *kind);
        assert!(
            r.output
                .findings
                .iter()
                .any(|f| f.line == *line && f.check == *check),
            "{job_id} ({lang}): expected {check} at line {line}, got {:?}",
            r.output.findings
        );
        assert_eq!(r.metrics.issues_count, r.output.findings.len() as u64);
        assert!((0.0..1.0).contains(&r.metrics.quality_score), "{r:?}");
        assert!(!r.output.summary.is_empty());
    }
    for id in ids {
        assert!(h.archived(id).await);
        assert_eq!(h.wait_workflow(id, "completed").await.status, "completed");
    }
    let m = h.status().report().metrics;
    assert_eq!((m.processed, m.succeeded, m.failed), (8, 8, 0));
    h.stop().await;
}

/// `learning_loop_completed` (from centralcloud) is recorded as a
/// completed workflow; nothing is sent back.
#[tokio::test]
async fn learning_loop_reports_are_recorded() {
    let h = Harness::start(WorkflowConfig::default()).await;
    let centralcloud = h.t.connect_as("centralcloud").await.unwrap();
    let report = LearningLoopCompleted {
        patterns_processed: 5,
        rules_generated: 2,
        thresholds_updated: 3,
        timestamp: Utc::now(),
    };
    let msg = protocol::encode(&report).unwrap().source("centralcloud");
    let id = centralcloud
        .send_with_notify(&q(queues::LEARNING_LOOP_COMPLETED), msg)
        .await
        .unwrap();
    h.wait_workflow(id, "completed").await;
    let row: (i64, i64, i64, Option<String>) = sqlx::query_as(
        "SELECT patterns_processed, rules_generated, thresholds_updated, source
           FROM genesis.learning_events WHERE id = $1",
    )
    .bind(id)
    .fetch_one(h.t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(row, (5, 2, 3, Some("centralcloud".into())));
    assert!(h.archived(id).await);
    h.stop().await;
}

/// A copy of a request whose workflow completed (e.g. a producer re-sending
/// the same message id) is acked without running again or answering twice.
#[tokio::test]
async fn a_copy_of_a_completed_request_is_acked_without_a_second_result() {
    let h = Harness::start(WorkflowConfig::default()).await;
    let j = job("job_once", "rust", "fn main() {}\n", AnalysisType::Linting);
    let id = Uuid::now_v7();
    let send = || protocol::encode(&j).unwrap().id(id).source(ME);
    let queue = q(queues::CODE_EXECUTION_REQUESTS);
    h.singularity
        .send_with_notify(&queue, send())
        .await
        .unwrap();
    h.results::<CodeExecutionResult>(queues::CODE_EXECUTION_RESULTS, 1)
        .await;
    h.wait_workflow(id, "completed").await;
    h.singularity
        .send_with_notify(&queue, send())
        .await
        .unwrap();
    let archived = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pgflow.archive WHERE id = $1")
            .bind(id)
            .fetch_one(h.t.pgflow.pool())
            .await
            .unwrap()
    };
    pgflow_core::testing::wait_for("the copy acked", crate::support::PATIENCE, || async {
        (archived().await == 2).then_some(())
    })
    .await;
    let more = h
        .singularity
        .claim_with(
            &q(queues::CODE_EXECUTION_RESULTS),
            10,
            &pgflow_core::ClaimOptions::for_target(ME),
        )
        .await
        .unwrap();
    assert!(more.is_empty(), "answered twice: {more:?}");
    assert_eq!(h.events(id).await, ["pending", "running", "completed"]);
    h.stop().await;
}

/// Genesis's tables are its own: the other services' roles cannot read them.
#[tokio::test]
async fn other_services_cannot_read_genesis_tables() {
    let h = Harness::without_genesis().await;
    for role in ["singularity", "centralcloud"] {
        let pg = h.t.connect_as(role).await.unwrap();
        let err = sqlx::query("SELECT count(*) FROM genesis.workflows")
            .execute(pg.pool())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{role}: {err}"
        );
    }
    let genesis = h.t.connect_as("genesis").await.unwrap();
    sqlx::query("SELECT count(*) FROM genesis.rules")
        .execute(genesis.pool())
        .await
        .unwrap();
}
