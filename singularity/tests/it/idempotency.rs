//! Idempotent submissions: a POST /proposals repeated with the same
//! idempotency key (header or field), also concurrently, is answered with
//! the first proposal and submits nothing; the same key with a different
//! change is refused.

use std::collections::HashSet;
use std::net::SocketAddr;

use pgflow_core::protocol::queues;
use serde_json::Value;
use singularity::proposals::submit_or_spool;
use singularity::submission_spool::SubmissionSpool;
use singularity::{Error, NewProposal};

use crate::support::{http_with, waiting, Env};

const BODY: &str = r#"{"agent_type":"A","file":"a.rs","change":"x"}"#;

async fn post(env: &Env, key: Option<&str>, body: &str) -> (u16, Value) {
    post_to(env.addr, key, body).await
}

async fn post_to(addr: SocketAddr, key: Option<&str>, body: &str) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = key.iter().map(|k| ("Idempotency-Key", *k)).collect();
    let (status, text) = http_with(addr, "POST", "/proposals", &headers, body).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn stored_with_key(env: &Env, key: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM singularity.proposals WHERE idempotency_key = $1")
        .bind(key)
        .fetch_one(env.t.pgflow.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_repeat_is_answered_with_the_first_proposal() {
    let env = Env::start().await;
    let (status, first) = post(&env, Some("retry-1"), BODY).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first.get("repeat"), None);
    let (status, again) = post(&env, Some("retry-1"), BODY).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["proposal_id"], first["proposal_id"]);
    assert_eq!(again["trace_id"], first["trace_id"]);
    assert_eq!(again["repeat"], true);
    // The key as a field is the same key.
    let field = r#"{"agent_type":"A","file":"a.rs","change":"x","idempotency_key":"retry-1"}"#;
    let (status, by_field) = post(&env, None, field).await;
    assert_eq!(
        (status, &by_field["proposal_id"]),
        (200, &first["proposal_id"])
    );
    // Same key, other change: refused, nothing stored.
    let other = r#"{"agent_type":"A","file":"a.rs","change":"y"}"#;
    let (status, refused) = post(&env, Some("retry-1"), other).await;
    assert_eq!(status, 422, "{refused}");
    let why = refused["error"].as_str().unwrap();
    assert!(
        why.contains("retry-1") && why.contains("different"),
        "{why}"
    );
    // Header and field disagree; a bad key.
    let (status, _) = post(&env, Some("retry-2"), field).await;
    assert_eq!(status, 400);
    let (status, bad) = post(
        &env,
        None,
        r#"{"agent_type":"A","file":"a.rs","change":"x","idempotency_key":""}"#,
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    // Without a key, a repeat is a new proposal (as before).
    assert_eq!(post(&env, None, BODY).await.0, 201);
    assert_eq!(stored_with_key(&env, "retry-1").await, 1);
    assert_eq!(waiting(&env.t, queues::PROPOSALS_FOR_CONSENSUS).await, 2);
    env.stop().await;
}

#[tokio::test]
async fn concurrent_repeats_create_one_proposal() {
    let env = Env::start().await;
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..8 {
        burst.spawn(post_to(env.addr, Some("burst-1"), BODY));
    }
    let answers = burst.join_all().await;
    let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 200, 201],
        "{answers:?}"
    );
    let ids: HashSet<&str> = answers
        .iter()
        .map(|(_, v)| v["proposal_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(stored_with_key(&env, "burst-1").await, 1);
    assert_eq!(waiting(&env.t, queues::PROPOSALS_FOR_CONSENSUS).await, 1);
    env.stop().await;
}

#[tokio::test]
async fn a_repeat_during_an_outage_is_answered_with_the_spooled_one() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SubmissionSpool::open(dir.path().join("ws.spool"), 10).unwrap();
    let dead = crate::spool::unreachable();
    let p = NewProposal {
        agent_type: "A".into(),
        file: "a.rs".into(),
        change: "x".into(),
        impact_score: 5.0,
        risk_score: 1.0,
        cost_factor: 1.0,
        idempotency_key: Some("outage-1".into()),
    };
    let first = submit_or_spool(&dead, &spool, "singularity_1", p.clone())
        .await
        .unwrap();
    assert_eq!((first.status.as_str(), first.repeat), ("spooled", false));
    let again = submit_or_spool(&dead, &spool, "singularity_1", p.clone())
        .await
        .unwrap();
    assert_eq!((again.proposal_id, again.repeat), (first.proposal_id, true));
    assert_eq!(spool.len(), 1);
    let other = NewProposal {
        change: "y".into(),
        ..p
    };
    let refused = submit_or_spool(&dead, &spool, "singularity_1", other)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::IdempotencyConflict(_)),
        "{refused}"
    );
    assert_eq!(spool.len(), 1);
}

#[tokio::test]
async fn propose_with_the_same_key_prints_the_first_proposal() {
    let t = pgflow_core::testing::TestDb::new().await.unwrap();
    t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
        .await
        .unwrap();
    // The CLI runs as singularity_3 (crate::cli::run), logged in as its role.
    let url = t
        .instance_url("singularity_3", "singularity")
        .await
        .unwrap();
    let args = [
        "propose",
        "--agent-type",
        "A",
        "--file",
        "a.rs",
        "--change",
        "x",
        "--idempotency-key",
        "cli-1",
    ];
    let (code, first, err) = crate::cli::run(&args, &url).await;
    assert_eq!(code, 0, "{err}");
    let (code, again, err) = crate::cli::run(&args, &url).await;
    assert_eq!(code, 0, "{err}");
    let id = crate::cli::field(first.trim(), "proposal_id");
    assert_eq!(crate::cli::field(again.trim(), "proposal_id"), id);
    assert!(again.contains("repeat=true"), "{again}");
    assert!(!first.contains("repeat"), "{first}");
}
