//! The dashboard's API against a real database: live numbers, series,
//! alerts, the DLQ with token-protected retry and purge, and journeys.

use std::net::SocketAddr;
use std::time::Duration;

use pgflow_core::dashboard::{self, AlertThresholds, DashboardConfig};
use pgflow_core::ops::{self, OpsState};
use pgflow_core::testing::{http_get, http_request, wait_for, HttpResponse};
use pgflow_core::{Failure, OutgoingMessage, Pgflow, QueueName};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::db;

pub(crate) const TOKEN: &str = "dashboard-test-token";

pub(crate) async fn start(pg: &Pgflow, token: Option<&str>) -> (SocketAddr, CancellationToken) {
    let stop = CancellationToken::new();
    let config = DashboardConfig {
        token: token.map(str::to_string),
        sample_every: Duration::from_millis(100),
        thresholds: AlertThresholds {
            dlq_max: 1,
            latency: Duration::from_secs(3600),
        },
        ..DashboardConfig::default()
    };
    let d = dashboard::serve(
        pg.clone(),
        config,
        "127.0.0.1:0".parse().unwrap(),
        OpsState::new(ops::install_recorder().unwrap()),
        stop.clone(),
    )
    .await
    .unwrap();
    (d.addr, stop)
}

async fn json_get(addr: SocketAddr, path: &str) -> Value {
    let r = http_get(addr, path).await.unwrap();
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

async fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> HttpResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("Authorization", b)])
        .unwrap_or_default();
    http_request(addr, "POST", path, &headers).await.unwrap()
}

/// Sends one message to `queue`, claims it and fails it fatally: one dead letter.
pub(crate) async fn dead_letter(pg: &Pgflow, queue: &QueueName, trace: Uuid) -> Uuid {
    let id = pg
        .send(
            queue,
            OutgoingMessage::new("test", json!({"n": 1})).trace_id(trace),
        )
        .await
        .unwrap();
    let d = pg.claim(queue, 1).await.unwrap().pop().unwrap();
    assert_eq!(d.id, id);
    pg.nack(d.receipt(), Failure::fatal("poison: cannot decode"))
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn page_and_live_numbers_change_as_messages_flow() {
    let t = db().await;
    let pg = &t.pgflow;
    let (addr, stop) = start(pg, None).await;

    let page = http_get(addr, "/").await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.contains("/assets/dashboard.js"));
    for asset in ["/assets/dashboard.js", "/assets/dashboard.css"] {
        assert_eq!(http_get(addr, asset).await.unwrap().status, 200, "{asset}");
    }
    assert_eq!(http_get(addr, "/readyz").await.unwrap().status, 200);

    // The 16 design queues are the edges; their numbers follow the queue.
    let o = json_get(addr, "/api/overview").await;
    assert_eq!(o["read_only"], true);
    assert_eq!(o["topology"]["edges"].as_array().unwrap().len(), 16);
    let q = QueueName::new("proposals_for_consensus_queue").unwrap();
    for n in 0..3 {
        pg.send(&q, OutgoingMessage::new("test", json!({ "n": n })))
            .await
            .unwrap();
    }
    wait_for(
        "depth 3 on the dashboard",
        Duration::from_secs(10),
        || async {
            let o = json_get(addr, "/api/overview").await;
            (o["queues"]["proposals_for_consensus_queue"]["pending"] == 3).then_some(())
        },
    )
    .await;

    // Acked messages show up as throughput and latency in the series.
    for d in pg.claim(&q, 3).await.unwrap() {
        pg.ack(d.receipt()).await.unwrap();
    }
    wait_for(
        "throughput in the series",
        Duration::from_secs(10),
        || async {
            let s = json_get(addr, "/api/series?queue=proposals_for_consensus_queue").await;
            let acked: i64 = s["points"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["queues"]["proposals_for_consensus_queue"]["processed"].as_i64())
                .sum();
            let latency =
                s["points"].as_array().unwrap().iter().any(|p| {
                    p["queues"]["proposals_for_consensus_queue"]["latency_ms"].is_number()
                });
            (acked == 3 && latency).then_some(())
        },
    )
    .await;
    let o = json_get(addr, "/api/overview").await;
    assert_eq!(o["queues"]["proposals_for_consensus_queue"]["pending"], 0);

    // Bad input: a clear 400, nothing else.
    let r = http_get(addr, "/api/series?queue=Robert');DROP")
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("invalid queue name"), "{}", r.body);
    let r = http_get(addr, "/api/journey?id=not-a-uuid").await.unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http_get(addr, "/api/dlq?limit=100000").await.unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    stop.cancel();
}

#[tokio::test]
async fn dlq_retry_and_purge_need_the_token_and_alerts_fire() {
    let t = db().await;
    let pg = &t.pgflow;
    let q = QueueName::new("metrics_to_guardian_queue").unwrap();
    let first = dead_letter(pg, &q, Uuid::new_v4()).await;
    let second = dead_letter(pg, &q, Uuid::new_v4()).await;

    // Read-only without a token configured.
    let (ro, stop_ro) = start(pg, None).await;
    let r = post(ro, &format!("/api/dlq/{first}/retry"), Some(TOKEN)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("read-only"), "{}", r.body);
    stop_ro.cancel();

    let (addr, stop) = start(pg, Some(TOKEN)).await;
    let list = json_get(addr, "/api/dlq?queue=metrics_to_guardian_queue").await;
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["error"], "poison: cannot decode");
    assert!(rows[0]["history"].as_array().is_some_and(|h| !h.is_empty()));

    // 2 dead letters > threshold 1: the alert fires.
    wait_for("the DLQ alert", Duration::from_secs(10), || async {
        let a = json_get(addr, "/api/alerts").await;
        a["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "DlqTooLarge" && a["queue"] == "metrics_to_guardian_queue")
            .then_some(())
    })
    .await;

    // Without or with a wrong token: refused, nothing changes.
    for token in [None, Some("wrong-token-123")] {
        let r = post(addr, &format!("/api/dlq/{first}/retry"), token).await;
        assert_eq!(r.status, 401, "{}", r.body);
        let r = post(addr, "/api/dlq/purge", token).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    assert_eq!(pg.list_dlq_messages(None, 10).await.unwrap().len(), 2);

    // With the token: the message is back on its queue, with its history.
    let r = post(addr, &format!("/api/dlq/{first}/retry"), Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let back = pg.claim(&q, 1).await.unwrap().pop().unwrap();
    assert_eq!(back.id, first);
    let r = post(addr, &format!("/api/dlq/{first}/retry"), Some(TOKEN)).await;
    assert_eq!(r.status, 404, "{}", r.body);

    let r = post(
        addr,
        "/api/dlq/purge?queue=metrics_to_guardian_queue",
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["purged"], 1);
    assert!(pg.list_dlq_messages(None, 10).await.unwrap().is_empty());
    let _ = second;
    stop.cancel();
}

#[tokio::test]
async fn journey_by_trace_id_and_by_proposal_id() {
    let t = db().await;
    let pg = &t.pgflow;
    let (addr, stop) = start(pg, None).await;
    let trace = Uuid::new_v4();
    let proposal = Uuid::new_v4();
    let p4c = QueueName::new("proposals_for_consensus_queue").unwrap();
    let votes = QueueName::new("consensus_vote_requests_queue").unwrap();
    pg.send(
        &p4c,
        OutgoingMessage::new("proposal_for_consensus", json!({ "proposal_id": proposal }))
            .trace_id(trace)
            .source("singularity_1"),
    )
    .await
    .unwrap();
    let d = pg.claim(&p4c, 1).await.unwrap().pop().unwrap();
    pg.ack(d.receipt()).await.unwrap();
    pg.send(
        &votes,
        OutgoingMessage::new("vote_request", json!({ "proposal_id": proposal }))
            .trace_id(trace)
            .target("singularity_2"),
    )
    .await
    .unwrap();
    // Unrelated traffic stays out of the journey.
    pg.send(
        &p4c,
        OutgoingMessage::new("proposal_for_consensus", json!({})),
    )
    .await
    .unwrap();

    for (id, by_proposal) in [(trace, false), (proposal, true)] {
        let j = json_get(addr, &format!("/api/journey?id={id}")).await;
        assert_eq!(j["trace_id"], trace.to_string(), "{j}");
        assert_eq!(j["by_proposal"], by_proposal, "{j}");
        let hops = j["hops"].as_array().unwrap();
        let seen: Vec<(&str, &str)> = hops
            .iter()
            .map(|h| {
                (
                    h["queue_name"].as_str().unwrap(),
                    h["state"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("proposals_for_consensus_queue", "done"),
                ("consensus_vote_requests_queue", "pending")
            ],
            "{j}"
        );
        assert_eq!(hops[0]["producer"], "singularity");
        assert_eq!(hops[0]["consumer"], "centralcloud");
    }
    let none = json_get(addr, &format!("/api/journey?id={}", Uuid::new_v4())).await;
    assert!(none["hops"].as_array().unwrap().is_empty());
    assert!(none["trace_id"].is_null());
    stop.cancel();
}
