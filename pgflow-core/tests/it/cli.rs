//! The `pgflow` binary, driven as a user would.

use std::process::Output;

use tokio::process::Command;

use crate::support::db;

async fn pgflow(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgflow"))
        .args(args)
        .env("PGFLOW_DATABASE_URL", url)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_BACKTRACE")
        .output()
        .await
        .expect("run pgflow")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "pgflow failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[tokio::test]
async fn cli_round_trip() {
    let t = pgflow_core::testing::TestDb::empty().await.unwrap();
    let url = t.url.as_str();
    // Before init: a clear error naming the fix.
    let o = pgflow(url, &["queues"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("pgflow init"), "{}", stderr(&o));

    let o = pgflow(url, &["init"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("16 queues"));
    let queues = json(&pgflow(url, &["queues", "--json"]).await);
    assert_eq!(queues.as_array().unwrap().len(), 16);

    let q = "code_execution_requests";
    let sent = json(
        &pgflow(
            url,
            &[
                "send",
                q,
                r#"{"type":"code_execution_request","id":"job_1"}"#,
                "--json",
            ],
        )
        .await,
    );
    let id = sent["id"].as_str().unwrap().to_string();
    let o = pgflow(
        url,
        &["send", q, r#"{"n":2}"#, "--priority", "-5", "--delay", "1h"],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));

    let stats = json(&pgflow(url, &["stats", q, "--json"]).await);
    assert_eq!(stats[0]["pending"], 1);
    assert_eq!(stats[0]["delayed"], 1);
    let pending = json(&pgflow(url, &["pending", q, "--json"]).await);
    assert_eq!(pending[0]["id"], id.as_str());
    assert_eq!(pending[0]["msg_type"], "code_execution_request");
    let table = pgflow(url, &["pending", q]).await;
    assert!(stdout(&table).contains("code_execution_request"));

    // DLQ: dead-letter the message through the library, then manage it from the CLI.
    let qn = pgflow_core::QueueName::new(q).unwrap();
    let d = t.pgflow.claim(&qn, 1).await.unwrap().pop().unwrap();
    t.pgflow
        .nack(d.receipt(), pgflow_core::Failure::fatal("bad code"))
        .await
        .unwrap();
    let dlq = json(&pgflow(url, &["dlq", "list", "--json"]).await);
    assert_eq!(dlq[0]["error"], "bad code");
    let o = pgflow(url, &["dlq", "retry", &id]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = pgflow(url, &["dlq", "retry", &id]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let purged = json(&pgflow(url, &["dlq", "purge", "--json"]).await);
    assert_eq!(purged["count"], 0);
    let pruned = json(&pgflow(url, &["archive", "prune", "--older-than", "0s", "--json"]).await);
    assert_eq!(pruned["count"], 0);

    let created = json(
        &pgflow(
            url,
            &[
                "queue",
                "create",
                "extra_q",
                "--delivery",
                "broadcast",
                "--max-retries",
                "5",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(created["delivery"], "broadcast");
    assert_eq!(created["retry"]["max_retries"], 5);
}

#[tokio::test]
async fn cli_errors_name_the_problem_and_exit_non_zero() {
    let t = db().await;
    let url = t.url.as_str();
    let cases: &[(&[&str], &str)] = &[
        (&["send", "no_such_queue", "{}"], "unknown queue"),
        (
            &["send", "genesis_rule_updates", "{not json"],
            "not valid JSON",
        ),
        (
            &["stats", "Robert'); DROP TABLE pgflow.messages;--"],
            "invalid queue name",
        ),
        (&["pending", "missing_queue"], "unknown queue"),
        (&["dlq", "retry", "not-a-uuid"], "invalid value"),
    ];
    for (args, expected) in cases {
        let o = pgflow(url, args).await;
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(stderr(&o).contains(expected), "{args:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("panicked"),
            "{args:?} panicked: {}",
            stderr(&o)
        );
    }
    let o = pgflow("postgres://postgres@127.0.0.1:1/nowhere", &["queues"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_pgflow"))
        .arg("queues")
        .env_remove("PGFLOW_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert!(stderr(&o).contains("no database URL"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// The README: "the exit code is non-zero: 1 for a failed command, 2 for a
/// usage error". Every argument the command line cannot run as given exits
/// 2 with the reason, before anything is sent; a command that fails on the
/// database's answer (an unknown queue, a missing dead letter) exits 1.
#[tokio::test]
async fn usage_errors_exit_2_and_failed_commands_exit_1() {
    let t = db().await;
    let url = t.url.as_str();
    let bad_name = "Robert'); DROP TABLE pgflow.messages;--";
    let q = "genesis_rule_updates";
    let long_type = "t".repeat(300);
    let usage: &[(&[&str], &str)] = &[
        (&["stats", bad_name], "invalid queue name"),
        (&["pending", "Bad-Queue"], "invalid queue name"),
        (&["send", "9queue", "{}"], "invalid queue name"),
        (&["dlq", "list", "--queue", "UPPER"], "invalid queue name"),
        (&["dlq", "purge", "--queue", ""], "invalid queue name"),
        (&["queue", "show", "a b"], "invalid queue name"),
        (&["queue", "create", "x-y"], "invalid queue name"),
        (&["consume", "no way"], "invalid queue name"),
        (
            &["queue", "create", "fine_q", "--delivery", "fanout"],
            "unknown delivery kind",
        ),
        (&["send", q, "{not json"], "not valid JSON"),
        (&["send", q, "{}", "--type", &long_type], "type must be"),
        (&["send", q, "{}", "--target", ""], "target must be"),
        (&["dlq", "retry", "not-a-uuid"], "invalid value"),
        (
            &["dashboard", "--dashboard-token", "short"],
            "shorter than 8",
        ),
    ];
    for (args, expected) in usage {
        let o = pgflow(url, args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expected), "{args:?}: {}", stderr(&o));
    }
    // Nothing was sent or created by the refused commands.
    let queue = pgflow_core::QueueName::new(q).unwrap();
    assert_eq!(t.pgflow.get_queue_stats(&queue).await.unwrap().pending, 0);
    let o = pgflow(url, &["queue", "show", "fine_q"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown queue"), "{}", stderr(&o));
    // Usage errors need no database at all.
    let o = pgflow("postgres://postgres@127.0.0.1:1/nowhere", &["stats", "A"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = pgflow(
        "postgres://postgres@127.0.0.1:1/nowhere",
        &["send", q, "{oops"],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
