//! The HTTP API on the ops server: POST /proposals, GET /proposals/{id},
//! and GET /status with consumer states and proposals by state.

use pgflow_core::protocol::queues;
use pgflow_core::testing::{http_get, wait_for};
use serde_json::Value;

use crate::support::{http, Env, DEADLINE};

#[tokio::test]
async fn post_proposals_submits_and_refuses_bad_bodies_with_400() {
    let env = Env::start().await;
    let (status, body) = http(
        env.addr,
        "POST",
        "/proposals",
        r#"{"agent_type":"RefactoringAgent","file":"src/x.rs","change":"fn x() {}","risk_score":2.5}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["status"], "submitted");
    let id: uuid::Uuid = created["proposal_id"].as_str().unwrap().parse().unwrap();
    let p = env.proposal(id).await;
    assert_eq!(
        (p.agent_type.as_str(), p.risk_score),
        ("RefactoringAgent", 2.5)
    );
    assert_eq!(
        p.trace_id.to_string(),
        created["trace_id"].as_str().unwrap()
    );
    let (d, _) = env.cc_take_proposal().await;
    assert_eq!(d.trace_id, p.trace_id);

    let (status, body) = http(env.addr, "GET", &format!("/proposals/{id}"), "").await;
    assert_eq!(status, 200, "{body}");
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (shown["status"].as_str(), shown["file"].as_str()),
        (Some("submitted"), Some("src/x.rs"))
    );

    for (bad, why) in [
        ("{not json", "as JSON"),
        (r#"{"agent_type":"A","file":"a.rs"}"#, "change"),
        (
            r#"{"agent_type":"A","file":"a.rs","change":"x","extra":1}"#,
            "extra",
        ),
        (
            r#"{"agent_type":"A","file":"../a.rs","change":"x"}"#,
            "'..'",
        ),
        (
            r#"{"agent_type":"","file":"a.rs","change":"x"}"#,
            "agent_type",
        ),
        (
            r#"{"agent_type":"A","file":"a.rs","change":"x","risk_score":-3}"#,
            "risk_score",
        ),
        // PostgreSQL cannot store a NUL: refused at the door (never a 503).
        (
            r#"{"agent_type":"A","file":"a.rs","change":"x\u0000y"}"#,
            "NUL",
        ),
    ] {
        let (status, body) = http(env.addr, "POST", "/proposals", bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let err: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
        assert!(
            err["error"].as_str().unwrap().contains(why),
            "{bad}: {body}"
        );
    }
    let huge = format!(
        r#"{{"agent_type":"A","file":"a.rs","change":"{}"}}"#,
        "x".repeat(singularity::http::MAX_BODY_BYTES)
    );
    let (status, _) = http(env.addr, "POST", "/proposals", &huge).await;
    assert_eq!(status, 413);
    let (status, _) = http(env.addr, "GET", "/proposals/not-a-uuid", "").await;
    assert_eq!(status, 400);
    let (status, _) = http(
        env.addr,
        "GET",
        &format!("/proposals/{}", uuid::Uuid::nil()),
        "",
    )
    .await;
    assert_eq!(status, 404);
    // Only the valid one was stored.
    assert_eq!(
        crate::support::waiting(&env.t, queues::PROPOSALS_FOR_CONSENSUS).await,
        0
    );
    // The ops endpoints are still there.
    assert_eq!(http_get(env.addr, "/healthz").await.unwrap().body, "ok");
    env.stop().await;
}

#[tokio::test]
async fn get_status_shows_consumers_and_proposals_by_state() {
    let env = Env::start().await;
    env.propose("a.txt", "x", 1.0).await;
    let doc: Value = wait_for("status with one proposal", DEADLINE, || async {
        let r = http_get(env.addr, "/status").await.unwrap();
        let v: Value = serde_json::from_str(&r.body).ok()?;
        (v["proposals"]["submitted"] == 1).then_some(v)
    })
    .await;
    assert_eq!(doc["instance_id"], "singularity_1");
    let consumers = doc["consumers"].as_array().unwrap();
    let queues: Vec<&str> = consumers
        .iter()
        .map(|c| c["queue"].as_str().unwrap())
        .collect();
    assert_eq!(
        queues,
        [
            queues::CONSENSUS_VOTE_REQUESTS,
            queues::CONSENSUS_RESULTS,
            queues::PROPOSALS_FOR_EXECUTION,
            queues::ROLLBACK_TRIGGERS,
            queues::GUARDIAN_SAFETY_PROFILES,
            queues::GENESIS_RULE_UPDATES_RESULTS,
            queues::GENESIS_LLM_CONFIG_UPDATES_RESULTS,
            queues::CODE_EXECUTION_RESULTS,
        ]
    );
    assert!(consumers.iter().all(|c| c["target"] == "singularity_1"));
    assert_eq!(doc["queues"].as_array().unwrap().len(), 8);
    assert_eq!(doc["proposals"]["applied"], 0);
    assert_eq!(doc["genesis_requests"]["by_state"]["sent"], 0);
    env.stop().await;
}
