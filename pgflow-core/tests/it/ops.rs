//! The ops HTTP server (`/healthz`, `/readyz`, `/metrics`, `/status`), the
//! Prometheus recorder and the queue-depth sampler.

use std::net::SocketAddr;
use std::time::Duration;

use pgflow_core::ops::{self, OpsState};
use pgflow_core::testing::{http_get, wait_for};
use pgflow_core::Error;
use tokio_util::sync::CancellationToken;

use crate::support::{db, msg, queue};

const ANY_PORT: &str = "127.0.0.1:0";

/// The value of the sample `series` (name with labels) in a scrape body.
fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn endpoints_report_health_readiness_metrics_and_status() {
    let t = db().await;
    let pg = &t.pgflow;
    let handle = ops::install_recorder().unwrap();
    let state = OpsState::new(handle).with_database(pg.clone());
    let shutdown = CancellationToken::new();
    let (addr, server) = ops::serve(ANY_PORT.parse().unwrap(), state.clone(), shutdown.clone())
        .await
        .unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let r = http_get(addr, "/healthz").await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));

    let r = http_get(addr, "/readyz").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.starts_with("not ready"), "{}", r.body);
    state.set_ready(true);
    let r = http_get(addr, "/readyz").await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "ready"));

    // A counter incremented here shows up in the scrape.
    metrics::counter!("pgflow_ops_test_total", "case" => "endpoints").increment(3);
    let r = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(r.status, 200);
    let content_type = r.header("content-type").unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert_eq!(
        metric_value(&r.body, r#"pgflow_ops_test_total{case="endpoints"}"#),
        Some(3.0),
        "{}",
        r.body
    );

    // The sampler turns queue statistics into gauges.
    let q = queue(pg, "ops_depth_endpoints", 3).await;
    pg.send(&q, msg(1)).await.unwrap();
    pg.send(&q, msg(2)).await.unwrap();
    let sampler = ops::spawn_depth_sampler(pg.clone(), Duration::from_millis(20), shutdown.clone());
    let body = wait_for("the depth gauge of 2", Duration::from_secs(10), || async {
        let body = http_get(addr, "/metrics").await.ok()?.body;
        let depth = metric_value(&body, r#"pgflow_queue_depth{queue="ops_depth_endpoints"}"#);
        (depth == Some(2.0)).then_some(body)
    })
    .await;
    assert_eq!(
        metric_value(&body, r#"pgflow_dlq_messages{queue="ops_depth_endpoints"}"#),
        Some(0.0)
    );
    assert!(body.contains("# TYPE pgflow_queue_depth gauge"), "{body}");

    let r = http_get(addr, "/status").await.unwrap();
    assert_eq!(r.status, 404);
    state.set_status_provider(|| serde_json::json!({ "consumers": 0 }));
    let r = http_get(addr, "/status").await.unwrap();
    assert_eq!(r.status, 200);
    let status: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(status, serde_json::json!({ "consumers": 0 }));

    let r = http_get(addr, "/nope").await.unwrap();
    assert_eq!(r.status, 404);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops on cancel")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), sampler)
        .await
        .expect("sampler stops on cancel")
        .unwrap();
    assert!(http_get(addr, "/healthz").await.is_err(), "still serving");
}

#[tokio::test]
async fn install_recorder_is_idempotent() {
    let first = ops::install_recorder().unwrap();
    let second = ops::install_recorder().unwrap();
    metrics::counter!("pgflow_ops_test_total", "case" => "idempotent").increment(1);
    for h in [&first, &second] {
        assert_eq!(
            metric_value(&h.render(), r#"pgflow_ops_test_total{case="idempotent"}"#),
            Some(1.0)
        );
    }
}

#[tokio::test]
async fn seconds_histograms_have_buckets_from_half_a_millisecond_to_30_s() {
    let h = ops::install_recorder().unwrap();
    metrics::histogram!("pgflow_ops_test_seconds", "case" => "buckets").record(0.003);
    let body = h.render();
    for (le, count) in [("0.0005", 0.0), ("0.005", 1.0), ("30", 1.0), ("+Inf", 1.0)] {
        let series = format!(r#"pgflow_ops_test_seconds_bucket{{case="buckets",le="{le}"}}"#);
        assert_eq!(
            metric_value(&body, &series),
            Some(count),
            "{series}\n{body}"
        );
    }
}

#[tokio::test]
async fn readyz_and_the_sampler_survive_a_lost_database() {
    let t = db().await;
    let pg = t.pgflow.clone();
    let state = OpsState::new(ops::install_recorder().unwrap()).with_database(pg.clone());
    state.set_ready(true);
    let shutdown = CancellationToken::new();
    let (addr, server) = ops::serve(ANY_PORT.parse().unwrap(), state, shutdown.clone())
        .await
        .unwrap();
    assert_eq!(http_get(addr, "/readyz").await.unwrap().status, 200);

    pg.close().await;
    let r = http_get(addr, "/readyz").await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.body.contains("database"), "{}", r.body);
    assert_eq!(http_get(addr, "/healthz").await.unwrap().status, 200);

    // Every sample fails; the sampler counts the failures, keeps going and stops cleanly.
    let handle = ops::install_recorder().unwrap();
    let errors =
        || metric_value(&handle.render(), "pgflow_depth_sample_errors_total").unwrap_or(0.0);
    let before = errors();
    let sampler = ops::spawn_depth_sampler(pg, Duration::from_millis(10), shutdown.clone());
    wait_for("two failed samples", Duration::from_secs(10), || async {
        (errors() >= before + 2.0).then_some(())
    })
    .await;
    assert!(!sampler.is_finished(), "the sampler gave up");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), sampler)
        .await
        .expect("sampler stops on cancel")
        .expect("sampler did not panic");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops on cancel")
        .unwrap();
}

#[tokio::test]
async fn a_taken_address_names_the_address_and_the_flag() {
    let taken = std::net::TcpListener::bind(ANY_PORT).unwrap();
    let addr: SocketAddr = taken.local_addr().unwrap();
    let state = OpsState::new(ops::install_recorder().unwrap());
    let err = ops::serve(addr, state, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::HttpBind { addr: a, .. } if a == addr),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&addr.to_string()), "{text}");
    assert!(
        text.contains("--http-addr") && text.contains("PGFLOW_HTTP_ADDR"),
        "{text}"
    );
}
