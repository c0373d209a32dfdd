//! Requests that fail: past their timeout, refused by a manager, or not
//! decodable. Each gets a failed result or a dead letter with a clear
//! reason, and genesis keeps going.

use std::time::Duration;

use chrono::Utc;
use genesis::WorkflowConfig;
use pgflow_core::protocol::{
    queues, AnalysisType, CodeExecutionResult, Complexity, GenesisLlmConfigUpdate,
    GenesisRuleUpdate, LlmConfigUpdateResult, ResultStatus, RuleUpdateResult,
};
use pgflow_core::OutgoingMessage;
use uuid::Uuid;

use crate::support::{job, q, Harness, ME};

/// A job whose analysis outlasts `timeout_ms` fails with the reason; the
/// jobs beside it finish; the request is settled, not retried.
#[tokio::test]
async fn a_workflow_past_its_timeout_fails_and_the_others_finish() {
    let h = Harness::start(WorkflowConfig {
        timeout: Duration::from_millis(100),
        ..WorkflowConfig::default()
    })
    .await;
    // About a megabyte of Elixir: several hundred milliseconds of parsing
    // and checking in a debug build, far past 100 ms.
    let unit = "def f(x), do: Code.eval_string(x)\n";
    let big = unit.repeat(950_000 / unit.len());
    let (slow, _) = h
        .send(
            queues::CODE_EXECUTION_REQUESTS,
            &job("slow", "elixir", &big, AnalysisType::Security),
        )
        .await;
    let mut quick = Vec::new();
    for i in 0..3 {
        let j = job(
            &format!("quick_{i}"),
            "rust",
            "fn main() {}\n",
            AnalysisType::Quality,
        );
        quick.push(h.send(queues::CODE_EXECUTION_REQUESTS, &j).await.0);
    }
    let results = h
        .results::<CodeExecutionResult>(queues::CODE_EXECUTION_RESULTS, 4)
        .await;
    for (_, r) in &results {
        if r.request_id == "slow" {
            assert_eq!(r.status, ResultStatus::Failed, "{r:?}");
            let e = r.error.as_deref().unwrap();
            assert!(e.contains("timed out after 100 ms"), "{e}");
            assert!(r.output.findings.is_empty());
        } else {
            assert_eq!(r.status, ResultStatus::Completed, "{r:?}");
        }
    }
    let w = h.wait_workflow(slow, "failed").await;
    assert!(w.error.unwrap().contains("timed out"));
    assert!(
        h.archived(slow).await,
        "a timed-out workflow is settled, not retried"
    );
    for id in quick {
        h.wait_workflow(id, "completed").await;
    }
    let queue = h
        .status()
        .report()
        .queues
        .into_iter()
        .find(|s| s.queue == queues::CODE_EXECUTION_REQUESTS)
        .unwrap();
    assert_eq!(
        (queue.succeeded, queue.failed, queue.timed_out),
        (3, 1, Some(1))
    );
    h.stop().await;
}

/// An invalid rule, an unknown provider and an unknown language get failed
/// results saying why; a malformed payload, an out-of-range confidence and
/// an unknown type are dead-lettered with the reason. A valid request sent
/// after them all is still processed.
#[tokio::test]
async fn bad_requests_fail_with_a_reason_and_genesis_keeps_going() {
    let h = Harness::start(WorkflowConfig::default()).await;

    let rule = GenesisRuleUpdate {
        request_id: Uuid::now_v7(),
        instance_id: ME.into(),
        namespace: "code_quality".into(),
        rule: serde_json::json!({"condition": "x"}),
        confidence: 0.9,
        timestamp: Utc::now(),
    };
    let (rule_id, _) = h.send(queues::GENESIS_RULE_UPDATES, &rule).await;
    let r = h
        .results::<RuleUpdateResult>(queues::GENESIS_RULE_UPDATES_RESULTS, 1)
        .await
        .remove(0)
        .1;
    assert_eq!(r.status, ResultStatus::Failed);
    assert!(
        r.error.as_deref().unwrap().contains("missing `action`"),
        "{r:?}"
    );
    let w = h.wait_workflow(rule_id, "failed").await;
    assert!(w.error.unwrap().contains("missing `action`"));
    let rules: i64 = sqlx::query_scalar("SELECT count(*) FROM genesis.rule_versions")
        .fetch_one(h.t.pgflow.pool())
        .await
        .unwrap();
    assert_eq!(rules, 0, "a refused rule is not applied");

    let config = GenesisLlmConfigUpdate {
        request_id: Uuid::now_v7(),
        instance_id: ME.into(),
        provider: "acme-llm".into(),
        complexity: Complexity::Simple,
        models: vec!["m1".into()],
        timestamp: Utc::now(),
    };
    h.send(queues::GENESIS_LLM_CONFIG_UPDATES, &config).await;
    let r = h
        .results::<LlmConfigUpdateResult>(queues::GENESIS_LLM_CONFIG_UPDATES_RESULTS, 1)
        .await
        .remove(0)
        .1;
    assert_eq!((r.status, r.models_count), (ResultStatus::Failed, 1));
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("unknown provider \"acme-llm\""),
        "{r:?}"
    );

    let cobol = job("job_cobol", "cobol", "DISPLAY 'HI'.", AnalysisType::Quality);
    h.send(queues::CODE_EXECUTION_REQUESTS, &cobol).await;
    let r = h
        .results::<CodeExecutionResult>(queues::CODE_EXECUTION_RESULTS, 1)
        .await
        .remove(0)
        .1;
    assert_eq!(r.status, ResultStatus::Failed);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("unsupported language \"cobol\""),
        "{r:?}"
    );

    // Not decodable: a job without code, a confidence out of range, a type
    // genesis does not handle.
    let raw = |msg_type: &str, payload: serde_json::Value| {
        OutgoingMessage::new(msg_type, payload).source(ME)
    };
    let malformed = h
        .singularity
        .send_with_notify(
            &q(queues::CODE_EXECUTION_REQUESTS),
            raw(
                "code_execution_request",
                serde_json::json!({"id": "j", "language": "rust", "analysis_type": "quality"}),
            ),
        )
        .await
        .unwrap();
    let mut bad_rule = serde_json::to_value(&rule).unwrap();
    bad_rule["confidence"] = serde_json::json!(1.5);
    bad_rule["request_id"] = serde_json::json!(Uuid::now_v7());
    let out_of_range = h
        .singularity
        .send_with_notify(
            &q(queues::GENESIS_RULE_UPDATES),
            raw("genesis_rule_update", bad_rule),
        )
        .await
        .unwrap();
    let unknown = h
        .singularity
        .send_with_notify(
            &q(queues::CODE_EXECUTION_REQUESTS),
            raw("launch_missiles", serde_json::json!({})),
        )
        .await
        .unwrap();
    for (id, reason) in [
        (
            malformed,
            "malformed \"code_execution_request\" payload: missing field `code`",
        ),
        (out_of_range, "confidence: must be in [0, 1], got 1.5"),
        (unknown, "unknown message type \"launch_missiles\""),
    ] {
        let d = h.dead_letter(id).await;
        assert!(d.error.contains(reason), "{reason:?} not in {:?}", d.error);
        assert_eq!(d.attempts, 1, "a bad payload is not retried");
        let w = h.wait_workflow(id, "failed").await;
        assert!(w.error.unwrap().contains(reason));
    }

    // Still consuming.
    let ok = job("job_ok", "python", "x = 1\n", AnalysisType::Linting);
    let (ok_id, _) = h.send(queues::CODE_EXECUTION_REQUESTS, &ok).await;
    let r = h
        .results::<CodeExecutionResult>(queues::CODE_EXECUTION_RESULTS, 1)
        .await
        .remove(0)
        .1;
    assert_eq!(
        (r.request_id.as_str(), r.status),
        ("job_ok", ResultStatus::Completed)
    );
    h.wait_workflow(ok_id, "completed").await;
    let m = h.status().report().metrics;
    assert_eq!((m.succeeded, m.failed), (1, 6), "{m:?}");
    h.stop().await;
}

/// A rule update blocked on a lock past its timeout fails with the reason,
/// its writes are rolled back, and the next update of the rule applies.
#[tokio::test]
async fn a_rule_update_blocked_past_its_timeout_fails_and_changes_nothing() {
    let h = Harness::start(WorkflowConfig {
        timeout: Duration::from_millis(300),
        ..WorkflowConfig::default()
    })
    .await;
    let admin = h.t.pgflow.pool();
    sqlx::query(
        "INSERT INTO genesis.rules (namespace, name, version, rule, confidence)
         VALUES ('locked', 'default', 1, '{}', 0.5)",
    )
    .execute(admin)
    .await
    .unwrap();
    let mut lock = admin.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM genesis.rules WHERE namespace = 'locked' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let update = |confidence| GenesisRuleUpdate {
        request_id: Uuid::now_v7(),
        instance_id: ME.into(),
        namespace: "locked".into(),
        rule: serde_json::json!({"condition": "c", "action": "a"}),
        confidence,
        timestamp: Utc::now(),
    };
    let (blocked, _) = h.send(queues::GENESIS_RULE_UPDATES, &update(0.8)).await;
    let r = h
        .results::<RuleUpdateResult>(queues::GENESIS_RULE_UPDATES_RESULTS, 1)
        .await
        .remove(0)
        .1;
    assert_eq!(r.status, ResultStatus::Failed, "{r:?}");
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("timed out after 300 ms"),
        "{r:?}"
    );
    h.wait_workflow(blocked, "failed").await;
    lock.rollback().await.unwrap();

    h.send(queues::GENESIS_RULE_UPDATES, &update(0.9)).await;
    let r = h
        .results::<RuleUpdateResult>(queues::GENESIS_RULE_UPDATES_RESULTS, 1)
        .await
        .remove(0)
        .1;
    assert_eq!(r.status, ResultStatus::Completed, "{r:?}");
    let versions: Vec<(i32, f64)> =
        sqlx::query_as("SELECT version, confidence FROM genesis.rule_versions ORDER BY version")
            .fetch_all(admin)
            .await
            .unwrap();
    assert_eq!(versions, [(2, 0.9)], "the timed-out update left nothing");
    h.stop().await;
}
