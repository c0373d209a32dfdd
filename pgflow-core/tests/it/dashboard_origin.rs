//! The dashboard against DNS rebinding and cross-origin reads: a foreign
//! `Host` or `Origin` is refused (403) without the token, loopback names
//! are served, and the ops probes stay open.

use pgflow_core::testing::{http_request, HttpResponse};
use pgflow_core::QueueName;
use uuid::Uuid;

use crate::dashboard::{dead_letter, start, TOKEN};
use crate::support::db;

async fn get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(addr, "GET", path, headers).await.unwrap()
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_refused_without_the_token() {
    let t = db().await;
    let pg = &t.pgflow;
    let (addr, stop) = start(pg, Some(TOKEN)).await;
    let queue = QueueName::new("metrics_to_guardian_queue").unwrap();
    dead_letter(pg, &queue, Uuid::now_v7()).await;
    let port = addr.port();
    let (evil, local) = (format!("evil.example:{port}"), format!("localhost:{port}"));
    let own = format!("http://{addr}");
    let bearer = format!("Bearer {TOKEN}");

    // DNS rebinding: the browser names the attacker's host.
    for path in ["/api/dlq", "/api/overview", "/"] {
        let r = get(addr, path, &[("Host", &evil)]).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(r.body.contains("evil.example"), "{}", r.body);
        assert!(!r.body.contains("poison"), "{}", r.body);
    }
    // A page elsewhere asking across origins.
    let r = get(addr, "/api/dlq", &[("Origin", "http://evil.example")]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http_request(
        addr,
        "POST",
        "/api/dlq/purge",
        &[("Origin", "http://evil.example")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);

    // Loopback names and the page's own origin are served.
    for headers in [
        vec![],
        vec![("Host", local.as_str())],
        vec![("Host", "127.0.0.1")],
        vec![("Origin", own.as_str())],
    ] {
        let r = get(addr, "/api/dlq", &headers).await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.body);
        assert!(r.body.contains("poison"), "{}", r.body);
    }
    // With the token, a foreign name or origin is not a tricked browser.
    let r = get(
        addr,
        "/api/dlq",
        &[
            ("Host", &evil),
            ("Origin", "http://evil.example"),
            ("Authorization", &bearer),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The probes stay open.
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let r = get(addr, probe, &[("Host", &evil)]).await;
        assert_eq!(r.status, 200, "{probe}: {}", r.body);
    }
    stop.cancel();
}
