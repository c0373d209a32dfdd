//! Genesis's results (sent by role `genesis`, targeted at the instance) are
//! consumed by the running service and finish their requests as completed
//! or failed; results for another instance are left alone; unknown and
//! malformed results are dead-lettered with the reason.

use chrono::Utc;
use pgflow_core::protocol::{
    self, queues, AnalysisType, CodeExecutionRequest, CodeExecutionResult, Finding,
    GenesisLlmConfigUpdate, GenesisRuleUpdate, JobMetrics, JobOutput, LlmConfigUpdateResult,
    ResultStatus, RuleUpdateResult, Severity, Validate,
};
use pgflow_core::testing::wait_for;
use pgflow_core::{MessageType, OutgoingMessage, Pgflow};
use singularity::genesis_requests::{GenesisRequest, RequestKind, RequestState};
use singularity::{status, CodeAnalysis, GenesisPublisher, LlmConfig};
use uuid::Uuid;

use crate::genesis::{outcomes, request, take};
use crate::support::{q, Env, DEADLINE};

/// Genesis sends `result` to `queue`, addressed to `target`, under `trace`.
async fn reply<T: MessageType + Validate>(
    genesis: &Pgflow,
    queue: &str,
    result: &T,
    target: &str,
    trace: Uuid,
) -> Uuid {
    let msg = protocol::encode(result)
        .unwrap()
        .trace_id(trace)
        .target(target)
        .source("genesis");
    genesis.send_with_notify(&q(queue), msg).await.unwrap()
}

/// Waits until the request has left `sent`.
async fn finished(env: &Env, kind: RequestKind, id: &str) -> GenesisRequest {
    wait_for(&format!("{kind} {id} finished"), DEADLINE, || async {
        let r = request(&env.t, &env.id, kind, id).await;
        (r.state().unwrap() != RequestState::Sent).then_some(r)
    })
    .await
}

fn analysis(request_id: &str, instance: &str) -> CodeExecutionResult {
    CodeExecutionResult {
        request_id: request_id.into(),
        instance_id: instance.into(),
        status: ResultStatus::Completed,
        analysis_type: AnalysisType::Security,
        output: JobOutput {
            summary: "1 security issue".into(),
            findings: vec![Finding {
                line: 2,
                severity: Severity::Error,
                check: "shell_injection".into(),
                message: "os.system with user input".into(),
            }],
        },
        metrics: JobMetrics {
            execution_ms: 3,
            quality_score: 0.6,
            issues_count: 1,
        },
        error: None,
        timestamp: Utc::now(),
    }
}

#[tokio::test]
async fn results_from_genesis_complete_or_fail_the_requests() {
    let env = Env::start().await;
    let t = &env.t;
    let me = env.id.as_str();
    outcomes(t, me, "BugFixerAgent", &["a.rs"], 2, 0).await;
    let publisher = GenesisPublisher::new(env.sing.clone(), me).unwrap();
    let genesis = t.connect_as("genesis").await.unwrap();

    let rules = publisher.publish_rules(0.5).await.unwrap();
    let mut config = LlmConfig::defaults();
    config.entries.truncate(1);
    let configs = publisher.publish_llm_config_rules(&config).await.unwrap();
    let job = publisher
        .send_code_execution_request(CodeAnalysis {
            id: Some("job_7".into()),
            code: "import os\nos.system(x)\n".into(),
            language: "python".into(),
            analysis_type: AnalysisType::Security,
        })
        .await
        .unwrap();

    // Genesis's answers, each after a result for another instance that
    // this one must not take.
    let other = analysis("job_7", "singularity_2");
    reply(
        &genesis,
        queues::CODE_EXECUTION_RESULTS,
        &other,
        "singularity_2",
        Uuid::now_v7(),
    )
    .await;

    let d = take(&genesis, t, queues::GENESIS_RULE_UPDATES, 1)
        .await
        .remove(0);
    let u: GenesisRuleUpdate = protocol::decode(&d).unwrap();
    let rule_result = RuleUpdateResult {
        request_id: u.request_id,
        instance_id: u.instance_id.clone(),
        status: ResultStatus::Completed,
        namespace: u.namespace.clone(),
        confidence: u.confidence,
        error: None,
        timestamp: Utc::now(),
    };
    let rule_msg = reply(
        &genesis,
        queues::GENESIS_RULE_UPDATES_RESULTS,
        &rule_result,
        me,
        d.trace_id,
    )
    .await;

    let d = take(&genesis, t, queues::GENESIS_LLM_CONFIG_UPDATES, 1)
        .await
        .remove(0);
    let c: GenesisLlmConfigUpdate = protocol::decode(&d).unwrap();
    let config_result = LlmConfigUpdateResult {
        request_id: c.request_id,
        instance_id: c.instance_id.clone(),
        status: ResultStatus::Failed,
        provider: c.provider.clone(),
        complexity: c.complexity,
        models_count: 0,
        error: Some("unknown model".into()),
        timestamp: Utc::now(),
    };
    reply(
        &genesis,
        queues::GENESIS_LLM_CONFIG_UPDATES_RESULTS,
        &config_result,
        me,
        d.trace_id,
    )
    .await;

    let d = take(&genesis, t, queues::CODE_EXECUTION_REQUESTS, 1)
        .await
        .remove(0);
    let j: CodeExecutionRequest = protocol::decode(&d).unwrap();
    let job_result = analysis(&j.id, me);
    reply(
        &genesis,
        queues::CODE_EXECUTION_RESULTS,
        &job_result,
        me,
        d.trace_id,
    )
    .await;

    let r = finished(&env, RequestKind::RuleUpdate, &rules.requests[0].request_id).await;
    assert_eq!(r.state().unwrap(), RequestState::Completed);
    assert_eq!(r.result, Some(serde_json::to_value(&rule_result).unwrap()));
    assert_eq!((r.error, r.result_message_id), (None, Some(rule_msg)));
    assert!(r.finished_at.is_some());

    let r = finished(
        &env,
        RequestKind::LlmConfigUpdate,
        &configs.requests[0].request_id,
    )
    .await;
    assert_eq!(r.state().unwrap(), RequestState::Failed);
    assert_eq!(r.error.as_deref(), Some("unknown model"));
    assert_eq!(r.result.unwrap()["status"], "failed");

    let r = finished(
        &env,
        RequestKind::CodeExecution,
        &job.requests[0].request_id,
    )
    .await;
    assert_eq!(r.state().unwrap(), RequestState::Completed);
    let stored: CodeExecutionResult = serde_json::from_value(r.result.unwrap()).unwrap();
    assert_eq!(stored, job_result);

    // The other instance's result is still waiting for it, and was not
    // dead-lettered.
    let foreign: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pgflow.messages WHERE queue_name = $1 AND target = 'singularity_2'",
    )
    .bind(queues::CODE_EXECUTION_RESULTS)
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(foreign, 1);
    assert!(env.dlq(queues::CODE_EXECUTION_RESULTS).await.is_empty());

    // The same result again changes nothing; it is counted.
    reply(
        &genesis,
        queues::GENESIS_RULE_UPDATES_RESULTS,
        &rule_result,
        me,
        Uuid::now_v7(),
    )
    .await;
    let id = rules.requests[0].request_id.clone();
    wait_for("the duplicate counted", DEADLINE, || async {
        (request(t, me, RequestKind::RuleUpdate, &id)
            .await
            .duplicate_results
            == 1)
            .then_some(())
    })
    .await;
    let r = request(t, me, RequestKind::RuleUpdate, &id).await;
    assert_eq!(
        (r.state().unwrap(), r.result_message_id),
        (RequestState::Completed, Some(rule_msg))
    );

    // `status` shows them by state.
    let mut conn = t.pgflow.pool().acquire().await.unwrap();
    let report = status::gather(&mut conn, me).await.unwrap();
    let g = &report.genesis_requests;
    assert_eq!(g.by_state[&RequestState::Completed], 2);
    assert_eq!(g.by_state[&RequestState::Failed], 1);
    assert_eq!(g.by_state[&RequestState::Sent], 0);
    assert_eq!(
        g.by_kind[&RequestKind::LlmConfigUpdate][&RequestState::Failed],
        1
    );
    let text = report.render();
    assert!(
        text.contains("llm_config_update") && text.contains("completed"),
        "{text}"
    );
    assert!(report
        .queues
        .iter()
        .any(|d| d.queue == queues::GENESIS_LLM_CONFIG_UPDATES_RESULTS));
    drop(conn);
    env.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_results_are_dead_lettered_with_the_reason() {
    let env = Env::start().await;
    let me = env.id.as_str();
    let genesis = env.t.connect_as("genesis").await.unwrap();
    let results = q(queues::GENESIS_RULE_UPDATES_RESULTS);
    let send = |m: OutgoingMessage| {
        let (genesis, results) = (genesis.clone(), results.clone());
        async move { genesis.send_with_notify(&results, m).await.unwrap() }
    };
    send(
        OutgoingMessage::new(RuleUpdateResult::TYPE, serde_json::json!({"garbage": 1})).target(me),
    )
    .await;
    send(OutgoingMessage::new("surprise", serde_json::json!({})).target(me)).await;
    let result = |request_id: Uuid, instance: &str| RuleUpdateResult {
        request_id,
        instance_id: instance.into(),
        status: ResultStatus::Completed,
        namespace: "singularity.A".into(),
        confidence: 1.0,
        error: None,
        timestamp: Utc::now(),
    };
    // A request this instance never sent, and one naming another instance.
    let stranger = Uuid::now_v7();
    reply(
        &genesis,
        queues::GENESIS_RULE_UPDATES_RESULTS,
        &result(stranger, me),
        me,
        Uuid::now_v7(),
    )
    .await;
    reply(
        &genesis,
        queues::GENESIS_RULE_UPDATES_RESULTS,
        &result(Uuid::now_v7(), "singularity_2"),
        me,
        Uuid::now_v7(),
    )
    .await;
    // A malformed code result (more findings than issues counted).
    let mut bad = analysis("job_x", me);
    bad.metrics.issues_count = 0;
    let raw = OutgoingMessage::new(
        CodeExecutionResult::TYPE,
        serde_json::to_value(&bad).unwrap(),
    )
    .target(me);
    genesis
        .send_with_notify(&q(queues::CODE_EXECUTION_RESULTS), raw)
        .await
        .unwrap();

    let dead = wait_for("four dead rule results", DEADLINE, || async {
        let d = env.dlq(queues::GENESIS_RULE_UPDATES_RESULTS).await;
        (d.len() == 4).then_some(d)
    })
    .await;
    let errors: Vec<&str> = dead.iter().map(|d| d.error.as_str()).collect();
    for expected in [
        "malformed \"genesis_rule_update_result\" payload".to_string(),
        "unknown message type \"surprise\"".to_string(),
        format!("request {stranger}: singularity_1 sent no such rule_update request"),
        "for instance \"singularity_2\" delivered to singularity_1".to_string(),
    ] {
        assert!(
            errors.iter().any(|e| e.contains(&expected)),
            "{expected} not in {errors:?}"
        );
    }
    wait_for("the bad code result dead-lettered", DEADLINE, || async {
        env.dlq(queues::CODE_EXECUTION_RESULTS)
            .await
            .iter()
            .any(|d| {
                d.error
                    .contains("invalid \"code_execution_result\" payload")
            })
            .then_some(())
    })
    .await;

    // The consumer keeps going: a real request is still finished.
    let publisher = GenesisPublisher::new(env.sing.clone(), me).unwrap();
    let p = publisher
        .send_code_execution_request(CodeAnalysis {
            id: Some("job_ok".into()),
            code: "x = 1\n".into(),
            language: "python".into(),
            analysis_type: AnalysisType::Quality,
        })
        .await
        .unwrap();
    let ok = analysis("job_ok", me);
    reply(
        &genesis,
        queues::CODE_EXECUTION_RESULTS,
        &ok,
        me,
        p.trace_id,
    )
    .await;
    let r = finished(&env, RequestKind::CodeExecution, "job_ok").await;
    assert_eq!(r.state().unwrap(), RequestState::Completed);
    env.stop().await;
}
