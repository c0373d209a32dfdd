//! The three services as processes.

use std::time::Duration;

use pgflow_core::testing::{wait_for, TestDb};
use system_tests::{get, http_addr_of, Service};

const SERVICES: &[(&str, &[&str])] = &[
    ("singularity", &["--instance-id", "singularity_2"]),
    ("centralcloud", &[]),
    ("genesis", &[]),
];

#[tokio::test]
async fn every_service_starts_reports_ready_and_exits_zero_on_sigterm() {
    let t = TestDb::new().await.unwrap();
    for (name, args) in SERVICES {
        let mut s = Service::spawn(
            name,
            args,
            &[
                ("PGFLOW_DATABASE_URL", &t.url),
                ("PGFLOW_DEPTH_SAMPLE_MS", "200"),
            ],
        );
        let line = s
            .wait_for_line(&format!("{name} ready"), Duration::from_secs(30))
            .await;
        if *name == "singularity" {
            assert!(line.contains("instance=singularity_2"), "{line}");
        }
        let addr = http_addr_of(&line);
        assert!(addr.ip().is_loopback(), "{name} binds {addr} by default");

        let r = get(addr, "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{name}");
        let r = get(addr, "/readyz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ready"), "{name}");
        // The depth sampler's first sample may land just after the ready
        // line, and it sets the gauges one queue after another.
        let series = r#"pgflow_queue_depth{queue="proposals_for_consensus_queue"}"#;
        let metrics = wait_for(
            &format!("{name}'s depth gauges"),
            Duration::from_secs(15),
            || async {
                let r = get(addr, "/metrics").await;
                (r.status == 200 && r.body.contains(series)).then_some(r)
            },
        )
        .await;
        assert!(
            metrics
                .header("content-type")
                .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
            "{name}: {:?}",
            metrics.headers
        );
        assert!(
            metrics
                .body
                .contains(r#"pgflow_queue_depth{queue="proposals_for_consensus_queue"} 0"#),
            "{name}: {}",
            metrics.body
        );

        assert_eq!(
            s.terminate(Duration::from_secs(15)).await,
            Some(0),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_taken_http_address_fails_with_the_flag_to_change() {
    let t = TestDb::new().await.unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut s = Service::spawn(
        "genesis",
        &[],
        &[("PGFLOW_DATABASE_URL", &t.url), ("PGFLOW_HTTP_ADDR", &addr)],
    );
    let line = s
        .wait_for_line("PGFLOW_HTTP_ADDR", Duration::from_secs(30))
        .await;
    assert!(
        line.contains(&addr) && line.contains("--http-addr"),
        "{line}"
    );
    let status = tokio::time::timeout(Duration::from_secs(15), s.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[tokio::test]
async fn services_refuse_an_unmigrated_database_with_the_fix() {
    let t = TestDb::empty().await.unwrap();
    for (name, args) in SERVICES {
        let mut s = Service::spawn(name, args, &[("PGFLOW_DATABASE_URL", &t.url)]);
        s.wait_for_line("pgflow init", Duration::from_secs(30))
            .await;
        let status = tokio::time::timeout(Duration::from_secs(15), s.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(1), "{name}");
    }
}

/// A server that answers and refuses the login (an unknown role) is not
/// waited for: the service exits 1 with the server's reason.
#[tokio::test]
async fn services_refused_by_the_server_exit_instead_of_waiting() {
    let t = TestDb::new().await.unwrap();
    let url = t.url_as("no_such_role");
    for (name, args) in SERVICES {
        let mut s = Service::spawn(name, args, &[("PGFLOW_DATABASE_URL", &url)]);
        s.wait_for_line("no_such_role", Duration::from_secs(30))
            .await;
        let status = tokio::time::timeout(Duration::from_secs(15), s.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(1), "{name}");
    }
}

/// A port where nothing listens (yet): bound once to pick it, then freed.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test database's URL with its port replaced by `port`.
fn url_on_port(t: &TestDb, port: u16) -> (String, std::net::SocketAddr) {
    let opts: sqlx::postgres::PgConnectOptions = t.url.parse().unwrap();
    let real = format!("{}:{}", opts.get_host(), opts.get_port());
    let url = t.url.replacen(&real, &format!("127.0.0.1:{port}"), 1);
    assert_ne!(url, t.url, "the test URL names {real}");
    (url, real.parse().unwrap())
}

/// Makes the database reachable on `port`: a TCP proxy to `real` (the
/// test server), started only now. Runs until the test ends.
async fn open_database_on(port: u16, real: std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(real).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
}

/// Started while PostgreSQL is unreachable, a service neither exits nor
/// claims readiness: it serves /healthz, answers /readyz with 503 and the
/// reason, and starts as soon as the database answers.
#[tokio::test]
async fn services_wait_for_the_database_and_start_when_it_answers() {
    let t = TestDb::new().await.unwrap();
    for (name, args) in SERVICES {
        let port = free_port();
        let (url, real) = url_on_port(&t, port);
        let mut s = Service::spawn(name, args, &[("PGFLOW_DATABASE_URL", &url)]);
        let line = s
            .wait_for_line(
                &format!("{name} waiting for the database"),
                Duration::from_secs(30),
            )
            .await;
        let addr = http_addr_of(&line);
        let r = get(addr, "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{name}");
        let r = get(addr, "/readyz").await;
        assert_eq!(r.status, 503, "{name}: {}", r.body);
        assert!(
            r.body.contains("waiting for the database") && r.body.contains("cannot connect"),
            "{name}: {}",
            r.body
        );
        // Each failed attempt is logged with the next delay.
        s.wait_for_line("retry_in", Duration::from_secs(30)).await;

        open_database_on(port, real).await;
        s.wait_for_line(&format!("{name} ready"), Duration::from_secs(30))
            .await;
        let r = get(addr, "/readyz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ready"), "{name}");
        assert_eq!(
            s.terminate(Duration::from_secs(15)).await,
            Some(0),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_service_waiting_for_the_database_exits_0_on_sigterm() {
    for (name, args) in SERVICES {
        let url = format!("postgres://postgres@127.0.0.1:{}/none", free_port());
        let mut s = Service::spawn(name, args, &[("PGFLOW_DATABASE_URL", &url)]);
        s.wait_for_line(
            &format!("{name} waiting for the database"),
            Duration::from_secs(30),
        )
        .await;
        let asked = std::time::Instant::now();
        assert_eq!(s.terminate(Duration::from_secs(5)).await, Some(0), "{name}");
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{name} took {:?}",
            asked.elapsed()
        );
    }
}

#[tokio::test]
async fn pgflow_up_runs_with_a_private_postgres() {
    let mut s = Service::spawn(
        "pgflow",
        &["up", "--once", "--dashboard-addr", "127.0.0.1:0"],
        &[],
    );
    s.wait_for_line("pgflow ready", Duration::from_secs(60))
        .await;
    s.wait_for_line("proposals_for_consensus_queue", Duration::from_secs(30))
        .await;
    let status = tokio::time::timeout(Duration::from_secs(30), s.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
