//! Submissions while PostgreSQL is unreachable: kept in the local spool,
//! bounded, durable across a restart, and submitted in order with their
//! ids once the database is back, each once.

use std::time::Duration;

use pgflow_core::testing::TestDb;
use pgflow_core::{Pgflow, PgflowOptions};
use singularity::proposals::submit_or_spool;
use singularity::submission_spool::SubmissionSpool;
use singularity::{Error, NewProposal};
use sqlx::postgres::PgPoolOptions;

fn proposal(i: usize, file: &str) -> NewProposal {
    NewProposal {
        agent_type: "BugFixerAgent".into(),
        file: file.into(),
        change: format!("fix {i}\n"),
        impact_score: 5.0,
        risk_score: 1.0,
        cost_factor: 1.0,
        idempotency_key: None,
    }
}

/// A handle on a server that is not there.
pub(crate) fn unreachable() -> Pgflow {
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://singularity@127.0.0.1:1/none")
        .unwrap();
    Pgflow::from_pool(pool, PgflowOptions::default())
}

#[tokio::test]
async fn proposals_made_during_an_outage_are_spooled_then_submitted_in_order_once() {
    let t = TestDb::new().await.unwrap();
    t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
        .await
        .unwrap();
    let pg = t
        .connect_instance("singularity_1", "singularity")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("ws.spool");
    let dead = unreachable();
    let spool = SubmissionSpool::open(spool_dir.clone(), 3).unwrap();

    let mut spooled = Vec::new();
    for i in 0..3 {
        let s = submit_or_spool(
            &dead,
            &spool,
            "singularity_1",
            proposal(i, &format!("src/f{i}.rs")),
        )
        .await
        .unwrap();
        assert_eq!(s.status, "spooled");
        spooled.push(s);
    }
    // Full: a clear error, nothing dropped; invalid input is refused, not spooled.
    let full = submit_or_spool(&dead, &spool, "singularity_1", proposal(3, "src/f3.rs"))
        .await
        .unwrap_err();
    assert!(full.to_string().contains("spool is full"), "{full}");
    let bad = submit_or_spool(&dead, &spool, "singularity_1", proposal(4, "../etc/passwd")).await;
    assert!(matches!(bad, Err(Error::InvalidProposal(_))), "{bad:?}");
    assert_eq!(spool.len(), 3);

    // A restarted process finds them; the database is back: submitted in
    // order, with the ids the callers were given.
    drop(spool);
    let spool = SubmissionSpool::open(spool_dir, 3).unwrap();
    assert_eq!(spool.replay(&pg, "singularity_1").await.unwrap(), 3);
    assert!(spool.is_empty());
    let rows: Vec<(uuid::Uuid, uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, trace_id, status FROM singularity.proposals ORDER BY id")
            .fetch_all(t.pgflow.pool())
            .await
            .unwrap();
    let want: Vec<_> = spooled
        .iter()
        .map(|s| (s.proposal_id, s.trace_id, "submitted".to_string()))
        .collect();
    assert_eq!(rows, want);
    let sent: Vec<String> = sqlx::query_scalar(
        "SELECT payload ->> 'proposal_id' FROM pgflow.messages
          WHERE queue_name = 'proposals_for_consensus_queue' ORDER BY seq",
    )
    .fetch_all(t.pgflow.pool())
    .await
    .unwrap();
    let want: Vec<String> = spooled.iter().map(|s| s.proposal_id.to_string()).collect();
    assert_eq!(sent, want);

    // A crash after the commit but before the file was removed: the replay
    // finds the proposal stored and sends nothing again.
    let s0 = &spooled[0];
    spool
        .put(s0.proposal_id, s0.trace_id, proposal(0, "src/f0.rs"))
        .await
        .unwrap();
    assert_eq!(spool.replay(&pg, "singularity_1").await.unwrap(), 1);
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pgflow.messages WHERE queue_name = 'proposals_for_consensus_queue'",
    )
    .fetch_one(t.pgflow.pool())
    .await
    .unwrap();
    assert_eq!(n, 3);
}

#[tokio::test]
async fn the_cli_spools_a_proposal_while_postgres_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let out = tokio::process::Command::new(crate::cli::BIN)
        .args(["propose", "--agent-type", "BugFixerAgent", "--file", "a.rs"])
        .args(["--change", "fn a() {}", "--spool-dir"])
        .arg(&spool)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "PGFLOW_DATABASE_URL",
            "postgres://singularity@127.0.0.1:1/none",
        )
        .env("INSTANCE_ID", "singularity_3")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        crate::cli::field(stdout.trim(), "status"),
        "spooled",
        "{stdout}"
    );
    let id = crate::cli::field(stdout.trim(), "proposal_id");
    assert!(spool.join(format!("{id}.json")).is_file(), "{stdout}");

    // An invalid proposal is refused, not spooled.
    let out = tokio::process::Command::new(crate::cli::BIN)
        .args(["propose", "--agent-type", "BugFixerAgent", "--file", "../x"])
        .args(["--change", "x", "--spool-dir"])
        .arg(&spool)
        .env_clear()
        .env(
            "PGFLOW_DATABASE_URL",
            "postgres://singularity@127.0.0.1:1/none",
        )
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 1);
}

#[tokio::test]
async fn a_spooled_entry_refused_for_its_content_is_dead_lettered_while_the_rest_replay() {
    let t = TestDb::new().await.unwrap();
    t.register_targets(&["singularity_1", "singularity_2", "singularity_3"])
        .await
        .unwrap();
    let pg = t
        .connect_instance("singularity_1", "singularity")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spool = SubmissionSpool::open(dir.path().join("ws.spool"), 10).unwrap();
    let dead = unreachable();

    // At the door, a NUL is refused (not spooled), database or not.
    let mut nul = proposal(9, "src/nul.rs");
    nul.change = "fn a() {}\0".into();
    let refused = submit_or_spool(&dead, &spool, "singularity_1", nul.clone()).await;
    assert!(
        matches!(&refused, Err(Error::InvalidProposal(why)) if why.contains("NUL")),
        "{refused:?}"
    );
    assert!(spool.is_empty());

    // A spool written before that check (or by hand) holds a NUL change,
    // and an entry the database refuses for its content (a constraint
    // stands in for any such refusal), between valid ones.
    sqlx::query(
        "ALTER TABLE singularity.proposals
           ADD CONSTRAINT test_no_forbidden CHECK (agent_type <> 'ForbiddenAgent')",
    )
    .execute(t.pgflow.pool())
    .await
    .unwrap();
    let mut forbidden = proposal(3, "src/f3.rs");
    forbidden.agent_type = "ForbiddenAgent".into();
    let entries = [
        proposal(0, "src/f0.rs"),
        nul,
        proposal(2, "src/f2.rs"),
        forbidden,
        proposal(4, "src/f4.rs"),
    ];
    let mut ids = Vec::new();
    for p in entries {
        let (id, trace) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        spool.put(id, trace, p).await.unwrap();
        ids.push(id);
    }

    // The replay submits the three valid ones, in order, and moves the two
    // bad ones aside with their reasons; nothing is left to block it.
    assert_eq!(spool.replay(&pg, "singularity_1").await.unwrap(), 3);
    assert!(spool.is_empty());
    let stored: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM singularity.proposals ORDER BY id")
            .fetch_all(t.pgflow.pool())
            .await
            .unwrap();
    let mut want = vec![ids[0], ids[2], ids[4]];
    want.sort();
    assert_eq!(stored, want);
    let rejected = dir.path().join("ws.spool/rejected");
    let reason = |id: uuid::Uuid| {
        assert!(rejected.join(format!("{id}.json")).is_file(), "{id} kept");
        std::fs::read_to_string(rejected.join(format!("{id}.reason"))).unwrap()
    };
    assert!(reason(ids[1]).contains("NUL"), "{}", reason(ids[1]));
    let why = reason(ids[3]);
    assert!(
        why.contains("refused by the database") && why.contains("test_no_forbidden"),
        "{why}"
    );
}
