//! The genesis publisher: learned rules at or above the confidence, LLM
//! configurations and code analysis jobs are sent as valid requests (read
//! back by Genesis, played as role `genesis`) and stored as `sent` in the
//! transaction that sends them.

use std::collections::BTreeMap;

use pgflow_core::protocol::{
    self, queues, AnalysisType, CodeExecutionRequest, Complexity, GenesisLlmConfigUpdate,
    GenesisRuleUpdate,
};
use pgflow_core::testing::TestDb;
use pgflow_core::{Delivery, Pgflow};
use singularity::genesis_publisher::{Overrides, Published};
use singularity::genesis_requests::{self, GenesisRequest, RequestKind, RequestState};
use singularity::{CodeAnalysis, Error, GenesisPublisher, LlmConfig};
use uuid::Uuid;

use crate::support::{claim, waiting, Env};

/// Stores `applied` applied and `rolled_back` rolled-back proposals of
/// `agent` at `instance` (files cycle through `files`), as admin.
pub async fn outcomes(
    t: &TestDb,
    instance: &str,
    agent: &str,
    files: &[&str],
    applied: usize,
    rolled_back: usize,
) {
    let statuses = std::iter::repeat_n("applied", applied)
        .chain(std::iter::repeat_n("rolled_back", rolled_back));
    for (i, status) in statuses.enumerate() {
        sqlx::query(
            "INSERT INTO singularity.proposals
                 (id, instance_id, agent_type, file, change, impact_score, risk_score, status,
                  trace_id, applied_at, rolled_back_at)
             VALUES ($1, $2, $3, $4, 'x', 5, 1, $5, $6, now(),
                     CASE WHEN $5 = 'rolled_back' THEN now() END)",
        )
        .bind(Uuid::now_v7())
        .bind(instance)
        .bind(agent)
        .bind(files[i % files.len()])
        .bind(status)
        .bind(Uuid::now_v7())
        .execute(t.pgflow.pool())
        .await
        .unwrap();
    }
}

/// Proposals of `agent` at `instance` in a state that is not an outcome.
async fn undecided(t: &TestDb, instance: &str, agent: &str) {
    for status in ["submitted", "consensus_failed", "failed", "executing"] {
        sqlx::query(
            "INSERT INTO singularity.proposals
                 (id, instance_id, agent_type, file, change, impact_score, risk_score, status, trace_id)
             VALUES ($1, $2, $3, 'u.rs', 'x', 5, 1, $4, $5)",
        )
        .bind(Uuid::now_v7())
        .bind(instance)
        .bind(agent)
        .bind(status)
        .bind(Uuid::now_v7())
        .execute(t.pgflow.pool())
        .await
        .unwrap();
    }
}

/// The stored request, read as admin.
pub async fn request(t: &TestDb, instance: &str, kind: RequestKind, id: &str) -> GenesisRequest {
    let mut conn = t.pgflow.pool().acquire().await.unwrap();
    genesis_requests::get(&mut conn, instance, kind, id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{kind} request {id} stored"))
}

/// Genesis takes `n` requests from `queue`, and checks nothing else waits.
pub async fn take(genesis: &Pgflow, t: &TestDb, queue: &str, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(claim(genesis, queue, None).await);
    }
    assert_eq!(waiting(t, queue).await, 0, "only {n} requests on {queue}");
    out
}

/// Checks that `d` is the request `p` sent with id `request_id`, as stored.
async fn check_sent(env: &Env, p: &Published, d: &Delivery, kind: RequestKind, request_id: &str) {
    assert_eq!(d.trace_id, p.trace_id);
    assert_eq!(d.source.as_deref(), Some(env.id.as_str()));
    assert_eq!(d.target, "", "requests to genesis are competing");
    let sent = p
        .requests
        .iter()
        .find(|r| r.request_id == request_id)
        .expect("listed in the result");
    assert_eq!((sent.kind, sent.status), (kind, RequestState::Sent));
    assert_eq!(sent.message_id, d.id);
    let row = request(&env.t, &env.id, kind, request_id).await;
    assert_eq!(row.state().unwrap(), RequestState::Sent);
    assert_eq!((row.message_id, row.trace_id), (d.id, d.trace_id));
    assert_eq!(row.payload, d.payload);
    assert_eq!(row.queue_name, d.queue_name);
    assert!(row.result.is_none() && row.finished_at.is_none());
}

#[tokio::test]
async fn publish_rules_sends_only_the_rules_that_reach_the_confidence() {
    let env = Env::start().await;
    let t = &env.t;
    let me = env.id.as_str();
    outcomes(t, me, "BugFixerAgent", &["a.rs", "b.PY", "Makefile"], 4, 0).await; // 1.0
    outcomes(t, me, "PerfOptimizerAgent", &["p.rs"], 9, 1).await; // 0.9
    outcomes(t, me, "RefactoringAgent", &["r.ex"], 3, 1).await; // 0.75
    outcomes(t, me, "RecklessAgent", &["x.rs"], 0, 2).await; // no kept change: no rule
    undecided(t, me, "UndecidedAgent").await; // no outcome: no rule
    undecided(t, me, "BugFixerAgent").await; // does not change its rate
                                             // Another instance's record is not this one's.
    outcomes(t, "singularity_2", "BugFixerAgent", &["a.rs"], 0, 5).await;
    outcomes(t, "singularity_2", "OtherAgent", &["o.rs"], 5, 0).await;

    let publisher = GenesisPublisher::new(env.sing.clone(), me).unwrap();
    let learned: BTreeMap<String, f64> = publisher
        .learned_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.agent_type, r.confidence))
        .collect();
    assert_eq!(
        learned,
        BTreeMap::from([
            ("BugFixerAgent".to_string(), 1.0),
            ("PerfOptimizerAgent".to_string(), 0.9),
            ("RefactoringAgent".to_string(), 0.75),
        ])
    );

    let p = publisher.publish_rules(0.8).await.unwrap();
    assert_eq!(p.requests.len(), 2, "{p:?}");
    let genesis = t.connect_as("genesis").await.unwrap();
    let mut sent = BTreeMap::new();
    for d in take(&genesis, t, queues::GENESIS_RULE_UPDATES, 2).await {
        let u: GenesisRuleUpdate = protocol::decode(&d).expect("a valid genesis_rule_update");
        assert_eq!(u.instance_id, me);
        assert!(u.confidence >= 0.8);
        check_sent(
            &env,
            &p,
            &d,
            RequestKind::RuleUpdate,
            &u.request_id.to_string(),
        )
        .await;
        sent.insert(u.namespace.clone(), u);
    }
    let names: Vec<&str> = sent.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "singularity.BugFixerAgent",
            "singularity.PerfOptimizerAgent"
        ]
    );
    let bug = &sent["singularity.BugFixerAgent"];
    assert_eq!(bug.confidence, 1.0);
    assert_eq!(bug.rule["name"], "bug_fix_changes");
    assert_eq!(bug.rule["condition"]["agent_type"], "BugFixerAgent");
    assert_eq!(
        bug.rule["condition"]["file_extensions"],
        serde_json::json!(["py", "rs"])
    );
    assert_eq!(bug.rule["action"]["apply_pattern"], "bug_fix");
    assert_eq!(bug.rule["evidence"]["applied"], 4);
    let perf = &sent["singularity.PerfOptimizerAgent"];
    assert_eq!(perf.confidence, 0.9);
    assert_eq!(perf.rule["evidence"]["rolled_back"], 1);
    assert_ne!(bug.request_id, perf.request_id, "one request id per rule");

    // A higher floor sends fewer; everything at 0; an impossible floor is refused.
    let p = publisher.publish_rules(0.95).await.unwrap();
    assert_eq!(p.requests.len(), 1);
    assert_eq!(
        p.requests[0].detail["namespace"],
        "singularity.BugFixerAgent"
    );
    let p = publisher.publish_rules(0.0).await.unwrap();
    assert_eq!(p.requests.len(), 3);
    let e = publisher.publish_rules(1.5).await.unwrap_err();
    assert!(matches!(e, Error::InvalidRequest(_)), "{e}");
    take(&genesis, t, queues::GENESIS_RULE_UPDATES, 4).await;

    // An instance without outcomes learned nothing: nothing sent, nothing stored.
    let fresh = GenesisPublisher::new(env.sing.clone(), "singularity_9").unwrap();
    assert!(fresh.publish_rules(0.0).await.unwrap().requests.is_empty());
    let mut conn = t.pgflow.pool().acquire().await.unwrap();
    let counts = genesis_requests::counts(&mut conn, me).await.unwrap();
    assert_eq!(counts.by_state[&RequestState::Sent], 6);
    assert_eq!(
        counts.by_kind[&RequestKind::RuleUpdate][&RequestState::Sent],
        6
    );
    let none = genesis_requests::counts(&mut conn, "singularity_9")
        .await
        .unwrap();
    assert_eq!(none.by_state[&RequestState::Sent], 0);
    drop(conn);
    env.stop().await;
}

#[tokio::test]
async fn llm_configurations_and_analysis_jobs_are_sent_and_stored() {
    let env = Env::start().await;
    let t = &env.t;
    let publisher = GenesisPublisher::new(env.sing.clone(), &env.id).unwrap();
    let genesis = t.connect_as("genesis").await.unwrap();

    // The defaults: claude, one request per complexity.
    let p = publisher
        .publish_llm_config_rules(&LlmConfig::defaults())
        .await
        .unwrap();
    assert_eq!(p.requests.len(), 3);
    let mut complexities = Vec::new();
    for d in take(&genesis, t, queues::GENESIS_LLM_CONFIG_UPDATES, 3).await {
        let u: GenesisLlmConfigUpdate = protocol::decode(&d).expect("a valid update");
        assert_eq!(
            (u.instance_id.as_str(), u.provider.as_str()),
            (env.id.as_str(), "claude")
        );
        assert!(!u.models.is_empty());
        check_sent(
            &env,
            &p,
            &d,
            RequestKind::LlmConfigUpdate,
            &u.request_id.to_string(),
        )
        .await;
        complexities.push(u.complexity);
    }
    assert_eq!(
        complexities,
        [Complexity::Simple, Complexity::Medium, Complexity::Complex]
    );

    // A configuration from flags.
    let config = LlmConfig::resolve(
        None,
        Overrides {
            provider: Some("openai".into()),
            complexity: Some(Complexity::Complex),
            models: Some(vec!["gpt-5".into(), "gpt-5-mini".into()]),
        },
    )
    .unwrap();
    let p = publisher.publish_llm_config_rules(&config).await.unwrap();
    let d = take(&genesis, t, queues::GENESIS_LLM_CONFIG_UPDATES, 1)
        .await
        .remove(0);
    let u: GenesisLlmConfigUpdate = protocol::decode(&d).unwrap();
    assert_eq!(
        (u.provider.as_str(), u.complexity),
        ("openai", Complexity::Complex)
    );
    assert_eq!(u.models, ["gpt-5", "gpt-5-mini"]);
    check_sent(
        &env,
        &p,
        &d,
        RequestKind::LlmConfigUpdate,
        &u.request_id.to_string(),
    )
    .await;

    // A code analysis job.
    let code = "import os\nos.system(user_input)\n";
    let job = CodeAnalysis {
        id: Some("job_1".into()),
        code: code.into(),
        language: "python".into(),
        analysis_type: AnalysisType::Security,
    };
    let p = publisher
        .send_code_execution_request(job.clone())
        .await
        .unwrap();
    assert_eq!(p.requests[0].request_id, "job_1");
    let d = take(&genesis, t, queues::CODE_EXECUTION_REQUESTS, 1)
        .await
        .remove(0);
    let r: CodeExecutionRequest = protocol::decode(&d).expect("a valid code_execution_request");
    assert_eq!(
        (
            r.id.as_str(),
            r.code.as_str(),
            r.language.as_str(),
            r.analysis_type
        ),
        ("job_1", code, "python", AnalysisType::Security)
    );
    assert_eq!(r.instance_id.as_deref(), Some(env.id.as_str()));
    check_sent(&env, &p, &d, RequestKind::CodeExecution, "job_1").await;

    // Without an id, a fresh one.
    let p = publisher
        .send_code_execution_request(CodeAnalysis {
            id: None,
            ..job.clone()
        })
        .await
        .unwrap();
    assert!(p.requests[0].request_id.starts_with("job_"));
    take(&genesis, t, queues::CODE_EXECUTION_REQUESTS, 1).await;

    // Refused: the same job id again, empty code, an empty model list.
    // Nothing is sent or stored.
    let e = publisher
        .send_code_execution_request(job.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidRequest(m) if m.contains("already used")),
        "{e}"
    );
    let e = publisher
        .send_code_execution_request(CodeAnalysis {
            id: Some("job_empty".into()),
            code: String::new(),
            ..job
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidRequest(m) if m.contains("code")),
        "{e}"
    );
    let mut bad = LlmConfig::defaults();
    bad.entries[0].models.clear();
    assert!(publisher.publish_llm_config_rules(&bad).await.is_err());
    assert_eq!(waiting(t, queues::CODE_EXECUTION_REQUESTS).await, 0);
    assert_eq!(waiting(t, queues::GENESIS_LLM_CONFIG_UPDATES).await, 0);
    let mut conn = t.pgflow.pool().acquire().await.unwrap();
    let counts = genesis_requests::counts(&mut conn, &env.id).await.unwrap();
    assert_eq!(
        counts.by_kind[&RequestKind::LlmConfigUpdate][&RequestState::Sent],
        4
    );
    assert_eq!(
        counts.by_kind[&RequestKind::CodeExecution][&RequestState::Sent],
        2
    );
    assert!(
        genesis_requests::get(&mut conn, &env.id, RequestKind::CodeExecution, "job_empty")
            .await
            .unwrap()
            .is_none()
    );
    drop(conn);
    env.stop().await;
}
