//! The HTTP API's token: with SINGULARITY_API_TOKEN set, POST /proposals,
//! GET /proposals/{id} and /status need it (either of the two rotation
//! tokens), the ops probes stay open, and a server bound beyond loopback
//! refuses to start without one.

use pgflow_core::protocol::queues;
use pgflow_core::service::{DatabaseArgs, HttpArgs};
use pgflow_core::testing::http_get;
use serde_json::Value;
use singularity::config::ApiArgs;
use singularity::{Error, Singularity};
use tokio_util::sync::CancellationToken;

use crate::support::{http_with, test_args, waiting, Env};

const CURRENT: &str = "current-token-0123456789";
const PREVIOUS: &str = "previous-token-0123456789";
const BODY: &str = r#"{"agent_type":"A","file":"a.rs","change":"x"}"#;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn proposals_and_status_need_one_of_the_two_tokens_probes_stay_open() {
    let env = Env::start_with(|a| {
        a.api = ApiArgs {
            api_token: Some(CURRENT.into()),
            api_token_previous: Some(PREVIOUS.into()),
        }
    })
    .await;
    let (old, new, wrong) = (
        bearer(PREVIOUS),
        bearer(CURRENT),
        bearer("wrong-token-0123456789"),
    );
    for auth in [
        None,
        Some(wrong.as_str()),
        Some("Basic YTpi"),
        Some(CURRENT),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let (status, body) = http_with(env.addr, "POST", "/proposals", &headers, BODY).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert!(body.contains("Bearer"), "{body}");
        let (status, _) = http_with(env.addr, "GET", "/status", &headers, "").await;
        assert_eq!(status, 401, "{auth:?}");
    }
    assert_eq!(waiting(&env.t, queues::PROPOSALS_FOR_CONSENSUS).await, 0);

    let mut ids = Vec::new();
    for auth in [&new, &old] {
        let (status, body) = http_with(
            env.addr,
            "POST",
            "/proposals",
            &[("Authorization", auth)],
            BODY,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        ids.push(v["proposal_id"].as_str().unwrap().to_string());
    }
    assert_eq!(waiting(&env.t, queues::PROPOSALS_FOR_CONSENSUS).await, 2);
    let path = format!("/proposals/{}", ids[0]);
    assert_eq!(http_with(env.addr, "GET", &path, &[], "").await.0, 401);
    let (status, body) = http_with(env.addr, "GET", &path, &[("Authorization", &old)], "").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        http_with(env.addr, "GET", "/status", &[("Authorization", &new)], "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("singularity_1"), "{body}");

    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            http_get(env.addr, open).await.unwrap().status,
            200,
            "{open}"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn a_server_beyond_loopback_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let args = test_args("singularity_1", &dir.path().join("ws"));
    // Refused before the database is touched: none is needed here.
    let db = DatabaseArgs {
        database_url: "postgres://singularity@127.0.0.1:1/none".into(),
        pool_size: 4,
    };
    let http = HttpArgs {
        http_addr: "0.0.0.0:0".parse().unwrap(),
        ..HttpArgs::default()
    };
    let err = Singularity::start(&db, &http, &args, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("SINGULARITY_API_TOKEN") && text.contains("0.0.0.0"),
        "{text}"
    );
}

#[tokio::test]
async fn the_binary_exits_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let run = |token: Option<&str>| {
        let mut cmd = tokio::process::Command::new(crate::cli::BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "PGFLOW_DATABASE_URL",
                "postgres://singularity@127.0.0.1:1/none",
            )
            .env("PGFLOW_HTTP_ADDR", "0.0.0.0:0")
            .env("SINGULARITY_WORKSPACE", dir.path().join("ws"));
        if let Some(t) = token {
            cmd.env("SINGULARITY_API_TOKEN", t);
        }
        cmd.output()
    };
    for token in [None, Some(""), Some("short")] {
        let out = run(token).await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{token:?}: {stderr}");
        assert!(
            stderr.contains("SINGULARITY_API_TOKEN"),
            "{token:?}: {stderr}"
        );
    }
}
