//! The three services as processes.

use std::time::Duration;

use pgflow_core::testing::TestDb;
use system_tests::Service;

const SERVICES: &[(&str, &[&str])] = &[
    ("singularity", &["--instance-id", "singularity_2"]),
    ("centralcloud", &[]),
    ("genesis", &[]),
];

#[tokio::test]
async fn every_service_starts_reports_ready_and_exits_zero_on_sigterm() {
    let t = TestDb::new().await.unwrap();
    for (name, args) in SERVICES {
        let mut s = Service::spawn(name, args, &[("PGFLOW_DATABASE_URL", &t.url)]);
        let line = s
            .wait_for_line(&format!("{name} ready"), Duration::from_secs(30))
            .await;
        if *name == "singularity" {
            assert!(line.contains("instance=singularity_2"), "{line}");
        }
        assert_eq!(
            s.terminate(Duration::from_secs(15)).await,
            Some(0),
            "{name}"
        );
    }
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

#[tokio::test]
async fn services_report_an_unreachable_database() {
    for (name, args) in SERVICES {
        let mut s = Service::spawn(
            name,
            args,
            &[(
                "PGFLOW_DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/none",
            )],
        );
        s.wait_for_line("cannot connect to PostgreSQL", Duration::from_secs(30))
            .await;
        let status = tokio::time::timeout(Duration::from_secs(15), s.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(1), "{name}");
    }
}

#[tokio::test]
async fn pgflow_up_runs_with_a_private_postgres() {
    let mut s = Service::spawn("pgflow", &["up", "--once"], &[]);
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
